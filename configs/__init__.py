"""Run configurations as Python (`get_config`), and `value`: one home for config defaults."""
import functools


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
