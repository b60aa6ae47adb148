#!/usr/bin/env bash
# Install (scripts/install.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# lint first: seconds, and a finding fails CI like a test would
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
