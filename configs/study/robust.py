"""The robustness arm on a CPU, with the quick study's settings (training and evaluation).

An --out holding a finished quick study reuses its start and hybrid runs (their
provenance matches) and reports its X-X-mono and X-Y runs beside the arm
(adopted, never trained here).

L2-SP strength 1.0 for 120-step runs at lr 5e-5 (linear warmup and decay): Adam moves a
weight by at most about the summed learning rate, 3e-3 over 120 steps (noisy gradients:
a few 1e-4 to 1e-3), so the pull l2sp * (theta - theta_start) reaches a few 1e-4 per
weight at strength 1, the size of the InfoNCE gradient per weight (a clipped norm of ~1
over ~2e7 encoder weights: ~2e-4), and the penalty (l2sp / 2) * ||theta - theta_start||^2
about 1, the loss's own scale: a binding but not freezing pull. 0.1 would hardly act
within 120 steps, 10 would hold the model at the start.
"""
import ml_collections

from configs.study import quick

WISE_LAMBDAS = (0.25, 0.5, 0.75)
L2SP = 1.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = quick.get_config(arg)
  c.name = "robust"
  c.strategies = (("hybrid", 0.5),)
  c.adopt = (("mono", 1.0), ("cross", 0.0))
  c.wise_lambdas = WISE_LAMBDAS
  c.l2sp = (L2SP,)
  c.note = c.note.replace("QUICK RUN:", "ROBUST RUN (the quick study's settings):") + (
      " Robust fine-tuning of the hybrid (alpha 0.5) of every seed: WiSE-FT at lambda 0.25, "
      "0.5, 0.75 (no training) and L2-SP at strength 1.0 (trained), evaluated like every "
      "run: 12 evaluated models and 3 trainings on top of a finished quick study.")
  return c
