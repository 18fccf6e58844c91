"""eval.search's shapes on one GPU: (chunk_size, query_block, group prefilter or one top_k)
swept on a 1M x 384 corpus, 10,000 queries, k = 100 and 10, against torch mm + topk in the
same process. Run from the repository root: python benchmarks/results/gpu_h200/search_sweep.py
"""
import json, os, sys, time
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.getcwd())
import numpy as np
from benchmarks.search_gpu import _embeddings, torch_methods
from eval import search

N, Q = int(os.environ.get("N", 1_000_000)), int(os.environ.get("Q", 10_000))
corpus, queries = _embeddings(N, 384, 0), _embeddings(Q, 384, 1)
ref = None
rows = []
for k in (100, 10):
  torch_fn = torch_methods(corpus, queries, k, "cuda" if os.environ.get("CUDA", "1") == "1" else "cpu")["torch mm + topk"]
  torch_fn(); t = time.perf_counter(); ti = torch_fn()[0]; tt = time.perf_counter() - t
  rows.append(dict(k=k, method="torch mm + topk", seconds=round(tt, 4), qps=round(Q / tt, 1)))
  print(rows[-1], flush=True)
  for chunk, qb, group in [(4096, 512, 16), (16384, 512, 16), (65536, 512, 16), (16384, 2048, 16),
                           (65536, 2048, 16), (65536, 2048, 0), (262144, 1024, 0), (65536, 512, 0)]:
    search.GROUP = group or (1 << 40)  # 0: one top_k over the whole chunk
    search._top_k_fn.cache_clear()
    try:
      t = time.perf_counter(); s, i = search.top_k(queries, corpus, k, chunk, qb, stream_rows=1 << 20)
      first = time.perf_counter() - t
      best = float("inf")
      for _ in range(2):
        t = time.perf_counter(); s, i = search.top_k(queries, corpus, k, chunk, qb, stream_rows=1 << 20)
        best = min(best, time.perf_counter() - t)
      same = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(i, ti)]))
      rows.append(dict(k=k, chunk=chunk, query_block=qb, group=group, first=round(first, 2),
                       seconds=round(best, 4), qps=round(Q / best, 1), overlap_with_torch=same))
    except Exception as e:  # noqa: BLE001
      rows.append(dict(k=k, chunk=chunk, query_block=qb, group=group, error=repr(e)[:300]))
    print(rows[-1], flush=True)
search.GROUP = 16
t = time.perf_counter(); x = np.isfinite(corpus).all(); print("host isfinite over the corpus", round(time.perf_counter() - t, 3), "s", flush=True)
json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "search_sweep.json"), "w"), indent=1)
