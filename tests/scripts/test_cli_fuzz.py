"""Fuzz the command-line flags of ``subsets_infl_logreg.py`` and ``counterexamples.py``.

Random values and types for every flag (seeded, a bounded number of cases): each run
either succeeds (0) or exits 2 with exactly one line on stderr, never a traceback and
never 1. In-process runs (``main(argv)``) replace the experiment's phases by a stub that
still creates the run folder and checks/writes ``config.json`` (the file checks of a real
run), so hundreds of cases take seconds; a few cases also run as real subprocesses.
"""
from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from experiments.common import Experiment

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"

INTS = ["0", "1", "3", "5", "-1", "-0", "10", "2147483648", "99999999999999999999", "1e3", "3.5", "abc", "",
        " 4", "0x10", "\u0663", "NaN"]
FLOATS = ["0", "1", "0.1", "1.0", "0.5", "0.999", "-0.1", "1e-300", "1e300", "nan", "inf", "-inf", "1e-7",
          "0.0025", "0.25", "abc", "", "1,5", "5e-324", "0.002", "1e308"]
STRINGS = ["", "x", "types", "range", "breast_cancer", "hospital", "ortho2", "gauss4", "../up", "a/b", ".",
           "\u00e9t\u00e9", "with space", "x" * 300, "--force-refresh", "explicit", "cg", "lu", "cholesky"]
PATHS = ["out", "", "a_file", "a_file/sub", "/proc/no/such/place", "deep/nested/out", "x" * 300, "."]

SS_FLAGS = {  # flag -> pool of values (None: a store_true flag)
    "--data-dir": PATHS, "--out-dir": PATHS, "--max-memory": INTS, "--force-refresh": None,
    "--no-intermediate-results": None, "--invalidate": INTS, "--worker": None,
    "--dataset-id": STRINGS + ["breast_cancer"] * 6, "--subset-seed": INTS,
    "--subset-choice-type": STRINGS + ["types", "range"] * 3, "--skip-hessian-spectrum": None,
    "--fixed-reg": FLOATS, "--tag": STRINGS, "--subset-rel-size": FLOATS, "--num-subsets": INTS,
    "--subset-min-rel-size": FLOATS, "--subset-max-rel-size": FLOATS, "--inverse-hvp-method": STRINGS,
    "--inverse-vp-method": STRINGS, "--float32": None, "--full-loss-matrices": None, "--kmeans-n-init": INTS,
    "--no-progress": None, "--no-plots": None, "--debug": None, "--standardize": None,
    "--dataset-file": ["bc.npz", "scaled.npz", "nested.npz", "missing.npz", "a_file", ""],
    "--workers": INTS, "--scheduler-address": STRINGS + ["tcp://127.0.0.1:1", "tcp://host"],
}
CEX_FLAGS = {
    "--out-dir": PATHS, "--max-memory": INTS, "--force-refresh": None, "--no-intermediate-results": None,
    "--invalidate": INTS, "--worker": None, "--dataset-id": STRINGS + ["ortho2", "gauss4", "fixed"] * 3,
    "--subset-seed": INTS, "--float32": None, "--no-progress": None,
}


def load_script(name):
    sys.path.insert(0, str(SCRIPTS))  # for `import _bootstrap`, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location(f"fuzz_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def random_argv(rng: random.Random, flags: dict) -> list[str]:
    argv = []
    for flag, pool in flags.items():
        if flag == "--debug" or rng.random() < 0.8:
            continue
        if pool is None:
            argv += [flag] if rng.random() < 0.9 else [f"{flag}=1"]
        else:
            argv += [flag] if rng.random() < 0.03 else [flag, rng.choice(pool)]  # sometimes no value
    if rng.random() < 0.03:
        argv.append("--no-such-flag")
    return argv


def stub_run_from_cli(self, force_refresh=False, invalidate_phase=None, no_intermediate_results=False):
    """The checks of a real run (inputs, run folder, config guard), then certified fake results."""
    if invalidate_phase is not None and int(invalidate_phase) != invalidate_phase:
        raise ValueError(invalidate_phase)
    if self.config.get("dataset_config", {}).get("dataset_file"):
        self.check_inputs()  # own data: the file checks, including the scale check
    self.prepare_run_folder()
    self.check_config(force_refresh)
    self.R = {"subset_tags": ["random"] * 3, "subset_indices": [np.arange(2)] * 3, "cex_tags": ["a"],
              "subset_refit_grad_norm": np.full(3, 1e-9), "subset_refit_grad_tol": np.full(3, 1e-8)}
    return self.R


def write_own_data(folder):
    """--dataset-file values: a good file, one with a column at 1e30 (refused unless
    --standardize), one whose arrays are not an npz (damaged)."""
    from tests.datasets.test_user_file import example_arrays

    arrays = example_arrays()
    np.savez(folder / "bc.npz", **arrays)
    scaled = {**arrays, "X_train": arrays["X_train"].copy(), "X_test": arrays["X_test"].copy()}
    scaled["X_train"][:, 2] *= 1e27
    scaled["X_test"][:, 2] *= 1e27
    np.savez(folder / "scaled.npz", **scaled)
    (folder / "nested.npz").write_bytes(b"[" * 100_000 + b"]" * 100_000)


def check_outcome(rc, err, argv):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, (argv, err[-2000:])
    assert rc in (0, 2), (argv, rc, err[-2000:])
    if rc == 2:
        assert len(lines) == 1 and "error: " in lines[0], (argv, lines)


@pytest.mark.parametrize("name, flags, cases", [("subsets_infl_logreg", SS_FLAGS, 1500),
                                                ("counterexamples", CEX_FLAGS, 500)])
def test_random_flags_succeed_or_exit_2_in_one_line(name, flags, cases, tmp_path, monkeypatch, capsys):
    module = load_script(name)
    monkeypatch.chdir(tmp_path)  # relative --out-dir values land here
    (tmp_path / "a_file").write_text("a file where a folder is expected")
    write_own_data(tmp_path)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setattr(Experiment, "run_from_cli", stub_run_from_cli)
    monkeypatch.setattr(common, "DEFAULT_OUT_DIR", tmp_path / "default_out")  # runs without --out-dir
    if name == "subsets_infl_logreg":
        from experiments.subset_influence import SubsetInfluenceLogreg
        monkeypatch.setattr(SubsetInfluenceLogreg, "plot_all", lambda self, save_and_close=True: [])
    rng = random.Random(f"{name}-fuzz")
    outcomes = {0: 0, 2: 0}
    for _ in range(cases):
        argv = random_argv(rng, flags)
        rc = module.main(argv)
        captured = capsys.readouterr()
        check_outcome(rc, captured.err, argv)
        outcomes[rc] += 1
    print(outcomes)
    assert outcomes[0] >= cases // 20 and outcomes[2] >= cases // 4, outcomes  # both outcomes exercised


def run_real(name, argv, cwd):
    env = dict(os.environ, INFLUENCE_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc


def test_random_flags_in_subprocesses(tmp_path):
    """A few random cases as real processes: the same outcome, without any stub."""
    (tmp_path / "a_file").write_text("x")
    rng = random.Random("subprocess-fuzz")
    done = 0
    while done < 4:
        argv = random_argv(rng, SS_FLAGS)
        # Keep these cases fast: they must fail before any phase runs, or be tiny.
        if "--worker" in argv:
            continue
        if "--out-dir" not in argv:
            argv += ["--out-dir", str(tmp_path / "out")]
        argv += ["--dataset-id", "nope"] if done < 3 else ["--dataset-id", "breast_cancer", "--num-subsets", "3",
                                                         "--subset-rel-size", "1.0"]
        proc = run_real("subsets_infl_logreg", argv, tmp_path)
        errors = "\n".join(line for line in proc.stderr.splitlines() if " INFO " not in line)
        check_outcome(proc.returncode, errors, argv)
        assert proc.returncode == 2
        done += 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_valid_flags_run_for_real(tmp_path, seed):
    """Random valid settings, run end to end on breast_cancer: 0, or 3 if a refit is not certified."""
    rng = random.Random(seed)
    argv = ["--dataset-id", "breast_cancer", "--out-dir", str(tmp_path), "--no-plots", "--no-progress",
            "--num-subsets", str(rng.choice([3, 4, 5])), "--subset-seed", str(rng.randrange(2 ** 32)),
            "--kmeans-n-init", str(rng.choice([1, 2]))]
    if rng.random() < 0.5:
        argv += ["--subset-choice-type", "range", "--subset-min-rel-size", rng.choice(["0.0025", "0.01"]),
                 "--subset-max-rel-size", rng.choice(["0.25", "0.9", "0.999"])]
    else:
        argv += ["--subset-rel-size", rng.choice(["0.003", "0.1", "0.5", "0.999"])]
    for flag in ("--float32", "--no-intermediate-results", "--skip-hessian-spectrum", "--full-loss-matrices"):
        if rng.random() < 0.3:
            argv.append(flag)
    if rng.random() < 0.3:
        argv += ["--fixed-reg", rng.choice(["1e-300", "1e-7", "1e-3", "10", "1e6", "1e300"])]
    if rng.random() < 0.3:
        argv += ["--inverse-hvp-method", "cg"]
    proc = run_real("subsets_infl_logreg", argv, tmp_path)
    assert proc.returncode in (0, 3), (argv, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
