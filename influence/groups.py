"""Group influence quantities by exact cheaper identities (spec ``ss_logreg.md`` §6).

Notation: H is the regularised Hessian at ``theta_hat`` (gauge-fixed for multinomial
models with intercepts, see :attr:`ModelSpec.has_gauge`), ``H = L L^T`` its Cholesky
factor, ``g_U`` the sum of the group's per-example gradients and ``H_U = Z_U^T Z_U`` the
group's unregularised Hessian.

* E2: group sums for all groups at once through a sparse incidence matrix.
* E4: the Newton change ``(H - H_U)^{-1} g_U`` by the Woodbury identity
  ``L^{-T}(u + Y (I - C)^{-1} Y^T u)`` with ``Y = L^{-1} Z_U^T``, ``C = Y^T Y``,
  ``u = L^{-1} g_U`` when ``r = rank(Z_U) < d``, and by a direct Cholesky of
  ``H - Z_U^T Z_U`` otherwise.
* E5: the spectrum of ``-H^{-1} H_U`` from the smaller symmetric eigenproblem
  (``C`` of size r, or ``L^{-1} H_U L^{-T}`` of size d), padded with zeros to length d.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from influence import objective as K
from influence.downdate import DowndateBasis, GroupDowndates
from influence.memory import eval_chunk_size, refit_chunk_size
from influence.newton import cg_directions, make_preconditioner
from influence.objective import LogisticObjective, ModelSpec, hessian_factor_rows, one_blas_thread, to_ext_batch
from influence.progress import progress_bar
from influence.solvers import ConvergenceWarning, spd_solve


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


def newton_explicit(spec: ModelSpec, H, theta, Xa, groups: Sequence[np.ndarray], G_sums,
                    spectrum: bool = True, inverse_vp_method: str = "cholesky_lu",
                    progress=None, basis: DowndateBasis | None = None) -> dict[str, np.ndarray]:
    """Newton changes ``(H - H_U)^{-1} g_U`` and, optionally, the spectra of ``-H^{-1}H_U``.

    ``H``: (d, d) regularised Hessian at ``theta`` (not gauge-fixed; fixed here).
    ``G_sums``: (S, d) group gradient sums. Returns ``newton_dparam`` (S, d), with
    ``spectrum`` the eigenvalues of ``-H^{-1} H_U`` as ``spectrum`` (S, d) sorted
    ascending (real, in (-1, 0]), and ``route`` (S,): 0 = Woodbury, 1 = direct, 2 = Woodbury
    through a shared Gram matrix (``basis``, a :class:`~influence.downdate.DowndateBasis`:
    :func:`_newton_downdate`, large binary models).

    The per-group work is small dense linear algebra (d x d or r x r), done with
    LAPACK through scipy: at these sizes per-call overhead, not flops, dominates. It
    runs with one BLAS thread: multi-threaded OpenBLAS on 128 x 128 problems spends its
    time waking and spin-waiting threads (a 128 x 128 Cholesky took 10 ms instead of
    0.3 ms on 2 cores next to TensorFlow's thread pool).
    """
    if basis is not None:
        return _newton_downdate(spec, basis, groups, G_sums, spectrum, progress)
    with one_blas_thread():
        return _newton_explicit(spec, H, theta, Xa, groups, G_sums, spectrum, progress)


def _newton_downdate(spec: ModelSpec, basis: DowndateBasis, groups, G_sums, spectrum, progress):
    """Route 2 of :func:`newton_explicit`: the same Woodbury identity through the shared
    inverse and Gram matrix of ``basis`` (:mod:`influence.downdate`), for large binary
    models: groups of 64 at a time, one matrix product with ``H^{-1}`` per batch."""
    S, d = len(groups), spec.num_params
    G_sums = np.asarray(G_sums, dtype=np.float64)
    out = np.zeros((S, d))
    spec_out = np.zeros((S, d)) if spectrum else None
    for a in progress_bar(range(0, S, 64), "newton", progress=progress):
        part = [np.asarray(g, dtype=np.int64) for g in groups[a:a + 64]]
        down = GroupDowndates(basis, part)
        if not down.ok.all():
            raise ValueError(f"H - H_U is not positive definite for group(s) "
                             f"{(a + np.flatnonzero(~down.ok)).tolist()}; cannot compute Newton changes")
        out[a:a + len(part)] = down.solve(G_sums[a:a + len(part)], np.arange(len(part)))
        if spectrum:
            # Symmetric eigenproblems of the groups (sum |U|^3, 4/3 |U|^3 flops each, mostly
            # BLAS-2): one per core with one BLAS thread each, which beats threaded LAPACK
            # on one matrix at a time (LAPACK releases the GIL).
            with one_blas_thread(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                spec_out[a:a + len(part)] = list(pool.map(basis.spectrum, part))
    result = {"newton_dparam": out, "route": np.full(S, 2, dtype=np.int64)}
    if spectrum:
        result["spectrum"] = spec_out
    return result


def _newton_explicit(spec: ModelSpec, H, theta, Xa, groups, G_sums, spectrum, progress):
    import scipy.linalg as sla

    Ht = K.gauge_fix(tf.convert_to_tensor(H, dtype=Xa.dtype), spec).numpy().astype(np.float64)
    try:
        L = np.linalg.cholesky(Ht)
    except np.linalg.LinAlgError as exc:
        raise ValueError("the Hessian is not positive definite; cannot compute Newton changes") from exc
    # All factor rows at once: row blocks of Z belong to the points, in order.
    Z_all = hessian_factor_rows(spec, tf.convert_to_tensor(theta, dtype=Xa.dtype), Xa).numpy()
    rows_per_point = 1 if spec.binary else spec.num_rows
    d = spec.num_params
    S = len(groups)
    out = np.zeros((S, d))
    spec_out = np.zeros((S, d)) if spectrum else None
    route = np.zeros(S, dtype=np.int64)
    G_sums = np.asarray(G_sums, dtype=np.float64)
    u_gauge = spec.gauge_vector()
    for s in progress_bar(range(S), "newton", S, progress):
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
            route[s] = 1
            H_U = Z.T @ Z  # the one O(r d^2) product; everything else is O(d^3)
            M = Ht - H_U
            x = spd_solve(M, g)
            if spectrum:
                W = sla.solve_triangular(L, H_U, lower=True)
                ev = np.linalg.eigvalsh(sla.solve_triangular(L, W.T, lower=True))
        out[s] = x - u_gauge * (u_gauge @ x)
        if spectrum:
            vals = np.zeros(d)
            ev = np.clip(ev, 0.0, None)  # eigenvalues of a PSD matrix; drop -eps noise
            vals[:len(ev)] = -ev
            spec_out[s] = np.sort(vals)
    result = {"newton_dparam": out, "route": route}
    if spectrum:
        result["spectrum"] = spec_out
    return result


def newton_cg(spec: ModelSpec, theta, Xa, s_base, l2_reg, groups: Sequence[np.ndarray], G_sums,
              tol: float = 1e-10, maxiter: int | None = None, chunk: int = 32, preconditioner=None,
              max_memory: int | None = None) -> np.ndarray:
    """Newton changes ``(H - H_U)^{-1} g_U`` by preconditioned CG, batched over groups.

    One CG iteration for a chunk of groups is two matrix products with the design
    (:meth:`influence.refit._Batch.hvp`); ``preconditioner`` is shared by all groups
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


def params_to_ext(Thetas, spec: ModelSpec) -> tf.Tensor:
    """(B, d) parameter rows → (B*K', E) rows ``[w_k; b_k]`` (K' = 1 for binary)."""
    Thetas = tf.convert_to_tensor(Thetas)
    return tf.reshape(to_ext_batch(Thetas, spec), [int(Thetas.shape[0]) * spec.num_rows, spec.ext_dim])


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
    for start in range(0, Thetas.shape[0], chunk):
        T = params_to_ext(tf.constant(Thetas[start:start + chunk], dtype=Xa.dtype), spec)
        Z = tf.matmul(Xa, T, transpose_b=True)  # (n, b*K')
        b = Thetas[start:start + chunk].shape[0]
        if spec.binary:
            Z = tf.transpose(Z)  # (b, n)
            yy = tf.cast(y, Z.dtype)[None, :]
            if what == "loss":
                val = tf.nn.softplus(Z) - yy * Z
            elif what == "margin":
                val = (2.0 * yy - 1.0) * Z
            elif what == "correct":
                val = tf.cast(tf.cast(Z > 0, Z.dtype) == yy, Z.dtype)
            else:
                raise ValueError(f"what must be 'loss', 'margin' or 'correct'; got {what!r}")
        else:
            Z = tf.transpose(tf.reshape(Z, [-1, b, spec.num_rows]), [1, 0, 2])  # (b, n, K)
            yi = tf.cast(y, tf.int32)
            if what == "loss":
                val = tf.reduce_logsumexp(Z, axis=2) - tf.gather(Z, tf.tile(yi[None], [b, 1]), axis=2, batch_dims=2)
            elif what == "correct":
                val = tf.cast(tf.equal(tf.argmax(Z, axis=2, output_type=tf.int32), yi[None]), Z.dtype)
            else:
                raise ValueError(f"what must be 'loss' or 'correct' for multinomial models; got {what!r}")
        out.append(val.numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, int(Xa.shape[0])))
