"""The small-problem batched refit / Newton paths against independent oracles."""
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLR

from influence.groups import group_sums as sparse_group_sums
from influence.numerics import ConvergenceWarning
from influence.small_refit import group_newton_steps, pad_groups, refit_binary_groups
from tests.conftest import RTOL_TWO_PATHS, assert_close

LAM = 0.3


def problem(n=40, D=4, seed=0):
    rng = np.random.RandomState(seed)
    w = rng.normal(0, 1, D)
    X = rng.normal(0, 1, (n, D))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ w))).astype(float)
    groups = [np.sort(rng.choice(n, s, replace=False)) for s in (1, 2, 3, 5, 8, 13)]
    return X, y, groups


def sk_fit(X, y, lam, fit_intercept=False, sample_weight=None):
    sk = SkLR(C=1 / lam, fit_intercept=fit_intercept, solver="newton-cholesky", tol=1e-14, max_iter=500)
    sk.fit(X, y, sample_weight=sample_weight)
    return np.concatenate([sk.coef_[0], sk.intercept_]) if fit_intercept else sk.coef_[0]


def oracle_hessian(X, y, w, lam, mask, s=None):
    s = np.ones(len(y)) if s is None else s
    p = 1 / (1 + np.exp(-X @ w))
    return X.T @ ((s * p * (1 - p))[:, None] * X) + np.diag(lam * mask), (s * (p - y))[:, None] * X


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_refits_equal_sklearn_and_are_certified(fit_intercept):
    X, y, groups = problem()
    Xa = np.hstack([X, np.ones((len(y), 1))]) if fit_intercept else X
    mask = np.r_[np.ones(X.shape[1]), 0.0] if fit_intercept else None
    theta_hat = sk_fit(X, y, LAM, fit_intercept)
    r = refit_binary_groups(Xa, y, None, LAM, groups, theta_hat, weight_mask=mask, rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    assert r.thetas.dtype == np.float64 and r.thetas.shape == (len(groups), Xa.shape[1])
    for b, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(len(y)), idx)
        want = sk_fit(X[keep], y[keep], LAM, fit_intercept)
        assert_close(r.thetas[b], want, 1e-8, what=f"group {b}")
        # The certificate is the gradient of the reduced objective, recomputed here.
        m = np.ones(Xa.shape[1]) if mask is None else mask
        g = ((1 / (1 + np.exp(-Xa[keep] @ r.thetas[b])) - y[keep])[:, None] * Xa[keep]).sum(0) + LAM * m * r.thetas[b]
        assert np.linalg.norm(g) <= r.grad_tols[b] * 1.01


def test_sample_weights_and_chunking():
    X, y, groups = problem(seed=1)
    s = np.random.RandomState(5).uniform(0.5, 2.0, len(y))
    theta_hat = sk_fit(X, y, LAM, sample_weight=s)
    r1 = refit_binary_groups(X, y, s, LAM, groups, theta_hat, chunk=2)
    r2 = refit_binary_groups(X, y, s, LAM, groups, theta_hat, chunk=100)
    assert_close(r1.thetas, r2.thetas, 1e-10, what="chunk sizes")
    for b, idx in enumerate(groups):
        sw = s.copy()
        sw[idx] = 0.0
        assert_close(r1.thetas[b], sk_fit(X, y, LAM, sample_weight=sw), 1e-8, what=f"weighted group {b}")


def test_first_iterate_is_the_one_step_newton_change():
    X, y, groups = problem(seed=2)
    theta_hat = sk_fit(X, y, LAM)
    H, G = oracle_hessian(X, y, theta_hat, LAM, np.ones(X.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = refit_binary_groups(X, y, None, LAM, groups, theta_hat, rtol=1e-30, max_iter=1)
    assert (r.iterations == 1).all() and not r.converged.any()
    p = 1 / (1 + np.exp(-X @ theta_hat))
    resid = G.sum(0) + LAM * theta_hat  # ~1e-13 at the sklearn optimum
    for b, idx in enumerate(groups):
        H_U = X[idx].T @ ((p * (1 - p))[idx, None] * X[idx])
        step = np.linalg.solve(H - H_U, G[idx].sum(0) - resid)
        assert_close(r.thetas[b] - theta_hat, step, 1e-8, what=f"group {b}")


def test_group_newton_steps_equal_direct_solves():
    X, y, groups = problem(n=30, D=5, seed=3)
    theta = sk_fit(X, y, LAM)
    H, G = oracle_hessian(X, y, theta, LAM, np.ones(X.shape[1]))
    p = 1 / (1 + np.exp(-X @ theta))
    G_S = sparse_group_sums(groups, G, G.dtype)
    for chunk in (1, 4, 1024):
        out = group_newton_steps(H, X, p * (1 - p), groups, G_S, chunk=chunk)
        for b, idx in enumerate(groups):
            H_U = X[idx].T @ ((p * (1 - p))[idx, None] * X[idx])
            assert_close(out[b], np.linalg.solve(H - H_U, G[idx].sum(0)), RTOL_TWO_PATHS, what=f"group {b}")
    out32 = group_newton_steps(H, X, p * (1 - p), groups, G_S, dtype="float32")
    assert_close(out32, out, 1e-4, what="float32 vs float64")
    assert not np.array_equal(out32, out)


def test_group_sums_keep_dtype_and_match_sparse_sums():
    X, y, groups = problem()
    G = ((1 / (1 + np.exp(-X[:, 0])) - y)[:, None] * X)
    assert_close(sparse_group_sums(groups, G, G.dtype), [G[g].sum(axis=0) for g in groups], RTOL_TWO_PATHS,
                 what="group sums")
    G32 = G.astype(np.float32)
    assert sparse_group_sums(groups, G32, G32.dtype).dtype == np.float32
    assert_close(sparse_group_sums(groups, G[:, 0]), [G[g, 0].sum() for g in groups], RTOL_TWO_PATHS, what="1-D")


def test_float32_refits_converge_close_to_float64():
    X, y, groups = problem(seed=4)
    theta_hat = sk_fit(X, y, LAM)
    r64 = refit_binary_groups(X, y, None, LAM, groups, theta_hat)
    r32 = refit_binary_groups(X, y, None, LAM, groups, theta_hat.astype(np.float32), rtol=1e-6, dtype="float32")
    assert r32.converged.all()
    assert_close(r32.thetas, r64.thetas, 1e-4, what="float32 refits")


def test_input_validation():
    X, y, groups = problem()
    with pytest.raises(ValueError, match="lie in"):
        pad_groups([np.array([0, 40])], 40)
    with pytest.raises(ValueError, match="twice"):
        pad_groups([np.array([3, 3])], 40)
    with pytest.raises(ValueError, match="binary"):
        refit_binary_groups(X, y * 2, None, LAM, groups, np.zeros(4))
    with pytest.raises(ValueError, match="theta_hat"):
        refit_binary_groups(X, y, None, LAM, groups, np.zeros(3))
    with pytest.raises(ValueError, match="dtype"):
        refit_binary_groups(X, y, None, LAM, groups, np.zeros(4), dtype="float16")
    idx, valid = pad_groups([np.array([4]), np.array([1, 2, 3])], 40)
    assert idx.tolist() == [[4, 0, 0], [1, 2, 3]] and valid.sum() == 4


def test_unreachable_certificate_warns():
    X, y, groups = problem()
    theta_hat = sk_fit(X, y, LAM)
    with pytest.warns(ConvergenceWarning, match="certificate"):
        r = refit_binary_groups(X, y, None, LAM, groups, theta_hat, rtol=1e-30, max_iter=2)
    assert not r.converged.any()
