"""The downdate route (influence/downdate.py) of large binary models against dense oracles.

The route is taken by models with at least DOWNDATE_MIN_PARAMS parameters; the tests
lower that threshold so that small problems, whose dense matrices are cheap oracles,
take it.
"""
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from sklearn.linear_model import LogisticRegression as SkLR

import influence.downdate as dd
from influence import groups as G
from influence.downdate import DowndateBasis, GroupDowndates, sparse_if_sparse
from influence.logistic_regression import LogisticRegression
from influence.memory import downdate_bytes_per_group
from influence.objective import LogisticObjective
from influence.refit import downdate_basis, refit_chunk_downdate, split_groups
from tests.conftest import RTOL_TWO_PATHS, assert_close


def sparse_problem(n=90, D=14, density=0.25, seed=0, lam=0.3):
    """A fitted binary model on a count-like sparse design (features mostly zero)."""
    rng = np.random.RandomState(seed)
    X = rng.poisson(1.0, (n, D)) * (rng.rand(n, D) < density)
    w = rng.normal(0, 1, D)
    y = (X @ w + rng.normal(0, 1, n) > np.median(X @ w)).astype(float)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": 2}
    m = LogisticRegression(cfg)
    m.fit((X.astype(float), y), None, lam)
    groups = [rng.choice(n, s, replace=False) for s in (1, 3, 8, 20, 40)]
    return m, X.astype(float), y, lam, groups


@pytest.fixture
def downdate_route(monkeypatch):
    """Every binary model takes the downdate route."""
    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1)


def _dense_pieces(m, X, y, lam):
    H = m.get_hessian((X, y), None, lam)
    Xa = np.hstack([X, np.ones((len(X), 1))])
    p = 1 / (1 + np.exp(-Xa @ m.get_params_flat()))
    return H, Xa, p * (1 - p)


@pytest.mark.parametrize("sparse", [False, True])
def test_downdate_solves_equal_dense_solves(sparse):
    m, X, y, lam, groups = sparse_problem()
    H, Xa, c = _dense_pieces(m, X, y, lam)
    basis = DowndateBasis(H, sp.csr_matrix(Xa) if sparse else Xa, c)
    assert sp.issparse(basis.X) == sparse
    down = GroupDowndates(basis, groups)
    R = np.random.RandomState(1).normal(size=(len(groups), H.shape[0]))
    out = down.solve(R, np.arange(len(groups)))
    for b, idx in enumerate(groups):
        H_U = (Xa[idx] * c[idx, None]).T @ Xa[idx]
        assert_close(out[b], np.linalg.solve(H - H_U, R[b]), RTOL_TWO_PATHS, what=f"group {b}")
    # Rows may name any group, in any order, repeated.
    again = down.solve(R[[3, 0, 3]], np.array([3, 0, 3]))
    assert_close(again, out[[3, 0, 3]], 1e-13)


def test_spectrum_equals_dense_eigenvalues():
    m, X, y, lam, groups = sparse_problem()
    H, Xa, c = _dense_pieces(m, X, y, lam)
    basis = DowndateBasis(H, Xa, c)
    for idx in groups:
        H_U = (Xa[idx] * c[idx, None]).T @ Xa[idx]
        want = np.sort(np.linalg.eigvals(-np.linalg.solve(H, H_U)).real)
        assert_close(basis.spectrum(idx), want, 1e-10)


def test_newton_routes_agree():
    """newton_downdate (shared Gram matrix) equals newton_explicit (per-group solves)."""
    m, X, y, lam, groups = sparse_problem()
    H, Xa, c = _dense_pieces(m, X, y, lam)
    Xt, _, _ = m.design((X, y))
    grads = np.random.RandomState(2).normal(size=(len(groups), H.shape[0]))
    old = G.newton_explicit(m.spec, H, m.get_params_flat(), Xt, groups, grads, spectrum=True)
    new = G.newton_downdate(DowndateBasis(H, Xa, c), groups, grads, spectrum=True)
    assert_close(new["newton_dparam"], old["newton_dparam"], RTOL_TWO_PATHS)
    assert_close(new["spectrum"], old["spectrum"], 1e-10)


def test_sparse_products_equal_dense_products():
    m, X, y, lam, groups = sparse_problem()
    Xt, yt, s = m.design((X, y))
    Xs = sparse_if_sparse(Xt.numpy(), max_density=1.0)
    assert sp.issparse(Xs)
    l2 = tf.constant(lam, dtype=tf.float64)
    dense = LogisticObjective.without_groups(m.spec, Xt, yt, s, l2, groups)
    sparse = LogisticObjective.without_groups(m.spec, Xt, yt, s, l2, groups, Xa_sparse=Xs)
    Theta = tf.constant(np.random.RandomState(3).normal(size=(len(groups), m.num_params)))
    for name in ("loss", "gradient", "hessians"):
        assert_close(getattr(sparse, name)(Theta).numpy(), getattr(dense, name)(Theta).numpy(), 1e-13, what=name)
    V = np.random.RandomState(4).normal(size=(len(groups), m.num_params))
    assert_close(sparse.hvp(sparse.curvature(Theta), V), dense.hvp(dense.curvature(Theta), V), 1e-13)
    one = LogisticObjective(m.spec, Xt, yt, s, l2, Xa_sparse=Xs)
    assert_close(one.hessian_at(Theta[0]).numpy(), LogisticObjective(m.spec, Xt, yt, s, l2).hessian_at(Theta[0]).numpy(),
                 1e-13)


def test_downdate_refits_are_certified_exact_refits():
    m, X, y, lam, groups = sparse_problem()
    theta = m.get_params_flat()
    H = m.get_hessian((X, y), None, lam)
    Xt, yt, s = m.design((X, y))
    r = refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups, downdate_basis(m.spec, theta, Xt, s, H), rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    assert r.hvps.sum() > 0 and r.hessians.sum() == 0  # CG steps preconditioned by the downdates, no fresh Hessian
    resid = m.get_total_grad_loss((X, y), None, lam)
    Gi = m.get_indiv_grad_loss((X, y))
    for b, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(len(y)), idx)
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        assert_close(r.thetas[b], np.concatenate([sk.coef_[0], sk.intercept_]), 1e-8, what=f"group {b}")
        if r.first_full_step[b]:  # the first step is the exact one-step Newton change
            H_U = m.get_hessian((X[idx], y[idx]), None, 0.0)
            assert_close(r.first_steps[b], np.linalg.solve(H - H_U, Gi[idx].sum(0) - resid), 1e-10)


def test_failed_downdate_falls_back_to_a_fresh_hessian(monkeypatch):
    m, X, y, lam, groups = sparse_problem()
    theta = m.get_params_flat()
    Xt, yt, s = m.design((X, y))
    basis = downdate_basis(m.spec, theta, Xt, s, l2_reg=lam)
    want = refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups, basis, rtol=1e-12)
    init = GroupDowndates.__init__

    def broken(self, basis, grps):
        init(self, basis, grps)
        self.ok[1] = False  # as if C_U were not positive definite
    monkeypatch.setattr(GroupDowndates, "__init__", broken)
    r = refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups, basis, rtol=1e-12)
    assert r.converged.all() and r.hessians[1] >= 1 and r.hessians[0] == 0
    assert_close(r.thetas, want.thetas, 1e-9)


def test_large_binary_fit_uses_chord_steps(downdate_route):
    """The certified fit of downdate-route models (ChordNewton from the start Hessian)
    reaches the same optimum as scikit-learn."""
    m, X, y, lam, _ = sparse_problem(seed=5)
    res = m.fit((X, y), None, lam)
    assert res.converged
    sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X, y)
    assert_close(m.get_params_flat(), np.concatenate([sk.coef_[0], sk.intercept_]), 1e-8)


def test_split_groups_respects_the_budget():
    groups = [np.arange(s) for s in (5, 40, 3, 60, 2, 2)]
    n, d = 100, 20
    per = [downdate_bytes_per_group(n, d, len(g)) for g in groups]
    budget = per[1] + per[2]
    parts = split_groups(groups, n, d, budget)
    assert [len(g) for part in parts for g in part] == [len(g) for g in groups]  # order kept
    for part in parts:
        assert len(part) == 1 or sum(downdate_bytes_per_group(n, d, len(g)) for g in part) <= budget
    assert split_groups(groups, n, d, None) == [groups]


def test_bad_inputs_are_named():
    m, X, y, lam, groups = sparse_problem()
    H, Xa, c = _dense_pieces(m, X, y, lam)
    with pytest.raises(ValueError, match="X must have"):
        DowndateBasis(H, Xa[:, :-1], c)
    with pytest.raises(ValueError, match="c must be"):
        DowndateBasis(H, Xa, -c)
    with pytest.raises(ValueError, match="not positive definite"):
        DowndateBasis(-H, Xa, c)
