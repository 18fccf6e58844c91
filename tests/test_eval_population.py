"""Population evaluation (issue 30, item 3): K models in one pass give each model the result
`eval.run.evaluate` gives it alone.

Vectors: the stacked forward (`jax.vmap` over the parameter axis) equals each model's own
within float32 round-off, not bit for bit: XLA compiles the stacked matmuls as batched
dots that for some [rows, length] shapes sum in another order (on this CPU up to 1.2e-7 on
unit vectors); one model after another (`stacked=False`) is bit-identical. Results: equal
exactly (==, every metric of every language, per-query values included; timings aside),
since the search and metrics are `eval.run`'s own code and no two scores in these
rankings lie within that round-off of each other.
"""
import dataclasses
import json

import jax
import numpy as np
import pytest

from eval import population, run
from mlir_train import encode, models


def _other_layers(model, name):
  """`model` with its transformer layers scaled (its embeddings kept: held once when
  stacked) and other prompts (its texts are tokenised apart)."""
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 1.05 + 0.01 if "layer" in jax.tree_util.keystr(path) else x, model.params)
  return dataclasses.replace(model, name=name, params=params,
                             prompts={"query": "q: ", "passage": ""})


@pytest.fixture(scope="module")
def three():
  base = models.tiny_random_model(0)
  return [base, models.tiny_random_model(1), _other_layers(base, "tiny-random-0-layers")]


def _without_timing(result):
  return {k: v for k, v in result.items() if k != "timing_seconds"}


def _report(path):
  return [line for line in path.read_text().splitlines() if not line.startswith("Time:")]


def test_embed_many_gives_each_model_its_own_vectors(three, monkeypatch):
  texts = ["the of and " * n + "what" for n in range(12)] + [""]
  stats = [{} for _ in three]
  calls = {"token_rows": [], "forward": []}   # model names; models per forward call
  real_rows, real_forward = encode.token_rows, encode._forward_many

  def token_rows(model, *args):
    calls["token_rows"].append(model.name)
    return real_rows(model, *args)

  def forward(module, treedef, shared, stacked, *batch):
    calls["forward"].append(next(x for x in stacked if x is not None).shape[0])
    return real_forward(module, treedef, shared, stacked, *batch)

  monkeypatch.setattr(encode, "token_rows", token_rows)
  monkeypatch.setattr(encode, "_forward_many", forward)
  shape = dict(max_length=24, buckets=(24,), batch_size=4, progress=False)  # one [4, 24] program
  many = encode.embed_many(three, texts, "query", stats=stats, **shape)
  monkeypatch.undo()
  # Tokenised once per prompt (models 0 and 1 share E5's), each of the 4 batches of 4 texts
  # run once for all the models of that prompt.
  assert calls == {"token_rows": ["tiny-random-0", "tiny-random-0-layers"],
                   "forward": [2, 2, 2, 2, 1, 1, 1, 1]}
  one_by_one = encode.embed_many(three, texts, "query", stacked=False, **shape)
  for stacked in (True, False):  # compiled ahead, as off the CPU: the same vectors
    ahead = encode.embed_many(three, texts, "query", stacked=stacked, ahead=True, **shape)
    for a, b in zip(ahead, many if stacked else one_by_one):
      np.testing.assert_array_equal(a, b)
  for model, vectors, in_turn, stat in zip(three, many, one_by_one, stats):
    alone = {}
    own = encode.embed(model, texts, "query", stats=alone, **shape)
    np.testing.assert_allclose(vectors, own, rtol=0, atol=5e-7)   # round-off
    np.testing.assert_array_equal(in_turn, own)                   # bit-identical
    assert stat == alone and stat["truncated"] > 0
  # The embeddings are equal in models 0 and 2: held once; every layer weight stacked.
  _, shared, stacked = encode.stack_params([three[0].params, three[2].params],
                                           jax.local_devices()[0])
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(three[0].params)]
  assert [n for n, s in zip(names, shared) if s is not None] == [
      n for n in names if "layer" not in n]
  assert all((s is None) != (k is None) for s, k in zip(shared, stacked))


@pytest.mark.parametrize("benchmark, options, write", [
    # lareqa's protocol (mono / cross / multi, language bias), per query too; files compared
    ("xquad_r", dict(languages=["en", "de", "ar"], max_documents=12, per_query=True), True),
    # afriqa's: native and translated queries (a third kind of text), robustness gap
    ("afriqa", dict(languages=["fon", "hau"], max_documents=30), False),
])
def test_population_equals_each_model_alone(three, benchmark, options, write, data_dir,
                                            tmp_path):
  options = dict(options, data_dir=data_dir, max_length=32, progress=False)
  results = population.evaluate_many(three, benchmark, out_dir=tmp_path / "many" if write else None,
                                     **options)
  for model, result in zip(three, results):
    name = population.result_name(model)
    alone = run.evaluate(model, benchmark, out=tmp_path / "alone" / f"{name}.json" if write
                         else None, **options)
    assert set(result) == set(alone) and set(result["timing_seconds"]) == set(
        alone["timing_seconds"])
    assert _without_timing(result) == _without_timing(alone)
    if write:
      written = tmp_path / "many" / f"{name}.json"
      assert json.loads(written.read_text()) == result
      assert _report(written.with_suffix(".report.md")) == _report(
          tmp_path / "alone" / f"{name}.report.md")
  # Different parameters, different numbers: the comparison sees each model's own.
  assert len({json.dumps(r["settings"], sort_keys=True) for r in results}) == 3


@pytest.mark.fast
def test_other_architecture_or_tokenizer_is_refused_before_reading_data(three, tmp_path):
  from data_pipelines import tokenization
  deeper = models.tiny_random_model(0, num_hidden_layers=3)
  with pytest.raises(run.EvalError, match="tiny-random-0: architecture differs from "
                                          "tiny-random-1 .num_hidden_layers 3 vs 2."):
    population.evaluate_many([three[1], deeper], "xquad_r", data_dir=tmp_path, progress=False)
  other_tokens = dataclasses.replace(three[1], name="other-tokens", tokenizer=(
      tokenization.unigram_tokenizer(models.tiny_vocabulary(200), model_max_length=128)))
  with pytest.raises(run.EvalError, match="other-tokens: tokenizer differs from tiny-random-0"):
    population.evaluate_many([three[0], other_tokens], "xquad_r", data_dir=tmp_path,
                             progress=False)


def test_cli_writes_one_result_per_model_and_a_table(data_dir, tmp_path, capsys):
  population.main(["--models", "tiny-random-1,tiny-random-2", "--benchmark", "tydiqa_goldp",
                   "--languages", "en,ru", "--max_documents", "12", "--max_length", "32",
                   "--data_dir", str(data_dir), "--no_progress", "--out_dir", str(tmp_path)])
  lines = capsys.readouterr().out.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("model "))
  for k, name in enumerate(("tiny-random-1", "tiny-random-2")):
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["model"] == name and saved["languages"] == ["en", "ru"]
    label, value = population.main_metric(saved)
    assert label == "mono mrr@10" and label in lines[header]
    assert value == saved["settings"]["mono"]["macro"]["mrr@10"]
    assert lines[header + 1 + k].split() == [name, f"{value:.3f}", str(tmp_path / f"{name}.json")]
    assert (tmp_path / f"{name}.report.md").is_file()


@pytest.mark.fast
def test_cli_refuses_a_model_named_twice(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    population.main(["--models", "tiny-random-1,a/tiny-random-1", "--benchmark", "ntrex128",
                     "--out_dir", str(tmp_path)])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: a/tiny-random-1 and tiny-random-1 would both write tiny-random-1.json; "
                 "give each model once, from directories with distinct names"]
