"""The routes of the one-step Newton changes and of the certified refits, as strategies.

Each route is a small class with one method: :class:`NewtonChangeRoute` ``changes(groups,
G)`` returns ``newton_dparam`` ``(H - H_U)^-1 g_U`` (S, d) and, where the route has them,
the spectra of ``-H^-1 H_U``; :class:`RefitRoute` ``refit(groups)`` returns the certified
refits of one chunk as an :class:`influence.newton.RefitResult`. :func:`choose_routes`
picks both from the model, the method and the memory budget, in one place; the cg
routes' shared preconditioner is the route's :meth:`_Route.build_preconditioner`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from influence import groups as G
from influence.downdate import uses_downdates
from influence.memory import cg_width, dense_hessian_fits, dense_work_memory, downdate_bytes_per_group
from influence.newton import HessianFactor, RefitResult, hessian_factor, make_preconditioner, use_float32
from influence.numerics import densify
from influence.objective import ModelSpec
from influence.refit import refit_chunk, refit_chunk_cg, refit_chunk_downdate, refit_chunk_factor
from influence.small_refit import group_newton_steps, refit_binary_groups


class _Route:
    def __init__(self, gi, preconditioner=None):
        self.gi, self._preconditioner = gi, preconditioner

    @property
    def preconditioner(self):
        """The shared Newton-CG preconditioner (:meth:`GroupInfluence.preconditioner`), built on first use."""
        if self._preconditioner is None:
            self._preconditioner = self.gi.preconditioner()
        return self._preconditioner

    @staticmethod
    def build_preconditioner(gi):
        """The cg routes' fixed preconditioner at ``theta_hat``
        (:func:`influence.newton.make_preconditioner`)."""
        Xa, _, s = gi.design(gi.train, gi.sample_weights)
        return make_preconditioner(gi.spec, gi.params, Xa, s, gi.l2_reg)

    def small_design(self, probabilities: bool = True):
        """The (augmented) design as a NumPy array and, optionally, P(y = 1) at theta_hat."""
        gi = self.gi
        if not gi.spec.binary:
            raise ValueError("method 'small' needs a binary model; use 'explicit' or 'cg'")
        X = densify(gi.train_xy()[0])
        p = gi.at_optimum().get_predictions(X)[:, 1] if probabilities else None
        if gi.spec.fit_intercept:
            X = np.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)])
        return X, p


class _DenseRoute(_Route):
    """The cg routes with the dense Hessian: their preconditioner is the exact factor
    (:class:`influence.newton.HessianFactor`), also their operator."""

    @property
    def preconditioner(self):
        P = super().preconditioner
        if not isinstance(P, HessianFactor):
            raise ValueError(f"the dense cg routes need the Hessian's factor (influence.newton.HessianFactor) as "
                             f"their preconditioner; got {type(P).__name__}")
        return P

    @staticmethod
    def build_preconditioner(gi):
        """:func:`influence.newton.hessian_factor` at ``theta_hat``."""
        Xa, _, s = gi.design(gi.train, gi.sample_weights)
        return hessian_factor(gi.spec, gi.params, Xa, s, gi.l2_reg)

    def work_memory(self):
        """The budget of the batched work besides the factor (:func:`influence.memory.dense_work_memory`)."""
        return dense_work_memory(self.gi.spec.num_params, self.gi.max_memory)


# ----------------------------------------------------------------------------- Newton changes
class NewtonChangeRoute(_Route):
    """One-step Newton changes ``(H - H_U)^-1 g_U`` of groups; ``spectrum`` asks for the
    eigenvalues of ``-H^-1 H_U`` too (ignored by routes without them, unless they refuse)."""

    def changes(self, groups: Sequence[np.ndarray], G_sums, spectrum: bool = False,
                progress: bool | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError


class PerGroupNewton(NewtonChangeRoute):
    """Woodbury or a direct Cholesky per group (:func:`influence.groups.newton_explicit`)."""

    def changes(self, groups, G_sums, spectrum=False, progress=None):
        gi = self.gi
        Xa, _, _ = gi.design(gi.train, gi.sample_weights)
        return G.newton_explicit(gi.spec, gi.require_hessian(), gi.params, Xa, groups, G_sums,
                                 spectrum=spectrum, progress=progress)


class DowndateNewton(NewtonChangeRoute):
    """Woodbury on the shared downdate basis (:func:`influence.groups.newton_downdate`)."""

    def changes(self, groups, G_sums, spectrum=False, progress=None):
        return G.newton_downdate(self.gi.downdate_basis(), groups, G_sums, spectrum, progress)


class WeightedNewton(NewtonChangeRoute):
    """Non-unit sample weights: ``H_U = sum_{i in U} s_i hess l_i`` formed per group and
    ``(H - H_U)^-1 g_U`` by the configured explicit solve (no spectra)."""

    def changes(self, groups, G_sums, spectrum=False, progress=None):
        if spectrum:
            raise ValueError("spectrum=True needs unit sample weights (influence.groups.newton_explicit); "
                             "got non-unit sample_weights")
        gi = self.gi
        model = gi.at_optimum()
        H = gi.require_hessian()
        X, y = gi.train_xy()
        y = np.asarray(y).reshape(-1)
        out = np.zeros((len(groups), model.num_params))
        for k, g in enumerate(groups):
            H_U = model.get_hessian((X[g], y[g]), gi.sample_weights[g], 0.0)
            out[k] = model.get_inverse_hvp(G_sums[k], hessian_reg=H - H_U, inverse_hvp_method="explicit",
                                           inverse_vp_method=gi.inverse_vp_method)
        return {"newton_dparam": out}


class CGNewton(NewtonChangeRoute):
    """Batched preconditioned CG (:func:`influence.groups.newton_cg`) to ``cg_rtol``, in
    chunks within ``max_memory``; with empty groups these are the first-order changes."""

    def changes(self, groups, G_sums, spectrum=False, progress=None):
        gi = self.gi
        Xa, _, s = gi.design(gi.train, gi.sample_weights)
        config = gi.at_optimum().config
        return {"newton_dparam": G.newton_cg(gi.spec, gi.params, Xa, s, gi.l2_reg, groups, G_sums,
                                             tol=config["cg_rtol"], maxiter=config["cg_maxiter"],
                                             preconditioner=self.preconditioner, max_memory=gi.max_memory)}


class DenseCGNewton(_DenseRoute, NewtonChangeRoute):
    """:class:`CGNewton` with the dense Hessian (:func:`influence.groups.newton_factor`):
    CG on ``H - H_U`` preconditioned by H's factor, to ``cg_rtol``, with continuous
    batching of the groups within the work budget."""

    def changes(self, groups, G_sums, spectrum=False, progress=None):
        gi = self.gi
        Xa, _, s = gi.design(gi.train, gi.sample_weights)
        config = gi.at_optimum().config
        width = cg_width(gi.spec.num_params, self.work_memory())
        return {"newton_dparam": G.newton_factor(gi.spec, gi.params, Xa, s, gi.l2_reg, groups, G_sums,
                                                 self.preconditioner, tol=config["cg_rtol"],
                                                 maxiter=config["cg_maxiter"], width=width)}


class BatchedCholeskyNewton(NewtonChangeRoute):
    """Binary models with few parameters: every ``H - H_U`` at once, batched Cholesky in
    the model's dtype (:func:`influence.small_refit.group_newton_steps`)."""

    def changes(self, groups, G_sums, spectrum=False, progress=None):
        gi = self.gi
        X, p = self.small_design()
        c = p * (1 - p) if gi.sample_weights is None else gi.sample_weights * p * (1 - p)
        return {"newton_dparam": group_newton_steps(gi.require_hessian(), X, c, groups, G_sums,
                                                    dtype=gi.model.config["dtype"], chunk=max(1, len(groups)))}


# ----------------------------------------------------------------------------- refits
class RefitRoute(_Route):
    """Certified exact refits without each group of one chunk, from ``theta_hat``.

    A route with ``queues`` batches continuously: ``refit(groups, slots, on_finish)`` takes
    any number of groups, refits ``slots`` of them together and hands a finished group's
    slot at once to the next (:class:`influence.newton.ProblemQueue`), calling
    ``on_finish(k)`` as k groups finish; the others refit one chunk per call."""

    queues = False

    def refit(self, groups: Sequence[np.ndarray], slots: int | None = None, on_finish=None) -> RefitResult:
        raise NotImplementedError

    def task_memory(self, groups: Sequence[np.ndarray], slots: int) -> int | None:
        """The bytes one refit task (``refit(groups, slots)``) works in, for running a route's
        tasks side by side in threads of one process (the embedded executor of
        :mod:`experiments.execution`), or None: its tasks run one after the other. A route
        that answers computes each refit by the same operations whatever runs beside it,
        and builds what its refits share in :meth:`prepare`, so that the threads only read it."""
        return None

    def prepare(self) -> None:
        """Build what this route's refits share and would otherwise build on first use (before
        refit tasks run side by side, see :meth:`task_memory`)."""

    def _common(self):
        gi = self.gi
        Xa, y, s = gi.design(gi.train, gi.sample_weights)
        return (gi.spec, gi.params, Xa, y, s, gi.l2_reg), dict(rtol=gi.model.fit_rtol,
                                                                max_iter=gi.model.config["max_newton_iter"])


class ChordRefit(RefitRoute):
    """Explicit Hessians with factor reuse (:func:`influence.refit.refit_chunk`). Its CG
    steps are not counted in ``hvps`` (0: the count is that of the Newton-CG routes)."""

    # Chunk by chunk, which reproduces the recorded reference results bit for bit: batches
    # of other shapes round differently, and ill-conditioned reduced problems amplify that
    # beyond the reference comparison's element-wise rule on small entries (well within the
    # certificates; see docs/performance.md, 'Continuous batching').
    queues = False

    def refit(self, groups, slots=None, on_finish=None):
        args, common = self._common()
        r = refit_chunk(*args, groups, hessian_hat=self.gi.hessian, max_memory=self.gi.max_memory, **common)
        r.hvps = np.zeros(len(groups), dtype=np.int64)
        return r


class DowndateRefit(RefitRoute):
    """Large binary models: chord steps through Woodbury downdates (:func:`influence.refit.refit_chunk_downdate`)."""

    queues = True

    def refit(self, groups, slots=None, on_finish=None):
        args, common = self._common()
        return refit_chunk_downdate(*args, groups, self.gi.downdate_basis(), max_memory=self.gi.max_memory,
                                    slots=slots, on_finish=on_finish, **common)

    def task_memory(self, groups, slots):
        # The running groups' working arrays: at most the `slots` largest, within
        # --max-memory (a group larger than it runs alone). The basis is shared.
        gi = self.gi
        costs = sorted((downdate_bytes_per_group(gi.num_train, gi.spec.num_params, len(g)) for g in groups),
                       reverse=True) or [0]
        held = sum(costs[:max(1, int(slots))])
        return held if gi.max_memory is None else min(held, max(int(gi.max_memory), costs[0]))

    def prepare(self):
        self._common()  # the training design, kept by the model
        basis = self.gi.downdate_basis()
        if use_float32(self.gi.spec.num_params):
            basis.Hi32  # noqa: B018 - built on first use; the chord preconditioners read it


class NewtonCGRefit(RefitRoute):
    """Batched preconditioned Newton-CG (:func:`influence.refit.refit_chunk_cg`)."""

    queues = True

    def refit(self, groups, slots=None, on_finish=None):
        args, common = self._common()
        return refit_chunk_cg(*args, groups, preconditioner=self.preconditioner,
                              cg_maxiter=self.gi.model.config["cg_maxiter"], max_memory=self.gi.max_memory,
                              slots=slots, on_finish=on_finish, **common)


class DenseRefit(_DenseRoute, RefitRoute):
    """:class:`NewtonCGRefit` with the dense Hessian: chord steps with ``H_hat - H_U``
    solved by CG preconditioned by H's factor (:func:`influence.refit.refit_chunk_factor`)."""

    queues = True

    def refit(self, groups, slots=None, on_finish=None):
        args, common = self._common()
        return refit_chunk_factor(*args, groups, factor=self.preconditioner,
                                  cg_maxiter=self.gi.model.config["cg_maxiter"], max_memory=self.work_memory(),
                                  slots=slots, on_finish=on_finish, **common)


class SmallRefit(RefitRoute):
    """Binary models with few parameters: all reduced Hessians of a chunk in one product
    (:func:`influence.small_refit.refit_binary_groups`)."""

    def refit(self, groups, slots=None, on_finish=None):
        gi = self.gi
        X, _ = self.small_design(probabilities=False)
        y = np.asarray(gi.train_xy()[1]).reshape(-1)
        mask = gi.spec.weight_mask() if gi.spec.fit_intercept else None
        _, common = self._common()
        return refit_binary_groups(X, y, gi.sample_weights, gi.l2_reg, groups, gi.params, weight_mask=mask,
                                   dtype=gi.model.config["dtype"], chunk=len(groups), **common)


# ----------------------------------------------------------------------------- the one choice
ROUTE_METHODS = ("explicit", "cg", "small")


def choose_routes(spec: ModelSpec, method: str, weighted: bool,
                  max_memory: int | None = None) -> tuple[type[NewtonChangeRoute], type[RefitRoute]]:
    """The Newton-change route and the refit route of a model for ``method``:

    * ``'cg'``: :class:`DenseCGNewton`, :class:`DenseRefit` where the full Hessian's dense
      factor fits (:func:`influence.memory.dense_hessian_fits` with ``max_memory``, bytes
      or None), else :class:`CGNewton`, :class:`NewtonCGRefit` (Hessian-vector products
      through the data);
    * ``'small'``: :class:`BatchedCholeskyNewton`, :class:`SmallRefit` (binary models);
    * ``'explicit'``: refits by :class:`DowndateRefit` for models that take the downdates
      (:func:`influence.downdate.uses_downdates`), else :class:`ChordRefit` (multinomial
      models included: :class:`DenseRefit` gave MultiNLI's refits no measurable gain, see
      docs/performance.md); Newton changes by :class:`WeightedNewton` with non-unit sample
      weights (``weighted``), else :class:`DowndateNewton` (with the downdate refits) or
      :class:`PerGroupNewton`.
    """
    if method not in ROUTE_METHODS:
        raise ValueError(f"method must be one of {ROUTE_METHODS}; got {method!r}")
    if method == "cg":
        if dense_hessian_fits(spec.num_params, max_memory):
            return DenseCGNewton, DenseRefit
        return CGNewton, NewtonCGRefit
    if method == "small":
        return BatchedCholeskyNewton, SmallRefit
    downdates = uses_downdates(spec)
    newton = WeightedNewton if weighted else (DowndateNewton if downdates else PerGroupNewton)
    return newton, (DowndateRefit if downdates else ChordRefit)


def refit_holds_hessians(spec: ModelSpec, method: str, max_memory: int | None) -> bool:
    """Whether the refit route of the inverse-HVP method ``method`` holds a (d, d) Hessian
    per group (sizes the refit chunks, :func:`influence.memory.refit_chunk_size`): only
    :class:`ChordRefit`, an ``'explicit'`` route."""
    return method == "explicit" and choose_routes(spec, method, False, max_memory)[1] is ChordRefit
