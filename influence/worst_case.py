"""Worst-case groups: how few training points must be removed to flip a result?

The paper measures how well influence functions predict the effect of removing a *given*
group. This module answers the inverse question for logistic regression: which small set
of training points, if removed, flips a conclusion, and how small can it be? Every answer
is **verified** by certified refits (:meth:`influence.group_influence.GroupInfluence.refit`);
the estimators only propose candidate sets.

Objective and conventions (docs/design.md, 'Objective and conventions'): the summed loss
``L(theta) = sum_i s_i l_i(theta) + (l2_reg / 2) ||W||^2`` (weights only; the intercept is
not regularised), ``theta_hat`` its optimum, ``H`` its Hessian there; removing a set U sets
``s_i = 0`` on U, and an effect is the change caused by the removal.

Targets (:class:`PredictionFlip`, :class:`CoefficientSign`, :class:`LossChange`) are
compiled against a fitted model into a :class:`Target`: ``m`` scalar components
``v_j(theta)``, thresholds ``t_j`` and a direction ``delta`` (+1 or -1). Its **flip gap** is
``gap(theta) = max_j delta (v_j(theta) - t_j)``; the conclusion has flipped when
``gap > 0``, and ``gap(theta_hat) < 0``. Components:

* a test point's prediction: binary, the logit ``w.x + b`` (threshold 0, delta = minus its
  sign at ``theta_hat``); multiclass, ``z_k - z_c`` for every class k other than the
  predicted class c (threshold 0, delta +1: any other class wins);
* a coefficient ``W[class, feature]`` (threshold 0, delta = minus its sign);
* the mean loss of some test points (one point: its loss), threshold
  ``v(theta_hat) + delta * amount``: flipped when it moved by more than ``amount`` in the
  direction ``delta``.

Methods (:data:`METHODS`), each giving a nested sequence of removal sets (the prefixes of
an order of the training points) and a predicted flip size ``k``:

* ``first_order``: the AMIP rule of Broderick, Giordano and Meager: order the points by
  their first-order effect ``delta grad v_j . H^-1 s_i grad l_i`` on the target, predict the
  target along the order by the summed effects and take the shortest prefix predicted to
  flip. Multiclass: one order per competing class; the class with the shortest predicted
  prefix is used.
* ``rescaled``: the same rule with rescaled influence scores
  (:func:`influence.estimators.rescaled`: each point's one-point Newton change).
* ``newton``: the rescaled order, the target predicted at ``theta_hat + D`` with ``D`` the
  group Newton step ``(H - H_U)^-1 g_U`` of the prefix
  (:meth:`GroupInfluence.newton_dparams`); the shortest prefix predicted to flip is found
  by a batched search over its length.
* ``adaptive``: greedy with re-scoring (Hu et al., NeurIPS 2024): at the current certified
  refit, score the remaining points by their first-order effect there, remove the best
  ``batch`` of them (fewer when fewer are predicted to suffice), refit warm-started from
  the current parameters (certified), and repeat until the target flips. Its prediction is
  the one made at its last re-scoring.

Verification (all methods): the candidate prefix is removed and refitted; the smallest
prefix length whose refit flips the target is then searched (downwards when the
prediction flipped, upwards to ``max_fraction`` of the training set when it did not).
The search probes ``search_width`` lengths per round in one batched refit, each
warm-started from the refit of the longest prefix known not to flip (it assumes that a
flip, once reached along the order, persists). The prediction **overshot** when the
verified k is smaller than the predicted one, **undershot** when larger.

:func:`worst_case_groups` is the whole question on arrays (fit, compile targets, search);
:class:`FlipSearch` runs it on an existing :class:`GroupInfluence` and keeps what does not
depend on the target (per-point gradients, rescaled changes) for the next target.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from influence import estimators as est
from influence.downdate import uses_downdates
from influence.group_influence import GroupInfluence
from influence.logistic_regression import LogisticRegression
from influence.newton import RefitResult
from influence.numerics import densify

logger = logging.getLogger(__name__)

METHODS = ("first_order", "rescaled", "newton", "adaptive")
DIRECTIONS = {"increase": 1, "decrease": -1}
OUTCOMES = ("exact", "overshoot", "undershoot", "no_prediction", "not_found")
DEFAULT_MAX_FRACTION = 0.1
DEFAULT_SEARCH_WIDTH = 8
# Steps of the adaptive method when --adaptive-batch is automatic: the batch is
# ceil(max_k / ADAPTIVE_AUTO_STEPS), so at most this many re-scorings reach max_fraction.
ADAPTIVE_AUTO_STEPS = 40


class FlipSearchError(ValueError):
    """A target or setting the search cannot work with."""


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class PredictionFlip:
    """Flip the prediction at one test point ``x`` (float array of shape (n_features,)):
    binary, the sign of its logit; multiclass, its predicted class (any other class wins)."""

    x: np.ndarray
    name: str = "prediction"

    def compile(self, gi: GroupInfluence) -> Target:
        spec = gi.spec
        x = _row(self.x, spec.input_dim, "x")
        rows = [logit_vector(gi.model, x, k) for k in range(spec.num_rows)]
        z = np.array([r @ gi.params for r in rows])
        if spec.binary:
            if z[0] == 0:
                raise FlipSearchError(f"{self.name}: the logit at theta_hat is exactly 0, so the prediction has no sign")
            return Target(self.name, np.array([rows[0]]), np.zeros(1), -int(np.sign(z[0])), z.copy())
        c = int(np.argmax(z))
        others = [k for k in range(spec.num_rows) if k != c]
        A = np.array([rows[k] - rows[c] for k in others])
        return Target(self.name, A, np.zeros(len(others)), 1, A @ gi.params,
                      labels=tuple(f"class {k} beats {c}" for k in others))


@dataclass(frozen=True)
class CoefficientSign:
    """Flip the sign of the coefficient of input feature ``feature`` (multiclass: of class
    ``cls``, required there; binary models have one weight row, ``cls`` None or 0)."""

    feature: int
    cls: int | None = None
    name: str = "coefficient"

    def compile(self, gi: GroupInfluence) -> Target:
        spec = gi.spec
        if not (isinstance(self.feature, (int, np.integer)) and 0 <= self.feature < spec.input_dim):
            raise FlipSearchError(f"feature must be an integer in [0, {spec.input_dim}); got {self.feature!r}")
        if spec.binary and self.cls not in (None, 0):
            raise FlipSearchError(f"cls must be None (or 0) for a binary model; got {self.cls!r}")
        if not spec.binary and not (isinstance(self.cls, (int, np.integer)) and 0 <= self.cls < spec.num_rows):
            raise FlipSearchError(f"cls must name a class in [0, {spec.num_rows}) for a multiclass model; "
                                  f"got {self.cls!r}")
        a = np.zeros(spec.num_params)
        a[parameter_layout(gi.model)[0][self.cls or 0, self.feature]] = 1.0
        value = float(a @ gi.params)
        if value == 0:
            raise FlipSearchError(f"{self.name}: the coefficient is exactly 0 at theta_hat, so it has no sign")
        return Target(self.name, a[None, :], np.zeros(1), -int(np.sign(value)), np.array([value]))


@dataclass(frozen=True)
class LossChange:
    """Move the mean loss on test points ``(X, y)`` (one row: that point's loss) by more than
    ``amount`` (> 0) in ``direction`` (``'increase'`` or ``'decrease'``)."""

    X: np.ndarray
    y: np.ndarray
    amount: float
    direction: str = "increase"
    name: str = "loss"

    def compile(self, gi: GroupInfluence) -> Target:
        if self.direction not in DIRECTIONS:
            raise FlipSearchError(f"direction must be one of {tuple(DIRECTIONS)}; got {self.direction!r}")
        if not (math.isfinite(float(self.amount)) and float(self.amount) > 0):
            raise FlipSearchError(f"amount must be a finite number > 0; got {self.amount!r}")
        X = densify(self.X).astype(np.float64, copy=False)
        X = X.reshape(-1, gi.spec.input_dim) if X.ndim == 1 else X
        y = np.asarray(self.y).reshape(-1)
        if X.ndim != 2 or X.shape[1] != gi.spec.input_dim or X.shape[0] != y.shape[0] or not len(y):
            raise FlipSearchError(f"X must be (m, {gi.spec.input_dim}) with m = len(y) >= 1; got {X.shape} "
                                  f"and {y.shape}")
        t = Target(self.name, None, np.zeros(1), DIRECTIONS[self.direction], np.zeros(1), data=(X, y))
        v0 = t.values(gi, gi.params[None, :])[0]
        return Target(self.name, None, v0 + t.direction * float(self.amount), t.direction, v0, data=(X, y))


@dataclass
class Target:
    """A compiled target: components ``v_j`` (linear ``A[j] . theta`` when ``A`` (m, d) is
    given, else the mean loss on ``data``), ``threshold`` (m,), ``direction`` (+1/-1) and the
    values at ``theta_hat`` (``initial``, (m,)); flipped when ``gap > 0`` (module docstring)."""

    name: str
    A: np.ndarray | None
    threshold: np.ndarray
    direction: int
    initial: np.ndarray
    data: tuple | None = None
    labels: tuple = ()

    def values(self, gi: GroupInfluence, thetas) -> np.ndarray:
        """``v_j`` at each row of ``thetas`` (S, d): float64 (S, m)."""
        thetas = np.atleast_2d(np.asarray(thetas, dtype=np.float64))
        if self.A is not None:
            return thetas @ self.A.T
        return gi.evaluate(thetas, self.data, "loss").mean(axis=1, keepdims=True)

    def gaps(self, values) -> np.ndarray:
        """``max_j delta (v_j - t_j)`` per row of ``values`` (S, m): (S,)."""
        return np.max(self.direction * (np.atleast_2d(values) - self.threshold[None, :]), axis=1)

    def gradients(self, model: LogisticRegression, theta) -> np.ndarray:
        """``grad v_j`` at ``theta``, (m, d) (constant for linear components; a loss target
        leaves ``model`` at ``theta``, so callers reset it, e.g. by ``GroupInfluence.at_optimum``)."""
        if self.A is not None:
            return self.A
        model.set_params_flat(theta)
        X, y = self.data
        return model.get_total_grad_loss((X, y))[None, :] / len(y)

    @property
    def initial_gap(self) -> float:
        return float(self.gaps(self.initial[None, :])[0])


def _row(x, dim: int, name: str) -> np.ndarray:
    x = densify(x).astype(np.float64, copy=False).reshape(-1)
    if x.shape != (dim,) or not np.all(np.isfinite(x)):
        raise FlipSearchError(f"{name} must be a finite array of shape ({dim},); got shape {x.shape}")
    return x


def parameter_layout(model: LogisticRegression) -> tuple[np.ndarray, np.ndarray | None]:
    """Where each coefficient and intercept sits in the flat parameter vector: ``(coef_index
    (K', D), intercept_index (K',) or None)``, read from the model's own
    :meth:`~LogisticRegression.get_coef_intercept` (so it follows any layout change)."""
    saved = model.get_params_flat()
    try:
        model.set_params_flat(np.arange(1, model.num_params + 1, dtype=np.float64))
        coef, intercept = model.get_coef_intercept()
    finally:
        model.set_params_flat(saved)
    coef_idx = np.rint(np.asarray(coef)).astype(np.int64) - 1
    b_idx = np.rint(np.asarray(intercept)).astype(np.int64) - 1 if model.spec.fit_intercept else None
    return coef_idx, b_idx


def logit_vector(model: LogisticRegression, x, k: int = 0) -> np.ndarray:
    """``a`` with ``a . theta = coef[k] . x + intercept[k]``: the logit of row k at ``x``, (d,)."""
    coef_idx, b_idx = parameter_layout(model)
    a = np.zeros(model.num_params)
    a[coef_idx[k]] = np.asarray(x, dtype=np.float64)
    if b_idx is not None:
        a[b_idx[k]] = 1.0
    return a


# ----------------------------------------------------------------------------- results
@dataclass
class MethodResult:
    """One method on one target. ``predicted_k``/``verified_k``: -1 when none within
    ``max_k``; ``verified_set``: the indices removed by the verified flip (empty if none);
    ``order``: the method's removal order (its first ``max_k`` points; adaptive: its removal
    sequence); ``refits``: certified group refits used (prediction and verification);
    ``path_k``, ``path_predicted``, ``path_actual``: the flip gap's change from
    ``theta_hat`` at every refitted prefix length, as predicted by the method and as
    refitted; ``max_grad_ratio``: the worst ``||grad|| / tol`` of its refits (<= 1: certified)."""

    method: str
    predicted_k: int
    verified_k: int
    verified_set: np.ndarray
    order: np.ndarray
    refits: int
    seconds: float
    path_k: np.ndarray
    path_predicted: np.ndarray
    path_actual: np.ndarray
    max_grad_ratio: float
    component: str = ""

    @property
    def outcome(self) -> str:
        if self.verified_k < 0:
            return "not_found"
        if self.predicted_k < 0:
            return "no_prediction"
        if self.predicted_k == self.verified_k:
            return "exact"
        return "overshoot" if self.predicted_k > self.verified_k else "undershoot"


@dataclass
class WorstCaseResult:
    """All methods on one target: ``methods[name]`` is a :class:`MethodResult`; ``threshold``
    is the change of the flip gap that flips the target (``-gap(theta_hat)``)."""

    target: str
    initial_gap: float
    max_k: int
    num_train: int
    methods: dict[str, MethodResult] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return -self.initial_gap


# ----------------------------------------------------------------------------- the search
class _Base:
    """A certified optimum with some points removed: parameters, weights and its
    :class:`GroupInfluence` (solves there; refits from there when ``warm``).

    Warm starts need the Hessian at the base (``n d^2`` flops, and for models on the
    downdate route also ``H^-1``), which for wide binary models costs more than the
    refits it saves; there (``warm`` false) refits start at ``theta_hat`` with the base's
    removed points added to each group, and solves at the base use CG on Hessian-vector
    products."""

    def __init__(self, root: GroupInfluence, removed: np.ndarray, params, warm: bool = True):
        self.root = root
        self.warm = warm
        self.removed = np.asarray(removed, dtype=np.int64)
        w = np.ones(root.num_train) if root.sample_weights is None else np.array(root.sample_weights, dtype=np.float64)
        w[self.removed] = 0.0
        self.weights = w
        if not len(self.removed):
            self.gi = root
            return
        hessian, method = None, "cg"
        if warm and root.inverse_hvp_method == "explicit":
            model = root.model
            model.set_params_flat(params)
            hessian, method = model.get_hessian(root.train, w, root.l2_reg), "explicit"
        self.gi = GroupInfluence(root.model, root.train, root.l2_reg, params=params, sample_weights=w,
                                 hessian=hessian, inverse_hvp_method=method if warm else "cg",
                                 inverse_vp_method=root.inverse_vp_method, max_memory=root.max_memory)

    def refit(self, groups) -> RefitResult:
        """Certified refits with the base's points and each group removed."""
        if self.warm or not len(self.removed):
            return self.gi.refit(groups, max(1, len(groups)), progress=False)
        full = [np.concatenate([self.removed, np.asarray(g, dtype=np.int64)]) for g in groups]
        return self.root.refit(full, max(1, len(full)), progress=False)


class FlipSearch:
    """The worst-case search on one fitted model (``gi``: at its certified optimum).

    ``max_fraction``: the largest set tried, as a fraction of the training set, in (0, 1);
    ``batch``: points removed per adaptive step (None: automatic, see
    :data:`ADAPTIVE_AUTO_STEPS`); ``search_width``: prefix lengths refitted together per
    search round. Per-point quantities at ``theta_hat`` are computed once and reused for
    every target.
    """

    def __init__(self, gi: GroupInfluence, max_fraction: float = DEFAULT_MAX_FRACTION, batch: int | None = None,
                 search_width: int = DEFAULT_SEARCH_WIDTH):
        if not isinstance(gi, GroupInfluence):
            raise FlipSearchError(f"gi must be an influence.group_influence.GroupInfluence; got {type(gi).__name__}")
        if not (0 < float(max_fraction) < 1):
            raise FlipSearchError(f"max_fraction must be in (0, 1); got {max_fraction!r}")
        if batch is not None and (int(batch) != batch or batch < 1):
            raise FlipSearchError(f"batch must be None or a positive integer; got {batch!r}")
        if int(search_width) != search_width or search_width < 1:
            raise FlipSearchError(f"search_width must be a positive integer; got {search_width!r}")
        self.gi = gi
        self.n = gi.num_train
        self.max_k = max(1, min(self.n - 1, math.floor(float(max_fraction) * self.n)))
        self.batch = int(batch) if batch is not None else max(1, math.ceil(self.max_k / ADAPTIVE_AUTO_STEPS))
        self.width = int(search_width)
        # Warm starts pay off unless the model takes the downdate route (see _Base).
        self.warm = not uses_downdates(gi.spec)
        self._grads = None
        self._point_changes = None

    # ------------------------------------------------------------------ per-point quantities
    def point_grads(self, base: _Base | None = None) -> np.ndarray:
        """``s_i grad l_i`` at the base's parameters (theta_hat by default), (n, d)."""
        if base is None and self._grads is not None:
            return self._grads
        gi = self.gi if base is None else base.gi
        w = (np.ones(self.n) if gi.sample_weights is None else gi.sample_weights)
        G = gi.at_optimum().get_indiv_grad_loss(gi.train) * w[:, None]
        if base is None:
            self._grads = G
        return G

    def rescaled_changes(self) -> np.ndarray:
        """Each point's rescaled (one-point Newton) parameter change, (n, d)."""
        if self._point_changes is None:
            self._point_changes = est.rescaled(self.gi, [np.array([i]) for i in range(self.n)])
        return self._point_changes

    # ------------------------------------------------------------------ the public entry
    def run(self, target, methods: Sequence[str] = METHODS) -> WorstCaseResult:
        """Every method of ``methods`` on ``target`` (a :class:`PredictionFlip`,
        :class:`CoefficientSign`, :class:`LossChange` or compiled :class:`Target`)."""
        for m in methods:
            if m not in METHODS:
                raise FlipSearchError(f"methods must be among {METHODS}; got {m!r}")
        t = target if isinstance(target, Target) else target.compile(self.gi)
        gap0 = t.initial_gap
        if not gap0 < 0:
            raise FlipSearchError(f"{t.name}: already flipped at theta_hat (gap {gap0:.3e} >= 0)")
        out = WorstCaseResult(t.name, gap0, self.max_k, self.n)
        for m in methods:
            t0 = time.perf_counter()
            counter = _Counter()
            res = getattr(self, f"_{m}")(t, counter)
            res.seconds, res.refits, res.max_grad_ratio = time.perf_counter() - t0, counter.refits, counter.worst
            out.methods[m] = res
            logger.info("%s / %s: predicted k %d, verified k %d (%s), %d refits, %.2f s", t.name, m,
                        res.predicted_k, res.verified_k, res.outcome, res.refits, res.seconds)
        self.gi.at_optimum()
        return out

    # ------------------------------------------------------------------ one-shot methods
    def _one_shot(self, t: Target, scores: np.ndarray, method: str, counter) -> MethodResult:
        """The AMIP rule on per-point effects ``scores`` (n, m), then verification."""
        order, comp, pred_gaps = self._best_order(t, scores, np.ones(self.n, dtype=bool))
        k_pred = _first_crossing(pred_gaps)
        def predict(ks):
            return pred_gaps[np.asarray(ks) - 1] - t.initial_gap

        return self._verify(t, method, order, k_pred, counter, predict, _label(t, comp))

    def _first_order(self, t: Target, counter) -> MethodResult:
        T = t.gradients(self.gi.at_optimum(), self.gi.params)
        return self._one_shot(t, self.gi.first_order_influence(self.point_grads(), T), "first_order", counter)

    def _rescaled(self, t: Target, counter) -> MethodResult:
        T = t.gradients(self.gi.at_optimum(), self.gi.params)
        return self._one_shot(t, self.rescaled_changes() @ T.T, "rescaled", counter)

    def _newton(self, t: Target, counter) -> MethodResult:
        T = t.gradients(self.gi.at_optimum(), self.gi.params)
        order, comp, _ = self._best_order(t, self.rescaled_changes() @ T.T, np.ones(self.n, dtype=bool))
        cum = np.cumsum(self.point_grads()[order], axis=0)
        cache: dict[int, float] = {}

        def newton_gaps(ks):
            new = [k for k in ks if k not in cache]
            if new:
                D = self.gi.newton_dparams([order[:k] for k in new], cum[np.asarray(new) - 1])["newton_dparam"]
                gaps = t.gaps(t.values(self.gi, self.gi.params[None, :] + D))
                cache.update(zip(new, gaps))
            return np.array([cache[k] for k in ks])

        k_pred = _search(lambda ks: newton_gaps(ks) > 0, 0, len(order), self.width, check_hi=True)
        return self._verify(t, "newton", order, k_pred, counter, lambda ks: newton_gaps(ks) - t.initial_gap,
                            _label(t, comp))

    def _best_order(self, t: Target, scores: np.ndarray, allowed: np.ndarray, limit: int | None = None,
                    start=None):
        """Per component j, the allowed points with a positive effect ``delta scores[:, j]``
        in decreasing order, and the predicted gaps of its prefixes; the component whose
        order is predicted to flip soonest (or, if none does, whose longest prefix comes
        closest). Returns ``(order, j, predicted gaps (len(order),))``."""
        limit = self.max_k if limit is None else limit
        start = t.initial if start is None else start
        best = None
        for j in range(scores.shape[1]):
            e = t.direction * scores[:, j]
            cand = np.flatnonzero(allowed & (e > 0))
            order = cand[np.argsort(-e[cand], kind="stable")][:limit]
            pred = t.gaps(start[None, :] + np.cumsum(scores[order], axis=0)) if len(order) else np.zeros(0)
            k = _first_crossing(pred)
            key = (0, k) if k > 0 else (1, -(pred[-1] if len(pred) else -np.inf))
            if best is None or key < best[0]:
                best = (key, order, j, pred)
        return best[1], best[2], best[3]

    # ------------------------------------------------------------------ adaptive
    def _adaptive(self, t: Target, counter) -> MethodResult:
        base = _Base(self.gi, np.zeros(0, dtype=np.int64), self.gi.params, self.warm)
        removed: list[int] = []
        values = t.initial.copy()
        path: list[tuple[int, float, float]] = []   # (k, predicted change, actual change)
        k_pred, verified, comp = -1, -1, 0
        while len(removed) < self.max_k:
            room = self.max_k - len(removed)
            theta = base.gi.params
            T = t.gradients(base.gi.at_optimum(), theta)
            scores = base.gi.first_order_influence(self.point_grads(None if not removed else base), T)
            order, comp, pred = self._best_order(t, scores, base.weights > 0, room, values)
            if not len(order):
                break   # no remaining point moves the target towards the flip
            need = _first_crossing(pred)
            if need > 0:
                k_pred = len(removed) + need
            take = min(self.batch, need) if need > 0 else min(self.batch, len(order))
            batch = order[:take]
            fit = self._refit(base, [batch], counter)
            new_values = t.values(self.gi, fit.thetas)[0]
            path.append((len(removed) + take, pred[take - 1] - t.initial_gap,
                         t.gaps(new_values[None, :])[0] - t.initial_gap))
            if t.gaps(new_values[None, :])[0] > 0:
                if take > 1:
                    take = self._within_batch(t, base, batch, pred, len(removed), path, counter)
                removed.extend(int(i) for i in batch[:take])
                verified = len(removed)
                break
            removed.extend(int(i) for i in batch)
            values = new_values
            base = _Base(self.gi, np.array(removed), np.ravel(fit.thetas), self.warm)
        seq = np.array(removed, dtype=np.int64)
        path.sort()
        return MethodResult("adaptive", k_pred, verified, seq if verified > 0 else np.zeros(0, dtype=np.int64), seq,
                            0, 0.0, np.array([p[0] for p in path], dtype=np.int64), np.array([p[1] for p in path]),
                            np.array([p[2] for p in path]), 0.0, _label(t, comp))

    def _within_batch(self, t: Target, base: _Base, batch: np.ndarray, pred: np.ndarray, done: int, path: list,
                      counter) -> int:
        """The smallest flipping prefix of the adaptive method's last batch (whose full length
        flips), each probe refitted from the base; probes are added to ``path``."""
        def flips(ks):
            r = self._refit(base, [batch[:k] for k in ks], counter)
            gaps = t.gaps(t.values(self.gi, r.thetas))
            path.extend((done + k, pred[k - 1] - t.initial_gap, g - t.initial_gap) for k, g in zip(ks, gaps))
            return gaps > 0

        return _search(flips, 0, len(batch), self.width, check_hi=False)

    # ------------------------------------------------------------------ verification
    def _refit(self, base: _Base, groups, counter) -> RefitResult:
        """Certified refits of ``groups`` removed on top of ``base``, warm-started at its optimum."""
        r = base.refit(groups)
        counter.add(r)
        return r

    def _verify(self, t: Target, method: str, order: np.ndarray, k_pred: int, counter, predict,
                component: str) -> MethodResult:
        """The smallest prefix length of ``order`` whose certified refit flips the target."""
        state = {"base": _Base(self.gi, np.zeros(0, dtype=np.int64), self.gi.params, self.warm), "lo": 0}
        path: dict[int, tuple[float, float]] = {}

        def flips(ks):
            ks = [int(k) for k in ks]
            base, lo = state["base"], state["lo"]
            r = self._refit(base, [order[lo:k] for k in ks], counter)
            gaps = t.gaps(t.values(self.gi, r.thetas))
            for k, g in zip(ks, gaps):
                path[k] = (float(predict([k])[0]), float(g - t.initial_gap))
            # Warm start the next round from the longest prefix below the first flip (the
            # lower end of the search's next bracket: lengths come in increasing order).
            flipped = gaps > 0
            first = int(np.argmax(flipped)) if flipped.any() else len(ks)
            if first > 0 and ks[first - 1] > lo:
                state["base"] = _Base(self.gi, order[:ks[first - 1]], r.thetas[first - 1], self.warm)
                state["lo"] = ks[first - 1]
            return flipped

        kmax = len(order)
        if kmax == 0:
            verified = -1
        elif 0 < k_pred <= kmax:
            if flips([k_pred])[0]:
                verified = _search(flips, 0, k_pred, self.width, check_hi=False)
            else:
                verified = _search(flips, k_pred, kmax, self.width, check_hi=True)
        else:
            verified = _search(flips, 0, kmax, self.width, check_hi=True)
        ks = np.array(sorted(path), dtype=np.int64)
        return MethodResult(method, k_pred, verified,
                            np.array(order[:verified], dtype=np.int64) if verified > 0 else np.zeros(0, dtype=np.int64),
                            np.asarray(order, dtype=np.int64), 0, 0.0, ks,
                            np.array([path[k][0] for k in ks]), np.array([path[k][1] for k in ks]), 0.0, component)


class _Counter:
    def __init__(self):
        self.refits, self.worst = 0, 0.0

    def add(self, r):
        self.refits += len(r.grad_norms)
        if len(r.grad_norms):
            self.worst = max(self.worst, float(np.max(r.grad_norms / r.grad_tols)))


def _label(t: Target, comp: int) -> str:
    return t.labels[comp] if t.labels else ""


def _first_crossing(pred_gaps) -> int:
    """1 + the first index with a positive predicted gap, or -1."""
    hit = np.flatnonzero(np.asarray(pred_gaps) > 0)
    return int(hit[0]) + 1 if hit.size else -1


def _grid(lo: int, hi: int, width: int) -> list[int]:
    """Up to ``width`` distinct integers in (lo, hi), evenly spread."""
    inner = hi - lo - 1
    if inner <= 0:
        return []
    if inner <= width:
        return list(range(lo + 1, hi))
    return sorted({lo + round(i * (hi - lo) / (width + 1)) for i in range(1, width + 1)} - {lo, hi})


def _search(flips, lo: int, hi: int, width: int, check_hi: bool) -> int:
    """The smallest k in (lo, hi] with ``flips([k])`` true, -1 if none: ``flips(ks)`` answers
    a batch of lengths at once (boolean array); ``flips(lo)`` is known false, and
    ``flips(hi)`` known true unless ``check_hi`` (then it is probed with the first round).
    Each round probes up to ``width`` lengths and keeps the bracket between the largest
    false one and the smallest true one (a flip is assumed to persist once reached)."""
    if hi <= lo:
        return -1
    if check_hi:
        ks = _grid(lo, hi, width - 1) + [hi]
        f = np.asarray(flips(ks), dtype=bool)
        if not f.any():
            return -1
        first = int(np.argmax(f))
        hi = ks[first]
        lo = max([lo] + ks[:first])
    while hi - lo > 1:
        ks = _grid(lo, hi, width)
        f = np.asarray(flips(ks), dtype=bool)
        if f.any():
            first = int(np.argmax(f))
            lo, hi = max([lo] + ks[:first]), ks[first]
        else:
            lo = ks[-1]
    return hi


# ----------------------------------------------------------------------------- arrays in, result out
def worst_case_groups(X, y, targets, l2_reg: float, methods: Sequence[str] = METHODS,
                      max_fraction: float = DEFAULT_MAX_FRACTION, batch: int | None = None,
                      fit_intercept: bool = True, sample_weights=None,
                      search_width: int = DEFAULT_SEARCH_WIDTH) -> list[WorstCaseResult]:
    """Fit logistic regression on ``(X, y)`` and find, for each target, how few training
    points must be removed to flip it, by every method in ``methods``.

    ``X``: float array of shape (n_samples, n_features); ``y``: integer class labels
    (n_samples,) in 0..K-1; ``l2_reg``: the weight of ``(l2_reg / 2) ||W||^2`` added to the
    summed loss (scikit-learn's ``C = 1 / l2_reg``); ``targets``: :class:`PredictionFlip`,
    :class:`CoefficientSign` or :class:`LossChange` objects. Returns one
    :class:`WorstCaseResult` per target.

    Example::

        from influence.worst_case import PredictionFlip, worst_case_groups
        res = worst_case_groups(X, y, [PredictionFlip(X_test[0])], l2_reg=1.0)[0]
        m = res.methods["adaptive"]
        print(m.verified_k, m.verified_set)   # remove these rows of X to flip the prediction
    """
    X = densify(X).astype(np.float64, copy=False)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise FlipSearchError(f"X must be (n_samples, n_features) with n_samples = len(y); got {X.shape}, {y.shape}")
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": X.shape[1], "fit_intercept": bool(fit_intercept),
                   "num_classes": int(max(2, y.max() + 1))}
    model = LogisticRegression(cfg)
    model.fit((X, y), sample_weights, l2_reg)
    hessian = model.get_hessian((X, y), sample_weights, l2_reg)
    gi = GroupInfluence(model, (X, y), l2_reg, sample_weights=sample_weights, hessian=hessian,
                        inverse_hvp_method="explicit")
    search = FlipSearch(gi, max_fraction, batch, search_width)
    return [search.run(t, methods) for t in targets]
