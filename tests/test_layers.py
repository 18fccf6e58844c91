"""Dependencies run one way: configs <- data_pipelines <- mlir_train <- eval <- study; no
folder imports one above it, and no two modules import each other (directly or in a circle)."""
import ast
import pathlib

import pytest

pytestmark = [pytest.mark.fast]

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ["configs", "data_pipelines", "mlir_train", "eval", "study"]


def _imports(path: pathlib.Path) -> set[str]:
  """Project modules a file imports (anywhere in it, local imports included)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found |= {f"{node.module}.{a.name}" for a in node.names}
  modules = {str(p.relative_to(REPO).with_suffix("")).replace("/", ".")
             for layer in LAYERS for p in (REPO / layer).rglob("*.py")}
  return {m for m in found if m in modules and not m.endswith("__init__")}


def _graph() -> dict[str, set[str]]:
  graph = {}
  for layer in LAYERS:
    for path in (REPO / layer).rglob("*.py"):
      name = str(path.relative_to(REPO).with_suffix("")).replace("/", ".")
      graph[name] = _imports(path) - {name}
  return graph


def test_no_folder_imports_one_above_it():
  rank = {layer: i for i, layer in enumerate(LAYERS)}
  upward = [(a, b) for a, deps in _graph().items() for b in deps
            if rank[b.split(".")[0]] > rank[a.split(".")[0]]]
  assert upward == []


def test_no_import_cycles():
  graph, state, cycles = _graph(), {}, []

  def visit(node, path):
    state[node] = "open"
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
      elif dep not in state:
        visit(dep, path + [dep])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert cycles == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
  """The graph is real: eval.run imports mlir_train and data_pipelines, study imports eval."""
  graph = _graph()
  assert "mlir_train.encode" in graph["eval.run"] and "eval.benchmarks" in graph["study.summaries"]
