"""Where eval.search's time goes on one GPU, and selection variants (second H200 lease).

  python benchmarks/results/gpu_h200/search_parts.py OUT.json          # on the GPU
  python benchmarks/results/gpu_h200/search_parts.py OUT.json --tiny   # any CPU, tiny sizes

One process, every timing best of `repeats` after a first (compiling) call:
  * parts of one search step at [2,048 queries x 65,536 rows] x 384, k = 100: the float32
    matmul alone, the matmul + the step's selection and merge (`_update`) with GROUP 16 / 32 /
    64, the matmul + one `lax.top_k` over all scores, `lax.top_k` and `jnp.sort` over the
    group maxima alone; torch's matmul and `torch.topk` on the same shapes;
  * whole `search.top_k`, 1M x 384 corpus, 10,000 queries, k = 100: the host corpus
    streamed (the default), the corpus on the device (a `jax.Array`) with 65,536 / 262,144
    / 1,048,576-row chunks, the tiered selection forced on the GPU, no host sync per call;
    torch mm + topk (`benchmarks/search_gpu.py`'s);
  * `search.relevant_ranks`, same corpus and queries, 4 targets each: time, and 16 queries'
    ranks against a float64 count on the host.
"""
import functools
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
QB, C, D, K = (64, 1024, 32, 10) if TINY else (2048, 65536, 384, 100)
N, NQ = (20_000, 300) if TINY else (1_000_000, 10_000)
REPEATS = 2 if TINY else 5
result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
          "shapes": {"query_block": QB, "chunk": C, "dim": D, "k": K, "corpus": N, "queries": NQ},
          "load_before": os.getloadavg(), "parts_ms": {}, "top_k_s": {}, "ranks": {}}


def save():
  OUT.write_text(json.dumps(result, indent=1) + "\n")


def timed(fn, repeats=REPEATS):
  """(first call s, best s, all s) of fn(), each call waited for."""
  t = time.perf_counter(); jax.block_until_ready(fn()); first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter(); jax.block_until_ready(fn()); times.append(time.perf_counter() - t)
  return first, min(times), times


def part(name, fn):
  first, best, _ = timed(fn)
  result["parts_ms"][name] = round(best * 1e3, 3)
  print(f"part {name}: {best * 1e3:.3f} ms (first {first:.2f} s)", flush=True)
  save()


# ---- parts of one search step ----
rng = np.random.default_rng(0)
q = jnp.asarray(_embeddings(QB, D, seed=1))
block = jnp.asarray(_embeddings(C, D, seed=2))
kp = 1 << (K - 1).bit_length()
best0 = (jnp.full((QB, kp), -jnp.inf, jnp.float32), jnp.full((QB, kp), -1, jnp.int32))
start, n_valid = np.int32(0), np.int32(C)
mm = jax.jit(lambda q, b: jnp.einsum("qd,cd->qc", q, b, precision=jax.lax.Precision.HIGHEST))
part("matmul float32 HIGHEST", lambda: mm(q, block))
scores_fn = jax.jit(search._chunk_scores)
part("chunk scores (matmul + masks)", lambda: scores_fn(q, block, start, n_valid))
for group in (16, 32, 64):
  search.GROUP = group

  @jax.jit
  def step(best, q, block):
    s, index = search._chunk_scores(q, block, start, n_valid)
    return search._update(best, s, index, best[0][:, K - 1], False)
  part(f"matmul + select/merge GROUP {group} (first chunk: no threshold)", lambda: step(best0, q, block))
  warm = step(best0, q, block)  # a realistic later chunk: threshold from an earlier one
  part(f"matmul + select/merge GROUP {group} (later chunk)", lambda: step(warm, q, block))
search.GROUP = 16
top_all = jax.jit(lambda q, b: jax.lax.top_k(mm(q, b), kp))
part("matmul + lax.top_k(all scores, kp)", lambda: top_all(q, block))
maxima = jnp.asarray(rng.normal(size=(QB, C // 16)).astype(np.float32))
top_kp = jax.jit(lambda m: jax.lax.top_k(m, kp))
sort_rows = jax.jit(lambda m: jnp.sort(m, axis=1))
members = jnp.asarray(rng.normal(size=(QB, kp * 16)).astype(np.float32))
part("lax.top_k(group maxima [QB, C/16], kp)", lambda: top_kp(maxima))
part("jnp.sort(group maxima [QB, C/16])", lambda: sort_rows(maxima))
part("lax.top_k(members [QB, kp*16], kp)", lambda: top_kp(members))
try:
  import torch
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cuda.matmul.allow_tf32 = False
  tq, tb = torch.from_numpy(np.asarray(q)).to(dev), torch.from_numpy(np.asarray(block)).to(dev)
  sync = (lambda: torch.cuda.synchronize()) if dev == "cuda" else (lambda: None)

  def torch_part(name, fn):
    fn(); sync(); times = []
    for _ in range(REPEATS):
      t = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t)
    result["parts_ms"][name] = round(min(times) * 1e3, 3)
    print(f"part {name}: {min(times) * 1e3:.3f} ms", flush=True)
  ts = tq @ tb.T
  torch_part("torch matmul", lambda: tq @ tb.T)
  torch_part("torch matmul + topk(k)", lambda: torch.topk(tq @ tb.T, K, dim=1))
  torch_part("torch topk(k) alone", lambda: torch.topk(ts, K, dim=1))
  tm = torch.from_numpy(np.asarray(maxima)).to(dev)
  torch_part("torch topk(group maxima, kp)", lambda: torch.topk(tm, kp, dim=1))
  del ts
except ImportError:
  torch = None
save()

# ---- whole top_k, 1M ----
corpus = _embeddings(N, D, seed=0)
queries = _embeddings(NQ, D, seed=1)
on_device = jax.device_put(corpus)
want = None
orig_fn, orig_each = search._top_k_fn, search._each


def run(name, corpus_arg, **kw):
  global want
  first, best, times = timed(lambda: search.top_k(queries, corpus_arg, K, **kw), repeats=2)
  out = search.top_k(queries, corpus_arg, K, **kw)
  if want is None:
    want = out
  same = bool((out[1] == want[1]).all())
  result["top_k_s"][name] = {"best_s": round(best, 4), "queries_per_s": round(NQ / best, 1),
                             "first_s": round(first, 2), "same_as_first_method": same}
  print(f"top_k {name}: {best:.3f} s = {NQ / best:,.0f} q/s (first {first:.1f} s) same {same}",
        flush=True)
  save()


run("host corpus streamed (default)", corpus)
for rows in (65536, 262144, 1048576):
  run(f"corpus on device, stream_rows {rows}", on_device, stream_rows=rows)
search._top_k_fn = lambda mesh, k, chunk, tiered: orig_fn(mesh, k, chunk, True)
run("corpus on device, tiered selection forced", on_device)
search._top_k_fn = orig_fn
search._each = lambda pool, fn, *items: list(pool.map(lambda x: fn(*x), zip(*items)))
run("corpus on device, no host sync per call", on_device)
run("host corpus, no host sync per call", corpus)
search._each = orig_each
for group in (32, 64):
  search.GROUP = group
  search._top_k_fn.cache_clear()
  run(f"corpus on device, GROUP {group}", on_device)
search.GROUP = 16
search._top_k_fn.cache_clear()
if torch is not None:
  sys.path.insert(0, str(REPO / "benchmarks"))
  from benchmarks.search_gpu import torch_methods
  mm_topk = torch_methods(corpus, queries, K, dev)["torch mm + topk"]
  first, best, _ = timed(lambda: mm_topk()[0], repeats=2)
  result["top_k_s"]["torch mm + topk"] = {"best_s": round(best, 4),
                                         "queries_per_s": round(NQ / best, 1)}
  print(f"torch mm + topk: {best:.3f} s = {NQ / best:,.0f} q/s", flush=True)
  save()

# ---- relevant_ranks ----
targets = np.stack([want[1][:, 0], want[1][:, K - 1], rng.integers(0, N, NQ),
                    rng.integers(0, N, NQ)], axis=1)
for name, c in (("host corpus", corpus), ("corpus on device", on_device)):
  first, best, _ = timed(lambda: search.relevant_ranks(queries, c, targets), repeats=2)
  ranks = search.relevant_ranks(queries, c, targets)
  result["ranks"][name] = {"best_s": round(best, 4), "first_s": round(first, 2)}
  print(f"relevant_ranks {name}: {best:.3f} s (first {first:.1f} s)", flush=True)
s64 = queries[:16].astype(np.float64) @ corpus.T.astype(np.float64)  # [16, N]
t_s = np.take_along_axis(s64, targets[:16], 1)
above = (s64[:, None, :] > t_s[:, :, None]).sum(-1)
result["ranks"]["float64 check, 16 queries"] = {
    "max_rank_difference": int(np.abs(ranks[:16] - (above + 1)).max()),
    "top1_rank_is_1": bool((ranks[:, 0] == 1).all()),
    "kth_rank_is_k": bool((ranks[:, 1] == K).all())}
print(result["ranks"], flush=True)
result["load_after"] = os.getloadavg()
save()
