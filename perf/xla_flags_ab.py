"""XLA CPU compiler options, A/B in one process: the e5-small forward compiled once per option set.

  python perf/xla_flags_ab.py --length 256 --batch_size 32 --repeats 5

Every variant is the same jit'd forward compiled with
`.lower(...).compile(compiler_options=...)` (XLA DebugOptions fields, as the
`--xla_cpu_*` flags), so variants run interleaved in one process. Prints, per
variant, how many YNNPACK fusions its HLO has, the min cosine of its embeddings
against the default's, and its speed relative to the default (wall and process
CPU time, best of `--repeats`). Refuses to run when the 1-minute load average is
above 0.3 (`--force`: dry run). Prints only; writes nothing.
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

import numpy as np  # noqa: E402

from perf import _machine  # noqa: E402

YNN = "xla_cpu_experimental_ynn_fusion_type"
VARIANTS = {
    "default": {},
    "ynn dots only": {YNN: "LIBRARY_FUSION_TYPE_DOT"},
    "ynn dots + eltwise": {YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE"},
    "ynn individual dots": {YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "ynn reductions only (dots to XNN)": {
        YNN: "LIBRARY_FUSION_TYPE_REDUCE",
        "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "ynn reductions only (dots to Eigen)": {YNN: "LIBRARY_FUSION_TYPE_REDUCE"},
    "vector width 512": {"xla_cpu_prefer_vector_width": 512},
    "fast math": {"xla_cpu_enable_fast_math": True},
    "oneDNN": {"xla_cpu_use_onednn": True},
    "no concurrency-optimized schedule": {
        "xla_cpu_enable_concurrency_optimized_scheduler": False},
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                      help="the variants to compare (default: all); 'default' is always run")
  parser.add_argument("--force", action="store_true", help="run on a busy machine (dry run)")
  args = parser.parse_args(argv)
  guard = _machine.LoadGuard(force=args.force)

  import jax
  from mlir_train import models
  model = models.load_model("e5-small")
  ids = np.random.default_rng(0).integers(5, 1000, (args.batch_size, args.length)).astype(np.int32)
  mask = np.ones_like(ids)
  fwd = lambda p, i, a: model.module.apply({"params": p}, i, a)
  compiled, ynn = {}, {}
  for name, options in VARIANTS.items():
    if name != "default" and name not in args.variants:
      continue
    try:
      compiled[name] = jax.jit(fwd).lower(model.params, ids, mask).compile(
          compiler_options=options)
      ynn[name] = compiled[name].as_text().count('"__ynn_fusion"')
    except Exception as e:  # an option this jaxlib does not know
      print(f"{name}: not available ({str(e)[:120]})")
  ref = np.asarray(compiled["default"](model.params, ids, mask))
  wall = {n: [] for n in compiled}
  cpu = {n: [] for n in compiled}
  cosine = {}
  for name, c in compiled.items():
    cosine[name] = float((np.asarray(c(model.params, ids, mask)) * ref).sum(1).min())
  for _ in range(args.repeats):
    for name, c in compiled.items():
      w, t = time.perf_counter(), time.process_time()
      c(model.params, ids, mask).block_until_ready()
      wall[name].append(time.perf_counter() - w)
      cpu[name].append(time.process_time() - t)
  print("| variant | YNN fusions | min cosine vs default | speed vs default (wall) | "
        "speed vs default (CPU time) |\n|---|---|---|---|---|")
  for name in compiled:
    print(f"| {name} | {ynn[name]} | {cosine[name]:.7f} | "
          f"{min(wall['default']) / min(wall[name]):.2f}x | "
          f"{min(cpu['default']) / min(cpu[name]):.2f}x |")
  print(json.dumps(guard.finish()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
