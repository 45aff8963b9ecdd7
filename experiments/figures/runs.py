"""The runs the paper figures read: a registry derived from the experiment classes, and their loading.

Every run a figure reads is a :class:`RunSpec`: an experiment class, the keyword
arguments of its module's ``build_config`` and the script that makes it. The run id is
the experiment's own (``ExperimentClass(build_config(**arguments)).run_id``) and the
command line is built from the same arguments, so neither can drift from the
experiment. The registry's runs are those the paper's figures read:

* ``ss_logreg`` range runs (0.25 %-25 % groups, ``--max-memory 100000000``,
  master-only), one per dataset, and the ``--fixed-reg`` sweep of Figure 3;
* ``counterexamples`` ``gauss4`` and ``ortho2`` (float64, and float32 as the original);
* ``data_valuation/reduced_cdr_sample_weights-True`` and
  ``credit_assignment/mnli_sample_weights-None``.

Results are loaded with :mod:`datasets.storage` (never with pickle): the summary of a
master-only run (``config.json`` with ``master_only: true``), or the same keys from the
phase files ``result_{k}-{name}.npz`` of a normal run. A run that is missing or
unreadable becomes a :class:`LoadedRun` whose ``message`` names the command that
produces it; figures draw it as a labelled empty panel instead of crashing.

Supplements (the CDR labelling info, the MultiNLI train genres) are read only if their
files are present, with downloads disabled.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from datasets import storage
from datasets.loader import load_supplemental_info
from experiments import counterexamples, credit_assignment, data_valuation, subset_influence
from experiments.common import DEFAULT_OUT_DIR, REPO_ROOT, ConfigError, py2_float_str
from experiments.figure_settings import Settings, reg_values

# The paper's range runs (codalab/run_subsets.sh).
RANGE_SIZES = (0.0025, 0.25)
PAPER_MAX_MEMORY = 100_000_000

SS_LOGREG_PHASES = (0, 1, 2, 5, 7, 8, 14)
CEX_PHASES = (4, 5)
DATA_VALUATION_PHASES = (0, 4, 5, 8)
CREDIT_PHASES = (0, 1, 4, 5, 8)

MNLI_TEST_GENRES = list(credit_assignment.TEST_GENRES)
MNLI_NONFIRES_GENRES = list(credit_assignment.NONFIRES_GENRES)

SUPPLEMENT_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, pickle.UnpicklingError)

# ``build_config`` arguments whose flag is not ``--`` + the name with dashes.
_FLAG_NAMES = {"master_only": "--no-intermediate-results"}


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class RunSpec:
    """One run a figure reads.

    ``arguments``: ``(name, value)`` pairs of ``build_config``, in the order of the
    command line. ``phases``: the phase files read from a normal run; ``keys``: the
    result keys read (None: all).
    """

    experiment: type
    build_config: Callable[..., dict]
    script: str
    arguments: tuple[tuple[str, Any], ...]
    phases: tuple[int, ...]
    keys: tuple[str, ...] | None = None

    @property
    def experiment_id(self) -> str:
        return self.experiment.experiment_id

    @property
    def config(self) -> dict[str, Any]:
        """``build_config(**arguments)``; raises the experiment's ``ConfigError``."""
        return self.build_config(**dict(self.arguments))

    @property
    def run_id(self) -> str:
        """The experiment's run id for this config (raises ``ConfigError`` if invalid)."""
        return self.experiment(self.config).run_id

    def command(self, out_dir: str | Path | None = None, placeholders: dict[str, str] | None = None) -> str:
        """``python scripts/... --flag value ...``: the command that makes this run.

        ``--out-dir`` is added unless ``out_dir`` is the scripts' default;
        ``placeholders`` replace values by text (e.g. ``{'fixed_reg': '$R'}``).
        """
        placeholders = placeholders or {}
        parts = ["python", self.script]
        for name, value in self.arguments:
            flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
            if name in placeholders:
                parts += [flag, placeholders[name]]
            elif name == "dtype":
                parts += [] if value == "float64" else [f"--{value}"]
            elif isinstance(value, bool):
                parts += [flag] if value else []
            elif value is not None:
                parts += [flag, py2_float_str(value) if isinstance(value, float) else str(value)]
        if out_dir is not None and Path(out_dir).resolve() != DEFAULT_OUT_DIR.resolve():
            parts += ["--out-dir", str(out_dir)]
        return " ".join(parts)


def ss_logreg_run(dataset_id: str, num_subsets: int, fixed_reg: float | None = None) -> RunSpec:
    """A paper-style ``ss_logreg`` range run (``fixed_reg``: the Figure 3 sweep's ``--fixed-reg``)."""
    arguments = (("dataset_id", dataset_id), ("subset_choice_type", "range"),
                 ("subset_min_rel_size", RANGE_SIZES[0]), ("subset_max_rel_size", RANGE_SIZES[1]),
                 ("num_subsets", int(num_subsets)), ("max_memory", PAPER_MAX_MEMORY), ("master_only", True))
    if fixed_reg is not None:
        arguments += (("fixed_reg", float(fixed_reg)),)
    keys = tuple(subset_influence.SUMMARY_KEYS) + ("subset_indices",)
    return RunSpec(subset_influence.SubsetInfluenceLogreg, subset_influence.build_config,
                   "scripts/subsets_infl_logreg.py", arguments, SS_LOGREG_PHASES, keys)


def counterexamples_run(dataset_id: str, dtype: str = "float64") -> RunSpec:
    """A master-only ``counterexamples`` run (Figure 4: ``gauss4`` left, ``ortho2`` right)."""
    return RunSpec(counterexamples.Counterexamples, counterexamples.build_config, "scripts/counterexamples.py",
                   (("dataset_id", dataset_id), ("master_only", True), ("dtype", dtype)), CEX_PHASES,
                   tuple(counterexamples.SUMMARY_KEYS))


def data_valuation_run() -> RunSpec:
    """The CDR labelling-function run (``--sample-weights``)."""
    keys = (("cv_l2_reg", "subset_tags", "subset_indices", "subset_LF_ids")
            + tuple(f"subset_{t}_test_{k}_infl" for t in ("pos", "neg", "all") for k in ("actl", "pred")))
    return RunSpec(data_valuation.DataValuation, data_valuation.build_config, "scripts/data_valuation.py",
                   (("dataset_id", "reduced_cdr"), ("sample_weights", True)), DATA_VALUATION_PHASES, keys)


def credit_assignment_run() -> RunSpec:
    """The MultiNLI crowd-worker run (master-only)."""
    return RunSpec(credit_assignment.CreditAssignment, credit_assignment.build_config,
                   "scripts/credit_assignment.py", (("dataset_id", "mnli"), ("master_only", True)), CREDIT_PHASES,
                   tuple(credit_assignment.SUMMARY_KEYS))


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedRun:
    """A run's results (``R``) and config, or why it could not be loaded."""

    experiment_id: str
    run_id: str
    command: str
    R: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    problem: str | None = None   # 'missing', 'incomplete ...', 'unreadable ...', 'invalid ...'

    @property
    def ok(self) -> bool:
        return self.R is not None

    @property
    def name(self) -> str:
        return f"{self.experiment_id}/{self.run_id}"

    @property
    def message(self) -> str:
        if self.ok:
            return f"loaded {self.name}"
        if self.problem == "missing":
            return f"missing {self.name}: run {self.command}"
        return f"{self.problem} {self.name}: run {self.command}"

    def has(self, *keys: str) -> bool:
        return self.ok and all(self.R.get(k) is not None for k in keys)


def load_run(out_dir: str | Path, experiment_id: str, run_id: str, command: str,
             phase_indices: Sequence[int], keys: Sequence[str] | None = None, verbose: bool = True) -> LoadedRun:
    """Load ``keys`` of ``out_dir/experiment_id/run_id`` like ``Experiment.load_run``.

    Master-only runs (``config.json`` says ``master_only``) load ``result_summary.npz``
    and ignore ``phase_indices``; other runs load the phase files with those indices
    (``result_{k}-*.npz``; absent ones are skipped). A folder without ``config.json``
    but with a summary is read as master-only. Never raises for a missing or broken
    run: the returned run's ``message`` says what to do.
    """
    base = Path(out_dir) / experiment_id / run_id
    run = LoadedRun(experiment_id, run_id, command)
    cfg_path, summary = base / "config.json", base / "result_summary.npz"
    try:
        config = storage.load_json(cfg_path) if cfg_path.is_file() else None
        if config is None and not summary.is_file():
            run.problem = "missing"
        elif config is None or config.get("master_only"):
            if not summary.is_file():
                run.problem = "incomplete (no result_summary.npz)"
            else:
                run.R = storage.load_result_keys(summary, keys)
        else:
            R: dict[str, Any] = {}
            found = False
            for k in phase_indices:
                for path in sorted(glob.glob(str(base / f"result_{int(k)}-*.npz"))):
                    R.update(storage.load_result_keys(path, keys))
                    found = True
            if found:
                run.R = R
            else:
                run.problem = f"incomplete (no phase files {list(phase_indices)})"
        run.config = config
    except (storage.StorageError, OSError, ValueError) as exc:
        run.R, run.problem = None, f"unreadable ({exc})"
    if verbose and not run.ok:
        print(run.message)
    return run


def load(spec: RunSpec, settings: Settings, verbose: bool = True) -> LoadedRun:
    """Load the run ``spec`` names from ``settings.out_dir`` (see :func:`load_run`).

    Settings the experiment rejects (e.g. a dataset it does not know) give a run whose
    ``problem`` quotes the experiment's message.
    """
    command = spec.command(settings.out_dir)
    try:
        run_id = spec.run_id
    except ConfigError as exc:
        run = LoadedRun(spec.experiment_id, str(dict(spec.arguments).get("dataset_id", "?")), command,
                        problem=f"invalid settings ({exc})")
        if verbose:
            print(run.message)
        return run
    return load_run(settings.out_dir, spec.experiment_id, run_id, command, spec.phases, spec.keys, verbose)


def load_ss_logreg(settings: Settings, dataset_id: str, num_subsets: int | None = None,
                   fixed_reg: float | None = None, verbose: bool = True) -> LoadedRun:
    """A ``ss_logreg`` range run (the 15 summary keys of its master-only mode, plus ``subset_indices``)."""
    num = settings.num_subsets if num_subsets is None else num_subsets
    return load(ss_logreg_run(dataset_id, num, fixed_reg), settings, verbose)


def load_main_runs(settings: Settings, datasets: Sequence[str] | None = None) -> dict[str, LoadedRun]:
    return {ds: load_ss_logreg(settings, ds) for ds in (settings.datasets if datasets is None else datasets)}


def load_reg_sweep(settings: Settings, dataset_id: str) -> list[tuple[float, LoadedRun]]:
    """The ``--fixed-reg`` runs of one dataset (7 values); quiet."""
    return [(r, load_ss_logreg(settings, dataset_id, settings.reg_num_subsets, r, verbose=False))
            for r in reg_values(dataset_id, settings.reg_values)]


def reg_sweep_message(settings: Settings, dataset_id: str, sweep: Sequence[tuple[float, LoadedRun]]) -> str | None:
    """None if every run is there, else which are missing and the loop that makes them."""
    missing = [r for r, run in sweep if not run.ok]
    if not missing:
        return None
    spec = ss_logreg_run(dataset_id, settings.reg_num_subsets, missing[0])
    rid = spec.run_id
    head = rid[: rid.rindex("rel-reg-") + len("rel-reg-")]
    regs = [py2_float_str(r) for r in missing]
    loop_command = spec.command(settings.out_dir, {"fixed_reg": "$R"})
    return (f"missing ss_logreg/{head}{{{','.join(regs)}}}: run "
            f"for R in {' '.join(regs)}; do {loop_command}; done")


def load_counterexamples(settings: Settings, dataset_id: str, dtype: str = "float64") -> LoadedRun:
    return load(counterexamples_run(dataset_id, dtype), settings)


def load_data_valuation(settings: Settings, verbose: bool = True) -> LoadedRun:
    return load(data_valuation_run(), settings, verbose)


def load_credit_assignment(settings: Settings, verbose: bool = True) -> LoadedRun:
    return load(credit_assignment_run(), settings, verbose)


def generated_settings(settings: Settings) -> Settings:
    """The settings of the runs on generated data: results in ``{out_dir}/generated``,
    supplements from each run's own (generated) data folder."""
    return dataclasses.replace(settings, out_dir=settings.generated_out_dir, data_dir=None)


# --------------------------------------------------------------------------- supplements
def data_dir_of(settings: Settings, run: LoadedRun | None) -> Path:
    """The data folder: INFLUENCE_FIG_DATA_DIR, else the run's saved data_dir, else <repo>/data."""
    if settings.data_dir is not None:
        return settings.data_dir
    saved = None
    if run is not None and run.config:
        saved = (run.config.get("dataset_config") or {}).get("data_dir")
    if saved:
        p = Path(saved).expanduser()
        if p.is_absolute() or p.is_dir():
            return p
        return REPO_ROOT / p
    return REPO_ROOT / "data"


@contextlib.contextmanager
def _offline():
    old = os.environ.get("INFLUENCE_OFFLINE")
    os.environ["INFLUENCE_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("INFLUENCE_OFFLINE", None)
        else:
            os.environ["INFLUENCE_OFFLINE"] = old


def _load_supplement(name: str, data_dir: Path, files: Sequence[Path], command: str):
    """``(value, None)`` or ``(None, message)``; never downloads."""
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        return None, f"missing supplement {name} ({', '.join(absent)}): run {command}"
    try:
        with _offline():
            return load_supplemental_info(name, data_dir=data_dir, progress=False), None
    except SUPPLEMENT_ERRORS as exc:
        return None, f"unreadable supplement {name} ({exc}): run {command}"


def _supplement_command(data_dir: Path, supplement_id: str) -> str:
    return (f"python scripts/load_all_datasets.py --data-dir {data_dir} --dataset-ids none "
            f"--supplement-ids {supplement_id}")


def load_cdr_labeling_info(settings: Settings, run: LoadedRun | None):
    """``((LF_labels, gold_labels), None)`` or ``(None, message)``."""
    data_dir = data_dir_of(settings, run)
    babble = data_dir / "babble"
    return _load_supplement("cdr_labeling_info", data_dir,
                            [babble / "cdr_LF_labels.npz", babble / "cdr_gold_labels.npz"],
                            _supplement_command(data_dir, "cdr_labeling_info"))


def load_mnli_train_genres(settings: Settings, run: LoadedRun | None):
    """``(train_genres, None)`` (str array, one per train example) or ``(None, message)``."""
    data_dir = data_dir_of(settings, run)
    value, msg = _load_supplement("mnli_genres", data_dir, [data_dir / "multinli_1.0" / "mnli_genres.npz"],
                                  _supplement_command(data_dir, "mnli_genres"))
    return (None, msg) if value is None else (np.asarray(value[0]).astype(str), None)
