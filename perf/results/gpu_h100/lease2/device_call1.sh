#!/bin/bash
# Device call 1: stage data, half of the model file and wheels; check the imports (seconds).
set -u
S=/root/stage; mkdir -p $S
cp .carry/q4.part00 $S/ && tar -C $S -xJf .carry/data.tar.xz || exit 5
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/whl/*.whl || exit 6
P=$(python3 -c 'import sys;print(sys.executable)')
mkdir -p /tmp/bin; printf '#!/bin/sh\nexec %s "$@"\n' "$P" > /tmp/bin/python; chmod +x /tmp/bin/python
cat > $S/env.sh <<EOF
export PATH=/tmp/bin:\$PATH PYTHONPATH=/tmp/site MLIR_DATA_DIR=$S/data MLIR_E5_SMALL_FILE=$S/e5-small-q4.bin HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
EOF
. $S/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
echo "cores $(nproc)"; uptime
python -c "import jax,flax,optax,transformers,torch,sentence_transformers as st;print('jax',jax.__version__,'flax',flax.__version__,'optax',optax.__version__,'transformers',transformers.__version__,'torch',torch.__version__,'st',st.__version__)"
python -c "import replicate, mlir_train.train, eval.run, benchmarks.gpu_bench" && echo imports ok
ls $S $S/data | head
