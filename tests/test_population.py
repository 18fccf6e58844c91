"""A population of runs in one program (`mlir_train.population`): each member trains as
the same run alone (`train.train`, the truth), writes a workdir that loads like any run's,
and configs that cannot share one program are refused with one line."""
import json

import jax
import numpy as np
import pytest

from configs import tiny
from mlir_train import models, population, train

# The attention key bias: softmax ignores a shift of the keys, so its true gradient is 0
# and Adam's normalised update of it is float round-off, different in any two programs
# (tests/test_train.py::test_gradcache_training_matches_full_batch_training).
NOISE_LEAF = "['attention_self']['key']['bias']"


def config_of(shards, **overrides):
  config = tiny.get_config()  # tiny random model, batches of 16, float32
  config.data_source, config.train_languages, config.shards_dir = "pairs", "en,de,es", str(shards)
  config.total_steps, config.warmup_steps, config.checkpoint_every_steps = 3, 1, 3
  for key, value in overrides.items():
    config[key] = value
  return config


MEMBERS = (dict(seed=0, sampling="mono"), dict(seed=1, sampling="cross"),
           dict(seed=2, sampling="hybrid", alpha=0.5))


@pytest.fixture(scope="module")
def shards(tmp_path_factory, data_dir):
  """Shards of the en, de, es pairs for the tiny model, built once for this module."""
  directory = tmp_path_factory.mktemp("shards")
  train.batch_stream(config_of(directory), models.tiny_random_model(0).tokenizer, 0, 0)
  return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards):
  """The population of MEMBERS and each member trained alone."""
  root = tmp_path_factory.mktemp("population")
  configs = [config_of(shards, **m) for m in MEMBERS]
  summaries, params = population.train_population(
      configs, [root / f"member_{k}" for k in range(len(configs))], return_params=True)
  alone = [train.train(c, root / f"alone_{k}") for k, c in enumerate(configs)]
  return root, summaries, params, alone


def lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def check_same_parameters(got_tree, want_tree, what, absolute=2.5e-7, of_move=1e-4,
                          noise=1e-4):
  """Equal to float32 round-off: every leaf within `absolute` (2.5e-7: about 2 ulp at 1.0)
  and within `of_move` of how far training moved it. vmap reorders the batch reductions
  of the forward pass and of the gradients, so a few elements differ in the last bit; an
  element whose gradient nearly cancels has a large relative round-off, which Adam's
  normalised update turns into a difference of up to learning-rate size. NOISE_LEAF is
  round-off alone in both: it only has to stay below `noise`."""
  start = models.tiny_random_model(0).params
  paths = jax.tree_util.tree_leaves_with_path(want_tree)
  assert len(paths) == len(jax.tree.leaves(got_tree))
  for (path, want), got, first in zip(paths, jax.tree.leaves(got_tree), jax.tree.leaves(start)):
    name = jax.tree_util.keystr(path)
    want, got, first = np.asarray(want), np.asarray(got), np.asarray(first)
    if NOISE_LEAF in name:
      assert np.abs(got).max() < noise and np.abs(want).max() < noise, name
      continue
    moved = np.abs(want - first).max()
    assert moved > 0 or np.array_equal(got, want), name
    assert np.abs(got - want).max() <= min(absolute, of_move * moved), (what, name)


def test_each_member_trains_as_it_would_alone(trained):
  root, summaries, params, alone = trained
  kinds = []
  for k, (summary, single) in enumerate(zip(summaries, alone)):
    member, solo = root / f"member_{k}", root / f"alone_{k}"
    # The same batches, step by step (the same sampler and seed).
    assert lines(member / train.BATCHES_FILE) == lines(solo / train.BATCHES_FILE)
    for key in ("final_step", "kind_counts", "language_counts", "language_pair_counts"):
      assert summary[key] == single[key], (k, key)
    kinds.append(summary["kind_counts"])
    # The same losses: within 1e-6 relative (vmap reorders reductions, see below).
    logged, logged_alone = lines(member / train.METRICS_FILE), lines(solo / train.METRICS_FILE)
    assert [m["step"] for m in logged] == [m["step"] for m in logged_alone] == [1, 2, 3]
    for m, s in zip(logged, logged_alone):
      for key in ("loss", "accuracy", "grad_norm", "learning_rate"):
        np.testing.assert_allclose(m[key], s[key], rtol=1e-6, err_msg=f"member {k} {key}")
    check_same_parameters(params[k], models.load_model(solo).params, f"member {k}")
  assert {"mono"} == set(kinds[0]) and {"cross"} == set(kinds[1])  # really different runs
  assert not np.array_equal(params[0]["layer_0"]["output_dense"]["kernel"],
                            params[1]["layer_0"]["output_dense"]["kernel"])


def test_member_workdirs_load_like_any_run(trained):
  root, summaries, params, _ = trained
  for k, summary in enumerate(summaries):
    workdir = root / f"member_{k}"
    assert summary["workdir"] == str(workdir) and summary["population"]["size"] == 3
    for name in ("config.json", "provenance.json", train.METRICS_FILE, train.BATCHES_FILE):
      assert (workdir / name).is_file(), name
    assert json.loads((workdir / "config.json").read_text())["seed"] == MEMBERS[k]["seed"]
    loaded = models.load_model(workdir).params
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), params[k])


def test_members_with_their_own_learning_rates_on_a_runs_mesh_axis(tmp_path):
  """Learning rates differ: each member follows its own schedule, as alone. With frozen
  embeddings (held once, shared, not checkpointed) and L2-SP (its anchor shared). The 8
  devices are laid out as 2 runs x 4 data: each member's state and batch live on its own
  4 devices (alone: all 8)."""
  assert jax.device_count() == 8
  configs = []
  for seed, rate in ((0, 1e-3), (1, 3e-3)):
    config = tiny.get_config()  # synthetic batches
    config.total_steps, config.warmup_steps, config.checkpoint_every_steps = 2, 1, 2
    config.seed, config.learning_rate = seed, rate
    config.freeze_embeddings, config.l2sp = True, 0.1
    configs.append(config)
  summaries, params = population.train_population(
      configs, [tmp_path / "m0", tmp_path / "m1"], return_params=True, runs_devices=2)
  assert summaries[0]["population"]["mesh"] == {"data": 4, "runs": 2, "fsdp": 1}
  for k, config in enumerate(configs):
    train.train(config, tmp_path / f"alone_{k}")
    logged, alone = (lines(tmp_path / d / train.METRICS_FILE) for d in (f"m{k}", f"alone_{k}"))
    for m, s in zip(logged, alone, strict=True):
      for key in ("loss", "learning_rate", "l2sp_penalty"):
        np.testing.assert_allclose(m[key], s[key], rtol=1e-6, err_msg=f"member {k} {key}")
    # At 3e-3 the round-off of near-cancelling word-embedding gradients grows to ~4e-6
    # (the member's traced learning rate itself is bit-identical to a constant one); the
    # batch reductions also run over 4 devices here and 8 alone.
    check_same_parameters(params[k], models.load_model(tmp_path / f"alone_{k}").params,
                          f"member {k}", absolute=1e-5, of_move=1e-2, noise=5e-4)
  rates = [m["learning_rate"] for m in lines(tmp_path / "m1" / train.METRICS_FILE)]
  assert rates == pytest.approx([0, 3e-3])  # its own peak after one warmup step


@pytest.mark.fast
@pytest.mark.parametrize("key, value", [("max_query_len", 16), ("batch_size", 32),
                                        ("model", "tiny-random-1")])
def test_a_config_that_cannot_share_the_program_is_refused(tmp_path, key, value):
  configs = [tiny.get_config(), tiny.get_config()]
  configs[1][key] = value
  with pytest.raises(population.PopulationError) as error:
    population.train_population(configs, [tmp_path / "a", tmp_path / "b"])
  message = str(error.value)
  assert f"config.{key}" in message and "\n" not in message, message
  assert not (tmp_path / "a").exists()  # refused before anything is written
  # Seeds, sampling and learning rates may differ.
  other = tiny.get_config()
  other.seed, other.sampling, other.learning_rate = 5, "cross", 3e-3
  population.check_compatible([tiny.get_config(), other])


@pytest.mark.fast
def test_the_runs_axis_takes_whole_members_and_whole_batches():
  """`runs_axis_size` by hand: the largest divisor of the members and the devices that
  leaves each member a batch its devices divide (more groups only ease the batch)."""
  from mlir_train import partitioning
  assert partitioning.runs_axis_size(4, 16, device_count=8) == 4    # 4 runs x 2 data
  assert partitioning.runs_axis_size(3, 16, device_count=8) == 1    # 3 does not divide 8
  assert partitioning.runs_axis_size(8, 16, device_count=8) == 8    # one device each
  assert partitioning.runs_axis_size(2, 6, device_count=8) == 1     # no layout fits (refused later)
  assert partitioning.runs_axis_size(20, 100, device_count=1) == 1  # one device: vmap only
  assert partitioning.runs_axis_size(6, 16, fsdp=2, device_count=8) == 2


@pytest.mark.fast
def test_a_runs_axis_that_splits_a_member_is_refused(tmp_path):
  config = tiny.get_config()
  with pytest.raises(population.PopulationError, match="runs_devices=2"):
    population.population_mesh(3, config, runs_devices=2)
