"""Export a model as a directory that transformers and sentence-transformers load.

    python -m mlir_train.export --model e5-small --out exports/e5-small
    python -m mlir_train.export --model workdirs/hybrid_seed0 --out exports/hybrid
    python -m mlir_train.export --model workdirs/hybrid_seed0 --interpolate 0.5 --out exports/wise

Then, in any environment with those libraries:

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer("exports/hybrid")
    q = st.encode_query(["how tall is Everest?"])        # prompt "query"
    p = st.encode_document(["Everest is 8,849 m high."])  # prompt "document" (= "passage")

The export's README.md is its model card (`mlir_train.model_card`): base model,
prompts, pooling, and for a training workdir its config, data and the scores of the
eval.run result JSONs found in it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from data_pipelines.errors import ProjectError
from mlir_train import checkpoints
from mlir_train import compile_cache
from mlir_train import config_validation
from mlir_train import hf_io
from mlir_train import model_card
from mlir_train import models


def export(model_name: str, out_dir: str | pathlib.Path,
           interpolate: float | None = None, interpolate_start: str | None = None) -> pathlib.Path:
  """Load `model_name` (see `models.load_model`) and write it to `out_dir`.

  With `interpolate` (a lambda in [0, 1]), `model_name` must be a training
  workdir, and the export holds (1 - lambda) * start + lambda * fine-tuned
  weights (`mlir_train.interpolate`; `interpolate_start` "provenance" / "config" picks the
  start where the workdir's provenance.json and config.json disagree).
  """
  check_out_dir(model_name, out_dir)
  if interpolate is not None:
    from mlir_train import interpolate as interpolate_lib
    model = interpolate_lib.interpolate(model_name, interpolate, start=interpolate_start)
  else:
    model = models.load_model(model_name)
  out = hf_io.save_hf_dir(out_dir, model.config, model.params, model.tokenizer,
                          prompts=model.prompts)
  write_card(out, model_name, model, interpolate)
  return out


def write_card(out: pathlib.Path, model_name: str, model, interpolate: float | None = None) -> None:
  """README.md: the export's model card (`model_card.render`)."""
  max_seq_length = json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"]
  workdir = pathlib.Path(model_name) if models.is_training_workdir(model_name) else None
  card = model_card.render(str(model_name), model.config,
                           hf_io.sentence_transformers_prompts(model.prompts), max_seq_length,
                           workdir, interpolate)
  (out / "README.md").write_text(card, encoding="utf-8")


def check_out_dir(model_name: str, out_dir: str | pathlib.Path) -> None:
  """Refuse an --out that would overwrite a training workdir or the model being exported."""
  out = pathlib.Path(out_dir).expanduser().resolve()
  source = pathlib.Path(str(model_name)).expanduser()
  if source.exists() and out == source.resolve():
    raise models.ModelLoadError(f"--out {out_dir} is the model's own directory; exporting "
                                f"there would overwrite it. Choose another --out")
  if (out / checkpoints.CHECKPOINT_DIR).is_dir():
    raise models.ModelLoadError(f"--out {out_dir} is a training workdir (it has "
                                f"{checkpoints.CHECKPOINT_DIR}/); exporting there would replace "
                                f"its config.json. Choose another --out")
  config_validation.check_writable(out, "export directory")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m mlir_train.export",
      description=(
          "Write a model as a Hugging Face directory: config.json, model.safetensors and "
          "tokenizer files (loadable with transformers.AutoModel / AutoTokenizer), plus "
          "modules.json, 1_Pooling/, [2_Dense/,] a Normalize module and the model's prompts "
          "under sentence-transformers' names query, document (and passage), e.g. E5's "
          "'query: ' / 'passage: ' (loadable with sentence_transformers.SentenceTransformer: "
          "encode_query, encode_document), and a README.md model card."),
      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True,
                      help=f"what to export: {models.ACCEPTED}")
  parser.add_argument("--out", required=True, type=pathlib.Path,
                      help="output directory (created; existing files are overwritten)")
  parser.add_argument("--interpolate", type=float, default=None, metavar="LAMBDA",
                      help="training workdirs only: export (1 - LAMBDA) * starting weights + "
                           "LAMBDA * fine-tuned weights (WiSE-FT), LAMBDA in [0, 1]")
  parser.add_argument("--interpolate_start", default=None, choices=("provenance", "config"),
                      help="with --interpolate, when the workdir's provenance.json and config.json "
                           "name different start models (a resume with --allow_config_change): "
                           "interpolate from the one the weights were trained from (provenance) "
                           "or config.json's")
  args = parser.parse_args(argv)
  compile_cache.enable()
  try:
    out = export(args.model, args.out, interpolate=args.interpolate,
                 interpolate_start=args.interpolate_start)
  except ProjectError as e:  # bad model, workdir, lambda or output directory
    print(f"error: {e}", file=sys.stderr)
    return 2
  what = args.model if args.interpolate is None else f"{args.model}@lambda={args.interpolate:g}"
  print(f"exported {what} to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
