#!/usr/bin/env bash
# Issue 5's GPU check on a lent GPU (device tool): compiled-kernel parity tests, then
# bench/gpu/decode_llada8b.py. Results land in $OUT.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import triton, torch; print('triton', triton.__version__, 'torch', torch.__version__)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py -rs 2>&1 | tail -6 | tee "$OUT/pytest_gpu.txt"
timeout "${LIMIT:-240}" python3 bench/gpu/decode_llada8b.py "$OUT" ${BENCH_ARGS:-}
echo "rc=$?"
