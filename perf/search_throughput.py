"""Exact top-k search throughput and peak memory: eval.search vs faiss IndexFlatIP vs numpy.

  python perf/search_throughput.py --corpus 200000 --queries 10000 --dim 384 --k 100
  python perf/search_throughput.py --stream_corpus 5000000 --stream_queries 256

Each method runs in its own subprocess on the same seeded unit-vector
embeddings, so peak memory (ru_maxrss, which also sees native allocations of
XLA and faiss that tracemalloc cannot) is measured per method: we report the
peak resident size and its growth over the process's size once the library is
imported and the embeddings are made. eval.search's first call compiles; its
compile time is reported separately and excluded from queries/s. Each method's
time is the best of `--repeats`; the speed ratio eval.search / faiss is also
measured A/B in one process with interleaved repeats (`ab` row), which is what
to quote on a shared machine.

`--stream_corpus N` writes an N x dim float32 corpus to an `np.memmap` under
`--tmp_dir` chunk by chunk (seeded RNG, unit rows; 5M x 384 is 7.7 GB), searches
it with eval.search streaming it from disk in `--stream_rows` host chunks,
records peak RSS (which stays near one chunk, not the corpus size), checks a few
queries against a chunked numpy brute force, and deletes the file.

The machine must be quiet: the script records the load average before and
after and refuses to run when the 1-minute load average is above 0.3
(`--force`: dry run, printed only). Results go to
perf/out/search_throughput.{json,md} (or search_stream.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
METHODS = ("eval.search", "faiss.IndexFlatIP", "numpy")

from perf import _machine  # noqa: E402


def _embeddings(n: int, dim: int, seed: int) -> np.ndarray:
  """Seeded unit rows, normalised in place (no temporary as large as the result, so the
  peak RSS once they exist is their size and later growth is the search's own)."""
  x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
  for start in range(0, n, 65536):
    part = x[start:start + 65536]
    part /= np.linalg.norm(part, axis=1, keepdims=True)
  return x


def _status_mib(field: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024  # kB
  raise KeyError(field)


def _rss_mib() -> float:
  """Peak resident size of this process (VmHWM: unlike ru_maxrss it is not inherited
  from the parent at exec, where the parent may have held a large memmap)."""
  try:
    return _status_mib("VmHWM")
  except (OSError, KeyError):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> float:
  """Reset the peak to the current resident size (Linux clear_refs 5); returns it in MiB.

  So "peak growth" is what the measured search itself added, not temporaries
  freed before it (e.g. while the embeddings were made)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return _status_mib("VmRSS")
  except OSError:
    return _rss_mib()


def _numpy_top_k(queries, corpus, k, block=256):
  indices = np.empty((len(queries), k), np.int64)
  for start in range(0, len(queries), block):
    scores = queries[start:start + block] @ corpus.T  # [block, N]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    indices[start:start + block] = np.take_along_axis(part, order, 1)
  return indices


def search_defaults(platforms: str) -> tuple[int, int]:
  """eval.search's (chunk_size, query_block) defaults on the first of these JAX platforms."""
  from eval import search
  return search.DEFAULT_SHAPES["cpu" if platforms.split(",")[0] in ("cpu", "") else "other"]


def _search_options(args) -> dict:
  return dict(chunk_size=args.chunk_size, query_block=args.query_block,
              stream_rows=args.stream_rows, workers=args.workers or None,
              prefilter=None if args.prefilter == "none" else args.prefilter)


def child(args) -> dict:
  """Run one method; print a JSON line with its timings and memory."""
  # Import the library first so its runtime is part of the baseline, not the search.
  if args.method in ("eval.search", "ab"):
    import jax
    from eval import search
    jax.devices()
  if args.method in ("faiss.IndexFlatIP", "ab"):
    import faiss
  corpus = _embeddings(args.corpus, args.dim, seed=0)  # [N, dim]
  queries = _embeddings(args.queries, args.dim, seed=1)  # [Q, dim]
  compile_s = 0.0
  if args.method in ("eval.search", "ab"):
    start = time.perf_counter()
    # Compiles (one-off; its memory is not counted below) on a small corpus of the same
    # chunk shapes: the full corpus is not touched before the measured run.
    rows = search._stream_layout(len(corpus), len(jax.devices()), args.chunk_size,
                                 args.stream_rows, search._coarse(search._mesh())
                                 )[2]  # one host chunk, same shapes
    search.top_k(queries[:args.query_block], corpus[:rows], args.k, **_search_options(args))
    compile_s = time.perf_counter() - start
  base = _reset_peak()  # libraries, corpus and queries (and the compiled search) are in

  prefilter_stats = {}

  def ours():
    return search.top_k(queries, corpus, args.k, stats=prefilter_stats,
                        **_search_options(args))[1]

  def flat():
    index = faiss.IndexFlatIP(args.dim)
    index.add(corpus)
    return index.search(queries, args.k)[1]

  if args.method == "ab":  # interleaved A/B in one process: the speed ratio to quote
    times = {"eval.search": [], "faiss.IndexFlatIP": []}
    for _ in range(args.repeats):
      for name, fn in (("eval.search", ours), ("faiss.IndexFlatIP", flat)):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
    return {"method": "ab", "seconds": {n: [round(t, 3) for t in v] for n, v in times.items()},
            "speed_ratio_eval_search_over_faiss":
                round(min(times["faiss.IndexFlatIP"]) / min(times["eval.search"]), 3),
            "prefilter": prefilter_stats}
  fn = {"eval.search": ours, "faiss.IndexFlatIP": flat,
        "numpy": lambda: _numpy_top_k(queries, corpus, args.k)}[args.method]
  seconds = float("inf")
  for _ in range(args.repeats):
    start = time.perf_counter()
    indices = fn()
    seconds = min(seconds, time.perf_counter() - start)
  np.save(args.indices_out, indices)
  return {"method": args.method, "seconds": round(seconds, 3),
          "queries_per_second": round(args.queries / seconds, 1),
          "compile_seconds": round(compile_s, 3), "peak_rss_mib": round(_rss_mib(), 1),
          "peak_rss_growth_mib": round(_rss_mib() - base, 1), "prefilter": prefilter_stats}


def write_memmap(path: pathlib.Path, n: int, dim: int, rows: int = 65536) -> None:
  """An n x dim float32 corpus of unit rows, written chunk by chunk (bounded memory)."""
  mm = np.memmap(path, np.float32, "w+", shape=(n, dim))
  for i, start in enumerate(range(0, n, rows)):
    stop = min(start + rows, n)
    mm[start:stop] = _embeddings(stop - start, dim, seed=1000 + i)
  mm.flush()
  del mm


def stream_child(args) -> dict:
  """Search the memmap corpus with eval.search; report time and peak RSS."""
  import jax
  from eval import search
  jax.devices()
  corpus = np.memmap(args.corpus_file, np.float32, "r", shape=(args.stream_corpus, args.dim))
  queries = _embeddings(args.stream_queries, args.dim, seed=1)
  rows = search._stream_layout(len(corpus), len(jax.devices()), args.chunk_size,
                               args.stream_rows, search._coarse(search._mesh()))[2]
  search.top_k(queries, corpus[:rows], args.k, **_search_options(args))  # compile, same shapes
  base = _reset_peak()
  start = time.perf_counter()
  prefilter_stats = {}
  scores, indices = search.top_k(queries, corpus, args.k, stats=prefilter_stats,
                                 **_search_options(args))
  seconds = time.perf_counter() - start
  np.save(args.indices_out, indices)
  return {"method": "eval.search (memmap, streamed)", "seconds": round(seconds, 3),
          "queries_per_second": round(args.stream_queries / seconds, 2),
          "corpus_rows_per_second": round(args.stream_corpus / seconds),
          "corpus_gib": round(args.stream_corpus * args.dim * 4 / 2 ** 30, 2),
          "peak_rss_mib": round(_rss_mib(), 1), "rss_before_search_mib": round(base, 1),
          "peak_rss_growth_mib": round(_rss_mib() - base, 1), "prefilter": prefilter_stats}


def float64_top_k(queries, corpus, k, rows=65536):
  """(scores [Q, k] float64, indices [Q, k]): exact top k by a chunked float64 scan of the
  corpus (an array or a memmap), ties by lower index."""
  best_s = np.full((len(queries), 0), -np.inf)
  best_i = np.zeros((len(queries), 0), np.int64)
  for start in range(0, len(corpus), rows):
    s = queries.astype(np.float64) @ np.asarray(corpus[start:start + rows], np.float64).T
    cand_s = np.concatenate([best_s, s], 1)
    cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + s.shape[1]),
                                                     s.shape)], 1)
    order = np.lexsort((cand_i, -cand_s), axis=-1)[:, :k]
    best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
  return best_s, best_i


def _check_stream(path, n, dim, queries, indices, k, rows=65536):
  """Exact top-k of a few queries by a chunked numpy scan of the memmap."""
  corpus = np.memmap(path, np.float32, "r", shape=(n, dim))
  return float((float64_top_k(queries, corpus, k, rows)[1] == indices).mean())


def run_stream(args, guard) -> None:
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="search_stream_", dir=args.tmp_dir))
  path = tmp / "corpus.f32"
  try:
    start = time.perf_counter()
    write_memmap(path, args.stream_corpus, args.dim)
    write_s = time.perf_counter() - start
    out = tmp / "indices.npy"
    cmd = [sys.executable, __file__, "--stream_child", "--corpus_file", str(path),
           "--indices_out", str(out), *[f"--{a}={getattr(args, a)}" for a in (
               "stream_corpus", "stream_queries", "dim", "k", "chunk_size", "query_block",
               "stream_rows", "workers", "prefilter")]]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    run = json.loads(done.stdout.strip().splitlines()[-1])
    indices = np.load(out)
    check = args.stream_check
    run["exact_match_vs_numpy"] = _check_stream(
        path, args.stream_corpus, args.dim, _embeddings(args.stream_queries, args.dim, 1)[:check],
        indices[:check], args.k)
    run["checked_queries"] = check
    run["write_seconds"] = round(write_s, 1)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  meta = guard.finish()
  result = {"command": "python perf/search_throughput.py " + " ".join(sys.argv[1:]),
            **{a: getattr(args, a) for a in ("stream_corpus", "stream_queries", "dim", "k",
                                             "chunk_size", "query_block", "stream_rows",
                                             "workers", "prefilter")},
            **meta, "run": run}
  print(json.dumps(result, indent=1))
  if not guard.may_write:
    return
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  name = "search_stream" + ("" if args.prefilter == "none" else f"_{args.prefilter}")
  (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
  (out_dir / f"{name}.md").write_text("\n".join([
      "# Exact top-k over a corpus streamed from disk (eval.search, CPU"
      + ("" if args.prefilter == "none" else f", {args.prefilter} prefilter") + ")", "",
      f"Command: `{result['command']}`", "", _machine.describe(meta), "",
      f"Corpus {args.stream_corpus:,} x {args.dim} float32 ({run['corpus_gib']} GiB, np.memmap), "
      f"{args.stream_queries} queries, k={args.k}, host chunks of {args.stream_rows} rows.", "",
      "| seconds | corpus rows/s | peak RSS MiB | RSS growth during search MiB | exact vs numpy |",
      "|---|---|---|---|---|",
      f"| {run['seconds']} | {run['corpus_rows_per_second']:,} | {run['peak_rss_mib']} | "
      f"{run['peak_rss_growth_mib']} | {run['exact_match_vs_numpy']} ({check} queries) |", "",
      f"Prefilter: {run['prefilter']}.", ""]))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus", type=int, default=200_000, help="corpus vectors")
  parser.add_argument("--queries", type=int, default=10_000, help="query vectors")
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="eval.search corpus chunk (default: the library's for the platform)")
  parser.add_argument("--query_block", type=int, default=None,
                      help="eval.search query block (default: the library's)")
  parser.add_argument("--stream_rows", type=int, default=65536, help="eval.search host chunk")
  parser.add_argument("--workers", type=int, default=0,
                      help="eval.search host threads searching query blocks (0: one per CPU core)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--prefilter", choices=("none", "bfloat16"), default="none",
                      help="eval.search's prefilter (results still exact; written to "
                           "search_throughput_<prefilter>.{json,md})")
  parser.add_argument("--stream_corpus", type=int, default=0,
                      help="instead: search an N-row memmap corpus streamed from disk")
  parser.add_argument("--stream_queries", type=int, default=256)
  parser.add_argument("--stream_check", type=int, default=8, help="queries checked vs numpy")
  parser.add_argument("--tmp_dir", default="/tmp")
  parser.add_argument("--force", action="store_true",
                      help="run on a busy machine (dry run: print, write nothing)")
  parser.add_argument("--out_dir", default=str(REPO / "perf" / "out"))
  parser.add_argument("--method", choices=METHODS + ("ab",), help=argparse.SUPPRESS)  # child
  parser.add_argument("--stream_child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--corpus_file", help=argparse.SUPPRESS)
  parser.add_argument("--indices_out", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  # the children run on JAX_PLATFORMS (default cpu): the library's default shapes there
  default = search_defaults(os.environ.get("JAX_PLATFORMS", "cpu"))
  args.chunk_size = args.chunk_size or default[0]
  args.query_block = args.query_block or default[1]
  if args.method:
    print(json.dumps(child(args)))
    return
  if args.stream_child:
    print(json.dumps(stream_child(args)))
    return
  guard = _machine.LoadGuard(force=args.force)
  if args.stream_corpus:
    return run_stream(args, guard)

  command = "python perf/search_throughput.py " + " ".join(
      sys.argv[1:] if argv is None else argv)
  blas_env, blas_libs = _machine.openblas_env("import faiss")  # set for every child alike
  if blas_env:
    print(f"faiss's OpenBLAS picked generic kernels ({blas_libs}); every method runs with "
          f"{blas_env}", flush=True)
  runs, indices = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for method in METHODS + ("ab",):
      path = os.path.join(tmp, f"{method}.npy")
      cmd = [sys.executable, __file__, "--method", method, "--indices_out", path,
             *[f"--{a}={getattr(args, a)}" for a in (
                 "corpus", "queries", "dim", "k", "chunk_size", "query_block", "stream_rows",
                 "workers", "repeats", "prefilter")]]
      env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), **blas_env)
      print(f"running {method} ...", flush=True)
      out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
      runs[method] = json.loads(out.strip().splitlines()[-1])
      if method != "ab":
        indices[method] = np.load(path)
      print(f"  {runs[method]}", flush=True)
  ab = runs.pop("ab")
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
  meta = guard.finish()
  result = {"command": command, "corpus": args.corpus, "queries": args.queries, "dim": args.dim,
            "k": args.k, "chunk_size": args.chunk_size, "query_block": args.query_block,
            "stream_rows": args.stream_rows, "workers": args.workers or "one per CPU core",
            "prefilter": args.prefilter,
            "openblas_after_import_faiss": blas_libs, "environment_set": blas_env,
            "repeats": args.repeats, **meta,
            "platform": platform.platform(), "runs": runs, "interleaved_ab": ab}
  lines = ["# Exact top-k search throughput (CPU)"
           + ("" if args.prefilter == "none" else f", {args.prefilter} prefilter"), "",
           f"Command: `{command}`", "", _machine.describe(meta), "",
           f"Corpus {args.corpus:,} x {args.dim}, {args.queries:,} queries, k={args.k}, "
           f"{os.cpu_count()} CPU cores. OpenBLAS after `import faiss`: {blas_libs}"
           + (f"; generic kernels, so every method ran with {blas_env}" if blas_env else "")
           + f". Best of {args.repeats} per method; eval.search compile "
           "time excluded from queries/s and shown separately. Memory = peak RSS growth (VmHWM) over the "
           "resident size once the library, corpus and queries were loaded (and, for eval.search, "
           "its search compiled), and the total peak RSS.", "",
           "| method | queries/s | seconds | compile s | peak RSS growth MiB | peak RSS MiB | "
           "eval.search speed ratio | eval.search memory ratio | top-k overlap |",
           "|---|---|---|---|---|---|---|---|---|"]
  for method, r in runs.items():
    lines.append(f"| {method} | {r['queries_per_second']} | {r['seconds']} | {r['compile_seconds']} | "
                 f"{r['peak_rss_growth_mib']} | {r['peak_rss_mib']} | "
                 f"{r.get('eval_search_speed_ratio', 1.0)} | {r.get('eval_search_memory_ratio', 1.0)} | "
                 f"{r.get('topk_overlap_with_eval_search', 1.0)} |")
  if args.prefilter != "none":
    lines += ["", f"eval.search's {args.prefilter} prefilter kept {ours['prefilter']['prefilter_rows']} "
              f"candidates per query; {ours['prefilter']['fallback_queries']} of {args.queries:,} "
              "queries could not be certified by the error bound and were searched again in float32 "
              "(included in the time)."]
  lines += ["", f"Interleaved A/B in one process (eval.search vs faiss, {args.repeats} rounds): "
            f"speed ratio {ab['speed_ratio_eval_search_over_faiss']}x; seconds {ab['seconds']}."]
  print("\n".join(lines))
  if not guard.may_write:
    return
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  name = "search_throughput" + ("" if args.prefilter == "none" else f"_{args.prefilter}")
  (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
  (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
