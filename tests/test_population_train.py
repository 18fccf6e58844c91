"""A population's training features (`mlir_train.population`): each member validates,
early-stops, fails and resumes as the same run alone (`train.train`, the truth), and its
workdir passes the checks a single run's passes. Synthetic batches, tiny model."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from mlir_train import checkpoints, export, models, optimizer, population, synthetic, train
from tests.test_faults import DAMAGE
from tests.test_population import check_same_parameters

REPO = pathlib.Path(__file__).resolve().parents[1]
COMPARED = ("loss", "accuracy", "grad_norm", "learning_rate", "l2sp_penalty")
# L2-SP's penalty is (l2sp / 2) ||theta - theta_start||^2 of parameters that moved ~1e-3
# from the anchor: a round-off of ~1e-7 in theta is ~1e-4 of theta - theta_start (7e-6 seen).
RTOL = {"l2sp_penalty": 1e-4}
# The attention key bias is round-off alone (its true gradient is 0), which Adam normalises:
# with frozen embeddings it reaches 4e-4 in 6 steps at learning rate 1e-3 (bound: 6e-3).
KEY_BIAS_NOISE = 6e-3


def config_of(seed, **overrides):
  config = tiny.get_config()  # synthetic batches of 16, float32
  config.seed, config.total_steps, config.warmup_steps, config.checkpoint_every_steps = \
      seed, 3, 1, 3
  # Frozen embeddings (the project's default; held once, shared): the synthetic batches
  # use few of the tiny vocabulary's rows, whose near-cancelling gradients Adam's
  # normalised update would turn into differences of ~1e-6 (tests/test_population.py).
  config.freeze_embeddings = True
  for key, value in overrides.items():
    config[key] = value
  return config


def lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def check_same_losses(member, alone, what):
  """metrics.jsonl of the member and of the run alone: the same steps and keys, values
  within 1e-6 relative (vmap reorders reductions: tests/test_population.py)."""
  logged, logged_alone = lines(member / train.METRICS_FILE), lines(alone / train.METRICS_FILE)
  assert [m["step"] for m in logged] == [m["step"] for m in logged_alone], what
  for m, s in zip(logged, logged_alone):
    assert set(m) == set(s), what
    for key in [k for k in m if k in COMPARED or k.startswith("validation_loss")]:
      np.testing.assert_allclose(m[key], s[key], rtol=RTOL.get(key, 1e-6),
                                 err_msg=f"{what} {key}")


# Two variants (two populations of 2, kept few for time): GradCache chunking hard
# negatives; L2-SP with validation, where member 0 keeps its best checkpoint (early
# stopping) and member 1 only validates, at another interval. Members differ in seed.
VARIANTS = {
    "hard_negatives_gradcache": [dict(hard_negatives_per_pair=2, gradcache_chunk_size=8)] * 2,
    "l2sp_early_stopping": [
        dict(l2sp=0.1, validation_fraction=0.2, validation_every_steps=1, early_stopping=True),
        dict(l2sp=0.1, validation_fraction=0.2, validation_every_steps=2)],
}


# The GradCache / hard-negative variant is `slow` (26 s; the update step it runs inside
# the vmap is the single run's, whose GradCache equality tests/test_gradcache.py holds).
@pytest.mark.parametrize("variant", [
    pytest.param("hard_negatives_gradcache", marks=pytest.mark.slow), "l2sp_early_stopping"])
def test_each_member_trains_as_alone(tmp_path, variant):
  configs = [config_of(k, **o) for k, o in enumerate(VARIANTS[variant])]
  summaries, params = population.train_population(
      configs, [tmp_path / f"member_{k}" for k in range(len(configs))], return_params=True)
  for k, (config, summary) in enumerate(zip(configs, summaries)):
    member, solo = tmp_path / f"member_{k}", tmp_path / f"alone_{k}"
    single = train.train(config, solo)
    assert summary["failed"] is None and summary["final_step"] == single["final_step"] == 3
    assert lines(member / train.BATCHES_FILE) == lines(solo / train.BATCHES_FILE)
    check_same_losses(member, solo, f"{variant} member {k}")
    # (of_move 2e-4: with hard negatives one kernel element differs by 1.04e-4 of its move,
    # 1.6e-7 absolute)
    check_same_parameters(params[k], models.load_model(solo).params, f"{variant} member {k}",
                          of_move=2e-4, noise=KEY_BIAS_NOISE)
    if variant == "l2sp_early_stopping":
      assert "l2sp_penalty" in lines(member / train.METRICS_FILE)[-1]
      logged = lines(member / train.METRICS_FILE)
      assert [m["step"] for m in logged if "validation_loss" in m] == ([1, 2, 3], [2, 3])[k]
      best, best_alone = summary["best_validation"], single["best_validation"]
      assert (best is None) == (best_alone is None) == (k == 1)
      if best:
        assert best["step"] == best_alone["step"]
        np.testing.assert_allclose(best["loss"], best_alone["loss"], rtol=1e-6)
        assert sorted(int(p.name) for p in (member / checkpoints.BEST_DIR).iterdir()
                      if p.name.isdigit()) == [best["step"]]
        for workdir in (member, solo):  # the best step, in the checkpoint's meta too
          mngr = checkpoints.manager(workdir, read_only=True)
          meta = mngr.restore(3, args=checkpoints.ocp.args.Composite(
              meta=checkpoints.ocp.args.JsonRestore()))["meta"]
          mngr.close()
          assert meta["best_validation"]["step"] == best["step"]
        # Inference reads the best checkpoint, as alone.
        check_same_parameters(params_of(member), params_of(solo), f"best of member {k}",
                              of_move=2e-4, noise=KEY_BIAS_NOISE)


# --- A member that goes non-finite is held fixed; the others train on ---------------------
HEALTHY, BLOWS_UP = dict(learning_rate=1e-3), dict(learning_rate=1e20)  # 1e20: overflows


def failing_config(seed, **overrides):
  return config_of(seed, total_steps=6, checkpoint_every_steps=2, max_nonfinite_in_a_row=2,
                   **overrides)


@pytest.fixture(scope="module")
def with_failure(tmp_path_factory):
  """A population of 2 (6 steps, checkpoints every 2) whose member 1 goes non-finite."""
  root = tmp_path_factory.mktemp("population")
  configs = [failing_config(0, **HEALTHY), failing_config(1, **BLOWS_UP)]
  summaries, params = population.train_population(
      configs, [root / "member_0", root / "member_1"], return_params=True)
  return root, configs, summaries, params


def test_a_nonfinite_member_is_held_fixed_and_reported(with_failure, tmp_path):
  root, configs, summaries, params = with_failure
  # Alone, member 1 stops with this error; in the population its summary says it.
  with pytest.raises(train.TrainingError) as error:
    train.train(configs[1], tmp_path / "alone_1")
  assert summaries[1]["failed"] == str(error.value).replace(str(tmp_path / "alone_1"),
                                                            str(root / "member_1"))
  assert "2 non-finite losses in a row" in summaries[1]["failed"]
  stopped = int(re.match(r"stopping at step (\d+):", summaries[1]["failed"]).group(1))
  assert summaries[1]["final_step"] == stopped < 6
  # Its files end where the run alone ended: the same batches and logged steps, the
  # last good checkpoint kept (no later one).
  assert lines(root / "member_1" / train.BATCHES_FILE) == \
      lines(tmp_path / "alone_1" / train.BATCHES_FILE)
  assert [m["step"] for m in lines(root / "member_1" / train.METRICS_FILE)] == \
      list(range(1, stopped + 1))
  steps = lambda w: sorted(int(p.name) for p in (w / "checkpoints").iterdir())
  assert steps(root / "member_1") == steps(tmp_path / "alone_1") == [2]
  # Its non-finite updates were skipped, and it was held fixed after: its parameters are
  # those of its last checkpoint (step 2; steps 3 and 4 went non-finite).
  assert_same_params(params[1], params_of(root / "member_1"))

  # The other member trains on to the end, as alone.
  single = train.train(configs[0], tmp_path / "alone_0")
  assert summaries[0]["failed"] is None and summaries[0]["final_step"] == 6
  assert summaries[0]["kind_counts"] == single["kind_counts"]
  check_same_losses(root / "member_0", tmp_path / "alone_0", "member 0")
  # Each member's learning rate is a traced scalar here (tests/test_population.py).
  check_same_parameters(params[0], models.load_model(tmp_path / "alone_0").params, "member 0",
                        absolute=1e-5, of_move=1e-2, noise=KEY_BIAS_NOISE)


def test_a_rerun_resumes_from_the_latest_step_every_member_holds(with_failure, tmp_path):
  """Member 1 failed after its checkpoint of step 2, member 0 saved 4 and 6: a re-run
  resumes both from step 2 (member 0's later checkpoints and lines dropped, redone) and
  ends as the first run did, member 1 failing again."""
  root, configs, summaries, params = with_failure
  for k in range(2):
    shutil.copytree(root / f"member_{k}", tmp_path / f"member_{k}")
  (tmp_path / "member_0" / train.METRICS_FILE).open("a").write('{"step": 7, "cut sh')
  again, params_again = population.train_population(
      configs, [tmp_path / "member_0", tmp_path / "member_1"], return_params=True)
  assert [s["resumed_from_step"] for s in again] == [2, 2]
  assert [s["final_step"] for s in again] == [s["final_step"] for s in summaries]
  assert again[1]["failed"] == summaries[1]["failed"].replace(str(root), str(tmp_path))
  assert again[0]["kind_counts"] == summaries[0]["kind_counts"]  # steps 1-2 counted from files
  for k in range(2):  # the same program on the same devices: bit-identical
    assert_same_params(params_again[k], params[k])
    for name in (train.METRICS_FILE, train.BATCHES_FILE):
      assert without_timing(tmp_path / f"member_{k}" / name) == \
          without_timing(root / f"member_{k}" / name), (k, name)
  assert sorted(int(p.name) for p in (tmp_path / "member_0" / "checkpoints").iterdir()) == \
      [2, 4, 6]


def test_an_inactive_member_keeps_its_state():
  """The step's `active` mask: a stopped member's state stays as it was although its batch
  would move it; the active member's update is the one it gets when all are active."""
  config = config_of(0)
  model = models.tiny_random_model(0)
  shared, one = population.split_state(
      train.init_state(model.params, optimizer.make_optimizer(config), config), config)
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), one)
  drawn = [synthetic.global_batch(config, model.config.vocab_size, step=k) for k in range(2)]
  batches = {f: np.stack([np.asarray(getattr(b, f)) for b in drawn]) for f in train.BATCH_FIELDS}
  step = jax.jit(population.make_population_step(model.module, config, False))
  rates = np.zeros(2, np.float32)  # not read: one learning rate
  # One step first, past the 1-step warmup (its learning rate is 0).
  stacked, _ = jax.device_get(step(shared, stacked, batches, rates, np.array([True, True])))
  both, _ = jax.device_get(step(shared, stacked, batches, rates, np.array([True, True])))
  one_stopped, _ = jax.device_get(step(shared, stacked, batches, rates, np.array([True, False])))
  member = lambda tree, k: jax.tree.map(lambda x: np.asarray(x)[k], tree)
  assert_same_params(member(one_stopped, 1), member(stacked, 1))  # counters included
  assert_same_params(member(one_stopped, 0), member(both, 0))
  assert int(member(both, 1)["step"]) == 2 and not np.array_equal(
      member(both, 1)["params"]["layer_0"]["output_dense"]["kernel"],
      member(stacked, 1)["params"]["layer_0"]["output_dense"]["kernel"])


def params_of(workdir, step=None):
  return jax.device_get(models.restore_for_inference(workdir, step=step).params)


def assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_member_workdir_passes_the_single_run_checks(with_failure, tmp_path):
  root, configs, summaries, params = with_failure
  workdir = tmp_path / "member_0"
  shutil.copytree(root / "member_0", workdir)
  # train.train takes it for a finished run of the same config (provenance accepted).
  summary = train.train(configs[0], workdir)
  assert (summary["resumed_from_step"], summary["final_step"]) == (6, 6)
  assert_same_params(params_of(workdir), params[0])
  with pytest.raises(train.TrainingError, match="different config"):
    train.train(failing_config(0, learning_rate=2e-3), workdir)

  # A damaged newest checkpoint: inference and training fall back to the previous one.
  DAMAGE["data_truncated"](workdir / "checkpoints" / "6")
  assert_same_params(params_of(workdir), params_of(root / "member_0", step=4))
  summary = train.train(configs[0], workdir)
  assert (summary["resumed_from_step"], summary["final_step"]) == (4, 6)
  assert len(list((workdir / checkpoints.CORRUPT_DIR).iterdir())) == 1
  check_same_parameters(params_of(workdir), params[0], "resumed alone", noise=KEY_BIAS_NOISE)

  # Export: the exported model holds the member's trained parameters.
  out = tmp_path / "export"
  assert export.main(["--model", str(root / "member_0"), "--out", str(out)]) == 0
  assert_same_params(jax.device_get(models.load_model(str(out)).params), params[0])


# --- SIGKILL in the middle of a population, re-run: as uninterrupted ----------------------
POPULATION_SCRIPT = """
import json, sys
from configs import tiny
from mlir_train import population
root = sys.argv[1]
configs = []
for k, every in enumerate((2, 4)):  # member 0 checkpoints every 2 steps, member 1 every 4
  c = tiny.get_config()
  c.seed, c.total_steps, c.warmup_steps, c.checkpoint_every_steps = k, 8, 1, every
  c.validation_fraction, c.validation_every_steps, c.early_stopping = 0.2, 2, k == 0
  configs.append(c)
print(json.dumps(population.train_population(configs, [f"{root}/m0", f"{root}/m1"])))
"""
# As tests/test_train.py: trainer processes hold 2 CPU devices.
TRAINER_ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")


def population_process(root, **env):
  return subprocess.Popen([sys.executable, "-c", POPULATION_SCRIPT, str(root)], cwd=REPO,
                          env={**TRAINER_ENV, **env}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish(proc):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def without_timing(path):
  return [{k: v for k, v in line.items() if k != "examples_per_sec"} for line in lines(path)]


@pytest.mark.slow
def test_resume_after_sigkill_matches_the_uninterrupted_population(tmp_path):
  full_proc = population_process(tmp_path / "full")
  killed = tmp_path / "killed"
  proc = population_process(killed, MLIR_TRAIN_STEP_DELAY_S="0.5")
  deadline = time.time() + 600
  while not (killed / "m0" / "checkpoints" / "6").is_dir():  # member 1's latest: step 4
    assert proc.poll() is None, "population ended before member 0's checkpoint 6"
    assert time.time() < deadline, "no checkpoint 6 after 600 s"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "m1" / "checkpoints" / "8").exists()
  assert max(line["step"] for line in lines(killed / "m0" / train.METRICS_FILE)) >= 6
  full = finish(full_proc)

  resumed = finish(population_process(killed))
  for k in range(2):
    assert resumed[k]["resumed_from_step"] == 4 and resumed[k]["final_step"] == 8
    for key in ("kind_counts", "language_counts", "skipped_nonfinite", "best_validation"):
      assert resumed[k][key] == full[k][key], (k, key)
    a, b = tmp_path / "full" / f"m{k}", killed / f"m{k}"
    assert lines(b / train.BATCHES_FILE) == lines(a / train.BATCHES_FILE)
    assert without_timing(b / train.METRICS_FILE) == without_timing(a / train.METRICS_FILE)
    assert_same_params(params_of(b, step=8), params_of(a, step=8))
  assert full[0]["best_validation"] is not None
  assert_same_params(params_of(killed / "m0"), params_of(tmp_path / "full" / "m0"))  # best

  # A finished population re-run returns at once, rewriting nothing.
  before = lines(killed / "m0" / train.METRICS_FILE)
  again = finish(population_process(killed))
  assert [s["resumed_from_step"] for s in again] == [8, 8]
  assert [s["final_metrics"] for s in again] == [None, None]
  assert lines(killed / "m0" / train.METRICS_FILE) == before
