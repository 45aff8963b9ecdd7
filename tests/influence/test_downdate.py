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
from influence.newton import DowndateChord, ProblemQueue
from influence.objective import LogisticObjective
from influence.refit import downdate_basis, refit_chunk_downdate
from tests.conftest import RTOL_TWO_PATHS, assert_close
from tests.influence.problems import assert_slots_stay_full, refit_in_one_batch_and_in_slots


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


@pytest.mark.parametrize("precise", [True, False])
def test_downdate_rows_on_threads_equal_them_one_at_a_time(monkeypatch, precise):
    # GroupDowndates.solve computes its rows' corrections on one thread per core: the same
    # calls as a plain loop (bitwise equal, same machine), and the dense oracle
    # (H - H_U)^{-1} r (float64 rtol RTOL_TWO_PATHS; the float32 products of precise=False
    # leave about 1e-6 relative).
    m, X, y, lam, groups = sparse_problem()
    H, Xa, c = _dense_pieces(m, X, y, lam)
    basis = DowndateBasis(H, sp.csr_matrix(Xa), c)
    down = GroupDowndates(basis, groups + [np.array([], dtype=np.int64)])
    rows = np.array([4, 0, 2, 5, 1, 3, 4, 2], dtype=np.int64)  # repeated, and the empty group 5
    R = np.random.RandomState(2).normal(size=(len(rows), H.shape[0]))
    threads = []
    real_map = dd.per_core_map

    def watched(fn, items, one_blas=True):
        threads.append(True)
        return real_map(fn, items, one_blas)
    monkeypatch.setattr(dd, "per_core_map", watched)
    threaded = down.solve(R, rows, precise)
    assert threads, "the rows did not go through the thread pool"
    monkeypatch.setattr(dd, "per_core_map", lambda fn, items, one_blas=True: [fn(x) for x in items])
    looped = down.solve(R, rows, precise)
    assert threaded.tobytes() == looped.tobytes()
    for k, b in enumerate(rows):
        idx = down.idx[b]
        H_U = (Xa[idx] * c[idx, None]).T @ Xa[idx]
        assert_close(threaded[k], np.linalg.solve(H - H_U, R[k]), RTOL_TWO_PATHS if precise else 1e-5,
                     what=f"row {k} (group {b})")


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
    load = GroupDowndates.load

    def broken(self, grps):
        load(self, grps)
        for b in grps:  # group 1's C_U as if it were not positive definite
            if np.array_equal(self.idx[b], groups[1]):
                self.ok[b] = False
    monkeypatch.setattr(GroupDowndates, "load", broken)
    r = refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups, basis, rtol=1e-12)
    assert r.converged.all() and r.hessians[1] >= 1 and r.hessians[0] == 0
    assert_close(r.thetas, want.thetas, 1e-9)


@pytest.mark.parametrize("sparse", [True, False])
def test_large_binary_fit_reaches_sklearns_optimum(downdate_route, sparse):
    """The certified fit of downdate-route models (sparse design: Newton-CG with the
    diagonal preconditioner; dense: ChordNewton from the start Hessian) reaches the same
    optimum as scikit-learn."""
    m, X, y, lam, _ = sparse_problem(seed=5, density=0.03 if sparse else 0.25)
    Xt, _, _ = m.design((X, y))
    assert sp.issparse(sparse_if_sparse(Xt.numpy())) == sparse  # the design the fit takes
    res = m.fit((X, y), None, lam)
    assert res.converged
    sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X, y)
    assert_close(m.get_params_flat(), np.concatenate([sk.coef_[0], sk.intercept_]), 1e-8)


def _queue(costs, budget):
    costs = np.asarray(costs)
    return ProblemQueue(len(costs), None, None, np.zeros(len(costs)), np.ones(len(costs)), costs, budget)


def test_queue_admits_first_fit_within_the_budget():
    n, d = 100, 20
    sizes = np.array([60, 40, 3, 60, 2, 2])
    costs = [downdate_bytes_per_group(n, d, s) for s in sizes]
    budget = costs[1] + costs[2] + costs[4]
    q = _queue(costs, budget)
    none = np.zeros(0, dtype=np.int64)
    # 40 + 3 + 2 fit; the 60s do not, the second 2 would exceed: first fit in order.
    assert q.admits(none, np.arange(6), 6).tolist() == [1, 2, 4]
    # Nothing running and nothing fits: the first waiting problem runs alone.
    assert q.admits(none, np.array([0, 3]), 2).tolist() == [0]
    assert q.admits(np.array([1]), np.array([3, 2, 4, 5]), 1).tolist() == [2]  # one free slot
    assert q.admits(np.array([1, 2, 4]), np.array([3, 5]), 3).tolist() == []
    assert _queue(costs, None).admits(np.array([0]), np.arange(1, 6), 2).tolist() == [1, 2]


@pytest.mark.parametrize("slots, budget_groups", [(2, None), (3, 2)])
def test_continuous_batching_equals_one_batch_and_refills_slots(slots, budget_groups):
    """Refits with fewer slots than groups (each freed slot refilled from the queue; with a
    memory budget, about ``budget_groups`` of the largest groups at a time) equal the refits
    of all groups in one batch, and the batch stays full while groups wait."""
    m, X, y, lam, groups = sparse_problem()
    groups = groups + [np.arange(k, 90, 7) for k in range(3)]  # 8 groups
    theta = m.get_params_flat()
    Xt, yt, s = m.design((X, y))
    basis = downdate_basis(m.spec, theta, Xt, s, l2_reg=lam)
    budget = None if budget_groups is None else budget_groups * downdate_bytes_per_group(90, m.num_params, 40)
    whole, r = refit_in_one_batch_and_in_slots(
        lambda *a, **kw: refit_chunk_downdate(*a, basis, **kw), (m.spec, theta, Xt, yt, s, lam), groups, slots,
        ("hvps", "hessians"), pending=True, max_memory=budget)
    assert whole.occupancy[0] == len(groups)
    assert_close(r.first_steps, whole.first_steps, RTOL_TWO_PATHS)
    if budget is None:  # while groups waited, every slot was busy
        assert_slots_stay_full(r, slots)
        # No more loop iterations than refitting chunk by chunk.
        chunked = sum(len(refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups[a:a + slots], basis,
                                               rtol=1e-12).occupancy) for a in range(0, len(groups), slots))
        assert len(r.occupancy) <= chunked


def test_bad_inputs_are_named():
    m, X, y, lam, groups = sparse_problem()
    H, Xa, c = _dense_pieces(m, X, y, lam)
    with pytest.raises(ValueError, match="X must have"):
        DowndateBasis(H, Xa[:, :-1], c)
    with pytest.raises(ValueError, match="c must be"):
        DowndateBasis(H, Xa, -c)
    with pytest.raises(ValueError, match="not positive definite"):
        DowndateBasis(-H, Xa, c)


def test_hessian_diagonals_equal_the_dense_hessians_diagonals():
    m, X, y, lam, groups = sparse_problem()
    Xt, yt, s = m.design((X, y))
    Xs = sparse_if_sparse(Xt.numpy(), max_density=1.0)
    l2 = tf.constant(lam, dtype=tf.float64)
    Theta = tf.constant(np.random.RandomState(3).normal(size=(len(groups), m.num_params)))
    for Xa_sparse in (Xs, None):
        obj = LogisticObjective.without_groups(m.spec, Xt, yt, s, l2, groups, Xa_sparse=Xa_sparse)
        want = np.diagonal(obj.hessians(Theta, method="matmul").numpy(), axis1=1, axis2=2)
        assert_close(obj.hessian_diagonals(Theta), want, RTOL_TWO_PATHS)


def test_resumed_cg_runs_give_the_refits_of_cg_runs_held_to_the_slowest(monkeypatch):
    """DowndateChord's CG-mode problems whose CG run is unfinished when most of the call's
    rows are done wait for the next loop iteration (``resume_cg``): the same directions,
    hence the same iterations, products and certified optima as CG runs that all finish
    within their loop iteration, and the optima are scikit-learn's."""
    m, X, y, lam, groups = sparse_problem(seed=3)
    groups = groups + [np.arange(k, 90, 5) for k in range(4)]
    theta = m.get_params_flat()
    Xt, yt, s = m.design((X, y))
    basis = downdate_basis(m.spec, theta, Xt, s, l2_reg=lam)
    # reuse_factor 0: every problem takes CG steps after its first chord step.
    common = dict(rtol=1e-12, reuse_factor=0.0, slots=5)
    products = []  # rows of every Hessian-vector product: a resumed run does no CG iteration twice
    hvp = LogisticObjective.hvp
    monkeypatch.setattr(LogisticObjective, "hvp", lambda self, curv, V, rows=None: (
        products.append(len(V)), hvp(self, curv, V, rows))[1])
    resumed = refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups, basis, **common)
    assert sum(products) == resumed.hvps.sum()
    monkeypatch.setattr(DowndateChord, "resume_cg", False)
    held = refit_chunk_downdate(m.spec, theta, Xt, yt, s, lam, groups, basis, **common)
    assert resumed.converged.all() and held.converged.all() and (held.hvps > 0).all()
    for name in ("iterations", "hvps", "hessians"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(held, name), err_msg=name)
    assert_close(resumed.thetas, held.thetas, RTOL_TWO_PATHS)
    # Some problem waited: busy in loop iterations without a step.
    assert resumed.occupancy.sum() > held.occupancy.sum()
    for g, th in zip(groups, resumed.thetas):
        keep = np.setdiff1d(np.arange(len(y)), g)
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        assert_close(th, np.concatenate([sk.coef_[0], sk.intercept_]), 1e-8)


