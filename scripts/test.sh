#!/usr/bin/env bash
# Install (scripts/install.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# lint first: seconds, and a finding fails CI like a test would
.venv/bin/ruff check .
# two workers (pytest-xdist), a test file each at a time: many tests run the CLI in subprocesses that
# import torch on one core; two workers, one thread each (tests/conftest.py), keep both cores
# busy (2-core machine, fresh clone, 2026-12-01: .ci/run 5.3-6.0 min in all for 1008-1018
# tests, pytest 4.4-5.0; CI's last serial run: 14.2 min for 753).
# The session's run and bundles are built once for both workers (tests/support/shared.py);
# EDGEMPIR_TEST_WORKERS=0 runs it serially.
# Tests marked `slow` (torchrun with several ranks, image folders end to end: minutes each)
# are left to a separate command, `bash scripts/test.sh -m slow` (a later -m wins);
# `-m "slow or not slow"` runs everything.
workers=${EDGEMPIR_TEST_WORKERS:-2}
args=(-q -m "not slow")
# whole files to a worker, in the order tests/conftest.py gives (slowest first): xdist would
# otherwise order files by their number of tests, and a slow file with few tests came last
[ "$workers" = 0 ] || args+=(-n "$workers" --dist loadfile --no-loadscope-reorder)
exec .venv/bin/python -m pytest "${args[@]}" "$@"
