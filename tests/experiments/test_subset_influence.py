"""ss_logreg: config and run ids, group selection, linear-algebra invariants, refits."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression as SkLR

from experiments.common import ConfigMismatchError
from experiments.subset_influence import (
    EXTRA_SUMMARY_KEYS,
    SUMMARY_KEYS,
    ConfigError,
    SubsetInfluenceLogreg,
    build_config,
    run_id_from_config,
)
from influence import objective as K
from influence.refit import refit_chunk
from tests.conftest import REPO_ROOT, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import reference_loss

PAPER_RANGE = dict(subset_choice_type="range", subset_min_rel_size=0.0025, subset_max_rel_size=0.25,
                   num_subsets=100, max_memory=100000000, master_only=True)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs,run_id", [
    (dict(dataset_id="hospital"), "hospital_ihvp-explicit_seed-0_size-0.1_num-5"),
    (dict(dataset_id="hospital", **PAPER_RANGE), "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-100"),
    (dict(dataset_id="mnist_small", **PAPER_RANGE), "mnist_small_ihvp-cg_seed-0_sizes-0.0025-0.25_num-100"),
    (dict(dataset_id="spam", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=1e-7),
     "spam_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-1e-07"),
    (dict(dataset_id="hospital", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=1.0),
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-1.0"),
    (dict(dataset_id="hospital", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=10.0),
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-10.0"),
    (dict(dataset_id="hospital", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=100.0),
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-100.0"),
    (dict(dataset_id="hospital", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=1e-4),
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-0.0001"),
    (dict(dataset_id="hospital", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=1e-5),
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-1e-05"),
    (dict(dataset_id="mnist", inverse_hvp_method="explicit", **PAPER_RANGE),
     "mnist_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-100"),
    (dict(dataset_id="hospital", tag="foo"), "hospital_ihvp-explicit_seed-0_size-0.1_num-5_foo"),
    (dict(dataset_id="hospital", tag="foo", fixed_reg=0.001),
     "hospital_ihvp-explicit_seed-0_size-0.1_num-5_rel-reg-0.001"),
    (dict(dataset_id="hospital", dtype="float32"), "hospital_ihvp-explicit_seed-0_size-0.1_num-5_float32"),
    (dict(dataset_id="hospital", inverse_hvp_method="fmin_ncg"), "hospital_ihvp-fmin_ncg_seed-0_size-0.1_num-5"),
])
def test_run_ids_match_the_original(kwargs, run_id):
    assert run_id_from_config(build_config(**kwargs)) == run_id


def test_config_dicts_of_paper_runs():
    c = build_config(dataset_id="hospital", **PAPER_RANGE)
    assert list(c)[:16] == ["dataset_config", "subset_seed", "subset_choice_type", "subset_rel_size",
                            "subset_min_rel_size", "subset_max_rel_size", "num_subsets",
                            "cross_validation_folds", "inverse_hvp_method", "inverse_vp_method",
                            "max_memory", "skip_hessian_spectrum", "tag", "master_only", "skip_newton",
                            "skip_z_norms"]
    assert c["dataset_config"] == {"dataset_id": "hospital", "center_data": False, "append_bias": False,
                                   "data_dir": None}
    assert (c["inverse_hvp_method"], c["inverse_vp_method"], c["max_memory"]) == ("explicit", "cholesky_lu", 100000000)
    assert (c["skip_newton"], c["skip_z_norms"], c["skip_param_change_norms"]) == (False, False, False)
    assert c["normalized_cross_validation_range"] == (1e-4, 1e-1, 10)
    c = build_config(dataset_id="mnist_small", **dict(PAPER_RANGE, num_subsets=10), fixed_reg=1e-3)
    assert (c["skip_newton"], c["skip_z_norms"], c["skip_param_change_norms"]) == (False, True, True)
    assert c["tag"] == "rel-reg-0.001" and c["normalized_cross_validation_range"] == (0.001, 0.001, 1)
    c = build_config(dataset_id="mnist")
    assert (c["skip_newton"], c["skip_z_norms"], c["skip_param_change_norms"]) == (True, True, True)
    c = build_config(dataset_id="mnist_small")
    assert c["skip_newton"] is False


@pytest.mark.parametrize("kwargs,match", [
    (dict(dataset_id="mnli", inverse_hvp_method="explicit"), "--dataset-id must be one of"),
    (dict(dataset_id="hospital", subset_choice_type="sizes"), "--subset-choice-type must be one of"),
    (dict(dataset_id="hospital", num_subsets=2), "--num-subsets must be an integer >= 3"),
    (dict(dataset_id="hospital", inverse_hvp_method="lissa"), "--inverse-hvp-method"),
    (dict(dataset_id="hospital", subset_min_rel_size=0.5, subset_max_rel_size=0.1), "must be <="),
    (dict(dataset_id="hospital", fixed_reg=-1.0), "--fixed-reg must be a positive number"),
])
def test_bad_configs_fail_when_built(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_config(**kwargs)


def test_rng_fingerprints_of_the_random_groups():
    # Phase 5's random groups: legacy RandomState(0).choice(n, s, replace=False) draws, as the original.
    assert list(np.random.RandomState(0).choice(20000, 50, replace=False)[:8]) == [
        19134, 4981, 16643, 19117, 5306, 230, 3148, 11525]
    assert list(np.random.RandomState(0).choice(1800, 4, replace=False)) == [597, 831, 1174, 467]


# ----------------------------------------------------------------------- runs
def _finished_run(tmp_path_factory, name, **settings):
    exp = SubsetInfluenceLogreg(build_config(**settings), out_dir=tmp_path_factory.mktemp(name), progress=False)
    exp.run()
    return exp


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    return _finished_run(tmp_path_factory, "ss_bin", dataset_id="synthetic_binary", subset_choice_type="range",
                         num_subsets=6, subset_min_rel_size=0.0025, subset_max_rel_size=0.25)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    return _finished_run(tmp_path_factory, "ss_multi", dataset_id="synthetic_multiclass",
                         subset_choice_type="types", num_subsets=3, subset_rel_size=0.02)


@pytest.fixture(scope="module")
def wellcond_run(tmp_path_factory):
    """Well-conditioned setting of the original D: lambda = 0.01 n (via --fixed-reg)."""
    return _finished_run(tmp_path_factory, "ss_wc", dataset_id="synthetic_binary", subset_choice_type="range",
                         num_subsets=3, fixed_reg=0.01)


def _model_at_hat(exp):
    m = exp.get_model()
    m.set_params_flat(exp.R["initial_params"])
    return m


def test_group_counts_tags_and_sizes(binary_run):
    R, exp = binary_run.R, binary_run
    n, num = exp.num_train, 6
    sizes = np.linspace(int(n * 0.0025), int(n * 0.25), num).astype(int)
    tags, idx = R["subset_tags"], R["subset_indices"]
    assert len(tags) == len(idx) == 17 * num  # binary: nothing is skipped
    simple = [t.split("-")[0] for t in tags]
    for t, count in [("random", num), ("random_same_class", num), ("neg_tail_test", 6 * num),
                     ("pos_tail_test", 6 * num), ("same_features", num), ("same_grad", num), ("feature_window", num)]:
        assert simple.count(t) == count, t
    def by_tag(t):
        return [np.asarray(i) for tag, i in zip(simple, idx) if tag == t]

    for t in ("random", "same_features", "same_grad", "feature_window"):
        assert [len(i) for i in by_tag(t)] == list(sizes), t
    labels = exp.train.labels
    for tag, i in zip(tags, idx):
        assert len(np.unique(i)) == len(i)
        if tag.startswith("random_same_class-"):
            assert len(np.unique(labels[i])) == 1 and tag == f"random_same_class-{labels[i][0]}"
    # The first random group is the first legacy draw of the seed.
    assert np.array_equal(idx[0], np.random.RandomState(0).choice(n, sizes[0], replace=False))
    # Tail groups lie in their windows; P1/P2/P3 order: neg then pos, per test point.
    s1, s2, s3, s4 = (int(n * x) for x in (0.0025, 0.025, 0.1, 0.25))
    spp = num // 3
    P = [np.linspace(s1, s2, spp).astype(int), np.linspace(s1, s3, spp).astype(int),
         np.linspace(s1, s4, num - 2 * spp).astype(int)]
    first_tail = tags.index(f"neg_tail_test-1-{R['fixed_test'][0]}")
    pos = first_tail
    for j, t in enumerate(R["fixed_test"]):
        o = np.argsort(R["fixed_test_pred_infl"][j])
        for p in range(3):
            W = int(1.5 * P[p].max())
            for sign in ("neg", "pos"):
                for s in P[p]:
                    assert tags[pos] == f"{sign}_tail_test-{p + 1}-{t}"
                    assert len(idx[pos]) == s
                    window = o[:W] if sign == "neg" else o[-W:]
                    assert np.isin(idx[pos], window).all()
                    pos += 1
    # Feature windows are contiguous blocks of a sorted feature column.
    X = np.asarray(exp.train.x)
    ranks = [np.argsort(np.argsort(X[:, dim])) for dim in range(X.shape[1])]
    for i in by_tag("feature_window"):
        assert any(r[i].max() - r[i].min() == len(i) - 1 for r in ranks)


def test_linear_algebra_invariants(binary_run):
    R, exp = binary_run.R, binary_run
    m = _model_at_hat(exp)
    H = np.asarray(R["hessian"])
    G = np.asarray(R["train_grad_loss"])
    groups = [np.asarray(i) for i in R["subset_indices"]]
    G_S = np.array([G[i].sum(0) for i in groups])
    # H p_U = g_U; self-influence = g_U . p_U >= 0.
    assert_close(R["subset_pred_dparam"] @ H, G_S, 1e-9, what="H p = g")
    assert (R["subset_self_pred_infl"] >= 0).all()
    assert_close(R["subset_self_pred_infl"], np.einsum("sd,sd->s", G_S, R["subset_pred_dparam"]), RTOL_TWO_PATHS)
    # Group prediction = sum of individual predictions = grad l_t . p_U.
    T = m.get_indiv_grad_loss(exp.test.subset(R["fixed_test"]))
    sums = np.array([R["fixed_test_pred_infl"][:, i].sum(1) for i in groups])
    assert_close(R["subset_fixed_test_pred_infl"], sums, RTOL_TWO_PATHS, what="sum of individual")
    assert_close(R["subset_fixed_test_pred_infl"], R["subset_pred_dparam"] @ T.T, 1e-9, what="grad . p")
    # Loss/margin identity for binary models.
    mt = np.asarray(R["initial_test_margins"])[R["fixed_test"]]
    factor = -1.0 / (1.0 + np.exp(mt))
    assert_close(R["fixed_test_pred_infl"], factor[:, None] * R["fixed_test_pred_margin_infl"], RTOL_TWO_PATHS)
    assert_close(R["subset_fixed_test_newton_infl"], factor[None] * R["subset_fixed_test_newton_margin_infl"],
                 RTOL_TWO_PATHS)
    # Newton: (H - H_U) q = g_U (direct check with numpy), and self Newton >= self first-order.
    for s in range(0, len(groups), 7):
        H_U = m.get_hessian(exp.train.subset(groups[s]), None, 0.0)
        assert_close(R["subset_newton_dparam"][s], np.linalg.solve(H - H_U, G_S[s]), 1e-9, what=f"newton {s}")
    assert (R["subset_self_newton_infl"] >= R["subset_self_pred_infl"] - 1e-12).all()
    # Spectrum of -H^{-1} H_U: real, in (-1, 0], sums to -tr(H^{-1} H_U).
    spec = np.asarray(R["subset_hessian_spectrum"])
    assert spec.shape == (len(groups), m.num_params) and np.abs(spec.imag).max() == 0
    assert spec.real.max() <= 0 and spec.real.min() > -1
    for s in (0, 5, len(groups) - 1):
        H_U = m.get_hessian(exp.train.subset(groups[s]), None, 0.0)
        exact = np.sort(np.linalg.eigvals(-np.linalg.solve(H, H_U)).real)
        assert_close(np.sort(spec[s].real), exact, 1e-9, what=f"spectrum {s}")
    # E7 and z-norm identities.
    assert_close(R["subset_pred_dparam_hessian_norm"] ** 2, R["subset_self_pred_infl"], 1e-9)
    X = np.asarray(exp.train.x, dtype=np.float64)
    p = 1 / (1 + np.exp(-(X @ R["initial_params"][:-1] + R["initial_params"][-1])))
    assert_close(R["z_norms"] ** 2, p * (1 - p) * ((X ** 2).sum(1) + 1), RTOL_TWO_PATHS)
    lam = R["cv_l2_reg"]
    assert_close(R["zs"].T @ R["zs"] + lam * np.diag(m.spec.weight_mask()), H, RTOL_TWO_PATHS)


def test_stored_newton_change_is_one_exact_newton_step(binary_run):
    """Independent path: autodiff Hessian and gradient of the reduced objective at theta_hat."""
    R, exp = binary_run.R, binary_run
    m = _model_at_hat(exp)
    Xa = K.augment(tf.constant(np.asarray(exp.train.x, dtype=np.float64)), m.spec)
    y = tf.constant(exp.train.labels, dtype=tf.float64)
    theta = tf.Variable(R["initial_params"])
    grad_full = np.linalg.norm(m.get_total_grad_loss(exp.train, None, R["cv_l2_reg"]))
    for s in (0, 3, 20):
        w = np.ones(exp.num_train)
        w[np.asarray(R["subset_indices"][s])] = 0.0
        with tf.GradientTape() as t2:
            with tf.GradientTape() as t1:
                f = reference_loss(theta, Xa, y, tf.constant(w), R["cv_l2_reg"], m.spec)
            g = t1.gradient(f, theta)
        Hr = t2.jacobian(g, theta).numpy()
        step = -np.linalg.solve(Hr, g.numpy())
        # Equal up to (H - H_U)^{-1} grad L(theta_hat), which the certified fit makes tiny.
        err = np.abs(step - R["subset_newton_dparam"][s]).max()
        assert err <= 1e-9 * np.abs(step).max() + 1e3 * grad_full


def test_refits_are_certified_and_match_sklearn(binary_run):
    R, exp = binary_run.R, binary_run
    assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
    assert R["subset_refit_converged"].all()
    X = np.asarray(exp.train.x, dtype=np.float64)
    y = exp.train.labels
    lam = R["cv_l2_reg"]
    for s in (0, 10, 50, len(R["subset_tags"]) - 1):
        keep = np.setdiff1d(np.arange(len(y)), R["subset_indices"][s])
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        theta_sk = np.concatenate([sk.coef_[0], sk.intercept_])
        assert_close(R["subset_dparam"][s] + R["initial_params"], theta_sk, 1e-8, what=f"refit {s}")


def test_small_groups_actual_close_to_newton_and_first_order(wellcond_run):
    R = wellcond_run.R
    assert R["cv_l2_reg"] == pytest.approx(0.01 * 600)
    sizes = np.array([len(i) for i in R["subset_indices"]])
    small = np.flatnonzero(sizes <= 3)
    assert len(small) > 0
    actl, pred, newt = (np.asarray(R[k])[small] for k in
                        ("subset_self_actl_infl", "subset_self_pred_infl", "subset_self_newton_infl"))
    big = np.abs(actl) > 1e-8
    # The original's 5 % bound is for n = 2000; on this n = 600 set the removed
    # point's own loss has a second-order error of order its leverage (up to ~8 % here),
    # which the one-step Newton approximation removes: Newton must meet 5 %, first
    # order 10 %, and Newton must be at least as close in 90 % of the groups.
    assert (np.abs(actl - newt)[big] <= 0.05 * np.abs(actl)[big]).all()
    assert (np.abs(actl - pred)[big] <= 0.10 * np.abs(actl)[big]).all()
    assert np.mean(np.abs(actl - newt) <= np.abs(actl - pred) + 1e-15) >= 0.9
    # Parameter space: Newton is closer to the actual change than first order (>= 90%).
    d_a, d_p, d_n = (np.asarray(R[k]) for k in ("subset_dparam", "subset_pred_dparam", "subset_newton_dparam"))
    closer = np.linalg.norm(d_a - d_n, axis=1) <= np.linalg.norm(d_a - d_p, axis=1)
    assert closer.mean() >= 0.9


def test_collation_and_pparam(binary_run):
    R, exp = binary_run.R, binary_run
    fixed = np.asarray(R["fixed_test"])
    assert R["subset_test_losses"].shape == (len(R["subset_tags"]), 6)
    assert_close(R["subset_fixed_test_actl_infl"], R["subset_test_losses"] - R["initial_test_losses"][fixed], 0)
    init = np.asarray(R["initial_train_losses"])
    for s in (0, 9):
        idx = np.asarray(R["subset_indices"][s])
        assert R["subset_self_actl_infl"][s] == pytest.approx(
            np.sum(R["subset_train_losses"][s]) - init[idx].sum(), rel=1e-12, abs=1e-15)
    # Evaluate by hand at theta_hat + pred dparam.
    m = _model_at_hat(exp)
    s = 4
    m.set_params_flat(R["initial_params"] + R["subset_pred_dparam"][s])
    test_losses = m.get_indiv_loss(exp.test.subset(fixed))
    assert_close(R["subset_fixed_test_pparam_infl"][s], test_losses - R["initial_test_losses"][fixed], 1e-12, 1e-14)


def test_keys_of_every_phase(binary_run, multi_run):
    Rb = binary_run.results
    assert set(Rb["retrain"]) >= {"subset_train_losses", "subset_test_losses", "subset_train_margins",
                                  "subset_test_margins", "subset_refit_grad_norm", "subset_refit_iters"}
    assert set(Rb["compute_actl_infl"]) == {
        "subset_fixed_test_actl_infl", "subset_fixed_test_pred_infl", "subset_self_actl_infl",
        "subset_fixed_test_actl_margin_infl", "subset_fixed_test_pred_margin_infl", "subset_self_actl_margin_infl"}
    assert len(Rb["param_change_norms"]) == 7 and set(Rb["z_norms"]) == {"zs", "z_norms", "z_hessian_norms"}
    assert Rb["fixed_test_newton"] == {}
    Rm = multi_run.results
    assert "subset_train_margins" not in Rm["retrain"]
    assert set(Rm["compute_actl_infl"]) == {"subset_fixed_test_actl_infl", "subset_fixed_test_pred_infl",
                                            "subset_self_actl_infl"}
    assert Rm["z_norms"] == {}
    assert "subset_hessian_spectrum" in Rm["newton"]
    # Multinomial refits are certified too and agree with sklearn (centred intercepts).
    R = multi_run.R
    assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
    X = np.asarray(multi_run.train.x, dtype=np.float64)
    y = multi_run.train.labels
    keep = np.setdiff1d(np.arange(len(y)), R["subset_indices"][2])
    sk = SkLR(C=1 / R["cv_l2_reg"], solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
    theta = R["subset_dparam"][2] + R["initial_params"]
    D = X.shape[1]
    assert_close(theta[:3 * D].reshape(3, D), sk.coef_, 1e-8)
    assert_close(theta[3 * D:], sk.intercept_ - sk.intercept_.mean(), 1e-8, 1e-10)


def test_cg_run_agrees_with_explicit(multi_run, tmp_path):
    cfg = build_config(dataset_id="synthetic_multiclass", subset_choice_type="types", num_subsets=3,
                       subset_rel_size=0.02, inverse_hvp_method="cg")
    assert cfg["skip_newton"] and cfg["newton_for_cg"]  # original flag kept; Newton still computed
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)
    R = exp.run()
    assert R["hessian"] is None
    assert exp.results["param_change_norms"] == {} and "subset_hessian_spectrum" not in R
    for key in ("subset_pred_dparam", "subset_newton_dparam", "fixed_test_pred_infl"):
        assert_close(R[key], multi_run.R[key], 1e-6, what=key)
    # The refits ran by Newton-CG (no explicit Hessians) to the same certified optima.
    assert (R["subset_refit_hvps"] > 0).all() and (R["subset_refit_hessians"] == 0).all()
    assert (multi_run.R["subset_refit_hvps"] == 0).all()
    assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
    assert_close(R["subset_refit_params"], multi_run.R["subset_refit_params"], 1e-8, what="refits")


@pytest.mark.slow  # scipy's fmin_ncg, one solve per column: tests/influence/test_group_influence.py checks the route fast
def test_fmin_ncg_run_uses_the_original_solver_for_first_order(multi_run, tmp_path):
    cfg = build_config(dataset_id="synthetic_multiclass", subset_choice_type="types", num_subsets=3,
                       subset_rel_size=0.02, inverse_hvp_method="fmin_ncg")
    assert "_ihvp-fmin_ncg_" in run_id_from_config(cfg)
    R = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False).run()
    # scipy's fmin_ncg stops at avextol 1e-8 (the original's setting), so the first-order
    # keys agree with the explicit solves only to that solver's accuracy.
    for key in ("subset_pred_dparam", "fixed_test_pred_infl"):
        assert_close(R[key], multi_run.R[key], 1e-5, 1e-9, what=key)
    # Refits and Newton changes take the Newton-CG path, to the same certified optima.
    assert (R["subset_refit_hvps"] > 0).all()
    assert_close(R["subset_refit_params"], multi_run.R["subset_refit_params"], 1e-8, what="refits")


def test_resume_after_interruption_gives_identical_results(binary_run, tmp_path, monkeypatch):
    cfg = binary_run.config
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)

    def crash(self):
        raise KeyboardInterrupt("interrupted during phase 9")

    monkeypatch.setattr(SubsetInfluenceLogreg.newton, "__code__", crash.__code__)
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    monkeypatch.undo()
    done = sorted(p.name for p in exp.base_dir.glob("result_*.npz"))
    assert done == [f"result_{k}-{p.name}.npz" for k, p in enumerate(exp.PHASES[:9])]
    exp2 = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)
    R = exp2.run()
    assert list(exp2.timings) == [p.name for p in exp.PHASES[9:]]  # only unfinished phases ran
    for key in ("subset_newton_dparam", "subset_fixed_test_actl_infl", "subset_self_pparam_infl"):
        assert_close(R[key], binary_run.R[key], 0, what=key)
    with pytest.raises(ConfigMismatchError, match="--force-refresh"):
        # inverse_vp_method is not in the run id (a quirk kept: such runs shared a folder).
        SubsetInfluenceLogreg(dict(cfg, inverse_vp_method="lu"), out_dir=tmp_path).check_config()


def test_master_only_run_skips_the_spectra_it_would_not_keep(binary_run, tmp_path):
    """A master-only run keeps only the summary, which leaves the spectra out: it does not
    compute them, and its Newton changes and summary keys equal the full run's."""
    cfg = dict(binary_run.config, master_only=True)
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)
    R = exp.run_from_cli(no_intermediate_results=True)
    assert "subset_hessian_spectrum" in binary_run.R and "subset_hessian_spectrum" not in R
    assert "subset_hessian_spectrum" not in SUMMARY_KEYS + EXTRA_SUMMARY_KEYS
    for key in ("subset_newton_dparam", "subset_self_newton_infl", "subset_fixed_test_newton_infl"):
        assert_close(R[key], binary_run.R[key], RTOL_TWO_PATHS, what=key)


def test_script_master_only_summary(tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "subsets_infl_logreg.py"), "--dataset-id",
           "synthetic_binary", "--subset-choice-type", "range", "--num-subsets", "3",
           "--no-intermediate-results", "--out-dir", str(tmp_path), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refit certificate" in out.stdout
    run = tmp_path / "ss_logreg" / "synthetic_binary_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-3"
    # No phase files and no plot_all figures (the original's summary mode), but the
    # per-group table and the summary figure, written by every run.
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "groups.csv", "result_summary.npz",
                                                     "summary.png"]
    loaded = SubsetInfluenceLogreg.load_run(run.name, out_dir=tmp_path)
    assert set(loaded.R) == set(SUMMARY_KEYS + EXTRA_SUMMARY_KEYS)
    assert len(loaded.R["subset_tags"]) == 51
    bad = subprocess.run(cmd[:2] + ["--dataset-id", "nope"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "--dataset-id must be one of" in bad.stderr


def test_plot_all_writes_the_spec_files(binary_run):
    files = binary_run.plot_all()
    names = {p.name for p in files}
    base = {n for n in names if not n.endswith("_imbalanced.png")}
    fixed = list(binary_run.R["fixed_test"])
    expected = {"self_loss_actl-pred.png", "self_margin_actl-pred.png", "self_loss_actl-newton.png",
                "self_loss_pred-newton.png", "self_loss_actl-pparam.png", "self_loss_actl-nparam.png",
                "z-norms.png", "sizes_self_loss.png", "sizes_train-accuracy.png", "sizes_test-accuracy.png",
                "subset-hessian-max-eig.png"}
    for idx in fixed:
        expected |= {f"fixed-test-{idx}_{q}_{pair}.png" for q in ("loss", "margin")
                     for pair in ("actl-pred", "actl-newton", "pred-newton", "actl-pparam", "actl-nparam")}
        expected.add(f"sizes_fixed-test-{idx}_loss.png")
    assert base == expected and len(base) == 77  # the original's 77 base files for a binary explicit range run
    assert all((binary_run.base_dir / "plots" / n).stat().st_size > 0 for n in names)


@pytest.mark.slow
@pytest.mark.realdata
def test_hospital_end_to_end_on_the_real_archive(shared_data, tmp_path):
    """The real UCI archive through the real loader and a small range run."""
    import shutil
    (tmp_path / "data" / "hospital").mkdir(parents=True)
    shutil.copy(shared_data / "hospital" / "dataset_diabetes.zip", tmp_path / "data" / "hospital")
    cfg = build_config(dataset_id="hospital", data_dir=str(tmp_path / "data"), subset_choice_type="range",
                       num_subsets=3, kmeans_n_init=1)
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path / "out", progress=False)
    R = exp.run()
    assert list(R["fixed_test"]) == [2267, 54826, 66678, 41567, 485, 25286]
    assert len(R["subset_tags"]) == 51
    assert R["initial_params"].shape == (128,)
    assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
    assert np.all(np.asarray(R["cv_regs"]) == pytest.approx(np.logspace(np.log10(2), np.log10(2000), 10)))
    # Sizes of the range run: linspace(int(0.0025 n), int(0.25 n), 3) = 50, 2525, 5000.
    assert [len(i) for i in R["subset_indices"][:3]] == [50, 2525, 5000]


@pytest.mark.slow
@pytest.mark.realdata
def test_spam_refits_at_a_small_fixed_regularisation_are_certified(shared_data, tmp_path):
    """The spam sweep's ``--fixed-reg 0.01`` run (the downdate route, d = 3,295): its
    quarter-size group ``pos_tail_test-3-642`` (1,034 of 4,137 points) once stopped
    uncertified after 100 iterations (||grad|| / tol 2e10): along its Newton directions the
    loss is far from quadratic (raw word counts), and halving the step accepted steps that
    grew the gradient. With steps near the minimum along the direction
    (``influence.newton.line_minimum``) every refit is certified, and that group's equals
    ChordNewton's with its exact Hessians."""
    import shutil

    (tmp_path / "data" / "spam").mkdir(parents=True)
    shutil.copy(shared_data / "spam" / "enron1.tar.gz", tmp_path / "data" / "spam")
    cfg = build_config(dataset_id="spam", data_dir=str(tmp_path / "data"), subset_choice_type="range",
                       num_subsets=10, fixed_reg=0.01, max_memory=int(1e8))
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path / "out", progress=False)
    R = exp.run()
    assert R["initial_params"].shape == (3295,)
    tags = list(R["subset_tags"])
    assert "pos_tail_test-3-642" in tags
    assert (R["subset_refit_grad_norm"] <= R["subset_refit_grad_tol"]).all()
    # The group that failed, against ChordNewton's refit with its exact Hessians.
    b = tags.index("pos_tail_test-3-642")
    gi = exp.influence()
    Xa, y, s = gi.design(gi.train, gi.sample_weights)
    want = refit_chunk(gi.spec, gi.params, Xa, y, s, gi.l2_reg, [R["subset_indices"][b]],
                       hessian_hat=gi.require_hessian(), rtol=gi.model.fit_rtol,
                       max_iter=gi.model.config["max_newton_iter"])
    assert want.converged.all()
    assert_close(R["subset_refit_params"][b], want.thetas[0], 1e-8, what="pos_tail_test-3-642")
