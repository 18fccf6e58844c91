#!/bin/bash
# Device call 2 (lease 3): join the model file; the gpu study, timed (light files synced to
# $OUT as it runs); then, with what is left, our and PyTorch's float32 batch-100 training row.
set -u; MODEL=${MODEL:-e5-small}
T0=$(date +%s)
S=/root/stage; . $S/env.sh
cat $S/q4.part00 .carry/q4.part01 > $S/e5-small-q4.bin
echo "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f  $S/e5-small-q4.bin" | sha256sum -c - || exit 9
sync_out() { (cd /root/study 2>/dev/null && tar -czf $OUT/study.tgz.tmp --exclude=checkpoints --exclude=tensorboard --exclude=shards . && mv $OUT/study.tgz.tmp $OUT/study.tgz); }
echo "load before: $(cat /proc/loadavg)" | tee $OUT/load.txt
( while sleep 20; do sync_out; cat /proc/loadavg >> $OUT/load_during.txt; done ) & SYNC=$!
T=$(date +%s)
timeout ${STUDY_S:-480} python -m replicate --preset gpu --fold A --out /root/study > $OUT/study.log 2>&1
echo "study rc $? in $(( $(date +%s)-T )) s" | tee -a $OUT/load.txt
kill $SYNC; sync_out
echo "load after study: $(cat /proc/loadavg)" | tee -a $OUT/load.txt
tr '\r' '\n' < $OUT/study.log | grep -v "^$" | grep -v "it/s\]$" | tail -12 | cut -c1-300
LEFT=$(( ${TOTAL_S:-570} - ($(date +%s)-T0) ))
echo "float32 rows get $LEFT s"
if [ $LEFT -gt 90 ]; then
  CFG='{"name": "batch 100", "batch_size": 100, "max_query_len": 64, "max_passage_len": 128, "chunk": 0, "steps": 20}'
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  timeout $(( LEFT / 2 )) python benchmarks/gpu_bench.py --task "{\"kind\": \"train\", \"model\": \"$MODEL\", \"dtype\": \"float32\", \"cfg\": $CFG, \"steps\": 20}" > $OUT/ours_fp32.log 2>&1
  echo "ours fp32 rc $?"; grep RESULT $OUT/ours_fp32.log | cut -c1-600
  python -m mlir_train.export --model $MODEL --out /root/export > $OUT/export.log 2>&1 || echo "export failed"
  LEFT=$(( ${TOTAL_S:-570} - ($(date +%s)-T0) ))
  timeout $(( LEFT > 5 ? LEFT - 5 : 1 )) python benchmarks/gpu_bench.py --task "{\"kind\": \"st\", \"export_dir\": \"/root/export\", \"model\": \"$MODEL\", \"plan\": {\"train\": [$CFG], \"dtypes\": [\"float32\"], \"steps\": 20, \"encode_lengths\": []}, \"partial\": \"$OUT/st_fp32_partial.json\"}" > $OUT/st_fp32.log 2>&1
  echo "PyTorch fp32 rc $?"; grep RESULT $OUT/st_fp32.log | cut -c1-600
  echo "load after rows: $(cat /proc/loadavg)" | tee -a $OUT/load.txt
fi
ls -la $OUT
