"""The study driver end to end on a tiny random model: structure, provenance, resume."""
import json
import re

import pytest

from mlir_train import replicate


def _numbers_in(obj, out):
  """Every way the report may print a number held in results.json."""
  if isinstance(obj, dict):
    for v in obj.values():
      _numbers_in(v, out)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      _numbers_in(v, out)
  elif isinstance(obj, bool) or obj is None:
    pass
  elif isinstance(obj, int):
    out.add(str(obj))
  elif isinstance(obj, float):
    for f in ("{:.1f}", "{:.3f}", "{:.4f}", "{:+.3f}", "{:+.4f}"):
      out.add(f.format(obj))
  return out


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, data_dir):
  out = tmp_path_factory.mktemp("study")
  replicate.main(["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
                  "--data_dir", str(data_dir), "--out", str(out)])
  return out


def test_results_hold_every_run_with_its_strategy(study_dir):
  results = json.loads((study_dir / "results.json").read_text())
  runs = {(r["sampling"], r["alpha"], r["seed"]) for r in results["runs"]}
  assert runs == {("none", None, None), ("mono", 1.0, 0), ("cross", 0.0, 0), ("hybrid", 0.5, 0)}
  for run in results["runs"]:
    assert set(run["metrics"]) == {"xquad_r", "tydiqa_goldp"}
    assert run["metrics"]["xquad_r"]["languages"] == ["de", "en"]
    if run["sampling"] != "none":
      assert run["train"]["final_step"] == 4
      assert sum(run["train"]["kind_counts"].values()) == 4
  # The mono run trained only on X-X batches, the cross run only on X-Y ones.
  kinds = {r["sampling"]: r["train"]["kind_counts"] for r in results["runs"] if r["sampling"] != "none"}
  assert set(kinds["mono"]) == {"mono"} and set(kinds["cross"]) == {"cross"}


def test_report_structure_and_every_number_comes_from_results(study_dir):
  results = json.loads((study_dir / "results.json").read_text())
  report = (study_dir / "report.md").read_text()
  for heading in ("paper-style table", "TyDi QA GoldP: robustness", "Change against the starting model",
                  "Hybrid against each baseline", "Plots"):
    assert heading in report
  for plot in results["plots"]:
    assert (study_dir / plot).stat().st_size > 1000
  known = _numbers_in(results, set())
  rows = [l for l in report.splitlines() if l.startswith("|") and not l.startswith("|---")]
  header_rows = {l for l in rows if "strategy" in l or "hybrid | baseline" in l}
  checked = 0
  for row in rows:
    if row in header_rows:
      continue
    for cell in row.strip("|").split("|")[1:]:  # the first column is a label
      for number in re.findall(r"[-+]?\d+\.\d+|(?<![\w.@])\d+(?![\w.])", cell):
        assert number in known, f"{number!r} in report row {row!r} is not in results.json"
        checked += 1
  assert checked > 100


def test_rerun_resumes_without_redoing_work(study_dir, data_dir):
  before = {p: p.stat().st_mtime_ns for p in study_dir.glob("runs/*/*.json")}
  replicate.main(["--preset", "smoke", "--fold", "A", "--model", "tiny-random", "--steps", "4",
                  "--data_dir", str(data_dir), "--out", str(study_dir)])
  after = {p: p.stat().st_mtime_ns for p in study_dir.glob("runs/*/*.json")}
  assert before == after and len(before) == 4 * 2 + 3
