#!/usr/bin/env bash
# dllm-smol-bd's GPU recipe (issue 14) in one command, each stage under a wall-clock budget (seconds), so
# that it fits a fixed lease of a GPU machine:
#   bash bench/smol_gpu/run.sh                       # -> runs/..., published deltas in $PACK (default runs/smol_gpu)
#   T_TRAJ=120 T_BD=210 T_CF=130 bash bench/smol_gpu/run.sh
# 1. recipe=smol_trajectories_gpu: the parent answers data/smol/prompts_more.jsonl (every finished batch kept;
#    it resumes after the 1,024 answers the second H200 run wrote, data/smol/parent_rows_more_h200.jsonl)
# 2. recipe=smol_bd_gpu: block-diffusion adaptation from the parent (constant lr: a stop at the budget is a
#    finished run; fit() saves a checkpoint on SIGTERM)
# 3. recipe=smol_bd_gpu_cf: + certainty forcing, from stage 2's adapter
# 4. training.publish_delta of stages 2 and 3 -> $PACK/stage1, $PACK/stage2 (measure them with dllm bench_smol)
# Time trajectories leave unused goes to stage 2 (the lease is fixed, not each stage's budget).
# Extra Hydra overrides for every training stage (a CPU smoke test: small batches): TRAIN_ARGS, TRAJ_ARGS.
set -u
T_TRAJ=${T_TRAJ:-120}; T_BD=${T_BD:-210}; T_CF=${T_CF:-130}
PACK=${PACK:-runs/smol_gpu}; TRAIN_ARGS=${TRAIN_ARGS:-}; TRAJ_ARGS=${TRAJ_ARGS:-}; PY=${PY:-python3}
mkdir -p "$PACK"
stamp() { echo "[$(date +%T)] $*" | tee -a "$PACK/run.log"; }
stage() {  # stage <name> <budget> <args...>: run under timeout; a stop at the budget (124) is expected
  local name=$1 budget=$2; shift 2
  stamp "$name: start (budget ${budget}s): $*"
  local t0=$SECONDS
  timeout -s TERM "$budget" "$@" > "$PACK/$name.log" 2>&1
  local rc=$?
  stamp "$name: rc $rc after $((SECONDS - t0))s; $(tr '\r' '\n' < "$PACK/$name.log" | grep -av '^$' | tail -1)"
  return $rc
}
best() { [ -d "$1/final" ] && echo final || echo checkpoint; }  # what a stage left: finished, or stopped

MORE=runs/trajectories/smol_more
if [ ! -s "$MORE/rows.jsonl" ] && command -v nvidia-smi > /dev/null; then  # resume the H200 run's 1,024 (cuda rows)
  mkdir -p "$MORE" && cp data/smol/parent_rows_more_h200.jsonl "$MORE/rows.jsonl"
  cp data/smol/parent_rows_more_h200.settings.json "$MORE/rows.settings.json"
fi
T0=$SECONDS
stage trajectories "$T_TRAJ" $PY -m dllm.cli train recipe=smol_trajectories_gpu $TRAJ_ARGS
T_BD=$((T_BD + T_TRAJ - (SECONDS - T0)))  # what the parent's answers left of their budget goes to stage 2
ROWS=$(wc -l < "$MORE/rows.jsonl" 2>/dev/null || echo 0)
stamp "trajectories: $ROWS rows"
if [ "$ROWS" -eq 0 ]; then  # no new answers (a failed stage): train on the committed rows alone
  TRAIN_ARGS="$TRAIN_ARGS recipe.data=[data/smol/parent_rows.jsonl,data/smol/parent_rows_gsm8k.jsonl]"
fi
stage bd "$T_BD" $PY -m dllm.cli train recipe=smol_bd_gpu $TRAIN_ARGS
S1=$(best runs/dllm-smol-bd-gpu)
stage cf "$T_CF" $PY -m dllm.cli train recipe=smol_bd_gpu_cf recipe.train.init_adapter=runs/dllm-smol-bd-gpu/$S1 $TRAIN_ARGS
S2=$(best runs/dllm-smol-bd-gpu-cf)
stage publish1 300 $PY -m dllm.training.publish_delta runs/dllm-smol-bd-gpu "$PACK/stage1" "$S1"
stage publish2 300 $PY -m dllm.training.publish_delta runs/dllm-smol-bd-gpu-cf "$PACK/stage2" "$S2"
for r in dllm-smol-bd-gpu dllm-smol-bd-gpu-cf; do cp "runs/$r/loss.jsonl" "$PACK/$r.loss.jsonl" 2>/dev/null; done
gzip -c "$MORE/rows.jsonl" > "$PACK/rows_more.jsonl.gz" 2>/dev/null
cp "$MORE/rows.settings.json" "$PACK/" 2>/dev/null
stamp "done: stage1 from $S1, stage2 from $S2"
