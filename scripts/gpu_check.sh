#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU and nothing prepared: set up the venv and build
# pdlkit._C with its CUDA kernels (for this GPU's architecture only, to keep the build short), run
# the CUDA tests, then print the GPU benchmarks: the ops at 1024x2048, the batched merge at batch 8,
# and the Predictor's images/s (benchmarks/predict.py, when it offers --device).
#   bash scripts/gpu_check.sh            (TORCH_CUDA_ARCH_LIST overrides the detected architecture)
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo "[gpu_check] $(( $(date +%s) - t0 ))s: $*"; }
PY=.venv/bin/python

command -v nvidia-smi > /dev/null || { echo "gpu_check: nvidia-smi not found; this needs an NVIDIA GPU" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' ')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}

step "set-up: venv, torch, dependencies, pdlkit._C with CUDA kernels for sm ${TORCH_CUDA_ARCH_LIST}"
PDL_WITH_CUDA=1 bash scripts/setup.sh
"$PY" -c 'import torch, pdlkit._C as C; assert C.with_cuda and torch.cuda.is_available(), "no CUDA kernels/device"'

step "CUDA tests (pytest -m cuda)"
"$PY" -m pytest -q -m cuda -p no:cacheprovider

step "op benchmarks on the GPU: 1024x2048, batched merge at batch 8"
"$PY" benchmarks/ops.py --device cuda --sizes 1024x2048 --batch 8

step "Predictor images/s (benchmarks/predict.py)"
if "$PY" benchmarks/predict.py --help | grep -q -- "--device"; then
  "$PY" benchmarks/predict.py --device cuda
else
  echo "skipped: benchmarks/predict.py has no --device option"
fi
step "done"
