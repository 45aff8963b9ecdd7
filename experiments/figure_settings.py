"""Settings of the paper-figures notebook, read from the environment, and the figures' fixed tables.

Environment variables (all optional):

``INFLUENCE_OUT_DIR``       results folder (default ``<repo>/output``)
``INFLUENCE_PLOT_DIR``      figures and CSV tables (default ``<repo>/plots``)
``INFLUENCE_FIG_DATASETS``  ss_logreg datasets of Figures 1, 2, 5, 6 (comma separated;
                            default ``hospital,spam,dogfish,reduced_cdr,mnist,breast_cancer,digits``)
``INFLUENCE_FIG_NUM_SUBSETS``      ``num`` of those runs' ids (default 100)
``INFLUENCE_FIG_REG_DATASETS``     datasets of the regularisation sweep, Figure 3
                                   (default ``hospital,spam,dogfish,mnist_small``)
``INFLUENCE_FIG_REG_NUM_SUBSETS``  ``num`` of the sweep's run ids (default 10)
``INFLUENCE_FIG_REG_VALUES``       the sweep's ``--fixed-reg`` values (comma separated;
                                   default: the paper's seven per dataset)
``INFLUENCE_FIG_DATA_DIR``  data folder for the supplements (CDR labelling info, MNLI
                            genres); default: the ``data_dir`` saved in the run's
                            config, else ``<repo>/data``

Paths default to ``<repo>/output`` and ``<repo>/plots``, not the working directory
(a deviation from the original notebook's ``./output`` and ``./plots``).

Runs on generated data (the application experiments on a generated CDR database and
MultiNLI bundle, made offline by ``scripts/reproduce.py``) live in
``{out_dir}/generated/`` (:data:`GENERATED_SUBDIR`), never next to the real runs; the
figures drawn from them carry ``-generated`` in their file names and say so in their
titles.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from experiments.common import REPO_ROOT

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
    "fashion_mnist": "Fashion-MNIST",
    "animals": "ImageNet",
    "reduced_cdr": "CDR",
    "breast_cancer": "Breast cancer",
    "digits": "Digits",
}
# Column of ``fixed_test`` plotted per dataset (as in the paper's figures).
FIXED_TEST_IDX = {"hospital": 2, "spam": 5, "dogfish": 2, "mnist_small": 2, "mnist": 1, "reduced_cdr": 2}
FIXED_TEST_IDX_MEDIAN = {"hospital": 3, "spam": 4, "dogfish": 3, "mnist_small": 5, "mnist": 3, "reduced_cdr": 5}

GENERATED_SUBDIR = "generated"
GENERATED_SUFFIX = "-generated"

# The regularisation sweep of the paper's figures: 7 of the 10 ``--fixed-reg`` values per dataset.
REG_ALL = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
REG_VALUES = {"hospital": REG_ALL[3:]}          # 1e-4 ... 100
DEFAULT_REG_VALUES = REG_ALL[:7]                # 1e-7 ... 0.1


def reg_values(dataset_id: str, override: Sequence[float] | None = None) -> list[float]:
    """The ``--fixed-reg`` values of ``dataset_id``'s sweep that Figure 3 plots (``override``:
    ``INFLUENCE_FIG_REG_VALUES``, the same for every dataset)."""
    return list(override) if override else list(REG_VALUES.get(dataset_id, DEFAULT_REG_VALUES))


def display_name(dataset_id: str) -> str:
    return DATASET_NAMES.get(dataset_id, dataset_id)


def get_env_dir(env_var: str, default: str | Path, environ: Mapping[str, str] | None = None) -> Path:
    """``environ[env_var]`` (default ``os.environ``) or ``default``, created if missing."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get(env_var) or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_list(env_var: str, default: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma/space separated list from ``env_var`` (``default`` when unset or empty)."""
    raw = (os.environ if environ is None else environ).get(env_var, "")
    items = [s for s in raw.replace(",", " ").split() if s]
    return items or list(default)


def env_int(env_var: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A positive integer from ``env_var`` (``default`` when unset or empty)."""
    raw = (os.environ if environ is None else environ).get(env_var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{env_var} must be an integer; got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{env_var} must be >= 1; got {value}")
    return value


def env_floats(env_var: str, environ: Mapping[str, str] | None = None) -> list[float] | None:
    """Positive numbers from ``env_var`` (comma/space separated); None when unset or empty."""
    raw = (os.environ if environ is None else environ).get(env_var, "")
    items = [s for s in raw.replace(",", " ").split() if s]
    if not items:
        return None
    try:
        values = [float(s) for s in items]
    except ValueError:
        raise ValueError(f"{env_var} must be numbers separated by commas; got {raw!r}") from None
    if not all(v > 0 for v in values):
        raise ValueError(f"{env_var} must be numbers > 0; got {raw!r}")
    return values


@dataclass
class Settings:
    """Where the runs and figures are, and which runs the figures read."""

    out_dir: Path
    plot_dir: Path
    datasets: list[str]
    num_subsets: int
    reg_datasets: list[str]
    reg_num_subsets: int
    data_dir: Path | None = None
    reg_values: list[float] | None = None

    @property
    def generated_out_dir(self) -> Path:
        """Where the runs on generated data are (``{out_dir}/generated``)."""
        return Path(self.out_dir) / GENERATED_SUBDIR

    def describe(self) -> str:
        return "\n".join(f"{k:16s} {v}" for k, v in vars(self).items())


def settings_from_env(environ: Mapping[str, str] | None = None, repo_root: Path = REPO_ROOT) -> Settings:
    """Read every setting of the notebook from ``environ`` (default ``os.environ``; module docstring).

    ``repo_root`` anchors the default folders (``<repo>/output``, ``<repo>/plots``), which
    are created if missing. Raises ``ValueError`` naming the variable for a bad number.
    """
    environ = os.environ if environ is None else environ
    data_dir = environ.get("INFLUENCE_FIG_DATA_DIR")
    return Settings(
        out_dir=get_env_dir("INFLUENCE_OUT_DIR", repo_root / "output", environ),
        plot_dir=get_env_dir("INFLUENCE_PLOT_DIR", repo_root / "plots", environ),
        datasets=env_list("INFLUENCE_FIG_DATASETS", DEFAULT_DATASETS, environ),
        num_subsets=env_int("INFLUENCE_FIG_NUM_SUBSETS", 100, environ),
        reg_datasets=env_list("INFLUENCE_FIG_REG_DATASETS", DEFAULT_REG_DATASETS, environ),
        reg_num_subsets=env_int("INFLUENCE_FIG_REG_NUM_SUBSETS", 10, environ),
        data_dir=Path(data_dir).expanduser() if data_dir else None,
        reg_values=env_floats("INFLUENCE_FIG_REG_VALUES", environ),
    )
