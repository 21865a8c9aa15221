#!/usr/bin/env bash
# Set up a fresh machine: a .venv with densenas and its pinned dependencies, plus the embedded dataset
# (Debian's dataset-fashion-mnist). `--test` also installs the test tools (pytest, ruff, hypothesis).
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import densenas, torch, torchvision" \
  || { echo "install.sh: densenas did not install into .venv (see pip's output above)" >&2; exit 1; }

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }) \
      || echo "install.sh: apt-get could not install dataset-fashion-mnist" >&2
  fi
  [ -f "$fmnist/train-images-idx3-ubyte.gz" ] || cat >&2 <<MSG
install.sh: the embedded dataset is missing. Install it with 'sudo apt-get install dataset-fashion-mnist',
or put the four Fashion-MNIST IDX .gz files in a folder and set data.raw_dir in params.yaml to it.
MSG
fi
