"""The package's module graph: every module imports on its own, no cycles of any length, no private
imports, and no import from a lower layer of the pipeline to a higher one."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path


import gzmorph

SRC = Path(gzmorph.__file__).resolve().parent
# Modules that need an optional extra to import.
OPTIONAL = {"gzmorph.inference.ray": "ray"}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(SRC)], prefix="gzmorph."))


def _source(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    path = SRC / rel / "__init__.py"
    return path if path.exists() else (SRC / rel).with_suffix(".py")


def _gzmorph_imports(name: str) -> list[tuple[str, list[str], bool]]:
    """(imported module, imported names, at module level?) of every gzmorph import of ``name``."""
    tree = ast.parse(_source(name).read_text())
    top = set(map(id, tree.body))
    # Imports for type checkers only never run.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gzmorph":
            found.append((node.module, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names if a.name.split(".")[0] == "gzmorph"]
    return found


def test_the_package_has_the_pipeline_layout():
    names = set(_modules())
    for sub in ("data.source", "data.cache", "nn.model", "models.rundir", "models.resolve", "inference.job",
                "inference.parts", "metrics", "config", "errors", "cli"):
        assert f"gzmorph.{sub}" in names


def test_every_module_imports_on_its_own():
    """Each module imports in an interpreter holding no other gzmorph module (no hidden order)."""
    names = [n for n in _modules() if n != "gzmorph.__main__" and (n not in OPTIONAL or _has(OPTIONAL[n]))]
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for key in [k for k in sys.modules if k == 'gzmorph' or k.startswith('gzmorph.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for name in _modules():
        for module, names, _ in _gzmorph_imports(name):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and module != name:
                offenders.append(f"{name}: from {module} import {', '.join(private)}")
            if module.split(".")[-1].startswith("_") and module != "gzmorph.__main__":
                offenders.append(f"{name}: imports private module {module}")
    assert not offenders, "\n".join(offenders)


def _resolve(module: str, names: list[str], known: set[str]) -> set[str]:
    # "from gzmorph.nn import augment" imports the module gzmorph.nn.augment.
    subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
    return subs or ({module} if module in known else set())


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    """Module -> the gzmorph modules it imports (at module level only, or anywhere)."""
    known = set(_modules())
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name in known:
        for module, names, top in _gzmorph_imports(name):
            if top or not module_level_only:
                graph[name] |= _resolve(module, names, known) - {name}
    # Package __init__ modules are entered before their submodules: ignore parent edges.
    return {k: {v for v in vs if not k.startswith(v + ".")} for k, vs in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (of any length) as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path, todo = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_long_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": {"b"}}) == ["b", "c", "d", "b"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_module_level_imports_have_no_cycle():
    cycle = find_cycle(_graph(module_level_only=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_function_imports_have_no_cycle_either():
    """Imports inside functions may defer cost, not hide a cycle between modules."""
    cycle = find_cycle(_graph(module_level_only=False))
    assert cycle is None, "import cycle through a function-level import: " + " -> ".join(cycle)


# The pipeline's layers, lowest first.  A module may import its own package and the
# layers below it, never a layer above it or a peer package of its own layer.
LAYERS = [
    ["errors"],
    ["config", "runtime", "tree", "metrics"],
    ["data", "options"],
    ["nn", "mock"],
    ["models"],
    ["training", "sharing"],
    ["inference"],
    ["evaluation"],
    ["review", "demo"],
    ["commands"],
    ["cli"],
    ["__main__"],
]


def _unit(module: str) -> str:
    # gzmorph.data.source -> "data"; gzmorph.tree -> "tree"
    return module.split(".")[1]


def test_layers_cover_the_package():
    layered = {unit for layer in LAYERS for unit in layer}
    assert {_unit(m) for m in _modules()} == layered


def upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` that go to the same or a higher layer in another package."""
    rank = {unit: k for k, layer in enumerate(LAYERS) for unit in layer}
    return [f"{name} ({rank[_unit(name)]}) imports {dep} ({rank[_unit(dep)]})"
            for name, deps in sorted(graph.items()) for dep in sorted(deps)
            if _unit(dep) != _unit(name) and rank[_unit(dep)] >= rank[_unit(name)]]


def test_no_import_runs_upward_or_sideways():
    """Every import, module level or in a function, goes to a lower layer (or within a package)."""
    offenders = upward(_graph(module_level_only=False))
    assert not offenders, "\n".join(offenders)


def test_the_layer_rule_sees_the_arrows_the_model_layer_removed():
    before = {"gzmorph.training.train": {"gzmorph.sharing.resolve", "gzmorph.evaluation.metrics"},
              "gzmorph.sharing.package": {"gzmorph.training.rundir"}, "gzmorph.inference.job": {"gzmorph.data.source"}}
    assert upward(before) == ["gzmorph.sharing.package (5) imports gzmorph.training.rundir (5)",
                              "gzmorph.training.train (5) imports gzmorph.evaluation.metrics (7)",
                              "gzmorph.training.train (5) imports gzmorph.sharing.resolve (5)"]
