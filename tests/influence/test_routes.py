"""The routes of the Newton changes and refits (influence/routes.py): which one the factory
chooses for which model and method, and that every route gives the same answer as the
others and as a dense oracle.

Oracles: ``np.linalg.solve(H - H_U, g_U)`` and ``eigvals(-H^-1 H_U)`` from dense NumPy
matrices built from the formulas, and a plain NumPy Newton iteration on the reduced
objective (quadratically convergent, run to its floating-point floor) for the refits.
"""
import numpy as np
import pytest

import influence.downdate as dd
from influence import routes as R
from influence.group_influence import GroupInfluence
from influence.logistic_regression import LogisticRegression
from influence.objective import ModelSpec
from tests.conftest import RTOL_CG, RTOL_TWO_PATHS, assert_close

LAM = 0.5


def problem(weights, n=50, D=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(0, 1, (n, D))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ rng.normal(0, 1, D)))).astype(np.int64)
    s = rng.uniform(0.5, 2.0, n) if weights else np.ones(n)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": 2}
    m = LogisticRegression(cfg)
    m.fit((X, y), s, LAM)
    gi = GroupInfluence(m, (X, y), LAM, sample_weights=s, hessian=m.get_hessian((X, y), s, LAM))
    groups = [np.sort(rng.choice(n, k, replace=False)) for k in (1, 2, 4, 7, 12)]
    return gi, X, y, s, groups


def dense(theta, X, y, s):
    """Augmented design, per-example gradients, weighted curvature and the regularised Hessian."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    p = 1 / (1 + np.exp(-Xa @ theta))
    mask = np.r_[np.ones(X.shape[1]), 0.0]
    return Xa, (p - y)[:, None] * Xa, s * p * (1 - p), mask


def hessian(theta, Xa, y, s, mask):
    p = 1 / (1 + np.exp(-Xa @ theta))
    return Xa.T @ ((s * p * (1 - p))[:, None] * Xa) + LAM * np.diag(mask)


def newton_refit(theta, Xa, y, s, mask, iters=30):
    """Plain Newton on ``sum_i s_i l_i + (LAM / 2) ||mask theta||^2`` from ``theta``."""
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Xa @ theta))
        g = Xa.T @ (s * (p - y)) + LAM * mask * theta
        theta = theta - np.linalg.solve(hessian(theta, Xa, y, s, mask), g)
    return theta


# ----------------------------------------------------------------------------- the choice
def spec(num_classes=2, D=4):
    return ModelSpec(D, num_classes, True)


@pytest.mark.parametrize("method, weighted, downdates, want", [
    ("explicit", False, False, (R.PerGroupNewton, R.ChordRefit)),
    ("explicit", True, False, (R.WeightedNewton, R.ChordRefit)),
    ("explicit", False, True, (R.DowndateNewton, R.DowndateRefit)),
    ("explicit", True, True, (R.WeightedNewton, R.DowndateRefit)),
    ("cg", False, False, (R.DenseCGNewton, R.DenseRefit)),  # no memory budget: the dense factor
    ("cg", True, True, (R.DenseCGNewton, R.DenseRefit)),
    ("small", False, False, (R.BatchedCholeskyNewton, R.SmallRefit)),
    ("small", True, True, (R.BatchedCholeskyNewton, R.SmallRefit)),
])
def test_choose_routes(monkeypatch, method, weighted, downdates, want):
    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1 if downdates else 10 ** 9)
    assert R.choose_routes(spec(), method, weighted) == want


def test_multinomial_and_large_binary_models_without_monkeypatching():
    assert R.choose_routes(spec(3), "explicit", False) == (R.PerGroupNewton, R.ChordRefit)
    # Multinomial models never take the downdates, whatever their size, and refit with a
    # Hessian per group (MultiNLI's model: 3 x 601 parameters).
    assert R.choose_routes(spec(3, D=600), "explicit", False, int(1e9)) == (R.PerGroupNewton, R.ChordRefit)
    assert R.choose_routes(spec(3, D=600), "explicit", True, int(1e9)) == (R.WeightedNewton, R.ChordRefit)
    assert R.choose_routes(spec(3, D=2000), "explicit", False) == (R.PerGroupNewton, R.ChordRefit)
    assert R.refit_holds_hessians(spec(3, D=300), "explicit", None)
    assert R.refit_holds_hessians(spec(3, D=600), "explicit", None)
    assert not R.refit_holds_hessians(spec(2, D=2000), "explicit", None)
    assert not any(R.refit_holds_hessians(spec(3, D=300), m, None) for m in ("cg", "small", "fmin_ncg"))
    assert R.choose_routes(spec(2, D=2000), "explicit", False) == (R.DowndateNewton, R.DowndateRefit)
    assert R.choose_routes(spec(2, D=10), "explicit", False) == (R.PerGroupNewton, R.ChordRefit)
    with pytest.raises(ValueError, match=r"method must be one of \('explicit', 'cg', 'small'\); got 'lissa'"):
        R.choose_routes(spec(), "lissa", False)


def test_group_influence_routes_follow_the_method_and_weights():
    gi, *_ = problem(weights=True)
    newton, refit = gi.routes()
    assert (type(newton), type(refit)) == (R.WeightedNewton, R.ChordRefit)
    newton, refit = gi.routes("fmin_ncg")  # the original's solver: the cg routes
    assert (type(newton), type(refit)) == (R.DenseCGNewton, R.DenseRefit)
    gi1, *_ = problem(weights=False)  # weights all 1 count as unit weights
    assert type(gi1.routes("explicit")[0]) is R.PerGroupNewton
    with pytest.raises(ValueError, match="method must be one of"):
        gi.routes("woodbury")


# ----------------------------------------------------------------------------- all routes agree
NEWTON_ROUTES = [R.PerGroupNewton, R.DowndateNewton, R.WeightedNewton, R.CGNewton, R.DenseCGNewton,
                 R.BatchedCholeskyNewton]
REFIT_ROUTES = [R.ChordRefit, R.DowndateRefit, R.NewtonCGRefit, R.DenseRefit, R.SmallRefit]


@pytest.mark.parametrize("route", NEWTON_ROUTES, ids=lambda c: c.__name__)
def test_newton_routes_equal_the_dense_solve(route, monkeypatch):
    """Unit weights (given as an array of ones, so every route applies)."""
    gi, X, y, s, groups = problem(weights=False)
    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1)  # the downdate basis for this small model
    Xa, G, c, _ = dense(gi.params, X, y, s)
    G_S = np.array([G[g].sum(axis=0) for g in groups])
    out = route(gi).changes(groups, G_S)["newton_dparam"]
    for k, g in enumerate(groups):
        H_U = Xa[g].T @ (c[g, None] * Xa[g])
        assert_close(out[k], np.linalg.solve(gi.hessian - H_U, G_S[k]),
                     RTOL_CG if route in (R.CGNewton, R.DenseCGNewton) else RTOL_TWO_PATHS,
                     what=f"{route.__name__} group {k}")


@pytest.mark.parametrize("route", [R.PerGroupNewton, R.DowndateNewton], ids=lambda c: c.__name__)
def test_spectra_equal_the_dense_eigenvalues(route, monkeypatch):
    gi, X, y, s, groups = problem(weights=False)
    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1)
    Xa, G, c, _ = dense(gi.params, X, y, s)
    G_S = np.array([G[g].sum(axis=0) for g in groups])
    spectra = route(gi).changes(groups, G_S, spectrum=True)["spectrum"]
    for k, g in enumerate(groups):
        H_U = Xa[g].T @ (c[g, None] * Xa[g])
        want = np.sort(np.linalg.eigvals(-np.linalg.solve(gi.hessian, H_U)).real)
        # Zero eigenvalues (rank |U| < d) are rounding noise: absolute floor.
        assert_close(spectra[k], want, RTOL_TWO_PATHS, atol=1e-14, what=f"{route.__name__} group {k}")


def test_weighted_newton_equals_the_dense_solve_and_refuses_spectra():
    gi, X, y, s, groups = problem(weights=True)
    Xa, G, c, _ = dense(gi.params, X, y, s)
    G_S = np.array([(s[g, None] * G[g]).sum(axis=0) for g in groups])
    out = R.WeightedNewton(gi).changes(groups, G_S)["newton_dparam"]
    for k, g in enumerate(groups):
        H_U = Xa[g].T @ (c[g, None] * Xa[g])
        assert_close(out[k], np.linalg.solve(gi.hessian - H_U, G_S[k]), RTOL_TWO_PATHS, what=f"group {k}")
    with pytest.raises(ValueError, match="spectrum=True needs unit sample weights"):
        R.WeightedNewton(gi).changes(groups, G_S, spectrum=True)


@pytest.mark.parametrize("weights", [False, True])
def test_refit_routes_agree_and_equal_a_dense_newton_refit(weights, monkeypatch):
    gi, X, y, s, groups = problem(weights)
    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1)
    Xa, _, _, mask = dense(gi.params, X, y, s)
    results = {route.__name__: route(gi).refit(groups) for route in REFIT_ROUTES}
    for name, r in results.items():
        assert r.converged.all() and (r.grad_norms <= r.grad_tols).all(), name
        assert r.thetas.shape == (len(groups), gi.model.num_params)
        for k, g in enumerate(groups):
            keep = s.copy()
            keep[g] = 0.0
            # Two certified optima of the same strictly convex problem: they agree to the
            # certificate (||grad|| <= 1e-12 scale) over the curvature, far inside 1e-8.
            assert_close(r.thetas[k], newton_refit(gi.params, Xa, y, keep, mask), 1e-8, what=f"{name} group {k}")
    # The Newton-CG route counts its Hessian-vector products, the small route has none.
    assert (results["NewtonCGRefit"].hvps > 0).all() and (results["SmallRefit"].hvps == 0).all()
    assert (results["DenseRefit"].hvps > 0).all()


@pytest.mark.parametrize("weights", [False, True])
def test_multinomial_dense_refits_equal_the_explicit_route(weights):
    """DenseRefit on a multinomial model (chord steps with H_hat - H_U through H_hat's
    factor; not the route choice's for these models) against the per-group explicit
    Hessians of ChordRefit, the 'explicit' route's."""
    rng = np.random.RandomState(3)
    n, D = 80, 5
    X = rng.normal(0, 1, (n, D))
    y = np.argmax(X @ rng.normal(0, 1, (D, 3)) + rng.gumbel(size=(n, 3)), axis=1)
    s = rng.uniform(0.5, 2.0, n) if weights else None
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": 3}
    m = LogisticRegression(cfg)
    m.fit((X, y), s, LAM)
    gi = GroupInfluence(m, (X, y), LAM, sample_weights=s, hessian=m.get_hessian((X, y), s, LAM),
                        max_memory=int(1e8))
    groups = [np.sort(rng.choice(n, k, replace=False)) for k in (1, 3, 9, 25)]
    assert type(gi.routes("explicit")[1]) is R.ChordRefit
    dense_r, chord_r = R.DenseRefit(gi).refit(groups), R.ChordRefit(gi).refit(groups)
    for r in (dense_r, chord_r):
        assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    # Two certified optima of the same strictly convex problem (gauge-fixed parameters).
    assert_close(dense_r.thetas, chord_r.thetas, 1e-8, what="DenseRefit vs ChordRefit")
    assert (dense_r.hvps > 0).all()
