"""The base of the influence experiments (``ss_logreg``, ``counterexamples``, ``data_valuation``,
``credit_assignment``): what they share, in one place.

* the model: :meth:`InfluenceExperiment.get_model` builds the
  :class:`influence.logistic_regression.LogisticRegression` from the hooks
  :meth:`~InfluenceExperiment.model_arch` and :meth:`~InfluenceExperiment.model_settings`;
  :meth:`~InfluenceExperiment.influence` hands the group-influence API
  (:class:`influence.group_influence.GroupInfluence`) the model at theta_hat with the
  run's data, regularisation, sample weights and Hessian;
* cross-validation over a regularisation grid with contiguous folds
  (:meth:`~InfluenceExperiment.cross_validate`; ``ss_logreg`` warm-starts along the path);
* the refit chunk size (:meth:`~InfluenceExperiment.refit_chunk_size`, one rule:
  :func:`influence.memory.refit_chunk_size`, sized from `--max-memory`);
* progress bars (:meth:`~InfluenceExperiment.progress_bar`, honouring the run's ``progress``).

A new influence experiment derives from :class:`InfluenceExperiment` (plus
:class:`experiments.common.DatasetMixin` when it reads a registered dataset), sets
``experiment_id``, overrides the hooks it needs, and writes phases that call
:meth:`influence` for every formula.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from experiments.common import Experiment
from experiments.execution import ExecutorMixin
from experiments.tasks import cross_validation_fits
from influence.group_influence import GroupInfluence
from influence.logistic_regression import LogisticRegression
from influence.memory import refit_chunk_size
from influence.progress import progress_bar
from influence.routes import refit_holds_hessians


def cv_regs(n: int, cv_range) -> np.ndarray:
    """``logspace(log10(low n), log10(high n), num)``: the regularisation grid of every
    cross-validation, as in the original."""
    a, b, num = cv_range
    return np.logspace(np.log10(a * n), np.log10(b * n), int(num))


def contiguous_folds(n: int, folds: int, skip_empty: bool = True) -> list[np.ndarray]:
    """Contiguous, unshuffled held-out folds of size ceil(n / folds) (empty ones dropped unless
    ``skip_empty`` is False, as ss_logreg's loop over ``range(folds)``)."""
    size = int(math.ceil(n / folds))
    return [np.arange(k * size, min((k + 1) * size, n)) for k in range(folds) if not skip_empty or k * size < n]


class InfluenceExperiment(ExecutorMixin, Experiment):
    """Shared model setup, cross-validation, refit chunking and progress of the influence experiments."""

    # Class defaults, so that instances made by ``load_run`` (no __init__) work.
    progress: bool | None = None
    _model = None
    # Hooks: the model has an intercept; the maximum number of groups per refit chunk;
    # the config key of the regularisation the model was fitted with.
    fit_intercept = True
    refit_max_chunk = 64
    l2_key = "cv_l2_reg"

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        super().__init__(config, out_dir)
        self.progress = progress
        self._model = None

    # ------------------------------------------------------------------ model
    def model_arch(self) -> dict[str, Any]:
        """``{'input_dim', 'fit_intercept', 'num_classes'}`` of the model (default: from the train set)."""
        return dict(LogisticRegression.infer_arch(self.train), fit_intercept=self.fit_intercept)

    def model_settings(self) -> dict[str, Any]:
        """Config entries of the model besides the arch."""
        return {"inverse_hvp_method": self.config.get("inverse_hvp_method", "explicit"),
                "dtype": self.config.get("dtype", "float64")}

    def model_random_state(self):
        return None

    def get_model(self) -> LogisticRegression:
        if self._model is None:
            cfg = LogisticRegression.default_config()
            cfg["arch"] = self.model_arch()
            cfg.update(self.model_settings())
            self._model = LogisticRegression(cfg, model_dir=None, random_state=self.model_random_state())
        return self._model

    def theta_hat(self) -> np.ndarray:
        """The fitted parameters of phase 1 (``R['initial_params']``), flat."""
        return np.asarray(self.R["initial_params"])

    def model_at_theta_hat(self) -> LogisticRegression:
        """The run's model with its parameters set to :meth:`theta_hat`."""
        model = self.get_model()
        model.set_params_flat(self.theta_hat())
        return model

    def train_sample_weights(self):
        """Sample weights of the training objective (None: all ones)."""
        return None

    def inverse_methods(self) -> tuple[str, str]:
        """``(inverse_hvp_method, inverse_vp_method)`` of the first-order solves."""
        return (self.config.get("inverse_hvp_method", "explicit"), self.config.get("inverse_vp_method", "cholesky_lu"))

    def influence(self) -> GroupInfluence:
        """The group-influence API on this run: the model at theta_hat (phase 1), its train set,
        regularisation, sample weights and (if computed) Hessian."""
        ihvp, ivp = self.inverse_methods()
        settings = (float(self.R[self.l2_key]), ihvp, ivp, self.refit_memory())
        arrays = (self.theta_hat(), self.train_sample_weights(), self.R.get("hessian"), self.train)
        cached = getattr(self, "_influence_cache", None)
        # The same settings and the same arrays (the same objects: the run's results are not
        # copied between phases) give the same object, so what it builds once per run (the
        # downdate basis of large binary models: H^-1 and an n x n Gram matrix) is built
        # once, not once per phase.
        if cached is not None and cached[0] == settings and all(a is b for a, b in zip(cached[1], arrays)):
            return cached[2]
        theta, weights, hessian, train = arrays
        infl = GroupInfluence(self.get_model(), train, self.R[self.l2_key], params=theta,
                              sample_weights=weights, hessian=hessian, inverse_hvp_method=ihvp,
                              inverse_vp_method=ivp, max_memory=settings[3])
        self._influence_cache = (settings, arrays, infl)
        return infl

    # ------------------------------------------------------------------ shared machinery
    def progress_bar(self, iterable, desc, total=None):
        """:func:`influence.progress.progress_bar` over ``iterable``, on or off as the run's ``progress``."""
        return progress_bar(iterable, desc, total, self.progress)

    def refit_memory(self) -> int:
        """The memory budget (bytes, ``--max-memory``) of every batched computation."""
        return int(self.config["max_memory"])

    def refit_chunk_size(self) -> int:
        """Groups refitted together: :func:`influence.memory.refit_chunk_size` with this run's
        sizes and ``--max-memory`` (a (d, d) Hessian per group where the run's refit route
        holds one, :func:`influence.routes.refit_holds_hessians`)."""
        model = self.get_model()
        # Explicit Hessians per group only on the route that holds them.
        explicit = refit_holds_hessians(model.spec, self.inverse_methods()[0], self.refit_memory())
        return refit_chunk_size(model.num_params, self.num_train, self.refit_memory(), model.spec.num_rows,
                                explicit=explicit, max_items=self.refit_max_chunk)

    @property
    def subsets(self) -> list[np.ndarray]:
        """The run's groups (``R['subset_indices']``) as int64 index arrays."""
        return [np.asarray(s, dtype=np.int64) for s in self.R["subset_indices"]]

    @property
    def num_train(self) -> int:
        return self.train.num_examples

    def cross_validate(self, X, y, regs, folds, weights=None, warm_start: bool = False,
                       score: Callable[[LogisticRegression], float] | None = None,
                       batch_folds: bool = False) -> dict[str, np.ndarray]:
        """Fit on each fold's complement for every lambda of ``regs``; score on the held-out fold.

        Fold-major: each fold's first fit is cold (from zero); with ``warm_start`` each later
        one starts at the previous lambda's optimum (every fit is certified, so only the
        optimisation path changes). Returns ``cv_errors`` (summed held-out loss, weighted by
        ``weights``, summed over folds in fold order), ``cv_accs`` (mean held-out accuracy)
        and, with ``score(model)``, ``cv_scores`` (its mean over folds). ``batch_folds``
        (with ``warm_start``, no ``score``): all folds' paths advanced together by
        :meth:`LogisticRegression.fit_path` (one pass over the design for all folds).
        """
        # One task per fold (or per fold and lambda without warm starts): see
        # experiments.tasks.cross_validation_fits; embedded, the same loop as ever.
        losses, accs, scores = cross_validation_fits(self.executor, self.get_model(), X, y, regs, folds,
                                                     weights, warm_start, score, batch_folds)
        cv_errors = np.zeros(len(regs))
        for k in range(len(folds)):  # summed in fold order
            cv_errors += losses[:, k]
        res = {"cv_errors": cv_errors, "cv_accs": np.array([np.mean(list(row)) for row in accs])}
        if score is not None:
            res["cv_scores"] = np.array([np.mean(list(row)) for row in scores])
        return res
