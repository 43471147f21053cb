#!/usr/bin/env bash
# dllm-tiny-text on a lent GPU (device tool): `dllm train recipe=tiny_text` (a printable-ASCII
# tokenizer; dllm's own task mixture plus our ParallelBench-format items), capped at $LIMIT seconds;
# packs the newest model (final, else the last atomic checkpoint) into $OUT.
# Python packages the GPU image lacks travel as wheels in .whl/ (hydra, omegaconf, datasets).
set -u
LIMIT=${LIMIT:-540}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
timeout "$LIMIT" python3 -m dllm.cli train recipe=tiny_text "$@"
echo "train rc=$? after $(( $(date +%s) - start )) s"
run=runs/dllm-tiny-text
src=$run/final; [ -d "$src" ] || src=$run/checkpoint
cat "$src/recipe.json"; echo
tar -cf "$OUT/tiny_text.tar" -C "$run" "$(basename "$src")/model" "$(basename "$src")/recipe.json" loss.jsonl
ls -la "$OUT"
