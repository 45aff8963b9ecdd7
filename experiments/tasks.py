"""Task functions of the influence phases and the picklable data they share.

Per-group and per-fit work is a pure module-level function ``fn(data, spec)`` mapped by
one :class:`experiments.execution.Executor`: ``data`` is the context of one phase
(:class:`InfluenceContext` for group work, :class:`FitContext` for cross-validation),
scattered to the workers once; a worker rebuilds the model from it once (TensorFlow
objects stay out of the pickle), while embedded runs use the experiment's live objects.
``spec`` is a chunk ``(start, end)`` or a fold. Results come back in submission order, so
they do not depend on the number of workers or on completion order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from experiments.common import chunks
from experiments.execution import Executor
from influence.group_influence import GroupInfluence
from influence.logistic_regression import LogisticRegression
from influence.newton import RefitResult
from influence.objective import LogisticObjective

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- shared data of a phase
def _model_config(model: LogisticRegression) -> dict[str, Any]:
    return {k: v for k, v in model.config.items()}


@dataclass
class InfluenceContext:
    """Everything the group tasks of a phase share, picklable: the model config, the
    training design and labels, theta_hat, lambda, sample weights, Hessian, inverse
    methods, the memory budget (``--max-memory``), and ``arrays`` (the phase's own:
    groups, group gradients, target sets, ...).

    :meth:`influence` gives the :class:`~influence.group_influence.GroupInfluence`: the
    experiment's own (embedded) or one rebuilt once per worker from these fields.
    """

    model_config: dict[str, Any]
    x: Any
    labels: np.ndarray
    l2_reg: float
    params: np.ndarray
    sample_weights: np.ndarray | None = None
    hessian: np.ndarray | None = None
    inverse_hvp_method: str = "explicit"
    inverse_vp_method: str = "cholesky_lu"
    max_memory: int | None = None
    arrays: dict[str, Any] = field(default_factory=dict)
    progress: bool | None = False
    _live: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_influence(cls, infl: GroupInfluence, progress: bool | None = None, preconditioner=None,
                       **arrays) -> "InfluenceContext":
        """The context of ``infl`` (its live objects kept for embedded use) plus ``arrays``."""
        x, labels = (infl.train if isinstance(infl.train, tuple) else (infl.train.x, infl.train.labels))
        ctx = cls(_model_config(infl.model), x, np.asarray(labels), infl.l2_reg, np.asarray(infl.params),
                  infl.sample_weights, infl.hessian, infl.inverse_hvp_method, infl.inverse_vp_method,
                  max_memory=infl.max_memory, arrays=dict(arrays), progress=progress)
        ctx._live["influence"] = infl
        if preconditioner is not None:
            ctx._live["preconditioner"] = preconditioner
        return ctx

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_live"] = {}       # TensorFlow objects stay here; workers rebuild them
        state["progress"] = False  # no bars inside worker tasks
        return state

    def influence(self) -> GroupInfluence:
        infl = self._live.get("influence")
        if infl is None:
            model = LogisticRegression(self.model_config, model_dir=None)
            infl = GroupInfluence(model, (self.x, self.labels), self.l2_reg, params=self.params,
                                  sample_weights=self.sample_weights, hessian=self.hessian,
                                  inverse_hvp_method=self.inverse_hvp_method,
                                  inverse_vp_method=self.inverse_vp_method, max_memory=self.max_memory)
            self._live["influence"] = infl
        return infl

    def per_process(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()``, computed once per process for this context and kept under ``key``
        with its live objects (never pickled: each worker builds its own)."""
        value = self._live.get(key)
        if value is None:
            value = self._live[key] = build()
        return value

    def preconditioner(self):
        """The Newton-CG preconditioner at theta_hat (built once per process; deterministic)."""
        return self.per_process("preconditioner", lambda: self.influence().preconditioner())

    def groups(self, start: int, end: int) -> list[np.ndarray]:
        return [np.asarray(g, dtype=np.int64) for g in self.arrays["groups"][start:end]]

    @property
    def method(self) -> str:
        """The inverse-HVP method of the tasks: the ``method`` array when given, else the
        experiment's ``inverse_hvp_method``."""
        return self.arrays.get("method") or self.inverse_hvp_method


# Task functions: module level, pure functions of (shared context, chunk bounds).
def refit_task(ctx: InfluenceContext, span: tuple[int, ...]) -> RefitResult:
    """Certified exact refits of groups ``start..end-1`` (:meth:`GroupInfluence.refit`),
    ``span = (start, end)`` or ``(start, end, chunk_size)``: ``chunk_size`` groups
    refitted together (default all of them)."""
    start, end = span[:2]
    size = int(span[2]) if len(span) > 2 else end - start
    method = ctx.method
    pre = ctx.preconditioner() if method == "cg" else None
    return ctx.influence().refit(ctx.groups(start, end), size, method=method, progress=False,
                                 preconditioner=pre)


def newton_task(ctx: InfluenceContext, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """One-step Newton changes of groups ``start..end-1`` (:meth:`GroupInfluence.newton_dparams`)."""
    start, end = span
    method = ctx.method
    pre = ctx.preconditioner() if method == "cg" else None
    G = np.asarray(ctx.arrays["group_grads"])[start:end]
    return ctx.influence().newton_dparams(ctx.groups(start, end), G, method=method,
                                          spectrum=bool(ctx.arrays.get("spectrum", False)),
                                          progress=ctx.progress, preconditioner=pre)


# Refit chunks per task: each task batches its groups continuously in ``chunk_size``
# slots (GroupInfluence.refit), so a task of several chunks keeps its slots full for
# longer. The tasks are the same embedded and on a cluster, so the results agree bit for bit.
REFIT_CHUNKS_PER_TASK = 4

# Newton changes by CG are batched 32 groups at a time (influence.groups.newton_cg): chunks
# that are multiples of 32 keep every batch, hence every result, as in one call.
NEWTON_CHUNK = 64


def map_refits(executor: Executor, ctx: InfluenceContext, n: int, chunk_size: int,
               desc: str = "exact refits") -> RefitResult:
    """:func:`refit_task` over the context's ``n`` groups, as one result: ``chunk_size``
    groups refitted together, in tasks of :data:`REFIT_CHUNKS_PER_TASK` chunks."""
    if n == 0:
        return RefitResult.empty(len(ctx.params))
    size = int(chunk_size)
    spans = [(a, b, size) for a, b in chunks(n, size * REFIT_CHUNKS_PER_TASK)]
    memory = budget = None
    if not executor.distributed and len(spans) > 1:
        # Embedded, the tasks of a route that allows it run side by side in threads
        # (RefitRoute.task_memory), as many as the budget of phase 5's labellings admits:
        # the largest task plus --max-memory. Each group's refit is the same either way.
        route = ctx.influence().routes(ctx.method)[1]
        memory = [route.task_memory(ctx.groups(a, b), s) for a, b, s in spans]
        if any(m is None for m in memory):
            memory = None
        else:
            route.prepare()
            budget = max(memory) + int(ctx.max_memory) if ctx.max_memory is not None else None
    return RefitResult.concat(executor.map(refit_task, ctx, spans, desc, memory=memory, memory_budget=budget))


def refit_groups(executor: Executor, infl: GroupInfluence, groups: Sequence[np.ndarray], chunk_size: int,
                 method: str | None = None, preconditioner=None, desc: str = "exact refits") -> RefitResult:
    """:meth:`GroupInfluence.refit` of every group, chunk by chunk on ``executor``.

    Each task is ``infl.refit`` of a span of :data:`REFIT_CHUNKS_PER_TASK` chunks, the same
    spans wherever they run, so the result does not depend on where; it agrees with
    ``infl.refit(groups, chunk_size)`` to rounding (the same steps per group: only the
    batch companions of a group differ).
    """
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    ctx = InfluenceContext.from_influence(infl, executor.progress, preconditioner, groups=list(groups),
                                          method=method)
    return map_refits(executor, ctx, len(groups), chunk_size, desc)


def newton_groups(executor: Executor, infl: GroupInfluence, groups: Sequence[np.ndarray], group_grads,
                  spectrum: bool = False, method: str | None = None, preconditioner=None,
                  progress: bool | None = None) -> dict[str, np.ndarray]:
    """:meth:`GroupInfluence.newton_dparams` of every group, chunked on a cluster.

    Embedded it is one call (as before); on a cluster chunks of :data:`NEWTON_CHUNK`
    groups. Each group's change is computed on its own (explicit: per-group solves with a
    shared factor; CG: batches of 32 aligned with the chunks), so both agree bit for bit.
    """
    S = len(groups)
    ctx = InfluenceContext.from_influence(infl, progress, preconditioner, groups=list(groups),
                                          group_grads=np.asarray(group_grads), spectrum=spectrum, method=method)
    size = NEWTON_CHUNK if executor.distributed else max(S, 1)
    if S == 0:
        return newton_task(ctx, (0, 0))
    return executor.map_chunks(newton_task, ctx, S, size, "Newton changes")


# ----------------------------------------------------------------------------- cross-validation
@dataclass
class FitContext:
    """The data of a cross-validation phase, picklable: model config, design, labels,
    weights, the regularisation grid, the folds and the optional score function (a
    picklable callable ``score(model) -> float``, e.g. a ``functools.partial`` of a
    module-level function)."""

    model_config: dict[str, Any]
    X: Any
    y: np.ndarray
    weights: np.ndarray | None
    regs: np.ndarray
    folds: list[np.ndarray]
    warm_start: bool
    score: Callable[[LogisticRegression], float] | None = None
    _live: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_live"] = {}
        return state

    def model(self) -> LogisticRegression:
        m = self._live.get("model")
        if m is None:

            m = self._live["model"] = LogisticRegression(self.model_config, model_dir=None)
        return m


def cv_fold_task(ctx: FitContext, spec: tuple[int, Sequence[int]]) -> dict[str, np.ndarray]:
    """Fits of fold ``k`` for the regularisation indices ``regs`` (one warm-started path, or
    one cold fit): held-out summed loss, accuracy and score per lambda.

    Every path starts with a cold fit (from zero), so a fold's results do not depend on
    what the model computed before (the embedded run reuses one model for all folds).
    """
    k, reg_idx = spec
    model = ctx.model()
    X, y, weights = ctx.X, ctx.y, ctx.weights
    val = np.asarray(ctx.folds[k])
    tr = np.setdiff1d(np.arange(len(y)), val)
    train_k, val_k = (X[tr], y[tr]), (X[val], y[val])
    w_k = None if weights is None else weights[tr]
    out = {"loss": np.zeros(len(reg_idx)), "acc": np.zeros(len(reg_idx)), "score": np.zeros(len(reg_idx))}
    for j, i in enumerate(reg_idx):
        reg = ctx.regs[i]
        # QUIRK kept: the full-data lambda is used on (folds-1)/folds of the data.
        if j == 0 or not ctx.warm_start:
            model.fit(train_k, w_k, reg)
        else:
            model.warm_fit(train_k, w_k, reg)
        loss = model.get_indiv_loss(val_k)
        out["loss"][j] = float(np.sum(loss if weights is None else weights[val] * loss))
        out["acc"][j] = model.get_accuracy(val_k)
        if ctx.score is not None:
            out["score"][j] = ctx.score(model)
    return out


def cv_path_task(ctx: FitContext, spec=None) -> dict[str, np.ndarray]:
    """The warm-started paths of all folds at once (:meth:`LogisticRegression.fit_path` on
    the fold weights: 0 on each fold's held-out rows, on the whole design, so no fold copies
    of it are made), then the held-out summed loss and accuracy of every (lambda, fold),
    each (R, F), from one pass over the design per lambda."""
    model = ctx.model()
    X, y, weights = ctx.X, ctx.y, ctx.weights
    n, F = len(y), len(ctx.folds)
    base = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    W = np.repeat(base[:, None], F, axis=1)
    for k, val in enumerate(ctx.folds):
        W[val, k] = 0.0
    fits = model.fit_path((X, y), W, ctx.regs)
    Xa, y_t, _ = model.design((X, y))
    obj = LogisticObjective(model.spec, Xa, y_t)
    out = {"loss": np.zeros((len(ctx.regs), F)), "acc": np.zeros((len(ctx.regs), F))}
    for j, res in enumerate(fits):
        Theta = tf.constant(res.thetas, dtype=Xa.dtype)
        losses = obj.per_example_losses(Theta).numpy()                    # (F, n)
        pred = np.argmax(obj.probabilities(Theta).numpy(), axis=2).T      # (F, n)
        for k, val in enumerate(ctx.folds):
            loss = losses[k, val]
            out["loss"][j, k] = float(np.sum(loss if weights is None else weights[val] * loss))
            out["acc"][j, k] = float(np.mean(pred[k, val] == y[val]))
    return out


def cross_validation_fits(executor: Executor, model: LogisticRegression, X, y, regs, folds, weights=None,
                          warm_start: bool = False, score=None,
                          batch_folds: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out ``(losses, accs, scores)``, each (len(regs), len(folds)), of every fit of a
    cross-validation: one task per fold (a warm-started path) or per (fold, lambda) pair;
    with ``batch_folds`` (warm starts, no score) one task advancing every fold's path
    together (:func:`cv_path_task`: one pass over the design serves all folds)."""
    ctx = FitContext(_model_config(model), X, np.asarray(y), weights, np.asarray(regs),
                     [np.asarray(f) for f in folds], bool(warm_start), score)
    ctx._live["model"] = model
    R = len(regs)
    if batch_folds:
        if not warm_start or score is not None:
            raise ValueError("batch_folds needs warm_start=True and no score function")
        out = executor.map(cv_path_task, ctx, [None], "cross-validation paths")[0]
        return out["loss"], out["acc"], np.zeros((R, len(folds)))
    if warm_start:
        specs = [(k, list(range(R))) for k in range(len(folds))]
    else:
        specs = [(k, [i]) for k in range(len(folds)) for i in range(R)]
    outs = executor.map(cv_fold_task, ctx, specs, "cross-validation fits")
    losses, accs, scores = (np.zeros((R, len(folds))) for _ in range(3))
    for (k, idx), o in zip(specs, outs):
        losses[idx, k], accs[idx, k], scores[idx, k] = o["loss"], o["acc"], o["score"]
    return losses, accs, scores
