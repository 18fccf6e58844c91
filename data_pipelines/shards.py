"""Tokenised training pairs as TFRecord shards, one per (query_language, passage_language).

Tokenisation is the slow part of the input pipeline, so it happens once: every
question and positive text is tokenised with the model's tokenizer (the
model's prompts, `ShardSpec.query_prompt` / `passage_prompt`, e.g. E5's
"query: " / "passage: "; right-padded to `max_query_len` /
`max_passage_len`) and the pairs are written as `{a}-{b}.tfrecord`. A
`manifest.json` beside them records counts per shard, the tokenizer identity
(name, vocabulary size, sha256 of its tokenizer.json), the configuration hash
and the sha256 of every input file; the shards are rebuilt only when one of
those changes.

Record features (TFRecord stores integers as int64; `load_pair_table` casts
them to int32): query_ids, query_mask [max_query_len], passage_ids,
passage_mask [max_passage_len], group_id, qid (bytes).

TensorFlow writes and reads the shards when the input pipeline is tf.data
(`tfrecord.input_pipeline()`); without it (or with $MLIR_INPUT_PIPELINE=numpy)
`tfrecord` does, in the same format (crc32c framing, tf.train.Example).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import socket
import tempfile
from typing import Iterator, Mapping, Sequence

import numpy as np
import tqdm

from data_pipelines import datadir
from data_pipelines import pairs as pairs_lib
from data_pipelines import readers
from data_pipelines import tfrecord

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def tokenizer_identity(tokenizer) -> dict:
  """Name, vocabulary size and sha256 of the serialised tokenizer.json (canonical JSON)."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise TypeError(f"a fast (tokenizers-backed) tokenizer is needed, got {type(tokenizer).__name__}")
  raw = backend.to_str()
  key = hashlib.sha256(raw.encode()).hexdigest()
  if key not in _CANONICAL_SHA256:
    # Calling the tokenizer stores its last truncation/padding settings in the
    # backend; they are not part of its identity.
    state = json.loads(raw)
    state.pop("truncation", None)
    state.pop("padding", None)
    _CANONICAL_SHA256[key] = hashlib.sha256(
        json.dumps(state, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
  return {"name": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
          "vocab_size": len(tokenizer), "tokenizer_json_sha256": _CANONICAL_SHA256[key]}


# sha256 of a serialised tokenizer -> sha256 of its canonical form: parsing e5-small's 7.6 MB
# of JSON takes ~0.6 s, twice per training run (a study trains 9 runs in one process).
_CANONICAL_SHA256: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class ShardSpec:
  """Everything the shard contents depend on, besides the input files."""
  fold: str
  languages: tuple[str, ...]
  positive: str
  max_query_len: int
  max_passage_len: int
  # The model's prompts (`LoadedModel.prompts`): part of the cache key, so shards
  # tokenised with other prompts are never reused.
  query_prompt: str = "query: "
  passage_prompt: str = "passage: "

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["languages"] = list(self.languages)
    d["format_version"] = FORMAT_VERSION
    return d

  def hash(self) -> str:
    return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def expected_manifest(spec: ShardSpec, tokenizer, input_files: Sequence[pathlib.Path]) -> dict:
  """The manifest fields that must match for existing shards to be reused."""
  return {"format_version": FORMAT_VERSION,
          "config": spec.to_dict(),
          "config_hash": spec.hash(),
          "tokenizer": tokenizer_identity(tokenizer),
          "inputs": {f"{p.parent.name}/{p.name}": datadir.sha256_file(p) for p in input_files}}


def _is_current(directory: pathlib.Path, expected: Mapping) -> bool:
  path = directory / MANIFEST
  if not path.is_file():
    return False
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError:
    return False
  if any(manifest.get(k) != v for k, v in expected.items()):
    return False
  return all((directory / s["file"]).is_file() for s in manifest.get("shards", []))


def shard_dir(root, spec: ShardSpec, tokenizer) -> pathlib.Path:
  """root / "{fold}-{positive}-{key}", key = hash of spec and tokenizer identity."""
  key = hashlib.sha256((spec.hash() + json.dumps(tokenizer_identity(tokenizer), sort_keys=True))
                       .encode()).hexdigest()[:12]
  return pathlib.Path(root) / f"fold{spec.fold}-{spec.positive}-{key}"


def _tokenize_language(tokenizer, examples: Mapping[str, tuple[str, str]], spec: ShardSpec,
                       tokenize_fn) -> tuple[dict[str, int], dict[str, np.ndarray]]:
  """Tokenise one language's questions and positives once: qid -> row, arrays."""
  qids = sorted(examples)
  prompts = {"query": spec.query_prompt, "passage": spec.passage_prompt}
  q = tokenize_fn(tokenizer, [examples[i][0] for i in qids], "query", spec.max_query_len,
                  pad_to=spec.max_query_len, prompts=prompts)
  p = tokenize_fn(tokenizer, [examples[i][1] for i in qids], "passage", spec.max_passage_len,
                  pad_to=spec.max_passage_len, prompts=prompts)
  arrays = {"query_ids": q["input_ids"], "query_mask": q["attention_mask"],  # [n, Lq]
            "passage_ids": p["input_ids"], "passage_mask": p["attention_mask"]}  # [n, Lp]
  return {qid: i for i, qid in enumerate(qids)}, arrays


def _use_tensorflow() -> bool:
  """TensorFlow reads and writes the shards when the input pipeline is tf.data."""
  return tfrecord.input_pipeline() == "tf"


def _example(q_ids, q_mask, p_ids, p_mask, group_id: int, qid: str):
  if not _use_tensorflow():
    return tfrecord.encode_example(
        {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids,
         "passage_mask": p_mask, "group_id": [group_id]}, {"qid": [qid.encode()]})
  import tensorflow as tf
  ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
  return tf.train.Example(features=tf.train.Features(feature={
      "query_ids": ints(q_ids), "query_mask": ints(q_mask),
      "passage_ids": ints(p_ids), "passage_mask": ints(p_mask),
      "group_id": ints([group_id]),
      "qid": tf.train.Feature(bytes_list=tf.train.BytesList(value=[qid.encode()])),
  })).SerializeToString()


def write_shards(directory: pathlib.Path, train_sets: Mapping[str, readers.RetrievalSet],
                 spec: ShardSpec, tokenizer, expected: Mapping, progress: bool = True) -> dict:
  """Tokenise and write every (a, b) shard plus manifest.json into `directory`."""
  from data_pipelines import tokenization

  pairs = pairs_lib.build_pairs(train_sets, spec.positive)
  groups = pairs_lib.group_ids(train_sets.values())
  tokenised = {}
  for l in tqdm.tqdm(spec.languages, desc="tokenising", disable=not progress):
    tokenised[l] = _tokenize_language(tokenizer, pairs_lib.examples(train_sets[l], spec.positive),
                                      spec, tokenization.tokenize)
  shards = []
  for (a, b), shard_pairs in tqdm.tqdm(sorted(pairs.items()), desc="writing shards",
                                       disable=not progress):
    name = f"{a}-{b}.tfrecord"
    (rows_a, qa), (rows_b, pb) = tokenised[a], tokenised[b]
    records = []
    for pair in shard_pairs:
      i, j = rows_a[pair.qid], rows_b[pair.qid]
      records.append(_example(qa["query_ids"][i], qa["query_mask"][i],
                              pb["passage_ids"][j], pb["passage_mask"][j],
                              pair.group_id, pair.qid))
    _write_records(directory / name, records)
    shards.append({"query_language": a, "passage_language": b, "file": name,
                   "count": len(shard_pairs)})
  manifest = dict(expected)
  manifest.update({"languages": list(spec.languages), "num_groups": len(groups),
                   "shards": shards, "num_pairs": sum(s["count"] for s in shards)})
  (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
  return manifest


def _builder() -> str:
  return f"{socket.gethostname()}-{os.getpid()}"


def remove_stale_builds(directory: pathlib.Path) -> None:
  """Delete `<directory>.tmp-<host>-<pid>-*` left by a killed builder on this host."""
  host = socket.gethostname()
  for tmp in directory.parent.glob(f"{directory.name}.tmp-{host}-*"):
    pid = tmp.name[len(f"{directory.name}.tmp-{host}-"):].split("-", 1)[0]
    if pid.isdigit() and not _alive(int(pid)):
      logging.info("removing %s, left by a killed shard build", tmp)
      shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def build_or_load(root, spec: ShardSpec, tokenizer, input_files: Sequence[pathlib.Path],
                  read_sets, progress: bool = True, write=None) -> pathlib.Path:
  """The shard directory for (spec, tokenizer, inputs), built if missing or stale.

  `read_sets()` returns language -> RetrievalSet; it is called only when a
  rebuild is needed. `write(tmp_dir, expected_manifest)`, if given, writes
  the shards and manifest instead of `write_shards` (the user-file path,
  `data_pipelines.train_files`; `read_sets` is then unused). The new shards are written to a temporary directory and
  renamed into place, so concurrent builders (several hosts) never see a
  half-written set.
  """
  directory = shard_dir(root, spec, tokenizer)
  expected = expected_manifest(spec, tokenizer, input_files)
  if _is_current(directory, expected):
    return directory
  logging.info("building training shards in %s", directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  remove_stale_builds(directory)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{directory.name}.tmp-{_builder()}-",
                                      dir=directory.parent))
  try:
    if write is None:
      write_shards(tmp, read_sets(), spec, tokenizer, expected, progress=progress)
    else:
      write(tmp, expected)
    if directory.exists():
      if _is_current(directory, expected):  # another process finished first
        return directory
      shutil.rmtree(directory)
    os.rename(tmp, directory)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return directory


@dataclasses.dataclass
class PairTable:
  """All pairs of all shards in memory (row r = one pair), with lookups by group."""
  languages: tuple[str, ...]
  query_ids: np.ndarray          # int32 [P, Lq]
  query_mask: np.ndarray         # int32 [P, Lq]
  passage_ids: np.ndarray        # int32 [P, Lp]
  passage_mask: np.ndarray       # int32 [P, Lp]
  group_id: np.ndarray           # int32 [P]
  query_language: np.ndarray     # int32 [P] index into languages
  passage_language: np.ndarray   # int32 [P] index into languages
  row_of: np.ndarray             # int32 [L, L, G]: row of pair (a, b, group), -1 if absent
  shard_rows: dict[tuple[str, str], np.ndarray]  # (a, b) -> int64 rows, by group id
  # Hard negatives (config.hard_negatives_per_pair = n > 0, data_source "files"; else
  # None): a bank of K + 1 entries of n tokenised negatives, one entry per (group,
  # passage language) and a last one with none; pair r uses entry negative_index[r].
  negative_index: np.ndarray | None = None      # int32 [P] -> bank entry
  negative_ids: np.ndarray | None = None        # int32 [K + 1, n, Lp]
  negative_mask: np.ndarray | None = None       # int32 [K + 1, n, Lp]
  negative_valid: np.ndarray | None = None      # int32 [K + 1, n]: 0 = missing (padding)
  negative_group_id: np.ndarray | None = None   # int32 [K + 1, n]: group whose positive it is, -1

  def holders(self) -> np.ndarray:
    """bool [G, L]: language l holds group g (its X-X pair exists)."""
    diag = np.stack([self.row_of[i, i] for i in range(len(self.languages))], axis=1)
    return diag >= 0


def _write_records(path: pathlib.Path, records: list[bytes]) -> None:
  if not _use_tensorflow():
    tfrecord.write_records(path, records)
    return
  import tensorflow as tf
  with tf.io.TFRecordWriter(str(path)) as writer:
    for r in records:
      writer.write(r)


def _read_shard(path: pathlib.Path, lengths: Mapping[str, int],
                use_tensorflow: bool) -> Iterator[dict[str, np.ndarray]]:
  """Chunks {feature: int64 array} of one shard, by tf.data or by `tfrecord`."""
  if not use_tensorflow:
    yield tfrecord.parse_int64_examples(tfrecord.read_records(path), lengths, where=str(path))
    return
  import tensorflow as tf
  features = {k: tf.io.FixedLenFeature([n] if n else [], tf.int64) for k, n in lengths.items()}
  ds = tf.data.TFRecordDataset(str(path)).batch(4096).map(
      lambda x: tf.io.parse_example(x, features))
  yield from ds.as_numpy_iterator()


_TABLES: dict = {}  # see load_pair_table


def load_pair_table(directory, use_tensorflow: bool | None = None) -> PairTable:
  """Read every shard listed in the manifest into one PairTable.

  With TensorFlow and the tf.data input pipeline (`use_tensorflow=None`:
  `tfrecord.input_pipeline()`), tf.data parses the shards; otherwise
  `tfrecord` does, to the same arrays (crc32c checked). The last table read is
  returned again, arrays read-only, while the directory's files keep their sizes and
  modification times (a study's runs of one fold read the same shards: ~1.4 s each
  on a 2-core CPU for fold A at 64 / 128 tokens).
  """
  if use_tensorflow is None:
    use_tensorflow = _use_tensorflow()
  directory = pathlib.Path(directory)
  key = (str(directory.resolve()), use_tensorflow,
         tuple(sorted((f.name, st.st_size, st.st_mtime_ns)
                      for f in directory.iterdir() if f.is_file() for st in [f.stat()])))
  if key not in _TABLES:
    table = _read_pair_table(directory, use_tensorflow)
    for field in dataclasses.fields(table):
      value = getattr(table, field.name)
      for array in (value.values() if isinstance(value, dict) else [value]):
        if isinstance(array, np.ndarray):
          array.flags.writeable = False
    _TABLES.clear()
    _TABLES[key] = table
  return _TABLES[key]


def _read_pair_table(directory: pathlib.Path, use_tensorflow: bool) -> PairTable:
  manifest = json.loads((directory / MANIFEST).read_text())
  lq, lp = manifest["config"]["max_query_len"], manifest["config"]["max_passage_len"]
  languages = tuple(manifest["languages"])
  index = {l: i for i, l in enumerate(languages)}
  features = {"query_ids": lq, "query_mask": lq, "passage_ids": lp, "passage_mask": lp,
              "group_id": 0}
  columns = {k: [] for k in (*features, "query_language", "passage_language")}
  shard_rows, start = {}, 0
  for shard in manifest["shards"]:
    a, b, n = shard["query_language"], shard["passage_language"], shard["count"]
    got = 0
    for chunk in _read_shard(directory / shard["file"], features, use_tensorflow):
      for k in features:
        columns[k].append(chunk[k].astype(np.int32))
      got += len(chunk["group_id"])
    if got != n:
      raise readers.DataError(f"{directory / shard['file']}: manifest says {n} pairs, found {got}")
    columns["query_language"].append(np.full(n, index[a], np.int32))
    columns["passage_language"].append(np.full(n, index[b], np.int32))
    shard_rows[(a, b)] = np.arange(start, start + n)
    start += n
  empty = {"query_ids": (0, lq), "query_mask": (0, lq), "passage_ids": (0, lp),
           "passage_mask": (0, lp)}
  cols = {k: (np.concatenate(v) if v else np.zeros(empty.get(k, (0,)), np.int32))
          for k, v in columns.items()}
  row_of = np.full((len(languages), len(languages), manifest["num_groups"]), -1, np.int32)
  row_of[cols["query_language"], cols["passage_language"], cols["group_id"]] = np.arange(start)
  return PairTable(languages=languages, row_of=row_of, shard_rows=shard_rows, **cols)


@dataclasses.dataclass
class TrainingData:
  """The tokenised pairs of one fold (or of training files), in memory, plus what the
  sampler derives from them."""
  table: PairTable
  directory: pathlib.Path        # the shard directory (manifest.json inside)
  manifest: dict

  @property
  def languages(self) -> tuple[str, ...]:
    return self.table.languages

  def mono_sizes(self) -> np.ndarray:
    """int [L]: pairs in each X-X shard (= questions with a positive per language)."""
    return np.array([len(self.table.shard_rows[(l, l)]) for l in self.languages])

  def cross_groups(self) -> np.ndarray:
    """int [G2]: groups held by at least two languages (the units of CROSS batches)."""
    return np.flatnonzero(self.table.holders().sum(axis=1) >= 2)


def load_training_data(directory) -> TrainingData:
  """TrainingData from an existing shard directory (no tokenizer or raw data needed)."""
  directory = pathlib.Path(directory)
  manifest = json.loads((directory / MANIFEST).read_text())
  return TrainingData(table=load_pair_table(directory), directory=directory,
                      manifest=manifest)


def default_shards_dir() -> pathlib.Path:
  root = os.environ.get("MLIR_TRAIN_CACHE") or pathlib.Path.home() / ".cache" / "mlir_train"
  return pathlib.Path(root) / "shards"
