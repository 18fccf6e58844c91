"""The TensorFlow-free input path: numpy batch iterator, TFRecord reader/writer, no-tf runs.

Truths: tf.data's own batches and tf's own TFRecord/Example parsing (both
present in the test environment), the CRC32C check value, and a training
run in a subprocess where `import tensorflow` fails.
"""
import itertools
import json
import os
import pathlib
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines import sampler, shards, tfrecord
from data_pipelines.errors import DataError
from mlir_train import models
from tests import synthetic_table
from tests.training_data_helpers import LANGUAGES, make_config

REPO = pathlib.Path(__file__).resolve().parents[1]
tf = pytest.importorskip("tensorflow")
FIELDS = ("query_ids", "query_mask", "passage_ids", "passage_mask", "group_id",
          "query_language", "passage_language")


@pytest.fixture(scope="module")
def real(tmp_path_factory, data_dir, tokenizer):
  """Fold-A shards (de, en, es) written by TensorFlow, and the sampler config."""
  config = make_config(tmp_path_factory.mktemp("shards"), data_dir=str(data_dir))
  os.environ["MLIR_INPUT_PIPELINE"] = "tf"
  try:
    data = sampler.build_training_data(config, tokenizer, progress=False)
  finally:
    del os.environ["MLIR_INPUT_PIPELINE"]
  return config, data


# -- TFRecord and Example without TensorFlow -----------------------------------


def test_crc32c_check_value():
  # The CRC-32C (Castagnoli) check value of "123456789" (RFC 3720 B.4).
  assert tfrecord.crc32c_many([b"123456789", b"", b"a"]).tolist() == [0xE3069283, 0, 0xC1D04330]


def test_our_records_read_by_tensorflow_and_back(tmp_path):
  rng = np.random.default_rng(0)
  examples = [{"a": rng.integers(0, 300_000, 5), "g": [int(rng.integers(0, 1 << 40))],
               "m": rng.integers(0, 2, 3)} for _ in range(50)]
  ours = [tfrecord.encode_example(e, {"qid": [f"q{i}".encode()]}) for i, e in enumerate(examples)]
  tfrecord.write_records(tmp_path / "ours.tfrecord", ours)
  spec = {"a": tf.io.FixedLenFeature([5], tf.int64), "g": tf.io.FixedLenFeature([], tf.int64),
          "m": tf.io.FixedLenFeature([3], tf.int64), "qid": tf.io.FixedLenFeature([], tf.string)}
  got = next(tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord")).batch(100)
             .map(lambda x: tf.io.parse_example(x, spec)).as_numpy_iterator())
  np.testing.assert_array_equal(got["a"], [e["a"] for e in examples])
  np.testing.assert_array_equal(got["g"], [e["g"][0] for e in examples])
  assert got["qid"][7] == b"q7"
  # TensorFlow's writer and Example serialiser, read by ours.
  with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
    for e in examples:
      w.write(tf.train.Example(features=tf.train.Features(feature={
          k: tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, v))))
          for k, v in e.items()})).SerializeToString())
  assert (tmp_path / "tf.tfrecord").read_bytes() != b""
  parsed = tfrecord.parse_int64_examples(tfrecord.read_records(tmp_path / "tf.tfrecord"),
                                         {"a": 5, "g": 0, "m": 3})
  np.testing.assert_array_equal(parsed["a"], got["a"])
  np.testing.assert_array_equal(parsed["g"], got["g"])
  np.testing.assert_array_equal(parsed["m"], got["m"])


def test_corrupt_record_is_refused(tmp_path):
  path = tmp_path / "x.tfrecord"
  tfrecord.write_records(path, [tfrecord.encode_example({"a": [1, 2]}) for _ in range(3)])
  raw = bytearray(path.read_bytes())
  raw[-6] ^= 0x01                                    # a data byte of the last record
  path.write_bytes(bytes(raw))
  with pytest.raises(DataError, match="record 2 fails its crc32c"):
    tfrecord.read_records(path)
  path.write_bytes(struct.pack("<Q", 99) + b"\0" * 6)
  with pytest.raises(DataError, match="x.tfrecord"):
    tfrecord.read_records(path)
  ok = tfrecord.encode_example({"a": [1, 2, 3]})
  with pytest.raises(DataError, match="record 0: feature 'a' has 3 values, expected 2"):
    tfrecord.parse_int64_examples([ok], {"a": 2})


def test_real_shards_same_table_either_reader(real):
  _, data = real
  a = shards.load_pair_table(data.directory, use_tensorflow=True)
  b = shards.load_pair_table(data.directory, use_tensorflow=False)
  assert len(a.group_id) > 1000
  for k in FIELDS + ("row_of",):
    np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert getattr(a, k).dtype == getattr(b, k).dtype
  assert a.shard_rows.keys() == b.shard_rows.keys()


def test_shards_written_without_tensorflow_match(real, tmp_path, tokenizer, monkeypatch):
  config, data = real
  monkeypatch.setenv("MLIR_INPUT_PIPELINE", "numpy")
  config = config.copy_and_resolve_references()
  config.shards_dir = str(tmp_path)
  ours = sampler.build_training_data(config, tokenizer, progress=False)
  assert ours.directory.name == data.directory.name       # same key, same manifest fields
  theirs = shards.load_pair_table(ours.directory, use_tensorflow=True)   # read by tf
  for k in FIELDS:
    np.testing.assert_array_equal(getattr(theirs, k), getattr(data.table, k), err_msg=k)


# -- the numpy batch iterator against tf.data -----------------------------------


def _batches(data, config, pipeline, start, n, **kw):
  return list(itertools.islice(sampler.batch_stream(data, config, start_step=start,
                                                    pipeline=pipeline, **kw), n))


def _assert_identical(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert (x.step, x.kind, x.languages, x.language_pairs) == (
        y.step, y.kind, y.languages, y.language_pairs)
    for k in FIELDS:
      a, b = getattr(x, k), getattr(y, k)
      assert a.dtype == b.dtype and a.shape == b.shape, (x.step, k)
      assert a.tobytes() == b.tobytes(), (x.step, k)


@pytest.mark.parametrize("mode", sampler.SAMPLING_MODES)
def test_numpy_iterator_yields_tf_data_batches(real, mode):
  config, data = real
  config = config.copy_and_resolve_references()
  config.sampling = mode
  for start in (0, 937):                       # 937 + 200 crosses the plan block at 1024
    tf_batches = _batches(data, config, "tf", start, 200)
    np_batches = _batches(data, config, "numpy", start, 200)
    assert [b.step for b in np_batches] == list(range(start, start + 200))
    _assert_identical(tf_batches, np_batches)
  # Resumed mid-stream = the uninterrupted stream, for either pipeline.
  _assert_identical(_batches(data, config, "numpy", 0, 220)[137:],
                    _batches(data, config, "tf", 137, 83))


def test_numpy_iterator_host_slices(real):
  config, data = real
  for index in range(2):
    _assert_identical(_batches(data, config, "tf", 3, 20, process_index=index, process_count=2),
                      _batches(data, config, "numpy", 3, 20, process_index=index,
                               process_count=2))


def test_pipeline_switch(monkeypatch):
  assert sampler.input_pipeline() == "tf"            # tensorflow is installed here
  monkeypatch.setenv("MLIR_INPUT_PIPELINE", "numpy")
  assert sampler.input_pipeline() == "numpy"
  assert sampler.input_pipeline(requested="tf") == "tf"
  assert sampler.input_pipeline({"input_pipeline": "auto"}) == "tf"
  monkeypatch.setenv("MLIR_INPUT_PIPELINE", "torch")
  with pytest.raises(ValueError, match="MLIR_INPUT_PIPELINE"):
    sampler.input_pipeline()


# -- runs without TensorFlow ---------------------------------------------------

NO_TF = """
import sys
sys.modules["tensorflow"] = None            # `import tensorflow` now raises ImportError
sys.modules["tensorflow_datasets"] = None
import json, pathlib
from configs import tiny
from data_pipelines import sampler
import replicate
from mlir_train import train, export, models, encode, checkpoints
from eval import run as eval_run
assert sampler.input_pipeline() == "numpy"
out = {}
config = tiny.get_config()
config.total_steps = 3
out["synthetic"] = train.train(config, WORK + "/synthetic")["final_metrics"]
config = tiny.get_config()
config.total_steps = 3
config.data_source, config.train_languages = "pairs", "en,de,es"
config.shards_dir, config.data_dir = WORK + "/shards", DATA
summary = train.train(config, WORK + "/pairs")
out["pairs"] = summary["final_metrics"]
out["kind_counts"] = summary["kind_counts"]
model = models.load_model(WORK + "/pairs")
out["embed"] = encode.embed(model, ["hallo welt", "hello"], "query", progress=False).shape
out["shard_files"] = sorted(p.name for p in pathlib.Path(WORK, "shards").glob("*/*.tfrecord"))
out["tf_loaded"] = sys.modules["tensorflow"] is not None
print("RESULT " + json.dumps(out, default=list))
"""


def test_training_without_tensorflow(tmp_path, data_dir, real):
  code = f"WORK = {str(tmp_path)!r}\nDATA = {str(data_dir)!r}\n" + textwrap.dedent(NO_TF)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")  # 8: ~10 s more
  env.pop("MLIR_INPUT_PIPELINE", None)
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  out = json.loads(line[len("RESULT "):])
  assert not out["tf_loaded"]
  for run in ("synthetic", "pairs"):
    assert np.isfinite(out[run]["loss"]), out[run]
  assert sum(out["kind_counts"].values()) == 3
  assert out["embed"] == [2, models.tiny_random_model().config.hidden_size]
  assert "de-en.tfrecord" in out["shard_files"] and "en-en.tfrecord" in out["shard_files"]
