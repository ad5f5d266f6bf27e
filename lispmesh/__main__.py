"""`python -m lispmesh ...` is the same as the `lispmesh` command."""

import sys

from lispmesh.cli import main

sys.exit(main())
