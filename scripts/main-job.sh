#!/usr/bin/env bash
# The main job, end to end on the default data set (Fashion-MNIST, preset edge: the paper's
# bit widths with our deployable quantizers; README "Presets" says why):
# install -> train -> eval (protocol paper and adaptive, 'quick' configuration) -> export
# (x86 and arm bundles) -> bench on this machine. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --data
export PATH="$PWD/.venv/bin:$PATH"
run=runs/fashion-mnist
edgempir train --out "$run" --preset edge --force
edgempir eval "$run" --protocol both --config quick
edgempir export "$run" --target x86 --out bundles/fashion-mnist-x86 --force
edgempir export "$run" --target arm --out bundles/fashion-mnist-arm --force
edgempir bench bundles/fashion-mnist-x86
