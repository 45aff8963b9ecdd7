"""The counterexamples experiment against independent oracles."""
import collections
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression as SkLR

from datasets import storage
from experiments.counterexamples import (
    AVG_KS,
    DATASET_IDS,
    SUMMARY_KEYS,
    ConfigError,
    Counterexamples,
    build_config,
    find_adversarial_test,
    generate_datasets,
    pick_subsets,
)
from tests.conftest import REPO_ROOT, RTOL_LEVERAGE, RTOL_TWO_PATHS, assert_close

# The original's datasets: N_train, D, #subsets, K set of phase 4.
TABLE = {
    "gauss": (40, 5, 10700, (2, 5, 10, 15)),
    "fixed": (8, 2, 84, (1, 2, 4, 6)),
    "repeats": (250, 20, 210, (10, 20, 40, 60)),
    "gauss2": (40, 10, 780, (5, 10, 20, 30)),
    "gauss3": (80, 100, 3160, (50, 100, 200, 300)),
    "gauss4": (120, 60, 7140, (30, 60, 120, 180)),
    "ortho2": (120, 2, 116, (1, 2, 4, 6)),
    "gauss5": (100, 11, 100, (5, 11, 22, 33)),
}


@pytest.fixture(scope="module")
def datasets():
    return generate_datasets(0)


def run(dataset_id, out_dir, dtype="float64", master_only=True):
    """A run in memory (master-only: only config.json is written) or with phase files."""
    exp = Counterexamples(build_config(dataset_id, master_only=master_only, dtype=dtype),
                          out_dir=out_dir, progress=False)
    exp.run(save_phase_results=not master_only)
    return exp


@pytest.fixture(scope="module")
def ortho2(tmp_path_factory):
    return run("ortho2", tmp_path_factory.mktemp("out"), master_only=False)


@pytest.fixture(scope="module")
def gauss2_both(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return run("gauss2", out), run("gauss2", out, dtype="float32")


# ------------------------------------------------------------------ phase 0 and 2
def test_dataset_shapes_and_label_counts(datasets):
    R = datasets
    for ds, (n, D, _, _) in TABLE.items():
        for split in ("train", "test"):
            X, Y = R[f"{ds}_{split}_X"], R[f"{ds}_{split}_Y"]
            assert X.shape == (n, D), (ds, split, X.shape)
            assert Y.shape == (n,) and set(np.unique(Y)) <= {0, 1}
            assert Y.dtype == (np.int64 if ds == "fixed" else np.float64), (ds, Y.dtype)
    for ds, per_class in (("gauss", 20), ("gauss2", 20), ("gauss3", 40), ("gauss4", 60)):
        for split in ("train", "test"):
            assert np.bincount(R[f"{ds}_{split}_Y"].astype(int)).tolist() == [per_class, per_class]
        assert not np.array_equal(R[f"{ds}_train_X"], R[f"{ds}_test_X"])  # separate draws
    for ds in ("fixed", "repeats", "ortho2", "gauss5"):  # test = train
        assert np.array_equal(R[f"{ds}_train_X"], R[f"{ds}_test_X"])
        assert np.array_equal(R[f"{ds}_train_Y"], R[f"{ds}_test_Y"])
    assert np.bincount(R["repeats_train_Y"].astype(int)).tolist() == [153, 97]
    assert np.bincount(R["ortho2_train_Y"].astype(int)).tolist() == [80, 40]
    assert np.bincount(R["gauss5_train_Y"][:80].astype(int)).tolist() == [40, 40]


def test_seed0_facts(datasets):
    R = datasets
    assert R["fixed_train_X"].tolist() == [[0, 1], [1, 0], [0, 1], [1, 0], [.75, .25], [0, 1], [.25, .75], [1, 0]]
    assert R["fixed_train_Y"].tolist() == [1, 0, 1, 0, 1, 1, 0, 0]
    starts = [i * (i + 1) // 2 for i in range(20)]
    assert R["repeats_train_Y"][starts].astype(int).tolist() == \
        [0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1]
    assert R["repeats_N_unique"] == 20
    X = R["repeats_train_X"]
    basis = X[starts]
    assert_close(basis @ basis.T, np.eye(20), 1e-12, atol=1e-12, what="orthonormal repeated vectors")
    for i, s in enumerate(starts):  # vector i repeated i + 1 times, contiguously
        assert (X[s:s + i + 1] == basis[i]).all()
    assert np.abs(X[210:]).max() < 1.0  # N(0, 0.1) noise rows
    # ortho2: four blocks along e0 / e1.
    Xo = R["ortho2_train_X"]
    assert R["ortho2_ids"].tolist() == [0] * 40 + [1] * 20 + [2] * 40 + [3] * 20
    assert (Xo[:40] == [0.25 * 0.3, 0]).all() and (Xo[40:60] == [0.5 * 0.3, 0]).all()
    assert (Xo[60:100] == [0, 1]).all() and (Xo[100:] == [0, 0.1]).all()
    assert R["ortho2_train_Y"].tolist() == [0] * 40 + [1] * 20 + [0] * 40 + [1] * 20
    # gauss5: zero 11th coordinate on the mixture, random rows after it.
    assert (R["gauss5_train_X"][:80, 10] == 0).all() and (R["gauss5_train_X"][80:, 10] != 0).all()


def test_gauss_follows_the_spec_construction_bit_for_bit(datasets):
    """An independent transcription of the original item 1 (mixture with the +axis/2 block labelled 0)."""
    rng = np.random.RandomState(0)
    sep = rng.normal(0, 1, (5,))
    sep /= np.linalg.norm(sep)
    for split in ("train", "test"):
        X = np.vstack([rng.normal(0, 1, (20, 5)) + sep / 2, rng.normal(0, 1, (20, 5)) - sep / 2])
        Y = np.array([0.0] * 20 + [1.0] * 20)
        idx = np.arange(40)
        rng.shuffle(idx)
        assert np.array_equal(datasets[f"gauss_{split}_X"], X[idx])
        assert np.array_equal(datasets[f"gauss_{split}_Y"], Y[idx])
    other = generate_datasets(1)
    assert not np.array_equal(other["gauss_train_X"], datasets["gauss_train_X"])
    assert np.array_equal(other["ortho2_train_X"], datasets["ortho2_train_X"])


def test_subset_counts_and_structure(datasets):
    for ds, (_, _, count, _) in TABLE.items():
        assert len(pick_subsets(ds, datasets)) == count, ds
    rep = pick_subsets("repeats", datasets)
    assert rep[0].tolist() == [0] and rep[1].tolist() == [1] and rep[2].tolist() == [1, 2]
    assert rep[-1].tolist() == list(range(190, 210))
    ort = pick_subsets("ortho2", datasets)
    ids = datasets["ortho2_ids"]
    assert max(len(g) for g in ort) == 39 and ort[0].tolist() == [0] and ort[39].tolist() == [40]
    for g in ort:  # a block is never removed completely, always from its start
        block = np.flatnonzero(ids == ids[g[0]])
        assert len(g) < len(block) and g.tolist() == block[:len(g)].tolist()
    fixed = pick_subsets("fixed", datasets)
    assert fixed[0].tolist() == [0, 1] and fixed[27].tolist() == [6, 7] and fixed[28].tolist() == [0, 1, 2]
    assert [len(g) for g in pick_subsets("gauss", datasets)[:41]] == [1] * 40 + [2]


# ------------------------------------------------------------------ phases 1, 3 (ortho2)
def test_ortho2_optimum_and_files(ortho2):
    R = ortho2.R
    assert ortho2.run_id == "ortho2" and ortho2.config["dtype"] == "float64"
    w = R["initial_params"]
    assert abs(w[0]) < 1e-12  # the e0 gradients cancel exactly at w0 = 0
    assert abs(w[1] - (-3.214)) < 1e-3
    assert R["l2_reg"] == pytest.approx(0.12)
    names = sorted(p.name for p in ortho2.base_dir.glob("result_*.npz"))
    assert names == ["result_0-generate_datasets.npz", "result_1-training.npz", "result_2-pick_subsets.npz",
                     "result_3-retrain_and_newton.npz", "result_4-find_adversarial_test.npz",
                     "result_5-compute_test_infl.npz"]
    again = Counterexamples.load_run("ortho2", ortho2.out_dir)
    for key in ("subset_newton_pred_dparam", "cex_X", "cex_subset_test_actl_margin_infl"):
        assert np.array_equal(again.R[key], R[key])
    assert again.R["cex_tags"] == R["cex_tags"]


def _oracle_H_and_grads(exp):
    R = exp.R
    X, y = exp.train
    w = np.asarray(R["initial_params"], dtype=np.float64)
    p = 1 / (1 + np.exp(-X @ w))
    c = p * (1 - p)
    H = X.T @ (c[:, None] * X) + R["l2_reg"] * np.eye(X.shape[1])
    return X, y, w, c, H, (p - y)[:, None] * X


def test_pred_and_newton_changes_equal_direct_solves(ortho2):
    R = ortho2.R
    X, y, w, c, H, G = _oracle_H_and_grads(ortho2)
    assert_close(R["hessian"], H, RTOL_TWO_PATHS, what="hessian")
    assert_close(R["train_grad_losses"], G, RTOL_TWO_PATHS, what="per-example gradients")
    for s, idx in enumerate(ortho2.subsets):
        g = G[idx].sum(0)
        H_U = X[idx].T @ (c[idx, None] * X[idx])
        assert_close(R["subset_pred_dparam"][s], np.linalg.solve(H, g), RTOL_TWO_PATHS, what=f"pred {s}")
        assert_close(R["subset_newton_pred_dparam"][s], np.linalg.solve(H - H_U, g), RTOL_TWO_PATHS,
                     what=f"newton {s}")


def test_actual_refits_are_certified_and_equal_sklearn(ortho2, gauss2_both):
    for exp in (ortho2, gauss2_both[0]):
        R = exp.R
        assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
        assert R["subset_refit_iters"].min() >= 1
        X, y = exp.train
        groups = exp.subsets
        for s in np.linspace(0, len(groups) - 1, 6).astype(int):
            keep = np.setdiff1d(np.arange(len(y)), groups[s])
            sk = SkLR(C=1 / R["l2_reg"], fit_intercept=False, solver="newton-cholesky", tol=1e-14,
                      max_iter=500).fit(X[keep], y[keep])
            assert_close(R["initial_params"] + R["subset_dparam"][s], sk.coef_[0], 1e-8,
                         what=f"{exp.run_id} refit {s}")


# ------------------------------------------------------------------ phase 4
def test_cex_test_set_tags_and_labels(ortho2, gauss2_both):
    for exp in (ortho2, gauss2_both[0]):
        R = exp.R
        D = TABLE[exp.config["dataset_id"]][1]
        tags = R["cex_tags"]
        assert len(tags) == 1027 and R["cex_X"].shape == (1027, D) and R["cex_Y"].shape == (1027,)
        counts = collections.Counter(tags)
        want = {}
        for K in TABLE[exp.config["dataset_id"]][3]:
            want[f"lstsq_uv_K-{K}"] = want[f"lstsq_uv_K-{K}_gauss"] = 100
            assert len(R[f"cex_lstsq_uv_K-{K}_subsets"]) == K
        for K in AVG_KS:
            for C in ("0.1", "1e-05", "1", "2", "10"):
                want[f"cex_avg_K-{K}_C-{C}"] = 1
            want[f"cex_avg_K-{K}_01"] = 1
            assert R[f"cex_avg_K-{K}"].tolist() == np.argsort(R["subset_cos_dparam"], kind="stable")[:K].tolist()
        want.update(cex_factor=50, cex_random=50, cex_one=1)
        assert counts == want
        tags = np.array(tags)
        assert (R["cex_Y"][tags != "cex_random"] == 1).all()
        assert set(R["cex_Y"][tags == "cex_random"]) == {0.0, 1.0}
        assert (R["cex_X"][tags == "cex_one"] == 1).all()
        norms = np.linalg.norm(R["cex_X"][np.char.startswith(tags, "cex_avg")], axis=1)
        assert np.all((np.abs(norms - 1) < 1e-12) | (norms == 0))


def test_cos_quirk_ranks_tiny_changes_first():
    rng = np.random.RandomState(0)
    a = rng.normal(0, 1, (40, 3))
    b = a + 0.5 * rng.normal(0, 1, (40, 3))
    a[7] = b[7] = 1e-4 * np.array([1.0, 2.0, 3.0])  # true cosine 1, but ||a|| ||b|| << 1e-4
    r = find_adversarial_test(a, b, 0)
    want = np.einsum("sd,sd->s", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-4)
    assert_close(r["subset_cos_dparam"], want, RTOL_TWO_PATHS, what="cos with +1e-4")
    assert r["cex_avg_K-1"].tolist() == [7]


def test_singleton_newton_is_first_order_over_one_minus_leverage(tmp_path):
    """gauss5 removes single points: Newton = first-order / (1 - c x^T H^-1 x) (Sherman-Morrison).

    So a_S and b_S are parallel there, and gauss5's least-squares points cannot hit
    arbitrary (first-order, Newton) targets even when 2K <= D.
    """
    exp = run("gauss5", tmp_path)
    R = exp.R
    X, y, w, c, H, G = _oracle_H_and_grads(exp)
    idx = np.array([g[0] for g in exp.subsets])
    assert idx.tolist() == list(range(100))
    leverage = c * np.einsum("nd,nd->n", X, np.linalg.solve(H, X.T).T)
    assert_close(R["subset_newton_pred_dparam"], R["subset_pred_dparam"] / (1 - leverage)[:, None],
                 RTOL_LEVERAGE, what="singleton Newton")


def _lstsq_targets(seed, D):
    """The phase-4 draws of the original, in its order: per K, (100, 2) then (100, 2K)."""
    rng = np.random.RandomState(seed)
    out = {}
    for K in (D // 2, D, 2 * D, 3 * D):
        out[K] = (rng.normal(0, 1, (100, 2)), rng.normal(0, 1, (100, 2 * K)))
    return out


def test_lstsq_points_reproduce_their_targets_when_2K_le_D():
    """With a full-rank A = [a_E; b_E], K = D // 2 points hit their targets exactly."""
    rng = np.random.RandomState(1)
    S, D = 60, 10
    a = rng.normal(0, 1, (S, D))
    b = a + 0.3 * rng.normal(0, 1, (S, D))
    r = find_adversarial_test(a, b, 0)
    tags = np.array(r["cex_tags"])
    for K, (uv, targets) in _lstsq_targets(0, D).items():
        E = r[f"cex_lstsq_uv_K-{K}_subsets"]
        A = np.vstack([a[E], b[E]])
        X = r["cex_X"][tags == f"lstsq_uv_K-{K}_gauss"]
        err = np.linalg.norm(X @ A.T - targets, axis=1) / np.linalg.norm(targets, axis=1)
        Xuv = r["cex_X"][tags == f"lstsq_uv_K-{K}"]
        assert_close(np.linalg.norm(Xuv, axis=1), np.ones(100), 1e-12, what="unit uv points")
        if 2 * K <= D:
            assert err.max() < 1e-10, err.max()
            # uv points: first-order influence u and Newton influence v on every selected
            # group, up to the normalisation of x.
            scale = np.linalg.norm(np.linalg.pinv(A) @ np.repeat(uv, K, axis=1).T, axis=0)
            assert_close(Xuv @ a[E].T, uv[:, :1] / scale[:, None] * np.ones(K), 1e-9, what="u")
            assert_close(Xuv @ b[E].T, uv[:, 1:] / scale[:, None] * np.ones(K), 1e-9, what="v")
        else:
            assert err.min() > 1e-2  # overdetermined: least squares, not exact


def test_lstsq_points_on_data_are_minimum_norm_least_squares(gauss2_both):
    """On the data the selected groups overlap, so A can be rank deficient (then not exact).

    With no intercept g_i is parallel to x_i, and every row of A lies in the span of
    H^-1 x_i over the points of the selected groups: rank(A) <= #distinct points.
    """
    exp = gauss2_both[0]
    R = exp.R
    a, b = R["subset_pred_dparam"], R["subset_newton_pred_dparam"]
    tags = np.array(R["cex_tags"])
    for K, (_, targets) in _lstsq_targets(0, 10).items():
        E = R[f"cex_lstsq_uv_K-{K}_subsets"]
        A = np.vstack([a[E], b[E]])
        X = R["cex_X"][tags == f"lstsq_uv_K-{K}_gauss"]
        want = np.linalg.pinv(A, rcond=np.finfo(float).eps * max(A.shape)) @ targets.T
        assert_close(X, want.T, 1e-8, what=f"K={K} minimum-norm least squares")
        points = np.unique(np.concatenate([exp.subsets[i] for i in E]))
        rank = np.linalg.matrix_rank(A)
        assert rank <= min(len(points), 10)
        if K == 5:
            # Seed 0: the 5 selected pairs use 9 distinct points, so 2K = D but rank 9.
            assert len(points) == 9 and rank == 9
            err = np.linalg.norm(X @ A.T - targets, axis=1) / np.linalg.norm(targets, axis=1)
            assert err.max() > 1e-2


def test_linear_and_evaluated_influences(ortho2):
    R = ortho2.R
    S = len(ortho2.subsets)
    for key in ("actl", "pparam", "nparam"):
        for m in ("", "_margin"):
            assert R[f"cex_subset_test_{key}{m}_infl"].shape == (S, 1027)
    X, Y = R["cex_X"], R["cex_Y"]
    sign = 2 * Y - 1
    w = R["initial_params"]
    # Margins are linear in theta, so evaluated and linear margin influences coincide.
    for evaluated, dparam in (("pparam", "subset_pred_dparam"), ("nparam", "subset_newton_pred_dparam"),
                              ("actl", "subset_dparam")):
        lin = R[dparam] @ (sign[:, None] * X).T
        assert_close(R[f"cex_subset_test_{evaluated}_margin_infl"], lin, 1e-9, what=evaluated)
    assert_close(R["cex_subset_test_pred_margin_infl"], R["subset_pred_dparam"] @ (sign[:, None] * X).T,
                 RTOL_TWO_PATHS, what="pred margin")
    p = 1 / (1 + np.exp(-X @ w))
    grad_loss = (p - Y)[:, None] * X
    assert_close(R["cex_subset_test_newton_pred_infl"], R["subset_newton_pred_dparam"] @ grad_loss.T,
                 RTOL_TWO_PATHS, what="newton loss")
    thetas = w + R["subset_pred_dparam"]
    Z = thetas @ X.T
    loss = np.logaddexp(0, Z) - Y * Z
    loss0 = np.logaddexp(0, X @ w) - Y * (X @ w)
    assert_close(R["cex_subset_test_pparam_infl"], loss - loss0, 1e-9, what="pparam loss")


def test_ortho2_cone_matches_spec_13(ortho2):
    """Figure 4, right panel: the cex_one point, per block."""
    R = ortho2.R
    j = R["cex_tags"].index("cex_one")
    P = R["cex_subset_test_pred_margin_infl"][:, j]
    N = R["cex_subset_test_newton_pred_margin_infl"][:, j]
    ids = R["ortho2_ids"]
    block = np.array([ids[g[0]] for g in ortho2.subsets])
    table = {0: (0.13, 5.07, 0.13, 6.25, 1.23), 1: (-4.94, -0.26, -7.84, -0.27, 1.59),
             2: (0.02, 0.91, 0.02, 7.32, 8.0), 3: (-0.67, -0.035, -0.69, -0.035, 1.03)}
    for k, (plo, phi, nlo, nhi, ratio) in table.items():
        sel = block == k
        got = (P[sel].min(), P[sel].max(), N[sel].min(), N[sel].max(), (N[sel] / P[sel]).max())
        assert np.allclose(got, (plo, phi, nlo, nhi, ratio), rtol=0.02, atol=0.006), (k, got)
    assert spearmanr(P, N)[0] == pytest.approx(0.972, abs=1e-3)


# ------------------------------------------------------------------ precision
def test_float32_and_float64_differ_only_where_expected(gauss2_both):
    e64, e32 = gauss2_both
    assert e64.run_id == "gauss2" and e32.run_id == "gauss2_float32"
    assert e32.config["dtype"] == "float32"
    saved = storage.load_json(e32.config_path)
    assert saved["dtype"] == "float32"
    R64, R32 = e64.R, e32.R
    for key in generate_datasets(0):
        assert np.array_equal(R64[key], R32[key]), key
    assert all(np.array_equal(g, h) for g, h in zip(R64["subset_indices"], R32["subset_indices"]))
    assert R64["cex_tags"] == R32["cex_tags"]
    for key in ("initial_params", "hessian", "subset_pred_dparam", "subset_newton_pred_dparam"):
        assert R32[key].dtype == np.float32 and R64[key].dtype == np.float64
        assert_close(R32[key], R64[key], 1e-4, what=key)
        assert not np.array_equal(R32[key], R64[key]), key
    assert_close(R32["subset_dparam"], R64["subset_dparam"], 1e-3, what="actual changes")
    assert (R32["subset_refit_grad_norm"] <= R32["subset_refit_grad_tol"]).all()
    assert R32["cex_subset_test_pred_margin_infl"].dtype == np.float32


def test_gauss4_left_panel_is_a_line_in_float64(tmp_path):
    """Figure 4, left panel: in float64 the test point gives a straight line."""
    exp = run("gauss4", tmp_path)
    R = exp.R
    assert len(exp.subsets) == 7140
    assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
    E = R["cex_lstsq_uv_K-120_subsets"]
    assert len(E) == 120
    # The +1e-4 quirk selects the pairs with the smallest changes (median ||a|| ~ 4e-4).
    assert 3e-4 < np.median(np.linalg.norm(R["subset_pred_dparam"][E], axis=1)) < 5e-4
    j = np.flatnonzero(np.array(R["cex_tags"]) == "lstsq_uv_K-120_gauss")[2]
    P = R["cex_subset_test_pred_margin_infl"][E, j]
    N = R["cex_subset_test_newton_pred_margin_infl"][E, j]
    assert spearmanr(P, N)[0] > 0.9999
    assert np.allclose([P.min(), P.max(), N.min(), N.max()], [-0.77, 0.79, -0.77, 0.79], atol=0.02)
    # K = D // 2 = 30: the 30 smallest pairs are formed from a handful of points, so
    # A = [a_E; b_E] (60 x 60) has rank = #distinct points and the fit is not exact.
    E30 = R["cex_lstsq_uv_K-30_subsets"]
    points = np.unique(np.concatenate([exp.subsets[i] for i in E30]))
    A = np.vstack([R["subset_pred_dparam"][E30], R["subset_newton_pred_dparam"][E30]])
    assert np.linalg.matrix_rank(A) == len(points) < 60
    # The master-only summary holds exactly the original's keys.
    path = exp.save_summary(exp.summary_keys())
    summary, _ = storage.load_result(path)
    assert sorted(summary) == sorted(SUMMARY_KEYS)
    assert summary["cex_subset_test_pred_margin_infl"].shape == (7140, 1027)


@pytest.mark.slow
def test_gauss4_left_panel_scatters_in_float32(tmp_path):
    """With the original's float32 numerics the same construction gives a cloud."""
    exp = run("gauss4", tmp_path, dtype="float32")
    R = exp.R
    E = R["cex_lstsq_uv_K-120_subsets"]
    j = np.flatnonzero(np.array(R["cex_tags"]) == "lstsq_uv_K-120_gauss")[2]
    P = R["cex_subset_test_pred_margin_infl"][E, j]
    N = R["cex_subset_test_newton_pred_margin_infl"][E, j]
    assert spearmanr(P, N)[0] < 0.6
    assert max(np.abs(P).max(), np.abs(N).max()) > 1.0


# ------------------------------------------------------------------ config and script
def test_config_validation_and_run_ids():
    with pytest.raises(ConfigError, match="hospital"):
        build_config("hospital")
    with pytest.raises(ConfigError, match="dtype"):
        build_config("ortho2", dtype="float16")
    assert set(DATASET_IDS) == set(TABLE)
    exp = Counterexamples(build_config("gauss4"))
    assert exp.run_id == "gauss4" and exp.experiment_id == "counterexamples"
    with pytest.raises(ValueError, match="Dataset gauss4 has not been generated"):
        exp.get_dataset()


def test_script_master_only_end_to_end(tmp_path, ortho2):
    script = REPO_ROOT / "scripts" / "counterexamples.py"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script), "--dataset-id", "ortho2", "--no-intermediate-results",
                           "--out-dir", str(tmp_path), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wall time" in proc.stdout and "116/116 certified" in proc.stdout
    base = tmp_path / "counterexamples" / "ortho2"
    assert sorted(p.name for p in base.iterdir()) == ["config.json", "result_summary.npz"]
    assert storage.load_json(base / "config.json")["master_only"] is True
    loaded = Counterexamples.load_run("ortho2", tmp_path)
    # D = 2: cex_lstsq_uv_K-120_subsets exists only for gauss4.
    assert sorted(loaded.R) == sorted(k for k in SUMMARY_KEYS if k != "cex_lstsq_uv_K-120_subsets")
    for key in ("cex_subset_test_pred_margin_infl", "cex_subset_test_newton_pred_margin_infl"):
        assert_close(loaded.R[key], ortho2.R[key], RTOL_TWO_PATHS, what=key)


def test_script_flags(capsys):
    import importlib.util

    scripts = str(REPO_ROOT / "scripts")
    sys.path.insert(0, scripts)  # for `import _bootstrap`
    try:
        spec = importlib.util.spec_from_file_location("cex_script", REPO_ROOT / "scripts" / "counterexamples.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(scripts)
    args = mod.make_parser().parse_args([])
    assert args.dataset_id == "ortho2" and args.subset_seed == 0 and args.max_memory == int(1e9)
    assert not args.float32 and not args.no_intermediate_results
    assert mod.main(["--worker"]) == 0
    assert "task queue was replaced" in capsys.readouterr().out
    assert mod.main(["--dataset-id", "hospital"]) == 2
    assert "hospital" in capsys.readouterr().err
