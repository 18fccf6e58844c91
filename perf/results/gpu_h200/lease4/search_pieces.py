"""Streamed exact search on one accelerator, host chunks sent whole against in pieces
(`eval.search.TRANSFER_PIECES`), next to the corpus on the device and torch mm + topk
(PROFILE.md section 19). One process, repeats interleaved; the results must be identical.

  python benchmarks/results/gpu_h200/lease4/search_pieces.py [--corpus 1000000 5000000]
"""
import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import search_gpu  # noqa: E402
from eval import search  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--corpus", type=int, nargs="+", default=[1_000_000, 5_000_000])
p.add_argument("--queries", type=int, default=10_000)
p.add_argument("--k", type=int, default=100)
p.add_argument("--repeats", type=int, default=3)
args = p.parse_args()
print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}, load before "
      f"{os.getloadavg()[0]:.2f}", flush=True)
for n in args.corpus:
  corpus = search_gpu._embeddings(n, 384, seed=0)  # [N, 384] unit rows, host
  queries = search_gpu._embeddings(args.queries, 384, seed=1)
  resident = jax.device_put(corpus)

  def streamed(pieces):
    def run():
      search.TRANSFER_PIECES = pieces
      return search.top_k(queries, corpus, args.k)
    return run

  methods = {"streamed, 1 put per host chunk": streamed(1),
             f"streamed, {search.TRANSFER_PIECES} puts per host chunk": streamed(
                 search.TRANSFER_PIECES),
             "corpus on the device": lambda: search.top_k(queries, resident, args.k)}
  torch_fn = search_gpu.torch_methods(corpus, queries, args.k, "cuda")["torch mm + topk"]
  methods["torch mm + topk (resident)"] = lambda: torch_fn()[0]
  out = {name: fn() for name, fn in methods.items()}  # warm-up, compilation
  base = out["streamed, 1 put per host chunk"]
  for name, r in out.items():
    indices = r[1] if isinstance(r, tuple) else r
    assert np.array_equal(indices, base[1]) or name.startswith("torch"), name
  times = {name: [] for name in methods}
  for _ in range(args.repeats):
    for name, fn in methods.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  torch_best = min(times["torch mm + topk (resident)"])
  for name, ts in times.items():
    print(f"{n:>9,} {name:36s} best {min(ts):6.3f} s  {args.queries / min(ts):8.0f} q/s  "
          f"torch/ours {torch_best / min(ts):5.2f}x  all {[round(t, 3) for t in ts]}", flush=True)
  del resident
print(f"load after {os.getloadavg()[0]:.2f}", flush=True)
