"""Faults and bad input: never mix, mislabel or lose work; fail early in one line.

Each test names the audit case it covers. Runs use the tiny random model on
synthetic batches (configs/tiny.py), in-process unless the command line itself
is what is tested.
"""
import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from configs import tiny
from data_pipelines import shards
from eval import run as eval_run
from mlir_train import checkpoints, config_validation, export, hf_io, models, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
  config = tiny.get_config()
  config.total_steps, config.checkpoint_every_steps, config.warmup_steps = 6, 2, 1
  for key, value in overrides.items():
    config[key] = value
  return config


def params_of(workdir, step=None):
  return jax.device_get(models.restore_for_inference(workdir, step=step).params)


def assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def losses(workdir):
  lines = [json.loads(l) for l in (workdir / train.METRICS_FILE).read_text().splitlines()]
  return {l["step"]: (l["loss"], l["grad_norm"]) for l in lines}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One finished 6-step run (checkpoints at steps 2, 4, 6)."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  train.train(tiny_config(), workdir)
  return workdir


# --- 1. resuming with another training config ------------------------------------------------
@pytest.mark.parametrize("change", [dict(total_steps=8, batch_size=8),
                                    dict(freeze_embeddings=True)])
def test_resume_with_other_training_config_is_refused_and_nothing_is_rewritten(
    trained, tmp_path, change):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  with pytest.raises(train.TrainingError) as error:
    train.train(tiny_config(**change), workdir)
  message = str(error.value)
  for key, value in change.items():
    assert f"{key}: {tiny_config()[key]!r} -> {value!r}" in message
  assert "--allow_config_change" in message
  assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before


def test_bookkeeping_keys_may_change(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  summary = train.train(tiny_config(log_every_steps=3, keep_checkpoints=5), workdir)
  assert summary["resumed_from_step"] == 6
  assert not (workdir / train.CONFIG_HISTORY_FILE).exists()


def test_allowed_change_is_recorded_and_provenance_kept(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  provenance = (workdir / train.PROVENANCE_FILE).read_text()
  summary = train.train(tiny_config(total_steps=8), workdir, allow_config_change=True)
  assert (summary["resumed_from_step"], summary["final_step"]) == (6, 8)
  assert (workdir / train.PROVENANCE_FILE).read_text() == provenance
  history = [json.loads(l) for l in (workdir / train.CONFIG_HISTORY_FILE).read_text().splitlines()]
  assert len(history) == 1 and history[0]["resumed_from_step"] == 6
  assert history[0]["changed"] == {"total_steps": {"was": 6, "now": 8}}
  assert json.loads((workdir / "config.json").read_text())["total_steps"] == 8
  # The changed config is now the workdir's: resuming with it needs no flag again.
  assert train.train(tiny_config(total_steps=8), workdir)["resumed_from_step"] == 8


@pytest.mark.fast
def test_provenance_hash_is_of_the_training_keys_only():
  a = config_validation.as_dict(tiny_config())
  b = dict(a, log_every_steps=7, shards_dir="/elsewhere", checkpoint_every_steps=9)
  assert config_validation.config_hash(a) == config_validation.config_hash(b)
  assert config_validation.config_hash(a) != config_validation.config_hash(dict(a, seed=1))
  # A key added to the project later counts as its default value, not as a change.
  old = {k: v for k, v in a.items() if k != "temperature"}
  assert config_validation.differences(old, a) == {}
  assert config_validation.differences(dict(a, temperature=0.1), a) == {"temperature": (0.1, 0.05)}


# --- 3. an output path that cannot be written fails before any work ---------------------------
def test_eval_output_that_cannot_be_written_fails_before_loading(tmp_path, monkeypatch, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")

  def must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the output path was checked")
  monkeypatch.setattr(models, "load_model", must_not_load)
  with pytest.raises(SystemExit) as exit_info:
    eval_run.main(["--model", "e5-small", "--benchmark", "xquad_r",
                   "--out", str(blocker / "sub" / "x.json")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "a_file" in err[0]


@pytest.mark.fast
def test_check_writable_probes_an_existing_directory(tmp_path, monkeypatch):
  config_validation.check_writable(tmp_path / "new" / "deeper")  # creatable: fine
  config_validation.check_writable(tmp_path)
  def refuse(*args, **kwargs):  # as on a read-only file system (tests run as root here)
    raise PermissionError(30, "Read-only file system")
  monkeypatch.setattr("tempfile.NamedTemporaryFile", refuse)
  with pytest.raises(config_validation.ConfigError, match="Read-only file system"):
    config_validation.check_writable(tmp_path)


# --- 4. export never overwrites a workdir or the model it reads -------------------------------
def test_export_refuses_a_training_workdir_or_the_models_own_directory(trained, tmp_path, capsys):
  config_before = (trained / "config.json").read_bytes()
  assert export.main(["--model", str(trained), "--out", str(trained)]) == 2
  assert "error: " in capsys.readouterr().err
  other = tmp_path / "other_run"
  shutil.copytree(trained, other)
  assert export.main(["--model", "tiny-random", "--out", str(other)]) == 2
  assert "training workdir" in capsys.readouterr().err
  assert (trained / "config.json").read_bytes() == config_before
  models.load_model(trained)  # still loads

  out = tmp_path / "export"
  assert export.main(["--model", str(trained), "--out", str(out)]) == 0
  assert export.main(["--model", str(out), "--out", str(out)]) == 2
  assert "own directory" in capsys.readouterr().err
  # 9: the weights file is as readable as every other exported file.
  modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
  assert len(set(modes.values())) == 1, modes


# --- 5. a damaged newest checkpoint: fall back to the previous one ----------------------------
def _truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _truncate_data_files(params: pathlib.Path) -> None:
  """Every array data file (OCDBT `d/` folders), as a disk filling up mid-save would leave them."""
  files = [p for p in params.rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for path in files:
    _truncate(path)


DAMAGE = {
    "params_deleted": lambda step: shutil.rmtree(step / "params"),
    "data_truncated": lambda step: _truncate_data_files(step / "params"),
    "meta_truncated": lambda step: _truncate(step / "meta" / "metadata"),
    "array_metadata_truncated": lambda step: _truncate(step / "params" / "_METADATA"),
}
PARAMS_INTACT = {"meta_truncated"}  # inference reads only params: step 6's are fine


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous(trained, tmp_path, damage, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  DAMAGE[damage](workdir / "checkpoints" / "6")

  # Inference (eval, export) reads step 4 and says why.
  if damage in PARAMS_INTACT:
    assert_same_params(params_of(workdir), params_of(trained))
  else:
    assert_same_params(params_of(workdir), params_of(trained, step=4))
    assert "step 6" in caplog.text and "unusable" in caplog.text

  # Training resumes from step 4 and ends exactly where the undamaged run ended.
  summary = train.train(tiny_config(), workdir)
  assert (summary["resumed_from_step"], summary["final_step"]) == (4, 6)
  assert_same_params(params_of(workdir), params_of(trained))
  assert losses(workdir) == losses(trained)
  assert len(list((workdir / checkpoints.CORRUPT_DIR).iterdir())) == 1


def test_no_usable_checkpoint_is_one_error_naming_the_directory(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  for step in (2, 4, 6):
    shutil.rmtree(workdir / "checkpoints" / str(step) / "params")
  with pytest.raises(checkpoints.CheckpointError, match="no usable checkpoint") as error:
    models.restore_for_inference(workdir)
  assert str(workdir / "checkpoints") in str(error.value)
  with pytest.raises(checkpoints.CheckpointError, match="no usable checkpoint"):
    train.train(tiny_config(), workdir)
  assert (workdir / "checkpoints" / "6").is_dir()  # nothing moved when nothing restores


# --- 6. a metrics line without "step" ----------------------------------------------------------
@pytest.mark.fast
def test_metrics_line_without_step_names_file_and_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"loss": 2.0}\n{"step": 3}\n')
  with pytest.raises(train.TrainingError, match=r"metrics.jsonl: line 2 has no integer \"step\""):
    train.truncate_metrics(path, 3)


# --- 7. bad config values fail at once, in one line -------------------------------------------
@pytest.mark.parametrize("key,value,expected", [
    ("sampling", "foo", "config.sampling='foo': must be one of mono, cross, hybrid, mixed"),
    ("alpha", 1.5, "config.alpha=1.5: must be in [0.0, 1.0]"),
    ("log_every_steps", 0, "config.log_every_steps=0: must be >= 1"),
    ("checkpoint_every_steps", 0, "config.checkpoint_every_steps=0: must be >= 1"),
    ("mono_language_sampling", "zipf", "must be one of uniform, size, temperature"),
    ("temperature", 0.0, "config.temperature=0.0: must be > 0"),
])
@pytest.mark.fast
def test_bad_values_fail_before_model_or_data(tmp_path, monkeypatch, key, value, expected):
  def must_not_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the config was checked")
  monkeypatch.setattr(models, "load_model", must_not_load)
  config = tiny_config(data_source="pairs", shards_dir=str(tmp_path / "shards"))
  with config.unlocked():
    config[key] = value
  with pytest.raises(train.TrainingError) as error:
    train.train(config, tmp_path / "run")
  assert expected in str(error.value) and "\n" not in str(error.value)
  assert not (tmp_path / "run").exists() and not (tmp_path / "shards").exists()


@pytest.mark.fast
def test_unknown_key_suggests_the_known_one():
  with pytest.raises(config_validation.ConfigError, match="'batchsize' \\(did you mean 'batch_size'"):
    config_validation.check_key("batchsize")
  config = tiny_config()
  with config.unlocked():
    config.learning_rte = 1e-3
  with pytest.raises(config_validation.ConfigError, match="did you mean 'learning_rate'"):
    config_validation.validate(config)


def test_command_line_typo_is_one_line_and_exit_code_2(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "mlir_train.train", "--config", str(REPO / "configs/tiny.py"),
       "--workdir", str(tmp_path / "run"), "--config.batchsize=8"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: unknown config key 'batchsize' (did you mean 'batch_size'?); the keys are "
      "those of configs/default.py"]
  assert not (tmp_path / "run").exists()


# --- 8. a broken model is named at load --------------------------------------------------------
def test_nan_weight_is_reported_at_load_with_its_name(tmp_path):
  out = tmp_path / "model"
  export.export("tiny-random", out)
  weights = load_file(str(out / "model.safetensors"))
  name = "encoder.layer.1.attention.self.query.weight"
  weights[name][3, 5] = np.nan
  save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(models.ModelLoadError, match=f"'{name}' holds NaN or infinity"):
    models.load_model(out)


def test_nan_in_trained_parameters_is_reported_with_its_path(trained, monkeypatch):
  real = models.restore_for_inference

  def poisoned(*args, **kwargs):
    model = real(*args, **kwargs)
    model.params["layer_1"]["output_dense"]["bias"] = np.full_like(
        model.params["layer_1"]["output_dense"]["bias"], np.inf)
    return model
  monkeypatch.setattr(models, "restore_for_inference", poisoned)
  with pytest.raises(models.ModelLoadError, match="parameter layer_1/output_dense/bias holds NaN"):
    models.load_model(trained)


def test_workdir_without_checkpoint_says_so(tmp_path, capsys):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(config_validation.as_dict(tiny_config())))
  with pytest.raises(models.ModelLoadError, match="training workdir with no checkpoint"):
    models.load_model(workdir)
  with pytest.raises(SystemExit) as exit_info:  # eval.run: one line, no traceback
    eval_run.main(["--model", str(workdir), "--benchmark", "xquad_r", "--languages", "en",
                   "--out", str(tmp_path / "r.json")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "training workdir with no checkpoint" in err[0]


# --- 9. minor ------------------------------------------------------------------------------------
def test_stale_shard_builds_of_dead_processes_are_removed(tmp_path):
  directory = tmp_path / "shards" / "abc"
  directory.parent.mkdir()
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  host = socket.gethostname()
  stale = directory.parent / f"abc.tmp-{host}-{dead.pid}-x1"
  live = directory.parent / f"abc.tmp-{host}-{os.getpid()}-x2"
  other_host = directory.parent / f"abc.tmp-elsewhere-{dead.pid}-x3"
  for d in (stale, live, other_host):
    d.mkdir()
  shards.remove_stale_builds(directory)
  assert not stale.exists() and live.exists() and other_host.exists()


def test_resume_is_announced(trained, tmp_path, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  train.train(tiny_config(), workdir)
  assert f"resuming {workdir} from step 6" in capsys.readouterr().err


def test_dropped_records_are_listed_by_id(tmp_path, capsys):
  from data_pipelines import readers
  log = readers.IssueLog()
  log.add("f.json", "q7", "empty question")
  log.add("f.json", "q9", "odd spacing", dropped=False)
  data = readers.RetrievalSet("squad", "en", [], [], log)
  issues = eval_run._issues({"en": data})["en"]
  assert issues["dropped"] == 1 and issues["dropped_ids"] == ["f.json:q7"]
  eval_run.print_dropped({"benchmark": "squad", "data_issues": {"en": issues}})
  assert "squad/en: 1 records dropped (1 empty question (dropped), 1 odd spacing (kept))" \
      in capsys.readouterr().out


# --- SIGKILL at random moments, checkpoint saves included -------------------------------------
@pytest.mark.slow
def test_sigkill_at_ten_random_moments_resumes_to_identical_losses_and_parameters(tmp_path):
  """Ten kill -9s at random moments of one run (one of them while a checkpoint is being
  written), each followed by a resume; the end equals an uninterrupted run's."""
  import random
  import signal
  import time
  def command(workdir, *extra):
    return [sys.executable, "-m", "mlir_train.train", "--config", str(REPO / "configs/tiny.py"),
            "--workdir", str(workdir), "--config.total_steps=40", "--config.warmup_steps=2",
            "--config.checkpoint_every_steps=1", "--config.keep_checkpoints=2", *extra]

  reference = subprocess.run(command(tmp_path / "reference"), cwd=REPO, capture_output=True,
                             text=True, timeout=900)
  assert reference.returncode == 0, reference.stderr[-2000:]
  workdir = tmp_path / "killed"
  rng = random.Random(11)
  kills = []
  for attempt in range(10):
    batches = workdir / train.BATCHES_FILE
    done_before = len(batches.read_text().splitlines()) if batches.exists() else 0
    proc = subprocess.Popen(command(workdir), cwd=REPO,
                            env={**os.environ, "MLIR_TRAIN_STEP_DELAY_S": "0.15"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (batches.exists() and len(batches.read_text().splitlines()) > done_before):
      assert proc.poll() is None, "run ended before training resumed"
      assert time.time() < deadline
      time.sleep(0.02)
    if attempt == 0:  # kill while Orbax writes a checkpoint (its temporary step folder)
      while not any("tmp" in p.name for p in (workdir / "checkpoints").iterdir()):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.001)
    else:
      time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is not None:
      break  # finished before this kill
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kills.append(len(batches.read_text().splitlines()))
  assert len(kills) >= 8, kills
  final = subprocess.run(command(workdir), cwd=REPO, capture_output=True, text=True, timeout=900)
  assert final.returncode == 0, final.stderr[-2000:]
  assert losses(workdir) == losses(tmp_path / "reference")
  assert_same_params(params_of(workdir), params_of(tmp_path / "reference"))
  steps = [json.loads(l)["step"] for l in (workdir / train.BATCHES_FILE).read_text().splitlines()]
  assert steps == list(range(1, 41))
