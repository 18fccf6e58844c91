r"""Where a training step's time goes, in parts timed one by one (no profiler tooling needed):

  python perf/gpu_step_profile.py --out DIR [--dtype bfloat16] [--model e5-small-shape]

Times (median of --repeats calls, each its own jitted program, compiled side by side first):
the whole update step at batch 100 (query/passage 64/128, the gpu study's settings,
`gpu_bench.train_config`) and at 4x the batch; its forward pass alone (the validation
loss); forward and backward (the step's own `train.batch_value_and_grad` over the
trainable parameters); the AdamW update alone; and the model's three matmul shapes
alone ([tokens, 384] x [384, 384], x [384, 1536], [tokens, 1536] x [1536, 384], tokens
= 100 x 128), with their TFLOP/s beside an 8192^2 matmul's. The default model is
e5-small's shape with random weights (timing does not depend on the values, and no model
file is needed); `--model e5-small` loads the real one. Writes DIR/step_profile.json
after each part and DIR/step_profile.md at the end.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "perf")]


def load(name: str, dtype):
  import dataclasses
  from mlir_train import encoder as encoder_lib, models
  if name == "e5-small-shape":  # e5-small's architecture (xlm-roberta positions), random
    tiny = models.tiny_random_model(0)
    config = encoder_lib.EncoderConfig(position_style="roberta", max_position_embeddings=514,
                                       model_type="xlm-roberta")
    return dataclasses.replace(tiny, name=name, config=config,
                               params=encoder_lib.init_params(config, 0),
                               module=encoder_lib.Encoder(config, dtype=dtype))
  return models.load_model(name, dtype=dtype)


def median_ms(fn, args, repeats: int) -> float:
  import jax
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--model", default="e5-small-shape")
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--peak_n", type=int, default=8192, help="the square matmul's size")
  args = parser.parse_args(argv)
  import jax
  import jax.numpy as jnp
  import optax
  from concurrent import futures
  import gpu_bench
  from mlir_train import optimizer as optimizer_lib, partitioning, train
  from train_throughput import compiled_step, synthetic_batches, training_flops

  args.out.mkdir(parents=True, exist_ok=True)
  begun = time.perf_counter()
  dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.dtype]
  model = load(args.model, jnp.float32)
  d = jax.devices()[0]
  result = {"device": d.device_kind, "platform": d.platform, "jax": jax.__version__,
            "model": args.model, "dtype": args.dtype, "batch": args.batch, "parts_ms": {},
            "flops": {}}

  def save(what):
    result["wall_s"] = round(time.perf_counter() - begun, 1)
    (args.out / "step_profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"[{result['wall_s']:6.1f} s] {what}", file=sys.stderr, flush=True)

  # -- the programs -------------------------------------------------------------------
  def cfg(batch):
    return dict(name=f"batch {batch}", batch_size=batch, max_query_len=64,
                max_passage_len=128, chunk=0)

  def step_program(batch):
    config = gpu_bench.train_config(cfg(batch), args.dtype)
    state, step, mesh = compiled_step(config, model)
    b = synthetic_batches(argparse.Namespace(batch_size=batch, max_query_len=64,
                                             max_passage_len=128), model.config.vocab_size, 1)[0]
    arrays = partitioning.global_batch({f: getattr(b, f) for f in train.BATCH_FIELDS}, mesh)
    compiled = step.lower(state, arrays).compile()
    # donate_argnums: each call consumes the state, so the timed calls chain it
    holder = {"state": state}

    def run(batch_arrays):
      holder["state"], metrics = compiled(holder["state"], batch_arrays)
      return metrics
    return run, (arrays,), config

  config = gpu_bench.train_config(cfg(args.batch), args.dtype)
  module = model.module.clone(dtype=dtype)
  tx = optimizer_lib.make_optimizer(config)
  b = synthetic_batches(argparse.Namespace(batch_size=args.batch, max_query_len=64,
                                           max_passage_len=128), model.config.vocab_size, 1)[0]
  batch = {f: jnp.asarray(getattr(b, f)) for f in train.BATCH_FIELDS}
  trainable, frozen = optimizer_lib.split_frozen(model.params, config.freeze_embeddings, 0)
  trainable = jax.device_put(trainable)

  def embed(p, ids, mask):
    return module.apply({"params": optimizer_lib.merge(p, frozen)}, ids, mask)

  forward = jax.jit(train.make_validation_step(module, config))
  forward_backward = jax.jit(lambda p, b: train.batch_value_and_grad(embed, b, config)(p))
  opt_state = tx.init(trainable)
  optimizer_step = jax.jit(lambda g, s, p: optax.apply_updates(p, tx.update(g, s, p)[0]))
  tokens, h, f = args.batch * 128, model.config.hidden_size, model.config.intermediate_size
  gemms = {"[tokens,h]x[h,h]": (tokens, h, h), "[tokens,h]x[h,4h]": (tokens, h, f),
           "[tokens,4h]x[4h,h]": (tokens, f, h),
           f"{args.peak_n}^2": (args.peak_n, args.peak_n, args.peak_n)}
  mm = jax.jit(lambda a, w: a @ w)
  gemm_args = {k: (jnp.ones((m, k_), dtype), jnp.ones((k_, n), dtype))
               for k, (m, k_, n) in gemms.items()}

  t = time.perf_counter()
  with futures.ThreadPoolExecutor(4) as pool:
    steps = {n: pool.submit(step_program, n) for n in (args.batch, 4 * args.batch)}
    jax.block_until_ready(forward(model.params, batch))
    jax.block_until_ready(forward_backward(trainable, batch))
    jax.block_until_ready(optimizer_step(trainable, opt_state, trainable))
    for a in gemm_args.values():
      jax.block_until_ready(mm(*a))
    steps = {n: s.result() for n, s in steps.items()}
  result["compile_s"] = round(time.perf_counter() - t, 1)
  save("compiled")

  # -- timed, one at a time ----------------------------------------------------------------
  parts = result["parts_ms"]
  for n, (run, run_args, _) in steps.items():
    parts[f"update step, batch {n}"] = median_ms(run, run_args, args.repeats)
    result["flops"][f"update step, batch {n}"] = training_flops(model.config, n, 64, 128)
    save(f"update step, batch {n}: {parts[f'update step, batch {n}']:.2f} ms")
  parts["forward (validation loss)"] = median_ms(forward, (model.params, batch), args.repeats)
  result["flops"]["forward (validation loss)"] = training_flops(model.config, args.batch, 64,
                                                                128) / 3
  parts["forward + backward"] = median_ms(forward_backward, (trainable, batch), args.repeats)
  result["flops"]["forward + backward"] = training_flops(model.config, args.batch, 64, 128)
  parts["AdamW update"] = median_ms(optimizer_step, (trainable, opt_state, trainable),
                                    args.repeats)
  save("parts")
  for k, (m, k_, n) in gemms.items():
    parts[f"matmul {k}"] = median_ms(mm, gemm_args[k], args.repeats)
    result["flops"][f"matmul {k}"] = 2.0 * m * k_ * n
  save("matmuls")

  lines = [f"# Train-step profile: {result['device']}, {args.model}, {args.dtype}", "",
           f"jax {result['jax']}; batch {args.batch}, query/passage 64/128 tokens; median of "
           f"{args.repeats} calls; compilation (side by side) {result['compile_s']} s", "",
           "| part | ms | TFLOP/s |", "|---|---|---|"]
  for k, ms in parts.items():
    fl = result["flops"].get(k)
    lines.append(f"| {k} | {ms:.3f} | {fl / ms / 1e9:.1f} |" if fl else f"| {k} | {ms:.3f} | |")
  (args.out / "step_profile.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
