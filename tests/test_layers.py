"""The layers of the README's Architecture section, checked on the source.

``influence/`` <- ``datasets/`` <- ``experiments/`` <- ``scripts/``, ``notebooks/``,
``codalab/``: no import of our own packages runs upward, none hides inside a function (a
lazy import is how a cycle is usually dodged), and nothing outside ``scripts/_bootstrap.py``
edits ``sys.path`` on import. No module outside ``influence/`` touches the model's private
tensors (``_tensors``).
"""
import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

RANK = {"influence": 0, "datasets": 1, "experiments": 2, "scripts": 3}
PACKAGES = ("influence", "datasets", "experiments")


def _modules(*packages):
    for pkg in packages:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            yield pkg, path, ast.parse(path.read_text(), filename=str(path))


def _own_imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.split(".")[0] in RANK:
                yield node, name


def _where(path: Path, node) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{node.lineno}"


def test_no_import_runs_upward():
    bad = [f"{_where(path, node)} imports {name}" for pkg, path, tree in _modules(*PACKAGES)
           for node, name in _own_imports(tree) if RANK[name.split(".")[0]] > RANK[pkg]]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_own_import_hides_in_a_function():
    bad = [f"{_where(path, node)} imports {name} inside a function" for _, path, tree in _modules(*PACKAGES)
           for node, name in _own_imports(tree) if node.col_offset > 0]
    assert not bad, "hidden imports:\n" + "\n".join(bad)


def test_nothing_edits_sys_path_on_import():
    bad = []
    for _, path, tree in _modules(*PACKAGES):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                bad.append(_where(path, node))
    assert not bad, "sys.path used in: " + ", ".join(bad)


@pytest.mark.parametrize("folder", ["datasets", "experiments", "scripts", "notebooks"])
def test_private_tensors_stay_in_influence(folder):
    hits = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / folder).rglob("*")
            if p.suffix in (".py", ".ipynb") and "_tensors" in p.read_text()]
    assert not hits, f"model._tensors used outside influence/: {hits}"


def test_the_checks_can_fail(tmp_path):
    # The walkers see a nested upward import in a parsed snippet.
    tree = ast.parse("def f():\n    from experiments.common import phase\n")
    found = list(_own_imports(tree))
    assert [(n.col_offset > 0, name) for n, name in found] == [(True, "experiments.common")]
