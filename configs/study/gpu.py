"""The three strategies on one GPU in minutes: X-X-mono, X-Y and hybrid (alpha 0.5), 3
seeds at the paper's batch of 100 (query / passage 64 / 128 tokens, bfloat16 compute),
every model evaluated on every benchmark whole (no document cap, 512 tokens).

`bash benchmarks/gpu.sh OUT` runs it after the speed benchmark
(`python -m replicate --preset gpu --fold A --out OUT/study`). Not yet run whole: on one
H100 (benchmarks/results/gpu_h100/) a training step at this size took 17.7 ms (300 steps:
about 5 s per run), and the first evaluation was bound by compilation (5-7 s per new
shape, since cut by coarse encode buckets and shared search shapes), so start-up,
compilation and the 10 evaluations dominate.
"""
import ml_collections

from configs.study import smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = smoke.get_config(arg)
  c.name = "gpu"
  c.seeds = (0, 1, 2)
  c.train_overrides = dict(total_steps=300, warmup_steps=30, batch_size=100, learning_rate=2e-5,
                           max_query_len=64, max_passage_len=128, compute_dtype="bfloat16",
                           checkpoint_every_steps=100, log_every_steps=20,
                           validation_fraction=0.1, validation_every_steps=100,
                           early_stopping=True)
  c.train_languages = None
  c.eval_languages = None
  c.eval_max_length = 512
  c.eval_batch_size = 256
  c.eval_max_questions = None
  c.eval_max_documents = None
  c.note = ("GPU RUN: 300 steps of batch 100 per run (30,000 pairs: nearly two passes over "
            "fold A's pairs), bfloat16 compute, 3 seeds, 10% of the question groups held out "
            "and the checkpoint with the lowest validation loss evaluated; every benchmark "
            "evaluated whole at 512 tokens.")
  return c
