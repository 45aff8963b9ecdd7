"""Worst-case removal sets (influence.worst_case) against exhaustive search and scikit-learn.

Oracles: on problems of 12 to 16 training points, every subset of up to 4 points is
refitted (certified, batched) to find the exact smallest flipping set; every method's
verified set is re-fitted independently by scikit-learn at tight tolerance (its objective
is ``C sum_i l_i + ||w||^2 / 2`` with an unpenalised intercept, i.e. this project's summed
loss with ``l2_reg = 1 / C``), which must flip the target too.
"""
import itertools

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLR

from influence.group_influence import GroupInfluence
from influence.logistic_regression import LogisticRegression
from influence.worst_case import (
    METHODS,
    CoefficientSign,
    FlipSearch,
    FlipSearchError,
    LossChange,
    PredictionFlip,
    logit_vector,
    worst_case_groups,
)
from tests.conftest import RTOL_FD, RTOL_TWO_PATHS, assert_close

# Parameters of scikit-learn's refit against the engine's certified one: both solve the
# same strictly convex problem to ~1e-12 relative gradient norm; on these well-conditioned
# 3-parameter problems the optima agree far below this.
ATOL_SKLEARN_PARAMS = 1e-7
# A flip decided by a gap this close to 0 would depend on rounding: the cases avoid it.
MIN_GAP = 1e-6


# ----------------------------------------------------------------------------- problems
def two_clusters(seed, n_bulk=10):
    """A 2-feature binary problem: ``n_bulk`` Gaussian points labelled by the sign of their
    first feature, plus two mirrored clusters of mislabelled twins (label 0 at +a, label 1
    at -a), and a test point near the origin. Returns ``(X, y, x_test, l2)``."""
    rng = np.random.RandomState(seed)
    bulk = rng.randn(n_bulk, 2)
    yb = (bulk[:, 0] > 0).astype(int)
    a = rng.uniform(1, 3, size=2) * np.array([1, rng.choice([-1, 1])])
    X = np.vstack([bulk, np.repeat(a[None], 2, 0), np.repeat(-a[None], 2, 0)])
    y = np.concatenate([yb, [0, 0], [1, 1]])
    x_test = rng.randn(2) * 0.5
    l2 = float(rng.choice([0.1, 0.3, 1.0]))
    return X, y, x_test, l2


def fitted(X, y, l2, num_classes=2):
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": X.shape[1], "fit_intercept": True, "num_classes": num_classes}
    model = LogisticRegression(cfg)
    model.fit((X, y), None, l2)
    return GroupInfluence(model, (X, y), l2, hessian=model.get_hessian((X, y), None, l2),
                          inverse_hvp_method="explicit")


def exhaustive_minimum(gi, target, max_size=4):
    """``(k, sets)``: the smallest size of a flipping subset (up to ``max_size``) and all
    flipping subsets of that size, by certified refits of every subset; (-1, []) if none."""
    t = target.compile(gi)
    for k in range(1, max_size + 1):
        groups = [np.array(c) for c in itertools.combinations(range(gi.num_train), k)]
        r = gi.refit(groups, len(groups), progress=False)
        assert np.all(r.grad_norms <= r.grad_tols)
        gaps = t.gaps(t.values(gi, r.thetas))
        assert np.min(np.abs(gaps)) > MIN_GAP, "a subset sits on the flip threshold: choose another case"
        if np.any(gaps > 0):
            return k, [set(groups[i].tolist()) for i in np.flatnonzero(gaps > 0)]
    return -1, []


def sklearn_fit(X, y, keep, l2):
    sk = SkLR(C=1 / l2, solver="newton-cholesky", tol=1e-14, max_iter=500)
    return sk.fit(X[keep], y[keep])


def sklearn_gap(X, y, removed, l2, target, x_test=None, y_test=None, theta_hat_gi=None):
    """The flip gap of ``target`` (the uncompiled spec) after an independent scikit-learn refit."""
    keep = np.setdiff1d(np.arange(len(y)), np.asarray(list(removed), dtype=np.int64))
    sk = sklearn_fit(X, y, keep, l2)
    base = sklearn_fit(X, y, np.arange(len(y)), l2)
    if isinstance(target, PredictionFlip):
        x = np.asarray(target.x)[None, :]
        if sk.coef_.shape[0] == 1:
            z0, z = base.decision_function(x)[0], sk.decision_function(x)[0]
            return -np.sign(z0) * z
        z0, z = base.decision_function(x)[0], sk.decision_function(x)[0]
        c = int(np.argmax(z0))
        return max(z[k] - z[c] for k in range(len(z)) if k != c)
    if isinstance(target, CoefficientSign):
        w0, w = base.coef_[target.cls or 0, target.feature], sk.coef_[target.cls or 0, target.feature]
        return -np.sign(w0) * w
    p0 = base.predict_proba(np.atleast_2d(target.X))[np.arange(len(target.y)), target.y]
    p = sk.predict_proba(np.atleast_2d(target.X))[np.arange(len(target.y)), target.y]
    sign = 1 if target.direction == "increase" else -1
    return sign * (np.mean(-np.log(p)) - np.mean(-np.log(p0))) - target.amount


def check_against_oracles(X, y, l2, target, batch=1, max_fraction=0.5):
    """Run every method; check it against the exhaustive minimum and scikit-learn; return
    ``(result, kmin, minimal_sets)``."""
    gi = fitted(X, y, l2)
    kmin, sets = exhaustive_minimum(gi, target)
    assert kmin > 0, "the case must have a flipping set of at most 4 points"
    res = FlipSearch(gi, max_fraction, batch).run(target)
    for name, m in res.methods.items():
        assert m.max_grad_ratio <= 1, f"{name}: a refit is not certified"
        if m.verified_k < 0:
            continue
        assert m.verified_k >= kmin, f"{name} claims a flip with {m.verified_k} < the minimum {kmin} points"
        assert len(m.verified_set) == m.verified_k == len(set(m.verified_set.tolist()))
        g = sklearn_gap(X, y, m.verified_set, l2, target)
        assert g > 0, f"{name}: scikit-learn's refit without the verified set does not flip (gap {g:.3e})"
        if m.verified_k == kmin:
            assert set(m.verified_set.tolist()) in sets
    return res, kmin, sets


# ----------------------------------------------------------------------------- targets
def test_logit_vector_matches_the_models_logits():
    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3), rng.randint(0, 3, 30)
    y[:3] = [0, 1, 2]
    gi = fitted(X, y, 0.5, num_classes=3)
    x = rng.randn(3)
    z = np.array([logit_vector(gi.model, x, k) @ gi.params for k in range(3)])
    logp = np.log(gi.at_optimum().get_predictions(x[None, :])[0])
    # Softmax is invariant to a common shift: compare differences.
    assert_close(z - z[0], logp - logp[0], RTOL_TWO_PATHS, atol=1e-12, what="logit differences")
    Xb, yb = X, (y > 0).astype(int)
    gib = fitted(Xb, yb, 0.5)
    margin = gib.at_optimum().get_indiv_margin((x[None, :], np.array([1])))[0]
    assert logit_vector(gib.model, x) @ gib.params == pytest.approx(margin, rel=RTOL_TWO_PATHS)


def test_coefficient_target_is_the_sklearn_coefficient():
    X, y, _, l2 = two_clusters(8)
    gi = fitted(X, y, l2)
    t = CoefficientSign(1).compile(gi)
    sk = sklearn_fit(X, y, np.arange(len(y)), l2)
    assert t.initial[0] == pytest.approx(sk.coef_[0, 1], abs=ATOL_SKLEARN_PARAMS)
    assert t.direction == -np.sign(sk.coef_[0, 1])


def test_loss_target_gradient_against_finite_differences():
    X, y, xt, l2 = two_clusters(58)
    gi = fitted(X, y, l2)
    Xt, yt = np.vstack([xt, -xt]), np.array([1, 0])
    t = LossChange(Xt, yt, 0.1).compile(gi)
    theta = gi.params + 0.1
    g = t.gradients(gi.model, theta)[0]
    h = 1e-5
    E = np.eye(len(theta))
    fd = np.array([(t.values(gi, theta + h * e)[0, 0] - t.values(gi, theta - h * e)[0, 0]) / (2 * h) for e in E])
    assert_close(g, fd, RTOL_FD, what="mean test loss gradient")
    assert t.threshold[0] == pytest.approx(t.initial[0] + 0.1, rel=RTOL_TWO_PATHS)


# ----------------------------------------------------------------------------- exhaustive search
# (seed, adaptive reaches the minimum): constructed cases of two_clusters.
PREDICTION_CASES = [58, 148, 189]   # 8: the masking test below


@pytest.mark.parametrize("seed", PREDICTION_CASES)
def test_prediction_flip_against_exhaustive_search(seed):
    X, y, xt, l2 = two_clusters(seed)
    res, kmin, _ = check_against_oracles(X, y, l2, PredictionFlip(xt))
    assert res.methods["adaptive"].verified_k == kmin


@pytest.mark.parametrize("seed, adaptive_reaches_minimum", [(8, True), (58, False)])
def test_coefficient_sign_against_exhaustive_search(seed, adaptive_reaches_minimum):
    X, y, _, l2 = two_clusters(seed, n_bulk=12)
    res, kmin, _ = check_against_oracles(X, y, l2, CoefficientSign(0))
    # Greedy re-scoring is not optimal in general: on seed 58 its first pick is not in
    # the single point that flips the coefficient alone.
    assert (res.methods["adaptive"].verified_k == kmin) == adaptive_reaches_minimum


@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_loss_change_against_exhaustive_search(direction):
    X, y, xt, l2 = two_clusters(148, n_bulk=8)
    amount = 0.5 if direction == "increase" else 0.1
    # The test point's label follows the bulk's rule (the sign of its first feature).
    check_against_oracles(X, y, l2, LossChange(xt[None, :], np.array([int(xt[0] > 0)]), amount, direction))


def test_masking_one_shot_first_order_fails_and_adaptive_finds_the_minimum():
    """Two mirrored clusters of mislabelled twins (points 10, 11 and 12, 13): the
    first-order scores rank a twin of the first cluster among the top five, and one-shot
    first order never predicts a flip within half the training set; after removing it the
    refit still does not flip. The smallest flipping set avoids both clusters and contains
    a point the first-order scores at theta_hat rank seventh; re-scoring at each refit
    (adaptive, one point per step) finds exactly that set."""
    X, y, xt, l2 = two_clusters(8)
    target = PredictionFlip(xt)
    res, kmin, sets = check_against_oracles(X, y, l2, target)
    fo, ad = res.methods["first_order"], res.methods["adaptive"]
    assert kmin == 4
    assert fo.predicted_k == -1 and fo.verified_k > kmin
    assert {10, 11} & set(fo.order[:5].tolist())
    assert ad.verified_k == kmin and set(ad.verified_set.tolist()) in sets
    assert not ({10, 11, 12, 13} & set(ad.verified_set.tolist()))


def test_multiclass_prediction_flip_against_exhaustive_search():
    rng = np.random.RandomState(4)
    means = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    y = np.repeat(np.arange(3), 4)
    X = means[y] + rng.randn(12, 2)
    xt = 0.45 * means[0]
    gi = fitted(X, y, 0.5, num_classes=3)
    target = PredictionFlip(xt)
    kmin, _ = exhaustive_minimum(gi, target, max_size=3)
    assert kmin > 0
    res = FlipSearch(gi, 0.5, 1).run(target)
    t = target.compile(gi)
    for name, m in res.methods.items():
        assert m.verified_k >= kmin, name
        assert m.component.startswith("class ")
        if len(np.unique(np.delete(y, m.verified_set))) == 3:
            assert sklearn_gap(X, y, m.verified_set, 0.5, target) > 0, name
        else:
            # The set removes a whole class, which scikit-learn cannot fit (its class has
            # no data); check by a cold certified fit with the set's weights at 0 instead.
            w = np.ones(len(y))
            w[m.verified_set] = 0
            cold = fitted(X, y, 0.5, num_classes=3).model
            cold.fit((X, y), w, 0.5)
            assert t.gaps(t.values(gi, cold.get_params_flat()[None, :]))[0] > 0, name
    assert res.methods["adaptive"].verified_k == kmin


def test_prediction_paths_are_consistent():
    """Each method's recorded path: the actual change at the verified k crosses the
    threshold, and at verified k - 1 (when refitted) it does not."""
    X, y, xt, l2 = two_clusters(58)
    res = worst_case_groups(X, y, [PredictionFlip(xt)], l2, max_fraction=0.5, batch=1)[0]
    for name, m in res.methods.items():
        at = dict(zip(m.path_k.tolist(), m.path_actual.tolist()))
        assert at[m.verified_k] > res.threshold, name
        if m.verified_k - 1 in at:
            assert at[m.verified_k - 1] <= res.threshold, name
        assert m.outcome in ("exact", "overshoot", "undershoot", "no_prediction")


def test_cold_refits_agree_with_warm_starts():
    """The second refit path (every probe refitted from theta_hat, solves at the bases by
    CG: what wide binary models use) gives the same verified sets as the warm starts."""
    X, y, xt, l2 = two_clusters(58)
    warm = FlipSearch(fitted(X, y, l2), 0.5, 1)
    cold = FlipSearch(fitted(X, y, l2), 0.5, 1)
    cold.warm = False
    a, b = warm.run(PredictionFlip(xt)), cold.run(PredictionFlip(xt))
    for m in METHODS:
        assert a.methods[m].verified_k == b.methods[m].verified_k, m
        assert np.array_equal(a.methods[m].verified_set, b.methods[m].verified_set), m
        assert b.methods[m].max_grad_ratio <= 1


def test_worst_case_groups_agrees_with_flip_search():
    X, y, xt, l2 = two_clusters(189)
    a = worst_case_groups(X, y, [PredictionFlip(xt)], l2, max_fraction=0.5, batch=1)[0]
    b = FlipSearch(fitted(X, y, l2), 0.5, 1).run(PredictionFlip(xt))
    for m in METHODS:
        assert a.methods[m].verified_k == b.methods[m].verified_k
        assert np.array_equal(np.sort(a.methods[m].verified_set), np.sort(b.methods[m].verified_set))


# ----------------------------------------------------------------------------- bad input
def test_bad_settings_raise_one_clear_error():
    X, y, xt, l2 = two_clusters(8)
    gi = fitted(X, y, l2)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(FlipSearchError, match="max_fraction must be in"):
            FlipSearch(gi, bad)
    with pytest.raises(FlipSearchError, match="feature must be an integer"):
        CoefficientSign(2).compile(gi)
    with pytest.raises(FlipSearchError, match="methods must be among"):
        FlipSearch(gi).run(PredictionFlip(xt), ["bogus"])
    with pytest.raises(FlipSearchError, match="amount must be"):
        LossChange(xt[None, :], np.array([1]), -1.0).compile(gi)
    with pytest.raises(FlipSearchError, match="x must be"):
        PredictionFlip(np.zeros(3)).compile(gi)
