"""TREC run and qrels files of an evaluation, for trec_eval, pytrec_eval or ranx.

`write_run(encoded, path, ...)` ranks each language's questions against that
language's own candidates (the "mono" setting; AfriQA: the native questions) and
writes `qid Q0 docid rank score tag` lines, best first; `write_qrels` writes the
judgements the project scored (`qid 0 docid grade`), after its readers dropped
unusable records. Ids are the data's own (question ids, candidate `doc_id`s); with
more than one language both carry a `LANG/` prefix, since parallel benchmarks share
question ids across languages.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Mapping

import numpy as np

from eval import protocols, search

DEFAULT_DEPTH = 100
TAG = "mlir_train"


def qrels_path(run_path: str | os.PathLike) -> pathlib.Path:
  """run.trec -> run.qrels (beside the run file)."""
  return pathlib.Path(run_path).with_suffix(".qrels")


def _ids(encoded: Mapping[str, protocols.EncodedSet], language: str):
  """(question ids, candidate ids) of one language as written: `LANG/` prefixed when
  several languages share the file; a doc_id repeated in one language gets `#index`."""
  prefix = f"{language}/" if len(encoded) > 1 else ""
  data = encoded[language].data
  doc_ids = [c.doc_id for c in data.candidates]
  if len(set(doc_ids)) != len(doc_ids):
    doc_ids = [f"{d}#{i}" for i, d in enumerate(doc_ids)]
  clean = lambda s: re.sub(r"\s+", "_", str(s))
  return ([prefix + clean(q.qid) for q in data.questions],
          [prefix + clean(d) for d in doc_ids])


def write_run(encoded: Mapping[str, protocols.EncodedSet], path: str | os.PathLike,
              depth: int = DEFAULT_DEPTH, tag: str = TAG,
              search_options: Mapping | None = None) -> pathlib.Path:
  """The top `depth` candidates of every question, in TREC run format; also writes
  the qrels beside it (`qrels_path`). Returns the run's path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tag = re.sub(r"\s+", "_", tag) or TAG
  lines = []
  for language, enc in encoded.items():
    if not len(enc.questions):
      continue
    qids, docids = _ids(encoded, language)
    k = min(int(depth), len(enc.candidates))
    scores, ranked = search.top_k(np.asarray(enc.questions), np.asarray(enc.candidates), k,
                                  **dict(search_options or {}))
    for i, qid in enumerate(qids):
      lines += [f"{qid} Q0 {docids[j]} {rank} {float(s):.6f} {tag}"
                for rank, (j, s) in enumerate(zip(ranked[i], scores[i]), 1)]
  path.write_text("\n".join(lines) + "\n")
  write_qrels(encoded, qrels_path(path))
  return path


def write_qrels(encoded: Mapping[str, protocols.EncodedSet], path: str | os.PathLike) -> pathlib.Path:
  """`qid 0 docid grade` for every relevant candidate the evaluation scored."""
  path = pathlib.Path(path)
  lines = []
  for language, enc in encoded.items():
    qids, docids = _ids(encoded, language)
    for qid, question in zip(qids, enc.data.questions):
      lines += [f"{qid} 0 {docids[j]} {grade}" for j, grade in sorted(question.relevant.items())
                if grade >= 1]
  path.write_text("\n".join(lines) + "\n")
  return path
