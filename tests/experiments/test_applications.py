"""The application experiments (credit_assignment, data_valuation, babble_reduce) end to end on generated raw files.

Neither the Babble Labble CDR database nor the MultiNLI bundle is reachable offline, so
:mod:`tests.experiments.app_fixtures` writes small files in their exact formats. The
chain runs as in the paper: ``babble_reduce`` (writes ``reduced_cdr``), then
``data_valuation`` on it, and ``credit_assignment`` on the MultiNLI files. Quantities are
checked against independent NumPy computations from the raw files (weights from the
SQLite table, groups from the JSONL annotators, gradients and losses from the saved
parameters), and first-order predictions against the exact refits.
"""
import copy
import inspect
import json
import sqlite3
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from datasets import storage
from experiments.babble_reduce import (
    BabbleReduce,
    ConfigError as BRConfigError,
    build_config as br_config,
    run_id_from_config as br_run_id,
)
from experiments.credit_assignment import EXTRA_SUMMARY_KEYS, SUMMARY_KEYS, CreditAssignment, build_config as ca_config
from experiments.data_valuation import ACTL_PRED_KEYS, FIXED_TEST, ConfigError, DataValuation, build_config as dv_config
from tests.conftest import REPO_ROOT, RTOL_TWO_PATHS, assert_close
from tests.experiments.app_fixtures import CDR_LF_IDS, MNLI_NOISY_WORKER, MNLI_WORKERS, make_cdr_db, make_mnli_files

DV_CV = (1e-3, 1e-2, 2)      # narrowed grids keep the suite fast; the code path is the paper's
CA_CV = (1e-1, 1e-1, 1)
CA_FOLDS = 2


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def run_script(name, *args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cdr(tmp_path_factory):
    root = tmp_path_factory.mktemp("cdr")
    data_dir, out_dir = root / "data", root / "output"
    db = make_cdr_db(data_dir)
    br = BabbleReduce(br_config(data_dir=str(data_dir)), out_dir=out_dir, progress=False)
    br.run()
    dv = DataValuation(dv_config(data_dir=str(data_dir), sample_weights=True, cross_validation_range=DV_CV),
                       out_dir=out_dir, progress=False)
    dv.run()
    return {"data_dir": data_dir, "out_dir": out_dir, "db": db, "br": br, "dv": dv}


@pytest.fixture(scope="module")
def mnli(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnli")
    data_dir, out_dir = root / "data", root / "output"
    folder = make_mnli_files(data_dir)
    ca = CreditAssignment(ca_config(data_dir=str(data_dir), cross_validation_range=CA_CV,
                                    cross_validation_folds=CA_FOLDS), out_dir=out_dir, progress=False, plots=False)
    ca.run()
    return {"data_dir": data_dir, "out_dir": out_dir, "folder": folder, "ca": ca}


def db_tables(db):
    conn = sqlite3.connect(db)
    try:
        votes = conn.execute("SELECT candidate_id, key_id, value FROM label").fetchall()
        split = dict(conn.execute("SELECT id, split FROM candidate").fetchall())
    finally:
        conn.close()
    return votes, split


# ----------------------------------------------------------------------------- babble_reduce
def test_babble_reduce_config_and_run_ids():
    assert br_run_id(br_config()) == "cdr_regularization_type-l1_sample_weights-True"
    assert br_run_id(br_config(sample_weights=False)) == "cdr_regularization_type-l1_sample_weights-False"
    c = br_config(data_dir="/x/data")
    assert c["save_reduced_dir"] == "/x/data/babble"
    assert c["initial_reg_range"] == (1e-4, 1e-1, 10) and c["fit_intercept"] is True
    with pytest.raises(BRConfigError, match="--dataset-id"):
        br_config(dataset_id="spouse")


def test_babble_reduce_selects_l1_features_and_writes_reduced_cdr(cdr):
    from sklearn.linear_model import LogisticRegression as SkLR

    from datasets.loader import load_dataset, load_supplemental_info

    R = cdr["br"].R
    cdr_ds = load_dataset("cdr", data_dir=cdr["data_dir"])
    n, F = cdr_ds.train.x.shape
    assert_close(R["regs"], np.logspace(np.log10(1e-4 * n), np.log10(1e-1 * n), 10), RTOL_TWO_PATHS, what="regs")
    assert R["coefs"].shape == (10, F) and R["accs"].shape == (3, 10) and R["f1s"].shape == (3, 10)
    assert R["best_i"] == int(np.argmax(R["f1s"][1]))  # validation F1
    assert np.array_equal(R["feature_inds"], np.flatnonzero(R["coefs"][R["best_i"]]))
    assert np.array_equal(R["nonzeros"], (R["coefs"] != 0).sum(axis=1) + (R["intercepts"] != 0))
    assert 0 < len(R["feature_inds"]) < F
    assert R["nonzeros"][-1] < R["nonzeros"][0]  # L1: stronger penalty, fewer features
    # The best fit again, independently (the modern equivalent of sklearn 0.20's L1 model),
    # with the RandomState(1) the path had used best_i times (one liblinear seed per fit).
    w = load_supplemental_info("cdr_weights", data_dir=cdr["data_dir"])
    rs = np.random.RandomState(1)
    for _ in range(R["best_i"]):
        rs.randint(np.iinfo("i").max)
    sk = SkLR(l1_ratio=1.0, solver="liblinear", C=1 / R["regs"][R["best_i"]], random_state=rs)
    sk.fit(cdr_ds.train.x, cdr_ds.train.labels, sample_weight=w[0])
    assert_close(R["coefs"][R["best_i"]], sk.coef_[0], 1e-12, what="coefs")
    # reduced_cdr = the cdr matrices restricted to the selected columns.
    red = load_dataset("reduced_cdr", data_dir=cdr["data_dir"])
    for a, b in zip(red, cdr_ds):
        assert np.array_equal(a.x, b.x.toarray()[:, R["feature_inds"]])
        assert np.array_equal(a.labels, b.labels)
    nf = load_supplemental_info("reduced_cdr_nonfires", data_dir=cdr["data_dir"])
    nf_full = load_supplemental_info("cdr_nonfires", data_dir=cdr["data_dir"])
    assert np.array_equal(nf.x, nf_full.x.toarray()[:, R["feature_inds"]])
    assert R["reduced_features_shapes"].tolist() == [[d.num_examples, len(R["feature_inds"])] for d in cdr_ds]


def test_babble_reduce_path_shares_one_random_state_as_the_original(cdr, tmp_path, monkeypatch):
    # The original refit one model (random_state=RandomState(1)) along the path: liblinear
    # drew seed i+1 of that stream for fit i. A fresh RandomState(1) per fit would give
    # every fit the first seed.
    from sklearn.linear_model import _logistic

    seeds = []
    real_fit = _logistic._fit_liblinear

    def recording_fit(*args, **kwargs):
        random_state = inspect.signature(real_fit).bind(*args, **kwargs).arguments["random_state"]
        seeds.append(copy.deepcopy(random_state).randint(np.iinfo("i").max))  # the seed liblinear draws
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(_logistic, "_fit_liblinear", recording_fit)
    config = br_config(data_dir=str(cdr["data_dir"]), save_reduced_dir=str(tmp_path / "red"))
    R = BabbleReduce(config, out_dir=tmp_path, progress=False).run()
    stream = np.random.RandomState(1)
    expected = [stream.randint(np.iinfo("i").max) for _ in range(10)]
    assert seeds == expected and len(set(seeds)) == 10
    assert np.array_equal(R["coefs"], cdr["br"].R["coefs"])  # the module fixture ran the same path


def test_babble_reduce_without_sample_weights_runs_unweighted(cdr, tmp_path):
    # The original crashed here (it indexed None): now an unweighted run.
    exp = BabbleReduce(br_config(data_dir=str(cdr["data_dir"]), sample_weights=False,
                                 save_reduced_dir=str(tmp_path / "reduced")), out_dir=tmp_path, progress=False)
    R = exp.run()
    assert exp.base_dir == tmp_path / "babble_reduce" / "cdr_regularization_type-l1_sample_weights-False"
    assert (tmp_path / "reduced" / "reduced_cdr_x.npz").is_file()
    assert not np.array_equal(R["coefs"], cdr["br"].R["coefs"])  # the weights mattered


def test_babble_reduce_rewrites_missing_reduced_files(cdr, tmp_path):
    config = br_config(data_dir=str(cdr["data_dir"]), save_reduced_dir=str(tmp_path / "red"))
    BabbleReduce(config, out_dir=tmp_path, progress=False).run()
    target = tmp_path / "red" / "reduced_cdr_x.npz"
    target.unlink()
    BabbleReduce(config, out_dir=tmp_path, progress=False).run()  # phase 0 loaded, phase 1 redone
    assert target.is_file()


def test_babble_reduce_script(cdr, tmp_path):
    proc = run_script("babble_reduce.py", "--data-dir", cdr["data_dir"], "--out-dir", tmp_path,
                      "--save-reduced-dir", tmp_path / "red", "--dataset-id", "cdr", "--fit-intercept",
                      "--sample-weights", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "babble_reduce" / "cdr_regularization_type-l1_sample_weights-True"
            / "result_1-create_reduced_matrices.npz").is_file()
    assert (tmp_path / "red" / "reduced_cdr_nonfires_x.npz").is_file()
    proc = run_script("babble_reduce.py", "--data-dir", cdr["data_dir"], "--out-dir", tmp_path, "--dataset-id", "x")
    assert proc.returncode == 2 and "error: --dataset-id" in proc.stderr


# ----------------------------------------------------------------------------- data_valuation
def test_data_valuation_groups_are_labelling_functions_with_inverse_count_weights(cdr):
    from datasets.loader import load_supplemental_info

    dv = cdr["dv"]
    R = dv.R
    votes, split = db_tables(cdr["db"])
    train_votes = [v for v in votes if split[v[0]] == 0]
    lf_of_row = np.array([k for _, k, _ in train_votes])
    assert R["subset_LF_ids"].tolist() == list(CDR_LF_IDS)  # LF 4 fires nowhere: skipped
    assert R["subset_tags"] == ["same_features"] * len(CDR_LF_IDS)
    for lf, idx in zip(R["subset_LF_ids"], R["subset_indices"]):
        assert np.array_equal(idx, np.flatnonzero(lf_of_row == lf))
    assert sorted(np.concatenate(R["subset_indices"]).tolist()) == list(range(len(train_votes)))
    # weights: 1 / (number of LFs that fired on the row's candidate), from the raw table
    counts = {}
    for c, _, _ in votes:
        counts[c] = counts.get(c, 0) + 1
    expected = np.array([1.0 / counts[c] for c, _, _ in train_votes])
    assert_close(dv.weights[0], expected, RTOL_TWO_PATHS, what="train weights")
    assert np.all(dv.weights[2] == 1.0)
    assert len(load_supplemental_info("reduced_cdr_LFs", data_dir=cdr["data_dir"])[0]) == len(train_votes)


def test_data_valuation_keys_shapes_and_selection_quirk(cdr):
    R = cdr["dv"].R
    S, n, n_t = len(R["subset_tags"]), len(R["initial_train_losses"]), len(R["initial_test_losses"])
    n_nf = len(R["initial_nonfires_losses"])
    assert len(ACTL_PRED_KEYS) == 26
    for key in ACTL_PRED_KEYS:
        shape = {"fixed_test": (S, 6), "nonfires": (S, n_nf)}.get(key.split("_actl")[0].split("_pred")[0][7:], (S,))
        assert np.shape(R[key]) == shape, key
    assert R["fixed_test"].tolist() == FIXED_TEST
    assert R["fixed_test_pred_infl"].shape == (6, n) and R["nonfires_pred_margin_infl"].shape == (n_nf, n)
    for key in ("all_test_pred_infl", "pos_test_pred_margin_infl", "neg_test_pred_infl", "all_train_pred_infl"):
        assert R[key].shape == (n,)
    assert R["nonfires_predictions"].shape == (n_nf, 2)
    assert R["subset_test_margins"].shape == (S, n_t) and R["subset_train_losses"].shape == (S, n)
    assert R["train_grad_loss"].shape == (n, R["hessian"].shape[0])
    # QUIRK kept: lambda maximises the mean TEST F1 of the fold models.
    assert R["cv_l2_reg"] == R["cv_regs"][int(np.argmax(R["cv_f1s"]))]
    assert R["cv_f1s"].shape == R["cv_accs"].shape == (DV_CV[2],)


def test_data_valuation_predictions_by_independent_linear_algebra(cdr):
    dv = cdr["dv"]
    R = dv.R
    s, wt = dv.weights[0], dv.weights[2]
    theta = R["initial_params"]
    Xa = np.hstack([dv.train.x.astype(np.float64), np.ones((dv.train.num_examples, 1))])
    Ta = np.hstack([dv.test.x.astype(np.float64), np.ones((dv.test.num_examples, 1))])
    y, yt = dv.train.labels, dv.test.labels
    p = sigmoid(Xa @ theta)
    mask = np.r_[np.ones(Xa.shape[1] - 1), 0.0]
    H = Xa.T @ ((s * p * (1 - p))[:, None] * Xa) + R["cv_l2_reg"] * np.diag(mask)
    assert_close(R["hessian"], H, RTOL_TWO_PATHS, what="weighted Hessian")
    G = (p - y)[:, None] * Xa
    assert_close(R["train_grad_loss"], G, RTOL_TWO_PATHS, what="per-example gradients")
    G_S = np.array([s[g] @ G[g] for g in R["subset_indices"]])
    pt = sigmoid(Ta @ theta)
    g_all = wt @ ((pt - yt)[:, None] * Ta)
    pos = yt == 1
    gm_pos = wt[pos] @ ((2 * yt[pos] - 1)[:, None] * Ta[pos])
    Hinv = np.linalg.inv(H)
    assert_close(R["subset_all_test_pred_infl"], G_S @ Hinv @ g_all, 1e-8, what="all test pred")
    assert_close(R["subset_pos_test_pred_margin_infl"], G_S @ Hinv @ gm_pos, 1e-8, what="pos test margin pred")
    assert_close(R["subset_self_pred_infl"], np.einsum("sd,de,se->s", G_S, Hinv, G_S), 1e-8, what="self pred")


def test_data_valuation_refits_are_certified_and_keep_unnormalised_weights(cdr):
    dv = cdr["dv"]
    R = dv.R
    assert np.all(R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"])
    assert np.all(R["subset_refit_iters"] >= 1)
    s = dv.weights[0]
    Xa = np.hstack([dv.train.x.astype(np.float64), np.ones((dv.train.num_examples, 1))])
    y = dv.train.labels
    mask = np.r_[np.ones(Xa.shape[1] - 1), 0.0]
    votes, split = db_tables(cdr["db"])
    cand = np.array([c for c, _, _ in votes if split[c] == 0])
    for k, g in enumerate(R["subset_indices"]):
        theta = R["subset_refit_params"][k]

        def grad(w, theta=theta):
            return Xa.T @ (w * (sigmoid(Xa @ theta) - y)) + R["cv_l2_reg"] * mask * theta

        kept = s.copy()
        kept[g] = 0.0
        assert np.linalg.norm(grad(kept)) <= 1e-9 * np.abs(kept) @ np.linalg.norm(Xa, axis=1)
        # Renormalising the candidates' remaining votes would be another optimum (QUIRK kept).
        renorm = kept.copy()
        for c in np.unique(cand):
            rows = np.flatnonzero(cand == c)
            if kept[rows].sum() > 0:
                renorm[rows] = kept[rows] / kept[rows].sum()
        if not np.allclose(renorm, kept):
            assert np.linalg.norm(grad(renorm)) > 1e-6
    # actual = measured change of the weighted summed quantity at the refitted parameters
    Ta = np.hstack([dv.test.x.astype(np.float64), np.ones((dv.test.num_examples, 1))])
    yt, wt = dv.test.labels, dv.weights[2]
    loss = lambda th: np.logaddexp(0, Ta @ th) - yt * (Ta @ th)  # noqa: E731
    actl = np.array([wt @ (loss(th) - loss(R["initial_params"])) for th in R["subset_refit_params"]])
    assert_close(R["subset_all_test_actl_infl"], actl, 1e-9, what="all test actual")
    margin = lambda th: (2 * y - 1) * (Xa @ th)  # noqa: E731
    self_m = [s[g] @ (margin(th)[g] - margin(R["initial_params"])[g])
              for g, th in zip(R["subset_indices"], R["subset_refit_params"])]
    assert_close(R["subset_self_actl_margin_infl"], self_m, 1e-9, what="self margin actual")


def test_data_valuation_actual_and_predicted_agree(cdr):
    R = cdr["dv"].R
    for key in ("self", "pos_test", "neg_test"):
        for suffix in ("_infl", "_margin_infl"):
            a, p = R[f"subset_{key}_actl{suffix}"], R[f"subset_{key}_pred{suffix}"]
            assert spearmanr(a, p)[0] > 0.8, (key, suffix, a, p)
            assert np.mean(np.sign(a) == np.sign(p)) >= 5 / 6
    # first order underestimates removal effects but stays within a factor 3 on the smallest group
    k = int(np.argmin([len(g) for g in R["subset_indices"]]))
    ratio = R["subset_self_pred_infl"][k] / R["subset_self_actl_infl"][k]
    assert 1 / 3 < ratio <= 1.0


def test_data_valuation_script_reuses_the_run(cdr):
    base = cdr["out_dir"] / "data_valuation" / "reduced_cdr_sample_weights-True"
    mtimes = {p.name: p.stat().st_mtime_ns for p in base.glob("result_*.npz")}
    assert len(mtimes) == 9
    proc = run_script("data_valuation.py", "--data-dir", cdr["data_dir"], "--out-dir", cdr["out_dir"],
                      "--dataset-id", "reduced_cdr", "--sample-weights", "--cv-range", *DV_CV, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "data_valuation done" in proc.stdout and "6/6 certified" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in base.glob("result_*.npz")} == mtimes  # all loaded
    assert json.loads((base / "config.json").read_text())["sample_weights"] is True


def test_data_valuation_errors(tmp_path):
    with pytest.raises(ConfigError, match="--dataset-id"):
        dv_config(dataset_id="cdr")
    with pytest.raises(ConfigError, match="--cv-folds"):
        dv_config(cross_validation_folds=1)
    exp = DataValuation(dv_config(data_dir=str(tmp_path)), out_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="reduced_cdr_x.npz.*babble_reduce"):
        exp.run()


# ----------------------------------------------------------------------------- credit_assignment
def read_authors(path):
    with open(path) as f:
        return np.array([json.loads(line)["sentence2_author"] for line in f])


def mnli_arrays(folder):
    with np.load(folder / "mnli.npz") as z:
        x0, y0, x2, y2 = (z[k] for k in ("x0", "lab0", "x2", "lab2"))
    return x0[:, :600].astype(np.float64), y0, x2[:, :600].astype(np.float64), y2


def softmax_parts(theta, X, y, K=3):
    """Per-example losses and gradients of the multinomial model in the project's layout."""
    D = X.shape[1]
    W, b = theta[:K * D].reshape(K, D), theta[K * D:]
    Z = X @ W.T + b
    Z = Z - Z.max(axis=1, keepdims=True)
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    R = P - np.eye(K)[y]
    G = np.hstack([(R[:, :, None] * X[:, None, :]).reshape(len(X), -1), R])
    return -np.log(P[np.arange(len(y)), y]), G


def test_credit_assignment_config_and_groups(mnli):
    ca = mnli["ca"]
    R = ca.R
    assert ca.base_dir == mnli["out_dir"] / "credit_assignment" / "mnli_sample_weights-None"
    workers = sorted(MNLI_WORKERS)
    assert R["subset_tags"] == [f"same_turker-{w}" for w in workers]
    authors = read_authors(mnli["folder"] / "multinli_1.0_train_with_annotators.jsonl")
    for w, idx in zip(workers, R["subset_indices"]):
        assert np.array_equal(idx, np.flatnonzero(authors == w))
        assert len(idx) == MNLI_WORKERS[w]
    assert R["test_genres"] == ["fiction", "government", "slate", "telephone", "travel"]
    assert R["nonfires_genres"] == ["facetoface", "letters", "nineeleven", "oup", "verbatim"]
    assert sum(len(i) for i in R["test_genre_inds"]) == len(R["initial_test_losses"]) == 9815
    assert R["fixed_test"].tolist() == [8487, 3448, 3156, 1127, 4218, 6907]
    assert R["fixed_nonfires"].tolist() == [1722, 2734, 9467, 7378, 9448, 2838]
    assert R["hessian"].shape == (1803, 1803)
    with pytest.raises(ConfigError, match="--dataset-id"):
        ca_config(dataset_id="hospital")


def test_credit_assignment_keys_and_shapes(mnli):
    R = mnli["ca"].R
    S = len(R["subset_tags"])
    for name in ("train", "test", "nonfires"):
        for t in ("all", "class_0", "class_1", "class_2"):
            for kind in ("actl", "pred"):
                assert R[f"{t}_{name}_{kind}_infl"].shape == (S,)
    for g in R["test_genres"]:
        assert R[f"{g}_test_actl_infl"].shape == R[f"{g}_test_pred_infl"].shape == (S,)
    for g in R["nonfires_genres"]:
        assert R[f"{g}_nonfires_actl_infl"].shape == R[f"{g}_nonfires_pred_infl"].shape == (S,)
    for key in ("fixed_test_actl_infl", "fixed_test_pred_infl", "fixed_nonfires_actl_infl",
                "fixed_nonfires_pred_infl"):
        assert R[key].shape == (S, 6)
    assert R["self_actl_infl"].shape == R["self_pred_infl"].shape == (S,)
    assert R["subset_pred_dparam"].shape == R["subset_train_grad_for_pred_infl"].shape == (S, 1803)
    assert R["nonfires_predictions"].shape == (9832, 3)
    assert R["subset_test_losses"].shape == (S, 9815) and R["subset_nonfires_losses"].shape == (S, 9832)
    assert [len(v) for v in R["subset_train_losses"]] == [len(g) for g in R["subset_indices"]]
    # --no-intermediate-results summary
    path = mnli["ca"].save_summary(mnli["ca"].summary_keys())
    summary, _ = storage.load_result(path)
    assert set(summary) == set(SUMMARY_KEYS + EXTRA_SUMMARY_KEYS)
    assert len(SUMMARY_KEYS) == 27


def test_credit_assignment_against_independent_numpy(mnli):
    R = mnli["ca"].R
    x0, y0, x2, y2 = mnli_arrays(mnli["folder"])
    theta = R["initial_params"]
    _, G = softmax_parts(theta, x0, y0)
    G_S = np.array([G[g].sum(axis=0) for g in R["subset_indices"]])
    assert_close(R["subset_train_grad_for_pred_infl"], G_S, RTOL_TWO_PATHS, what="g_S")
    l_test, G_t = softmax_parts(theta, x2, y2)
    # The Hessian is singular along the bias gauge u (the three intercepts together), to
    # which every g is orthogonal: on u's complement H^+ = (H + u u^T)^-1 (one solve
    # instead of an eigendecomposition).
    u = np.r_[np.zeros(1800), np.ones(3)] / np.sqrt(3)
    assert np.abs(R["hessian"] @ u).max() <= 1e-12 * np.abs(R["hessian"]).max()
    assert np.abs(G_S @ u).max() <= 1e-12 * np.abs(G_S).max()
    Hinv = np.linalg.inv(R["hessian"] + np.outer(u, u))
    assert_close(R["all_test_pred_infl"], G_S @ Hinv @ G_t.sum(axis=0), 1e-7, what="all test pred")
    fiction = R["test_genre_inds"][R["test_genres"].index("fiction")]
    assert_close(R["fiction_test_pred_infl"], G_S @ Hinv @ G_t[fiction].sum(axis=0), 1e-7, what="genre pred")
    assert_close(R["fixed_test_pred_infl"], G_S @ Hinv @ G_t[R["fixed_test"]].T, 1e-7, what="fixed pred")
    # actual: measured at the refitted parameters
    for k, th in enumerate(R["subset_refit_params"]):
        l_after, _ = softmax_parts(th, x2, y2)
        assert_close(R["all_test_actl_infl"][k], (l_after - l_test).sum(), 1e-9, what="all test actual")
        assert_close(R["class_1_test_actl_infl"][k], (l_after - l_test)[y2 == 1].sum(), 1e-9, what="class actual")
    # certified refits: reduced-objective gradient at each refit
    mask = np.r_[np.ones(1800), np.zeros(3)]
    Xn = np.linalg.norm(np.hstack([x0, np.ones((len(x0), 1))]), axis=1)
    for g, th, gn in zip(R["subset_indices"], R["subset_refit_params"], R["subset_refit_grad_norm"]):
        keep = np.ones(len(y0), dtype=bool)
        keep[g] = False
        grad = softmax_parts(th, x0[keep], y0[keep])[1].sum(axis=0) + R["cv_l2_reg"] * mask * th
        assert np.linalg.norm(grad) <= 1e-9 * Xn[keep].sum()
        assert_close(np.linalg.norm(grad), gn, 1e-3, atol=1e-10, what="recorded grad norm")
    assert np.all(R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"])


def test_credit_assignment_actual_and_predicted_agree(mnli):
    R = mnli["ca"].R
    keys = ["self", "all_test", "all_nonfires"] + [f"{g}_test" for g in R["test_genres"]]
    for key in keys:
        a, p = R[f"{key}_actl_infl"], R[f"{key}_pred_infl"]
        assert spearmanr(a, p)[0] > 0.8, (key, a, p)
    # The worker with random labels is the one whose removal helps the test loss most.
    noisy = R["subset_tags"].index(f"same_turker-{MNLI_NOISY_WORKER}")
    assert np.argmin(R["all_test_pred_infl"]) == np.argmin(R["all_test_actl_infl"]) == noisy
    assert R["all_test_actl_infl"][noisy] < 0 < np.delete(R["all_test_actl_infl"], noisy).min()
    # smallest worker: first order within a factor 6 of the exact change, same sign
    k = int(np.argmin([len(g) for g in R["subset_indices"]]))
    ratio = R["all_test_pred_infl"][k] / R["all_test_actl_infl"][k]
    assert 1 / 6 < ratio < 1.5


def test_credit_assignment_large_training_sets_fit_by_newton_cg(mnli, monkeypatch):
    """From NEWTON_CG_MIN_TRAIN points on, the fits are Newton-CG: the same certified optimum."""
    import experiments.credit_assignment as ca_module

    ca, R = mnli["ca"], mnli["ca"].R
    assert ca.get_model().config["fit_method"] == "auto" and ca.num_train < ca_module.NEWTON_CG_MIN_TRAIN
    exp = CreditAssignment(ca.config, out_dir=mnli["out_dir"], progress=False, plots=False)
    monkeypatch.setattr(ca_module, "NEWTON_CG_MIN_TRAIN", ca.num_train)
    model = exp.get_model()
    assert model.config["fit_method"] == "newton_cg"
    fit = model.fit(exp.train, exp.weights("train"), R["cv_l2_reg"])
    assert fit.converged and fit.grad_norm <= fit.grad_tol
    assert_close(model.get_params_flat(), R["initial_params"], 1e-9, what="theta_hat by Newton-CG")


def test_credit_assignment_script(mnli):
    proc = run_script("credit_assignment.py", "--worker")
    assert proc.returncode == 0 and "task queue was replaced" in proc.stdout
    base = mnli["out_dir"] / "credit_assignment" / "mnli_sample_weights-None"
    proc = run_script("credit_assignment.py", "--data-dir", mnli["data_dir"], "--out-dir", mnli["out_dir"],
                      "--dataset-id", "mnli", "--cv-range", *CA_CV, "--cv-folds", CA_FOLDS, "--invalidate", 9,
                      "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "credit_assignment done" in proc.stdout and "8/8 certified" in proc.stdout
    assert "phase 8 compute_actl_infl: loaded" in proc.stderr
    plots = sorted(p.name for p in (base / "plots").glob("*.png"))
    assert len(plots) == 1 + 6 + 6 + 5 + 5 + 12
    assert "fixed-test-8487_loss.png" in plots and "nonfires-genre-oup_loss.png" in plots
    assert "class_2-nonfires_loss.png" in plots and "fixed-nonfires-5_loss.png" in plots


@pytest.mark.slow
def test_credit_assignment_script_paper_flags(mnli, tmp_path):
    """The paper run's flags (master-only: only config.json, the summary and the plots are written)."""
    proc = run_script("credit_assignment.py", "--data-dir", mnli["data_dir"], "--out-dir", tmp_path,
                      "--dataset-id", "mnli", "--no-intermediate-results", "--cv-range", *CA_CV,
                      "--cv-folds", CA_FOLDS, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    base = tmp_path / "credit_assignment" / "mnli_sample_weights-None"
    assert not list(base.glob("result_[0-9]*.npz"))
    exp = CreditAssignment.load_run("mnli_sample_weights-None", out_dir=tmp_path)
    assert set(exp.R) == set(SUMMARY_KEYS + EXTRA_SUMMARY_KEYS)
    for key in ("all_test_pred_infl", "fiction_test_actl_infl", "oup_nonfires_pred_infl"):
        assert_close(exp.R[key], mnli["ca"].R[key], 1e-8, what=key)


def test_credit_assignment_missing_files_are_named(tmp_path, monkeypatch):
    from datasets import download

    def offline(url, *a, **k):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(download, "fetch_url", offline)
    exp = CreditAssignment(ca_config(data_dir=str(tmp_path)), out_dir=tmp_path, progress=False)
    with pytest.raises(download.DataUnavailableError, match="mnli.npz.*0x5258e3771b974983abfb10bfa75e207d"):
        exp.run()


def test_sparse_fixture_format_is_the_loaders(cdr):
    # The generated database goes through the real cdr loader (sparse CSR rows per vote).
    from datasets.loader import load_dataset
    ds = load_dataset("cdr", data_dir=cdr["data_dir"])
    assert sp.issparse(ds.train.x) and ds.test.num_examples == 3900
