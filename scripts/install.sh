#!/usr/bin/env bash
# Install edgempir and everything it needs into .venv on a Debian-like machine (Python 3.10+,
# no GPU needed). Idempotent: a second run only checks.
#   bash scripts/install.sh          # the package, test tools
#   bash scripts/install.sh --data   # also the Fashion-MNIST Debian package (apt, as root or sudo)
set -euo pipefail
cd "$(dirname "$0")/.."

want_data=0
for arg in "$@"; do
  case "$arg" in
    --data) want_data=1 ;;
    *) echo "install.sh: unknown option $arg (known: --data)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "install.sh: edgempir needs Python 3.10 or newer (found: $("$PY" --version 2>&1)); set PYTHON=" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# --no-compile, then compileall on every core below: pip byte-compiles one file at a time,
# most of torch's install (22 of its 30 s on a fresh 2-core machine, 2026-12-01). The .pyc
# files must be written at install: where PYTHONDONTWRITEBYTECODE is set (these machines),
# nothing writes them later, and every process would compile torch's modules again.
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile)

# torch first and pinned: an unpinned torch (asked for by brevitas) pulls a multi-GB CUDA
# build. Where no local CPU wheel is configured, TORCH_INDEX_URL can point at a CPU index.
if ! .venv/bin/python -c 'import torch, sys; sys.exit(not torch.__version__.startswith("2.13."))' 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" torch==2.13.0 --index-url "$TORCH_INDEX_URL"
  else
    "${pip[@]}" torch==2.13.0
  fi
fi
# The host install (train, eval, export) and the test tools. A device needs only
# `pip install "edgempir[device]"` (README, "On the device").
"${pip[@]}" -e ".[host,dev]"
# torchattacks' metadata asks for torchvision, which has no CPU build for torch 2.13 and breaks
# at import; torchattacks itself never needs it, so it goes in last and without its declared
# needs (scipy, requests, tqdm come with edgempir[host]). --no-deps also skips pip's check of
# those needs, which would print an ERROR line about torchvision on a correct install.
.venv/bin/python -c 'import torchattacks' 2>/dev/null || "${pip[@]}" --no-deps torchattacks==3.5.1
# byte-compile what was installed since the last time (the stamp is the installed set); a
# file that does not compile (a template, a Python-2 example) is left as pip leaves it
stamp=.venv/.edgempir-compiled
installed=$(.venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null)
if [ "$installed" != "$(cat "$stamp" 2>/dev/null)" ]; then
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  .venv/bin/python -m compileall -qq -j 0 "$site" >/dev/null 2>&1 || true
  printf '%s' "$installed" > "$stamp"
fi
# and edgempir itself (an editable install: its sources stay here), about 0.2 s of every
# process that imports it; up to date after the first run (each file is checked, not redone)
.venv/bin/python -m compileall -qq -j 0 edgempir targets calib cli >/dev/null 2>&1 || true

if [ "$want_data" = 1 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "install.sh: no apt-get here; put the Fashion-MNIST IDX files in a folder and set EDGEMPIR_DATA" >&2
  fi
fi
.venv/bin/python -c 'import edgempir, torch, brevitas, onnxruntime; print("edgempir", edgempir.__version__, "| torch", torch.__version__, "| brevitas", brevitas.__version__, "| onnxruntime", onnxruntime.__version__)'
