"""``pip install -e .`` into a fresh virtual environment, then ``import influence`` from
another folder: it works, prints nothing (not even TensorFlow's start-up notices), and
installs only the ``influence`` package (a top-level ``datasets`` would shadow Hugging
Face's). The fresh environment sees this environment's packages through a ``.pth`` file
and installs with ``--no-deps --no-build-isolation``, so no package index is needed."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROBE = r"""
import importlib.util, sys
import influence
from influence.sklearn_api import InfluenceLogisticRegression
from sklearn.datasets import load_breast_cancer
X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(0)) / X.std(0)
est = InfluenceLogisticRegression(C=1.0).fit(X[:100], y[:100])
table = est.group_effects([list(range(5))], X[100:110], y[100:110])
origins = {name: getattr(importlib.util.find_spec(name), "origin", None) for name in ("datasets", "experiments")}
sys.stderr.write(f"RESULT {influence.__file__} {len(table)} {origins}\n")
"""


def run(cmd, cwd, env):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # a virtual environment and an editable build (about 30 s on a loaded machine)
def test_pip_install_editable_into_a_fresh_venv_then_import_prints_nothing(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "INFLUENCE_TF_NOISE", "VIRTUAL_ENV")}
    proc = run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    (Path(purelib.stdout.strip()) / "shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
                str(REPO_ROOT)], tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run([str(python), "-c", "import influence"], elsewhere, env)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    proc = run([str(python), "-c", PROBE], elsewhere, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr  # TensorFlow said nothing
    assert proc.stderr.startswith(f"RESULT {REPO_ROOT / 'influence' / '__init__.py'} 2 ")
    for name in ("datasets", "experiments"):  # not installed: the checkout's packages stay out of sys.path
        assert f"'{name}': None" in proc.stderr or str(REPO_ROOT / name) not in proc.stderr, proc.stderr
