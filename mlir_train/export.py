"""Export a model as a directory that transformers and sentence-transformers load.

    python -m mlir_train.export --model e5-small --out exports/e5-small
    python -m mlir_train.export --model workdirs/hybrid_seed0 --out exports/hybrid

Then, in any environment with those libraries:

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer("exports/hybrid")
    q = st.encode(["how tall is Everest?"], prompt_name="query")
    p = st.encode(["Everest is 8,849 m high."], prompt_name="passage")
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from mlir_train import hf_io
from mlir_train import models


def export(model_name: str, out_dir: str | pathlib.Path) -> pathlib.Path:
  """Load `model_name` (see `models.load_model`) and write it to `out_dir`."""
  model = models.load_model(model_name)
  return hf_io.save_hf_dir(out_dir, model.config, model.params, model.tokenizer)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m mlir_train.export",
      description=(
          "Write a model as a Hugging Face directory: config.json, model.safetensors and "
          "tokenizer files (loadable with transformers.AutoModel / AutoTokenizer), plus "
          "modules.json, 1_Pooling/, 2_Normalize/ and the E5 prompts 'query: ' / "
          "'passage: ' (loadable with sentence_transformers.SentenceTransformer)."),
      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True,
                      help=f"what to export: {models.ACCEPTED}")
  parser.add_argument("--out", required=True, type=pathlib.Path,
                      help="output directory (created; existing files are overwritten)")
  args = parser.parse_args(argv)
  try:
    out = export(args.model, args.out)
  except models.ModelLoadError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"exported {args.model} to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
