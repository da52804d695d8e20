"""What may import what: the benchmarks and the tests both import the sandbox, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_benchmarks_import_nothing_from_the_tests() -> None:
    found = {"%s: %s" % (path.relative_to(REPO), name) for path in sorted((REPO / "bench").glob("*.py"))
             for name in imported(path) if name == "tests" or name.startswith("tests.")}
    assert found == set()
