"""JAX's persistent compilation cache, in the project cache directory.

`enable()` points `jax_compilation_cache_dir` at
`${MLIR_TRAIN_CACHE:-~/.cache/mlir_train}/jax_cache`, so a second run of the
same training / evaluation / export on the same machine and jax version
loads its XLA executables from disk instead of compiling them again. Call it
before the first compilation (the entry points' `main` do).

Environment:
  JAX_COMPILATION_CACHE_DIR      a directory set here by the user wins (jax reads it itself)
  MLIR_COMPILATION_CACHE=0       turn the cache off
  MLIR_COMPILE_CACHE_MIN_SECS    cache only programs that took at least this long to
                                 compile (default 0.5; jax's own default is 1.0)

The cache is trusted input (it holds executables): keep it private to the user.
"""
from __future__ import annotations

import logging
import os
import pathlib

DEFAULT_MIN_COMPILE_SECS = 0.5


def cache_dir() -> pathlib.Path:
  root = os.environ.get("MLIR_TRAIN_CACHE") or pathlib.Path.home() / ".cache" / "mlir_train"
  return pathlib.Path(root) / "jax_cache"


def enable(directory: str | os.PathLike | None = None,
           min_compile_time_secs: float | None = None) -> pathlib.Path | None:
  """Turn on the persistent compilation cache; returns its directory (None: off)."""
  import jax

  if os.environ.get("MLIR_COMPILATION_CACHE", "1").strip().lower() in ("0", "false", "off"):
    return None
  if directory is None and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    path = pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])  # jax reads it itself
  else:
    path = pathlib.Path(directory) if directory is not None else cache_dir()
    try:
      path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
      logging.warning("compilation cache off: cannot create %s (%s)", path, e.strerror)
      return None
    jax.config.update("jax_compilation_cache_dir", str(path))
  # The thresholds apply wherever the directory came from (jax's own default, 1 s,
  # would leave out most programs a CPU compiles).
  if min_compile_time_secs is None:
    min_compile_time_secs = float(os.environ.get("MLIR_COMPILE_CACHE_MIN_SECS",
                                                 DEFAULT_MIN_COMPILE_SECS))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
