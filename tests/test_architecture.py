"""The package's layering, read from the source with ``ast`` (nothing is imported or executed).

Every ``import`` / ``from ... import`` under ``src/genrep`` counts, wherever it stands: at the top
of a module, inside a function or method, under ``if TYPE_CHECKING``. Relative imports are resolved
against the importing module; ``from genrep.x import y`` is an import of the module ``genrep.x.y``
when that is a module, else of ``genrep.x``. The rules:

- the systems ``genrep.rae``, ``genrep.lco`` and ``genrep.diting`` never import one another;
- ``genrep.core`` (and the ``genrep`` package itself) import no system;
- only the front doors ``genrep.cli``, ``genrep.demo`` and ``genrep.__main__`` may import every
  system, and nothing imports a front door except another front door;
- there is no import cycle among genrep modules, counting the imports inside functions (which is
  where a cycle would otherwise hide).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SYSTEMS = ("genrep.rae", "genrep.lco", "genrep.diting")
CORE = "genrep.core"
FRONT_DOORS = ("genrep.cli", "genrep.demo", "genrep.__main__")

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of its first import}


def modules_under(src: Path, package: str = "genrep") -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every ``.py`` file of ``package``."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _is_ours(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict) -> list[tuple[str, str]]:
    """(the module the statement needs, the module it takes) per imported name."""
    if isinstance(node, ast.Import):
        return [(alias.name, alias.name) for alias in node.names]
    if node.level:  # relative: from the importing module's package, one level up per extra dot
        here = name.split(".") if is_package else name.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [(base, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base) for alias in node.names]


def import_graph(src: Path = SRC, package: str = "genrep") -> tuple[Graph, list[str]]:
    """The import graph of ``package`` and the imports of it that name no file of it."""
    modules = modules_under(src, package)
    graph: Graph = {name: {} for name in modules}
    unresolved = []
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for needed, target in _imported(node, name, is_package, modules):
                if not _is_ours(needed, package):
                    continue
                if needed not in modules:
                    unresolved.append(f"{path.relative_to(src)}:{node.lineno}: {needed}")
                elif target != name:
                    graph[name][target] = min(node.lineno, graph[name].get(target, node.lineno))
    return graph, unresolved


def layer_of(name: str) -> str:
    """``genrep.rae`` / ``genrep.lco`` / ``genrep.diting`` / ``genrep.core`` (also the bare
    ``genrep`` package), or the module itself for a front door."""
    if name == "genrep":
        return CORE
    for layer in (*SYSTEMS, CORE):
        if _is_ours(name, layer):
            return layer
    return name


def layering_violations(graph: Graph) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        mine = layer_of(source)
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            where = f"{source} (line {line}) imports {target}"
            if mine in SYSTEMS and theirs in SYSTEMS and mine != theirs:
                bad.append(f"{where}: system {mine} must not import system {theirs}")
            elif mine == CORE and theirs in SYSTEMS:
                bad.append(f"{where}: {CORE} must not import a system ({theirs})")
            elif theirs in FRONT_DOORS and mine not in FRONT_DOORS:
                bad.append(f"{where}: only a front door ({', '.join(FRONT_DOORS)}) may import one")
    return bad


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components of more than one module (iterative: no recursion limit to hit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _cycle_through(graph: Graph, start: str, members: set[str]) -> list[str]:
    """A shortest cycle from ``start`` back to it inside ``members`` (breadth first): [start, ..., start]."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")


def shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """The shortest cycle of a strongly connected component (the first in name order among equals)."""
    members = set(component)
    return min((_cycle_through(graph, start, members) for start in component), key=len)


def describe_cycle(graph: Graph, cycle: list[str], component: list[str]) -> str:
    text = " ".join([cycle[0], *(f"-> {b} (line {graph[a][b]} of {a})" for a, b in zip(cycle, cycle[1:]))])
    if len(component) > len(cycle) - 1:
        text += f"; the tangle holds {len(component)} modules: {', '.join(component)}"
    return text


def import_cycles(graph: Graph) -> list[str]:
    return [describe_cycle(graph, shortest_cycle(graph, c), c) for c in strongly_connected(graph)]


# ------------------------------------------------------------------------------------------------ the tree


def test_the_scan_reads_the_whole_package_and_every_import_resolves():
    graph, unresolved = import_graph()
    assert len(graph) >= 50, f"only {len(graph)} modules under {SRC / 'genrep'}: wrong source path?"
    assert all(_is_ours(m, "genrep") for m in graph)
    assert not unresolved, "imports of genrep modules that do not exist:\n" + "\n".join(unresolved)


def test_systems_do_not_import_each_other_and_core_imports_no_system():
    graph, _ = import_graph()
    bad = layering_violations(graph)
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_no_import_cycles_even_through_imports_inside_functions():
    graph, _ = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles among genrep modules:\n" + "\n".join(cycles)


# ------------------------------------------------------------------------------------------------ the checker


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_sees_relative_and_in_function_imports(tmp_path):
    src = _write(
        tmp_path,
        {
            "genrep/__init__.py": "",
            "genrep/cli.py": "from genrep.rae import a\nfrom genrep.lco import b\n",
            "genrep/core/__init__.py": "",
            "genrep/core/util.py": "def f():\n    from genrep.lco.b import g\n",
            "genrep/rae/__init__.py": "",
            "genrep/rae/a.py": "from . import c\nimport genrep.core.util as u\n",
            "genrep/rae/c.py": "def f():\n    from .a import x\n",
            "genrep/lco/__init__.py": "",
            "genrep/lco/b.py": "from ..rae.c import f\nfrom genrep import __version__\n",
            "genrep/lco/d.py": "from genrep.nothing import x\n",
        },
    )
    graph, unresolved = import_graph(src)
    assert graph["genrep.rae.a"] == {"genrep.rae.c": 1, "genrep.core.util": 2}
    assert graph["genrep.rae.c"] == {"genrep.rae.a": 2}
    assert graph["genrep.lco.b"] == {"genrep.rae.c": 1, "genrep": 2}
    assert unresolved == ["genrep/lco/d.py:1: genrep.nothing"]
    bad = layering_violations(graph)
    assert any("genrep.lco.b (line 1) imports genrep.rae.c: system genrep.lco must not import" in b for b in bad)
    assert any("genrep.core.util (line 2) imports genrep.lco.b: genrep.core must not import" in b for b in bad)
    assert not any(b.startswith("genrep.cli") for b in bad)
    assert import_cycles(graph) == [
        "genrep.rae.a -> genrep.rae.c (line 1 of genrep.rae.a) -> genrep.rae.a (line 2 of genrep.rae.c); "
        "the tangle holds 4 modules: genrep.core.util, genrep.lco.b, genrep.rae.a, genrep.rae.c"
    ]


def test_the_checker_names_a_longer_cycle_and_a_front_door_import(tmp_path):
    src = _write(
        tmp_path,
        {
            "genrep/__init__.py": "",
            "genrep/demo.py": "",
            "genrep/diting/__init__.py": "",
            "genrep/diting/x.py": "import genrep.diting.y\n",
            "genrep/diting/y.py": "\n\ndef f():\n    import genrep.diting.z\n",
            "genrep/diting/z.py": "from genrep.diting import x\nfrom genrep import demo\n",
        },
    )
    graph, _ = import_graph(src)
    assert import_cycles(graph) == [
        "genrep.diting.x -> genrep.diting.y (line 1 of genrep.diting.x) "
        "-> genrep.diting.z (line 4 of genrep.diting.y) "
        "-> genrep.diting.x (line 1 of genrep.diting.z)"
    ]
    assert layering_violations(graph) == [
        "genrep.diting.z (line 2) imports genrep.demo: only a front door "
        "(genrep.cli, genrep.demo, genrep.__main__) may import one"
    ]
