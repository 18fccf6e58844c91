"""TFDS builders build from the manual dir and hold exactly the readers' rows."""
import json

import pytest
import tensorflow_datasets as tfds

from data_pipelines import readers, tfds_builders
from data_pipelines.readers import DataError


def _build(builder_class, language, data_dir, tmp_path):
  builder = builder_class(config=language, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(data_dir), try_download_gcs=False))
  return builder


def _rows(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def _assert_same_as_reader(builder, rs, prefix="", candidates_prefix=None):
  """`candidates_prefix`: where the candidates split is, when not beside the questions."""
  candidates_prefix = prefix if candidates_prefix is None else candidates_prefix
  questions, candidates = _rows(builder, f"{prefix}questions"), _rows(builder, f"{candidates_prefix}candidates")
  assert builder.info.splits[f"{prefix}questions"].num_examples == len(rs.questions)
  assert builder.info.splits[f"{candidates_prefix}candidates"].num_examples == len(rs.candidates)
  assert [int(r["index"]) for r in candidates] == list(range(len(rs.candidates)))  # order kept
  for row, c in zip(candidates, rs.candidates):
    assert (row["id"].decode(), row["text"].decode(), row["context"].decode()) == (c.doc_id, c.text, c.context)
  for row, q in zip(questions, rs.questions):
    assert (row["id"].decode(), row["text"].decode()) == (q.qid, q.text)
    assert dict(zip(row["relevant"].tolist(), row["grades"].tolist())) == dict(q.relevant)


def test_xquad_r_builder(data_dir, tmp_path):
  builder = _build(tfds_builders.XquadR, "th", data_dir, tmp_path)
  assert builder.name == "xquad_r"
  rs = readers.read_xquad_r(data_dir, "th")
  assert (len(rs.questions), len(rs.candidates)) == (1190, 852)  # published counts
  _assert_same_as_reader(builder, rs)


def test_mlqa_r_builder(data_dir, tmp_path):
  builder = _build(tfds_builders.MlqaR, "es", data_dir, tmp_path)
  rs = readers.read_mlqa_r(data_dir, "es")
  assert (len(rs.questions), len(rs.candidates)) == (500, 1787)
  _assert_same_as_reader(builder, rs)


def test_tydiqa_goldp_builder_with_train(data_dir, tmp_path):
  builder = _build(tfds_builders.TydiqaGoldp, "sw", data_dir, tmp_path)
  assert set(builder.info.splits) == {"questions", "candidates", "train_questions", "train_candidates"}
  rs = readers.read_tydi_goldp(data_dir, "sw")
  assert len(rs.questions) == 499
  _assert_same_as_reader(builder, rs)
  _assert_same_as_reader(builder, readers.read_tydi_goldp(data_dir, "sw", split="train"), "train_")


def test_builder_without_data_names_the_file(tmp_path, monkeypatch):
  monkeypatch.setenv("MLIR_TRAIN_CACHE", str(tmp_path / "cache"))  # no downloaded copy either
  manual = tmp_path / "data"
  (manual / "tydiqa_goldp").mkdir(parents=True)
  (manual / "tydiqa_goldp" / "SOURCES.txt").write_text("")
  with pytest.raises(DataError, match=r"tydiqa_goldp/bengali_tydiqa_dev\.json: file not found"):
    _build(tfds_builders.TydiqaGoldp, "bn", manual, tmp_path)


# ---------------------------------------------------------------- MIRACL format (hand-written files)

MIRACL_CORPUS = [
    {"docid": "d1#0", "title": "Mombasa", "text": "Mombasa is a port."},
    {"docid": "d1#1", "title": "Mombasa", "text": "It is in Kenya."},
    {"docid": "d2#0", "title": "", "text": "Canberra is the capital."},
    {"docid": "d3#0", "title": "Nairobi", "text": "Nairobi is the capital of Kenya."},
]


def _write_miracl_dir(root):
  """`root` laid out as the default Miracl configs expect (language sw, dev + train)."""
  miracl = root / "miracl"
  (miracl / "corpus").mkdir(parents=True)
  (miracl / "corpus" / "sw.jsonl").write_text(
      "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in MIRACL_CORPUS), "utf-8")
  (miracl / "topics.miracl-v1.0-sw-dev.tsv").write_text(
      "1\tWhere is Mombasa?\n2\tCapital of Australia?\n3\tCapital of Kenya?\n", "utf-8")
  (miracl / "qrels.miracl-v1.0-sw-dev.tsv").write_text(
      "1 Q0 d1#0 1\n1 Q0 d1#1 2\n1 Q0 d2#0 0\n"   # two relevant (grades 1, 2), one judged 0
      "2 Q0 d2#0 1\n3 Q0 d3#0 1\n3 Q0 d1#1 0\n", "utf-8")
  (miracl / "topics.miracl-v1.0-sw-train.tsv").write_text(
      "10\tPort city of Kenya?\n11\tAustralian capital?\n", "utf-8")
  (miracl / "qrels.miracl-v1.0-sw-train.tsv").write_text(
      "10 Q0 d1#0 2\n10 Q0 d3#0 0\n11 Q0 d2#0 1\n", "utf-8")
  return miracl


def test_miracl_builder_default_layout_dev_and_train(tmp_path):
  manual = tmp_path / "data"
  miracl = _write_miracl_dir(manual)
  builder = _build(tfds_builders.Miracl, "sw", manual, tmp_path)
  assert builder.name == "miracl"
  assert set(builder.info.splits) == {"questions", "candidates", "train_questions"}
  corpus = miracl / "corpus" / "sw.jsonl"
  dev = readers.read_miracl(miracl / "topics.miracl-v1.0-sw-dev.tsv",
                            miracl / "qrels.miracl-v1.0-sw-dev.tsv", corpus, "sw", strict=True)
  train = readers.read_miracl(miracl / "topics.miracl-v1.0-sw-train.tsv",
                              miracl / "qrels.miracl-v1.0-sw-train.tsv", corpus, "sw", strict=True)
  # Hand-worked truth: 3 dev and 2 train questions over the 4 passages; graded, grade 0 left out.
  assert (len(dev.questions), len(train.questions), len(dev.candidates)) == (3, 2, 4)
  assert {q.qid: dict(q.relevant) for q in dev.questions} == {"1": {0: 1, 1: 2}, "2": {2: 1}, "3": {3: 1}}
  assert {q.qid: dict(q.relevant) for q in train.questions} == {"10": {0: 2}, "11": {2: 1}}
  _assert_same_as_reader(builder, dev)
  _assert_same_as_reader(builder, train, "train_", candidates_prefix="")  # one shared corpus
  texts = [r["text"].decode() for r in _rows(builder, "candidates")]
  assert texts == ["Mombasa Mombasa is a port.", "Mombasa It is in Kenya.",
                   "Canberra is the capital.", "Nairobi Nairobi is the capital of Kenya."]
  # de and yo have no MIRACL training topics: dev only
  assert tfds_builders.Miracl.builder_configs["de"].splits == ("dev",)
  assert len(tfds_builders.Miracl.BUILDER_CONFIGS) == 18


def _write_flawed_miracl(folder):
  """A docid missing from the corpus, a duplicate docid, an empty question."""
  folder.mkdir(parents=True)
  (folder / "topics.tsv").write_text("a\tFirst?\nb\tSecond?\nc\t\n", "utf-8")
  (folder / "qrels.trec").write_text("a Q0 x1 1\na Q0 gone 1\nb Q0 x2 3\nb Q0 x1 1\n", "utf-8")
  (folder / "corpus.jsonl").write_text(
      json.dumps({"docid": "x1", "title": "T", "text": "One."}) + "\n"
      + json.dumps({"docid": "x2", "text": "Two."}) + "\n"
      + json.dumps({"docid": "x1", "title": "T", "text": "Again."}) + "\n", "utf-8")


def test_miracl_builder_custom_files_strict_and_lenient(tmp_path):
  manual = tmp_path / "data"
  _write_flawed_miracl(manual / "mine")
  config = tfds_builders.MiraclConfig(name="mine_xx", language="xx", topics="mine/topics.tsv",
                                      qrels="mine/qrels.trec", corpus="mine/corpus.jsonl")
  files = [manual / "mine" / name for name in ("topics.tsv", "qrels.trec", "corpus.jsonl")]
  with pytest.raises(DataError) as error:  # strict by default: the reader's first problem
    _build(tfds_builders.Miracl, config, manual, tmp_path)
  with pytest.raises(DataError) as reader_error:
    readers.read_miracl(*files, "xx", strict=True)
  assert str(error.value) == str(reader_error.value)
  assert str(error.value).startswith(f"{files[0]}: record c: empty question")

  builder = tfds_builders.Miracl(config=config, data_dir=str(tmp_path / "tfds"))
  builder.strict = False  # lenient: unusable records logged by the reader, the rest kept
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual), try_download_gcs=False))
  assert set(builder.info.splits) == {"questions", "candidates"}
  rs = readers.read_miracl(*files, "xx")
  assert {q.qid: dict(q.relevant) for q in rs.questions} == {"a": {0: 1}, "b": {1: 3, 0: 1}}
  assert [c.doc_id for c in rs.candidates] == ["x1", "x2"] and len(rs.issues) == 3
  _assert_same_as_reader(builder, rs)


def test_miracl_builder_without_corpus_names_it(tmp_path):
  manual = tmp_path / "data"
  miracl = _write_miracl_dir(manual)
  (miracl / "corpus" / "sw.jsonl").unlink()
  with pytest.raises(DataError, match=r"miracl/corpus/sw\.jsonl: MIRACL-format corpus not found"):
    _build(tfds_builders.Miracl, "sw", manual, tmp_path)


# ---------------------------------------------------------------- SQuAD-format files (hand-written)

def test_squad_file_builder_with_sentence_breaks(tmp_path):
  paragraphs = [
      {"context": "Alpha one. Beta two.", "sentences": ["Alpha one.", "Beta two."],
       "sentence_breaks": [[0, 10], [11, 20]],
       "qas": [{"id": "s1", "question": "Which is beta?", "answers": [{"answer_start": 11}]},
               {"id": "s2", "question": "Alpha and beta?", "answers": [{"answer_start": 0},
                                                                        {"answer_start": 11}]}]},
      {"context": "Gamma. Alpha one.", "sentences": ["Gamma.", "Alpha one."],
       "sentence_breaks": [[0, 6], [7, 17]],
       "qas": [{"id": "s3", "question": "Second alpha?", "answers": [{"answer_start": 7}]}]}]
  (tmp_path / "data").mkdir()
  path = tmp_path / "data" / "lareqa_style.json"
  path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": paragraphs}]}), "utf-8")
  config = tfds_builders.SquadFileConfig(name="lareqa_style", file="lareqa_style.json", language="xx")
  builder = _build(tfds_builders.SquadFile, config, tmp_path / "data", tmp_path)
  assert builder.name == "squad_file"
  rs = readers.read_squad_file(path, "xx", strict=True)
  # Sentences are the candidates (duplicate "Alpha one." kept); s2 has two relevant sentences.
  assert [c.doc_id for c in rs.candidates] == ["0.0:0", "0.0:1", "0.1:0", "0.1:1"]
  assert {q.qid: dict(q.relevant) for q in rs.questions} == {"s1": {1: 1}, "s2": {0: 1, 1: 1},
                                                             "s3": {3: 1}}
  _assert_same_as_reader(builder, rs)


def test_squad_file_builder_default_config_paragraphs(tmp_path):
  squad = {"version": "1.1", "data": [
      {"title": "A", "paragraphs": [
          {"context": "Passage one.", "qas": [{"id": "x1", "question": "q1?", "answers": [{"answer_start": 0}]},
                                              {"id": "x2", "question": "q2?", "answers": [{"answer_start": 8}]}]},
          {"context": "Passage two.", "qas": [{"id": "x3", "question": "q3?", "answers": [{"answer_start": 0}]}]}]},
      {"title": "B", "paragraphs": [
          {"context": "Passage one.", "qas": [{"id": "x4", "question": "q4?", "answers": [{"answer_start": 0}]}]}]}]}
  manual = tmp_path / "data"
  (manual / "squad").mkdir(parents=True)
  (manual / "squad" / "dev-v1.1.json").write_text(json.dumps(squad), "utf-8")
  builder = _build(tfds_builders.SquadFile, "v1_1_dev", manual, tmp_path)
  rs = readers.read_squad_file(manual / "squad" / "dev-v1.1.json", "en", strict=True)
  # No sentence breaks: unique paragraphs are the candidates.
  assert [c.text for c in rs.candidates] == ["Passage one.", "Passage two."]
  assert {q.qid: dict(q.relevant) for q in rs.questions} == {"x1": {0: 1}, "x2": {0: 1}, "x3": {1: 1},
                                                             "x4": {0: 1}}
  _assert_same_as_reader(builder, rs)
