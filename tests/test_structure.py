"""No import circles between orchflow's modules.

Every import counts: module level, inside functions, and under ``if TYPE_CHECKING``
(a circle there is still two modules that cannot be understood, or changed, apart).
On b788953 this found three: bus.broker <-> bus.workflow (the engine called the
broker's privates), bus.broker <-> bus.routing (AgentRecord lived in broker.py), and
neural.network <-> neural.cascade.  The first two are gone (bus/agent_record.py; the
WorkflowHost, ManageHost and ScheduleHost interfaces).  The neural one waits for the
split of neural/network.py that issue #18 asks for; KNOWN may only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bus", "agents", "neural", "store", "launcher", "bridge")
KNOWN: set[frozenset[str]] = set()


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):  # subpackages too (bus/middleware/)
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                deps.update(submodules)
                if target in modules and len(submodules) < len(node.names):
                    deps.add(target)  # names from the module itself, not submodules of a package
        deps.discard(name)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_no_import_circles_beyond_the_known_one():
    graph = import_graph()
    assert {"bus.broker", "bus.workflow", "neural.cascade"} <= set(graph)
    found = circles(graph)
    assert found <= KNOWN, f"new import circles: {[sorted(c) for c in found - KNOWN]}"


def test_every_package_is_installed():
    """``pip install .`` installs what pyproject lists, and subpackages are not implied: a
    package missing there works from a checkout and breaks the installed console scripts."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in PACKAGES
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
