"""An accuracy ladder of estimators of the effect of removing a group of training points.

Every estimator returns the **parameter change** caused by removing each group, float64
(S, d); target values follow from it (:meth:`GroupInfluence.param_influence`). All call the
engine through :class:`influence.group_influence.GroupInfluence` and
:func:`influence.newton.newton_loop`.

Notation as in :mod:`influence.group_influence` (docs/design.md, 'Objective and
conventions'), and ``T[v, v] = sum_i s_i D^3 l_i(theta_hat)[v, v]`` (the third derivative
of L contracted twice; the regulariser has none).

The removal path: ``theta(eps) = argmin L(theta) - eps sum_{i in U} s_i l_i(theta)``
(weights ``1 - eps`` on the group), ``theta(0) = theta_hat``, ``theta(1) = theta_{-U}``.
Differentiating its stationarity condition ``grad L(theta) - eps g_U(theta) = 0`` gives

* ``theta'(0) = H^-1 g_U``;
* ``theta''(0) = H^-1 (2 H_U theta'(0) - T[theta'(0), theta'(0)])``.

Estimators, in the order of the ladder (:data:`ESTIMATORS`; each function states its
formula): :func:`first_order` (the paper's ``pred``), :func:`newton` (the paper's
``newton``), ``newton_2`` / ``newton_3`` (:func:`newton_steps`), :func:`second_order_basu`,
:func:`second_order_exact`, :func:`rescaled` and :func:`actual`.

Here ``l_i(theta) = A(eta_i) - y_i . eta_i`` with logits ``eta_i = J_i^T theta`` (K' = 1
logit for binary models, K for multinomial ones), ``A`` the log-partition (softplus,
logsumexp), ``J_i`` the (d, K') matrix placing ``[x_i; 1]`` in each class's block,
``r_i = s_i grad A(eta_i) - s_i y_i`` the residual and ``A_i = s_i hess A(eta_i)``
(``sigma (1 - sigma)``, ``diag p - p p^T``), so that ``grad l_i = J_i r_i`` and
``hess l_i = J_i A_i J_i^T``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.special
import tensorflow as tf

from influence.downdate import DowndateBasis, GroupDowndates
from influence.group_influence import GroupInfluence, check_2d, check_groups
from influence.groups import group_sums, incidence
from influence.newton import (
    ChordSolvePreconditioner,
    ExplicitNewton,
    NewtonCG,
    RefitResult,
    certify,
    gradient_norm_backtracking,
    newton_loop,
    use_float32,
)
from influence.numerics import to_numpy
from influence.objective import LogisticObjective, ModelSpec, from_ext_batch, to_ext_batch

ESTIMATORS = ("first_order", "newton", "newton_2", "newton_3", "second_order_basu", "second_order_exact",
              "rescaled", "actual")


# ----------------------------------------------------------------------------- helpers
def train_design(gi: GroupInfluence):
    """The augmented training design ``Xa`` (n, E), labels and sample weights (tensors)."""
    return gi.design(gi.train, gi.sample_weights)


def _check_gi(gi, groups=None) -> list[np.ndarray] | None:
    """Checks ``gi``; returns ``groups`` checked against its training set (None without groups)."""
    if not isinstance(gi, GroupInfluence):
        raise ValueError(f"gi must be an influence.group_influence.GroupInfluence; got {type(gi).__name__}")
    return None if groups is None else check_groups(groups, gi.num_train)


def _group_grads(gi: GroupInfluence, groups, group_grads) -> np.ndarray:
    if group_grads is None:
        return gi.gradient_sums(gi.train, groups, gi.sample_weights)
    return check_2d("group_grads", group_grads, cols=gi.model.num_params, rows=len(groups))


def _first(gi: GroupInfluence, groups, group_grads, first) -> np.ndarray:
    if first is None:
        return gi.first_order_dparams(_group_grads(gi, groups, group_grads))
    return check_2d("first", first, cols=gi.model.num_params, rows=len(groups))


def _no_gauge(D: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Rows without their component along the flat direction (multinomial with intercepts)."""
    u = spec.gauge_vector()
    return D - np.outer(D @ u, u) if spec.has_gauge else D


# ----------------------------------------------------------------------------- derivative kernels
def group_hvps(spec: ModelSpec, theta, Xa, s, groups: Sequence[np.ndarray], V, chunk: int = 64) -> np.ndarray:
    """``H_U V[b]`` for each group b: its unregularised Hessian at ``theta`` times row b of V.

    ``H_U = sum_{i in U} s_i hess l_i(theta)`` through the engine's batched
    Hessian-vector product (:meth:`LogisticObjective.hvp`) with the weights ``s`` on the
    group and 0 elsewhere, and no regulariser. ``V``: (S, d); returns float64 (S, d),
    without the gauge component (the engine's gauge term acts on it only at rounding level).
    """
    V = np.asarray(V, dtype=np.float64)
    n = int(Xa.shape[0])
    s_np = np.asarray(s, dtype=np.float64).reshape(-1)
    theta = tf.constant(np.asarray(theta, dtype=np.float64), dtype=Xa.dtype)
    zero = tf.constant(0.0, dtype=Xa.dtype)
    out = np.zeros_like(V)
    for a in range(0, len(groups), chunk):
        part = groups[a:a + chunk]
        S = incidence(part, n).toarray().T * s_np[:, None]          # (n, b): s on the group
        obj = LogisticObjective(spec, Xa, None, tf.constant(S, dtype=Xa.dtype), zero)
        curv = obj.curvature(tf.tile(theta[None, :], [len(part), 1]))
        out[a:a + len(part)] = obj.hvp(curv, V[a:a + len(part)])
    return _no_gauge(out, spec)


def third_derivative_contraction(spec: ModelSpec, theta, Xa, s, V, chunk: int = 64) -> np.ndarray:
    """``T[V[b], V[b]] = sum_i s_i D^3 l_i(theta)[V[b], V[b]]`` for each row b of V, (B, d).

    Closed form from the log-partition A of the logits ``eta_i = J_i^T theta``: with
    ``u = J_i^T v`` (the logit change),
    ``D^3 l_i[v, v] = J_i t_i``, ``t_i = D^3 A(eta_i)[u, u]``:

    * binary (A = softplus): ``t = sigma (1 - sigma) (1 - 2 sigma) u^2``;
    * multinomial (A = logsumexp, p = softmax): ``t_k = p_k ((u_k - ubar)^2 - sum_j p_j (u_j - ubar)^2)``
      with ``ubar = sum_j p_j u_j``.

    ``Xa``: augmented design (n, E) (tensor); ``s``: sample weights (n,); ``V``: (B, d).
    Returns float64 rows in the parameter layout. Cost O(n B d), ``chunk`` rows of V at a time
    (memory O(n chunk K')).
    """
    V = np.asarray(V, dtype=np.float64)
    Xn = to_numpy(Xa, np.float64)
    s = to_numpy(s, np.float64).reshape(-1)
    theta_t = tf.constant(np.asarray(theta, dtype=np.float64))
    Z = LogisticObjective(spec, tf.constant(Xn)).logits(theta_t[None])[:, 0].numpy()
    P = scipy.special.expit(Z) if spec.binary else scipy.special.softmax(Z, axis=1)[:, None, :]
    out = np.zeros_like(V)
    for a in range(0, V.shape[0], chunk):
        V_ext = to_ext_batch(tf.constant(V[a:a + chunk]), spec).numpy()     # (b, K', E)
        U = np.einsum("ne,bke->nbk", Xn, V_ext)                                # logit changes (n, b, K')
        if spec.binary:
            t = (s * P * (1.0 - P) * (1.0 - 2.0 * P))[:, None, None] * U ** 2
        else:
            Dv = U - np.sum(P * U, axis=2, keepdims=True)
            t = s[:, None, None] * P * (Dv ** 2 - np.sum(P * Dv ** 2, axis=2, keepdims=True))
        out[a:a + chunk] = from_ext_batch(tf.constant(np.einsum("nbk,ne->bke", t, Xn)), spec).numpy()
    return out


# ----------------------------------------------------------------------------- the estimators
def first_order(gi: GroupInfluence, groups: Sequence[np.ndarray], group_grads=None) -> np.ndarray:
    """``H^-1 g_U`` per group (the paper's ``pred``, ``subset_pred_dparam``), (S, d)."""
    groups = _check_gi(gi, groups)
    return gi.first_order_dparams(_group_grads(gi, groups, group_grads))


def newton(gi: GroupInfluence, groups: Sequence[np.ndarray], group_grads=None, method: str | None = None,
           preconditioner=None) -> np.ndarray:
    """``(H - H_U)^-1 g_U`` per group (the paper's ``newton``, ``subset_newton_dparam``), (S, d)."""
    groups = _check_gi(gi, groups)
    G = _group_grads(gi, groups, group_grads)
    return gi.newton_dparams(groups, G, method=method, preconditioner=preconditioner)["newton_dparam"]


NEWTON_STEP_METHODS = ("explicit", "cg")
# Relative residual of the Newton systems solved by CG (method 'cg'): the iterates then
# equal the explicit ones to about the condition number times this.
NEWTON_CG_RTOL = 1e-12


def newton_steps(gi: GroupInfluence, groups: Sequence[np.ndarray], steps: Sequence[int] = (2, 3),
                 chunk: int = 64, start=None, method: str = "explicit",
                 preconditioner=None) -> dict[int, np.ndarray]:
    """k-step Newton: ``theta_k - theta_hat`` for each k in ``steps``, {k: (S, d)}.

    ``theta_k`` is the k-th iterate of :func:`influence.newton.newton_loop` with
    :class:`~influence.newton.ExplicitNewton` (the exact Hessian of ``L_{-U}`` at every
    iterate) from ``theta_hat``, with no certificate stopping it early (tolerance 0). The
    first step is ``(H - H_U)^-1 (g_U - grad L(theta_hat))``, ``newton`` up to the fit's residual.
    ``start`` (S, d): changes ``theta_j - theta_hat`` to continue from instead (k more steps
    from the j-th iterate give the (j + k)-th; the loop keeps no other state).

    ``method='cg'`` solves each Newton system ``H_{-U}(theta) p = grad L_{-U}(theta)`` by
    preconditioned CG on the exact Hessian-vector products to the relative residual
    :data:`NEWTON_CG_RTOL` (:class:`influence.newton.NewtonCG`), for models whose (d, d)
    Hessian per group and step is too costly (``n d^2`` flops each); same step rule.
    ``preconditioner`` default: each group's own ``H - H_U`` at theta_hat by the Woodbury
    identity (:class:`influence.downdate.GroupDowndates`, the exact Hessian of the first
    step) for the models that refit by downdates (:func:`influence.downdate.uses_downdates`),
    else :meth:`GroupInfluence.preconditioner`.
    """
    groups = _check_gi(gi, groups)
    ks = sorted({int(k) for k in steps})
    if not ks or ks[0] < 1 or any(int(k) != k for k in steps):
        raise ValueError(f"steps must be positive integers; got {list(steps)!r}")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    if method not in NEWTON_STEP_METHODS:
        raise ValueError(f"method must be one of {NEWTON_STEP_METHODS}; got {method!r}")
    basis = gi.downdate_basis() if method == "cg" and preconditioner is None else None
    if method == "cg" and preconditioner is None and basis is None:
        preconditioner = gi.preconditioner()
    spec = gi.spec
    Xa, y, s = train_design(gi)
    l2 = tf.constant(float(gi.l2_reg), dtype=Xa.dtype)
    Xa_np = Xa.numpy() if spec.binary and Xa.dtype == tf.float64 else None
    theta_hat = np.asarray(gi.params, dtype=np.float64)
    D0 = np.zeros((len(groups), spec.num_params)) if start is None else \
        check_2d("start", start, cols=spec.num_params, rows=len(groups))
    out = {k: np.zeros((len(groups), spec.num_params)) for k in ks}
    for a in range(0, len(groups), chunk):
        part = groups[a:a + chunk]
        obj = LogisticObjective.without_groups(spec, Xa, y, s, l2, part, Xa_np)
        Theta = tf.constant(theta_hat[None, :] + D0[a:a + len(part)], dtype=Xa.dtype)
        done = 0
        pre = preconditioner if basis is None else group_chord_preconditioner(basis, part)
        for k in ks:
            strategy = ExplicitNewton() if method == "explicit" else NewtonCG(
                pre, forcing=NEWTON_CG_RTOL, tighten=False, search=gradient_norm_backtracking)
            res = newton_loop(obj, Theta, np.zeros(len(part)), strategy, max_iter=k - done)
            Theta, done = tf.constant(res.thetas, dtype=Xa.dtype), k
            out[k][a:a + len(part)] = res.thetas - theta_hat[None, :]
    return out


def group_chord_preconditioner(basis: DowndateBasis, groups: Sequence[np.ndarray]) -> ChordSolvePreconditioner:
    """``(H - H_U)^{-1}`` at theta_hat of each group (problem j of a batch is ``groups[j]``)
    as a CG preconditioner, by the Woodbury identity; in float32 as the refits' chord
    preconditioners (:func:`influence.newton.use_float32`)."""
    dd = GroupDowndates(basis, groups)
    return ChordSolvePreconditioner(lambda R, problems, float32: dd.solve(R, problems, not float32),
                                    np.arange(len(groups)), use_float32(basis.X.shape[1]))


def curvature_terms(gi: GroupInfluence, groups: Sequence[np.ndarray], first) -> dict[str, np.ndarray]:
    """The second-order pieces at ``theta_hat`` for each group, from ``first = H^-1 g_U`` (S, d):
    ``hu_first`` = ``H_U theta'(0)`` and ``third`` = ``T[theta'(0), theta'(0)]`` (both (S, d))."""
    Xa, _, s = train_design(gi)
    return {"hu_first": group_hvps(gi.spec, gi.params, Xa, s, groups, first),
            "third": third_derivative_contraction(gi.spec, gi.params, Xa, s, first)}


def removed_fraction(gi: GroupInfluence, groups: Sequence[np.ndarray]) -> np.ndarray:
    """``p = sum_{i in U} s_i / sum_i s_i`` per group (|U| / |S| with unit weights), (S,)."""
    w = np.ones(gi.num_train) if gi.sample_weights is None else np.asarray(gi.sample_weights, dtype=np.float64)
    return np.array([w[g].sum() for g in groups]) / w.sum()


def second_order_basu(gi: GroupInfluence, groups: Sequence[np.ndarray], group_grads=None,
                      first=None) -> np.ndarray:
    """Second-order group influence of Basu, You and Feizi (ICML 2020), in the summed objective, (S, d).

    ``D = ((1 - 2p) H^-1 g_U + H^-1 H_U H^-1 g_U) / (1 - p)^2``, ``p = |U| / |S|`` (weighted:
    the group's share of the total sample weight, :func:`removed_fraction`).

    They minimise the mean ``R = L / |S|`` (Hessian ``H / |S|``) and expand
    ``R_{-U} = R + eps (R - R_U)``, ``eps = p / (1 - p)``, to second order in ``eps`` without
    the third-derivative term, getting ``I^(1) = (1 - 2p) / (1 - p)^2 (1/|S|) H_avg^-1 sum_U grad l``
    and ``I' = 1 / (1 - p)^2 (1/|S|^2) sum_U H_avg^-1 hess l H_avg^-1 sum_U grad l``; with
    ``H_avg = H / |S|`` every ``|S|`` cancels. Compare :func:`second_order_exact`.
    """
    groups = _check_gi(gi, groups)
    P1 = _first(gi, groups, group_grads, first)
    p = removed_fraction(gi, groups)
    if np.any(p >= 1):
        raise ValueError(f"every group must leave some training weight (p = |U|/|S| < 1); got max p = {p.max()}")
    Xa, _, s = train_design(gi)
    pair = gi.inverse_hvp(group_hvps(gi.spec, gi.params, Xa, s, groups, P1).T).T   # H^-1 H_U H^-1 g_U
    D = ((1.0 - 2.0 * p)[:, None] * P1 + pair) / ((1.0 - p) ** 2)[:, None]
    return _no_gauge(D, gi.spec)


def second_order_exact(gi: GroupInfluence, groups: Sequence[np.ndarray], group_grads=None,
                       first=None) -> np.ndarray:
    """The exact second-order expansion of the removal path at ``eps = 1``, (S, d).

    ``theta(1) - theta_hat ~ theta'(0) + theta''(0) / 2
    = H^-1 g_U + H^-1 (H_U theta'(0) - T[theta'(0), theta'(0)] / 2)``, with the closed-form
    third-derivative contraction of :func:`third_derivative_contraction` (the term the
    Basu form leaves out).
    """
    groups = _check_gi(gi, groups)
    P1 = _first(gi, groups, group_grads, first)
    c = curvature_terms(gi, groups, P1)
    return _no_gauge(P1 + gi.inverse_hvp((c["hu_first"] - 0.5 * c["third"]).T).T, gi.spec)


def path_second_derivative(gi: GroupInfluence, groups: Sequence[np.ndarray], group_grads=None,
                           first=None) -> np.ndarray:
    """``theta''(0) = H^-1 (2 H_U theta'(0) - T[theta'(0), theta'(0)])`` of the removal path, (S, d)."""
    groups = _check_gi(gi, groups)
    P1 = _first(gi, groups, group_grads, first)
    c = curvature_terms(gi, groups, P1)
    return _no_gauge(gi.inverse_hvp((2.0 * c["hu_first"] - c["third"]).T).T, gi.spec)


def point_leverage_solves(gi: GroupInfluence, chunk_bytes: int = 2 ** 27) -> tuple[np.ndarray, np.ndarray]:
    """Per training point, ``w_i = (I - A_i M_i)^-1 r_i`` with ``M_i = J_i^T H^-1 J_i`` (K' x K').

    Returns ``(W, M)``: W (n, K') and the leverage matrices ``A_i M_i`` (n, K', K')
    (binary: the scalar leverage ``h_i = s_i sigma_i (1 - sigma_i) [x_i; 1]^T H^-1 [x_i; 1]``).
    ``H^-1`` is formed once (d right-hand sides through :meth:`GroupInfluence.inverse_hvp`).
    """
    spec = gi.spec
    Kr, E, d = spec.num_rows, spec.ext_dim, spec.num_params
    Xa, y, s = train_design(gi)
    theta = tf.constant(np.asarray(gi.params, dtype=np.float64), dtype=Xa.dtype)
    Xn = Xa.numpy().astype(np.float64)
    s_np = s.numpy().astype(np.float64)
    Hinv = gi.inverse_hvp(np.eye(d))
    inv = spec.ext_inverse_permutation()
    Hinv_ext = Hinv[np.ix_(inv, inv)].reshape(Kr, E, Kr, E)
    # The engine's residual (p - onehot(y), or sigma - y) and curvature per point.
    obj = LogisticObjective(spec, Xa, y)
    R = obj.residual(theta[None]).numpy().reshape(len(Xn), Kr) * s_np[:, None]
    C = obj.curvature(theta[None])[:, 0].numpy()
    n = len(Xn)
    W = np.zeros((n, Kr))
    lev = np.zeros((n, Kr, Kr))
    rows = max(1, int(chunk_bytes // (8 * Kr * d)))
    for a in range(0, n, rows):
        X = Xn[a:a + rows]
        M = np.einsum("ne,kelf,nf->nkl", X, Hinv_ext, X, optimize=True)
        if spec.binary:
            A = (s_np[a:a + rows] * C[a:a + rows])[:, None, None]
        else:
            P = C[a:a + rows]
            A = s_np[a:a + rows, None, None] * (P[:, :, None] * np.eye(Kr)[None] - P[:, :, None] * P[:, None, :])
        AM = A @ M
        lev[a:a + rows] = AM
        W[a:a + rows] = np.linalg.solve(np.eye(Kr)[None] - AM, R[a:a + rows, :, None])[:, :, 0]
    return W, lev


def rescaled(gi: GroupInfluence, groups: Sequence[np.ndarray], solves=None) -> np.ndarray:
    """Rescaled influence functions (Rubinstein and Hopkins, NeurIPS 2025), (S, d).

    ``D = sum_{i in U} H^-1 J_i (I - A_i M_i)^-1 r_i`` with ``M_i = J_i^T H^-1 J_i``
    (:func:`point_leverage_solves`): each point's first-order term ``H^-1 J_i r_i`` with its
    leverage divided out. Binary models: ``H^-1 grad l_i / (1 - h_i)`` (rank one). By the
    push-through identity ``(H - J A J^T)^-1 J = H^-1 J (I - A J^T H^-1 J)^-1`` each term
    is exactly the one-step Newton change of removing point i alone. ``solves``: the
    result of :func:`point_leverage_solves` for ``gi`` when already computed (it does not
    depend on the groups).
    """
    groups = _check_gi(gi, groups)
    spec = gi.spec
    Xa, _, _ = train_design(gi)
    W, _ = point_leverage_solves(gi) if solves is None else solves
    Xn = Xa.numpy().astype(np.float64)
    # J_i w_i in the extended layout is w_i (outer) [x_i; 1]; summed over each group.
    V_ext = (W[:, :, None] * Xn[:, None, :])
    V = from_ext_batch(tf.constant(V_ext), spec).numpy()                  # (n, d)
    return _no_gauge(gi.inverse_hvp(group_sums(groups, V).T).T, spec)


def actual(gi: GroupInfluence, groups: Sequence[np.ndarray], chunk_size: int = 64, method: str | None = None,
           progress: bool | None = None) -> tuple[np.ndarray, RefitResult]:
    """``theta_{-U} - theta_hat`` from certified refits (:meth:`GroupInfluence.refit`), and the
    refits with their certificates (``grad_norms``, ``grad_tols``, ``converged``, ...)."""
    groups = _check_gi(gi, groups)
    r = gi.refit(groups, chunk_size, method=method, progress=progress)
    return r.thetas - np.asarray(gi.params, dtype=np.float64)[None, :], r


def weighted_refit(gi: GroupInfluence, weights, rtol: float = 1e-14, max_iter: int = 100,
                   polish_steps: int = 3) -> np.ndarray:
    """Minimisers of ``sum_i W[i, b] l_i + (lambda/2)||W||^2`` for each column b of ``weights``
    (n, B), started at ``theta_hat``, by the engine's Newton loop with exact Hessians; (B, d).

    For points on the removal path (weights ``s_i (1 - eps)`` on the group) and finite
    differences of it. Certified to ``||grad|| <= rtol * scale`` (a warning otherwise).
    """
    _check_gi(gi)
    Wt = np.asarray(weights, dtype=np.float64)
    if Wt.ndim != 2 or Wt.shape[0] != gi.num_train:
        raise ValueError(f"weights must have shape ({gi.num_train}, B); got {Wt.shape}")
    spec = gi.spec
    Xa, y, _ = train_design(gi)
    l2 = tf.constant(float(gi.l2_reg), dtype=Xa.dtype)
    obj = LogisticObjective(spec, Xa, y, tf.constant(Wt, dtype=Xa.dtype), l2)
    Theta = tf.tile(tf.constant(np.asarray(gi.params, dtype=np.float64)[None, :], dtype=Xa.dtype), [Wt.shape[1], 1])
    scale = obj.grad_scales()
    res = newton_loop(obj, Theta, rtol * scale, ExplicitNewton(), max_iter, scale=scale, polish_steps=polish_steps)
    certify(res.grad_norms, res.grad_tols, what="path refits")
    return res.thetas
