"""The batched refit engine against independent refits and closed forms."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLR

from influence.newton import ChordNewton
from influence.refit import refit_chunk
from tests.conftest import RTOL_AUTODIFF, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import gaussian_classes, reference_hessian


def fitted(num_classes, n=60, D=4, seed=0, lam=0.5):
    m, X, y, rng = gaussian_classes(num_classes, True, n, D, seed)
    m.fit((X, y), None, lam)
    groups = [rng.choice(n, s, replace=False) for s in (1, 2, 5, 12, 20)]
    return m, X, y, lam, groups


@pytest.mark.parametrize("num_classes", [2, 3])
def test_batched_refits_equal_independent_fits(num_classes):
    m, X, y, lam, groups = fitted(num_classes)
    theta = m.get_params_flat()
    Xa, yt, s = m.design((X, y))
    r = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    # Slow chord steps switched some groups to Newton-CG steps preconditioned by their
    # stale factor (these fixtures need no fresh Hessian at all).
    assert r.hvps.sum() > 0
    for b, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(len(y)), idx)
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        if num_classes == 2:
            want = np.concatenate([sk.coef_[0], sk.intercept_])
        else:
            want = np.concatenate([sk.coef_.ravel(), sk.intercept_ - sk.intercept_.mean()])
        assert_close(r.thetas[b], want, 1e-8, what=f"group {b}")
        # The certificate is the true gradient norm of the reduced objective.
        w = np.ones(len(y))
        w[idx] = 0
        m.set_params_flat(r.thetas[b])
        assert np.linalg.norm(m.get_total_grad_loss((X, y), w, lam)) == pytest.approx(r.grad_norms[b], rel=1e-6, abs=1e-13)
    # Chunk composition does not matter.
    single = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups[2:3], rtol=1e-12)
    assert_close(single.thetas[0], r.thetas[2], 1e-9)


def test_chord_newton_takes_no_new_problems():
    """The explicit refits run chunk by chunk: ChordNewton refuses a problem admitted into a
    slot (continuous batching) instead of solving it with the slot's former factor."""
    with pytest.raises(NotImplementedError, match="takes no new ones"):
        ChordNewton(None).admit(None, None, None, None, np.arange(1), np.arange(1), np.ones(1))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_first_step_is_the_newton_approximation(num_classes):
    """The first step of each refit is ``(H - H_U)^+ (g_U - grad L(theta_hat))``: the start
    gradients and the start Hessians of the reduced problems, against per-example
    gradients and per-group Hessians formed separately (multinomial: the pseudo-inverse,
    the flat direction of the biases removed)."""
    m, X, y, lam, groups = fitted(num_classes)
    theta = m.get_params_flat()
    H = m.get_hessian((X, y), None, lam)
    G = m.get_indiv_grad_loss((X, y))
    Xa, yt, s = m.design((X, y))
    r = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, hessian_hat=H)
    resid = m.get_total_grad_loss((X, y), None, lam)
    assert r.first_full_step.any()
    for b, idx in enumerate(groups):
        H_U = m.get_hessian((X[idx], y[idx]), None, 0.0)
        exact_first = np.linalg.lstsq(H - H_U, G[idx].sum(0) - resid, rcond=None)[0]
        if r.first_full_step[b]:
            assert_close(r.first_steps[b], exact_first, 1e-10, what=f"group {b}")


def test_sample_weights_are_respected():
    m, X, y, lam, groups = fitted(2)
    w = np.random.RandomState(3).uniform(0.5, 2.0, len(y))
    m.fit((X, y), w, lam)
    Xa, yt, s = m.design((X, y), w)
    r = refit_chunk(m.spec, m.get_params_flat(), Xa, yt, s, lam, groups[3:4])
    keep = np.setdiff1d(np.arange(len(y)), groups[3])
    sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14).fit(X[keep], y[keep], sample_weight=w[keep])
    assert_close(r.thetas[0], np.concatenate([sk.coef_[0], sk.intercept_]), 1e-8)


def test_numpy_hessians_equal_tensorflow_hessians():
    """The binary fast path (NumPy syrk) against the TensorFlow kernels."""
    import tensorflow as tf

    from influence.objective import LogisticObjective as _Batch
    m, X, y, lam, groups = fitted(2)
    theta = tf.constant(m.get_params_flat())
    Xa, yt, s = m.design((X, y))
    Xa_np = Xa.numpy()
    l2 = tf.constant(lam, dtype=tf.float64)
    H_tf = _Batch.without_groups(m.spec, Xa, yt, s, l2, groups).group_hessians(theta, groups)
    H_np = _Batch.without_groups(m.spec, Xa, yt, s, l2, groups, Xa_np).group_hessians(theta, groups)
    assert_close(H_np.numpy(), H_tf.numpy(), 1e-12, what="group Hessians")
    keep = np.ones((len(y), len(groups)))
    for b, g in enumerate(groups):
        keep[g, b] = 0.0
    S = tf.constant(keep)
    Theta = tf.constant(m.get_params_flat()[None, :] + 0.1 * np.random.RandomState(0).randn(len(groups), m.num_params))
    H1 = _Batch(m.spec, Xa, yt, S, l2).hessians(Theta).numpy()
    H2 = _Batch(m.spec, Xa, yt, S, l2, Xa_np).hessians(Theta).numpy()
    H3 = _Batch(m.spec, Xa, yt, S, l2).hessians(Theta, method="einsum").numpy()
    assert_close(H2, H1, 1e-12, what="full reduced Hessians")
    assert_close(H3, H1, 1e-12, what="einsum Hessians")
    for b in range(len(groups)):
        ref = reference_hessian(Theta[b], Xa, yt, S[:, b], l2, m.spec)
        assert_close(H2[b], ref, RTOL_AUTODIFF, what=f"Hessian {b}")
    # A column sub-batch evaluates the same problems.
    cols = np.array([3, 0])
    batch = _Batch(m.spec, Xa, yt, S, l2, Xa_np)
    assert_close(batch.columns(cols).gradient(tf.gather(Theta, cols)).numpy(),
                 tf.gather(batch.gradient(Theta), cols).numpy(), 1e-12, what="sub-batch gradients")


# --- Newton-CG engine -------------------------------------------------------------------

def _keep_matrix(groups, n):
    keep = np.ones((n, len(groups)))
    for b, g in enumerate(groups):
        keep[g, b] = 0.0
    return keep


@pytest.mark.parametrize("num_classes", [2, 3])
def test_batched_hvps_equal_explicit_hessians(num_classes):
    """LogisticObjective.hvp (two matrix products) against the explicit reduced Hessians."""
    import tensorflow as tf

    from influence.objective import LogisticObjective as _Batch
    m, X, y, lam, groups = fitted(num_classes)
    Xa, yt, s = m.design((X, y))
    rng = np.random.RandomState(1)
    Theta = tf.constant(m.get_params_flat()[None, :] + 0.1 * rng.randn(len(groups), m.num_params))
    batch = _Batch(m.spec, Xa, yt, tf.constant(_keep_matrix(groups, len(y))), tf.constant(lam, dtype=tf.float64))
    V = rng.randn(len(groups), m.num_params)
    curv = batch.curvature(Theta)
    HV = batch.hvp(curv, V)
    u = m.spec.gauge_vector()
    for b in range(len(groups)):
        H = reference_hessian(Theta[b], Xa, yt, batch.S[:, b], batch.l2, m.spec)
        want = H @ V[b] + batch.gauge_c * u * (u @ V[b])
        assert_close(HV[b], want, RTOL_TWO_PATHS, what=f"HVP {b}")
    rows = np.array([4, 1])
    assert_close(batch.hvp(curv, V[rows], rows), HV[rows], 1e-13, what="row subset")


def test_preconditioned_cg_rows_solves_each_row_with_its_own_operator():
    from influence.numerics import preconditioned_cg_rows
    rng = np.random.RandomState(0)
    d, b = 12, 4
    A = []
    for _ in range(b):
        Q = rng.randn(d, d)
        A.append(Q @ Q.T + 0.5 * np.eye(d))
    A = np.stack(A)
    M = A.mean(0)
    Minv = np.linalg.inv(M)
    rhs = rng.randn(b, d)
    calls = []

    def matvec(V, rows):
        calls.append(len(rows))
        return np.einsum("kij,kj->ki", A[rows], V)

    res = preconditioned_cg_rows(matvec, rhs, lambda R, rows: R @ Minv.T, 1e-12, 100)
    assert res.converged.all()
    for j in range(b):
        assert np.linalg.norm(A[j] @ res.x[j] - rhs[j]) <= 1e-11 * np.linalg.norm(rhs[j])
    assert res.residual_norms.max() <= 1e-12
    # Exact preconditioner: one iteration for a row whose operator is M itself.
    one = preconditioned_cg_rows(lambda V, rows: V @ M.T, rhs[:1], lambda R, rows: R @ Minv.T, 1e-10, 5)
    assert one.iterations[0] == 1
    # A row that stops early drops out of the products; a capped run reports failure.
    assert min(calls) <= b
    capped = preconditioned_cg_rows(matvec, rhs, lambda R, rows: R, 1e-12, 2)
    assert not capped.converged.any() and (capped.iterations == 2).all()


@pytest.mark.parametrize("num_classes", [2, 3])
def test_block_diagonal_preconditioner_inverts_the_class_blocks(num_classes):
    from influence.newton import BlockDiagonalPreconditioner
    m, X, y, lam, _ = fitted(num_classes)
    Xa, _, s = m.design((X, y))
    theta = m.get_params_flat()
    P = BlockDiagonalPreconditioner(m.spec, theta, Xa, s, lam)
    H = m.get_hessian((X, y), None, lam)
    E = m.spec.ext_dim
    inv, perm = m.spec.ext_inverse_permutation(), m.spec.ext_permutation()
    H_ext = H[np.ix_(inv, inv)]
    block = np.zeros_like(H_ext)
    for k in range(m.spec.num_rows):
        sl = slice(k * E, (k + 1) * E)
        block[sl, sl] = H_ext[sl, sl]
    R = np.random.RandomState(2).randn(3, m.num_params)
    want = np.linalg.solve(block, R[:, inv].T).T[:, perm]
    # rtol 1e-9: the factor carries a 1e-12 relative diagonal shift.
    assert_close(P(R), want, 1e-9, what="block-diagonal solve")
    if num_classes == 2:
        assert_close(P(R), np.linalg.solve(H, R.T).T, 1e-9, what="binary: the whole Hessian")


@pytest.mark.parametrize("num_classes,weighted", [(2, False), (3, False), (3, True)])
@pytest.mark.parametrize("precond", ["block", "cholesky"])
def test_newton_cg_refits_equal_explicit_refits(num_classes, weighted, precond):
    from influence.newton import CholeskyPreconditioner
    from influence.refit import refit_chunk_cg
    m, X, y, lam, groups = fitted(num_classes)
    w = np.random.RandomState(3).uniform(0.5, 2.0, len(y)) if weighted else None
    if weighted:
        m.fit((X, y), w, lam)
    theta = m.get_params_flat()
    Xa, yt, s = m.design((X, y), w)
    P = CholeskyPreconditioner(m.get_hessian((X, y), w, lam), m.spec) if precond == "cholesky" else None
    r = refit_chunk_cg(m.spec, theta, Xa, yt, s, lam, groups, preconditioner=P, rtol=1e-12)
    ref = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    assert (r.hvps > 0).all() and (r.hessians == 0).all()
    assert_close(r.grad_tols, ref.grad_tols, 1e-14, what="certificates")
    # Both are certified optima of the same strictly convex problem.
    assert_close(r.thetas, ref.thetas, 1e-8, what="Newton-CG vs explicit refits")
    for b, idx in enumerate(groups):
        ww = np.ones(len(y)) if w is None else w.copy()
        ww[idx] = 0
        m.set_params_flat(r.thetas[b])
        assert np.linalg.norm(m.get_total_grad_loss((X, y), ww, lam)) == pytest.approx(r.grad_norms[b], rel=1e-6, abs=1e-13)
    if m.spec.has_gauge:
        # Refits keep the bias gauge of theta_hat.
        u = m.spec.gauge_vector()
        assert_close(r.thetas @ u, np.full(len(groups), theta @ u), 0, atol=1e-10, what="gauge")


def test_make_preconditioner_kinds():
    """Each kind is SPD and close to H^{-1}; 'hessian' is exact; bad kinds are rejected."""
    from influence.newton import make_preconditioner
    m, X, y, lam, _ = fitted(3, n=200)
    Xa, _, s = m.design((X, y))
    theta = m.get_params_flat()
    H = m.get_hessian((X, y), None, lam)
    u = m.spec.gauge_vector()
    R = np.random.RandomState(0).randn(4, m.num_params)
    R -= np.outer(R @ u, u)  # right-hand sides orthogonal to the flat direction, like gradients
    exact = np.linalg.lstsq(H, R.T, rcond=None)[0].T
    # The gauge-fixed inverse equals the pseudo-inverse on such right-hand sides.
    assert_close(make_preconditioner(m.spec, theta, Xa, s, lam, "hessian")(R), exact, 1e-9,
                 what="hessian preconditioner")
    for kind in ("subsampled", "block", "auto"):
        P = make_preconditioner(m.spec, theta, Xa, s, lam, kind, max_rows=100)
        Z = P(R)
        assert np.all(np.einsum("ij,ij->i", R, Z) > 0), kind
        # Close to the exact inverse on these right-hand sides (within a factor of 2).
        ratio = np.linalg.norm(Z - exact, axis=1) / np.linalg.norm(exact, axis=1)
        assert ratio.max() < 1.0, (kind, ratio)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_preconditioner(m.spec, theta, Xa, s, lam, "lissa")


def test_newton_cg_margin_does_not_oversolve_the_last_step(monkeypatch):
    """With ``margin`` the CG residual asked of a problem near its certificate is the one
    that reaches ``margin * tol`` (not the tighter sqrt rule): fewer Hessian-vector
    products, the same certified optimum."""
    import tensorflow as tf

    from influence import newton as N
    from influence.objective import LogisticObjective
    m, X, y, lam, groups = fitted(3, n=200)
    theta = m.get_params_flat()
    Xa, yt, s = m.design((X, y))
    P = N.make_preconditioner(m.spec, theta, Xa, s, lam, "block")
    asked = []
    real = N.preconditioned_cg_rows

    def spy(matvec, B, precond, rtol, maxiter):
        asked.append(np.array(rtol, dtype=float))
        return real(matvec, B, precond, rtol, maxiter)

    monkeypatch.setattr(N, "preconditioned_cg_rows", spy)
    runs = {}
    for margin in (0.0, 0.1):
        asked.clear()
        batch = LogisticObjective.without_groups(m.spec, Xa, yt, s, tf.constant(lam, Xa.dtype), groups)
        Theta, scale = tf.tile(tf.constant(theta)[None], [len(groups), 1]), batch.grad_scales()
        strategy = N.NewtonCG(P, margin=margin)
        res = N.newton_loop(batch, Theta, 1e-12 * scale, strategy, 50, scale=scale, history=True)
        assert (res.grad_norms <= res.grad_tols).all(), margin
        runs[margin] = res, [a.copy() for a in asked]
    (plain, plain_rtol), (lean, lean_rtol) = runs[0.0], runs[0.1]
    assert lean.hvps.sum() < plain.hvps.sum()
    # The same first solve (the certificates are not known yet); a looser last one.
    assert_close(lean_rtol[0], plain_rtol[0], 0)
    assert lean_rtol[-1].min() > plain_rtol[-1].min()
    # Both are certified optima of the same strictly convex problems.
    assert_close(lean.thetas, plain.thetas, 1e-8, what="margin 0.1 vs 0")


def test_single_precision_preconditioner(monkeypatch):
    """The float32-applied factor is close to the float64 one, is chosen from
    FLOAT32_MIN_PARAMS parameters on (the one rule, use_float32), and Newton-CG refits with
    it are the certified optima."""
    from influence import newton as N
    from influence.refit import refit_chunk_cg
    m, X, y, lam, groups = fitted(3, n=200)
    theta = m.get_params_flat()
    Xa, yt, s = m.design((X, y))
    R = np.random.RandomState(0).randn(4, m.num_params)
    P64 = N.make_preconditioner(m.spec, theta, Xa, s, lam, "hessian", float32=False)
    P32 = N.make_preconditioner(m.spec, theta, Xa, s, lam, "hessian", float32=True)
    assert isinstance(P64, N.CholeskyPreconditioner) and not P64.float32 and P32.float32
    assert P32(R).dtype == np.float64
    # float32 factor: rounding of ~6e-8 relative, amplified by the small condition number here.
    assert_close(P32(R), P64(R), 1e-5, what="float32 vs float64 factor")
    assert np.abs(P32(R) - P64(R)).max() > 0  # it is float32
    assert not N.make_preconditioner(m.spec, theta, Xa, s, lam, "hessian").float32
    monkeypatch.setattr(N, "FLOAT32_MIN_PARAMS", m.num_params)
    for kind in ("hessian", "block"):
        assert N.make_preconditioner(m.spec, theta, Xa, s, lam, kind).float32, kind
    r = refit_chunk_cg(m.spec, theta, Xa, yt, s, lam, groups, preconditioner=P32, rtol=1e-12)
    ref = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    assert_close(r.thetas, ref.thetas, 1e-8, what="float32-preconditioned Newton-CG vs explicit refits")


def test_preconditioner_hessian_on_one_blas_thread_when_small(monkeypatch):
    """make_preconditioner forms a small Hessian (under PIN_HESSIAN_MAX_FLOPS) on one BLAS
    thread and a large one on the process's threads; the factor is the same either way."""
    from threadpoolctl import threadpool_info

    from influence import newton as N
    m, X, y, lam, _ = fitted(3, n=200)
    theta = m.get_params_flat()
    Xa, _, s = m.design((X, y))
    seen = []
    real = N.LogisticObjective.hessians

    def spy(*args, **kw):
        seen.append(max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
        return real(*args, **kw)

    monkeypatch.setattr(N.LogisticObjective, "hessians", spy)
    outside = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    R = np.random.RandomState(0).randn(3, m.num_params)
    small = N.make_preconditioner(m.spec, theta, Xa, s, lam, "hessian", float32=False)(R)
    monkeypatch.setattr(N, "PIN_HESSIAN_MAX_FLOPS", 0.0)  # every Hessian counts as large
    large = N.make_preconditioner(m.spec, theta, Xa, s, lam, "hessian", float32=False)(R)
    assert seen == [1, outside]
    # 200 x 9 rows: the products are exact up to the summation order, the same here.
    assert_close(small, large, 1e-13, what="pinned vs unpinned preconditioner")


def test_chord_preconditioners_follow_the_one_float32_rule(monkeypatch):
    """The chord strategies' CG preconditioners (each problem's own factor) solve with the
    problem's matrix, in float32 from FLOAT32_MIN_PARAMS parameters on, and pass the rows of
    a failed factor through unchanged; refits with the float32 rule are the certified optima."""
    import tensorflow as tf

    from influence import newton as N
    from influence.numerics import cholesky_factors
    rng = np.random.RandomState(0)
    A = rng.randn(4, 6, 6)
    H = A @ np.transpose(A, (0, 2, 1)) + 6 * np.eye(6)
    H[2] = -np.eye(6)  # not positive definite: its factor fails
    Ls, ok = cholesky_factors(tf.constant(H))
    problems, rows = np.array([3, 2, 0]), np.array([0, 2, 1])
    R = rng.randn(3, 6)
    exact = np.array([np.linalg.solve(H[problems[r]], R[k]) for k, r in enumerate(rows)])
    exact[rows == 1] = R[rows == 1]  # problem 2's failed factor: unpreconditioned
    for float32, rtol in ((False, RTOL_TWO_PATHS), (True, 1e-5)):  # float32: ~6e-8 x the condition number
        P = N.BatchedCholeskyPreconditioner(Ls, ok, problems, float32)
        out = P(R, rows)
        assert out.dtype == np.float64 and P.float32 == float32
        assert_close(out, exact, rtol, what=f"float32={float32}")
    m, X, y, lam, groups = fitted(3)
    theta = m.get_params_flat()
    Xa, yt, s = m.design((X, y))
    ref = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    monkeypatch.setattr(N, "FLOAT32_MIN_PARAMS", m.num_params)
    assert N.use_float32(m.num_params) and not N.use_float32(m.num_params - 1)
    r = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all()
    assert_close(r.thetas, ref.thetas, 1e-8, what="float32 vs float64 chord preconditioners")
