"""``scripts/certificate_bound.py`` on a small ``ss_logreg`` run with phase files.

The reference is a copy of the new run; moving one refit's parameters in the reference by
half of its certificate bound (g_a + g_b) / mu passes, by twice the bound fails (exit 1);
mu comes from ``GroupInfluence.refit_curvature``, itself checked against an autodiff
Hessian in tests/influence/test_group_influence.py.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments.subset_influence import SubsetInfluenceLogreg, build_config
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "certificate_bound.py"
RETRAIN = "result_6-retrain.npz"


def _bound(ref, new):
    return subprocess.run([sys.executable, str(SCRIPT), "--ref-dir", str(ref), "--new-dir", str(new)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("bound")
    cfg = build_config(dataset_id="breast_cancer", data_dir=str(root / "data"), subset_choice_type="range",
                       num_subsets=3, max_memory=int(1e8))
    exp = SubsetInfluenceLogreg(cfg, out_dir=root / "new" / "bc" / "out", progress=False)
    exp.run()
    shutil.copytree(root / "new", root / "ref")
    run = next((root / "new" / "bc" / "out" / "ss_logreg").iterdir())
    exp.load_phases(range(0, 7))
    return root, run, exp


def _moved_reference(root, run, exp, factor, j=2):
    """The reference with group j's refit moved by ``factor`` times its certificate bound."""
    ref_file = root / "ref" / run.relative_to(root / "new") / RETRAIN
    with np.load(run / RETRAIN, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    g = arrays["subset_refit_grad_norm"][j]
    mu = exp.influence().refit_curvature(exp.subsets[j], arrays["subset_refit_params"][j])
    v = np.random.RandomState(0).normal(size=arrays["subset_refit_params"].shape[1])
    arrays["subset_refit_params"][j] += factor * (2 * g / mu) * v / np.linalg.norm(v)
    np.savez(ref_file, **arrays)


def test_identical_runs_have_no_refit_to_check(run_pair):
    root, run, exp = run_pair
    out = _bound(root / "ref", root / "new")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 refits differ beyond rel, 0 outside the certificate bound" in out.stdout


def test_a_refit_within_its_certificate_bound_passes_and_one_beyond_fails(run_pair):
    root, run, exp = run_pair
    _moved_reference(root, run, exp, 0.5)
    out = _bound(root / "ref", root / "new")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 refits differ beyond rel, 0 outside the certificate bound" in out.stdout
    _moved_reference(root, run, exp, 2.0)
    out = _bound(root / "ref", root / "new")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 refits differ beyond rel, 1 outside the certificate bound" in out.stdout
    assert "FAIL" in out.stdout


def test_folders_without_runs_are_refused(tmp_path):
    out = _bound(tmp_path / "ref", tmp_path / "new")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--new-dir: no ss_logreg run with phase files" in out.stderr
