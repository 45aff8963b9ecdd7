"""``--dataset-file`` end to end: ``scripts/subsets_infl_logreg.py`` and
``scripts/estimator_ladder.py`` on a user's .npz and .csv made from breast_cancer, run ids
from the file's name and content, and every bad input refused in one line with exit 2 and
nothing written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.user_file import file_sha256
from experiments.common import ConfigError
from experiments.subset_influence import build_config, run_id_from_config
from tests.datasets.test_user_file import BAD_NPZ, N_TRAIN, example_arrays, write_csv, write_npz
from tests.scripts.test_cli_fuzz import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
FLAGS = ["--num-subsets", "3", "--no-plots", "--no-progress"]


@pytest.fixture(scope="module")
def arrays():
    return example_arrays()


def run_script(name, args):
    return subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith(("error: ", "subsets_infl_logreg.py: error"))]


def test_the_experiment_and_the_ladder_run_on_a_csv_file(arrays, tmp_path):
    data = write_csv(tmp_path / "my_data.csv", arrays)
    out = tmp_path / "out"
    run_id = f"file-my_data-{file_sha256(data)[:12]}_ihvp-explicit_seed-0_size-0.1_num-3"
    proc = run_script("subsets_infl_logreg", ["--dataset-file", data, "--out-dir", out, *FLAGS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"ss_logreg done: {out / 'ss_logreg' / run_id} | ")
    assert " groups (max ||grad L_-U|| = " in summary and " | wall time " in summary
    assert re.search(r" \| refit certificate: (\d+)/\1 certified \(worst \|\|grad\|\|/tol = ", summary), summary
    assert (out / "ss_logreg" / run_id / "result_14-compute_pparam_infl.npz").is_file()
    # The ladder reads that run (same flags, same run id).
    proc = run_script("estimator_ladder", ["--dataset-file", data, "--out-dir", out, "--no-progress"
                                           ] + FLAGS[:2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"estimator_ladder done: {out / 'estimator_ladder' / run_id}")
    assert (out / "estimator_ladder" / run_id / "accuracy.csv").is_file()
    assert "loaded" in proc.stderr  # the ss_logreg phases were reused, not recomputed


def test_an_npz_file_runs_in_process_and_a_changed_value_gets_a_new_run_id(arrays, tmp_path, capsys):
    script = load_script("subsets_infl_logreg")
    data = write_npz(tmp_path / "bc.npz", arrays)
    out = tmp_path / "out"
    assert script.main(["--dataset-file", str(data), "--out-dir", str(out), "--no-intermediate-results",
                        *FLAGS]) == 0
    sha = file_sha256(data)
    run_id = f"file-bc-{sha[:12]}_ihvp-explicit_seed-0_size-0.1_num-3"
    assert f"ss_logreg done: {out / 'ss_logreg' / run_id} | 51 groups" in capsys.readouterr().out
    changed = {**arrays, "X_train": arrays["X_train"].copy()}
    changed["X_train"][0, 0] += 1e-3
    write_npz(data, changed)
    new = run_id_from_config(build_config(dataset_file=str(data), num_subsets=3))
    assert new.startswith("file-bc-") and sha[:12] not in new and new != run_id


def test_dataset_id_and_dataset_file_are_exclusive(arrays, tmp_path, capsys):
    data = write_npz(tmp_path / "bc.npz", arrays)
    with pytest.raises(ConfigError, match="give --dataset-id or --dataset-file, not both"):
        build_config(dataset_id="breast_cancer", dataset_file=str(data))
    script = load_script("subsets_infl_logreg")
    out = tmp_path / "out"
    assert script.main(["--dataset-id", "hospital", "--dataset-file", str(data), "--out-dir", str(out)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: give --dataset-id or --dataset-file, not both; got --dataset-id 'hospital' and --dataset-file "
        f"'{data}'"]
    assert not out.exists()


def test_group_sizes_are_checked_from_the_file(arrays, tmp_path, capsys):
    small = {**arrays, "X_train": arrays["X_train"][:300], "y_train": arrays["y_train"][:300]}
    data = write_npz(tmp_path / "small.npz", small)
    with pytest.raises(ConfigError, match=r"file-small-\w{12} has 300 training points, too few for the tail groups"):
        build_config(dataset_file=str(data), group_types="random,neg_tail_test")
    with pytest.raises(ConfigError, match=r"--subset-rel-size 0.001: the smallest group would have int\(300 x 0.001\)"):
        build_config(dataset_file=str(data), subset_rel_size=0.001)


@pytest.mark.parametrize("case", ["nan", "one class", "lengths", "features", "non-integer labels", "empty test",
                                  "missing", "1-D X", "negative weight", "nan weight", "badly scaled"])
@pytest.mark.parametrize("script_name", ["subsets_infl_logreg", "estimator_ladder"])
def test_each_bad_input_exits_2_in_one_line_and_writes_nothing(arrays, tmp_path, capsys, case, script_name):
    mutate, message = BAD_NPZ[case]
    a = {**arrays, "sample_weights": np.ones(N_TRAIN)} if "weight" in case else arrays
    data = write_npz(tmp_path / "bad.npz", mutate(a))
    out = tmp_path / "out"
    out.mkdir()
    script = load_script(script_name)
    assert script.main(["--dataset-file", str(data), "--out-dir", str(out), *FLAGS[:2]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert error_lines(err) == [f"error: {data}: {message}"]
    assert list(out.iterdir()) == []  # no run folder, no config.json


def test_a_bad_file_fails_in_a_real_process(arrays, tmp_path):
    data = write_csv(tmp_path / "my.csv", {**arrays, "X_test": arrays["X_test"][:3], "y_test": arrays["y_test"][:3]})
    out = tmp_path / "out"
    proc = run_script("subsets_infl_logreg", ["--dataset-file", data, "--out-dir", out])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert error_lines(proc.stderr) == [f"error: {data}: the test set has 3 points; ss_logreg needs at least 6 "
                                        "(it follows six fixed test points)"]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_a_moved_file_keeps_its_results_and_the_path_is_recorded(arrays, tmp_path):
    from experiments.common import result_config

    a = write_npz(tmp_path / "bc.npz", arrays)
    (tmp_path / "elsewhere").mkdir()
    b = write_npz(tmp_path / "elsewhere" / "bc.npz", arrays)
    ca, cb = build_config(dataset_file=str(a), num_subsets=3), build_config(dataset_file=str(b), num_subsets=3)
    assert ca["dataset_config"]["dataset_file"] == str(a.resolve()) != cb["dataset_config"]["dataset_file"]
    assert ca["dataset_config"]["dataset_sha256"] == file_sha256(a)
    assert run_id_from_config(ca) == run_id_from_config(cb) and result_config(ca) == result_config(cb)


def test_standardize_is_for_files_only_and_names_its_run(arrays, tmp_path):
    data = write_npz(tmp_path / "bc.npz", arrays)
    with pytest.raises(ConfigError, match="--standardize applies to --dataset-file only"):
        build_config(dataset_id="breast_cancer", standardize=True)
    plain, std = (build_config(dataset_file=str(data), num_subsets=3, standardize=s) for s in (False, True))
    assert "standardize" not in plain["dataset_config"] and std["dataset_config"]["standardize"] is True
    assert run_id_from_config(std) == run_id_from_config(plain) + "_standardized"


@pytest.mark.slow
def test_a_badly_scaled_file_runs_with_standardize_and_no_warnings(arrays, tmp_path):
    """The reported case (one column at 1e30): refused in one line without the flag, a clean
    run (no numpy warning) with --standardize."""
    bad = {**arrays, "X_train": arrays["X_train"].copy()}
    bad["X_train"][:, 2] = 1e30
    data = write_npz(tmp_path / "bad.npz", bad)
    out = tmp_path / "out"
    proc = run_script("subsets_infl_logreg", ["--dataset-file", data, "--out-dir", out, *FLAGS])
    assert proc.returncode == 2 and error_lines(proc.stderr)[0].startswith(f"error: {data}: X_train column 2 holds")
    assert len(error_lines(proc.stderr)) == 1 and "Warning" not in proc.stderr and not out.exists()
    # Standardising a column that is constant in training leaves the test values ~1e30 away.
    proc = run_script("subsets_infl_logreg", ["--dataset-file", data, "--out-dir", out, "--standardize", *FLAGS])
    assert proc.returncode == 2 and error_lines(proc.stderr)[0].startswith(f"error: {data}: X_test column 2 holds")
    assert "even after --standardize" in proc.stderr and not out.exists()
    # A column in other units (x 1e27 in both sets) runs cleanly once standardised.
    scaled = {**arrays, "X_train": arrays["X_train"].copy(), "X_test": arrays["X_test"].copy()}
    scaled["X_train"][:, 2] *= 1e27
    scaled["X_test"][:, 2] *= 1e27
    data = write_npz(tmp_path / "scaled.npz", scaled)
    proc = run_script("subsets_infl_logreg", ["--dataset-file", data, "--out-dir", out, "--standardize", *FLAGS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr and "_standardized" in proc.stdout
