"""The estimator ladder (influence/estimators.py) against independent oracles, binary and multinomial.

Oracles: the one-step Newton change of the group-influence API (rescaled = Newton for one
point); central finite differences of the removal path computed by certified fits (the
exact second-order term); dense NumPy matrices built from the per-example formulas (Basu);
tf.GradientTape (the third-derivative contraction); certified refits (k-step Newton and
the first-order agreement of every estimator as the group shrinks).
"""
import numpy as np
import pytest
import tensorflow as tf

from influence import downdate as dd, estimators as est, newton as N
from influence.group_influence import GroupInfluence
from influence.logistic_regression import LogisticRegression
from tests.conftest import RTOL_AUTODIFF, RTOL_CG, RTOL_LEVERAGE, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import reference_loss

# Central second differences of certified fits (rtol 1e-14) with step h = 1e-3: the
# truncation error is h^2 theta''''/12 ~ 1e-7 relative on these problems and the rounding
# error ~ (fit accuracy) / h^2 ~ 1e-8; 1e-5 leaves a margin while the third-derivative term
# (20-60 % of theta'' here) is three orders of magnitude above it.
FD_STEP = 1e-3
RTOL_FD_PATH = 1e-5


def make_gi(num_classes, n=50, D=4, seed=0, lam=0.5, weights=False, fit_intercept=True):
    rng = np.random.RandomState(seed)
    X = rng.normal(0, 1, (n, D))
    if num_classes == 2:
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ rng.normal(0, 1, D) + 0.3)))).astype(np.int64)
    else:
        y = np.argmax(X @ rng.normal(0, 1, (D, num_classes)) + rng.gumbel(size=(n, num_classes)), axis=1)
    s = rng.uniform(0.5, 2.0, n) if weights else None
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": fit_intercept, "num_classes": num_classes}
    m = LogisticRegression(cfg)
    m.fit((X, y), s, lam)
    H = m.get_hessian((X, y), s, lam)
    return GroupInfluence(m, (X, y), lam, sample_weights=s, hessian=H, inverse_hvp_method="explicit"), rng


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "multinomial"])
def small(request):
    gi, rng = make_gi(request.param)
    groups = [np.sort(rng.choice(gi.num_train, k, replace=False)) for k in (3, 8, 15)]
    return gi, groups


def dense_oracle(gi):
    """Per-example gradients (n, d) and Hessians (n, d, d) from the formulas, and H (d, d)."""
    spec = gi.spec
    X, y = gi.train
    Xa = np.hstack([X, np.ones((len(X), 1))])
    theta = gi.params
    s = np.ones(len(y)) if gi.sample_weights is None else gi.sample_weights
    Kr, E = spec.num_rows, spec.ext_dim
    inv = spec.ext_inverse_permutation()
    T = theta[inv].reshape(Kr, E)
    Z = Xa @ T.T
    if spec.binary:
        p = 1 / (1 + np.exp(-Z[:, 0]))
        r, A = (p - y)[:, None], (p * (1 - p))[:, None, None]
    else:
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        r = P - np.eye(Kr)[y]
        A = P[:, :, None] * np.eye(Kr) - P[:, :, None] * P[:, None, :]
    perm = spec.ext_permutation()
    G = np.einsum("nk,ne->nke", r, Xa).reshape(len(y), -1)[:, perm]
    Hs = np.einsum("nkl,ne,nf->nkelf", A, Xa, Xa).reshape(len(y), Kr * E, Kr * E)[:, perm][:, :, perm]
    H = np.einsum("n,nij->ij", s, Hs) + float(gi.l2_reg) * np.diag(spec.weight_mask())
    if spec.has_gauge:  # the flat direction of softmax with free biases (ModelSpec.has_gauge)
        u = spec.gauge_vector()
        H = H + np.outer(u, u)
    return s[:, None] * G, s[:, None, None] * Hs, H


# ----------------------------------------------------------------------------- rescaled
@pytest.mark.parametrize("weights, fit_intercept", [(False, True), (True, True), (False, False)],
                         ids=["unit", "weighted", "no-intercept"])
@pytest.mark.parametrize("num_classes", [2, 3], ids=["binary", "multinomial"])
def test_rescaled_equals_one_step_newton_for_single_points(num_classes, weights, fit_intercept):
    gi, _ = make_gi(num_classes, weights=weights, fit_intercept=fit_intercept)
    singles = [np.array([i]) for i in range(gi.num_train)]
    assert_close(est.rescaled(gi, singles), est.newton(gi, singles), RTOL_LEVERAGE, what="rescaled vs newton")


def test_rescaled_binary_is_first_order_over_one_minus_leverage():
    gi, _ = make_gi(2)
    G, Hs, H = dense_oracle(gi)
    Hinv = np.linalg.inv(H)
    lev = np.einsum("nij,ji->n", Hs, Hinv)           # tr(H_i H^-1) = c_i x_i^T H^-1 x_i (rank one)
    groups = [np.array([0, 3, 7]), np.arange(10, 30)]
    want = np.array([sum(Hinv @ G[i] / (1 - lev[i]) for i in g) for g in groups])
    assert_close(est.rescaled(gi, groups), want, RTOL_TWO_PATHS, what="rescaled")
    W, L = est.point_leverage_solves(gi)
    assert_close(L[:, 0, 0], lev, RTOL_TWO_PATHS, what="leverage")


# ----------------------------------------------------------------------------- Basu
@pytest.mark.parametrize("weights", [False, True], ids=["unit", "weighted"])
@pytest.mark.parametrize("num_classes", [2, 3], ids=["binary", "multinomial"])
def test_basu_matches_dense_matrices(num_classes, weights):
    gi, rng = make_gi(num_classes, weights=weights)
    groups = [np.sort(rng.choice(gi.num_train, k, replace=False)) for k in (1, 4, 12)]
    G, Hs, H = dense_oracle(gi)
    s = np.ones(gi.num_train) if gi.sample_weights is None else gi.sample_weights
    want = []
    for g in groups:
        gU, HU = G[g].sum(0), Hs[g].sum(0)
        p = s[g].sum() / s.sum()
        first = np.linalg.solve(H, gU)
        want.append(((1 - 2 * p) * first + np.linalg.solve(H, HU @ first)) / (1 - p) ** 2)
    assert_close(est.second_order_basu(gi, groups), np.array(want), RTOL_TWO_PATHS, what="basu")


def test_basu_p_factors_matter():
    # The same formula with p = 0 (no 1 - p factors) must differ: the test above sees p.
    gi, rng = make_gi(2)
    g = [np.arange(10)]
    G, Hs, H = dense_oracle(gi)
    first = np.linalg.solve(H, G[g[0]].sum(0))
    no_p = first + np.linalg.solve(H, Hs[g[0]].sum(0) @ first)
    assert np.abs(est.second_order_basu(gi, g)[0] - no_p).max() > 1e3 * RTOL_TWO_PATHS * np.abs(no_p).max()


# ----------------------------------------------------------------------------- exact second order
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("num_classes", [2, 3], ids=["binary", "multinomial"])
def test_third_derivative_contraction_matches_autodiff(num_classes, fit_intercept):
    gi, rng = make_gi(num_classes, weights=True, fit_intercept=fit_intercept)
    spec = gi.spec
    Xa, y, s = est.train_design(gi)
    V = rng.normal(0, 1, (3, spec.num_params))
    got = est.third_derivative_contraction(spec, gi.params, Xa, s, V)
    theta = tf.constant(gi.params)
    for b in range(3):
        v = tf.constant(V[b])
        with tf.GradientTape() as t3:
            t3.watch(theta)
            with tf.GradientTape() as t2:
                t2.watch(theta)
                with tf.GradientTape() as t1:
                    t1.watch(theta)
                    f = reference_loss(theta, Xa, y, s, 0.0, spec)
                gv = tf.reduce_sum(t1.gradient(f, theta) * v)
            vhv = tf.reduce_sum(t2.gradient(gv, theta) * v)
        assert_close(got[b], t3.gradient(vhv, theta).numpy(), RTOL_AUTODIFF, what=f"T[v, v] row {b}")


def test_second_order_terms_match_finite_differences_of_the_removal_path(small):
    gi, groups = small
    n = gi.num_train
    W = []
    for g in groups:
        for eps in (FD_STEP, 0.0, -FD_STEP):
            w = np.ones(n)
            w[g] = 1.0 - eps
            W.append(w)
    T = est.weighted_refit(gi, np.array(W).T).reshape(len(groups), 3, -1)
    fd1 = (T[:, 0] - T[:, 2]) / (2 * FD_STEP)
    fd2 = (T[:, 0] - 2 * T[:, 1] + T[:, 2]) / FD_STEP ** 2
    first = est.first_order(gi, groups)
    d2 = est.path_second_derivative(gi, groups)
    assert_close(first, fd1, RTOL_FD_PATH, what="theta'(0)")
    assert_close(d2, fd2, RTOL_FD_PATH, what="theta''(0)")
    assert_close(est.second_order_exact(gi, groups), first + 0.5 * d2, RTOL_TWO_PATHS,
                 what="exact = theta' + theta''/2")
    # Without the third-derivative term the second derivative is far outside the tolerance.
    Xa, _, s = est.train_design(gi)
    third = gi.inverse_hvp(est.third_derivative_contraction(gi.spec, gi.params, Xa, s, first).T).T
    assert np.abs(third).max() > 1e3 * RTOL_FD_PATH * np.abs(fd2).max()


# ----------------------------------------------------------------------------- k-step Newton
def test_k_step_newton_converges_quadratically_to_the_actual_effect(small):
    gi, groups = small
    actual, cert = est.actual(gi, groups)
    assert cert.converged.all()
    steps = est.newton_steps(gi, groups, (1, 2, 3))
    assert_close(steps[1], est.newton(gi, groups), 1e-9, what="first iterate = newton")  # up to grad L(theta_hat)
    e = np.array([np.linalg.norm(steps[k] - actual, axis=1) for k in (1, 2, 3)])   # (3, S)
    scale = np.linalg.norm(actual, axis=1)
    assert np.all(e[1] < e[0]) and np.all(e[2] < e[1])
    c1 = e[1] / e[0] ** 2
    for s in range(len(groups)):
        if e[2, s] > 1e-9 * scale[s]:      # above the refit's accuracy: the rate is measurable
            assert e[2, s] / e[1, s] ** 2 <= 10 * c1[s], "k-step Newton is not converging quadratically"


# ----------------------------------------------------------------------------- first-order agreement
@pytest.mark.parametrize("num_classes", [2, 3], ids=["binary", "multinomial"])
def test_all_estimators_agree_to_first_order_as_the_group_shrinks(num_classes):
    # Nested random groups from 16 % of the data down to one point. Every estimator's error
    # is of second order in the change, so error / (first-order size) shrinks with the
    # group, down to the floor of removing one whole point (its leverage, O(d / n)): an
    # estimator with a wrong first-order term keeps a ratio of order one.
    gi, rng = make_gi(num_classes, n=800, seed=1, lam=1.0)
    perm = rng.permutation(gi.num_train)
    groups = [np.sort(perm[:k]) for k in (128, 64, 32, 16, 8, 4, 2, 1)]
    actual, _ = est.actual(gi, groups)
    first = est.first_order(gi, groups)
    D = {"first_order": first, "newton": est.newton(gi, groups), "rescaled": est.rescaled(gi, groups),
         "second_order_basu": est.second_order_basu(gi, groups, first=first),
         "second_order_exact": est.second_order_exact(gi, groups, first=first)}
    D.update({f"newton_{k}": v for k, v in est.newton_steps(gi, groups, (2, 3)).items()})
    size = np.linalg.norm(first, axis=1)
    for name, Dn in D.items():
        ratio = np.linalg.norm(Dn - actual, axis=1) / size
        assert ratio[-1] <= ratio[0] / 3 + 1e-9 and ratio[-1] < 0.05, f"{name}: error / first-order size {ratio}"
    wrong = np.linalg.norm(1.1 * first - actual, axis=1) / size   # the test can fail
    assert not (wrong[-1] <= wrong[0] / 3 and wrong[-1] < 0.05)


def test_bad_input_is_rejected(small):
    gi, groups = small
    with pytest.raises(ValueError, match="gi must be"):
        est.first_order("model", groups)
    with pytest.raises(ValueError, match="steps must be positive"):
        est.newton_steps(gi, groups, (0, 2))
    with pytest.raises(ValueError, match="indices must lie"):
        est.rescaled(gi, [np.array([gi.num_train])])
    with pytest.raises(ValueError, match="p = |U|/|S| < 1"):
        est.second_order_basu(gi, [np.arange(gi.num_train)])


def test_newton_steps_continue_from_given_iterates(small):
    gi, groups = small
    two = est.newton_steps(gi, groups, (1, 3))
    more = est.newton_steps(gi, groups, (2,), start=two[1])[2]
    assert_close(more, two[3], RTOL_TWO_PATHS, what="1 + 2 steps vs 3 steps")


def test_newton_steps_by_cg_equal_the_explicit_ones(small):
    gi, groups = small
    explicit = est.newton_steps(gi, groups, (1, 2))
    cg = est.newton_steps(gi, groups, (1, 2), method="cg")
    for k in (1, 2):
        assert_close(cg[k], explicit[k], RTOL_CG, what=f"newton_{k} by CG")
    with pytest.raises(ValueError, match="method must be one of"):
        est.newton_steps(gi, groups, (1,), method="lu")


def test_newton_steps_by_cg_on_the_downdate_route_are_preconditioned_by_each_groups_chord(monkeypatch):
    """Models that refit by downdates (here a small binary one, by lowering the threshold)
    precondition CG with each group's own H - H_U at theta_hat: the first step's system is
    that matrix, so its CG takes one or two iterations per group; the steps equal the
    explicit ones."""
    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1)
    gi, rng = make_gi(2, n=80, D=6, weights=True)
    groups = [np.sort(rng.choice(gi.num_train, k, replace=False)) for k in (3, 12, 30)]
    explicit = est.newton_steps(gi, groups, (1, 3))
    iterations = []
    real = N.preconditioned_cg_rows

    def spy(matvec, B, precond, rtol, maxiter):
        assert isinstance(precond, N.ChordSolvePreconditioner)
        res = real(matvec, B, precond, rtol, maxiter)
        iterations.append(res.iterations.copy())
        return res

    monkeypatch.setattr(N, "preconditioned_cg_rows", spy)
    cg = est.newton_steps(gi, groups, (1, 3), method="cg")
    for k in (1, 3):
        assert_close(cg[k], explicit[k], RTOL_CG, what=f"newton_{k} by CG with the chord preconditioners")
    assert iterations[0].max() <= 2 and len(iterations[0]) == len(groups)
    # Later steps have Hessians away from theta_hat, the chords still close to them.
    assert max(i.max() for i in iterations) <= 10


def test_a_restricted_chord_preconditioner_solves_for_its_own_problems():
    """ChordSolvePreconditioner.restricted(rows): row k of a call is problem rows[k] of the
    whole batch (what NewtonCG hands CG when some problems have stopped)."""
    seen = []

    def solve(R, problems, float32):
        seen.append(problems.copy())
        return R * (1.0 + problems[:, None])

    whole = N.ChordSolvePreconditioner(solve, np.array([10, 11, 12, 13]), False)
    part = whole.restricted(np.array([1, 3]))
    R = np.ones((2, 3))
    assert_close(part(R, np.array([0, 1])), np.array([[12.0] * 3, [14.0] * 3]), RTOL_TWO_PATHS, what="solves")
    assert list(seen[-1]) == [11, 13]
    shared = N.DiagonalPreconditioner.__new__(N.DiagonalPreconditioner)
    assert shared.restricted(np.array([0])) is shared
