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
from mlir_train import checkpoints, models, optimizer, synthetic, train

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMING_KEYS = {"examples_per_sec"}


def cli(workdir, shards_dir, *overrides):
  return [sys.executable, "-m", "mlir_train.train", "--config", str(REPO / "configs/tiny.py"),
          "--workdir", str(workdir), "--config.data_source=pairs",
          "--config.train_languages=en,de,es", f"--config.shards_dir={shards_dir}",
          "--config.total_steps=10", "--config.checkpoint_every_steps=2", *overrides]


def run_to_end(args):
  done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout[done.stdout.index("{"):])


def metrics_lines(workdir):
  lines = [json.loads(l) for l in (workdir / train.METRICS_FILE).read_text().splitlines()]
  return {l["step"]: {k: v for k, v in l.items() if k not in TIMING_KEYS} for l in lines}


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
  shards = tmp_path / "shards"
  config = tiny.get_config()
  config.data_source, config.train_languages, config.shards_dir = "pairs", "en,de,es", str(shards)
  train.batch_stream(config, models.tiny_random_model(0).tokenizer, 0, 0)  # build shards once

  # The uninterrupted run and the run to kill go side by side (2 CPUs).
  full_proc = subprocess.Popen(cli(tmp_path / "full", shards), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  # Kill -9 once the step-4 checkpoint is complete (Orbax renames it into place when done).
  killed_dir = tmp_path / "killed"
  proc = subprocess.Popen(cli(killed_dir, shards, "--config.step_delay_s=0.5"), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (killed_dir / "checkpoints" / "4").is_dir():
    assert proc.poll() is None and time.time() < deadline, "run ended before checkpoint 4"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed_dir / "checkpoints" / "10").exists()
  out, err = full_proc.communicate(timeout=300)
  assert full_proc.returncode == 0, err[-3000:]
  full = json.loads(out[out.index("{"):])
  assert full["final_step"] == 10 and full["resumed_from_step"] == 0

  resumed = run_to_end(cli(killed_dir, shards))
  assert 4 <= resumed["resumed_from_step"] < 10 and resumed["final_step"] == 10
  assert resumed["kind_counts"] == full["kind_counts"]
  assert resumed["language_counts"] == full["language_counts"]
  assert sum(full["kind_counts"].values()) == 10

  a, b = metrics_lines(tmp_path / "full"), metrics_lines(killed_dir)
  assert sorted(b) == list(range(1, 11))  # no duplicated or missing steps
  for step in range(resumed["resumed_from_step"] + 1, 11):
    assert b[step] == a[step], step
  params_a = checkpoints.restore_for_inference(tmp_path / "full").params
  params_b = checkpoints.restore_for_inference(killed_dir).params
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  start = models.tiny_random_model(0).params
  assert not np.array_equal(params_a["layer_0"]["output_dense"]["kernel"],
                            start["layer_0"]["output_dense"]["kernel"])


def test_nonfinite_loss_skips_the_update():
  config = tiny.get_config()
  model = models.tiny_random_model(0)
  tx = optimizer.make_optimizer(config)
  state = train.init_state(model.params, tx, config)
  b = synthetic.global_batch(config, model.config.vocab_size, step=0)
  batch = {f: jnp.asarray(getattr(b, f)) for f in train.BATCH_FIELDS}
  state = jax.jit(train.make_update_step(model.module, tx, config))(state, batch)[0]
  state = jax.device_get(state)  # one good step: Adam state is non-trivial

  config.temperature = 0.0  # logits = q.p / 0 -> inf -> loss NaN
  bad_step = jax.jit(train.make_update_step(model.module, tx, config))
  new_state, metrics = bad_step(state, batch)
  assert not np.isfinite(float(metrics["loss"]))
  jax.tree.map(np.testing.assert_array_equal, new_state["params"], state["params"])
  jax.tree.map(np.testing.assert_array_equal, new_state["opt_state"], state["opt_state"])
  assert int(new_state["nonfinite_in_a_row"]) == 1 and int(new_state["skipped_nonfinite"]) == 1
  assert int(new_state["step"]) == int(state["step"]) + 1

  config.temperature = 0.05  # a good step resets the run of failures, not the total
  good_state, metrics = jax.jit(train.make_update_step(model.module, tx, config))(
      new_state, batch)
  assert np.isfinite(float(metrics["loss"]))
  assert int(good_state["nonfinite_in_a_row"]) == 0 and int(good_state["skipped_nonfinite"]) == 1


def test_repeated_nonfinite_loss_stops_the_run(tmp_path):
  config = tiny.get_config()
  config.temperature = 0.0
  config.max_nonfinite_in_a_row = 3
  with pytest.raises(train.TrainingError, match="3 non-finite losses in a row"):
    train.train(config, tmp_path / "run")
  lines = metrics_lines(tmp_path / "run")
  assert [lines[s]["skipped_nonfinite"] for s in (1, 2, 3)] == [1, 2, 3]


@pytest.mark.slow
def test_default_training_check(tmp_path):
  """A few hundred default steps lower the loss and keep XQuAD-R en mono mAP."""
  sys.path.insert(0, str(REPO / "benchmarks"))
  import default_training_check
  report = default_training_check.check(tmp_path / "run", steps=300)
  assert report["loss_last"] < report["loss_first"]
  assert report["xquad_r_en_mono_map_after"] >= report["xquad_r_en_mono_map_before"] - 0.005
