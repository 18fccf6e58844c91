r"""Matmul speed per dtype on this CPU: XLA (jit) against PyTorch, float32 and bfloat16.

  python perf/matmul_dtypes.py [--repeats 20] [--force]

Shapes: a search chunk ([512 queries, 384] x [384, 2,048 or 16,384 corpus rows]) and the
encoder's dense layers at 1,024 and 4,096 tokens ([tokens, 384] x [384, 1,536]). bfloat16
takes bfloat16 inputs and returns float32 (XLA: preferred_element_type; PyTorch: its
bfloat16 result, cast). On CPUs with AMX or AVX512-BF16 a bfloat16 matmul can run several
times faster than float32; this says how much of that each library gets. Each XLA variant
is the same jitted dot compiled with `compiler_options` (XLA DebugOptions, as in
`xla_flags_ab.py`). Best of --repeats calls. Refuses when the 1-minute load average is
above 0.3 (`--force`: dry run, prints only); else writes
perf/out/matmul_dtypes.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf import _machine  # noqa: E402

SHAPES = {"search chunk 2,048": (512, 384, 2048), "search chunk 16,384": (512, 384, 16384),
          "dense 1,024 tokens": (1024, 384, 1536), "dense 4,096 tokens": (4096, 384, 1536)}
XLA_VARIANTS = {"XLA": {},
                "XLA, dots to XNNPACK": {
                    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE",
                    "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
                "XLA, dots to Eigen": {
                    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}}


def best_s(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def measure(shapes: dict, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  rng = np.random.default_rng(0)
  out = {}
  for name, (m, k, n) in shapes.items():
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    flops, row = 2.0 * m * k * n, {}
    truth = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)  # error bound's scale

    def error(result) -> float:  # largest |result - truth| relative to sum |a_i b_i|
      return float(np.max(np.abs(np.asarray(result, np.float64) - truth) / scale))
    for dtype in ("float32", "bfloat16"):
      jdt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
      x, y = jnp.asarray(a, jdt), jnp.asarray(b, jdt)
      dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
      for variant, options in XLA_VARIANTS.items():
        try:
          compiled = dot.lower(x, y).compile(compiler_options=options or None)
        except Exception as e:  # an option this jaxlib does not know
          row[f"{variant} {dtype}"] = {"error": str(e)[:200]}
          continue
        s = best_s(lambda: compiled(x, y).block_until_ready(), repeats)
        row[f"{variant} {dtype}"] = {"ms": 1e3 * s, "gflops": flops / s / 1e9,
                                     "max_error": error(compiled(x, y))}
      tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
      tx, ty = torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)
      s = best_s(lambda: (tx @ ty).float(), repeats)
      row[f"PyTorch {dtype}"] = {"ms": 1e3 * s, "gflops": flops / s / 1e9,
                                 "max_error": error((tx @ ty).float().numpy())}
    out[name] = row
    print(name, {k: round(v.get("gflops", 0)) for k, v in row.items()}, flush=True)
  return out


def report(result: dict) -> str:
  names = list(next(iter(result["shapes"].values())))
  lines = ["# Matmul speed per dtype (CPU)", "", f"Command: `{result['command']}`", "",
           _machine.describe(result["meta"]) + f" torch threads {result['torch_threads']}.", "",
           "GFLOP/s, best of " + str(result["repeats"]) + " calls (largest error against a float64 "
           "product, relative to sum |a_i b_i|, in the JSON):", "",
           "| shape [m, k] x [k, n] | " + " | ".join(names) + " |",
           "|---" * (len(names) + 1) + "|"]
  for shape, row in result["shapes"].items():
    m, k, n = result["shape_dims"][shape]
    cells = [f"{row[c]['gflops']:.0f}" if "gflops" in row[c] else "n/a" for c in names]
    lines.append(f"| {shape}: [{m}, {k}] x [{k}, {n}] | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--force", action="store_true", help="run on a busy machine, write nothing")
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "perf" / "out")
  parser.add_argument("--shapes", type=json.loads, default=None,
                      help='JSON {name: [m, k, n]} instead of the default shapes')
  args = parser.parse_args(argv)
  guard = _machine.LoadGuard(force=args.force)
  import torch
  shapes = measure(SHAPES if args.shapes is None else args.shapes, args.repeats)
  result = {"command": "python perf/matmul_dtypes.py " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
            "shape_dims": SHAPES if args.shapes is None else args.shapes,
            "shapes": shapes, "meta": guard.finish()}
  md = report(result)
  print(md)
  if guard.may_write:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "matmul_dtypes.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "matmul_dtypes.md").write_text(md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
