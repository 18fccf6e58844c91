"""Training pairs from parallel QA sources.

A parallel source (MLQA-R, XQuAD-R) holds one RetrievalSet per language whose
question ids are shared across languages. A training pair is a question in
language a with its positive in language b, for an id that exists in both:
a == b gives an X-X pair, a != b an X-Y pair. Pairs with the same id are
parallel (translations of one another); they carry one dense `group_id` so
that the loss can mask them as false negatives and the sampler can keep them
apart.

The positive is the answer sentence (the question's first relevant candidate)
or that sentence's paragraph (`positive="paragraph"`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from data_pipelines import readers

POSITIVE_KINDS = ("sentence", "paragraph")


@dataclasses.dataclass(frozen=True)
class Pair:
  query_language: str
  passage_language: str
  group_id: int          # dense parallel-group id (sorted qids -> 0..G-1)
  qid: str
  query: str
  positive: str


def group_ids(sets: Iterable[readers.RetrievalSet]) -> dict[str, int]:
  """qid -> dense int, by sorted qid, so the mapping depends only on the data."""
  qids = sorted({q.qid for s in sets for q in s.questions})
  return {qid: i for i, qid in enumerate(qids)}


def positive_text(rset: readers.RetrievalSet, question: readers.Question, positive: str) -> str:
  """The question's positive: its first relevant candidate's sentence or paragraph."""
  if positive not in POSITIVE_KINDS:
    raise ValueError(f"positive must be one of {POSITIVE_KINDS}, got {positive!r}")
  if not question.relevant:
    raise ValueError(f"{rset.benchmark}/{rset.language} question {question.qid} "
                     "has no relevant candidate")
  cand = rset.candidates[min(question.relevant)]
  return cand.text if positive == "sentence" else cand.context


def examples(rset: readers.RetrievalSet, positive: str = "sentence") -> dict[str, tuple[str, str]]:
  """qid -> (question text, positive text) in one language; questions without a positive dropped.

  Questions without a relevant candidate are left out here; the readers log
  such records in `rset.issues`.
  """
  out = {}
  for q in rset.questions:
    if q.relevant:
      out[q.qid] = (q.text, positive_text(rset, q, positive))
  return out


def build_pairs(sets: Mapping[str, readers.RetrievalSet], positive: str = "sentence",
                cross: bool = True) -> dict[tuple[str, str], list[Pair]]:
  """(query_language, passage_language) -> pairs sorted by group id.

  Every ordered language pair (a, b) is built, X-X (a == b) and, when `cross`,
  X-Y (a != b), for each qid held by both languages.
  """
  per_language = {l: examples(s, positive) for l, s in sets.items()}
  groups = group_ids(sets.values())
  out: dict[tuple[str, str], list[Pair]] = {}
  for a in sets:
    for b in sets:
      if a != b and not cross:
        continue
      shared = sorted(per_language[a].keys() & per_language[b].keys(), key=groups.__getitem__)
      out[(a, b)] = [Pair(a, b, groups[qid], qid, per_language[a][qid][0], per_language[b][qid][1])
                     for qid in shared]
  return out
