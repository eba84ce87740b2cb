"""The package's shape (DESIGN.md): rooms grouped by the stage of a run, imports that run
one way and never in a cycle, a short tower of imports, each module with one job stated in
its opening docstring and at most 600 lines, and code outside a module (tests, benchmarks,
scripts, notebooks, other modules) using only its public names."""

from __future__ import annotations

import ast
import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "vae_jax")
MAX_LINES = 600   # a model family may run to 600 lines in a file (DESIGN.md)
MAX_FLOORS = 8    # the longest chain of imports inside the package, in modules
MAX_ROOMS = 20    # top-level modules and packages of vae_jax, its root and py.typed aside

# Layers, top to bottom: a module may import its own layer or any layer below, never one
# above (DESIGN.md, "What flows where"). Keys are the rooms: the top-level modules and
# packages under vae_jax. The config schema imports nothing above models, losses and data.
LAYERS = [
    {"cli"},
    {"run"},
    {"train", "evaluate"},
    {"config"},
    {"models", "data", "losses"},
    {"distributions"},
    {"ops", "errors", "precision", "parallel", "progress"},
]


def _modules() -> dict[str, str]:
    """{"vae_jax.x.y": path} for every module of the package."""
    out = {}
    for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
    """The vae_jax modules that ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    found.add(full)
                elif node.module in modules:
                    found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()
            if name != "vae_jax"}  # the package root only re-exports the public surface


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    done: set[str] = set()

    def visit(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done and (found := visit(node, [node])):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_can_fail(tmp_path):
    """A cycle through a lazy import inside a function is found."""
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from vae_jax import b\n")
    assert _imports(str(path), {"vae_jax.a": "", "vae_jax.b": ""}) == {"vae_jax.b"}


def _longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain [a, b, ...] (a imports b, ...) of an acyclic ``graph``."""
    best: dict[str, list[str]] = {}

    def chain(node):
        if node not in best:
            below = [chain(n) for n in sorted(graph.get(node, ()))]
            best[node] = [node] + max(below, key=len, default=[])
        return best[node]

    return max((chain(n) for n in sorted(graph)), key=len, default=[])


def test_the_tower_of_imports_is_short():
    chain = _longest_chain(_graph())
    assert len(chain) <= MAX_FLOORS, f"{len(chain)} floors: " + " -> ".join(chain)


def test_the_chain_check_can_fail():
    assert _longest_chain({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == ["a", "b", "c"]


def test_the_package_has_few_rooms_each_with_a_layer():
    rooms = {name for name in os.listdir(PACKAGE) if not name.startswith(("_", "."))
             and name != "py.typed"}
    rooms = {r[:-3] if r.endswith(".py") else r for r in rooms}
    assert len(rooms) <= MAX_ROOMS, sorted(rooms)
    assert rooms == set().union(*LAYERS), rooms ^ set().union(*LAYERS)


def test_imports_run_one_way():
    every_module = set(_modules()) - {"vae_jax"}
    named = set().union(*LAYERS)
    assert {m.split(".")[1] for m in every_module} <= named, "a module with no layer"
    upward = [(a, b) for a, deps in _graph().items() for b in deps
              if _layer(b) < _layer(a)]
    assert not upward, f"modules importing one above them: {upward}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_each_module_is_small_and_says_its_job(module):
    path = _modules()[module]
    source = open(path).read()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{module}: {lines} lines (split it by job; max {MAX_LINES})"
    doc = ast.get_docstring(ast.parse(source))
    assert doc and len(doc.split()) >= 5, f"{module}: no opening docstring saying its job"


def _private_uses(source: str, modules: set[str]) -> list[str]:
    """``mod._name`` where ``mod`` is bound to a vae_jax module in ``source``."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vae_jax"):
                    bound[a.asname or a.name.split(".")[0]] = a.asname and a.name or "vae_jax"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "vae_jax"):
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
                if a.name.startswith("_"):
                    return [f"from {node.module} import {a.name}"]
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                out.append(f"{base.id}...{node.attr} (line {node.lineno})")
    return out


def _outside_code() -> dict[str, str]:
    files = (glob.glob(os.path.join(ROOT, "tests", "*.py"))
             + glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
             + glob.glob(os.path.join(ROOT, "scripts", "*.py"))
             + glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True)
             + list(_modules().values()))
    out = {os.path.relpath(f, ROOT): open(f).read() for f in files}
    for nb in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")):
        cells = json.load(open(nb))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        out[os.path.relpath(nb, ROOT)] = "\n".join(
            line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    return out


def test_only_public_names_cross_module_boundaries():
    modules = set(_modules())
    bad = {path: uses for path, src in _outside_code().items()
           if (uses := _private_uses(src, modules))}
    assert not bad, f"private names used outside their module: {bad}"


def test_the_private_name_check_can_fail():
    private = "_" + "keys"  # built, so that no checker reads this probe as a real use
    src = f"from vae_jax import train\nkeys = train.{private}(0)\n"
    assert _private_uses(src, set(_modules())) == ["train..._keys (line 2)"]
