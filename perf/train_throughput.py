r"""Training throughput on CPU: our jitted train step vs sentence-transformers (PyTorch).

Both sides train the same model (e5-small, exported with `mlir_train.export`)
on the same token ids (synthetic batches, fixed padded lengths), with the same
global batch, frozen embedding tables, InfoNCE with scale 20 (temperature
0.05; MultipleNegativesRankingLoss on the PyTorch side) and AdamW. Each side
runs in its own subprocess so peak memory (max RSS) is its own.

  python perf/train_throughput.py --batch_size 32 --max_query_len 32 \
      --max_passage_len 96 --steps 10

Writes perf/out/train_throughput.json and .md. MFU is each side's
achieved FLOP/s (analytic training FLOPs of the transformer layers, 3x forward)
over a float32 matmul peak measured in that same process right after its steps
(jit'd jnp matmul for ours, torch.mm for PyTorch). The script records the load
average before and after and refuses to run when the 1-minute load average is
above 0.3 (`--force`: a dry run that prints and writes nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "perf" / "out"  # raw output; current figures: perf/results/
sys.path.insert(0, str(REPO))

from perf import _machine  # noqa: E402


def synthetic_batches(args, vocab_size, steps):
  import ml_collections
  from mlir_train import synthetic
  config = ml_collections.ConfigDict(dict(seed=0, batch_size=args.batch_size,
                                          max_query_len=args.max_query_len,
                                          max_passage_len=args.max_passage_len))
  return [synthetic.global_batch(config, vocab_size, s) for s in range(steps)]


def training_flops(config, batch, q_len, p_len) -> float:
  """Matmul FLOPs of one training step (forward x 3), embeddings excluded."""
  h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
  def forward(length):
    dense = 2 * length * (4 * h * h + 2 * h * f)   # q, k, v, attention output; FFN in/out
    attention = 2 * 2 * length * length * h        # scores and weighted values
    return layers * (dense + attention)
  return 3.0 * batch * (forward(q_len) + forward(p_len))


def compiled_step(config, model):
  """(initial train state, jitted update step, mesh): the trainer's own update step
  (`train.step_functions`: the same module, optimizer and shardings as `mlir_train.train`),
  so a benchmark times the step a training run runs (shared with perf/gpu_bench.py)."""
  import jax
  from mlir_train import partitioning, train
  module = model.module.clone(dtype=train.COMPUTE_DTYPES[config.compute_dtype],
                              remat=bool(config.remat))
  tx = train.optimizer_lib.make_optimizer(config)
  mesh = partitioning.make_mesh(fsdp=int(config.fsdp))
  init = lambda p: train.init_state(p, tx, config)
  state_sharding = partitioning.tree_shardings(jax.eval_shape(init, model.params), mesh)
  batch_sharding = {f: partitioning.batch_sharding(mesh) for f in train.BATCH_FIELDS}
  update_sharding = {f: partitioning.batch_sharding(mesh) for f in train.batch_fields(config)}
  state = jax.jit(init, out_shardings=state_sharding)(model.params)
  step, _ = train.step_functions(module, config, mesh, state_sharding, update_sharding,
                                 batch_sharding)
  return state, step, mesh


def run_ours(args) -> dict:
  import jax
  from configs import default
  from mlir_train import models, partitioning, train

  config = default.get_config()
  config.batch_size, config.max_query_len = args.batch_size, args.max_query_len
  config.max_passage_len, config.compute_dtype = args.max_passage_len, args.compute_dtype
  model = models.load_model(args.model)
  state, step, mesh = compiled_step(config, model)
  batches = [partitioning.global_batch({f: getattr(b, f) for f in train.BATCH_FIELDS}, mesh)
             for b in synthetic_batches(args, model.config.vocab_size, args.steps + 2)]
  started = time.perf_counter()
  for b in batches[:2]:  # compile + warm up
    state, metrics = step(state, b)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - started
  started = time.perf_counter()
  for b in batches[2:]:
    state, metrics = step(state, b)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - started

  peak = _machine.matmul_peak()  # float32, as jit sees it, in this process
  flops = training_flops(model.config, args.batch_size, args.max_query_len, args.max_passage_len)
  return {"seconds": seconds, "compile_and_warmup_s": compile_s,
          "final_loss": float(metrics["loss"]), "matmul_peak_flops": peak,
          "step_flops": flops, "achieved_flops": flops * args.steps / seconds,
          "mfu": flops * args.steps / seconds / peak}


def run_sentence_transformers(args) -> dict:
  import numpy as np
  import torch
  from sentence_transformers import SentenceTransformer, losses

  torch.manual_seed(0)
  model = SentenceTransformer(str(args.export_dir), device="cpu")
  model[0].auto_model.embeddings.requires_grad_(False)
  loss_model = losses.MultipleNegativesRankingLoss(model, scale=1.0 / 0.05)
  params = [p for p in model.parameters() if p.requires_grad]
  decay = [p for p in params if p.ndim >= 2]
  no_decay = [p for p in params if p.ndim < 2]
  optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=2e-5)
  model.train()
  vocab = model[0].auto_model.config.vocab_size

  def features(ids, mask):
    return {"input_ids": torch.from_numpy(ids.astype(np.int64)),
            "attention_mask": torch.from_numpy(mask.astype(np.int64))}

  batches = synthetic_batches(args, vocab, args.steps + 2)

  def one_step(b):
    loss = loss_model([features(b.query_ids, b.query_mask),
                       features(b.passage_ids, b.passage_mask)], labels=None)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return float(loss)

  started = time.perf_counter()
  for b in batches[:2]:
    one_step(b)
  warm = time.perf_counter() - started
  started = time.perf_counter()
  for b in batches[2:]:
    loss = one_step(b)
  seconds = time.perf_counter() - started
  n = 2048  # float32 matmul peak of this process, as torch sees it
  x = torch.ones((n, n))
  torch.mm(x, x)
  best = float("inf")
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(10):
      torch.mm(x, x)
    best = min(best, time.perf_counter() - t)
  peak = 10 * 2 * n ** 3 / best
  flops = training_flops(model[0].auto_model.config, args.batch_size, args.max_query_len,
                         args.max_passage_len)
  return {"seconds": seconds, "compile_and_warmup_s": warm,
          "final_loss": loss, "torch_threads": torch.get_num_threads(),
          "matmul_peak_flops": peak, "step_flops": flops,
          "achieved_flops": flops * args.steps / seconds,
          "mfu": flops * args.steps / seconds / peak}


def side(args) -> None:
  result = run_ours(args) if args.side == "ours" else run_sentence_transformers(args)
  result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print("RESULT " + json.dumps(result))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="e5-small")
  parser.add_argument("--export_dir", type=pathlib.Path, default=pathlib.Path("/tmp/e5-small-export"),
                      help="where the model is exported for sentence-transformers (made if missing)")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_query_len", type=int, default=32)
  parser.add_argument("--max_passage_len", type=int, default=96)
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
  parser.add_argument("--compute_dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--force", action="store_true",
                      help="run on a busy machine (dry run: print, write nothing)")
  parser.add_argument("--side", choices=("ours", "st"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    return side(args)
  guard = _machine.LoadGuard(force=args.force)

  if not (args.export_dir / "config.json").exists():
    subprocess.run([sys.executable, "-m", "mlir_train.export", "--model", args.model,
                    "--out", str(args.export_dir)], cwd=REPO, check=True)
  results = {}
  for name in ("ours", "st"):
    argv = [sys.executable, __file__, *[a for a in sys.argv[1:] if a != "--force"], "--side", name]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
      sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    results[name] = json.loads(done.stdout.split("RESULT ", 1)[1])
    print(name, results[name], flush=True)

  tokens_per_step = args.batch_size * (args.max_query_len + args.max_passage_len)
  for r in results.values():
    r["pairs_per_s"] = args.batch_size * args.steps / r["seconds"]
    r["tokens_per_s"] = tokens_per_step * args.steps / r["seconds"]
  report = {"command": "python perf/train_throughput.py " + " ".join(sys.argv[1:]),
            "settings": {k: v for k, v in vars(args).items() if k not in ("side", "export_dir")},
            "cpu_count": os.cpu_count(), "results": results,
            "speed_ratio_ours_over_st": results["ours"]["pairs_per_s"] / results["st"]["pairs_per_s"],
            **guard.finish()}
  o, s = results["ours"], results["st"]
  md = [f"# Training throughput (CPU, {os.cpu_count()} cores)", "",
        f"Command: `{report['command']}`", "", _machine.describe(report), "",
        f"e5-small, global batch {args.batch_size}, query/passage length "
        f"{args.max_query_len}/{args.max_passage_len} (padded), frozen embeddings, "
        f"AdamW, {args.steps} timed steps after 2 warm-up steps.", "",
        "| | pairs/s | tokens/s (padded) | peak RSS MiB | warm-up s |",
        "|---|---|---|---|---|",
        f"| ours (JAX, {args.compute_dtype}) | {o['pairs_per_s']:.1f} | {o['tokens_per_s']:.0f} | "
        f"{o['peak_rss_mib']:.0f} | {o['compile_and_warmup_s']:.1f} |",
        f"| sentence-transformers (PyTorch) | {s['pairs_per_s']:.1f} | {s['tokens_per_s']:.0f} | "
        f"{s['peak_rss_mib']:.0f} | {s['compile_and_warmup_s']:.1f} |", "",
        f"Ratio ours / sentence-transformers: {report['speed_ratio_ours_over_st']:.2f}x.", "",
        f"MFU (ours): {o['mfu']:.1%} of a measured float32 matmul peak of "
        f"{o['matmul_peak_flops'] / 1e9:.1f} GFLOP/s ({o['achieved_flops'] / 1e9:.1f} GFLOP/s "
        f"achieved; transformer-layer matmuls only, training = 3x forward). MFU "
        f"(sentence-transformers): {s['mfu']:.1%} of {s['matmul_peak_flops'] / 1e9:.1f} GFLOP/s "
        "measured in its own process.", ""]
  print("\n".join(md))
  if not guard.may_write:
    return
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "train_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
  (RESULTS / "train_throughput.md").write_text("\n".join(md))


if __name__ == "__main__":
  main()
