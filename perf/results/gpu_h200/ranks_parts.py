"""`search.relevant_ranks` on one GPU: its two passes per step, and a count variant.

  python benchmarks/results/gpu_h200/ranks_parts.py OUT.json          # on the GPU
  python benchmarks/results/gpu_h200/ranks_parts.py OUT.json --tiny   # any CPU, tiny sizes

One process; every timing best of `repeats` after a first (compiling) call:
  * one step at [2,048 queries x 65,536 rows] x 384 with 8 targets per query: the `find`
    pass, the `count` pass as in the library (`_count_above`: one [Qb, T, C] comparison
    summed over C), and the count with the T targets compared one at a time ("unrolled");
  * whole `relevant_ranks`, 1M x 384, 10,000 queries, 4 targets each (their top 1, their
    100th, two random rows), both counts: time, the two counts' ranks equal, and 16
    queries' ranks against a float64 count on the host (differences there are float32
    rounding: scores within ~3e-7 of a target's).
"""
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.search_throughput import _embeddings  # noqa: E402
from eval import search  # noqa: E402

TINY = "--tiny" in sys.argv
OUT = pathlib.Path(sys.argv[1])
QB, C, D, T = (64, 1024, 32, 8) if TINY else (2048, 65536, 384, 8)
N, NQ, K = (20_000, 300, 10) if TINY else (1_000_000, 10_000, 100)
REPEATS = 2 if TINY else 4
result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
          "shapes": {"query_block": QB, "chunk": C, "dim": D, "targets": T, "corpus": N,
                     "queries": NQ}, "load_before": os.getloadavg(), "step_ms": {}, "ranks": {}}
library_count = search._count_above


def unrolled_count(s, index, target_scores, targets):
  """`_count_above` with the targets compared one at a time: T reductions of [Qb, C]."""
  cols = []
  for t in range(targets.shape[1]):
    t_s, t_i = target_scores[:, t, None], targets[:, t, None]  # [Qb, 1]
    cols.append(((s > t_s) | ((s == t_s) & (index[None, :] < t_i))).sum(axis=1, dtype=jnp.int32))
  return jnp.stack(cols, axis=1)  # [Qb, T]


COUNTS = {"library": library_count, "unrolled": unrolled_count}


def save():
  OUT.write_text(json.dumps(result, indent=1) + "\n")


def timed(fn, repeats=REPEATS):
  t = time.perf_counter(); jax.block_until_ready(fn()); first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter(); jax.block_until_ready(fn()); times.append(time.perf_counter() - t)
  return first, min(times)


# ---- one step ----
rng = np.random.default_rng(0)
q = jnp.asarray(_embeddings(QB, D, seed=1))
block = jnp.asarray(_embeddings(C, D, seed=2))
tg = jnp.asarray(rng.integers(0, C, (QB, T)).astype(np.int32))
mesh = search._mesh(jax.devices()[:1])
args = (q, block, np.int32(0), tg)
for name, fn in COUNTS.items():
  search._count_above = fn
  search._ranks_fns.cache_clear()
  find, count = search._ranks_fns(mesh, C)
  found = find(jnp.full((QB, T), -jnp.inf, jnp.float32), *args, np.int32(C))
  if name == "library":
    first, best = timed(lambda: find(jnp.full((QB, T), -jnp.inf, jnp.float32), *args, np.int32(C)))
    result["step_ms"]["find"] = round(best * 1e3, 3)
    print(f"step find: {best * 1e3:.3f} ms (first {first:.1f} s)", flush=True)
  zeros = jnp.zeros((QB, T), jnp.int32)
  first, best = timed(lambda: count(zeros, *args, found, np.int32(C)))
  result["step_ms"][f"count ({name})"] = round(best * 1e3, 3)
  print(f"step count ({name}): {best * 1e3:.3f} ms (first {first:.1f} s)", flush=True)
  save()

# ---- whole relevant_ranks ----
corpus = _embeddings(N, D, seed=0)
queries = _embeddings(NQ, D, seed=1)
search._count_above = library_count
_, top = search.top_k(queries, jax.device_put(corpus), K)
targets = np.stack([top[:, 0], top[:, K - 1], rng.integers(0, N, NQ), rng.integers(0, N, NQ)], 1)
ranks = {}
for name, fn in COUNTS.items():
  search._count_above = fn
  search._ranks_fns.cache_clear()
  for where, c in (("host corpus", corpus), ("corpus on device", jax.device_put(corpus))):
    first, best = timed(lambda: search.relevant_ranks(queries, c, targets), repeats=2)
    ranks[name] = search.relevant_ranks(queries, c, targets)
    result["ranks"][f"{where}, count {name}"] = {"best_s": round(best, 4), "first_s": round(first, 2)}
    print(f"relevant_ranks {where}, count {name}: {best:.3f} s (first {first:.1f} s)", flush=True)
    save()
search._count_above = library_count
s64 = queries[:16].astype(np.float64) @ corpus.T.astype(np.float64)  # [16, N]
t_s = np.take_along_axis(s64, targets[:16], 1)
want = (s64[:, None, :] > t_s[:, :, None]).sum(-1) + 1
near = (np.abs(s64[:, None, :] - t_s[:, :, None]) <= 3e-7).sum(-1) - 1  # other rows that close
result["check"] = {
    "counts_agree": bool((ranks["library"] == ranks["unrolled"]).all()),
    "top1_rank_is_1": bool((ranks["library"][:, 0] == 1).all()),
    "kth_rank_is_k": bool((ranks["library"][:, 1] == K).all()),
    "max_abs_difference_from_float64_rank": int(np.abs(ranks["library"][:16] - want).max()),
    "differences_within_near_ties": bool((np.abs(ranks["library"][:16] - want) <= near).all())}
print(result["check"], flush=True)
result["load_after"] = os.getloadavg()
save()
