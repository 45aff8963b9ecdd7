"""The refits' step rule when a full step overshoots: :func:`influence.newton.line_minimum`
against an independent loss (``reference_loss``), its finite differences and a bounded
scalar minimiser, and :func:`influence.newton.certified_step` around it."""
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from influence.newton import certified_step, line_minimum
from influence.objective import LogisticObjective, ModelSpec, augment
from tests.conftest import RTOL_FD, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import reference_loss

CASES = [(2, True), (3, True), (4, False)]
C2 = 0.1  # line_minimum's default curvature tolerance


def overshooting(num_classes, fit_intercept, scale=8.0, n=60, D=5, B=3, seed=0):
    """An objective of B weighted problems, their points and steps ``scale`` times the
    gradient: descent directions whose full step goes far past the minimum along them."""
    rng = np.random.RandomState(seed)
    spec = ModelSpec(D, num_classes, fit_intercept)
    X = rng.poisson(2.0, (n, D)).astype(np.float64)  # count features, as spam's
    Xa = augment(tf.constant(X), spec)
    y = rng.randint(0, num_classes, n)
    S = rng.uniform(0.0, 2.0, (n, B))
    l2 = 0.3
    obj = LogisticObjective(spec, Xa, y, tf.constant(S), l2)
    Theta = tf.constant(rng.normal(0, 0.3, (B, spec.num_params)))
    G = obj.gradient(Theta)
    step = scale * G
    return spec, obj, Theta, G, step, (Xa.numpy(), y, S, l2)


def phi(t, b, Theta, step, data, spec):
    """The independent loss of problem b along its step: f(Theta[b] - t step[b])."""
    Xa, y, S, l2 = data
    return float(reference_loss(Theta.numpy()[b] - t * step.numpy()[b], Xa, y, S[:, b], l2, spec))


def dphi(t, b, Theta, step, data, spec, h=1e-6):
    return (phi(t + h, b, Theta, step, data, spec) - phi(t - h, b, Theta, step, data, spec)) / (2 * h)


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_line_minimum_stops_near_the_minimum_along_the_step(num_classes, fit_intercept):
    spec, obj, Theta, G, step, data = overshooting(num_classes, fit_intercept)
    rows = np.arange(obj.B)
    f0 = obj.loss(Theta).numpy()
    slope = tf.reduce_sum(G * step, axis=1).numpy()
    d1 = -tf.reduce_sum(obj.gradient(Theta - step) * step, axis=1).numpy()
    assert (d1 > 0).all()  # the full step is past the minimum: a bracket
    t, ok = line_minimum(obj, Theta, step, rows, f0, slope, d1)
    assert ok.all() and ((0 < t) & (t < 1)).all()
    for b in rows:
        p0, pt = phi(0.0, b, Theta, step, data, spec), phi(t[b], b, Theta, step, data, spec)
        assert pt <= p0 - 1e-4 * t[b] * slope[b]  # Armijo
        # |phi'(t)| <= c2 slope, the derivative by finite differences of the independent loss.
        assert abs(dphi(t[b], b, Theta, step, data, spec)) <= C2 * slope[b] * (1 + RTOL_FD)
        # Convexity: phi(t) - min phi <= |phi'(t)| |t - t*| <= c2 slope.
        best = scipy.optimize.minimize_scalar(lambda u, b=b: phi(u, b, Theta, step, data, spec),
                                              bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-12})
        assert pt - best.fun <= C2 * slope[b]
        assert pt < phi(0.5, b, Theta, step, data, spec)  # better than the first halving here


def test_line_minimum_without_a_bracket_halves_from_the_full_step():
    """A problem whose phi'(1) is given as <= 0 (no bracket: rounding) gets the largest
    t = 2^-k that passes the Armijo test, found here by trying every k."""
    spec, obj, Theta, G, step, data = overshooting(2, True)
    rows = np.array([0, 2])
    f0 = obj.loss(Theta).numpy()[rows]
    slope = tf.reduce_sum(G * step, axis=1).numpy()[rows]
    t, ok = line_minimum(obj, Theta, step, rows, f0, slope, np.array([-1.0, -1.0]))
    assert ok.all()
    for k, b in enumerate(rows):
        p0 = phi(0.0, b, Theta, step, data, spec)
        want = next(2.0 ** -j for j in range(1, 60)
                    if phi(2.0 ** -j, b, Theta, step, data, spec) <= p0 - 1e-4 * 2.0 ** -j * slope[k])
        assert t[k] == want


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_certified_step_keeps_good_full_steps_and_searches_the_others(num_classes, fit_intercept):
    spec, obj, Theta, G, step, data = overshooting(num_classes, fit_intercept)
    # Problem 0 gets a short gradient step (its full step passes the Armijo test and is
    # kept); 1 and 2 overshoot.
    step = tf.tensor_scatter_nd_update(step, [[0]], 1e-3 * G[:1])
    active = np.array([True, True, True])
    gnorm = tf.norm(G, axis=1).numpy()
    cand, G_c, n_c, good, t = certified_step(obj, Theta, G, gnorm, step, active)
    assert good.all()
    assert t[0] == 1.0 and ((0 < t[1:]) & (t[1:] < 1)).all()
    assert_close(cand.numpy(), (Theta - t[:, None] * step).numpy(), RTOL_TWO_PATHS, what="candidates")
    assert_close(G_c.numpy(), obj.gradient(cand).numpy(), RTOL_TWO_PATHS, what="their gradients")
    assert_close(n_c, np.linalg.norm(G_c.numpy(), axis=1), RTOL_TWO_PATHS, what="their norms")
    slope = tf.reduce_sum(G * step, axis=1).numpy()
    for b in (1, 2):
        assert abs(dphi(t[b], b, Theta, step, data, spec)) <= C2 * slope[b] * (1 + RTOL_FD)


def test_certified_step_searches_a_full_step_that_passes_armijo_far_past_the_minimum():
    """A step whose minimum along it is near t = 0.6: the full step lowers the loss enough
    for the Armijo test but goes well past that minimum (phi'(1) > c2 slope), so the
    strong Wolfe conditions send it to the search."""
    spec, obj, Theta, G, step, data = overshooting(2, True)
    best = [scipy.optimize.minimize_scalar(lambda u, b=b: phi(u, b, Theta, step, data, spec), bounds=(0.0, 1.0),
                                           method="bounded", options={"xatol": 1e-12}).x for b in range(obj.B)]
    step = tf.constant(np.array(best)[:, None] / 0.6) * step
    slope = tf.reduce_sum(G * step, axis=1).numpy()
    f0 = obj.loss(Theta).numpy()
    f1 = obj.loss(Theta - step).numpy()
    d1 = -tf.reduce_sum(obj.gradient(Theta - step) * step, axis=1).numpy()
    assert (f1 <= f0 - 1e-4 * slope).all() and (d1 > C2 * slope).all()
    gnorm = tf.norm(G, axis=1).numpy()
    n1 = tf.norm(obj.gradient(Theta - step), axis=1).numpy()
    assert (n1 > 0.9 * gnorm).all()  # not kept for cutting the gradient norm
    cand, G_c, n_c, good, t = certified_step(obj, Theta, G, gnorm, step, np.ones(obj.B, dtype=bool))
    assert good.all() and (t < 1).all()
    for b in range(obj.B):
        assert abs(dphi(t[b], b, Theta, step, data, spec)) <= C2 * slope[b] * (1 + RTOL_FD)
