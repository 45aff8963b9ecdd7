"""The objective of L2-regularised logistic regression: loss, gradient, Hessian, HVP,
curvature and the multinomial gauge, for one parameter vector or a batch of them.

Like scikit-learn's ``LinearModelLoss`` (``linear_model/_linear_loss.py``), one object,
:class:`LogisticObjective`, owns every derivative; the Newton loop
(:mod:`influence.newton`) and :class:`~influence.logistic_regression.LogisticRegression`
are handed its methods. The single-vector kernels below are pure functions of tensors
(the object's single-vector methods call them); the batched methods evaluate B
problems that share the data and differ in their sample weights (the columns of S).

Conventions (spec ``experiments.md`` §1):

* Objective: ``L(theta) = sum_i s_i * l_i(theta) + (l2_reg / 2) * ||W||^2``: summed over
  examples (not averaged), with sample weights ``s_i``; biases are never regularised.
* Binary (``num_classes == 2``): one weight vector ``w`` of length D and, with an
  intercept, a scalar ``b``; the logits are ``[0, w.x + b]``; ``theta = [w; b]``.
* Multinomial (``num_classes = K > 2``): K full weight vectors (no reference class) and K
  biases; ``theta = [vec(W) (class-major: row k = class k); b_0..b_{K-1}]``.
* Margin (binary only): ``m = (2y - 1) (w.x + b)``.

All kernels take tensors of the model dtype (float64 by default) and return tensors. The
"extended" layout used internally augments x with a trailing 1 (when there is an
intercept) so that class k's parameters are the row ``[w_k; b_k]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf


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
        """``perm`` such that ``theta = theta_ext[perm]`` (extended → parameter layout)."""
        K, D, E = self.num_rows, self.input_dim, self.ext_dim
        if not self.fit_intercept or K == 1:
            return np.arange(self.num_params)
        weights = [k * E + a for k in range(K) for a in range(D)]
        biases = [k * E + D for k in range(K)]
        return np.array(weights + biases)

    def ext_inverse_permutation(self) -> np.ndarray:
        """``inv`` such that ``theta_ext = theta[inv]``."""
        return np.argsort(self.ext_permutation())


def augment(X: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """``[X, 1]`` when the model has an intercept, else ``X``."""
    if not spec.fit_intercept:
        return X
    return tf.concat([X, tf.ones([tf.shape(X)[0], 1], dtype=X.dtype)], axis=1)


def to_ext(theta: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """Parameters as a (K', E) matrix of rows ``[w_k; b_k]`` (K' = 1 for binary)."""
    if spec.binary or not spec.fit_intercept:
        return tf.reshape(theta, [spec.num_rows, spec.ext_dim])
    K, D = spec.num_rows, spec.input_dim
    W = tf.reshape(theta[:K * D], [K, D])
    b = tf.reshape(theta[K * D:], [K, 1])
    return tf.concat([W, b], axis=1)


def from_ext(theta_ext: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """Inverse of :func:`to_ext`: (K', E) → flat parameter vector."""
    if spec.binary or not spec.fit_intercept:
        return tf.reshape(theta_ext, [-1])
    D = spec.input_dim
    return tf.concat([tf.reshape(theta_ext[:, :D], [-1]), theta_ext[:, D]], axis=0)


def logits(theta: tf.Tensor, Xa: tf.Tensor, spec: ModelSpec) -> tf.Tensor:
    """Binary: ``w.x + b`` of shape (n,). Multinomial: (n, K)."""
    T = to_ext(theta, spec)
    Z = tf.matmul(Xa, T, transpose_b=True)
    return Z[:, 0] if spec.binary else Z


def probabilities(theta, Xa, spec) -> tf.Tensor:
    """Softmax probabilities of every class, shape (n, K)."""
    Z = logits(theta, Xa, spec)
    if spec.binary:
        p1 = tf.sigmoid(Z)
        return tf.stack([1.0 - p1, p1], axis=1)
    return tf.nn.softmax(Z, axis=1)


def _residual(theta, Xa, y, spec):
    """Binary: sigma(z) - y, shape (n,). Multinomial: softmax - onehot, (n, K)."""
    Z = logits(theta, Xa, spec)
    if spec.binary:
        return tf.sigmoid(Z) - y
    return tf.nn.softmax(Z, axis=1) - tf.one_hot(tf.cast(y, tf.int32), spec.num_classes, dtype=Z.dtype)


def indiv_loss(theta, Xa, y, spec) -> tf.Tensor:
    """Unweighted cross-entropy of every example, shape (n,)."""
    Z = logits(theta, Xa, spec)
    if spec.binary:
        return tf.nn.softplus(Z) - y * Z
    return tf.reduce_logsumexp(Z, axis=1) - tf.gather(Z, tf.cast(y, tf.int32), axis=1, batch_dims=1)


def l2_penalty(theta, l2_reg, spec) -> tf.Tensor:
    mask = tf.constant(spec.weight_mask(), dtype=theta.dtype)
    return 0.5 * l2_reg * tf.reduce_sum(mask * theta * theta)


def total_loss(theta, Xa, y, s, l2_reg, spec) -> tf.Tensor:
    """``sum_i s_i l_i + l2_reg/2 ||W||^2`` (a scalar)."""
    return tf.reduce_sum(s * indiv_loss(theta, Xa, y, spec)) + l2_penalty(theta, l2_reg, spec)


def indiv_grad_loss(theta, Xa, y, spec) -> tf.Tensor:
    """Unweighted per-example gradients, shape (n, d), parameter layout."""
    R = _residual(theta, Xa, y, spec)
    if spec.binary:
        return R[:, None] * Xa
    n = tf.shape(Xa)[0]
    G_ext = R[:, :, None] * Xa[:, None, :]  # (n, K, E)
    G_ext = tf.reshape(G_ext, [n, spec.num_params])
    return tf.gather(G_ext, spec.ext_permutation(), axis=1)


def total_grad_loss(theta, Xa, y, s, l2_reg, spec) -> tf.Tensor:
    """``sum_i s_i grad l_i + l2_reg * W`` (shape (d,))."""
    R = _residual(theta, Xa, y, spec)
    if spec.binary:
        g = tf.linalg.matvec(Xa, s * R, transpose_a=True)
    else:
        g_ext = tf.matmul(s[:, None] * R, Xa, transpose_a=True)  # (K, E)
        g = from_ext(g_ext, spec)
    mask = tf.constant(spec.weight_mask(), dtype=theta.dtype)
    return g + l2_reg * mask * theta


def curvature(theta, Xa, spec) -> tf.Tensor:
    """Per-example curvature: binary sigma(1-sigma), shape (n,); multinomial p, (n, K)."""
    Z = logits(theta, Xa, spec)
    if spec.binary:
        p = tf.sigmoid(Z)
        return p * (1.0 - p)
    return tf.nn.softmax(Z, axis=1)


def hessian(theta, Xa, s, l2_reg, spec) -> tf.Tensor:
    """``sum_i s_i hess l_i + l2_reg * I_w`` (shape (d, d), parameter layout)."""
    c = curvature(theta, Xa, spec)
    mask = tf.constant(spec.weight_mask(), dtype=theta.dtype)
    if spec.binary:
        H = tf.matmul(Xa, (s * c)[:, None] * Xa, transpose_a=True)
    else:
        H = _multinomial_hessian_from_probs(c, Xa, s, spec)
    return H + tf.linalg.diag(l2_reg * mask)


def _multinomial_hessian_from_probs(P, Xa, s, spec, max_block_bytes: int = 2 ** 28) -> tf.Tensor:
    """``sum_i s_i (diag p_i - p_i p_i^T) kron xa_i xa_i^T`` in parameter layout.

    One matrix product ``Xa^T [A_i kron xa_i]_i`` per block of rows, so the work runs at
    matrix-multiply speed; rows are processed in blocks to bound memory.
    """
    K, E = spec.num_rows, spec.ext_dim
    n = int(Xa.shape[0])
    rows_per_block = max(1, int(max_block_bytes // (K * K * E * Xa.dtype.size)))
    H_ext = tf.zeros([E, K * K * E], dtype=Xa.dtype)
    eye = tf.eye(K, dtype=P.dtype)
    for start in range(0, n, rows_per_block):
        Pb, Xb, sb = P[start:start + rows_per_block], Xa[start:start + rows_per_block], s[start:start + rows_per_block]
        # A[i, k, l] = s_i (p_ik delta_kl - p_ik p_il)
        A = sb[:, None, None] * (Pb[:, :, None] * eye[None] - Pb[:, :, None] * Pb[:, None, :])
        big = tf.reshape(A[:, :, :, None] * Xb[:, None, None, :], [-1, K * K * E])
        H_ext += tf.matmul(Xb, big, transpose_a=True)  # (E_a, (k, l, E_b))
    H_ext = tf.reshape(tf.transpose(tf.reshape(H_ext, [E, K, K, E]), [1, 0, 2, 3]), [K * E, K * E])
    perm = spec.ext_permutation()
    return tf.gather(tf.gather(H_ext, perm, axis=0), perm, axis=1)


def hvp(theta, V, Xa, s, l2_reg, spec) -> tf.Tensor:
    """Closed-form Hessian-vector products ``H V`` for V of shape (d,) or (d, m)."""
    squeeze = len(V.shape) == 1
    if squeeze:
        V = V[:, None]
    c = curvature(theta, Xa, spec)
    mask = tf.constant(spec.weight_mask(), dtype=theta.dtype)
    if spec.binary:
        U = tf.matmul(Xa, V)  # (n, m)
        out = tf.matmul(Xa, (s * c)[:, None] * U, transpose_a=True)
    else:
        K, E = spec.num_rows, spec.ext_dim
        m = tf.shape(V)[1]
        V_ext = tf.reshape(tf.gather(V, spec.ext_inverse_permutation(), axis=0), [K, E, m])
        U = tf.einsum("na,kam->nkm", Xa, V_ext)
        P = c
        T = s[:, None, None] * P[:, :, None] * (U - tf.reduce_sum(P[:, :, None] * U, axis=1, keepdims=True))
        out_ext = tf.reshape(tf.einsum("na,nkm->kam", Xa, T), [K * E, m])
        out = tf.gather(out_ext, spec.ext_permutation(), axis=0)
    out = out + l2_reg * mask[:, None] * V
    return out[:, 0] if squeeze else out


def autodiff_hvp(theta, v, Xa, y, s, l2_reg, spec) -> tf.Tensor:
    """``H v`` by double backpropagation through :func:`total_loss` (used by CG)."""
    theta = tf.convert_to_tensor(theta)
    with tf.GradientTape() as outer:
        outer.watch(theta)
        with tf.GradientTape() as inner:
            inner.watch(theta)
            f = total_loss(theta, Xa, y, s, l2_reg, spec)
        g = inner.gradient(f, theta)
        gv = tf.reduce_sum(g * tf.stop_gradient(v))
    return outer.gradient(gv, theta)


def indiv_margin(theta, Xa, y, spec) -> tf.Tensor:
    """Binary margins ``(2y - 1)(w.x + b)``, shape (n,)."""
    _require_binary(spec, "margins")
    return (2.0 * y - 1.0) * logits(theta, Xa, spec)


def indiv_grad_margin(Xa, y, spec) -> tf.Tensor:
    """Binary margin gradients ``(2y - 1)[x; 1]``, shape (n, d)."""
    _require_binary(spec, "margin gradients")
    return (2.0 * y - 1.0)[:, None] * Xa


def zs(theta, Xa, spec) -> tf.Tensor:
    """Rows ``sqrt(sigma(1-sigma)) [x; 1]`` so that ``Z^T Z`` is the unregularised Hessian."""
    _require_binary(spec, "get_zs")
    return tf.sqrt(curvature(theta, Xa, spec))[:, None] * Xa


def _require_binary(spec: ModelSpec, what: str) -> None:
    if not spec.binary:
        raise ValueError(f"{what} are defined for binary models only; got num_classes={spec.num_classes}")


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


def hessian_numpy(theta, Xa: np.ndarray, s: np.ndarray, l2_reg: float, spec: ModelSpec,
                  chunk_bytes: int = 2 ** 28) -> np.ndarray:
    """:func:`hessian` in NumPy through symmetric rank-k updates (BLAS syrk).

    Multinomial: ``sum_i s_i (diag p_i - p_i p_i^T) kron xa_i xa_i^T`` is the block
    diagonal ``Xa^T diag(s p_k) Xa`` minus ``Z^T Z`` with rows ``z_i = [sqrt(s_i) p_ik xa_i]_k``;
    ``Z^T Z`` costs ``n (K E)^2`` flops, half of a general product, and is formed from
    blocks of rows of at most ``chunk_bytes``. Returns a float64 array of shape (d, d).
    """
    Xa = np.asarray(Xa, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    c = curvature(tf.constant(np.asarray(theta, dtype=np.float64)), tf.constant(Xa), spec).numpy()
    n, E = Xa.shape
    mask = spec.weight_mask()
    if spec.binary:
        Z = Xa * np.sqrt(s * c)[:, None]
        return Z.T @ Z + np.diag(l2_reg * mask)
    Kc = spec.num_rows
    H = np.zeros((Kc * E, Kc * E))
    rows = max(1, int(chunk_bytes // (8 * Kc * E)))
    for st in range(0, n, rows):
        Xb, Pb, sb = Xa[st:st + rows], c[st:st + rows], s[st:st + rows]
        Z = (Pb * np.sqrt(sb)[:, None])[:, :, None] * Xb[:, None, :]   # (m, K, E)
        Z = Z.reshape(len(Xb), Kc * E)
        H -= Z.T @ Z
        for k in range(Kc):
            Zk = Xb * np.sqrt(sb * Pb[:, k])[:, None]
            H[k * E:(k + 1) * E, k * E:(k + 1) * E] += Zk.T @ Zk
    perm = spec.ext_permutation()
    return H[np.ix_(perm, perm)] + np.diag(l2_reg * mask)


def sparse_gram(Xs, w) -> np.ndarray:
    """``Xs^T diag(w) Xs`` as a dense float64 array, for a scipy sparse ``Xs`` (n, E) and
    weights ``w`` (n,): one sparse product, then densified."""
    import scipy.sparse as sp
    return np.asarray((Xs.T @ sp.diags(np.asarray(w, dtype=np.float64)) @ Xs).toarray())


def one_blas_thread():
    """One OpenBLAS thread for many small products (per-group Hessians, small LAPACK
    solves): on 2 cores shared with TensorFlow's pool, threaded BLAS spent most of its
    time spin-waiting (a 128 x 128 Cholesky took 10 ms instead of 0.3 ms)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


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


def hessian_factor_rows(spec: ModelSpec, theta, Xa_U) -> tf.Tensor:
    """Rows Z_U with ``Z_U^T Z_U = H_U`` (unregularised Hessian of the given points).

    Binary: ``sqrt(sigma(1 - sigma)) [x; 1]`` (one row per point). Multinomial:
    ``A_i = diag(p_i) - p_i p_i^T = R_i R_i^T`` with ``R_i = diag(sqrt p_i) - p_i sqrt(p_i)^T``;
    row (i, c) has ``R_i[k, c] x_i`` in class k's weight block and ``R_i[k, c]`` in bias k
    (K rows per point).
    """
    if spec.binary:
        return zs(theta, Xa_U, spec)
    P = curvature(theta, Xa_U, spec)  # (m, K) probabilities
    sq = tf.sqrt(P)
    R = tf.linalg.diag(sq) - P[:, :, None] * sq[:, None, :]  # (m, k, c)
    rows_ext = R[:, :, :, None] * Xa_U[:, None, None, :]     # (m, k, c, E)
    m = tf.shape(Xa_U)[0]
    rows_ext = tf.reshape(tf.transpose(rows_ext, [0, 2, 1, 3]), [m * spec.num_rows, spec.num_params])
    return tf.gather(rows_ext, spec.ext_permutation(), axis=1)


def removal_weights(groups, n: int) -> np.ndarray:
    """0/1 float64 array of shape (n, B): column b is 0 on group b's points, 1 elsewhere."""
    keep = np.ones((n, len(groups)))
    for b, idx in enumerate(groups):
        keep[np.asarray(idx, dtype=np.int64), b] = 0.0
    return keep


class LogisticObjective:
    """``L_b(theta) = sum_i S[i, b] l_i(theta) + (l2_reg / 2) ||mask * theta||^2`` for the
    B columns of the sample-weight matrix S, and all its derivatives.

    ``Xa``: augmented design (:func:`augment`), tensor of shape (n, E); ``y``: labels
    (float 0/1 for binary, int classes for multinomial; None when only curvature-based
    quantities are needed); ``S``: weights, tensor of shape (n, B) or (n,) (then B = 1
    and the single-vector methods ``*_at`` apply; ``loss``, ``gradient`` and ``hessians``
    then evaluate them, so a batch of one is the single-vector problem bit for bit);
    ``l2``: scalar tensor.
    ``weight_mask`` (1 on regularised coordinates) defaults to the spec's (biases 0).
    ``Xa_np``: optional float64 NumPy copy of Xa, enabling the BLAS syrk Hessians.
    ``Xa_sparse``: optional float64 scipy CSR copy of Xa (binary models): Hessians are
    then formed as sparse products ``Xa^T (w * Xa)`` (``nnz`` work per non-zero row pair
    instead of ``n d^2``: 0.07 s instead of 0.5 s on spam) and densified once.

    Batched methods take parameter rows ``Theta`` of shape (B, d) and return tensors:
    ``loss`` (B,), ``gradient`` (B, d), ``curvature``, ``hvp`` (NumPy (b, d)),
    ``hessians`` (B, d, d). A multinomial model with intercepts is flat along the gauge
    direction (:attr:`ModelSpec.has_gauge`); ``hvp`` and ``hessians`` add
    ``gauge_c u u^T`` so that the solves are definite.
    """

    def __init__(self, spec: ModelSpec, Xa, y, S, l2, Xa_np=None, weight_mask=None, Xa_sparse=None):
        self.spec, self.Xa, self.y, self.l2 = spec, Xa, y, l2
        self.Xa_sparse = Xa_sparse
        self.s = S if len(S.shape) == 1 else None
        self.S = S[:, None] if len(S.shape) == 1 else S
        self.mask = tf.constant(spec.weight_mask() if weight_mask is None else weight_mask, dtype=Xa.dtype)
        self.B = int(self.S.shape[1])
        self.Xa_np = Xa_np
        self.s_base = None
        self._gauge_c = None
        if not spec.binary and y is not None:
            self.Y1 = tf.one_hot(tf.cast(y, tf.int32), spec.num_classes, dtype=Xa.dtype)  # (n, K)

    @classmethod
    def without_groups(cls, spec: ModelSpec, Xa, y, s_base, l2, groups, Xa_np=None,
                       weight_mask=None, Xa_sparse=None) -> "LogisticObjective":
        """The B reduced problems ``L_{-U}`` of the groups (their weights set to zero)."""
        keep = removal_weights(groups, int(Xa.shape[0]))
        obj = cls(spec, Xa, y, s_base[:, None] * tf.constant(keep, dtype=Xa.dtype), l2, Xa_np, weight_mask,
                  Xa_sparse)
        obj.s_base = s_base
        return obj

    def columns(self, cols) -> "LogisticObjective":
        """The sub-batch of problems ``cols`` (an int array), sharing the data tensors."""
        _ = self.gauge_c  # a sub-batch keeps its parent's gauge constant
        sub = LogisticObjective.__new__(LogisticObjective)
        sub.__dict__.update(self.__dict__)
        sub.S = tf.gather(self.S, cols, axis=1)
        sub.B = len(cols)
        sub.s = None
        return sub

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
        row_norms = tf.norm(tf.cast(self.Xa, tf.float64), axis=1)
        return tf.maximum(tf.linalg.matvec(tf.cast(self.S, tf.float64), row_norms, transpose_a=True), 1.0).numpy()

    # ------------------------------------------------------- one vector (B = 1)
    def loss_at(self, theta) -> tf.Tensor:
        return total_loss(theta, self.Xa, self.y, self.s, self.l2, self.spec)

    def gradient_at(self, theta) -> tf.Tensor:
        return total_grad_loss(theta, self.Xa, self.y, self.s, self.l2, self.spec)

    def hessian_at(self, theta) -> tf.Tensor:
        if self.Xa_sparse is not None and self.spec.binary:
            return self.hessians(theta[None])[0]
        return hessian(theta, self.Xa, self.s, self.l2, self.spec)

    def hvp_at(self, theta, V, autodiff: bool = False) -> tf.Tensor:
        """``H V`` for V of shape (d,) or (d, m); ``autodiff`` by double backprop (per column)."""
        if not autodiff:
            return hvp(theta, V, self.Xa, self.s, self.l2, self.spec)
        if len(V.shape) == 1:
            return autodiff_hvp(theta, V, self.Xa, self.y, self.s, self.l2, self.spec)
        return tf.stack([autodiff_hvp(theta, V[:, j], self.Xa, self.y, self.s, self.l2, self.spec)
                         for j in range(V.shape[1])], axis=1)

    # ------------------------------------------------------------ batched
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

    def logits(self, Theta):
        """Binary: (n, B); multinomial: (n, B, K)."""
        T = tf.reshape(to_ext_batch(Theta, self.spec), [-1, self.spec.ext_dim])
        Z = self._x_times(T) if self.spec.binary else tf.matmul(self.Xa, T, transpose_b=True)
        if self.spec.binary:
            return Z
        return tf.reshape(Z, [-1, self.B, self.spec.num_classes])

    def loss(self, Theta):
        """Objective values, (B,)."""
        if self.s is not None and self.Xa_sparse is None:
            return self.loss_at(Theta[0])[None]
        Z = self.logits(Theta)
        if self.spec.binary:
            losses = tf.nn.softplus(Z) - self.y[:, None] * Z
        else:
            losses = tf.reduce_logsumexp(Z, axis=2) - tf.reduce_sum(Z * self.Y1[:, None, :], axis=2)
        return tf.reduce_sum(self.S * losses, axis=0) + 0.5 * self.l2 * tf.reduce_sum(self.mask * Theta * Theta, axis=1)

    def gradient(self, Theta):
        """Gradients, (B, d)."""
        if self.s is not None and self.Xa_sparse is None:
            return self.gradient_at(Theta[0])[None]
        Z = self.logits(Theta)
        if self.spec.binary:
            R = self.S * (tf.sigmoid(Z) - self.y[:, None])        # (n, B)
            G = self._times_x(R)                                   # (B, E)
        else:
            R = self.S[:, :, None] * (tf.nn.softmax(Z, axis=2) - self.Y1[:, None, :])  # (n, B, K)
            G_ext = tf.einsum("nbk,na->bka", R, self.Xa)
            G = from_ext_batch(G_ext, self.spec)
        return G + self.l2 * self.mask * Theta

    def curvature(self, Theta):
        """Weighted curvature at each row of Theta, for :meth:`hvp`: binary
        ``S * sigma (1 - sigma)`` (n, B); multinomial probabilities (n, B, K)."""
        Z = self.logits(Theta)
        if self.spec.binary:
            p = tf.sigmoid(Z)
            return self.S * p * (1.0 - p)
        return tf.nn.softmax(Z, axis=2)

    def hvp(self, curv, V, rows=None) -> np.ndarray:
        """``A_j V[k]`` for ``j = rows[k]``: regularised Hessians (gauge-fixed with
        ``gauge_c u u^T``) at the iterates ``curv`` was computed at. V: (b, d) NumPy.

        Two matrix products over the whole batch: ``Xa V_ext^T`` (n, b K') and
        ``T^T Xa`` (b K', E)."""
        spec = self.spec
        S = self.S
        if rows is not None and len(rows) < self.B:
            curv, S = tf.gather(curv, rows, axis=1), tf.gather(S, rows, axis=1)
        V = tf.constant(V, dtype=self.Xa.dtype)
        b, n = int(V.shape[0]), int(self.Xa.shape[0])
        if spec.binary:
            U = self._x_times(V)                                           # (n, b)
            out = self._times_x(curv * U)                                  # (b, E)
        else:
            Kc, E = spec.num_rows, spec.ext_dim
            Vx = tf.reshape(to_ext_batch(V, spec), [b * Kc, E])
            U = tf.reshape(tf.matmul(self.Xa, Vx, transpose_b=True), [n, b, Kc])
            T = S[:, :, None] * curv * (U - tf.reduce_sum(curv * U, axis=2, keepdims=True))
            out = tf.matmul(tf.reshape(T, [n, b * Kc]), self.Xa, transpose_a=True)
            out = from_ext_batch(tf.reshape(out, [b, Kc, E]), spec)
            if spec.has_gauge:
                u = tf.constant(spec.gauge_vector(), dtype=V.dtype)
                out += self.gauge_c * tf.reduce_sum(V * u, axis=1, keepdims=True) * u
        return (out + self.l2 * self.mask * V).numpy()

    def hessians(self, Theta, method: str = "auto"):
        """Regularised Hessians at each row of Theta, (B, d, d), gauge-fixed.

        ``method='auto'``: binary float64 with ``Xa_np``: per-problem BLAS syrk
        ``Z_b^T Z_b``, ``Z_b = sqrt(w_b) Xa`` (half the flops of a general product,
        one BLAS thread, see :func:`one_blas_thread`); binary otherwise: one product
        with an (n, B E) block; multinomial: :func:`_multinomial_hessian_from_probs`
        per problem. ``'einsum'`` (binary): one contraction for all B Hessians, the
        fastest for d up to a few hundred and thousands of problems.
        """
        if self.Xa_sparse is not None and self.spec.binary:
            W = self.curvature(Theta).numpy()            # (n, B): S * p (1 - p)
            return tf.constant(np.stack([sparse_gram(self.Xa_sparse, W[:, b]) for b in range(self.B)])
                               + np.diag(float(self.l2) * self.mask.numpy())[None], dtype=self.Xa.dtype)
        if self.s is not None:
            return gauge_fix(self.hessian_at(Theta[0]), self.spec)[None]
        Z = self.logits(Theta)
        eye = tf.linalg.diag(self.l2 * self.mask)
        if self.spec.binary:
            p = tf.sigmoid(Z)
            W = self.S * p * (1.0 - p)                              # (n, B)
            if method == "einsum":
                # Measured faster than a reshaped matmul or a batched matmul on this CPU
                # build of TensorFlow.
                return tf.einsum("nk,ni,nj->kij", W, self.Xa, self.Xa) + eye
            if self.Xa_np is not None:
                Wn = np.sqrt(W.numpy())
                Hs = np.empty((self.B, self.spec.ext_dim, self.spec.ext_dim))
                eye_np = eye.numpy()
                with one_blas_thread():
                    for b in range(self.B):
                        Zb = self.Xa_np * Wn[:, b:b + 1]
                        np.add(Zb.T @ Zb, eye_np, out=Hs[b])  # in place: one (B, d, d) copy less
                return tf.constant(Hs, dtype=self.Xa.dtype)
            E = self.spec.ext_dim
            big = tf.reshape(W[:, :, None] * self.Xa[:, None, :], [-1, self.B * E])
            Hs = tf.transpose(tf.reshape(tf.matmul(self.Xa, big, transpose_a=True), [E, self.B, E]), [1, 0, 2])
            return Hs + eye
        P = tf.nn.softmax(Z, axis=2)
        Hs = tf.stack([_multinomial_hessian_from_probs(P[:, b], self.Xa, self.S[:, b], self.spec)
                       for b in range(self.B)])
        return gauge_fix(Hs + eye, self.spec)

    def group_hessians(self, theta, groups, minuend=None):
        """Unregularised Hessians ``H_U`` of the groups under the base weights
        (:meth:`without_groups`) at one parameter vector, (B, d, d); with ``minuend``
        (a (d, d) tensor, e.g. the full regularised Hessian), ``minuend - H_U`` (formed
        in place, without a second (B, d, d) array)."""
        spec, Xa, s_base = self.spec, self.Xa, self.s_base
        if spec.binary and self.Xa_np is not None:
            c = curvature(theta, Xa, spec) * s_base
            Z = self.Xa_np * np.sqrt(c.numpy())[:, None]
            out = np.empty((len(groups), spec.num_params, spec.num_params))
            M = None if minuend is None else np.asarray(minuend.numpy(), dtype=np.float64)
            with one_blas_thread():
                for b, idx in enumerate(groups):
                    Zb = Z[np.asarray(idx, dtype=np.int64)]
                    if M is None:
                        out[b] = Zb.T @ Zb  # BLAS syrk
                    else:
                        np.subtract(M, Zb.T @ Zb, out=out[b])
            return tf.constant(out, dtype=Xa.dtype)
        H_U = []
        for idx in groups:
            idx = np.asarray(idx, dtype=np.int64)
            H_U.append(hessian(theta, tf.gather(Xa, idx), tf.gather(s_base, idx), tf.constant(0.0, Xa.dtype), spec))
        return tf.stack(H_U) if minuend is None else minuend[None] - tf.stack(H_U)
