"""The package's import graph: library modules never import a command-line module.

The CLI modules are exactly those with a console entry point in ``pyproject.toml``; everything a
callback, a notebook or another command needs lives in a library module (STYLE: "a CLI module is a
thin shell").
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "scalelong"


def cli_modules() -> set[str]:
    """Dotted names of the modules behind ``[project.scripts]``."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r'^[\w-]+ = "([\w.]+):\w+"$', section, flags=re.M))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``source`` (a module of ``package``) may load,
    at any depth (``from scalelong import kappa`` counts as ``scalelong.kappa``); relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_cli_modules_are_the_console_entry_points() -> None:
    assert cli_modules() == {"scalelong.train", "scalelong.sample", "scalelong.dashboard", "scalelong.kappa",
                             "scalelong.aggregate", "scalelong.report", "scalelong.eval.cli",
                             "scalelong.bench.cli", "scalelong.transfer"}
    assert all((ROOT / (name.replace(".", "/") + ".py")).is_file() for name in cli_modules())


def test_no_module_of_the_package_imports_a_cli_module() -> None:
    clis = cli_modules()
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        offenders[name] = sorted(imported_modules(path.read_text(), package) & (clis - {name}))
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_import_check_sees_every_form_of_import() -> None:
    """The checker itself: absolute, ``from package import module``, relative and nested imports."""
    source = "import scalelong.train\nfrom scalelong import kappa\nfrom .cli import run\n" \
             "def f():\n    from ..dashboard import main\n"
    assert {"scalelong.train", "scalelong.kappa", "scalelong.eval.cli", "scalelong.dashboard.main"} \
        <= imported_modules(source, "scalelong.eval")


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (at any depth: a function-level import counts too)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in imported_modules(path.read_text(), package) if m in modules} - {name}
    return graph


def test_the_modules_import_each_other_without_a_cycle() -> None:
    """A cycle hidden behind a function-level import still makes two modules one: none is allowed."""
    graph, done, cycles = import_graph(), set(), []

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []
