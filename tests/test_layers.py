"""Imports point down: each layer uses only the layers below it, and no code imports a script.

    utils  <  datasets, networks  <  training, retrieval  <  scripts (train, test, demo, visualize, index), benchmarks
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "test", "demo", "visualize", "index"}
# package -> the project's top-level names it may import (besides itself)
ALLOWED = {"utils": set(), "datasets": {"utils"}, "networks": {"utils"},
           "training": {"utils", "datasets", "networks"}, "retrieval": {"utils", "datasets", "networks"},
           "benchmarks": {"utils", "datasets", "networks", "training", "retrieval"}}
PROJECT = set(ALLOWED) | SCRIPTS
# package -> the modules of a sibling layer it may import as well (and nothing else of that layer)
EXCEPTIONS = {"datasets": {"networks.zoo"}}  # the models downloader fetches the files the zoo's table names


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def upward_imports(paths, allowed, exceptions=frozenset()):
    return {f"{path.relative_to(ROOT)}: {name}" for path in paths for name in imported_modules(path)
            if name.split(".")[0] in PROJECT - allowed and name not in exceptions}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    assert not upward_imports(sorted((ROOT / package).rglob("*.py")), ALLOWED[package] | {package},
                              EXCEPTIONS.get(package, frozenset()))


def test_no_script_imports_another_script():
    assert not upward_imports([ROOT / f"{script}.py" for script in sorted(SCRIPTS)], set(ALLOWED))
