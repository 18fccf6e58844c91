"""Ranking metrics, vectorised over queries, with trec_eval's definitions.

Inputs are a ranking `ranked` int [Q, K] (corpus indices, best first, as from
`eval.search.top_k`) and `qrels`, one mapping per query from corpus index to a
relevance grade (>= 1 relevant; 0 or absent not relevant). Every function
returns one value per query (float64 [Q]); average them yourself (per language,
then macro).

Definitions (matching trec_eval / pytrec_eval, checked in tests/test_metrics.py):
- p@k: relevant in the top k / k (k, not the number retrieved).
- r@k: relevant in the top k / all relevant.
- acc@k: 1 if any relevant is in the top k (trec_eval `success_k`).
- mrr@k: 1 / rank of the first relevant within the top k, else 0.
- ndcg@k: linear gain (the grade), discount 1 / log2(rank + 1), divided by the
  ideal DCG@k over all judged relevant items (trec_eval `ndcg_cut_k`).
- map@k: sum of precision at each relevant rank <= k / all relevant
  (trec_eval `map_cut_k`).
- map (full ranking): the same without a cut-off; needs every relevant item's
  rank, see `average_precision_from_ranks` and `eval.search.relevant_ranks`.
A query without relevant items scores 0 on every metric.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

Qrels = Sequence[Mapping[int, int]]


def _qrels_arrays(qrels: Qrels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Flattened relevant judgements: (query row, corpus index, grade), grade >= 1."""
  rows, items, grades = [], [], []
  for q, judged in enumerate(qrels):
    for item, grade in judged.items():
      if grade >= 1:
        rows.append(q)
        items.append(int(item))
        grades.append(int(grade))
  return (np.asarray(rows, np.int64), np.asarray(items, np.int64),
          np.asarray(grades, np.int64))


def grades_of(ranked: np.ndarray, qrels: Qrels) -> np.ndarray:
  """Relevance grade of every ranked item.  int64 [Q, K] (0 = not relevant)."""
  ranked = np.asarray(ranked, np.int64)
  if ranked.ndim != 2 or ranked.shape[0] != len(qrels):
    raise ValueError(f"ranked must be [Q={len(qrels)}, K], got shape {ranked.shape}")
  rows, items, grades = _qrels_arrays(qrels)
  if len(items) == 0:
    return np.zeros(ranked.shape, np.int64)
  width = int(max(ranked.max(initial=0), items.max())) + 2
  # One integer key per (query, item); look ranked keys up in the sorted qrels keys.
  keys = rows * width + items
  order = np.argsort(keys)
  keys, grades = keys[order], grades[order]
  ranked_keys = np.arange(len(qrels))[:, None] * width + np.where(ranked >= 0, ranked, width - 1)
  pos = np.minimum(np.searchsorted(keys, ranked_keys), len(keys) - 1)
  return np.where(keys[pos] == ranked_keys, grades[pos], 0)


def num_relevant(qrels: Qrels) -> np.ndarray:
  """Judged relevant items per query.  int64 [Q]"""
  return np.asarray([sum(1 for g in j.values() if g >= 1) for j in qrels], np.int64)


def _hits(ranked, qrels, k):
  return grades_of(np.asarray(ranked)[:, :k], qrels) > 0  # [Q, min(k, K)]


def precision_at(ranked, qrels: Qrels, k: int) -> np.ndarray:
  return _hits(ranked, qrels, k).sum(axis=1) / k


def recall_at(ranked, qrels: Qrels, k: int) -> np.ndarray:
  return _hits(ranked, qrels, k).sum(axis=1) / np.maximum(num_relevant(qrels), 1)


def accuracy_at(ranked, qrels: Qrels, k: int) -> np.ndarray:
  return _hits(ranked, qrels, k).any(axis=1).astype(np.float64)


def mrr_at(ranked, qrels: Qrels, k: int) -> np.ndarray:
  hits = _hits(ranked, qrels, k)
  first = np.argmax(hits, axis=1)  # 0-based position of the first hit
  return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def ndcg_at(ranked, qrels: Qrels, k: int) -> np.ndarray:
  gains = grades_of(np.asarray(ranked)[:, :k], qrels).astype(np.float64)  # [Q, k']
  discount = 1.0 / np.log2(np.arange(2, k + 2))  # [k]
  dcg = (gains * discount[:gains.shape[1]]).sum(axis=1)
  ideal = np.zeros((len(qrels), k))
  for q, judged in enumerate(qrels):
    best = sorted((g for g in judged.values() if g >= 1), reverse=True)[:k]
    ideal[q, :len(best)] = best
  idcg = (ideal * discount).sum(axis=1)
  return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


def average_precision_at(ranked, qrels: Qrels, k: int) -> np.ndarray:
  """trec_eval map_cut_k: precision at each relevant rank <= k, over all relevant."""
  hits = _hits(ranked, qrels, k).astype(np.float64)  # [Q, k']
  precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
  return (precision * hits).sum(axis=1) / np.maximum(num_relevant(qrels), 1)


def average_precision_from_ranks(ranks: np.ndarray) -> np.ndarray:
  """Full-ranking AP from the 1-based ranks of every relevant item.

  Args:
    ranks: int [Q, T], ranks of the relevant items; 0 marks padding.
  Returns:
    float64 [Q]: mean over relevant items of (their position among relevant) / rank.
  """
  ranks = np.asarray(ranks, np.int64)
  present = ranks > 0
  # Sort each row with padding last; the i-th relevant item (1-based) is at rank r_i.
  ordered = np.sort(np.where(present, ranks, np.iinfo(np.int64).max), axis=1)
  nth = np.arange(1, ranks.shape[1] + 1)
  valid = np.sort(~present, axis=1) == 0  # True for the first n_present columns
  precision = np.where(valid, nth / np.where(valid, ordered, 1), 0.0)
  return precision.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def qrels_targets(qrels: Qrels) -> np.ndarray:
  """Relevant corpus indices per query, padded with -1.  int64 [Q, max relevant]"""
  rows, items, _ = _qrels_arrays(qrels)
  width = int(num_relevant(qrels).max(initial=0))
  targets = np.full((len(qrels), width), -1, np.int64)
  col = np.zeros(len(qrels), np.int64)
  for r, i in zip(rows, items):
    targets[r, col[r]] = i
    col[r] += 1
  return targets


_METRICS = {"p": precision_at, "r": recall_at, "acc": accuracy_at, "mrr": mrr_at,
            "ndcg": ndcg_at, "map": average_precision_at}
_NAME = re.compile(r"^(p|r|acc|mrr|ndcg|map)@(\d+)$")


def max_cutoff(names: Sequence[str]) -> int:
  """Largest k among metric names such as 'ndcg@10' (0 when none)."""
  return max([int(_NAME.match(n).group(2)) for n in names if _NAME.match(n)], default=0)


def compute(names: Sequence[str], ranked, qrels: Qrels, ranks=None) -> dict[str, np.ndarray]:
  """Per-query values of named metrics: 'map' (needs `ranks`) or '<metric>@<k>'.

  Args:
    names: e.g. ["map", "r@1", "mrr@10", "ndcg@10"].
    ranked: int [Q, K] ranking (K >= the largest k for exact @k values).
    qrels: per-query {corpus index: grade}.
    ranks: int [Q, T] ranks of the relevant items from `qrels_targets` order
      (from `eval.search.relevant_ranks`); required for 'map'.
  """
  out = {}
  for name in names:
    if name == "map":
      if ranks is None:
        raise ValueError("full-ranking 'map' needs the ranks of the relevant items")
      out[name] = average_precision_from_ranks(ranks)
      continue
    match = _NAME.match(name)
    if not match:
      raise ValueError(f"unknown metric {name!r}; use 'map' or one of "
                       f"{sorted(_METRICS)} followed by '@k'")
    out[name] = _METRICS[match.group(1)](ranked, qrels, int(match.group(2)))
  return out
