"""A small dataset of one's own through ``scripts/subsets_infl_logreg.py --dataset-file``:
scikit-learn's wine data (135 training rows, 3 classes) saved as a CSV. The tail groups
are skipped with one logged line, every run writes ``groups.csv`` (summary mode too) and
``summary.png``, the last line reports Spearman's rho per target, ``--group-types``
selects group types and ``--plots`` adds the detailed figures."""
from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from datasets import storage
from datasets.user_file import file_sha256
from experiments.subset_groups import GROUPS_FILE
from experiments.subset_plots import SUMMARY_FIGURE
from tests.conftest import RTOL_TWO_PATHS, assert_close
from tests.scripts.test_cli_fuzz import load_script

N_TRAIN = 135
FLAGS = ["--num-subsets", "3", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_wine_csv(path):
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    frame["split"] = np.where(np.random.RandomState(0).permutation(len(frame)) < N_TRAIN, "train", "test")
    frame.to_csv(path, index=False)
    return path


def run(script, argv, capsys, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = script.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    return out.strip().splitlines()[-1], [r.getMessage() for r in caplog.records]


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wine")
    data = write_wine_csv(folder / "wine.csv")
    return data, f"file-wine-{file_sha256(data)[:12]}_ihvp-explicit_seed-0_size-0.1_num-3"


@pytest.fixture(scope="module")
def script():
    return load_script("subsets_infl_logreg")


def test_wine_runs_skips_the_tail_groups_in_one_line_and_reports_spearman(wine, script, tmp_path, capsys, caplog):
    data, run_id = wine
    out = tmp_path / "out"
    last, logs = run(script, ["--dataset-file", str(data), "--out-dir", str(out), *FLAGS], capsys, caplog)
    run_dir = out / "ss_logreg" / run_id
    skips = [m for m in logs if "skipping the group types" in m]
    assert skips == [f"skipping the group types neg_tail_test, pos_tail_test: {run_id.split('_ihvp')[0]} "
                     f"has {N_TRAIN} training points, too few for the tail groups (their smallest size "
                     "int(0.0025 n) must be >= 1, i.e. n >= 400)"]

    R = {}
    for f in sorted(run_dir.glob("result_*.npz")):
        R.update(storage.load_result(f)[0])
    table = pd.read_csv(run_dir / GROUPS_FILE)
    tags = list(R["subset_tags"])
    assert len(table) == len(tags) > 0 and list(table["tag"]) == tags
    assert set(table["type"]) == {"random", "random_same_class", "same_features", "same_grad", "feature_window"}
    for row, idx in zip(table.itertuples(), R["subset_indices"]):
        assert row.size == len(idx) and [int(i) for i in row.indices.split()] == list(idx)
    # The table's columns are the run's result keys (an independent read of the phase files).
    fixed = [int(i) for i in R["fixed_test"]]
    assert_close(table["self_actual"], R["subset_self_actl_infl"], RTOL_TWO_PATHS, what="self actual")
    assert_close(table["self_newton"], R["subset_self_newton_infl"], RTOL_TWO_PATHS, what="self newton")
    for j, i in enumerate(fixed):
        assert_close(table[f"test-{i}_predicted"], R["subset_fixed_test_pred_infl"][:, j], RTOL_TWO_PATHS)
        assert_close(table[f"test-{i}_newton"], R["subset_fixed_test_newton_infl"][:, j], RTOL_TWO_PATHS)
        assert_close(table[f"test-{i}_actual"], R["subset_fixed_test_actl_infl"][:, j], RTOL_TWO_PATHS)
    assert (table["certified"] == (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"])).all()
    assert table["certified"].all()

    # The last line: Spearman's rho per target, equal to scipy's on the table's columns.
    assert last.startswith(f"ss_logreg done: {run_dir} | {len(tags)} groups")
    reported = dict(re.findall(r"(self|test-\d+) (-?\d\.\d{3}|nan)", last.split("Spearman(predicted, actual): ")[1]))
    assert list(reported) == ["self"] + [f"test-{i}" for i in fixed]
    for name, value in reported.items():
        rho = spearmanr(table[f"{name}_predicted"], table[f"{name}_actual"])[0]
        assert value == f"{rho:.3f}", name
    assert (run_dir / SUMMARY_FIGURE).read_bytes()[:8] == PNG_MAGIC
    assert not (run_dir / "plots").exists()  # the detailed figures only with --plots


def test_summary_mode_keeps_the_indices_and_writes_the_table(wine, script, tmp_path, capsys, caplog):
    data, run_id = wine
    out = tmp_path / "out"
    last, _ = run(script, ["--dataset-file", str(data), "--out-dir", str(out), "--no-intermediate-results",
                           *FLAGS], capsys, caplog)
    run_dir = out / "ss_logreg" / run_id
    assert not list(run_dir.glob("result_[0-9]*.npz"))
    summary, _ = storage.load_result(run_dir / "result_summary.npz")
    table = pd.read_csv(run_dir / GROUPS_FILE)
    assert len(table) == len(summary["subset_indices"]) == len(summary["subset_tags"])
    assert [[int(i) for i in s.split()] for s in table["indices"]] == [list(ix) for ix in summary["subset_indices"]]
    assert not table["self_newton"].isna().any()  # the Newton keys are in the summary
    assert "Spearman(predicted, actual): self " in last and (run_dir / SUMMARY_FIGURE).is_file()


@pytest.mark.slow  # two runs and plot_all's figures
def test_group_types_select_and_plots_adds_the_detailed_figures(wine, script, tmp_path, capsys, caplog):
    data, run_id = wine
    out = tmp_path / "out"
    run(script, ["--dataset-file", str(data), "--out-dir", str(out), "--group-types", "same_grad,random",
                 "--plots", *FLAGS], capsys, caplog)
    run_dir = out / "ss_logreg" / f"{run_id}_types-random,same_grad"
    table = pd.read_csv(run_dir / GROUPS_FILE)
    assert list(dict.fromkeys(table["type"])) == ["random", "same_grad"]
    assert (run_dir / "plots" / "self_loss_actl-pred.png").is_file()
    # random is drawn first from the same seed: the same groups as in the all-types run.
    run(script, ["--dataset-file", str(data), "--out-dir", str(out), "--no-plots", *FLAGS],
        capsys, caplog)
    full = pd.read_csv(out / "ss_logreg" / run_id / GROUPS_FILE)
    assert list(full.loc[full["type"] == "random", "indices"]) == list(table.loc[table["type"] == "random", "indices"])
    assert not (out / "ss_logreg" / run_id / SUMMARY_FIGURE).exists()  # --no-plots: no figure at all


def test_tail_groups_asked_for_on_a_small_dataset_exit_2_in_one_line(wine, script, tmp_path, capsys):
    data, _ = wine
    out = tmp_path / "out"
    assert script.main(["--dataset-file", str(data), "--out-dir", str(out), "--group-types", "random,pos_tail_test",
                        *FLAGS]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: --group-types random,pos_tail_test: ")
    assert "too few for the tail groups" in err[0] and err[0].endswith("leave out pos_tail_test")
    assert not out.exists()
    assert script.main(["--dataset-file", str(data), "--out-dir", str(out), "--group-types", "random,tails",
                        *FLAGS]) == 2
    assert "error: --group-types must be a comma-separated list of random, " in capsys.readouterr().err
