"""Loading logic of the paper-figures notebook ``notebooks/paper-figures.ipynb`` (spec ``figures.md``).

The notebook ``paper-figures.ipynb`` only loads runs with these functions and draws
them with :mod:`experiments.plot`. This module:

* reads the settings from environment variables (:func:`settings_from_env`);
* builds run ids and the command that produces each run;
* loads results with :mod:`datasets.storage` (never with pickle): the summary of a
  master-only run (``config.json`` with ``master_only: true``), or the same keys from
  the phase files ``result_{k}-{name}.npz`` of a normal run. A run that is missing or
  unreadable becomes a :class:`LoadedRun` whose ``message`` names the command that
  produces it; figures draw it as a labelled empty panel instead of crashing;
* turns loaded runs into :class:`experiments.plot.Panel` grids (selecting the result
  keys and the fixed test column of each figure), and writes figures and tables.

Environment variables (all optional):

``INFLUENCE_OUT_DIR``       results folder (default ``<repo>/output``)
``INFLUENCE_PLOT_DIR``      figures and CSV tables (default ``<repo>/plots``)
``INFLUENCE_FIG_DATASETS``  ss_logreg datasets of Figures 1, 2, 5, 6 (comma separated;
                            default ``hospital,spam,dogfish,reduced_cdr,mnist,breast_cancer,digits``)
``INFLUENCE_FIG_NUM_SUBSETS``      ``num`` of those runs' ids (default 100)
``INFLUENCE_FIG_REG_DATASETS``     datasets of the regularisation sweep, Figure 3
                                   (default ``hospital,spam,dogfish,mnist_small``)
``INFLUENCE_FIG_REG_NUM_SUBSETS``  ``num`` of the sweep's run ids (default 10)
``INFLUENCE_FIG_DATA_DIR``  data folder for the supplements (CDR labelling info, MNLI
                            genres); default: the ``data_dir`` saved in the run's
                            config, else ``<repo>/data``

Deviations from the original notebook, documented here:

* Paths default to ``<repo>/output`` and ``<repo>/plots`` (not the working directory).
* The fixed-test column of a dataset outside the paper's table is chosen from the
  run's losses: the highest-loss fixed test point ('max'), or the one whose loss rank
  is closest to the median ('median'), which is what the paper's table encoded.
* Figure 3 colours points by the run's relative regularisation r = lambda/n read from
  the run id (the original divided ``cv_l2_reg`` by ``num_train``, which needs the
  dataset; lambda = 10**log10(r n) equals r n up to rounding).
* CDR labelling functions are matched to groups through ``subset_LF_ids`` when the run
  has it (the original's "group k is LF k+1" misaligns when an LF has no rows; it is
  used only as a fallback).
* Supplements are read only if their files are present, with downloads disabled.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments import plot
from datasets import storage  # noqa: E402
from experiments.common import py2_float_str  # noqa: E402

# --------------------------------------------------------------------------- constants
PAPER_DATASETS = ["hospital", "spam", "dogfish", "reduced_cdr", "mnist"]
OFFLINE_DATASETS = ["breast_cancer", "digits"]
DEFAULT_DATASETS = PAPER_DATASETS + OFFLINE_DATASETS
DEFAULT_REG_DATASETS = ["hospital", "spam", "dogfish", "mnist_small"]
# Cell 6 also lists these runs.
FIXED_TEST_EXTRA_DATASETS = ["mnist_small", "animals"]

DATASET_NAMES = {
    "hospital": "Diabetes",
    "spam": "Enron",
    "dogfish": "Dogfish",
    "mnist_small": "MNIST (small)",
    "mnist": "MNIST",
    "animals": "ImageNet",
    "reduced_cdr": "CDR",
    "breast_cancer": "Breast cancer",
    "digits": "Digits",
}
# Column of ``fixed_test`` plotted per dataset (figures.md §1.0).
FIXED_TEST_IDX = {"hospital": 2, "spam": 5, "dogfish": 2, "mnist_small": 2, "mnist": 1, "reduced_cdr": 2}
FIXED_TEST_IDX_MEDIAN = {"hospital": 3, "spam": 4, "dogfish": 3, "mnist_small": 5, "mnist": 3, "reduced_cdr": 5}

REG_ALL = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
REG_VALUES = {"hospital": REG_ALL[3:]}          # 1e-4 ... 100
DEFAULT_REG_VALUES = REG_ALL[:7]                # 1e-7 ... 0.1
REG_SLOTS = np.logspace(-7, 2, 10)              # the table's columns (spearmans[row][col][10])
REG_LINE_COLORS = {"hospital": "purple", "spam": "green", "dogfish": "blue", "mnist_small": "red"}

SIZES = ("0.0025", "0.25")
PAPER_MAX_MEMORY = "100000000"

SS_LOGREG_PHASES = [0, 1, 2, 5, 7, 8, 14]
CEX_PHASES = [4, 5]
DATA_VALUATION_PHASES = [0, 4, 5, 8]
CREDIT_PHASES = [0, 1, 4, 5, 8]

MNLI_TEST_GENRES = ["fiction", "government", "slate", "telephone", "travel"]
MNLI_NONFIRES_GENRES = ["facetoface", "letters", "nineeleven", "oup", "verbatim"]
MNLI_GENRE_ORDER = [0, 5, 7, 2, 3, 4, 1, 9, 6, 8]
MNLI_SORT_ROWS = [9, 1, 4, 6, 8]

CDR_RUN_ID = "reduced_cdr_sample_weights-True"
MNLI_RUN_ID = "mnli_sample_weights-None"
POS_LF_COLOR_INDEX, NEG_LF_COLOR_INDEX = 0, 3   # tab10 blue / red

SUPPLEMENT_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, pickle.UnpicklingError)


# --------------------------------------------------------------------------- settings
def get_env_dir(env_var: str, default: str | Path) -> Path:
    """``os.environ[env_var]`` or ``default``, created if missing."""
    path = Path(os.environ.get(env_var) or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_list(env_var: str, default: Sequence[str]) -> list[str]:
    """A comma/space separated list from ``env_var`` (``default`` when unset or empty)."""
    raw = os.environ.get(env_var, "")
    items = [s for s in raw.replace(",", " ").split() if s]
    return items or list(default)


def env_int(env_var: str, default: int) -> int:
    raw = os.environ.get(env_var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{env_var} must be an integer; got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{env_var} must be >= 1; got {value}")
    return value


@dataclass
class Settings:
    out_dir: Path
    plot_dir: Path
    datasets: list[str]
    num_subsets: int
    reg_datasets: list[str]
    reg_num_subsets: int
    data_dir: Path | None = None

    def describe(self) -> str:
        return "\n".join(f"{k:16s} {v}" for k, v in vars(self).items())


def settings_from_env() -> Settings:
    """Read every setting of the notebook from the environment (module docstring)."""
    data_dir = os.environ.get("INFLUENCE_FIG_DATA_DIR")
    return Settings(
        out_dir=get_env_dir("INFLUENCE_OUT_DIR", REPO_ROOT / "output"),
        plot_dir=get_env_dir("INFLUENCE_PLOT_DIR", REPO_ROOT / "plots"),
        datasets=env_list("INFLUENCE_FIG_DATASETS", DEFAULT_DATASETS),
        num_subsets=env_int("INFLUENCE_FIG_NUM_SUBSETS", 100),
        reg_datasets=env_list("INFLUENCE_FIG_REG_DATASETS", DEFAULT_REG_DATASETS),
        reg_num_subsets=env_int("INFLUENCE_FIG_REG_NUM_SUBSETS", 10),
        data_dir=Path(data_dir).expanduser() if data_dir else None,
    )


def display_name(dataset_id: str) -> str:
    return DATASET_NAMES.get(dataset_id, dataset_id)


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedRun:
    """A run's results (``R``) and config, or why it could not be loaded."""

    experiment_id: str
    run_id: str
    command: str
    R: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    problem: str | None = None   # 'missing', 'incomplete ...', 'unreadable ...'
    extra: dict[str, Any] = field(default_factory=dict)

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


def _out_dir_flag(settings: Settings) -> str:
    default = (REPO_ROOT / "output").resolve()
    return "" if Path(settings.out_dir).resolve() == default else f" --out-dir {settings.out_dir}"


def ss_logreg_run_id(dataset_id: str, num_subsets: int, fixed_reg: float | None = None) -> str:
    """The run id ``subsets_infl_logreg.py`` gives a paper-style range run."""
    try:
        from experiments.subset_influence import build_config, run_id_from_config
        return run_id_from_config(build_config(
            dataset_id=dataset_id, subset_choice_type="range", subset_min_rel_size=float(SIZES[0]),
            subset_max_rel_size=float(SIZES[1]), num_subsets=num_subsets, master_only=True,
            fixed_reg=fixed_reg))
    except (ImportError, ValueError):  # a dataset outside the experiment's table
        rid = f"{dataset_id}_ihvp-explicit_seed-0_sizes-{SIZES[0]}-{SIZES[1]}_num-{num_subsets}"
        return rid + (f"_rel-reg-{py2_float_str(fixed_reg)}" if fixed_reg is not None else "")


def ss_logreg_command(settings: Settings, dataset_id: str, num_subsets: int,
                      fixed_reg: float | str | None = None) -> str:
    """The ``subsets_infl_logreg.py`` command of a paper-style range run (``fixed_reg`` may be ``'$R'``)."""
    cmd = (f"python scripts/subsets_infl_logreg.py --dataset-id {dataset_id} --subset-choice-type range "
           f"--subset-min-rel-size {SIZES[0]} --subset-max-rel-size {SIZES[1]} --num-subsets {num_subsets} "
           f"--max-memory {PAPER_MAX_MEMORY} --no-intermediate-results")
    if fixed_reg is not None:
        cmd += f" --fixed-reg {fixed_reg if isinstance(fixed_reg, str) else py2_float_str(fixed_reg)}"
    return cmd + _out_dir_flag(settings)


def _ss_logreg_keys() -> list[str]:
    from experiments.subset_influence import SUMMARY_KEYS
    return list(SUMMARY_KEYS) + ["subset_indices"]


def load_ss_logreg(settings: Settings, dataset_id: str, num_subsets: int | None = None,
                   fixed_reg: float | None = None, verbose: bool = True) -> LoadedRun:
    """A ``ss_logreg`` range run (the 15 summary keys of ss_logreg.md §1.5)."""
    num = settings.num_subsets if num_subsets is None else num_subsets
    run = load_run(settings.out_dir, "ss_logreg", ss_logreg_run_id(dataset_id, num, fixed_reg),
                   ss_logreg_command(settings, dataset_id, num, fixed_reg), SS_LOGREG_PHASES,
                   _ss_logreg_keys(), verbose=verbose)
    run.extra.update(dataset_id=dataset_id, fixed_reg=fixed_reg)
    return run


def load_main_runs(settings: Settings, datasets: Sequence[str] | None = None) -> dict[str, LoadedRun]:
    return {ds: load_ss_logreg(settings, ds) for ds in (settings.datasets if datasets is None else datasets)}


def reg_values(dataset_id: str) -> list[float]:
    return list(REG_VALUES.get(dataset_id, DEFAULT_REG_VALUES))


def load_reg_sweep(settings: Settings, dataset_id: str) -> list[tuple[float, LoadedRun]]:
    """The ``--fixed-reg`` runs of one dataset (7 values, figures.md §1.4); quiet."""
    return [(r, load_ss_logreg(settings, dataset_id, settings.reg_num_subsets, r, verbose=False))
            for r in reg_values(dataset_id)]


def reg_sweep_message(settings: Settings, dataset_id: str, sweep: Sequence[tuple[float, LoadedRun]]) -> str | None:
    """None if every run is there, else which are missing and the loop that makes them."""
    missing = [r for r, run in sweep if not run.ok]
    if not missing:
        return None
    rid = ss_logreg_run_id(dataset_id, settings.reg_num_subsets, missing[0])
    head = rid[: rid.rindex("rel-reg-") + len("rel-reg-")]
    regs = " ".join(py2_float_str(r) for r in missing)
    return (f"missing ss_logreg/{head}{{{','.join(py2_float_str(r) for r in missing)}}}: run "
            f"for R in {regs}; do {ss_logreg_command(settings, dataset_id, settings.reg_num_subsets, '$R')}; done")


def load_counterexamples(settings: Settings, run_id: str) -> LoadedRun:
    dataset_id, _, dtype = run_id.partition("_")
    cmd = (f"python scripts/counterexamples.py --dataset-id {dataset_id} --no-intermediate-results"
           + (" --float32" if dtype == "float32" else "") + _out_dir_flag(settings))
    from experiments.counterexamples import SUMMARY_KEYS
    return load_run(settings.out_dir, "counterexamples", run_id, cmd, CEX_PHASES, list(SUMMARY_KEYS))


def load_data_valuation(settings: Settings) -> LoadedRun:
    cmd = "python scripts/data_valuation.py --dataset-id reduced_cdr --sample-weights" + _out_dir_flag(settings)
    keys = (["cv_l2_reg", "subset_tags", "subset_indices", "subset_LF_ids"]
            + [f"subset_{t}_test_{k}_infl" for t in ("pos", "neg", "all") for k in ("actl", "pred")])
    return load_run(settings.out_dir, "data_valuation", CDR_RUN_ID, cmd, DATA_VALUATION_PHASES, keys)


def load_credit_assignment(settings: Settings) -> LoadedRun:
    cmd = "python scripts/credit_assignment.py --dataset-id mnli --no-intermediate-results" + _out_dir_flag(settings)
    keys = (["cv_l2_reg", "initial_test_losses", "subset_tags", "test_genres", "nonfires_genres",
             "subset_indices", "all_test_pred_infl"]
            + [f"{g}_test_{k}_infl" for g in MNLI_TEST_GENRES for k in ("actl", "pred")]
            + [f"{g}_nonfires_{k}_infl" for g in MNLI_NONFIRES_GENRES for k in ("actl", "pred")])
    return load_run(settings.out_dir, "credit_assignment", MNLI_RUN_ID, cmd, CREDIT_PHASES, keys)


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
        from datasets.loader import load_supplemental_info
        with _offline():
            return load_supplemental_info(name, data_dir=data_dir, progress=False), None
    except SUPPLEMENT_ERRORS as exc:
        return None, f"unreadable supplement {name} ({exc}): run {command}"


def load_cdr_labeling_info(settings: Settings, run: LoadedRun | None):
    """``((LF_labels, gold_labels), None)`` or ``(None, message)``."""
    data_dir = data_dir_of(settings, run)
    babble = data_dir / "babble"
    cmd = (f"python scripts/load_all_datasets.py --data-dir {data_dir} --dataset-ids none "
           f"--supplement-ids cdr_labeling_info")
    return _load_supplement("cdr_labeling_info", data_dir,
                            [babble / "cdr_LF_labels.npz", babble / "cdr_gold_labels.npz"], cmd)


def load_mnli_train_genres(settings: Settings, run: LoadedRun | None):
    """``(train_genres, None)`` (str array, one per train example) or ``(None, message)``."""
    data_dir = data_dir_of(settings, run)
    cmd = f"python scripts/load_all_datasets.py --data-dir {data_dir} --dataset-ids none --supplement-ids mnli_genres"
    value, msg = _load_supplement("mnli_genres", data_dir, [data_dir / "multinli_1.0" / "mnli_genres.npz"], cmd)
    return (None, msg) if value is None else (np.asarray(value[0]).astype(str), None)


# --------------------------------------------------------------------------- fixed test points
def fixed_test_column(run: LoadedRun, dataset_id: str, which: str = "max") -> int:
    """The column of ``fixed_test`` a figure plots (figures.md §1.0).

    The paper's table for its datasets; otherwise (or if the table's column does not
    exist) the highest-loss fixed test point (``'max'``) or the one with loss rank
    closest to the median (``'median'``), from ``initial_test_losses``.
    """
    if which not in ("max", "median"):
        raise ValueError(f"which must be 'max' or 'median'; got {which!r}")
    table = FIXED_TEST_IDX if which == "max" else FIXED_TEST_IDX_MEDIAN
    fixed = np.asarray(run.R.get("fixed_test", []) if run.ok else [], dtype=np.int64)
    n_cols = len(fixed) if len(fixed) else 6
    if dataset_id in table and table[dataset_id] < n_cols:
        return table[dataset_id]
    losses = run.R.get("initial_test_losses") if run.ok else None
    if losses is None or not len(fixed):
        return min(2 if which == "max" else 3, n_cols - 1)
    losses = np.asarray(losses, dtype=float)
    if which == "max":
        return int(np.argmax(losses[fixed]))
    ranks = np.argsort(np.argsort(losses, kind="stable"), kind="stable")
    return int(np.argmin(np.abs(ranks[fixed] - (len(losses) - 1) / 2)))


def fixed_test_table(runs: dict[str, LoadedRun]):
    """Cell 6: each fixed test index, its loss and rank (0 = lowest loss) of N_test."""
    import pandas as pd

    rows = []
    for ds, run in runs.items():
        if not run.has("fixed_test", "initial_test_losses"):
            rows.append({"dataset": ds, "run_id": run.run_id, "status": run.message})
            continue
        losses = np.asarray(run.R["initial_test_losses"], dtype=float)
        ranks = np.argsort(np.argsort(losses, kind="stable"), kind="stable")
        k_max, k_med = fixed_test_column(run, ds, "max"), fixed_test_column(run, ds, "median")
        for col, idx in enumerate(np.asarray(run.R["fixed_test"], dtype=np.int64)):
            role = ",".join(r for r, k in (("plotted (max)", k_max), ("plotted (median)", k_med)) if k == col)
            rows.append({"dataset": ds, "run_id": run.run_id, "column": col, "test_index": int(idx),
                         "loss": float(losses[idx]), "rank": int(ranks[idx]), "n_test": len(losses),
                         "role": role, "status": "ok"})
    table = pd.DataFrame(rows, columns=["dataset", "run_id", "column", "test_index", "loss", "rank", "n_test",
                                        "role", "status"])
    return table.astype({c: "Int64" for c in ("column", "test_index", "rank", "n_test")})


# --------------------------------------------------------------------------- panel builders
def _column(value, k: int | None):
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 2:
        if k is None or k >= arr.shape[1]:
            raise ValueError(f"column {k} of an array of shape {arr.shape}")
        return arr[:, k]
    return arr.ravel()


def _see_above(run: LoadedRun) -> str:
    return f"missing {run.name} (see above)"


def group_grid(runs: dict[str, LoadedRun], rows: Sequence[tuple[str, str, str]], which: str = "max",
               options: dict | None = None, datasets: Sequence[str] | None = None):
    """Panels of a Figure 1/2/5/6-style grid: rows of quantities, one column per dataset.

    ``rows``: ``(row label, x key, y key)``; 2-D keys take the fixed-test column of
    :func:`fixed_test_column` (``which``). ``options[(row, dataset_id)]``: keyword
    arguments of :func:`experiments.plot.plot_group_correlation`. Points are coloured by
    subset type and drawn tail groups first. Returns ``(panels, row_labels, col_titles)``.
    """
    options = options or {}
    datasets = list(runs) if datasets is None else list(datasets)
    panels = [[None] * len(datasets) for _ in rows]
    for j, ds in enumerate(datasets):
        run = runs[ds]
        if not run.ok:
            for i in range(len(rows)):
                panels[i][j] = plot.Panel(kind="missing", text=run.message if i == 0 else _see_above(run))
            continue
        k = fixed_test_column(run, ds, which)
        tags = run.R.get("subset_tags") or []
        for i, (_, xkey, ykey) in enumerate(rows):
            if not run.has(xkey, ykey):
                panels[i][j] = plot.Panel(kind="na")  # e.g. no margin for a multiclass run
                continue
            try:
                x, y = _column(run.R[xkey], k), _column(run.R[ykey], k)
                if not (len(x) == len(y) == len(tags)):
                    raise ValueError(f"{xkey}: {len(x)}, {ykey}: {len(y)}, subset_tags: {len(tags)} entries")
            except ValueError as exc:
                panels[i][j] = plot.Panel(kind="na", text=f"cannot plot {run.name}: {exc}")
                continue
            panels[i][j] = plot.Panel(x=x, y=y, colors=plot.subset_type_colors(tags), order=plot.tail_first(tags),
                                      options=dict(options.get((i, ds), {})))
    return panels, [r[0] for r in rows], [display_name(ds) for ds in datasets]


def reg_grid(settings: Settings, sweeps: dict[str, list[tuple[float, LoadedRun]]],
             rows: Sequence[tuple[str, str, str]], options: dict | None = None):
    """Figure 3 panels: each dataset's sweep pooled in one panel, coloured by lambda/n.

    Each panel's ``groups`` hold r = lambda/n per point (for per-lambda Spearman).
    Returns ``(panels, row_labels, col_titles)``.
    """
    options = options or {}
    datasets = list(sweeps)
    panels = [[None] * len(datasets) for _ in rows]
    for j, ds in enumerate(datasets):
        present = [(r, run) for r, run in sweeps[ds] if run.ok]
        msg = reg_sweep_message(settings, ds, sweeps[ds])
        if msg:
            print(msg)
        if not present:
            for i in range(len(rows)):
                panels[i][j] = plot.Panel(kind="missing", text=msg if i == 0 else f"missing {ds} sweep (see above)")
            continue
        for i, (_, xkey, ykey) in enumerate(rows):
            xs, ys, gs = [], [], []
            for r, run in present:
                if not run.has(xkey, ykey):
                    continue
                k = fixed_test_column(run, ds, "max")
                try:
                    x, y = _column(run.R[xkey], k), _column(run.R[ykey], k)
                except ValueError:
                    continue
                if len(x) != len(y):
                    continue
                xs.append(x)
                ys.append(y)
                gs.append(np.full(len(x), r))
            if not xs:
                panels[i][j] = plot.Panel(kind="na")
                continue
            g = np.concatenate(gs)
            panels[i][j] = plot.Panel(x=np.concatenate(xs), y=np.concatenate(ys), colors=plot.reg_colors(g),
                                      order=np.random.RandomState(0).permutation(len(g)),
                                      options=dict(options.get((i, ds), {})), groups=g)
    return panels, [r[0] for r in rows], [display_name(ds) for ds in datasets]


def reg_spearman_table(panels, row_labels, datasets: Sequence[str]):
    """Per-lambda Spearman of every Figure 3 panel: rows (row, dataset), columns lambda/n."""
    import pandas as pd

    records = []
    for i, row in enumerate(panels):
        for j, p in enumerate(row):
            rhos = plot.spearman_by_group(p.x, p.y, p.groups) if p.kind == "scatter" else {}
            rec = {"row": row_labels[i].replace("\n", " "), "dataset": datasets[j]}
            for slot in REG_SLOTS:
                match = [v for r, v in rhos.items() if np.isclose(r, slot, rtol=1e-6)]
                rec[py2_float_str(slot)] = match[0] if match else np.nan
            records.append(rec)
    return pd.DataFrame(records)


def regs_spearman_series(table, datasets: Sequence[str]):
    """``{row label: [(name, regs, rhos, colour), ...]}`` for ``paper-regs-spearman.pdf``."""
    import matplotlib.pyplot as plt

    reg_cols = [c for c in table.columns if c not in ("row", "dataset")]
    regs = np.array([float(c) for c in reg_cols])
    out = {}
    for row in dict.fromkeys(table["row"]):
        series = []
        for n, ds in enumerate(datasets):
            sel = table[(table["row"] == row) & (table["dataset"] == ds)]
            if not len(sel):
                continue
            rhos = sel[reg_cols].to_numpy(dtype=float)[0]
            color = REG_LINE_COLORS.get(ds, plt.cm.tab10(n % 10))
            series.append((display_name(ds), regs, rhos, color))
        out[row] = series
    return out


def rho_table(rhos, row_labels: Sequence[str], col_titles: Sequence[str]):
    import pandas as pd

    return pd.DataFrame(np.asarray(rhos, dtype=float), index=[r.replace("\n", " ") for r in row_labels],
                        columns=list(col_titles))


# --------------------------------------------------------------------------- Figure 4
def cex_panel(run: LoadedRun, test_tag: str, occurrence: int = 0, subsets_key: str | None = None) -> "plot.Panel":
    """Newton (x) vs first-order (y) margin influence on one counterexample test point.

    The test point is the ``occurrence``-th point tagged ``test_tag``; groups are
    ``R[subsets_key]`` (all groups if None).
    """
    if not run.ok:
        return plot.Panel(kind="missing", text=run.message)
    needed = ["cex_tags", "cex_subset_test_pred_margin_infl", "cex_subset_test_newton_pred_margin_infl"]
    needed += [subsets_key] if subsets_key else []
    absent = [k for k in needed if not run.has(k)]
    if absent:
        return plot.Panel(kind="na", text=f"{run.name} has no {', '.join(absent)}")
    tags = list(run.R["cex_tags"])
    where = [i for i, t in enumerate(tags) if t == test_tag]
    if len(where) <= occurrence:
        return plot.Panel(kind="na", text=f"{run.name}: no test point #{occurrence} tagged {test_tag}")
    t = where[occurrence]
    pred = np.asarray(run.R["cex_subset_test_pred_margin_infl"])
    newton = np.asarray(run.R["cex_subset_test_newton_pred_margin_infl"])
    groups = np.asarray(run.R[subsets_key], dtype=np.int64) if subsets_key else np.arange(len(pred))
    if pred.ndim != 2 or pred.shape != newton.shape or pred.shape[1] != len(tags) or \
            (len(groups) and not 0 <= groups.min() <= groups.max() < len(pred)):
        return plot.Panel(kind="na", text=f"cannot plot {run.name}: inconsistent shapes {pred.shape}, "
                                          f"{newton.shape}, {len(tags)} tags, groups up to {groups.max(initial=-1)}")
    return plot.Panel(kind="cross", x=newton[groups, t], y=pred[groups, t], options={"size": 15})


def figure4_panels(left: LoadedRun, right: LoadedRun) -> list[list["plot.Panel"]]:
    """Left: gauss4, 3rd ``lstsq_uv_K-120_gauss`` point over its 120 groups; right: ortho2 ``cex_one``."""
    return [[cex_panel(left, "lstsq_uv_K-120_gauss", 2, "cex_lstsq_uv_K-120_subsets"),
             cex_panel(right, "cex_one")]]


# --------------------------------------------------------------------------- MNLI
def mnli_genres(run: LoadedRun, which: str) -> list[str]:
    key = f"{which}_genres"
    default = MNLI_TEST_GENRES if which == "test" else MNLI_NONFIRES_GENRES
    return [str(g) for g in run.R[key]] if run.has(key) else list(default)


def mnli_acc_panels(run: LoadedRun, which: str = "test", size: float = 9):
    """Per genre: actual vs predicted influence of each worker on the genre's dev loss."""
    genres = mnli_genres(run, which)
    if not run.ok:
        return [[plot.Panel(kind="missing", text=run.message if j == 0 else _see_above(run))
                 for j in range(len(genres))]], genres
    row = []
    for g in genres:
        xk, yk = f"{g}_{which}_actl_infl", f"{g}_{which}_pred_infl"
        if run.has(xk, yk):
            row.append(plot.Panel(x=run.R[xk], y=run.R[yk], colors=plot.subset_tag_color("pos_tail_test"),
                                  options={"size": size}))
        else:
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {xk}/{yk}"))
    return [row], genres


def _contributions(run: LoadedRun) -> np.ndarray:
    return np.array([len(s) for s in run.R["subset_indices"]], dtype=float)


def mnli_size_panel(run: LoadedRun) -> "plot.Panel":
    if not run.ok:
        return plot.Panel(kind="missing", text=run.message)
    if not run.has("subset_indices", "all_test_pred_infl"):
        return plot.Panel(kind="na", text=f"{run.name} has no subset_indices / all_test_pred_infl")
    return plot.Panel(x=_contributions(run), y=run.R["all_test_pred_infl"],
                      colors=plot.subset_tag_color("pos_tail_test"),
                      options=dict(size=9, equal=False, show_diagonal=False, show_x_axis=True, shrinkx=0.5,
                                   shrinky=0.6, anchor="max"))


def mnli_genre_effect(run: LoadedRun):
    """``(matrix, row_labels)`` of figures.md §1.1 #10, or ``(None, message)``.

    Rows: the 10 genres in the notebook's order; columns: workers sorted by their mean
    influence over verbatim, government, travel, letters and oup.
    """
    if not run.ok:
        return None, run.message
    genres = [(g, "test") for g in mnli_genres(run, "test")] + [(g, "nonfires") for g in mnli_genres(run, "nonfires")]
    keys = [f"{g}_{w}_pred_infl" for g, w in genres]
    absent = [k for k in keys if not run.has(k)]
    if absent:
        return None, f"{run.name} has no {', '.join(absent)}"
    M = np.vstack([np.asarray(run.R[k], dtype=float) for k in keys])
    sort_rows = [r for r in MNLI_SORT_ROWS if r < len(M)]
    M = M[:, np.argsort(M[sort_rows].mean(axis=0), kind="stable")]
    order = [r for r in MNLI_GENRE_ORDER if r < len(M)] if len(M) == 10 else list(range(len(M)))
    return M[order], [genres[r][0] for r in order]


def mnli_genre_contrib_panels(settings: Settings, run: LoadedRun):
    """Per matched genre: the worker's train examples in that genre vs its influence."""
    genres = mnli_genres(run, "test")
    if not run.ok:
        return [[plot.Panel(kind="missing", text=run.message if j == 0 else _see_above(run))
                 for j in range(len(genres))]], genres
    train_genres, msg = load_mnli_train_genres(settings, run)
    if train_genres is None or not run.has("subset_indices"):
        msg = msg or f"{run.name} has no subset_indices"
        print(msg)
        return [[plot.Panel(kind="missing", text=msg if j == 0 else "see above") for j in range(len(genres))]], genres
    top = max((int(np.max(s)) for s in run.R["subset_indices"] if len(s)), default=-1)
    if top >= len(train_genres):
        msg = f"the train genres ({len(train_genres)}) do not match {run.name} (index {top})"
        print(msg)
        return [[plot.Panel(kind="missing", text=msg if j == 0 else "see above") for j in range(len(genres))]], genres
    row = []
    for g in genres:
        yk = f"{g}_test_pred_infl"
        if not run.has(yk):
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {yk}"))
            continue
        counts = np.array([np.sum(train_genres[np.asarray(s, dtype=np.int64)] == g) for s in run.R["subset_indices"]],
                          dtype=float)
        row.append(plot.Panel(x=counts, y=run.R[yk], colors=plot.subset_tag_color("pos_tail_test"),
                              options=dict(size=9, equal=False, show_diagonal=False, show_x_axis=True,
                                           xlim=(-300, 6000), ylim=(-2, 2))))
    return [row], genres


# --------------------------------------------------------------------------- CDR
def lf_statistics(lf_labels: np.ndarray, gold_labels: np.ndarray, lf_ids: Sequence[int]):
    """Per LF id: ``(positive, precision)``.

    ``positive``: its first vote (table order) is > 0. ``precision``: the fraction of
    its votes on gold-labelled candidates that equal the gold label (NaN if none).
    ``lf_labels`` rows are (value, candidate_id, key_id); ``gold_labels`` rows
    (value, candidate_id).
    """
    lf_labels, gold_labels = np.asarray(lf_labels), np.asarray(gold_labels)
    gold = dict(zip(gold_labels[:, 1].tolist(), gold_labels[:, 0].tolist()))
    positive, precision = [], []
    for lf in lf_ids:
        votes = lf_labels[lf_labels[:, 2] == lf]
        positive.append(bool(len(votes)) and bool(votes[0, 0] > 0))
        matched = [(v, gold[c]) for v, c in zip(votes[:, 0].tolist(), votes[:, 1].tolist()) if c in gold]
        precision.append(np.mean([v == g for v, g in matched]) if matched else np.nan)
    return np.array(positive, dtype=bool), np.array(precision, dtype=float)


@dataclass
class CdrLFs:
    """The labelling-function groups of the data-valuation run and their statistics."""

    mask: np.ndarray                 # groups tagged same_features (one per LF)
    coverage: np.ndarray             # |S_k| / sum |S|, per LF group
    lf_ids: np.ndarray
    positive: np.ndarray | None      # None when the labelling info is unavailable
    precision: np.ndarray | None
    problem: str | None = None

    def colors(self):
        if self.positive is None:
            return [plot.UNKNOWN_TAG_COLOR]
        import matplotlib.pyplot as plt
        pos, neg = plt.cm.tab10(POS_LF_COLOR_INDEX), plt.cm.tab10(NEG_LF_COLOR_INDEX)
        return np.array([pos if p else neg for p in self.positive])

    @staticmethod
    def legend():
        import matplotlib.pyplot as plt
        return [("Pos. LF", plt.cm.tab10(POS_LF_COLOR_INDEX)), ("Neg. LF", plt.cm.tab10(NEG_LF_COLOR_INDEX))]


def cdr_lfs(settings: Settings, run: LoadedRun) -> CdrLFs | None:
    """LF groups, coverage, polarity and precision (None if the run is missing)."""
    if not run.has("subset_tags", "subset_indices"):
        return None
    tags = np.array([str(t) for t in run.R["subset_tags"]])
    mask = tags == "same_features"
    sizes = np.array([len(s) for s in run.R["subset_indices"]], dtype=float)[mask]
    coverage = sizes / sizes.sum() if sizes.sum() else sizes
    if run.has("subset_LF_ids"):
        lf_ids = np.asarray(run.R["subset_LF_ids"], dtype=np.int64)[mask]
    else:  # the original's assumption: group k is LF k + 1
        lf_ids = np.flatnonzero(mask) + 1
    info, msg = load_cdr_labeling_info(settings, run)
    if info is None:
        print(msg)
        return CdrLFs(mask, coverage, lf_ids, None, None, msg)
    positive, precision = lf_statistics(info[0], info[1], lf_ids)
    return CdrLFs(mask, coverage, lf_ids, positive, precision)


def _cdr_missing(run: LoadedRun, n: int):
    return [[plot.Panel(kind="missing", text=run.message if j == 0 else _see_above(run)) for j in range(n)]]


def cdr_acc_panels(run: LoadedRun, lfs: CdrLFs | None):
    """Actual vs predicted influence of each LF on the pos / neg test loss."""
    if lfs is None:
        return _cdr_missing(run, 2)
    row = []
    for t in ("pos", "neg"):
        xk, yk = f"subset_{t}_test_actl_infl", f"subset_{t}_test_pred_infl"
        if not run.has(xk, yk):
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {xk}/{yk}"))
            continue
        row.append(plot.Panel(x=np.asarray(run.R[xk])[lfs.mask], y=np.asarray(run.R[yk])[lfs.mask],
                              colors=lfs.colors(), options=dict(size=12, scientific=False)))
    if lfs.positive is not None and row[-1].kind == "scatter":
        row[-1].legend = CdrLFs.legend()
    return [row]


def cdr_vs_panels(run: LoadedRun, lfs: CdrLFs | None, quantity: str):
    """LF coverage or precision (x) vs predicted influence on the pos / neg test loss."""
    if lfs is None:
        return _cdr_missing(run, 2)
    if quantity == "precision" and lfs.precision is None:
        return [[plot.Panel(kind="missing", text=lfs.problem if j == 0 else "see above") for j in range(2)]]
    x = lfs.coverage if quantity == "coverage" else lfs.precision
    row = []
    for t in ("pos", "neg"):
        yk = f"subset_{t}_test_pred_infl"
        if not run.has(yk):
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {yk}"))
            continue
        row.append(plot.Panel(x=x, y=np.asarray(run.R[yk])[lfs.mask], colors=lfs.colors(),
                              options=dict(size=12, equal=False, show_diagonal=False, show_x_axis=True, pady=0.3,
                                           scientific=False)))
    if lfs.positive is not None and row[-1].kind == "scatter":
        row[-1].legend = CdrLFs.legend()
    return [row]


def combined_apps_panels(cdr_run: LoadedRun, lfs: CdrLFs | None, mnli_run: LoadedRun):
    """CDR coverage, CDR precision (each LF's influence on its own class's test loss), MultiNLI size."""
    row = []
    for quantity in ("coverage", "precision"):
        if lfs is None:
            row.append(plot.Panel(kind="missing", text=cdr_run.message if quantity == "coverage"
                                  else _see_above(cdr_run)))
            continue
        if lfs.positive is None or not cdr_run.has("subset_pos_test_pred_infl", "subset_neg_test_pred_infl"):
            row.append(plot.Panel(kind="missing", text=lfs.problem or f"{cdr_run.name} has no pos/neg test keys"))
            continue
        pos = lfs.positive
        xq = lfs.coverage if quantity == "coverage" else lfs.precision
        ypos = np.asarray(cdr_run.R["subset_pos_test_pred_infl"])[lfs.mask]
        yneg = np.asarray(cdr_run.R["subset_neg_test_pred_infl"])[lfs.mask]
        colors = lfs.colors()
        row.append(plot.Panel(x=np.concatenate([xq[pos], xq[~pos]]), y=np.concatenate([ypos[pos], yneg[~pos]]),
                              colors=np.concatenate([colors[pos], colors[~pos]]),
                              options=dict(size=12, equal=False, show_diagonal=False, show_x_axis=True, pady=0.3,
                                           scientific=False)))
    if row[1].kind == "scatter":
        row[1].legend = CdrLFs.legend()
    mnli = mnli_size_panel(mnli_run)
    if mnli.kind == "scatter":
        mnli.options = dict(mnli.options, shrinkx=None, shrinky=None)
    row.append(mnli)
    return [row]


# --------------------------------------------------------------------------- output
def save_figure(fig, name: str, settings: Settings) -> Path:
    """Save ``fig`` as ``plot_dir/name`` (dpi 300, bbox tight); close it unless shown inline."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(settings.plot_dir) / name
    fig.savefig(path, dpi=300, bbox_inches="tight")
    print(f"wrote {path}")
    if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
        plt.close(fig)
    return path


def save_table(table, name: str, settings: Settings, title: str | None = None) -> Path:
    """Print ``table`` (a DataFrame) and write it as ``plot_dir/name`` (CSV)."""
    import pandas as pd

    path = Path(settings.plot_dir) / name
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.precision", 4):
        print(title or name)
        print(table.to_string())
    table.to_csv(path)
    print(f"wrote {path}")
    return path
