#!/usr/bin/env bash
# The device session's checks, one stage per call (each fits the 10-minute limit of one device command):
#
#   bash tools/gpu_session.sh kernels   # about 2 min: tests/test_gpu.py if pytest is there, bench_attention.py
#   bash tools/gpu_session.sh decode    # about 7 min: bench_local.py --gpu --decode-only --attention both
#   bash tools/gpu_session.sh verify    # about 5 min: bench_local.py --gpu --verify-only
#
# Run from the repository root. A newer transformers wheel carried in .whl/ is installed first (to /tmp/site, never
# over the machine's own packages). Every line goes to stdout and to $OUT/gpu_<stage>.log ($OUT unset: /tmp).
set -uo pipefail
stage="${1:?name a stage: kernels, decode or verify}"
case "$stage" in kernels | decode | verify) ;; *) echo "unknown stage: $stage" >&2; exit 2 ;; esac
log="${OUT:-/tmp}/gpu_${stage}.log"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PWD}"
else
  export PYTHONPATH="${PWD}"
fi
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  case "$stage" in
    kernels)
      if python3 -c "import pytest" 2>/dev/null; then
        timeout 300 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py
      else
        echo "pytest is not installed here: tests/test_gpu.py skipped"
      fi
      timeout 200 python3 tools/bench_attention.py
      ;;
    decode) timeout 560 python3 tools/bench_local.py --gpu --decode-only --attention both ;;
    verify) timeout 560 python3 tools/bench_local.py --gpu --verify-only ;;
  esac
} 2>&1 | tee "$log"
