#!/usr/bin/env bash
# Stage 3 of dllm-tiny on a lent GPU (device tool): `dllm train recipe=tiny_long`, capped at
# $LIMIT seconds (timeout's SIGTERM: the trainer finishes the step and writes a checkpoint); packs the
# newest model (final, else that checkpoint with its trainer state, so the run resumes here) into $OUT.
# Python packages the GPU image lacks travel as wheels in .whl/ (hydra, omegaconf, datasets).
set -u
LIMIT=${LIMIT:-400}
RECIPE=${RECIPE:-tiny_long}        # another recipe: RECIPE=tiny_text RUN=runs/dllm-tiny-text (train_tiny_text.sh)
RUN=${RUN:-runs/dllm-tiny-long}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
timeout "$LIMIT" python3 -m dllm.cli train recipe="$RECIPE" "$@"
echo "train rc=$? after $(( $(date +%s) - start )) s"
run=$RUN
src=$run/final; [ -d "$src" ] || src=$run/checkpoint
cat "$src/recipe.json"; echo
state=(); [ -f "$src/trainer_state.pt" ] && state=("$(basename "$src")/trainer_state.pt")
tar -cf "$OUT/$RECIPE.tar" -C "$run" "$(basename "$src")/model" "$(basename "$src")/recipe.json" "${state[@]}" loss.jsonl
ls -la "$OUT"
