"""One damped-Newton loop for a batch of problems, and its strategies.

:func:`newton_loop` minimises the B problems of a :class:`LogisticObjective` until each
gradient norm is at most its tolerance (the certificate, :func:`certify`). Each iteration a
**strategy** (:class:`NewtonStrategy`: :class:`ExplicitNewton`, :class:`ChordNewton`,
:class:`DowndateChord`, :class:`NewtonCG`) gives the directions of the active problems and
its **step rule** (:func:`certified_step`, :func:`gradient_norm_backtracking`,
:func:`armijo_step`) moves along them; a problem whose step fails for good stops.
Preconditioners of the CG steps share one interface (:class:`Preconditioner`) and one
float32 rule (:func:`use_float32`); :func:`make_preconditioner` chooses the fixed one.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.linalg
import tensorflow as tf

from influence import objective as K
from influence.numerics import (
    ConvergenceWarning,
    NotPositiveDefiniteError,
    PCGResult,
    PCGRows,
    cholesky_factors,
    one_blas_thread,
    preconditioned_cg_rows,
    solve_with_factors,
    spd_factor,
    spd_solve,
    to_numpy,
)
from influence.objective import HESSIAN_BLOCK_BYTES, LogisticObjective, ModelSpec, project_out_gauge


@dataclass
class FitResult:
    """Outcome of a certified minimisation."""

    theta: np.ndarray
    grad_norm: float          # ||grad L(theta)||_2 at the returned theta
    grad_tol: float           # the absolute tolerance it was certified against
    iterations: int
    converged: bool
    history: list = field(default_factory=list)  # gradient norm per iteration
    hvps: int = 0                           # Hessian-vector products spent in CG
    preconditioner_hessians: int = 0        # CG preconditioner Hessians formed (PathPreconditioner)
    preconditioner_factorizations: int = 0  # their factorisations (one per new l2_reg or Hessian)


@dataclass
class RefitResult:
    """Per-problem outcome of :func:`newton_loop` (arrays of length B unless noted)."""

    thetas: np.ndarray        # (B, d) final parameters
    grad_norms: np.ndarray    # ||grad L_b|| at the returned parameters
    grad_tols: np.ndarray     # the certificate each was checked against
    iterations: np.ndarray    # accepted Newton iterations
    hessians: np.ndarray      # how many full-data Hessians were formed (ChordNewton)
    converged: np.ndarray     # bool
    first_steps: np.ndarray   # (B, d) first iterate minus the start
    first_full_step: np.ndarray  # bool: the first line search accepted the full step
    hvps: np.ndarray | None = None  # Hessian-vector products spent in CG
    history: list | None = None     # gradient norms (B,) after each accepted iteration
    stalled: np.ndarray | None = None  # bool: stopped at the floating-point floor
    occupancy: np.ndarray | None = None  # problems iterated (or pending) in each loop iteration (batch occupancy)

    @classmethod
    def empty(cls, d: int) -> "RefitResult":
        """The result of no problems."""
        ints, flags = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        return cls(np.zeros((0, d)), np.zeros(0), np.zeros(0), ints, ints, flags, np.zeros((0, d)), flags, ints)

    def take(self, order: np.ndarray) -> "RefitResult":
        """The per-problem fields in the order ``order`` (``history`` and ``occupancy``,
        which are per iteration, are kept)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in fields.items():
            if value is not None and name not in ("history", "occupancy"):
                fields[name] = np.asarray(value)[order]
        return RefitResult(**fields)

    @classmethod
    def concat(cls, results: list["RefitResult"]) -> "RefitResult":
        """One result from the results of consecutive chunks of problems (no history)."""
        if len(results) == 1:
            return results[0]
        fields = {}
        for name in cls.__dataclass_fields__:
            parts = [getattr(r, name) for r in results]
            fields[name] = None if any(p is None for p in parts) or name == "history" else np.concatenate(parts)
        return cls(**fields)


def certify(grad_norms, grad_tols, what: str = "refits", iterations=None, stalled=None,
            max_iter=None, stacklevel: int = 2) -> np.ndarray:
    """The certificate ``grad_norms <= grad_tols`` per problem, with one
    :class:`ConvergenceWarning` naming the remedy when any problem missed it."""
    grad_norms, grad_tols = np.asarray(grad_norms), np.asarray(grad_tols)
    converged = grad_norms <= grad_tols
    if converged.all():
        return converged
    bad = np.flatnonzero(~converged)
    if grad_norms.size == 1 and iterations is not None:
        reason = ("the line search stalled at the floating-point floor" if stalled is not None and stalled[0]
                  else f"max_iter={max_iter} was reached")
        msg = (f"{what}: Newton stopped with gradient norm {float(grad_norms[0]):.3e} > tolerance "
               f"{float(grad_tols[0]):.3e} after {int(iterations[0])} iterations ({reason}); increase max_iter, "
               "loosen the relative tolerance (fit_rtol), use float64, or increase l2_reg if the problem is ill-posed")
    else:
        msg = (f"{len(bad)} of {len(grad_norms)} {what} did not reach their gradient-norm certificate "
               f"(worst ||grad||/tol = {float(np.max(grad_norms[bad] / grad_tols[bad])):.2e}); "
               "increase max_iter, use float64, or loosen rtol")
    warnings.warn(msg, ConvergenceWarning, stacklevel=stacklevel + 1)
    return converged


def cg_directions(objective: LogisticObjective, Theta, G, precond, rtol, maxiter):
    """Directions ``A_j^{-1} G[j]`` for each problem j of the batch, by preconditioned
    CG (:func:`influence.numerics.preconditioned_cg_rows`) on the exact Hessians at
    ``Theta[j]`` (:meth:`LogisticObjective.hvp`), gauge component removed. G: (B, d)
    NumPy. Returns (directions as a (B, d) tensor, the CG result)."""
    curv = objective.curvature(Theta)
    res = preconditioned_cg_rows(lambda V, rows: objective.hvp(curv, V, rows), np.asarray(G), precond, rtol, maxiter)
    steps = tf.transpose(project_out_gauge(tf.constant(res.x.T, dtype=objective.Xa.dtype), objective.spec))
    return steps, res


def _rows(objective: LogisticObjective, Theta, G, rows):
    """The sub-problem ``rows``, its parameter rows and its gradient rows (the whole batch when all)."""
    if len(rows) == objective.B:
        return objective, Theta, G
    return objective.columns(rows), tf.gather(Theta, rows), tf.gather(G, rows)


def _project_rows(X, spec: ModelSpec):
    """Rows of X (B, d) without their gauge component."""
    return tf.transpose(project_out_gauge(tf.transpose(X), spec))


# ------------------------------------------------------------------ step rules

def _gradient_rows(objective, Theta, rows, G_fill):
    """``G_fill`` with the rows ``rows`` replaced by the gradients at ``Theta[rows]``."""
    if len(rows) == objective.B:
        return objective.gradient(Theta)
    if len(rows) == 0:
        return G_fill
    G_rows = objective.columns(rows).gradient(tf.gather(Theta, rows))
    return tf.tensor_scatter_nd_update(G_fill, rows[:, None], G_rows)


def _objective_rows(objective, Theta, rows):
    """Objectives at ``Theta[rows]`` (NumPy, length B; +inf elsewhere)."""
    f = np.full(objective.B, np.inf)
    if len(rows) == objective.B:
        return objective.loss(Theta).numpy()
    if len(rows):
        f[rows] = objective.columns(rows).loss(tf.gather(Theta, rows)).numpy()
    return f


def certified_step(objective, Theta, G, gnorm, step, active):
    """Take ``Theta - t * step`` on the active problems; returns (cand, G_c, n_c, good, t).

    The full step is kept where it cuts the gradient norm (the certified quantity) by
    10 %. Elsewhere the full step is kept if it passes the Armijo test on the objective
    and does not go far past the minimum along the direction (the directional derivative
    there at most a tenth of its start value: the strong Wolfe conditions), else the step
    goes near that minimum (:func:`line_minimum`); where the predicted decrease is below
    the rounding resolution of f, the full step is kept if it lowers the gradient norm at
    all. ``good`` marks the problems that moved; the others keep
    their iterate (``cand = Theta`` there).
    """
    dtype = Theta.dtype
    eps = np.finfo(dtype.as_numpy_dtype).eps
    cand = Theta - step
    # Only the active problems are evaluated (the others keep G: cand = Theta there).
    G_c = _gradient_rows(objective, cand, np.flatnonzero(active), G)
    n_c = tf.norm(G_c, axis=1).numpy()
    t = np.where(active, 1.0, 0.0)
    good = active & (n_c <= 0.9 * gnorm)
    bad = active & ~good
    if bad.any():
        f0 = _objective_rows(objective, Theta, np.flatnonzero(bad))
        slope = tf.reduce_sum(G * step, axis=1).numpy()
        resolvable = slope > 1e3 * eps * np.maximum(np.abs(f0), 1.0)
        good |= bad & ~resolvable & (n_c < gnorm)
        search = bad & resolvable
        t_s = np.where(search, 1.0, 0.0)
        f1 = _objective_rows(objective, cand, np.flatnonzero(search))
        d1 = -tf.reduce_sum(G_c * step, axis=1).numpy()
        # The full step is kept where it passes the Armijo test and does not go far past the
        # minimum along the direction (the strong Wolfe conditions' upper side).
        accepted = ~search | (np.isfinite(f1) & (f1 <= f0 - 1e-4 * slope) & (d1 <= 0.1 * slope))
        if not accepted.all():
            rows = np.flatnonzero(~accepted)
            t_r, ok_r = line_minimum(objective, Theta, step, rows, f0[rows], slope[rows], d1[rows])
            t_s[rows], accepted[rows] = t_r, ok_r
        searched = search & accepted
        if searched.any():
            t = np.where(searched, t_s, t)
            cand = Theta - tf.constant(np.where(searched | good, t, 0.0), dtype=dtype)[:, None] * step
            G_c = _gradient_rows(objective, cand, np.flatnonzero(searched), G_c)
            n_c = tf.norm(G_c, axis=1).numpy()
            good |= searched
    return cand, G_c, n_c, good, t


def line_minimum(objective, Theta, step, rows, f0, slope, d1, c2: float = 0.1, max_evals: int = 40):
    """Step lengths ``t`` in (0, 1) near the minimum of ``phi(t) = f(Theta - t step)`` for the
    problems ``rows`` whose full step failed the strong Wolfe conditions (the objective is
    convex, so ``phi'`` increases: ``phi'(0) = -slope < 0``; ``d1 = phi'(1)``).

    Safeguarded regula falsi (Illinois) on ``phi'`` until ``|phi'(t)| <= c2 slope`` and the
    Armijo test holds: on the large, poorly scaled problems where the loss is far from
    quadratic along a Newton direction (spam's raw word counts at a small
    ``--fixed-reg``), a full step that passes the Armijo test, or half of one that does not,
    can go far past that minimum and grow the gradient, and the iterations then cycle. A
    problem whose bracket is not closed (``phi'(1) <= 0``: rounding) or that runs out of
    evaluations falls back to halving from ``t = 1``. Returns (t, accepted) for ``rows``."""
    dtype = Theta.dtype
    obj_r = objective.columns(rows) if len(rows) < objective.B else objective
    Th_r, step_r = tf.gather(Theta, rows), tf.gather(step, rows)
    m = len(rows)
    lo, hi = np.zeros(m), np.ones(m)
    d_lo, d_hi = -slope.astype(np.float64), d1.astype(np.float64)
    t = np.ones(m)
    done = np.zeros(m, dtype=bool)
    bracket = np.isfinite(d_hi) & (d_hi > 0)
    side = np.zeros(m, dtype=np.int8)  # the end kept twice in a row (Illinois)
    for _ in range(max_evals):
        going = bracket & ~done
        if not going.any():
            break
        t = np.where(going, (lo * d_hi - hi * d_lo) / (d_hi - d_lo), t)
        width = hi - lo
        t = np.where(going, np.clip(t, lo + 1e-3 * width, hi - 1e-3 * width), t)
        f, g = obj_r.loss_gradient(Th_r - tf.constant(t, dtype=dtype)[:, None] * step_r)
        f = f.numpy().astype(np.float64)
        d = -tf.reduce_sum(g * step_r, axis=1).numpy().astype(np.float64)
        armijo = np.isfinite(f) & (f <= f0 - 1e-4 * t * slope)
        done |= going & armijo & (np.abs(d) <= c2 * slope)
        move = going & ~done
        left = move & ((d < 0) & armijo)  # the minimum is beyond t
        right = move & ~left
        lo, d_lo = np.where(left, t, lo), np.where(left, d, d_lo)
        hi, d_hi = np.where(right, t, hi), np.where(right, d, d_hi)
        # Illinois: the end that stays a second time has its derivative halved.
        d_hi = np.where(left & (side == 1), 0.5 * d_hi, d_hi)
        d_lo = np.where(right & (side == -1), 0.5 * d_lo, d_lo)
        side = np.where(left, 1, np.where(right, -1, side))
    rest = ~done
    if rest.any():  # halving from t = 1
        t = np.where(rest, 1.0, t)
        for _ in range(60):
            r = np.flatnonzero(rest)
            if r.size == 0:
                break
            t = np.where(rest, 0.5 * t, t)
            sub = obj_r.columns(r) if r.size < m else obj_r
            f = sub.loss(tf.gather(Th_r, r) - tf.constant(t[r], dtype=dtype)[:, None] * tf.gather(step_r, r)).numpy()
            ok = np.isfinite(f) & (f <= f0[r] - 1e-4 * t[r] * slope[r])
            done[r[ok]] = True
            rest[r[ok]] = False
    return t, done


def gradient_norm_backtracking(objective, Theta, G, gnorm, step, active, max_halvings: int = 40):
    """Backtracking on the gradient norm: ``t = 1, 1/2, ...`` until
    ``||grad(Theta - t step)|| <= (1 - 1e-4 t) ||grad(Theta)||`` (the Newton direction is a
    descent direction of ``||grad||^2``; unlike a test on the objective this resolves
    progress near the optimum, where decreases of the objective fall below its
    rounding). Same returns as :func:`certified_step`; gradient norms in float64."""
    dtype = Theta.dtype
    a = np.flatnonzero(active)
    obj_a, Th_a, G_a = _rows(objective, Theta, G, a)
    step_a = tf.gather(step, a)
    g0 = gnorm[a].astype(np.float64)
    t = np.ones(a.size)
    accepted = np.zeros(a.size, dtype=bool)
    new_Th, new_G, new_n = Th_a, G_a, g0.copy()
    for _ in range(max_halvings):
        todo = ~accepted
        cand = Th_a - tf.constant(t, dtype=dtype)[:, None] * step_a
        G_c = obj_a.gradient(cand)
        n_c = tf.norm(G_c, axis=1).numpy().astype(np.float64)
        ok = todo & np.isfinite(n_c) & (n_c <= (1.0 - 1e-4 * t) * g0)
        if ok.any():
            sel = tf.constant(ok)
            new_Th = tf.where(sel[:, None], cand, new_Th)
            new_G = tf.where(sel[:, None], G_c, new_G)
            new_n = np.where(ok, n_c, new_n)
            accepted |= ok
        if accepted.all():
            break
        t = np.where(accepted, t, 0.5 * t)
    return _scatter_rows(Theta, G, gnorm, a, new_Th, new_G, new_n, accepted, t)


def _scatter_rows(Theta, G, gnorm, rows, Th_r, G_r, n_r, good_r, t_r):
    """Full-batch (cand, G_c, n_c, good, t) from the results on ``rows``."""
    B = int(Theta.shape[0])
    if len(rows) == B:
        cand, G_c = Th_r, G_r
    else:
        cand = tf.tensor_scatter_nd_update(Theta, rows[:, None], Th_r)
        G_c = tf.tensor_scatter_nd_update(G, rows[:, None], G_r)
    n_c = np.asarray(gnorm, dtype=np.result_type(gnorm, n_r)).copy()
    n_c[rows] = n_r
    good, t = np.zeros(B, dtype=bool), np.zeros(B)
    good[rows], t[rows] = good_r, t_r
    return cand, G_c, n_c, good, t


def armijo_step(objective, Theta, G, gnorm, step, active, armijo: float = 1e-4, max_backtracks: int = 50):
    """Armijo backtracking on the objective, one problem at a time (the certified fit).

    Where the predicted decrease is below the rounding resolution of f, an Armijo test
    is meaningless: the full step is taken if it lowers the gradient norm (the
    certified quantity), else the problem has reached the floating-point floor. Same
    returns as :func:`certified_step`."""
    a = np.flatnonzero(active)
    eps = np.finfo(Theta.dtype.as_numpy_dtype).eps
    Th_r, G_r, n_r, good_r, t_r = [], [], [], np.zeros(a.size, dtype=bool), np.ones(a.size)
    for k, j in enumerate(a):
        obj_j, theta, _ = _rows(objective, Theta, G, np.array([j]))
        g, p = (G, step) if objective.B == 1 else (G[j:j + 1], step[j:j + 1])
        f0 = float(obj_j.loss(theta)[0])
        slope = float(tf.reduce_sum(g * p))
        cand, g_c = theta, g
        if not slope > 1e3 * eps * max(abs(f0), 1.0):
            trial = theta - p
            g_t = obj_j.gradient(trial)
            good_r[k] = float(tf.norm(g_t)) < gnorm[j]
            if good_r[k]:
                cand, g_c = trial, g_t
        else:
            t = 1.0
            for _ in range(max_backtracks):
                trial = theta - t * p
                f1 = float(obj_j.loss(trial)[0])
                if np.isfinite(f1) and f1 <= f0 - armijo * t * slope:
                    good_r[k] = True
                    break
                t *= 0.5
            if good_r[k]:
                cand, g_c = trial, obj_j.gradient(trial)
            t_r[k] = t
        Th_r.append(cand)
        G_r.append(g_c)
        n_r.append(tf.norm(g_c, axis=1).numpy()[0])
    return _scatter_rows(Theta, G, gnorm, a, tf.concat(Th_r, axis=0), tf.concat(G_r, axis=0),
                         np.array(n_r), good_r, t_r)

# ------------------------------------------------------------------ strategies

class NewtonStrategy:
    """How the Newton directions of a batch are found, and how a step is taken.

    ``start`` is called once with the starting rows; ``directions`` returns the (B, d)
    directions (rows of inactive problems are ignored); ``rejected`` returns the
    problems whose failed step means the floating-point floor; ``update`` sees the
    accepted steps (``ratio`` = new / old gradient norm, ``t`` the step length).
    ``hessians`` and ``hvps`` count full Hessians and Hessian-vector products.
    """

    search = staticmethod(certified_step)

    def start(self, objective, Theta, G, gnorm, scale) -> None:
        B = objective.B
        self.scale = np.array(scale, dtype=np.float64)  # a copy: admit() rewrites slots
        self.hessians = np.zeros(B, dtype=np.int64)
        self.hvps = np.zeros(B, dtype=np.int64)

    def admit(self, objective, Theta, G, gnorm, slots: np.ndarray, problems: np.ndarray, scale) -> None:
        """New problems ``problems`` (ids of the :class:`ProblemQueue`) take the batch slots
        ``slots`` (continuous batching): ``objective``, ``Theta``, ``G`` and ``gnorm`` already
        hold them there; their state starts afresh, as in :meth:`start`."""
        self.scale[slots] = scale
        self.hessians[slots] = 0
        self.hvps[slots] = 0

    def retire(self, slots: np.ndarray) -> None:
        """The problems in ``slots`` have stopped and left the batch (continuous batching):
        free what they hold."""

    def directions(self, objective, Theta, G, gnorm, active):
        raise NotImplementedError

    def pending(self, B: int) -> np.ndarray:
        """The problems whose direction :meth:`directions` has not finished (they take no
        step this iteration and keep their iterate, iteration count and age)."""
        return np.zeros(B, dtype=bool)

    def rejected(self, active, good) -> np.ndarray:
        return active & ~good

    def update(self, objective, Theta, active, good, ratio, t, gnorm, tols) -> None:
        pass


class ExplicitNewton(NewtonStrategy):
    """A fresh Hessian at every iterate of the active problems
    (:meth:`LogisticObjective.hessians` by ``hessian_method``), solved by Cholesky with
    the LU fall-back. ``search``: :func:`gradient_norm_backtracking` (default) or
    :func:`armijo_step`."""

    def __init__(self, hessian_method: str = "auto", search=gradient_norm_backtracking):
        self.hessian_method = hessian_method
        self.search = search

    def directions(self, objective, Theta, G, gnorm, active):
        a = np.flatnonzero(active)
        obj_a, Th_a, G_a = _rows(objective, Theta, G, a)
        X = _project_rows(spd_solve(obj_a.hessians(Th_a, method=self.hessian_method), G_a[:, :, None])[:, :, 0],
                          objective.spec)
        return X if len(a) == objective.B else tf.scatter_nd(a[:, None], X, tf.shape(G, out_type=tf.int64))


class NewtonCG(NewtonStrategy):
    """Inexact Newton: CG (:func:`cg_directions`) on the exact Hessians to the relative
    residual ``max(min(forcing, max(sqrt(||grad|| / scale), margin * tol / ||grad||)) *
    tighten, floor)``, locally superlinear; one CG iteration for the whole batch is two
    matrix products with the design.

    ``margin``: a problem above its certificate ``tol`` (known after the first accepted
    step) is asked for no smaller residual than reaches ``margin * tol`` after a full step,
    so the last step does not over-solve (the certificate is unchanged); 0 turns this off.

    ``preconditioner(R, rows)``: a fixed SPD approximation of the inverse Hessians, or
    None to take ``path(objective, theta)`` at the current iterate (a
    :class:`PathPreconditioner`, a new one when None: :func:`make_preconditioner`),
    rebuilt once a CG run needs more than ``rebuild_after`` iterations. ``tighten``: a rejected step is
    retried with a 1000x tighter CG residual (down to 1e-8 of the original) before the
    problem stops.
    """

    def __init__(self, preconditioner=None, maxiter: int | None = None, forcing: float = 0.1,
                 floor: float = 1e-15, tighten: bool = True, rebuild_after: int | None = None,
                 search=certified_step, margin: float = 0.0, path: "PathPreconditioner | None" = None):
        self.preconditioner, self.maxiter, self.forcing, self.floor = preconditioner, maxiter, forcing, floor
        self.tighten_on_failure, self.rebuild_after, self.search = tighten, rebuild_after, search
        self.margin = margin
        self.path = path

    def start(self, objective, Theta, G, gnorm, scale) -> None:
        super().start(objective, Theta, G, gnorm, scale)
        self.tighten = np.ones(objective.B)
        self.tols = np.zeros(objective.B)  # the certificates, known after the first step
        if self.maxiter is None:
            self.maxiter = 10 * objective.spec.num_params

    def directions(self, objective, Theta, G, gnorm, active):
        a = np.flatnonzero(active)
        if self.preconditioner is None:
            if self.path is None:
                self.path = PathPreconditioner()
            self.preconditioner = self.path(objective, Theta[0])
        g, tol = gnorm[a], self.tols[a]
        enough = np.where(g > tol, self.margin * tol / np.maximum(g, 1e-300), 0.0)
        eta = np.minimum(self.forcing, np.maximum(np.sqrt(g / self.scale[a]), enough)) * self.tighten[a]
        obj_a, Th_a, G_a = _rows(objective, Theta, G, a)
        precond = self.preconditioner if len(a) == objective.B else self.preconditioner.restricted(a)
        step_a, cg = cg_directions(obj_a, Th_a, G_a.numpy(), precond, np.maximum(eta, self.floor), self.maxiter)
        self.hvps[a] += cg.iterations
        if self.rebuild_after is not None and cg.iterations.max() > self.rebuild_after:
            self.preconditioner = None
            if self.path is not None:
                self.path.stale()
        return step_a if len(a) == objective.B else tf.scatter_nd(a[:, None], step_a, tf.shape(G, out_type=tf.int64))

    def admit(self, objective, Theta, G, gnorm, slots, problems, scale) -> None:
        super().admit(objective, Theta, G, gnorm, slots, problems, scale)
        self.tighten[slots] = 1.0
        self.tols[slots] = 0.0

    def update(self, objective, Theta, active, good, ratio, t, gnorm, tols) -> None:
        self.tols = np.array(tols, dtype=np.float64)  # a copy: admit() zeroes new slots

    def rejected(self, active, good) -> np.ndarray:
        failed = active & ~good
        if not self.tighten_on_failure:
            return failed
        stalled = failed & (self.tighten < 1e-8)
        self.tighten = np.where(failed, 1e-3 * self.tighten, self.tighten)
        return stalled


class FactorChord(NewtonStrategy):
    """Quasi-Newton steps of the refits without groups with the dense Hessian (the ``cg``
    refits, :func:`influence.refit.refit_chunk_factor`): L-BFGS whose initial Hessian is
    problem j's chord matrix ``H_hat - H_{U_j}`` at theta_hat (its exact Hessian at the
    start). The chord matrix is applied by :class:`DowndatedHessians` (``chords``) and
    inverted by CG preconditioned by ``H_hat``'s factor to the relative residual
    ``max(min(chord_rtol, sqrt(||grad|| / scale)), margin * tol / ||grad||)``; the
    ``memory`` latest steps and gradient changes correct it (the two-loop recursion), so
    the steps converge superlinearly where plain chord steps converge at the rate the
    Hessian moves (slowly for large groups). The gradients (and certificates) are always
    those of the refit objective at the iterate.

    A problem whose step fails or cuts the gradient norm by less than half goes on by
    Newton-CG on its exact Hessian at the iterate (:func:`cg_directions`, products through
    the data) preconditioned by the same factor, with :class:`NewtonCG`'s forcing term and
    its 1000x tightening after a failed step.
    """

    def __init__(self, chords: "DowndatedHessians", maxiter: int | None = None, chord_rtol: float = 1e-3,
                 forcing: float = 0.1, margin: float = 0.1, floor: float = 1e-15, memory: int = 10):
        self.chords, self.factor = chords, chords.factor
        self.maxiter, self.chord_rtol, self.forcing, self.margin, self.floor = (maxiter, chord_rtol, forcing,
                                                                                margin, floor)
        self.memory = memory

    def start(self, objective, Theta, G, gnorm, scale) -> None:
        super().start(objective, Theta, G, gnorm, scale)
        B = objective.B
        self.newton = np.zeros(B, dtype=bool)   # problems that left the quasi-Newton steps
        self.tighten = np.ones(B)
        self.tols = np.zeros(B)
        self.pairs = [[] for _ in range(B)]      # per slot: (s, y, 1 / y.s), oldest first
        self.last = None                          # (Theta, G) where the directions were last taken
        self.problem = np.arange(B)               # the chord matrix (problem id) of each slot
        if self.maxiter is None:
            self.maxiter = 10 * objective.spec.num_params

    def admit(self, objective, Theta, G, gnorm, slots, problems, scale) -> None:
        super().admit(objective, Theta, G, gnorm, slots, problems, scale)
        self.newton[slots] = False
        self.tighten[slots] = 1.0
        self.tols[slots] = 0.0
        self.problem[slots] = problems
        self.chords.load(problems)
        for j in slots:
            self.pairs[int(j)] = []
        if self.last is not None:  # no step from the previous problem's iterate to the new start
            Th, Gn = self.last[0].copy(), self.last[1].copy()
            Th[slots], Gn[slots] = tf.gather(Theta, slots).numpy(), tf.gather(G, slots).numpy()
            self.last = (Th, Gn)

    def retire(self, slots) -> None:
        for j in slots:
            self.pairs[int(j)] = []
        self.chords.release(self.problem[np.asarray(slots, dtype=np.int64)])

    def _floor(self, g, tol):
        return np.where(g > tol, self.margin * tol / np.maximum(g, 1e-300), 0.0)

    def _remember(self, Th, Gn) -> None:
        """The step and gradient change of every problem that moved since the last call."""
        if self.last is not None:
            S, Y = Th - self.last[0], Gn - self.last[1]
            for j in range(len(self.pairs)):
                sy = float(S[j] @ Y[j])
                if sy > 0 and np.any(S[j]):   # strictly convex: s.y > 0 wherever it moved
                    self.pairs[j] = (self.pairs[j] + [(S[j], Y[j], 1.0 / sy)])[-self.memory:]
        self.last = (Th, Gn)

    def directions(self, objective, Theta, G, gnorm, active):
        step = np.zeros((objective.B, objective.spec.num_params))
        Gn, Th = G.numpy(), Theta.numpy()
        self._remember(Th, Gn)
        qn = np.flatnonzero(active & ~self.newton)
        if qn.size:
            Q = Gn[qn].copy()
            alphas = []
            for k, j in enumerate(qn):  # first loop of the two-loop recursion, newest pair first
                a = []
                for s_, y_, rho in reversed(self.pairs[j]):
                    a.append(rho * float(s_ @ Q[k]))
                    Q[k] -= a[-1] * y_
                alphas.append(a[::-1])
            g = gnorm[qn]
            eta = np.maximum(np.minimum(self.chord_rtol, np.sqrt(g / self.scale[qn])), self._floor(g, self.tols[qn]))
            res = self.chords.solve(Q, self.problem[qn], np.maximum(eta, self.floor), self.maxiter)
            Rq = res.x
            for k, j in enumerate(qn):  # second loop, oldest pair first
                for (s_, y_, rho), a in zip(self.pairs[j], alphas[k]):
                    Rq[k] += (a - rho * float(y_ @ Rq[k])) * s_
            step[qn] = Rq
            self.hvps[qn] += res.iterations
        newton = np.flatnonzero(active & self.newton)
        if newton.size:
            g = gnorm[newton]
            eta = np.minimum(self.forcing, np.maximum(np.sqrt(g / self.scale[newton]),
                                                      self._floor(g, self.tols[newton]))) * self.tighten[newton]
            obj_n, Th_n, _ = _rows(objective, Theta, G, newton)
            steps_n, res = cg_directions(obj_n, Th_n, Gn[newton], self.factor, np.maximum(eta, self.floor),
                                         self.maxiter)
            step[newton] = steps_n.numpy()
            self.hvps[newton] += res.iterations
        return _project_rows(tf.constant(step, dtype=G.dtype), objective.spec)

    def rejected(self, active, good) -> np.ndarray:
        failed = active & ~good
        stalled = failed & self.newton & (self.tighten < 1e-8)
        self.tighten = np.where(failed & self.newton, 1e-3 * self.tighten, self.tighten)
        self.newton |= failed  # a failed quasi-Newton step is retried by Newton-CG
        return stalled

    def update(self, objective, Theta, active, good, ratio, t, gnorm, tols) -> None:
        self.tols = np.array(tols, dtype=np.float64)  # a copy: admit() zeroes new slots
        self.newton |= good & (gnorm > self.tols) & ((ratio > 0.5) | (t < 1.0))


class Chord(NewtonStrategy):
    """Newton with a reused chord matrix per problem (the explicit refits).

    A problem keeps its chord matrix (the Hessian at an earlier iterate, or ``H_hat - H_U``
    at theta_hat) while steps with it cut the gradient norm at least by ``reuse_factor``;
    then CG on the exact Hessian preconditioned by it; when those are slow too, fail, or a
    step fails with a stale matrix, a fresh Hessian (:meth:`refresh`). Subclasses hold and
    solve the chord matrix (:meth:`chord_steps`, :meth:`preconditioner`, :meth:`refresh`).

    ``resume_cg``: the CG runs of the CG-mode problems are not held to the slowest of them.
    They keep their state between loop iterations (:class:`~influence.numerics.PCGRows`):
    once fewer than half of the rows a call began with are still iterating, those rows
    are left :meth:`pending` and resume in the next call beside the problems that start
    CG then, so every preconditioner call carries more rows. Each problem's direction is
    the same CG solve as without (only the rounding of the batched products differs).
    """

    resume_cg = False
    # The relative residual of a CG step, min(0.1, forcing(||grad|| / scale)): sqrt gives
    # locally quadratic convergence.
    forcing = staticmethod(np.sqrt)

    def __init__(self, reuse_factor: float = 0.25, cg_maxiter: int = 20, float32_preconditioner: bool | None = None):
        self.reuse_factor, self.cg_maxiter = reuse_factor, cg_maxiter
        self.float32_preconditioner = float32_preconditioner

    def start(self, objective, Theta, G, gnorm, scale) -> None:
        super().start(objective, Theta, G, gnorm, scale)
        B = objective.B
        if self.float32_preconditioner is None:
            self.float32_preconditioner = use_float32(objective.spec.num_params)
        self.fresh = np.ones(B, dtype=bool)     # chord matrix taken at the current iterate
        self.cg_mode = np.zeros(B, dtype=bool)  # next step by CG preconditioned by the chord matrix
        self.cg_failed = np.zeros(B, dtype=bool)
        self.retry = np.zeros(B, dtype=bool)
        self.waiting = np.zeros(B, dtype=bool)  # CG-mode problems whose CG run goes on
        self.cg = PCGRows(B, objective.spec.num_params) if self.resume_cg else None

    def admit(self, objective, Theta, G, gnorm, slots, problems, scale) -> None:
        super().admit(objective, Theta, G, gnorm, slots, problems, scale)
        self.fresh[slots] = True
        self.cg_mode[slots] = self.cg_failed[slots] = self.retry[slots] = self.waiting[slots] = False
        if self.cg is not None:
            self.cg.owner[slots] = -1

    def chord_steps(self, objective, G, rows: np.ndarray) -> tf.Tensor:
        """(B, d) steps whose rows ``rows`` are the chord solves of G's (others arbitrary)."""
        raise NotImplementedError

    def preconditioner(self, rows: np.ndarray) -> "Preconditioner":
        """The chord matrices of the problems ``rows`` as a CG preconditioner."""
        raise NotImplementedError

    def refresh(self, objective, Theta, rows: np.ndarray) -> None:
        """Fresh Hessians (and their factors) at ``Theta`` for the problems ``rows``."""
        raise NotImplementedError

    def exact_chords(self, B: int) -> np.ndarray:
        """Problems whose fresh chord matrix is an exact Hessian: a failed step there is the floor."""
        return np.ones(B, dtype=bool)

    def slow_cg(self, ratio, t) -> np.ndarray:
        """CG-mode problems that call for a fresh Hessian after an accepted step."""
        return self.cg_failed

    def pending(self, B: int) -> np.ndarray:
        return self.waiting

    def _cg_eta(self, gnorm, rows):
        return np.maximum(np.minimum(0.1, self.forcing(gnorm[rows] / self.scale[rows])), 1e-15)  # relative residual

    def _resumed_cg(self, objective, Theta, G, gnorm, cgr):
        """The CG directions of the CG-mode problems ``cgr`` that finish in this call
        (``resume_cg``); returns (their rows, steps (len, d) NumPy, iterations, converged)
        and marks the others :meth:`pending`."""
        cg, B = self.cg, objective.B
        cg.owner[np.setdiff1d(np.flatnonzero(cg.owner >= 0), cgr)] = -1  # left the CG mode meanwhile
        precond = self.preconditioner(np.arange(B))
        new = cgr[cg.owner[cgr] < 0]
        cg.start(new, new, tf.gather(G, new).numpy(), self._cg_eta(gnorm, new), precond)
        curv = objective.curvature(Theta)

        def matvec(V, rows):
            return objective.hvp(curv, V, rows)
        began = None
        while True:
            stopped = np.isin(cgr, cg.finished(self.cg_maxiter))
            going = cgr[~stopped]
            began = going.size if began is None else began
            if going.size == 0 or (stopped.any() and 2 * going.size < began):
                break
            cg.step(going, matvec, precond)
        done = cgr[stopped]
        X, its, _, conv = cg.release(done)
        self.waiting[going] = True  # directions() cleared it
        return done, X, its, conv

    def directions(self, objective, Theta, G, gnorm, active):
        step = self.chord_steps(objective, G, np.flatnonzero(active & ~self.cg_mode))
        cgr = np.flatnonzero(active & self.cg_mode)
        self.cg_failed = np.zeros(objective.B, dtype=bool)
        self.waiting = np.zeros(objective.B, dtype=bool)
        if cgr.size and self.cg is not None:
            done, X, its, conv = self._resumed_cg(objective, Theta, G, gnorm, cgr)
            if done.size:
                step = tf.tensor_scatter_nd_update(step, done[:, None],
                                                   _project_rows(tf.constant(X, dtype=step.dtype), objective.spec))
            self.hvps[done] += its
            self.cg_failed[done[~conv]] = True
        elif cgr.size:
            step_c, res = cg_directions(objective.columns(cgr), tf.gather(Theta, cgr), tf.gather(G, cgr).numpy(),
                                        self.preconditioner(cgr), self._cg_eta(gnorm, cgr), self.cg_maxiter)
            step = tf.tensor_scatter_nd_update(step, cgr[:, None], step_c)
            self.hvps[cgr] += res.iterations
            self.cg_failed[cgr[~res.converged]] = True
        # A failed chord solve (NaN) leaves a non-finite step: the search rejects it and the
        # problem gets a fresh Hessian (rejected / update).
        return tf.where(active[:, None], step, tf.zeros_like(step))

    def rejected(self, active, good) -> np.ndarray:
        # A failed step with a stale chord matrix gets a fresh Hessian and another try; only
        # a failure with a fresh exact Hessian means the floating-point floor.
        self.retry = active & ~good & ~self.fresh
        return active & ~good & self.fresh & self.exact_chords(len(good))

    def update(self, objective, Theta, active, good, ratio, t, gnorm, tols) -> None:
        unfinished = good & (gnorm > tols)
        slow_chord = unfinished & ~self.cg_mode & ((ratio > self.reuse_factor) | (t < 1.0))
        slow_cg = unfinished & self.cg_mode & self.slow_cg(ratio, t)
        # A step that failed with a fresh chord matrix that is not an exact Hessian (e.g. a
        # downdate that is not positive definite) also gets a fresh Hessian.
        failed_start = active & ~good & self.fresh & ~self.exact_chords(objective.B)
        need = slow_cg | self.retry | failed_start
        self.cg_mode = (self.cg_mode | slow_chord) & ~need
        self.fresh = np.where(good, False, self.fresh)
        rows = np.flatnonzero(need)
        if rows.size:
            self.refresh(objective, Theta, rows)
            self.hessians[rows] += 1
            self.fresh[rows] = True


class ChordNewton(Chord):
    """:class:`Chord` with a Cholesky factor per problem (the explicit refits,
    :func:`influence.refit.refit_chunk`, and the fit of large binary models).

    Starts from the factors of ``start_hessians``: (B, d, d), e.g. ``H_hat - H_U`` at
    theta_hat (``stale``: taken away from the start, e.g. at the optima of a neighbouring
    problem, so that a failed step gets a fresh Hessian), or None for the Hessians at the
    start. CG steps are also taken when a chord step cuts the gradient norm by less than
    half; fresh Hessians are formed ``hess_chunk`` problems at a time. No continuous
    batching: its problems are those of :meth:`start`.
    """

    def __init__(self, start_hessians, reuse_factor: float = 0.25, hess_chunk: int = 1, cg_maxiter: int = 20,
                 float32_preconditioner: bool | None = None, stale: bool = False):
        super().__init__(reuse_factor, cg_maxiter, float32_preconditioner)
        self.Hs, self.hess_chunk = start_hessians, hess_chunk
        self.stale = stale

    def start(self, objective, Theta, G, gnorm, scale) -> None:
        super().start(objective, Theta, G, gnorm, scale)
        if self.Hs is None:  # no start Hessians given: the Hessians at the start
            self.Hs = objective.hessians(Theta)
            self.hessians += 1
        elif self.stale:
            self.fresh[:] = False
        self.Ls, self.ok = cholesky_factors(self.Hs)

    def admit(self, objective, Theta, G, gnorm, slots, problems, scale) -> None:
        raise NotImplementedError("ChordNewton refits the problems it starts with; it takes no new ones")

    def chord_steps(self, objective, G, rows):
        # All problems in one batched solve (the inactive rows are masked by the caller).
        return _project_rows(solve_with_factors(self.Ls, self.ok, self.Hs, G[:, :, None])[:, :, 0], objective.spec)

    def preconditioner(self, rows):
        return BatchedCholeskyPreconditioner(self.Ls, self.ok, rows, self.float32_preconditioner)

    def slow_cg(self, ratio, t):
        return (ratio > 0.5) | (t < 1.0) | self.cg_failed

    def refresh(self, objective, Theta, rows):
        for idx in np.array_split(rows, max(1, int(np.ceil(len(rows) / self.hess_chunk)))):
            if len(idx) == objective.B:
                # Every problem at once: replace instead of scattering (no (B, d, d) copies).
                self.Hs = self.Ls = None
                self.Hs = objective.hessians(Theta)
                self.Ls, self.ok = cholesky_factors(self.Hs)
            else:
                H_new = objective.columns(idx).hessians(tf.gather(Theta, idx))
                L_new, ok_new = cholesky_factors(H_new)
                self.Hs = tf.tensor_scatter_nd_update(self.Hs, idx[:, None], H_new)
                self.Ls = tf.tensor_scatter_nd_update(self.Ls, idx[:, None], L_new)
                self.ok = tf.tensor_scatter_nd_update(self.ok, idx[:, None], ok_new)


class DowndateChord(Chord):
    """:class:`Chord` without a (d, d) matrix per problem (the explicit refits of large
    binary models, :func:`influence.refit.refit_chunk_downdate`).

    The chord matrix of problem b is ``H_hat - H_U`` at theta_hat, applied exactly through
    the Woodbury identity (:class:`influence.downdate.GroupDowndates`, ``downdates``). A
    problem that needs a fresh Hessian gets its own Cholesky factor, used from then on as
    :class:`ChordNewton` uses its factors (rare: the chord matrix is the exact Hessian at
    the start).
    """

    resume_cg = True  # a preconditioner call streams all of H^{-1}: the more rows, the better
    # Each CG iteration costs a Woodbury chord solve, so CG solves less tightly far from the
    # optimum: the fourth root (superlinear convergence of order 5/4 instead of 2) trades a
    # few more Newton iterations for fewer CG iterations (docs/performance.md).
    forcing = staticmethod(lambda r: np.sqrt(np.sqrt(r)))

    def __init__(self, downdates, reuse_factor: float = 0.25, cg_maxiter: int = 20,
                 float32_preconditioner: bool | None = None):
        super().__init__(reuse_factor, cg_maxiter, float32_preconditioner)
        self.downdates = downdates

    def start(self, objective, Theta, G, gnorm, scale) -> None:
        super().start(objective, Theta, G, gnorm, scale)
        self.own = {}  # slot -> solve with the Cholesky factor of a fresh Hessian
        self.problem = np.arange(objective.B)  # the downdate (problem id) of each slot

    def admit(self, objective, Theta, G, gnorm, slots, problems, scale) -> None:
        super().admit(objective, Theta, G, gnorm, slots, problems, scale)
        self.downdates.load(problems)
        self.problem[slots] = problems

    def retire(self, slots) -> None:
        for j in slots:
            self.own.pop(int(j), None)
        self.downdates.release(self.problem[slots])

    def exact_chords(self, B):
        return np.array([j in self.own for j in range(B)], dtype=bool)

    def solve(self, R: np.ndarray, rows: np.ndarray, float32: bool = False) -> np.ndarray:
        """The problems' chord solves for the rows of R (problem ``rows[k]`` for row k);
        ``float32``: the downdates' products with ``H^{-1}`` in float32 (a preconditioner)."""
        rows = np.asarray(rows, dtype=np.int64)
        own = np.array([int(j) in self.own for j in rows], dtype=bool)
        out = np.empty_like(R)
        if (~own).any():
            out[~own] = self.downdates.solve(R[~own], self.problem[rows[~own]], not float32)
        for k in np.flatnonzero(own):
            out[k] = self.own[int(rows[k])](R[k])
        return out

    def chord_steps(self, objective, G, rows):
        steps = np.zeros((objective.B, objective.spec.num_params))
        if rows.size:
            steps[rows] = self.solve(G.numpy()[rows], rows)
        return tf.constant(steps, dtype=G.dtype)

    def preconditioner(self, rows):
        return ChordSolvePreconditioner(self.solve, rows, self.float32_preconditioner)

    def refresh(self, objective, Theta, rows):
        for j in rows:  # one (d, d) Hessian at a time
            H = objective.columns(np.array([j])).hessians(Theta[j:j + 1])[0].numpy()
            self.own[int(j)] = spd_factor(H)
            del H

# ------------------------------------------------------------------ the loop

def _move(moved, cand, G_c, n_c, Theta, G, gnorm, iters, hist):
    """The problems ``moved`` take their candidates; counts the iteration (in place in
    ``iters``) and records the gradient norms in ``hist`` (a list, or None)."""
    Theta = tf.where(moved[:, None], cand, Theta)
    G = tf.where(moved[:, None], G_c, G)
    gnorm = np.where(moved, n_c, gnorm)
    iters += moved
    if hist is not None and moved.any():
        hist.append(gnorm.copy())
    return Theta, G, gnorm


@dataclass
class ProblemQueue:
    """All the problems ``0..total-1`` of a continuously batched :func:`newton_loop`: they
    wait in that order for one of the loop's B slots, and as soon as a problem stops
    (certified, stalled or out of iterations) its slot is refilled at once.

    ``weights(ps)``: the sample-weight columns of problems ``ps`` (int array), float64 array
    of shape (n, len(ps)); ``start(ps)``: their starting parameter rows (len(ps), d);
    ``tols`` and ``scales``: the certificate and gradient scale of every problem, (total,).
    ``costs`` (total,) and ``budget``: the working bytes of each problem and their bound
    for the running problems together (``--max-memory``); a free slot takes the first
    waiting problem that fits (so small problems fill the room a large one leaves), and a
    problem alone over the budget runs alone. None: the first waiting problem.
    ``on_finish(k)`` is called with the number of problems that stopped in an iteration
    (a progress bar's ``update``).
    """

    total: int
    weights: Callable[[np.ndarray], np.ndarray]
    start: Callable[[np.ndarray], np.ndarray]
    tols: np.ndarray
    scales: np.ndarray
    costs: np.ndarray | None = None
    budget: int | None = None
    on_finish: Callable[[int], None] | None = None

    def admits(self, running: np.ndarray, waiting: np.ndarray, free: int) -> np.ndarray:
        """Which of the ``waiting`` problems (in order) take up to ``free`` slots next to
        the ``running`` ones: the first-fit rule above."""
        if self.budget is None or self.costs is None:
            return waiting[:free]
        costs = np.asarray(self.costs, dtype=np.float64)
        used = float(costs[running].sum())
        take, left = [], np.ones(waiting.size, dtype=bool)
        while len(take) < free:
            ok = np.flatnonzero(left & (used + costs[waiting] <= self.budget))
            if ok.size == 0:
                if take or running.size or not left.any():
                    break
                ok = np.flatnonzero(left)  # nothing running: the first one, even over the budget
            k = int(ok[0])
            take.append(int(waiting[k]))
            left[k] = False
            used += costs[waiting[k]]
        return np.asarray(take, dtype=np.int64)


class _Slots:
    """The per-problem results of a continuously batched loop, filled as problems stop."""

    def __init__(self, queue: ProblemQueue, d: int):
        P = queue.total
        self.queue = queue
        self.thetas, self.first_steps = np.zeros((P, d)), np.zeros((P, d))
        self.grad_norms = np.zeros(P)
        self.iterations, self.hessians, self.hvps = (np.zeros(P, dtype=np.int64) for _ in range(3))
        self.first_full, self.stalled = np.zeros(P, dtype=bool), np.zeros(P, dtype=bool)
        self.waiting = np.arange(P, dtype=np.int64)

    def retire(self, slots, owner, Theta, gnorm, iters, first_steps, first_full, stalled, strategy) -> None:
        ps = owner[slots]
        self.thetas[ps] = tf.gather(Theta, slots).numpy()
        self.grad_norms[ps], self.iterations[ps] = gnorm[slots], iters[slots]
        self.hessians[ps], self.hvps[ps] = strategy.hessians[slots], strategy.hvps[slots]
        self.first_steps[ps], self.first_full[ps], self.stalled[ps] = first_steps[slots], first_full[slots], \
            stalled[slots]
        owner[slots] = -1
        strategy.retire(slots)
        if self.queue.on_finish is not None:
            self.queue.on_finish(len(slots))

    def admit(self, owner) -> tuple[np.ndarray, np.ndarray]:
        """The free slots and the waiting problems that take them now."""
        free = np.flatnonzero(owner < 0)
        if free.size == 0 or self.waiting.size == 0:
            return free[:0], self.waiting[:0]
        take = self.queue.admits(owner[owner >= 0], self.waiting, free.size)
        self.waiting = self.waiting[~np.isin(self.waiting, take)]
        return free[:take.size], take

    def result(self, occupancy) -> RefitResult:
        tols = np.asarray(self.queue.tols)
        return RefitResult(self.thetas, self.grad_norms, tols, self.iterations, self.hessians,
                           self.grad_norms <= tols, self.first_steps, self.first_full, self.hvps, None,
                           self.stalled, np.asarray(occupancy, dtype=np.int64))


def newton_loop(objective: LogisticObjective, Theta, tols, strategy: NewtonStrategy, max_iter: int,
                scale=None, polish_steps: int = 0, history: bool = False, G0=None,
                queue: ProblemQueue | None = None) -> RefitResult:
    """Damped Newton on the B problems of ``objective`` from the rows of ``Theta``.

    ``tols``: the certificate of each problem (``||grad|| <= tols``), float64 (B,);
    ``scale``: the gradient scales the CG forcing terms use (default
    :meth:`LogisticObjective.grad_scales`). A problem stops when certified, when its
    step fails for good (``strategy.rejected``) or after ``max_iter`` iterations. With
    ``polish_steps``, certified problems then take up to that many further full steps,
    each kept only while it halves the gradient norm (an optimum accurate in parameter
    space on ill-conditioned data). ``G0``: the gradients at ``Theta`` when the caller has
    them (B, d), else one pass over the data. No warning here: see :func:`certify`.

    ``queue`` (continuous batching, :class:`ProblemQueue`): ``objective`` and ``Theta``
    give the B slots (their columns and rows are placeholders, and ``objective`` is
    changed in place); the queue's problems take the slots as they free up, each with
    its weight column, start row and certificate, so the batch stays full while problems
    wait, and the result has one row per problem of the queue. Every problem takes the
    steps it would take alone (only the rounding of the batched products can differ).
    ``occupancy`` in the result counts the problems iterated in each loop iteration (those
    still in a CG run that resumes later, :meth:`NewtonStrategy.pending`, included).
    """
    if queue is not None and (polish_steps or history):
        raise ValueError("a queue of problems (continuous batching) takes neither polish_steps nor history")
    B = objective.B
    G = objective.gradient(Theta) if G0 is None else tf.convert_to_tensor(G0, dtype=Theta.dtype)
    gnorm = tf.norm(G, axis=1).numpy()
    strategy.start(objective, Theta, G, gnorm, objective.grad_scales() if scale is None else scale)
    iters = np.zeros(B, dtype=np.int64)
    age = np.zeros(B, dtype=np.int64)  # loop iterations since the slot's problem started
    first_steps = np.zeros((B, objective.spec.num_params))
    first_full = np.zeros(B, dtype=bool)
    stalled = np.zeros(B, dtype=bool)
    hist = [gnorm.copy()] if history else None
    occupancy = []
    slots = owner = None
    if queue is not None:
        # Every slot starts empty (the rows given are placeholders): the first iteration
        # admits the first problems of the queue.
        slots, owner = _Slots(queue, objective.spec.num_params), np.full(B, -1, dtype=np.int64)
        tols = np.full(B, np.inf)
    while True:
        active = (gnorm > tols) & ~stalled & (age < max_iter)
        if queue is not None:
            done = np.flatnonzero((owner >= 0) & ~active)
            if done.size:
                slots.retire(done, owner, Theta, gnorm, iters, first_steps, first_full, stalled, strategy)
            free, new = slots.admit(owner)
            if new.size:
                Theta, G, gnorm = _admit(objective, strategy, queue, free, new, Theta, G, gnorm, tols)
                owner[free] = new
                iters[free] = age[free] = 0
                stalled[free] = first_full[free] = False
                first_steps[free] = 0.0
            active = (owner >= 0) & (gnorm > tols) & ~stalled & (age < max_iter)
            if new.size and not active[free].all():  # a new problem certified at its start
                continue
        if not active.any():
            break
        occupancy.append(int(active.sum()))
        step = strategy.directions(objective, Theta, G, gnorm, active)
        pending = strategy.pending(B)
        active = active & ~pending
        cand, G_c, n_c, good, t = strategy.search(objective, Theta, G, gnorm, step, active)
        stalled |= strategy.rejected(active, good)
        first = active & (age == 0)
        if first.any():
            first_steps[first] = np.where(good[:, None], (cand - Theta).numpy(), 0.0)[first]
            first_full[first] = (good & (t == 1.0))[first]
        ratio = n_c / np.maximum(gnorm, 1e-300)
        Theta, G, gnorm = _move(good, cand, G_c, n_c, Theta, G, gnorm, iters, hist)
        strategy.update(objective, Theta, active, good, ratio, t, gnorm, tols)
        age += ~pending
    if queue is not None:
        return slots.result(occupancy)
    polishing = gnorm <= tols
    for _ in range(polish_steps):
        if not polishing.any():
            break
        cand = Theta - strategy.directions(objective, Theta, G, gnorm, polishing)
        G_c = objective.gradient(cand)
        n_c = tf.norm(G_c, axis=1).numpy()
        polishing &= n_c <= 0.5 * gnorm
        Theta, G, gnorm = _move(polishing, cand, G_c, n_c, Theta, G, gnorm, iters, hist)
    return RefitResult(Theta.numpy(), gnorm, np.asarray(tols), iters, strategy.hessians, gnorm <= tols,
                       first_steps, first_full, strategy.hvps, hist, stalled, np.asarray(occupancy, dtype=np.int64))


def _admit(objective, strategy, queue: ProblemQueue, free, new, Theta, G, gnorm, tols):
    """Problems ``new`` of ``queue`` into the slots ``free``: their weight columns, start
    rows, gradients, certificates (``tols`` in place) and strategy state."""
    objective.set_columns(free, queue.weights(new))
    rows = tf.constant(np.asarray(queue.start(new), dtype=Theta.dtype.as_numpy_dtype), dtype=Theta.dtype)
    Theta = tf.tensor_scatter_nd_update(Theta, free[:, None], rows)
    G_new = objective.columns(free).gradient(rows)
    G = tf.tensor_scatter_nd_update(G, free[:, None], G_new)
    gnorm = gnorm.copy()
    gnorm[free] = tf.norm(G_new, axis=1).numpy()
    tols[free] = np.asarray(queue.tols)[new]
    strategy.admit(objective, Theta, G, gnorm, free, new, np.asarray(queue.scales)[new])
    return Theta, G, gnorm


# ------------------------------------------------------------------ preconditioners

# The one float32 rule of the preconditioners: from this many parameters on, their factors
# are applied in float32, halving the memory traffic; a preconditioner only steers CG (the
# float64 residuals, products and certificates are unchanged).
FLOAT32_MIN_PARAMS = 1024


def use_float32(num_params: int) -> bool:
    """Whether a preconditioner of a model with ``num_params`` parameters is applied in
    float32 (:data:`FLOAT32_MIN_PARAMS`)."""
    return num_params >= FLOAT32_MIN_PARAMS


class Preconditioner:
    """A fixed SPD approximation ``M_j`` of the Hessian of each problem j of a batch:
    ``precond(R, rows)`` returns the float64 rows ``M_j^{-1} R[k]`` (``j = rows[k]``; one
    shared ``M`` ignores ``rows``). The factors are computed in float64 when the object is
    built (the fit) and applied by :meth:`solve`, in float32 when ``float32`` is set
    (:func:`use_float32`)."""

    float32 = False

    @property
    def dtype(self):
        return np.float32 if self.float32 else np.float64

    def __call__(self, R: np.ndarray, rows=None) -> np.ndarray:
        return np.asarray(self.solve(np.asarray(R), rows), dtype=np.float64)

    def solve(self, R: np.ndarray, rows) -> np.ndarray:
        raise NotImplementedError

    def restricted(self, rows: np.ndarray) -> "Preconditioner":
        """The preconditioner of the sub-batch ``rows`` (its row k is problem ``rows[k]``);
        a shared ``M`` is its own restriction."""
        return self


class CholeskyPreconditioner(Preconditioner):
    """``M = H`` for an explicit regularised Hessian (gauge-fixed), applied by its
    Cholesky factor. ``factor_float32``: factor (and apply) in float32, half the time of
    the float64 factorisation, falling back to float64 where float32 finds H not positive
    definite."""

    def __init__(self, H, spec: ModelSpec, float32: bool | None = None, factor_float32: bool = False):
        H = K.gauge_fix(tf.convert_to_tensor(np.asarray(H, dtype=np.float64)), spec).numpy()
        if factor_float32:
            try:
                c, lower = scipy.linalg.cho_factor(H.astype(np.float32), lower=True, overwrite_a=True)
                self.float32, self._factor = True, (c, lower)
                return
            except np.linalg.LinAlgError:
                pass
        try:
            c, lower = scipy.linalg.cho_factor(H, lower=True, check_finite=True)
        except np.linalg.LinAlgError as exc:
            raise NotPositiveDefiniteError(
                f"the preconditioner Hessian (shape {H.shape}) is not positive definite: {exc}") from exc
        self.float32 = use_float32(spec.num_params) if float32 is None else float32
        self._factor = (c.astype(self.dtype, copy=False), lower)

    def solve(self, R, rows):
        return scipy.linalg.cho_solve(self._factor, R.T.astype(self.dtype, copy=False), check_finite=False).T


class UniformStartPreconditioner(Preconditioner):
    """The exact regularised Hessian (gauge-fixed as :class:`CholeskyPreconditioner` does) of
    a multinomial model at ``theta = 0``, the cold fits' start, where every probability is
    ``1 / K``: in the extended layout ``H = A kron C + l2 I_K kron diag(m)`` with
    ``A = (I - 1 1^T / K) / K``, ``C = Xa^T diag(s) Xa`` (E, E) and ``m`` one row's weight
    mask. ``A``'s eigenvectors split it: on each class row minus the rows' mean it is
    ``C / K + l2 diag(m)`` (one (E, E) Cholesky factor), on the mean the data term vanishes
    (``l2`` on the weights, the gauge term on the bias). Forming it costs ``n E^2`` flops
    instead of ``rows (K E)^2``. :meth:`make` returns None where that matrix is singular."""

    def __init__(self, spec: ModelSpec, factor, mean_diag):
        self.spec, self._factor, self._mean_diag = spec, factor, mean_diag
        self._inv, self._perm = spec.ext_inverse_permutation(), spec.ext_permutation()

    @classmethod
    def make(cls, spec: ModelSpec, Xn: np.ndarray, s: np.ndarray, l2_reg: float):
        K, E = spec.num_rows, spec.ext_dim
        C = np.zeros((E, E))
        rows = max(1, int(HESSIAN_BLOCK_BYTES // (8 * E)))
        for st in range(0, Xn.shape[0], rows):  # by blocks of rows: no weighted copy of the design
            Xb = Xn[st:st + rows]
            C += (Xb * s[st:st + rows, None]).T @ Xb
        m = spec.weight_mask()[spec.ext_inverse_permutation()][:E]
        B = C / K
        B[np.diag_indices(E)] += l2_reg * m
        mean_diag = l2_reg * m
        if spec.has_gauge:  # gauge_fix's constant: the mean of the Hessian's diagonal
            mean_diag[E - 1] += float(np.mean(np.diag(C) * (1.0 - 1.0 / K) / K + l2_reg * m))
        if not np.all(mean_diag > 0):
            return None
        try:
            factor = scipy.linalg.cho_factor(B, lower=True)
        except np.linalg.LinAlgError:
            return None
        return cls(spec, factor, mean_diag)

    def solve(self, R, rows):
        b, Kr, E = R.shape[0], self.spec.num_rows, self.spec.ext_dim
        R_ext = R[:, self._inv].reshape(b, Kr, E)
        mean = R_ext.mean(axis=1, keepdims=True)
        perp = (R_ext - mean).reshape(b * Kr, E)
        out = scipy.linalg.cho_solve(self._factor, perp.T, check_finite=False).T.reshape(b, Kr, E)
        out += mean / self._mean_diag
        return out.reshape(b, Kr * E)[:, self._perm]


class DiagonalPreconditioner(Preconditioner):
    """``M = diag(H)`` (Jacobi) of a binary model at one parameter vector
    (:meth:`LogisticObjective.hessian_diagonals`): ``O(nnz)`` to form and ``O(d)`` to apply,
    for the fits of large sparse binary models, whose CG iterations are then two sparse
    products each (a dense factor would cost ``d^3 / 3`` per fit)."""

    def __init__(self, objective: LogisticObjective, theta):
        theta = tf.convert_to_tensor(np.asarray(theta, dtype=np.float64))
        self.diag = objective.hessian_diagonals(theta[None])[0]
        # A zero column with no regularisation (e.g. an unused feature, l2 = 0) gives a zero
        # entry; any positive value keeps the preconditioner SPD there.
        self.diag = np.where(self.diag > 0, self.diag, 1.0)

    def solve(self, R, rows):
        return R / self.diag


class BlockDiagonalPreconditioner(Preconditioner):
    """The class-diagonal blocks of the regularised Hessian at one parameter vector.

    Block k (size E) is ``Xa^T diag(s p_k (1 - p_k)) Xa + l2 I_w``, the Hessian with the
    cross-class terms dropped; binary models have one block, the whole Hessian. Forming
    it costs ``K n E^2`` (the full multinomial Hessian costs ``K^2 n E^2``), so it is the
    default for models too large for explicit Hessians.
    """

    def __init__(self, spec: ModelSpec, theta, Xa, s, l2_reg, float32: bool | None = None):
        self.spec = spec
        self.float32 = use_float32(spec.num_params) if float32 is None else float32
        Xn = np.asarray(Xa.numpy() if hasattr(Xa, "numpy") else Xa, dtype=np.float64)
        theta = tf.convert_to_tensor(np.asarray(theta, dtype=np.float64))
        c = LogisticObjective(spec, tf.constant(Xn)).curvature(theta[None])[:, 0].numpy()
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        W = (s * c)[:, None] if spec.binary else s[:, None] * c * (1.0 - c)   # (n, K')
        E = spec.ext_dim
        mask_ext = spec.weight_mask()[spec.ext_inverse_permutation()].reshape(spec.num_rows, E)
        self._factors = []
        for k in range(W.shape[1]):
            Z = Xn * np.sqrt(W[:, k])[:, None]
            Hk = Z.T @ Z
            Hk[np.diag_indices(E)] += float(l2_reg) * mask_ext[k]
            # A tiny diagonal shift keeps the factor defined when a block is singular
            # (l2_reg = 0, a constant feature); a preconditioner need not be exact.
            Hk[np.diag_indices(E)] += 1e-12 * max(float(np.trace(Hk)) / E, 1e-300)
            c, lower = scipy.linalg.cho_factor(Hk, lower=True)
            self._factors.append((c.astype(self.dtype, copy=False), lower))
        self._inv, self._perm = spec.ext_inverse_permutation(), spec.ext_permutation()

    def solve(self, R, rows):
        b, Kr, E = R.shape[0], self.spec.num_rows, self.spec.ext_dim
        R_ext = R[:, self._inv].reshape(b, Kr, E).astype(self.dtype, copy=False)
        out = np.empty_like(R_ext)
        for k, f in enumerate(self._factors):
            out[:, k] = scipy.linalg.cho_solve(f, R_ext[:, k].T, check_finite=False).T
        return out.reshape(b, Kr * E)[:, self._perm]


class BatchedCholeskyPreconditioner(Preconditioner):
    """Each problem's own Cholesky factor (the stale factors of :class:`ChordNewton`):
    ``Ls`` (B, d, d) with ``ok`` (B,) False where the factor failed (CG then runs
    unpreconditioned there), for the problems ``problems``."""

    def __init__(self, Ls, ok, problems: np.ndarray, float32: bool):
        self.float32 = float32
        Ls = tf.gather(Ls, problems) if len(problems) < int(Ls.shape[0]) else Ls
        self.Ls = tf.cast(Ls, tf.float32) if float32 else Ls
        self.failed = ~np.asarray(ok)[problems]

    def solve(self, R, rows):
        # All problems in one batched solve (reading the factors once) rather than a
        # gather of the factors of the rows still iterating, which would copy them.
        full = np.zeros((len(self.failed), int(self.Ls.shape[-1])))
        full[rows] = R
        out = tf.linalg.cholesky_solve(self.Ls, tf.constant(full[:, :, None], dtype=self.Ls.dtype))[:, :, 0].numpy()
        out = out.astype(np.float64)
        out[self.failed] = full[self.failed]
        return out[rows]


class ChordSolvePreconditioner(Preconditioner):
    """The chord solves ``solve(R, problems, float32)`` of :class:`DowndateChord` for the
    problems ``problems`` (their products with ``H^{-1}`` in float32 when ``float32``)."""

    def __init__(self, solve, problems: np.ndarray, float32: bool):
        self._solve, self.problems, self.float32 = solve, problems, float32

    def solve(self, R, rows):
        return self._solve(np.asarray(R, dtype=np.float64), self.problems[rows], self.float32)

    def restricted(self, rows):
        return ChordSolvePreconditioner(self._solve, self.problems[rows], self.float32)


class HessianFactor(Preconditioner):
    """The exact regularised Hessian ``H`` at theta_hat, held only by its Cholesky factor
    ``L`` (``8 d^2`` bytes, float64, extended layout; gauge-fixed with ``c u u^T``, ``c`` the
    mean of its diagonal, as :func:`influence.objective.gauge_fix`): :meth:`solve` is
    ``H^{-1} R`` (two triangular solves) and :meth:`matvec` ``H V = L (L^T V)`` (two
    triangular products), ``2 d^2`` flops per vector each, at matrix-multiply speed for
    many rows at once.

    It is the operator of the dense cg routes as well as their preconditioner, so it stays
    float64 whatever :func:`use_float32` says: with the exact factor CG reaches a relative
    residual of 1e-10 in one or two iterations on ``H``, where a float32 factor (relative
    error about 1e-7 times the condition number) would need several.

    ``H_ext``: the regularised Hessian without gauge term in the extended layout
    (:meth:`LogisticObjective.hessian_ext`), C-contiguous float64; it is factored in place
    (the caller's array becomes the factor).
    """

    def __init__(self, H_ext: np.ndarray, spec: ModelSpec):
        d = spec.num_params
        if H_ext.shape != (d, d) or H_ext.dtype != np.float64 or not H_ext.flags.c_contiguous:
            raise ValueError(f"H_ext must be a C-contiguous float64 array of shape ({d}, {d}); "
                             f"got {H_ext.dtype} {H_ext.shape}")
        self.spec = spec
        K.gauge_fix_ext_inplace(H_ext, spec)
        # H_ext is symmetric, so its transpose (an F-ordered view) is the same matrix:
        # LAPACK factors it in place, without a copy.
        L, info = scipy.linalg.lapack.dpotrf(H_ext.T, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            raise NotPositiveDefiniteError(f"the regularised Hessian (shape {H_ext.shape}) is not positive "
                                           f"definite (Cholesky info {info})")
        self.L = L
        self._inv, self._perm = spec.ext_inverse_permutation(), spec.ext_permutation()

    @property
    def nbytes(self) -> int:
        return int(self.L.nbytes)

    def solve(self, R, rows=None):
        """``H^{-1} R[k]`` for the rows of R (m, d), float64."""
        R = np.asarray(R, dtype=np.float64)
        if R.shape[0] == 0:
            return R.copy()
        X, info = scipy.linalg.lapack.dpotrs(self.L, np.asfortranarray(R[:, self._inv].T), lower=1)
        return X.T[:, self._perm]

    def to_factor(self, R) -> np.ndarray:
        """Rows ``L^{-1} R[k]`` (one triangular solve; in the factor's extended layout), (m, d)."""
        R = np.asarray(R, dtype=np.float64)
        if R.shape[0] == 0:
            return R.copy()
        return scipy.linalg.solve_triangular(self.L, R[:, self._inv].T, lower=True, check_finite=False).T

    def from_factor(self, Y) -> np.ndarray:
        """Rows ``L^{-T} Y[k]`` back in the parameter layout (one triangular solve), (m, d)."""
        Y = np.asarray(Y, dtype=np.float64)
        if Y.shape[0] == 0:
            return Y.copy()
        return scipy.linalg.solve_triangular(self.L, Y.T, lower=True, trans="T", check_finite=False).T[:, self._perm]

    @property
    def frobenius(self) -> float:
        """``||L||_F = sqrt(trace H)``, a bound on ``||L||_2``."""
        if getattr(self, "_frobenius", None) is None:
            self._frobenius = float(np.sqrt(np.sum(np.square(np.tril(self.L)))))
        return self._frobenius

    def matvec(self, V) -> np.ndarray:
        """``H V[k]`` (gauge-fixed) for the rows of V (m, d), float64."""
        V = np.asarray(V, dtype=np.float64)
        if V.shape[0] == 0:
            return V.copy()
        W = scipy.linalg.blas.dtrmm(1.0, self.L, np.asfortranarray(V[:, self._inv].T), lower=1, trans_a=1,
                                    overwrite_b=1)
        W = scipy.linalg.blas.dtrmm(1.0, self.L, W, lower=1, overwrite_b=1)
        return W.T[:, self._perm]


def hessian_factor(spec: ModelSpec, theta, Xa, s, l2_reg) -> HessianFactor:
    """The :class:`HessianFactor` of the full regularised Hessian at ``theta``
    (``n d^2`` multiply-adds to form, ``d^3 / 3`` to factor; one (d, d) array in memory
    besides the row blocks the Hessian is formed from)."""
    Xn = to_numpy(Xa, np.float64, copy=False)
    s = to_numpy(s, np.float64).reshape(-1)
    # The design tensor itself when it is one (float64): no second copy of a large design.
    Xt = Xa if isinstance(Xa, tf.Tensor) and Xa.dtype == tf.float64 else tf.constant(Xn)
    obj = LogisticObjective(spec, Xt, None, tf.constant(s), float(l2_reg), Xa_np=Xn)
    return HessianFactor(obj.hessian_ext(np.asarray(theta, dtype=np.float64)), spec)


class DowndatedHessians:
    """The operators ``H_hat - H_U`` at theta_hat of groups U of one objective: products
    ``(H_hat - H_U) V`` through ``H_hat``'s :class:`HessianFactor` (``factor``) and the
    groups' own rows (:meth:`LogisticObjective.group_hvp`), ``O(d^2 + |U| d)`` per vector
    instead of a pass over all n points.

    ``base``: the full objective (B = 1, the base sample weights); ``groups``: index
    arrays; ``__call__(V, rows)`` returns ``(H_hat - H_{U_j}) V[k]`` for ``j = rows[k]``.

    The groups' rows are gathered from the design for every product, except those of the
    groups :meth:`load` holds (until :meth:`release`): a group's product reads its rows
    twice and is memory-bound, and the gather costs as much again, so a solver that
    applies the same ``H_U`` many times (the refits' chord steps) holds them, within its
    memory budget (:meth:`row_bytes`). ``float32``: the held rows are float32 (half the
    bytes, a product several times faster; its rounding, 1e-7 relative, is far below the
    residuals the refits' chord solves ask for); the factor and all other products stay
    float64.
    """

    def __init__(self, factor: HessianFactor, base: LogisticObjective, theta_hat, groups, float32: bool = False):
        self.factor, self.base, self.groups = factor, base, groups
        self.curv = base.curvature(tf.convert_to_tensor(np.asarray(theta_hat), dtype=base.Xa.dtype)[None])
        self.float32 = bool(float32)
        self.held: dict[int, tuple] = {}

    def row_bytes(self, j: int) -> int:
        """Bytes :meth:`load` holds for group j: its design rows, curvature and weights."""
        spec = self.base.spec
        width = spec.ext_dim + (1 if spec.binary else spec.num_classes) + 1
        return (4 if self.float32 else 8) * len(self.groups[int(j)]) * width

    def load(self, ids) -> None:
        """Hold the rows of groups ``ids`` for their products (see the class)."""
        dtype = np.float32 if self.float32 else np.float64
        for j in np.asarray(ids, dtype=np.int64):
            idx = self.groups[int(j)]
            if len(idx) and int(j) not in self.held:
                self.held[int(j)] = self.base.group_rows(self.curv, idx, dtype)

    def release(self, ids) -> None:
        """Free the rows :meth:`load` holds for groups ``ids``."""
        for j in np.asarray(ids, dtype=np.int64):
            self.held.pop(int(j), None)

    def __call__(self, V: np.ndarray, rows) -> np.ndarray:
        out = self.factor.matvec(V)
        out -= self._group_products(V, rows)
        return out

    def _group_products(self, V, rows) -> np.ndarray:
        """Rows ``H_{U_j} V[k]`` (zero for empty groups)."""
        out = np.zeros_like(V)
        with one_blas_thread():  # small products next to TensorFlow's threads (see one_blas_thread)
            for k, j in enumerate(np.asarray(rows)):
                idx = self.groups[int(j)]
                if len(idx):
                    out[k] = self.base.group_hvp(self.curv, idx, V[k:k + 1], rows=self.held.get(int(j)))[0]
        return out

    def solve(self, B: np.ndarray, rows, rtol, maxiter: int, width: int | None = None) -> PCGResult:
        """``(H_hat - H_{U_j})^{-1} B[k]`` for ``j = rows[k]``: CG on the system split by the
        factor, ``(I - L^{-1} H_U L^{-T}) z = L^{-1} b``, ``x = L^{-T} z`` (the iterates of CG on
        ``H_hat - H_U`` preconditioned by ``H_hat``, for two triangular solves per iteration
        instead of two solves and two products). It stops at ``||L^{-1} r|| <= rtol ||b|| /
        ||L||_F``, which bounds the relative residual ``||r|| / ||b||`` by ``rtol`` (reported
        as that bound); ``width`` as :func:`influence.numerics.preconditioned_cg_rows`."""
        B = np.asarray(B, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.int64)
        C = self.factor.to_factor(B)
        bnorm, cnorm = np.linalg.norm(B, axis=1), np.linalg.norm(C, axis=1)
        scale = np.where(cnorm > 0, bnorm / np.maximum(cnorm, 1e-300), 1.0) / self.factor.frobenius
        has_rows = np.array([len(self.groups[int(j)]) > 0 for j in rows], dtype=bool)

        def matvec(P, r):
            out = P.copy()
            g = np.flatnonzero(has_rows[r])
            if g.size:
                out[g] -= self.factor.to_factor(self._group_products(self.factor.from_factor(P[g]), rows[r][g]))
            return out

        res = preconditioned_cg_rows(matvec, C, lambda R, r: R, np.asarray(rtol) * scale, maxiter, width)
        return PCGResult(self.factor.from_factor(res.x), res.iterations, res.residual_norms / scale, res.converged)


PRECONDITIONERS = ("auto", "hessian", "subsampled", "block")
# Below this many flops (rows x d^2), make_preconditioner forms its Hessian on one BLAS
# thread: next to TensorFlow's thread pool, threaded BLAS on such small products mostly
# waits for its threads.
PIN_HESSIAN_MAX_FLOPS = 1e10


def make_preconditioner(spec: ModelSpec, theta, Xa, s, l2_reg, kind: str = "auto",
                        max_rows: int = 10000, max_params: int = 12000, seed: int = 0,
                        float32: bool | None = None) -> Preconditioner:
    """The one choice of the fixed preconditioner of the Newton-CG routes, built at ``theta``
    (usually theta_hat).

    * ``'hessian'``: Cholesky of the full regularised Hessian (``n d^2`` flops to form);
    * ``'subsampled'``: Cholesky of the Hessian of ``max_rows`` training points drawn
      with ``seed``, reweighted to the total weight (``max_rows d^2``);
    * ``'block'``: :class:`BlockDiagonalPreconditioner` (``K n E^2``, memory ``K E^2``);
    * ``'auto'``: ``'subsampled'`` (``'hessian'`` when n <= max_rows) up to ``max_params``
      parameters, whose (d, d) factor then fits in about 1 GB; ``'block'`` beyond.

    ``float32``: apply the factors in float32; None: :func:`use_float32`. A Hessian of
    fewer than :data:`PIN_HESSIAN_MAX_FLOPS` flops is formed on one BLAS thread (the same
    factor: OpenBLAS splits syrk's output between threads, not its inner sums).

    Only the number of CG iterations depends on the choice, not the certified refits.
    """
    if kind not in PRECONDITIONERS:
        raise ValueError(f"kind must be one of {PRECONDITIONERS}; got {kind!r}")
    Xn = to_numpy(Xa, np.float64, copy=False)
    s = to_numpy(s, np.float64).reshape(-1)
    n = Xn.shape[0]
    if kind == "auto":
        kind = "block" if spec.num_params > max_params else ("hessian" if n <= max_rows else "subsampled")
    if kind == "block":
        return BlockDiagonalPreconditioner(spec, theta, Xn, s, l2_reg, float32)
    return CholeskyPreconditioner(preconditioner_hessian(spec, theta, Xn, s, l2_reg, kind, max_rows, seed), spec,
                                  float32)


def preconditioner_hessian(spec: ModelSpec, theta, Xn: np.ndarray, s: np.ndarray, l2_reg, kind: str,
                           max_rows: int = 10000, seed: int = 0, float32: bool = False) -> np.ndarray:
    """The regularised Hessian (no gauge term, float64 NumPy (d, d)) of the ``'hessian'`` and
    ``'subsampled'`` preconditioners of :func:`make_preconditioner` at ``theta``: on all rows
    of ``Xn`` (n, E), or on ``max_rows`` of them drawn with ``seed``, reweighted to the total
    weight ``s`` (n,). ``float32``: the multinomial products in float32 (twice the rate)."""
    n = Xn.shape[0]
    if kind == "subsampled" and n > max_rows:
        rows = np.sort(np.random.RandomState(seed).choice(n, max_rows, replace=False))
        total = s.sum()
        part = s[rows].sum()
        Xn, s = Xn[rows], s[rows] * (total / part if part > 0 else 1.0)
    small = Xn.shape[0] * float(spec.num_params) ** 2 < PIN_HESSIAN_MAX_FLOPS
    with one_blas_thread() if small else contextlib.nullcontext():
        Xa_np = Xn.astype(np.float32) if float32 and not spec.binary else Xn
        obj = LogisticObjective(spec, tf.constant(Xn), None, tf.constant(s), float(l2_reg), Xa_np=Xa_np)
        return obj.hessians(tf.constant(np.asarray(theta, dtype=np.float64))[None], method="syrk", gauge=False,
                            as_numpy=True, pin_blas=False)[0]


class PathPreconditioner:
    """The preconditioner of the Newton-CG fits along a regularisation path (the fits of one
    design and sample weights at several ``l2_reg``, :meth:`LogisticRegression.warm_fit`).

    Called as ``path(objective, theta)`` it returns the preconditioner of
    :func:`make_preconditioner` (``kind='auto'``) for the objective's ``l2_reg``. The data
    part ``D`` of its Hessian (the ``'hessian'`` or ``'subsampled'`` kinds: ``rows d^2``
    flops) is formed at the first iterate it is asked at and kept without the ``l2_reg``
    term, so a fit at another ``l2_reg`` costs one Cholesky factorisation of
    ``D + l2_reg * mask`` (``d^3 / 3`` flops) instead of a new Hessian. :meth:`stale` (CG
    needed too many iterations) drops ``D``: the next call forms it at the current iterate.
    At ``theta = 0`` (a cold start) of a multinomial model, while no ``D`` is kept, it
    returns the exact Hessian there (:class:`UniformStartPreconditioner`, ``n E^2`` flops).
    The ``'block'`` kind (more than ``max_params`` parameters) is built afresh on each call.
    ``hessians`` (``D`` formed) and ``factorizations`` count the work (public counters).

    ``float32``: ``D``'s products and the factorisations in float32 (None:
    :func:`use_float32`); with False the factor is :func:`make_preconditioner`'s, bit for
    bit, at the iterate and ``l2_reg`` it was formed at. The certified fits do not depend on
    the preconditioner beyond their certificates, only their CG iteration counts do.
    """

    def __init__(self, max_rows: int = 10000, max_params: int = 12000, seed: int = 0,
                 float32: bool | None = None):
        self.max_rows, self.max_params, self.seed, self.float32 = max_rows, max_params, seed, float32
        self.hessians = self.factorizations = 0
        self._D = self._factor = self._l2 = None

    def __call__(self, objective: LogisticObjective, theta) -> Preconditioner:
        spec, l2 = objective.spec, float(objective.l2)
        if spec.num_params > self.max_params:
            self.hessians += 1
            self.factorizations += 1
            return make_preconditioner(spec, theta, objective.Xa, objective.S[:, 0], l2, "block", float32=False)
        f32 = use_float32(spec.num_params) if self.float32 is None else self.float32
        if self._D is None and not spec.binary and not np.any(to_numpy(theta, np.float64)):
            # The cold start: the exact Hessian there is cheap (UniformStartPreconditioner).
            start = UniformStartPreconditioner.make(spec, to_numpy(objective.Xa, np.float64, copy=False),
                                                    to_numpy(objective.S[:, 0], np.float64).reshape(-1), l2)
            if start is not None:
                self.factorizations += 1
                self._factor, self._l2 = None, None
                return start
        if self._D is None:
            Xn = to_numpy(objective.Xa, np.float64, copy=False)
            kind = "hessian" if Xn.shape[0] <= self.max_rows else "subsampled"
            self._factor = None
            D = preconditioner_hessian(spec, theta, Xn, to_numpy(objective.S[:, 0], np.float64).reshape(-1),
                                       0.0, kind, self.max_rows, self.seed, f32)
            # Kept in the precision it was computed in (float32: half the memory, same values).
            self._D = D.astype(np.float32) if f32 and not spec.binary else D
            del D
            self.hessians += 1
        if self._factor is None or self._l2 != l2:
            self._factor = None
            H = self._D.astype(np.float64)
            H[np.diag_indices_from(H)] += l2 * spec.weight_mask()
            self._factor, self._l2 = CholeskyPreconditioner(H, spec, float32=False, factor_float32=f32), l2
            self.factorizations += 1
        return self._factor

    def stale(self) -> None:
        """Drop the data Hessian and its factor (formed afresh at the next call)."""
        self._D = self._factor = self._l2 = None
