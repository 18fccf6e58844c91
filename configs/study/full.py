"""The paper-sized study for one modern GPU: alpha sweep, the mixed baseline, 5 seeds,
and the robustness arm.

L2-SP at 0.1: 2,000 steps at lr 2e-5 move weights about ten times further than quick's
50 at 5e-5, so a tenth of the strength gives the same pull at the end of training.
"""
import ml_collections

from configs.study import robust, smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = smoke.get_config(arg)
  c.name = "full"
  c.strategies = smoke.BASE_STRATEGIES + (("hybrid", 0.25), ("hybrid", 0.75), ("mixed", 0.0))
  c.seeds = (0, 1, 2, 3, 4)
  c.train_overrides = dict(total_steps=2000, warmup_steps=200, batch_size=100,
                           max_query_len=64, max_passage_len=128,
                           checkpoint_every_steps=500, log_every_steps=50)
  c.train_languages = None
  c.eval_languages = None
  c.eval_max_length = 512
  c.eval_batch_size = 128
  c.eval_max_questions = None
  c.eval_max_documents = None
  c.wise_lambdas = robust.WISE_LAMBDAS
  c.l2sp = (0.1,)
  c.note = ("FULL RUN: 2,000 steps of batch 100 per run (the paper's batch size), 5 seeds; "
            "robust fine-tuning of the hybrid (alpha 0.5): WiSE-FT at lambda 0.25, 0.5, "
            "0.75 and L2-SP at strength 0.1.")
  return c
