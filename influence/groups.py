"""Group influence quantities by exact cheaper identities.

Notation: H is the regularised Hessian at ``theta_hat`` (gauge-fixed for multinomial
models with intercepts, see :attr:`ModelSpec.has_gauge`), ``H = L L^T`` its Cholesky
factor, ``g_U`` the sum of the group's per-example gradients and ``H_U = Z_U^T Z_U`` the
group's unregularised Hessian.

* Group sums for all groups at once through a sparse incidence matrix.
* The Newton change ``(H - H_U)^{-1} g_U`` by the Woodbury identity
  ``L^{-T}(u + Y (I - C)^{-1} Y^T u)`` with ``Y = L^{-1} Z_U^T``, ``C = Y^T Y``,
  ``u = L^{-1} g_U`` when ``r = rank(Z_U) < d``, and by a direct Cholesky of
  ``H - Z_U^T Z_U`` otherwise.
* The spectrum of ``-H^{-1} H_U`` from the smaller symmetric eigenproblem
  (``C`` of size r, or ``L^{-1} H_U L^{-T}`` of size d), padded with zeros to length d.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import tensorflow as tf

from influence import objective as K
from influence.downdate import DowndateBasis, GroupDowndates
from influence.memory import eval_chunk_size, refit_chunk_size
from influence.newton import DowndatedHessians, HessianFactor, cg_directions, make_preconditioner
from influence.numerics import ConvergenceWarning, one_blas_thread, per_core_map, spd_solve
from influence.objective import LogisticObjective, ModelSpec, project_out_gauge
from influence.progress import progress_bar


def incidence(groups: Sequence[np.ndarray], n: int, dtype=np.float64) -> sp.csr_matrix:
    """Sparse 0/1 matrix B of shape (S, n) with ``B[s, i] = 1`` iff ``i`` is in group s."""
    lengths = np.array([len(g) for g in groups], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([np.asarray(g, dtype=np.int64) for g in groups]) if len(groups) else np.zeros(0, np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"group indices must lie in [0, {n}); got range [{indices.min()}, {indices.max()}]")
    return sp.csr_matrix((np.ones(indices.size, dtype=dtype), indices, indptr), shape=(len(groups), n))


def group_sums(groups: Sequence[np.ndarray], M: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``sum_{i in U_s} M[i]`` for every group s, shape (S, ...) (one sparse product).

    The sums run in each group's index order, in ``dtype`` (float64 by default; pass
    ``M.dtype`` to sum float32 inputs in float32, as the original's single-precision
    numerics did), and the result has that dtype.
    """
    M = np.asarray(M)
    B = incidence(groups, M.shape[0], dtype)
    return np.asarray(B @ M.reshape(M.shape[0], -1)).reshape((len(groups),) + M.shape[1:])


def newton_downdate(basis: DowndateBasis, groups: Sequence[np.ndarray], G_sums, spectrum: bool = False,
                    progress=None) -> dict[str, np.ndarray]:
    """:func:`newton_explicit` through the shared inverse and Gram matrix of ``basis``
    (:mod:`influence.downdate`, large binary models): the same Woodbury identity, groups
    of 64 at a time, one matrix product with ``H^{-1}`` per batch; the spectra are the
    groups' symmetric eigenproblems (:meth:`DowndateBasis.spectrum`), one per core."""
    S, d = len(groups), basis.d
    G_sums = np.asarray(G_sums, dtype=np.float64)
    out = np.zeros((S, d))
    spec_out = np.zeros((S, d)) if spectrum else None
    for a in progress_bar(range(0, S, 64), "newton", progress=progress):
        part = [np.asarray(g, dtype=np.int64) for g in groups[a:a + 64]]
        with one_blas_thread():  # many mid-sized factors and products (as the refits')
            down = GroupDowndates(basis, part)
            if not down.ok.all():
                raise ValueError(f"H - H_U is not positive definite for group(s) "
                                 f"{(a + np.flatnonzero(~down.ok)).tolist()}; cannot compute Newton changes")
            out[a:a + len(part)] = down.solve(G_sums[a:a + len(part)], np.arange(len(part)))
        if spectrum:
            spec_out[a:a + len(part)] = per_core_map(basis.spectrum, part)
    return {"newton_dparam": out, "spectrum": spec_out} if spectrum else {"newton_dparam": out}


def newton_explicit(spec: ModelSpec, H, theta, Xa, groups: Sequence[np.ndarray], G_sums,
                    spectrum: bool = False, progress=None) -> dict[str, np.ndarray]:
    """Newton changes ``(H - H_U)^{-1} g_U`` and, optionally, the spectra of ``-H^{-1}H_U``.

    ``H``: (d, d) regularised Hessian at ``theta`` (not gauge-fixed; fixed here); ``H_U``
    is formed from the unweighted curvature rows (unit sample weights). ``G_sums``: (S, d)
    group gradient sums. Returns ``newton_dparam`` (S, d) and, with ``spectrum``, the
    eigenvalues of ``-H^{-1} H_U`` as ``spectrum`` (S, d) sorted ascending (real, in (-1, 0]).
    A group of r < d factor rows takes the Woodbury identity, a larger one a direct
    Cholesky of ``H - H_U`` (SciPy's LAPACK on one BLAS thread).
    """
    with one_blas_thread():
        Ht = K.gauge_fix(tf.convert_to_tensor(H, dtype=Xa.dtype), spec).numpy().astype(np.float64)
        try:
            L = np.linalg.cholesky(Ht)
        except np.linalg.LinAlgError as exc:
            raise ValueError("the Hessian is not positive definite; cannot compute Newton changes") from exc
        # All factor rows at once: row blocks of Z belong to the points, in order.
        Z_all = LogisticObjective(spec, Xa).hessian_factor_rows(tf.convert_to_tensor(theta, dtype=Xa.dtype)).numpy()
        rows_per_point = 1 if spec.binary else spec.num_rows
        d = spec.num_params
        out = np.zeros((len(groups), d))
        spec_out = np.zeros((len(groups), d)) if spectrum else None
        G_sums = np.asarray(G_sums, dtype=np.float64)
        u_gauge = spec.gauge_vector()
        for s in progress_bar(range(len(groups)), "newton", progress=progress):
            idx = np.asarray(groups[s], dtype=np.int64)
            if rows_per_point > 1:
                idx = (idx[:, None] * rows_per_point + np.arange(rows_per_point)[None, :]).ravel()
            Z = Z_all[idx]  # (r, d)
            r = Z.shape[0]
            g = G_sums[s]
            if r < d:
                u = sla.solve_triangular(L, g, lower=True)
                Y = sla.solve_triangular(L, Z.T, lower=True)  # (d, r)
                C = Y.T @ Y
                w = np.linalg.solve(np.eye(r) - C, Y.T @ u)
                x = sla.solve_triangular(L, u + Y @ w, lower=True, trans="T")
                if spectrum:
                    ev = np.linalg.eigvalsh(C)
            else:
                H_U = Z.T @ Z  # the one O(r d^2) product; everything else is O(d^3)
                x = spd_solve(Ht - H_U, g)
                if spectrum:
                    W = sla.solve_triangular(L, H_U, lower=True)
                    ev = np.linalg.eigvalsh(sla.solve_triangular(L, W.T, lower=True))
            out[s] = x - u_gauge * (u_gauge @ x)
            if spectrum:
                vals = np.zeros(d)
                ev = np.clip(ev, 0.0, None)  # eigenvalues of a PSD matrix; drop -eps noise
                vals[:len(ev)] = -ev
                spec_out[s] = np.sort(vals)
    return {"newton_dparam": out, "spectrum": spec_out} if spectrum else {"newton_dparam": out}


def newton_cg(spec: ModelSpec, theta, Xa, s_base, l2_reg, groups: Sequence[np.ndarray], G_sums,
              tol: float = 1e-10, maxiter: int | None = None, chunk: int = 32, preconditioner=None,
              max_memory: int | None = None) -> np.ndarray:
    """Newton changes ``(H - H_U)^{-1} g_U`` by preconditioned CG, batched over groups.

    One CG iteration for a chunk of groups is two matrix products with the design
    (:meth:`influence.objective.LogisticObjective.hvp`); ``preconditioner`` is shared by all groups
    (default :func:`influence.newton.make_preconditioner` at ``theta``). Each solve
    stops at relative residual ``tol``. At most ``chunk`` groups at a time, fewer when
    their (n, K') work arrays would exceed ``max_memory`` bytes.
    """

    dtype = Xa.dtype
    theta = tf.convert_to_tensor(np.asarray(theta), dtype=dtype)
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    l2 = tf.constant(float(l2_reg), dtype=dtype)
    maxiter = maxiter if maxiter is not None else 10 * spec.num_params
    if preconditioner is None:
        preconditioner = make_preconditioner(spec, theta, Xa, s_base, l2_reg)
    chunk = min(chunk, refit_chunk_size(spec.num_params, int(Xa.shape[0]), max_memory, spec.num_rows, False)
                if max_memory is not None else chunk)
    out = np.zeros((len(groups), spec.num_params))
    worst = 0.0
    for start in range(0, len(groups), chunk):
        sel = list(range(start, min(start + chunk, len(groups))))
        batch = LogisticObjective.without_groups(spec, Xa, None, s_base, l2, [groups[g] for g in sel])
        steps, res = cg_directions(batch, tf.tile(theta[None, :], [len(sel), 1]), np.asarray(G_sums)[sel],
                                   preconditioner, tol, maxiter)
        out[sel] = steps.numpy()
        if not res.converged.all():
            worst = max(worst, float(res.residual_norms.max()))
    if worst > 0:
        warnings.warn(f"conjugate gradient for Newton changes stopped at relative residual {worst:.3e} > "
                      f"tol={tol:g}; raise maxiter (cg_maxiter)", ConvergenceWarning, stacklevel=2)
    return out


def newton_factor(spec: ModelSpec, theta, Xa, s_base, l2_reg, groups: Sequence[np.ndarray], G_sums,
                  factor: HessianFactor, tol: float = 1e-10, maxiter: int | None = None,
                  width: int = 64) -> np.ndarray:
    """:func:`newton_cg` with the dense Hessian: CG on ``H - H_U`` (products through H's
    factor and the group's rows) preconditioned by H's factor, to relative residual ``tol``
    (:meth:`influence.newton.DowndatedHessians.solve`).

    The preconditioned operator ``I - H^{-1} H_U`` has its eigenvalues in (0, 1]: CG
    converges in few iterations, one or two for empty groups (the first-order changes
    ``H^{-1} g_U``). ``width`` groups iterate together; a finished group's slot is refilled
    at once (:func:`influence.numerics.preconditioned_cg_rows`).
    """
    dtype = Xa.dtype
    maxiter = maxiter if maxiter is not None else 10 * spec.num_params
    base = LogisticObjective(spec, Xa, None, tf.convert_to_tensor(s_base, dtype=dtype), float(l2_reg))
    op = DowndatedHessians(factor, base, theta, list(groups))
    res = op.solve(np.asarray(G_sums, dtype=np.float64), np.arange(len(groups)), tol, maxiter, width)
    if not res.converged.all():
        warnings.warn(f"conjugate gradient for Newton changes stopped at relative residual "
                      f"{float(res.residual_norms[~res.converged].max()):.3e} > tol={tol:g}; raise maxiter "
                      "(cg_maxiter)", ConvergenceWarning, stacklevel=2)
    return project_out_gauge(tf.constant(res.x.T, dtype=tf.float64), spec).numpy().T


def group_sums_at(spec: ModelSpec, Thetas, Xa, y, groups: Sequence[np.ndarray], what: str = "loss",
                  chunk: int = 64, max_memory: int | None = None) -> np.ndarray:
    """``sum_{i in U_s} q_i(Thetas[s])`` for every group s (q = loss or margin), shape (S,).
    ``chunk`` groups at a time, fewer to keep their (n, K') arrays within ``max_memory``."""
    chunk = eval_chunk_size(int(Xa.shape[0]), spec.num_rows, max_memory, chunk)
    B = incidence(groups, int(Xa.shape[0]))
    Thetas = np.asarray(Thetas)
    out = np.zeros(len(groups))
    for start in range(0, len(groups), chunk):
        vals = batch_eval(spec, Thetas[start:start + chunk], Xa, y, what, chunk=chunk)  # (b, n)
        out[start:start + chunk] = np.asarray(B[start:start + chunk].multiply(vals).sum(axis=1)).ravel()
    return out


def batch_eval(spec: ModelSpec, Thetas, Xa, y, what: str = "loss", chunk: int = 64,
               max_memory: int | None = None) -> np.ndarray:
    """Per-example losses, margins or correctness at many parameter vectors.

    Returns an array of shape (B, n): row b evaluated at ``Thetas[b]``. ``what`` is
    ``'loss'``, ``'margin'`` (binary) or ``'correct'`` (1.0 where the argmax is right).
    Rows are evaluated ``chunk`` at a time, fewer to keep the work arrays within
    ``max_memory`` bytes (the (B, n) result itself is the caller's).
    """
    chunk = eval_chunk_size(int(Xa.shape[0]), spec.num_rows, max_memory, chunk)
    Thetas = np.asarray(Thetas)
    out = []
    allowed = ("loss", "margin", "correct") if spec.binary else ("loss", "correct")
    if what not in allowed:
        raise ValueError(f"what must be one of {allowed} for {'binary' if spec.binary else 'multinomial'} models; "
                         f"got {what!r}")
    obj = LogisticObjective(spec, Xa, y)
    for start in range(0, Thetas.shape[0], chunk):
        T = tf.constant(Thetas[start:start + chunk], dtype=Xa.dtype)
        if what == "loss":
            val = obj.per_example_losses(T)                              # (b, n)
        elif what == "margin":
            val = obj.margins(T)
        elif spec.binary:
            val = tf.transpose(tf.cast(tf.cast(obj.logits(T) > 0, Xa.dtype) == obj.y[:, None], Xa.dtype))
        else:
            val = tf.transpose(tf.cast(tf.equal(tf.argmax(obj.logits(T), axis=2, output_type=tf.int32),
                                                tf.cast(y, tf.int32)[:, None]), Xa.dtype))
        out.append(val.numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, int(Xa.shape[0])))
