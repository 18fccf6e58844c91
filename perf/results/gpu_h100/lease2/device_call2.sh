#!/bin/bash
# Device call 2: join the model file; the benchmark (bounded), then the gpu study with what is left.
set -u
T0=$(date +%s)
S=/root/stage; . $S/env.sh
cat $S/q4.part00 .carry/q4.part01 > $S/e5-small-q4.bin
echo "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f  $S/e5-small-q4.bin" | sha256sum -c - || exit 9
uptime
timeout ${BENCH_S:-400} python benchmarks/gpu_bench.py --out /root/bench --stage_timeout ${STAGE_S:-150} > $OUT/bench.log 2>&1
echo "bench rc $? in $(( $(date +%s)-T0 )) s"; pkill -9 -f gpu_bench.py; sleep 1
cp /root/bench/gpu_bench.json /root/bench/gpu_bench.md /root/bench/st_partial.json $OUT/ 2>/dev/null
grep -E "^train|^device|^task|PyTorch .* s\]|Traceback|Error" $OUT/bench.log | cut -c1-400
LEFT=$(( ${TOTAL_S:-575} - ($(date +%s)-T0) ))
echo "study gets $LEFT s"
T=$(date +%s)
timeout $LEFT python -m replicate --preset gpu --fold A --out /root/study > $OUT/study.log 2>&1
echo "study rc $? in $(( $(date +%s)-T )) s"
cd /root/study 2>/dev/null && tar -czf $OUT/study.tgz --exclude=checkpoints --exclude=tensorboard . ; cd - >/dev/null
ls -la $OUT; tr '\r' '\n' < $OUT/study.log | grep -v "^$" | grep -v "it/s\]$" | tail -25 | cut -c1-300
