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


# OpenBLAS's fallback kernels (SSE2/SSE3 era): what it picks for a CPU it does not recognize.
GENERIC_OPENBLAS = {"prescott", "core2", "nehalem", "atom", "katmai", "coppermine", "northwood",
                    "banias", "dunnington", "penryn", "generic"}


def openblas_env(import_line: str) -> tuple[dict, list]:
  """(environment to add, [(library file, OpenBLAS architecture)]) for a rival's OpenBLAS.

  An OpenBLAS older than the CPU can fail to recognize it and run its generic kernels:
  faiss-cpu 1.15 bundles OpenBLAS 0.3.15, which on this machine's virtualized Xeon
  ("Intel(R) Xeon(R) Processor", AVX-512) picked Prescott's and searched at 183 queries/s
  instead of 1,000 (perf/PROFILE.md, "Exact search on a CPU"). Looked up in a fresh
  process after `import_line` (threadpoolctl); where a generic kernel was picked and
  the user has not set OPENBLAS_CORETYPE, this returns the one the CPU's flags allow
  (SkylakeX with AVX-512F, else Haswell with AVX2), to be set for every process of the
  benchmark.
  """
  import json
  import subprocess
  code = (f"{import_line}\nimport json, threadpoolctl\nprint(json.dumps([(i['filepath'], "
          "i.get('architecture')) for i in threadpoolctl.threadpool_info() "
          "if i['internal_api'] == 'openblas']))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  if out.returncode:
    return {}, []
  libs = [(os.path.basename(path), arch) for path, arch in json.loads(out.stdout.splitlines()[-1])]
  generic = any((arch or "").lower() in GENERIC_OPENBLAS for _, arch in libs)
  if not generic or "OPENBLAS_CORETYPE" in os.environ:
    return {}, libs
  flags = cpu_flags()
  core = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
  return ({"OPENBLAS_CORETYPE": core} if core else {}), libs


def cpu_flags() -> set:
  """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
  try:
    with open("/proc/cpuinfo") as f:
      return set(next((line for line in f if line.startswith("flags")), "").split())
  except OSError:
    return set()
