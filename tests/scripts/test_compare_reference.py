"""``scripts/compare_reference.py`` on a cheap workload (the ortho2 counterexample).

Record a reference, rerun it with the same code and compare (must pass: the run is
deterministic); then change the new outputs the ways a refactor could and check that the
comparison fails naming the key: a float value moved by 1e-8 relative, an integer value
changed, a key removed, a file removed, a refit certificate broken. A move of 1e-13
relative (rounding level) passes, and so does a certificate that changes but still holds.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "compare_reference.py"
RUN = "out/counterexamples/ortho2"
PHASE3 = f"{RUN}/result_3-retrain_and_newton.npz"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare_reference")
    rec = _run("record", "--ref-dir", root / "ref", "--workloads", "ortho2")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    cmp = _run("compare", "--ref-dir", root / "ref", "--new-dir", root / "new")
    return root, cmp


def _copy(root, name):
    dst = root / name
    shutil.copytree(root / "new", dst, symlinks=True)
    return dst / "ortho2"


def _edit_npz(path, fn):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    np.savez(path, **arrays)


def _compare_no_run(root, new):
    return _run("compare", "--ref-dir", root / "ref", "--new-dir", root / new, "--no-run")


def test_record_writes_the_manifest(recorded):
    root, _ = recorded
    manifest = json.loads((root / "ref" / "manifest.json").read_text())
    w = manifest["workloads"]["ortho2"]
    assert w["steps"][0]["command"][1:4] == ["scripts/counterexamples.py", "--dataset-id", "ortho2"]
    assert w["wall_seconds"] > 0 and len(manifest["git_commit"]) == 40
    assert (root / "ref" / "ortho2" / PHASE3).is_file() and (root / "ref" / "ortho2" / RUN / "config.json").is_file()


def test_identical_code_passes(recorded):
    root, cmp = recorded
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    row = next(line for line in cmp.stdout.splitlines() if line.startswith("ortho2 "))
    files, keys, bitwise = map(int, row.split()[1:4])
    assert files == 7 and keys > 50 and bitwise == keys  # the run is deterministic: every key bitwise equal
    assert row.endswith("PASS") and "PASS: 1 of 1 workloads unchanged" in cmp.stdout
    assert "ortho2/counterexamples" in cmp.stdout  # wall times side by side


def test_value_moved_by_1e_8_relative_fails_naming_the_key(recorded):
    root, _ = recorded
    wdir = _copy(root, "moved")

    def move(a):
        d = a["subset_dparam"]
        i = np.unravel_index(np.argmax(np.abs(d)), d.shape)
        d[i] *= 1 + 1e-8
    _edit_npz(wdir / PHASE3, move)
    out = _compare_no_run(root, "moved")
    assert out.returncode == 1
    assert f"FAIL {PHASE3} :: subset_dparam [rel]" in out.stdout
    assert "FAIL: 0 of 1 workloads unchanged" in out.stdout


def test_rounding_level_move_passes(recorded):
    root, _ = recorded
    wdir = _copy(root, "rounding")

    def move(a):
        a["subset_dparam"][0, 0] *= 1 + 1e-13
    _edit_npz(wdir / PHASE3, move)
    out = _compare_no_run(root, "rounding")
    assert out.returncode == 0, out.stdout
    assert f"ok   {PHASE3} :: subset_dparam [rel]" in out.stdout


def test_integer_change_fails(recorded):
    root, _ = recorded
    wdir = _copy(root, "iters")

    def bump(a):
        a["subset_refit_iters"][3] += 1
    _edit_npz(wdir / PHASE3, bump)
    out = _compare_no_run(root, "iters")
    assert out.returncode == 1 and f"FAIL {PHASE3} :: subset_refit_iters [exact]" in out.stdout


def test_removed_key_and_file_fail(recorded):
    root, _ = recorded
    wdir = _copy(root, "removed")

    def drop(a):
        del a["subset_newton_pred_dparam"]
        meta = json.loads(str(a["__meta__"][()]))
        del meta["kinds"]["subset_newton_pred_dparam"]
        a["__meta__"] = np.array(json.dumps(meta))
    _edit_npz(wdir / PHASE3, drop)
    (wdir / RUN / "result_5-compute_test_infl.npz").unlink()
    out = _compare_no_run(root, "removed")
    assert out.returncode == 1
    assert f"{PHASE3}: key subset_newton_pred_dparam only in reference" in out.stdout
    assert f"file {RUN}/result_5-compute_test_infl.npz only in reference" in out.stdout


def test_refuses_to_reuse_existing_outputs(recorded):
    root, _ = recorded
    out = _run("compare", "--ref-dir", root / "ref", "--new-dir", root / "new")
    assert out.returncode != 0 and "exists" in out.stderr


def test_certificate_may_change_while_certified(recorded):
    root, _ = recorded
    wdir = _copy(root, "certified")

    def halve(a):
        a["subset_refit_grad_norm"] *= 0.5
    _edit_npz(wdir / PHASE3, halve)
    out = _compare_no_run(root, "certified")
    assert out.returncode == 0, out.stdout
    assert f"ok   {PHASE3} :: subset_refit_grad_norm [certificate]" in out.stdout and "certified" in out.stdout
    wdir = _copy(root, "uncertified")

    def break_certificate(a):
        a["subset_refit_grad_norm"][0] = 2 * a["subset_refit_grad_tol"][0]
    _edit_npz(wdir / PHASE3, break_certificate)
    out = _compare_no_run(root, "uncertified")
    assert out.returncode == 1 and f"FAIL {PHASE3} :: subset_refit_grad_norm [certificate]" in out.stdout
