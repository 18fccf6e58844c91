"""Held-out validation groups, validation loss in metrics.jsonl, early stopping."""
import json
import shutil
import types

import jax
import numpy as np
import pytest

from configs import tiny
from data_pipelines import sampler
from mlir_train import models, train
from tests.synthetic_table import make_training_data as synthetic_training_data


def sampler_config(**overrides):
  values = dict(sampling="hybrid", alpha=0.5, seed=3, batch_size=8,
                mono_language_sampling="uniform", language_temperature=1.0)
  values.update(overrides)
  return types.SimpleNamespace(**values)


@pytest.fixture(scope="module")
def data():
  return synthetic_training_data()


def groups_of(table):
  return set(np.unique(table.group_id).tolist())


@pytest.mark.fast
def test_hold_out_splits_whole_groups_the_same_way_for_every_run(data):
  training, validation = sampler.hold_out(data, 0.2)
  all_groups = groups_of(data.table)
  held, kept = groups_of(validation.table), groups_of(training.table)
  assert held and kept and not held & kept and held | kept == all_groups
  assert len(held) == round(0.2 * len(all_groups))
  # Every pair of a held group went to validation, every other pair stayed.
  for table, groups in ((training.table, kept), (validation.table, held)):
    expected = np.isin(data.table.group_id, list(groups)).sum()
    assert len(table.group_id) == expected
    for (a, b), rows in table.shard_rows.items():  # lookups point at the right pairs
      assert np.all(table.query_language[rows] == table.languages.index(a))
      assert np.all(table.passage_language[rows] == table.languages.index(b))
    valid = table.row_of[table.row_of >= 0]
    assert sorted(valid.tolist()) == list(range(len(table.group_id)))
  # Texts travel with their rows.
  old_rows = np.flatnonzero(np.isin(data.table.group_id, list(held)))
  np.testing.assert_array_equal(validation.table.query_ids, data.table.query_ids[old_rows])
  assert groups_of(sampler.hold_out(data, 0.2)[1].table) == held  # no dependence on run seed


@pytest.mark.fast
def test_training_batches_never_hold_a_validation_group(data):
  training, validation = sampler.hold_out(data, 0.2)
  held = groups_of(validation.table)
  for mode in sampler.SAMPLING_MODES:
    stream = sampler.batch_stream(training, sampler_config(sampling=mode), pipeline="numpy")
    seen = set()
    for _ in range(200):
      seen |= set(next(stream).group_id.tolist())
    assert not seen & held, mode


@pytest.mark.fast
def test_validation_batches_are_fixed_and_cover_every_kind(data):
  _, validation = sampler.hold_out(data, 0.3)
  a = sampler.validation_batches(validation, 8, 2)
  b = sampler.validation_batches(validation, 8, 2)
  kinds = [(x.kind.value, x.languages) for x in a]
  languages = [l for l, n in zip(validation.languages, validation.mono_sizes()) if n]
  assert kinds == [("mono", l) for l in languages for _ in range(2)] + [("cross", "x")] * 2
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.query_ids, y.query_ids)
  two_hosts = [sampler.validation_batches(validation, 8, 2, process_index=i, process_count=2)
               for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([two_hosts[0][0].group_id,
                                                two_hosts[1][0].group_id]), a[0].group_id)


def info_nce_numpy(q, p, group, temperature):
  """Reference: rows' own passage is the positive, other rows of its group are masked out."""
  logits = q @ p.T / temperature
  same = group[:, None] == group[None, :]
  logits = np.where(same & ~np.eye(len(q), dtype=bool), -np.inf, logits)
  logits -= logits.max(axis=1, keepdims=True)
  log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return float(-np.mean(np.diag(log_softmax)))


def run_config(**overrides):
  config = tiny.get_config()
  config.total_steps, config.warmup_steps, config.checkpoint_every_steps = 6, 1, 2
  config.validation_fraction, config.validation_every_steps = 0.1, 2
  config.validation_batches, config.early_stopping = 2, True
  for k, v in overrides.items():
    config[k] = v
  return config


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("early") / "run"
  summary = train.train(run_config(), workdir)
  return workdir, summary


def metrics(workdir):
  return {r["step"]: r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def test_validation_loss_is_logged_and_equals_a_numpy_reference(early_stopped):
  from mlir_train import synthetic
  workdir, _ = early_stopped
  logged = metrics(workdir)
  assert [s for s in logged if "validation_loss" in logged[s]] == [2, 4, 6]
  config = run_config()
  model = models.tiny_random_model(0)
  params = models.restore_for_inference(workdir, step=4).params
  losses = []
  for batch in synthetic.validation_batches(config, model.config.vocab_size, 2):
    q = np.asarray(model.module.apply({"params": params}, batch.query_ids, batch.query_mask))
    p = np.asarray(model.module.apply({"params": params}, batch.passage_ids, batch.passage_mask))
    losses.append(info_nce_numpy(q, p, batch.group_id, config.temperature))
  assert logged[4]["validation_loss"] == pytest.approx(np.mean(losses), rel=1e-5)


def test_early_stopping_keeps_and_serves_the_best_checkpoint(early_stopped):
  workdir, summary = early_stopped
  logged = metrics(workdir)
  scored = {s: r["validation_loss"] for s, r in logged.items() if "validation_loss" in r}
  best_step = min(scored, key=scored.get)
  assert summary["best_validation"] == {"step": best_step, "loss": scored[best_step]}
  served = jax.device_get(models.restore_for_inference(workdir).params)
  at_best = jax.device_get(models.restore_for_inference(workdir, step=best_step).params)
  jax.tree.map(np.testing.assert_array_equal, served, at_best)


def test_resume_redoes_validation_and_best_identically(early_stopped, tmp_path):
  workdir, summary = early_stopped
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / "6")  # as if killed after step 6's validation
  resumed = train.train(run_config(), copy)
  assert resumed["resumed_from_step"] == 4
  strip = lambda m: {s: {k: v for k, v in r.items() if k != "examples_per_sec"} for s, r in m.items()}
  assert strip(metrics(copy)) == strip(metrics(workdir))
  assert resumed["best_validation"] == summary["best_validation"]
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(models.restore_for_inference(copy).params),
               jax.device_get(models.restore_for_inference(workdir).params))


@pytest.mark.fast
def test_early_stopping_without_validation_is_refused(tmp_path):
  with pytest.raises(train.TrainingError, match="early_stopping needs a validation set"):
    train.train(run_config(validation_fraction=0.0), tmp_path / "run")
