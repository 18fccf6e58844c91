"""Where the encoder's time goes on CPU: our XLA program vs PyTorch, op by op, same shapes.

(Thunk times are summed over the threads that ran them: XLA may run independent
thunks, e.g. the Q, K and V matmuls, at the same time, so a class's sum can
exceed its share of the wall time.)

  python perf/profile_encoder.py --batch_size 32 --lengths 32 128 256

For each padded length, in one process:
  * a float32 matmul peak measured right there (jit'd [2048, 2048] @ [2048, 2048]);
  * our jit'd forward (`Encoder.__call__`, e5-small, float32) traced with
    `jax.profiler` and `--xla_cpu_enable_xprof_traceme` (one event per XLA thunk);
    every thunk is classified from the compiled HLO (dense matmuls, attention
    matmuls, softmax, LayerNorm, GELU/bias, transposes/copies, other);
  * sentence-transformers' transformer forward (`BertModel`, the same weights)
    under `torch.profiler`, its aten ops put in the same classes;
  * interleaved A/B timings (ours, torch, ours, torch, ...; best of `--repeats`).
Prints one table per length and writes perf/out/profile_encoder.{json,md}
(refused when the 1-minute load average before starting exceeds 0.3, unless
`--force`: then nothing is written and the tables are only printed).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pathlib
import re
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_xprof_traceme=true").strip()

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from perf import _machine  # noqa: E402
from perf._machine import layer_flops, matmul_peak  # noqa: E402

CLASSES = ("dense matmul", "attention matmul", "softmax", "layernorm", "gelu+bias",
           "transpose/copy", "embedding", "other")


def _hlo_entry(text: str, ffn: int) -> dict[str, str]:
  """ENTRY instruction name -> a class, from the compiled HLO text.

  (XLA expands erf into a polynomial before fusing, so GELU is recognised by its
  output shape: a non-dot fusion whose last dimension is the FFN width `ffn`.)
  """
  comps, name, body = {}, None, []
  for line in text.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if m and not line.startswith(" "):
      name, body = m.group(1), []
      comps[name] = body
      if line.startswith("ENTRY"):
        comps["__entry__"] = body
    elif name is not None:
      body.append(line)
  out = {}
  for line in comps.get("__entry__", []):
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+?)\{?[\d,]*\}? ([\w\-]+)\(", line)
    if not m:
      continue
    inst, shape, op = m.groups()
    called = re.search(r"calls=%([\w.\-]+)", line)
    inner = "\n".join(comps.get(called.group(1), [])) if called else line
    dims = [int(d) for d in re.findall(r"\d+", shape.split("[", 1)[-1])]
    rank4 = shape.count(",") >= 3
    if " dot(" in inner or op == "dot":
      cls = "attention matmul" if rank4 or " exponential(" in inner else "dense matmul"
    elif " exponential(" in inner:
      cls = "softmax"
    elif " erf(" in inner or " tanh(" in inner or (dims and dims[-1] == ffn):
      cls = "gelu+bias"
    elif " rsqrt(" in inner or (" reduce(" in inner and not rank4):
      cls = "layernorm"
    elif " gather(" in inner:
      cls = "embedding"
    elif rank4 and (" select(" in inner or " maximum(" in inner or " reduce(" in inner):
      cls = "softmax"
    elif " transpose(" in inner or " copy(" in inner or op in ("copy", "transpose"):
      cls = "transpose/copy"
    else:
      cls = "other"
    out[inst] = cls
  return out


def profile_ours(fn, args, hlo_text: str, repeats: int, ffn: int) -> dict[str, float]:
  """Seconds per class for one call (mean over `repeats` traced calls)."""
  import jax
  from jax.profiler import ProfileData
  classes = _hlo_entry(hlo_text, ffn)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    for _ in range(repeats):
      jax.block_until_ready(fn(*args))
    jax.profiler.stop_trace()
    data = ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
  totals = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if "XLAPjRtCpuClient" not in line.name and "XLAEigen" not in line.name:
        continue
      for ev in line.events:
        if ev.name in classes:
          totals[classes[ev.name]] += ev.duration_ns * 1e-9 / repeats
  return dict(totals)


_TORCH_CLASSES = [
    (("aten::addmm", "aten::linear", "aten::mm"), "dense matmul"),
    (("aten::bmm", "aten::matmul", "aten::baddbmm", "scaled_dot_product", "flash_attention"),
     "attention matmul"),
    (("softmax",), "softmax"),
    (("layer_norm",), "layernorm"),
    (("gelu",), "gelu+bias"),
    (("aten::copy_", "aten::contiguous", "aten::clone", "aten::transpose", "aten::permute",
      "aten::view", "aten::reshape"), "transpose/copy"),
    (("embedding", "index_select"), "embedding"),
]


def profile_torch(fn, repeats: int) -> dict[str, float]:
  """Self CPU seconds per class for one call, from torch.profiler."""
  import torch
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(repeats):
      fn()
  totals = collections.Counter()
  for ev in prof.key_averages():
    cls = next((c for keys, c in _TORCH_CLASSES if any(k in ev.key for k in keys)), "other")
    totals[cls] += ev.self_cpu_time_total * 1e-6 / repeats
  return dict(totals)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 256])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "perf" / "out")
  parser.add_argument("--force", action="store_true",
                      help="run on a busy machine (prints only; writes no results)")
  args = parser.parse_args(argv)
  load = _machine.LoadGuard(force=args.force)

  import jax
  import torch
  from sentence_transformers import SentenceTransformer

  from mlir_train import e5_small, models
  torch.set_num_threads(len(os.sched_getaffinity(0)))  # same cores as XLA sees
  model = models.load_model("e5-small")
  st = SentenceTransformer(str(e5_small.ensure_hf_dir()), device="cpu")
  bert = st[0].auto_model.eval()
  peak = matmul_peak()
  rows = []
  for length in args.lengths:
    rng = np.random.default_rng(length)
    ids = rng.integers(5, 1000, (args.batch_size, length)).astype(np.int32)
    mask = np.ones_like(ids)
    fwd = lambda p, i, a: model.module.apply({"params": p}, i, a)
    compiled = jax.jit(fwd).lower(model.params, ids, mask).compile()
    ours = lambda: compiled(model.params, ids, mask)
    t_ids, t_mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def theirs():
      with torch.inference_mode():
        return bert(input_ids=t_ids, attention_mask=t_mask).last_hidden_state

    jax.block_until_ready(ours())
    theirs()
    t_ours, t_torch = [], []
    for _ in range(args.repeats):  # interleaved A/B
      t = time.perf_counter(); jax.block_until_ready(ours()); t_ours.append(time.perf_counter() - t)
      t = time.perf_counter(); theirs(); t_torch.append(time.perf_counter() - t)
    ops_ours = profile_ours(lambda: compiled(model.params, ids, mask), (), compiled.as_text(),
                            args.repeats, model.config.intermediate_size)
    ops_torch = profile_torch(theirs, args.repeats)
    flops = layer_flops(model.config, args.batch_size, length)
    row = {"length": length, "batch_size": args.batch_size, "ours_s": min(t_ours),
           "torch_s": min(t_torch), "speed_ratio_ours_over_torch": min(t_torch) / min(t_ours),
           "matmul_flops": sum(flops.values()),
           "mfu_ours": sum(flops.values()) / min(t_ours) / peak,
           "mfu_torch": sum(flops.values()) / min(t_torch) / peak,
           "ops_ours_s": ops_ours, "ops_torch_s": ops_torch, "op_flops": flops}
    rows.append(row)
    print(render_row(row, peak), flush=True)
  meta = {"command": "python perf/profile_encoder.py " + " ".join(
      sys.argv[1:] if argv is None else argv), "matmul_peak_flops": peak,
      "torch_threads": torch.get_num_threads(), "jax": jax.__version__,
      "torch": torch.__version__, **load.finish()}
  print(json.dumps({k: v for k, v in meta.items()}, indent=1))
  if load.may_write:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_encoder.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    (args.out / "profile_encoder.md").write_text(
        "# Encoder forward, op by op (CPU)\n\n" + _machine.describe(meta) + "\n\n"
        + "\n\n".join(render_row(r, peak) for r in rows) + "\n")
  return 0


def render_row(row: dict, peak: float) -> str:
  lines = [f"## batch {row['batch_size']} x {row['length']} tokens: ours {row['ours_s'] * 1e3:.0f} ms, "
           f"PyTorch {row['torch_s'] * 1e3:.0f} ms (ours/PyTorch speed {row['speed_ratio_ours_over_torch']:.2f}x); "
           f"MFU ours {row['mfu_ours']:.1%}, PyTorch {row['mfu_torch']:.1%} of {peak / 1e9:.1f} GFLOP/s",
           "", "| class | ours ms | PyTorch ms | ours GFLOP/s | PyTorch GFLOP/s |",
           "|---|---|---|---|---|"]
  for cls in CLASSES:
    o, t = row["ops_ours_s"].get(cls, 0.0), row["ops_torch_s"].get(cls, 0.0)
    f = row["op_flops"].get(cls)
    rate = lambda s: f"{f / s / 1e9:.1f}" if f and s else ""
    lines.append(f"| {cls} | {o * 1e3:.1f} | {t * 1e3:.1f} | {rate(o)} | {rate(t)} |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
