"""Training curves in TensorBoard event files, read back with TensorFlow's own event reader
(`tf.compat.v1.train.summary_iterator`, independent of the tensorboardX writer) and compared
with metrics.jsonl: loss, accuracy, learning rate, gradient norm, throughput, validation loss."""
import json

import pytest

from configs import tiny as tiny_config
from mlir_train import metrics_writer, train

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorboardX")


def read_events(logdir):
  """[(file, [event, ...])] of every event file under `logdir`, oldest first."""
  files = sorted(logdir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
  return [(f, list(tf.compat.v1.train.summary_iterator(str(f)))) for f in files]


def scalars(events):
  """{(tag, step): value}, applying TensorBoard's purge markers (SessionLog START at step s
  drops earlier points at steps >= s)."""
  out = {}
  for event in events:
    if event.HasField("session_log") and \
        event.session_log.status == tf.compat.v1.SessionLog.START:
      out = {k: v for k, v in out.items() if k[1] < event.step}
    for value in event.summary.value:
      out[(value.tag, event.step)] = value.simple_value
  return out


def test_curves_match_metrics_jsonl_and_resume_purges(tmp_path):
  config = tiny_config.get_config()
  config.total_steps = 4
  config.checkpoint_every_steps = 2
  config.validation_fraction = 0.5
  config.validation_every_steps = 2
  train.train(config, tmp_path)
  logdir = tmp_path / metrics_writer.TENSORBOARD_DIR
  first = read_events(logdir)
  assert len(first) == 1

  # Resume for 2 more steps (a changed total_steps is an allowed, recorded change).
  config.total_steps = 6
  train.train(config, tmp_path, allow_config_change=True)
  files = read_events(logdir)
  assert len(files) == 2
  purge = [e.step for e in files[1][1] if e.HasField("session_log")
           and e.session_log.status == tf.compat.v1.SessionLog.START]
  assert purge == [5]  # resumed from the step-4 checkpoint: points at steps >= 5 are redone

  got = scalars([e for _, events in files for e in events])
  records = [json.loads(l) for l in (tmp_path / train.METRICS_FILE).read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
  names = {"loss": "train/loss", "accuracy": "train/accuracy",
           "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
           "examples_per_sec": "train/examples_per_sec", "validation_loss": "validation/loss"}
  validated = 0
  for r in records:
    for key, tag in names.items():
      if key == "validation_loss" and key not in r:
        continue
      assert (tag, r["step"]) in got, (tag, r["step"], sorted(got))
      assert got[(tag, r["step"])] == pytest.approx(r[key], rel=1e-6, abs=1e-7), (tag, r)
      validated += key == "validation_loss"
  assert validated == 3  # steps 2, 4, 6
  # Every TensorBoard point is a metrics.jsonl value (nothing else, nothing stale).
  assert {step for _, step in got} == {1, 2, 3, 4, 5, 6}
  assert got[("train/learning_rate", 1)] != got[("train/learning_rate", 3)]  # warmup, decay


def test_scalar_tags():
  record = {"step": 3, "loss": 1.5, "accuracy": 0.25, "batch_kind": "mono",
            "language_pairs": {"de-de": 4}, "examples_per_sec": 100, "val_loss": 2.0,
            "validation_loss_mono": 2.5, "flag": True}
  assert metrics_writer.scalar_tags(record) == {
      "train/loss": 1.5, "train/accuracy": 0.25, "train/examples_per_sec": 100.0,
      "validation/loss": 2.0, "validation/loss_mono": 2.5}
  assert metrics_writer.scalar_tags({"step": 1, "split": "validation", "loss": 1.0}) == {
      "validation/loss": 1.0}
