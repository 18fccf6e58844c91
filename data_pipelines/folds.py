"""Train / evaluation folds, and the check that keeps them apart.

Every run trains on one parallel QA source and evaluates zero-shot on others
(disjoint by construction: no source is both trained and evaluated on):

  fold A (default): train MLQA-R (ar de en es hi vi zh); evaluate XQuAD-R (11) + TyDi GoldP dev (9)
  fold B:           train XQuAD-R (11);                  evaluate MLQA-R (7)   + TyDi GoldP dev (9)

`check_no_overlap` refuses a run whose training questions or positives also
appear in its evaluation sets (same question id, same question text, or a
training positive that is an evaluation candidate), so a leak cannot slip in
through a new source or a changed reader.
"""
from __future__ import annotations

from configs import split_list
import dataclasses
import hashlib
import re
import unicodedata
from typing import Iterable, Mapping, Sequence

from data_pipelines import readers
from data_pipelines.errors import ProjectError


class FoldOverlapError(ProjectError, ValueError):
  """Training data overlap the evaluation data of the same fold."""


@dataclasses.dataclass(frozen=True)
class Fold:
  """Which benchmark trains, which benchmarks evaluate."""
  name: str
  train_benchmark: str                 # "mlqa_r" or "xquad_r"
  train_languages: tuple[str, ...]
  eval_benchmarks: tuple[tuple[str, tuple[str, ...]], ...]  # (benchmark, languages)


# Evaluated by every fold (TyDi GoldP at sentence level reads the same questions as
# tydiqa_goldp, so the overlap check needs it once; AfriQA: its test split's languages).
_ROBUSTNESS = (("tydiqa_goldp", tuple(readers.TYDI_LANGUAGES)),
               ("afriqa", tuple(readers.AFRIQA_GOLD_PASSAGE_LANGUAGES["test"])))
FOLDS: dict[str, Fold] = {
    "A": Fold("A", "mlqa_r", tuple(readers.MLQA_R_LANGUAGES),
              (("xquad_r", tuple(readers.XQUAD_R_LANGUAGES)),) + _ROBUSTNESS),
    "B": Fold("B", "xquad_r", tuple(readers.XQUAD_R_LANGUAGES),
              (("mlqa_r", tuple(readers.MLQA_R_LANGUAGES)),) + _ROBUSTNESS),
}


def get_fold(name: str) -> Fold:
  if name not in FOLDS:
    raise ValueError(f"unknown fold {name!r}; choose one of {sorted(FOLDS)}")
  return FOLDS[name]


def train_languages(fold: Fold, subset: Sequence[str] | None = None) -> tuple[str, ...]:
  """The fold's training languages, or the given subset of them (order of the fold).

  `subset` is a sequence of codes or a comma-separated string ("de,en"); empty means all.
  """
  subset = split_list(subset)
  if not subset:
    return fold.train_languages
  unknown = sorted(set(subset) - set(fold.train_languages))
  if unknown:
    raise ValueError(f"train_languages {unknown} are not in fold {fold.name}'s training source "
                     f"{fold.train_benchmark} ({', '.join(fold.train_languages)})")
  return tuple(l for l in fold.train_languages if l in subset)


def load_train_sets(fold: Fold, data_dir, languages: Sequence[str] | None = None
                    ) -> dict[str, readers.RetrievalSet]:
  """language -> RetrievalSet of the fold's training source (data_dir None: the default)."""
  return {l: readers.read_benchmark(fold.train_benchmark, data_dir, l) for l in train_languages(fold, languages)}


def load_eval_sets(fold: Fold, data_dir) -> list[readers.RetrievalSet]:
  """Every evaluation RetrievalSet of the fold."""
  return [readers.read_benchmark(b, data_dir, l) for b, langs in fold.eval_benchmarks for l in langs]


def train_input_files(fold: Fold, data_dir, languages: Sequence[str]) -> list:
  """The raw files the training sets are read from (hashed into the shard manifest)."""
  from data_pipelines import datadir
  return [datadir.locate(data_dir, fold.train_benchmark, f"{l}.json") for l in languages]


def _norm(text: str) -> str:
  """Text identity for leak checks: NFKC, case-folded, whitespace collapsed."""
  return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def check_no_overlap(train_sets: Iterable[readers.RetrievalSet],
                     eval_sets: Iterable[readers.RetrievalSet], max_examples: int = 5) -> None:
  """Raise FoldOverlapError if training and evaluation data share anything.

  Checked: training question ids vs evaluation question ids; training question
  texts vs evaluation question texts; training positives (the relevant
  candidates' sentences and paragraphs) vs evaluation candidate texts. Texts
  are compared after NFKC, case folding and whitespace collapsing.
  """
  train_sets, eval_sets = list(train_sets), list(eval_sets)
  eval_qids: dict[str, str] = {}
  eval_questions: dict[str, str] = {}
  eval_candidates: dict[str, str] = {}
  for s in eval_sets:
    where = f"{s.benchmark}/{s.language}"
    for q in s.questions:
      eval_qids.setdefault(q.qid, where)
      eval_questions.setdefault(_norm(q.text), where)
    for c in s.candidates:
      eval_candidates.setdefault(_norm(c.text), where)
  problems: list[str] = []
  count = 0
  for s in train_sets:
    where = f"{s.benchmark}/{s.language}"
    for q in s.questions:
      found = []
      if q.qid in eval_qids:
        found.append(f"question id {q.qid!r} is also in {eval_qids[q.qid]}")
      if _norm(q.text) in eval_questions:
        found.append(f"question text {q.text[:60]!r} is also a question in "
                     f"{eval_questions[_norm(q.text)]}")
      for i in q.relevant:
        cand = s.candidates[i]
        for positive in {cand.text, cand.context}:
          if _norm(positive) in eval_candidates:
            found.append(f"positive {positive[:60]!r} is also a candidate in "
                         f"{eval_candidates[_norm(positive)]}")
      count += len(found)
      problems += [f"{where} question {q.qid}: {f}" for f in found]
  if problems:
    shown = "\n  ".join(problems[:max_examples])
    raise FoldOverlapError(
        f"{count} overlaps between training and evaluation data; refusing to train. "
        f"Examples:\n  {shown}")


_CHECKED: set = set()  # see check_fold


def check_fold(fold: Fold, train_sets: Mapping[str, readers.RetrievalSet], data_dir) -> None:
  """`check_no_overlap` of the fold's training sets against all its evaluation sets.

  A check that passed is not repeated in the process for the same training texts
  while no raw data file changed (sizes and modification times in the data and
  download directories): a study's runs of one fold would each spend ~1.5 s (fold A,
  2-core CPU) reading the evaluation sets again.
  """
  key = (fold.name, _train_digest(train_sets), _data_files(data_dir))
  if key in _CHECKED:
    return
  check_no_overlap(train_sets.values(), load_eval_sets(fold, data_dir))
  _CHECKED.add(key)


def _train_digest(train_sets: Mapping[str, readers.RetrievalSet]) -> str:
  """sha256 of what `check_no_overlap` reads of the training sets."""
  digest = hashlib.sha256()
  for language, s in sorted(train_sets.items()):
    digest.update(f"{language}\0{s.benchmark}\0".encode())
    for q in s.questions:
      digest.update(f"{q.qid}\0{q.text}\0".encode())
      for i in q.relevant:
        digest.update(f"{s.candidates[i].text}\0{s.candidates[i].context}\0".encode())
  return digest.hexdigest()


def _data_files(data_dir) -> tuple:
  """(path, size, mtime) of every file the readers may read (`datadir.locate`'s places)."""
  from data_pipelines import datadir
  roots = [datadir.cache_dir()]
  try:
    roots.insert(0, datadir.resolve_data_dir(data_dir))
  except datadir.DataError:
    pass
  return tuple((str(f), st.st_size, st.st_mtime_ns) for root in roots if root.is_dir()
               for f in sorted(root.rglob("*")) if f.is_file() for st in [f.stat()])
