"""The import graph of `harness/` and `models/`: no cycle, and every module imports on its own.

Edges are read from the source (every `import` / `from ... import` of a project module, at any
depth of the file, lazy imports inside functions included), so a cycle hidden behind a function
body is still found. A `if __name__ == "__main__":` block is not an edge: it runs only as a command.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "models")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _imported_names(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """Dotted names an import statement brings in: `from a import b` is `a.b` when that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix for alias in node.names]


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules that `path` imports (the most specific known module of each import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = [node for node in tree.body if not _is_main_guard(node)]
    found: set[str] = set()
    for top in body:
        for node in ast.walk(top):
            for name in _imported_names(node, module, path.name == "__init__.py", known):
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_and_lazy_imports_are_edges(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from . import sibling\n"
        "def f():\n    from harness.data import registry\n"
        "if __name__ == '__main__':\n    import harness.run\n"
    )
    known = {"pkg.sibling", "harness.data", "harness.data.registry", "harness.run"}
    assert imports_of(source, "pkg.mod", known) == {"pkg.sibling", "harness.data.registry"}


def test_project_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_commands_are_not_imported_by_the_library() -> None:
    """Command modules (those with a `main`) sit on top: no library module imports them."""
    commands = {"harness.run", "harness.prepare", "harness.report", "harness.plots"}
    importers = {
        (name, target) for name, targets in import_graph().items() for target in targets if target in commands
    }
    assert not {pair for pair in importers if pair[0] not in commands}, importers


def test_every_module_imports_alone() -> None:
    """Each module imports in a process where no other project module was imported before it.

    In a child process third-party packages stay cached between modules, and project modules are
    dropped from `sys.modules` before each import, so import order cannot hide a dependency.
    """
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in ('harness', 'models')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    names = sorted(name for name in project_modules() if not name.endswith(".__main__"))  # those run a command
    children = [  # two children at once: half the modules each
        subprocess.Popen([sys.executable, "-c", script, *names[half::2]], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for half in (0, 1)
    ]
    for child in children:
        output, _ = child.communicate()
        assert child.returncode == 0, output
