"""Exact refits and Newton steps for many small groups of a binary logistic regression.

Fully vectorised paths for few parameters (d up to a few hundred) and thousands of groups,
such as the counterexamples: every iteration forms all B reduced Hessians
``H - sum_{i in U} c_i xa_i xa_i^T`` with one matrix product and takes a true Newton step
(:func:`influence.refit.refit_chunk` would spend its time in per-group Python work). The
objective and the certificate are those of :mod:`influence.objective` and
:func:`influence.refit.refit_chunk`; all computation is in the requested dtype (float32
reproduces the original's numerics), results float64.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import tensorflow as tf

from influence.memory import FLOAT_BYTES, chunk_size, refit_bytes_per_group
from influence.newton import ExplicitNewton, RefitResult, certify, gradient_norm_backtracking, newton_loop
from influence.numerics import spd_solve, tf_dtype
from influence.objective import LogisticObjective, ModelSpec


def pad_groups(groups: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded index matrix of ragged groups.

    Returns ``idx`` (int64 array of shape (B, m), m the largest group size; padding
    entries are 0) and ``valid`` (bool array of the same shape). Raises ``ValueError``
    if an index is outside ``[0, n)`` or a group repeats an index.
    """
    B = len(groups)
    lens = np.array([len(g) for g in groups], dtype=np.int64)
    m = int(lens.max()) if B else 0
    idx = np.zeros((B, m), dtype=np.int64)
    valid = np.arange(m)[None, :] < lens[:, None]
    if B and m:
        flat = np.concatenate([np.asarray(g, dtype=np.int64).ravel() for g in groups])
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise ValueError(f"group indices must lie in [0, {n}); got range [{flat.min()}, {flat.max()}]")
        idx[valid] = flat
        srt = np.sort(np.where(valid, idx, -1 - np.arange(m)[None, :]), axis=1)
        if np.any(srt[:, 1:] == srt[:, :-1]):
            raise ValueError("a group lists the same index twice; groups must be sets of distinct indices")
    return idx, valid


def group_newton_steps(H, Xa, curvature, groups: Sequence[np.ndarray], G_sums, dtype="float64",
                       chunk: int = 1024, max_memory: int | None = None) -> np.ndarray:
    """One-step Newton changes ``(H - H_U)^{-1} g_U`` for every group, shape (B, d).

    ``H``: regularised Hessian at theta_hat, float array of shape (d, d).
    ``Xa``: (augmented) inputs, shape (n, d). ``curvature``: ``s_i sigma_i (1 - sigma_i)``
    at theta_hat, shape (n,), so that ``H_U = sum_{i in U} curvature_i xa_i xa_i^T``
    (no regulariser). ``G_sums``: group gradient sums ``g_U``, shape (B, d).
    Solved by batched Cholesky in ``dtype``; matrices whose factor is not finite fall
    back to LU with a logged warning. ``chunk`` groups at a time, fewer to keep their
    (d, d) matrices and gathered rows within ``max_memory`` bytes.
    """
    tdt = tf_dtype(dtype)
    H = np.asarray(H)
    Xa = np.asarray(Xa)
    G_sums = np.asarray(G_sums)
    n, d = Xa.shape
    if H.shape != (d, d):
        raise ValueError(f"H must have shape ({d}, {d}) to match Xa; got {H.shape}")
    if np.shape(curvature) != (n,):
        raise ValueError(f"curvature must have shape ({n},); got {np.shape(curvature)}")
    if G_sums.shape != (len(groups), d):
        raise ValueError(f"G_sums must have shape ({len(groups)}, {d}); got {G_sums.shape}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    if max_memory is not None:
        m = max((len(g) for g in groups), default=1)
        chunk = chunk_size(max_memory, FLOAT_BYTES * (m * d + 3 * d * d), chunk, what="Newton-step group")
    H_t = tf.constant(H, dtype=tdt)
    X_t = tf.constant(Xa, dtype=tdt)
    c_t = tf.constant(np.asarray(curvature), dtype=tdt)
    out = np.zeros((len(groups), d))
    for start in range(0, len(groups), chunk):
        part = groups[start:start + chunk]
        idx, valid = pad_groups(part, n)
        Xg = tf.gather(X_t, idx)                                            # (b, m, d)
        w = tf.gather(c_t, idx) * tf.constant(valid, dtype=tdt)             # (b, m)
        H_U = tf.matmul(Xg * w[:, :, None], Xg, transpose_a=True)           # (b, d, d)
        M = H_t[None] - H_U
        g = tf.constant(G_sums[start:start + len(part)], dtype=tdt)[:, :, None]
        out[start:start + len(part)] = spd_solve(M, g)[:, :, 0].numpy()
    return out


def refit_binary_groups(Xa, y, s_base, l2_reg: float, groups: Sequence[np.ndarray], theta_hat,
                        weight_mask=None, rtol: float = 1e-12, max_iter: int = 50, dtype="float64",
                        chunk: int = 1024, max_halvings: int = 40,
                        max_memory: int | None = None) -> RefitResult:
    """Certified exact refits of a binary logistic regression without each group.

    ``Xa``: float array of shape (n, d) (augment with a ones column for an intercept);
    ``y``: labels in {0, 1}, shape (n,); ``s_base``: sample weights, shape (n,), or None
    for ones; ``groups``: index arrays whose weights are set to 0; ``theta_hat``: start
    (the full-data optimum), shape (d,); ``weight_mask``: 1 on regularised coordinates,
    0 on the bias (default all ones).

    Each iteration takes the Newton step ``H_{-U}(theta)^{-1} grad L_{-U}(theta)`` with
    :func:`influence.newton.gradient_norm_backtracking`; groups not certified after
    ``max_iter`` iterations get a :class:`influence.numerics.ConvergenceWarning` (those
    stopped at the floating-point floor too). ``chunk`` groups are refitted
    together, fewer to keep their work arrays within ``max_memory`` bytes
    (:func:`influence.memory.refit_bytes_per_group`).
    """
    tdt = tf_dtype(dtype)
    Xa = np.asarray(Xa)
    if Xa.ndim != 2:
        raise ValueError(f"Xa must be 2-D (n, d); got shape {Xa.shape}")
    n, d = Xa.shape
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"y must have length {n}; got {y.shape[0]}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y must hold binary labels 0/1")
    s_base = np.ones(n) if s_base is None else np.asarray(s_base, dtype=np.float64).reshape(-1)
    if s_base.shape[0] != n or np.any(s_base < 0) or not np.all(np.isfinite(s_base)):
        raise ValueError(f"s_base must be {n} finite non-negative weights")
    theta_hat = np.asarray(theta_hat, dtype=np.float64).reshape(-1)
    if theta_hat.shape[0] != d:
        raise ValueError(f"theta_hat must have length {d}; got {theta_hat.shape[0]}")
    mask = np.ones(d) if weight_mask is None else np.asarray(weight_mask, dtype=np.float64).reshape(-1)
    if mask.shape[0] != d:
        raise ValueError(f"weight_mask must have length {d}; got {mask.shape[0]}")
    if not (np.isfinite(l2_reg) and l2_reg >= 0):
        raise ValueError(f"l2_reg must be finite and >= 0; got {l2_reg!r}")
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0; got {rtol!r}")
    if chunk < 1 or max_iter < 1:
        raise ValueError(f"chunk and max_iter must be >= 1; got {chunk}, {max_iter}")

    if max_memory is not None:
        chunk = chunk_size(max_memory, refit_bytes_per_group(d, n), chunk, what="refit group")
    X_t = tf.constant(Xa, dtype=tdt)
    y_t = tf.constant(y, dtype=tdt)
    row_norms = np.linalg.norm(Xa.astype(np.float64), axis=1)
    l2 = tf.constant(float(l2_reg), dtype=tdt)
    spec = ModelSpec(d, 2, False, tdt)
    strategy = ExplicitNewton("einsum", functools.partial(gradient_norm_backtracking, max_halvings=max_halvings))
    results = []
    for start in range(0, len(groups), chunk):
        part = groups[start:start + chunk]
        idx, valid = pad_groups(part, n)
        keep = np.ones((n, len(part)))
        keep[idx[valid], np.repeat(np.arange(len(part)), valid.sum(axis=1))] = 0.0
        S_np = s_base[:, None] * keep
        # The certificate scale of LogisticObjective.grad_scales, summed by NumPy: the
        # saved counterexample tolerances were computed so (TensorFlow's sum differs in
        # the last bit).
        scale = np.maximum(S_np.T @ row_norms, 1.0)
        obj = LogisticObjective(spec, X_t, y_t, tf.constant(S_np, dtype=tdt), l2, weight_mask=mask)
        Theta = tf.tile(tf.constant(theta_hat[None, :], dtype=tdt), [obj.B, 1])
        res = newton_loop(obj, Theta, rtol * scale, strategy, max_iter, scale=scale)
        res.thetas, res.grad_norms = res.thetas.astype(np.float64), res.grad_norms.astype(np.float64)
        res.first_steps = res.first_steps.astype(np.float64)
        results.append(res)
    if not results:
        return RefitResult.empty(d)
    out = RefitResult.concat(results)
    out.converged = certify(out.grad_norms, out.grad_tols, stacklevel=2)
    return out
