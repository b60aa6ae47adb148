#!/usr/bin/env bash
# Check the import contracts (pyproject.toml, [tool.importlinter]) on the wheel's layout:
# targets/, calib/ and cli/ sit inside edgempir/ there, as grimp needs. CI runs the same
# check in tests/cli/test_device_install.py.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation --disable-pip-version-check \
  -w "$tmp" . >/dev/null
rm -rf build
.venv/bin/python -m zipfile -e "$tmp"/edgempir-*.whl "$tmp/tree"
cd "$tmp/tree" && "$OLDPWD/.venv/bin/lint-imports" "$OLDPWD/pyproject.toml"
