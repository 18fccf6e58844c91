"""The hybrid batch sampler: kinds, languages, parallel groups, determinism, resume."""
import collections
import itertools

import numpy as np
import pytest
import scipy.stats

from data_pipelines import folds, sampler
from mlir_train import models
from tests.training_data_helpers import LANGUAGES, make_config

pytestmark = [pytest.mark.data]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir, tokenizer):
  config = make_config(tmp_path_factory.mktemp("shards"), data_dir=str(data_dir))
  data = sampler.build_training_data(config, tokenizer, progress=False)
  sets = folds.load_train_sets(folds.get_fold("A"), data_dir, LANGUAGES)
  return config, data, sets


def _config(setup, **overrides):
  config = setup[0].copy_and_resolve_references()
  config.update(overrides)
  return config


def _take(data, config, n, **kw):
  return list(itertools.islice(sampler.batch_stream(data, config, **kw), n))


def _within(count, n, p, sigmas=4.0):
  """count is within `sigmas` binomial standard deviations of n * p."""
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_mono_share_converges_to_alpha(setup, alpha):
  _, data, _ = setup
  n = 2000
  kinds = sampler.kinds(data, _config(setup, alpha=alpha), range(n))
  mono = sum(k == sampler.BatchKind.MONO for k, _ in kinds)
  assert _within(mono, n, alpha), (mono, n * alpha)
  assert {k for k, _ in kinds} == {sampler.BatchKind.MONO, sampler.BatchKind.CROSS}
  counts = sampler.summarize(kinds)
  assert counts["mono"] == mono and counts["cross"] == n - mono
  assert sum(counts[f"mono:{l}"] for l in LANGUAGES) == mono


def test_single_kind_modes(setup):
  _, data, _ = setup
  for mode, kind in (("mono", sampler.BatchKind.MONO), ("cross", sampler.BatchKind.CROSS),
                     ("mixed", sampler.BatchKind.MIXED)):
    assert {k for k, _ in sampler.kinds(data, _config(setup, sampling=mode), range(500))} == {kind}
  assert {k for k, _ in sampler.kinds(data, _config(setup, alpha=1.0), range(500))} == {sampler.BatchKind.MONO}
  assert {k for k, _ in sampler.kinds(data, _config(setup, alpha=0.0), range(500))} == {sampler.BatchKind.CROSS}


@pytest.mark.parametrize("how,temperature", [("uniform", 1.0), ("size", 1.0), ("temperature", 2.0),
                                             ("temperature", 0.5)])
def test_mono_language_frequencies_match_the_formula(setup, how, temperature):
  _, data, sets = setup
  n_l = np.array([len(sets[l].questions) for l in LANGUAGES], float)  # from the readers
  want = {"uniform": np.ones(3), "size": n_l, "temperature": n_l ** (1 / temperature)}[how]
  want = want / want.sum()
  n = 20000
  kinds = sampler.kinds(data, _config(setup, sampling="mono", mono_language_sampling=how,
                                      language_temperature=temperature), range(n))
  observed = collections.Counter(l for _, l in kinds)
  counts = np.array([observed[l] for l in LANGUAGES])
  assert counts.sum() == n
  assert scipy.stats.chisquare(counts, want * n).pvalue > 1e-4, (counts / n, want)


def test_batches_respect_their_kind_and_groups(setup, data_dir, tokenizer):
  config, data, sets = setup
  batches = _take(data, config, 150)
  seen = collections.Counter(b.kind for b in batches)
  assert seen[sampler.BatchKind.MONO] > 30 and seen[sampler.BatchKind.CROSS] > 30
  for b in batches:
    assert b.query_ids.shape == b.query_mask.shape == (16, 32)
    assert b.passage_ids.shape == b.passage_mask.shape == (16, 64)
    assert b.query_ids.dtype == b.group_id.dtype == np.int32
    assert len(set(b.group_id.tolist())) == 16          # no parallel group twice
    if b.kind == sampler.BatchKind.MONO:
      assert set(b.query_language) == set(b.passage_language) == {b.languages}
    else:
      assert (b.query_language != b.passage_language).all()
  # The rows hold the right texts: re-tokenise question and positive of each pair.
  qids = sorted({q.qid for s in sets.values() for q in s.questions})
  by_qid = {l: {q.qid: q for q in s.questions} for l, s in sets.items()}
  for b in batches[:6]:
    for i in range(0, 16, 3):
      qid = qids[b.group_id[i]]
      a, p = str(b.query_language[i]), str(b.passage_language[i])
      q = by_qid[a][qid]
      positive = sets[p].candidates[min(by_qid[p][qid].relevant)].text
      want_q = tokenizer("query: " + q.text, truncation=True, max_length=32)["input_ids"]
      want_p = tokenizer("passage: " + positive, truncation=True, max_length=64)["input_ids"]
      assert list(b.query_ids[i, :b.query_mask[i].sum()]) == want_q
      assert list(b.passage_ids[i, :b.passage_mask[i].sum()]) == want_p


def test_cross_languages_are_uniform_among_holders(setup):
  _, data, sets = setup
  plan = sampler.BatchPlan(data, _config(setup, batch_size=64))
  holders = {}
  for l, s in sets.items():
    for q in s.questions:
      holders.setdefault(q.qid, set()).add(l)
  qids = sorted(holders)
  by_holders = collections.defaultdict(collections.Counter)
  for k in range(300):
    rows = plan.rows(plan.cross_source, k)
    t = data.table
    for g, a, p in zip(t.group_id[rows], t.query_language[rows], t.passage_language[rows]):
      h = holders[qids[g]]
      a, p = LANGUAGES[a], LANGUAGES[p]
      assert a != p and {a, p} <= h
      by_holders[tuple(sorted(h))][(a, p)] += 1
  for h, counter in by_holders.items():
    ordered = [(a, p) for a in h for p in h if a != p]
    counts = np.array([counter[x] for x in ordered])
    assert scipy.stats.chisquare(counts).pvalue > 1e-4, (h, counter)
  assert set(by_holders) == {("de", "en", "es"), ("de", "en"), ("en", "es")}
  # English-only questions never appear in CROSS batches; every shared one does.
  assert len(plan.cross_groups) == sum(len(h) >= 2 for h in holders.values())


def test_each_epoch_visits_units_once(setup):
  _, data, _ = setup
  plan = sampler.BatchPlan(data, _config(setup, batch_size=64))
  for source, units in ((0, data.table.shard_rows[("de", "de")]), (plan.cross_source, plan.cross_groups),
                        (plan.mixed_source, np.arange(len(data.table.group_id)))):
    per_epoch = len(units) // 64
    rows = np.concatenate([plan.rows(source, k) for k in range(per_epoch)])
    if source == plan.cross_source:
      rows = data.table.group_id[rows]
    assert len(set(rows.tolist())) == len(rows) == per_epoch * 64
    assert set(rows.tolist()) <= set(units.tolist())
    # The next epoch is a different permutation.
    assert not np.array_equal(plan.rows(source, 0), plan.rows(source, per_epoch))


def _assert_mixed_epochs(data, plan, epochs=2):
  """MIXED: no group twice in a batch, no pair twice in an epoch; the last epoch's rows."""
  n, b = plan.mixed_per_epoch, plan.batch_size
  t = data.table
  for epoch in range(epochs):
    rows = np.stack([plan.rows(plan.mixed_source, epoch * n + k) for k in range(n)])  # [n, b]
    assert rows.shape == (n, b)
    for r in rows:
      assert len(set(t.group_id[r].tolist())) == b
    assert len(set(rows.ravel().tolist())) == n * b
  return rows


def test_mixed_batches_hold_distinct_groups(setup):
  _, data, _ = setup
  t = data.table
  num_pairs = len(t.group_id)
  sizes = np.bincount(t.group_id)
  assert sizes.max() == 9  # groups held by de, en and es own 3 x 3 pairs
  for batch_size in (16, 64):
    plan = sampler.BatchPlan(data, _config(setup, sampling="mixed", batch_size=batch_size))
    # Enough data: no group is capped, every pair but the remainder is used once per epoch.
    assert plan.mixed_per_epoch == num_pairs // batch_size
    rows = _assert_mixed_epochs(data, plan)
    mono = t.query_language[rows] == t.passage_language[rows]
    assert 0.2 < mono.mean() < 0.6          # X-X and X-Y pairs, as in the whole table
    assert abs(mono.mean() - (t.query_language == t.passage_language).mean()) < 0.02
    # Deterministic in the seed; another seed gives other batches.
    again = sampler.BatchPlan(data, _config(setup, sampling="mixed", batch_size=batch_size))
    other = sampler.BatchPlan(data, _config(setup, sampling="mixed", batch_size=batch_size,
                                            seed=1))
    for k in (0, 5, plan.mixed_per_epoch + 3):
      np.testing.assert_array_equal(plan.rows(plan.mixed_source, k),
                                    again.rows(again.mixed_source, k))
      assert not np.array_equal(plan.rows(plan.mixed_source, k),
                                other.rows(other.mixed_source, k))
  # A plain permutation of the pairs, as before, would repeat groups in these batches.
  plain = [np.random.default_rng(k).permutation(num_pairs)[:64] for k in range(50)]
  assert any(len(set(t.group_id[r].tolist())) < 64 for r in plain)


def test_mixed_caps_big_groups_when_batches_are_few(setup):
  # 4576 pairs / 512 = 8 batches per epoch < 9 pairs of the biggest groups: a
  # group gives at most 8 pairs to an epoch, and batches still hold distinct groups.
  _, data, _ = setup
  plan = sampler.BatchPlan(data, _config(setup, sampling="mixed", batch_size=512))
  assert plan.mixed_per_epoch == 8
  _assert_mixed_epochs(data, plan)
  assert sampler.mixed_batches_per_epoch(np.array([0, 0, 0, 1, 1, 2]), 2) == 3
  assert sampler.mixed_batches_per_epoch(np.array([0, 0, 0, 0, 0, 1, 1, 2]), 2) == 3  # 0 capped
  assert sampler.mixed_batches_per_epoch(np.array([0, 0, 0, 0, 1]), 2) == 1
  assert sampler.mixed_batches_per_epoch(np.array([0, 0, 0, 0]), 2) == 0


def test_mixed_falls_back_when_groups_are_fewer_than_the_batch(setup, caplog):
  _, data, _ = setup
  num_groups = len(np.unique(data.table.group_id))
  batch_size = num_groups + 8
  with caplog.at_level("WARNING"):
    plan = sampler.BatchPlan(data, _config(setup, sampling="mixed", batch_size=batch_size))
  assert plan.mixed_per_epoch == 0 and "MIXED" in caplog.text
  rows = plan.rows(plan.mixed_source, 0)
  assert len(rows) == batch_size == len(set(rows.tolist()))  # pairs still distinct


def test_stream_batches_carry_global_language_pairs(setup):
  config, data, _ = setup
  for mode in ("hybrid", "mixed"):
    whole = _take(data, _config(setup, sampling=mode), 30)
    halves = _take(data, _config(setup, sampling=mode), 30, process_index=1, process_count=2)
    for b, h in zip(whole, halves):
      pairs = collections.Counter(f"{a}-{p}" for a, p in zip(b.query_language, b.passage_language))
      assert b.language_pairs == dict(pairs) and sum(pairs.values()) == 16
      assert h.language_pairs == b.language_pairs   # the global batch's, on every host
      for field in ("query_ids", "passage_ids", "group_id", "query_language"):
        np.testing.assert_array_equal(getattr(h, field), getattr(b, field)[8:])
      if b.kind == sampler.BatchKind.MONO:
        assert b.language_pairs == {f"{b.languages}-{b.languages}": 16}
      elif b.kind == sampler.BatchKind.CROSS:
        assert all(k.split("-")[0] != k.split("-")[1] for k in b.language_pairs)
      else:
        assert len(set(b.group_id.tolist())) == 16


def test_overlap_check_runs_when_shards_are_reused(setup, tokenizer, monkeypatch):
  config, data, _ = setup
  calls = []
  monkeypatch.setattr(folds, "check_fold", lambda *a: calls.append(a))
  again = sampler.build_training_data(config, tokenizer, progress=False)  # shards reused
  assert again.directory == data.directory and len(calls) == 1
  assert sorted(calls[0][1]) == sorted(LANGUAGES)

  def leak(fold, train_sets, data_dir):
    raise folds.FoldOverlapError("1 overlaps between training and evaluation data")
  monkeypatch.setattr(folds, "check_fold", leak)
  with pytest.raises(folds.FoldOverlapError):
    sampler.build_training_data(config, tokenizer, progress=False)


def test_same_seed_same_batches_other_seed_differs(setup):
  config, data, _ = setup
  one, two = _take(data, config, 40), _take(data, config, 40)
  other = _take(data, _config(setup, seed=1), 40)
  for a, b in zip(one, two):
    assert (a.step, a.kind, a.languages) == (b.step, b.kind, b.languages)
    np.testing.assert_array_equal(a.query_ids, b.query_ids)
    np.testing.assert_array_equal(a.passage_ids, b.passage_ids)
  assert [b.kind for b in one] != [b.kind for b in other]
  assert not all(np.array_equal(a.group_id, b.group_id) for a, b in zip(one, other))


@pytest.mark.parametrize("mode", ["hybrid", "mixed"])
def test_resume_yields_the_uninterrupted_stream(setup, mode):
  # batch 64 makes es (500 pairs) an epoch of 7 batches, so the resume point
  # lies past several epoch boundaries of every source.
  config = _config(setup, batch_size=64, sampling=mode)
  data = setup[1]
  full = _take(data, config, 120)
  for start in (1, 57, 100):
    resumed = _take(data, config, 120 - start, start_step=start)
    assert [b.step for b in resumed] == list(range(start, 120))
    for a, b in zip(full[start:], resumed):
      assert (a.kind, a.languages) == (b.kind, b.languages)
      for field in ("query_ids", "query_mask", "passage_ids", "passage_mask", "group_id",
                    "query_language", "passage_language"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_bad_config_is_refused(setup):
  _, data, _ = setup
  with pytest.raises(ValueError, match="sampling"):
    sampler.BatchPlan(data, _config(setup, sampling="both"))
  with pytest.raises(ValueError, match="alpha"):
    sampler.BatchPlan(data, _config(setup, alpha=1.5))
  with pytest.raises(ValueError, match="mono_language_sampling"):
    sampler.BatchPlan(data, _config(setup, mono_language_sampling="zipf"))
  with pytest.raises(ValueError, match="divisible"):
    next(sampler.batch_stream(data, _config(setup, batch_size=15), process_count=2))
