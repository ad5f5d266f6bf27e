#!/usr/bin/env bash
# The main job: set-up, then a live demonstration (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/lispmesh demo "$@"
