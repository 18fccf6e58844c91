"""The trainer: resume after SIGKILL ends where an uninterrupted run does; NaN guard."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from mlir_train import models, optimizer, synthetic, train

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMING_KEYS = {"examples_per_sec"}


def cli(workdir, shards_dir, *overrides):
  return [sys.executable, "-m", "mlir_train.train", "--config", str(REPO / "configs/tiny.py"),
          "--workdir", str(workdir), "--config.data_source=pairs",
          "--config.train_languages=en,de,es", f"--config.shards_dir={shards_dir}",
          "--config.total_steps=10", "--config.checkpoint_every_steps=2", *overrides]


# Trainer processes hold 2 CPU devices (the state is still sharded across devices): 8 fake
# devices on 2 cores cost each run about 10 s more.
TRAINER_ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")


def run_to_end(args):
  done = subprocess.run(args, cwd=REPO, env=TRAINER_ENV, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout[done.stdout.index("{"):])


def metrics_lines(workdir, name=train.METRICS_FILE):
  lines = [json.loads(l) for l in (workdir / name).read_text().splitlines()]
  steps = [l["step"] for l in lines]
  assert len(set(steps)) == len(steps), steps  # no step logged twice
  return {l["step"]: {k: v for k, v in l.items() if k not in TIMING_KEYS} for l in lines}


def check_batch_records(records, summary, batch_size):
  """batches.jsonl: one line per step, languages that match the kind, totals = summary."""
  assert sorted(records) == list(range(1, summary["final_step"] + 1))
  pairs = {}
  for r in records.values():
    counts = r["language_pairs"]
    assert sum(counts.values()) == batch_size
    crossing = [a != b for a, b in (k.split("-") for k in counts)]
    if r["batch_kind"] == "mono":
      assert counts == {f"{r['languages']}-{r['languages']}": batch_size}
    elif r["batch_kind"] == "cross":
      assert r["languages"] == "x" and all(crossing)
    for k, n in counts.items():
      pairs[k] = pairs.get(k, 0) + n
  assert summary["language_pair_counts"] == dict(sorted(pairs.items()))
  kinds = {}
  for r in records.values():
    kinds[r["batch_kind"]] = kinds.get(r["batch_kind"], 0) + 1
  assert summary["kind_counts"] == kinds


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Shards of the en, de, es pairs for the tiny model, built once for this module."""
  directory = tmp_path_factory.mktemp("shards")
  config = tiny.get_config()
  config.data_source, config.train_languages, config.shards_dir = "pairs", "en,de,es", str(directory)
  train.batch_stream(config, models.tiny_random_model(0).tokenizer, 0, 0)
  return directory


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, shards):

  # The uninterrupted run and the run to kill go side by side (2 CPUs).
  full_proc = subprocess.Popen(cli(tmp_path / "full", shards), cwd=REPO, env=TRAINER_ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  # Kill -9 once the step-4 checkpoint is complete (Orbax renames it into place when done).
  killed_dir = tmp_path / "killed"
  proc = subprocess.Popen(cli(killed_dir, shards), cwd=REPO,
                          env={**TRAINER_ENV, "MLIR_TRAIN_STEP_DELAY_S": "0.5"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600  # generous: the machine may be busy with other work
  while not (killed_dir / "checkpoints" / "4").is_dir():
    assert proc.poll() is None, "run ended before checkpoint 4"
    assert time.time() < deadline, "no checkpoint 4 after 600 s"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed_dir / "checkpoints" / "10").exists()
  out, err = full_proc.communicate(timeout=600)
  assert full_proc.returncode == 0, err[-3000:]
  full = json.loads(out[out.index("{"):])
  assert full["final_step"] == 10 and full["resumed_from_step"] == 0

  # The killed run logged each step's batch up to the kill, maybe past its checkpoint.
  before = metrics_lines(killed_dir, train.BATCHES_FILE)
  assert set(range(1, 5)) <= set(before)
  resumed = run_to_end(cli(killed_dir, shards))
  assert 4 <= resumed["resumed_from_step"] < 10 and resumed["final_step"] == 10
  assert resumed["kind_counts"] == full["kind_counts"]
  assert resumed["language_counts"] == full["language_counts"]
  assert resumed["language_pair_counts"] == full["language_pair_counts"]
  assert sum(full["kind_counts"].values()) == 10
  assert {"mono", "cross"} <= set(full["kind_counts"])

  # Every step's batch kind and language pairs, once per step, the same after resume.
  batches_a = metrics_lines(tmp_path / "full", train.BATCHES_FILE)
  batches_b = metrics_lines(killed_dir, train.BATCHES_FILE)
  check_batch_records(batches_a, full, batch_size=16)
  assert batches_b == batches_a
  assert any(k.split("-")[0] != k.split("-")[1] for k in full["language_pair_counts"])

  a, b = metrics_lines(tmp_path / "full"), metrics_lines(killed_dir)
  assert sorted(b) == list(range(1, 11))  # no duplicated or missing steps
  for step in range(resumed["resumed_from_step"] + 1, 11):
    assert b[step] == a[step], step
  params_a = models.restore_for_inference(tmp_path / "full").params
  params_b = models.restore_for_inference(killed_dir).params
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  start = models.tiny_random_model(0).params
  assert not np.array_equal(params_a["layer_0"]["output_dense"]["kernel"],
                            start["layer_0"]["output_dense"]["kernel"])


def test_nonfinite_loss_skips_the_update():
  config = tiny.get_config()
  model = models.tiny_random_model(0)
  tx = optimizer.make_optimizer(config)
  # Host arrays in every call, so that the step compiles once.
  state = jax.device_get(train.init_state(model.params, tx, config))
  b = synthetic.global_batch(config, model.config.vocab_size, step=0)
  batch = {f: np.asarray(getattr(b, f)) for f in train.BATCH_FIELDS}
  step_fn = jax.jit(train.make_update_step(model.module, tx, config))
  state = jax.device_get(step_fn(state, batch)[0])  # one good step: Adam state is non-trivial

  # A NaN in the embeddings' LayerNorm scale reaches every token: loss and gradient NaN.
  bad = jax.tree.map(np.array, state)
  bad["params"]["embeddings"]["LayerNorm"]["scale"][0] = np.nan
  new_state, metrics = jax.device_get(step_fn(bad, batch))
  assert not np.isfinite(float(metrics["loss"]))
  jax.tree.map(np.testing.assert_array_equal, new_state["params"], bad["params"])  # NaN == NaN here
  jax.tree.map(np.testing.assert_array_equal, new_state["opt_state"], state["opt_state"])
  assert int(new_state["nonfinite_in_a_row"]) == 1 and int(new_state["skipped_nonfinite"]) == 1
  assert int(new_state["step"]) == int(state["step"]) + 1

  # A good step (finite parameters again) resets the run of failures, not the total.
  good_state, metrics = step_fn(dict(new_state, params=state["params"]), batch)
  assert np.isfinite(float(metrics["loss"]))
  assert int(good_state["nonfinite_in_a_row"]) == 0 and int(good_state["skipped_nonfinite"]) == 1


def test_repeated_nonfinite_loss_stops_the_run(tmp_path, monkeypatch):
  config = tiny.get_config()
  monkeypatch.setattr(train.config_validation, "validate", lambda config: None)
  config.temperature = 0.0  # (refused by the config check, skipped here) -> NaN losses
  config.max_nonfinite_in_a_row = 3
  with pytest.raises(train.TrainingError, match="3 non-finite losses in a row"):
    train.train(config, tmp_path / "run")
  lines = metrics_lines(tmp_path / "run")
  assert [lines[s]["skipped_nonfinite"] for s in (1, 2, 3)] == [1, 2, 3]


def test_per_step_batch_records_when_logging_is_sparse(tmp_path, shards):
  """log_every_steps > 1: metrics.jsonl is sparse, batches.jsonl still has every step."""
  config = tiny.get_config()
  config.data_source, config.train_languages, config.shards_dir = "pairs", "en,de,es", str(shards)
  config.sampling, config.total_steps, config.log_every_steps = "hybrid", 7, 3
  config.checkpoint_every_steps = 7
  summary = train.train(config, tmp_path / "run")
  assert sorted(metrics_lines(tmp_path / "run")) == [3, 6, 7]
  records = metrics_lines(tmp_path / "run", train.BATCHES_FILE)
  check_batch_records(records, summary, batch_size=16)
  assert sum(summary["language_counts"].values()) == 7
  logged = metrics_lines(tmp_path / "run")
  for step in (3, 6, 7):
    for key in ("batch_kind", "languages", "language_pairs"):
      assert logged[step][key] == records[step][key]


@pytest.mark.fast
def test_truncate_drops_later_and_cut_short_lines(tmp_path):
  path = tmp_path / "batches.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
  train.truncate_metrics(path, 2)
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


@pytest.mark.slow  # 22 s; the loss and gradient equality per step: tests/test_gradcache.py
def test_gradcache_training_matches_full_batch_training(tmp_path):
  """gradcache_chunk_size dividing the batch: the same parameters after a few steps."""
  def run(name, chunk_size):
    config = tiny.get_config()  # tiny random model, synthetic batches of 16, 8 CPU devices
    config.total_steps, config.warmup_steps, config.checkpoint_every_steps = 3, 1, 3
    config.gradcache_chunk_size = chunk_size
    summary = train.train(config, tmp_path / name)
    assert summary["final_step"] == 3
    return (models.restore_for_inference(tmp_path / name).params,
            metrics_lines(tmp_path / name))

  params_full, metrics_full = run("full", 0)
  params_chunked, metrics_chunked = run("chunked", 4)
  leaves_full = jax.tree_util.tree_leaves_with_path(params_full)
  leaves_chunked = jax.tree_util.tree_leaves(params_chunked)
  assert len(leaves_full) == len(leaves_chunked)
  for (path, a), b in zip(leaves_full, leaves_chunked):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      # Softmax ignores a shift of the keys: this bias's true gradient is 0, so
      # Adam's normalised update is float round-off in both runs (~1e-5, while
      # every other bias moved by ~1.5e-3). Both stay at noise level.
      assert np.abs(a).max() < 1e-4 and np.abs(b).max() < 1e-4, name
      continue
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-7, err_msg=name)
  for step in (1, 2, 3):
    for key in ("loss", "accuracy", "grad_norm"):
      np.testing.assert_allclose(metrics_chunked[step][key], metrics_full[step][key], rtol=1e-5)
  start = models.tiny_random_model(0).params  # the steps did move the parameters
  moved = np.abs(params_full["layer_0"]["output_dense"]["kernel"]
                 - start["layer_0"]["output_dense"]["kernel"]).max()
  assert moved > 1e-4


@pytest.mark.slow
def test_default_training_check(tmp_path):
  """A few hundred default steps lower the loss and keep XQuAD-R en mono mAP."""
  sys.path.insert(0, str(REPO / "perf"))
  import default_training_check
  report = default_training_check.check(tmp_path / "run", steps=300)
  assert report["loss_last"] < report["loss_first"]
  assert report["xquad_r_en_mono_map_after"] >= report["xquad_r_en_mono_map_before"] - 0.005


@pytest.mark.fast
def test_truncate_refuses_a_corrupt_line_before_the_end(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
  with pytest.raises(train.TrainingError, match="line 2 is not valid JSON"):
    train.truncate_metrics(path, 3)


class _ReadRecorder:
  """A config that records the fields read from it (attribute, item or `get`)."""

  def __init__(self, config, reads: set):
    object.__setattr__(self, "_config", config)
    object.__setattr__(self, "_reads", reads)

  def __getattr__(self, name):
    self._reads.add(name)
    return getattr(self._config, name)

  def __getitem__(self, name):
    self._reads.add(name)
    return self._config[name]

  def get(self, name, default=None):
    self._reads.add(name)
    return self._config.get(name, default)


@pytest.mark.fast
@pytest.mark.parametrize("variant", [{}, dict(l2sp=0.1, freeze_layers=1),
                                     dict(gradcache_chunk_size=4, symmetric_loss=True),
                                     dict(data_source="synthetic", hard_negatives_per_pair=2)])
def test_step_functions_read_no_field_left_out_of_the_key(variant):
  """`train.step_functions` reuses an earlier run's jitted steps when the configs agree on
  every field outside NOT_READ_BY_STEPS: so the step functions (built and traced here with a
  config that records what they read) must read none of those fields."""
  config = tiny.get_config()
  for key, value in variant.items():
    config[key] = value
  reads = set()
  recorder = _ReadRecorder(config, reads)
  model = models.tiny_random_model(0)
  tx = optimizer.make_optimizer(recorder)
  state = train.init_state(model.params, tx, recorder)
  b = synthetic.global_batch(config, model.config.vocab_size, step=0)
  batch = {f: jnp.asarray(getattr(b, f)) for f in train.batch_fields(config)}
  jax.eval_shape(train.make_update_step(model.module, tx, recorder), state, batch)
  jax.eval_shape(train.make_validation_step(model.module, recorder), model.params,
                 {f: batch[f] for f in train.BATCH_FIELDS})
  assert {"temperature", "learning_rate", "freeze_embeddings"} <= reads  # it does record
  assert not reads & train.NOT_READ_BY_STEPS, reads & train.NOT_READ_BY_STEPS
  assert reads <= set(config.to_dict()), reads - set(config.to_dict())


def test_a_later_run_reuses_the_step_and_trains_the_same(tmp_path):
  """A second run in the process that differs in seed and sampling reuses the first run's
  jitted update step (no tracing) and ends with exactly the parameters it ends with in a
  fresh cache; a changed learning rate builds new step functions."""
  def config_of(**overrides):
    config = tiny.get_config()
    config.total_steps, config.warmup_steps, config.checkpoint_every_steps = 3, 1, 3
    for key, value in overrides.items():
      config[key] = value
    return config

  def params(name):
    return jax.device_get(models.restore_for_inference(tmp_path / name).params)

  train._STEP_FUNCTIONS.clear()
  train.train(config_of(seed=0, sampling="mono"), tmp_path / "first")
  assert len(train._STEP_FUNCTIONS) == 1
  (update_step, _), = train._STEP_FUNCTIONS.values()
  traced = update_step._cache_size()
  train.train(config_of(seed=1, sampling="cross"), tmp_path / "reused")
  assert len(train._STEP_FUNCTIONS) == 1 and update_step._cache_size() == traced
  train._STEP_FUNCTIONS.clear()
  train.train(config_of(seed=1, sampling="cross"), tmp_path / "fresh")
  jax.tree.map(np.testing.assert_array_equal, params("reused"), params("fresh"))
  assert not np.array_equal(params("first")["layer_0"]["output_dense"]["kernel"],
                            params("fresh")["layer_0"]["output_dense"]["kernel"])
  train.train(config_of(seed=1, sampling="cross", learning_rate=2e-3), tmp_path / "other_lr")
  assert len(train._STEP_FUNCTIONS) == 2
