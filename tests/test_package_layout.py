"""The package layout: no import circles between rednet_jax modules (imports inside functions
included), and models/ stands alone."""

import ast
import os

import rednet_jax

PACKAGE_DIR = os.path.dirname(rednet_jax.__file__)
GROUPS = ("models", "training", "evaluation", "inference")


def _modules() -> dict[str, str]:
  found = {}
  for directory, _, files in os.walk(PACKAGE_DIR):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(parts)] = path
  return found


def _import_graph() -> dict[str, set[str]]:
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    targets = set()
    for node in ast.walk(tree):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
      for name in names:
        # The module itself, or the package an imported name belongs to.
        while name and name not in modules:
          name = name.rpartition(".")[0]
        if name and name != module:
          targets.add(name)
    graph[module] = targets
  return graph


def test_no_import_circles():
  graph = _import_graph()
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycle = stack[stack.index(nxt):] + [nxt]
        raise AssertionError("import circle: " + " -> ".join(cycle))
      if nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module)


def test_models_import_nothing_from_training_evaluation_or_inference():
  for module, targets in _import_graph().items():
    group = module.split(".")[1] if module.count(".") else ""
    if group == "models":
      bad = [t for t in targets if t.split(".")[1:2] and t.split(".")[1] in GROUPS
             and t.split(".")[1] != "models"]
      assert not bad, f"{module} imports {bad}: models/ must stand alone"
