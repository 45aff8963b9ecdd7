"""The objective of L2-regularised logistic regression and all its derivatives, for one
parameter vector or a batch of them: :class:`LogisticObjective`.

Like scikit-learn's ``LinearModelLoss``, one object owns the loss, gradient, Hessians
(strategies chosen in :meth:`LogisticObjective.hessian_method`), Hessian-vector products
and curvature of B problems that share the data and differ in their sample weights.

Conventions (see docs/design.md, 'Objective and conventions'):

* Objective: ``L(theta) = sum_i s_i * l_i(theta) + (l2_reg / 2) * ||W||^2``: summed over
  examples (not averaged), with sample weights ``s_i``; biases are never regularised.
* Binary (``num_classes == 2``): one weight vector ``w`` of length D and, with an
  intercept, a scalar ``b``; the logits are ``[0, w.x + b]``; ``theta = [w; b]``.
* Multinomial (``num_classes = K > 2``): K full weight vectors (no reference class) and K
  biases; ``theta = [vec(W) (class-major: row k = class k); b_0..b_{K-1}]``.
* Margin (binary only): ``m = (2y - 1) (w.x + b)``.

Tensors are of the model dtype (float64 by default). The "extended" layout augments x
with a trailing 1 (when there is an intercept) so that class k's parameters are the row
``[w_k; b_k]``.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from influence.numerics import handover_tensor, one_blas_thread, tensor_buffer, to_numpy

# Strategies of LogisticObjective.hessians (chosen in LogisticObjective.hessian_method).
HESSIAN_METHODS = ("auto", "sparse", "syrk", "einsum", "matmul")
# Bytes of the row blocks the multinomial Hessians are formed from.
HESSIAN_BLOCK_BYTES = 2 ** 28
# Bytes of the row blocks the multinomial per-example gradients are written in.
PER_EXAMPLE_BLOCK_BYTES = 2 ** 26


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a logistic-regression model."""

    input_dim: int
    num_classes: int
    fit_intercept: bool
    dtype: tf.DType = tf.float64

    def __post_init__(self):
        if int(self.input_dim) != self.input_dim or self.input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer; got {self.input_dim!r}")
        if int(self.num_classes) != self.num_classes or self.num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2; got {self.num_classes!r}")

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def num_rows(self) -> int:
        """Number of weight vectors: 1 for binary, K for multinomial."""
        return 1 if self.binary else self.num_classes

    @property
    def ext_dim(self) -> int:
        """Length of one augmented input ``[x; 1]`` (or ``x`` without intercept)."""
        return self.input_dim + int(self.fit_intercept)

    @property
    def num_params(self) -> int:
        return self.num_rows * self.ext_dim

    def weight_mask(self) -> np.ndarray:
        """1.0 on weight coordinates, 0.0 on biases (float64 array of shape (d,))."""
        mask = np.ones(self.num_params)
        if self.fit_intercept:
            mask[self.num_rows * self.input_dim:] = 0.0
        return mask

    @property
    def has_gauge(self) -> bool:
        """True for multinomial models with intercepts.

        Softmax is unchanged when the same constant is added to every bias, and biases
        are not regularised, so the objective is flat along ``n = [0_w; 1_K]``: the
        Hessian is singular there. Every gradient of a loss is orthogonal to ``n``
        (``sum_k (p_k - y_k) = 0``), so solves are done with ``H + c n n^T / K`` (any
        c > 0), which equals the pseudo-inverse on those right-hand sides, and fits
        keep ``sum_k b_k`` at its starting value (0 for cold fits).
        """
        return (not self.binary) and self.fit_intercept

    def gauge_vector(self) -> np.ndarray:
        """Unit vector along the flat direction (zeros when there is none)."""
        n = np.zeros(self.num_params)
        if self.has_gauge:
            n[self.num_rows * self.input_dim:] = 1.0 / np.sqrt(self.num_rows)
        return n

    def ext_permutation(self) -> np.ndarray:
        """``perm`` such that ``theta = theta_ext[perm]`` (extended → parameter layout);
        read-only, computed once per layout."""
        return _ext_permutations(self.num_rows, self.input_dim, self.ext_dim, self.fit_intercept)[0]

    def ext_inverse_permutation(self) -> np.ndarray:
        """``inv`` such that ``theta_ext = theta[inv]``; read-only, computed once per layout."""
        return _ext_permutations(self.num_rows, self.input_dim, self.ext_dim, self.fit_intercept)[1]


@functools.lru_cache(maxsize=64)
def _ext_permutations(K: int, D: int, E: int, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`ModelSpec.ext_permutation` and its inverse (read-only arrays)."""
    if not fit_intercept or K == 1:
        perm = np.arange(K * E)
    else:
        rows = np.arange(K) * E
        perm = np.concatenate([(rows[:, None] + np.arange(D)).ravel(), rows + D])
    inv = np.argsort(perm)
    perm.setflags(write=False)
    inv.setflags(write=False)
    return perm, inv


def augment(X: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """``[X, 1]`` when the model has an intercept, else ``X``."""
    if not spec.fit_intercept:
        return X
    return tf.concat([X, tf.ones([tf.shape(X)[0], 1], dtype=X.dtype)], axis=1)


def augmented_design(X, spec: ModelSpec, dtype: tf.DType) -> tf.Tensor:
    """:func:`augment` of a NumPy array ``X`` (n, D) as a tensor of ``dtype``, through one
    NumPy array of the result (a large design is never held three times: as a cast
    tensor, its concatenation and the input)."""
    X = np.asarray(X)
    n, D = X.shape
    out = np.empty((n, spec.ext_dim), dtype=dtype.as_numpy_dtype)
    out[:, :D] = X
    if spec.fit_intercept:
        out[:, D] = 1.0
    return tf.constant(out)


# Rows per block of :func:`row_norms` (a (block, E) temporary instead of an (n, E) one).
ROW_NORM_BLOCK = 65536


class _RowNormCache:
    """The row norms of the last design tensor they were computed for, held by a weak
    reference to it (a tensor is immutable, so its identity is its content): the
    certificate scales of every refit chunk on one design need the same norms."""

    def __init__(self):
        self.key, self.norms = None, None

    def get(self, Xa, dtype):
        if self.key is not None and self.key[0]() is Xa and self.key[1] == dtype:
            return self.norms
        return None

    def put(self, Xa, dtype, norms) -> None:
        self.key, self.norms = (weakref.ref(Xa), dtype), norms


_ROW_NORMS = _RowNormCache()


def row_norms(Xa, dtype: tf.DType = tf.float64) -> tf.Tensor:
    """``||Xa[i]||`` of every row in ``dtype``, (n,), by blocks of :data:`ROW_NORM_BLOCK` rows
    (those of the last design tensor are kept, see :class:`_RowNormCache`)."""
    eager = isinstance(Xa, tf.Tensor) and tf.executing_eagerly()  # an immutable tensor with a value
    if eager and (hit := _ROW_NORMS.get(Xa, dtype)) is not None:
        return hit
    n = int(Xa.shape[0])
    parts = [tf.norm(tf.cast(Xa[a:a + ROW_NORM_BLOCK], dtype), axis=1) for a in range(0, n, ROW_NORM_BLOCK)]
    norms = tf.concat(parts, axis=0) if len(parts) != 1 else parts[0]
    if eager:
        _ROW_NORMS.put(Xa, dtype, norms)
    return norms


def gauge_fix(H: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """``H + c u u^T`` along the flat direction ``u`` (see :attr:`ModelSpec.has_gauge`).

    Returns H itself when there is no flat direction. ``c`` is the mean of H's
    diagonal, so the added eigenvalue is on the scale of the others. Works on a batch
    of matrices (..., d, d) too.
    """
    if not spec.has_gauge:
        return H
    u = tf.constant(spec.gauge_vector(), dtype=H.dtype)
    c = tf.reduce_mean(tf.linalg.diag_part(H), axis=-1)[..., None, None]
    return H + c * (u[:, None] * u[None, :])


def gauge_fix_inplace(H: np.ndarray, spec: ModelSpec) -> None:
    """:func:`gauge_fix` of a NumPy batch of matrices (..., d, d) in parameter layout, in
    place: the same ``c`` (TensorFlow's mean of each diagonal) and the same ``c u u^T``,
    added only on the entries where ``u`` is non-zero (no (d, d) temporary)."""
    if not spec.has_gauge:
        return
    u = spec.gauge_vector().astype(H.dtype)  # in H's dtype, as gauge_fix's tensor
    b = np.flatnonzero(u)
    diag = np.arange(H.shape[-1])
    c = tf.reduce_mean(tf.constant(H[..., diag, diag]), axis=-1).numpy()[..., None, None]
    H[..., b[:, None], b[None, :]] += c * (u[b][:, None] * u[b][None, :])


def gauge_fix_ext_inplace(H_ext: np.ndarray, spec: ModelSpec) -> None:
    """:func:`gauge_fix` of one NumPy matrix in the extended layout
    (:meth:`ModelSpec.ext_permutation`), in place: ``c u u^T`` with the same ``c`` and ``u``,
    added only on the entries where ``u`` is non-zero (no (d, d) temporary)."""
    if not spec.has_gauge:
        return
    u = spec.gauge_vector()[spec.ext_inverse_permutation()]
    b = np.flatnonzero(u)
    c = float(np.mean(np.diagonal(H_ext)))
    H_ext[np.ix_(b, b)] += c * np.outer(u[b], u[b])


def gauge_fix_hvp(V: tf.Tensor, HV: tf.Tensor, c, spec: ModelSpec) -> tf.Tensor:
    """``(H + c u u^T) V`` from ``HV = H V`` (V of shape (d, m))."""
    if not spec.has_gauge:
        return HV
    u = tf.constant(spec.gauge_vector(), dtype=V.dtype)
    return HV + c * u[:, None] * tf.reduce_sum(u[:, None] * V, axis=0, keepdims=True)


def project_out_gauge(V: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """Remove the component along the flat direction (rounding drift in solves)."""
    if not spec.has_gauge:
        return V
    u = tf.constant(spec.gauge_vector(), dtype=V.dtype)
    if len(V.shape) == 1:
        return V - u * tf.reduce_sum(u * V)
    return V - u[:, None] * tf.reduce_sum(u[:, None] * V, axis=0, keepdims=True)


def to_ext_batch(Theta, spec: ModelSpec) -> tf.Tensor:
    """(B, d) parameter rows → (B, K', E) extended layout."""
    B = tf.shape(Theta)[0]
    if spec.binary or not spec.fit_intercept:
        return tf.reshape(Theta, [B, spec.num_rows, spec.ext_dim])
    Kc, D = spec.num_rows, spec.input_dim
    W = tf.reshape(Theta[:, :Kc * D], [B, Kc, D])
    return tf.concat([W, Theta[:, Kc * D:, None]], axis=2)


def from_ext_batch(T, spec: ModelSpec) -> tf.Tensor:
    """(B, K', E) → (B, d)."""
    B = tf.shape(T)[0]
    if spec.binary or not spec.fit_intercept:
        return tf.reshape(T, [B, -1])
    D = spec.input_dim
    return tf.concat([tf.reshape(T[:, :, :D], [B, -1]), T[:, :, D]], axis=1)


def _binary_gram_tf(X, W) -> tf.Tensor:
    """``X^T diag(W[:, b]) X`` for every column b of W (n, B): one product with an (n, B E) block."""
    E, B = int(X.shape[1]), int(W.shape[1])
    big = tf.reshape(W[:, :, None] * X[:, None, :], [-1, B * E])
    return tf.transpose(tf.reshape(tf.matmul(X, big, transpose_a=True), [E, B, E]), [1, 0, 2])


def _multinomial_gram_products(P, X, s, spec: ModelSpec):
    """The products ``X_b^T [A_i kron xa_i]_{i in b}`` (tensors (E, (K, K, E))) of the row
    blocks b of the sum ``sum_i s_i (diag p_i - p_i p_i^T) kron xa_i xa_i^T``, in order:
    one matrix product per block of rows, so the work runs at matrix-multiply speed;
    rows are processed in blocks to bound memory."""
    K, E = spec.num_rows, spec.ext_dim
    n = int(X.shape[0])
    rows_per_block = max(1, int(HESSIAN_BLOCK_BYTES // (K * K * E * X.dtype.size)))
    eye = tf.eye(K, dtype=P.dtype)
    for start in range(0, n, rows_per_block):
        Pb, Xb, sb = P[start:start + rows_per_block], X[start:start + rows_per_block], s[start:start + rows_per_block]
        # A[i, k, l] = s_i (p_ik delta_kl - p_ik p_il)
        A = sb[:, None, None] * (Pb[:, :, None] * eye[None] - Pb[:, :, None] * Pb[:, None, :])
        big = tf.reshape(A[:, :, :, None] * Xb[:, None, None, :], [-1, K * K * E])
        yield tf.matmul(Xb, big, transpose_a=True)  # (E_a, (k, l, E_b))


def _multinomial_gram_tf(P, X, s, spec: ModelSpec) -> tf.Tensor:
    """``sum_i s_i (diag p_i - p_i p_i^T) kron xa_i xa_i^T`` in parameter layout: the sum of
    :func:`_multinomial_gram_products` from zero."""
    K, E = spec.num_rows, spec.ext_dim
    H_ext = tf.zeros([E, K * K * E], dtype=X.dtype)
    for product in _multinomial_gram_products(P, X, s, spec):
        H_ext += product
    H_ext = tf.reshape(tf.transpose(tf.reshape(H_ext, [E, K, K, E]), [1, 0, 2, 3]), [K * E, K * E])
    perm = spec.ext_permutation()
    return tf.gather(tf.gather(H_ext, perm, axis=0), perm, axis=1)


def _multinomial_gram_into(out: np.ndarray, P, X, s, spec: ModelSpec, minuend: np.ndarray | None,
                           work: np.ndarray) -> None:
    """``out = minuend - G`` (or ``out = G`` without a minuend) for the matrix G of
    :func:`_multinomial_gram_tf`, written into the NumPy matrix ``out`` (d, d) in parameter
    layout: the same products summed in the same order from zero (in ``work``, an
    (E, K K E) array), then each class block pair subtracted straight into its place (no
    zeroed, transposed or permuted (d, d) copy): every entry is the same arithmetic on the
    same operands as in ``minuend - _multinomial_gram_tf(...)``."""
    K, D, E = spec.num_rows, spec.input_dim, spec.ext_dim
    first = True
    for product in _multinomial_gram_products(P, X, s, spec):
        product = np.asarray(product)  # a read-only view of the tensor
        if first:
            np.add(product, 0.0, out=work)  # 0 + product, as the sum from zero (the signs of zeros)
            first = False
        else:
            np.add(work, product, out=work)
    if first:
        work[:] = 0.0
    G = work.reshape(E, K, K, E)  # G[a, k, l, b]: row (k, a), column (l, b) of the extended layout
    bias = K * D  # bias k's row in parameter layout (with an intercept)

    def put(rows, cols, block):
        if minuend is None:
            out[rows, cols] = block
        elif np.ndim(block) == 0:
            out[rows, cols] = minuend[rows, cols] - block
        else:
            np.subtract(minuend[rows, cols], block, out=out[rows, cols])

    for k in range(K):
        wk = slice(k * D, (k + 1) * D)
        for j in range(K):
            wj = slice(j * D, (j + 1) * D)
            put(wk, wj, G[:D, k, j, :D])
            if spec.fit_intercept:
                put(wk, bias + j, G[:D, k, j, D])
                put(bias + k, wj, G[D, k, j, :D])
                put(bias + k, bias + j, G[D, k, j, D])


def _multinomial_gram_syrk(P: np.ndarray, X: np.ndarray, s: np.ndarray, spec: ModelSpec,
                           ext: bool = False, chord: bool = False) -> np.ndarray:
    """:func:`_multinomial_gram_tf` in NumPy through symmetric rank-k updates (BLAS syrk):
    the block diagonal ``X^T diag(s p_k) X`` minus ``Z^T Z`` with rows
    ``z_i = [sqrt(s_i) p_ik xa_i]_k`` (``n (K E)^2`` flops, half of a general product),
    in the dtype of X (float32 for preconditioners: twice the rate).
    ``ext``: in the extended layout (no permuted copy of the (d, d) result).

    ``chord`` (chord matrices, which need not be exact to the last bits): one syrk per
    class block ``k <= l < K - 1`` instead (block (k, l) is ``X^T diag(s (p_k delta_kl -
    p_k p_l)) X``: ``Z^T Z`` with ``Z = sqrt(s p_k (1 - p_k)) X`` on the diagonal, ``-Z^T Z``
    with ``Z = sqrt(s p_k p_l) X`` off it), ``(K - 1) K n E^2 / 4`` flops, and the last
    class's blocks from them: every ``diag(p_i) - p_i p_i^T`` has rows summing to zero, so
    ``H_{k, K-1} = -sum_{l < K-1} H_{k, l}``. Entries where those sums cancel lose
    relative accuracy, so the Hessians that are results or factored operators keep the
    form above."""
    n, E = X.shape
    Kc = spec.num_rows
    H = np.zeros((Kc * E, Kc * E), dtype=X.dtype)
    P, s = P.astype(X.dtype, copy=False), s.astype(X.dtype, copy=False)
    rows = max(1, int(HESSIAN_BLOCK_BYTES // (8 * Kc * E)))
    m = Kc - 1
    G = np.empty((E, E), dtype=X.dtype) if chord else None
    # The chord form's weighted rows, one buffer for every block and class pair (no fresh
    # (rows, E) array per product).
    Zbuf = np.empty((min(rows, n), E), dtype=X.dtype) if chord else None
    for st in range(0, n, rows):
        Xb, Pb, sb = X[st:st + rows], P[st:st + rows], s[st:st + rows]
        if not chord:
            Z = ((Pb * np.sqrt(sb)[:, None])[:, :, None] * Xb[:, None, :]).reshape(len(Xb), Kc * E)
            H -= Z.T @ Z
            for k in range(Kc):
                Zk = Xb * np.sqrt(sb * Pb[:, k])[:, None]
                H[k * E:(k + 1) * E, k * E:(k + 1) * E] += Zk.T @ Zk
            continue
        for k in range(m):
            for j in range(k, m):
                w = sb * Pb[:, k] * ((1.0 - Pb[:, k]) if j == k else Pb[:, j])
                Zw = np.multiply(Xb, np.sqrt(w)[:, None], out=Zbuf[:len(Xb)])
                np.matmul(Zw.T, Zw, out=G)  # BLAS syrk
                block = H[k * E:(k + 1) * E, j * E:(j + 1) * E]
                if j == k:
                    block += G
                else:
                    block -= G
    if chord:
        for k in range(m):
            for j in range(k + 1, m):  # the blocks below the diagonal: B_jk = B_kj^T = B_kj
                H[j * E:(j + 1) * E, k * E:(k + 1) * E] = H[k * E:(k + 1) * E, j * E:(j + 1) * E]
        last = slice(m * E, Kc * E)
        for k in range(m):
            H[k * E:(k + 1) * E, last] = -H[k * E:(k + 1) * E, :m * E].reshape(E, m, E).sum(axis=1)
            H[last, k * E:(k + 1) * E] = H[k * E:(k + 1) * E, last]
        H[last, last] = -H[last, :m * E].reshape(E, m, E).sum(axis=1)
    if ext:
        return H
    perm = spec.ext_permutation()
    return H[np.ix_(perm, perm)]


def _as_run(idx: np.ndarray) -> slice | None:
    """The slice of an index array of consecutive increasing rows, else None."""
    if idx.size and idx[-1] - idx[0] + 1 == idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return None


def _sparse_gram(Xs, w) -> np.ndarray:
    """``Xs^T diag(w) Xs`` as a dense float64 array for a scipy sparse ``Xs`` (n, E): one
    sparse product (``nnz`` work per non-zero row pair instead of ``n E^2``), then densified."""
    return np.asarray((Xs.T @ sp.diags(np.asarray(w, dtype=np.float64)) @ Xs).toarray())


class GradientFactors:
    """The per-example loss gradients of a multinomial model, in factored form.

    Row i of the gradient matrix is ``r_i (x) xa_i`` in the parameter layout: class-major
    weights ``r_ik x_ij`` (column ``k D + j``), then, with an intercept, the biases ``r_ik``
    (``xa_i = [x_i; 1]``, whose last entry multiplies to ``r_ik`` exactly). Hence
    ``g_i . g_j = (r_i . r_j) (xa_i . xa_j)`` and ``|g_i|^2 = |r_i|^2 |xa_i|^2``: the Gram
    matrix of a block of rows costs ``(K + E)`` products per pair instead of ``K E``.

    ``R``: float array of shape (n_samples, K); ``Xa``: float array of shape (n_samples, E),
    the augmented design (its last column ones when ``fit_intercept``), of ``R``'s dtype.
    Plain NumPy arrays: the object pickles.
    """

    def __init__(self, R, Xa, fit_intercept: bool):
        R, Xa = np.asarray(R), np.asarray(Xa)
        if R.ndim != 2 or Xa.ndim != 2 or R.shape[0] != Xa.shape[0]:
            raise ValueError(f"R and Xa must be 2-d with as many rows; got shapes {R.shape} and {Xa.shape}")
        if R.dtype != Xa.dtype:
            raise ValueError(f"R and Xa must have one dtype; got {R.dtype} and {Xa.dtype}")
        if fit_intercept and Xa.shape[1] < 2:
            raise ValueError(f"with an intercept Xa needs its features and the ones column; got shape {Xa.shape}")
        self.R, self.Xa, self.fit_intercept = R, Xa, bool(fit_intercept)

    @property
    def input_dim(self) -> int:
        return self.Xa.shape[1] - int(self.fit_intercept)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the gradient matrix: (n_samples, K D (+ K with an intercept))."""
        K = self.R.shape[1]
        return self.R.shape[0], K * self.input_dim + (K if self.fit_intercept else 0)

    @property
    def dtype(self) -> np.dtype:
        return self.R.dtype

    def rows(self, a: int, b: int) -> np.ndarray:
        """Gradient rows ``[a, b)`` as a new array, in the parameter layout: the one place of
        that layout. Written block of rows by block (:data:`PER_EXAMPLE_BLOCK_BYTES`), so
        that the only array of the rows' size is the result (at MNIST scale 3.45 GB, where
        the product of all rows and its concatenation with the biases held three);
        elementwise products, so the same bits as one product of all rows."""
        a, b = max(0, int(a)), min(int(b), self.R.shape[0])
        K, D = self.R.shape[1], self.input_dim
        out = np.empty((max(b - a, 0), self.shape[1]), dtype=self.dtype)
        step = max(1, PER_EXAMPLE_BLOCK_BYTES // max(1, K * D * out.itemsize))
        for s in range(a, b, step):
            e = min(s + step, b)
            R = self.R[s:e]
            out[s - a:e - a, :K * D] = (R[:, :, None] * self.Xa[s:e, None, :D]).reshape(e - s, K * D)
            if self.fit_intercept:
                out[s - a:e - a, K * D:] = R
        return out

    def squared_norms(self) -> np.ndarray:
        """``|g_i|^2 = |r_i|^2 |xa_i|^2``, float64 array of shape (n_samples,)."""
        R, Xa = self.R.astype(np.float64, copy=False), self.Xa.astype(np.float64, copy=False)
        return np.einsum("ik,ik->i", R, R) * np.einsum("ij,ij->i", Xa, Xa)

    def gram(self, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        """``g_i . g_j`` for rows ``i`` in ``[a0, a1)`` and ``j`` in ``[b0, b1)``:
        ``(R_A R_B^T) * (Xa_A Xa_B^T)``, float64 array of shape (a1 - a0, b1 - b0)."""
        def f64(M):
            return M.astype(np.float64, copy=False)
        G = f64(self.Xa[a0:a1]) @ f64(self.Xa[b0:b1]).T
        G *= f64(self.R[a0:a1]) @ f64(self.R[b0:b1]).T
        return G


class LogisticObjective:
    """``L_b(theta) = sum_i S[i, b] l_i(theta) + (l2_reg / 2) ||mask * theta||^2`` for the
    B columns of the sample-weight matrix S, and all its derivatives.

    ``Xa``: augmented design (:func:`augment`), tensor of shape (n, E); ``y``: labels
    (0/1 for binary, int classes for multinomial; None when only curvature-based
    quantities are needed); ``S``: weights, tensor of shape (n, B) or (n,) (B = 1), None
    for unit weights (B = 1); ``l2``: scalar. ``weight_mask`` (1 on regularised
    coordinates) defaults to the spec's (biases 0). ``Xa_np``: optional float64 NumPy copy
    of Xa (the BLAS syrk Hessians); ``Xa_sparse``: optional float64 scipy CSR copy of Xa
    (binary models: sparse products for logits, gradients, HVPs and Hessians).

    Batched methods take parameter rows ``Theta`` (B, d); the ``*_at`` methods one parameter
    vector of a problem with B = 1. ``hvp`` and ``hessians`` add ``gauge_c u u^T`` along the
    flat direction (:attr:`ModelSpec.has_gauge`) so that the solves are definite.
    """

    def __init__(self, spec: ModelSpec, Xa, y=None, S=None, l2=0.0, Xa_np=None, weight_mask=None,
                 Xa_sparse=None):
        self.spec, self.Xa = spec, Xa
        self.l2 = l2 if tf.is_tensor(l2) else tf.constant(float(l2), dtype=Xa.dtype)
        self.Xa_np, self.Xa_sparse = Xa_np, Xa_sparse
        if S is None:
            S = tf.ones([int(Xa.shape[0]), 1], dtype=Xa.dtype)
        self.S = S[:, None] if len(S.shape) == 1 else S
        self.B = int(self.S.shape[1])
        self.mask = tf.constant(spec.weight_mask() if weight_mask is None else weight_mask, dtype=Xa.dtype)
        self.s_base = None
        self._gauge_c = None
        self.y = self.Y1 = None
        if y is not None and spec.binary:
            self.y = tf.cast(y, Xa.dtype)
        elif y is not None:
            self.y = y
            self.Y1 = tf.one_hot(tf.cast(y, tf.int32), spec.num_classes, dtype=Xa.dtype)  # (n, K)

    @classmethod
    def without_groups(cls, spec: ModelSpec, Xa, y, s_base, l2, groups, Xa_np=None,
                       weight_mask=None, Xa_sparse=None) -> LogisticObjective:
        """The B reduced problems ``L_{-U}`` of the groups (their weights set to zero)."""
        keep = np.ones((int(Xa.shape[0]), len(groups)))  # 0 on group b's points in column b
        for b, idx in enumerate(groups):
            keep[np.asarray(idx, dtype=np.int64), b] = 0.0
        obj = cls(spec, Xa, y, s_base[:, None] * tf.constant(keep, dtype=Xa.dtype), l2, Xa_np, weight_mask,
                  Xa_sparse)
        obj.s_base = s_base
        return obj

    def columns(self, cols) -> LogisticObjective:
        """The sub-batch of problems ``cols`` (an int array), sharing the data tensors."""
        _ = self.gauge_c  # a sub-batch keeps its parent's gauge constant
        sub = LogisticObjective.__new__(LogisticObjective)
        sub.__dict__.update(self.__dict__)
        sub.S = tf.gather(self.S, cols, axis=1)
        sub.B = len(cols)
        return sub

    def set_columns(self, cols, S_cols) -> None:
        """Problems ``cols`` (an int array) take the sample-weight columns ``S_cols``
        (n, len(cols)): new problems in those batch slots (continuous batching,
        :class:`influence.newton.ProblemQueue`); the gauge constant is kept."""
        _ = self.gauge_c
        S_cols = tf.constant(np.asarray(S_cols), dtype=self.S.dtype)
        self.S = tf.transpose(tf.tensor_scatter_nd_update(tf.transpose(self.S), np.asarray(cols)[:, None],
                                                          tf.transpose(S_cols)))

    @property
    def gauge_c(self) -> float:
        """Any c > 0 fixes the gauge (ModelSpec.has_gauge); this one is on the scale of
        the Hessian's diagonal, like the preconditioners'."""
        if self._gauge_c is None:
            self._gauge_c = float(tf.reduce_sum(self.S) / max(self.B, 1)) / self.spec.num_rows + float(self.l2)
        return self._gauge_c

    def grad_scales(self) -> np.ndarray:
        """``max(sum_i S[i, b] ||[x_i; 1]||, 1)`` per problem (float64 NumPy, (B,)): it bounds
        the data term's gradient, and the certificate is ``||grad L_b|| <= rtol * scale_b``."""
        # In float64 whatever the model dtype (a no-op cast for float64 models).
        norms = row_norms(self.Xa)
        return tf.maximum(tf.linalg.matvec(tf.cast(self.S, tf.float64), norms, transpose_a=True), 1.0).numpy()

    def design_np(self) -> np.ndarray:
        """The design as a NumPy array: ``Xa_np``, else a read-only view of ``Xa`` (no copy)."""
        return self.Xa_np if self.Xa_np is not None else np.asarray(self.Xa)

    # ------------------------------------------------------------ products with the design
    def _x_times(self, T):
        """``Xa T^T``, (n, m), for rows T (m, E): a sparse product when ``Xa_sparse`` is set."""
        if self.Xa_sparse is not None:
            return tf.constant(self.Xa_sparse @ np.asarray(T).T, dtype=self.Xa.dtype)
        return tf.matmul(self.Xa, T, transpose_b=True)

    def _times_x(self, R):
        """``R^T Xa``, (m, E), for R (n, m): a sparse product when ``Xa_sparse`` is set."""
        if self.Xa_sparse is not None:
            return tf.constant(np.asarray(self.Xa_sparse.T @ np.asarray(R)).T, dtype=self.Xa.dtype)
        return tf.matmul(R, self.Xa, transpose_a=True)

    # ------------------------------------------------------------ per-example quantities
    def logits(self, Theta):
        """Binary: ``w.x + b``, (n, B); multinomial: (n, B, K)."""
        T = tf.reshape(to_ext_batch(Theta, self.spec), [-1, self.spec.ext_dim])
        if self.spec.binary:
            return self._x_times(T)
        return tf.reshape(tf.matmul(self.Xa, T, transpose_b=True), [int(self.Xa.shape[0]), -1, self.spec.num_classes])

    def _losses(self, Z, per_row: bool = False):
        """Unweighted cross-entropy of every example from the logits Z, (n, B); binary with
        ``per_row``: from the transposed logits, (B, n) (TensorFlow's vectorised softplus
        rounds by memory layout, so each caller keeps one layout)."""
        if self.spec.binary:
            return tf.nn.softplus(Z) - (self.y[None, :] if per_row else self.y[:, None]) * Z
        return tf.reduce_logsumexp(Z, axis=2) - tf.reduce_sum(Z * self.Y1[:, None, :], axis=2)

    def _residual(self, Z):
        """``dl_i / dz`` from the logits Z: binary ``sigma(z) - y`` (n, B); multinomial
        ``softmax(z) - onehot(y)`` (n, B, K)."""
        if self.spec.binary:
            return tf.sigmoid(Z) - self.y[:, None]
        return tf.nn.softmax(Z, axis=2) - self.Y1[:, None, :]

    def _unit_curvature(self, Z):
        """Binary ``sigma (1 - sigma)`` (n, B); multinomial the probabilities (n, B, K)."""
        if self.spec.binary:
            p = tf.sigmoid(Z)
            return p * (1.0 - p)
        return tf.nn.softmax(Z, axis=2)

    def per_example_losses(self, Theta):
        """Unweighted cross-entropy of every example at each row of Theta, (B, n)."""
        Z = self.logits(Theta)
        if self.spec.binary:
            return self._losses(tf.transpose(Z), per_row=True)
        return tf.transpose(self._losses(Z))

    def residual(self, Theta):
        """Unweighted ``dl_i / dz`` at each row of Theta: binary ``sigma - y`` (n, B);
        multinomial ``softmax - onehot(y)`` (n, B, K)."""
        return self._residual(self.logits(Theta))

    def per_example_gradients(self, theta):
        """Unweighted gradient of every example's loss at one parameter vector, (n, d).

        Multinomial: a NumPy array in the parameter layout, formed from
        :meth:`per_example_gradient_factors` (:meth:`GradientFactors.rows`).
        """
        if self.spec.binary:
            R = self.residual(theta[None])[:, 0]
            return R[:, None] * self.Xa
        factors = self.per_example_gradient_factors(theta)
        return factors.rows(0, factors.shape[0])

    def per_example_gradient_factors(self, theta) -> GradientFactors:
        """The factors of the multinomial per-example gradients at one parameter vector:
        the residuals ``r_i = softmax(z_i) - onehot(y_i)`` and the augmented design
        (:class:`GradientFactors`; the design is shared, not copied)."""
        if self.spec.binary:
            raise ValueError("per-example gradient factors are defined for multinomial models only; "
                             f"got num_classes={self.spec.num_classes}")
        R = np.asarray(self.residual(theta[None])[:, 0])
        return GradientFactors(R, self.design_np(), self.spec.fit_intercept)

    def probabilities(self, Theta):
        """Probabilities of every class at each row of Theta, (n, B, K)."""
        Z = self.logits(Theta)
        if self.spec.binary:
            p1 = tf.sigmoid(Z)
            return tf.stack([1.0 - p1, p1], axis=2)
        return tf.nn.softmax(Z, axis=2)

    def margins(self, Theta):
        """Binary margins ``(2y - 1)(w.x + b)`` at each row of Theta, (B, n)."""
        self.require_binary("margins")
        return (2.0 * self.y[None, :] - 1.0) * tf.transpose(self.logits(Theta))

    def margin_gradients(self):
        """Binary margin gradients ``(2y - 1)[x; 1]`` (they do not depend on theta), (n, d)."""
        self.require_binary("margin gradients")
        return (2.0 * self.y - 1.0)[:, None] * self.Xa

    def require_binary(self, what: str) -> None:
        if not self.spec.binary:
            raise ValueError(f"{what} are defined for binary models only; got num_classes={self.spec.num_classes}")

    # ------------------------------------------------------------ loss and gradient
    def loss_gradient(self, Theta, loss: bool = True, gradient: bool = True):
        """``(L_b(Theta[b]), grad L_b(Theta[b]))`` for every problem: (B,) and (B, d), from one
        set of logits (None for a part not asked for)."""
        Z = self.logits(Theta)
        f = g = None
        if loss:
            f = (tf.reduce_sum(self.S * self._losses(Z), axis=0)
                 + 0.5 * self.l2 * tf.reduce_sum(self.mask * Theta * Theta, axis=1))
        if gradient:
            R = self._residual(Z)
            if self.spec.binary:
                G = self._times_x(self.S * R)                                  # (B, E)
            else:
                G = from_ext_batch(tf.einsum("nbk,na->bka", self.S[:, :, None] * R, self.Xa), self.spec)
            g = G + self.l2 * self.mask * Theta
        return f, g

    def loss(self, Theta):
        """Objective values, (B,)."""
        return self.loss_gradient(Theta, gradient=False)[0]

    def gradient(self, Theta):
        """Gradients, (B, d)."""
        return self.loss_gradient(Theta, loss=False)[1]

    def loss_at(self, theta) -> tf.Tensor:
        return self.loss(theta[None])[0]

    def gradient_at(self, theta) -> tf.Tensor:
        return self.gradient(theta[None])[0]

    # ------------------------------------------------------------ curvature and HVPs
    def curvature(self, Theta):
        """Weighted curvature at each row of Theta, for :meth:`hvp`: binary
        ``S * sigma (1 - sigma)`` (n, B); multinomial probabilities (n, B, K)."""
        Z = self.logits(Theta)
        if self.spec.binary:
            p = tf.sigmoid(Z)
            return self.S * (p * (1.0 - p))
        return tf.nn.softmax(Z, axis=2)

    def hessian_diagonals(self, Theta) -> np.ndarray:
        """Binary models: the diagonals of the regularised Hessians at each row of Theta,
        ``sum_i S[i, b] sigma_i (1 - sigma_i) xa_ij^2 + l2 mask_j``, float64 array of shape
        (B, d) (``nnz`` work on a sparse design)."""
        self.require_binary("Hessian diagonals")
        curv = self.curvature(Theta).numpy()                                    # (n, B)
        if self.Xa_sparse is not None:
            sq = np.asarray((self.Xa_sparse.multiply(self.Xa_sparse).T @ curv)).T
        else:
            Xn = self.Xa_np if self.Xa_np is not None else self.Xa.numpy()
            sq = curv.T @ (Xn * Xn)
        return sq + float(self.l2) * self.mask.numpy()[None, :]

    def hessian_factor_rows(self, theta) -> tf.Tensor:
        """Rows Z with ``Z^T Z`` the unregularised Hessian at one parameter vector (B = 1).

        Binary: ``sqrt(s sigma (1 - sigma)) [x; 1]`` (one row per point). Multinomial:
        ``A_i = diag(p_i) - p_i p_i^T = R_i R_i^T`` with ``R_i = diag(sqrt p_i) - p_i sqrt(p_i)^T``;
        row (i, c) has ``sqrt(s_i) R_i[k, c] x_i`` in class k's weight block and
        ``sqrt(s_i) R_i[k, c]`` in bias k (K rows per point).
        """
        c = self.curvature(theta[None])[:, 0]
        if self.spec.binary:
            return tf.sqrt(c)[:, None] * self.Xa
        sq = tf.sqrt(c)
        R = (tf.linalg.diag(sq) - c[:, :, None] * sq[:, None, :]) * tf.sqrt(self.S[:, 0])[:, None, None]
        rows_ext = R[:, :, :, None] * self.Xa[:, None, None, :]     # (n, k, c, E)
        n = tf.shape(self.Xa)[0]
        rows_ext = tf.reshape(tf.transpose(rows_ext, [0, 2, 1, 3]), [n * self.spec.num_rows, self.spec.num_params])
        return tf.gather(rows_ext, self.spec.ext_permutation(), axis=1)

    def _hvp(self, curv, S, V, gauge: bool, X=None):
        """``A_j V[k]`` (tensor (b, d)) for the curvature columns ``curv`` and weights S of
        the rows of V (or one column for all of them): two products with the design.
        ``X``: other rows of the design instead (dense), with ``curv`` and S on those rows;
        the data term only (no regulariser, no gauge term)."""
        spec = self.spec
        rows = self.Xa if X is None else X
        b, n = int(V.shape[0]), int(rows.shape[0])
        if spec.binary:
            if X is None:
                out = self._times_x(curv * self._x_times(V))                  # (b, E)
            else:
                out = tf.matmul(curv * tf.matmul(X, V, transpose_b=True), X, transpose_a=True)
        else:
            Kc, E = spec.num_rows, spec.ext_dim
            Vx = tf.reshape(to_ext_batch(V, spec), [b * Kc, E])
            U = tf.reshape(tf.matmul(rows, Vx, transpose_b=True), [n, b, Kc])
            T = S[:, :, None] * curv * (U - tf.reduce_sum(curv * U, axis=2, keepdims=True))
            out = tf.matmul(tf.reshape(T, [n, b * Kc]), rows, transpose_a=True)
            out = from_ext_batch(tf.reshape(out, [b, Kc, E]), spec)
            if gauge and spec.has_gauge and X is None:
                u = tf.constant(spec.gauge_vector(), dtype=V.dtype)
                out += self.gauge_c * tf.reduce_sum(V * u, axis=1, keepdims=True) * u
        return out if X is not None else out + self.l2 * self.mask * V

    def group_rows(self, curv, idx, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What :meth:`group_hvp` reads of one group U (index array ``idx``), as NumPy arrays
        in ``dtype``: its rows of ``curv`` ((|U|,) binary, (|U|, K) multinomial), of the
        weights (|U|,) and of the design (|U|, E); held by a caller that applies the same
        group's Hessian many times, so that its products skip the gather."""
        idx = np.asarray(idx, dtype=np.int64)
        c = to_numpy(tf.gather(curv, idx), dtype).reshape(len(idx), -1)
        S = to_numpy(tf.gather(self.S, idx), dtype).reshape(-1)
        return (c[:, 0] if self.spec.binary else c), S, to_numpy(tf.gather(self.Xa, idx), dtype).reshape(len(idx), -1)

    def group_hvp(self, curv, idx, V, rows=None) -> np.ndarray:
        """``H_U V[k]`` for one group U (index array ``idx``), float64 NumPy (b, d): the
        unregularised Hessian of the group's points under this objective's weights (B = 1),
        at the parameter vector ``curv`` (:meth:`curvature`) was computed at; V: (b, d). Two
        products with the group's rows only (``4 |U| E K'`` flops per vector), in NumPy: a
        group's product is small, and TensorFlow's per-call overhead exceeded its arithmetic.
        ``rows``: the group's :meth:`group_rows` when the caller holds them (the products
        then run in their dtype), else gathered here."""
        spec = self.spec
        c, S, X = self.group_rows(curv, idx) if rows is None else rows
        V = np.asarray(V, dtype=np.float64)
        b, Kc, E = V.shape[0], spec.num_rows, spec.ext_dim
        Vx = V[:, spec.ext_inverse_permutation()].reshape(b * Kc, E).astype(X.dtype, copy=False)
        U = (X @ Vx.T).reshape(-1, b, Kc)                                    # (|U|, b, K')
        if spec.binary:  # curv already carries the weights
            T = c[:, None, None] * U
        else:
            T = (S[:, None] * c)[:, None, :] * (U - np.sum(c[:, None, :] * U, axis=2, keepdims=True))
        out = (T.reshape(-1, b * Kc).T @ X).reshape(b, Kc * E)
        return np.asarray(out[:, spec.ext_permutation()], dtype=np.float64)

    def hvp(self, curv, V, rows=None) -> np.ndarray:
        """``A_j V[k]`` for ``j = rows[k]``: regularised Hessians (gauge-fixed with
        ``gauge_c u u^T``) at the iterates ``curv`` (:meth:`curvature`) was computed at.
        V: (b, d) NumPy. Two matrix products over the whole batch."""
        S = self.S
        if rows is not None and len(rows) < self.B:
            curv, S = tf.gather(curv, rows, axis=1), tf.gather(S, rows, axis=1)
        return self._hvp(curv, S, tf.constant(V, dtype=self.Xa.dtype), gauge=True).numpy()

    def hvp_at(self, theta, V, autodiff: bool = False) -> tf.Tensor:
        """``H V`` (no gauge term) at one parameter vector for V of shape (d,) or (d, m);
        ``autodiff``: by double backpropagation through :meth:`loss_at`, one column at a time."""
        squeeze = len(V.shape) == 1
        Vr = V[None] if squeeze else tf.transpose(V)                           # (m, d)
        if autodiff:
            out = tf.stack([self._autodiff_hvp(theta, Vr[j]) for j in range(Vr.shape[0])])
        else:
            out = self._hvp(self.curvature(theta[None]), self.S, Vr, gauge=False)
        return out[0] if squeeze else tf.transpose(out)

    def _autodiff_hvp(self, theta, v):
        theta = tf.convert_to_tensor(theta)
        with tf.GradientTape() as outer:
            outer.watch(theta)
            with tf.GradientTape() as inner:
                inner.watch(theta)
                f = self.loss_at(theta)
            gv = tf.reduce_sum(inner.gradient(f, theta) * tf.stop_gradient(v))
        return outer.gradient(gv, theta)

    # ------------------------------------------------------------ Hessians
    def hessian_method(self, method: str = "auto") -> str:
        """The Hessian strategy of :meth:`hessians` (the one place it is chosen).

        ``'sparse'`` (binary, ``Xa_sparse``): sparse products ``Xa^T (w * Xa)``, densified
        once; ``'syrk'`` (float64): per-problem NumPy symmetric rank-k updates (half the
        flops of a general product) on ``Xa_np`` or a view of ``Xa``; ``'einsum'``
        (binary): one contraction for all B Hessians, fast for d up to a few hundred and
        thousands of problems; ``'matmul'``: TensorFlow products (binary: one with an
        (n, B E) block; multinomial: blocks of rows per problem). ``'auto'``:
        ``'sparse'``, else ``'syrk'`` for binary float64 models with ``Xa_np``, else
        ``'matmul'``.
        """
        if method not in HESSIAN_METHODS:
            raise ValueError(f"hessian method must be one of {HESSIAN_METHODS}; got {method!r}")
        binary = self.spec.binary
        if method in ("sparse", "einsum") and not binary:
            raise ValueError(f"hessian method {method!r} is for binary models only")
        if method != "auto":
            return method
        if binary and self.Xa_sparse is not None:
            return "sparse"
        if binary and self.Xa_np is not None and self.Xa.dtype == tf.float64:
            return "syrk"
        return "matmul"

    def hessians(self, Theta, method: str = "auto", gauge: bool = True, as_numpy: bool = False,
                 pin_blas: bool = True):
        """Regularised Hessians at each row of Theta, (B, d, d), by the strategy
        :meth:`hessian_method` picks; gauge-fixed (:func:`gauge_fix`) unless ``gauge`` is
        False. ``as_numpy``: a float64 NumPy array (no tensor copy of a large matrix).
        ``pin_blas``: the syrk products on one BLAS thread (:func:`one_blas_thread`). The syrk
        products run in the dtype of ``Xa_np`` (a float32 copy: a preconditioner's Hessian)."""
        how = self.hessian_method(method)
        spec = self.spec
        curv = self.curvature(Theta)
        if how in ("sparse", "syrk"):
            Xn = self.design_np()
            W, S = curv.numpy(), self.S.numpy()
            H = np.empty((W.shape[1], spec.num_params, spec.num_params))
            with one_blas_thread() if pin_blas else contextlib.nullcontext():
                for b in range(W.shape[1]):
                    if how == "sparse":
                        H[b] = _sparse_gram(self.Xa_sparse, W[:, b])
                    elif spec.binary:
                        Zb = Xn * np.sqrt(W[:, b])[:, None]
                        np.matmul(Zb.T, Zb, out=H[b])  # BLAS syrk
                    else:
                        H[b] = _multinomial_gram_syrk(W[:, b], Xn, S[:, b], spec)
            diag = np.arange(spec.num_params)
            H[:, diag, diag] += float(self.l2) * self.mask.numpy()
            if as_numpy and not (gauge and spec.has_gauge):
                return H
            H = tf.constant(H, dtype=self.Xa.dtype)
        else:
            if how == "einsum":
                H = tf.einsum("nk,ni,nj->kij", curv, self.Xa, self.Xa)
            elif spec.binary:
                H = _binary_gram_tf(self.Xa, curv)
            else:
                H = tf.stack([_multinomial_gram_tf(curv[:, b], self.Xa, self.S[:, b], spec) for b in range(self.B)])
            H = H + tf.linalg.diag(self.l2 * self.mask)
        H = gauge_fix(H, spec) if gauge else H
        return H.numpy() if as_numpy else H

    def hessian_ext(self, theta) -> np.ndarray:
        """The regularised Hessian at one parameter vector (B = 1) in the extended layout
        (class k's rows ``[w_k; b_k]`` one after the other; :meth:`ModelSpec.ext_permutation`),
        without the gauge term: a float64 NumPy array (d, d) formed by BLAS syrk (``Xa_np``
        or the design), the only (d, d) array made (no permuted copy)."""
        spec = self.spec
        Xn = self.design_np()
        W = self.curvature(tf.convert_to_tensor(theta, dtype=self.Xa.dtype)[None])[:, 0].numpy()
        if spec.binary:
            Z = Xn * np.sqrt(W)[:, None]
            H = Z.T @ Z  # BLAS syrk
        else:
            H = _multinomial_gram_syrk(W, Xn, self.S[:, 0].numpy(), spec, ext=True)
        mask_ext = self.mask.numpy()[spec.ext_inverse_permutation()]
        H[np.diag_indices(spec.num_params)] += float(self.l2) * mask_ext
        return H

    def hessian_at(self, theta) -> tf.Tensor:
        """The regularised Hessian at one parameter vector (B = 1), without the gauge term."""
        return self.hessians(theta[None], gauge=False)[0]

    def group_hessians(self, theta, groups, minuend=None, chord: bool = False, gauge: bool = False):
        """Unregularised Hessians ``H_U`` of the groups under the base weights
        (:meth:`without_groups`) at one parameter vector, (B, d, d); with ``minuend``
        (a (d, d) tensor, e.g. the full regularised Hessian), ``minuend - H_U`` (formed
        in place, without a second (B, d, d) array); ``gauge``: then gauge-fixed
        (:func:`gauge_fix`, in place). ``chord`` (multinomial float64 models; chord
        matrices only): by :func:`_multinomial_gram_syrk` with ``chord``, a quarter of the
        flops, the last class's blocks derived from the others'. Multinomial models
        otherwise: TensorFlow products per group (:func:`_multinomial_gram_into`), each
        group's matrix written straight into the batch."""
        spec, Xa, s_base = self.spec, self.Xa, self.s_base
        how = self.hessian_method()
        d = spec.num_params
        if spec.binary and how in ("syrk", "sparse"):
            w = (self._unit_curvature(self.logits(theta[None]))[:, 0] * s_base).numpy()
            Z = None if how == "sparse" else self.Xa_np * np.sqrt(w)[:, None]
            out = np.empty((len(groups), d, d))
            M = None if minuend is None else np.asarray(minuend.numpy(), dtype=np.float64)
            with one_blas_thread():
                for b, idx in enumerate(groups):
                    idx = np.asarray(idx, dtype=np.int64)
                    if how == "sparse":
                        out[b] = _sparse_gram(self.Xa_sparse[idx], w[idx])
                    else:
                        Zb = Z[idx]
                        np.matmul(Zb.T, Zb, out=out[b])  # BLAS syrk
                    if M is not None:
                        np.subtract(M, out[b], out=out[b])
            return tf.constant(out, dtype=Xa.dtype)
        if chord and not spec.binary and Xa.dtype == tf.float64:  # chord matrices: syrk per class block
            Xn, s_np = self.design_np(), np.asarray(s_base, dtype=np.float64)
            out = np.empty((len(groups), d, d))
            M = None if minuend is None else np.asarray(minuend, dtype=np.float64)
            with one_blas_thread():
                for b, idx in enumerate(groups):
                    idx = np.asarray(idx, dtype=np.int64)
                    # A run of consecutive rows (e.g. a cross-validation fold) is read in place.
                    run = _as_run(idx)
                    X_U = Xn[idx] if run is None else Xn[run]
                    # The group's curvature from its own rows' logits (as the group's Hessian alone).
                    group = LogisticObjective(spec, tf.constant(X_U) if run is None else Xa[run])
                    P_U = group._unit_curvature(group.logits(theta[None]))[:, 0].numpy()
                    out[b] = _multinomial_gram_syrk(P_U, X_U, s_np[idx], spec, chord=True)
                    if M is not None:
                        np.subtract(M, out[b], out=out[b])
            if gauge:
                gauge_fix_inplace(out, spec)
            return tf.constant(out, dtype=Xa.dtype)
        if not spec.binary:
            np_dtype = Xa.dtype.as_numpy_dtype
            out = tensor_buffer((len(groups), d, d), np_dtype)
            M = None if minuend is None else np.asarray(minuend, dtype=np_dtype)
            work = np.empty((spec.ext_dim, spec.num_rows ** 2 * spec.ext_dim), dtype=np_dtype)
            for b, idx in enumerate(groups):
                idx = np.asarray(idx, dtype=np.int64)
                X_U, s_U = tf.gather(Xa, idx), tf.gather(s_base, idx)
                # The group's curvature from its own rows' logits (as the group's Hessian alone).
                group = LogisticObjective(spec, X_U)
                c_U = group._unit_curvature(group.logits(theta[None]))[:, 0]
                _multinomial_gram_into(out[b], c_U, X_U, s_U, spec, M, work)
            del work
            if gauge:
                gauge_fix_inplace(out, spec)
            return handover_tensor(out)
        H_U = []
        for idx in groups:
            idx = np.asarray(idx, dtype=np.int64)
            X_U, s_U = tf.gather(Xa, idx), tf.gather(s_base, idx)
            group = LogisticObjective(spec, X_U)
            c_U = group._unit_curvature(group.logits(theta[None]))[:, 0]
            H_U.append(_binary_gram_tf(X_U, (s_U * c_U)[:, None])[0])
        return tf.stack(H_U) if minuend is None else minuend[None] - tf.stack(H_U)
