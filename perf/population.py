r"""Population training (`mlir_train.population`) against the same runs one by one, on a CPU.

  python perf/population.py [--config configs/tiny.py] [--steps 20] [--force]

Three setups of the same members (seed 0 mono, seed 1 cross, seed 2 hybrid alpha 0.5;
synthetic batches unless the config says otherwise): a population of K = 1, a
population of K = 3, and the 3 runs trained one after another with `train.train`.
Each setup runs once to compile (same shapes and steps, a throwaway workdir), then
once timed; the time covers the whole call (data, steps, metrics, checkpoints).
Prints aggregate training pairs/s per setup (members x steps x batch / seconds);
writes perf/out/population.json unless the machine is busy (see `_machine`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import runpy
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))
RESULTS = REPO / "perf" / "out"

import _machine  # noqa: E402

MEMBERS = (dict(seed=0, sampling="mono"), dict(seed=1, sampling="cross"),
           dict(seed=2, sampling="hybrid", alpha=0.5))


def member_configs(config_file: str, steps: int, count: int):
  configs = []
  for overrides in MEMBERS[:count]:
    config = runpy.run_path(config_file)["get_config"]()
    config.total_steps, config.warmup_steps = steps, min(int(config.warmup_steps), steps)
    config.checkpoint_every_steps = config.log_every_steps = steps
    for key, value in overrides.items():
      config[key] = value
    configs.append(config)
  return configs


def timed(run, root: pathlib.Path, name: str) -> float:
  """Seconds of `run(directory)` after a first call that compiles."""
  run(root / f"{name}_warm")
  start = time.perf_counter()
  run(root / name)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default=str(REPO / "configs" / "tiny.py"))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--force", action="store_true", help="run on a busy machine (dry run)")
  args = parser.parse_args()
  guard = _machine.LoadGuard(force=args.force)
  from mlir_train import population, train

  def population_of(count):
    configs = member_configs(args.config, args.steps, count)
    return lambda d: population.train_population(configs, [d / f"m{k}" for k in range(count)])

  def one_by_one(d):
    for k, config in enumerate(member_configs(args.config, args.steps, 3)):
      train.train(config, d / f"m{k}")

  batch = int(member_configs(args.config, args.steps, 1)[0].batch_size)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    for name, members, run in (("population K=1", 1, population_of(1)),
                               ("population K=3", 3, population_of(3)),
                               ("3 single runs", 3, one_by_one)):
      seconds = timed(run, root, name.replace(" ", "_").replace("=", ""))
      rows.append({"setup": name, "members": members, "seconds": round(seconds, 3),
                   "pairs_per_sec": round(members * args.steps * batch / seconds, 1)})
      print(f"{name:16s} {rows[-1]['pairs_per_sec']:10.1f} pairs/s  ({seconds:.2f} s)", flush=True)
  record = {"command": " ".join(sys.argv), "config": args.config, "steps": args.steps,
            "batch_size": batch, "rows": rows, **guard.finish()}
  if guard.may_write:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "population.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS / 'population.json'}")


if __name__ == "__main__":
  main()
