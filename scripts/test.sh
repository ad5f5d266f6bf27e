#!/usr/bin/env bash
# The whole test suite: set-up, lint, type check, then every test (unit, namespaces, labs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy --strict lisp certs
mypy mesh node netlab controller_api lispmesh
echo "== pytest"
python -m pytest -q -p no:cacheprovider --timeout=600 "$@"
