"""The house's layers as a checked contract: every import of our own modules (at the top of a module or
inside a function) points down the floors, and no module imports itself back through others (no cycles).

    launch.py                      top floor: the command line
    demo/                          the embedded micro replication (uses the library, never used by it)
    sweeps/                        study files, grids, dispatch (uses scaling, analysis, common)
    scaling/   analysis/           one training run | fits and reports (each uses only common)
    common/                        contracts every package shares (uses nothing of ours)
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = {"common": 0, "scaling": 1, "analysis": 1, "sweeps": 2, "demo": 3, "launch": 4}


def _module(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(path: Path, root: Path) -> set[str]:
    """Our modules that `path` imports (absolute or relative, anywhere in the file)."""
    here = _module(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
                names = [f"{stem}.{a.name}" for a in node.names] + [stem]
            else:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name and name.split(".")[0] in FLOOR:
                out.add(name)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    packages = [p for p in FLOOR if p != "launch" and (root / p).is_dir()]
    files = [root / "launch.py"] + [p for pkg in packages for p in (root / pkg).rglob("*.py")]
    modules = {_module(p, root): p for p in files}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for t in _targets(path, root):   # `from pkg import mod` names a module; `from mod import func` its module
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                deps.add(t)
        graph[name] = deps
    return graph


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, deps in graph.items():
        for b in deps:
            fa, fb = FLOOR[a.split(".")[0]], FLOOR[b.split(".")[0]]
            if fa < fb or (fa == fb and a.split(".")[0] != b.split(".")[0]):
                bad.append(f"{a} -> {b}")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_imports_point_down_the_floors():
    assert wrong_way(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_check_catches_a_wrong_arrow(tmp_path):
    """The contract fails on a new arrow the wrong way (scaling importing sweeps) and on a cycle."""
    for pkg in ("common", "scaling", "sweeps"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "launch.py").write_text("import sweeps.a\n")
    (tmp_path / "common" / "c.py").write_text("x = 1\n")
    (tmp_path / "sweeps" / "a.py").write_text("from scaling import b\nfrom . import d\n")
    (tmp_path / "sweeps" / "d.py").write_text("def f():\n    from .a import g\n")
    (tmp_path / "scaling" / "b.py").write_text("def f():\n    from sweeps.a import g\n")
    graph = import_graph(tmp_path)
    assert wrong_way(graph) == ["scaling.b -> sweeps.a"]
    assert any({"sweeps.a", "sweeps.d"} <= set(c) for c in cycles(graph))
