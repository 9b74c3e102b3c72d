#!/usr/bin/env bash
# The regression gate's steps (docs/regression-gate.md), shared by .github/workflows/gpu-regression.yml (vllm, a
# real model, GPU) and .ci/run (hf, the tiny model, CPU): run MODEL on the pinned subsets, write the board, gate
# the run against a committed baseline summary. Exit code: the gate's (0 pass, 1 worse, 2 incomparable).
#
# Environment: MODEL (required), BASELINE (required: a `medharness gate --write-summary` file or a run directory),
#   BACKEND (hf), TASKS (phantom_presence,phantom_count,vqa_rad), SUBSETS (tasks/subsets), OUT (runs/regression),
#   RUN_ARGS (extra `medharness run` arguments, e.g. "-T vqa_rad.data_dir=DIR"), MAX_DROP (1.0), ALPHA (0.05),
#   MEDHARNESS (the command, default `medharness`).
set -euo pipefail
: "${MODEL:?set MODEL}" "${BASELINE:?set BASELINE}"
BACKEND=${BACKEND:-hf}
TASKS=${TASKS:-phantom_presence,phantom_count,vqa_rad}
SUBSETS=${SUBSETS:-tasks/subsets}
OUT=${OUT:-runs/regression}
MH=${MEDHARNESS:-medharness}
mkdir -p "$OUT"
# shellcheck disable=SC2086  # RUN_ARGS is a list of arguments
$MH run --model "$MODEL" --backend "$BACKEND" --tasks "$TASKS" --samples "$SUBSETS" --output "$OUT/run" \
    --label candidate --no-progress ${RUN_ARGS:-}
$MH leaderboard "$OUT/run" --output "$OUT/board.md"
rc=0
$MH gate --baseline "$BASELINE" --candidate "$OUT/run" --max-drop "${MAX_DROP:-1.0}" --alpha "${ALPHA:-0.05}" \
    > "$OUT/gate.md" || rc=$?
$MH gate --baseline "$BASELINE" --candidate "$OUT/run" --max-drop "${MAX_DROP:-1.0}" --alpha "${ALPHA:-0.05}" \
    --json > "$OUT/gate.json" || true
cat "$OUT/gate.md"
exit "$rc"
