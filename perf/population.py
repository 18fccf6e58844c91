r"""Population training (`mlir_train.population`): throughput against K runs one by one.

  python perf/population.py [--config configs/tiny.py] [--steps 20] [--force]      (CPU)
  python perf/population.py --mode steps --model e5-small --sizes 1,4,10,20 \
      --batch_size 100 --max_query_len 64 --max_passage_len 128 --dtype bfloat16   (GPU)

--mode calls (default): three setups of the same members (seed 0 mono, seed 1 cross,
seed 2 hybrid alpha 0.5; synthetic batches unless the config says otherwise): a
population of K = 1, a population of K = 3, and the 3 runs trained one after another
with `train.train`. Each setup runs once to compile (same shapes and steps, a throwaway
workdir), then once timed; the time covers the whole call (data, steps, metrics,
checkpoints). Prints aggregate training pairs/s per setup (members x steps x batch /
seconds).

--mode steps: the population's update step alone (`population.make_population_step`, as
`train_population` jits it) for each K of --sizes on synthetic batches: compile time,
aggregate pairs/s over the timed steps, MFU (transformer-layer matmul FLOPs, training =
3x forward, against a matmul peak measured in this process in --dtype), XLA's memory
analysis of the compiled step (total and per member) and the device's peak bytes in use.

--mode eval: K models (--model's parameters, each layer weight scaled by 1 + 0.01 k so
every model differs) evaluated on --benchmark (default XQuAD-R, every language, whole)
in one pass (`eval.population.evaluate_many`) against one `eval.run.evaluate` after
another: models per minute each way, after a first pass that compiles.

Writes perf/out/population[_steps|_eval].json unless the machine is busy (see `_machine`).
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


def step_rows(args) -> list[dict]:
  """--mode steps: the jitted population step for each K, timed on synthetic batches."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from mlir_train import models, partitioning, population, synthetic, train
  from mlir_train import optimizer as optimizer_lib
  from gpu_bench import step_memory_bytes
  from train_throughput import training_flops
  config = runpy.run_path(args.config)["get_config"]()
  config.model, config.compute_dtype = args.model, args.dtype
  for key in ("batch_size", "max_query_len", "max_passage_len"):
    if getattr(args, key):
      config[key] = getattr(args, key)
  model = models.load_model(config.model)
  module = model.module.clone(dtype=train.COMPUTE_DTYPES[config.compute_dtype],
                              remat=bool(config.remat))
  tx = optimizer_lib.make_optimizer(config)
  init = lambda p: population.split_state(train.init_state(p, tx, config), config)
  fields = train.batch_fields(config)
  batch, q_len, p_len = (int(config[k]) for k in ("batch_size", "max_query_len", "max_passage_len"))
  peak = _machine.matmul_peak(dtype_name=args.dtype)
  print(f"matmul peak in {args.dtype}: {peak / 1e12:.2f} TFLOP/s", flush=True)
  rows = []
  for size in [int(k) for k in args.sizes.split(",")]:
    started = time.perf_counter()
    mesh = population.population_mesh(size, config)
    shared_shape, member_shape = jax.eval_shape(init, model.params)
    shared_sh = partitioning.tree_shardings(shared_shape, mesh)
    stacked_sh = population.stacked_sharding(member_shape, mesh)
    shared, one = jax.jit(init)(model.params)
    shared = jax.device_put(shared, shared_sh)
    stacked = jax.jit(lambda m: jax.tree.map(lambda x: jnp.broadcast_to(x, (size,) + x.shape), m),
                      out_shardings=stacked_sh)(one)
    del one
    batch_sh = NamedSharding(mesh, P(population.RUNS_AXIS, partitioning.BATCH_AXES))
    rates = jax.device_put(np.zeros(size, np.float32), partitioning.replicated(mesh))
    active = jax.device_put(np.ones(size, bool), partitioning.replicated(mesh))
    step = jax.jit(population.make_population_step(module, config, False),
                   in_shardings=(shared_sh, stacked_sh, batch_sh, partitioning.replicated(mesh),
                                 partitioning.replicated(mesh)),
                   out_shardings=(stacked_sh, partitioning.replicated(mesh)), donate_argnums=1)
    batches = [{f: jax.device_put(np.stack([np.asarray(getattr(
        synthetic.global_batch(config, model.config.vocab_size, s * size + k), f))
        for k in range(size)]), batch_sh) for f in fields} for s in range(args.steps + 2)]
    compiled = step.lower(shared, stacked, batches[0], rates, active).compile()
    compile_s = time.perf_counter() - started
    for b in batches[:2]:
      stacked, metrics = compiled(shared, stacked, b, rates, active)
    jax.block_until_ready(stacked)
    started = time.perf_counter()
    for b in batches[2:]:
      stacked, metrics = compiled(shared, stacked, b, rates, active)
    jax.block_until_ready((stacked, metrics))
    seconds = time.perf_counter() - started
    flops = size * training_flops(model.config, batch, q_len, p_len) * args.steps / seconds
    memory = step_memory_bytes(compiled)
    stats = jax.devices()[0].memory_stats() or {}
    rows.append({"members": size, "mesh": dict(mesh.shape), "compile_s": round(compile_s, 1),
                 "pairs_per_sec": round(size * batch * args.steps / seconds, 1),
                 "mfu": round(flops / peak / jax.device_count(), 4),
                 "step_memory_gib": memory and round(memory / 2 ** 30, 3),
                 "step_memory_per_member_gib": memory and round(memory / size / 2 ** 30, 3),
                 "device_peak_gib": stats.get("peak_bytes_in_use") and round(
                     stats["peak_bytes_in_use"] / 2 ** 30, 3),
                 "final_loss": [round(float(x), 4) for x in np.asarray(metrics["loss"])][:3]})
    print(json.dumps(rows[-1]), flush=True)
    del stacked, batches, compiled
  return rows


def eval_rows(args) -> list[dict]:
  """--mode eval: models per minute, K in one pass against K evaluations one by one."""
  import dataclasses
  import jax
  from eval import population as eval_population
  from eval import run as eval_run
  from mlir_train import models as models_lib
  base = models_lib.load_model(args.model)
  options = dict(languages=args.languages.split(",") if args.languages else None,
                 batch_size=args.eval_batch_size, max_length=args.eval_max_length,
                 progress=False)
  rows = []
  for size in [int(k) for k in args.sizes.split(",")]:
    population = [dataclasses.replace(base, name=f"model{k}", params=jax.tree.map(
        lambda x: x * (1 + 0.01 * k) if x.ndim == 2 else x, base.params)) for k in range(size)]
    row = {"models": size, "benchmark": args.benchmark}
    for name, run in (("one_pass", lambda: eval_population.evaluate_many(
                          population, args.benchmark, **options)),
                      ("one_by_one", lambda: [eval_run.evaluate(m, args.benchmark, **options)
                                              for m in population])):
      run()  # compiles every shape
      started = time.perf_counter()
      results = run()
      seconds = time.perf_counter() - started
      row[f"{name}_s"] = round(seconds, 2)
      row[f"{name}_models_per_min"] = round(60 * size / seconds, 2)
      row[f"{name}_main"] = [round(eval_population.main_metric(r)[1], 4) for r in results][:3]
    row["speedup"] = round(row["one_by_one_s"] / row["one_pass_s"], 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n\n".join(__doc__.split("\n\n")[1:]))
  parser.add_argument("--mode", choices=("calls", "steps", "eval"), default="calls")
  parser.add_argument("--benchmark", default="xquad_r", help="--mode eval: the benchmark")
  parser.add_argument("--languages", default=None, help="--mode eval: languages (all)")
  parser.add_argument("--eval_batch_size", type=int, default=64)
  parser.add_argument("--eval_max_length", type=int, default=512)
  parser.add_argument("--config", default=str(REPO / "configs" / "tiny.py"))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--model", default="tiny-random", help="--mode steps: the model")
  parser.add_argument("--sizes", default="1,3", help="--mode steps: population sizes K")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--max_query_len", type=int, default=None)
  parser.add_argument("--max_passage_len", type=int, default=None)
  parser.add_argument("--force", action="store_true", help="run on a busy machine (dry run)")
  args = parser.parse_args()
  guard = _machine.LoadGuard(force=args.force)
  if args.mode in ("steps", "eval"):
    rows = step_rows(args) if args.mode == "steps" else eval_rows(args)
    record = {"command": " ".join(sys.argv), "mode": args.mode, "rows": rows, **guard.finish()}
    if guard.may_write:
      RESULTS.mkdir(parents=True, exist_ok=True)
      (RESULTS / f"population_{args.mode}.json").write_text(json.dumps(record, indent=2) + "\n")
      print(f"wrote {RESULTS / f'population_{args.mode}.json'}")
    return
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
