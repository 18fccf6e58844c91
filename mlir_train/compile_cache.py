"""JAX's persistent compilation cache, in the project cache directory.

`enable()` points `jax_compilation_cache_dir` at
`${MLIR_TRAIN_CACHE:-~/.cache/mlir_train}/jax_cache`, so a second run of the
same training / evaluation / export on the same machine and jax version
loads its XLA executables from disk instead of compiling them again. Call it
before the first compilation (the entry points' `main` do).

Environment:
  JAX_COMPILATION_CACHE_DIR      a directory set here by the user wins (jax reads it itself)
  MLIR_COMPILATION_CACHE=0       turn the cache off
(Off as well for several CPU devices in one job: see `enable`.)
  MLIR_COMPILE_CACHE_MIN_SECS    cache only programs that took at least this long to
                                 compile (default 0.5; jax's own default is 1.0)

The cache is trusted input (it holds executables): keep it private to the user.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re

DEFAULT_MIN_COMPILE_SECS = 0.5


def cache_dir() -> pathlib.Path:
  root = os.environ.get("MLIR_TRAIN_CACHE") or pathlib.Path.home() / ".cache" / "mlir_train"
  return pathlib.Path(root) / "jax_cache"


def local_cpu_devices() -> int:
  """CPU devices per process that XLA_FLAGS / jax's config ask for, without starting a
  backend (`jax.distributed.initialize` must come first)."""
  import jax
  flags = re.findall(r"--xla_force_host_platform_device_count=(\d+)",
                     os.environ.get("XLA_FLAGS", ""))
  count = int(flags[-1]) if flags else 1
  return max(count, int(getattr(jax.config, "jax_num_cpu_devices", -1) or -1))


def enable(directory: str | os.PathLike | None = None,
           min_compile_time_secs: float | None = None) -> pathlib.Path | None:
  """Turn on the persistent compilation cache; returns its directory (None: off)."""
  import jax

  if os.environ.get("MLIR_COMPILATION_CACHE", "1").strip().lower() in ("0", "false", "off"):
    return None
  cpu_devices = local_cpu_devices()
  if cpu_devices > 1:
    # Executables loaded from the cache with in-process CPU collectives (several CPU
    # devices in one process) sometimes deadlock in their rendezvous and abort
    # ("Termination timeout ... only 7 of them arrived"; jaxlib 0.10.2, about 1 run in
    # 10 on 2 cores). Compiling is safe; loading is not.
    jax.config.update("jax_enable_compilation_cache", False)
    logging.warning("compilation cache off: %d CPU devices in this process (cached "
                    "executables with CPU collectives can deadlock)", cpu_devices)
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
