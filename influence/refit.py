"""Exact, certified, batched refits after removing groups of training points.

For a group U the reduced objective is ``L_{-U}(theta) = L(theta) - sum_{i in U} s_i l_i``
(the group's weights set to zero). Every refit starts at ``theta_hat`` and runs damped
Newton iterations until ``||grad L_{-U}|| <= rtol * sum_{i not in U} s_i ||[x_i; 1]||``,
the same certificate as :meth:`LogisticRegression.fit`.

Speed comes from three exact devices:

* **Batching.** B groups are refitted together: logits, gradients and Hessians of all
  B problems are computed with matrix-matrix products over a weight matrix
  ``S`` of shape (n, B).
* **A cheap first step.** At ``theta_hat`` the reduced Hessian is ``H - H_U``; ``H`` is
  known, so only the group's own Hessian ``H_U`` (cost ``|U| d^2``) is formed. The first
  iterate, with a full step, is exactly the paper's one-step Newton approximation
  (up to the residual ``grad L(theta_hat)``, which the certified fit makes negligible).
* **Factor reuse.** A group keeps the Cholesky factor of its last Hessian while Newton
  steps with it reduce the gradient norm at least fourfold (a modified Newton / chord
  step, still certified by the gradient norm); the Hessian is recomputed at the current
  iterate only when progress slows. Small groups therefore converge without ever
  forming a full-data Hessian.

The work on a chunk of groups is the pure function :func:`refit_chunk`, so a
distributed engine can map it over chunks.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from influence import kernels as K
from influence.kernels import ModelSpec
from influence.solvers import ConvergenceWarning, lu_solve

logger = logging.getLogger(__name__)


@dataclass
class RefitResult:
    """Per-group outcome of :func:`refit_chunk` (arrays of length B unless noted)."""

    thetas: np.ndarray        # (B, d) refitted parameters
    grad_norms: np.ndarray    # ||grad L_{-U}|| at the returned parameters
    grad_tols: np.ndarray     # the certificate each was checked against
    iterations: np.ndarray    # Newton iterations (with or without a fresh Hessian)
    hessians: np.ndarray      # how many full-data Hessians were formed
    converged: np.ndarray     # bool
    first_steps: np.ndarray   # (B, d) first iterate minus theta_hat
    first_full_step: np.ndarray  # bool: the first line search accepted the full step


def _batched_solve(Ls, ok, Hs, G):
    """Solve with Cholesky factors where ``ok``, LU on ``Hs`` elsewhere. G: (B, d)."""
    X = tf.linalg.cholesky_solve(tf.where(ok[:, None, None], Ls, tf.eye(Ls.shape[-1], dtype=Ls.dtype)),
                                 G[:, :, None])[:, :, 0]
    if not bool(tf.reduce_all(ok)):
        bad = np.flatnonzero(~ok.numpy())
        logger.warning("Cholesky failed for %d refit Hessians; falling back to LU", len(bad))
        fixed = tf.stack([lu_solve(Hs[b], G[b][:, None])[:, 0] for b in bad])
        X = tf.tensor_scatter_nd_update(X, bad[:, None], fixed)
    return X


def _one_blas_thread():
    """One OpenBLAS thread for the (n x E)^T (n x E) products: on 2 cores shared with
    TensorFlow's pool, threaded BLAS spent most of its time spin-waiting."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _group_hessians(spec: ModelSpec, theta_hat, Xa, s_base, groups, Xa_np=None):
    """Unregularised Hessians ``H_U`` of the groups at ``theta_hat``, (B, d, d)."""
    dtype = Xa.dtype
    if spec.binary and Xa_np is not None:
        c = K.curvature(theta_hat, Xa, spec) * s_base
        Z = Xa_np * np.sqrt(c.numpy())[:, None]
        out = np.empty((len(groups), spec.num_params, spec.num_params))
        with _one_blas_thread():
            for b, idx in enumerate(groups):
                Zb = Z[np.asarray(idx, dtype=np.int64)]
                out[b] = Zb.T @ Zb  # BLAS syrk
        return tf.constant(out, dtype=dtype)
    H_U = []
    for idx in groups:
        idx = np.asarray(idx, dtype=np.int64)
        H_U.append(K.hessian(theta_hat, tf.gather(Xa, idx), tf.gather(s_base, idx), tf.constant(0.0, dtype), spec))
    return tf.stack(H_U)


def _gradient_rows(batch, Theta, rows, G_fill):
    """``G_fill`` with the rows ``rows`` replaced by the gradients at ``Theta[rows]``."""
    if len(rows) == batch.B:
        return batch.gradient(Theta)
    if len(rows) == 0:
        return G_fill
    G_rows = batch.columns(rows).gradient(tf.gather(Theta, rows))
    return tf.tensor_scatter_nd_update(G_fill, rows[:, None], G_rows)


def _objective_rows(batch, Theta, rows):
    """Objectives at ``Theta[rows]`` (NumPy, length B; +inf elsewhere)."""
    f = np.full(batch.B, np.inf)
    if len(rows) == batch.B:
        return batch.objective(Theta).numpy()
    if len(rows):
        f[rows] = batch.columns(rows).objective(tf.gather(Theta, rows)).numpy()
    return f


def _cholesky(Hs):
    Ls = tf.linalg.cholesky(Hs)
    ok = tf.reduce_all(tf.math.is_finite(tf.reshape(Ls, [Ls.shape[0], -1])), axis=1)
    return Ls, ok


def _to_ext_batch(Theta, spec):
    """(B, d) parameter rows → (B, K', E) extended layout."""
    B = tf.shape(Theta)[0]
    if spec.binary or not spec.fit_intercept:
        return tf.reshape(Theta, [B, spec.num_rows, spec.ext_dim])
    Kc, D = spec.num_rows, spec.input_dim
    W = tf.reshape(Theta[:, :Kc * D], [B, Kc, D])
    return tf.concat([W, Theta[:, Kc * D:, None]], axis=2)


def _from_ext_batch(T, spec):
    """(B, K', E) → (B, d)."""
    B = tf.shape(T)[0]
    if spec.binary or not spec.fit_intercept:
        return tf.reshape(T, [B, -1])
    D = spec.input_dim
    return tf.concat([tf.reshape(T[:, :, :D], [B, -1]), T[:, :, D]], axis=1)


class _Batch:
    """Tensors shared by the B problems of one chunk."""

    def __init__(self, spec: ModelSpec, Xa, y, S, l2, Xa_np=None):
        self.spec, self.Xa, self.y, self.S, self.l2 = spec, Xa, y, S, l2
        self.mask = tf.constant(spec.weight_mask(), dtype=Xa.dtype)
        self.B = int(S.shape[1])
        # NumPy copy of Xa for the binary Hessians (see :meth:`hessians`).
        self.Xa_np = Xa_np
        if not spec.binary:
            self.Y1 = tf.one_hot(tf.cast(y, tf.int32), spec.num_classes, dtype=Xa.dtype)  # (n, K)

    def columns(self, cols) -> "_Batch":
        """The sub-batch of problems ``cols`` (an int array), sharing the data tensors."""
        sub = _Batch.__new__(_Batch)
        sub.__dict__.update(self.__dict__)
        sub.S = tf.gather(self.S, cols, axis=1)
        sub.B = len(cols)
        return sub

    def logits(self, Theta):
        """Binary: (n, B); multinomial: (n, B, K)."""
        T = tf.reshape(_to_ext_batch(Theta, self.spec), [-1, self.spec.ext_dim])
        Z = tf.matmul(self.Xa, T, transpose_b=True)
        if self.spec.binary:
            return Z
        return tf.reshape(Z, [-1, self.B, self.spec.num_classes])

    def objective(self, Theta):
        Z = self.logits(Theta)
        if self.spec.binary:
            losses = tf.nn.softplus(Z) - self.y[:, None] * Z
        else:
            losses = tf.reduce_logsumexp(Z, axis=2) - tf.reduce_sum(Z * self.Y1[:, None, :], axis=2)
        return tf.reduce_sum(self.S * losses, axis=0) + 0.5 * self.l2 * tf.reduce_sum(self.mask * Theta * Theta, axis=1)

    def gradient(self, Theta):
        Z = self.logits(Theta)
        if self.spec.binary:
            R = self.S * (tf.sigmoid(Z) - self.y[:, None])        # (n, B)
            G = tf.matmul(R, self.Xa, transpose_a=True)            # (B, E)
        else:
            R = self.S[:, :, None] * (tf.nn.softmax(Z, axis=2) - self.Y1[:, None, :])  # (n, B, K)
            G_ext = tf.einsum("nbk,na->bka", R, self.Xa)
            G = _from_ext_batch(G_ext, self.spec)
        return G + self.l2 * self.mask * Theta

    def hessians(self, Theta):
        """Full-data reduced Hessians at each row of Theta, (B, d, d), gauge-fixed."""
        Z = self.logits(Theta)
        eye = tf.linalg.diag(self.l2 * self.mask)
        if self.spec.binary:
            p = tf.sigmoid(Z)
            W = self.S * p * (1.0 - p)                              # (n, B)
            if self.Xa_np is not None:
                # Z_b^T Z_b with Z_b = sqrt(W_b) Xa: a symmetric rank-n update (half the
                # flops of a general product), single-threaded BLAS (see _one_blas_thread).
                Wn = np.sqrt(W.numpy())
                Hs = np.empty((self.B, self.spec.ext_dim, self.spec.ext_dim))
                with _one_blas_thread():
                    for b in range(self.B):
                        Zb = self.Xa_np * Wn[:, b:b + 1]
                        Hs[b] = Zb.T @ Zb
                return tf.constant(Hs, dtype=self.Xa.dtype) + eye
            E = self.spec.ext_dim
            big = tf.reshape(W[:, :, None] * self.Xa[:, None, :], [-1, self.B * E])
            Hs = tf.transpose(tf.reshape(tf.matmul(self.Xa, big, transpose_a=True), [E, self.B, E]), [1, 0, 2])
            return Hs + eye
        P = tf.nn.softmax(Z, axis=2)
        Hs = tf.stack([K._multinomial_hessian_from_probs(P[:, b], self.Xa, self.S[:, b], self.spec)
                       for b in range(self.B)])
        return K.gauge_fix(Hs + eye, self.spec)


def refit_chunk(spec: ModelSpec, theta_hat, Xa, y, s_base, l2_reg, groups: Sequence[np.ndarray],
                hessian_hat=None, rtol: float = 1e-12, max_iter: int = 50,
                reuse_factor: float = 0.25, hess_chunk: int | None = None) -> RefitResult:
    """Refit without each group of ``groups`` (index arrays) starting from ``theta_hat``.

    ``Xa`` is the augmented design (see :func:`influence.kernels.augment`), ``y`` the
    labels, ``s_base`` the sample weights of the full objective. ``hessian_hat`` is the
    regularised full-data Hessian at ``theta_hat`` (computed if not given).
    """
    dtype = Xa.dtype
    n, d, B = int(Xa.shape[0]), spec.num_params, len(groups)
    if hess_chunk is None:
        # Full Hessians of several groups are formed together from an (n, b*E) block;
        # bound that block to ~256 MB.
        hess_chunk = int(max(1, (2 ** 28) // (n * spec.ext_dim * dtype.size * spec.num_rows)))
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    l2 = tf.constant(float(l2_reg), dtype=dtype)
    keep = np.ones((n, B))
    for b, idx in enumerate(groups):
        keep[np.asarray(idx, dtype=np.int64), b] = 0.0
    S = s_base[:, None] * tf.constant(keep, dtype=dtype)
    Xa_np = Xa.numpy() if spec.binary and dtype == tf.float64 else None
    batch = _Batch(spec, Xa, y, S, l2, Xa_np)
    theta_hat = tf.constant(np.asarray(theta_hat), dtype=dtype)
    Theta = tf.tile(theta_hat[None, :], [B, 1])
    row_norms = tf.norm(Xa, axis=1)
    tols = rtol * tf.maximum(tf.linalg.matvec(S, row_norms, transpose_a=True), 1.0)

    # First Hessian: H_hat - H_U at theta_hat (only the group's points are touched).
    if hessian_hat is None:
        hessian_hat = K.hessian(theta_hat, Xa, s_base, l2, spec)
    H_hat = tf.convert_to_tensor(hessian_hat, dtype=dtype)
    Hs = K.gauge_fix(H_hat[None] - _group_hessians(spec, theta_hat, Xa, s_base, groups, Xa_np), spec)
    Ls, ok = _cholesky(Hs)

    G = batch.gradient(Theta)
    gnorm = tf.norm(G, axis=1).numpy()
    tols_np = tols.numpy()
    iters = np.zeros(B, dtype=np.int64)
    n_hess = np.zeros(B, dtype=np.int64)
    first_steps = np.zeros((B, d))
    first_full = np.zeros(B, dtype=bool)
    stalled = np.zeros(B, dtype=bool)
    fresh = np.ones(B, dtype=bool)  # factor computed at the current iterate
    eps = np.finfo(dtype.as_numpy_dtype).eps
    for it in range(max_iter):
        active = (gnorm > tols_np) & ~stalled
        if not active.any():
            break
        step = tf.transpose(K.project_out_gauge(tf.transpose(_batched_solve(Ls, ok, Hs, G)), spec))
        step = tf.where(active[:, None], step, tf.zeros_like(step))
        # Full (modified-)Newton step first: kept where it cuts the gradient norm by 10 %
        # (the quantity we certify). Elsewhere fall back to an Armijo line search on the
        # objective, or, below the rounding resolution of f, stop (stalled).
        cand = Theta - step
        # Only the active problems are evaluated (the others keep G: cand = Theta there).
        G_c = _gradient_rows(batch, cand, np.flatnonzero(active), G)
        n_c = tf.norm(G_c, axis=1).numpy()
        t = np.where(active, 1.0, 0.0)
        good = active & (n_c <= 0.9 * gnorm)
        bad = active & ~good
        if bad.any():
            f0 = _objective_rows(batch, Theta, np.flatnonzero(bad))
            slope = tf.reduce_sum(G * step, axis=1).numpy()
            resolvable = slope > 1e3 * eps * np.maximum(np.abs(f0), 1.0)
            # Below resolution a gradient-norm decrease is all we can ask for.
            floor_ok = bad & ~resolvable & (n_c < gnorm)
            good |= floor_ok
            search = bad & resolvable
            t_s = np.where(search, 1.0, 0.0)
            accepted = ~search
            for _ in range(60):
                if accepted.all():
                    break
                trial = Theta - tf.constant(t_s, dtype=dtype)[:, None] * step
                f1 = _objective_rows(batch, trial, np.flatnonzero(~accepted))
                ok_ls = np.isfinite(f1) & (f1 <= f0 - 1e-4 * t_s * slope)
                accepted |= ok_ls
                t_s = np.where(accepted, t_s, 0.5 * t_s)
            searched = search & accepted
            if searched.any():
                t = np.where(searched, t_s, t)
                cand = Theta - tf.constant(np.where(searched | good, t, 0.0), dtype=dtype)[:, None] * step
                G_c = _gradient_rows(batch, cand, np.flatnonzero(searched), G_c)
                n_c = tf.norm(G_c, axis=1).numpy()
                good |= searched
            # A failed step with a stale factor gets a fresh Hessian and another try;
            # only a failure with a fresh Hessian means the floating-point floor.
            stalled |= active & ~good & fresh
        moved = good
        retry = active & ~good & ~stalled
        if it == 0:
            first_steps = np.where(moved[:, None], (cand - Theta).numpy(), 0.0)
            first_full = moved & (t == 1.0)
        ratio = n_c / np.maximum(gnorm, 1e-300)
        Theta = tf.where(moved[:, None], cand, Theta)
        G = tf.where(moved[:, None], G_c, G)
        gnorm = np.where(moved, n_c, gnorm)
        iters += moved
        # Recompute the Hessian at the new iterate where progress was slow.
        need = (moved & ((ratio > reuse_factor) | (t < 1.0)) & (gnorm > tols_np)) | retry
        fresh = np.where(moved, False, fresh)
        for idx in np.array_split(np.flatnonzero(need), max(1, int(np.ceil(need.sum() / hess_chunk)))):
            if len(idx) == 0:
                continue
            H_new = batch.columns(idx).hessians(tf.gather(Theta, idx))
            L_new, ok_new = _cholesky(H_new)
            Hs = tf.tensor_scatter_nd_update(Hs, idx[:, None], H_new)
            Ls = tf.tensor_scatter_nd_update(Ls, idx[:, None], L_new)
            ok = tf.tensor_scatter_nd_update(ok, idx[:, None], ok_new)
            n_hess[idx] += 1
            fresh[idx] = True
    gnorm = tf.constant(gnorm)
    converged = (gnorm <= tols).numpy()
    if not converged.all():
        bad = np.flatnonzero(~converged)
        warnings.warn(
            f"{len(bad)} of {B} refits did not reach their gradient-norm certificate "
            f"(worst ||grad||/tol = {float(np.max(gnorm.numpy()[bad] / tols.numpy()[bad])):.2e}); "
            "increase max_iter, use float64, or loosen rtol",
            ConvergenceWarning, stacklevel=2)
    return RefitResult(Theta.numpy(), gnorm.numpy(), tols.numpy(), iters, n_hess, converged,
                       first_steps, first_full)
