"""``estimator_ladder``: an accuracy ladder of group-effect estimators against certified refits.

It reads a finished ``ss_logreg`` run (its groups, theta-hat, Hessian and certified actual
effects; running it first when its results are missing) and adds, for every group, the
estimators of :mod:`influence.estimators`:

``first_order``, ``newton``, ``newton_2``, ``newton_3``, ``second_order_basu``,
``second_order_exact``, ``rescaled``, ``actual``

with each estimator's cost (seconds per group, measured in this run), then per dataset,
group type and group-size decile the accuracy of each estimator against the actual effect
(``accuracy.csv``) and the cost table (``cost.csv``), both in the run folder
``{out_dir}/estimator_ladder/{ss_logreg run id}/``. ``ss_logreg``'s interface, run ids and
keys are untouched.

Execution: the per-group work of the estimator phases (first_order, newton, newton_k,
second_order_*, rescaled, and the actual refits retimed) runs as chunk tasks on the run's
executor (:mod:`experiments.execution`: in this process by default, on a Dask cluster
with ``--workers`` / ``--scheduler-address``), with the run's data sent to the workers
once. The chunks are the same in every mode, so the results do not depend on the number
of workers (tests/experiments/test_execution_ladder_babble.py: bit for bit). Another
chunking changes them at rounding level only (batched products and multi-column solves
round differently). The costs are wall times of the whole phase wherever it ran (on a cluster:
including the scheduling overhead and each worker's first-call set-up).

Targets and forms (mirroring ``ss_logreg``; see docs/design.md, 'Result keys'):

* every estimator's parameter change D is evaluated non-linearly, ``f(theta_hat + D) - f(theta_hat)``
  (form ``param``: ``ss_logreg``'s ``pparam`` / ``nparam`` for ``first_order`` / ``newton``;
  for ``actual`` it is the actual effect ``actl``);
* ``first_order`` and ``newton`` also in the paper's linearised gradient form
  ``grad f(theta_hat) . D`` (form ``linear``: ``ss_logreg``'s ``pred`` / ``newton`` keys).

Targets: ``params`` (the change itself), ``test_loss`` and, for binary models,
``test_margin`` (the six fixed test points), ``self_loss`` (the group's own summed loss).
Keys: ``subset_{estimator}_dparam`` (S, d); ``subset_fixed_test_{estimator}_infl`` (S, 6),
``subset_fixed_test_{estimator}_margin_infl`` (S, 6), ``subset_self_{estimator}_infl`` (S,);
with ``_linear`` before ``_infl`` / ``_margin_infl`` for the linear form; ``{estimator}_seconds``.

Accuracy statistics (phase ``tables``) per (group type, size decile, estimator, form,
target), over the groups of the cell (test targets: pooled over the (group, fixed test
point) pairs): Spearman correlation with the actual values, the median and 90th
percentile of the relative error ``|est - actual| / |actual|``, and the sign-agreement
rate. For ``params`` the values are the norms ``||D||`` (Spearman), the relative error is
``||D - D_actual|| / ||D_actual||`` and the sign agreement is ``D . D_actual > 0``. Group
types are the simplified tags (``random``, ``random_same_class``, ``neg_tail_test``, ...)
plus ``all``; deciles are those of the group sizes of the whole run (1-10, ties kept
together) plus ``all``.
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from datasets import storage
from experiments import tasks
from experiments.common import ConfigError, chunks, phase
from experiments.influence_base import InfluenceExperiment
from experiments.plot import get_simple_subset_tags
from experiments.subset_influence import SubsetInfluenceLogreg, run_id_from_config
from influence import estimators as est, group_influence as gi, memory

logger = logging.getLogger(__name__)

ESTIMATORS = est.ESTIMATORS
LINEAR_ESTIMATORS = ("first_order", "newton")
ACCURACY_FILE = "accuracy.csv"
COST_FILE = "cost.csv"
ACCURACY_COLUMNS = ("dataset", "run_id", "group_type", "size_decile", "size_min", "size_max", "n_groups",
                    "estimator", "form", "target", "n_values", "spearman", "median_rel_error",
                    "p90_rel_error", "sign_agreement")
# k-step Newton forms a (d, d) Hessian per group and step up to this many parameters
# (n d^2 flops each); above it, CG on exact Hessian-vector products to a 1e-12 residual.
NEWTON_EXPLICIT_MAX_PARAMS = 1000
COST_COLUMNS = ("dataset", "run_id", "estimator", "n_groups", "seconds", "seconds_per_group")
# Groups per estimator task (phases first_order, newton, second_order_*, rescaled), the same
# in every execution mode so that the results do not depend on where the tasks run; a
# multiple of the 64-row batches of the estimators' kernels (group_hvps,
# third_derivative_contraction), so the batches are those of one call on all groups.
ESTIMATOR_CHUNK = 64


# ----------------------------------------------------------------------------- tasks
# Pure functions of (the run's shared InfluenceContext, a chunk spec), mapped by the run's
# executor (experiments.execution): in this process, or on Dask workers that rebuild the
# group-influence API from the context once (experiments.tasks).
def estimator_task(ctx: tasks.InfluenceContext, spec: tuple[str, int, int, bool]) -> np.ndarray:
    """``influence.estimators.<name>`` on groups ``start..end-1`` for ``spec = (name, start,
    end, reuse)``, float64 (end - start, d). ``rescaled``'s per-point leverage solves do not
    depend on the groups: with ``reuse`` they are computed once per process and kept with
    the context (the warm-up passes ``reuse=False``, so the timed run pays for them once)."""
    name, start, end, reuse = spec
    infl, groups = ctx.influence(), ctx.groups(start, end)
    if name == "rescaled":
        solves = (ctx.per_process("leverage_solves", lambda: est.point_leverage_solves(infl)) if reuse
                  else est.point_leverage_solves(infl))
        return est.rescaled(infl, groups, solves=solves)
    return np.asarray(getattr(est, name)(infl, groups), dtype=np.float64)


def newton_steps_task(ctx: tasks.InfluenceContext, spec: tuple) -> np.ndarray:
    """``k`` more Newton steps (:func:`influence.estimators.newton_steps`) for groups
    ``start..end-1`` in one batch, from the changes ``D0`` (None: from theta_hat), for
    ``spec = (start, end, k, method, D0)``; float64 (end - start, d)."""
    start, end, k, method, D0 = spec
    # The preconditioner of method 'cg' is newton_steps' default, built once per process
    # with the group-influence API it is kept with (tasks.InfluenceContext.influence).
    return est.newton_steps(ctx.influence(), ctx.groups(start, end), (k,), chunk=max(end - start, 1), start=D0,
                            method=method)[k]


def build_config(ss_config: dict[str, Any], master_only: bool = False, retime_actual: bool = True,
                 newton_steps_method: str = "auto") -> dict[str, Any]:
    """The ladder's config: the ``ss_logreg`` config it reads (built by
    :func:`experiments.subset_influence.build_config`) and its own settings.

    ``retime_actual``: refit every group again in this run to measure the cost of the
    actual effect (its values are ``ss_logreg``'s ``subset_dparam``; the refits must agree
    with them to the certificate). ``newton_steps_method``: how k-step Newton solves its
    systems, ``'explicit'`` (a (d, d) Hessian per group and step), ``'cg'`` (CG on exact
    Hessian-vector products, residual 1e-12) or ``'auto'`` (explicit up to
    :data:`NEWTON_EXPLICIT_MAX_PARAMS` parameters).
    """
    if newton_steps_method not in ("auto",) + est.NEWTON_STEP_METHODS:
        raise ConfigError(f"newton_steps_method must be one of {('auto',) + est.NEWTON_STEP_METHODS}; "
                          f"got {newton_steps_method!r}")
    if not isinstance(ss_config, dict) or "dataset_config" not in ss_config:
        raise ConfigError("ss_config must be an ss_logreg config (experiments.subset_influence.build_config)")
    if ss_config.get("inverse_hvp_method") != "explicit":
        # k-step Newton forms a (d, d) Hessian per group and step, and rescaled forms H^-1.
        raise ConfigError(f"estimator_ladder needs an explicit-Hessian ss_logreg run (--inverse-hvp-method "
                          f"explicit); got {ss_config.get('inverse_hvp_method')!r}")
    if ss_config.get("dtype", "float64") != "float64":
        raise ConfigError(f"estimator_ladder runs in float64; got dtype {ss_config.get('dtype')!r} (drop --float32)")
    ss = dict(ss_config)
    ss["master_only"] = False  # the ladder reads ss_logreg's phase files
    return {"ss_logreg": ss, "estimators": list(ESTIMATORS), "newton_steps": [2, 3],
            "newton_steps_method": newton_steps_method,
            "retime_actual": bool(retime_actual), "master_only": bool(master_only)}


class EstimatorLadder(InfluenceExperiment):
    """Every estimator of the ladder for every group of an ``ss_logreg`` run."""

    experiment_id = "estimator_ladder"

    _context = None   # the shared InfluenceContext of the run's tasks (a future on a cluster)
    estimator_chunk = ESTIMATOR_CHUNK   # hook: groups per estimator task

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        super().__init__(config, out_dir, progress)
        self._base = None

    @property
    def run_id(self) -> str:
        return run_id_from_config(self.config["ss_logreg"])

    @property
    def dataset_id(self) -> str:
        return self.config["ss_logreg"]["dataset_config"]["dataset_id"]

    # ------------------------------------------------------------------ the ss_logreg run
    @property
    def base(self) -> SubsetInfluenceLogreg:
        """The ``ss_logreg`` run this ladder reads, run (or resumed from its files) on first use."""
        if self._base is None:
            base = SubsetInfluenceLogreg(self.config["ss_logreg"], out_dir=self.out_dir, progress=self.progress)
            base.executor = self.executor   # its missing phases run where the ladder's tasks run
            logger.info("reading ss_logreg run %s (running the phases whose results are missing)", base.run_id)
            base.run()
            self._base = base
        return self._base

    @base.setter
    def base(self, run: SubsetInfluenceLogreg) -> None:
        """Read ``run`` (an ``ss_logreg`` run with its results) instead of running one."""
        self._base = run

    def check_inputs(self) -> None:
        """The ladder's input is the ``ss_logreg`` run (and its data): run or resume it before
        anything of the ladder is written, so that bad data leave no ladder folder behind."""
        _ = self.base

    def influence(self) -> gi.GroupInfluence:
        return self.base.influence()

    @property
    def groups(self) -> list[np.ndarray]:
        return self.base.subsets

    def shared_context(self):
        """The data of every task of the run (groups, training design, theta_hat, Hessian, ...),
        built once and sent to the workers once (:meth:`Executor.scatter`)."""
        if self._context is None:
            ctx = tasks.InfluenceContext.from_influence(self.influence(), progress=False, groups=self.groups)
            self._context = self.executor.scatter(ctx)
        return self._context

    def _map(self, fn, specs, desc: str, large_specs: bool = False) -> np.ndarray:
        """``fn`` over ``specs`` on the run's executor, the (rows, d) results stacked in order."""
        outs = self.executor.map(fn, self.shared_context(), specs, desc, large_specs=large_specs)
        d = self.base.get_model().num_params
        return np.concatenate(outs) if outs else np.zeros((0, d))

    def _timed(self, name: str):
        """The estimator ``influence.estimators.<name>`` on every group, in tasks of
        :attr:`estimator_chunk` groups on the run's executor, timed after an untimed warm-up
        on the first group (TensorFlow's first calls of an op carry one-off set-up costs)."""
        S = len(self.groups)
        self._map(estimator_task, [(name, 0, min(S, 1), False)], f"{name} (warm-up)")
        t0 = time.perf_counter()
        D = self._map(estimator_task, [(name, a, b, True) for a, b in chunks(S, self.estimator_chunk)], name)
        seconds = time.perf_counter() - t0
        logger.info("%s: %.3f s for %d groups", name, seconds, S)
        return {f"subset_{name}_dparam": np.asarray(D, dtype=np.float64), f"{name}_seconds": float(seconds)}

    # ------------------------------------------------------------------ phases
    @phase(0)
    def base_run(self):
        b = self.base
        return {"base_run_id": b.run_id, "base_config_hash": b.config_hash,
                "subset_tags": list(b.R["subset_tags"]),
                "subset_sizes": np.array([len(g) for g in b.subsets], dtype=np.int64),
                "fixed_test": np.asarray(b.R["fixed_test"])}

    @phase(1)
    def first_order(self):
        return self._timed("first_order")

    @phase(2)
    def newton(self):
        return self._timed("newton")

    @phase(3)
    def newton_steps(self):
        S = len(self.groups)
        ks = sorted(int(k) for k in self.config["newton_steps"])
        method = self.config.get("newton_steps_method", "auto")
        if method == "auto":
            method = "explicit" if self.base.get_model().num_params <= NEWTON_EXPLICIT_MAX_PARAMS else "cg"
        spans = chunks(S, self._newton_chunk(method == "explicit"))
        self._map(newton_steps_task, [(0, min(S, 1), 1, method, None)], "k-step Newton (warm-up)")  # as in _timed
        # Each k continues the iterates of the previous one, so newton_k's cost is the
        # cumulative time of its k steps from theta_hat.
        res: dict[str, Any] = {}
        D, done, seconds = None, 0, 0.0
        for k in ks:
            t0 = time.perf_counter()
            specs = [(a, b, k - done, method, None if D is None else D[a:b]) for a, b in spans]
            D = self._map(newton_steps_task, specs, f"newton_{k}", large_specs=D is not None)
            seconds += time.perf_counter() - t0
            res[f"subset_newton_{k}_dparam"], res[f"newton_{k}_seconds"], done = D, float(seconds), k
        res["newton_steps_method"] = method
        return res

    def _newton_chunk(self, explicit: bool = True) -> int:
        """Groups per batch of k-step Newton: the refit rule within ``--max-memory``."""
        spec = self.base.get_model().spec
        return memory.refit_chunk_size(spec.num_params, self.base.num_train, int(self.base.config["max_memory"]),
                                       spec.num_rows, explicit=explicit)

    @phase(4)
    def second_order_basu(self):
        return self._timed("second_order_basu")

    @phase(5)
    def second_order_exact(self):
        return self._timed("second_order_exact")

    @phase(6)
    def rescaled(self):
        return self._timed("rescaled")

    @phase(7)
    def actual(self):
        D = gi.actual_dparams(np.asarray(self.base.R["subset_refit_params"]), self.base.theta_hat())
        res = {"subset_actual_dparam": D, "actual_seconds": float("nan"), "actual_retime_max_diff": float("nan"),
               # ss_logreg's certificates of these refits (the script's exit code).
               "subset_refit_grad_norm": np.asarray(self.base.R["subset_refit_grad_norm"]),
               "subset_refit_grad_tol": np.asarray(self.base.R["subset_refit_grad_tol"])}
        if self.config.get("retime_actual", True):
            # ss_logreg's refit tasks (experiments.tasks.refit_task) on the ladder's context.
            ctx, S = self.shared_context(), len(self.groups)
            self.executor.map(tasks.refit_task, ctx, [(0, min(S, 1))], "exact refits (warm-up)")  # as in _timed
            t0 = time.perf_counter()
            r = tasks.map_refits(self.executor, ctx, S, self.base.refit_chunk_size())
            res["actual_seconds"] = float(time.perf_counter() - t0)
            D2 = gi.actual_dparams(r.thetas, self.base.theta_hat())
            res["actual_retime_max_diff"] = float(np.max(np.abs(D2 - D))) if D.size else 0.0
        return res

    def _dparams(self) -> dict[str, np.ndarray]:
        return {e: np.asarray(self.R[f"subset_{e}_dparam"]) for e in ESTIMATORS}

    @phase(8)
    def targets(self):
        b, infl, groups = self.base, self.influence(), self.groups
        fixed = np.asarray(b.R["fixed_test"])
        test_fixed = b.test.subset(fixed)
        init_test = np.asarray(b.R["initial_test_losses"])[fixed]
        init_train = np.asarray(b.R["initial_train_losses"])
        binary = b.binary
        res: dict[str, Any] = {}
        for e, D in self._dparams().items():
            res[f"subset_fixed_test_{e}_infl"] = infl.param_influence(D, test_fixed, init_test, "loss")
            if binary:
                init_m = np.asarray(b.R["initial_test_margins"])[fixed]
                res[f"subset_fixed_test_{e}_margin_infl"] = infl.param_influence(D, test_fixed, init_m, "margin")
            res[f"subset_self_{e}_infl"] = infl.self_param_influence(D, groups, init_train, "loss")
        T, Tm = b.fixed_test_grads()
        G_S = gi.group_gradient_sums(groups, np.asarray(b.R["train_grad_loss"]))
        for e in LINEAR_ESTIMATORS:
            D = np.asarray(self.R[f"subset_{e}_dparam"])
            res[f"subset_fixed_test_{e}_linear_infl"] = gi.target_influence(D, T)
            if binary:
                res[f"subset_fixed_test_{e}_linear_margin_infl"] = gi.target_influence(D, Tm)
            res[f"subset_self_{e}_linear_infl"] = gi.self_influence(G_S, D)
        return res

    @phase(9)
    def tables(self):
        return {**{f"accuracy_{c}": v for c, v in self.accuracy_table().items()},
                **{f"cost_{c}": v for c, v in self.cost_table().items()}}

    # ------------------------------------------------------------------ tables
    def _target_values(self) -> dict[str, dict[tuple[str, str], np.ndarray]]:
        """``{target: {(estimator, form): values}}``; test targets (S, 6), others (S,) / (S, d)."""
        R = self.R
        out: dict[str, dict[tuple[str, str], np.ndarray]] = {"params": {}, "test_loss": {}, "self_loss": {}}
        binary = f"subset_fixed_test_{ESTIMATORS[0]}_margin_infl" in R
        if binary:
            out["test_margin"] = {}
        for e in ESTIMATORS:
            forms = ["param"] + (["linear"] if e in LINEAR_ESTIMATORS else [])
            out["params"][(e, "param")] = np.asarray(R[f"subset_{e}_dparam"])
            for form in forms:
                sfx = "_linear" if form == "linear" else ""
                out["test_loss"][(e, form)] = np.asarray(R[f"subset_fixed_test_{e}{sfx}_infl"])
                out["self_loss"][(e, form)] = np.asarray(R[f"subset_self_{e}{sfx}_infl"])
                if binary:
                    out["test_margin"][(e, form)] = np.asarray(R[f"subset_fixed_test_{e}{sfx}_margin_infl"])
        return out

    def accuracy_table(self) -> dict[str, np.ndarray]:
        """The accuracy table as columns (:data:`ACCURACY_COLUMNS`)."""
        sizes = np.asarray(self.R["subset_sizes"])
        types = np.array(get_simple_subset_tags(self.R["subset_tags"]))
        deciles = size_deciles(sizes)
        cells = [("all", "all", np.ones(len(sizes), dtype=bool))]
        for t in sorted(set(types)):
            cells.append((t, "all", types == t))
        for dec in range(1, 11):
            cells.append(("all", str(dec), deciles == dec))
            for t in sorted(set(types)):
                cells.append((t, str(dec), (types == t) & (deciles == dec)))
        rows = []
        for target, values in self._target_values().items():
            actual = values[("actual", "param")]
            for (e, form), v in values.items():
                for gtype, dec, sel in cells:
                    if not sel.any():
                        continue
                    stats = accuracy_stats(v[sel], actual[sel], vector=(target == "params"))
                    rows.append((self.dataset_id, self.run_id, gtype, dec, int(sizes[sel].min()),
                                 int(sizes[sel].max()), int(sel.sum()), e, form, target, *stats))
        return {c: np.array([r[k] for r in rows]) for k, c in enumerate(ACCURACY_COLUMNS)}

    def cost_table(self) -> dict[str, np.ndarray]:
        """Seconds per group of each estimator in this run (:data:`COST_COLUMNS`)."""
        S = len(self.R["subset_sizes"])
        rows = []
        for e in ESTIMATORS:
            sec = float(self.R[f"{e}_seconds"])
            rows.append((self.dataset_id, self.run_id, e, S, sec, sec / max(S, 1)))
        return {c: np.array([r[k] for r in rows]) for k, c in enumerate(COST_COLUMNS)}

    def write_tables(self) -> tuple[Path, Path]:
        """``accuracy.csv`` and ``cost.csv`` in the run folder (each written atomically)."""
        paths = []
        for name, prefix, cols in ((ACCURACY_FILE, "accuracy_", ACCURACY_COLUMNS), (COST_FILE, "cost_", COST_COLUMNS)):
            path = self.base_dir / name
            write_csv(path, cols, [np.asarray(self.R[prefix + c]) for c in cols])
            paths.append(path)
        return paths[0], paths[1]

    # ------------------------------------------------------------------ run
    def run(self, force_refresh: bool = False, invalidate_phase: int | None = None,
            save_phase_results: bool = True) -> dict[str, Any]:
        try:
            R = super().run(force_refresh, invalidate_phase, save_phase_results)
        finally:
            self._context = None   # the run's executor is closed now
        self.write_tables()
        return R

    def summary_keys(self) -> list[str]:
        keys = ["base_run_id", "subset_tags", "subset_sizes", "fixed_test", "subset_refit_grad_norm",
                "subset_refit_grad_tol", "actual_retime_max_diff"]
        for e in ESTIMATORS:
            keys += [f"subset_{e}_dparam", f"subset_fixed_test_{e}_infl", f"subset_fixed_test_{e}_margin_infl",
                     f"subset_self_{e}_infl", f"{e}_seconds"]
        for e in LINEAR_ESTIMATORS:
            keys += [f"subset_fixed_test_{e}_linear_infl", f"subset_fixed_test_{e}_linear_margin_infl",
                     f"subset_self_{e}_linear_infl"]
        keys += [f"accuracy_{c}" for c in ACCURACY_COLUMNS] + [f"cost_{c}" for c in COST_COLUMNS]
        return keys


# ----------------------------------------------------------------------------- statistics
def size_deciles(sizes) -> np.ndarray:
    """Decile (1-10) of each group size among all sizes; equal sizes share a decile, (S,)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.quantile(sizes, np.linspace(0, 1, 11)[1:-1])
    return np.searchsorted(edges, sizes, side="left").astype(np.int64) + 1


def accuracy_stats(values, actual, vector: bool = False) -> tuple[int, float, float, float, float]:
    """``(n_values, spearman, median_rel_error, p90_rel_error, sign_agreement)`` of estimates
    against actual values. Scalar targets: arrays of the same shape, flattened; ``vector``:
    rows are parameter changes (S, d). Relative errors and sign agreement are taken over the
    pairs whose actual value is nonzero (a point whose gradient is already below the refit's
    certificate has an actual effect of exactly 0)."""
    v, a = np.asarray(values, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if v.shape != a.shape:
        raise ValueError(f"values and actual must have the same shape; got {v.shape} and {a.shape}")
    if vector:
        na = np.linalg.norm(a, axis=1)
        rel = np.linalg.norm(v - a, axis=1)[na > 0] / na[na > 0]
        x, y = np.linalg.norm(v, axis=1), na
        sign = np.einsum("sd,sd->s", v, a)[na > 0] > 0
    else:
        x, y = v.ravel(), a.ravel()
        nz = y != 0
        rel = np.abs(x - y)[nz] / np.abs(y[nz])
        sign = np.sign(x[nz]) == np.sign(y[nz])
    if x.size >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho = float(scipy.stats.spearmanr(x, y).statistic)
    else:
        rho = float("nan")
    med, p90 = (float(np.median(rel)), float(np.quantile(rel, 0.9))) if rel.size else (float("nan"),) * 2
    return int(x.size), rho, med, p90, float(np.mean(sign)) if sign.size else float("nan")


def write_csv(path: Path, columns, arrays) -> None:
    """A CSV with a header row, written atomically (floats in repr precision)."""
    n = len(arrays[0]) if arrays else 0
    with storage.atomic_write(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for i in range(n):
            w.writerow([_cell(a[i]) for a in arrays])


def _cell(x) -> str:
    if isinstance(x, (float, np.floating)):
        return repr(float(x))
    if isinstance(x, (np.integer,)):
        return str(int(x))
    return str(x)
