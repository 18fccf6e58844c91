"""Run configurations as Python (`get_config`), and `value`: one home for config defaults;
`key_help`: each key's meaning, from the same file."""
import ast
import functools
import inspect
import io
import tokenize


@functools.cache
def _defaults():
  from configs import default
  return default.get_config()


def value(config, key: str):
  """`config`'s value of `key`, else configs/default.py's (None for a key it lacks).

  For code that accepts partial configs (a dict, a SimpleNamespace, an older
  ConfigDict): defaults are written once, in configs/default.py.
  """
  if hasattr(config, "get"):
    found = config.get(key, _MISSING)
  else:
    found = getattr(config, key, _MISSING)
  if found is not _MISSING:
    return found
  return _defaults().get(key)


_MISSING = object()


def split_list(text) -> list[str]:
  """A comma-separated config or flag value as a list: "de, en," -> ["de", "en"];
  a list or tuple is returned as a list, None or "" as []."""
  if text is None:
    return []
  if isinstance(text, (list, tuple)):
    return [str(t).strip() for t in text if str(t).strip()]
  return [t.strip() for t in str(text).split(",") if t.strip()]


@functools.cache
def key_help() -> dict[str, str]:
  """{key: its one-line meaning}: the comment that ends each `c.KEY = ...` line of
  configs/default.py, in its order (the one source of `mlir_train.train --help`).
  A key without such a comment is missing here (tests/test_console.py checks none is)."""
  from configs import default
  source = inspect.getsource(default)
  comments = {tok.start[0]: tok.string.lstrip("#").strip()
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT}
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      target = node.targets[0]
      if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
          and target.value.id == "c" and node.end_lineno in comments):
        found.append((node.lineno, target.attr, comments[node.end_lineno]))
  return {key: text for _, key, text in sorted(found)}
