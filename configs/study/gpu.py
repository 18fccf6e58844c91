"""The three strategies on one GPU: X-X-mono, X-Y and hybrid (alpha 0.5), 3 seeds at the
paper's batch of 100 (query / passage 64 / 128 tokens, bfloat16 compute), evaluated as the
quick study evaluates (configs/study/quick.py): every model on the whole XQuAD-R at 512
tokens; TyDi (passages and sentences) and AfriQA on the first 120 gold passages per
language. `full` evaluates everything whole.

`bash perf/gpu.sh OUT` runs it after the speed benchmark
(`python -m replicate --preset gpu --fold A --out OUT/study`). Measured on one H100 in that
script (perf/results/gpu_bench.md; results/gpu-foldA/): 286 s by its own clock,
the start model's four evaluations 59 s, the first training 29 s (its update step from the
benchmark's compilation), each later one 13-15 s, each trained model's evaluations 8-11 s.
Target: <= 6 minutes.
"""
import ml_collections

from configs.study import quick


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = quick.get_config(arg)    # its evaluation: XQuAD-R whole, TyDi and AfriQA capped
  c.name = "gpu"
  c.seeds = (0, 1, 2)
  c.train_overrides = dict(total_steps=300, warmup_steps=30, batch_size=100, learning_rate=2e-5,
                           max_query_len=64, max_passage_len=128, compute_dtype="bfloat16",
                           checkpoint_every_steps=100, log_every_steps=20,
                           validation_fraction=0.1, validation_every_steps=100,
                           early_stopping=True)
  c.eval_batch_size = 256
  c.note = ("GPU RUN: 300 steps of batch 100 per run (30,000 pairs: nearly two passes over "
            "fold A's pairs), bfloat16 compute, 3 seeds, 10% of the question groups held out "
            "and the checkpoint with the lowest validation loss evaluated (in the committed fold-A "
            "study step 100, 10,000 pairs, in 8 of 9 runs). Evaluation as in the "
            "quick study: XQuAD-R whole (240 paragraphs, 11 languages, 512 tokens); TyDi "
            "(passages and sentences) and AfriQA on the first 120 gold passages per language "
            "with their questions, texts cut to 192 (TyDi passages) and 256 tokens (the cut "
            "texts are counted).")
  return c
