"""Readers for the retrieval benchmarks: one language of one split -> `RetrievalSet`.

Every benchmark becomes the same shape: a list of candidates (the retrievable
units), a list of questions, and for each question the indices of its relevant
candidates with a relevance grade. Records that cannot be used are never dropped
silently: each one is written to the set's `IssueLog` with its file, record id
and the problem, and `strict=True` turns the first one into a `DataError`.

Benchmarks and their rules:

- XQuAD-R, MLQA-R (LAReQA): SQuAD-like JSON whose paragraphs carry `sentences`
  and `sentence_breaks` ([start, end) character offsets into `context`). Every
  sentence of every paragraph is a candidate, duplicates included (LAReQA's
  published candidate counts keep them: e.g. XQuAD-R zh has 1,196 sentences of
  which 1,192 distinct). A question's relevant candidate is the sentence whose
  break [start, end) holds the answer start. Question ids are shared across
  languages, so `qid` is the parallel-group id.
- TyDi QA GoldP (SQuAD format, one passage per question): each language's
  unique gold passages (deduplicated by text) are its candidates.
- TyDi QA GoldP at sentence level (LAReQA's construction applied to TyDi):
  the candidates are the sentences of each language's unique gold passages,
  cut by `sentencex` (Wikimedia's multilingual segmenter); a question's
  relevant candidate is the sentence holding its answer start. The sentence
  spans partition the passage (each span is a sentence plus the whitespace
  after it), so every answer start inside the passage falls in exactly one.
- AfriQA (JSON Lines): per language and split, a queries file (native
  question, its human translation into the pivot language) and a gold-passage
  file (the same question id with its gold passage in the pivot language,
  English or French). The candidates are the split's unique gold passages of
  that language (deduplicated by text; the title is not part of the text);
  each question carries its translation in `Question.translated`.
- MIRACL format: topics TSV (qid<TAB>text), qrels TREC (qid Q0 docid grade),
  corpus JSONL {docid, title, text}; grade 0 means judged not relevant.
- Any SQuAD-format file: sentences as candidates when paragraphs carry sentence
  breaks, else deduplicated paragraphs.
"""
from __future__ import annotations

import codecs
import collections
import dataclasses
import functools
import hashlib
import json
import pathlib
import sys
from typing import Iterable, Iterator, Mapping

from data_pipelines.errors import DataError

XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MLQA_R_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
# The 9 languages of TyDi QA GoldP dev (train exists only for en, ko, sw here).
TYDI_LANGUAGES = ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te")
MIRACL_LANGUAGES = ("ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko",
                    "ru", "sw", "te", "th", "yo", "zh")  # MIRACL v1.0
# AfriQA (masakhane-io/afriqa@5c29933): questions in 10 African languages, gold
# passages in the pivot language (French for fon and wol, English otherwise).
AFRIQA_LANGUAGES = ("bem", "fon", "hau", "ibo", "kin", "swa", "twi", "wol", "yor", "zul")
AFRIQA_PIVOT = {language: "fr" if language in ("fon", "wol") else "en" for language in AFRIQA_LANGUAGES}
AFRIQA_SPLITS = ("test", "dev", "train")
# Languages with a gold-passage file upstream, per split: none for wol in any
# split, none for swa in dev and train, none for yor in dev. Queries exist for all.
AFRIQA_GOLD_PASSAGE_LANGUAGES = {
    "test": ("bem", "fon", "hau", "ibo", "kin", "swa", "twi", "yor", "zul"),
    "dev": ("bem", "fon", "hau", "ibo", "kin", "twi", "zul"),
    "train": ("bem", "fon", "hau", "ibo", "kin", "twi", "yor", "zul"),
}
TYDI_FILE_NAMES = {
    "ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish",
    "id": "indonesian", "ko": "korean", "ru": "russian", "sw": "swahili",
    "te": "telugu",
}

# Bad UTF-8 bytes are decoded to this private-use code point so that the
# records holding them can be found and logged after parsing.
_BAD_BYTES = "\U0010fffd"


def _mark_bad_bytes(error: UnicodeDecodeError):
  return _BAD_BYTES, error.end


codecs.register_error("mlir_mark_bad_bytes", _mark_bad_bytes)


# ----------------------------------------------------------------------------
# Issue log


@dataclasses.dataclass(frozen=True)
class Issue:
  file: str
  record_id: str
  problem: str          # a category, the same string for the same kind of problem
  detail: str = ""      # what exactly (offsets, values)
  dropped: bool = True  # False: the record was kept, this is a caveat about it

  def message(self) -> str:
    text = f"{self.file}: record {self.record_id}: {self.problem}"
    return f"{text} ({self.detail})" if self.detail else text


class IssueLog:
  """Every record that could not be used (or was kept with a caveat).

  With `strict=True` the first unusable record raises `DataError`; caveats on
  kept records (`dropped=False`) never raise.
  """

  def __init__(self, strict: bool = False):
    self.strict = strict
    self.issues: list[Issue] = []

  def add(self, file, record_id, problem: str, detail: str = "", dropped: bool = True) -> None:
    issue = Issue(str(file), str(record_id), problem, str(detail), dropped)
    if self.strict and dropped:
      raise DataError(issue.message())
    self.issues.append(issue)

  def extend(self, other: "IssueLog") -> None:
    self.issues.extend(other.issues)

  def __len__(self) -> int:
    return len(self.issues)

  def __iter__(self) -> Iterator[Issue]:
    return iter(self.issues)

  def __bool__(self) -> bool:
    return bool(self.issues)

  @property
  def num_dropped(self) -> int:
    return sum(issue.dropped for issue in self.issues)

  def counts(self) -> collections.Counter:
    """(file, problem) -> number of records."""
    return collections.Counter((i.file, i.problem) for i in self.issues)

  def summary(self) -> str:
    """A plain-text table: file | problem | records | dropped or kept."""
    if not self.issues:
      return "no data issues"
    rows = collections.Counter((i.file, i.problem, i.dropped) for i in self.issues)
    width = max(len(f) for f, _, _ in rows)
    lines = [f"{'file':<{width}}  {'records':>7}  action   problem"]
    for (file, problem, dropped), n in sorted(rows.items()):
      lines.append(f"{file:<{width}}  {n:>7}  {'dropped' if dropped else 'kept   '}  {problem}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Data model


@dataclasses.dataclass(frozen=True)
class Candidate:
  text: str     # the retrievable unit: a sentence (LAReQA) or passage (TyDi, MIRACL)
  context: str  # its paragraph (== text for passages)
  doc_id: str   # stable id within the language: f"{paragraph_id}:{sentence_index}" or the passage/doc id


@dataclasses.dataclass(frozen=True)
class Question:
  qid: str                    # shared across languages for parallel data (the parallel-group id)
  text: str
  relevant: Mapping[int, int]  # candidate index (same RetrievalSet) -> relevance grade (>= 1)
  translated: str | None = None  # the question's human translation into the pivot language (AfriQA)


@dataclasses.dataclass
class RetrievalSet:
  """One language of one benchmark split."""
  benchmark: str  # "xquad_r", "mlqa_r", "tydiqa_goldp", "tydiqa_goldp_sentences", "afriqa", "miracl", "squad"
  language: str
  questions: list[Question]
  candidates: list[Candidate]
  issues: IssueLog

  def __repr__(self) -> str:
    return (f"RetrievalSet({self.benchmark}/{self.language}: {len(self.questions)} questions, "
            f"{len(self.candidates)} candidates, {len(self.issues)} issues)")


# ----------------------------------------------------------------------------
# Reading files


def _stat_key(path: pathlib.Path) -> tuple[str, int, int]:
  try:
    st = path.stat()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found (see data_pipelines.datadir for the data "
                    "directory and downloads)") from None
  return str(path), st.st_mtime_ns, st.st_size


def _decode(data: bytes) -> str:
  return data.decode("utf-8", errors="mlir_mark_bad_bytes")


@functools.lru_cache(maxsize=64)
def _load_json_cached(path: str, mtime_ns: int, size: int):
  del mtime_ns, size  # cache key only: a changed file is read again
  with open(path, "rb") as f:
    text = _decode(f.read())
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not valid JSON ({e})") from None


def _load_json(path: pathlib.Path):
  """Parsed JSON (cached while the file is unchanged; callers must not mutate it)."""
  return _load_json_cached(*_stat_key(path))


def _read_lines(path: pathlib.Path, issues: IssueLog) -> Iterator[tuple[int, str]]:
  """(line number from 1, decoded line without newline); bad UTF-8 lines are logged."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      raw = raw.rstrip(b"\r\n")
      try:
        yield number, raw.decode("utf-8")
      except UnicodeDecodeError as e:
        issues.add(path, f"line {number}", "bad UTF-8", f"byte {e.start}: {e.reason}")


def _has_bad_bytes(*texts: str) -> bool:
  return any(_BAD_BYTES in t for t in texts)


def _short_hash(text: str) -> str:
  return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------
# SQuAD-format files (LAReQA, TyDi GoldP, SQuAD)


def _squad_paragraphs(obj, path, issues: IssueLog) -> Iterator[tuple[str, dict]]:
  """(paragraph id "article.paragraph", paragraph dict) for a SQuAD-format object."""
  if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
    raise DataError(f"{path}: not SQuAD format (no top-level 'data' list)")
  for a, article in enumerate(obj["data"]):
    paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
    if not isinstance(paragraphs, list):
      issues.add(path, f"article {a}", "malformed article (no 'paragraphs' list)")
      continue
    for p, paragraph in enumerate(paragraphs):
      pid = f"{a}.{p}"
      if (not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str)
          or not isinstance(paragraph.get("qas"), list)):
        issues.add(path, f"paragraph {pid}", "malformed paragraph (needs 'context' and 'qas')")
        continue
      yield pid, paragraph


def _answer_starts(qa: dict) -> list[int] | None:
  answers = qa.get("answers")
  if not isinstance(answers, list):
    return None
  starts = [ans.get("answer_start") for ans in answers if isinstance(ans, dict)]
  if not starts or not all(isinstance(s, int) and not isinstance(s, bool) for s in starts):
    return None
  return starts


class _QuestionAdder:
  """Shared question checks: id present and unique, text non-empty and decodable."""

  def __init__(self, path, issues: IssueLog):
    self.path, self.issues = path, issues
    self.seen: set[str] = set()
    self.questions: list[Question] = []

  def check(self, qa, pid: str) -> tuple[str, str] | None:
    """(qid, text) when the question itself is usable, else None (logged)."""
    if not isinstance(qa, dict):
      self.issues.add(self.path, f"paragraph {pid}", "malformed question entry")
      return None
    qid = qa.get("id")
    if not isinstance(qid, str) or not qid:
      self.issues.add(self.path, f"paragraph {pid}", "question without an id")
      return None
    if qid in self.seen:
      self.issues.add(self.path, qid, "duplicate question id")
      return None
    self.seen.add(qid)
    text = qa.get("question")
    if not isinstance(text, str) or not text.strip():
      self.issues.add(self.path, qid, "empty question")
      return None
    if _has_bad_bytes(text, qid):
      self.issues.add(self.path, qid, "bad UTF-8 in question")
      return None
    return qid, text


def _read_squad_sentences(obj, path, benchmark, language, issues) -> RetrievalSet:
  """Sentences as candidates (LAReQA rule; duplicates kept)."""
  candidates: list[Candidate] = []
  adder = _QuestionAdder(path, issues)
  for pid, paragraph in _squad_paragraphs(obj, path, issues):
    context = paragraph["context"]
    sentences, breaks = paragraph.get("sentences"), paragraph.get("sentence_breaks")
    if (not isinstance(sentences, list) or not isinstance(breaks, list)
        or len(sentences) != len(breaks)
        or not all(isinstance(b, list) and len(b) == 2 for b in breaks)):
      issues.add(path, f"paragraph {pid}", "malformed sentences / sentence_breaks",
                 f"{len(paragraph['qas'])} questions dropped with it")
      continue
    if _has_bad_bytes(context):
      issues.add(path, f"paragraph {pid}", "bad UTF-8 in paragraph",
                 f"{len(paragraph['qas'])} questions dropped with it")
      continue
    # Sentence index within the paragraph -> candidate index (None: unusable).
    index: list[int | None] = []
    for s, (sentence, (start, end)) in enumerate(zip(sentences, breaks)):
      record = f"{pid}:{s}"
      if not isinstance(sentence, str) or not sentence.strip():
        issues.add(path, record, "empty sentence")
        index.append(None)
        continue
      if _has_bad_bytes(sentence):
        issues.add(path, record, "bad UTF-8 in sentence")
        index.append(None)
        continue
      if context[start:end] != sentence:
        issues.add(path, record, "sentence text differs from context[start:end]",
                   f"breaks [{start}, {end}); the 'sentences' text is used", dropped=False)
      index.append(len(candidates))
      candidates.append(Candidate(text=sentence, context=context, doc_id=record))
    for qa in paragraph["qas"]:
      checked = adder.check(qa, pid)
      if checked is None:
        continue
      qid, text = checked
      starts = _answer_starts(qa)
      if starts is None:
        issues.add(path, qid, "no usable answer_start")
        continue
      relevant: dict[int, int] = {}
      for start in starts:
        held = [s for s, (b, e) in enumerate(breaks) if b <= start < e]
        if not held:
          issues.add(path, qid, "answer start outside every sentence", f"answer_start={start}",
                     dropped=len(starts) == 1)
          continue
        if index[held[0]] is None:
          issues.add(path, qid, "answer sentence unusable", f"sentence {pid}:{held[0]}",
                     dropped=len(starts) == 1)
          continue
        relevant[index[held[0]]] = 1
      if not relevant:
        if len(starts) > 1:
          issues.add(path, qid, "no answer start inside a usable sentence")
        continue
      adder.questions.append(Question(qid=qid, text=text, relevant=relevant))
  return RetrievalSet(benchmark, language, adder.questions, candidates, issues)


def _usable_paragraphs(obj, path, issues: IssueLog) -> Iterator[tuple[str, dict, str]]:
  """(paragraph id, paragraph, its context) of every paragraph with a usable context; an
  empty one or one with bad UTF-8 is logged with its questions."""
  for pid, paragraph in _squad_paragraphs(obj, path, issues):
    context = paragraph["context"]
    problem = ("empty paragraph" if not context.strip()
               else "bad UTF-8 in paragraph" if _has_bad_bytes(context) else None)
    if problem:
      issues.add(path, f"paragraph {pid}", problem,
                 f"{len(paragraph['qas'])} questions dropped with it")
      continue
    yield pid, paragraph, context


def _read_squad_paragraphs(obj, path, benchmark, language, issues) -> RetrievalSet:
  """Unique paragraphs (by text) as candidates; a question's paragraph is relevant."""
  candidates: list[Candidate] = []
  by_text: dict[str, int] = {}
  adder = _QuestionAdder(path, issues)
  for pid, paragraph, context in _usable_paragraphs(obj, path, issues):
    if context not in by_text:
      by_text[context] = len(candidates)
      candidates.append(Candidate(text=context, context=context, doc_id=_short_hash(context)))
    for qa in paragraph["qas"]:
      checked = adder.check(qa, pid)
      if checked is None:
        continue
      qid, text = checked
      adder.questions.append(Question(qid=qid, text=text, relevant={by_text[context]: 1}))
  return RetrievalSet(benchmark, language, adder.questions, candidates, issues)


def read_squad_file(path, language: str, benchmark: str = "squad", strict: bool = False,
                    sentences: bool | None = None) -> RetrievalSet:
  """Any SQuAD-format JSON file.

  `sentences=None` picks sentence candidates when the paragraphs carry
  `sentence_breaks` (LAReQA), else paragraph candidates (deduplicated by text).
  """
  path = pathlib.Path(path)
  issues = IssueLog(strict)
  obj = _load_json(path)
  if sentences is None:
    first = next(_squad_paragraphs(obj, path, IssueLog()), (None, {}))[1]
    sentences = "sentence_breaks" in first
  read = _read_squad_sentences if sentences else _read_squad_paragraphs
  return read(obj, path, benchmark, language, issues)


def _check_language(language: str, languages: Iterable[str], benchmark: str) -> None:
  if language not in languages:
    raise DataError(f"{benchmark}: unknown language {language!r}; expected one of {', '.join(languages)}")


def _data_path(data_dir, folder: str, name: str) -> pathlib.Path:
  from data_pipelines import datadir  # local import: datadir needs nothing from here
  return datadir.locate(data_dir, folder, name)


def read_xquad_r(data_dir, language: str, strict: bool = False) -> RetrievalSet:
  """XQuAD-R (LAReQA): 1,190 questions per language, sentences as candidates."""
  _check_language(language, XQUAD_R_LANGUAGES, "xquad_r")
  path = _data_path(data_dir, "xquad_r", f"{language}.json")
  return read_squad_file(path, language, "xquad_r", strict, sentences=True)


def read_mlqa_r(data_dir, language: str, strict: bool = False) -> RetrievalSet:
  """MLQA-R (LAReQA, MLQA v1 dev): sentences as candidates."""
  _check_language(language, MLQA_R_LANGUAGES, "mlqa_r")
  path = _data_path(data_dir, "mlqa_r", f"{language}.json")
  return read_squad_file(path, language, "mlqa_r", strict, sentences=True)


def read_tydi_goldp(data_dir, language: str, split: str = "dev", strict: bool = False) -> RetrievalSet:
  """TyDi QA GoldP v1.1: each language's unique gold passages are its candidates."""
  _check_language(language, TYDI_LANGUAGES, "tydiqa_goldp")
  if split not in ("dev", "train"):
    raise DataError(f"tydiqa_goldp: unknown split {split!r}; expected 'dev' or 'train'")
  name = f"{TYDI_FILE_NAMES[language]}_tydiqa_{split}.json"
  path = _data_path(data_dir, "tydiqa_goldp", name)
  return read_squad_file(path, language, "tydiqa_goldp", strict, sentences=False)


# ----------------------------------------------------------------------------
# TyDi GoldP at sentence level


class SegmentationError(DataError):
  """The segmenter's output does not line up with the text it was given."""


def sentence_spans(text: str, language: str) -> list[tuple[int, int]]:
  """Sentence spans [start, end) of `text` by `sentencex`, as a partition of the text.

  Each span is one sentence plus the whitespace after it (whitespace before the
  first sentence belongs to the first span; a whitespace-only segment joins the
  sentence before it), so the spans are contiguous, start at 0, end at
  len(text), and every character offset lies in exactly one span. Empty or
  whitespace-only text has no spans. Raises `SegmentationError` when the
  segmenter's offsets do not match its own segment texts.
  """
  try:
    import sentencex
  except ImportError:  # pragma: no cover - install_requires has it
    raise DataError("the sentence-level benchmarks need `sentencex` (pip install sentencex)") from None
  if not text.strip():
    return []
  starts = []
  for segment in sentencex.get_sentence_boundaries(language, text):
    start, end, piece = segment["start_index"], segment["end_index"], segment["text"]
    if text[start:end] != piece:
      raise SegmentationError(f"sentencex offsets [{start}, {end}) do not match its segment text")
    if piece.strip() and (not starts or start > starts[-1]):
      starts.append(start)
  if not starts:
    return [(0, len(text))]
  starts[0] = 0
  return list(zip(starts, starts[1:] + [len(text)]))


def read_tydi_goldp_sentences(data_dir, language: str, split: str = "dev",
                              strict: bool = False) -> RetrievalSet:
  """TyDi QA GoldP v1.1 at sentence level: the sentences of each language's unique gold
  passages are its candidates (duplicates across passages kept, as in LAReQA); the
  relevant candidate is the sentence holding an answer start (one per distinct start).

  Candidate `doc_id` is f"{passage hash}:{sentence index}", `context` the passage.
  """
  _check_language(language, TYDI_LANGUAGES, "tydiqa_goldp_sentences")
  if split not in ("dev", "train"):
    raise DataError(f"tydiqa_goldp_sentences: unknown split {split!r}; expected 'dev' or 'train'")
  path = _data_path(data_dir, "tydiqa_goldp", f"{TYDI_FILE_NAMES[language]}_tydiqa_{split}.json")
  return segmented_sentences(_load_json(path), path, "tydiqa_goldp_sentences", language, strict)


def segmented_sentences(obj, path, benchmark: str, language: str,
                        strict: bool = False) -> RetrievalSet:
  """LAReQA's construction on any SQuAD-format object: the sentences (`sentence_spans`) of
  its unique passages are the candidates, a question's relevant candidates the sentences
  holding its answer starts. Candidate `doc_id` f"{passage hash}:{sentence index}",
  `context` the passage."""
  import bisect
  issues = IssueLog(strict)
  candidates: list[Candidate] = []
  passages: dict[str, tuple[list[int], int]] = {}  # passage text -> (span starts, first candidate)
  adder = _QuestionAdder(path, issues)
  for pid, paragraph, context in _usable_paragraphs(obj, path, issues):
    if context not in passages:
      try:
        spans = sentence_spans(context, language)
      except SegmentationError as e:
        issues.add(path, f"paragraph {pid}", "segmenter output unusable; passage kept as one sentence",
                   str(e), dropped=False)
        spans = [(0, len(context))]
      passages[context] = ([s for s, _ in spans], len(candidates))
      key = _short_hash(context)
      for s, (start, end) in enumerate(spans):
        candidates.append(Candidate(text=context[start:end].strip(), context=context,
                                    doc_id=f"{key}:{s}"))
    span_starts, first = passages[context]
    for qa in paragraph["qas"]:
      checked = adder.check(qa, pid)
      if checked is None:
        continue
      qid, text = checked
      starts = _answer_starts(qa)
      if starts is None:
        issues.add(path, qid, "no usable answer_start")
        continue
      relevant: dict[int, int] = {}
      answers = [a for a in qa["answers"] if isinstance(a, dict)]  # as `_answer_starts` reads
      for answer, start in zip(answers, starts):
        if not 0 <= start < len(context):
          issues.add(path, qid, "answer start outside the passage", f"answer_start={start}",
                     dropped=len(starts) == 1)
          continue
        said = answer.get("text")
        if isinstance(said, str) and said and context[start:start + len(said)] != said:
          where = (f"found at {context.find(said)}" if said in context
                   else "absent from the passage")
          issues.add(path, qid, "answer text not at its answer_start (start kept)",
                     f"answer_start={start}: {said[:40]!r} is {where}", dropped=False)
        relevant[first + bisect.bisect_right(span_starts, start) - 1] = 1
      if not relevant:
        if len(starts) > 1:
          issues.add(path, qid, "no answer start inside the passage")
        continue
      adder.questions.append(Question(qid=qid, text=text, relevant=relevant))
  return RetrievalSet(benchmark, language, adder.questions, candidates, issues)


# ----------------------------------------------------------------------------
# AfriQA (JSON Lines)


def afriqa_files(data_dir, language: str, split: str = "test") -> tuple[pathlib.Path, pathlib.Path]:
  """(queries file, gold-passage file) of one AfriQA language and split in the data dir."""
  _check_language(language, AFRIQA_LANGUAGES, "afriqa")
  if split not in AFRIQA_SPLITS:
    raise DataError(f"afriqa: unknown split {split!r}; expected one of {', '.join(AFRIQA_SPLITS)}")
  if language not in AFRIQA_GOLD_PASSAGE_LANGUAGES[split]:
    raise DataError(
        f"afriqa: upstream (masakhane-io/afriqa@5c29933) has no gold passages for {language} in "
        f"{split}, so it cannot be evaluated there; languages with gold passages in {split}: "
        f"{', '.join(AFRIQA_GOLD_PASSAGE_LANGUAGES[split])}")
  stem = f"afriqa.{language}.{AFRIQA_PIVOT[language]}.{split}.json"
  return (_data_path(data_dir, "afriqa", f"queries__{language}__queries.{stem}"),
          _data_path(data_dir, "afriqa", f"gold_passages__{language}__gold_span_passages.{stem}"))


def _jsonl_records(path: pathlib.Path, issues: IssueLog) -> Iterator[tuple[str, dict]]:
  """(record id, object) per usable line; malformed lines and ids, duplicates are logged."""
  seen: set[str] = set()
  for number, line in _read_lines(path, issues):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      issues.add(path, f"line {number}", "malformed JSON line", str(e))
      continue
    rid = record.get("id") if isinstance(record, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid) == "":
      issues.add(path, f"line {number}", "record without an id")
      continue
    rid = str(rid)
    if rid in seen:
      issues.add(path, rid, "duplicate record id", f"line {number}")
      continue
    seen.add(rid)
    yield rid, record


def _text_field(record: dict, name: str) -> str | None:
  value = record.get(name)
  return value if isinstance(value, str) and value.strip() else None


def read_afriqa(data_dir, language: str, split: str = "test", strict: bool = False) -> RetrievalSet:
  """AfriQA: native questions of one language; candidates = the split's unique gold
  passages of that language (in its pivot language); `Question.translated` holds the
  question's human translation into the pivot language.

  The gold-passage record gives the question (`question_lang`), its translation
  (`question_translated`) and the passage (`context`); the queries file is read to
  log every question that has no gold-passage record and to cross-check the texts
  (a difference is kept with a caveat; the gold-passage record's texts are used,
  since they go with its passage).
  """
  queries_path, gold_path = afriqa_files(data_dir, language, split)
  issues = IssueLog(strict)
  queries = {}
  for rid, record in _jsonl_records(queries_path, issues):
    queries[rid] = (record.get("question"), record.get("translated_question"))
  candidates: list[Candidate] = []
  by_text: dict[str, int] = {}
  questions: list[Question] = []
  with_gold: set[str] = set()
  for rid, record in _jsonl_records(gold_path, issues):
    with_gold.add(rid)
    context = _text_field(record, "context")
    text = _text_field(record, "question_lang")
    translated = _text_field(record, "question_translated")
    if context is None:
      issues.add(gold_path, rid, "no gold passage text (null or empty context)")
      continue
    if text is None:
      issues.add(gold_path, rid, "empty question")
      continue
    if translated is None:
      issues.add(gold_path, rid, "empty translated question")
      continue
    if _has_bad_bytes(context, text, translated):
      issues.add(gold_path, rid, "bad UTF-8 in record")
      continue
    if rid not in queries:
      issues.add(gold_path, rid, "question id missing from the queries file", dropped=False)
    elif queries[rid] != (text, translated):
      issues.add(gold_path, rid, "question text differs from the queries file",
                 "the gold-passage record's texts are used", dropped=False)
    if context not in by_text:
      by_text[context] = len(candidates)
      candidates.append(Candidate(text=context, context=context, doc_id=_short_hash(context)))
    questions.append(Question(qid=rid, text=text, relevant={by_text[context]: 1},
                              translated=translated))
  for rid in queries:
    if rid not in with_gold:
      issues.add(queries_path, rid, "no gold-passage record for this question")
  return RetrievalSet("afriqa", language, questions, candidates, issues)


# ----------------------------------------------------------------------------
# MIRACL format (topics TSV, qrels TREC, corpus JSONL)


def read_topics(path, issues: IssueLog) -> dict[str, str]:
  """Topics TSV: qid<TAB>text per line -> {qid: text} in file order."""
  path = pathlib.Path(path)
  _stat_key(path)
  topics: dict[str, str] = {}
  for number, line in _read_lines(path, issues):
    if not line.strip():
      continue
    parts = line.split("\t")
    if len(parts) < 2 or not parts[0].strip():
      issues.add(path, f"line {number}", "malformed topic line (want qid<TAB>text)")
      continue
    qid, text = parts[0].strip(), "\t".join(parts[1:]).strip()
    if qid in topics:
      issues.add(path, qid, "duplicate topic id", f"line {number}")
    elif not text:
      issues.add(path, qid, "empty question", f"line {number}")
    else:
      topics[qid] = text
  return topics


def read_qrels(path, issues: IssueLog) -> dict[str, dict[str, int]]:
  """Qrels TREC: "qid Q0 docid grade" per line -> {qid: {docid: grade}} (grade 0 kept)."""
  path = pathlib.Path(path)
  _stat_key(path)
  qrels: dict[str, dict[str, int]] = {}
  for number, line in _read_lines(path, issues):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 4:
      issues.add(path, f"line {number}", "malformed qrels line (want qid Q0 docid grade)")
      continue
    qid, _, docid, grade = parts
    try:
      grade = int(grade)
    except ValueError:
      issues.add(path, f"line {number}", "malformed qrels line (grade is not an integer)",
                 f"grade={grade!r}")
      continue
    judged = qrels.setdefault(qid, {})
    if docid in judged:
      issues.add(path, f"{qid}/{docid}", "duplicate qrels judgement", f"line {number}")
      continue
    judged[docid] = grade
  return qrels


def read_corpus_jsonl(path, issues: IssueLog) -> list[Candidate]:
  """Corpus JSONL: {"docid" (BEIR: "_id"), "title", "text"} per line.

  A candidate's text is "title text" (the title gives the passage its subject,
  as MIRACL baselines encode it); `context` is the same string.
  """
  path = pathlib.Path(path)
  _stat_key(path)
  candidates: list[Candidate] = []
  seen: set[str] = set()
  for number, line in _read_lines(path, issues):
    if not line.strip():
      continue
    try:
      doc = json.loads(line)
    except json.JSONDecodeError as e:
      issues.add(path, f"line {number}", "malformed JSON line", str(e))
      continue
    docid = doc.get("docid", doc.get("_id")) if isinstance(doc, dict) else None  # _id: BEIR
    text = doc.get("text") if isinstance(doc, dict) else None
    title = doc.get("title", "") if isinstance(doc, dict) else ""
    if not isinstance(docid, str) or not docid or not isinstance(text, str):
      issues.add(path, f"line {number}", "malformed corpus line (needs docid and text)")
      continue
    if docid in seen:
      issues.add(path, docid, "duplicate docid", f"line {number}")
      continue
    if not text.strip():
      issues.add(path, docid, "empty passage")
      continue
    seen.add(docid)
    title = title if isinstance(title, str) else ""
    full = f"{title} {text}" if title.strip() else text
    candidates.append(Candidate(text=full, context=full, doc_id=docid))
  return candidates


def miracl_files(data_dir, language: str, split: str = "dev") -> tuple[pathlib.Path, pathlib.Path]:
  """(topics TSV, qrels TREC) of MIRACL v1.0 in the data dir; the corpora are not there."""
  stem = f"miracl-v1.0-{language}-{split}.tsv"
  return _data_path(data_dir, "miracl", f"topics.{stem}"), _data_path(data_dir, "miracl", f"qrels.{stem}")


def _judged_questions(topics: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                      candidates: list[Candidate], issues: IssueLog, topics_path, qrels_path
                      ) -> list[Question]:
  """Questions with their relevant candidates (grade >= 1); qrels naming an unknown
  topic or docid and questions without a relevant candidate are logged."""
  index = {c.doc_id: i for i, c in enumerate(candidates)}
  for qid in qrels:
    if qid not in topics:
      issues.add(qrels_path, qid, "qrels topic missing from the topics file")
  questions = []
  for qid, text in topics.items():
    relevant = {}
    for docid, grade in qrels.get(qid, {}).items():
      if docid not in index:
        issues.add(qrels_path, f"{qid}/{docid}", "qrels docid missing from the corpus")
      elif grade >= 1:
        relevant[index[docid]] = grade
    if not relevant:
      issues.add(topics_path, qid, "no relevant passage in the corpus")
      continue
    questions.append(Question(qid=qid, text=text, relevant=relevant))
  return questions


def read_beir(directory, language: str, split: str = "test", strict: bool = False) -> RetrievalSet:
  """A BEIR directory (corpus.jsonl with "_id", "title", "text"; queries.jsonl with "_id",
  "text"; qrels/{split}.tsv: "query-id corpus-id score" with a header line), scored like
  MIRACL (graded relevance, 0 = judged not relevant). Only the split's judged queries
  are asked."""
  directory = pathlib.Path(directory)
  qrels_path = directory / "qrels" / f"{split}.tsv"
  if not qrels_path.is_file():
    found = sorted(p.stem for p in (directory / "qrels").glob("*.tsv"))
    raise DataError(f"{directory}: no qrels/{split}.tsv (its qrels: {', '.join(found) or 'none'};"
                    " choose one with --split)")
  issues = IssueLog(strict)
  candidates = read_corpus_jsonl(directory / "corpus.jsonl", issues)
  qrels: dict[str, dict[str, int]] = {}
  for number, line in _read_lines(qrels_path, issues):
    parts = line.split("\t")
    if not line.strip() or (number == 1 and parts[0] in ("query-id", "query_id")):
      continue
    try:
      qid, docid, grade = parts[0], parts[1], int(parts[2])
    except (IndexError, ValueError):
      issues.add(qrels_path, f"line {number}", "malformed qrels line (want query-id, corpus-id, "
                 "score)")
      continue
    qrels.setdefault(qid, {})[docid] = grade
  topics = {}
  for number, line in _read_lines(directory / "queries.jsonl", issues):
    try:
      query = json.loads(line) if line.strip() else None
    except json.JSONDecodeError as e:
      issues.add(directory / "queries.jsonl", f"line {number}", "malformed JSON line", str(e))
      continue
    if isinstance(query, dict) and str(query.get("_id")) in qrels and isinstance(query.get("text"), str):
      topics[str(query["_id"])] = query["text"]
  questions = _judged_questions(topics, qrels, candidates, issues, directory / "queries.jsonl",
                                qrels_path)
  return RetrievalSet("beir_files", language, questions, candidates, issues)


def read_miracl(topics_tsv, qrels_trec, corpus_jsonl, language: str, strict: bool = False) -> RetrievalSet:
  """MIRACL-format data; graded relevance, grade 0 = judged not relevant.

  A question without any relevant passage in the corpus cannot be scored and is
  logged; so is every qrels docid missing from the corpus and every qrels qid
  missing from the topics.
  """
  issues = IssueLog(strict)
  topics = read_topics(topics_tsv, issues)
  qrels = read_qrels(qrels_trec, issues)
  candidates = read_corpus_jsonl(corpus_jsonl, issues)
  questions = _judged_questions(topics, qrels, candidates, issues, topics_tsv, qrels_trec)
  return RetrievalSet("miracl", language, questions, candidates, issues)


# ----------------------------------------------------------------------------
# NTREX-128: 1,997 English news sentences and their human translations (bitext)
# ----------------------------------------------------------------------------
# Project code -> NTREX file code, for the languages evaluated by default: the training
# languages of both folds, every TyDi language, the AfriQA languages NTREX has (not fon,
# twi), and more low-resource African languages (configs.language_groups). The codes are the ones the other
# benchmarks use (sw, not swa), so seen / unseen and groups line up across benchmarks.
NTREX_FILES = {
    "ar": "arb", "de": "deu", "el": "ell", "es": "spa", "hi": "hin", "ru": "rus", "th": "tha",
    "tr": "tur", "vi": "vie", "zh": "zho-CN", "bn": "ben", "fi": "fin", "id": "ind",
    "ko": "kor", "sw": "swa", "te": "tel", "bem": "bem", "ewe": "ewe", "hau": "hau",
    "ibo": "ibo", "kin": "kin", "wol": "wol", "yor": "yor", "zul": "zul", "amh": "amh",
    "nso": "nso", "nya": "nya", "som": "som", "sna": "sna-Latn", "tir": "tir", "tsn": "tsn",
    "xho": "xho",
}
NTREX_LANGUAGES = tuple(NTREX_FILES)
# The study's resource groups of these languages: configs/language_groups.py.
NTREX_SOURCE = "newstest2019-src.eng.txt"


def _aligned_lines(path: pathlib.Path, issues: IssueLog) -> list[str]:
  """Every line of a line-aligned file; a line that is not UTF-8 is logged and kept empty."""
  out = []
  for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
    try:
      out.append(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
      issues.add(path, f"line {number}", "bad UTF-8", f"byte {e.start}: {e.reason}; read as empty",
                 dropped=False)  # its query is dropped (and logged) by the reader
      out.append("")
  return out


def read_ntrex128(data_dir, language: str, split: str = "test", strict: bool = False) -> RetrievalSet:
  """NTREX-128 bitext: the language's 1,997 lines are the questions, the 1,997 English
  source lines the candidates; line i's relevant candidate is English line i (question ids
  are line numbers, shared across languages). An empty line on either side is dropped
  with an issue (its English line stays a candidate)."""
  _check_language(language, NTREX_LANGUAGES, "ntrex128")
  if split != "test":
    raise DataError(f"ntrex128: unknown split {split!r}; NTREX-128 has one split, test")
  issues = IssueLog(strict=strict)
  english_path = _data_path(data_dir, "ntrex128", NTREX_SOURCE)
  path = _data_path(data_dir, "ntrex128", f"newstest2019-ref.{NTREX_FILES[language]}.txt")
  english, lines = _aligned_lines(english_path, issues), _aligned_lines(path, issues)
  if len(lines) != len(english):
    raise DataError(f"{path}: {len(lines)} lines, but {english_path} has {len(english)}; "
                    "NTREX files are line-aligned")
  candidates = [Candidate(text, text, f"line{i}") for i, text in enumerate(english)]
  questions = []
  for i, (text, source) in enumerate(zip(lines, english)):
    if not text.strip() or not source.strip():
      issues.add(path, f"line {i + 1}", "empty line or bad UTF-8 on one side", "query dropped")
      continue
    questions.append(Question(qid=str(i), text=text, relevant={i: 1}))
  return RetrievalSet("ntrex128", language, questions, candidates, issues)


# ----------------------------------------------------------------------------
# The readers of the benchmarks in the data dir, by name: the one dispatch table
# (folds, eval.benchmarks and the command line below use it)
# ----------------------------------------------------------------------------
# name -> (languages, default split, reader(data_dir, language, split, strict) -> RetrievalSet)
DATA_DIR_READERS = {
    "xquad_r": (XQUAD_R_LANGUAGES, "dev", lambda d, l, split, strict: read_xquad_r(d, l, strict)),
    "mlqa_r": (MLQA_R_LANGUAGES, "dev", lambda d, l, split, strict: read_mlqa_r(d, l, strict)),
    "tydiqa_goldp": (TYDI_LANGUAGES, "dev", read_tydi_goldp),
    "tydiqa_goldp_sentences": (TYDI_LANGUAGES, "dev", read_tydi_goldp_sentences),
    "afriqa": (AFRIQA_LANGUAGES, "test", read_afriqa),
    "ntrex128": (NTREX_LANGUAGES, "test", read_ntrex128),
}


def read_benchmark(name: str, data_dir, language: str, split: str | None = None,
                   strict: bool = False) -> RetrievalSet:
  """One language of a data-dir benchmark (split None: its default)."""
  _, default_split, reader = DATA_DIR_READERS[name]
  return reader(data_dir, language, split or default_split, strict)


# ----------------------------------------------------------------------------
# Command line: counts and data issues per language


def main(argv=None) -> None:
  import argparse
  parser = argparse.ArgumentParser(
      description="Read a benchmark with the project's readers and print, per language, the "
                  "number of questions and candidates and a table of unusable records.")
  readers = DATA_DIR_READERS
  parser.add_argument("--benchmark", choices=sorted(readers), required=True)
  parser.add_argument("--languages", nargs="+", default=None, help="default: all of the benchmark's")
  parser.add_argument("--split", default=None,
                      help="tydiqa_goldp(_sentences): dev (default) or train; afriqa: test (default), "
                           "dev or train")
  parser.add_argument("--data_dir", default=None,
                      help="raw data directory (default: $MLIR_DATA_DIR, else ../shared/data)")
  parser.add_argument("--strict", action="store_true", help="stop at the first unusable record")
  args = parser.parse_args(argv)
  languages, split, _ = readers[args.benchmark]
  split = args.split or split
  if args.benchmark == "afriqa" and not args.languages:
    languages = AFRIQA_GOLD_PASSAGE_LANGUAGES.get(split, AFRIQA_LANGUAGES)
  all_issues = IssueLog()
  try:
    for language in args.languages or languages:
      rs = read_benchmark(args.benchmark, args.data_dir, language, split, args.strict)
      print(f"{language}: {len(rs.questions)} questions, {len(rs.candidates)} candidates, "
            f"{rs.issues.num_dropped} records dropped, {len(rs.issues) - rs.issues.num_dropped} kept with a caveat")
      all_issues.extend(rs.issues)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  print(all_issues.summary())


if __name__ == "__main__":
  main()
