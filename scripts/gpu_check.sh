#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: build pdlkit._C with its CUDA kernels against the
# python that already holds a CUDA torch (no venv, no torch download: such machines are often
# offline), run the CUDA tests, then print the GPU benchmarks: the ops at 1024x2048 with the batched
# merge at batch 8, Predictor images/s of the Cityscapes R52-DC5 model at 1024x2048 in fp32 and
# fp16, and `pdl predict` images/s on a folder of PNGs.  Each step has a time budget; the whole
# check is meant to finish in under 8 minutes on an H100/H200.
#
#   bash scripts/gpu_check.sh               on the GPU
#   bash scripts/gpu_check.sh --cpu-smoke   every step on the CPU with tiny sizes and the toy model,
#                                           no CUDA build (needs pdlkit installed); for CI
# Environment:
#   PYTHON                 the python with a CUDA-enabled torch (default: python3)
#   TORCH_CUDA_ARCH_LIST   CUDA targets (default: the GPU's compute capability, e.g. 9.0)
#   MAX_JOBS               parallel compile jobs (default: nproc)
#   PIP_FIND_LINKS=DIR PIP_NO_INDEX=1   offline: install missing Python packages from wheels in DIR
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

SMOKE=0
case "${1:-}" in
  --cpu-smoke) SMOKE=1 ;;
  "") ;;
  -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "gpu_check: unknown argument $1 (use --cpu-smoke or nothing)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
T0=$(date +%s)
SUMMARY=()
FAILED=0
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/pdl_gpu_check.XXXXXX")

elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu_check $(elapsed)s] $*"; }
record() {  # record NAME STATUS SECONDS
  SUMMARY+=("$(printf '%-44s %-26s %5ss' "$1" "$2" "$3")")
  case "$2" in ok* | skipped*) ;; *) FAILED=1 ;; esac
}

# missing_modules MODULE:PACKAGE ... -> the PACKAGEs whose MODULE this python cannot import
missing_modules() {
  "$PY" - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(p for m, p in (a.split(":") for a in sys.argv[1:]) if importlib.util.find_spec(m) is None))
EOF
}

# run_step NAME BUDGET_S NEEDS COMMAND...: COMMAND under a time limit, skipped when a module in NEEDS
# (MODULE:PACKAGE, space-separated) is missing; prints and records its status and seconds.
run_step() {
  local name=$1 budget=$2 needs=$3 start rc missing
  shift 3
  start=$(date +%s)
  # shellcheck disable=SC2086  # NEEDS is a list
  missing=$(missing_modules $needs)
  if [ -n "$missing" ]; then
    say "$name: skipped, missing Python packages: $missing"
    record "$name" "skipped (no $missing)" 0
    return 0
  fi
  say "$name (budget ${budget}s): $*"
  timeout --kill-after=10 "$budget" "$@"
  rc=$?
  local took=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then
    record "$name" ok "$took"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "$name" "TIMED OUT after ${budget}s" "$took"
  else
    record "$name" "FAILED (exit $rc)" "$took"
  fi
  say "$name: done in ${took}s (exit $rc)"
}

# --- 1. the python, its torch and the device ---------------------------------------------------
if ! "$PY" -c "import torch" 2> /dev/null; then
  echo "gpu_check: $PY cannot import torch; set PYTHON to the python that holds a CUDA-enabled torch" >&2
  exit 1
fi
if [ "$SMOKE" -eq 1 ]; then
  DEVICE=cpu
  say "CPU smoke run: tiny sizes, the toy model, no CUDA build"
else
  DEVICE=cuda
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)"; then
    echo "gpu_check: $PY's torch sees no CUDA GPU (torch.version.cuda is None or no device);" \
         "use --cpu-smoke on a machine without one" >&2
    exit 1
  fi
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA',
torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# --- 2. Python packages pdlkit and the steps need: install only what is missing, if pip can -----
NEEDS_CORE="numpy:numpy yaml:pyyaml tqdm:tqdm click:click PIL:pillow"
NEEDS_ALL="$NEEDS_CORE cv2:opencv-python-headless pytest:pytest hypothesis:hypothesis setuptools:setuptools"
# shellcheck disable=SC2086
missing=$(missing_modules $NEEDS_ALL)
if [ -n "$missing" ]; then
  say "installing missing Python packages: $missing"
  # shellcheck disable=SC2086
  timeout 120 "$PY" -m pip install -q --disable-pip-version-check --retries 0 --timeout 10 $missing ||
    say "could not install $missing (offline? PIP_FIND_LINKS=DIR PIP_NO_INDEX=1 uses local wheels); the steps that need them are skipped"
fi
# shellcheck disable=SC2086
missing=$(missing_modules $NEEDS_CORE)
if [ -n "$missing" ]; then
  echo "gpu_check: pdlkit cannot be imported without: $missing" >&2
  exit 1
fi

# --- 3. build pdlkit._C with the CUDA kernels for this GPU only (keeps the build short) ---------
build() {
  local arch log=$LOGS/build.log
  arch=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")}
  say "build: pip install --no-build-isolation --no-deps -e . (CUDA arch $arch, $(nproc) jobs; log $log)"
  if ! TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=${MAX_JOBS:-$(nproc)} PDL_WITH_CUDA=1 \
      "$PY" -m pip install --disable-pip-version-check --no-build-isolation --no-deps -e . > "$log" 2>&1; then
    tail -n 40 "$log"
    return 1
  fi
  "$PY" -c "import pdlkit._C as C, sys; print('pdlkit._C CUDA kernels:', bool(C.with_cuda)); sys.exit(0 if C.with_cuda else 1)"
}
if [ "$SMOKE" -eq 1 ]; then
  if ! "$PY" -c "import pdlkit._C" 2> /dev/null; then
    echo "gpu_check: --cpu-smoke uses the installed pdlkit, but pdlkit._C does not import" \
         "(PDL_WITH_CUDA=0 pip install --no-build-isolation -e .)" >&2
    exit 1
  fi
  record "build (CUDA)" "skipped (CPU smoke)" 0
else
  start=$(date +%s)
  if ! build; then
    record "build (CUDA)" FAILED $(( $(date +%s) - start ))
    printf '%s\n' "${SUMMARY[@]}"
    exit 1
  fi
  record "build (CUDA)" ok $(( $(date +%s) - start ))
fi

# --- 4. the CUDA tests (on the CPU they run to their skips, which checks they collect) ----------
mapfile -t CUDA_TEST_FILES < <(grep -rl --include='*.py' 'pytest.mark.cuda' tests | sort)
run_step "CUDA tests (pytest -m cuda)" 150 "pytest:pytest hypothesis:hypothesis" \
  "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider "${CUDA_TEST_FILES[@]}"

# --- 5. the benchmarks -----------------------------------------------------------------------------
if [ "$SMOKE" -eq 1 ]; then
  OPS_ARGS=(--sizes 64x128 --batch 2 --repeats 1 --reference-repeats 1 --threads 1)
  PREDICT_ARGS=(--config toy.yaml --size 64x128 --images 2 --folder-images 3 --threads 1)
else
  OPS_ARGS=(--sizes 1024x2048 --batch 8 --repeats 10 --reference-repeats 2)
  PREDICT_ARGS=(--config cityscapes_r52_dc5_d2.yaml --size 1024x2048 --images 10 --folder-images 24)
fi
export PYTHONUNBUFFERED=1  # the tables appear as they are measured, also through a pipe
run_step "ops + batched merge (ops.py)" 120 "" \
  "$PY" benchmarks/ops.py --device "$DEVICE" "${OPS_ARGS[@]}"
run_step "Predictor + pdl predict (predict_folder.py)" 200 "cv2:opencv-python-headless click:click" \
  "$PY" benchmarks/predict_folder.py --device "$DEVICE" --precisions fp32,fp16 "${PREDICT_ARGS[@]}"

# --- summary -----------------------------------------------------------------------------------------
total=$(elapsed)
echo
if [ "$SMOKE" -eq 1 ]; then
  echo "gpu_check summary (CPU smoke, ${total}s in all):"
else
  echo "gpu_check summary (GPU, ${total}s in all: $([ "$total" -lt 480 ] && echo within || echo OVER) the 8-minute target):"
fi
printf '  %s\n' "${SUMMARY[@]}"
rm -rf "$LOGS"
exit "$FAILED"
