"""Shape of the code base: no function in `harness/` or `models/` is longer than one screen."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60  # the longest a function may be, decorators and docstring included


def long_functions(path: Path, limit: int) -> list[str]:
    """`file:line name (n lines)` of every function in `path` longer than `limit` lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > limit:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_function_finder_counts_lines(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(5))
    source.write_text(f"def short():\n    return 1\n\n\ndef longer():\n{body}\n")
    found = long_functions(source, 5)
    assert len(found) == 1 and "longer (6 lines)" in found[0] and "short" not in found[0]


def test_no_function_is_longer_than_a_screen() -> None:
    files = sorted(p for pkg in ("harness", "models") for p in (ROOT / pkg).rglob("*.py"))
    too_long = [entry for path in files for entry in long_functions(path, MAX_FUNCTION_LINES)]
    assert not too_long, "split these into named steps:\n" + "\n".join(too_long)
