"""Three seeds of the three strategies on every evaluation language, for a 2-core CPU.

Measured 1 h 57 min (results/quick-foldA) when it evaluated XQuAD-R and TyDi
passages only; with TyDi sentences and AfriQA about 3.2 h, estimated from tokens
(see configs/study/robust.py).
"""
import ml_collections

from configs.study import smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = smoke.get_config(arg)
  c.name = "quick"
  c.seeds = (0, 1, 2)
  c.train_overrides = dict(total_steps=50, warmup_steps=5, batch_size=16, learning_rate=5e-5,
                           max_query_len=32, max_passage_len=64,
                           checkpoint_every_steps=25, log_every_steps=5)
  c.train_languages = None
  c.eval_languages = None
  c.eval_max_length = 96
  c.eval_batch_size = 64
  c.eval_max_questions = None
  c.eval_max_documents = {"xquad_r": 40, "mlqa_r": 40, "tydiqa_goldp": 120,
                          "tydiqa_goldp_sentences": 120, "afriqa": 120}
  c.note = ("QUICK RUN: 50 steps of batch 16 per run (800 pairs, about a twentieth of fold "
            "A's pairs) at learning rate 5e-5, 3 seeds; evaluation on every language with "
            "a sixth of XQuAD-R (its first 40 of 240 parallel paragraphs: 249 questions and "
            "about 220 sentences per language), the first 120 TyDi gold passages per language "
            "with their questions (the sentences of those passages for TyDi sentences), 120 "
            "AfriQA gold passages per language with their questions, and texts cut to 96 "
            "tokens. Absolute numbers are therefore not "
            "comparable with the paper's (smaller pools make retrieval easier and language "
            "bias smaller); the comparison between strategies is the result.")
  return c
