"""Golden test: the batch plan (source and rows of every global step) is pinned.

For every sampling mode and two seeds, the source index and the pair-table
rows of the first 2,000 global steps, on a small table built in code
(tests/synthetic_table.py), must match tests/golden/sampler_plan.json: a
sha256 of the int64 arrays plus a few raw rows for a readable diff. This
pins the sampler's behaviour for refactors; a deliberate change of the
sampling scheme regenerates the file with

    python -m tests.test_sampler_golden --regenerate

(and says so in the change).
"""
import hashlib
import itertools
import json
import pathlib
import sys

import numpy as np
import pytest

from data_pipelines import sampler
from tests import synthetic_table

pytestmark = [pytest.mark.fast]

GOLDEN = pathlib.Path(__file__).parent / "golden" / "sampler_plan.json"
STEPS = 2000
SEEDS = (0, 7)
RAW_STEPS = (0, 1, 2, 3, 511, 1023, 1024, 1999)


def plan_arrays(case: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(sources int64 [STEPS], rows int64 [STEPS, batch]) straight from BatchPlan."""
  overrides = dict(synthetic_table.CASES[case])
  table_kw = {"num_groups": overrides.pop("_num_groups")} if "_num_groups" in overrides else {}
  data = synthetic_table.make_training_data(**table_kw)
  plan = sampler.BatchPlan(data, synthetic_table.config(seed, **overrides))
  sources = plan.sources(np.arange(STEPS)).astype(np.int64)
  ordinal = np.zeros(plan.num_sources, np.int64)
  rows = np.empty((STEPS, plan.batch_size), np.int64)
  for step, source in enumerate(sources):
    rows[step] = plan.rows(int(source), int(ordinal[source]))
    ordinal[source] += 1
  return sources, rows


def _sha(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()


def table_digest() -> str:
  t = synthetic_table.make_table()
  h = hashlib.sha256()
  for a in (t.group_id, t.query_language, t.passage_language, t.query_ids, t.passage_ids):
    h.update(np.ascontiguousarray(a, "<i4").tobytes())
  return h.hexdigest()


def record(case: str, seed: int) -> dict:
  sources, rows = plan_arrays(case, seed)
  return {"sources_sha256": _sha(sources), "rows_sha256": _sha(rows),
          "source_counts": np.bincount(sources, minlength=6).tolist(),
          "raw": {str(s): {"source": int(sources[s]), "rows": rows[s].tolist()}
                  for s in RAW_STEPS}}


def regenerate() -> None:
  golden = {"steps": STEPS, "table_sha256": table_digest(),
            "cases": {f"{case}/seed{seed}": record(case, seed)
                      for case in synthetic_table.CASES for seed in SEEDS}}
  GOLDEN.parent.mkdir(exist_ok=True)
  GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def golden():
  return json.loads(GOLDEN.read_text())


def test_fixture_covers_every_mode(golden):
  assert golden["steps"] == STEPS
  modes = {synthetic_table.CASES[k.split("/")[0]]["sampling"] for k in golden["cases"]}
  assert modes == set(sampler.SAMPLING_MODES)
  assert len(golden["cases"]) == len(synthetic_table.CASES) * len(SEEDS)
  assert GOLDEN.stat().st_size < 300_000


def test_table_is_the_recorded_one(golden):
  # Otherwise a plan mismatch could come from the table, not the sampler.
  assert table_digest() == golden["table_sha256"]


@pytest.mark.parametrize("case", list(synthetic_table.CASES))
@pytest.mark.parametrize("seed", SEEDS)
def test_plan_matches_golden(golden, case, seed):
  want = golden["cases"][f"{case}/seed{seed}"]
  sources, rows = plan_arrays(case, seed)
  for s, raw in want["raw"].items():  # readable failures first
    assert int(sources[int(s)]) == raw["source"], f"step {s}"
    assert rows[int(s)].tolist() == raw["rows"], f"step {s}"
  assert np.bincount(sources, minlength=6).tolist() == want["source_counts"]
  assert _sha(sources) == want["sources_sha256"]
  assert _sha(rows) == want["rows_sha256"]


@pytest.mark.parametrize("case", ["hybrid", "mixed"])
def test_stream_follows_the_plan(case):
  """The batch stream (whatever pipeline is active) serves the planned rows."""
  seed = SEEDS[1]
  sources, rows = plan_arrays(case, seed)
  data = synthetic_table.make_training_data()
  config = synthetic_table.config(seed, **synthetic_table.CASES[case])
  plan = sampler.BatchPlan(data, config)
  t = data.table
  for batch in itertools.islice(sampler.batch_stream(data, config, start_step=1500), 40):
    s = batch.step
    assert plan.kind_of(int(sources[s]))[0] == batch.kind
    np.testing.assert_array_equal(batch.query_ids, t.query_ids[rows[s]])
    np.testing.assert_array_equal(batch.group_id, t.group_id[rows[s]])


if __name__ == "__main__":
  if "--regenerate" in sys.argv:
    regenerate()
    print(f"wrote {GOLDEN}")


def test_a_new_batch_kind_is_one_entry(monkeypatch):
  """ARCHITECTURE.md's example: X->en pivot batches added as one source and one mode."""
  import importlib
  from data_pipelines import sampler as s
  from study import methods

  def pivot_rows(plan, language, ordinal):
    units = plan.table.shard_rows[(plan.languages[language], "en")]
    return units[s._epoch_batch(len(units), plan.batch_size, (plan.seed, 7, language), ordinal)]

  monkeypatch.setitem(s.BATCH_SOURCES, "pivot", s.BatchSource(
      s.BatchKind.CROSS, per_language=True, rows=pivot_rows, label=lambda l: f"{l}-en"))
  monkeypatch.setitem(s.SAMPLING_MODES, "hybrid_pivot", s.SamplingMode(
      "Hybrid pivot (alpha={})", lambda c: {"mono": c.alpha, "pivot": 1 - c.alpha},
      uses_alpha=True))
  data = synthetic_table.make_training_data()
  plan = s.BatchPlan(data, synthetic_table.config(seed=0, sampling="hybrid_pivot", alpha=0.25))
  names = [plan.sources_table[i][0] for i in plan.sources(np.arange(4000))]
  assert abs(names.count("mono") / 4000 - 0.25) < 0.03 and set(names) == {"mono", "pivot"}
  en = data.languages.index("en")
  for step in range(60):
    source = int(plan.sources(np.array([step]))[0])
    name, language = plan.sources_table[source]
    rows = plan.rows(source, step)
    if name == "pivot":
      assert plan.kind_of(source)[1] == f"{data.languages[language]}-en"
      assert set(data.table.passage_language[rows]) == {en}
      assert set(data.table.query_language[rows]) == {language}
  # The existing modes draw exactly as before (their sources keep their numbers).
  with_pivot = s.BatchPlan(data, synthetic_table.config(seed=0, sampling="hybrid", alpha=0.25))
  monkeypatch.delitem(s.BATCH_SOURCES, "pivot")
  without = s.BatchPlan(data, synthetic_table.config(seed=0, sampling="hybrid", alpha=0.25))
  assert with_pivot.num_sources == without.num_sources + len(data.languages)
  np.testing.assert_array_equal(with_pivot.sources(np.arange(500)), without.sources(np.arange(500)))
  # The report takes the new mode's label and alpha axis from the same entry.
  reloaded = importlib.reload(methods)
  assert reloaded.strategy_label("hybrid_pivot@0.25") == "Hybrid pivot (alpha=0.25)"
  monkeypatch.delitem(s.SAMPLING_MODES, "hybrid_pivot")
  importlib.reload(methods)
