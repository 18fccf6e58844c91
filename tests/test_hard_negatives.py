"""Hard negatives: the loss and gradients over the global batch on 8 CPU devices against
numpy / single-device references, the sampler's negative fields, and mining."""
import itertools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from data_pipelines import sampler
from data_pipelines import train_files
from eval import mine_negatives
from mlir_train import encode, loss as loss_lib, models, partitioning
from data_pipelines import tokenization
from mlir_train import synthetic, train

T = 0.05


def unit(rng, *shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def numpy_loss_and_grads(q, p, neg, groups, neg_groups, valid, temperature):
  """Loss and d/d(q, p, neg) of InfoNCE where query i scores every passage j (parallel
  ones j != i dropped) and every valid negative (m, k) of every pair m whose group is not
  query i's; the label is passage i. Written row by row from the formula (float64)."""
  b, n, _ = neg.shape
  dq, dp, dneg = np.zeros(q.shape), np.zeros(p.shape), np.zeros(neg.shape)
  total = 0.0
  for i in range(b):
    cand = [("p", j) for j in range(b) if j == i or groups[j] != groups[i]]
    cand += [("n", (m, k)) for m in range(b) for k in range(n)
             if valid[m, k] and neg_groups[m, k] != groups[i]]
    vec = lambda c: p[c[1]] if c[0] == "p" else neg[c[1]]
    s = np.array([q[i].astype(np.float64) @ vec(c) for c in cand]) / temperature
    soft = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    label = cand.index(("p", i))
    total += np.log(np.exp(s - s.max()).sum()) + s.max() - s[label]
    ds = (soft - np.eye(len(cand))[label]) / b / temperature
    for c, d in zip(cand, ds):
      dq[i] += d * vec(c)
      if c[0] == "p":
        dp[c[1]] += d * q[i]
      else:
        dneg[c[1]] += d * q[i]
  return total / b, dq, dp, dneg


@pytest.mark.fast
def test_loss_and_gradients_over_8_devices_match_numpy():
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  b, n, d = 16, 3, 8                      # 2 pairs per device, 48 hard negatives in all
  q, p, neg = unit(rng, b, d), unit(rng, b, d), unit(rng, b, n, d)
  groups = np.arange(b, dtype=np.int32)
  groups[[3, 12]] = 40                    # a parallel pair across devices 1 and 6
  neg_groups = np.full((b, n), -1, np.int32)
  neg_groups[0, 1] = groups[9]            # pair 0's negative is pair 9's positive: masked for 9
  neg_groups[5, 0] = 40                   # masked for queries 3 and 12
  neg_groups[7, 2] = groups[7]            # its own group: masked for query 7 only
  valid = np.ones((b, n), np.int32)
  valid[2, 1:] = 0                        # pair 2 has one negative, pair 15 none
  valid[15] = 0
  neg[valid == 0] = 0.0                   # whatever a missing slot holds must not matter
  mesh = partitioning.make_mesh()
  arrays = partitioning.global_batch(dict(q=q, p=p, neg=neg, groups=groups,
                                          neg_groups=neg_groups, valid=valid), mesh)
  assert len(arrays["neg"].sharding.device_set) == 8

  def loss(q_, p_, neg_, groups_, neg_groups_, valid_):
    return loss_lib.info_nce(q_, p_, groups_, temperature=T,
                             **loss_lib.pair_negatives(neg_, neg_groups_, valid_)).loss

  value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
      arrays["q"], arrays["p"], arrays["neg"], arrays["groups"], arrays["neg_groups"],
      arrays["valid"])
  expected = numpy_loss_and_grads(q, p, neg, groups, neg_groups, valid, T)
  np.testing.assert_allclose(float(value), expected[0], rtol=1e-5)
  for got, want in zip(grads, expected[1:]):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
  assert not np.asarray(grads[2])[valid == 0].any()   # missing negatives get no gradient
  # The layout: column i is passage i (query i's label), column b + m * n + k is pair m's
  # k-th negative, -inf where missing or of the query's group.
  logits = np.asarray(jax.jit(lambda *a: loss_lib.info_nce(
      a[0], a[1], a[3], temperature=T, **loss_lib.pair_negatives(a[2], a[4], a[5])).logits)(
      arrays["q"], arrays["p"], arrays["neg"], arrays["groups"], arrays["neg_groups"],
      arrays["valid"]))
  assert logits.shape == (b, b + b * n)
  np.testing.assert_allclose(np.diagonal(logits), (q * p).sum(1) / T, rtol=1e-5)
  for i, m, k in itertools.product(range(b), range(b), range(n)):
    if valid[m, k] and neg_groups[m, k] != groups[i]:
      np.testing.assert_allclose(logits[i, b + m * n + k], q[i] @ neg[m, k] / T, rtol=1e-4,
                                 atol=1e-5)
    else:
      assert logits[i, b + m * n + k] == -np.inf


@pytest.fixture(scope="module")
def model():
  return models.tiny_random_model(0)


def _reference_trainer_loss(model, batch, config):
  """The trainer's loss for one global batch, on one device, from the formula."""
  b, n = batch["negative_valid"].shape
  groups = np.asarray(batch["group_id"])
  ng, valid = np.asarray(batch["negative_group_id"]), np.asarray(batch["negative_valid"])
  kept = []   # per query: passage columns, then negative columns (m * n + k)
  for i in range(b):
    kept.append(([j for j in range(b) if j == i or groups[j] != groups[i]],
                 [m * n + k for m in range(b) for k in range(n)
                  if valid[m, k] and ng[m, k] != groups[i]]))

  def loss(params):
    f = lambda ids, mask: model.module.apply({"params": params}, ids, mask)
    q = f(batch["query_ids"], batch["query_mask"])
    p = f(batch["passage_ids"], batch["passage_mask"])
    lp = batch["negative_ids"].shape[-1]
    neg = f(batch["negative_ids"].reshape(b * n, lp), batch["negative_mask"].reshape(b * n, lp))
    rows = []
    for i, (pj, nj) in enumerate(kept):
      s = jnp.concatenate([p[np.array(pj)] @ q[i], neg[np.array(nj, int)] @ q[i]]) / T
      rows.append(jax.nn.logsumexp(s) - s[pj.index(i)])
    return jnp.mean(jnp.stack(rows))
  return jax.jit(jax.value_and_grad(loss))


def _trainer_config(chunk):
  config = tiny.get_config()
  config.batch_size, config.hard_negatives_per_pair, config.gradcache_chunk_size = 8, 2, chunk
  config.temperature = T
  return config


@pytest.fixture(scope="module")
def trainer_reference(model):
  """(host batch, reference loss, reference parameter gradients), computed once."""
  config = _trainer_config(0)
  b = synthetic.global_batch(config, model.config.vocab_size, step=3)
  assert (b.negative_valid == 0).any() and (b.negative_group_id >= 0).any()
  assert len(np.unique(b.group_id)) < len(b.group_id)  # a parallel pair: the group mask matters
  host = {f: getattr(b, f) for f in train.batch_fields(config)}
  assert set(train.NEGATIVE_FIELDS) <= set(host)
  loss, grads = _reference_trainer_loss(
      model, {k: jnp.asarray(v) for k, v in host.items()}, config)(model.params)
  return host, loss, grads


@pytest.mark.parametrize("chunk", [0, pytest.param(2, marks=pytest.mark.slow)])  # GradCache: test_gradcache
def test_trainer_parameter_gradients_with_hard_negatives(model, trainer_reference, chunk):
  config = _trainer_config(chunk)
  host, want_loss, want_grads = trainer_reference
  mesh = partitioning.make_mesh()
  arrays = partitioning.global_batch(host, mesh)

  def value_and_grad(params, batch):
    embed = lambda p, ids, mask: model.module.apply({"params": p}, ids, mask)
    return train.batch_value_and_grad(embed, batch, config)(params)

  (loss, _), grads = jax.jit(value_and_grad)(model.params, arrays)
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w),
                                                       rtol=2e-3, atol=2e-6), grads, want_grads)


@pytest.mark.fast
def test_synthetic_batches_share_parallel_groups():
  """A quarter of the rows come in pairs that share a group (the loss mask has work to do)."""
  config = tiny.get_config()
  for batch_size in (8, 16):
    config.batch_size = batch_size
    for step in range(4):
      groups = synthetic.global_batch(config, 100, step=step).group_id
      _, counts = np.unique(groups, return_counts=True)
      assert sorted(counts[counts > 1]) == [2] * (batch_size // 8), (batch_size, step, groups)


@pytest.mark.fast
def test_n0_batches_are_unchanged(model):
  config = tiny.get_config()
  config.batch_size = 8
  plain = synthetic.global_batch(config, model.config.vocab_size, step=1)
  assert plain.negative_ids is None and train.batch_fields(config) == train.BATCH_FIELDS
  config.hard_negatives_per_pair = 1
  with_neg = synthetic.global_batch(config, model.config.vocab_size, step=1)
  for f in train.BATCH_FIELDS:
    np.testing.assert_array_equal(getattr(plain, f), getattr(with_neg, f))
  assert with_neg.negative_ids.shape == (8, 1, config.max_passage_len)
  assert train.batch_fields(config) == train.BATCH_FIELDS + train.NEGATIVE_FIELDS


def test_config_checks(tmp_path):
  from mlir_train import config_validation
  config = tiny.get_config()
  config.hard_negatives_per_pair = -1
  with pytest.raises(config_validation.ConfigError, match="hard_negatives_per_pair"):
    config_validation.validate(config)
  config.hard_negatives_per_pair, config.data_source = 2, "pairs"
  with pytest.raises(train.TrainingError, match="needs data_source 'files'"):
    train.check_run(config, tmp_path / "w")


# ----------------------------------------------------------------------------
# Files: the sampler carries each pair's first n negatives
LANGS = ("de", "en")


def _text(kind, g, l):
  return f"{kind} {l} number {g} about the invented hamlet of Vrellok-{g}"


def _records(num_groups=12):
  records = []
  for g in range(num_groups):
    for l in LANGS:
      negs = [_text("wrong", g, l) + f" variant {k}" for k in range(g % 4)]  # 0..3 negatives
      if g == 1 and l == "en":
        negs = [_text("answer", 5, "en")] + negs  # group 5's positive: a false negative for 5
      records.append({"group": f"g{g:02d}", "query": _text("query", g, l), "query_language": l,
                      "positive": _text("answer", g, l), "passage_language": l,
                      "negatives": negs})
  return records


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return path


def test_sampler_carries_first_n_negatives(tmp_path, model, data_dir):
  records = _records()
  path = _write(tmp_path / "pairs.jsonl", records)
  n = 2
  config = ml_collections.ConfigDict(dict(
      data_source="files", train_files=str(path), strict_data=False, sampling="hybrid",
      alpha=0.5, seed=0, batch_size=8, max_query_len=16, max_passage_len=24, fold="A",
      positive="sentence", mono_language_sampling="uniform", language_temperature=1.0,
      data_dir=str(data_dir), shards_dir=str(tmp_path / "shards"), train_languages=(),
      hard_negatives_per_pair=n))
  data = sampler.build_training_data(config, model.tokenizer, progress=False)
  assert (data.directory / train_files.NEGATIVE_BANK_FILE.format(n=n)).is_file()
  negs = {(r["group"], r["passage_language"]): r["negatives"] for r in records}
  ids = {f"g{g:02d}": g for g in range(12)}
  seen_missing = seen_owner = 0
  for batch in itertools.islice(sampler.batch_stream(data, config, pipeline="numpy"), 6):
    assert batch.negative_ids.shape == (8, n, 24) and batch.negative_valid.shape == (8, n)
    for i in range(8):
      group = f"g{batch.group_id[i]:02d}"
      want = negs[(group, batch.passage_language[i])][:n]
      assert list(batch.negative_valid[i]) == [1] * len(want) + [0] * (n - len(want))
      if want:
        tok = tokenization.tokenize(model.tokenizer, want, "passage", 24, pad_to=24)
        np.testing.assert_array_equal(batch.negative_ids[i, :len(want)], tok["input_ids"])
        np.testing.assert_array_equal(batch.negative_mask[i, :len(want)], tok["attention_mask"])
      owners = [ids["g05"] if t == _text("answer", 5, "en") else -1 for t in want]
      assert list(batch.negative_group_id[i, :len(want)]) == owners
      seen_missing += n - len(want)
      seen_owner += sum(o >= 0 for o in owners)
      assert batch.negative_mask[i].sum(axis=-1).min() >= 1  # fillers stay finite in the encoder
  assert seen_missing > 0
  # The cached bank gives the same batches; held-out validation tables keep negatives.
  again = sampler.build_training_data(config, model.tokenizer, progress=False)
  np.testing.assert_array_equal(again.table.negative_index, data.table.negative_index)
  train_part, held = sampler.hold_out(data, 0.25)
  rows = np.flatnonzero(train_part.table.group_id == train_part.table.group_id[0])
  assert train_part.table.negative_index is not None and held.table.negative_index is not None
  full_rows = np.flatnonzero(data.table.group_id == train_part.table.group_id[0])
  np.testing.assert_array_equal(train_part.table.negative_index[rows],
                                data.table.negative_index[full_rows])


# ----------------------------------------------------------------------------
# Mining
def _mining_records():
  """Six groups in de / en; g0 and g1 are held by both languages, so their other-language
  positives are false negatives for them."""
  records = []
  for g in range(6):
    for l in (LANGS if g < 2 else LANGS[g % 2:g % 2 + 1]):
      records.append({"group": f"m{g}", "query": _text("query", g, l), "query_language": l,
                      "positive": _text("answer", g, l), "passage_language": l,
                      "negatives": ["an old negative that mining replaces"]})
  return records


def _brute_force(model, records, pool_texts, pool_langs, language, window, per_pair, groups_of):
  """Expected negatives: embed, sort scores in numpy (ties: lower pool index), filter."""
  q = encode.embed(model, [r["query"] for r in records], "query", progress=False)
  p = encode.embed(model, pool_texts, "passage", progress=False)
  out = []
  for r, qv in zip(records, q):
    members = [i for i in range(len(pool_texts))
               if language == "any" or pool_langs[i] == r["passage_language"]]
    scores = np.array([float(qv @ p[i]) for i in members])
    ranked = [members[j] for j in sorted(range(len(members)), key=lambda j: (-scores[j], j))]
    kept = [pool_texts[i] for rank, i in enumerate(ranked, 1)
            if window[0] <= rank <= window[1] and pool_texts[i] != r["positive"]
            and r["group"] not in groups_of[i]]
    out.append(kept[:per_pair])
  return out


def test_mining_window_group_exclusion_and_language(tmp_path, model, monkeypatch):
  records = _mining_records()
  path = _write(tmp_path / "train.jsonl", records)
  corpus = tmp_path / "corpus.jsonl"
  extra = [{"text": _text("answer", 0, "de"), "language": "de"},   # = g0's positive: merged
           {"text": "ein anderer Absatz ueber Vrellok", "language": "de"},
           {"text": "another passage about Vrellok", "language": "en"}]
  _write(corpus, extra)
  monkeypatch.setattr(models, "load_model", lambda name: model)
  pool_texts = list(dict.fromkeys([r["positive"] for r in records] + [e["text"] for e in extra]))
  pool_langs = [next(x["passage_language"] for x in records if x["positive"] == t)
                if any(x["positive"] == t for x in records)
                else next(e["language"] for e in extra if e["text"] == t) for t in pool_texts]
  groups_of = [{x["group"] for x in records if x["positive"] == t} for t in pool_texts]
  assert len(pool_texts) == 10

  for language, window, per_pair in (("any", "1:10", 10), ("same", "2:4", 2), ("any", "3:3", 1)):
    out = tmp_path / f"mined-{language}-{window.replace(':', '_')}.jsonl"
    code = mine_negatives.main(["--model", "tiny", "--train_files", str(path), "--out", str(out),
                                "--corpus", str(corpus), "--window", window,
                                "--per_pair", str(per_pair), "--language", language])
    assert code == 0
    mined = [json.loads(l) for l in out.read_text().splitlines()]
    assert [{k: v for k, v in m.items() if k != "negatives"} for m in mined] == \
        [{k: v for k, v in r.items() if k != "negatives"} for r in records]
    lo, hi = (int(x) for x in window.split(":"))
    want = _brute_force(model, records, pool_texts, pool_langs, language, (lo, hi), per_pair,
                        groups_of)
    assert [m["negatives"] for m in mined] == want
    for m in mined:
      own = {r["positive"] for r in records if r["group"] == m["group"]}
      assert not own & set(m["negatives"])          # no positive of the own group
      if language == "same":
        assert all(pool_langs[pool_texts.index(t)] == m["passage_language"]
                   for t in m["negatives"])
    if (language, window) == ("any", "1:10"):
      # Everything but the group's own positives, in every language.
      for m in mined:
        own = {r["positive"] for r in records if r["group"] == m["group"]}
        assert sorted(m["negatives"]) == sorted(set(pool_texts) - own)
    # The output feeds the files reader: the mined negatives are what it keeps.
    data = train_files.read_train_files(str(out))
    assert not data.issues.num_dropped
  # Deterministic: the same call writes the same bytes.
  again = tmp_path / "again.jsonl"
  assert mine_negatives.main(["--model", "tiny", "--train_files", str(path), "--out", str(again),
                              "--corpus", str(corpus), "--window", "3:3", "--per_pair", "1",
                              "--language", "any"]) == 0
  assert again.read_bytes() == (tmp_path / "mined-any-3_3.jsonl").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--window", "5:2"], "1 <= LO <= HI"),
    (["--window", "ten"], "expected LO:HI"),
    (["--per_pair", "0"], "--per_pair 0"),
])
@pytest.mark.fast
def test_mining_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
  path = _write(tmp_path / "train.jsonl", _mining_records())
  code = mine_negatives.main(["--model", "tiny-random", "--train_files", str(path),
                              "--out", str(tmp_path / "o.jsonl"), *args])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
