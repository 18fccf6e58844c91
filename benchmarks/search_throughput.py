"""Exact top-k search throughput and peak memory: eval.search vs faiss IndexFlatIP vs numpy.

  python benchmarks/search_throughput.py --corpus 100000 --queries 10000 --dim 384 --k 100

Each method runs in its own subprocess on the same seeded unit-vector
embeddings, so peak memory (ru_maxrss, which also sees native allocations of
XLA and faiss that tracemalloc cannot) is measured per method: we report the
peak resident size and its growth over the process's size once the library is
imported and the embeddings are made. eval.search's first call compiles; its compile time is
reported separately and excluded from queries/s. One run per method; results
go to benchmarks/results/search_throughput.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("eval.search", "faiss.IndexFlatIP", "numpy")


def _embeddings(n: int, dim: int, seed: int) -> np.ndarray:
  x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _numpy_top_k(queries, corpus, k, block=256):
  indices = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), block):
    scores = queries[start:start + block] @ corpus.T  # [block, N]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    indices[start:start + block] = np.take_along_axis(part, order, 1)
  return indices


def child(args) -> dict:
  """Run one method; print a JSON line with its timings and memory."""
  # Import the library first so its runtime is part of the baseline, not the search.
  if args.method == "eval.search":
    sys.path.insert(0, str(REPO))
    import jax
    from eval import search
    jax.devices()
  elif args.method == "faiss.IndexFlatIP":
    import faiss
  corpus = _embeddings(args.corpus, args.dim, seed=0)  # [N, dim]
  queries = _embeddings(args.queries, args.dim, seed=1)  # [Q, dim]
  base = _rss_mib()
  compile_s = 0.0
  if args.method == "eval.search":
    start = time.perf_counter()
    search.top_k(queries[:args.query_block], corpus, args.k, chunk_size=args.chunk_size,
                 query_block=args.query_block)  # compiles, and scores one block
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    _, indices = search.top_k(queries, corpus, args.k, chunk_size=args.chunk_size,
                              query_block=args.query_block)
  elif args.method == "faiss.IndexFlatIP":
    start = time.perf_counter()
    index = faiss.IndexFlatIP(args.dim)
    index.add(corpus)
    _, indices = index.search(queries, args.k)
  else:
    start = time.perf_counter()
    indices = _numpy_top_k(queries, corpus, args.k)
  seconds = time.perf_counter() - start
  np.save(args.indices_out, indices)
  return {"method": args.method, "seconds": round(seconds, 3),
          "queries_per_second": round(args.queries / seconds, 1),
          "compile_seconds": round(compile_s, 3), "peak_rss_mib": round(_rss_mib(), 1),
          "peak_rss_growth_mib": round(_rss_mib() - base, 1)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--corpus", type=int, default=100_000, help="corpus vectors")
  parser.add_argument("--queries", type=int, default=10_000, help="query vectors")
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--chunk_size", type=int, default=4096, help="eval.search corpus chunk")
  parser.add_argument("--query_block", type=int, default=512, help="eval.search query block")
  parser.add_argument("--out_dir", default=str(REPO / "benchmarks" / "results"))
  parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # child mode
  parser.add_argument("--indices_out", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.method:
    print(json.dumps(child(args)))
    return

  command = (f"python benchmarks/search_throughput.py --corpus {args.corpus} --queries {args.queries} "
             f"--dim {args.dim} --k {args.k} --chunk_size {args.chunk_size} "
             f"--query_block {args.query_block}")
  runs, indices = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for method in METHODS:
      path = os.path.join(tmp, f"{method}.npy")
      cmd = [sys.executable, __file__, "--method", method, "--indices_out", path,
             "--corpus", str(args.corpus), "--queries", str(args.queries), "--dim", str(args.dim),
             "--k", str(args.k), "--chunk_size", str(args.chunk_size),
             "--query_block", str(args.query_block)]
      env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
      print(f"running {method} ...", flush=True)
      out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
      runs[method] = json.loads(out.strip().splitlines()[-1])
      indices[method] = np.load(path)
      print(f"  {runs[method]}", flush=True)
  ours = runs["eval.search"]
  for method in METHODS[1:]:
    # Same top-k sets (order may differ only inside float rounding ties).
    same = np.mean([len(np.intersect1d(a, b)) / args.k
                    for a, b in zip(indices["eval.search"], indices[method])])
    runs[method]["topk_overlap_with_eval_search"] = round(float(same), 6)
    runs[method]["eval_search_speed_ratio"] = round(
        ours["queries_per_second"] / runs[method]["queries_per_second"], 3)
    runs[method]["eval_search_memory_ratio"] = round(
        ours["peak_rss_growth_mib"] / max(runs[method]["peak_rss_growth_mib"], 1e-9), 3)
  result = {"command": command, "corpus": args.corpus, "queries": args.queries, "dim": args.dim,
            "k": args.k, "chunk_size": args.chunk_size, "query_block": args.query_block,
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "runs": runs}
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "search_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
  lines = ["# Exact top-k search throughput (one run per method, CPU)", "",
           f"Command: `{command}`", "",
           f"Corpus {args.corpus:,} x {args.dim}, {args.queries:,} queries, k={args.k}, "
           f"{os.cpu_count()} CPU cores (shared). eval.search compile time excluded from "
           "queries/s and shown separately. Memory = peak RSS growth over the process size after "
           "the library was loaded and the embeddings were made (and total peak RSS).", "",
           "| method | queries/s | seconds | compile s | peak RSS growth MiB | peak RSS MiB | "
           "eval.search speed ratio | eval.search memory ratio | top-k overlap |",
           "|---|---|---|---|---|---|---|---|---|"]
  for method, r in runs.items():
    lines.append(f"| {method} | {r['queries_per_second']} | {r['seconds']} | {r['compile_seconds']} | "
                 f"{r['peak_rss_growth_mib']} | {r['peak_rss_mib']} | "
                 f"{r.get('eval_search_speed_ratio', 1.0)} | {r.get('eval_search_memory_ratio', 1.0)} | "
                 f"{r.get('topk_overlap_with_eval_search', 1.0)} |")
  (out_dir / "search_throughput.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
