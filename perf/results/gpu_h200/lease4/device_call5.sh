#!/bin/bash
# Device call 2 (study only): join the model file, check its sha256, then
# `python -m replicate --preset gpu --fold A` timed; light files synced to $OUT as it runs.
set -u
S=${S:-/root/stage}; G=${G:-/root/gpu}; . $S/env.sh
cat $S/q4.part00 .carry/q4.part01 > $S/e5-small-q4.bin
echo "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f  $S/e5-small-q4.bin" | sha256sum -c - || exit 9
mkdir -p $G
sync_out() { (cd $G 2>/dev/null && tar -czf $OUT/gpu.tgz.tmp --exclude='checkpoints' --exclude='best_checkpoint' --exclude='tensorboard' --exclude='shards' --exclude='export-*' --exclude='*.orbax-checkpoint*' . && mv $OUT/gpu.tgz.tmp $OUT/gpu.tgz); }
echo "load before: $(cat /proc/loadavg) at $(date -u +%T)" | tee $OUT/load.txt
( while sleep 20; do sync_out; echo "$(date -u +%T) $(cat /proc/loadavg)" >> $OUT/load_during.txt; done ) & SYNC=$!
T=$(date +%s)
timeout ${GPU_S:-400} python -m replicate --preset gpu --fold A --out $G/study > $OUT/study.log 2>&1
echo "study rc $? in $(( $(date +%s)-T )) s" | tee -a $OUT/load.txt
kill $SYNC; sync_out
echo "load after: $(cat /proc/loadavg) at $(date -u +%T)" | tee -a $OUT/load.txt
tr '\r' '\n' < $OUT/study.log | grep -v "^$" | grep -v "it/s\]$" | grep -E "wrote|wall|Error|error" | cut -c1-300 | tail -10
