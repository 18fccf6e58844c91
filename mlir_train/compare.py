"""Demo: do translations of a sentence land close together in embedding space?

    python -m mlir_train.compare                      # built-in sentences, e5-small
    python -m mlir_train.compare --model DIR "A cat." "Eine Katze." "Un chat."

With no sentences, two sentences ("The weather is very nice today." and
"Where is the nearest hospital?") are embedded in eight languages and scripts,
and two tables are printed: the cosine similarity of the first sentence
across all language pairs, and, per language, its similarity to the English
translation versus to the English sentence with another meaning. A
multilingual retriever should score the translation higher in every row.
With sentences given, their full cosine-similarity matrix is printed.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

# Parallel sentences (language code -> text): same meaning in every language.
WEATHER = {
    "en": "The weather is very nice today.",
    "ar": "الطقس جميل جدا اليوم.",
    "bn": "আজ আবহাওয়া খুব সুন্দর।",
    "ja": "今日はとても良い天気です。",
    "ru": "Сегодня очень хорошая погода.",
    "sw": "Hali ya hewa ni nzuri sana leo.",
    "te": "ఈ రోజు వాతావరణం చాలా బాగుంది.",
    "th": "วันนี้อากาศดีมาก",
}
HOSPITAL = {
    "en": "Where is the nearest hospital?",
    "ar": "أين أقرب مستشفى؟",
    "bn": "সবচেয়ে কাছের হাসপাতাল কোথায়?",
    "ja": "一番近い病院はどこですか？",
    "ru": "Где ближайшая больница?",
    "sw": "Hospitali iliyo karibu zaidi iko wapi?",
    "te": "దగ్గరలో ఉన్న ఆసుపత్రి ఎక్కడ ఉంది?",
    "th": "โรงพยาบาลที่ใกล้ที่สุดอยู่ที่ไหน",
}
LANGUAGES = tuple(WEATHER)


def format_matrix(sim: np.ndarray, labels) -> str:
  """A fixed-width table of a square similarity matrix."""
  width = max(6, max(len(str(l)) for l in labels) + 1)
  lines = [" " * width + "".join(f"{str(l):>{width}}" for l in labels)]
  for label, row in zip(labels, sim):
    lines.append(f"{str(label):<{width}}" + "".join(f"{v:>{width}.3f}" for v in row))
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m mlir_train.compare", description=__doc__.split("\n\n")[2],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("sentences", nargs="*",
                      help="sentences to compare (default: built-in parallel sentences)")
  parser.add_argument("--model", default="e5-small",
                      help="e5-small, a Hugging Face model directory, or a training workdir")
  parser.add_argument("--kind", default="query", choices=("query", "passage", "none"),
                      help="E5 prefix to add before each sentence (default: query)")
  args = parser.parse_args(argv)

  from data_pipelines.errors import ProjectError
  from mlir_train import encode, models
  try:
    model = models.load_model(args.model)
  except ProjectError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  kind = None if args.kind == "none" else args.kind

  if args.sentences:
    vectors = encode.embed(model, args.sentences, kind, progress=False)  # [N, hidden]
    for i, s in enumerate(args.sentences):
      print(f"[{i}] {s}")
    print("\ncosine similarity\n" + format_matrix(vectors @ vectors.T, range(len(vectors))))
    return 0

  weather = encode.embed(model, list(WEATHER.values()), kind, progress=False)   # [8, hidden]
  hospital = encode.embed(model, list(HOSPITAL.values()), kind, progress=False)  # [8, hidden]
  print(f"model: {model.name}\n")
  print(f'"{WEATHER["en"]}" in {len(LANGUAGES)} languages, cosine similarity:')
  print(format_matrix(weather @ weather.T, LANGUAGES))
  english = LANGUAGES.index("en")
  print(f'\nper language: similarity to the English translation vs to "{HOSPITAL["en"]}"')
  print(f"{'lang':<6}{'translation':>12}{'other':>8}  ok")
  for i, lang in enumerate(LANGUAGES):
    same, other = weather[i] @ weather[english], weather[i] @ hospital[english]
    print(f"{lang:<6}{same:>12.3f}{other:>8.3f}  {'yes' if same > other else 'NO'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
