"""The estimator_ladder experiment on breast_cancer: CSVs, resume, summary mode, config guard,
and agreement with ss_logreg's own keys (first_order / newton = its pred / newton, param forms =
its pparam / nparam, actual = its actl)."""
import csv

import numpy as np
import pytest

from experiments.common import ConfigMismatchError
from experiments.estimator_ladder import (
    ACCURACY_COLUMNS,
    COST_COLUMNS,
    ESTIMATORS,
    EstimatorLadder,
    accuracy_stats,
    build_config,
    size_deciles,
)
from experiments.subset_influence import build_config as ss_build_config
from tests.conftest import RTOL_CG, RTOL_TWO_PATHS, assert_close
from tests.scripts.test_cli_fuzz import load_script

SS_ARGS = dict(dataset_id="breast_cancer", num_subsets=3)
# Multinomial (3 classes, 18 parameters: what is tested is the multinomial path, not the
# size): one regularisation value and one KMeans restart keep it short.
MULTI_ARGS = dict(dataset_id="synthetic_multiclass", num_subsets=3, fixed_reg=1e-3, kmeans_n_init=1)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def run_ladder(out, ss_args):
    exp = EstimatorLadder(build_config(ss_build_config(**ss_args)), out_dir=out, progress=False)
    exp.run()
    return exp


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return run_ladder(tmp_path_factory.mktemp("ladder"), SS_ARGS)


@pytest.fixture(scope="module")
def multi_ladder(tmp_path_factory):
    return run_ladder(tmp_path_factory.mktemp("ladder_multi"), MULTI_ARGS)


def test_csvs(ladder):
    header, rows = read_csv(ladder.base_dir / "accuracy.csv")
    assert tuple(header) == ACCURACY_COLUMNS
    col = {c: i for i, c in enumerate(header)}
    assert {r[col["estimator"]] for r in rows} == set(ESTIMATORS)
    assert {r[col["target"]] for r in rows} == {"params", "test_loss", "test_margin", "self_loss"}
    assert {(r[col["estimator"]], r[col["form"]]) for r in rows if r[col["form"]] == "linear"} == \
        {("first_order", "linear"), ("newton", "linear")}
    types = {r[col["group_type"]] for r in rows}
    assert {"all", "random", "random_same_class", "neg_tail_test", "pos_tail_test", "feature_window"} <= types
    S = len(ladder.R["subset_sizes"])
    for r in rows:
        if r[col["group_type"]] == "all" and r[col["size_decile"]] == "all":
            assert int(r[col["n_groups"]]) == S
        if r[col["estimator"]] == "actual":   # the reference against itself
            assert float(r[col["median_rel_error"]]) == 0.0 and float(r[col["sign_agreement"]]) == 1.0
    # The deciles partition the groups.
    dec = [r for r in rows if r[col["group_type"]] == "all" and r[col["size_decile"]] != "all"
           and r[col["estimator"]] == "actual" and r[col["target"]] == "self_loss"]
    assert sum(int(r[col["n_groups"]]) for r in dec) == S
    header, rows = read_csv(ladder.base_dir / "cost.csv")
    assert tuple(header) == COST_COLUMNS
    assert [r[2] for r in rows] == list(ESTIMATORS)
    assert all(float(r[5]) > 0 for r in rows)


def test_multinomial(multi_ladder):
    assert np.shape(multi_ladder.R["subset_actual_dparam"])[1] == 3 * (5 + 1)  # 3 classes of 5 features
    check_against_ss_logreg(multi_ladder)
    header, rows = read_csv(multi_ladder.base_dir / "accuracy.csv")
    assert {r[header.index("target")] for r in rows} == {"params", "test_loss", "self_loss"}   # no margins
    assert not any("margin" in k for k in multi_ladder.R)


def test_first_order_and_newton_equal_ss_logreg_keys(ladder):
    check_against_ss_logreg(ladder)
    assert "subset_fixed_test_first_order_linear_margin_infl" in ladder.R


def check_against_ss_logreg(ladder):
    R, B = ladder.R, ladder.base.R
    pairs = [("subset_first_order_dparam", "subset_pred_dparam"), ("subset_newton_dparam", "subset_newton_dparam"),
             ("subset_actual_dparam", "subset_dparam")]
    for e, key in [("first_order", "pred"), ("newton", "newton")]:
        pairs += [(f"subset_fixed_test_{e}_linear_infl", f"subset_fixed_test_{key}_infl"),
                  (f"subset_fixed_test_{e}_linear_margin_infl", f"subset_fixed_test_{key}_margin_infl"),
                  (f"subset_self_{e}_linear_infl", f"subset_self_{key}_infl")]
    for e, key in [("first_order", "pparam"), ("newton", "nparam"), ("actual", "actl")]:
        pairs += [(f"subset_fixed_test_{e}_infl", f"subset_fixed_test_{key}_infl"),
                  (f"subset_fixed_test_{e}_margin_infl", f"subset_fixed_test_{key}_margin_infl")]
        pairs += [(f"subset_self_{e}_infl", f"subset_self_{key}_infl")]
    for mine, theirs in pairs:
        if mine not in R:   # margins of multinomial models
            assert "margin" in mine and theirs not in B
            continue
        # actual: f(theta_hat + (theta_-U - theta_hat)) - f(theta_hat) against f(theta_-U) - f(theta_hat).
        assert_close(R[mine], B[theirs], RTOL_TWO_PATHS, atol=1e-13, what=f"{mine} vs {theirs}")
    assert ladder.R["actual_retime_max_diff"] <= 1e-8 * np.abs(R["subset_actual_dparam"]).max()


def test_resume_summary_and_config_guard(ladder, tmp_path):
    again = EstimatorLadder(ladder.config, out_dir=ladder.out_dir, progress=False)
    again.run()
    assert again.timings == {}   # every phase loaded from its file
    assert_close(again.R["subset_rescaled_dparam"], ladder.R["subset_rescaled_dparam"], 0.0)
    with pytest.raises(ConfigMismatchError):
        EstimatorLadder(build_config(ss_build_config(**SS_ARGS), retime_actual=False), out_dir=ladder.out_dir).run()
    # Summary mode: the summary and the CSVs, no phase files; the ss_logreg run is reused.
    cfg = build_config(ss_build_config(**SS_ARGS), master_only=True)
    summ = EstimatorLadder(cfg, out_dir=ladder.out_dir, progress=False)
    summ.out_dir = tmp_path
    summ.base = ladder.base
    summ.run_from_cli(no_intermediate_results=True)
    files = sorted(p.name for p in summ.base_dir.iterdir())
    assert files == ["accuracy.csv", "config.json", "cost.csv", "result_summary.npz"]


def test_script(ladder, capsys):
    mod = load_script("estimator_ladder")
    code = mod.main(["--dataset-id", "breast_cancer", "--num-subsets", "3", "--out-dir", str(ladder.out_dir),
                     "--no-progress"])
    assert code == 0
    assert "estimator_ladder done" in capsys.readouterr().out
    assert mod.main(["--dataset-id", "nope", "--out-dir", str(ladder.out_dir)]) == 2
    for bad in (["--inverse-hvp-method", "cg"], ["--float32"]):
        assert mod.main(["--dataset-id", "breast_cancer", "--out-dir", str(ladder.out_dir), *bad]) == 2
    assert "needs an explicit-Hessian" in capsys.readouterr().err


def test_bad_data_leave_no_ladder_folder(tmp_path, monkeypatch):
    from experiments.subset_influence import SubsetInfluenceLogreg

    def broken(self):
        raise ValueError("breast_cancer: X_train has 3 NaN values")
    monkeypatch.setattr(SubsetInfluenceLogreg, "load_datasets", broken)
    with pytest.raises(ValueError, match="NaN"):
        run_ladder(tmp_path, SS_ARGS)
    assert not (tmp_path / "estimator_ladder").exists()


def test_statistics():
    assert list(size_deciles(np.arange(1, 21))) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10]
    assert len(set(size_deciles(np.full(7, 5)))) == 1        # equal sizes share a decile
    a = np.array([1.0, -2.0, 4.0, 8.0])
    n, rho, med, p90, sign = accuracy_stats(np.array([1.5, -1.0, 4.0, 16.0]), a)
    assert (n, rho, sign) == (4, 1.0, 1.0)
    assert med == pytest.approx(0.5) and p90 == pytest.approx(np.quantile([0.5, 0.5, 0.0, 1.0], 0.9))
    n, rho, med, p90, sign = accuracy_stats(-a, a)
    assert rho == -1.0 and sign == 0.0 and med == 2.0
    D = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    n, rho, med, p90, sign = accuracy_stats(D * 1.1, D, vector=True)
    assert med == pytest.approx(0.1) and sign == 1.0 and n == 3
    n, rho, med, p90, sign = accuracy_stats(np.array([0.0, 1.0]), np.array([0.0, -1.0]))
    assert sign == 0.0 and med == 2.0   # the zero pair is left out


def median_test_loss_errors(exp) -> dict[str, float]:
    """Per estimator, the all-groups median relative error on the fixed test losses (form param)."""
    header, rows = read_csv(exp.base_dir / "accuracy.csv")
    col = {c: i for i, c in enumerate(header)}
    return {r[col["estimator"]]: float(r[col["median_rel_error"]]) for r in rows
            if r[col["group_type"]] == "all" and r[col["size_decile"]] == "all" and r[col["target"]] == "test_loss"
            and r[col["form"]] == "param"}


@pytest.mark.slow
@pytest.mark.realdata
def test_hospital_ladder_on_the_real_archive(shared_data, tmp_path):
    """The ladder of a small hospital range run from the real UCI archive (d = 128, n = 20,000)."""
    import shutil
    (tmp_path / "data" / "hospital").mkdir(parents=True)
    shutil.copy(shared_data / "hospital" / "dataset_diabetes.zip", tmp_path / "data" / "hospital")
    exp = run_ladder(tmp_path / "out", dict(dataset_id="hospital", data_dir=str(tmp_path / "data"),
                                            subset_choice_type="range", num_subsets=3, kmeans_n_init=1))
    check_against_ss_logreg(exp)
    best = median_test_loss_errors(exp)
    assert best["newton_3"] <= best["newton_2"] <= best["newton"]


@pytest.mark.slow
@pytest.mark.realdata
def test_spam_ladder_on_the_real_archive(shared_data, tmp_path):
    """The ladder of a small spam range run from the real Enron archive (d = 3,295: the
    downdate route of the refits and Newton changes, k-step Newton by CG). The
    regularisation is fixed at the main run's cross-validated value (4.6e-4 n) to skip
    cross-validation."""
    import shutil
    (tmp_path / "data" / "spam").mkdir(parents=True)
    shutil.copy(shared_data / "spam" / "enron1.tar.gz", tmp_path / "data" / "spam")
    exp = run_ladder(tmp_path / "out", dict(dataset_id="spam", data_dir=str(tmp_path / "data"),
                                            subset_choice_type="range", num_subsets=3, kmeans_n_init=1,
                                            fixed_reg=4.6e-4))
    assert exp.base.get_model().num_params == 3295
    check_against_ss_logreg(exp)
    best = median_test_loss_errors(exp)
    assert best["newton_3"] <= best["newton_2"] <= best["newton"] and best["actual"] == 0.0


def test_notebook_ladder_figure(ladder, tmp_path):
    import shutil

    import matplotlib
    matplotlib.use("Agg")
    from experiments.figure_settings import Settings
    from experiments.figures import ladder as fl

    S = Settings(out_dir=tmp_path, plot_dir=tmp_path, datasets=["breast_cancer", "digits"], num_subsets=10,
                 reg_datasets=[], reg_num_subsets=10)
    target = fl.ladder_dir(S, "breast_cancer")
    target.mkdir(parents=True)
    shutil.copy(ladder.base_dir / "accuracy.csv", target / "accuracy.csv")
    tables = fl.load_ladder_tables(S)
    assert list(tables) == ["breast_cancer"]
    message = fl.ladder_message(S, "digits")   # the notebook lists it with the figures not made
    assert message.startswith(f"missing {fl.ladder_dir(S, 'digits') / 'accuracy.csv'}: run python ")
    assert "scripts/estimator_ladder.py --dataset-id digits" in message and "--num-subsets 10" in message
    summary = fl.ladder_summary(tables)
    assert len(summary) == len(ESTIMATORS) + 2      # every estimator's param form, and two linear forms
    fig = fl.plot_ladder(tables)
    assert len(fig.axes[0].lines) == len(ESTIMATORS) - 1   # all but the reference
    assert len(fl.plot_ladder({}).axes) == 1


def test_k_step_newton_by_cg(ladder, tmp_path):
    assert ladder.R["newton_steps_method"] == "explicit"    # d = 31
    cg = EstimatorLadder(build_config(ss_build_config(**SS_ARGS), newton_steps_method="cg"), out_dir=tmp_path)
    cg.base = ladder.base
    cg.run()
    assert cg.R["newton_steps_method"] == "cg"
    for k in (2, 3):
        assert_close(cg.R[f"subset_newton_{k}_dparam"], ladder.R[f"subset_newton_{k}_dparam"], RTOL_CG,
                     what=f"newton_{k}")
    with pytest.raises(Exception, match="newton_steps_method must be one of"):
        build_config(ss_build_config(**SS_ARGS), newton_steps_method="lu")
