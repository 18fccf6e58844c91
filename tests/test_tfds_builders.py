"""TFDS builders build from the manual dir and hold exactly the readers' rows."""
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


def _assert_same_as_reader(builder, rs, prefix=""):
  questions, candidates = _rows(builder, f"{prefix}questions"), _rows(builder, f"{prefix}candidates")
  assert builder.info.splits[f"{prefix}questions"].num_examples == len(rs.questions)
  assert builder.info.splits[f"{prefix}candidates"].num_examples == len(rs.candidates)
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
