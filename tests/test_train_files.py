"""Training from your own files (data_pipelines.train_files): layouts, shards, batches,
bad-record accounting, the overlap check, the trainer and replicate on files."""
import collections
import hashlib
import json

import ml_collections
import numpy as np
import pytest

from data_pipelines import folds, readers, sampler, train_files
from data_pipelines.errors import DataError
from data_pipelines import tokenization
from mlir_train import models

LANGS = ("de", "en", "es")


def _text(kind, group, language):
  return f"{kind} {language} number {group} about the invented town of Qorvel-{group}"


def _dataset(num_groups=24):
  """Records of a parallel data set: group g holds X-X records in languages chosen per g,
  plus one explicit X-Y record for every third group. Returns (records, queries, positives)."""
  records, queries, positives = [], {}, {}
  for g in range(num_groups):
    held = [l for i, l in enumerate(LANGS) if (g + i) % 4 != 0]  # 2 or 3 languages
    for l in held:
      q, p = _text("query", g, l), _text("answer", g, l)
      records.append({"group": f"g{g:03d}", "query": q, "query_language": l, "positive": p,
                      "passage_language": l, "negatives": [_text("wrong", g, l)]})
      queries.setdefault(f"g{g:03d}", {})[l] = q
      positives.setdefault(f"g{g:03d}", {})[l] = p
    if g % 3 == 0:  # the same texts again, as an explicit X-Y record: merged, no new pair
      a, b = held[0], held[-1]
      records.append({"group": f"g{g:03d}", "query": queries[f"g{g:03d}"][a], "query_language": a,
                      "positive": positives[f"g{g:03d}"][b], "passage_language": b})
  return records, queries, positives


def _write_jsonl(path, records):
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
  return path


def _config(tmp_path, train_files_spec, **overrides):
  config = ml_collections.ConfigDict(dict(
      data_source="files", train_files=str(train_files_spec), strict_data=False,
      sampling="hybrid", alpha=0.5, seed=0, batch_size=8, max_query_len=16, max_passage_len=24,
      fold="A", positive="sentence", mono_language_sampling="uniform", language_temperature=1.0,
      data_dir=None, shards_dir=str(tmp_path / "shards"), train_languages=()))
  config.update(overrides)
  return config


def test_jsonl_pairs_shards_and_every_batch_kind(tmp_path, tokenizer, data_dir):
  records, queries, positives = _dataset()
  path = _write_jsonl(tmp_path / "pairs.jsonl", records + [records[0]])  # one exact repeat
  config = _config(tmp_path, path, data_dir=str(data_dir))
  data = sampler.build_training_data(config, tokenizer, progress=False)

  # Shard counts from the records the test wrote: group g gives (a, b) for every query
  # language a and positive language b it holds.
  expected = collections.Counter((a, b) for g in queries for a in queries[g] for b in positives[g])
  got = {(s["query_language"], s["passage_language"]): s["count"] for s in data.manifest["shards"]}
  assert got == {(a, b): expected[(a, b)] for a in LANGS for b in LANGS}
  assert data.manifest["num_groups"] == len(queries) == 24
  assert data.manifest["num_pairs"] == sum(expected.values())
  assert data.manifest["source"] == "files" and data.languages == LANGS
  # The X-Y records agree with their groups (nothing new); the repeated line is merged.
  assert data.manifest["data_issues"] == {"dropped": 0, "kept": 1}

  # Every row holds its group's texts, tokenised independently here.
  table, names = data.table, sorted(queries)
  for row in (0, len(table.group_id) // 2, len(table.group_id) - 1):
    group = names[table.group_id[row]]
    a, b = LANGS[table.query_language[row]], LANGS[table.passage_language[row]]
    q = tokenization.tokenize(tokenizer, [queries[group][a]], "query", 16, pad_to=16)
    p = tokenization.tokenize(tokenizer, [positives[group][b]], "passage", 24, pad_to=24)
    np.testing.assert_array_equal(table.query_ids[row], q["input_ids"][0])
    np.testing.assert_array_equal(table.passage_ids[row], p["input_ids"][0])
  negatives = train_files.load_negatives(data.directory)
  assert len(negatives) == sum(len(p) for p in positives.values())
  assert negatives[(0, "en")] == [_text("wrong", 0, "en")]

  # The sampler's batch kinds work unchanged on file data.
  for sampling in ("mono", "cross", "hybrid", "mixed"):
    cfg = _config(tmp_path, path, sampling=sampling, mono_language_sampling="size")
    kinds = collections.Counter()
    for batch in __import__("itertools").islice(sampler.batch_stream(data, cfg, pipeline="numpy"), 12):
      kinds[batch.kind.value] += 1
      pairs = list(zip(batch.query_language, batch.passage_language))
      if batch.kind == sampler.BatchKind.MONO:
        assert all(a == b == batch.languages for a, b in pairs)
        assert len(set(batch.group_id)) == len(batch.group_id)  # >= 8 pairs per language
      elif batch.kind == sampler.BatchKind.CROSS:
        assert all(a != b for a, b in pairs)
    assert set(kinds) == ({"mono", "cross"} if sampling == "hybrid" else {sampling})


def test_parquet_and_datasets_dir_read_like_jsonl(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq
  records, queries, positives = _dataset(12)
  rows = [{**r, "negatives": r.get("negatives", [])} for r in records]
  table = pa.Table.from_pylist(rows)
  pq.write_table(table, tmp_path / "pairs.parquet")
  inputs = [tmp_path / "pairs.parquet"]
  datasets = pytest.importorskip("datasets")
  datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
  datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hfdict"))
  inputs += [tmp_path / "hf", tmp_path / "hfdict"]
  for path in inputs:
    data = train_files.read_train_files(str(path))
    assert data.queries == queries and data.positives == positives, path
    assert len(data.records) == len(records) and data.issues.num_dropped == 0
  # A glob over two copies: the second copy's records all merge into the first's groups.
  both = train_files.read_train_files(f"{tmp_path}/pairs.parquet,{tmp_path}/h*")
  assert [str(p) for p in both.files] == [str(p) for p in inputs]
  assert both.queries == queries and len(both.records) == 3 * len(records)


def test_flagembedding_and_tevatron_layouts(tmp_path):
  flag = _write_jsonl(tmp_path / "flag.jsonl", [
      {"query": "wo liegt Qorvel?", "pos": ["Qorvel liegt am Meer.", "Qorvel is by the sea."],
       "neg": ["Berlin ist groß.", ""], "query_language": "de", "passage_language": "de"},
      {"query": "where is Qorvel?", "pos": ["Qorvel is by the sea."], "neg": [], "language": "en"}])
  tev = _write_jsonl(tmp_path / "tev.jsonl", [
      {"query_id": "7", "query": "what is Zent?", "language": "en",
       "positive_passages": [{"docid": "d1", "title": "Zent", "text": "Zent is a river."}],
       "negative_passages": [{"docid": "d2", "title": "", "text": "Kell is a hill."}]},
      {"query_id": "7", "query": "qué es Zent?", "query_language": "es", "passage_language": "es",
       "positive_passages": [{"docid": "d3", "title": "Zent", "text": "Zent es un río."}]}])
  data = train_files.read_train_files(f"{flag},{tev}")
  # FlagEmbedding lines have no group: each line is its own group (file:line).
  assert data.queries == {f"{flag}:line 1": {"de": "wo liegt Qorvel?"},
                          f"{flag}:line 2": {"en": "where is Qorvel?"},
                          "7": {"en": "what is Zent?", "es": "qué es Zent?"}}
  assert data.positives["7"] == {"en": "Zent Zent is a river.", "es": "Zent Zent es un río."}
  assert data.positives[f"{flag}:line 1"] == {"de": "Qorvel liegt am Meer."}
  assert data.negatives[(f"{flag}:line 1", "de")] == ["Berlin ist groß."]
  assert data.negatives[("7", "en")] == ["Kell is a hill."]
  kept = sorted((i.record_id, i.problem) for i in data.issues)
  assert kept == [("line 1", "extra positives unused (one positive per group and language)"),
                  ("line 1", "negative ignored (empty text)")]
  assert data.issues.num_dropped == 0
  pairs = data.pairs(data.languages)
  assert {k: len(v) for k, v in pairs.items() if v} == {("de", "de"): 1, ("en", "en"): 2,
                                                        ("en", "es"): 1, ("es", "en"): 1,
                                                        ("es", "es"): 1}


BAD_LINES = {  # line number -> (record or raw bytes, expected problem)
    2: ({"group": "b", "query": "q b", "query_language": "de", "passage_language": "de"},
        "missing field"),
    3: ({"group": "c", "query": "q c", "positive": "p c", "query_language": "xx",
         "passage_language": "de"}, "unknown language code"),
    4: ({"group": "d", "query": "q d", "positive": "p d", "query_language": "DE",
         "passage_language": "de"}, "unknown language code"),
    5: ({"group": "e", "query": "   ", "positive": "p e", "language": "en"}, "empty text"),
    7: ({"group": "a", "query": "another q a", "positive": "p a", "language": "de"},
        "group id reused with conflicting texts"),
    8: (b'{"group": "f", "query": "q \xff f", "positive": "p f", "language": "en"}', "bad UTF-8"),
    9: ('{"group": "g", "query": "q \\udc80", "positive": "p g", "language": "en"}', "bad UTF-8"),
    10: ('{"group": "h", "query": ', "malformed JSON"),
}
GOOD_LINES = {1: {"group": "a", "query": "q a", "positive": "p a", "language": "de"},
              6: {"group": "a", "query": "q a en", "positive": "p a en", "language": "en"},
              11: {"group": "i", "query": "q i", "positive": "p i", "language": "en"}}


def _bad_file(path):
  lines = []
  for n in range(1, 12):
    value = GOOD_LINES.get(n) or BAD_LINES[n][0]
    if isinstance(value, dict):
      value = json.dumps(value)
    lines.append(value if isinstance(value, bytes) else value.encode())
  path.write_bytes(b"\n".join(lines) + b"\n")
  return path


def test_bad_records_counted_by_file_and_line_strict_raises(tmp_path, tokenizer, data_dir):
  path = _bad_file(tmp_path / "bad.jsonl")
  data = train_files.read_train_files(str(path))
  got = sorted((i.record_id, i.problem) for i in data.issues if i.dropped)
  assert got == sorted((f"line {n}", problem) for n, (_, problem) in BAD_LINES.items())
  assert all(i.file == str(path) for i in data.issues)
  assert len(data.records) == len(GOOD_LINES) and data.rows_read[str(path)] == 11
  conflict = next(i for i in data.issues if i.record_id == "line 7")
  assert "line 1" in conflict.detail  # names where the first text came from

  with pytest.raises(DataError, match=r"bad.jsonl: record line 2: missing field"):
    train_files.read_train_files(str(path), strict=True)

  # Training on it: the summary goes to data_issues.json beside the shards.
  data = sampler.build_training_data(_config(tmp_path, path, data_dir=str(data_dir),
                                             sampling="mixed"), tokenizer, progress=False)
  report = json.loads((data.directory / train_files.ISSUES_FILE).read_text())
  assert report["issues"]["dropped"] == len(BAD_LINES)
  assert report["issues"]["by_file_and_problem"][str(path)]["unknown language code (dropped)"] == 2
  assert report["pairs"] == data.manifest["num_pairs"] == 5  # a: de-de, de-en, en-de, en-en; i: en-en
  with pytest.raises(DataError, match="line 2"):
    sampler.build_training_data(_config(tmp_path, path, strict_data=True), tokenizer,
                                progress=False)


def test_overlap_with_the_folds_evaluation_sets_is_refused(tmp_path, tokenizer, data_dir):
  leaked = readers.read_xquad_r(data_dir, "de").questions[5]  # fold A evaluates XQuAD-R
  records, _, _ = _dataset(12)
  records.append({"group": "mine", "query": leaked.text, "language": "de",
                  "positive": "an answer of my own"})
  path = _write_jsonl(tmp_path / "leak.jsonl", records)
  with pytest.raises(folds.FoldOverlapError, match="xquad_r/de"):
    sampler.build_training_data(_config(tmp_path, path, data_dir=str(data_dir)), tokenizer,
                                progress=False)


def test_trainer_and_replicate_on_files(tmp_path, data_dir):
  from configs import tiny
  import replicate
  from study import plan
  from mlir_train import train
  records, queries, _ = _dataset(16)
  path = _write_jsonl(tmp_path / "pairs.jsonl", records)
  config = tiny.get_config()
  config.data_source, config.train_files = "files", str(path)
  config.data_dir, config.shards_dir = str(data_dir), str(tmp_path / "shards")
  config.batch_size, config.total_steps, config.checkpoint_every_steps = 8, 3, 3
  summary = train.train(config, tmp_path / "work")
  assert summary["final_step"] == 3
  lines = [json.loads(l) for l in (tmp_path / "work" / train.BATCHES_FILE).read_text().splitlines()]
  held = {(a, b) for g in queries for a in queries[g] for b in queries[g]}
  for line in lines:
    assert sum(line["language_pairs"].values()) == 8
    assert {tuple(k.split("-")) for k in line["language_pairs"]} <= held

  preset = plan.load_preset("smoke")
  cfg = plan.train_config(preset, "A", "hybrid", 0.5, 0, "tiny-random", str(data_dir),
                               tmp_path / "s", train_files=str(path))
  assert cfg.data_source == "files" and cfg.train_files == str(path) and cfg.train_languages == ""
  provenance = plan.run_provenance(preset, "A", "hybrid", 0.5, 0, "tiny-random", None,
                                        tmp_path / "s", {}, train_files=str(path))
  assert provenance["train_files"] == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
  assert provenance["train_config"]["data_source"] == "files"
