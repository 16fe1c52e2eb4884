"""Imports point down: the generic helpers in utils/ use none of the packages built on them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPPER = {"retrieval", "datasets", "networks", "training", "benchmarks", "test", "train", "demo", "visualize"}


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_utils_imports_no_upper_package():
    found = {f"{path.name}: {name}" for path in sorted((ROOT / "utils").glob("*.py"))
             for name in imported_modules(path) if name.split(".")[0] in UPPER}
    assert not found


def test_retrieval_imports_no_script():
    scripts = {"test", "train", "demo", "visualize", "benchmarks"}
    found = {f"{path.name}: {name}" for path in sorted((ROOT / "retrieval").glob("*.py"))
             for name in imported_modules(path) if name.split(".")[0] in scripts}
    assert not found
