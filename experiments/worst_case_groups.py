"""``worst_case_groups``: how few training points must be removed to flip a result.

For a dataset of the suite (or a ``--dataset-file``), fitted as ``ss_logreg`` fits it
(the same phases 0-3: cross-validated regularisation, certified fit, fixed test points,
Hessian), every target is searched with every method of :mod:`influence.worst_case`
(``first_order``, ``rescaled``, ``newton``, ``adaptive``), each answer verified by
certified refits. Targets (config ``targets``, a list of dicts):

* ``{"kind": "prediction", "test_index": i}``: the prediction at test point i (binary: the
  sign of its logit; multiclass: its class); ``"test_index": null`` stands for the run's
  six fixed test points (phase 2, the default);
* ``{"kind": "coefficient", "feature": j, "class": c}``: the sign of a weight (``class``
  null for binary models, required for multiclass ones);
* ``{"kind": "loss", "test_index": i or null, "amount": a, "direction": "increase" |
  "decrease"}``: test point i's loss (null: the mean test loss) moved by more than a.

Phases: 0-3 those of ``ss_logreg`` (same names and keys), 4 ``worst_case`` (one task per
target on the run's executor: in this process, or on Dask with ``--workers`` /
``--scheduler-address``; each task runs every method on its target). Files in
``{out_dir}/worst_case_groups/{run_id}/``: the phase files (or ``result_summary.npz``),
``worst_case.csv`` (one row per target and method), ``verified_sets.npz`` (the verified
removal sets, key ``t{target}_{method}``) and ``worst_case.png`` (:func:`plot_worst_case`).

Result keys of phase 4 (T targets): ``target_names`` (T,), ``target_components`` (T,),
``target_initial_gap`` (T,), ``num_train``, ``max_k``, ``adaptive_batch``; per method m:
``{m}_predicted_k``, ``{m}_verified_k``, ``{m}_refits`` (T,) int, ``{m}_seconds``,
``{m}_max_grad_ratio`` (T,) float, ``{m}_component`` and ``{m}_outcome`` (T,) str
(:data:`influence.worst_case.OUTCOMES`), ``{m}_verified_sets``,
``{m}_order``, ``{m}_path_k``, ``{m}_path_predicted``, ``{m}_path_actual`` (ragged, one
array per target). -1 in a ``_k`` key: none within ``max_fraction`` of the training set.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets import storage
from experiments import tasks
from experiments.common import ConfigError, DatasetMixin, phase, py2_float_str
from experiments.estimator_ladder import write_csv
from experiments.influence_base import InfluenceExperiment
from experiments.subset_influence import (
    DATASET_TABLE,
    FILE_DATASET_SETTINGS,
    SubsetInfluenceLogreg,
    file_dataset_config,
)
from influence import worst_case as wc
from influence.numerics import densify

logger = logging.getLogger(__name__)

CSV_FILE = "worst_case.csv"
SETS_FILE = "verified_sets.npz"
FIGURE_FILE = "worst_case.png"
CSV_COLUMNS = ("dataset", "run_id", "target", "component", "method", "predicted_k", "verified_k", "fraction",
               "outcome", "refits", "seconds", "max_grad_ratio")
TARGET_KINDS = ("prediction", "coefficient", "loss")
# Run ids name the targets when this short; longer target lists are named by a digest.
MAX_TARGET_ID = 80


# ----------------------------------------------------------------------------- config
def build_config(dataset_id: str | None = None, data_dir: str | None = None, dataset_file: str | None = None,
                 targets: list[dict[str, Any]] | None = None, methods=wc.METHODS,
                 max_fraction: float = wc.DEFAULT_MAX_FRACTION, adaptive_batch: int | None = None,
                 search_width: int = wc.DEFAULT_SEARCH_WIDTH, fixed_reg: float | None = None,
                 inverse_vp_method: str | None = None, max_memory: int = int(1e9), tag: str | None = None,
                 spam_vocab_filter: str | None = None, master_only: bool = False) -> dict[str, Any]:
    """The experiment's config; every rule that needs no data is checked here
    (:class:`ConfigError`), the rest (test indices, features, classes) by
    :meth:`WorstCaseGroups.check_inputs` before the run folder is created.

    ``targets`` default: the predictions at the six fixed test points.
    """
    if dataset_file is not None and dataset_id is not None:
        raise ConfigError(f"give --dataset-id or --dataset-file, not both; got --dataset-id {dataset_id!r} "
                          f"and --dataset-file {str(dataset_file)!r}")
    if dataset_file is not None:
        dataset_config = file_dataset_config(dataset_file, data_dir)
        method, cv_range = FILE_DATASET_SETTINGS
    else:
        dataset_id = "hospital" if dataset_id is None else dataset_id
        if dataset_id not in DATASET_TABLE:
            raise ConfigError(f"--dataset-id must be one of {sorted(DATASET_TABLE)}; got {dataset_id!r}")
        method, cv_range = DATASET_TABLE[dataset_id]
        dataset_config = {"dataset_id": dataset_id, "center_data": False, "append_bias": False, "data_dir": data_dir}
        if method != "explicit":
            raise ConfigError(f"worst_case_groups needs explicit Hessians (re-scoring and group Newton steps); "
                              f"--dataset-id {dataset_id} is a cg dataset")
    if spam_vocab_filter is not None:
        if dataset_config["dataset_id"] != "spam":
            raise ConfigError(f"--spam-vocab-filter applies to --dataset-id spam only; got "
                              f"{dataset_config['dataset_id']!r}")
        if spam_vocab_filter != "lexeme_prob":
            dataset_config["vocab_filter"] = spam_vocab_filter
    if not (isinstance(max_fraction, (int, float)) and 0 < max_fraction < 1):
        raise ConfigError(f"--max-fraction must be in (0, 1) (a fraction of the training set); got {max_fraction!r}")
    if adaptive_batch is not None and (int(adaptive_batch) != adaptive_batch or adaptive_batch < 1):
        raise ConfigError(f"--adaptive-batch must be a positive integer; got {adaptive_batch!r}")
    if int(search_width) != search_width or search_width < 1:
        raise ConfigError(f"--search-width must be a positive integer; got {search_width!r}")
    methods = list(methods)
    if not methods or any(m not in wc.METHODS for m in methods) or len(set(methods)) != len(methods):
        raise ConfigError(f"--methods must be distinct names among {wc.METHODS}; got {methods!r}")
    if fixed_reg is not None and not (fixed_reg > 0 and math.isfinite(fixed_reg)):
        raise ConfigError(f"--fixed-reg must be a positive number; got {fixed_reg!r}")
    if inverse_vp_method is not None and inverse_vp_method not in ("cholesky", "lu", "cholesky_lu"):
        raise ConfigError(f"--inverse-vp-method must be one of cholesky, lu, cholesky_lu; got {inverse_vp_method!r}")
    if int(max_memory) != max_memory or max_memory < 1:
        raise ConfigError(f"--max-memory must be a positive integer number of bytes; got {max_memory!r}")
    if tag is not None and (not tag or any(c in tag for c in "/\\\0") or tag in (".", "..")):
        raise ConfigError(f"--tag becomes part of the run folder's name: non-empty, without '/', '\\' or NUL; "
                          f"got {tag!r}")
    targets = [{"kind": "prediction", "test_index": None}] if targets is None else [dict(t) for t in targets]
    if not targets:
        raise ConfigError("no targets: give --test-points, --coefficient or --loss-change")
    for t in targets:
        check_target(t)
    return {"dataset_config": dataset_config,
            "normalized_cross_validation_range": (fixed_reg, fixed_reg, 1) if fixed_reg is not None else cv_range,
            "cross_validation_folds": 5, "inverse_hvp_method": "explicit",
            "inverse_vp_method": inverse_vp_method or "cholesky_lu", "max_memory": int(max_memory),
            "dtype": "float64", "tag": tag, "targets": targets, "methods": methods,
            "max_fraction": float(max_fraction), "adaptive_batch": None if adaptive_batch is None else int(adaptive_batch),
            "search_width": int(search_width), "master_only": bool(master_only)}


def check_target(t: dict[str, Any]) -> None:
    """The rules of one target dict that need no data (:class:`ConfigError`)."""
    kind = t.get("kind")
    if kind not in TARGET_KINDS:
        raise ConfigError(f"target kind must be one of {TARGET_KINDS}; got {kind!r}")
    idx = t.get("test_index")
    if idx is not None and (int(idx) != idx or idx < 0):
        raise ConfigError(f"a test index must be an integer >= 0; got {idx!r}")
    if kind == "coefficient":
        if int(t.get("feature", -1)) != t.get("feature") or t["feature"] < 0:
            raise ConfigError(f"--coefficient: the feature must be an integer >= 0; got {t.get('feature')!r}")
        cls = t.get("class")
        if cls is not None and (int(cls) != cls or cls < 0):
            raise ConfigError(f"--coefficient: the class must be an integer >= 0; got {cls!r}")
    if kind == "loss":
        if t.get("direction") not in wc.DIRECTIONS:
            raise ConfigError(f"--loss-change: the direction must be one of {tuple(wc.DIRECTIONS)}; "
                              f"got {t.get('direction')!r}")
        a = t.get("amount")
        if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0):
            raise ConfigError(f"--loss-change: the amount must be a number > 0; got {a!r}")


def target_id(t: dict[str, Any]) -> str:
    """A short name of a target dict for run ids: ``pred-fixed``, ``pred-12``, ``coef-3``,
    ``coef-3-c2``, ``loss-mean-inc-0.5``, ``loss-12-dec-0.1``."""
    idx = t.get("test_index")
    if t["kind"] == "prediction":
        return f"pred-{'fixed' if idx is None else idx}"
    if t["kind"] == "coefficient":
        return f"coef-{t['feature']}" + ("" if t.get("class") is None else f"-c{t['class']}")
    return f"loss-{'mean' if idx is None else idx}-{t['direction'][:3]}-{py2_float_str(t['amount'])}"


def run_id_from_config(config: dict[str, Any]) -> str:
    """``{dataset}_{targets}_frac-{max_fraction}_batch-{b|auto}[_methods-...][_width-w][_reg-r][_{tag}]``."""
    c = config
    names = "_".join(target_id(t) for t in c["targets"])
    if len(names) > MAX_TARGET_ID:
        names = "targets-" + hashlib.sha256(json.dumps(c["targets"], sort_keys=True).encode()).hexdigest()[:12]
    rid = (f"{c['dataset_config']['dataset_id']}_{names}_frac-{py2_float_str(c['max_fraction'])}"
           f"_batch-{'auto' if c['adaptive_batch'] is None else c['adaptive_batch']}")
    if list(c["methods"]) != list(wc.METHODS):
        rid += "_methods-" + "-".join(c["methods"])
    if c["search_width"] != wc.DEFAULT_SEARCH_WIDTH:
        rid += f"_width-{c['search_width']}"
    lo, hi, num = c["normalized_cross_validation_range"]
    if num == 1 and lo == hi:
        rid += f"_reg-{py2_float_str(lo)}"
    if "vocab_filter" in c["dataset_config"]:
        rid += f"_vocab-{c['dataset_config']['vocab_filter']}"
    if c.get("tag"):
        rid += f"_{c['tag']}"
    return rid


# ----------------------------------------------------------------------------- tasks
@dataclass
class WorstCaseContext:
    """What every target task shares (picklable): the group-influence context of the run
    (:class:`experiments.tasks.InfluenceContext`), the targets and the search settings.
    :meth:`search` builds the :class:`influence.worst_case.FlipSearch` once per process."""

    influence: tasks.InfluenceContext
    targets: list
    max_fraction: float
    batch: int | None
    width: int
    methods: tuple
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["cache"] = {}
        return state

    def search(self) -> wc.FlipSearch:
        if "search" not in self.cache:
            self.cache["search"] = wc.FlipSearch(self.influence.influence(), self.max_fraction, self.batch, self.width)
        return self.cache["search"]


def worst_case_task(ctx: WorstCaseContext, index: int) -> wc.WorstCaseResult:
    """Every method on target ``index`` (:meth:`influence.worst_case.FlipSearch.run`)."""
    return ctx.search().run(ctx.targets[index], ctx.methods)


# ----------------------------------------------------------------------------- the experiment
class FitPhases(SubsetInfluenceLogreg):
    """``ss_logreg``'s fitting phases run for another experiment (``owner``): its config,
    data, executor and result dict, so their keys and meanings are those of ``ss_logreg``."""

    def __init__(self, owner: WorstCaseGroups):
        super().__init__(owner.config, out_dir=owner.out_dir, progress=owner.progress)
        self.owner = owner
        self.R = owner.R
        self.executor = owner.executor

    @property
    def datasets(self):
        return self.owner.datasets


class WorstCaseGroups(DatasetMixin, InfluenceExperiment):
    """The smallest removal sets that flip each target, by every method, verified."""

    experiment_id = "worst_case_groups"

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        super().__init__(config, out_dir, progress)
        self._datasets = None
        self._fit = None

    @property
    def run_id(self) -> str:
        return run_id_from_config(self.config)

    @property
    def fit(self) -> FitPhases:
        """``ss_logreg``'s phases 0-3 on this run's data and results (the same dict ``R``)."""
        if self._fit is None:
            self._fit = FitPhases(self)
        return self._fit

    def check_inputs(self) -> None:
        """Load the data, then check every target against it: test indices, features and
        classes in range (:class:`ConfigError`, before the run folder exists)."""
        super().check_inputs()
        n_test, D = self.test.num_examples, self.train.x.shape[1]
        K = len(np.unique(self.train.labels))
        for t in self.config["targets"]:
            idx = t.get("test_index")
            if idx is not None and idx >= n_test:
                raise ConfigError(f"test index {idx} is out of range: {self.dataset_id} has {n_test} test points "
                                  f"(indices 0..{n_test - 1})")
            if t["kind"] == "coefficient":
                if t["feature"] >= D:
                    raise ConfigError(f"--coefficient {t['feature']} is out of range: {self.dataset_id} has {D} "
                                      f"features (0..{D - 1})")
                cls = t.get("class")
                if K == 2 and cls not in (None, 0):
                    raise ConfigError(f"--coefficient {t['feature']} {cls}: {self.dataset_id} is binary (one weight "
                                      "row); give no class")
                if K > 2 and (cls is None or cls >= K):
                    raise ConfigError(f"--coefficient {t['feature']}: {self.dataset_id} has {K} classes; name the "
                                      f"class too (--coefficient {t['feature']} C with C in 0..{K - 1}); got "
                                      f"{cls!r}")

    # ------------------------------------------------------------------ phases (0-3: ss_logreg's)
    @phase(0)
    def cross_validation(self):
        return self.fit.cross_validation()

    @phase(1)
    def initial_training(self):
        return self.fit.initial_training()

    @phase(2)
    def pick_test_points(self):
        return self.fit.pick_test_points()

    @phase(3)
    def hessian(self):
        return self.fit.hessian()

    def target_specs(self) -> tuple[list[str], list]:
        """``(names, specs)``: the config's targets resolved on the data (fixed test points
        expanded) as :mod:`influence.worst_case` target objects."""
        names, specs = [], []
        X_test, y_test = self.test.x, self.test.labels
        for t in self.config["targets"]:
            idx = t.get("test_index")
            points = [int(i) for i in self.R["fixed_test"]] if idx is None else [int(idx)]
            if t["kind"] == "prediction":
                for i in points:
                    names.append(f"prediction test {i}")
                    specs.append(wc.PredictionFlip(densify(X_test[i:i + 1]).astype(np.float64, copy=False)[0], name=names[-1]))
            elif t["kind"] == "coefficient":
                cls = t.get("class")
                names.append(f"coefficient {t['feature']}" + ("" if cls is None else f" class {cls}"))
                specs.append(wc.CoefficientSign(int(t["feature"]), cls, name=names[-1]))
            else:
                sign = "+" if t["direction"] == "increase" else "-"
                if idx is None:
                    names.append(f"mean test loss {sign}{py2_float_str(t['amount'])}")
                    Xs, ys = densify(X_test).astype(np.float64, copy=False), np.asarray(y_test)
                else:
                    names.append(f"loss test {idx} {sign}{py2_float_str(t['amount'])}")
                    Xs, ys = densify(X_test[idx:idx + 1]).astype(np.float64, copy=False), np.asarray(y_test[idx:idx + 1])
                specs.append(wc.LossChange(Xs, ys.astype(np.int64), float(t["amount"]), t["direction"], name=names[-1]))
        return names, specs

    @phase(4, deps=(1, 2, 3))
    def worst_case(self):
        names, specs = self.target_specs()
        infl = self.influence()
        ctx = WorstCaseContext(tasks.InfluenceContext.from_influence(infl, progress=False), specs,
                               self.config["max_fraction"], self.config["adaptive_batch"],
                               self.config["search_width"], tuple(self.config["methods"]))
        results = self.executor.map(worst_case_task, self.executor.scatter(ctx), list(range(len(specs))),
                                    "worst-case targets")
        search = wc.FlipSearch(infl, self.config["max_fraction"], self.config["adaptive_batch"],
                               self.config["search_width"])
        res: dict[str, Any] = {"target_names": names, "target_initial_gap": np.array([r.initial_gap for r in results]),
                               "num_train": int(self.num_train), "max_k": int(search.max_k),
                               "adaptive_batch": int(search.batch)}
        for m in self.config["methods"]:
            rs = [r.methods[m] for r in results]
            res[f"{m}_predicted_k"] = np.array([r.predicted_k for r in rs], dtype=np.int64)
            res[f"{m}_verified_k"] = np.array([r.verified_k for r in rs], dtype=np.int64)
            res[f"{m}_refits"] = np.array([r.refits for r in rs], dtype=np.int64)
            res[f"{m}_seconds"] = np.array([r.seconds for r in rs])
            res[f"{m}_max_grad_ratio"] = np.array([r.max_grad_ratio for r in rs])
            res[f"{m}_component"] = [r.component for r in rs]
            res[f"{m}_outcome"] = [r.outcome for r in rs]
            for key in ("verified_set", "order", "path_k", "path_predicted", "path_actual"):
                res[f"{m}_{key}s" if key == "verified_set" else f"{m}_{key}"] = [np.asarray(getattr(r, key))
                                                                                 for r in rs]
        return res

    # ------------------------------------------------------------------ outputs
    def table(self) -> dict[str, np.ndarray]:
        """The CSV's columns (:data:`CSV_COLUMNS`), one row per target and method."""
        R, rows = self.R, []
        n = int(R["num_train"])
        for j, name in enumerate(R["target_names"]):
            for m in self.config["methods"]:
                k = int(R[f"{m}_verified_k"][j])
                rows.append((self.dataset_id, self.run_id, name, R[f"{m}_component"][j], m,
                             int(R[f"{m}_predicted_k"][j]), k, k / n if k > 0 else float("nan"),
                             R[f"{m}_outcome"][j], int(R[f"{m}_refits"][j]), float(R[f"{m}_seconds"][j]),
                             float(R[f"{m}_max_grad_ratio"][j])))
        return {c: np.array([r[i] for r in rows], dtype=object) for i, c in enumerate(CSV_COLUMNS)}

    def write_outputs(self) -> tuple[Path, Path]:
        """``worst_case.csv`` and ``verified_sets.npz`` in the run folder (each atomically)."""
        cols = self.table()
        csv_path = self.base_dir / CSV_FILE
        write_csv(csv_path, CSV_COLUMNS, [cols[c] for c in CSV_COLUMNS])
        sets = {f"t{j}_{m}": np.asarray(self.R[f"{m}_verified_sets"][j], dtype=np.int64)
                for j in range(len(self.R["target_names"])) for m in self.config["methods"]}
        sets_path = self.base_dir / SETS_FILE
        storage.save_arrays(sets_path, target_names=np.array(self.R["target_names"]), **sets)
        return csv_path, sets_path

    def plot(self) -> Path:
        """``worst_case.png`` (:func:`plot_worst_case`), written atomically."""
        import matplotlib.pyplot as plt

        fig = plot_worst_case(self.R, self.config["methods"], title=f"{self.dataset_id}: {self.run_id}")
        path = self.base_dir / FIGURE_FILE
        with storage.atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path

    def run(self, force_refresh: bool = False, invalidate_phase: int | None = None,
            save_phase_results: bool = True) -> dict[str, Any]:
        R = super().run(force_refresh, invalidate_phase, save_phase_results)
        self.write_outputs()
        return R

    def summary_keys(self) -> list[str]:
        keys = ["cv_l2_reg", "fixed_test", "initial_params", "target_names", "target_initial_gap", "num_train",
                "max_k", "adaptive_batch"]
        for m in self.config["methods"]:
            keys += [f"{m}_{k}" for k in ("predicted_k", "verified_k", "refits", "seconds", "max_grad_ratio",
                                          "component", "outcome", "verified_sets", "order", "path_k",
                                          "path_predicted", "path_actual")]
        return keys


# ----------------------------------------------------------------------------- figure
METHOD_COLORS = {"first_order": "tab:blue", "rescaled": "tab:orange", "newton": "tab:green", "adaptive": "tab:red"}


def plot_worst_case(R: dict[str, Any], methods=wc.METHODS, title: str = "", ncols: int = 3):
    """One panel per target: along each method's removal path, the actual change of the
    target's flip gap (x, certified refits) against the method's predicted change (y), the
    diagonal, and the flip threshold (dashed: the target flips right of the vertical line;
    the prediction says so above the horizontal one). Returns the figure."""
    import matplotlib.pyplot as plt

    names = list(R["target_names"])
    ncols = max(1, min(ncols, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // ncols][j % ncols]
        thr = -float(R["target_initial_gap"][j])
        vals = [thr, 0.0]
        for m in methods:
            a, p = np.asarray(R[f"{m}_path_actual"][j]), np.asarray(R[f"{m}_path_predicted"][j])
            if not a.size:
                continue
            ks = np.asarray(R[f"{m}_path_k"][j])
            ax.scatter(a, p, s=14, color=METHOD_COLORS.get(m), alpha=0.8,
                       label=f"{m} (k={int(R[f'{m}_verified_k'][j])})")
            ax.plot(a[np.argsort(ks)], p[np.argsort(ks)], color=METHOD_COLORS.get(m), alpha=0.3, lw=0.8)
            vals += list(a[np.isfinite(a)]) + list(p[np.isfinite(p)])
        lo, hi = min(vals), max(vals)
        pad = 0.05 * (hi - lo or 1.0)
        lim = (lo - pad, hi + pad)
        ax.plot(lim, lim, color="0.6", lw=0.8)
        ax.axvline(thr, color="k", ls="--", lw=0.8)
        ax.axhline(thr, color="k", ls=":", lw=0.8)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("actual change (refit)", fontsize=8)
        ax.set_ylabel("predicted change", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    for j in range(len(names), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
