"""Numerical building blocks: dtypes, array conversions, the SPD solve with its one
failure policy, the float32 application of a factor, and CG.

The SPD solve is Cholesky, a check that the factor is finite, and where it is not, LU with
a logged warning: ``tf.linalg.cholesky`` may return NaN instead of raising on a matrix that
is not positive definite (tensorflow issues 61916, 62451), hence the explicit check.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.linalg.cython_lapack as cython_lapack
import scipy.sparse as sp
import tensorflow as tf
from threadpoolctl import ThreadpoolController

logger = logging.getLogger(__name__)

DTYPES = {"float64": tf.float64, "float32": tf.float32}
# Explicit solves of ``M X = V``: Cholesky (fails on a matrix that is not positive
# definite), LU, or Cholesky with the LU fall-back.
INVERSE_VP_METHODS = ("cholesky", "lu", "cholesky_lu")


class NotPositiveDefiniteError(ValueError):
    """Cholesky failed: the matrix is not (numerically) positive definite."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance."""


def tf_dtype(dtype) -> tf.DType:
    """The TensorFlow dtype of ``dtype`` (a name of :data:`DTYPES`, a NumPy dtype or a
    ``tf.DType``); float64 and float32 only."""
    if isinstance(dtype, tf.DType):
        key = dtype.name
    else:
        try:
            key = np.dtype(dtype).name
        except TypeError:
            key = None
    if key not in DTYPES:
        raise ValueError(f"dtype must be float64 or float32; got {dtype!r}")
    return DTYPES[key]


def to_numpy(x, dtype=None, copy: bool = True) -> np.ndarray:
    """A tensor or array-like as a NumPy array (cast to ``dtype`` when given). A tensor is
    copied unless ``copy`` is False: then a read-only view of its buffer where no cast is
    needed (a large design is not held twice)."""
    if copy or not hasattr(x, "numpy"):
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=dtype)
    a = np.asarray(x)
    return a if dtype is None else a.astype(dtype, copy=False)


def densify(x) -> np.ndarray:
    """A scipy sparse matrix as a dense array; anything else as ``np.asarray``."""
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def xy(ds) -> tuple:
    """``(x, labels)`` of a dataset (anything with ``x`` and ``labels``, or an ``(x, labels)``
    tuple); the labels as a 1-d array."""
    if isinstance(ds, tuple) and len(ds) == 2:
        x, labels = ds
    else:
        x, labels = ds.x, ds.labels
    labels = np.asarray(labels)
    # A 1-d array is returned as it is: callers key caches on its identity.
    return x, labels if labels.ndim == 1 else labels.reshape(-1)


# Byte alignment TensorFlow's CPU kernels require of a tensor's buffer (Eigen's largest).
TENSOR_ALIGNMENT = 64


def tensor_buffer(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array of ``shape`` whose buffer is aligned for
    TensorFlow (:data:`TENSOR_ALIGNMENT`), so that :func:`handover_tensor` can make it a
    tensor without a copy."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + TENSOR_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def handover_tensor(array: np.ndarray) -> tf.Tensor:
    """A tensor with the content of a NumPy array that its caller no longer writes to: an
    aligned C-contiguous writable array (:func:`tensor_buffer`) becomes the tensor's buffer
    through DLPack (no copy of a large batch of matrices); any other array is copied."""
    if (array.size and array.flags.c_contiguous and array.flags.writeable
            and array.ctypes.data % TENSOR_ALIGNMENT == 0):
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.constant(array)


_BLAS_CONTROLLER: list = []


def one_blas_thread():
    """A context with one BLAS thread, for many small products (per-group Hessians, small
    LAPACK solves) next to TensorFlow's thread pool, where threaded BLAS spends its time
    spin-waiting for the other cores. The BLAS libraries are looked up once per process
    (at the first call: NumPy's and SciPy's, loaded with this module), not per context."""
    if not _BLAS_CONTROLLER:
        _BLAS_CONTROLLER.append(ThreadpoolController())
    return _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas")


def per_core_map(fn, items, one_blas: bool = True) -> list:
    """``[fn(x) for x in items]`` on one thread per core: the one pool of the package, for
    many independent small LAPACK calls and sparse products that release the GIL (NumPy's
    ``np.linalg``, :func:`cho_solve_nogil`; not SciPy's ``cho_solve``), which beat threaded
    LAPACK on one matrix at a time. ``one_blas``: each on one BLAS thread (False where the
    caller already holds one)."""
    items = list(items)
    if len(items) < 2:
        return [fn(x) for x in items]
    with one_blas_thread() if one_blas else contextlib.nullcontext(), \
            ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def in_float32(apply: Callable[[np.ndarray], np.ndarray], R) -> np.ndarray:
    """``apply`` (a linear operator held in float32: a Cholesky factor, an inverse) on R in
    float32, result in float64: half the memory traffic, for preconditioners
    (:data:`influence.newton.FLOAT32_MIN_PARAMS`)."""
    return np.asarray(apply(np.asarray(R, dtype=np.float32)), dtype=np.float64)


# ------------------------------------------------------------- the SPD solve

def _warn_lu(count: int, total: int, shape) -> None:
    logger.warning("Cholesky failed for %d of %d matrices of shape %s (not numerically positive definite); "
                   "falling back to LU", count, total, tuple(shape))


def try_cholesky(M: np.ndarray):
    """SciPy's lower Cholesky factor (``cho_factor``) of one NumPy matrix, or None where M is
    not numerically positive definite or not finite (the caller decides the fall-back)."""
    try:
        factor = sla.cho_factor(M, lower=True, check_finite=True)
    except (np.linalg.LinAlgError, ValueError):
        return None
    return factor if np.all(np.isfinite(factor[0])) else None


def _lapack_dpotrs():
    """LAPACK's ``dpotrs`` as a ctypes function, or None: the routine of SciPy's
    ``cho_solve``, from the library SciPy links (its public Cython LAPACK table)."""
    try:
        capsule = cython_lapack.__pyx_capi__["dpotrs"]
        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    except (ImportError, AttributeError, KeyError, ValueError):
        return None
    i, f = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
    return ctypes.CFUNCTYPE(None, ctypes.c_char_p, i, i, f, i, f, i, i)(address)


_DPOTRS = _lapack_dpotrs()


def cho_solve_nogil(factor, b: np.ndarray) -> np.ndarray:
    """``scipy.linalg.cho_solve(factor, b, check_finite=False)`` for a float64 factor of
    :func:`try_cholesky` and b of shape (m,) or (m, k), computed by the same LAPACK call
    (``dpotrs``) but without holding Python's GIL (ctypes releases it; SciPy's wrapper
    does not), so that such solves in threads run side by side. Falls back to
    ``cho_solve`` where that call is not available."""
    c, lower = factor
    b = np.asarray(b, dtype=np.float64)
    if _DPOTRS is None or c.dtype != np.float64 or not c.flags.f_contiguous or b.ndim not in (1, 2) \
            or b.shape[0] != c.shape[0]:
        return sla.cho_solve(factor, b, check_finite=False)
    x = np.array(b, order="F", copy=True)
    n, nrhs, info = ctypes.c_int(c.shape[0]), ctypes.c_int(1 if x.ndim == 1 else x.shape[1]), ctypes.c_int(0)
    f = ctypes.POINTER(ctypes.c_double)
    _DPOTRS(b"L" if lower else b"U", ctypes.byref(n), ctypes.byref(nrhs), c.ctypes.data_as(f), ctypes.byref(n),
            x.ctypes.data_as(f), ctypes.byref(n), ctypes.byref(info))
    if info.value != 0:
        raise ValueError(f"dpotrs: illegal value in argument {-info.value}")
    return x


def spd_factor(M: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``V -> M^{-1} V`` for one NumPy matrix M (d, d): Cholesky (:func:`try_cholesky`), or
    LU with a logged warning where M is not numerically positive definite."""
    factor = try_cholesky(M)
    if factor is not None:
        return lambda V: sla.cho_solve(factor, V)
    _warn_lu(1, 1, M.shape)
    lu = sla.lu_factor(M)
    return lambda V: sla.lu_solve(lu, V)


def lu_solve(M: tf.Tensor, V: tf.Tensor) -> tf.Tensor:
    lower_upper, perm = tf.linalg.lu(M)
    return tf.linalg.lu_solve(lower_upper, perm, V)


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
    :func:`cholesky_factors`, and by LU (with a logged warning) where ``ok`` is False."""
    X = tf.linalg.cholesky_solve(L, V)
    ok = np.asarray(ok)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        _warn_lu(len(bad), len(ok), M.shape[1:])
        fixed = tf.stack([lu_solve(M[b], V[b]) for b in bad])
        X = tf.tensor_scatter_nd_update(X, bad[:, None], fixed)
    return X


def spd_solve(M, V):
    """Solve ``M[b] X[b] = V[b]`` (M: (B, d, d), V: (B, d, m) tensors) by Cholesky, with LU
    where the factor is not finite (:func:`solve_with_factors`).

    A single NumPy matrix M (d, d) with V (d,) or (d, m) is solved with SciPy's LAPACK
    (:func:`spd_factor`), which at small sizes beats TensorFlow's per-call overhead.
    """
    if isinstance(M, np.ndarray):
        return spd_factor(M)(V)
    L, ok = cholesky_factors(M)
    return solve_with_factors(L, ok, M, V)


def inverse_vp(M, V, method: str = "cholesky") -> tf.Tensor:
    """Solve ``M X = V`` by one of :data:`INVERSE_VP_METHODS`; V has shape (d,) or (d, m).
    Returns a tensor shaped like V. ``'cholesky'`` raises :class:`NotPositiveDefiniteError`
    where M is not numerically positive definite; ``'cholesky_lu'`` falls back to LU."""
    if method not in INVERSE_VP_METHODS:
        raise ValueError(f"inverse_vp_method must be one of {INVERSE_VP_METHODS}; got {method!r}")
    M = tf.convert_to_tensor(M)
    V = tf.cast(V, M.dtype)
    squeeze = len(V.shape) == 1
    V = V[:, None] if squeeze else V
    if method == "lu":
        X = lu_solve(M, V)
    else:
        L, ok = cholesky_factors(M[None])
        if method == "cholesky" and not bool(ok[0]):
            raise NotPositiveDefiniteError("Cholesky failed: the matrix is not numerically positive definite")
        X = solve_with_factors(L, ok, M[None], V[None])[0]
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
    B = tf.convert_to_tensor(B)
    squeeze = len(B.shape) == 1
    B = B[:, None] if squeeze else B
    d = int(B.shape[0])
    maxiter = maxiter if maxiter is not None else 10 * d
    X = tf.zeros_like(B) if x0 is None else tf.reshape(tf.cast(x0, B.dtype), B.shape)
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


class PCGRows:
    """Preconditioned CG on rows held in ``width`` numbered slots, each row with its own
    symmetric positive-definite operator ``A_j`` (``j`` the row's owner): rows start in free
    slots (:meth:`start`), advance together by one batched operator product and one
    batched preconditioner call per :meth:`step`, and keep their state between calls, so a
    caller may pause a row and resume it later with other rows beside it.

    ``matvec(V, owners)`` returns ``A_j V[k]`` and ``precond(R, owners)`` a fixed SPD
    approximation of ``A_j^{-1}`` applied to ``R[k]``, for ``j = owners[k]``. A row stops
    (:meth:`finished`) when ``||b - A x|| <= rtol ||b||``, when it breaks down (non-positive
    curvature: the operator is not SPD in floating point; it is left where it was and
    reported as not converged) or after ``maxiter`` iterations.
    """

    def __init__(self, width: int, d: int):
        self.owner = np.full(width, -1, dtype=np.int64)  # the row each slot holds (-1: empty)
        self.X, self.R, self.Z, self.P = (np.zeros((width, d)) for _ in range(4))
        self.rz, self.bnorm, self.target, self.rnorm = (np.zeros(width) for _ in range(4))
        self.its = np.zeros(width, dtype=np.int64)
        self.broken = np.zeros(width, dtype=bool)

    def start(self, slots: np.ndarray, owners: np.ndarray, B: np.ndarray, rtol: np.ndarray, precond) -> None:
        """Rows ``B`` (len(slots), d) of the owners ``owners`` start from zero in ``slots``
        (one preconditioner call for all of them)."""
        if not len(slots):
            return
        self.owner[slots] = owners
        self.R[slots] = B
        self.X[slots] = 0.0
        self.Z[slots] = precond(self.R[slots], owners)
        self.P[slots] = self.Z[slots]
        self.rz[slots] = np.einsum("ij,ij->i", self.R[slots], self.Z[slots])
        self.bnorm[slots] = np.linalg.norm(self.R[slots], axis=1)
        self.target[slots] = rtol * np.where(self.bnorm[slots] > 0, self.bnorm[slots], 1.0)
        self.rnorm[slots] = self.bnorm[slots]
        self.its[slots] = 0
        self.broken[slots] = False

    def finished(self, maxiter: int) -> np.ndarray:
        """The occupied slots whose rows have stopped (converged, broken down or at ``maxiter``)."""
        return np.flatnonzero((self.owner >= 0) & ((self.rnorm <= self.target) | self.broken | (self.its >= maxiter)))

    def release(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Empty ``slots``; returns their rows' (solutions, iterations, relative residuals,
        converged)."""
        out = (self.X[slots].copy(), self.its[slots].copy(),
               self.rnorm[slots] / np.where(self.bnorm[slots] > 0, self.bnorm[slots], 1.0),
               (self.rnorm[slots] <= self.target[slots]) & ~self.broken[slots])
        self.owner[slots] = -1
        return out

    def step(self, active: np.ndarray, matvec, precond) -> None:
        """One CG iteration of the rows in the slots ``active``."""
        rows = self.owner[active]
        Pa = self.P[active]
        AP = matvec(Pa, rows)
        pAp = np.einsum("ij,ij->i", Pa, AP)
        alpha = self.rz[active] / np.where(pAp > 0, pAp, np.inf)
        self.X[active] += alpha[:, None] * Pa
        Ra = self.R[active] - alpha[:, None] * AP
        Za = precond(Ra, rows)
        rz_new = np.einsum("ij,ij->i", Ra, Za)
        beta = rz_new / np.where(self.rz[active] > 0, self.rz[active], np.inf)
        self.P[active] = Za + beta[:, None] * Pa
        self.R[active] = Ra
        self.rz[active] = rz_new
        self.rnorm[active] = np.linalg.norm(Ra, axis=1)
        self.its[active] += 1
        # Non-positive curvature: the row stops where it is (alpha = 0 left it unchanged).
        self.broken[active[~(pAp > 0)]] = True


def preconditioned_cg_rows(matvec: Callable[[np.ndarray, np.ndarray], np.ndarray], B: np.ndarray,
                           precond: Callable[[np.ndarray, np.ndarray], np.ndarray], rtol,
                           maxiter: int, width: int | None = None) -> PCGResult:
    """Solve ``A_j x_j = b_j`` for every row j of ``B`` (shape (b, d)) by preconditioned CG.

    Each row has its own symmetric positive-definite operator: ``matvec(V, rows)`` returns
    ``A_j V[k]`` for ``j = rows[k]`` (V of shape (len(rows), d)), so a batch of problems
    is advanced by one batched product per iteration; rows that reached
    ``||b_j - A_j x_j|| <= rtol_j ||b_j||`` drop out of the product. ``precond(R, rows)``
    applies a fixed SPD approximation of ``A_j^{-1}`` (``j = rows[k]``) to the rows of R.

    ``width``: at most this many rows iterate together (:class:`PCGRows`, their work
    arrays: four (width, d)); a row that converges, breaks down or reaches ``maxiter``
    frees its slot, which the next rows fill at once, with one preconditioner call for all
    of them (continuous batching). None: all rows together.
    """
    B = np.asarray(B, dtype=np.float64)
    b, d = B.shape
    rtol = np.broadcast_to(np.asarray(rtol, dtype=np.float64), (b,))
    width = b if width is None else int(max(1, min(int(width), b)))
    X = np.zeros_like(B)
    its = np.zeros(b, dtype=np.int64)
    rel = np.zeros(b)
    converged = np.zeros(b, dtype=bool)
    cg = PCGRows(width, d)
    queued = 0

    def fill(free: np.ndarray) -> int:
        take = free[:max(0, min(len(free), b - queued))]
        rows = np.arange(queued, queued + len(take))
        cg.start(take, rows, B[rows], rtol[rows], precond)
        return len(take)

    queued += fill(np.arange(width))
    while True:
        done = cg.finished(maxiter)
        if done.size:
            rows = cg.owner[done]
            X[rows], its[rows], rel[rows], converged[rows] = cg.release(done)
            queued += fill(done)
        active = np.flatnonzero(cg.owner >= 0)
        if active.size == 0:
            break
        cg.step(active, matvec, precond)
    return PCGResult(X, its, rel, converged)
