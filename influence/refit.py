"""Exact, certified, batched refits after removing groups of training points.

Every refit of ``L_{-U}`` (the group's weights set to zero) starts at ``theta_hat`` and runs
the one Newton loop (:func:`influence.newton.newton_loop`) until
``||grad L_{-U}|| <= rtol * sum_{i not in U} s_i ||[x_i; 1]||``, the certificate of
:meth:`LogisticRegression.fit`. B groups are refitted together over a weight matrix
``S`` (n, B); the first Hessian is ``H - H_U`` (only the group's points are touched), and a
Hessian factor is reused while it cuts the gradient norm fourfold, then preconditions CG
(docs/design.md, 'Certified fits and refits'). One function per route:
:func:`refit_chunk` (:class:`~influence.newton.ChordNewton`), :func:`refit_chunk_downdate`
(:class:`~influence.newton.DowndateChord`) and :func:`refit_chunk_cg`
(:class:`~influence.newton.NewtonCG`), chosen in :func:`influence.routes.choose_routes`.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from influence.downdate import DowndateBasis, GroupDowndates
from influence.memory import chunk_size, downdate_bytes_per_group, refit_bytes_per_group, refit_chunk_size
from influence.newton import (
    ChordNewton,
    DowndateChord,
    DowndatedHessians,
    FactorChord,
    HessianFactor,
    NewtonCG,
    ProblemQueue,
    RefitResult,
    certify,
    hessian_factor,
    make_preconditioner,
    newton_loop,
    use_float32,
)
from influence.numerics import one_blas_thread
from influence.objective import LogisticObjective, ModelSpec


def _setup(spec, theta_hat, Xa, y, s_base, l2, groups, Xa_np=None, Xa_sparse=None):
    """The reduced problems, theta_hat, the starting iterates and the certificate
    scales (:meth:`LogisticObjective.grad_scales`)."""
    batch = LogisticObjective.without_groups(spec, Xa, y, s_base, l2, groups, Xa_np, Xa_sparse=Xa_sparse)
    theta_hat = tf.constant(np.asarray(theta_hat), dtype=Xa.dtype)
    Theta = tf.tile(theta_hat[None, :], [len(groups), 1])
    return batch, theta_hat, Theta, batch.grad_scales()


def _refit(batch, Theta, scale, rtol, strategy, max_iter, G0=None) -> RefitResult:
    res = newton_loop(batch, Theta, rtol * scale, strategy, max_iter, scale=scale, G0=G0)
    res.converged = certify(res.grad_norms, res.grad_tols, stacklevel=3)
    return res


def _queue(spec, Xa, s_base, groups, theta_hat, rtol, B, costs=None, budget=None, on_finish=None) -> ProblemQueue:
    """The :class:`~influence.newton.ProblemQueue` of the reduced problems of ``groups``: their
    weight columns, ``theta_hat`` as start, and the certificate scales of
    :meth:`LogisticObjective.grad_scales` (computed B groups at a time)."""
    s_np = np.asarray(s_base.numpy(), dtype=np.float64)
    P = len(groups)

    def weights(ps):
        S = np.tile(s_np[:, None], (1, len(ps)))
        for k, p in enumerate(ps):
            S[groups[p], k] = 0.0
        return S

    scales = np.concatenate([
        LogisticObjective(spec, Xa, None, tf.constant(weights(np.arange(a, min(a + B, P))), dtype=Xa.dtype)).grad_scales()
        for a in range(0, P, B)])
    theta_hat = np.asarray(theta_hat, dtype=np.float64)
    return ProblemQueue(P, weights, lambda ps: np.tile(theta_hat[None, :], (len(ps), 1)), rtol * scales, scales,
                        costs, budget, on_finish)


def _refit_queue(spec: ModelSpec, theta_hat, Xa, y, s_base, l2, groups, rtol, max_iter, slots, make_strategy,
                 costs=None, budget=None, on_finish=None, Xa_np=None, Xa_sparse=None,
                 one_thread: bool = True) -> RefitResult:
    """Continuous batching of the refits of ``groups`` (:class:`~influence.newton.ProblemQueue`):
    :func:`newton_loop` in ``slots`` batch slots, a group that stops handing its slot at once
    to the next waiting group (the first that fits ``budget`` next to the running ones, with
    ``costs``); ``on_finish(k)`` is called as k groups stop. ``make_strategy(batch)`` gives
    the :class:`~influence.newton.NewtonStrategy` of the slots' objective ``batch`` (its
    columns change as groups come and go). The results are in the order of ``groups``.

    ``one_thread``: the loop runs on one BLAS thread: for the explicit and downdate routes,
    whose products and factors are many and mid-sized, threaded BLAS spin-waits for a
    second core that a loaded machine rarely gives it (docs/performance.md)."""
    B = max(1, min(int(slots), len(groups)))
    queue = _queue(spec, Xa, s_base, groups, theta_hat, rtol, B, costs, budget, on_finish)
    batch = LogisticObjective.without_groups(spec, Xa, y, s_base, l2, groups[:B], Xa_np, Xa_sparse=Xa_sparse)
    Theta = tf.constant(queue.start(np.arange(B)), dtype=Xa.dtype)
    with one_blas_thread() if one_thread else contextlib.nullcontext():
        res = newton_loop(batch, Theta, queue.tols[:B], make_strategy(batch), max_iter, scale=queue.scales[:B],
                          queue=queue)
    res.converged = certify(res.grad_norms, res.grad_tols, stacklevel=3)
    return res


def _slots_within(spec: ModelSpec, Xa, max_memory, slots, explicit: bool) -> int:
    """At most ``slots`` groups, and no more than fit in ``max_memory``
    (:func:`influence.memory.refit_chunk_size`, with explicit Hessians or without)."""
    return min(int(slots), refit_chunk_size(spec.num_params, int(Xa.shape[0]), max_memory, spec.num_rows, explicit,
                                            max_items=max(1, int(slots))))


def _within_memory(refit, spec: ModelSpec, Xa, groups, max_memory, explicit: bool, **kw) -> RefitResult | None:
    """``refit`` over sub-chunks of ``groups`` that fit in ``max_memory``; None when the
    whole chunk fits (the caller then refits it at once)."""
    if max_memory is None:
        return None
    size = refit_chunk_size(spec.num_params, int(Xa.shape[0]), max_memory, spec.num_rows, explicit)
    if len(groups) <= size:
        return None
    return RefitResult.concat([refit(spec=spec, Xa=Xa, groups=groups[i:i + size], **kw)
                               for i in range(0, len(groups), size)])


def refit_chunk(spec: ModelSpec, theta_hat, Xa, y, s_base, l2_reg, groups: Sequence[np.ndarray],
                hessian_hat=None, rtol: float = 1e-12, max_iter: int = 50,
                reuse_factor: float = 0.25, hess_chunk: int | None = None,
                cg_maxiter: int = 20, max_memory: int | None = None) -> RefitResult:
    """Refit without each group of ``groups`` (index arrays) starting from ``theta_hat``.

    ``Xa`` is the augmented design (see :func:`influence.objective.augment`), ``y`` the
    labels, ``s_base`` the sample weights of the full objective. ``hessian_hat`` is the
    regularised full-data Hessian at ``theta_hat`` (computed if not given). ``max_memory``
    (bytes): at most :func:`influence.memory.refit_chunk_size` groups together, fresh
    Hessians ``hess_chunk`` at a time within it (None: Hessian blocks of about 256 MB).
    """
    dtype = Xa.dtype
    n = int(Xa.shape[0])
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    l2 = tf.constant(float(l2_reg), dtype=dtype)
    if hessian_hat is None:
        hessian_hat = LogisticObjective(spec, Xa, None, s_base, l2).hessian_at(tf.constant(np.asarray(theta_hat), dtype=dtype))
    if hess_chunk is None:
        # Full Hessians of several groups are formed together from an (n, b*E) block;
        # bound that block to ~256 MB (and, per Hessian with its factor, by max_memory).
        hess_chunk = int(max(1, (2 ** 28) // (n * spec.ext_dim * dtype.size * spec.num_rows)))
        if max_memory is not None:
            per_hessian = dtype.size * (n * spec.ext_dim * spec.num_rows + 2 * spec.num_params ** 2)
            hess_chunk = min(hess_chunk, chunk_size(max_memory, per_hessian, warn=False))
    Xa_np = Xa.numpy() if spec.binary and dtype == tf.float64 else None
    H_hat = tf.convert_to_tensor(hessian_hat, dtype=dtype)
    split = _within_memory(refit_chunk, spec, Xa, groups, max_memory, True, theta_hat=theta_hat, y=y,
                           s_base=s_base, l2_reg=l2_reg, hessian_hat=hessian_hat, rtol=rtol, max_iter=max_iter,
                           reuse_factor=reuse_factor, hess_chunk=hess_chunk, cg_maxiter=cg_maxiter)
    if split is not None:
        return split
    batch, theta_hat, Theta, scale = _setup(spec, theta_hat, Xa, y, s_base, l2, groups, Xa_np)
    # First Hessian: H_hat - H_U at theta_hat (only the group's points are touched).
    Hs = batch.group_hessians(theta_hat, groups, minuend=H_hat, gauge=True)
    strategy = ChordNewton(Hs, reuse_factor, hess_chunk, cg_maxiter)
    return _refit(batch, Theta, scale, rtol, strategy, max_iter)


def downdate_basis(spec: ModelSpec, theta_hat, Xa, s_base, hessian_hat=None, l2_reg=None) -> DowndateBasis:
    """The :class:`~influence.downdate.DowndateBasis` of a binary model at ``theta_hat``:
    ``H_hat`` (``hessian_hat``, or formed with ``l2_reg``), the design (kept sparse when it is)
    and the weighted curvature ``s_i p_i (1 - p_i)``."""
    dtype = Xa.dtype
    theta = tf.constant(np.asarray(theta_hat), dtype=dtype)
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    if hessian_hat is None:
        hessian_hat = LogisticObjective(spec, Xa, None, s_base, float(l2_reg)).hessian_at(theta)
    c = (LogisticObjective(spec, Xa).curvature(theta[None])[:, 0] * s_base).numpy()
    return DowndateBasis(np.asarray(hessian_hat, dtype=np.float64), Xa.numpy(), c)


def refit_chunk_downdate(spec: ModelSpec, theta_hat, Xa, y, s_base, l2_reg, groups, basis: DowndateBasis,
                         rtol: float = 1e-12, max_iter: int = 50, reuse_factor: float = 0.25,
                         cg_maxiter: int = 20, max_memory: int | None = None, slots: int | None = None,
                         on_finish=None) -> RefitResult:
    """:func:`refit_chunk` of large binary models by :class:`~influence.newton.DowndateChord`:
    no (d, d) matrix per group; the first direction of group U is ``(H_hat - H_U)^{-1} grad``
    by Woodbury on ``basis`` (:class:`~influence.downdate.GroupDowndates`, built once with
    :func:`downdate_basis`), exactly the explicit route's.

    Continuous batching (:class:`~influence.newton.ProblemQueue`): at most ``slots`` groups
    (None: all) are refitted together, and a group that stops hands its slot at once to a
    waiting group, the largest first, as long as the running groups' working arrays
    (:func:`influence.memory.downdate_bytes_per_group`) fit in ``max_memory`` together
    (smaller groups fill the room a larger one leaves). ``on_finish(k)`` is called as k
    groups stop (progress). The results are in the order of ``groups``.
    """
    dtype = Xa.dtype
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    l2 = tf.constant(float(l2_reg), dtype=dtype)
    P, n = len(groups), int(Xa.shape[0])
    if P == 0:
        return RefitResult.empty(spec.num_params)
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    # Largest first: the big groups start while the batch has room, the small ones fill
    # the gaps and the last slots.
    order = np.argsort(-sizes, kind="stable")
    groups = [np.asarray(groups[i], dtype=np.int64) for i in order]
    costs = np.array([downdate_bytes_per_group(n, spec.num_params, s) for s in sizes[order]], dtype=np.int64)
    if max_memory is not None and costs[0] > max_memory:
        chunk_size(max_memory, int(costs[0]), what="refit group")  # warns once with the amount
    # A CG iteration here costs two products with H^{-1} and one Hessian-vector product
    # (O(d^2 + n d)), a fresh Hessian with its factor O(n d^2 + d^3): CG gets 5x the room.
    downdates = GroupDowndates(basis, groups, load=())
    res = _refit_queue(spec, theta_hat, Xa, y, s_base, l2, groups, rtol, max_iter, P if slots is None else slots,
                       lambda batch: DowndateChord(downdates, reuse_factor, 5 * cg_maxiter), costs, max_memory,
                       on_finish, Xa_sparse=basis.X if sp.issparse(basis.X) else None)
    return res.take(np.argsort(order, kind="stable"))


def refit_chunk_cg(spec: ModelSpec, theta_hat, Xa, y, s_base, l2_reg, groups: Sequence[np.ndarray],
                   preconditioner=None, rtol: float = 1e-12, max_iter: int = 50,
                   cg_maxiter: int | None = None, forcing: float = 0.1,
                   max_memory: int | None = None, slots: int | None = None, on_finish=None) -> RefitResult:
    """:func:`refit_chunk` without explicit Hessians: batched, preconditioned Newton-CG
    (:class:`~influence.newton.NewtonCG`, forcing term ``forcing``), the same certificate.

    ``preconditioner``: one fixed SPD approximation shared by all groups; by default
    :func:`make_preconditioner` at ``theta_hat`` (build it once for several chunks).
    ``max_memory`` (bytes): the groups are refitted in sub-chunks within it
    (:func:`influence.memory.refit_chunk_size` without explicit Hessians). ``hessians`` is
    zero and ``hvps`` counts the Hessian-vector products of each group. ``slots``,
    ``on_finish``: continuous batching as :func:`refit_chunk_downdate` (slots within ``max_memory``).
    """
    dtype = Xa.dtype
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    l2 = tf.constant(float(l2_reg), dtype=dtype)
    if preconditioner is None:
        preconditioner = make_preconditioner(spec, tf.constant(np.asarray(theta_hat), dtype=dtype), Xa, s_base, l2_reg)
    if slots is not None and len(groups):
        res = _refit_queue(spec, theta_hat, Xa, y, s_base, l2, [np.asarray(g, dtype=np.int64) for g in groups], rtol,
                           max_iter, _slots_within(spec, Xa, max_memory, slots, False),
                           lambda batch: NewtonCG(preconditioner, cg_maxiter, forcing, margin=0.1),
                           on_finish=on_finish, one_thread=False)
        res.hessians = np.zeros(len(groups), dtype=np.int64)
        return res
    split = _within_memory(refit_chunk_cg, spec, Xa, groups, max_memory, False, theta_hat=theta_hat, y=y,
                           s_base=s_base, l2_reg=l2_reg, preconditioner=preconditioner, rtol=rtol,
                           max_iter=max_iter, cg_maxiter=cg_maxiter, forcing=forcing)
    if split is not None:
        return split
    batch, theta_hat, Theta, scale = _setup(spec, theta_hat, Xa, y, s_base, l2, groups)
    strategy = NewtonCG(preconditioner, cg_maxiter, forcing, margin=0.1)  # no over-solved last step
    res = _refit(batch, Theta, scale, rtol, strategy, max_iter)
    res.hessians = np.zeros(len(groups), dtype=np.int64)
    return res


def refit_chunk_factor(spec: ModelSpec, theta_hat, Xa, y, s_base, l2_reg, groups: Sequence[np.ndarray],
                       factor: HessianFactor | None = None, rtol: float = 1e-12, max_iter: int = 50,
                       cg_maxiter: int | None = None, chord_rtol: float = 1e-3,
                       max_memory: int | None = None, slots: int | None = None, on_finish=None,
                       float32: bool | None = None) -> RefitResult:
    """:func:`refit_chunk_cg` with the dense Hessian (:class:`~influence.newton.FactorChord`):
    chord steps with ``H_hat - H_U`` at theta_hat, solved by CG preconditioned by
    ``H_hat``'s factor (``factor``, :func:`~influence.newton.hessian_factor` at theta_hat by
    default; build it once for several chunks), each on the true gradient of the refit
    objective; the same certificate. ``hessians`` is zero and ``hvps`` counts the products
    with the chord matrices and (after a slow chord step) the exact Hessians.

    The groups are refitted by continuous batching (:class:`~influence.newton.ProblemQueue`,
    as :func:`refit_chunk_downdate`): at most ``slots`` together (None: all), within
    ``max_memory`` (bytes, the budget of the work besides the factor), each running group
    counting its (n, K') arrays (:func:`influence.memory.refit_bytes_per_group`) and its rows,
    which the chord matrices hold while it runs
    (:meth:`~influence.newton.DowndatedHessians.load`; in float32 where ``float32``, None:
    :func:`~influence.newton.use_float32`). All running groups' chord solves advance together:
    each CG iteration is one pair of triangular solves with the factor for all of them.
    ``on_finish(k)`` is called as k groups stop. The results are in the order of ``groups``.
    """
    dtype = Xa.dtype
    s_base = tf.convert_to_tensor(s_base, dtype=dtype)
    l2 = tf.constant(float(l2_reg), dtype=dtype)
    if not len(groups):
        return RefitResult.empty(spec.num_params)
    if factor is None:
        factor = hessian_factor(spec, theta_hat, Xa, s_base, l2_reg)
    if float32 is None:
        float32 = use_float32(spec.num_params)
    groups = [np.asarray(g, dtype=np.int64) for g in groups]
    chords = DowndatedHessians(factor, LogisticObjective(spec, Xa, None, s_base, l2),
                               tf.constant(np.asarray(theta_hat), dtype=dtype), groups, float32=float32)
    slots = len(groups) if slots is None else slots
    costs = np.array([refit_bytes_per_group(spec.num_params, int(Xa.shape[0]), spec.num_rows, False)
                      + chords.row_bytes(j) for j in range(len(groups))], dtype=np.int64)
    res = _refit_queue(spec, theta_hat, Xa, y, s_base, l2, groups, rtol, max_iter,
                       _slots_within(spec, Xa, max_memory, slots, False),
                       lambda batch: FactorChord(chords, cg_maxiter, chord_rtol), costs, max_memory, on_finish,
                       one_thread=False)
    res.hessians = np.zeros(len(groups), dtype=np.int64)
    return res
