"""The kinds of run a study holds and how the report names and orders them.

A run's kind is its "method" field (robust fine-tuning: "wise", "l2sp"), else its
"sampling" (the sampler's modes, and "none" for the starting model). Its key adds the
variant's value: 'hybrid@0.5', 'wise@0.25', 'l2sp@1', 'mono', 'none'.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from data_pipelines import sampler


@dataclasses.dataclass(frozen=True)
class Method:
  """One kind of run in a study: its label, its place in tables and plots, and the run
  field (if any) whose value tells its variants apart (key "<kind>@<value>")."""
  label: str                  # "{}" is replaced by the variant's value
  rank: int                   # report / plot order
  param: str | None = None    # run field of the variant ("alpha", "lambda", "l2sp")
  robust: bool = False        # a robust fine-tuning method built on the hybrid


# The one table of run kinds: sampling strategies, and robust fine-tuning of the hybrid
# (WiSE-FT: weights interpolated between the start and a hybrid run, no training; L2-SP:
# a hybrid run trained with a pull toward the starting weights). A run's kind is its
# "method" field, else its "sampling".
# The sampling strategies are the sampler's modes (`sampler.SAMPLING_MODES`: label and
# order), so a new batch-composition rule reaches the report without an edit here.
METHODS = {
    "none": Method("start (zero-shot)", 0),
    **{name: Method(mode.label, 1 + i, "alpha" if mode.uses_alpha else None)
       for i, (name, mode) in enumerate(sampler.SAMPLING_MODES.items())},
}
METHODS.update({
    "wise": Method("Hybrid + WiSE-FT (lambda={})", len(METHODS), "lambda", robust=True),
    "l2sp": Method("Hybrid + L2-SP (strength {})", len(METHODS) + 1, "l2sp", robust=True),
})
STRATEGY_NAMES = {k: m.label for k, m in METHODS.items() if m.param is None}
# Benchmarks whose question ids are shared across languages (parallel groups).

def run_kind(run: dict) -> str:
  """A run's row in METHODS: its "method" (wise, l2sp) if any, else its sampling."""
  return run.get("method") or run["sampling"]


def strategy_key(run: dict) -> str:
  """'hybrid@0.5', 'mono', 'none', 'wise@0.25', 'l2sp@1', ... (the variant only where the
  method has one)."""
  kind = run_kind(run)
  method = METHODS.get(kind)
  if method is None or method.param is None:
    return kind
  return f"{kind}@{float(run[method.param]):g}"


def key_kind(key: str) -> str:
  return key.split("@", 1)[0]


def key_value(key: str) -> float | None:
  """The variant's value of a key ('wise@0.25' -> 0.25), None without one."""
  return float(key.split("@", 1)[1]) if "@" in key else None


def is_robust(key: str) -> bool:
  method = METHODS.get(key_kind(key))
  return bool(method and method.robust)


def strategy_label(key: str) -> str:
  method = METHODS.get(key_kind(key))
  if method is None:
    return key
  if method.param is None:
    return method.label
  return method.label.format(key.split("@", 1)[1])


def strategy_order(keys: Iterable[str]) -> list[str]:
  """Keys in report order: METHODS' rank (unknown kinds after the hybrids), then value."""
  def rank(key):
    method = METHODS.get(key_kind(key))
    value = key_value(key)
    return (method.rank if method else METHODS["hybrid"].rank, value if value is not None else 0.0, key)
  return sorted(keys, key=rank)
