"""The layouts users bring (sentence-transformers, tevatron v2 with a corpus, BEIR
directories, FlagEmbedding's `prompt`), records without language fields
(default_language, LANG:PATH) and the count of cut texts (data_pipelines.train_files)."""
import json

import ml_collections
import pytest

from data_pipelines import tokenization, train_files
from data_pipelines.errors import DataError


def _jsonl(path, records):
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
  return path


def test_sentence_transformers_layout(tmp_path):
  path = _jsonl(tmp_path / "st.jsonl", [
      {"anchor": "where is Qorvel?", "positive": "Qorvel is by the sea.",
       "negative": "Kell is a hill.", "language": "en"},
      {"anchor": "what is Zent?", "positive": "Zent is a river.", "negative_1": "Ost is a town.",
       "negative_2": "Mab is a lake.", "language": "en"}])
  data = train_files.read_train_files(str(path))
  assert data.issues.num_dropped == 0
  assert sorted(data.queries[g]["en"] for g in data.queries) == ["what is Zent?",
                                                                 "where is Qorvel?"]
  assert data.negatives[(f"{path}:line 1", "en")] == ["Kell is a hill."]
  assert data.negatives[(f"{path}:line 2", "en")] == ["Ost is a town.", "Mab is a lake."]


def test_tevatron_v2_needs_its_corpus_and_resolves_ids(tmp_path):
  train = _jsonl(tmp_path / "train.jsonl", [
      {"query_id": "q1", "query_text": "what is Zent?", "positive_document_ids": ["d1"],
       "negative_document_ids": ["d2", "d9"], "language": "en"},
      {"query_id": "q2", "query_text": "where is Qorvel?", "positive_document_ids": ["d9"],
       "negative_document_ids": [], "language": "en"}])
  with pytest.raises(DataError, match="corpus:PATH"):
    train_files.read_train_files(str(train))
  corpus = _jsonl(tmp_path / "corpus.jsonl", [
      {"docid": "d1", "title": "Zent", "text": "Zent is a river."},
      {"docid": "d2", "document_text": "Kell is a hill."}])
  data = train_files.read_train_files(f"{train},corpus:{corpus}")
  assert data.queries == {"q1": {"en": "what is Zent?"}}
  assert data.positives == {"q1": {"en": "Zent Zent is a river."}}
  assert data.negatives[("q1", "en")] == ["Kell is a hill."]
  assert [(i.record_id, i.problem) for i in data.issues if i.dropped] == [
      ("line 2", "unknown document id")]
  assert str(corpus) not in data.rows_read  # the corpus is no training file


def _beir(root, qrels_name="train.tsv"):
  root.mkdir()
  _jsonl(root / "corpus.jsonl", [{"_id": "d1", "title": "Zent", "text": "Zent ist ein Fluss."},
                                 {"_id": "d2", "title": "", "text": "Kell ist ein Hügel."}])
  _jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "was ist Zent?"},
                                  {"_id": "q2", "text": "was ist Kell?"},
                                  {"_id": "q3", "text": "was ist Ost?"}])
  (root / "qrels").mkdir()
  (root / "qrels" / qrels_name).write_text(
      "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td2\t0\n")
  return root


def test_beir_directory_for_training(tmp_path):
  root = _beir(tmp_path / "beir")
  data = train_files.read_train_files(f"de:{root}")
  assert data.queries == {"q1": {"de": "was ist Zent?"}, "q2": {"de": "was ist Kell?"}}
  assert data.positives == {"q1": {"de": "Zent Zent ist ein Fluss."},
                            "q2": {"de": "Kell ist ein Hügel."}}
  assert data.issues.num_dropped == 0  # q3 has no relevant document: no training record
  # Without a language, every query is dropped with the way to fix it.
  data = train_files.read_train_files(str(root))
  assert not data.records and data.issues.num_dropped == 2
  assert "default_language" in list(data.issues)[0].detail


def test_records_without_language_default_language_and_tagged_files(tmp_path):
  records = [{"query": "wo ist Zent?", "positive": "Zent ist ein Fluss."},
             {"query": "where is Zent?", "positive": "Zent is a river.", "language": "en"}]
  a, b = _jsonl(tmp_path / "a.jsonl", records), _jsonl(tmp_path / "b.jsonl", records[:1])
  data = train_files.read_train_files(str(a))  # today's behaviour: dropped, with the fix named
  assert [i.problem for i in data.issues] == ["missing field"]
  assert "--config.default_language=xx" in list(data.issues)[0].detail
  assert "xx:PATH" in list(data.issues)[0].detail
  data = train_files.read_train_files(f"{a},fr:{b}", default_language="de")
  assert data.issues.num_dropped == 0
  langs = sorted((r.file, r.query_language, r.passage_language) for r in data.records)
  assert langs == [(str(a), "de", "de"), (str(a), "en", "en"), (str(b), "fr", "fr")]
  with pytest.raises(DataError, match="default_language"):
    train_files.read_train_files(str(a), default_language="german")


def test_default_language_is_a_config_key():
  from configs import default
  assert default.get_config().default_language == ""


def test_flagembedding_prompt_used_or_refused(tmp_path):
  prompt = "Represent this sentence for searching relevant passages: "
  same = _jsonl(tmp_path / "same.jsonl", [
      {"query": f"q{i}", "pos": [f"p{i}"], "neg": [], "prompt": prompt, "language": "en"}
      for i in range(3)])
  data = train_files.read_train_files(str(same))
  assert data.query_prompt() == prompt
  train_files.check_prompt(data, {"query": prompt, "passage": "passage: "})  # used: no error
  with pytest.raises(DataError, match="--config.query_prompt="):
    train_files.check_prompt(data, None)  # E5's "query: " would silently replace it
  mixed = _jsonl(tmp_path / "mixed.jsonl", [
      {"query": "q0", "pos": ["p0"], "prompt": prompt, "language": "en"},
      {"query": "q1", "pos": ["p1"], "prompt": "query: ", "language": "en"}])
  with pytest.raises(DataError, match="prompt"):
    train_files.read_train_files(str(mixed)).query_prompt()
  plain = _jsonl(tmp_path / "plain.jsonl", [{"query": "q", "pos": ["p"], "language": "en"}])
  assert train_files.read_train_files(str(plain)).query_prompt() is None


def test_cut_texts_counted_per_field_with_a_warning(tmp_path, tokenizer):
  long = " ".join(["Qorvel"] * 40)
  records = [{"group": f"g{i}", "query": long if i < 3 else f"short {i}",
              "positive": f"answer {i}", "negatives": [long], "language": "en"}
             for i in range(10)]
  data = train_files.read_train_files(str(_jsonl(tmp_path / "t.jsonl", records)))
  config = ml_collections.ConfigDict({"train_files": str(tmp_path / "t.jsonl"),
                                      "max_query_len": 16, "max_passage_len": 24})
  spec = train_files.shard_spec(config, data, ("en",))
  out = tmp_path / "shards"
  out.mkdir()
  manifest = train_files.write_shards(out, data, spec, tokenizer, {}, progress=False)
  # Independent truth: the untruncated token counts of the prompted texts.
  def longer(texts, kind, n):
    texts = tokenization.add_prefix(texts, kind, None)
    return sum(len(tokenizer(t)["input_ids"]) > n for t in texts)
  queries = [r["query"] for r in records]
  assert longer(queries, "query", 16) == 3 and longer([long], "passage", 24) == 1
  assert manifest["cut_texts"] == {
      "queries": {"cut": 3, "texts": 10, "max_len": 16},
      "positives": {"cut": 0, "texts": 10, "max_len": 24},
      "negatives": {"cut": 10, "texts": 10, "max_len": 24}}
  lines = train_files.cut_lines(manifest["cut_texts"])
  assert lines[0].endswith("queries 3/10 (30.0%), positives 0/10 (0.0%), negatives 10/10 (100.0%)")
  assert [l.split(" are longer")[0] for l in lines[1:]] == [
      "warning: 30% of the training queries", "warning: 100% of the training negatives"]


def test_no_usable_pair_error_names_the_language_fix(tmp_path, tokenizer):
  path = _jsonl(tmp_path / "nolang.jsonl", [{"query": "wo ist Zent?", "positive": "Zent."}])
  config = ml_collections.ConfigDict({"data_source": "files", "train_files": str(path),
                                      "strict_data": False, "default_language": "",
                                      "train_languages": ()})
  with pytest.raises(DataError, match=r"1 name no language: give --config.default_language=xx "
                                      r"or the file as xx:PATH"):
    train_files.build_training_data(config, tokenizer, progress=False)


def test_example_files_of_every_layout_read_alike():
  """examples/: the tevatron v2 file (+ its corpus) holds the tevatron v1 file's records; the
  sentence-transformers file and the BEIR directory hold its English ones."""
  import pathlib
  ex = pathlib.Path(__file__).resolve().parents[1] / "examples"
  v1 = train_files.read_train_files(str(ex / "tevatron.jsonl"))
  v2 = train_files.read_train_files(f"{ex / 'tevatron_v2.jsonl'},corpus:{ex / 'tevatron_v2_corpus.jsonl'}")
  assert (v2.queries, v2.positives, v2.negatives) == (v1.queries, v1.positives, v1.negatives)
  english = {g: t["en"] for g, t in v1.positives.items() if "en" in t}
  beir = train_files.read_train_files(f"en:{ex / 'beir_en'}")
  assert {g: t["en"] for g, t in beir.positives.items()} == english
  st = train_files.read_train_files(f"en:{ex / 'sentence_transformers.jsonl'}")
  assert sorted(t["en"] for t in st.positives.values()) == sorted(english.values())
  assert not (v2.issues or beir.issues or st.issues)
