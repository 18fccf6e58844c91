"""Fold B: train on XQuAD-R pairs (11 languages), evaluate on MLQA-R and TyDi."""
from configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  c.fold = "B"
  return c
