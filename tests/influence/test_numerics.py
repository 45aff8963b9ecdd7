"""Numerics: the explicit solves with their LU fall-back, CG, the leverage closed form,
the float32 application and the array helpers."""
import logging

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
import tensorflow as tf

from influence.logistic_regression import LogisticRegression
from influence.numerics import (
    NotPositiveDefiniteError,
    PCGRows,
    cho_solve_nogil,
    cholesky_factors,
    conjugate_gradient,
    densify,
    handover_tensor,
    in_float32,
    inverse_vp,
    preconditioned_cg_rows,
    spd_factor,
    spd_solve,
    tensor_buffer,
    tf_dtype,
    to_numpy,
    try_cholesky,
    xy,
)
from tests.conftest import RESID_SOLVE, RTOL_CG, RTOL_LEVERAGE, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import spd_rows

# Two LAPACK solves of a well-conditioned 5 x 5 system (condition number < 100).
RTOL_SOLVE_ORACLE = 1e-12


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


# --- the SPD solve's one failure policy and the helpers ---------------------------------

def indefinite(d=5, seed=3):
    """A symmetric matrix with one negative eigenvalue and a right-hand side."""
    rng = np.random.RandomState(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    M = Q @ np.diag([2.0, 1.0, 0.5, 3.0, -0.7]) @ Q.T
    return 0.5 * (M + M.T), rng.normal(size=(d, 2))


def test_spd_factor_solves_by_cholesky_and_falls_back_to_lu_with_a_warning(caplog):
    import scipy.linalg as sla

    M, V = spd(5, 2)
    with caplog.at_level(logging.WARNING, logger="influence.numerics"):
        X = spd_factor(M)(V)
    assert "falling back to LU" not in caplog.text
    assert np.linalg.norm(M @ X - V) / np.linalg.norm(V) <= RESID_SOLVE
    M, V = indefinite()
    with caplog.at_level(logging.WARNING, logger="influence.numerics"):
        X = spd_factor(M)(V)
    assert "falling back to LU" in caplog.text
    assert_close(X, sla.solve(M, V), RTOL_SOLVE_ORACLE, what="LU fall-back vs scipy.linalg.solve")


def test_try_cholesky_reports_failure_as_none():
    M, _ = spd(5, 4)
    L = try_cholesky(M)
    assert L is not None
    lower = np.tril(L[0])
    assert_close(lower @ lower.T, M, RTOL_SOLVE_ORACLE, what="L L^T")
    assert try_cholesky(indefinite()[0]) is None
    bad = M.copy()
    bad[0, 0] = np.nan
    assert try_cholesky(bad) is None


def test_batched_spd_solve_falls_back_only_where_cholesky_fails(caplog):
    good, _ = spd(5, 6)
    bad, V = indefinite()
    M = np.stack([good, bad, good + np.eye(5)])
    Vb = np.stack([V, V, V])
    with caplog.at_level(logging.WARNING, logger="influence.numerics"):
        _, ok = cholesky_factors(tf.constant(M))
        X = spd_solve(tf.constant(M), tf.constant(Vb)).numpy()
    assert list(np.asarray(ok)) == [True, False, True]
    assert "Cholesky failed for 1 of 3 matrices" in caplog.text
    for b in range(3):
        assert np.linalg.norm(M[b] @ X[b] - V) / np.linalg.norm(V) <= RESID_SOLVE, b
    # One NumPy matrix goes to SciPy's LAPACK through the same policy.
    assert_close(spd_solve(bad, V), np.linalg.solve(bad, V), RTOL_SOLVE_ORACLE, what="NumPy route")


def test_in_float32_applies_an_operator_in_single_precision():
    rng = np.random.RandomState(7)
    A = rng.normal(size=(40, 40))
    R = rng.normal(size=(3, 40))
    seen = []

    def apply(R32):
        seen.append(R32.dtype)
        return R32 @ A.astype(np.float32)

    out = in_float32(apply, R)
    assert seen == [np.float32] and out.dtype == np.float64
    # float32 rounding: within a few float32 epsilons of the float64 product.
    assert_close(out, R @ A, 1e-5, atol=1e-5, what="float32 product")


def test_dtype_and_array_helpers():
    assert tf_dtype("float32") is tf.float32 and tf_dtype(np.float64) is tf.float64
    assert tf_dtype(tf.float32) is tf.float32
    for bad in ("float16", tf.int32, "nonsense"):
        with pytest.raises(ValueError, match="dtype must be float64 or float32; got"):
            tf_dtype(bad)
    S = sp.random(6, 4, density=0.5, format="csr", random_state=0)
    assert np.array_equal(densify(S), S.toarray()) and not sp.issparse(densify(S))
    assert np.array_equal(to_numpy(tf.constant([1.0, 2.0]), np.float32), np.array([1.0, 2.0], dtype=np.float32))
    x, labels = xy((S, [[1], [0], [1], [0], [1], [1]]))
    assert x is S and labels.shape == (6,)


def test_pcg_rows_paused_and_resumed_equal_the_direct_solves():
    """Rows of PCGRows that start at different times and pause while others iterate reach
    the direct solutions, in the iterations of runs that were never paused."""
    d, b = 12, 4
    A, Bm = spd_rows(d, b, seed=1)

    def matvec(V, rows):
        return np.einsum("kij,kj->ki", A[rows], V)

    def precond(R, rows):
        return R / np.einsum("kii->ki", A[rows])  # Jacobi

    cg = PCGRows(3, d)
    cg.start(np.array([0, 1]), np.array([0, 1]), Bm[:2], np.full(2, 1e-12), precond)
    for _ in range(2):
        cg.step(np.array([0, 1]), matvec, precond)
    for _ in range(3):  # row 1 pauses, row 0 goes on
        cg.step(np.array([0]), matvec, precond)
    cg.start(np.array([2]), np.array([3]), Bm[3:4], np.full(1, 1e-12), precond)
    x, its = np.zeros((b, d)), np.zeros(b, dtype=np.int64)
    waiting = True  # row 2 takes the first slot that frees up
    while True:
        done = cg.finished(500)
        if done.size:
            rows = cg.owner[done]
            x[rows], its[rows], rel, conv = cg.release(done)
            assert conv.all() and (rel <= 1e-12).all()
            if waiting:
                cg.start(done[:1], np.array([2]), Bm[2:3], np.full(1, 1e-12), precond)
                waiting = False
        going = np.flatnonzero(cg.owner >= 0)
        if going.size == 0:
            break
        cg.step(going, matvec, precond)
    assert (its > 0).all()
    want = np.linalg.solve(A, Bm[:, :, None])[:, :, 0]
    assert_close(x, want, RTOL_CG, what="paused and resumed CG vs direct solves")
    whole = preconditioned_cg_rows(matvec, Bm, precond, 1e-12, 500)
    np.testing.assert_array_equal(its, whole.iterations)


@pytest.mark.parametrize("shape, dtype", [((3, 5, 5), np.float64), ((7,), np.float32), ((2, 0), np.float64)])
def test_tensor_buffer_is_aligned_and_handed_over_with_its_content(shape, dtype):
    """An aligned buffer becomes a tensor of its content (without a copy: TensorFlow
    kernels then read the array's own memory, which they require to be aligned); any
    other array, e.g. an unaligned view, is copied."""
    a = tensor_buffer(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.size == 0 or a.ctypes.data % 64 == 0  # an empty array has no buffer
    a[...] = np.arange(a.size, dtype=dtype).reshape(shape) - 2.5
    want = a.copy()
    t = handover_tensor(a)
    assert t.dtype == tf_dtype(dtype) and tuple(t.shape) == shape
    assert np.array_equal(t.numpy(), want)
    assert np.array_equal(tf.reduce_sum(t, axis=-1).numpy(), want.sum(axis=-1))
    unaligned = np.empty(a.size + 1, dtype=dtype)[1:].reshape(shape)
    unaligned[...] = want
    assert np.array_equal(handover_tensor(unaligned).numpy(), want)


@pytest.mark.parametrize("m", [1, 7, 60])
@pytest.mark.parametrize("rhs", [None, 3])
def test_cho_solve_without_the_gil_equals_cho_solve(m, rhs):
    # The same LAPACK routine as scipy's cho_solve, called through ctypes: checked against
    # cho_solve (a second path) and against the residual of M x = b.
    rng = np.random.RandomState(m)
    A = rng.normal(size=(m, m))
    M = np.eye(m) + A @ A.T / m
    b = rng.normal(size=m if rhs is None else (m, rhs))
    factor = try_cholesky(M)
    x = cho_solve_nogil(factor, b)
    assert x.shape == b.shape
    assert_close(x, sla.cho_solve(factor, b), RTOL_TWO_PATHS, what="cho_solve")
    assert np.linalg.norm(M @ x - b) / np.linalg.norm(b) <= RESID_SOLVE
    upper = (np.triu(factor[0].T).copy(order="F"), False)  # U = L^T, M = U^T U
    assert_close(cho_solve_nogil(upper, b), x, RTOL_TWO_PATHS, what="upper factor")
    c_ordered = (np.ascontiguousarray(factor[0]), True)  # not Fortran-ordered (m > 1): scipy's path
    assert_close(cho_solve_nogil(c_ordered, b), x, RTOL_TWO_PATHS, what="C-ordered factor")
