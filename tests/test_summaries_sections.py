"""A benchmark reaches the study through its registry entry alone: one new entry with a
declared section, groups and a target is summarised, tested, rendered and plotted."""
import numpy as np
import pytest

from eval import benchmarks, protocols
from study import plots, render, summaries
from tests.test_summaries import _runs

pytestmark = [pytest.mark.fast]

LANGS = ("aa", "bb", "cc", "dd")


def _with_toy(runs, rng):
  """Add a toy benchmark's result to every run: per-language x_to_en acc@1, with per-query values."""
  for run in runs:
    shift = {"none": 0.0, "mono": 0.01, "cross": 0.02, "hybrid": 0.04}[run["sampling"]]
    per_query = {l: (rng.random(30) < 0.5 + shift + 0.1 * i).astype(float).tolist()
                 for i, l in enumerate(LANGS)}
    per_language = {l: {"acc@1": float(np.mean(v))} for l, v in per_query.items()}
    run["metrics"]["toy"] = {"settings": {"x_to_en": {
        "per_language": per_language,
        "macro": {"acc@1": float(np.mean([v["acc@1"] for v in per_language.values()]))}}}}
    run["per_query"]["toy"] = {"by_metric": {"acc@1": {"x_to_en": per_query}},
                               "qids": {"x_to_en": {l: [str(i) for i in range(30)] for l in LANGS}}}
  return runs


def test_one_new_entry_is_summarised_tested_rendered_and_plotted(monkeypatch, tmp_path):
  entry = benchmarks.Benchmark(
      "toy", LANGS, lambda *a: None, protocols.bitext, main_setting="x_to_en", main_metric="acc@1",
      groups={"low": ("cc", "dd")}, parallel=True,
      study=(benchmarks.StudySection("toy_section", "languages", "Toy bitext by language",
                                     "x_to_en", "acc@1", plot="toy.png", plot_title="Toy"),),
      targets=(benchmarks.StudyTarget("x_to_en", "acc@1", "toy low acc@1", "planned", "low"),))
  monkeypatch.setitem(benchmarks.BENCHMARKS, "toy", entry)
  runs = _with_toy(_runs(), np.random.default_rng(1))
  summary = summaries.summarize(runs, lareqa_benchmark="xquad_r", train_languages=["aa"])
  section = summary["toy_section"]
  assert section["languages"] == list(LANGS) and section["seen"] == ["aa"]
  assert section["groups"] == {"low": ["cc", "dd"]}
  hybrid = [r for r in runs if r["sampling"] == "hybrid"]
  want = np.mean([np.mean([r["metrics"]["toy"]["settings"]["x_to_en"]["per_language"][l]["acc@1"]
                           for l in ("cc", "dd")]) for r in hybrid])
  assert section["per_strategy"]["hybrid@0.5"]["groups"]["low"]["mean"] == pytest.approx(want)
  # The declared target is a planned comparison over the group's languages only.
  rows = [r for r in summary["significance"] if r["target"] == "toy low acc@1"]
  assert {r["baseline"] for r in rows} == {"none", "mono", "cross"}
  assert {r["baseline"]: r["family"] for r in rows} == {"none": "vs start", "mono": "planned", "cross": "planned"}
  mono = [r for r in runs if r["sampling"] == "mono"]
  diff = want - np.mean([np.mean([r["metrics"]["toy"]["settings"]["x_to_en"]["per_language"][l]["acc@1"]
                                  for l in ("cc", "dd")]) for r in mono])
  row = next(r for r in rows if r["baseline"] == "mono")
  assert row["across_seeds"]["mean_diff"] == pytest.approx(diff)
  assert row["across_queries"]["mean_diff"] == pytest.approx(diff)
  assert row["across_queries"]["groups"] == 30  # line ids shared across languages
  # Rendered (heading, group column) and plotted from the results alone.
  results = {"preset": "t", "fold": "A", "model": "m", "train_languages": ["aa"], "seeds": [0, 1, 2],
             "train_overrides": {}, "eval_languages": {"xquad_r": ["de"], "toy": list(LANGS)},
             "summary": summary}
  text = render.render_markdown(results)
  assert "## Toy bitext by language" in text and "| low |" in text and "toy low acc@1" in text
  assert "toy.png" in plots.write_plots(results, tmp_path) and (tmp_path / "toy.png").is_file()
