#!/usr/bin/env bash
# Set up pdlkit from nothing: a venv in .venv, torch, the dependencies, and the package with its
# native extension pdlkit._C (C++ always; CUDA too when nvcc and a CUDA torch are present).
#   PDL_WITH_CUDA=0|1        force the CUDA part off / on (default: detect)
#   TORCH_CUDA_ARCH_LIST     CUDA targets (default here: "8.0;9.0", keeps the build short)
#   PDL_VENV                 where the venv goes (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PDL_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first: the extension compiles against the torch that is installed.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -r requirements.txt
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
"$VENV/bin/python" -m pip install -q --no-build-isolation -e .
"$VENV/bin/python" -c "import pdlkit._C as C; print('pdlkit._C built (CUDA kernels: %s)' % bool(C.with_cuda))"
