"""Imports point down: each layer uses only the layers below it, and no code imports a script.

    utils  <  datasets, networks  <  weights  <  training, retrieval  <  scripts (train, test, demo, visualize, index,
    hubconf), benchmarks
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "test", "demo", "visualize", "index", "hubconf"}  # hubconf.py: torch.hub's entry points
# package -> the project's top-level names it may import (besides itself)
ALLOWED = {"utils": set(), "datasets": {"utils"}, "networks": {"utils"},
           "weights": {"utils", "datasets", "networks"},
           "training": {"utils", "datasets", "networks", "weights"},
           "retrieval": {"utils", "datasets", "networks", "weights"},
           "benchmarks": {"utils", "datasets", "networks", "weights", "training", "retrieval"},
           "experiments": {"utils", "datasets", "networks", "weights", "training", "retrieval"}}
PROJECT = set(ALLOWED) | SCRIPTS
# file -> the modules of a layer above it that it may import as well (and nothing else of that layer), and why
EXCEPTIONS = {
    # the models downloader (python -m datasets.download models) fetches the files that the zoo's table names
    "datasets/download/cli.py": {"weights.zoo"},
    # `from networks import load_model, load_token`, the public names of the README and notebooks, re-exported
    # on first use (a module __getattr__): weights builds on networks, so it cannot be imported up front
    "networks/__init__.py": {"weights.checkpoint"},
    # train.py --model aggregator trains on local features extracted and stored exactly as test.py --local-features
    # extracts and stores them: the same extraction, feature store and packing, not a copy of them
    "training/local_cache.py": {"retrieval.extract", "retrieval.features", "retrieval.local_features"},
}


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def upward_imports(paths, allowed):
    return {f"{path.relative_to(ROOT)}: {name}" for path in paths for name in imported_modules(path)
            if name.split(".")[0] in PROJECT - allowed
            and name not in EXCEPTIONS.get(path.relative_to(ROOT).as_posix(), ())}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    assert not upward_imports(sorted((ROOT / package).rglob("*.py")), ALLOWED[package] | {package})


def test_each_exception_is_still_needed():
    for file, modules in EXCEPTIONS.items():
        assert modules <= set(imported_modules(ROOT / file)), file


def test_no_script_imports_another_script():
    assert not upward_imports([ROOT / f"{script}.py" for script in sorted(SCRIPTS)], set(ALLOWED))


def test_networks_re_exports_the_model_loaders_of_weights():
    import networks
    import weights
    from networks import Token, load_model, load_token  # noqa: F401, the names of the README and notebooks

    assert (load_model, load_token) == (weights.load_model, weights.load_token)
    with pytest.raises(AttributeError, match="module 'networks' has no attribute 'load_nothing'"):
        networks.load_nothing  # noqa: B018
