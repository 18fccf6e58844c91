"""A real but tiny study: checks the whole path on a 2-core CPU in about 10 minutes.

A few steps of batch 8 on three training languages, evaluated on a language subset.
Its numbers say nothing about the method.
"""
import ml_collections

BASE_STRATEGIES = (("mono", 1.0), ("cross", 0.0), ("hybrid", 0.5))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.name = "smoke"
  c.strategies = BASE_STRATEGIES                # (config.sampling, config.alpha) per strategy
  c.seeds = (0,)
  c.train_overrides = dict(total_steps=10, warmup_steps=2, batch_size=8,
                           max_query_len=32, max_passage_len=48,
                           checkpoint_every_steps=5, log_every_steps=1)  # on configs/default.py
  c.train_languages = {"A": ["de", "en", "es"], "B": ["de", "en", "es"]}  # per fold; None: all
  c.eval_languages = {"xquad_r": ["de", "en"], "mlqa_r": ["de", "en"],   # per benchmark; None: all
                      "tydiqa_goldp": ["en", "sw", "te"],
                      "tydiqa_goldp_sentences": ["en", "sw", "te"], "afriqa": ["hau", "swa"]}
  c.eval_max_length = 64                        # tokens per text; longer ones are cut (counted)
  c.eval_max_lengths = None                     # per benchmark, overriding eval_max_length
  c.eval_batch_size = 64
  c.eval_max_questions = 150                    # question ids kept per language (None: all)
  c.eval_max_documents = {"tydiqa_goldp_sentences": 50, "afriqa": 50}  # per benchmark
  c.note = ("SMOKE RUN: 10 steps of batch 8 on three training languages, evaluated on a "
            "language subset, 150 question ids per language (corpora whole, except the "
            "first 50 passages per language for TyDi sentences and AfriQA) and texts cut "
            "to 64 tokens. It checks the pipeline; its numbers say nothing about the method.")
  # The robustness arm (off here; `--robust` adds it): WiSE-FT interpolations and L2-SP
  # runs of the hybrid at robust_alpha; `adopt`: strategies reported when --out holds
  # their finished runs with these settings, never trained by this preset.
  c.wise_lambdas = ()
  c.l2sp = ()
  c.robust_alpha = 0.5
  c.adopt = ()
  return c
