"""Query and passage prompts: a property of the model, not of the project.

A retriever is trained with some text in front of every query and passage (E5:
"query: " / "passage: "; LaBSE and XLM-R: nothing), and must be used with the
same text. `for_model(path_or_name, hf_config)` decides which, in this order:

  1. the model directory's `config_sentence_transformers.json` "prompts", when
     the file has that key with a non-empty prompt (an export of this project, or
     any sentence-transformers model); "query" is the query prompt, "passage"
     (else "document") the passage prompt, a missing one is "". All-empty prompts
     count as none given: sentence-transformers 6 saves {"query": "", "document": ""}
     by default, also for an E5 model re-saved with it;
  2. the E5 family ("e5-small", "multilingual-e5-base", "intfloat/e5-large-v2",
     a cache directory "e5-small-<sha>-v1", ...: "e5" as a whole word of the
     directory name or of config.json's "_name_or_path"): `E5`;
  3. otherwise none (`NONE`).

`models.LoadedModel.prompts` holds the result ({"query": str, "passage": str});
`encode.embed`, the training shards and exports use it. A training workdir
inherits its base model's prompts, with the run's `query_prompt` /
`passage_prompt` config overrides applied (`with_overrides`, None = the model's).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Mapping

from data_pipelines.errors import ProjectError

E5 = {"query": "query: ", "passage": "passage: "}
NONE = {"query": "", "passage": ""}
ST_CONFIG = "config_sentence_transformers.json"
KINDS = ("query", "passage")
# "e5" as a word: "e5-small", "multilingual-e5-base", "e5_large", "E5"; not "e52" or "xe5".
_E5_WORD = re.compile(r"(?<![a-z0-9])e5(?=[-_.]|$)")


class PromptError(ProjectError, ValueError):
  """Prompts that are not strings, or an unreadable config_sentence_transformers.json."""


def is_e5_name(name: str | os.PathLike | None) -> bool:
  """Whether the last path component of `name` names an E5 model."""
  if not name:
    return False
  base = pathlib.PurePath(str(name)).name or str(name)
  return bool(_E5_WORD.search(base.lower()))


def from_sentence_transformers(path: str | os.PathLike) -> dict[str, str] | None:
  """The prompts of `path/config_sentence_transformers.json`; None without the file or key."""
  file = pathlib.Path(path) / ST_CONFIG
  if not file.is_file():
    return None
  try:
    st_config = json.loads(file.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise PromptError(f"{file}: not valid JSON ({e})") from None
  prompts = st_config.get("prompts") if isinstance(st_config, dict) else None
  if prompts is None:
    return None
  if not isinstance(prompts, dict):
    raise PromptError(f"{file}: \"prompts\" must be an object, got {prompts!r}")
  passage = prompts.get("passage", prompts.get("document", ""))
  return check({"query": prompts.get("query", ""), "passage": passage}, str(file))


def for_model(path_or_name: str | os.PathLike, hf_config: Mapping[str, Any] | None = None
              ) -> dict[str, str]:
  """{"query": ..., "passage": ...} for a model directory or name (see the module docstring)."""
  path = pathlib.Path(str(path_or_name)).expanduser()
  if path.is_dir():
    found = from_sentence_transformers(path)
    if found is not None and any(found.values()):
      return found
  names = [str(path_or_name)]
  if hf_config and hf_config.get("_name_or_path"):
    names.append(str(hf_config["_name_or_path"]))
  if any(is_e5_name(n) for n in names):
    return dict(E5)
  return dict(NONE)


def check(prompts: Mapping[str, Any], where: str = "prompts") -> dict[str, str]:
  """A copy of `prompts` with exactly the keys "query" and "passage", both strings."""
  out = {}
  for kind in KINDS:
    value = prompts.get(kind, "")
    if not isinstance(value, str):
      raise PromptError(f"{where}: the {kind} prompt must be a string, got {value!r}")
    out[kind] = value
  return out


def with_overrides(prompts: Mapping[str, str], query: str | None = None,
                   passage: str | None = None) -> dict[str, str]:
  """`prompts` with the non-None overrides applied."""
  out = check(prompts)
  for kind, value in (("query", query), ("passage", passage)):
    if value is not None:
      out[kind] = check({kind: value}, f"config.{kind}_prompt")[kind]
  return out


def from_config(prompts: Mapping[str, str], config) -> dict[str, str]:
  """`prompts` overridden by a training config's `query_prompt` / `passage_prompt`
  (an ml_collections ConfigDict or a plain dict, e.g. a workdir's config.json)."""
  get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
  return with_overrides(prompts, get("query_prompt", None), get("passage_prompt", None))
