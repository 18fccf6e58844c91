"""Training pairs from your own files: `config.data_source = "files"`.

`config.train_files` is a comma-separated list of paths or globs, each optionally
tagged `LANG:` or `corpus:` (see below). Each input is

- JSON Lines (any name but `*.parquet`; a `.json` file holding one JSON array
  of records works too), one record per line;
- Parquet (`*.parquet`, needs `pyarrow`), one record per row;
- a Hugging Face `datasets` directory written by `save_to_disk` (a `Dataset`, or
  a `DatasetDict` whose `train` split is read; needs `pyarrow`, not `datasets`);
- a BEIR directory (corpus.jsonl, queries.jsonl, qrels/*.tsv).

Record layouts (fields of one line / row):

  native:        {"group": "q17", "query": "...", "query_language": "de",
                  "positive": "...", "passage_language": "en",
                  "negatives": ["...", ...]}                 (negatives optional)
  sentence-transformers:
                 {"anchor": "...", "positive": "...", "negative": "..."}
                 (or "negative_1", "negative_2", ...: all are negatives)
  FlagEmbedding: {"query": "...", "pos": ["..."], "neg": ["...", ...],
                  "prompt": "..."}                           (prompt optional)
  tevatron v1:   {"query_id": "17", "query": "...",
                  "positive_passages": [{"docid": "..", "title": "..", "text": ".."}],
                  "negative_passages": [...]}
  tevatron v2:   {"query_id": "17", "query_text": "...",
                  "positive_document_ids": ["d1"], "negative_document_ids": [...]}
                 with its corpus given in train_files as `corpus:PATH` (records
                 {"docid", "text" or "document_text", "title" optional}; any
                 format above). Without a corpus the read stops with one
                 `DataError` naming `corpus:PATH`; an unknown positive id drops the
                 record, unknown negative ids are left out.
  BEIR directory (corpus.jsonl, queries.jsonl, qrels/train.tsv or its only
                 qrels/*.tsv): one record per query with a document of score > 0
                 (group: the query id; documents as "title text"). BEIR files
                 name no language: give one (below).

plus the language fields, `query_language` and `passage_language`, or
`language` for both. Records without them take the file's tag (train_files
item `de:PATH`, any language code) or `config.default_language`; else they are
dropped as "missing field" with these two fixes named. FlagEmbedding's `prompt`
(the query instruction) is never ignored: when every record carries the same
one it must equal the run's query prompt (`--config.query_prompt=...`, which
the export and evaluation use too), else `build_training_data` refuses with
one line (`check_prompt`); records that disagree are refused too.
The group is `group`, else `query_id`, else the record's
own place (`file:line`: a group of one). A passage object's text is
"title text" (as MIRACL passages are encoded). FlagEmbedding / tevatron / BEIR
records may list several positives: the first is used (one positive per group
and language) and the rest are counted as a caveat.

Cut texts: the shards' manifest counts, per field (queries, positives, hard
negatives), the texts longer than max_query_len / max_passage_len tokens
(prompt and special tokens included; they are cut); every `build_training_data`
prints the counts, and a warning line for a field above 10% (`cut_lines`).

Groups are the folds' question ids: the records of a group are translations
of one question and its answer. A group holds at most one query and one
positive per language; its pairs are every (query language a, passage
language b) for which it has a query in a and a positive in b, exactly as a
fold builds pairs from a question id held by languages a and b. So a group
with records de->de and en->en also yields de->en and en->de. X-X-mono
batches of language l draw groups with a query and a positive in l; X-Y
batches draw groups holding that in two or more languages (as for the folds);
a pair of a group with no such language (e.g. only de->en) is used by `mixed`
batches only. The loss masks pairs of one group as negatives of each other.

Language codes: a two-letter ISO 639-1 code (`ISO_639_1`, lowercase) or any
three lowercase letters (ISO 639-3 shape, e.g. "hau", "yue"); anything else
("DE", "en-US", "english", "xx") is an unknown language code.

Bad records are never dropped silently. Each one is logged with its file,
line (JSON Lines: "line N", from 1) or row (Parquet / datasets: "row N", from
0) and problem: malformed JSON, missing field, malformed field, empty text,
unknown language code, bad UTF-8 (undecodable bytes, or lone surrogates), a
group id reused with conflicting texts (a second, different query or positive
for the same group and language). Records kept with a caveat (an exact
duplicate, unused extra positives, an empty negative) are logged too, as
kept. With `strict=True` (`config.strict_data`) the first dropped record
raises `DataError`; otherwise `build_training_data` prints the summary once
and writes every issue to `data_issues.json` in the shard directory.

Hard negatives (`negatives` / `neg` / `negative_passages`) are kept on the
records and written, untokenised, to `negatives.jsonl` in the shard directory
(one line per group and passage language: {"group_id", "group",
"passage_language", "negatives"}). With `config.hard_negatives_per_pair` = n > 0
the trainer uses them (`attach_negatives`): pair (a, b) of group g takes the
first n negatives of (g, b), tokenised like passages (cached per n as
`hard_negatives-n{n}.npz` in the shard directory); a pair with fewer gets
missing ones (masked out of the loss). A negative that is some group's positive
(in any language; the lowest group id if several) carries that group's id, so
that the loss masks it for that group's queries in the same batch (a false
negative); other negatives carry -1. `eval.mine_negatives` writes files
whose negatives are mined with a model.

The overlap check runs on these files against every evaluation set of
`config.fold` (fold A: XQuAD-R + TyDi GoldP dev; fold B: MLQA-R + TyDi GoldP
dev), like the folds' own training data: group ids, query texts and
positives (`folds.check_no_overlap`).
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import json
import logging
import os
import pathlib
import re
import sys
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from configs import split_list, value as config_value
from data_pipelines import datadir
from data_pipelines import pairs as pairs_lib
from data_pipelines import readers
from data_pipelines.errors import DataError

READER_VERSION = 2  # bump when the reading rules change: it is part of the shard key

# ISO 639-1 (all 183 two-letter codes, plus "iw", "in", "ji", "jw" still used by some corpora).
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy
da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu
hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb
lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om
or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw
ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
iw in ji jw""".split())
_THREE_LETTERS = re.compile(r"[a-z]{3}")

# Field names per role, first found wins.
QUERY_FIELDS = ("query", "query_text", "anchor")
POSITIVE_FIELDS = ("positive", "pos", "positive_passages")
NEGATIVE_FIELDS = ("negatives", "neg", "negative_passages", "negative")
DOCUMENT_ID_FIELDS = {"positive_document_ids": "positive_passages",  # tevatron v2 -> v1
                      "negative_document_ids": "negative_passages"}
_NUMBERED_NEGATIVE = re.compile(r"negative_(\d+)")  # sentence-transformers negative_1, _2, ...
_TAG = re.compile(r"([a-z]{2,3}|corpus):(.+)", re.S)  # "de:PATH" / "corpus:PATH" in train_files
CUT_WARNING = 0.10  # a field with more cut texts than this gets a warning line
GROUP_FIELDS = ("group", "query_id")
ISSUES_FILE = "data_issues.json"
NEGATIVES_FILE = "negatives.jsonl"
NEGATIVE_BANK_FILE = "hard_negatives-n{n}.npz"  # tokenised first n negatives (a cache)


def is_language_code(code) -> bool:
  """An ISO 639-1 code or three lowercase letters (see the module docstring)."""
  return isinstance(code, str) and (code in ISO_639_1 or bool(_THREE_LETTERS.fullmatch(code)))


@dataclasses.dataclass(frozen=True)
class TrainRecord:
  """One usable line / row."""
  file: str
  record_id: str        # "line 3" / "row 2"
  group: str
  query: str
  query_language: str
  positive: str
  passage_language: str
  negatives: tuple[str, ...] = ()


# ----------------------------------------------------------------------------
# Which files


def _is_hf_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _is_beir_dir(path: pathlib.Path) -> bool:
  return path.is_dir() and (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def _tag(item: str) -> tuple[str | None, str]:
  """"de:PATH" -> ("de", PATH), "corpus:PATH" -> ("corpus", PATH), PATH -> (None, PATH)."""
  match = _TAG.fullmatch(item)
  if os.path.exists(os.path.expanduser(item)):  # a file really named "de:x" stays a path
    return None, item
  if match and (match.group(1) == "corpus" or is_language_code(match.group(1))):
    return match.group(1), match.group(2)
  return None, item


def expand_tagged(spec: str | Sequence[str]) -> list[tuple[pathlib.Path, str | None]]:
  """Comma-separated paths or globs (or a list of them), each optionally tagged
  "LANG:" (the language of its records that name none) or "corpus:" (documents that
  tevatron v2 records reference by id) -> (existing input, tag), in the order given
  (each glob sorted), without repeats. A pattern or path that matches nothing raises
  `DataError`."""
  items = split_list(spec)
  if not items:
    raise DataError("no training files given (config.train_files is empty)")
  out, seen = [], set()
  for item in items:
    tag, item = _tag(item)
    expanded = os.path.expanduser(item)
    if glob.has_magic(expanded):
      matches = sorted(glob.glob(expanded, recursive=True))
      if not matches:
        raise DataError(f"train_files: {item!r} matches no file")
    else:
      matches = [expanded]
    for match in matches:
      path = pathlib.Path(match)
      if not path.exists():
        raise DataError(f"train_files: {path}: file not found")
      if path.is_dir() and not (_is_hf_dir(path) or _is_beir_dir(path)):
        raise DataError(f"train_files: {path} is a directory but neither a Hugging Face datasets "
                        "save_to_disk directory (state.json or dataset_dict.json) nor a BEIR "
                        "directory (corpus.jsonl, queries.jsonl, qrels/*.tsv); give "
                        "files or a glob such as DIR/*.jsonl")
      key = path.resolve()
      if key not in seen:
        seen.add(key)
        out.append((path, tag))
  return out


def expand(spec: str | Sequence[str]) -> list[pathlib.Path]:
  """The inputs of `expand_tagged`, without their tags (corpus files included)."""
  return [path for path, _ in expand_tagged(spec)]


def hashed_files(paths: Iterable[pathlib.Path]) -> list[pathlib.Path]:
  """The files whose sha256 go into the shard manifest (every file of a datasets dir)."""
  out = []
  for path in paths:
    out += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
  return out


# ----------------------------------------------------------------------------
# Rows of one file: (record id, dict)


def _jsonl_rows(path: pathlib.Path, issues: readers.IssueLog) -> Iterator[tuple[str, object]]:
  with open(path, "rb") as f:
    head = f.read(4096).lstrip()
  if head.startswith(b"["):  # one JSON array of records
    try:
      array = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
      issues.add(path, "file", "bad UTF-8", f"byte {e.start}: {e.reason}")
      return
    except json.JSONDecodeError as e:
      issues.add(path, "file", "malformed JSON", str(e))
      return
    if not isinstance(array, list):
      issues.add(path, "file", "malformed JSON", "a top-level array of records was expected")
      return
    yield from ((f"record {i}", r) for i, r in enumerate(array))
    return
  for number, line in readers._read_lines(path, issues):  # bad UTF-8 lines are logged there
    if not line.strip():
      continue
    try:
      yield f"line {number}", json.loads(line)
    except json.JSONDecodeError as e:
      issues.add(path, f"line {number}", "malformed JSON", str(e))


def _pyarrow():
  try:
    import pyarrow  # noqa: F401
    import pyarrow.ipc  # noqa: F401
    import pyarrow.parquet  # noqa: F401
  except ImportError:
    raise DataError("reading Parquet files or datasets directories needs pyarrow: "
                    "pip install pyarrow (or pip install -e '.[files]')") from None
  return pyarrow


def _table_rows(table) -> Iterator[tuple[str, object]]:
  for i, row in enumerate(table.to_pylist()):
    yield f"row {i}", row


def _parquet_rows(path: pathlib.Path) -> Iterator[tuple[str, object]]:
  pa = _pyarrow()
  try:
    table = pa.parquet.read_table(path)
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"{path}: not a readable Parquet file ({e})") from None
  yield from _table_rows(table)


def _hf_rows(path: pathlib.Path) -> Iterator[tuple[str, object]]:
  """Rows of a `save_to_disk` directory, read from its Arrow stream files (state.json)."""
  pa = _pyarrow()
  if (path / "dataset_dict.json").is_file():
    splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
    if "train" in splits:
      split = "train"
    elif len(splits) == 1:
      split = splits[0]
    else:
      raise DataError(f"{path}: a DatasetDict with splits {splits} and no 'train' split; "
                      f"give one split's directory, e.g. {path / splits[0]}" if splits else
                      f"{path}: a DatasetDict without splits")
    path = path / split
  try:
    state = json.loads((path / "state.json").read_text())
    names = [f["filename"] for f in state["_data_files"]]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(f"{path}: unreadable datasets state.json ({e})") from None
  tables = []
  for name in names:
    try:
      with pa.memory_map(str(path / name)) as source:
        tables.append(pa.ipc.open_stream(source).read_all())
    except (pa.ArrowException, OSError) as e:
      raise DataError(f"{path / name}: not a readable datasets Arrow file ({e})") from None
  if tables:
    yield from _table_rows(pa.concat_tables(tables))


def _beir_qrels(path: pathlib.Path) -> pathlib.Path:
  """qrels/train.tsv of a BEIR directory, else its only qrels file."""
  found = sorted((path / "qrels").glob("*.tsv"))
  if (path / "qrels" / "train.tsv").is_file():
    return path / "qrels" / "train.tsv"
  if len(found) == 1:
    return found[0]
  raise DataError(f"{path}: a BEIR directory needs qrels/train.tsv (or a single qrels/*.tsv); "
                  f"found {[f.name for f in found] or 'none'}")


def _beir_rows(path: pathlib.Path, issues: readers.IssueLog) -> Iterator[tuple[str, object]]:
  """One tevatron-v1-shaped row per query of a BEIR directory's training qrels
  (its relevant documents, score > 0, as positive_passages; record id "query ID")."""
  def by_id(name):
    out = {}
    for rid, row in _jsonl_rows(path / name, issues):
      if isinstance(row, dict) and "_id" in row:
        out[str(row["_id"])] = row
      else:
        issues.add(str(path / name), rid, "missing field", "_id")
    return out
  corpus, queries = by_id("corpus.jsonl"), by_id("queries.jsonl")
  qrels = _beir_qrels(path)
  relevant: dict[str, list[str]] = {}
  for number, line in readers._read_lines(qrels, issues):
    fields = line.rstrip("\n").split("\t")
    if not line.strip() or fields[0] in ("query-id", "query_id"):
      continue
    if len(fields) < 3 or not fields[2].strip().lstrip("-").isdigit():
      issues.add(str(qrels), f"line {number}", "malformed qrels line", "query-id, corpus-id, score")
    elif int(fields[2]) > 0:
      relevant.setdefault(fields[0], []).append(fields[1])
  for qid, docids in relevant.items():
    known = [corpus[d] for d in docids if d in corpus]
    if qid not in queries or not known:
      issues.add(str(path), f"query {qid}", "unknown id in qrels",
                 "query not in queries.jsonl" if qid not in queries
                 else f"documents {docids[:3]} not in corpus.jsonl")
      continue
    row = {k: v for k, v in queries[qid].items() if k != "_id" and k != "text"}
    row.update({"query_id": qid, "query": queries[qid].get("text"),
                "positive_passages": [{"title": d.get("title") or "", "text": d.get("text")}
                                      for d in known]})
    yield f"query {qid}", row


def _rows(path: pathlib.Path, issues: readers.IssueLog) -> Iterator[tuple[str, object]]:
  if _is_beir_dir(path):
    return _beir_rows(path, issues)
  if path.is_dir():
    return _hf_rows(path)
  if path.suffix.lower() == ".parquet":
    return _parquet_rows(path)
  return _jsonl_rows(path, issues)


# ----------------------------------------------------------------------------
# One record -> TrainRecord


class _Bad(Exception):
  def __init__(self, problem: str, detail: str = ""):
    super().__init__(problem)
    self.problem, self.detail = problem, detail


def _first(row: dict, names: Sequence[str]):
  for name in names:
    if name in row and row[name] is not None:
      return name, row[name]
  return None, None


def _passage_text(value, field: str) -> str:
  """A passage: a string, or a {"title", "text"} object (tevatron) -> "title text"."""
  if isinstance(value, dict):
    text, title = value.get("text", value.get("document_text")), value.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
      raise _Bad("malformed field", f"{field}: a passage object needs a string 'text'")
    return f"{title} {text}" if title.strip() else text
  if not isinstance(value, str):
    raise _Bad("malformed field", f"{field}: {type(value).__name__} instead of a string")
  return value


def _check_text(text: str, field: str) -> str:
  if not text.strip():
    raise _Bad("empty text", field)
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise _Bad("bad UTF-8", f"{field}: {e.reason}") from None
  return text


def _language(row: dict, name: str, default: str | None = None) -> str:
  value = row.get(name, row.get("language"))
  if value is None:
    value = default
  if value is None:
    raise _Bad("missing field", f"{name} (or language; for records without one give "
                                "--config.default_language=xx, or the file as xx:PATH)")
  if not is_language_code(value):
    raise _Bad("unknown language code", f"{name}={value!r}")
  return value


def _negatives(row: dict):
  """(field, list of negatives): `negatives` / `neg` / `negative_passages` / `negative`
  (one string: sentence-transformers), or sentence-transformers' negative_1, negative_2..."""
  field, values = _first(row, NEGATIVE_FIELDS)
  if isinstance(values, str):
    values = [values]
  numbered = sorted((int(m.group(1)), k) for k in row
                    if (m := _NUMBERED_NEGATIVE.fullmatch(k)) and row[k] is not None)
  if numbered:
    field, values = "negative_N", list(values or []) + [row[k] for _, k in numbered]
  return field, values


def _resolve_ids(row: dict, corpus: Mapping[str, dict] | None, where: str) -> dict:
  """A tevatron v2 row (positive_document_ids / negative_document_ids) with the corpus'
  documents in positive_passages / negative_passages (v1); other rows unchanged."""
  if not isinstance(row, dict) or not any(k in row for k in DOCUMENT_ID_FIELDS):
    return row
  if not corpus:
    raise DataError(f"{where}: tevatron v2 records name their documents by id "
                    "(positive_document_ids): add the corpus to config.train_files as "
                    "corpus:PATH (JSON Lines of docid, text[, title])")
  row = dict(row)
  for ids_field, field in DOCUMENT_ID_FIELDS.items():
    ids = row.pop(ids_field, None)
    if ids is None:
      continue
    if not isinstance(ids, (list, tuple)):
      raise _Bad("malformed field", f"{ids_field}: a list of document ids was expected")
    unknown = [str(i) for i in ids if str(i) not in corpus]
    if unknown and field == "positive_passages":
      raise _Bad("unknown document id", f"{ids_field}: {unknown[:3]} not in the corpus")
    row[field] = [corpus[str(i)] for i in ids if str(i) in corpus]
  return row


def _record(row, file: str, rid: str, caveats: list, default_language: str | None = None
            ) -> TrainRecord:
  """The usable record of one row, or `_Bad`; `caveats` collects (problem, detail) kept;
  `default_language`: the language of records that name none."""
  if not isinstance(row, dict):
    raise _Bad("malformed record", f"a JSON object was expected, got {type(row).__name__}")
  _, query = _first(row, QUERY_FIELDS)
  if query is None:
    raise _Bad("missing field", "query (or query_text / anchor)")
  if not isinstance(query, str):
    raise _Bad("malformed field", f"query: {type(query).__name__} instead of a string")
  field, positive = _first(row, POSITIVE_FIELDS)
  if positive is None:
    raise _Bad("missing field", "positive (or pos / positive_passages)")
  if isinstance(positive, (list, tuple)):
    if not positive:
      raise _Bad("empty text", f"{field}: no positive")
    if len(positive) > 1:
      caveats.append(("extra positives unused (one positive per group and language)",
                      f"{field}: {len(positive) - 1} more"))
    positive = positive[0]
  positive = _passage_text(positive, field)
  query_language = _language(row, "query_language", default_language)
  passage_language = _language(row, "passage_language", default_language)
  _check_text(query, "query")
  _check_text(positive, field)
  gfield, group = _first(row, GROUP_FIELDS)
  if group is None:
    group = f"{file}:{rid}"
  elif isinstance(group, bool) or not isinstance(group, (str, int)) or str(group).strip() == "":
    raise _Bad("malformed field", f"{gfield}: {group!r} is not a non-empty string or integer")
  nfield, values = _negatives(row)
  negatives = []
  if values is not None:
    if not isinstance(values, (list, tuple)):
      raise _Bad("malformed field", f"{nfield}: a list was expected")
    for value in values:
      try:
        negatives.append(_check_text(_passage_text(value, nfield), nfield))
      except _Bad as e:
        caveats.append((f"negative ignored ({e.problem})", e.detail))
  return TrainRecord(file, rid, str(group), query, query_language, positive, passage_language,
                     tuple(dict.fromkeys(negatives)))


# ----------------------------------------------------------------------------
# All files


@dataclasses.dataclass
class TrainFiles:
  """Every usable record of the training files, merged into groups."""
  files: list[pathlib.Path]
  records: list[TrainRecord]
  queries: dict[str, dict[str, str]]      # group -> language -> query text
  positives: dict[str, dict[str, str]]    # group -> language -> positive text
  negatives: dict[tuple[str, str], list[str]]  # (group, passage language) -> texts
  issues: readers.IssueLog
  rows_read: dict[str, int]               # file -> records read (usable or not, parsed or not)
  prompts: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
  # file -> usable records per FlagEmbedding `prompt` (None: records without one)

  def query_prompt(self) -> str | None:
    """The records' one `prompt` (FlagEmbedding: the query instruction), None when no
    record has one; records that disagree (or some without one) raise `DataError`."""
    seen = collections.Counter()
    for counts in self.prompts.values():
      seen.update(counts)
    if set(seen) <= {None}:
      return None
    if len(seen) > 1:
      where = "; ".join(f"{f}: {dict(c)}" for f, c in self.prompts.items() if c)
      raise DataError("the training records' `prompt` fields differ (one query prompt per run;"
                      f" records per prompt: {where[:300]}): give files with one prompt")
    return next(iter(seen))

  @property
  def languages(self) -> tuple[str, ...]:
    """Every language of a usable record (query or passage side), sorted."""
    return tuple(sorted({l for g in (self.queries, self.positives) for d in g.values() for l in d}))

  def select_languages(self, subset=None) -> tuple[str, ...]:
    """The files' languages, or the given subset ("de,en" or a sequence) of them."""
    subset = split_list(subset)
    if not subset:
      return self.languages
    unknown = sorted(set(subset) - set(self.languages))
    if unknown:
      raise DataError(f"train_languages {unknown} do not occur in the training files "
                      f"(their languages: {', '.join(self.languages)})")
    return tuple(l for l in self.languages if l in subset)

  def group_ids(self, languages: Sequence[str]) -> dict[str, int]:
    """group -> dense id (sorted group names) over the groups with a pair in `languages`."""
    keep = set(languages)
    names = sorted(g for g in self.queries
                   if keep & set(self.queries[g]) and keep & set(self.positives.get(g, {})))
    return {g: i for i, g in enumerate(names)}

  def pairs(self, languages: Sequence[str]) -> dict[tuple[str, str], list[pairs_lib.Pair]]:
    """(a, b) -> pairs by group id, for every ordered language pair (empty lists included)."""
    ids = self.group_ids(languages)
    out = {(a, b): [] for a in languages for b in languages}
    for group, gid in ids.items():
      for a, query in self.queries[group].items():
        for b, positive in self.positives[group].items():
          if (a, b) in out:
            out[(a, b)].append(pairs_lib.Pair(a, b, gid, group, query, positive))
    for shard in out.values():
      shard.sort(key=lambda p: p.group_id)
    return out

  def language_groups(self, languages: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(query languages, positive languages) in `languages` of each group with a pair there
    (what `sampler.check_sampling` reads)."""
    keep = set(languages)
    return [(tuple(l for l in self.queries[g] if l in keep),
             tuple(l for l in self.positives[g] if l in keep)) for g in self.group_ids(languages)]

  def retrieval_sets(self, languages: Sequence[str]) -> list[readers.RetrievalSet]:
    """One RetrievalSet per query language (questions: the groups' queries, relevant: their
    positives in every language) for `folds.check_no_overlap`."""
    ids = self.group_ids(languages)
    sets = []
    for a in languages:
      questions, candidates = [], []
      for group in ids:
        if a not in self.queries[group]:
          continue
        relevant = {}
        for b, positive in self.positives[group].items():
          if b in languages:
            relevant[len(candidates)] = 1
            candidates.append(readers.Candidate(positive, positive, f"{group}:{b}"))
        questions.append(readers.Question(group, self.queries[group][a], relevant))
      sets.append(readers.RetrievalSet("train_files", a, questions, candidates, readers.IssueLog()))
    return sets

  def summary(self, languages: Sequence[str] | None = None) -> dict:
    """Counts per file and problem, pairs per shard (JSON-ready)."""
    languages = self.languages if languages is None else languages
    usable = collections.Counter(r.file for r in self.records)
    dropped = collections.Counter(i.file for i in self.issues if i.dropped)
    pairs = self.pairs(languages)
    return {
        "files": {f: {"records": n, "usable": usable[f], "dropped": dropped[f]}
                  for f, n in self.rows_read.items()},
        "languages": list(languages),
        "groups": len(self.group_ids(languages)),
        "pairs": sum(len(p) for p in pairs.values()),
        "pairs_per_shard": {f"{a}-{b}": len(p) for (a, b), p in sorted(pairs.items()) if p},
        "issues": issues_json(self.issues)}


def issues_json(issues: readers.IssueLog) -> dict:
  """{"dropped", "kept", "by_file_and_problem": {file: {problem: n}}, "records": [...]}."""
  table: dict[str, dict[str, int]] = {}
  for i in issues:
    key = f"{i.problem} ({'dropped' if i.dropped else 'kept'})"
    table.setdefault(i.file, {})[key] = table.get(i.file, {}).get(key, 0) + 1
  return {"dropped": issues.num_dropped, "kept": len(issues) - issues.num_dropped,
          "by_file_and_problem": table,
          "records": [{"file": i.file, "record": i.record_id, "problem": i.problem,
                       "detail": i.detail, "dropped": i.dropped} for i in issues]}


def _read_corpus(paths: Sequence[pathlib.Path], issues: readers.IssueLog) -> dict[str, dict]:
  """docid -> document ({"title", "text"} or "document_text") of the corpus: files."""
  corpus = {}
  for path in paths:
    for rid, row in _rows(path, issues):
      key = _first(row, ("docid", "_id", "id"))[1] if isinstance(row, dict) else None
      if key is None:
        issues.add(str(path), rid, "missing field", "docid")
      else:
        corpus[str(key)] = row
  return corpus


def read_train_files(spec, strict: bool = False, default_language: str | None = None
                     ) -> TrainFiles:
  """Read every file of `spec` (see `expand_tagged`) into groups; every bad record is
  logged (`strict`: the first dropped one raises `DataError`). `default_language`: the
  language of records that name none (a file's "LANG:" tag comes first)."""
  if default_language and not is_language_code(default_language):
    raise DataError(f"default_language {default_language!r} is not a language code "
                    "(ISO 639-1 such as 'de', or three lowercase letters)")
  tagged = expand_tagged(spec)
  paths = [p for p, _ in tagged]
  issues = readers.IssueLog(strict)
  corpus = _read_corpus([p for p, tag in tagged if tag == "corpus"], issues)
  prompts: dict[str, collections.Counter] = {}
  records: list[TrainRecord] = []
  queries: dict[str, dict[str, str]] = {}
  positives: dict[str, dict[str, str]] = {}
  where: dict[tuple[str, str, str], str] = {}   # (group, role, language) -> "file line N"
  negatives: dict[tuple[str, str], list[str]] = {}
  seen: set[tuple] = set()
  rows_read: dict[str, int] = {}
  for path, tag in tagged:
    if tag == "corpus":
      continue
    file = str(path)
    read: set[str] = set()
    prompts[file] = collections.Counter()
    for rid, row in _rows(path, issues):
      read.add(rid)
      caveats: list[tuple[str, str]] = []
      try:
        record = _record(_resolve_ids(row, corpus, f"{file} {rid}"), file, rid, caveats,
                         tag or default_language or None)
      except _Bad as e:
        issues.add(file, rid, e.problem, e.detail)
        continue
      key = (record.group, record.query_language, record.query, record.passage_language,
             record.positive)
      conflicts = []
      for role, texts, language, text in (("query", queries, record.query_language, record.query),
                                          ("positive", positives, record.passage_language,
                                           record.positive)):
        have = texts.get(record.group, {}).get(language)
        if have is not None and have != text:
          conflicts.append(f"another {role} in {language} than {where[(record.group, role, language)]}")
      if conflicts:
        issues.add(file, rid, "group id reused with conflicting texts",
                   f"group {record.group!r}: " + "; ".join(conflicts))
        continue
      for problem, detail in caveats:
        issues.add(file, rid, problem, detail, dropped=False)
      if key in seen:
        issues.add(file, rid, "duplicate record (merged)", f"group {record.group!r}", dropped=False)
      seen.add(key)
      queries.setdefault(record.group, {})[record.query_language] = record.query
      positives.setdefault(record.group, {})[record.passage_language] = record.positive
      where.setdefault((record.group, "query", record.query_language), f"{file} {rid}")
      where.setdefault((record.group, "positive", record.passage_language), f"{file} {rid}")
      if record.negatives:
        kept = negatives.setdefault((record.group, record.passage_language), [])
        kept += [n for n in record.negatives if n not in kept and n != record.positive]
      records.append(record)
      prompts[file][row.get("prompt")] += 1
    # Records read = rows parsed + lines that could not be parsed (bad UTF-8, malformed JSON).
    rows_read[file] = len(read | {i.record_id for i in issues if i.file == file and i.dropped})
  return TrainFiles(paths, records, queries, positives, negatives, issues, rows_read, prompts)


_LAST_READ: dict = {}  # the last read_train_files_cached call: key -> TrainFiles


def read_train_files_cached(spec, strict: bool = False, default_language: str | None = None
                            ) -> TrainFiles:
  """`read_train_files`, or the last call's result while the spec and every file (size,
  mtime) are the same: the trainer checks the files before loading the model and builds
  its shards from them later, reading them once."""
  paths = expand(spec)
  stamps = []
  for path in paths:
    for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
      st = f.stat()
      stamps.append((str(f), st.st_size, st.st_mtime_ns))
  key = (str(spec), strict, default_language or None, tuple(stamps))
  if key not in _LAST_READ:
    _LAST_READ.clear()
    _LAST_READ[key] = read_train_files(spec, strict, default_language)
  return _LAST_READ[key]


def report_issues(issues: readers.IssueLog) -> str:
  """The one-time console summary: counts by file and problem, then the first records."""
  lines = [f"training files: {issues.num_dropped} records dropped, "
           f"{len(issues) - issues.num_dropped} kept with a caveat", issues.summary()]
  for issue in list(issues)[:10]:
    lines.append("  " + issue.message())
  if len(issues) > 10:
    lines.append(f"  ... {len(issues) - 10} more in {ISSUES_FILE}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Shards


def shard_spec(config, data: TrainFiles, languages: Sequence[str], prompts=None):
  """The ShardSpec of the files path: `fold` names the file set (with its tags and
  default_language), `positive` is "file"."""
  from data_pipelines import shards as shards_lib
  names = json.dumps([str(p.resolve()) for p in data.files])
  tags = [tag for _, tag in expand_tagged(config_value(config, "train_files"))]
  if any(tags) or config_value(config, "default_language"):
    names += json.dumps([tags, config_value(config, "default_language") or None])
  hashed = hashed_files(data.files)
  if len({f"{p.parent.name}/{p.name}" for p in hashed}) < len(hashed):
    # The manifest keys inputs by parent/name; where two collide, key on the contents too.
    names += json.dumps([datadir.sha256_file(p) for p in hashed])
  key = hashlib.sha256(names.encode()).hexdigest()[:10]
  extra = {} if prompts is None else {"query_prompt": prompts["query"],
                                      "passage_prompt": prompts["passage"]}
  return shards_lib.ShardSpec(fold=f"files{READER_VERSION}-{key}", languages=tuple(languages),
                              positive="file", max_query_len=int(config.max_query_len),
                              max_passage_len=int(config.max_passage_len), **extra)


def write_shards(directory: pathlib.Path, data: TrainFiles, spec, tokenizer, expected: Mapping,
                 progress: bool = True) -> dict:
  """Tokenise each group's query / positive per language once, write every (a, b) shard
  (empty ones too, as the folds do), negatives.jsonl, data_issues.json, manifest.json."""
  import tqdm
  from data_pipelines import shards as shards_lib
  from data_pipelines import tokenization

  languages = spec.languages
  pairs = data.pairs(languages)
  ids = data.group_ids(languages)
  kwargs = {}
  if hasattr(spec, "query_prompt"):
    kwargs["prompts"] = {"query": spec.query_prompt, "passage": spec.passage_prompt}
  rows: dict[tuple[str, str], dict[str, int]] = {}
  arrays: dict[tuple[str, str], dict] = {}
  for l in tqdm.tqdm(languages, desc="tokenising", disable=not progress):
    for role, texts, length in (("query", data.queries, spec.max_query_len),
                                ("passage", data.positives, spec.max_passage_len)):
      groups = [g for g in ids if l in texts[g]]
      tok = tokenization.tokenize(tokenizer, [texts[g][l] for g in groups], role, length,
                                  pad_to=length, **kwargs)
      rows[(l, role)] = {g: i for i, g in enumerate(groups)}
      arrays[(l, role)] = tok
  shards = []
  for (a, b), shard_pairs in sorted(pairs.items()):
    q, p = arrays[(a, "query")], arrays[(b, "passage")]
    qi, pi = rows[(a, "query")], rows[(b, "passage")]
    records = [shards_lib._example(q["input_ids"][qi[x.qid]], q["attention_mask"][qi[x.qid]],
                                   p["input_ids"][pi[x.qid]], p["attention_mask"][pi[x.qid]],
                                   x.group_id, x.qid) for x in shard_pairs]
    name = f"{a}-{b}.tfrecord"
    shards_lib._write_records(directory / name, records)
    shards.append({"query_language": a, "passage_language": b, "file": name,
                   "count": len(shard_pairs)})
  kept_negatives = []
  with open(directory / NEGATIVES_FILE, "w", encoding="utf-8") as f:
    for (group, language), texts in sorted(data.negatives.items()):
      if group in ids and language in languages and texts:
        kept_negatives += texts
        f.write(json.dumps({"group_id": ids[group], "group": group, "passage_language": language,
                            "negatives": texts}, ensure_ascii=False) + "\n")
  cut = {}
  for field, texts, role, length in (
      ("queries", [data.queries[g][l] for g in ids for l in languages
                   if l in data.queries[g]], "query", spec.max_query_len),
      ("positives", [data.positives[g][l] for g in ids for l in languages
                     if l in data.positives[g]], "passage", spec.max_passage_len),
      ("negatives", kept_negatives, "passage", spec.max_passage_len)):
    cut[field] = {"cut": count_cut(tokenizer, texts, role, length, kwargs.get("prompts")),
                  "texts": len(texts), "max_len": int(length)}
  summary = data.summary(languages)
  (directory / ISSUES_FILE).write_text(json.dumps(summary, indent=1, ensure_ascii=False))
  manifest = dict(expected)
  manifest.update({"source": "files", "train_files": [str(p) for p in data.files],
                   "languages": list(languages), "num_groups": len(ids), "shards": shards,
                   "num_pairs": sum(s["count"] for s in shards),
                   "num_records": len(data.records),
                   "num_negatives": sum(len(v) for (g, l), v in data.negatives.items()
                                        if g in ids and l in languages),
                   "data_issues": {"dropped": data.issues.num_dropped,
                                   "kept": len(data.issues) - data.issues.num_dropped},
                   "cut_texts": cut})
  (directory / shards_lib.MANIFEST).write_text(json.dumps(manifest, indent=1))
  return manifest


def count_cut(tokenizer, texts: Sequence[str], role: str, length: int, prompts=None) -> int:
  """How many texts (with their prompt and special tokens) are longer than `length` tokens."""
  from data_pipelines import tokenization
  ids = tokenization.token_ids(tokenizer, list(texts), role, int(length) + 1, prompts)
  return sum(len(row) > int(length) for row in ids)


def cut_lines(cut: Mapping[str, Mapping[str, int]]) -> list[str]:
  """The console lines of a manifest's `cut_texts`: one count line, then a warning
  line per field with more than `CUT_WARNING` of its texts cut."""
  names = {"queries": "max_query_len", "positives": "max_passage_len",
           "negatives": "max_passage_len"}
  parts, warnings = [], []
  for field, c in cut.items():
    if not c["texts"]:
      continue
    share = c["cut"] / c["texts"] if c["texts"] else 0.0
    parts.append(f"{field} {c['cut']}/{c['texts']} ({100 * share:.1f}%)")
    if share > CUT_WARNING:
      warnings.append(f"warning: {100 * share:.0f}% of the training {field} are longer than "
                      f"{names[field]}={c['max_len']} tokens and are cut; raise "
                      f"--config.{names[field]} to keep more of them")
  return [f"training files: texts cut at max_query_len / max_passage_len: {', '.join(parts)}"
          ] + warnings


def load_negatives(directory) -> dict[tuple[int, str], list[str]]:
  """(group id, passage language) -> hard-negative texts of a files shard directory."""
  path = pathlib.Path(directory) / NEGATIVES_FILE
  out = {}
  if path.is_file():
    for line in path.read_text(encoding="utf-8").splitlines():
      r = json.loads(line)
      out[(r["group_id"], r["passage_language"])] = r["negatives"]
  return out



def check_prompt(data: TrainFiles, prompts=None) -> None:
  """The records' `prompt` (FlagEmbedding) must be the run's query prompt (`prompts`,
  None: E5's "query: "): it is used as that, or refused with one line."""
  record_prompt = data.query_prompt()
  query_prompt = "query: " if prompts is None else prompts["query"]
  if record_prompt is not None and record_prompt != query_prompt:
    raise DataError(f"the training records carry the query prompt {record_prompt!r} (field "
                    f"`prompt`), the run uses {query_prompt!r}: pass "
                    f"--config.query_prompt={record_prompt!r} to train with it (the export "
                    "and evaluation use it too), or drop the field")


def build_training_data(config, tokenizer, *, progress: bool = True, prompts=None):
  """What `sampler.build_training_data` returns for `config.data_source == "files"`.

  Reads config.train_files, strict_data, train_languages (a subset of the files'
  languages; empty: all), fold (whose evaluation sets the files are checked
  against), data_dir, shards_dir, max_query_len, max_passage_len. The files are read
  and checked on every call (like the folds' overlap check); the shards are rebuilt
  only when a file's sha256, the languages, the tokenizer or the lengths change.
  """
  import time
  from data_pipelines import folds
  from data_pipelines import shards as shards_lib

  spec_text = config_value(config, "train_files") or ""
  if not (spec_text.strip() if isinstance(spec_text, str) else spec_text):
    raise DataError("config.data_source='files' needs config.train_files (comma-separated "
                    "paths or globs of JSON Lines, Parquet or datasets directories)")
  data = read_train_files_cached(spec_text, strict=bool(config_value(config, "strict_data")),
                                default_language=config_value(config, "default_language"))
  if data.issues and progress:
    print(report_issues(data.issues), file=sys.stderr)
  check_prompt(data, prompts)
  languages = data.select_languages(config_value(config, "train_languages"))
  # (the sampling mode was checked against these pairs by `sampler.build_training_data`)
  if not data.group_ids(languages):
    no_language = sum(i.dropped and "default_language" in i.detail for i in data.issues)
    hint = (f"; {no_language} name no language: give --config.default_language=xx or the file "
            "as xx:PATH" if no_language else "")
    raise DataError(f"the training files hold no usable pair in {', '.join(languages) or 'any language'}"
                    f" ({data.issues.num_dropped} records dropped; see the summary above{hint})")
  fold = folds.get_fold(config_value(config, "fold"))
  start = time.perf_counter()
  folds.check_no_overlap(data.retrieval_sets(languages), folds.load_eval_sets(fold, config_value(config, "data_dir")))
  logging.info("training files: overlap check against fold %s's evaluation sets passed in %.1f s",
               fold.name, time.perf_counter() - start)
  spec = shard_spec(config, data, languages, prompts)
  root = config_value(config, "shards_dir") or shards_lib.default_shards_dir()
  directory = shards_lib.build_or_load(
      root, spec, tokenizer, hashed_files(data.files), read_sets=None, progress=progress,
      write=lambda tmp, expected: write_shards(tmp, data, spec, tokenizer, expected, progress))
  if data.issues and progress:
    print(f"training files: every issue is listed in {directory / ISSUES_FILE}", file=sys.stderr)
  cut = json.loads((directory / shards_lib.MANIFEST).read_text()).get("cut_texts", {})
  for line in cut_lines(cut):  # once: printed, or logged where the console is quiet
    if progress:
      print(line, file=sys.stderr)
    else:
      (logging.warning if line.startswith("warning") else logging.info)("%s", line)
  training_data = shards_lib.load_training_data(directory)
  n = int(config_value(config, "hard_negatives_per_pair") or 0)
  if n:
    training_data = attach_negatives(training_data, data, n, tokenizer, spec)
  return training_data


def negative_bank(directory, data: TrainFiles, n: int, tokenizer, spec) -> dict[str, np.ndarray]:
  """The first n negatives of every (group, passage language) of negatives.jsonl, tokenised
  as passages (spec's prompt and max_passage_len): {"group_id" [K], "language" [K],
  "negative_ids" / "negative_mask" [K + 1, n, Lp], "negative_valid" / "negative_group_id"
  [K + 1, n]}; the last entry holds no negative. Cached in the shard directory."""
  from data_pipelines import tokenization
  directory = pathlib.Path(directory)
  path = directory / NEGATIVE_BANK_FILE.format(n=n)
  if path.is_file():
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  negatives = load_negatives(directory)
  keys = sorted(negatives)
  ids = data.group_ids(spec.languages)
  owner: dict[str, int] = {}  # positive text -> lowest group id holding it
  for group, gid in ids.items():
    for text in data.positives.get(group, {}).values():
      owner[text] = min(owner.get(text, gid), gid)
  texts = [""]  # slot 0: the filler of missing negatives (finite through the encoder)
  slot = np.zeros((len(keys) + 1, n), np.int64)
  valid = np.zeros((len(keys) + 1, n), np.int32)
  group = np.full((len(keys) + 1, n), -1, np.int32)
  for k, key in enumerate(keys):
    for j, text in enumerate(negatives[key][:n]):
      slot[k, j], valid[k, j] = len(texts), 1
      group[k, j] = owner.get(text, -1)
      texts.append(text)
  length = int(spec.max_passage_len)
  tok = tokenization.tokenize(tokenizer, texts, "passage", length, pad_to=length,
                              prompts={"query": spec.query_prompt, "passage": spec.passage_prompt})
  bank = {"group_id": np.array([g for g, _ in keys], np.int32),
          "language": np.array([l for _, l in keys], dtype=str).astype("U16"),
          "negative_ids": tok["input_ids"][slot].astype(np.int32),
          "negative_mask": tok["attention_mask"][slot].astype(np.int32),
          "negative_valid": valid, "negative_group_id": group}
  tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.npz")
  try:
    np.savez(tmp, **bank)
    os.replace(tmp, path)
  except OSError as e:  # a read-only shard directory: tokenise again next time
    logging.warning("could not cache hard negatives in %s (%s)", path, e)
  return bank


def attach_negatives(training_data, data: TrainFiles, n: int, tokenizer, spec):
  """`training_data` with its pair table's negative bank (`shards.PairTable` negative_*):
  pair (a, b) of group g gets the bank entry of (g, b), or the empty one."""
  import dataclasses as dc
  bank = negative_bank(training_data.directory, data, n, tokenizer, spec)
  table = training_data.table
  entry = {(int(g), str(l)): k for k, (g, l) in enumerate(zip(bank["group_id"], bank["language"]))}
  empty = len(bank["group_id"])
  names = table.languages
  index = np.array([entry.get((int(g), names[b]), empty)
                    for g, b in zip(table.group_id, table.passage_language)], np.int32)
  table = dc.replace(table, negative_index=index,
                     **{f: bank[f] for f in ("negative_ids", "negative_mask", "negative_valid",
                                             "negative_group_id")})
  with_negatives = int((index < empty).sum())
  logging.info("hard negatives: %d per pair; %d of %d pairs have some, %d negatives missing",
               n, with_negatives, len(index), int((bank["negative_valid"][index] == 0).sum()))
  return dc.replace(training_data, table=table)
