"""One group-influence API: first-order, one-step Newton and actual effects of removing groups.

Every influence formula behind a result key of the experiments lives in exactly one
function of this module (docs/design.md, 'Result keys').

Notation (docs/design.md, 'Objective and conventions'): ``L(theta) = sum_i s_i l_i(theta)
+ (l2_reg / 2) ||W||^2`` summed over examples, ``theta_hat`` its optimum, ``H`` the
regularised Hessian at ``theta_hat``. For a group ``U`` (an index array) with sample
weights ``s``: ``g_U = sum_{i in U} s_i grad l_i(theta_hat)`` and ``H_U`` the group's
unregularised Hessian. Sign convention: an influence is the change caused by REMOVING U.
Estimators of the parameter change: ``pred`` ``H^-1 g_U``, ``newton`` ``(H - H_U)^-1 g_U``
and ``actl`` ``theta_{-U} - theta_hat`` from a certified refit.

:class:`GroupInfluence` holds a model at its optimum and its training data (inverse-HVPs,
Newton changes, refits, evaluations at many parameter vectors); the module-level functions
are pure NumPy formulas; :func:`group_influence` runs all three estimators at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.linalg
import tensorflow as tf

from influence import groups as _groups
from influence.downdate import DowndateBasis, uses_downdates
from influence.logistic_regression import INVERSE_HVP_METHODS, LogisticRegression
from influence.newton import RefitResult
from influence.numerics import INVERSE_VP_METHODS, xy
from influence.objective import LogisticObjective
from influence.progress import progress_bar
from influence.refit import downdate_basis
from influence.routes import ROUTE_METHODS as METHODS, NewtonChangeRoute, RefitRoute, choose_routes

WHATS = ("loss", "margin", "correct")
TARGETS = ("params", "self_loss", "self_margin", "test_losses", "test_margins", "test_loss_sum")
ESTIMATORS = ("pred", "newton", "actl")


# ----------------------------------------------------------------------------- checks
def check_2d(name: str, A, cols: int | None = None, rows: int | None = None) -> np.ndarray:
    """``A`` as a 2-D array, with ``cols`` columns and ``rows`` rows when given; else ValueError."""
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {A.shape}")
    if cols is not None and A.shape[1] != cols:
        raise ValueError(f"{name} must have {cols} columns; got shape {A.shape}")
    if rows is not None and A.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows; got shape {A.shape}")
    return A


def check_groups(groups, n: int | None = None) -> list[np.ndarray]:
    """``groups`` as a list of 1-D integer index arrays with indices in ``[0, n)``; else ValueError."""
    if isinstance(groups, np.ndarray) and groups.dtype != object and groups.ndim == 1:
        raise ValueError("groups must be a sequence of index arrays (one per group); got a single 1-D array")
    out = []
    for k, g in enumerate(groups):
        g = np.asarray(g)
        if g.ndim != 1 or (g.size and not np.issubdtype(g.dtype, np.integer)):
            raise ValueError(f"groups[{k}] must be a 1-D integer index array; got dtype {g.dtype}, shape {g.shape}")
        if n is not None and g.size and (g.min() < 0 or g.max() >= n):
            raise ValueError(f"groups[{k}] indices must lie in [0, {n}); got range [{g.min()}, {g.max()}]")
        out.append(g)
    return out


def _check_weights(name: str, w, n: int) -> np.ndarray | None:
    if w is None:
        return None
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},); got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    return w


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")


def _num_rows(data) -> int:
    return int(xy(data)[0].shape[0])


# ----------------------------------------------------------------------------- pure formulas
def group_gradient_sums(groups: Sequence[np.ndarray], per_example, weights=None,
                        keep_dtype: bool = False) -> np.ndarray:
    """``g_U = sum_{i in U} w_i grad q_i`` for every group, shape (S, d).

    ``per_example``: per-example gradients, array of shape (n, d) (of the loss or of the
    margin). ``weights``: sample weights (n,), or None for ones. The sum is one sparse
    product in float64 (:func:`influence.groups.group_sums`); with ``keep_dtype`` it
    stays in the dtype of ``per_example`` (float32 sums in the float32 mode, as the
    original).
    """
    G = check_2d("per_example", per_example)
    groups = check_groups(groups, G.shape[0])
    w = _check_weights("weights", weights, G.shape[0])
    M = G if w is None else w[:, None] * G
    return _groups.group_sums(groups, M, M.dtype if keep_dtype else np.float64)


def self_influence(group_grads, dparams) -> np.ndarray:
    """Linear influence of each group on its own (weighted) summed loss or margin, (S,).

    ``group_grads`` (S, d): ``g_U`` of the quantity (loss or margin); ``dparams`` (S, d):
    the group's parameter change (first-order ``H^-1 g_U`` gives ``subset_self_pred_infl``,
    Newton gives ``subset_self_newton_infl``).
    """
    G = check_2d("group_grads", group_grads)
    D = check_2d("dparams", dparams)
    if G.shape != D.shape:
        raise ValueError(f"group_grads and dparams must have the same shape; got {G.shape} and {D.shape}")
    return np.einsum("sd,sd->s", G, D)


def target_influence(dparams, target_grads) -> np.ndarray:
    """Linear influence ``grad f_t . D_s`` of parameter changes on targets, shape (S, m).

    ``dparams`` (S, d): one parameter change per group; ``target_grads`` (m, d): the
    gradient at ``theta_hat`` of each target.
    """
    D = check_2d("dparams", dparams)
    T = check_2d("target_grads", target_grads, cols=D.shape[1])
    return D @ T.T


def point_influence_group_sums(groups: Sequence[np.ndarray], point_influence, weights=None) -> np.ndarray:
    """A group's first-order influence as the (weighted) sum of its points' influences.

    ``point_influence``: array of shape (m, n) (m targets) or (n,) (one target), entry
    ``[j, i]`` the first-order influence of training point i on target j. Returns (S, m)
    or (S,). Equals ``grad f . H^-1 g_U`` by the symmetry of H (docs/design.md, 'Phases of
    ss_logreg').
    """
    P = np.asarray(point_influence)
    if P.ndim not in (1, 2):
        raise ValueError(f"point_influence must be 1-D (n,) or 2-D (m, n); got shape {P.shape}")
    n = P.shape[-1]
    groups = check_groups(groups, n)
    w = _check_weights("weights", weights, n)
    if P.ndim == 2:
        return _groups.group_sums(groups, P.T if w is None else w[:, None] * P.T)
    return _groups.group_sums(groups, P if w is None else w * P)


def weighted_gradient_sum(per_example, weights, index=None) -> np.ndarray:
    """Gradient of a weighted sum of per-example quantities ``sum_{i in index} w_i grad q_i``, (d,)."""
    G = check_2d("per_example", per_example)
    w = _check_weights("weights", weights, G.shape[0])
    index = slice(None) if index is None else index
    return w[index] @ G[index]


def change(after, before) -> np.ndarray:
    """``after - before``: values after removal minus at ``theta_hat``, per group (S, m)."""
    A = np.asarray(after)
    B = np.asarray(before)
    if A.ndim < 1 or B.shape != A.shape[1:]:
        raise ValueError(f"before must have the shape of one row of after; got {B.shape} and {A.shape}")
    return A - B[None]


def weighted_sums(values, weights, index=None) -> np.ndarray:
    """``sum_{i in index} w_i values[:, i]`` per row, (S,): a weighted-sum target from per-point values."""
    V = check_2d("values", values)
    w = _check_weights("weights", weights, V.shape[1])
    index = slice(None) if index is None else index
    return V[:, index] @ w[index]


def weighted_sum_change(after_sums, before, weights, index=None) -> np.ndarray:
    """Change of a weighted-sum target: ``after_sums - sum_{i in index} w_i before_i``, (S,)."""
    b = np.asarray(before)
    w = _check_weights("weights", weights, b.shape[0])
    index = slice(None) if index is None else index
    return np.asarray(after_sums) - w[index] @ b[index]


def self_actual(after_own: Sequence[np.ndarray], before, groups: Sequence[np.ndarray], weights=None) -> np.ndarray:
    """Actual change of each group's own summed loss (or margin), (S,).

    ``after_own[s]``: the values at the group's own points after its refit; ``before``:
    per-point values at ``theta_hat`` (n,). Unweighted (``weights`` None) it is the
    difference of the two sums (the order ss_logreg always used); weighted, the weighted
    sum of the differences ``w_U . (after - before_U)``.
    """
    before = np.asarray(before)
    groups = check_groups(groups, before.shape[0])
    if len(after_own) != len(groups):
        raise ValueError(f"after_own must hold one array per group ({len(groups)}); got {len(after_own)}")
    w = _check_weights("weights", weights, before.shape[0])
    if w is None:
        return np.array([np.asarray(after_own[s]).sum() - before[idx].sum() for s, idx in enumerate(groups)])
    return np.array([w[g] @ (np.asarray(after_own[k]) - before[g]) for k, g in enumerate(groups)])


def actual_dparams(thetas, theta_hat) -> np.ndarray:
    """Actual parameter changes ``theta_{-U} - theta_hat`` (float64), shape (S, d)."""
    T = check_2d("thetas", thetas)
    t = np.asarray(theta_hat, dtype=np.float64).reshape(-1)
    if t.shape[0] != T.shape[1]:
        raise ValueError(f"theta_hat must have length {T.shape[1]}; got {t.shape[0]}")
    return T - t[None, :]


def l2_norms(rows) -> np.ndarray:
    """Euclidean norm of each row (``subset_grad_loss_l2_norm``, ``*_dparam_l2_norm``), (S,)."""
    return np.linalg.norm(check_2d("rows", rows), axis=1)


def hessian_norms(dparams, hessian) -> np.ndarray:
    """``sqrt(D_s^T H D_s)`` per row (``*_dparam_hessian_norm``; negative rounding clipped to 0), (S,)."""
    D = check_2d("dparams", dparams)
    H = check_2d("hessian", hessian, cols=D.shape[1], rows=D.shape[1])
    return np.sqrt(np.maximum(np.einsum("sd,de,se->s", D, H, D, optimize=True), 0.0))


def z_norms(zs, hessian) -> dict[str, np.ndarray]:
    """``z_norms`` = ``||z_i||`` and ``z_hessian_norms`` = ``sqrt(z_i^T H^-1 z_i)`` (one triangular solve)."""
    Z = check_2d("zs", zs)
    H = check_2d("hessian", hessian, cols=Z.shape[1], rows=Z.shape[1])
    L = np.linalg.cholesky(H)
    W = scipy.linalg.solve_triangular(L, Z.T, lower=True)
    return {"z_norms": np.linalg.norm(Z, axis=1), "z_hessian_norms": np.linalg.norm(W, axis=0)}


# ----------------------------------------------------------------------------- the model at its optimum
class GroupInfluence:
    """A logistic regression at its optimum ``params`` with its training data.

    ``model``: :class:`influence.logistic_regression.LogisticRegression` (its parameters
    are set to ``params`` before every use); ``train``: dataset (``x``, ``labels``) or
    ``(x, labels)`` tuple; ``l2_reg``: the regularisation of the fit; ``sample_weights``:
    (n,) or None for ones; ``hessian``: the regularised Hessian at ``params`` (d, d), if
    known; ``inverse_hvp_method``: ``'explicit'`` or ``'cg'`` (default the model's);
    ``inverse_vp_method``: the explicit solve (``'cholesky'``, ``'lu'``, ``'cholesky_lu'``).
    """

    def __init__(self, model: LogisticRegression, train, l2_reg, params=None, sample_weights=None,
                 hessian=None, inverse_hvp_method: str | None = None, inverse_vp_method: str = "cholesky_lu",
                 max_memory: int | None = None):
        if not isinstance(model, LogisticRegression):
            raise ValueError(f"model must be an influence.logistic_regression.LogisticRegression; "
                             f"got {type(model).__name__}")
        try:
            l2 = float(l2_reg)
        except (TypeError, ValueError):
            raise ValueError(f"l2_reg must be a finite number >= 0; got {l2_reg!r}") from None
        if not (math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2_reg must be a finite number >= 0; got {l2_reg!r}")
        n = _num_rows(train)
        d = model.num_params
        params = model.get_params_flat() if params is None else np.asarray(params)
        if params.shape != (d,):
            raise ValueError(f"params must have shape ({d},); got {params.shape}")
        if hessian is not None:
            hessian = check_2d("hessian", hessian, cols=d, rows=d)
        method = inverse_hvp_method or model.config["inverse_hvp_method"]
        _check_choice("inverse_hvp_method", method, INVERSE_HVP_METHODS)
        _check_choice("inverse_vp_method", inverse_vp_method, INVERSE_VP_METHODS)
        if max_memory is not None and (int(max_memory) != max_memory or max_memory < 1):
            raise ValueError(f"max_memory must be None or a positive integer number of bytes; got {max_memory!r}")
        self.model = model
        self.train = train
        self.l2_reg = l2_reg  # kept as given: every consumer converts with float()
        self.params = params
        self.sample_weights = _check_weights("sample_weights", sample_weights, n)
        self.hessian = hessian
        self.inverse_hvp_method = method
        self.inverse_vp_method = inverse_vp_method
        self.num_train = n
        self.max_memory = None if max_memory is None else int(max_memory)
        self._basis = None
        self._preconditioner = None

    # ------------------------------------------------------------------ helpers
    @property
    def spec(self):
        return self.model.spec

    def at_optimum(self) -> LogisticRegression:
        """The model with its parameters set to ``params`` (for its public methods)."""
        self.model.set_params_flat(self.params)
        return self.model

    def design(self, data, weights=None):
        """The model's tensors of ``data``: augmented design, labels, sample weights."""
        return self.model.design(data, weights)

    def train_xy(self):
        """The training inputs and labels."""
        return xy(self.train)

    def require_hessian(self) -> np.ndarray:
        """The regularised Hessian at ``theta_hat`` (the explicit and small routes need it)."""
        if self.hessian is None:
            raise ValueError("hessian is required for the 'explicit' and 'small' methods; pass the "
                             "regularised Hessian at theta_hat to GroupInfluence")
        return self.hessian

    def downdate_basis(self) -> DowndateBasis | None:
        """The shared :class:`~influence.downdate.DowndateBasis` at ``theta_hat`` of the
        refits and Newton changes of models that take the downdate route
        (:func:`influence.downdate.uses_downdates`; None for the others), built once."""
        if self._basis is None and uses_downdates(self.spec):
            Xa, _, s = self.design(self.train, self.sample_weights)
            self._basis = downdate_basis(self.spec, self.params, Xa, s, self.hessian, self.l2_reg)
        return self._basis

    def routes(self, method: str | None = None, preconditioner=None) -> tuple[NewtonChangeRoute, RefitRoute]:
        """The Newton-change and refit routes of this model for ``method`` (default the
        inverse-HVP method; ``'fmin_ncg'``, the original's solver, changes only the
        first-order solves and takes the Newton-CG routes), chosen by
        :func:`influence.routes.choose_routes`."""
        method = method or self.inverse_hvp_method
        method = "cg" if method == "fmin_ncg" else method
        _check_choice("method", method, METHODS)
        weighted = self.sample_weights is not None and not np.all(self.sample_weights == 1.0)
        newton, refit = choose_routes(self.spec, method, weighted, self.max_memory)
        return newton(self, preconditioner), refit(self, preconditioner)

    # ------------------------------------------------------------------ first order
    def refit_curvature(self, group: np.ndarray, theta) -> float:
        """The smallest curvature of the refit objective without ``group`` at ``theta``: the
        smallest eigenvalue of its Hessian outside the flat direction of multinomial models
        with intercepts (:attr:`ModelSpec.has_gauge`). Near its optimum, a point whose
        gradient norm is g lies within g / mu of it, mu this curvature."""
        Xa, y, s = self.design(self.train, self.sample_weights)
        obj = LogisticObjective.without_groups(self.spec, Xa, y, tf.convert_to_tensor(s),
                                               tf.constant(float(self.l2_reg), dtype=Xa.dtype), [np.asarray(group)])
        H = obj.hessians(tf.constant(np.asarray(theta)[None], dtype=Xa.dtype), gauge=False)[0].numpy()
        u = self.spec.gauge_vector()
        H += (np.trace(H) + 1.0) * np.outer(u, u)  # the flat direction's eigenvalue above all others
        return float(scipy.linalg.eigvalsh(H)[0])

    def inverse_hvp(self, V) -> np.ndarray:
        """``H^-1 V`` for V of shape (d,) or (d, m) (explicit solve or CG, as configured)."""
        V = np.asarray(V)
        if V.ndim not in (1, 2) or V.shape[0] != self.model.num_params:
            raise ValueError(f"V must have shape ({self.model.num_params},) or ({self.model.num_params}, m); "
                             f"got {V.shape}")
        return self.at_optimum().get_inverse_hvp(
            V, hessian_reg=self.hessian, dataset=self.train, sample_weights=self.sample_weights,
            l2_reg=self.l2_reg, inverse_hvp_method=self.inverse_hvp_method,
            inverse_vp_method=self.inverse_vp_method)

    def first_order_dparams(self, group_grads, preconditioner=None) -> np.ndarray:
        """First-order parameter changes ``H^-1 g_U`` (``subset_pred_dparam``), shape (S, d).

        With ``'cg'``: the cg Newton-change route of :meth:`routes` with empty groups
        (``preconditioner``, default :meth:`preconditioner`), within ``max_memory``.
        """
        G = check_2d("group_grads", group_grads, cols=self.model.num_params)
        if self.inverse_hvp_method != "cg" or len(G) == 0:
            return self.inverse_hvp(G.T).T
        newton, _ = self.routes("cg", preconditioner)
        return newton.changes([np.zeros(0, dtype=np.int64)] * len(G), G)["newton_dparam"]

    def first_order_influence(self, grads, target_grads) -> np.ndarray:
        """``grads_r . H^-1 grad f_t`` for every row r of ``grads`` and target t, shape (R, m).

        With ``grads`` the per-example training gradients (n, d) this is every training
        point's first-order influence on the targets (``fixed_test_pred_infl`` is its
        transpose); with group gradient sums (S, d) it is each group's. ``H^-1`` is
        applied once per target (one multi-column solve; with ``'cg'`` by
        :meth:`first_order_dparams`, preconditioned CG to ``cg_rtol``).
        """
        G = check_2d("grads", grads, cols=self.model.num_params)
        T = check_2d("target_grads", target_grads, cols=self.model.num_params)
        if self.inverse_hvp_method == "cg":
            return G @ self.first_order_dparams(T).T  # H^-1 T^T, H symmetric: preconditioned CG
        return G @ self.inverse_hvp(T.T)

    def gradient_sums(self, data, index_sets: Sequence[np.ndarray], weights=None, margin: bool = False,
                      chunk: int = 4096) -> np.ndarray:
        """``sum_{i in T} w_i grad q_i(theta_hat)`` for every index set T, shape (len(index_sets), d).

        q is the loss (or, with ``margin``, the margin) on ``data``. Rows are processed in
        chunks of ``chunk``, so the (n, d) matrix of per-example gradients is never formed.
        """
        X, y = xy(data)
        n = X.shape[0]
        sets = check_groups([np.asarray(s, dtype=np.int64) for s in index_sets], n)
        w = _check_weights("weights", weights, n)
        if int(chunk) != chunk or chunk < 1:
            raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
        model = self.at_optimum()
        Inc = _groups.incidence(sets, n)
        out = np.zeros((len(sets), model.num_params))
        w = np.ones(n) if w is None else w
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            part = (X[a:b], y[a:b])
            G = model.get_indiv_grad_margin(part) if margin else model.get_indiv_grad_loss(part)
            out += np.asarray(Inc[:, a:b] @ (w[a:b, None] * G))
        return out

    # ------------------------------------------------------------------ Newton
    def preconditioner(self):
        """The shared preconditioner of the ``cg`` routes at ``theta_hat``, built once (the
        routes' :meth:`~influence.routes.NewtonChangeRoute.build_preconditioner`: the dense
        Hessian's factor where it fits ``max_memory``, else
        :func:`influence.newton.make_preconditioner`).

        Pass it to :meth:`newton_dparams` and :meth:`refit` for ``cg`` (e.g. to other processes).
        """
        if self._preconditioner is None:
            weighted = self.sample_weights is not None and not np.all(self.sample_weights == 1.0)
            newton, _ = choose_routes(self.spec, "cg", weighted, self.max_memory)
            self._preconditioner = newton.build_preconditioner(self)
        return self._preconditioner

    def newton_dparams(self, groups: Sequence[np.ndarray], group_grads, method: str | None = None,
                       spectrum: bool = False, progress: bool | None = None,
                       preconditioner=None) -> dict[str, np.ndarray]:
        """One-step Newton changes ``(H - H_U)^-1 g_U`` (``subset_newton_dparam``) by the route
        of :meth:`routes` (:mod:`influence.routes`): ``'explicit'`` (per-group Woodbury or
        Cholesky, or downdates; with ``spectrum`` also the eigenvalues of ``-H^-1 H_U``),
        ``'cg'`` (batched preconditioned CG) or ``'small'`` (binary models with few
        parameters: batched Cholesky in the model's dtype). Default: the inverse-HVP method.
        Returns ``newton_dparam`` (S, d) and, for ``'explicit'`` with ``spectrum``,
        ``spectrum`` (S, d).
        """
        groups = check_groups(groups, self.num_train)
        G = check_2d("group_grads", group_grads, cols=self.model.num_params, rows=len(groups))
        newton, _ = self.routes(method, preconditioner)
        self.at_optimum()
        return newton.changes(groups, G, spectrum=spectrum, progress=progress)

    # ------------------------------------------------------------------ actual effect
    def refit(self, groups: Sequence[np.ndarray], chunk_size: int, method: str | None = None,
              progress: bool | None = None, preconditioner=None) -> RefitResult:
        """Certified exact refits without each group (its sample weights set to 0), from ``theta_hat``.

        ``method``: ``'explicit'``, ``'cg'`` or ``'small'`` (binary, few parameters), the
        route of :meth:`routes`; default the inverse-HVP method. ``chunk_size`` groups are
        refitted together: on routes that batch continuously (``queues``, see
        :class:`influence.routes.RefitRoute`) in ``chunk_size`` slots, each refilled with the
        next group as soon as its group finishes; on the others chunk by chunk. Returns one
        :class:`influence.newton.RefitResult`: ``thetas`` (S, d), ``grad_norms``,
        ``grad_tols`` (the certificate ``||grad L_{-U}|| <= grad_tol``), ``iterations``,
        ``hessians``, ``hvps``, ``converged`` (S,) and ``occupancy``.
        """
        groups = check_groups(groups, self.num_train)
        if int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        _, route = self.routes(method, preconditioner)
        model = self.at_optimum()
        S = len(groups)
        if S == 0:
            return RefitResult.empty(model.num_params)
        if route.queues:
            bar = progress_bar(None, "exact refits", S, progress)
            try:
                return route.refit(groups, slots=chunk_size, on_finish=bar.update)
            finally:
                bar.close()
        spans = range(0, S, chunk_size)
        return RefitResult.concat([route.refit(groups[a:a + chunk_size])
                                   for a in progress_bar(spans, "exact refits", len(spans), progress)])

    # ------------------------------------------------------------------ evaluation at many parameters
    def evaluate(self, thetas, data, what: str = "loss", chunk: int = 64) -> np.ndarray:
        """Per-example losses, margins (binary) or 0/1 correctness on ``data`` at each row of
        ``thetas``, shape (S, n) (:func:`influence.groups.batch_eval`)."""
        _check_choice("what", what, WHATS)
        T = check_2d("thetas", thetas, cols=self.model.num_params)
        Xa, y, _ = self.design(data)
        return _groups.batch_eval(self.spec, T, Xa, y, what, chunk=chunk, max_memory=self.max_memory)

    def evaluate_blocks(self, thetas, data, what: str = "loss", block: int = 64):
        """:meth:`evaluate` in blocks of ``block`` parameter rows: yields ``(start, values)``."""
        _check_choice("what", what, WHATS)
        T = check_2d("thetas", thetas, cols=self.model.num_params)
        Xa, y, _ = self.design(data)
        for start in range(0, T.shape[0], block):
            yield start, _groups.batch_eval(self.spec, T[start:start + block], Xa, y, what)

    def evaluate_own(self, thetas, groups: Sequence[np.ndarray], what: str = "loss", block: int = 64):
        """Per group s, the training values at its own points at ``thetas[s]`` (ragged list)."""
        groups = check_groups(groups, self.num_train)
        vals = []
        for start, values in self.evaluate_blocks(thetas, self.train, what, block):
            vals.extend(values[b, np.asarray(groups[start + b])] for b in range(values.shape[0]))
        return vals

    def accuracies(self, thetas, data) -> np.ndarray:
        """Accuracy on ``data`` at each row of ``thetas``, (S,)."""
        # Block by block: the full (S, n) 0/1 matrix can be large.
        return np.concatenate([v.mean(axis=1) for _, v in self.evaluate_blocks(thetas, data, "correct")]
                              or [np.zeros(0)])

    def param_influence(self, dparams, data, before, what: str = "loss", chunk: int = 64) -> np.ndarray:
        """Non-linear influence ``f(theta_hat + D_s) - f(theta_hat)`` on every point of ``data``, (S, n).

        ``before``: the values at ``theta_hat`` (n,). With the first-order / Newton /
        actual changes as ``dparams`` this gives the ``pparam`` / ``nparam`` / ``actl`` keys.
        """
        D = check_2d("dparams", dparams, cols=self.model.num_params)
        thetas = self.params[None, :] + D
        return self.evaluate(thetas, data, what, chunk=chunk) - np.asarray(before)[None, :]

    def self_param_influence(self, dparams, groups: Sequence[np.ndarray], before, what: str = "loss") -> np.ndarray:
        """``sum_{i in U_s} (q_i(theta_hat + D_s)) - sum_{i in U_s} q_i(theta_hat)`` per group, (S,)."""
        D = check_2d("dparams", dparams, cols=self.model.num_params)
        groups = check_groups(groups, self.num_train)
        _check_choice("what", what, WHATS)
        Xa, y, _ = self.design(self.train)
        thetas = self.params[None, :] + D
        return (_groups.group_sums_at(self.spec, thetas, Xa, y, groups, what)
                - _groups.group_sums(groups, np.asarray(before)))


# ----------------------------------------------------------------------------- everything at once
@dataclass
class GroupInfluenceResult:
    """``estimates[target][estimator]``: arrays of shape (S,) or (S, m) (``params``: (S, d));
    ``refit``: the certificates of the exact refits (see :meth:`GroupInfluence.refit`)."""

    estimates: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    refit: RefitResult | None = None


def group_influence(model: LogisticRegression, train, groups: Sequence[np.ndarray], l2_reg,
                    targets: Sequence[str] = ("params", "self_loss"), test=None, sample_weights=None,
                    hessian=None, estimators: Sequence[str] = ESTIMATORS, method: str | None = None,
                    chunk_size: int = 64, progress: bool | None = None) -> GroupInfluenceResult:
    """First-order, one-step Newton and actual effects of removing each group on each target.

    ``model``: fitted to its optimum on ``train`` with ``sample_weights`` and ``l2_reg``
    (checked: the gradient norm must be below 1000 times the fit's certificate).
    ``targets``: any of ``'params'`` (the parameter change), ``'self_loss'`` /
    ``'self_margin'`` (the group's own summed loss / margin; margin for binary models),
    ``'test_losses'`` / ``'test_margins'`` (each point of ``test``) and
    ``'test_loss_sum'`` (the total loss on ``test``). ``estimators``: any of ``'pred'``,
    ``'newton'``, ``'actl'``. ``method``: ``'explicit'``, ``'cg'`` or ``'small'``
    (default: the model's inverse-HVP method).
    """
    for t in targets:
        _check_choice("targets", t, TARGETS)
    for e in estimators:
        _check_choice("estimators", e, ESTIMATORS)
    if any(t.startswith("test") for t in targets) and test is None:
        raise ValueError(f"targets {list(targets)} need the test data; got test=None")
    if "self_margin" in targets or "test_margins" in targets:
        if not model.spec.binary:
            raise ValueError("margin targets need a binary model")
    n = _num_rows(train)
    groups = check_groups(groups, n)
    w = _check_weights("sample_weights", sample_weights, n)
    fit_norm = float(np.linalg.norm(model.get_total_grad_loss(train, w, l2_reg)))
    tol = model.fit_rtol * max(model.grad_scale(train, w), 1.0)
    if not fit_norm <= 1e3 * tol:
        raise ValueError(f"model must be at its optimum on train: ||grad L(theta)|| = {fit_norm:.3e} exceeds "
                         f"1000 x the fit certificate {tol:.3e}; call model.fit(train, sample_weights, l2_reg)")
    method = method or model.config["inverse_hvp_method"]
    _check_choice("method", method, METHODS)
    if hessian is None and method != "cg":
        hessian = model.get_hessian(train, w, l2_reg)
    gi = GroupInfluence(model, train, l2_reg, sample_weights=w, hessian=hessian,
                        inverse_hvp_method="cg" if method == "cg" else "explicit")
    m = gi.at_optimum()
    G_S = group_gradient_sums(groups, m.get_indiv_grad_loss(train), w)
    Gm_S = group_gradient_sums(groups, m.get_indiv_grad_margin(train), w) if "self_margin" in targets else None
    D: dict[str, np.ndarray] = {}
    result = GroupInfluenceResult()
    if "pred" in estimators:
        D["pred"] = gi.first_order_dparams(G_S)
    if "newton" in estimators:
        D["newton"] = gi.newton_dparams(groups, G_S, method=method, progress=progress)["newton_dparam"]
    if "actl" in estimators:
        result.refit = gi.refit(groups, chunk_size, method=method, progress=progress)
        D["actl"] = actual_dparams(result.refit.thetas, gi.params)
    test_grads = {}
    if test is not None:
        test_grads = {"test_losses": (m.get_indiv_grad_loss(test), "loss"),
                      "test_loss_sum": (m.get_total_grad_loss(test)[None, :], "loss")}
        if m.spec.binary:
            test_grads["test_margins"] = (m.get_indiv_grad_margin(test), "margin")
    for t in targets:
        est = result.estimates.setdefault(t, {})
        for e, Delta in D.items():
            if t == "params":
                est[e] = Delta
            elif t in ("self_loss", "self_margin"):
                what = "loss" if t == "self_loss" else "margin"
                if e == "actl":
                    before = m.get_indiv_loss(train) if what == "loss" else m.get_indiv_margin(train)
                    after = gi.evaluate_own(result.refit.thetas, groups, what)
                    est[e] = self_actual(after, before, groups, w)
                else:
                    est[e] = self_influence(G_S if what == "loss" else Gm_S, Delta)
            else:
                T, what = test_grads[t]
                if e == "actl":
                    before = m.get_indiv_loss(test) if what == "loss" else m.get_indiv_margin(test)
                    vals = change(gi.evaluate(result.refit.thetas, test, what), before)
                    est[e] = weighted_sums(vals, np.ones(vals.shape[1])) if t == "test_loss_sum" else vals
                else:
                    vals = target_influence(Delta, T)
                    est[e] = vals[:, 0] if t == "test_loss_sum" else vals
    gi.at_optimum()
    return result
