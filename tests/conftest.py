"""Test setup: 8 fake CPU devices (for sharding tests), offline hubs, data dir."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never read or write the user's persistent compilation cache (a `main` called in
# process would switch it on); tests/test_compile_cache.py turns it on in its own dirs.
os.environ.setdefault("MLIR_COMPILATION_CACHE", "0")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The raw public data beside the repo (../shared/data) or $MLIR_DATA_DIR."""
  path = pathlib.Path(os.environ.get("MLIR_DATA_DIR", REPO.parent / "shared" / "data"))
  if not path.is_dir():
    pytest.fail(f"data directory {path} not found; set MLIR_DATA_DIR")
  return path
