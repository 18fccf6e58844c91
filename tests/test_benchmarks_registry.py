"""The benchmark registry: one definition per benchmark, used by eval.run and eval.report."""
import dataclasses

import numpy as np
import pytest

from data_pipelines import readers
from eval import benchmarks, protocols, report, run

pytestmark = [pytest.mark.fast]


def _synthetic(benchmark, language, n=4, dim=8, seed=0):
  """A small EncodedSet: n questions, n candidates, question i relevant to candidate i."""
  rng = np.random.default_rng(seed)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  data = readers.RetrievalSet(
      benchmark, language,
      [readers.Question(f"q{i}", f"question {i}", {i: 1}, translated=f"translated {i}") for i in range(n)],
      [readers.Candidate(f"c{i}", f"c{i}", f"doc{i}:0") for i in range(n)], readers.IssueLog())
  return protocols.EncodedSet(data, unit(rng.normal(size=(n, dim))), unit(rng.normal(size=(n, dim))),
                              unit(rng.normal(size=(n, dim))))


@pytest.mark.parametrize("name", sorted(benchmarks.BENCHMARKS))
def test_every_entry_runs_its_protocol_and_names_a_metric_it_reports(name):
  bench = benchmarks.BENCHMARKS[name]
  assert bench.name == name and bench.splits and bench.languages
  assert set(bench.unseen_languages) <= set(bench.languages)
  for split, languages in bench.default_languages_by_split.items():
    assert split in bench.splits and set(languages) <= set(bench.languages)
  languages = bench.default_languages()[:2]
  encoded = {l: _synthetic(name, l, seed=i) for i, l in enumerate(languages)}
  result = bench.protocol(encoded)
  macro = result["settings"][bench.main_setting]["macro"]
  assert bench.main_metric in macro and 0 <= macro[bench.main_metric] <= 1


def test_run_agrees_with_the_registry():
  assert run.BENCHMARK_LANGUAGES == {n: b.languages for n, b in benchmarks.BENCHMARKS.items()}
  assert not hasattr(protocols, "PROTOCOLS") and not hasattr(report, "MAIN_METRIC")  # one table


def _value(result, setting, metric, language=None):
  """A study's read of a protocol result: "gap" is the robustness gap."""
  block = result["robustness_gap"] if setting == "gap" else result["settings"][setting]
  return (block["per_language"][language] if language else block["macro"])[metric]


@pytest.mark.parametrize("name", sorted(n for n, b in benchmarks.BENCHMARKS.items() if b.study))
def test_study_declarations_name_what_the_protocol_reports(name):
  """Every setting, view and metric a study section or target declares is in the protocol's
  result (per language and macro), so a declared benchmark reaches the report."""
  bench = benchmarks.BENCHMARKS[name]
  languages = bench.default_languages()[:2]
  result = bench.protocol({l: _synthetic(name, l, seed=i) for i, l in enumerate(languages)})
  for section in bench.study:
    assert section.layout in ("lareqa", "languages", "views")
    settings = section.views if section.layout == "views" else (
        (section.setting,) if section.layout == "languages" else ("mono", "cross", "multi"))
    for setting in settings:
      assert 0 <= _value(result, setting, section.metric) <= 1 or setting == "gap"
      if setting != "cross":
        assert _value(result, setting, section.metric, languages[0]) is not None
  for target in bench.targets:
    assert _value(result, target.setting, target.metric) is not None
  assert set(bench.groups) .isdisjoint({"seen", "unseen"})
  for group in bench.groups.values():
    assert set(group) <= set(bench.languages)


def test_help_lists_every_benchmark(capsys):
  with pytest.raises(SystemExit):
    run.main(["--help"])
  text = capsys.readouterr().out
  for name in benchmarks.BENCHMARKS:
    assert name in text
  assert "--split" in text


def test_defaults_splits_and_errors(data_dir):
  afriqa = benchmarks.get("afriqa")
  assert afriqa.default_split == "test" and afriqa.splits == ("test", "dev")
  assert afriqa.default_languages() == readers.AFRIQA_GOLD_PASSAGE_LANGUAGES["test"]
  assert "wol" not in afriqa.default_languages() and len(afriqa.default_languages()) == 9
  assert afriqa.default_languages("dev") == readers.AFRIQA_GOLD_PASSAGE_LANGUAGES["dev"]
  assert set(afriqa.unseen_languages) == set(readers.AFRIQA_LANGUAGES)
  assert benchmarks.get("xquad_r").default_split == "dev"
  assert benchmarks.get("tydiqa_goldp_sentences").default_languages() == readers.TYDI_LANGUAGES
  # refused before any model is loaded (the model name does not exist)
  with pytest.raises(run.EvalError, match="unknown split 'train'"):
    run.evaluate("no-such-model", "afriqa", split="train", data_dir=data_dir)
  with pytest.raises(run.EvalError, match="unknown benchmark"):
    run.evaluate("no-such-model", "nope")
  with pytest.raises(run.EvalError, match="unknown benchmark"):
    run.load_sets("nope", ["en"])
  with pytest.raises(run.EvalError, match="--miracl_corpus"):
    run.load_sets("miracl", ["sw"], data_dir)


def test_load_sets_dispatches_to_the_same_readers(data_dir):
  sets = run.load_sets("tydiqa_goldp", ["bn"], data_dir)
  direct = readers.read_tydi_goldp(data_dir, "bn")
  assert sets["bn"].questions == direct.questions and sets["bn"].candidates == direct.candidates
  sets = run.load_sets("afriqa", ["fon"], data_dir, split="dev")
  assert sets["fon"].questions == readers.read_afriqa(data_dir, "fon", "dev").questions


def test_a_new_benchmark_is_one_entry_plus_its_reader(monkeypatch, tmp_path):
  """Register a benchmark at run time; eval.run evaluates it without other changes."""
  from mlir_train import models

  def reader(data_dir, language, split, strict, options):
    texts = [f"{language} fact number {i}" for i in range(5)]
    return readers.RetrievalSet(
        "toy", language, [readers.Question(str(i), t, {i: 1}) for i, t in enumerate(texts)],
        [readers.Candidate(t, t, str(i)) for i, t in enumerate(texts)], readers.IssueLog(strict))

  toy = benchmarks.Benchmark("toy", ("xx", "yy"), reader, protocols.tydi,
                             main_setting="mono", main_metric="mrr@10")
  monkeypatch.setitem(benchmarks.BENCHMARKS, "toy", toy)
  result = run.evaluate(models.tiny_random_model(seed=0), "toy", max_length=16, progress=False,
                        out=tmp_path / "toy.json")
  assert result["languages"] == ["xx", "yy"]
  assert result["counts"]["pool_candidates"] == 10
  # five candidates per language: every relevant one is in the top 10
  assert result["settings"]["mono"]["macro"]["r@10"] == 1.0
  assert 0 < result["settings"]["mono"]["macro"]["mrr@10"] <= 1
  assert (tmp_path / "toy.report.md").is_file()
  assert dataclasses.replace(toy, name="toy2").name == "toy2"  # frozen, copyable definitions
