"""Linear solvers and the certified Newton optimiser.

* :func:`inverse_vp` solves ``M X = V`` for an explicit symmetric matrix ``M`` by
  Cholesky (``'cholesky'``), LU (``'lu'``, TensorFlow Probability) or Cholesky with an
  explicit finiteness check and a logged fall-back to LU (``'cholesky_lu'``).
  ``tf.linalg.cholesky`` may return NaN instead of raising on a matrix that is not
  positive definite (tensorflow issues 61916, 62451), hence the explicit check.
* :func:`conjugate_gradient` solves ``A X = B`` column by column (vectorised) given a
  function computing ``A V``.
* :func:`preconditioned_cg_rows` solves one system per row of a batch (the Newton-CG
  directions of :mod:`influence.newton`).
* :func:`cholesky_factors` / :func:`solve_with_factors` / :func:`spd_solve`: the one
  Cholesky-to-LU fall-back for batches of explicit matrices.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

INVERSE_VP_METHODS = ("cholesky", "lu", "cholesky_lu")


class NotPositiveDefiniteError(ValueError):
    """Cholesky failed: the matrix is not (numerically) positive definite."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


def _as_matrix(V):
    V = tf.convert_to_tensor(V)
    return (V[:, None], True) if len(V.shape) == 1 else (V, False)


def cholesky_factor(M: tf.Tensor) -> tf.Tensor:
    """Lower Cholesky factor of ``M``; raises :class:`NotPositiveDefiniteError` on failure."""
    try:
        L = tf.linalg.cholesky(M)
    except tf.errors.InvalidArgumentError as exc:  # some builds raise instead of NaN
        raise NotPositiveDefiniteError(f"Cholesky failed: {exc.message}") from exc
    if not bool(tf.reduce_all(tf.math.is_finite(L))):
        raise NotPositiveDefiniteError("Cholesky produced non-finite values: the matrix is not positive definite")
    return L


def lu_solve(M: tf.Tensor, V: tf.Tensor) -> tf.Tensor:
    import tensorflow_probability as tfp  # lazy: TFP adds seconds to import time

    lower_upper, perm = tf.linalg.lu(M)
    return tfp.math.lu_solve(lower_upper, perm, V)


def cholesky_factors(M: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cholesky factors of a batch of matrices (B, d, d) and a bool mask (B,) of the
    finite ones. Failed factors (NaN, or an exception on builds that raise) are
    replaced by the identity once, here, so that solves need no per-call masking."""
    try:
        L = tf.linalg.cholesky(M)
    except tf.errors.InvalidArgumentError:
        L = tf.fill(tf.shape(M), tf.constant(np.nan, dtype=M.dtype))
    ok = tf.reduce_all(tf.math.is_finite(tf.reshape(L, [L.shape[0], -1])), axis=1)
    if not bool(tf.reduce_all(ok)):
        L = tf.where(ok[:, None, None], L, tf.eye(L.shape[-1], dtype=L.dtype))
    return L, ok


def solve_with_factors(L: tf.Tensor, ok, M: tf.Tensor, V: tf.Tensor) -> tf.Tensor:
    """``M[b]^{-1} V[b]`` for V of shape (B, d, m), by the factors of
    :func:`cholesky_factors`, and by LU (with a logged warning) where ``ok`` is False:
    the one Cholesky-to-LU fall-back of the package."""
    X = tf.linalg.cholesky_solve(L, V)
    ok = np.asarray(ok)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        logger.warning("Cholesky failed for %d of %d matrices (not numerically positive definite); "
                       "falling back to LU", len(bad), len(ok))
        fixed = tf.stack([lu_solve(M[b], V[b]) for b in bad])
        X = tf.tensor_scatter_nd_update(X, bad[:, None], fixed)
    return X


def spd_factor(M: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``V -> M^{-1} V`` for one NumPy matrix M (d, d): SciPy's Cholesky (``cho_factor``),
    or LU with a logged warning where M is not numerically positive definite (the NumPy
    side of the one Cholesky-to-LU fall-back)."""
    import scipy.linalg as sla
    try:
        factor = sla.cho_factor(M, lower=True)
        return lambda V: sla.cho_solve(factor, V)
    except np.linalg.LinAlgError:
        logger.warning("Cholesky failed for a %d x %d matrix (not numerically positive definite); "
                       "falling back to LU", *M.shape)
        lu = sla.lu_factor(M)
        return lambda V: sla.lu_solve(lu, V)


def spd_solve(M, V):
    """Solve ``M[b] X[b] = V[b]`` (M: (B, d, d), V: (B, d, m) tensors) by Cholesky, with LU
    where the factor is not finite (:func:`solve_with_factors`).

    A single NumPy matrix M (d, d) with V (d,) or (d, m) is solved with SciPy's LAPACK
    (``cho_factor``, LU on failure), which at small sizes beats TensorFlow's per-call
    overhead (the per-group Newton changes of :func:`influence.groups.newton_explicit`).
    """
    if isinstance(M, np.ndarray):
        return spd_factor(M)(V)
    L, ok = cholesky_factors(M)
    return solve_with_factors(L, ok, M, V)


def inverse_vp(M, V, method: str = "cholesky") -> tf.Tensor:
    """Solve ``M X = V``; V has shape (d,) or (d, m). Returns a tensor shaped like V."""
    if method not in INVERSE_VP_METHODS:
        raise ValueError(f"inverse_vp_method must be one of {INVERSE_VP_METHODS}; got {method!r}")
    M = tf.convert_to_tensor(M)
    V, squeeze = _as_matrix(tf.cast(V, M.dtype))
    if method == "lu":
        X = lu_solve(M, V)
    elif method == "cholesky":
        X = tf.linalg.cholesky_solve(cholesky_factor(M), V)
    else:
        X = spd_solve(M[None], V[None])[0]
    return X[:, 0] if squeeze else X


@dataclass
class CGResult:
    x: tf.Tensor
    iterations: int
    residual_norms: np.ndarray  # relative residual ||b - A x|| / ||b|| per column
    converged: bool


def conjugate_gradient(matvec: Callable[[tf.Tensor], tf.Tensor], B, tol: float = 1e-10,
                       maxiter: int | None = None, x0=None) -> CGResult:
    """Solve ``A X = B`` for symmetric positive-definite ``A`` given ``matvec(V) = A V``.

    ``B`` has shape (d,) or (d, m); the m columns are independent CG runs executed
    together (one ``matvec`` on a (d, m) block per iteration). A column stops updating
    once ``||b - A x|| <= tol * ||b||``.
    """
    B, squeeze = _as_matrix(B)
    d = int(B.shape[0])
    maxiter = maxiter if maxiter is not None else 10 * d
    X = tf.zeros_like(B) if x0 is None else _as_matrix(tf.cast(x0, B.dtype))[0]
    R = B - matvec(X) if x0 is not None else B
    P = R
    rs = tf.reduce_sum(R * R, axis=0)
    bnorm = tf.norm(B, axis=0)
    target = tf.square(tol * tf.where(bnorm > 0, bnorm, tf.ones_like(bnorm)))
    it = 0
    while it < maxiter:
        active = rs > target
        if not bool(tf.reduce_any(active)):
            break
        AP = matvec(P)
        pAp = tf.reduce_sum(P * AP, axis=0)
        alpha = tf.where(active, rs / tf.where(pAp > 0, pAp, tf.ones_like(pAp)), tf.zeros_like(rs))
        X = X + alpha * P
        R = R - alpha * AP
        rs_new = tf.reduce_sum(R * R, axis=0)
        beta = tf.where(active, rs_new / tf.where(rs > 0, rs, tf.ones_like(rs)), tf.zeros_like(rs))
        P = R + beta * P
        rs = rs_new
        it += 1
    rel = (tf.sqrt(rs) / tf.where(bnorm > 0, bnorm, tf.ones_like(bnorm))).numpy()
    converged = bool(np.all(rs.numpy() <= target.numpy()))
    if not converged:
        warnings.warn(
            f"conjugate gradient stopped after {it} iterations with relative residual "
            f"{rel.max():.3e} > tol={tol:g}; raise maxiter or check that the matrix is positive definite",
            ConvergenceWarning, stacklevel=2)
    return CGResult(X[:, 0] if squeeze else X, it, rel, converged)


@dataclass
class PCGResult:
    """Outcome of :func:`preconditioned_cg_rows` (one entry per row of the right-hand side)."""

    x: np.ndarray             # (b, d) solutions
    iterations: np.ndarray    # matrix-vector products spent on each row
    residual_norms: np.ndarray  # relative residual ||b - A x|| / ||b|| per row
    converged: np.ndarray     # bool per row


def preconditioned_cg_rows(matvec: Callable[[np.ndarray, np.ndarray], np.ndarray], B: np.ndarray,
                           precond: Callable[[np.ndarray, np.ndarray], np.ndarray], rtol,
                           maxiter: int) -> PCGResult:
    """Solve ``A_j x_j = b_j`` for every row j of ``B`` (shape (b, d)) by preconditioned CG.

    Each row has its own symmetric positive-definite operator: ``matvec(V, rows)`` returns
    ``A_j V[k]`` for ``j = rows[k]`` (V of shape (len(rows), d)), so a batch of problems
    is advanced by one batched product per iteration; rows that reached
    ``||b_j - A_j x_j|| <= rtol_j ||b_j||`` drop out of the product. ``precond(R, rows)``
    applies a fixed SPD approximation of ``A_j^{-1}`` (``j = rows[k]``) to the rows of R.
    """
    B = np.asarray(B, dtype=np.float64)
    b = B.shape[0]
    rtol = np.broadcast_to(np.asarray(rtol, dtype=np.float64), (b,))
    X = np.zeros_like(B)
    R = B.copy()
    Z = precond(R, np.arange(b))
    P = Z.copy()
    rz = np.einsum("ij,ij->i", R, Z)
    bnorm = np.linalg.norm(B, axis=1)
    target = rtol * np.where(bnorm > 0, bnorm, 1.0)
    rnorm = bnorm.copy()
    its = np.zeros(b, dtype=np.int64)
    broken = np.zeros(b, dtype=bool)
    for _ in range(maxiter):
        active = np.flatnonzero((rnorm > target) & ~broken)
        if active.size == 0:
            break
        Pa = P[active]
        AP = matvec(Pa, active)
        pAp = np.einsum("ij,ij->i", Pa, AP)
        alpha = rz[active] / np.where(pAp > 0, pAp, np.inf)
        X[active] += alpha[:, None] * Pa
        Ra = R[active] - alpha[:, None] * AP
        Za = precond(Ra, active)
        rz_new = np.einsum("ij,ij->i", Ra, Za)
        beta = rz_new / np.where(rz[active] > 0, rz[active], np.inf)
        P[active] = Za + beta[:, None] * Pa
        R[active] = Ra
        rz[active] = rz_new
        rnorm[active] = np.linalg.norm(Ra, axis=1)
        its[active] += 1
        # Non-positive curvature: the operator is not SPD in floating point. The row stops
        # where it is (alpha = 0 left it unchanged) and is reported as not converged.
        broken[active[~(pAp > 0)]] = True
    rel = rnorm / np.where(bnorm > 0, bnorm, 1.0)
    return PCGResult(X, its, rel, (rnorm <= target) & ~broken)
