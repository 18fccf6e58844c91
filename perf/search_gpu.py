r"""Exact top-k search on one accelerator: eval.search (float32, and with the bfloat16
prefilter) against sentence-transformers' `util.semantic_search` and a plain PyTorch
matmul + `torch.topk`, on the same device in one process, repeats interleaved.

  python perf/search_gpu.py --out DIR                  # on a GPU (4 minutes on an H200)
  python perf/search_gpu.py --out DIR --dry-run        # tiny sizes, any CPU

Writes DIR/search_gpu.json and DIR/search_gpu.md. Per corpus size (default 200k, 1M and
5M x 384 seeded unit vectors; 10,000 queries; k = 100):

* queries/s, best of `--repeats`, each method's first call (compilation) excluded;
* every result checked: `--check` queries of our float32 and prefilter results against a
  float64 brute force on the host (the scores of our indices within 1e-5 of their float64
  values, and our k-th score not below the float64 k-th by more than that; exit status 1
  otherwise); the prefilter's indices against float32's; everyone's top-k overlap with ours;
* peak device memory: ours from the allocator's peak (`memory_stats`, the whole run so far,
  at the method's first call: the corpus streamed from host memory in `--stream_rows`
  chunks, or, for "corpus on device", a `jax.Array` put there once before its first call,
  like PyTorch's), PyTorch's `max_memory_allocated` per call (its corpus is resident on
  the device, as its API wants).

Rivals: `util.semantic_search(q, c, top_k=k, score_function=util.dot_score)` with its
default chunking (100 queries, 500k corpus rows; it returns Python dicts, as shipped), and
"torch mm + topk": 1,024-query blocks against 1M-row corpus chunks, candidates merged with
`torch.topk`, tensors copied to the host. Both in float32 without TF32 (PyTorch's default);
ours is float32 with `Precision.HIGHEST`.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for PyTorch

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf import _machine  # noqa: E402
from perf.search_throughput import _embeddings, float64_top_k  # noqa: E402

RESIDENT = "eval.search float32, corpus on device"
TOLERANCE = 1e-5  # float32 scores of unit vectors in 384 dims vs float64


def float64_check(queries, corpus, scores, indices, k: int, rows: int = 262144) -> dict:
  """Our results for these queries against a float64 brute force over the whole corpus."""
  kth = float64_top_k(queries, corpus, k, rows)[0][:, k - 1]  # the float64 k-th score [C]
  ours = np.einsum("qd,qkd->qk", queries.astype(np.float64),
                   corpus[indices].astype(np.float64))  # [C, k]
  score_error = float(np.abs(ours - scores).max())
  kth_shortfall = float((kth - scores[:, k - 1]).max())
  return {"queries": len(queries), "max_score_error": score_error,
          "max_kth_shortfall": kth_shortfall,
          "exact": bool(score_error <= TOLERANCE and kth_shortfall <= TOLERANCE)}


def torch_methods(corpus, queries, k: int, device: str):
  """The two PyTorch rivals, as functions returning int64 indices [Q, k] on the host."""
  import torch
  from sentence_transformers import util
  torch.backends.cuda.matmul.allow_tf32 = False
  c = torch.from_numpy(corpus).to(device)  # [N, D], resident
  q = torch.from_numpy(queries).to(device)  # [Q, D]

  def semantic_search():
    hits = util.semantic_search(q, c, top_k=k, score_function=util.dot_score)
    return np.array([[h["corpus_id"] for h in row] for row in hits], np.int64)

  def mm_topk(q_block: int = 1024, c_rows: int = 1_000_000):
    out = []
    for qs in range(0, len(q), q_block):
      cand_s, cand_i = [], []
      for cs in range(0, len(c), c_rows):
        s = q[qs:qs + q_block] @ c[cs:cs + c_rows].T  # [q_block, c_rows]
        top = torch.topk(s, min(k, s.shape[1]), dim=1)
        cand_s.append(top.values)
        cand_i.append(top.indices + cs)
      s, i = torch.cat(cand_s, 1), torch.cat(cand_i, 1)
      pick = torch.topk(s, k, dim=1).indices
      out.append(torch.gather(i, 1, pick).cpu())
    return torch.cat(out).numpy()

  def peak(fn):
    if device == "cuda":
      torch.cuda.synchronize()
      torch.cuda.reset_peak_memory_stats()
    result = fn()
    if device == "cuda":
      torch.cuda.synchronize()
      return result, torch.cuda.max_memory_allocated() / 2**20
    return result, None

  return {"sentence-transformers semantic_search": lambda: peak(semantic_search),
          "torch mm + topk": lambda: peak(mm_topk)}


def jax_peak_mib() -> float | None:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


def one_size(n: int, args) -> dict:
  """All methods on one corpus size, repeats interleaved."""
  from eval import search
  corpus = _embeddings(n, args.dim, seed=0)  # [N, D] on the host
  queries = _embeddings(args.queries, args.dim, seed=1)  # [Q, D]
  options = dict(stream_rows=args.stream_rows, chunk_size=args.chunk_size,
                 query_block=args.query_block)
  ours, stats = {}, {}
  for name, prefilter in (("eval.search float32", None), ("eval.search bfloat16 prefilter",
                                                          "bfloat16")):
    stats[name] = {}
    ours[name] = (lambda p=prefilter, s=stats[name]: (search.top_k(
        queries, corpus, args.k, prefilter=p, stats=s, **options), jax_peak_mib()))
  resident = []  # the corpus put on the device once, at this method's first call (after the
  # streamed methods' first calls, so their peak memory is their own)

  def on_device():
    if not resident:
      import jax
      resident.append(jax.device_put(corpus))
    return search.top_k(queries, resident[0], args.k, **options), jax_peak_mib()
  ours[RESIDENT] = on_device
  methods = {**ours, **torch_methods(corpus, queries, args.k, args.torch_device)}
  times = {name: [] for name in methods}
  results, memory = {}, {}
  for name, fn in methods.items():  # first calls: compilation, warm-up
    start = time.perf_counter()
    results[name], memory[name] = fn()
    times[name].append(time.perf_counter() - start)
    print(f"  {n:,}: {name} first call {times[name][0]:.2f} s", flush=True)
  for _ in range(args.repeats):
    for name, fn in methods.items():
      start = time.perf_counter()
      out, mem = fn()
      times[name].append(time.perf_counter() - start)
      if name not in ours:  # ours: the allocator's peak so far, kept from the first call
        memory[name] = mem if mem is None or memory[name] is None else max(memory[name], mem)
  (s32, i32), (s16, i16) = results["eval.search float32"], results[
      "eval.search bfloat16 prefilter"]
  c = args.check
  checks = {name: float64_check(queries[:c], corpus, s[:c], i[:c], args.k)
            for name, (s, i) in (("eval.search float32", (s32, i32)),
                                 ("eval.search bfloat16 prefilter", (s16, i16)),
                                 (RESIDENT, results[RESIDENT]))}
  rows = {}
  for name in methods:
    best = min(times[name][1:])
    indices = results[name][1] if name in ours else results[name]
    rows[name] = {"queries_per_second": round(args.queries / best, 1), "seconds": round(best, 4),
                  "first_call_seconds": round(times[name][0], 2),
                  "all_seconds": [round(t, 4) for t in times[name]],
                  "peak_device_mib": None if memory[name] is None else round(memory[name], 1),
                  "topk_overlap_with_float32": round(float(np.mean(
                      [len(np.intersect1d(a, b)) / args.k for a, b in zip(i32, indices)])), 6)}
  for name in stats:
    rows[name].update(stats[name])
  base = rows["eval.search float32"]["queries_per_second"]
  for name in methods:
    rows[name]["speed_vs_eval_search_float32"] = round(rows[name]["queries_per_second"] / base, 3)
  return {"corpus": n, "prefilter_same_indices": float(np.mean(i32 == i16)),
          "prefilter_max_score_difference": float(np.abs(s32 - s16).max()),
          "float64_check": checks, "methods": rows}


def report(result: dict) -> str:
  lines = ["# Exact top-k search on one accelerator", "",
           f"Command: `{result['command']}`", "", _machine.describe(result), "",
           f"Device: {result['device']}; jax {result['jax']}, torch {result['torch']}, "
           f"sentence-transformers {result['sentence_transformers']}. {result['queries']:,} "
           f"queries x {result['dim']}, k = {result['k']}; eval.search chunk_size "
           f"{result['chunk_size']}, query_block {result['query_block']}, stream_rows "
           f"{result['stream_rows']:,}; best of {result['repeats']} "
           "interleaved repeats after a first call (compilation) per method. Peak device "
           "memory: ours = the allocator's peak so far in the process at the method's first "
           "call (corpus streamed from host memory, or put on the device once for \"corpus "
           "on device\"), PyTorch = max_memory_allocated per call (corpus resident).", "",
           "| corpus | method | queries/s | vs eval.search float32 | first call s | "
           "peak device MiB | top-k overlap | prefilter fallbacks |", "|---|---|---|---|---|---|---|---|"]
  for size in result["sizes"]:
    for name, r in size["methods"].items():
      lines.append(f"| {size['corpus']:,} | {name} | {r['queries_per_second']:,} | "
                   f"{r['speed_vs_eval_search_float32']}x | {r['first_call_seconds']} | "
                   f"{r['peak_device_mib']} | {r['topk_overlap_with_float32']} | "
                   f"{r.get('fallback_queries', '')} |")
  lines.append("")
  for size in result["sizes"]:
    lines.append(f"- {size['corpus']:,}: the prefilter's indices equal float32's in "
                 f"{size['prefilter_same_indices']:.6f} of places (scores differ by at most "
                 f"{size['prefilter_max_score_difference']:.1e}: float32 summation order).")
    for name, c in size["float64_check"].items():
      lines.append(f"  {name}, {c['queries']} queries against float64: max score error "
                   f"{c['max_score_error']:.1e}, max k-th shortfall "
                   f"{c['max_kth_shortfall']:.1e} (exact: {c['exact']}).")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder for search_gpu.{json,md}")
  parser.add_argument("--corpus", type=int, nargs="+", default=[200_000, 1_000_000, 5_000_000])
  parser.add_argument("--queries", type=int, default=10_000)
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--check", type=int, default=32, help="queries checked against float64")
  parser.add_argument("--stream_rows", type=int, default=None,
                      help="eval.search host chunk, rows put on the device at a time "
                           "(default: the library's)")
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="eval.search corpus rows scored at once (default: the library's)")
  parser.add_argument("--query_block", type=int, default=None,
                      help="eval.search queries scored at once (default: the library's)")
  parser.add_argument("--max_load", type=float, default=_machine.MAX_LOAD,
                      help="refuse to run above this 1-minute load average")
  parser.add_argument("--dry-run", action="store_true",
                      help="tiny sizes on any device (checks the path; writes results)")
  args = parser.parse_args(argv)
  from eval import search
  args.stream_rows = args.stream_rows or search.DEFAULT_STREAM_ROWS
  args.chunk_size, args.query_block = search.resolve_shapes(args.chunk_size, args.query_block)
  if args.dry_run:
    args.corpus, args.queries, args.repeats, args.check = [3000, 5000], 300, 1, 16
    args.k, args.stream_rows = 10, 2048
  guard = _machine.LoadGuard(max_load=args.max_load)
  import jax
  import torch
  import sentence_transformers
  args.torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  result = {"command": "python perf/search_gpu.py " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "device": f"{jax.devices()[0].device_kind} (jax), {args.torch_device} (torch)",
            "jax": jax.__version__, "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "queries": args.queries, "dim": args.dim, "k": args.k, "repeats": args.repeats,
            "stream_rows": args.stream_rows, "chunk_size": args.chunk_size,
            "query_block": args.query_block, "sizes": []}
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  for n in args.corpus:
    print(f"corpus {n:,} ...", flush=True)
    result["sizes"].append(one_size(n, args))
    result.update(guard.finish())
    (out / "search_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "search_gpu.md").write_text(report(result))
  print(report(result))
  bad = [s["corpus"] for s in result["sizes"]
         if not all(c["exact"] for c in s["float64_check"].values())]
  if bad:
    print(f"error: results not exact for corpus sizes {bad}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
