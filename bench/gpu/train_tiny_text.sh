#!/usr/bin/env bash
# dllm-tiny-text on a lent GPU (device tool): `dllm train recipe=tiny_text` (a printable-ASCII
# tokenizer; dllm's own task mixture plus our ParallelBench-format items), capped at $LIMIT seconds;
# packs the newest model into $OUT/tiny_text.tar. The steps are train_tiny_long.sh's.
RECIPE=tiny_text RUN=runs/dllm-tiny-text LIMIT=${LIMIT:-540} exec bash "$(dirname "$0")/train_tiny_long.sh" "$@"
