"""A scikit-learn-style entry point: fit a logistic regression, then ask what removing
groups of training points does.

>>> from influence.sklearn_api import InfluenceLogisticRegression
>>> est = InfluenceLogisticRegression(C=1.0).fit(X_train, y_train)
>>> table = est.group_effects([[0, 1, 2], [5, 8]], X_test, y_test)

Objective and regularisation. The model minimises the summed (not averaged) loss plus an
L2 penalty on the weights only (intercepts unregularised)::

    L(w, b) = sum_i s_i * log_loss(y_i, softmax(W x_i + b)) + (l2_reg / 2) * ||W||^2

scikit-learn's ``LogisticRegression(C=C)`` minimises ``C * sum_i s_i log_loss_i +
||W||^2 / 2`` (its default ``l2`` penalty; the intercept is not penalised by the lbfgs,
newton-cg and newton-cholesky solvers), which is the same problem scaled by ``C``:
``l2_reg = 1 / C``. ``C`` here has scikit-learn's meaning, so ``C=1.0`` gives the same
coefficients as ``sklearn.linear_model.LogisticRegression(C=1.0)`` at a tight tolerance.
Two classes give one weight vector (``coef_`` of shape (1, n_features)); more give the
multinomial model with one per class. Unlike scikit-learn's lbfgs, the fit runs Newton's
method to a certified optimum (``fit_grad_norm_ <= fit_grad_tol_``).

Sign convention: an effect is the change caused by REMOVING the group (positive: the
quantity grows when the group is left out).

Only public names of :mod:`influence.group_influence` and
:mod:`influence.logistic_regression` are used: the group effects are those of
:func:`influence.group_influence.group_influence`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from influence.group_influence import group_influence
from influence.logistic_regression import LogisticRegression

TARGETS = ("self_loss", "test_loss_sum", "test_losses")
EFFECT_COLUMNS = {"pred": "predicted", "newton": "newton", "actl": "actual"}


class InfluenceLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression with group-influence estimates.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, as in scikit-learn: the penalty on the summed
        loss is ``(1 / C) / 2 * ||W||^2`` (see the module docstring). ``np.inf``: no
        penalty (the optimum may not exist on separable data).
    fit_intercept : bool, default=True
        Fit an unregularised intercept per weight vector.
    inverse_hvp_method : {'explicit', 'cg'}, default='explicit'
        How inverse Hessian-vector products and refits are computed: an explicit Hessian
        (small and medium models) or conjugate gradients (models too large for one).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``, sorted; ``y`` is mapped to their positions.
    coef_ : float64 ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : float64 ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
    l2_reg_ : float
        ``1 / C``: the penalty of this suite's objective.
    model_ : influence.logistic_regression.LogisticRegression
        The fitted model (parameters, Hessians, inverse-HVPs of the original's interface).
    fit_grad_norm_, fit_grad_tol_ : float
        The fit's certificate: the achieved gradient norm and its bound.
    n_iter_ : int
        Newton iterations of the fit.
    """

    def __init__(self, C: float = 1.0, fit_intercept: bool = True, inverse_hvp_method: str = "explicit"):
        self.C = C
        self.fit_intercept = fit_intercept
        self.inverse_hvp_method = inverse_hvp_method

    def fit(self, X, y, sample_weight=None):
        """Fit to a certified optimum.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), at least two distinct labels
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights ``s_i`` of the summed loss (default: all 1).

        Returns
        -------
        self
        """
        if not (isinstance(self.C, (int, float)) and self.C > 0 and not math.isnan(self.C)):
            raise ValueError(f"C must be a positive number (np.inf for no penalty); got {self.C!r}")
        if self.inverse_hvp_method not in ("explicit", "cg"):
            raise ValueError(f"inverse_hvp_method must be 'explicit' or 'cg'; got {self.inverse_hvp_method!r}")
        X, y = check_X_y(X, y, dtype=np.float64)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y must contain at least two classes; got only {self.classes_.tolist()}")
        w = None
        if sample_weight is not None:
            w = check_array(sample_weight, ensure_2d=False, dtype=np.float64)
            if w.shape != (X.shape[0],) or (w < 0).any():
                raise ValueError(f"sample_weight must be a non-negative array of shape ({X.shape[0]},); "
                                 f"got shape {w.shape}, minimum {w.min() if w.size else None}")
        self.l2_reg_ = 0.0 if math.isinf(self.C) else 1.0 / float(self.C)
        self.n_features_in_ = X.shape[1]
        arch = {"input_dim": X.shape[1], "fit_intercept": bool(self.fit_intercept),
                "num_classes": len(self.classes_)}
        self.model_ = LogisticRegression({"arch": arch, "inverse_hvp_method": self.inverse_hvp_method})
        result = self.model_.fit((X, y_idx), w, self.l2_reg_)
        self.fit_grad_norm_, self.fit_grad_tol_ = float(result.grad_norm), float(result.grad_tol)
        self.n_iter_ = int(result.iterations)
        self.coef_, self.intercept_ = self.model_.get_coef_intercept()
        self._train = (X, y_idx, w)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, float64 array of shape (n_samples, n_classes) in
        ``classes_`` order."""
        check_is_fitted(self)
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features (as in fit); got {X.shape[1]}")
        return self.model_.get_predictions(X)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row of ``X``, shape (n_samples,)."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _labels(self, y) -> np.ndarray:
        y = np.asarray(y).ravel()
        pos = np.searchsorted(self.classes_, y).clip(0, len(self.classes_) - 1)
        bad = self.classes_[pos] != y
        if bad.any():
            raise ValueError(f"y_test has labels not seen in fit, e.g. {np.unique(y[bad])[:3].tolist()}; "
                             f"classes_ = {self.classes_.tolist()}")
        return pos

    def group_effects(self, groups: Sequence, X_test=None, y_test=None, targets: Sequence[str] | None = None,
                      estimators: Sequence[str] = ("pred", "newton", "actl"), method: str | None = None,
                      chunk_size: int = 64):
        """Predicted (first-order), one-step Newton and actual effects of removing each group.

        Parameters
        ----------
        groups : sequence of array-likes of int
            Each group's row indices into the ``X`` passed to ``fit`` (not empty, no
            repeats, not every row).
        X_test, y_test : array-likes of shape (m, n_features) and (m,), optional
            Test data for the ``test_*`` targets (labels as in ``fit``).
        targets : sequence of {'self_loss', 'test_loss_sum', 'test_losses'}, optional
            ``self_loss``: the group's own summed (weighted) training loss;
            ``test_loss_sum``: the summed loss on the test data; ``test_losses``: the loss
            of each test point (one row per group and test point). Default:
            ``('self_loss', 'test_loss_sum')`` with test data, else ``('self_loss',)``.
        estimators : any of 'pred', 'newton', 'actl'
            Which effects to compute; the others' columns are NaN. ``'actl'`` refits the
            model without each group to a certified optimum.
        method : {'explicit', 'cg', 'small'}, optional
            How Newton steps and refits are computed (default: ``inverse_hvp_method``).
        chunk_size : int
            Groups refitted together.

        Returns
        -------
        pandas.DataFrame
            One row per group and target (and test point for ``test_losses``), columns
            ``group`` (position in ``groups``), ``size``, ``target``, ``test_index``
            (-1 unless ``test_losses``), ``predicted``, ``newton``, ``actual`` (float64;
            NaN when not computed), and the refit certificate ``refit_grad_norm``,
            ``refit_grad_tol``, ``certified`` (``refit_grad_norm <= refit_grad_tol``).
        """
        import pandas as pd

        check_is_fitted(self)
        has_test = X_test is not None or y_test is not None
        targets = tuple(targets) if targets is not None else (("self_loss", "test_loss_sum") if has_test
                                                              else ("self_loss",))
        for t in targets:
            if t not in TARGETS:
                raise ValueError(f"targets must be among {TARGETS}; got {t!r}")
        test = None
        if any(t.startswith("test") for t in targets):
            if X_test is None or y_test is None:
                raise ValueError(f"targets {list(targets)} need X_test and y_test; got None")
            Xt, yt = check_X_y(X_test, y_test, dtype=np.float64)
            if Xt.shape[1] != self.n_features_in_:
                raise ValueError(f"X_test must have {self.n_features_in_} features (as in fit); got {Xt.shape[1]}")
            test = (Xt, self._labels(yt))
        X, y_idx, w = self._train
        res = group_influence(self.model_, (X, y_idx), [np.asarray(g) for g in groups], self.l2_reg_,
                              targets=targets, test=test, sample_weights=w, estimators=estimators,
                              method=method or self.inverse_hvp_method, chunk_size=chunk_size, progress=False)
        S = len(groups)
        sizes = np.array([np.asarray(g).size for g in groups])
        if res.refit is not None:
            norm = np.asarray(res.refit.grad_norms, dtype=np.float64)
            tol = np.asarray(res.refit.grad_tols, dtype=np.float64)
        else:
            norm = tol = np.full(S, np.nan)
        frames = []
        for t in targets:
            est = res.estimates[t]
            m = test[0].shape[0] if t == "test_losses" else 1
            cols = {"group": np.repeat(np.arange(S), m), "size": np.repeat(sizes, m), "target": t,
                    "test_index": np.tile(np.arange(m), S) if t == "test_losses" else -1}
            for e, name in EFFECT_COLUMNS.items():
                cols[name] = np.asarray(est[e], dtype=np.float64).ravel() if e in est else np.nan
            cols["refit_grad_norm"], cols["refit_grad_tol"] = np.repeat(norm, m), np.repeat(tol, m)
            cols["certified"] = cols["refit_grad_norm"] <= cols["refit_grad_tol"]
            frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)
