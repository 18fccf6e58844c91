"""eval.search's (chunk_size, query_block) on one GPU after the host-side changes of PROFILE.md
section 13 (row-sum finite check, next host chunk prepared by a helper thread, library default
stream_rows): 1M x 384 corpus, 10,000 queries, k = 100, best of 2 after a first call, torch
mm + topk in the same process. Prints and writes $OUT/search_shapes.json; its last line is
the fastest "chunk_size query_block".
Run from the repository root: python benchmarks/results/gpu_h200/search_shapes.py
"""
import json, os, sys, time
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.getcwd())
import numpy as np
from benchmarks.search_gpu import _embeddings, torch_methods
from eval import search

N, Q, K = int(os.environ.get("N", 1_000_000)), int(os.environ.get("Q", 10_000)), 100
corpus, queries = _embeddings(N, 384, 0), _embeddings(Q, 384, 1)
torch_fn = torch_methods(corpus, queries, K, os.environ.get("TORCH_DEVICE", "cuda"))["torch mm + topk"]
torch_fn(); t = time.perf_counter(); ti = torch_fn()[0]; tt = time.perf_counter() - t
rows = [dict(method="torch mm + topk", seconds=round(tt, 4), qps=round(Q / tt, 1))]
print(rows[-1], flush=True)
for chunk, qb in [(4096, 512), (16384, 1024), (65536, 512), (65536, 2048), (16384, 2048)]:
  t = time.perf_counter(); s, i = search.top_k(queries, corpus, K, chunk, qb)
  first = time.perf_counter() - t
  best = float("inf")
  for _ in range(2):
    t = time.perf_counter(); s, i = search.top_k(queries, corpus, K, chunk, qb)
    best = min(best, time.perf_counter() - t)
  same = float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(i, ti)]))
  rows.append(dict(chunk=chunk, query_block=qb, first=round(first, 2), seconds=round(best, 4),
                   qps=round(Q / best, 1), overlap_with_torch=same))
  print(rows[-1], flush=True)
json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "search_shapes.json"), "w"), indent=1)
fastest = min(rows[1:], key=lambda r: r["seconds"])
print(fastest["chunk"], fastest["query_block"])
