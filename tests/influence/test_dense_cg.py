"""The cg routes with the dense Hessian (influence.newton.HessianFactor, DowndatedHessians,
FactorChord; influence.groups.newton_factor; influence.refit.refit_chunk_factor) and the
continuous batching of influence.numerics.preconditioned_cg_rows.

Oracles: dense NumPy matrices (``np.linalg.solve``), automatic differentiation of an
independent loss (tests.influence.problems.reference_hessian), scikit-learn refits, the
today's route through the data (CGNewton, NewtonCGRefit) as a second code path, and the
optimality certificate (the reduced objective's gradient norm, recomputed).
"""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression as SkLR

from influence import groups as G, memory, routes as R
from influence.group_influence import GroupInfluence
from influence.newton import FactorChord, HessianFactor, RefitResult, hessian_factor, make_preconditioner
from influence.numerics import preconditioned_cg_rows
from influence.objective import LogisticObjective, ModelSpec, gauge_fix
from influence.refit import refit_chunk_cg, refit_chunk_factor
from tests.conftest import RESID_SOLVE, RTOL_CG, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import (
    assert_slots_stay_full,
    gaussian_classes,
    reference_hessian,
    refit_in_one_batch_and_in_slots,
    spd_rows,
)


def fitted(num_classes, n=120, D=12, seed=0, lam=0.5, fit_intercept=True, weighted=False):
    """A fitted model on Gaussian classes (d = K (D + 1) = 39-65 parameters), its data,
    weights and groups of 1-40 points."""
    m, X, y, rng = gaussian_classes(num_classes, fit_intercept, n, D, seed)
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    m.fit((X, y), w, lam)
    groups = [np.sort(rng.choice(n, s, replace=False)) for s in (1, 3, 8, 20, 40)]
    return m, X, y, w, lam, groups


def dense_parts(m, X, y, w, lam, groups):
    """Gauge-fixed H, the groups' H_U and their gradient sums g_U, from get_hessian."""
    H = gauge_fix(tf.constant(m.get_hessian((X, y), w, lam)), m.spec).numpy()
    ww = np.ones(len(y)) if w is None else w
    H_U = [m.get_hessian((X[g], y[g]), ww[g], 0.0) for g in groups]
    Gi = m.get_indiv_grad_loss((X, y))
    G_S = np.array([(ww[g, None] * Gi[g]).sum(axis=0) for g in groups])
    return H, H_U, G_S


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("num_classes,fit_intercept,weighted", [(2, True, False), (3, True, True),
                                                                (4, False, False), (5, True, False)])
def test_hessian_factor_products_and_solves(num_classes, fit_intercept, weighted):
    m, X, y, w, lam, _ = fitted(num_classes, fit_intercept=fit_intercept, weighted=weighted)
    Xa, _, s = m.design((X, y), w)
    theta = m.get_params_flat()
    F = hessian_factor(m.spec, theta, Xa, s, lam)
    # Oracle: the Hessian of an independent loss by automatic differentiation, gauge-fixed.
    H = gauge_fix(tf.constant(reference_hessian(tf.constant(theta), Xa, tf.constant(y), s, lam, m.spec)),
                  m.spec).numpy()
    V = np.random.RandomState(1).randn(7, m.num_params)
    assert_close(F.matvec(V), V @ H, RTOL_TWO_PATHS, what="H V through the factor")
    Z = F.solve(V)
    assert np.linalg.norm(Z @ H - V) / np.linalg.norm(V) <= RESID_SOLVE
    assert_close(F(V[:2], np.arange(2)), Z[:2], 0, what="the preconditioner interface is the solve")
    assert F.L.dtype == np.float64 and F.nbytes == memory.dense_hessian_bytes(m.num_params)


def test_hessian_factor_refuses_what_is_not_positive_definite():
    spec = ModelSpec(3, 2, False)
    with pytest.raises(ValueError, match="not positive definite"):
        HessianFactor(-np.eye(3), spec)
    with pytest.raises(ValueError, match="C-contiguous float64 array of shape"):
        HessianFactor(np.eye(4), spec)


@pytest.mark.parametrize("num_classes,weighted", [(2, True), (3, False), (4, True)])
def test_hessian_ext_and_group_hvp_equal_the_hessians(num_classes, weighted):
    m, X, y, w, lam, groups = fitted(num_classes, weighted=weighted)
    Xa, _, s = m.design((X, y), w)
    theta = m.get_params_flat()
    obj = LogisticObjective(m.spec, Xa, None, s, lam)
    H = m.get_hessian((X, y), w, lam)
    inv = m.spec.ext_inverse_permutation()
    assert_close(obj.hessian_ext(theta), H[np.ix_(inv, inv)], RTOL_TWO_PATHS, what="extended layout")
    curv = obj.curvature(tf.constant(theta)[None])
    ww = np.ones(len(y)) if w is None else w
    V = np.random.RandomState(2).randn(3, m.num_params)
    for g in groups:
        H_U = m.get_hessian((X[g], y[g]), ww[g], 0.0)
        assert_close(obj.group_hvp(curv, g, V), V @ H_U, RTOL_TWO_PATHS, what=f"H_U V, |U| = {len(g)}")


def test_continuous_batching_cg_equals_the_direct_solves_and_refills_slots():
    """Rows with their own SPD operators; with width 3 the product never sees more than 3
    rows, later rows enter as earlier ones finish, and each solution is the direct solve's."""
    d, b = 30, 11
    A, Bm = spd_rows(d, b, seed=0)
    seen = []

    def matvec(V, rows):
        seen.append(np.array(rows))
        return np.einsum("kij,kj->ki", A[rows], V)

    def precond(R, rows):
        return R / np.einsum("kii->ki", A[rows])  # Jacobi

    res = preconditioned_cg_rows(matvec, Bm, precond, 1e-12, 500, width=3)
    assert res.converged.all()
    assert max(len(r) for r in seen) <= 3
    first_with = {j: next(i for i, r in enumerate(seen) if j in r) for j in range(b)}
    assert first_with[b - 1] > 0  # the last row entered after the first products
    want = np.linalg.solve(A, Bm[:, :, None])[:, :, 0]
    assert_close(res.x, want, RTOL_CG, what="continuous batching vs direct solves")
    # All rows together: the same solutions, the same iteration counts.
    full = preconditioned_cg_rows(lambda V, rows: np.einsum("kij,kj->ki", A[rows], V), Bm, precond, 1e-12, 500)
    assert_close(full.x, res.x, RTOL_CG, what="width 3 vs all rows")
    assert np.abs(full.iterations - res.iterations).max() <= 1


# ----------------------------------------------------------------------------- Newton changes
@pytest.mark.parametrize("num_classes,weighted", [(2, False), (3, True), (5, False)])
def test_newton_factor_equals_the_dense_solve_and_the_route_through_the_data(num_classes, weighted):
    m, X, y, w, lam, groups = fitted(num_classes, weighted=weighted)
    Xa, _, s = m.design((X, y), w)
    theta = m.get_params_flat()
    H, H_U, G_S = dense_parts(m, X, y, w, lam, groups)
    F = hessian_factor(m.spec, theta, Xa, s, lam)
    groups_e = groups + [np.zeros(0, dtype=np.int64)]  # an empty group: the first-order change
    G_e = np.vstack([G_S, G_S[-1]])
    out = G.newton_factor(m.spec, theta, Xa, s, lam, groups_e, G_e, F, tol=1e-12, width=2)
    for k in range(len(groups)):
        assert_close(out[k], np.linalg.solve(H - H_U[k], G_S[k]), RTOL_CG, what=f"group {k}")
    assert_close(out[-1], np.linalg.solve(H, G_S[-1]), RTOL_CG, what="empty group: H^-1 g")
    old = G.newton_cg(m.spec, theta, Xa, s, lam, groups, G_S, tol=1e-12,
                      preconditioner=make_preconditioner(m.spec, theta, Xa, s, lam, "block"))
    assert_close(out[:-1], old, RTOL_CG, what="dense route vs the route through the data")


def test_dense_route_first_order_changes_take_one_or_two_iterations():
    """The exact factor as preconditioner: CG on H is done after at most two iterations."""
    m, X, y, w, lam, groups = fitted(3)
    Xa, _, s = m.design((X, y))
    theta = m.get_params_flat()
    F = hessian_factor(m.spec, theta, Xa, s, lam)
    _, _, G_S = dense_parts(m, X, y, w, lam, groups)
    res = preconditioned_cg_rows(lambda V, rows: F.matvec(V), G_S, F, 1e-10, 50)
    assert res.converged.all() and res.iterations.max() <= 2


# ----------------------------------------------------------------------------- refits
@pytest.mark.parametrize("num_classes,weighted", [(2, False), (3, False), (4, True)])
def test_factor_refits_are_certified_and_equal_the_route_through_the_data(num_classes, weighted):
    m, X, y, w, lam, groups = fitted(num_classes, weighted=weighted)
    Xa, yt, s = m.design((X, y), w)
    theta = m.get_params_flat()
    r = refit_chunk_factor(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    old = refit_chunk_cg(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all() and (r.hessians == 0).all()
    assert (r.hvps > 0).all()
    assert_close(r.grad_tols, old.grad_tols, 1e-14, what="certificates")
    # Both are certified optima of the same strictly convex problems.
    assert_close(r.thetas, old.thetas, 1e-8, what="dense chord vs Newton-CG refits")
    ww = np.ones(len(y)) if w is None else w
    for b, idx in enumerate(groups):
        keep = ww.copy()
        keep[idx] = 0.0
        m.set_params_flat(r.thetas[b])
        # The certificate is the true gradient norm of the reduced objective.
        assert np.linalg.norm(m.get_total_grad_loss((X, y), keep, lam)) == pytest.approx(
            r.grad_norms[b], rel=1e-6, abs=1e-13)
    if m.spec.has_gauge:
        u = m.spec.gauge_vector()
        assert_close(r.thetas @ u, np.full(len(groups), theta @ u), 0, atol=1e-10, what="gauge")


@pytest.mark.parametrize("num_classes", [3, 5])
def test_factor_refits_equal_sklearn(num_classes):
    """scikit-learn's multinomial fit without each group (same C = 1 / lambda, the
    intercept unregularised), at a tight tolerance."""
    m, X, y, _, lam, groups = fitted(num_classes, n=150, D=8)
    Xa, yt, s = m.design((X, y))
    r = refit_chunk_factor(m.spec, m.get_params_flat(), Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all()
    for b, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(len(y)), idx)
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        want = np.concatenate([sk.coef_.ravel(), sk.intercept_ - sk.intercept_.mean()])
        assert_close(r.thetas[b], want, 1e-8, what=f"group {b}")


@pytest.mark.parametrize("refit", [refit_chunk_factor, refit_chunk_cg], ids=["factor", "through_data"])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_continuous_batching_of_the_cg_refits_equals_one_batch(refit, num_classes):
    """The cg refits of 8 groups in 3 slots (a stopped group's slot refilled at once) equal
    those of all groups in one batch (the same steps per group: only the rounding of the
    batched products differs) and scikit-learn's fits; the refilled slots are used."""
    m, X, y, _, lam, groups = fitted(num_classes)
    rng = np.random.RandomState(4)
    groups = groups + [np.sort(rng.choice(len(y), s, replace=False)) for s in (2, 5, 30)]
    Xa, yt, s = m.design((X, y))
    _, r = refit_in_one_batch_and_in_slots(refit, (m.spec, m.get_params_flat(), Xa, yt, s, lam), groups, 3,
                                           ("hvps",))
    assert (r.hessians == 0).all() and r.occupancy.max() == 3
    assert_slots_stay_full(r, 3)
    for b in (0, len(groups) - 1):
        keep = np.setdiff1d(np.arange(len(y)), groups[b])
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        want = (np.concatenate([sk.coef_[0], sk.intercept_]) if num_classes == 2
                else np.concatenate([sk.coef_.ravel(), sk.intercept_ - sk.intercept_.mean()]))
        assert_close(r.thetas[b], want, 1e-8, what=f"group {b}")


def test_first_step_of_the_factor_refits_is_the_newton_change():
    """The first chord step from theta_hat is CG on ``(H - H_U) x = g`` with the true
    gradient of the reduced objective; taken in full it is that solve (to its CG residual)."""
    m, X, y, w, lam, groups = fitted(3)
    Xa, yt, s = m.design((X, y))
    theta = m.get_params_flat()
    H, H_U, G_S = dense_parts(m, X, y, w, lam, groups)
    resid = m.get_total_grad_loss((X, y), None, lam)
    r = refit_chunk_factor(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12, chord_rtol=1e-12)
    assert r.first_full_step.any()
    for b in np.flatnonzero(r.first_full_step):
        assert_close(r.first_steps[b], np.linalg.solve(H - H_U[b], G_S[b] - resid), RTOL_CG, what=f"group {b}")


@pytest.mark.parametrize("float32", [False, True])
def test_factor_refits_in_slots_hold_each_groups_own_rows(float32):
    """Refits of 8 groups in 2 slots, the chord matrices holding each running group's rows
    (float32 or float64) and freeing them as it stops: every first chord step (CG to 1e-12)
    is the Newton change of its own group, ``(H - H_U)^-1 (g_U - grad)`` (a slot that kept
    the rows of the group it held before, or of another slot, would solve another system;
    float32 rows round it to about 1e-6), and the refits equal those of each group refitted
    alone with the rows gathered in float64 (both certified optima)."""
    m, X, y, w, lam, groups = fitted(3)
    rng = np.random.RandomState(5)
    groups = groups + [np.sort(rng.choice(len(y), s, replace=False)) for s in (30, 2, 11)]
    Xa, yt, s = m.design((X, y))
    theta = m.get_params_flat()
    F = hessian_factor(m.spec, theta, Xa, s, lam)
    H, H_U, G_S = dense_parts(m, X, y, w, lam, groups)
    resid = m.get_total_grad_loss((X, y), None, lam)
    r = refit_chunk_factor(m.spec, theta, Xa, yt, s, lam, groups, factor=F, rtol=1e-12, chord_rtol=1e-12, slots=2,
                           float32=float32)
    assert r.converged.all() and r.occupancy.max() == 2
    assert_slots_stay_full(r, 2)
    # float32 rows: the operator is rounded to about 1e-7 relative, amplified by the
    # conditioning of H - H_U; the refits themselves stay certified float64 optima.
    tol = 1e-5 if float32 else RTOL_CG
    assert r.first_full_step.all()
    for b in range(len(groups)):
        assert_close(r.first_steps[b], np.linalg.solve(H - H_U[b], G_S[b] - resid), tol, what=f"group {b}")
    alone = RefitResult.concat([refit_chunk_factor(m.spec, theta, Xa, yt, s, lam, [g], factor=F, rtol=1e-12,
                                                   float32=False) for g in groups])
    assert alone.converged.all()
    assert_close(r.thetas, alone.thetas, 1e-8, what="2 slots vs one group at a time")


def test_factor_refits_count_the_held_rows_in_the_memory_budget():
    """With a budget for two running groups' (n, K') arrays and rows, never more than two
    run together, however many slots; below it, three."""
    m, X, y, _, lam, groups = fitted(3)
    Xa, yt, s = m.design((X, y))
    theta = m.get_params_flat()
    F = hessian_factor(m.spec, theta, Xa, s, lam)
    n, E, K = len(y), m.spec.ext_dim, m.spec.num_classes
    same = [groups[-1]] * 4   # 40 points each
    cost = memory.refit_bytes_per_group(m.num_params, n, m.spec.num_rows, False) + 8 * 40 * (E + K + 1)
    for budget, most in ((2 * cost, 2), (3 * cost, 3)):
        r = refit_chunk_factor(m.spec, theta, Xa, yt, s, lam, same, factor=F, rtol=1e-12, slots=4,
                               max_memory=budget, float32=False)
        assert r.converged.all() and r.occupancy.max() == most


def test_factor_chord_switches_slow_or_failed_problems_to_newton_cg():
    strategy = FactorChord(chords=type("C", (), {"factor": None})(), maxiter=10)
    obj = type("O", (), {"B": 4, "spec": ModelSpec(2, 2, True)})()
    strategy.start(obj, None, None, np.ones(4), np.ones(4))
    active = np.ones(4, dtype=bool)
    good = np.array([True, True, True, False])
    assert not strategy.rejected(active, good).any()   # a failed chord step is retried, not stalled
    assert strategy.newton.tolist() == [False, False, False, True]
    strategy.update(obj, None, active, good, np.array([0.01, 0.9, 0.01, 1.0]), np.array([1.0, 1.0, 0.5, 0.0]),
                    np.full(4, 1.0), np.full(4, 1e-3))
    assert strategy.newton.tolist() == [False, True, True, True]  # slow (ratio > 1/2) or damped
    # Newton-CG failures tighten the CG residual 1000x each (1e-3, 1e-6, 1e-9), then the problem stops.
    for _ in range(3):
        assert not strategy.rejected(active, good).any()
    assert strategy.rejected(active, good).tolist() == [False, False, False, True]


# ----------------------------------------------------------------------------- the choice
def test_dense_routes_are_chosen_where_the_factor_fits():
    spec = ModelSpec(12, 3, True)   # d = 39
    d = spec.num_params
    fits = 2 * memory.dense_hessian_bytes(d)
    assert R.choose_routes(spec, "cg", False) == (R.DenseCGNewton, R.DenseRefit)
    assert R.choose_routes(spec, "cg", True, fits) == (R.DenseCGNewton, R.DenseRefit)
    assert R.choose_routes(spec, "cg", False, fits - 1) == (R.CGNewton, R.NewtonCGRefit)
    big = ModelSpec(memory.DENSE_HESSIAN_MAX_PARAMS, 2, False)
    assert R.choose_routes(big, "cg", False) == (R.DenseCGNewton, R.DenseRefit)
    bigger = ModelSpec(memory.DENSE_HESSIAN_MAX_PARAMS + 1, 2, False)
    assert R.choose_routes(bigger, "cg", False) == (R.CGNewton, R.NewtonCGRefit)
    assert memory.dense_work_memory(d, fits) == fits - memory.dense_hessian_bytes(d)


def test_group_influence_cg_routes_and_first_order_influence():
    """GroupInfluence with 'cg': the dense routes with their factor (built once); below the
    budget the routes through the data; both give the explicit first-order influence and
    Newton changes to the CG tolerance."""
    m, X, y, w, lam, groups = fitted(3)
    H = m.get_hessian((X, y), None, lam)
    T = m.get_indiv_grad_loss((X[:4], y[:4]))
    Gi = m.get_indiv_grad_loss((X, y))
    explicit = GroupInfluence(m, (X, y), lam, hessian=H)
    want_infl = explicit.first_order_influence(Gi, T)
    G_S = np.array([Gi[g].sum(axis=0) for g in groups])
    want_newton = explicit.newton_dparams(groups, G_S)["newton_dparam"]
    dense_gi = GroupInfluence(m, (X, y), lam, inverse_hvp_method="cg")
    small_gi = GroupInfluence(m, (X, y), lam, inverse_hvp_method="cg",
                              max_memory=2 * memory.dense_hessian_bytes(m.num_params) - 1)
    assert isinstance(dense_gi.routes()[0], R.DenseCGNewton)
    assert isinstance(small_gi.routes()[0], R.CGNewton)
    P = dense_gi.preconditioner()
    assert isinstance(P, HessianFactor) and dense_gi.preconditioner() is P
    for gi in (dense_gi, small_gi):
        assert_close(gi.first_order_influence(Gi, T), want_infl, RTOL_CG, what="first-order influence")
        assert_close(gi.newton_dparams(groups, G_S)["newton_dparam"], want_newton, RTOL_CG, what="Newton")
    with pytest.raises(ValueError, match="need the Hessian's factor"):
        _ = dense_gi.routes("cg", preconditioner=make_preconditioner(m.spec, m.get_params_flat(),
                                                                     *m.design((X, y))[::2], lam))[0].preconditioner


@pytest.mark.parametrize("num_classes,weighted", [(2, True), (4, False)])
def test_downdated_hessians_products_and_split_solves(num_classes, weighted):
    """The operators H - H_U (products through the factor and the groups' rows) and their
    split CG solves: the dense solve, and a reported residual that bounds the true one."""
    from influence.newton import DowndatedHessians
    m, X, y, w, lam, groups = fitted(num_classes, weighted=weighted)
    Xa, _, s = m.design((X, y), w)
    theta = m.get_params_flat()
    H, H_U, G_S = dense_parts(m, X, y, w, lam, groups)
    F = hessian_factor(m.spec, theta, Xa, s, lam)
    op = DowndatedHessians(F, LogisticObjective(m.spec, Xa, None, s, lam), theta, groups)
    rows = np.array([4, 0, 2])
    V = np.random.RandomState(3).randn(3, m.num_params)
    assert_close(op(V, rows), np.stack([(H - H_U[j]) @ V[k] for k, j in enumerate(rows)]), RTOL_TWO_PATHS,
                 what="(H - H_U) V")
    for rtol in (1e-3, 1e-10):
        res = op.solve(G_S, np.arange(len(groups)), rtol, 200, width=2)
        assert res.converged.all()
        for k in range(len(groups)):
            true = np.linalg.norm(G_S[k] - (H - H_U[k]) @ res.x[k]) / np.linalg.norm(G_S[k])
            # The bound holds up to the rounding of the recursively updated residual (1e-12).
            assert true <= res.residual_norms[k] * (1 + 1e-6) + 1e-12 and res.residual_norms[k] <= rtol
    assert_close(res.x, np.stack([np.linalg.solve(H - H_U[k], G_S[k]) for k in range(len(groups))]), RTOL_CG,
                 what="split CG vs dense solves")
    # Held rows (load) give the same products, float32 ones to their rounding; release frees them.
    want = np.stack([(H - H_U[j]) @ V[k] for k, j in enumerate(rows)])
    for float32, tol in ((False, RTOL_TWO_PATHS), (True, 1e-6)):
        held = DowndatedHessians(F, LogisticObjective(m.spec, Xa, None, s, lam), theta, groups, float32=float32)
        held.load(rows)
        assert sorted(held.held) == sorted(rows.tolist())
        assert held.held[4][2].dtype == (np.float32 if float32 else np.float64)
        assert_close(held(V, rows), want, tol, what=f"(H - H_U) V, held rows, float32={float32}")
        held.release(rows[:2])
        assert sorted(held.held) == [2]
