"""L2-regularised logistic regression with influence quantities (TensorFlow 2).

The interface keeps the method names of the original release (``get_indiv_loss``,
``get_hessian``, ``get_inverse_hvp``, ``fit``, ``warm_fit``, ...); every value is
:class:`~influence.objective.LogisticObjective` at the model's parameters, as float64 NumPy
arrays (float32 in the float32 mode). Objective and layout: :mod:`influence.objective`.
:meth:`fit` and :meth:`warm_fit` run Newton's method to a certified optimum,
``||grad L|| <= fit_rtol * sum_i s_i ||[x_i; 1]||``, recorded in :attr:`last_fit`.
"""
from __future__ import annotations

import copy
import logging
import os
import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from influence.downdate import sparse_if_sparse, uses_downdates
from influence.newton import (
    ChordNewton,
    DiagonalPreconditioner,
    ExplicitNewton,
    FitResult,
    NewtonCG,
    PathPreconditioner,
    RefitResult,
    armijo_step,
    certify,
    newton_loop,
)
from influence.numerics import DTYPES, conjugate_gradient, densify, handover_tensor, inverse_vp, to_numpy, xy
from influence.objective import (
    GradientFactors,
    LogisticObjective,
    ModelSpec,
    augment,
    augmented_design,
    gauge_fix,
    gauge_fix_hvp,
    gauge_fix_inplace,
    row_norms,
    to_ext_batch,
)

logger = logging.getLogger(__name__)

DEFAULT_FIT_RTOL = {"float64": 1e-12, "float32": 1e-6}
INVERSE_HVP_METHODS = ("explicit", "cg", "fmin_ncg")
FIT_METHODS = ("auto", "newton", "newton_cg")

# Chord steps of fit_path's cold start with the Hessians at zero before they are re-formed.
COLD_PATH_STEPS = 2


# Small designs kept by LogisticRegression.design besides the newest one, in bytes at
# most; a design tensor above this size is large (one large design is kept apart).
CACHE_MAX_BYTES = 2 ** 29


def _entry_bytes(entry) -> int:
    """Bytes of the tensors of one entry of :meth:`LogisticRegression.design`'s cache."""
    return sum(int(np.prod(t.shape)) * t.dtype.size for t in entry[2])


def _is_large(shape, itemsize: int) -> bool:
    """Whether a design of ``shape`` with ``itemsize``-byte entries is large (above
    :data:`CACHE_MAX_BYTES`)."""
    return int(np.prod(shape)) * itemsize > CACHE_MAX_BYTES


def _entry_is_large(entry) -> bool:
    """Whether the design tensor of a cache entry is large (:func:`_is_large`)."""
    Xa = entry[2][0]
    return _is_large(Xa.shape, Xa.dtype.size)


# The original release's default_config keys that this implementation does not read: its
# fits are certified Newton fits (no TensorFlow initialisation, no L-BFGS) and its products
# are not split by these batch sizes. Kept so that configs written for the original work.
ORIGINAL_UNREAD_CONFIG = {
    "tf_init_seed": 0,
    "indiv_grad_method": "batched",
    "loss_batch_size": 4096,
    "grad_batch_size": 4096,
    "hessian_batch_size": 256,
    "max_lbfgs_iter": 2048,
    "hvp_batch_size": 8192,
}


class LogisticRegression:
    """Binary or multinomial logistic regression, ``config`` as in :meth:`default_config`.

    ``model_dir`` and ``random_state`` keep the original's signature: nothing is written
    (influence/ does no I/O) and the fits are deterministic."""

    def __init__(self, config: dict[str, Any], model_dir: str | os.PathLike | None = None,
                 random_state=None):
        config = copy.deepcopy(config)
        defaults = self.default_config()
        for key, value in defaults.items():
            config.setdefault(key, value)
        if "arch" not in config:
            raise ValueError("config['arch'] is required: {'input_dim', 'fit_intercept', 'num_classes'}")
        if config["dtype"] not in DTYPES:
            raise ValueError(f"config['dtype'] must be one of {sorted(DTYPES)}; got {config['dtype']!r}")
        if config["inverse_hvp_method"] not in INVERSE_HVP_METHODS:
            raise ValueError(f"config['inverse_hvp_method'] must be one of {INVERSE_HVP_METHODS}; "
                             f"got {config['inverse_hvp_method']!r}")
        if config["fit_method"] not in FIT_METHODS:
            raise ValueError(f"config['fit_method'] must be one of {FIT_METHODS}; got {config['fit_method']!r}")
        arch = config["arch"]
        self.config = config
        self.dtype = DTYPES[config["dtype"]]
        self.np_dtype = np.float64 if config["dtype"] == "float64" else np.float32
        self.spec = ModelSpec(int(arch["input_dim"]), int(arch["num_classes"]),
                              bool(arch["fit_intercept"]), self.dtype)
        self.fit_rtol = float(config["fit_rtol"] if config["fit_rtol"] is not None
                              else DEFAULT_FIT_RTOL[config["dtype"]])
        self.model_dir = model_dir
        self._states: dict[str, np.ndarray] = {}
        self._cache: list[tuple[Any, Any, tuple]] = []
        self._sparse_key, self._sparse = None, None
        self.last_fit: FitResult | None = None
        # The Newton-CG fits' preconditioner and the (design, weights) it belongs to: a weak
        # reference to the design tensor, so that a design the cache of :meth:`design` drops
        # is freed (a large one made again would otherwise be held twice).
        self.fit_preconditioner: PathPreconditioner | None = None
        self._fit_preconditioner_key = None
        self.params = np.zeros(self.spec.num_params, dtype=self.np_dtype)

    # ------------------------------------------------------------------ config
    @staticmethod
    def default_config() -> dict[str, Any]:
        """The original release's defaults (:data:`ORIGINAL_UNREAD_CONFIG` among them) plus
        this project's settings."""
        return {
            **ORIGINAL_UNREAD_CONFIG,
            "inverse_hvp_method": "explicit",
            "fmin_ncg_avextol": 1e-8,
            "fmin_ncg_maxiter": 256,
            # Project settings.
            "dtype": "float64",          # 'float32' reproduces the original's numerics
            "fit_rtol": None,            # None: 1e-12 (float64) or 1e-6 (float32)
            "fit_method": "auto",        # explicit-Hessian Newton up to explicit_max_params
            "explicit_max_params": 4000,
            "max_newton_iter": 100,
            "cg_rtol": 1e-10,            # relative residual of CG inverse-HVPs
            "cg_maxiter": None,          # None: 10 * num_params
            "hvp_method": "closed_form",  # or 'autodiff' (double backprop) for CG
            # Newton-CG fits: a warm fit on the design and weights of the previous fit keeps
            # that fit's preconditioner Hessian (refactored for a new l2_reg) instead of
            # forming a new one; False forms one per fit (influence.newton.PathPreconditioner).
            "reuse_fit_preconditioner": True,
        }

    @staticmethod
    def infer_arch(ds) -> dict[str, Any]:
        """``input_dim`` from x, ``num_classes`` from the labels, ``fit_intercept=False``."""
        x, labels = xy(ds)
        return {"input_dim": int(x.shape[1]), "fit_intercept": False,
                "num_classes": int(len(np.unique(labels)))}

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector (class-major weights, then the biases)."""
        return self.spec.num_params

    # -------------------------------------------------------------- tensors
    def design(self, ds, sample_weights=None):
        """The engine's inputs on ``ds``: ``(Xa, y, s)`` tensors in the model's dtype, the
        design with its intercept column, the labels and the sample weights (ones when None),
        as the batched functions of :mod:`influence.refit` and :mod:`influence.groups` take them.

        The last few designs are kept (by the identity of ``x`` and ``labels``): the newest
        large one (above :data:`CACHE_MAX_BYTES`, e.g. a large training set) until another
        large one is made, so that evaluations on small sets (test sets, row chunks) never
        make it again, and besides it up to three older small ones within
        :data:`CACHE_MAX_BYTES` in all. A new large design replaces the kept one: that is
        dropped before the new one is made, so two large designs are never kept at once
        (cross-validation on fold copies of a large design)."""
        x, labels = xy(ds)
        hit = self._cached_design(x, labels)
        if hit is None:
            if labels.size and not np.all(np.isin(np.unique(labels), np.arange(self.spec.num_classes))):
                raise ValueError(f"labels must be integers in [0, {self.spec.num_classes - 1}]; "
                                 f"got values {np.unique(labels)[:10]}")
            Xd = densify(x)
            if Xd.shape[1] != self.spec.input_dim:
                raise ValueError(f"x must have input_dim={self.spec.input_dim} columns; got {Xd.shape[1]}")
            large = _is_large((Xd.shape[0], self.spec.ext_dim), self.dtype.size)
            if large:
                self._cache = [entry for entry in self._cache if not _entry_is_large(entry)]
            Xa = augmented_design(Xd, self.spec, self.dtype)
            y = tf.constant(labels, dtype=self.dtype if self.spec.binary else tf.int32)
            hit = (Xa, y)
            kept, small, total, full, large_kept = [], 0, 0, False, large
            for entry in self._cache:  # newest first
                if _entry_is_large(entry):
                    if not large_kept:
                        kept.append(entry)
                        large_kept = True
                    continue
                total += _entry_bytes(entry)
                small += 1
                full = full or total > CACHE_MAX_BYTES or small > 3
                if not full:
                    kept.append(entry)
            self._cache = [((id(x), id(labels)), (x, labels), hit)] + kept
        Xa, y = hit
        n = int(Xa.shape[0])
        if sample_weights is None:
            s = tf.ones([n], dtype=self.dtype)
        else:
            s_np = np.asarray(sample_weights, dtype=np.float64).reshape(-1)
            if s_np.shape[0] != n:
                raise ValueError(f"sample_weights must have length {n}; got {s_np.shape[0]}")
            if not np.all(np.isfinite(s_np)) or np.any(s_np < 0):
                raise ValueError("sample_weights must be finite and >= 0")
            s = tf.constant(s_np, dtype=self.dtype)
        return Xa, y, s

    def _cached_design(self, x, labels):
        """The kept ``(Xa, y)`` tensors of ``x`` and ``labels`` (the same objects), or None."""
        key = (id(x), id(labels))
        return next((t for (k, ref, t) in self._cache if k == key and ref[0] is x and ref[1] is labels), None)

    @property
    def cached_inputs(self) -> list:
        """The ``x`` arrays whose design tensors :meth:`design` keeps, newest first."""
        return [ref[0] for _, ref, _ in self._cache]

    def _objective(self, ds, sample_weights=None, l2_reg=None) -> LogisticObjective:
        """The objective on ``ds`` with these weights and ``l2_reg`` (one problem); large
        binary models on a sparse design get its CSR copy (sparse Hessians)."""
        Xa, y, s = self.design(ds, sample_weights)
        return LogisticObjective(self.spec, Xa, y, s, self._l2(l2_reg), Xa_sparse=self._sparse_design(Xa))

    def _sparse_design(self, Xa):
        """A float64 CSR copy of the design tensor when the model takes the downdate route
        (:func:`influence.downdate.uses_downdates`) and the design is sparse, else None
        (cached with the tensors)."""
        if not uses_downdates(self.spec) or Xa.dtype != tf.float64:
            return None
        if self._sparse_key is not Xa:
            X = sparse_if_sparse(Xa.numpy())
            self._sparse_key, self._sparse = Xa, (X if not isinstance(X, np.ndarray) else None)
        return self._sparse

    def _theta(self, params=None) -> tf.Tensor:
        return tf.constant(self.params if params is None else params, dtype=self.dtype)

    def _out(self, t) -> np.ndarray:
        return to_numpy(t, self.np_dtype)

    def _l2(self, l2_reg):
        if l2_reg is None:
            return tf.constant(0.0, dtype=self.dtype)
        l2 = float(l2_reg)
        if not np.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2_reg must be finite and >= 0; got {l2_reg!r}")
        return tf.constant(l2, dtype=self.dtype)

    # ------------------------------------------------------------ params
    def get_params_flat(self) -> np.ndarray:
        """A copy of the current parameters, shape (num_params,)."""
        return self.params.copy()

    def set_params_flat(self, params) -> None:
        """Replace the parameters by ``params`` (length num_params); ValueError otherwise."""
        params = np.asarray(params, dtype=self.np_dtype).reshape(-1)
        if params.shape[0] != self.num_params:
            raise ValueError(f"params must have length num_params={self.num_params}; got {params.shape[0]}")
        self.params = params.copy()

    def get_coef_intercept(self) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn style ``coef_`` (K', D) and ``intercept_`` (K',)."""
        ext = to_ext_batch(self._theta()[None], self.spec)[0].numpy()
        D = self.spec.input_dim
        coef = ext[:, :D]
        intercept = ext[:, D] if self.spec.fit_intercept else np.zeros(self.spec.num_rows)
        return coef, intercept

    def save(self, state_id: str) -> None:
        """Keep the current parameters as ``state_id`` (in memory; the original wrote a TF
        checkpoint). Files are the caller's business:
        :meth:`get_state` returns the arrays to store (``datasets.storage``)."""
        self._states[state_id] = self.params.copy()

    def load(self, state_id: str) -> None:
        """Restore the parameters kept by :meth:`save` or :meth:`set_state`."""
        if state_id not in self._states:
            raise KeyError(f"no saved model state {state_id!r}; saved: {sorted(self._states)}")
        self.params = self._states[state_id].copy()

    def get_state(self) -> dict[str, np.ndarray]:
        """The saved states and the current parameters as arrays: ``{'params': ...,
        'state/<id>': ...}``, for the caller to write to a file."""
        out = {"params": self.params.copy()}
        out.update({f"state/{k}": v.copy() for k, v in self._states.items()})
        return out

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`get_state` (shapes checked)."""
        for key, value in state.items():
            if key == "params":
                self.set_params_flat(value)
            elif key.startswith("state/"):
                value = np.asarray(value, dtype=self.np_dtype).reshape(-1)
                if value.shape[0] != self.num_params:
                    raise ValueError(f"state {key!r} must have length num_params={self.num_params}; "
                                     f"got {value.shape[0]}")
                self._states[key[len("state/"):]] = value.copy()
            else:
                raise ValueError(f"state keys must be 'params' or 'state/<id>'; got {key!r}")

    # ------------------------------------------------------------ values
    def get_indiv_loss(self, ds, **kw) -> np.ndarray:
        """Unweighted loss of every example, shape (n,)."""
        return self._out(self._objective(ds).per_example_losses(self._theta()[None])[0])

    def get_total_loss(self, ds, sample_weights=None, l2_reg=None, **kw) -> float:
        """``sum_i s_i l_i + (l2_reg / 2) ||W||^2`` on ``ds`` (summed, not averaged; the
        regulariser on the weights only; ``l2_reg`` defaults to the model's)."""
        return float(self._objective(ds, sample_weights, l2_reg).loss_at(self._theta()))

    def get_indiv_grad_loss(self, ds, **kw) -> np.ndarray:
        """Unweighted per-example gradients, shape (n, num_params)."""
        return self._out(self._objective(ds).per_example_gradients(self._theta()))

    def get_indiv_grad_loss_factors(self, ds) -> GradientFactors:
        """The factors of :meth:`get_indiv_grad_loss` of a multinomial model
        (:class:`influence.objective.GradientFactors`: its rows are those of
        :meth:`get_indiv_grad_loss`, bit for bit)."""
        return self._objective(ds).per_example_gradient_factors(self._theta())

    def get_total_grad_loss(self, ds, sample_weights=None, l2_reg=None, **kw) -> np.ndarray:
        """``sum_i s_i grad l_i (+ l2_reg * W)``, shape (num_params,)."""
        return self._out(self._objective(ds, sample_weights, l2_reg).gradient_at(self._theta()))

    def get_hessian(self, ds, sample_weights=None, l2_reg=None, **kw) -> np.ndarray:
        """``sum_i s_i hess l_i (+ l2_reg on the weight diagonal)``, (num_params, num_params)."""
        return self._out(self._objective(ds, sample_weights, l2_reg).hessian_at(self._theta()))

    def get_hvp(self, v, ds, sample_weights=None, l2_reg=None, method=None, **kw) -> np.ndarray:
        """Hessian-vector product(s); ``v`` of shape (d,) or (d, m).

        ``method='autodiff'`` differentiates the objective twice (one vector at a time);
        ``'closed_form'`` (default from config) uses the explicit formula, batched.
        """
        method = method or self.config["hvp_method"]
        if method not in ("autodiff", "closed_form"):
            raise ValueError(f"hvp method must be 'autodiff' or 'closed_form'; got {method!r}")
        V = tf.constant(np.asarray(v), dtype=self.dtype)
        obj = self._objective(ds, sample_weights, l2_reg)
        return self._out(obj.hvp_at(self._theta(), V, autodiff=method == "autodiff"))

    def get_inverse_vp(self, M, V, inverse_vp_method: str = "cholesky") -> np.ndarray:
        """Solve ``M X = V`` for explicit ``M``; V of shape (d,) or (d, m)."""
        return self._out(inverse_vp(tf.constant(np.asarray(M), dtype=self.dtype),
                                    tf.constant(np.asarray(V), dtype=self.dtype), inverse_vp_method))

    def get_inverse_hvp(self, V, hessian_reg=None, dataset=None, sample_weights=None, l2_reg=None,
                        inverse_hvp_method=None, inverse_vp_method="cholesky", **kw) -> np.ndarray:
        """``H^{-1} V`` with H the regularised Hessian at the current parameters.

        ``'explicit'``: solve with ``hessian_reg`` (computed from ``dataset`` if not
        given). ``'cg'``: conjugate gradient on all columns together, Hessian-vector products
        on ``dataset``, to the relative residual ``config['cg_rtol']``. ``'fmin_ncg'``: the
        original's ``scipy.optimize.fmin_ncg`` on ``x^T H x / 2 - v^T x`` from 0, one column
        at a time (``config['fmin_ncg_avextol']``, ``config['fmin_ncg_maxiter']``).
        """
        method = inverse_hvp_method or self.config["inverse_hvp_method"]
        if method not in INVERSE_HVP_METHODS:
            raise ValueError(f"inverse_hvp_method must be one of {INVERSE_HVP_METHODS}; got {method!r}")
        if method == "explicit":
            if hessian_reg is None:
                if dataset is None:
                    raise ValueError("inverse_hvp_method='explicit' needs hessian_reg or dataset")
                hessian_reg = self.get_hessian(dataset, sample_weights, l2_reg)
            M = gauge_fix(tf.constant(np.asarray(hessian_reg), dtype=self.dtype), self.spec)
            return self._out(inverse_vp(M, tf.constant(np.asarray(V), dtype=self.dtype), inverse_vp_method))
        if dataset is None:
            raise ValueError(f"inverse_hvp_method={method!r} needs the dataset")
        if method == "fmin_ncg":
            return self._out(self._fmin_ncg_solve(V, dataset, sample_weights, l2_reg))
        return self._out(conjugate_gradient(self._hvp_operator(dataset, sample_weights, l2_reg),
                                            tf.constant(np.asarray(V), dtype=self.dtype),
                                            tol=self.config["cg_rtol"], maxiter=self.config["cg_maxiter"]).x)

    def _fmin_ncg_solve(self, V, dataset, sample_weights, l2_reg) -> np.ndarray:
        from scipy.optimize import fmin_ncg

        matvec = self._hvp_operator(dataset, sample_weights, l2_reg)
        V = np.asarray(V, dtype=np.float64)
        cols = V[:, None] if V.ndim == 1 else V

        def ax(x):
            return matvec(tf.constant(x[:, None], dtype=self.dtype)).numpy()[:, 0].astype(np.float64)

        out = np.empty_like(cols)
        for j in range(cols.shape[1]):
            b = cols[:, j]
            out[:, j] = fmin_ncg(f=lambda x, b=b: 0.5 * np.dot(x, ax(x)) - np.dot(b, x), x0=np.zeros_like(b),
                                 fprime=lambda x, b=b: ax(x) - b, fhess_p=lambda x, p: ax(p),
                                 avextol=self.config["fmin_ncg_avextol"], maxiter=self.config["fmin_ncg_maxiter"],
                                 disp=False)
        return out[:, 0] if V.ndim == 1 else out

    def _hvp_operator(self, dataset, sample_weights, l2_reg):
        """``P -> (H + gauge) P`` for P of shape (d, m), the operator of the CG solvers."""
        obj = self._objective(dataset, sample_weights, l2_reg)
        theta = self._theta()
        autodiff = self.config["hvp_method"] == "autodiff"

        def matvec(P):
            return gauge_fix_hvp(P, obj.hvp_at(theta, P, autodiff), obj.gauge_c, self.spec)

        return matvec

    def get_indiv_margin(self, ds, **kw) -> np.ndarray:
        """Binary margins ``(2y - 1)(w.x + b)``, shape (n,)."""
        return self._out(self._objective(ds).margins(self._theta()[None])[0])

    def get_indiv_grad_margin(self, ds, **kw) -> np.ndarray:
        """Binary margin gradients ``(2y - 1)[x; 1]``, shape (n, num_params)."""
        return self._out(self._objective(ds).margin_gradients())

    def get_total_grad_margin(self, ds, sample_weights=None, **kw) -> np.ndarray:
        """Binary ``sum_i s_i grad m_i`` of the margins, shape (num_params,)."""
        obj = self._objective(ds, sample_weights)
        return self._out(tf.linalg.matvec(obj.margin_gradients(), obj.S[:, 0], transpose_a=True))

    def get_zs(self, ds, **kw) -> np.ndarray:
        """Binary rows ``sqrt(sigma (1 - sigma)) [x; 1]``: ``Z^T Z`` is the unregularised Hessian."""
        obj = self._objective(ds)
        obj.require_binary("get_zs")
        return self._out(obj.hessian_factor_rows(self._theta()))

    def get_predictions(self, X) -> np.ndarray:
        """Softmax probabilities, shape (n, num_classes)."""
        return self._probabilities(augment(tf.constant(densify(X), dtype=self.dtype), self.spec))

    def _probabilities(self, Xa) -> np.ndarray:
        """Softmax probabilities at the current parameters on the augmented design ``Xa``."""
        return self._out(LogisticObjective(self.spec, Xa).probabilities(self._theta()[None])[:, 0])

    def get_accuracy(self, ds, **kw) -> float:
        """Fraction of ``ds`` whose most probable class is its label (NaN when empty)."""
        x, labels = xy(ds)
        if len(labels) == 0:
            return float("nan")
        hit = self._cached_design(x, labels)
        if hit is None:
            probabilities = self.get_predictions(x)
        else:  # the kept design (e.g. the training set's): no second copy of a large one
            probabilities = self._probabilities(hit[0])
        return float(np.mean(np.argmax(probabilities, axis=1) == labels))

    # ------------------------------------------------------------ fitting
    def grad_scale(self, ds, sample_weights=None) -> float:
        """``sum_i s_i ||[x_i; 1]||``: bounds the norm of the data term's gradient."""
        Xa, _, s = self.design(ds, sample_weights)
        return float(tf.reduce_sum(s * row_norms(Xa, self.dtype)))

    def fit_path(self, ds, fold_weights, l2_regs) -> list[RefitResult]:
        """Certified fits of the F problems ``sum_i fold_weights[i, f] l_i + (l2 / 2) ||W||^2``
        (e.g. the training parts of cross-validation folds: weight 0 on the held-out rows) for
        each ``l2`` of ``l2_regs`` in turn: cold (from zero) at the first, each later one
        warm-started at the previous optima; all F advanced together (one pass over the
        design per step serves them all).

        Chord Newton (:class:`~influence.newton.ChordNewton`) with the certificate and the
        polishing steps of :meth:`warm_fit`, started at each ``l2`` from every problem's
        Hessian at the mean of the previous optima (:meth:`_path_hessians`: together the cost
        of one Hessian of the design; a fresh one per problem only where the chord steps slow
        down). ``fold_weights``: (n, F), each row 0 or one common weight in every problem
        that keeps it. Returns one :class:`~influence.newton.RefitResult` per ``l2``
        (``thetas`` (F, d)); the model's parameters are left unchanged.
        """
        Xa, y, _ = self.design(ds)
        W = np.asarray(fold_weights, dtype=np.float64)
        n = int(Xa.shape[0])
        if W.ndim != 2 or W.shape[0] != n or not np.all(np.isfinite(W)) or np.any(W < 0):
            raise ValueError(f"fold_weights must be finite, >= 0 and of shape ({n}, F); got shape {W.shape}")
        if np.any((W > 0) & (W != W.max(axis=1, keepdims=True))):
            raise ValueError("fold_weights must give each row one weight in every problem that keeps it (else 0)")
        S = tf.constant(W, dtype=self.dtype)
        Theta = tf.zeros([W.shape[1], self.num_params], dtype=self.dtype)
        blocks = self._path_blocks(W)
        out = []
        max_iter = self.config["max_newton_iter"]
        for j, l2_reg in enumerate(l2_regs):
            obj = LogisticObjective(self.spec, Xa, y, S, self._l2(l2_reg))
            scale = obj.grad_scales()
            tols = self.fit_rtol * np.maximum(scale, 1.0)
            reg = float(obj.l2) * np.diag(obj.mask.numpy())[None]
            done = 0
            # The cold start's Hessians (at zero) are far from the first optima: a few steps
            # with them, then the Hessians where those steps led.
            stages = (COLD_PATH_STEPS, max_iter - COLD_PATH_STEPS) if j == 0 else (max_iter,)
            for k, stage_iter in enumerate(stages):
                start = self._path_hessians(Xa, y, W, Theta, blocks)
                start += reg
                start = start.astype(self.np_dtype, copy=False)
                gauge_fix_inplace(start, self.spec)
                start = handover_tensor(start)
                res = newton_loop(obj, Theta, tols, ChordNewton(start, stale=True), stage_iter,
                                  scale=np.maximum(scale, 1e-300), polish_steps=2 if k == len(stages) - 1 else 0)
                Theta = tf.constant(res.thetas, dtype=self.dtype)
                res.iterations += done
                done = res.iterations
            res.converged = certify(res.grad_norms, res.grad_tols, "LogisticRegression.fit_path",
                                    res.iterations, res.stalled, max_iter)
            out.append(res)
        return out

    @staticmethod
    def _path_blocks(W: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The distinct rows of ``W > 0`` (which problems keep a row), (b, F), and the rows of
        ``W`` of each: the blocks of :meth:`_path_hessians`."""
        keys, inverse = np.unique(W > 0, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        return keys, [np.flatnonzero(inverse == b) for b in range(len(keys))]

    def _path_hessians(self, Xa, y, W: np.ndarray, Theta, path_blocks) -> np.ndarray:
        """The unregularised Hessians (F, d, d) of the F weight columns of ``W``, all at the
        mean of the rows of ``Theta`` (the problems share most of their data, so their optima
        are close): one Hessian per block of rows kept by the same problems
        (``path_blocks``, :meth:`_path_blocks`), summed per problem, so that all F cost about
        as much as one Hessian of the design (less for multinomial models: chord matrices,
        the last class's blocks derived from the others')."""
        theta = tf.reduce_mean(Theta, axis=0)
        keys, blocks = path_blocks
        rows = LogisticObjective.without_groups(self.spec, Xa, y, tf.constant(W.max(axis=1), dtype=self.dtype),
                                                0.0, blocks)
        H_blocks = rows.group_hessians(theta, blocks, chord=True).numpy()
        return np.einsum("bf,bij->fij", keys.astype(np.float64), H_blocks)

    def fit(self, ds, sample_weights=None, l2_reg=None, **kw) -> FitResult:
        """Cold fit from zero to a certified optimum (as on a fresh model: nothing of an
        earlier fit is reused)."""
        self.params = np.zeros(self.num_params, dtype=self.np_dtype)
        self.release_fit_preconditioner()
        return self.warm_fit(ds, sample_weights, l2_reg, **kw)

    def release_fit_preconditioner(self) -> None:
        """Free the Newton-CG fits' preconditioner (two (d, d) matrices) kept for the next
        warm fit on the same design; the next fit forms a new one."""
        self.fit_preconditioner = self._fit_preconditioner_key = None

    def _path_preconditioner(self, obj: LogisticObjective) -> PathPreconditioner:
        """The Newton-CG fits' preconditioner: the previous fit's when ``obj`` has its design
        tensor and sample weights (and ``reuse_fit_preconditioner`` is on), else a new one."""
        s = obj.S[:, 0].numpy()
        key = self._fit_preconditioner_key
        if (not self.config["reuse_fit_preconditioner"] or self.fit_preconditioner is None or key is None
                or key[0]() is not obj.Xa or not np.array_equal(key[1], s)):
            self.fit_preconditioner = None  # its Hessian is freed before a new one is formed
            self.fit_preconditioner = PathPreconditioner()
            self._fit_preconditioner_key = (weakref.ref(obj.Xa), s)
        return self.fit_preconditioner

    def warm_fit(self, ds, sample_weights=None, l2_reg=None, **kw) -> FitResult:
        """Fit starting from the current parameters, to a certified optimum.

        Newton-CG fits (models above ``explicit_max_params``) on the design and weights of
        the previous fit reuse its preconditioner Hessian (see ``reuse_fit_preconditioner``);
        ``last_fit.preconditioner_hessians`` and ``.preconditioner_factorizations`` count
        what this fit formed."""
        obj = self._objective(ds, sample_weights, l2_reg)
        l2 = obj.l2
        spec = self.spec
        method = self.config["fit_method"]
        if method == "auto":
            method = "newton" if self.num_params <= self.config["explicit_max_params"] else "newton_cg"
        if float(l2) == 0.0 and spec.fit_intercept is False and method == "newton":
            logger.debug("fitting without regularisation; the optimum may not exist on separable data")

        scale_ref = self.grad_scale(ds, sample_weights)
        path = None
        if method == "newton" and uses_downdates(spec) and obj.Xa_sparse is not None:
            # Large binary models on a sparse design (spam): a Hessian-vector product is two
            # sparse products (O(nnz)), so Newton-CG preconditioned by the Hessian's diagonal
            # at the start beats forming and factoring any (d, d) matrix.
            strategy = NewtonCG(DiagonalPreconditioner(obj, self.params), 10 * self.num_params, floor=1e-14,
                                tighten=False, search=armijo_step)
        elif method == "newton" and uses_downdates(spec):
            # Large binary models: a Hessian with its factor costs n d^2 + d^3 / 3, so it is
            # reused while it cuts the gradient norm fourfold (chord steps), then
            # preconditions CG (influence.newton.ChordNewton).
            strategy = ChordNewton(None, float32_preconditioner=True)
        elif method == "newton":
            strategy = ExplicitNewton(search=armijo_step)
        else:
            # Inexact Newton: the forcing term tightens as the gradient shrinks. CG is
            # preconditioned by a (subsampled) Hessian factor built at an earlier iterate
            # and rebuilt once it has gone stale (more than 25 CG iterations).
            path = self._path_preconditioner(obj)
            strategy = NewtonCG(None, self.config["cg_maxiter"] or 10 * self.num_params, floor=1e-14,
                                tighten=False, rebuild_after=25, search=armijo_step, path=path)
        built = (path.hessians, path.factorizations) if path is not None else (0, 0)
        grad_tol = self.fit_rtol * max(scale_ref, 1.0)
        max_iter = self.config["max_newton_iter"]
        res = newton_loop(obj, self._theta()[None, :], np.array([grad_tol]), strategy, max_iter,
                          scale=np.array([max(scale_ref, 1e-300)]), polish_steps=2, history=True)
        certify(res.grad_norms, res.grad_tols, "LogisticRegression.fit", res.iterations, res.stalled, max_iter)
        result = FitResult(res.thetas[0], float(res.grad_norms[0]), grad_tol, int(res.iterations[0]),
                           bool(res.converged[0]), [float(h[0]) for h in res.history],
                           hvps=int(res.hvps[0]) if res.hvps is not None else 0,
                           preconditioner_hessians=path.hessians - built[0] if path is not None else 0,
                           preconditioner_factorizations=path.factorizations - built[1] if path is not None else 0)
        self.params = np.asarray(result.theta, dtype=self.np_dtype)
        self.last_fit = result
        return result

