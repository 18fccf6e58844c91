r"""Compile once: a first and a second run of the same training and evaluation, each in a
fresh process, sharing one fresh persistent compilation cache (mlir_train/compile_cache.py).

  python perf/compile_time.py            # e5-small; about 4 minutes on 2 CPU cores

Per run it records, from jax.monitoring events inside the process: the programs the run
needed and the seconds spent getting them (jax times `compile_or_get_cached`, so a program
loaded from the cache counts its load), how many were loaded from the cache and the seconds
those loads took, and the process's wall time. The runs:

  * training: `python -m mlir_train.train --config configs/default.py` for 2 steps
    (batch 8, query / passage 32 / 64 tokens), a new workdir each time;
  * evaluation: `python -m eval.run --model e5-small --benchmark xquad_r --languages de,en`.

Writes perf/out/compile_time.{json,md} (refused on a busy machine, as every
benchmark here: 1-minute load average above 0.3 before starting, unless --force).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import runpy
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "perf"))
RESULTS = REPO / "perf" / "out"  # raw output; current figures: perf/results/

import _machine  # noqa: E402

COMPILE = "/jax/core/compile/backend_compile_duration"
HIT = "/jax/compilation_cache/cache_hits"
RETRIEVAL = "/jax/compilation_cache/cache_retrieval_time_sec"


def child(module: str, args: list[str]) -> None:
  """Runs `python -m module args` in this process, counting compilations and cache loads."""
  import jax

  counts, seconds = collections.Counter(), collections.defaultdict(float)
  jax.monitoring.register_event_listener(lambda name, **_: counts.update([name]))

  def on_duration(name, secs, **_):
    counts.update([name])
    seconds[name] += secs

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  sys.argv = [module, *args]
  started = time.perf_counter()
  try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
  except SystemExit as e:
    if e.code not in (None, 0):
      raise
  result = {"wall_s": time.perf_counter() - started, "programs": counts[COMPILE],
            "compile_s": seconds[COMPILE], "cache_hits": counts[HIT],
            "cache_load_s": seconds[RETRIEVAL]}
  print("RESULT " + json.dumps(result), flush=True)


def run(module: str, args: list[str], env: dict) -> dict:
  argv = [sys.executable, __file__, "--child", module, *args]
  done = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
  if done.returncode or "RESULT " not in done.stdout:
    sys.exit(f"{module} failed (exit {done.returncode}); its stderr is above")
  return json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])


def main() -> None:
  if len(sys.argv) > 2 and sys.argv[1] == "--child":
    return child(sys.argv[2], sys.argv[3:])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="e5-small")
  parser.add_argument("--force", action="store_true", help="run on a busy machine (dry run)")
  args = parser.parse_args()
  guard = _machine.LoadGuard(force=args.force)
  work = pathlib.Path(tempfile.mkdtemp(prefix="compile_cache_"))
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(work / "jax_cache"),
             MLIR_COMPILATION_CACHE="1", PYTHONPATH=str(REPO))
  jobs = {
      "training (2 steps)": ("mlir_train.train", lambda i: [
          "--config", "configs/default.py", "--workdir", str(work / f"train{i}"),
          f"--config.model={args.model}", "--config.total_steps=2", "--config.warmup_steps=1",
          "--config.batch_size=8", "--config.max_query_len=32",
          "--config.max_passage_len=64", "--config.checkpoint_every_steps=2"]),
      "evaluation (XQuAD-R de, en)": ("eval.run", lambda i: [
          "--model", args.model, "--benchmark", "xquad_r", "--languages", "de,en",
          "--out", str(work / f"eval{i}.json"), "--no_progress"]),
  }
  rows = []
  for name, (module, argv) in jobs.items():
    for i in (1, 2):
      r = run(module, argv(i), env)
      rows.append({"job": name, "run": i, **r})
      print(name, i, r, flush=True)
  report = {"command": "python perf/compile_time.py " + " ".join(sys.argv[1:]),
            "model": args.model, "rows": rows, **guard.finish()}
  md = ["# Compile once: first and second run with the persistent compilation cache", "",
        f"Command: `{report['command']}`", "", _machine.describe(report), "",
        "Each run is a fresh process; both share one cache directory, empty before the "
        "first run. Compile-or-load s = seconds spent getting the run's programs (compiled, "
        "or read from the cache: those are also in the last two columns).", "",
        "| job | run | wall s | programs | compile-or-load s | loaded from cache | load s |",
        "|---|---|---|---|---|---|---|"]
  for r in rows:
    md.append(f"| {r['job']} | {r['run']} | {r['wall_s']:.1f} | {r['programs']} | "
              f"{r['compile_s']:.1f} | {r['cache_hits']} | {r['cache_load_s']:.1f} |")
  print("\n".join(md))
  if guard.may_write:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compile_time.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "compile_time.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
  main()
