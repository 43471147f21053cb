#!/usr/bin/env bash
# Issue 19's GPU check on a lent GPU (device tool): the compiled fused-kernel parity tests and the
# CUDA-graph identity tests, then bench/gpu/e2e.py. Results land in $OUT.
#   BENCH_ARGS="--models llada8b" LIMIT=420 bash bench/gpu/run_issue19.sh
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_graphs.py -rs 2>&1 \
  | tail -12 | tee "$OUT/pytest_gpu_issue19.txt"
timeout "${LIMIT:-420}" python3 bench/gpu/e2e.py "$OUT" ${BENCH_ARGS:-}
echo "rc=$?"
