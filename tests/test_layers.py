"""The layers of the README's Architecture section, checked on the source.

``influence/`` <- ``datasets/`` <- ``experiments/`` <- ``scripts/``, ``notebooks/``,
``codalab/``: no import of our own packages runs upward, none hides inside a function (a
lazy import is how a cycle is usually dodged), and nothing outside ``scripts/_bootstrap.py``
edits ``sys.path`` on import. No module outside ``influence/`` touches the model's private
tensors (``_tensors``), and no module at all (package code, scripts, the notebook, tests)
uses a ``_private`` name of another module (the rule is stated in the comment before
``PRIVATE_SCOPE``).
"""
import ast
import json
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


# ----------------------------------------------------------------------------- private names
# No module uses a ``_private`` name of another module: package code, scripts and tests alike.
# The rule, on the source (a name is private if it starts with "_" and is not a dunder):
#
# 1. ``from m import _x`` or ``import m._x`` where ``m`` is one of our modules is a use of
#    ``m``'s private name. Exception: ``import _bootstrap`` in ``scripts/``, the scripts'
#    start-up module (it is imported for its effect, never for a name).
# 2. ``m._x`` where ``m`` is bound by an import of one of our modules is a use of ``m``'s
#    private name; so is ``setattr(m, "_x", ...)`` / ``monkeypatch.setattr(m, "_x", ...)``.
# 3. ``obj._x`` on any other object (and ``getattr``/``hasattr``/``setattr``/``delattr``
#    with the constant ``"_x"``) is a use of another module's private name when this module
#    does not define ``_x`` itself but another of our modules does. A module defines ``_x``
#    when it binds the name: ``def``/``class _x``, ``_x = ...`` (module, class or function
#    body), an argument or import alias ``_x``, or ``self._x = ...`` / ``cls._x = ...``. So a
#    subclass in another module that calls its base's ``self._helper()`` breaks the rule
#    (it should be public), while a class using its own ``self._state`` passes. The rule goes
#    by names, not types: a module that defines some ``_x`` of its own may touch another
#    object's ``_x`` unnoticed (a limit of a check on the source alone).
PRIVATE_SCOPE = ("influence", "datasets", "experiments", "scripts", "codalab", "notebooks", "tests")
OWN_TOP_LEVEL = {"influence", "datasets", "experiments", "scripts", "tests"}
ALLOWED_PRIVATE_MODULES = {"_bootstrap"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_private_names(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
    return {n for n in names if _is_private(n)}


def _own_module_names(tree) -> set[str]:
    """Local names bound to one of our modules by an import (``import m``, ``import a.b as m``,
    ``from a import m`` where ``a.m`` may be a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in OWN_TOP_LEVEL:
                    names.add(a.asname or a.name.split(".")[0])
        elif (isinstance(node, ast.ImportFrom) and node.level == 0
              and (node.module or "").split(".")[0] in OWN_TOP_LEVEL):
            names.update(a.asname or a.name for a in node.names)
    return names


def _constant_attr(call) -> tuple[ast.AST, str] | None:
    """``(object, name)`` of ``getattr(obj, "name")``-like calls (also ``monkeypatch.setattr``)."""
    func = call.func
    fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if fname in ("getattr", "hasattr", "setattr", "delattr") and len(call.args) >= 2:
        arg = call.args[1]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return call.args[0], arg.value
    return None


def private_uses(tree, own: set[str], defined_elsewhere: set[str]):
    """``(line, text, name)`` of every use of another module's private name in ``tree`` (the rule
    above); ``own`` are the private names the module defines, ``defined_elsewhere`` those
    that other modules of ours define."""
    modules = _own_module_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in OWN_TOP_LEVEL:
            for a in node.names:
                if _is_private(a.name):
                    yield node.lineno, f"from {node.module} import {a.name}", a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if a.name in ALLOWED_PRIVATE_MODULES:
                    continue
                private = [p for p in parts if _is_private(p)]
                if private and (parts[0] in OWN_TOP_LEVEL or len(parts) == 1):
                    yield node.lineno, f"import {a.name}", private[0]
        else:
            if isinstance(node, ast.Attribute):
                target, name = node.value, node.attr
            elif isinstance(node, ast.Call) and _constant_attr(node):
                target, name = _constant_attr(node)
            else:
                continue
            if not _is_private(name):
                continue
            if isinstance(target, ast.Name) and target.id in modules:
                yield node.lineno, f"{target.id}.{name}", name
            elif name not in own and name in defined_elsewhere:
                yield node.lineno, f".{name}", name


def _notebook_source(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    # IPython magics and shell escapes are not Python.
    return "\n".join(line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


def private_violations(sources: dict[str, str]) -> list[tuple[str, int, str, str]]:
    """``(file, line, text, name)`` of every cross-module private use among ``sources`` ({file: code})."""
    trees = {f: ast.parse(src, filename=f) for f, src in sources.items()}
    defined = {f: _defined_private_names(t) for f, t in trees.items()}
    out = []
    for f, tree in trees.items():
        elsewhere = set().union(*(d for g, d in defined.items() if g != f))
        out.extend((f, *use) for use in private_uses(tree, defined[f], elsewhere))
    return sorted(out)


def _project_sources() -> dict[str, str]:
    sources = {}
    for folder in PRIVATE_SCOPE:
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            rel = str(path.relative_to(REPO_ROOT))
            if path.suffix == ".py":
                sources[rel] = path.read_text()
            elif path.suffix == ".ipynb" and ".ipynb_checkpoints" not in path.parts:
                sources[rel] = _notebook_source(path)
    return sources


def test_no_private_name_is_used_across_modules():
    found = private_violations(_project_sources())
    bad = [f"{f}:{line}: {text}" for f, line, text, _ in found]
    assert not bad, "private names used outside their module (make them public):\n" + "\n".join(bad)


def test_the_private_name_check_can_fail():
    sources = {
        "pkg_a.py": "def _helper():\n    pass\n\nclass A:\n    def __init__(self):\n        self._state = 1\n"
                    "    def _method(self):\n        return self._state\n",
        "pkg_b.py": "from influence.objective import _residual\nimport influence.objective as obj\n"
                    "from datasets import common\n\n"
                    "def f(a, x):\n    obj._residual(x)\n    common._CHECK\n    a._state\n    a._method()\n"
                    "    getattr(a, '_state')\n    a.__class__\n    a._unknown_elsewhere\n    _mine = a\n"
                    "    return a._mine\n",
        "pkg_c.py": "import _bootstrap\nimport _other_private_module\n",
    }
    got = [(f, line, text) for f, line, text, _ in private_violations(sources)]
    assert got == [
        ("pkg_b.py", 1, "from influence.objective import _residual"),
        ("pkg_b.py", 6, "obj._residual"),
        ("pkg_b.py", 7, "common._CHECK"),
        ("pkg_b.py", 8, "._state"),
        ("pkg_b.py", 9, "._method"),
        ("pkg_b.py", 10, "._state"),
        ("pkg_c.py", 2, "import _other_private_module"),
    ]
