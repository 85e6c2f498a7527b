"""The package's module graph: every module imports on its own, no cycles, no private imports."""

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
    for sub in ("data.source", "data.cache", "nn.model", "training.rundir", "inference.parts",
                "evaluation.metrics", "config", "errors", "cli"):
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


def test_module_level_imports_have_no_cycle():
    known = set(_modules())
    graph = {name: set() for name in known}
    for name in known:
        for module, names, top in _gzmorph_imports(name):
            if top:
                graph[name] |= _resolve(module, names, known) - {name}
    # Package __init__ modules are entered before their submodules: ignore parent edges.
    graph = {k: {v for v in vs if not k.startswith(v + ".")} for k, vs in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_function_imports_have_no_cycle_either():
    """Imports inside functions may defer cost, not hide a cycle between modules."""
    known = set(_modules())
    graph = {name: set() for name in known}
    for name in known:
        for module, names, _ in _gzmorph_imports(name):
            graph[name] |= _resolve(module, names, known) - {name}
    graph = {k: {v for v in vs if not k.startswith(v + ".")} for k, vs in graph.items()}
    cycles = [f"{a} <-> {b}" for a in graph for b in graph[a] if a in graph.get(b, ()) and a < b]
    assert not cycles, cycles
