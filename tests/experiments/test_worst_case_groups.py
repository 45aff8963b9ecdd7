"""The worst_case_groups experiment and its script: outputs, resume, summary mode, config guard,
bad flags (exit 2, nothing written), and every verified flip re-checked by scikit-learn."""
import csv
import shutil

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLR

from datasets import storage
from experiments.common import ConfigError
from experiments.worst_case_groups import (
    CSV_COLUMNS,
    WorstCaseGroups,
    build_config,
    run_id_from_config,
)
from influence.worst_case import METHODS
from tests.scripts.test_cli_fuzz import load_script

BC_FIXED = [95, 80, 65, 106, 74, 45]


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def run_script(*argv):
    return load_script("worst_case_groups").main(list(argv))


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wc")
    assert run_script("--dataset-id", "breast_cancer", "--out-dir", str(out), "--no-progress") == 0
    exp = WorstCaseGroups.load_run(run_id_from_config(build_config("breast_cancer")), out_dir=out)
    return out, exp


def sklearn_refit(exp, removed):
    X, y = np.asarray(exp.train.x, dtype=np.float64), exp.train.labels
    keep = np.setdiff1d(np.arange(len(y)), removed)
    return SkLR(C=1 / float(exp.R["cv_l2_reg"]), solver="newton-cholesky", tol=1e-12, max_iter=500).fit(X[keep], y[keep])


def check_flips_with_sklearn(exp, min_gap=1e-6):
    """Every verified prediction flip of ``exp`` re-checked by an independent scikit-learn fit
    (``C = 1 / lambda`` with the summed loss; unpenalised intercept)."""
    full = sklearn_refit(exp, np.zeros(0, dtype=np.int64))
    X_test = np.asarray(exp.test.x, dtype=np.float64)
    checked = 0
    for j, name in enumerate(exp.R["target_names"]):
        i = int(name.split()[-1])
        z0 = full.decision_function(X_test[i:i + 1])[0]
        for m in exp.config["methods"]:
            s = np.asarray(exp.R[f"{m}_verified_sets"][j])
            if not s.size:
                continue
            z = sklearn_refit(exp, s).decision_function(X_test[i:i + 1])[0]
            assert np.sign(z) == -np.sign(z0), f"{name} / {m}: sklearn does not flip (z {z0:.3e} -> {z:.3e})"
            assert abs(z) > min_gap
            checked += 1
    return checked


def test_outputs_of_the_default_run(bc_run):
    _, exp = bc_run
    base = exp.base_dir
    header, rows = read_csv(base / "worst_case.csv")
    assert tuple(header) == CSV_COLUMNS
    assert len(rows) == 6 * len(METHODS)
    assert [r["target"] for r in rows[::4]] == [f"prediction test {i}" for i in BC_FIXED]
    assert (base / "worst_case.png").stat().st_size > 0
    sets = storage.load_arrays(base / "verified_sets.npz")
    R, n = exp.R, int(exp.R["num_train"])
    assert R["max_k"] == int(0.1 * n)
    for j in range(6):
        for m in METHODS:
            k = int(R[f"{m}_verified_k"][j])
            s = sets[f"t{j}_{m}"]
            assert len(s) == max(k, 0) and len(np.unique(s)) == len(s)
            assert k <= R["max_k"]
            assert R[f"{m}_max_grad_ratio"][j] <= 1       # every refit certified
            row = rows[4 * j + METHODS.index(m)]
            assert int(row["verified_k"]) == k and row["method"] == m
            if k > 0:
                assert float(row["fraction"]) == pytest.approx(k / n)
                # The verified set is the prefix of the method's order.
                assert np.array_equal(s, np.asarray(R[f"{m}_order"][j])[:k])
    # On breast_cancer's fixed points re-scoring finds flips the one-shot orders miss.
    assert (R["adaptive_verified_k"] > 0).sum() > (R["first_order_verified_k"] > 0).sum()


def test_verified_flips_rechecked_by_sklearn(bc_run):
    _, exp = bc_run
    assert check_flips_with_sklearn(exp) >= 12


def test_rerun_resumes_and_config_guard(bc_run, tmp_path):
    out, exp = bc_run
    rerun = WorstCaseGroups(build_config("breast_cancer"), out_dir=out, progress=False)
    rerun.run()
    assert rerun.timings == {}      # every phase loaded from its file
    assert np.array_equal(rerun.R["adaptive_verified_k"], exp.R["adaptive_verified_k"])
    # Same run id, a setting that changes results: refused (exit 2), the folder untouched.
    before = sorted(p.name for p in exp.base_dir.iterdir())
    code = run_script("--dataset-id", "breast_cancer", "--out-dir", str(out), "--inverse-vp-method", "lu")
    assert code == 2
    assert sorted(p.name for p in exp.base_dir.iterdir()) == before


def test_other_targets_and_summary_mode(tmp_path, capsys):
    code = run_script("--dataset-id", "breast_cancer", "--out-dir", str(tmp_path), "--no-progress",
                      "--test-points", "--coefficient", "0", "--loss-change", "increase", "0.5", "80",
                      "--loss-change", "decrease", "0.02", "--no-intermediate-results", "--methods", "first_order",
                      "adaptive", "--max-fraction", "0.05")
    assert code == 0
    cfg = build_config("breast_cancer", targets=[{"kind": "coefficient", "feature": 0, "class": None},
                                                 {"kind": "loss", "direction": "increase", "amount": 0.5,
                                                  "test_index": 80},
                                                 {"kind": "loss", "direction": "decrease", "amount": 0.02,
                                                  "test_index": None}],
                       methods=["first_order", "adaptive"], max_fraction=0.05, master_only=True)
    exp = WorstCaseGroups.load_run(run_id_from_config(cfg), out_dir=tmp_path)
    names = sorted(p.name for p in exp.base_dir.iterdir())
    assert names == ["config.json", "result_summary.npz", "verified_sets.npz", "worst_case.csv", "worst_case.png"]
    assert exp.R["target_names"] == ["coefficient 0", "loss test 80 +0.5", "mean test loss -0.02"]
    # Independent check of every verified coefficient flip: the sign of scikit-learn's weight.
    full = sklearn_refit(exp, np.zeros(0, dtype=np.int64))
    for m in ("first_order", "adaptive"):
        s = np.asarray(exp.R[f"{m}_verified_sets"][0])
        if s.size:
            assert np.sign(sklearn_refit(exp, s).coef_[0, 0]) == -np.sign(full.coef_[0, 0])


@pytest.mark.parametrize("argv, message", [
    (["--test-points", "100000"], "test index 100000 is out of range"),
    (["--coefficient", "30"], "--coefficient 30 is out of range"),
    (["--coefficient", "3", "1"], "is binary"),
    (["--max-fraction", "0"], "--max-fraction must be in (0, 1)"),
    (["--max-fraction", "1.5"], "--max-fraction must be in (0, 1)"),
    (["--loss-change", "sideways", "0.5"], "the direction must be one of"),
    (["--loss-change", "increase", "-1"], "the amount must be a number > 0"),
    (["--methods", "bogus"], "--methods must be distinct names"),
    (["--adaptive-batch", "0"], "--adaptive-batch must be a positive integer"),
])
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = run_script("--dataset-id", "breast_cancer", "--out-dir", str(out), *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and err[-1].startswith("error:")
    assert not out.exists() or not any(out.rglob("*"))


def test_multiclass_coefficient_needs_its_class(tmp_path, capsys):
    code = run_script("--dataset-id", "digits", "--out-dir", str(tmp_path / "o"), "--coefficient", "10",
                      "--fixed-reg", "0.001")
    assert code == 2 and "name the class too" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def check_multiclass(exp, cls, feature):
    """Every verified multiclass flip (test point 0's class; the sign of W[cls, feature])
    re-checked by scikit-learn (sets that leave every class present)."""
    R = exp.R
    X, y = np.asarray(exp.train.x, dtype=np.float64), exp.train.labels
    K = len(np.unique(y))
    x0 = np.asarray(exp.test.x[:1], dtype=np.float64)
    full = SkLR(C=1 / float(R["cv_l2_reg"]), solver="newton-cholesky", tol=1e-12, max_iter=500).fit(X, y)
    c0, w0 = full.predict(x0)[0], full.coef_[cls, feature]
    checks = ((0, lambda sk: sk.predict(x0)[0] != c0), (1, lambda sk: np.sign(sk.coef_[cls, feature]) != np.sign(w0)))
    for m in METHODS:
        assert R[f"{m}_max_grad_ratio"].max() <= 1
        for j, check in checks:
            s = np.asarray(R[f"{m}_verified_sets"][j])
            if s.size and len(np.unique(np.delete(y, s))) == K:
                keep = np.setdiff1d(np.arange(len(y)), s)
                sk = SkLR(C=1 / float(R["cv_l2_reg"]), solver="newton-cholesky", tol=1e-12, max_iter=500)
                assert check(sk.fit(X[keep], y[keep])), (m, j)


@pytest.mark.parametrize("dataset, fixed_reg, cls, feature", [
    ("synthetic_multiclass", 1e-3, 2, 1),   # fixed regularisation: no cross-validation
    pytest.param("digits", 1e-3, 3, 10, marks=pytest.mark.slow),   # 650 parameters: about a minute
])
def test_multiclass_prediction_and_coefficient(tmp_path, dataset, fixed_reg, cls, feature):
    cfg = build_config(dataset, fixed_reg=fixed_reg, max_fraction=0.02,
                       targets=[{"kind": "prediction", "test_index": 0},
                                {"kind": "coefficient", "feature": feature, "class": cls}])
    exp = WorstCaseGroups(cfg, out_dir=tmp_path, progress=False)
    R = exp.run()
    assert R["target_names"] == ["prediction test 0", f"coefficient {feature} class {cls}"]
    assert R["first_order_component"][0].startswith("class ")
    check_multiclass(exp, cls, feature)


def test_build_config_rules():
    with pytest.raises(ConfigError, match="cg dataset"):
        build_config("mnist")
    with pytest.raises(ConfigError, match="no targets"):
        build_config("breast_cancer", targets=[])
    a = run_id_from_config(build_config("breast_cancer"))
    assert a == "breast_cancer_pred-fixed_frac-0.1_batch-auto"
    b = run_id_from_config(build_config("breast_cancer", adaptive_batch=3, max_fraction=0.05, search_width=4,
                                        targets=[{"kind": "coefficient", "feature": 2, "class": None}]))
    assert b == "breast_cancer_coef-2_frac-0.05_batch-3_width-4"


def real_run(shared_data, tmp_path, dataset, test_points=None, methods=METHODS):
    """The script on a real archive copied from ``../shared/data`` (the loader's caches go to
    the copy); ``test_points`` None: the six fixed test points."""
    data = tmp_path / "data" / dataset
    data.mkdir(parents=True)
    for f in (shared_data / dataset).glob("*.*"):
        if f.is_file() and f.name.endswith((".zip", ".tar.gz")):
            shutil.copy(f, data / f.name)
    out = tmp_path / "out"
    extra = [] if test_points is None else ["--test-points", *map(str, test_points)]
    assert run_script("--dataset-id", dataset, "--data-dir", str(tmp_path / "data"), "--out-dir", str(out),
                      "--no-progress", "--methods", *methods, *extra) == 0
    targets = None if test_points is None else [{"kind": "prediction", "test_index": i} for i in test_points]
    return WorstCaseGroups.load_run(run_id_from_config(build_config(dataset, targets=targets, methods=methods)),
                                    out_dir=out)


@pytest.mark.slow
@pytest.mark.realdata
def test_hospital_fixed_test_points_on_the_real_archive(shared_data, tmp_path):
    """All six fixed test points with all four methods (docs/worst-case.md has the times)."""
    exp = real_run(shared_data, tmp_path, "hospital")
    R = exp.R
    assert list(R["fixed_test"]) == [2267, 54826, 66678, 41567, 485, 25286]
    assert len(R["target_names"]) == 6
    for m in METHODS:
        assert R[f"{m}_max_grad_ratio"].max() <= 1
    assert check_flips_with_sklearn(exp) >= 20


@pytest.mark.slow
@pytest.mark.realdata
def test_spam_on_the_real_archive(shared_data, tmp_path):
    """Two of spam's fixed test points with first order and adaptive (3,295 parameters: the
    refits from theta_hat of the downdate route; the full run's times are in docs/worst-case.md)."""
    exp = real_run(shared_data, tmp_path, "spam", test_points=(386, 65), methods=("first_order", "adaptive"))
    R = exp.R
    assert list(R["fixed_test"]) == [386, 842, 326, 766, 65, 642]
    for m in ("first_order", "adaptive"):
        assert R[f"{m}_max_grad_ratio"].max() <= 1
    check_flips_with_sklearn(exp)


@pytest.mark.slow
def test_dask_workers_give_the_embedded_answers(tmp_path):
    """``--workers 2``: one task per target on a local Dask cluster; the same verified sets."""
    argv = ["--dataset-id", "breast_cancer", "--no-progress", "--test-points", "95", "80", "65",
            "--methods", "first_order", "adaptive", "--no-plots"]
    assert run_script(*argv, "--out-dir", str(tmp_path / "a")) == 0
    assert run_script(*argv, "--out-dir", str(tmp_path / "b"), "--workers", "2") == 0
    cfg = build_config("breast_cancer", targets=[{"kind": "prediction", "test_index": i} for i in (95, 80, 65)],
                       methods=["first_order", "adaptive"])
    a = WorstCaseGroups.load_run(run_id_from_config(cfg), out_dir=tmp_path / "a")
    b = WorstCaseGroups.load_run(run_id_from_config(cfg), out_dir=tmp_path / "b")
    for m in ("first_order", "adaptive"):
        assert np.array_equal(a.R[f"{m}_verified_k"], b.R[f"{m}_verified_k"])
        for sa, sb in zip(a.R[f"{m}_verified_sets"], b.R[f"{m}_verified_sets"]):
            assert np.array_equal(sa, sb)


def test_dataset_file(tmp_path):
    """``--dataset-file``: a user's .npz (no registered dataset, fewer than 400 points)."""
    rng = np.random.RandomState(0)
    X = rng.randn(100, 3)
    y = (X[:, 0] + 0.5 * rng.randn(100) > 0).astype(np.int64)
    data = tmp_path / "mine.npz"
    np.savez(data, X_train=X[:80], y_train=y[:80], X_test=X[80:], y_test=y[80:])
    out = tmp_path / "out"
    assert run_script("--dataset-file", str(data), "--out-dir", str(out), "--no-progress", "--fixed-reg", "0.01",
                      "--test-points", "0", "1", "--methods", "first_order", "adaptive", "--max-fraction", "0.2",
                      "--no-plots") == 0
    (run_dir,) = (out / "worst_case_groups").iterdir()
    assert run_dir.name.startswith("file-mine-") and "_pred-0_pred-1_frac-0.2_" in run_dir.name
    _, rows = read_csv(run_dir / "worst_case.csv")
    assert len(rows) == 4 and {r["method"] for r in rows} == {"first_order", "adaptive"}
