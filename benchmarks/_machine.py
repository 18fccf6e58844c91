"""Shared by the benchmark scripts: the machine's load before and after a run.

Every benchmark records the 1-minute load average before it starts and after it
ends, and refuses to run (exit status 3) when the load before starting is above
`MAX_LOAD` (0.3): timings on a busy machine are not worth writing down. `--force`
runs anyway as a dry run: everything is printed, nothing is written.
"""
from __future__ import annotations

import os
import platform
import sys
import time

MAX_LOAD = 0.3


class LoadGuard:
  """Call at the very start of `main`; `finish()` at the end gives the fields to record."""

  def __init__(self, force: bool = False, max_load: float = MAX_LOAD):
    self.before = os.getloadavg()
    self.max_load = max_load
    self.busy = self.before[0] > max_load
    self.force = force
    self.started = time.time()
    if self.busy and not force:
      sys.exit(f"refusing to benchmark: 1-minute load average {self.before[0]:.2f} > {max_load} "
               "(other jobs are running; timings would be distorted). Wait for a quiet machine, "
               "or pass --force for a dry run that writes no results.")
    if self.busy:
      print(f"WARNING: dry run on a busy machine (1-minute load {self.before[0]:.2f} > "
            f"{max_load}); results are printed, not written.", file=sys.stderr, flush=True)

  @property
  def may_write(self) -> bool:
    return not self.busy

  def finish(self) -> dict:
    after = os.getloadavg()
    return {"load_average_before": [round(x, 2) for x in self.before],
            "load_average_after": [round(x, 2) for x in after],
            "max_load_before": self.max_load, "dry_run": self.busy,
            "wall_s": round(time.time() - self.started, 1),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                       f"{platform.platform()}"}


def describe(meta: dict) -> str:
  """One markdown line for the report header."""
  b, a = meta["load_average_before"], meta["load_average_after"]
  return (f"Machine: {meta['machine']}. Load average (1/5/15 min) before: {b[0]}/{b[1]}/{b[2]}, "
          f"after: {a[0]}/{a[1]}/{a[2]}.")


def layer_flops(config, batch: int, length: int) -> dict[str, float]:
  """Matmul FLOPs of one forward pass through the transformer layers, by class."""
  h, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
  return {"dense matmul": n * 2 * batch * length * (4 * h * h + 2 * h * f),
          "attention matmul": n * 2 * 2 * batch * length * length * h}


def matmul_peak(n: int = 2048, repeats: int = 10, dtype_name: str = "float32") -> float:
  """Matmul FLOP/s of jit'd [n, n] @ [n, n] in `dtype_name` in this process (best of 3 x
  repeats), through the encoder's `dot_general` (on a CPU, bfloat16 accumulates in float32:
  the fast path the model's own dots take; elsewhere a plain `a @ a`)."""
  import jax
  import jax.numpy as jnp
  from mlir_train import encoder
  x = jnp.ones((n, n), {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name])
  mm = jax.jit(lambda a: encoder.dot_general(a, a, (((1,), (0,)), ((), ()))))
  mm(x).block_until_ready()
  best = float("inf")
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(repeats):
      y = mm(x)
    y.block_until_ready()
    best = min(best, time.perf_counter() - t)
  return repeats * 2 * n ** 3 / best
