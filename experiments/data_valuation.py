"""``data_valuation``: influence of CDR labelling functions as data sources.

Data (docs/design.md, 'Datasets and preprocessing'): ``reduced_cdr`` train rows are (candidate, firing LF) pairs
labelled with that LF's vote; test rows are test candidates with gold labels; the
``nonfires`` are gold-labelled candidates no LF fired on. With ``--sample-weights``
(the paper run ``reduced_cdr_sample_weights-True``) each train row weighs
1/(#LFs that fired on its candidate) (``reduced_cdr_weights``), test rows 1.

Model: binary logistic regression with an intercept; objective
``sum_i s_i l_i + (lambda/2) ||w||^2`` (bias unregularised). Groups: one per
labelling function (``reduced_cdr_LFs``: LF id of each train row), ids 1..max, empty
ones skipped, all tagged ``same_features``; ``subset_LF_ids`` records each group's LF id.

Behaviour kept from the original on purpose (QUIRKs):

* **Test-set leakage in model selection** (phase 0): every fold model is also scored by
  the weighted F1 on the **test** set, and lambda is the argmax of the mean test F1
  (``cv_f1s``), not of the validation accuracy.
* **Weights not renormalised** (phase 6): without an LF, the other rows of the same
  candidates keep their 1/#LF weights.
* Phase 8's ``subset_all_train_actl...`` sums over all train rows, including the removed
  ones.

Differences (README): fits and refits are certified Newton solves (refits warm-started
at theta_hat through :func:`influence.refit.refit_chunk`); phase 1 adds
``initial_params``, ``initial_fit_grad_norm``, ``initial_fit_iters``,
``initial_test_f1``; phase 6 adds ``subset_refit_grad_norm``, ``subset_refit_grad_tol``,
``subset_refit_iters``, ``subset_refit_converged``, ``subset_refit_params``. Phase 2
raises a clear error if the data has fewer test points than the frozen indices need
(the original would crash later). The unseeded ``np.random.choice`` of ``plot_all`` uses
``RandomState(0)``.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from datasets.common import DataSet, Datasets
from datasets.loader import load_supplemental_info
from experiments import tasks
from experiments.app_common import ConfigError, check_cv_range, check_folds, check_positive_int
from experiments.common import DatasetMixin, phase
from experiments.influence_base import InfluenceExperiment, contiguous_folds, cv_regs
from experiments.plot import get_simple_subset_tags, plot_influence_correlation
from influence import group_influence as gi
from influence.numerics import densify

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- data valuation
DATASET_IDS = ("reduced_cdr",)
FIXED_TEST = [1502, 1021, 3778, 830, 3894, 3149]
FIXED_TEST_BALANCED = [898, 293, 14, 1139, 1783, 1100]
PLOT_SEED = 0
# The 26 actual/predicted keys of phase 8 (13 for the loss, 13 for the margin).
ACTL_PRED_KEYS = [f"subset_{t}_{kind}{suffix}"
                  for suffix in ("_infl", "_margin_infl")
                  for t in ("fixed_test", "pos_test", "neg_test", "all_test", "all_train", "nonfires", "self")
                  for kind in ("actl", "pred")]
ACTL_PRED_KEYS.remove("subset_self_pred_infl")
ACTL_PRED_KEYS.remove("subset_self_pred_margin_infl")


def build_config(dataset_id: str = "reduced_cdr", data_dir: str | None = None, max_memory: int = int(1e9),
                 sample_weights: bool = False, balance_test: bool | None = None,
                 cross_validation_range=(1e-4, 1e-1, 10), cross_validation_folds: int = 5) -> dict[str, Any]:
    """The original's config dict (``cross_validation_*`` may be narrowed for quick runs)."""
    if dataset_id not in DATASET_IDS:
        raise ConfigError(f"--dataset-id must be one of {DATASET_IDS}; got {dataset_id!r}")
    check_positive_int("--max-memory", max_memory)
    config = {
        "dataset_config": {"dataset_id": dataset_id, "center_data": False, "append_bias": False,
                           "data_dir": data_dir},
        "cross_validation_folds": check_folds(cross_validation_folds),
        "normalized_cross_validation_range": check_cv_range(cross_validation_range),
        "max_memory": int(max_memory),
        "sample_weights": bool(sample_weights),
    }
    if balance_test is not None:
        config["balance_test"] = bool(balance_test)
    return config


def weighted_f1(x, labels, weights, model) -> float:
    """Weighted F1 of ``model``'s predictions (P(y=1) > 0.5) on ``(x, labels)``."""
    from sklearn.metrics import f1_score

    pred = (model.get_predictions(x)[:, 1] > 0.5).astype(np.int64)
    return f1_score(labels, pred, sample_weight=weights)


def run_id_from_config(config: dict[str, Any]) -> str:
    return f"{config['dataset_config']['dataset_id']}_sample_weights-{config['sample_weights']}"


class DataValuation(DatasetMixin, InfluenceExperiment):
    """Group influence of labelling functions on test, train, self and nonfire losses and margins."""

    experiment_id = "data_valuation"
    # Class defaults, so that instances made by ``load_run`` (no __init__) can plot.
    _datasets = _weights = _nonfires = None

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        super().__init__(config, out_dir, progress)
        self._datasets = self._weights = self._nonfires = None

    # ------------------------------------------------------------------ setup
    @property
    def run_id(self) -> str:
        return run_id_from_config(self.config)

    def _supplement(self, suffix: str):
        return load_supplemental_info(self.config["dataset_config"]["dataset_id"] + suffix, data_dir=self.data_dir)

    def load_datasets(self):
        # float 0./1. labels -> int64 (the model wants integer classes)
        return Datasets(*(DataSet(densify(d.x), d.labels.astype(np.int64)) for d in super().load_datasets()))

    @property
    def nonfires(self):
        if self._nonfires is None:
            nf = self._supplement("_nonfires")
            self._nonfires = DataSet(densify(nf.x), nf.labels.astype(np.int64))
        return self._nonfires

    @property
    def weights(self) -> list[np.ndarray]:
        """[train, validation, test] sample weights (ones without ``sample_weights``)."""
        if self._weights is None:
            if self.config["sample_weights"]:
                w = [np.asarray(a, dtype=np.float64) for a in self._supplement("_weights")]
                for name, arr, ds in zip(("train", "validation", "test"), w, self.datasets):
                    if len(arr) != ds.num_examples:
                        raise ValueError(f"{name} weights have {len(arr)} entries for {ds.num_examples} rows")
            else:
                w = [np.ones(d.num_examples) for d in self.datasets]
            self._weights = w
        return self._weights

    def model_arch(self) -> dict[str, Any]:
        return {"input_dim": int(self.train.x.shape[1]), "fit_intercept": True, "num_classes": 2}

    def model_random_state(self):
        return np.random.RandomState(2)

    def train_sample_weights(self) -> np.ndarray:
        return self.weights[0]

    def inverse_methods(self) -> tuple[str, str]:
        return ("explicit", "cholesky_lu")

    # ------------------------------------------------------------------ phases
    @phase(0)
    def cross_validation(self):
        X, y, w = self.train.x, self.train.labels, self.weights[0]
        n = len(y)
        regs = cv_regs(n, self.config["normalized_cross_validation_range"])
        folds = contiguous_folds(n, self.config["cross_validation_folds"])

        # QUIRK kept (test leakage): the fold model is scored on the TEST set. A partial of
        # a module-level function, so that the fits can run on Dask workers.
        test_f1 = functools.partial(weighted_f1, self.test.x, self.test.labels, self.weights[2])
        cv = self.cross_validate(X, y, regs, folds, weights=w, score=test_f1)
        cv_f1s = cv["cv_scores"]
        best = int(np.argmax(cv_f1s))
        logger.info("cross-validation: l2_reg %.4g (mean test F1 %.4f)", regs[best], cv_f1s[best])
        return {"cv_regs": regs, "cv_errors": cv["cv_errors"], "cv_accs": cv["cv_accs"],
                "cv_l2_reg": float(regs[best]), "cv_f1s": cv_f1s}

    @phase(1)
    def initial_training(self):
        model = self.get_model()
        fit = model.fit(self.train, self.weights[0], self.R["cv_l2_reg"])
        model.save("initial")
        res = {}
        for name, ds in (("train", self.train), ("test", self.test), ("nonfires", self.nonfires)):
            res[f"initial_{name}_losses"] = model.get_indiv_loss(ds)
            res[f"initial_{name}_margins"] = model.get_indiv_margin(ds)
        res["train_grad_loss"] = model.get_indiv_grad_loss(self.train)
        res["initial_params"] = model.get_params_flat()
        res["initial_fit_grad_norm"] = fit.grad_norm
        res["initial_fit_iters"] = fit.iterations
        res["initial_test_f1"] = float(weighted_f1(self.test.x, self.test.labels, self.weights[2], model))
        print(f"Test F1: {res['initial_test_f1']}")
        return res

    @phase(2)
    def pick_test_points(self):
        fixed = FIXED_TEST_BALANCED if self.config.get("balance_test") else FIXED_TEST
        n_t = self.test.num_examples
        if max(fixed) >= n_t:
            raise ValueError(f"the fixed test points {fixed} need at least {max(fixed) + 1} test "
                             f"points; this test set has {n_t}: is it the real reduced_cdr data?")
        return {"fixed_test": np.array(fixed, dtype=np.int64)}

    @phase(3)
    def hessian(self):
        model = self.model_at_theta_hat()
        return {"hessian": model.get_hessian(self.train, self.weights[0], self.R["cv_l2_reg"])}

    @phase(4)
    def all_and_fixed_test_and_nonfire_influence(self):
        model = self.model_at_theta_hat()
        G = np.asarray(self.R["train_grad_loss"])
        test, wt, w_tr = self.test, self.weights[2], self.weights[0]
        fixed = np.asarray(self.R["fixed_test"])
        Gt, Gmt = model.get_indiv_grad_loss(test), model.get_indiv_grad_margin(test)
        Gm = model.get_indiv_grad_margin(self.train)
        pos, neg = test.labels == 1, test.labels == 0
        wsum = gi.weighted_gradient_sum
        targets = {  # name -> (loss target (m, d), margin target (m, d))
            "fixed_test": (Gt[fixed], Gmt[fixed]),
            "all_test": (wsum(Gt, wt)[None], wsum(Gmt, wt)[None]),
            "pos_test": (wsum(Gt, wt, pos)[None], wsum(Gmt, wt, pos)[None]),
            "neg_test": (wsum(Gt, wt, neg)[None], wsum(Gmt, wt, neg)[None]),
            "all_train": (wsum(G, w_tr)[None], wsum(Gm, w_tr)[None]),
            "nonfires": (model.get_indiv_grad_loss(self.nonfires), model.get_indiv_grad_margin(self.nonfires)),
        }
        names = list(targets)
        blocks = [targets[k][j] for k in names for j in (0, 1)]
        # (m, N_train), one solve for every target: pred[i] = grad l_i^T H^-1 g_target
        P = self.influence().first_order_influence(G, np.concatenate(blocks, axis=0)).T
        res, start = {}, 0
        for k in names:
            for j, suffix in enumerate(("_pred_infl", "_pred_margin_infl")):
                m = targets[k][j].shape[0]
                block = P[start:start + m]
                start += m
                res[k + suffix] = block if k in ("fixed_test", "nonfires") else block[0]
        res["nonfires_predictions"] = model.get_predictions(self.nonfires.x)
        return res

    @phase(5)
    def pick_subsets(self):
        lf_ids = np.asarray(self._supplement("_LFs")[0], dtype=np.int64)
        if len(lf_ids) != self.train.num_examples:
            raise ValueError(f"{len(lf_ids)} LF ids for {self.train.num_examples} train rows")
        tags, subsets, ids = [], [], []
        if not self.config["dataset_config"]["center_data"]:
            for lf in range(1, int(lf_ids.max()) + 1):
                idx = np.flatnonzero(lf_ids == lf)
                if len(idx) == 0:
                    continue
                print(f"LF {lf} covers {len(idx)} examples")
                tags.append("same_features")
                subsets.append(idx)
                ids.append(lf)
        return {"subset_tags": tags, "subset_indices": subsets, "subset_LF_ids": np.array(ids, dtype=np.int64)}

    @phase(6)
    def retrain(self):
        infl = self.influence()
        groups = self.subsets
        # QUIRK kept: the group's rows get weight 0, the other rows keep 1/#LF (not renormalised).
        r = tasks.refit_groups(self.executor, infl, groups, self.refit_chunk_size(), method="explicit")
        res = {"subset_refit_params": r.thetas, "subset_refit_grad_norm": r.grad_norms,
               "subset_refit_grad_tol": r.grad_tols, "subset_refit_iters": r.iterations,
               "subset_refit_converged": r.converged}
        for name, ds in (("train", self.train), ("test", self.test), ("nonfires", self.nonfires)):
            res[f"subset_{name}_losses"] = infl.evaluate(r.thetas, ds, "loss")
            res[f"subset_{name}_margins"] = infl.evaluate(r.thetas, ds, "margin")
        return res

    @phase(7)
    def compute_self_pred_infl(self):
        model = self.model_at_theta_hat()
        s = self.weights[0]
        groups = self.subsets
        G_S = gi.group_gradient_sums(groups, np.asarray(self.R["train_grad_loss"]), s)
        Gm_S = gi.group_gradient_sums(groups, model.get_indiv_grad_margin(self.train), s)
        P = self.influence().first_order_dparams(G_S)
        return {"subset_pred_dparam": P, "subset_self_pred_infl": gi.self_influence(G_S, P),
                "subset_self_pred_margin_infl": gi.self_influence(Gm_S, P)}

    @phase(8)
    def compute_actl_infl(self):
        groups = self.subsets
        s, wt = self.weights[0], self.weights[2]
        fixed = np.asarray(self.R["fixed_test"])
        pos, neg = self.test.labels == 1, self.test.labels == 0
        res = {}
        for plural, suffix, pred_suffix in (("losses", "_infl", "_pred_infl"),
                                            ("margins", "_margin_infl", "_pred_margin_infl")):
            d_test = gi.change(self.R[f"subset_test_{plural}"], self.R[f"initial_test_{plural}"])
            after_train = np.asarray(self.R[f"subset_train_{plural}"])
            d_train = gi.change(after_train, self.R[f"initial_train_{plural}"])
            d_nf = gi.change(self.R[f"subset_nonfires_{plural}"], self.R[f"initial_nonfires_{plural}"])
            res[f"subset_fixed_test_actl{suffix}"] = d_test[:, fixed]
            res[f"subset_fixed_test_pred{suffix}"] = gi.point_influence_group_sums(
                groups, np.asarray(self.R["fixed_test" + pred_suffix]), s)
            for name, mask in (("pos", pos), ("neg", neg), ("all", np.ones_like(pos))):
                res[f"subset_{name}_test_actl{suffix}"] = gi.weighted_sums(d_test, wt, mask)
                res[f"subset_{name}_test_pred{suffix}"] = gi.point_influence_group_sums(
                    groups, np.asarray(self.R[f"{name}_test{pred_suffix}"]), s)
            # QUIRK kept: over all train rows, including the removed ones.
            res[f"subset_all_train_actl{suffix}"] = gi.weighted_sums(d_train, s)
            res[f"subset_all_train_pred{suffix}"] = gi.point_influence_group_sums(
                groups, np.asarray(self.R["all_train" + pred_suffix]), s)
            res[f"subset_nonfires_actl{suffix}"] = d_nf
            res[f"subset_nonfires_pred{suffix}"] = gi.point_influence_group_sums(
                groups, np.asarray(self.R["nonfires" + pred_suffix]), s)
            res[f"subset_self_actl{suffix}"] = gi.self_actual([after_train[k, g] for k, g in enumerate(groups)],
                                                              self.R[f"initial_train_{plural}"], groups, s)
        return res

    # ------------------------------------------------------------------ plots (not a phase)
    def plot_all(self, num_nonfires: int = 15, save_and_close: bool = True) -> list[Path]:
        """The original's ``plot_all``; the script does not call it."""
        import matplotlib.pyplot as plt


        base = self.base_dir / "plots"
        base.mkdir(parents=True, exist_ok=True)
        R = self.R
        rng = np.random.RandomState(PLOT_SEED)  # the original drew unseeded, with replacement
        nf = rng.choice(len(R["initial_nonfires_losses"]), num_nonfires, replace=True)
        written = []
        subtitle = self.config["dataset_config"]["dataset_id"]
        for q, suffix in (("loss", "_infl"), ("margin", "_margin_infl")):
            figs = [("self-influence", R[f"subset_self_actl{suffix}"], R[f"subset_self_pred{suffix}"])]
            for j, idx in enumerate(R["fixed_test"]):
                figs.append((f"fixed-test-{idx}", R[f"subset_fixed_test_actl{suffix}"][:, j],
                             R[f"subset_fixed_test_pred{suffix}"][:, j]))
            for i in nf:
                figs.append((f"nonfires-{i}", R[f"subset_nonfires_actl{suffix}"][:, i],
                             R[f"subset_nonfires_pred{suffix}"][:, i]))
            for name in ("pos-test", "neg-test", "all-test", "all-train"):
                key = name.replace("-", "_")
                figs.append((name, R[f"subset_{key}_actl{suffix}"], R[f"subset_{key}_pred{suffix}"]))
            act, pred = R[f"subset_nonfires_actl{suffix}"], R[f"subset_nonfires_pred{suffix}"]
            lab = self.nonfires.labels
            for name, mask in (("avg-pos-nonfires", lab == 1), ("avg-neg-nonfires", lab == 0),
                               ("avg-nonfires", np.ones(len(lab), dtype=bool))):
                if mask.any():
                    figs.append((name, act[:, mask].mean(axis=1), pred[:, mask].mean(axis=1)))
            for same_features_only in (True, False):
                if same_features_only:
                    labels = [f"Data source {k}" for k in range(len(R["subset_tags"]))]
                else:
                    labels = get_simple_subset_tags(R["subset_tags"])
                for fig_name, x, y in figs:
                    fig, ax = plt.subplots(figsize=(6, 6))
                    plot_influence_correlation(ax, x, y, label=labels, title=f"Group influence on {fig_name}",
                                               subtitle=subtitle)
                    path = base / f"{fig_name}_{q}{'-same-features-only' if same_features_only else ''}.png"
                    fig.savefig(path)
                    written.append(path)
                    if save_and_close:
                        plt.close(fig)
        return written
