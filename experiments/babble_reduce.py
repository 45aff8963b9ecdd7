"""``babble_reduce``: L1 feature selection that produces ``reduced_cdr``.

On the sparse ``cdr`` dataset (one training row per labelling-function vote, see
docs/design.md, 'Datasets and preprocessing') phase 0 fits scikit-learn's L1-penalised logistic regression for ten
regularisation strengths ``reg`` in ``logspace(log10(1e-4 N), log10(1e-1 N), 10)``
(``C = 1 / reg``, N = #train rows) with the train sample weights, and keeps the
non-zero coefficients of the fit with the best **validation** F1 (the validation labels
are LF votes, not gold labels, as in the original). Phase 1 writes the train,
validation, test and nonfires matrices restricted to those columns through
:func:`datasets.babble.save_reduced_cdr_files`, where ``reduced_cdr`` reads them.

Model: the original used sklearn 0.20's ``LogisticRegression(penalty='l1')``,
whose default solver was liblinear (tol 1e-4, max_iter 100, intercept_scaling 1; the
intercept is penalised too). The modern equivalent used here is
``LogisticRegression(l1_ratio=1.0, solver='liblinear', C=1/reg, fit_intercept=True,
random_state=RandomState(1))`` (``penalty`` is deprecated since sklearn 1.8 and
``multi_class`` is gone). The original built it once and refit it with
``set_params(C=1/reg)`` along the path, so its ten liblinear fits drew successive seeds
from one ``RandomState(1)``; here each fit is one task of the run's executor
(:mod:`experiments.execution`: in this process, or on Dask workers with ``--workers`` /
``--scheduler-address``) and starts from the state that stream had before it
(:func:`path_random_states`), so the fits are the original's, wherever they run. This
step is scikit-learn only; it does not use TensorFlow.

Differences from the original (documented in the README):

* ``--sample-weights`` false crashed the original (``None`` was indexed, BUG); here it
  means unweighted fits and unweighted scores (run id ``..._sample_weights-False``).
* ``regularization_type='l2'`` (not reachable from the CLI, as in the original) fits
  ``l1_ratio=0``; phase 1 is then empty.
* Phase 1 cannot store scipy sparse matrices in a pickle-free result file, so instead of
  the pickled ``reduced_features`` / ``reduced_features_nonfires`` it records their
  shapes (``reduced_features_shapes`` (3, 2), ``reduced_features_nonfires_shape``),
  the selected columns (``reduced_feature_inds``) and the files written
  (``reduced_files``). The matrices themselves are in those files.
* Reduced-matrix files use the project's pickle-free CSR format (see
  :mod:`datasets.babble`), not the original's pickled object array ``reduced_x``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.babble import save_reduced_cdr_files
from datasets.common import DEFAULT_DATA_DIR
from datasets.loader import load_supplemental_info
from experiments.common import ConfigError, DatasetMixin, Experiment, phase
from experiments.execution import ExecutorMixin

logger = logging.getLogger(__name__)

DATASET_IDS = ("cdr",)
REGULARIZATION_TYPES = ("l1", "l2")
SPLIT_NAMES = ("train", "validation", "test")


def build_config(dataset_id: str = "cdr", data_dir: str | None = None, save_reduced_dir: str | None = None,
                 max_memory: int = int(1e9), fit_intercept: bool = True, sample_weights: bool = True,
                 regularization_type: str = "l1") -> dict[str, Any]:
    """The original's config dict. ``save_reduced_dir`` defaults to ``{data_dir}/babble``."""
    if dataset_id not in DATASET_IDS:
        raise ConfigError(f"--dataset-id must be one of {DATASET_IDS}; got {dataset_id!r} "
                          "(the original raised KeyError here)")
    if regularization_type not in REGULARIZATION_TYPES:
        raise ConfigError(f"regularization_type must be one of {REGULARIZATION_TYPES}; got {regularization_type!r}")
    if int(max_memory) != max_memory or max_memory < 1:
        raise ConfigError(f"--max-memory must be a positive integer number of bytes; got {max_memory!r}")
    if save_reduced_dir is None:
        save_reduced_dir = str(Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR) / "babble")
    return {
        "dataset_config": {"dataset_id": dataset_id, "center_data": False, "append_bias": False,
                           "data_dir": data_dir},
        "normalized_cross_validation_range": (1e-4, 1e-1, 10),  # unused, as in the original
        "initial_reg_range": (1e-4, 1e-1, 10),
        "max_memory": int(max_memory),
        "fit_intercept": bool(fit_intercept),
        "regularization_type": regularization_type,
        "sample_weights": bool(sample_weights),
        "save_reduced_dir": str(save_reduced_dir),
    }


def run_id_from_config(config: dict[str, Any]) -> str:
    return (f"{config['dataset_config']['dataset_id']}_regularization_type-{config['regularization_type']}"
            f"_sample_weights-{config['sample_weights']}")


def make_sklearn_model(reg: float, fit_intercept: bool = True, regularization_type: str = "l1",
                       random_state: np.random.RandomState | None = None):
    """The modern equivalent of the original's sklearn 0.20 L1 model.

    ``random_state`` defaults to a fresh ``RandomState(1)``. liblinear draws its seed from
    it at every ``fit``; the original shared one model (and so one ``RandomState(1)``)
    across the fits of its path, which :func:`path_random_states` reproduces per fit.
    """
    from sklearn.linear_model import LogisticRegression as SkLR
    return SkLR(l1_ratio=1.0 if regularization_type == "l1" else 0.0, solver="liblinear", C=1.0 / reg,
                fit_intercept=fit_intercept,
                random_state=np.random.RandomState(1) if random_state is None else random_state)


def path_random_states(num: int) -> list[tuple]:
    """The state of the original's shared ``RandomState(1)`` before each of ``num`` fits of the
    path: every liblinear fit draws one seed from it
    (``randint(np.iinfo('i').max)`` in scikit-learn's ``_fit_liblinear``), so fit i starts
    from the state after i draws. Lets each fit run on its own (on any worker) exactly as
    on the original's sequential path (tests/experiments/test_babble_reduce_dask.py checks
    the equality against that path)."""
    stream = np.random.RandomState(1)
    states = []
    for _ in range(int(num)):
        states.append(stream.get_state())
        stream.randint(np.iinfo("i").max)
    return states


@dataclass
class L1PathContext:
    """The data every fit of the path shares (scattered to the workers once): per split
    ``(x, labels)`` or None, per split the sample weights or None, and the model settings."""

    splits: list[tuple[Any, np.ndarray] | None]
    weights: list[np.ndarray | None]
    fit_intercept: bool
    regularization_type: str


def l1_fit_task(ctx: L1PathContext, spec: tuple[float, tuple]) -> dict[str, Any]:
    """One fit of the path for ``spec = (reg, random_state_state)`` on the train split, and
    its weighted accuracy and F1 on every split (NaN for an empty one); a pure task of
    :mod:`experiments.execution`."""
    from sklearn.metrics import f1_score

    reg, state = spec
    random_state = np.random.RandomState()
    random_state.set_state(state)
    model = make_sklearn_model(reg, ctx.fit_intercept, ctx.regularization_type, random_state=random_state)
    x, labels = ctx.splits[0]
    model.fit(x, labels, sample_weight=ctx.weights[0])
    coef = np.asarray(model.coef_[0], dtype=np.float64)
    intercept = float(model.intercept_[0]) if ctx.fit_intercept else 0.0
    accs, f1s = np.full(len(ctx.splits), np.nan), np.full(len(ctx.splits), np.nan)
    for s, split in enumerate(ctx.splits):
        if split is None or len(split[1]) == 0:
            continue
        accs[s] = model.score(split[0], split[1], sample_weight=ctx.weights[s])
        f1s[s] = f1_score(split[1], model.predict(split[0]), sample_weight=ctx.weights[s])
    return {"coef": coef, "intercept": intercept, "nonzeros": int(np.count_nonzero(coef) + (intercept != 0)),
            "accs": accs, "f1s": f1s}


class BabbleReduce(ExecutorMixin, DatasetMixin, Experiment):
    """L1 feature selection on ``cdr`` writing the ``reduced_cdr`` matrices."""

    experiment_id = "babble_reduce"

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        super().__init__(config, out_dir)
        self.progress = progress
        self._datasets = None
        self._weights = None
        self._nonfires = None
        np.random.seed(0)  # as the original's constructor (nothing here draws from it)

    @property
    def run_id(self) -> str:
        return run_id_from_config(self.config)

    @property
    def sample_weights(self) -> list[np.ndarray | None]:
        """Per split: the ``{dataset_id}_weights`` supplement, or ``None`` (unweighted)."""
        if self._weights is None:
            if self.config["sample_weights"]:
                ds_id = self.config["dataset_config"]["dataset_id"]
                self._weights = list(load_supplemental_info(ds_id + "_weights", data_dir=self.data_dir))
            else:
                # The original crashed here (it indexed None); unweighted instead.
                self._weights = [None, None, None]
        return self._weights

    @property
    def nonfires(self):
        if self._nonfires is None:
            ds_id = self.config["dataset_config"]["dataset_id"]
            self._nonfires = load_supplemental_info(ds_id + "_nonfires", data_dir=self.data_dir)
        return self._nonfires

    def run(self, force_refresh: bool = False, invalidate_phase: int | None = None,
            save_phase_results: bool = True) -> dict[str, Any]:
        """As :meth:`Experiment.run`; phase 1 is redone if its output files have disappeared."""
        out = Path(self.config["save_reduced_dir"])
        if (self.config["regularization_type"] != "l2"
                and not all((out / f).is_file() for f in ("reduced_cdr_x.npz", "reduced_cdr_nonfires_x.npz"))):
            invalidate_phase = 1 if invalidate_phase is None else min(invalidate_phase, 1)
        return super().run(force_refresh, invalidate_phase, save_phase_results)

    @phase(0)
    def try_regs(self):
        splits = list(self.datasets)
        n = splits[0].num_examples
        a, b, num = self.config["initial_reg_range"]
        regs = np.logspace(np.log10(a * n), np.log10(b * n), int(num))
        ctx = L1PathContext([None if ds is None else (ds.x, ds.labels) for ds in splits], list(self.sample_weights),
                            self.config["fit_intercept"], self.config["regularization_type"])
        # One task per regularisation strength, each with the random state its fit had on
        # the original's path (see path_random_states), so the fits can run anywhere.
        specs = list(zip(regs, path_random_states(len(regs))))
        outs = self.executor.map(l1_fit_task, ctx, specs, "L1 fits")
        coefs = np.stack([o["coef"] for o in outs]) if outs else np.zeros((0, splits[0].x.shape[1]))
        intercepts = np.array([o["intercept"] for o in outs], dtype=np.float64)
        nonzeros = np.array([o["nonzeros"] for o in outs], dtype=np.int64)
        accs = np.stack([o["accs"] for o in outs], axis=1)
        f1s = np.stack([o["f1s"] for o in outs], axis=1)
        for i, reg in enumerate(regs):
            logger.info("reg %.4g: %d nonzeros, validation F1 %.4f", reg, nonzeros[i], f1s[1, i])
        if np.all(np.isnan(f1s[1])):
            raise ValueError("the validation split is empty: cannot select the regularisation by validation F1")
        best_i = int(np.nanargmax(f1s[1]))  # first index on ties, as np.argmax
        feature_inds = np.flatnonzero(coefs[best_i])
        logger.info("best reg %.4g (index %d): %d of %d features kept", regs[best_i], best_i, len(feature_inds),
                    coefs.shape[1])
        return {"best_i": best_i, "feature_inds": feature_inds, "regs": regs, "accs": accs, "coefs": coefs,
                "intercepts": intercepts, "nonzeros": nonzeros, "f1s": f1s}

    @phase(1)
    def create_reduced_matrices(self):
        if self.config["regularization_type"] == "l2":
            return {}

        inds = np.asarray(self.R["feature_inds"], dtype=np.int64)
        if inds.size == 0:
            raise ValueError("the selected L1 fit has no non-zero coefficient: nothing to write")
        matrices = [ds.x.tocsr()[:, inds] for ds in self.datasets]
        nonfires = self.nonfires.x.tocsr()[:, inds]
        paths = save_reduced_cdr_files(self.config["save_reduced_dir"], matrices, nonfires, feature_inds=inds)
        return {"reduced_feature_inds": inds,
                "reduced_features_shapes": np.array([m.shape for m in matrices], dtype=np.int64),
                "reduced_features_nonfires_shape": np.array(nonfires.shape, dtype=np.int64),
                "reduced_files": [str(p) for p in paths]}

    def summary_keys(self) -> list[str]:
        return ["best_i", "feature_inds", "regs", "accs", "nonzeros", "f1s"]

