"""Exact inverses of ``H - H_U`` for many groups of a binary model, without a (d, d)
matrix per group: the Woodbury identity on one shared inverse and one Gram matrix.

Notation as :mod:`influence.groups`: ``H`` is the regularised Hessian at ``theta_hat``,
``x_i`` the augmented rows of the design, ``c_i = s_i p_i (1 - p_i)`` the weighted
curvature at ``theta_hat`` and ``A_U`` the rows ``sqrt(c_i) x_i`` of the group U, so that
the group's Hessian is ``H_U = A_U^T A_U`` and

    (H - A_U^T A_U)^{-1} = H^{-1} + H^{-1} A_U^T C_U^{-1} A_U H^{-1},
    C_U = I - A_U H^{-1} A_U^T = I - diag(w_U) K[U, U] diag(w_U),

with ``w = sqrt(c)`` and the Gram matrix ``K = X H^{-1} X^T`` (n, n), formed once; a group
then costs the ``|U|^3 / 3`` Cholesky of ``C_U`` instead of ``|U| d^2 + d^3 / 3`` flops and
``d^2`` memory. The non-zero eigenvalues of ``-H^{-1} H_U`` are minus those of ``I - C_U``.
Used from :data:`DOWNDATE_MIN_PARAMS` parameters on; below, the direct per-group routes.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from influence.numerics import cho_solve_nogil, in_float32, per_core_map, try_cholesky

# Models with at least this many parameters use the Woodbury downdates for refits and
# Newton changes (binary models). Below it a (d, d) Cholesky per group is cheap.
DOWNDATE_MIN_PARAMS = 1024
# A design at most this dense is kept as CSR for the Gram matrix and the group rows.
SPARSE_MAX_DENSITY = 0.1


def uses_downdates(spec) -> bool:
    """Whether refits and Newton changes of a model of this :class:`ModelSpec` take the
    downdate route: binary, with at least :data:`DOWNDATE_MIN_PARAMS` parameters."""
    return bool(spec.binary and spec.num_params >= DOWNDATE_MIN_PARAMS)


def sparse_if_sparse(X, max_density: float = SPARSE_MAX_DENSITY):
    """``X`` as float64 CSR when it is scipy sparse or at most ``max_density`` of it is
    non-zero, else as a dense float64 array (products with a CSR matrix cost ``nnz``
    instead of ``n d``)."""
    if sp.issparse(X):
        return X.tocsr().astype(np.float64)
    X = np.asarray(X, dtype=np.float64)
    nnz = np.count_nonzero(X)
    return sp.csr_matrix(X) if nnz <= max_density * X.size else X


class DowndateBasis:
    """What every group shares: ``H^{-1}``, ``w = sqrt(c)`` and the Gram matrix ``K``.

    ``H``: (d, d) regularised Hessian at ``theta_hat`` of a binary model (positive definite);
    ``X``: the augmented design (n, d), dense or scipy sparse; ``c``: (n,) weighted curvature
    ``s_i p_i (1 - p_i)`` at ``theta_hat``. Keeps ``Hi`` (d, d) and ``K`` (n, n): ``d^2 + n^2``
    doubles (and an (n, d) intermediate while forming ``K``).
    """

    def __init__(self, H, X, c):
        H = np.asarray(H, dtype=np.float64)
        d = H.shape[0]
        self.X = sparse_if_sparse(X)
        if self.X.shape[1] != d:
            raise ValueError(f"X must have {d} columns (the Hessian's size); got {self.X.shape[1]}")
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if c.shape[0] != self.X.shape[0] or np.any(c < 0) or not np.all(np.isfinite(c)):
            raise ValueError(f"c must be {self.X.shape[0]} finite non-negative curvatures; got shape {c.shape}")
        factor = try_cholesky(H)
        if factor is None:
            raise ValueError(f"the Hessian (d = {d}) is not positive definite (or not finite)")
        Hi = sla.cho_solve(factor, np.eye(d), check_finite=False)
        self.Hi = 0.5 * (Hi + Hi.T)  # exactly symmetric
        self.w = np.sqrt(c)
        P = np.asarray(self.X @ self.Hi)          # (n, d): rows x_i^T H^{-1}
        K = np.asarray(self.X @ P.T) if sp.issparse(self.X) else P @ self.X.T
        self.K = 0.5 * (K + K.T)
        self.d, self.n = d, self.X.shape[0]

    @cached_property
    def Hi32(self) -> np.ndarray:
        """``H^{-1}`` in float32 for preconditioning (built on first use: the Newton changes
        never need it)."""
        return self.Hi.astype(np.float32)

    def gram_block(self, idx: np.ndarray) -> np.ndarray:
        """``A_U H^{-1} A_U^T = diag(w_U) K[U, U] diag(w_U)``, the group's (|U|, |U|) block."""
        w = self.w[idx]
        return w[:, None] * self.K[np.ix_(idx, idx)] * w[None, :]

    def spectrum(self, idx: np.ndarray) -> np.ndarray:
        """The eigenvalues of ``-H^{-1} H_U``, ascending, padded with zeros to length d."""
        ev = np.clip(np.linalg.eigvalsh(self.gram_block(idx)), 0.0, None)  # PSD: drop -eps noise
        ev = ev[-self.d:]  # |U| > d: the other |U| - d eigenvalues are zero (rank <= d)
        vals = np.zeros(self.d)
        vals[:len(ev)] = -ev
        return np.sort(vals)


class GroupDowndates:
    """``(H - H_U)^{-1}`` of each group of ``groups`` by the Woodbury identity on a
    :class:`DowndateBasis`; :meth:`solve` applies them to rows, one group per row.

    A group's rows and the factor of its ``C_U`` are formed by :meth:`load` (at
    construction for the groups ``load``, default all) and freed by :meth:`release`, so a
    continuously batched refit keeps only its running groups' factors.

    ``ok[b]`` is False where ``C_U`` is not numerically positive definite (``H - H_U``
    singular or indefinite, e.g. a group holding every point of a feature with no
    regularisation); :meth:`solve` then returns NaN rows, which callers treat as a failed
    factor.
    """

    def __init__(self, basis: DowndateBasis, groups, load=None):
        self.basis = basis
        self.idx = [np.asarray(g, dtype=np.int64) for g in groups]
        self.rows, self.factors = {}, {}  # loaded group -> its rows (CSR or dense), factor of C_U
        self.ok = np.ones(len(self.idx), dtype=bool)
        self.load(range(len(self.idx)) if load is None else load)

    def load(self, groups) -> None:
        """Form the rows and the factor of ``C_U`` of the groups ``groups`` (indices)."""
        for b in groups:
            b, idx = int(b), self.idx[int(b)]
            self.rows[b] = self.basis.X[idx]
            self.factors[b] = try_cholesky(np.eye(len(idx)) - self.basis.gram_block(idx)) if len(idx) else None
            self.ok[b] = not len(idx) or self.factors[b] is not None

    def release(self, groups) -> None:
        """Free the rows and factors of the groups ``groups`` (indices; unloaded ones are skipped)."""
        for b in groups:
            self.rows.pop(int(b), None)
            self.factors.pop(int(b), None)

    def solve(self, R: np.ndarray, groups: np.ndarray, precise: bool = True) -> np.ndarray:
        """``(H - H_U_j)^{-1} R[k]`` with ``j = groups[k]``; R: (k, d).

        ``precise=False`` (a preconditioner): the two products with ``H^{-1}`` in float32
        (:func:`influence.numerics.in_float32`), the rest in float64.

        ``H^{-1} (r + A_U^T C_U^{-1} A_U H^{-1} r)``: two products with ``H^{-1}`` for the
        whole batch and, per row, two products with the group's rows and a solve with the
        factor of ``C_U``.
        """
        R = np.asarray(R, dtype=np.float64)
        w = self.basis.w
        Hi = self.basis.Hi if precise else self.basis.Hi32

        def times_hi(A):
            return A @ Hi if precise else in_float32(lambda A32: A32 @ Hi, A)

        U = times_hi(R)  # (k, d): one product for the batch
        groups = np.asarray(groups, dtype=np.int64)

        def correction(k):  # A_U^T C_U^{-1} A_U H^{-1} r of row k (None: nothing to add)
            j = groups[k]
            idx = self.idx[j]
            if not self.ok[j] or not len(idx):
                return None
            a = w[idx] * np.asarray(self.rows[j] @ U[k]).reshape(-1)
            z = cho_solve_nogil(self.factors[j], a)  # releases the GIL: the rows run side by side
            return np.asarray(self.rows[j].T @ (w[idx] * z)).reshape(-1)

        T = R.copy()
        # The rows' corrections on one thread per core, each by the same calls as one at a
        # time (the caller holds one BLAS thread).
        for k, add in enumerate(per_core_map(correction, range(len(groups)), one_blas=False)):
            if not self.ok[groups[k]]:
                T[k] = np.nan
            elif add is not None:
                T[k] += add
        return times_hi(T)
