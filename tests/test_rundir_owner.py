"""One owner of the run dir: no library code but common/rundir.py names state.json, metrics.jsonl or
result.json as a file to open (docstrings and comments may mention them)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWNED = {"state.json", "metrics.jsonl", "result.json", ".state.lock", "lease"}
OWNER = ROOT / "common" / "rundir.py"


def _code_strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def test_only_the_owner_names_run_dir_files():
    files = [ROOT / "launch.py"] + [p for pkg in ("common", "scaling", "sweeps", "analysis")
                                    for p in (ROOT / pkg).rglob("*.py")]
    offenders = []
    for path in files:
        if path == OWNER:
            continue
        for line, text in _code_strings(path):
            if text.strip() in OWNED or any(text.endswith("/" + name) for name in OWNED):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert offenders == []
