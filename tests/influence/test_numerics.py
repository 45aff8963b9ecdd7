"""Inverse-HVP solvers: residuals, LU fall-back, CG, and the leverage closed form."""
import logging

import numpy as np
import pytest
import tensorflow as tf

from influence.logistic_regression import LogisticRegression
from influence.numerics import NotPositiveDefiniteError, conjugate_gradient, inverse_vp
from tests.conftest import RESID_SOLVE, RTOL_CG, RTOL_LEVERAGE, assert_close


def spd(d=6, seed=0):
    rng = np.random.RandomState(seed)
    A = rng.normal(size=(d, d))
    return A @ A.T + 0.1 * np.eye(d), rng.normal(size=(d, 3))


@pytest.mark.parametrize("method", ["cholesky", "lu", "cholesky_lu"])
def test_explicit_solves_have_small_residual(method):
    M, V = spd()
    X = inverse_vp(tf.constant(M), tf.constant(V), method).numpy()
    resid = np.linalg.norm(M @ X - V) / np.linalg.norm(V)
    assert resid <= RESID_SOLVE
    x1 = inverse_vp(tf.constant(M), tf.constant(V[:, 0]), method).numpy()
    assert x1.shape == (6,)


def test_cholesky_lu_falls_back_to_lu_on_indefinite_matrix(caplog):
    M = np.diag([3.0, -1.0, 2.0, 0.5])
    M[0, 1] = M[1, 0] = 0.3
    V = np.arange(1.0, 9.0).reshape(4, 2)
    with caplog.at_level(logging.WARNING):
        X = inverse_vp(tf.constant(M), tf.constant(V), "cholesky_lu").numpy()
    assert np.all(np.isfinite(X))
    assert np.linalg.norm(M @ X - V) / np.linalg.norm(V) <= RESID_SOLVE
    assert "falling back to LU" in caplog.text
    with pytest.raises(NotPositiveDefiniteError):
        inverse_vp(tf.constant(M), tf.constant(V), "cholesky")
    with pytest.raises(ValueError, match="inverse_vp_method must be one of"):
        inverse_vp(tf.constant(M), tf.constant(V), "qr")


def test_cg_matches_direct_solve():
    M, V = spd(8, 1)
    Mt = tf.constant(M)
    res = conjugate_gradient(lambda P: tf.matmul(Mt, P), tf.constant(V), tol=1e-12)
    assert res.converged
    assert_close(res.x.numpy(), np.linalg.solve(M, V), RTOL_CG)


def _fitted_binary(n=30, D=3, seed=2, fit_intercept=True):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, D))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": fit_intercept, "num_classes": 2}
    m = LogisticRegression(cfg)
    m.fit((X, y), None, 0.7)
    return m, X, y


@pytest.mark.parametrize("inverse_hvp_method", ["explicit", "cg"])
def test_inverse_hvp_methods_agree(inverse_hvp_method):
    m, X, y = _fitted_binary()
    H = m.get_hessian((X, y), None, 0.7)
    G = m.get_indiv_grad_loss((X, y))[:4].T
    out = m.get_inverse_hvp(G, hessian_reg=H, dataset=(X, y), l2_reg=0.7,
                            inverse_hvp_method=inverse_hvp_method)
    assert_close(out, np.linalg.solve(H, G), RTOL_CG)


def test_single_point_newton_step_is_first_order_over_one_minus_leverage():
    """For one removed point i: (H - H_i)^{-1} g_i = H^{-1} g_i / (1 - h_i), h_i = z_i^T H^{-1} z_i.

    H_i = z_i z_i^T with z_i = sqrt(sigma(1-sigma)) [x; 1], and g_i is parallel to
    [x; 1], hence to z_i; Sherman-Morrison gives the closed form.
    """
    m, X, y = _fitted_binary()
    H = m.get_hessian((X, y), None, 0.7)
    G = m.get_indiv_grad_loss((X, y))
    Z = m.get_zs((X, y))
    for i in [0, 5, 17]:
        g, z = G[i], Z[i]
        first_order = m.get_inverse_hvp(g, hessian_reg=H)
        leverage = z @ np.linalg.solve(H, z)
        newton = m.get_inverse_vp(H - np.outer(z, z), g, "cholesky")
        assert_close(newton, first_order / (1 - leverage), RTOL_LEVERAGE, what=f"point {i}")


def test_multinomial_with_intercept_solves_on_the_range():
    """H is singular along equal bias shifts; solves must act as the pseudo-inverse."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    y = rng.randint(0, 3, 40)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": 3, "fit_intercept": True, "num_classes": 3}
    m = LogisticRegression(cfg)
    m.fit((X, y), None, 0.5)
    H = m.get_hessian((X, y), None, 0.5)
    G = m.get_indiv_grad_loss((X, y))[:5].T
    for method in ("explicit", "cg"):
        out = m.get_inverse_hvp(G, hessian_reg=H, dataset=(X, y), l2_reg=0.5, inverse_hvp_method=method)
        assert_close(out, np.linalg.pinv(H) @ G, RTOL_CG, what=method)
