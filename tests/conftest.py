"""Test setup: 8 fake CPU devices (for sharding tests), offline hubs, data dir, markers.

Markers (setup.cfg): `fast` (the developer tier, `python -m pytest -m fast`), `data`
(needs the raw data; every test that asks for the `data_dir` fixture gets it too, and
all of them are skipped with one reason when the data directory is absent), `torch`,
`gpu`, `slow` (deselected by default). A test is never both `fast` and `slow`.
"""
import functools
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

from data_pipelines import datadir  # noqa: E402
from data_pipelines.errors import DataError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def data_dir_problem() -> str | None:
  """Why the raw data are unavailable (None when they are there), resolved as
  `datadir.resolve_data_dir` does: $MLIR_DATA_DIR, else ../shared/data."""
  try:
    path = datadir.resolve_data_dir()
  except DataError as e:
    return str(e)
  if not any(path.glob("*/SOURCES.txt")):
    return f"{path} holds no data folders (no */SOURCES.txt)"
  return None


def skip_reason(problem: str) -> str:
  return f"needs the raw data (../shared/data or $MLIR_DATA_DIR): {problem}"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m data` sees the added marks
def pytest_collection_modifyitems(config, items):
  problem = data_dir_problem()
  for item in items:
    if "data_dir" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.data)
    if item.get_closest_marker("fast") and item.get_closest_marker("slow"):
      raise pytest.UsageError(f"{item.nodeid} is marked both fast and slow")
    if problem and item.get_closest_marker("data"):
      item.add_marker(pytest.mark.skip(reason=skip_reason(problem)))


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  """The raw public data: $MLIR_DATA_DIR, else ../shared/data beside the repo."""
  problem = data_dir_problem()
  if problem:
    pytest.skip(skip_reason(problem))
  return datadir.resolve_data_dir()


@pytest.fixture(scope="module")
def tiny_model():
  """The tiny random encoder (`models.tiny_random_model(0)`), once per module."""
  from mlir_train import models
  return models.tiny_random_model(seed=0)


@pytest.fixture(scope="module")
def tokenizer():
  """The tiny random model's tokenizer."""
  from mlir_train import models
  return models.tiny_random_model(0).tokenizer


@pytest.fixture
def saved_figures(monkeypatch) -> dict:
  """{file name: matplotlib Figure} of every figure saved during the test (Agg backend)."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  figures, save = {}, Figure.savefig

  def record(fig, path, *args, **kwargs):
    figures[str(path).rsplit("/", 1)[-1]] = fig
    return save(fig, path, *args, **kwargs)

  monkeypatch.setattr(Figure, "savefig", record)
  return figures
