"""``ss_logreg``: group influence in logistic regression (see docs/design.md, 'Phases of ss_logreg').

Phases 0-14 keep the original's names, result keys and meanings. Differences (see
docs/design.md, 'Where this suite differs from the original'):

* Fits and refits reach a certified optimum (docs/design.md, 'Certified fits and refits'): refits are batched
  Newton solves warm-started from theta_hat (:mod:`influence.refit`; explicit Hessians
  for ``explicit`` runs, preconditioned Newton-CG for ``cg`` runs), and phase 6 adds
  the keys ``subset_refit_grad_norm``, ``subset_refit_grad_tol``, ``subset_refit_iters``,
  ``subset_refit_hessians``, ``subset_refit_hvps`` (Newton-CG Hessian-vector products;
  zero for explicit runs), ``subset_refit_converged`` and ``subset_refit_params``.
  Phase 1 adds ``initial_params``, ``initial_fit_grad_norm``, ``initial_fit_iters``.
* Phase 0 fits each fold along the regularisation path, the first fit cold and each
  later one warm-started from the previous lambda's optimum; all are certified, so only
  the optimisation path differs from the original's cold fits.
* Phase 6 stores, by default, only the columns later used:
  ``subset_test_losses``/``subset_test_margins`` have shape (S, 6) (fixed test points
  in ``fixed_test`` order) and ``subset_train_losses``/``subset_train_margins`` are
  ragged (group s: values at ``subset_indices[s]``). ``store_full_loss_matrices``
  restores the original (S, n_t) / (S, n) matrices.
* Phase 9 uses Woodbury / direct solves and the smaller symmetric eigenproblem;
  ``subset_hessian_spectrum`` holds the eigenvalues of ``-H^{-1} H_U`` sorted ascending
  (real, stored as complex128 as in the original; LAPACK's order cannot be matched).
* The Newton approximation is also computed for ``cg`` runs, by CG on ``H - H_U``
  (config key ``newton_for_cg``; ``skip_newton`` keeps the original's value), so their
  summaries also hold the ``nparam`` keys.
* Unseeded draws of the original are seeded (docs/design.md, 'Randomness'): KMeans uses
  ``random_state=KMEANS_SEED`` (0) with ``n_init=10`` and ``algorithm='elkan'`` (sklearn
  0.20's choice for dense data), on one thread so that the clusters do not depend on
  the core count; test points of datasets without a
  frozen list draw from ``RandomState(FIXED_TEST_SEED)`` (0); reduced_cdr's fixed test
  points are frozen to the paper run's ``[2702, 1756, 1755, 1115, 4039, 1155]``.
* Crashes of the original are fixed: unknown dataset ids, choice
  types, inverse methods and ``num_subsets < 3`` are rejected with clear errors when the
  config is built; ``plot_all`` skips figures whose keys are missing.
* Added offline datasets (not in the original's tables): ``fashion_mnist`` (``cg`` and
  CV range (1e-3, 1, 4) as ``mnist``; test points drawn, no frozen list), ``breast_cancer``,
  ``synthetic_binary``, ``synthetic_multiclass`` (explicit, CV range (1e-4, 1e-1, 10))
  and ``digits`` (explicit, (1e-4, 1e-1, 10)).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from datasets import storage, user_file
from datasets.spam import DEFAULT_VOCAB_FILTER as SPAM_DEFAULT_VOCAB_FILTER, VOCAB_FILTERS as SPAM_VOCAB_FILTERS
from experiments import cluster_cache, clustering, execution, subset_groups, tasks
from experiments.common import ConfigError, DatasetMixin, phase, py2_float_str, release_free_memory
from experiments.influence_base import InfluenceExperiment, contiguous_folds, cv_regs
from experiments.plot import get_simple_subset_tags
from experiments.subset_plots import plot_all, plot_summary
from influence import group_influence as gi
from influence.logistic_regression import INVERSE_HVP_METHODS
from influence.numerics import INVERSE_VP_METHODS

logger = logging.getLogger(__name__)

# dataset id -> (inverse_hvp_method, normalized_cross_validation_range)
DATASET_TABLE: dict[str, tuple[str, tuple[float, float, int]]] = {
    "hospital": ("explicit", (1e-4, 1e-1, 10)),
    "spam": ("explicit", (1e-4, 1e-1, 10)),
    "dogfish": ("explicit", (1e-4, 1e-1, 10)),
    "reduced_cdr": ("explicit", (1e-4, 1e-1, 10)),
    "animals": ("cg", (1e-4, 1e-1, 10)),
    "mnist": ("cg", (1e-3, 1, 4)),
    "mnist_small": ("cg", (1e-3, 1, 4)),
    "cifar10": ("cg", (1e-3, 1, 4)),
    "cifar10_small": ("cg", (1e-3, 1, 4)),
    # Offline datasets added by this project.
    "fashion_mnist": ("cg", (1e-3, 1, 4)),  # as mnist (same format and sizes)
    "breast_cancer": ("explicit", (1e-4, 1e-1, 10)),
    "digits": ("explicit", (1e-4, 1e-1, 10)),
    "synthetic_binary": ("explicit", (1e-4, 1e-1, 10)),
    "synthetic_multiclass": ("explicit", (1e-4, 1e-1, 10)),
}

FIXED_TEST: dict[str, list[int]] = {
    "hospital": [2267, 54826, 66678, 41567, 485, 25286],
    "spam": [386, 842, 326, 766, 65, 642],
    "mnist_small": [6172, 2044, 2293, 5305, 324, 3761],
    "mnist": [9009, 1790, 2293, 5844, 8977, 9433],
    "dogfish": [300, 339, 222, 520, 323, 182],
    "animals": [684, 850, 1492, 2380, 1539, 1267],
    "cifar10": [3629, 1019, 5259, 1082, 4237, 6811],
    # Frozen to the paper run's draw (the original drew them unseeded; see docs/design.md, 'Randomness').
    "reduced_cdr": [2702, 1756, 1755, 1115, 4039, 1155],
}

FIXED_TEST_SEED = 0
KMEANS_SEED = 0
TAIL_FRACTIONS = (0.0025, 0.025, 0.1, 0.25)
# The group types of phase 5, in the order they are drawn (see docs/design.md, 'Group
# types'); ``--group-types`` selects some of them.
GROUP_TYPES = ("random", "random_same_class", "neg_tail_test", "pos_tail_test", "same_features", "same_grad",
               "feature_window")
TAIL_TYPES = ("neg_tail_test", "pos_tail_test")
CHOICE_TYPES = ("types", "range")

SUMMARY_KEYS = [
    "cv_l2_reg", "initial_test_losses", "fixed_test", "subset_tags",
    "subset_fixed_test_actl_margin_infl", "subset_fixed_test_pred_margin_infl",
    "subset_fixed_test_actl_infl", "subset_fixed_test_pred_infl",
    "subset_self_actl_infl", "subset_self_pred_infl",
    "subset_self_pparam_infl", "subset_self_nparam_infl",
    "subset_fixed_test_nparam_margin_infl", "subset_fixed_test_nparam_infl",
    "subset_fixed_test_pparam_infl",
]
# Certificates of the exact refits, the groups' indices and the Newton estimates, added to
# the summary by this project (so that groups.csv can be written in summary mode too).
EXTRA_SUMMARY_KEYS = ["subset_refit_grad_norm", "subset_refit_grad_tol", "subset_refit_iters",
                      "subset_indices", "subset_self_newton_infl", "subset_fixed_test_newton_infl",
                      "subset_fixed_test_newton_margin_infl"]


def build_config(dataset_id: str | None = None, data_dir: str | None = None, subset_seed: int = 0,
                 subset_choice_type: str = "types", subset_rel_size: float = 0.1,
                 subset_min_rel_size: float = 0.0025, subset_max_rel_size: float = 0.25,
                 num_subsets: int = 5, inverse_hvp_method: str | None = None,
                 inverse_vp_method: str | None = None, max_memory: int = int(1e9),
                 skip_hessian_spectrum: bool = False, tag: str | None = None,
                 master_only: bool = False, fixed_reg: float | None = None,
                 dtype: str = "float64", store_full_loss_matrices: bool = False,
                 kmeans_n_init: int = 10, num_train: int | None = None,
                 dataset_file: str | None = None, spam_vocab_filter: str | None = None,
                 standardize: bool = False, group_types=None) -> dict[str, Any]:
    """The config dict of the original's flags (plus this project's settings; see
    docs/design.md, 'Run ids and configs').

    Every rule on the flags is checked here, before anything runs, including the group
    sizes (:func:`check_group_sizes`), which need the number of training points: pass
    ``num_train``, or it is taken from :data:`NUM_TRAIN` (datasets whose size the loaders
    fix); for a dataset outside that table the sizes are checked when phase 5 draws them.

    ``dataset_id`` defaults to ``hospital``. ``dataset_file`` (``--dataset-file``, not
    together with ``dataset_id``) names a user's ``.npz`` or ``.csv`` file
    (:mod:`datasets.user_file`): the dataset id becomes ``file-{stem}-{sha256[:12]}`` of
    the file's name and content (:func:`file_dataset_config`), with the settings of
    :data:`FILE_DATASET_SETTINGS`, and the training size is read from the file. A file
    with a feature beyond :data:`datasets.user_file.MAX_ABS_FEATURE` in magnitude is
    refused when the run starts, unless ``standardize`` (``--standardize``, files only)
    standardises its columns (run id suffix ``_standardized``).

    ``spam_vocab_filter`` (``--spam-vocab-filter``, spam only): the Enron token filter of
    :func:`datasets.spam.load_spam`; ``'lexeme_prob'`` (the default: the
    paper's vocabulary size) or ``'none'`` (every alphabetic non-stop lemma, the earlier
    rule; the run id gets a ``_vocab-none`` suffix).

    ``group_types`` (``--group-types``): names of :data:`GROUP_TYPES` to draw, or None
    for all of them (the original's groups). A selection is stored in the config as
    ``group_types`` (in :data:`GROUP_TYPES` order) and names the run id
    (``_types-random,same_grad``); with all types the config and run id are the
    original's. Types that a dataset is too small for are skipped (:func:`group_types_for`).
    """
    if dataset_file is not None:
        if dataset_id is not None:
            raise ConfigError(f"give --dataset-id or --dataset-file, not both; got --dataset-id {dataset_id!r} "
                              f"and --dataset-file {str(dataset_file)!r}")
        dataset_config = file_dataset_config(dataset_file, data_dir)
        dataset_id = dataset_config["dataset_id"]
        if num_train is None:
            num_train = user_file.num_train(dataset_file)
        if standardize:
            dataset_config["standardize"] = True  # absent otherwise: earlier configs and run ids unchanged
    else:
        dataset_id = "hospital" if dataset_id is None else dataset_id
        dataset_config = {"dataset_id": dataset_id, "center_data": False, "append_bias": False,
                          "data_dir": data_dir}
        if standardize:
            raise ConfigError(f"--standardize applies to --dataset-file only (registered datasets are used as "
                              f"published); got --dataset-id {dataset_id!r}")
    if spam_vocab_filter is not None:
        if dataset_id != "spam":
            raise ConfigError(f"--spam-vocab-filter applies to --dataset-id spam only; got --dataset-id {dataset_id!r}")
        if spam_vocab_filter not in SPAM_VOCAB_FILTERS:
            raise ConfigError(f"--spam-vocab-filter must be one of {SPAM_VOCAB_FILTERS}; got {spam_vocab_filter!r}")
        if spam_vocab_filter != SPAM_DEFAULT_VOCAB_FILTER:  # the default keeps the original's config and run id
            dataset_config["vocab_filter"] = spam_vocab_filter
    if dataset_file is None and dataset_id not in DATASET_TABLE:
        raise ConfigError(f"--dataset-id must be one of {sorted(DATASET_TABLE)}; got {dataset_id!r} "
                          "(the original raised KeyError here)")
    if subset_choice_type not in CHOICE_TYPES:
        raise ConfigError(f"--subset-choice-type must be one of {CHOICE_TYPES}; got {subset_choice_type!r}")
    if int(num_subsets) != num_subsets or num_subsets < 3:
        raise ConfigError(f"--num-subsets must be an integer >= 3 (the tail groups need three size "
                          f"phases); got {num_subsets!r}")
    if num_subsets > MAX_NUM_SUBSETS:
        raise ConfigError(f"--num-subsets must be <= {MAX_NUM_SUBSETS} (each size gives about 20 groups, each "
                          f"refitted exactly; the paper used 100); got {num_subsets!r}")
    for name, value in (("--subset-rel-size", subset_rel_size), ("--subset-min-rel-size", subset_min_rel_size),
                        ("--subset-max-rel-size", subset_max_rel_size)):
        if not (0 < value <= 1):
            raise ConfigError(f"{name} must be in (0, 1]; got {value!r}")
    if subset_min_rel_size > subset_max_rel_size:
        raise ConfigError(f"--subset-min-rel-size ({subset_min_rel_size}) must be <= "
                          f"--subset-max-rel-size ({subset_max_rel_size})")
    if inverse_hvp_method is not None and inverse_hvp_method not in INVERSE_HVP_METHODS:
        raise ConfigError(f"--inverse-hvp-method must be 'explicit', 'cg' or 'fmin_ncg' (cg's first-order solves "
                          f"by the original's scipy fmin_ncg); got {inverse_hvp_method!r}")
    if inverse_vp_method is not None and inverse_vp_method not in INVERSE_VP_METHODS:
        raise ConfigError(f"--inverse-vp-method must be one of {', '.join(INVERSE_VP_METHODS)}; got {inverse_vp_method!r}")
    if fixed_reg is not None and not (fixed_reg > 0 and math.isfinite(fixed_reg)):
        raise ConfigError(f"--fixed-reg must be a positive number; got {fixed_reg!r}")
    if dtype not in ("float64", "float32"):
        raise ConfigError(f"dtype must be 'float64' or 'float32'; got {dtype!r}")
    if int(kmeans_n_init) != kmeans_n_init or kmeans_n_init < 1:
        raise ConfigError(f"--kmeans-n-init must be a positive integer; got {kmeans_n_init!r}")
    if int(max_memory) != max_memory or max_memory < 1:
        raise ConfigError(f"--max-memory must be a positive integer number of bytes; got {max_memory!r}")
    if int(subset_seed) != subset_seed or not 0 <= subset_seed < 2 ** 32:
        raise ConfigError(f"--subset-seed must be an integer in [0, 2**32) (a numpy RandomState seed); "
                          f"got {subset_seed!r}")
    if group_types is not None:
        names = [t.strip() for t in group_types.split(",")] if isinstance(group_types, str) else list(group_types)
        unknown = [t for t in names if t not in GROUP_TYPES]
        if unknown or not names:
            raise ConfigError(f"--group-types must be a comma-separated list of {', '.join(GROUP_TYPES)}; "
                              f"got {group_types!r}")
        group_types = [t for t in GROUP_TYPES if t in names]
    if tag is not None and (not tag or tag in (".", "..") or any(c in tag for c in "/\\\0")):
        raise ConfigError(f"--tag becomes part of the run folder's name, so it must be non-empty and contain "
                          f"no '/', '\\' or NUL; got {tag!r}")

    method, cv_range = FILE_DATASET_SETTINGS if dataset_file is not None else DATASET_TABLE[dataset_id]
    config: dict[str, Any] = {
        "dataset_config": dataset_config,
        "subset_seed": int(subset_seed),
        "subset_choice_type": subset_choice_type,
        "subset_rel_size": float(subset_rel_size),
        "subset_min_rel_size": float(subset_min_rel_size),
        "subset_max_rel_size": float(subset_max_rel_size),
        "num_subsets": int(num_subsets),
        "cross_validation_folds": 5,
        "inverse_hvp_method": inverse_hvp_method or method,
        "inverse_vp_method": inverse_vp_method or "cholesky_lu",
        "max_memory": int(max_memory),
        "skip_hessian_spectrum": bool(skip_hessian_spectrum),
        "tag": tag,
        "master_only": bool(master_only),
    }
    if group_types is not None and len(group_types) < len(GROUP_TYPES):
        config["group_types"] = group_types
    skip = config["inverse_hvp_method"] != "explicit"
    config["skip_newton"] = config["skip_z_norms"] = config["skip_param_change_norms"] = skip
    if dataset_id == "mnist_small":
        config["skip_newton"] = False
    if fixed_reg is not None:
        config["tag"] = "rel-reg-" + py2_float_str(fixed_reg)
        config["skip_newton"] = False
        config["skip_z_norms"] = True
        config["skip_param_change_norms"] = True
        config["normalized_cross_validation_range"] = (float(fixed_reg), float(fixed_reg), 1)
    else:
        config["normalized_cross_validation_range"] = cv_range
    # Project settings (float32 is recorded, and named in the run id only when on).
    config["dtype"] = dtype
    config["store_full_loss_matrices"] = bool(store_full_loss_matrices)
    # The original skipped the Newton approximation for cg runs (skip_newton above keeps
    # its value for fidelity); this project computes it by CG on H - H_U.
    config["newton_for_cg"] = True
    # KMeans restarts for the same_features / same_grad pools: 10 as in sklearn 0.20
    # (faithful; the dominant cost of phase 5 on large n).
    config["kmeans_n_init"] = int(kmeans_n_init)
    run_id = run_id_from_config(config)
    if len(run_id.encode()) > 255:
        raise ConfigError(f"the run id {run_id[:60]!r}... is {len(run_id.encode())} bytes, longer than a folder "
                          "name may be (255); shorten --tag")
    n = NUM_TRAIN.get(dataset_id) if num_train is None else num_train
    if n is not None:
        check_group_sizes(config, int(n))
        if fixed_reg is not None and not math.isfinite(fixed_reg * n):
            raise ConfigError(f"--fixed-reg {fixed_reg}: lambda = {fixed_reg} x n_train ({n}) is not a finite "
                              "float64; use a smaller value")
    return config


# (inverse_hvp_method, normalized_cross_validation_range) of a --dataset-file: explicit
# Hessians (the estimator ladder needs them; pass --inverse-hvp-method cg for wide data)
# and the CV range of the offline datasets.
FILE_DATASET_SETTINGS: tuple[str, tuple[float, float, int]] = ("explicit", (1e-4, 1e-1, 10))


def file_dataset_config(dataset_file: str, data_dir: str | None = None) -> dict[str, Any]:
    """The ``dataset_config`` of a user's file: its id ``file-{stem}-{sha256[:12]}``, its
    absolute path and the digest of its content (hashed once, here; the loader checks the
    file still has it). The path is not part of the results' identity: a moved file with
    the same content reuses its results (:func:`experiments.common.result_config`)."""
    path = Path(dataset_file).expanduser().resolve()
    user_file.file_format(path)
    sha = user_file.file_sha256(path)
    return {"dataset_id": user_file.dataset_id_for(path, sha), "center_data": False, "append_bias": False,
            "data_dir": data_dir, "dataset_file": str(path), "dataset_sha256": sha}


MAX_NUM_SUBSETS = 100_000  # a sanity bound: 2 million exact refits are out of reach anyway

# Training-set sizes fixed by the loaders (tests check them against the
# loaders where the data are present), so that build_config can check the group sizes
# without loading the data. reduced_cdr is absent: its size depends on the CDR database.
NUM_TRAIN: dict[str, int] = {
    "hospital": 20000, "spam": 4137, "mnist": 55000, "mnist_small": 5500, "cifar10": 49000,
    "cifar10_small": 4900, "dogfish": 1800, "animals": 9000, "breast_cancer": 455, "digits": 1437,
    "synthetic_binary": 600, "synthetic_multiclass": 600, "fashion_mnist": 55000,
}


def check_group_sizes(config: dict[str, Any], n: int) -> None:
    """Check the group sizes phase 5 draws for ``n`` training points (:class:`ConfigError`).

    Rules: every group has at least 1 point and leaves at least 1 point to refit on
    (a group of all n points leaves an empty training set), and tail groups asked for by
    ``--group-types`` have a smallest size ``int(0.0025 n)`` of at least 1 (n >= 400;
    with all types, a smaller dataset skips the tail groups: :func:`group_types_for`).
    """
    c = config
    ds = c["dataset_config"]["dataset_id"]
    if c["subset_choice_type"] == "types":
        flags = ((f"--subset-rel-size {c['subset_rel_size']}", c["subset_rel_size"]),) * 2
        smallest = largest = int(n * c["subset_rel_size"])
    else:  # np.linspace(smallest, largest, num).astype(int) in phase 5
        flags = ((f"--subset-min-rel-size {c['subset_min_rel_size']}", c["subset_min_rel_size"]),
                 (f"--subset-max-rel-size {c['subset_max_rel_size']}", c["subset_max_rel_size"]))
        smallest, largest = int(n * c["subset_min_rel_size"]), int(n * c["subset_max_rel_size"])
    if smallest < 1:
        (flag, rel), _ = flags
        raise ConfigError(f"{flag}: the smallest group would have int({n} x {rel}) = {smallest} points "
                          f"({ds} has {n} training points); groups need at least 1 point, i.e. a relative size "
                          f">= 1/{n}")
    if largest > n - 1:
        _, (flag, rel) = flags
        raise ConfigError(f"{flag}: the largest group would have {largest} of the {n} training points "
                          f"of {ds}, leaving {n - largest} to refit on; a group must leave at least "
                          "1 point, i.e. a relative size < 1")
    group_types_for(config, n)


def group_types_for(config: dict[str, Any], n: int) -> tuple[list[str], str | None]:
    """The group types phase 5 draws for ``n`` training points, and the one-line reason
    for the types it skips (None when none is skipped).

    The tail types need ``int(0.0025 n) >= 1`` (n >= 400). With all types (no
    ``group_types`` in the config) a smaller dataset skips them; when ``--group-types``
    names one of them, it is a :class:`ConfigError`.
    """
    chosen = config.get("group_types")
    types = list(GROUP_TYPES if chosen is None else chosen)
    tails = [t for t in types if t in TAIL_TYPES]
    if not tails or int(n * TAIL_FRACTIONS[0]) >= 1:
        return types, None
    ds = config["dataset_config"]["dataset_id"]
    why = (f"{ds} has {n} training points, too few for the tail groups (their smallest size "
           f"int({TAIL_FRACTIONS[0]} n) must be >= 1, i.e. n >= 400)")
    if chosen is not None:
        raise ConfigError(f"--group-types {','.join(chosen)}: {why}; leave out {' and '.join(tails)}")
    return [t for t in types if t not in TAIL_TYPES], f"skipping the group types {', '.join(tails)}: {why}"


def newton_enabled(config: dict[str, Any]) -> bool:
    """Whether phase 9 computes the Newton approximation (see ``newton_for_cg``)."""
    return (not config["skip_newton"]) or bool(config.get("newton_for_cg", False))


def run_id_from_config(config: dict[str, Any]) -> str:
    c = config
    ds = c["dataset_config"]["dataset_id"]
    head = f"{ds}_ihvp-{c['inverse_hvp_method']}_seed-{c['subset_seed']}"
    if c["subset_choice_type"] == "types":
        rid = f"{head}_size-{py2_float_str(c['subset_rel_size'])}_num-{c['num_subsets']}"
    else:
        rid = (f"{head}_sizes-{py2_float_str(c['subset_min_rel_size'])}-"
               f"{py2_float_str(c['subset_max_rel_size'])}_num-{c['num_subsets']}")
    if c.get("tag") is not None:
        rid += f"_{c['tag']}"
    if c.get("dtype", "float64") != "float64":
        rid += f"_{c['dtype']}"
    if "vocab_filter" in c["dataset_config"]:
        rid += f"_vocab-{c['dataset_config']['vocab_filter']}"
    if c["dataset_config"].get("standardize"):
        rid += "_standardized"
    if c.get("group_types") is not None:
        rid += f"_types-{','.join(c['group_types'])}"
    return rid


def format_label(value) -> str:
    """A label as the original printed it: ints plainly, floats Python-2 style (``0.0``)."""
    if isinstance(value, (float, np.floating)):
        return py2_float_str(float(value))
    return str(int(value))


def _pool_from_labels(labelings) -> list[np.ndarray]:
    return [np.flatnonzero(labels == lab) for labels in labelings for lab in np.unique(labels)]


def cluster_pool(X: np.ndarray, n_init: int = 10) -> list[np.ndarray]:
    """Single-linkage ``fclusterdata(X, 1)`` clusters, then KMeans for k = 4..128."""
    return cluster_pools([X], n_init, parallel=False)[0]


def _matrix(M):
    """A matrix to cluster: an array, or a :class:`experiments.clustering.MatrixFile` or
    :class:`experiments.clustering.FactoredMatrix` as is."""
    return M if clustering.is_held(M) else np.asarray(M)


# Below this many rows a pool takes well under a second: not worth running parts side by side.
PARALLEL_MIN_ROWS = 2000


def cluster_labelings(mats, n_init: int = 10, parallel: bool = True,
                       executor: execution.Executor | None = None, known: dict | None = None,
                       on_done=None, max_memory: int | None = None) -> list[list[np.ndarray]]:
    """The labellings of :func:`cluster_pool` for each matrix in ``mats``.

    Each labelling (the single linkage, or one KMeans k) is one task of the run's
    executor (:func:`experiments.clustering.pool_part_task`, computed on one thread, so
    the labels do not depend on where it runs), submitted longest first (single linkage,
    then k = 128, 64, ...; the matrices alternating) so that the workers stay busy to the
    end. On a Dask cluster the matrices are scattered to the workers once. Embedded
    (``executor`` None or embedded), with ``parallel`` and at least
    :data:`PARALLEL_MIN_ROWS` rows, the labellings run side by side in threads of this
    process as far as CPUs and memory allow
    (:func:`experiments.clustering.part_memory`; with ``max_memory`` (the run's
    ``--max-memory``) the labellings running together need at most the largest one's
    memory plus ``max_memory``, so two labellings of Fashion-MNIST's 3.45 GB gradients,
    each with its own copy, never run side by side: such a KMeans runs its restarts side by
    side instead, one per CPU, on its one copy); otherwise one after the other. The labels
    are the same either way, bit for bit. A matrix may be a
    :class:`experiments.clustering.MatrixFile` (phase 5's gradients of a binary model),
    read by each labelling when it starts, or a
    :class:`experiments.clustering.FactoredMatrix` (those of a multinomial model).

    ``known`` maps ``(matrix index, part)`` to labellings already computed (a resumed
    run's part files); ``on_done(i, part, labels)`` is called as each new one finishes.
    A progress bar counts the labellings, and each is logged with its wall time.
    """
    parts = [clustering.pool_parts(M.shape[0]) for M in mats]
    # Longest first (single linkage, then k = 128, 64, ...), the matrices alternating; the
    # pool keeps pool_parts' order whatever order the labellings finish in.
    longest = [[p for p in ps if p == "single"] + sorted((p for p in ps if p != "single"), reverse=True)
               for ps in parts]
    order = [(i, p) for j in range(max(map(len, parts), default=0)) for i in range(len(mats))
             for p in longest[i][j:j + 1]]
    done: dict[tuple, np.ndarray] = dict(known or {})
    todo = [key for key in order if key not in done]
    mats = [_matrix(M) for M in mats]

    def finish(index, result):
        key, (labels, seconds) = todo[index], result
        done[key] = labels
        M = mats[key[0]]
        what = "single linkage" if key[1] == "single" else f"KMeans k={key[1]}"
        logger.info("clustering: %s of matrix %d (%d x %d) took %.1f s", what, key[0], M.shape[0],
                    int(np.prod(M.shape[1:])), seconds)
        if on_done is not None:
            on_done(key[0], key[1], labels)

    if todo:
        executor = executor if executor is not None else execution.Executor()
        side_by_side = parallel and min(M.shape[0] for M in mats) >= PARALLEL_MIN_ROWS
        memory = [clustering.part_memory(mats[i], p) for i, p in todo] if side_by_side else None
        budget = max(memory) + int(max_memory) if memory is not None and max_memory is not None else None
        threads = [1] * len(todo)
        if budget is not None and not executor.distributed:
            # A KMeans that the budget lets run beside no other of its size would leave CPUs
            # idle: its restarts run side by side instead (on its one copy; the same labels).
            threads = [execution.num_cpus() if p != "single" and 2 * m > budget else 1
                       for (i, p), m in zip(todo, memory)]
            memory = [clustering.part_memory(mats[i], p, t) for (i, p), t in zip(todo, threads)]
        specs = [(i, p, n_init, KMEANS_SEED, t) for (i, p), t in zip(todo, threads)]
        executor.map(clustering.pool_part_task, mats, specs, "clustering pools", memory=memory, on_result=finish,
                     memory_budget=budget)
    return [[done[(i, p)] for p in parts[i]] for i in range(len(mats))]


def cluster_pools(mats, n_init: int = 10, parallel: bool = True,
                  executor: execution.Executor | None = None, max_memory: int | None = None) -> list[list[np.ndarray]]:
    """:func:`cluster_pool` of each matrix in ``mats`` (see :func:`cluster_labelings`)."""
    return [_pool_from_labels(lab) for lab in cluster_labelings(mats, n_init, parallel, executor,
                                                                max_memory=max_memory)]


def cached_cluster_pools(mats, n_init: int = 10, cache_dir=None, parallel: bool = True,
                         executor: execution.Executor | None = None,
                         max_memory: int | None = None) -> list[list[np.ndarray]]:
    """:func:`cluster_pools`, reusing the labellings cached in ``cache_dir``
    (:mod:`experiments.cluster_cache`; ``None``: no cache) and caching new ones."""
    if cache_dir is None:
        return cluster_pools(mats, n_init, parallel, executor, max_memory)
    mats = [_matrix(M) for M in mats]
    parts = [clustering.pool_parts(M.shape[0]) for M in mats]
    keys = [cluster_cache.cache_key(M, p, n_init, KMEANS_SEED) for M, p in zip(mats, parts)]
    labels = [cluster_cache.load_labels(cache_dir, k, M.shape[0], len(p)) for M, k, p in zip(mats, keys, parts)]
    missing = [i for i, lab in enumerate(labels) if lab is None]
    if len(missing) < len(mats):
        logger.info("clustering pools of %d of %d matrices reused from %s", len(mats) - len(missing), len(mats),
                    cache_dir)
    if missing:
        # Labellings finished by an earlier, interrupted run (one file per labelling).
        known = {}
        for a, i in enumerate(missing):
            for j, p in enumerate(parts[i]):
                lab = cluster_cache.load_part(cache_dir, keys[i], j, mats[i].shape[0])
                if lab is not None:
                    known[(a, p)] = lab
        if known:
            logger.info("clustering: %d labellings reused from an interrupted run in %s", len(known), cache_dir)

        def save_part(a, p, lab):
            i = missing[a]
            cluster_cache.save_part(cache_dir, keys[i], parts[i].index(p), lab)

        new = cluster_labelings([mats[i] for i in missing], n_init, parallel, executor, known=known,
                                on_done=save_part, max_memory=max_memory)
        for i, lab in zip(missing, new):
            labels[i] = lab
            cluster_cache.save_labels(cache_dir, keys[i], lab)
            cluster_cache.remove_parts(cache_dir, keys[i], len(parts[i]))
    return [_pool_from_labels(lab) for lab in labels]


class SubsetInfluenceLogreg(DatasetMixin, InfluenceExperiment):
    """Group influence of subsets of the training set on test/self loss and margin."""

    experiment_id = "ss_logreg"

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        super().__init__(config, out_dir, progress)
        self._datasets = None

    # ------------------------------------------------------------------ setup
    @property
    def cluster_cache_dir(self) -> Path | None:
        """Where phase 5 caches its clustering labellings (:mod:`experiments.cluster_cache`):
        ``<out_dir>/.cache``, shared by the runs of one out dir; ``None`` (no cache) when
        the environment sets ``INFLUENCE_CLUSTER_CACHE=0``."""
        if os.environ.get("INFLUENCE_CLUSTER_CACHE", "1").strip().lower() in ("0", "off", "no", "false"):
            return None
        return Path(self.out_dir) / ".cache"

    def scratch_dirs(self) -> list[Path]:
        """The clustering cache, whose temporaries a killed run leaves like the run folder's."""
        return [] if self.cluster_cache_dir is None else [self.cluster_cache_dir]

    @property
    def run_id(self) -> str:
        return run_id_from_config(self.config)

    def get_simple_subset_tags(self) -> list[str]:
        """``R['subset_tags']`` without their suffixes (``random_same_class-1`` ->
        ``random_same_class``, ``pos_tail_test-2-17`` -> ``pos_tail_test``): the original's
        method, used by the figures notebook; a list, not Python 3's one-shot ``map``."""
        return get_simple_subset_tags(self.R["subset_tags"])

    @property
    def binary(self) -> bool:
        return self.get_model().spec.binary

    # ------------------------------------------------------------------ phases
    @phase(0)
    def cross_validation(self):
        X, y = np.asarray(self.train.x), self.train.labels
        n = self.num_train
        regs = cv_regs(n, self.config["normalized_cross_validation_range"])
        # Every fold of range(folds), warm-started along the regularisation path: the
        # first fit of a fold is cold (from zero, as in the original); each later one
        # starts at the previous lambda's optimum. Every fit is certified to the same
        # gradient-norm tolerance, so only the optimisation path changes (see
        # docs/design.md, 'Certified fits and refits'), and it takes fewer Newton iterations.
        folds = contiguous_folds(n, self.config["cross_validation_folds"], skip_empty=False)
        cv = self.cross_validate(X, y, regs, folds, warm_start=True)
        best = int(np.argmax(cv["cv_accs"]))  # accuracy, not loss; first index on ties
        return {"cv_regs": regs, "cv_errors": cv["cv_errors"], "cv_accs": cv["cv_accs"],
                "cv_l2_reg": float(regs[best])}

    @phase(1)
    def initial_training(self):
        model = self.get_model()
        l2 = self.R["cv_l2_reg"]
        fit = model.fit(self.train, None, l2)
        model.release_fit_preconditioner()  # no further fit on this design needs it
        model.save("initial")
        res = {
            "initial_train_losses": model.get_indiv_loss(self.train),
            "initial_train_accuracy": model.get_accuracy(self.train),
            "initial_test_losses": model.get_indiv_loss(self.test),
            "initial_test_accuracy": model.get_accuracy(self.test),
        }
        if model.spec.binary:
            res["initial_train_margins"] = model.get_indiv_margin(self.train)
            res["initial_test_margins"] = model.get_indiv_margin(self.test)
        res["train_grad_loss"] = model.get_indiv_grad_loss(self.train)
        res["initial_params"] = model.get_params_flat()
        res["initial_fit_grad_norm"] = fit.grad_norm
        res["initial_fit_grad_tol"] = fit.grad_tol
        res["initial_fit_iters"] = fit.iterations
        logger.info("initial fit: train acc %.4f, test acc %.4f, ||grad|| %.2e (%d Newton iterations)",
                    res["initial_train_accuracy"], res["initial_test_accuracy"], fit.grad_norm, fit.iterations)
        return res

    @phase(2)
    def pick_test_points(self):
        ds_id = self.config["dataset_config"]["dataset_id"]
        n_t = self.test.num_examples
        if ds_id in FIXED_TEST:
            fixed = FIXED_TEST[ds_id]
        else:
            a = np.argsort(self.R["initial_test_losses"])
            rng = np.random.RandomState(FIXED_TEST_SEED)
            fixed = list(a[-3:]) + list(rng.choice(a[:-3], 3, replace=False))
        fixed = [int(i) for i in fixed]
        if max(fixed) >= n_t:
            raise ValueError(f"fixed test index {max(fixed)} is out of range for a test set of {n_t} points")
        return {"fixed_test": np.array(fixed, dtype=np.int64)}

    @phase(3)
    def hessian(self):
        if self.config["inverse_hvp_method"] != "explicit":
            return {"hessian": None}
        model = self.model_at_theta_hat()
        return {"hessian": model.get_hessian(self.train, None, self.R["cv_l2_reg"])}

    def fixed_test_grads(self):
        """Per-example loss gradients of the fixed test points at theta_hat, and (binary models)
        their margin gradients (None otherwise)."""
        model = self.model_at_theta_hat()
        fixed = self.test.subset(np.asarray(self.R["fixed_test"]))
        T = model.get_indiv_grad_loss(fixed)
        Tm = model.get_indiv_grad_margin(fixed) if model.spec.binary else None
        return T, Tm

    @phase(4)
    def fixed_test_influence(self):
        T, Tm = self.fixed_test_grads()
        infl = self.influence()
        if self.config["inverse_hvp_method"] == "cg" and getattr(self, "_precond", None) is None:
            # The cg solves' preconditioner (the dense Hessian's factor where it fits
            # --max-memory) is built while the gradient matrix waits on disk: phase 4 needs
            # the matrix only for the final product G (H^-1 T), so the two are not in memory
            # together. The same preconditioner object serves the solves below.
            with self._gradients_on_disk(True, "phase 4"):
                self._cg_preconditioner()
        G = np.asarray(self.R["train_grad_loss"])
        res = {"fixed_test_pred_infl": infl.first_order_influence(G, T).T}
        if Tm is not None:
            res["fixed_test_pred_margin_infl"] = infl.first_order_influence(G, Tm).T
        return res

    def subset_sizes(self) -> np.ndarray:
        n, c = self.num_train, self.config
        if c["subset_choice_type"] == "types":
            sizes = np.full(c["num_subsets"], int(n * c["subset_rel_size"]), dtype=np.int64)
        else:
            sizes = np.linspace(int(n * c["subset_min_rel_size"]), int(n * c["subset_max_rel_size"]),
                                c["num_subsets"]).astype(int)
        if sizes.min() < 1:
            raise ConfigError(f"group sizes must be >= 1 but n_train={n} times the relative size gives "
                              f"{int(sizes.min())}; raise --subset-min-rel-size / --subset-rel-size")
        return sizes

    @phase(5)
    def pick_subsets(self):
        """The groups of :data:`GROUP_TYPES` (those of :func:`group_types_for`), drawn from
        one ``RandomState(subset_seed)`` in the original's order. A type not drawn makes
        no draws, so the types drawn after it get other groups than in an all-types run."""
        rng = np.random.RandomState(self.config["subset_seed"])
        n = self.num_train
        num = self.config["num_subsets"]
        sizes = self.subset_sizes()
        types, skipped = group_types_for(self.config, n)
        if skipped is not None:
            logger.warning(skipped)
        labels = self.train.labels
        X = np.asarray(self.train.x)
        tags: list[str] = []
        subsets: list[np.ndarray] = []

        def add(tag, idx):
            tags.append(tag)
            subsets.append(np.asarray(idx, dtype=np.int64))

        if "random" in types:
            for s in sizes:
                add("random", rng.choice(n, s, replace=False))
        classes, counts = np.unique(labels, return_counts=True)
        for s in sizes if "random_same_class" in types else ():
            valid = classes[counts >= s]
            if len(valid) == 0:
                continue
            c = rng.choice(valid)
            idx = rng.choice(np.flatnonzero(labels == c), s, replace=False)
            add("random_same_class-" + format_label(labels[idx[0]]), idx)
        if any(t in types for t in TAIL_TYPES):
            s1, s2, s3, s4 = (int(n * x) for x in TAIL_FRACTIONS)
            spp = num // 3
            phases = [np.linspace(s1, s2, spp).astype(int), np.linspace(s1, s3, spp).astype(int),
                      np.linspace(s1, s4, num - 2 * spp).astype(int)]
            infl = np.asarray(self.R["fixed_test_pred_infl"])
            for j, t in enumerate(np.asarray(self.R["fixed_test"])):
                o = np.argsort(infl[j])
                for p, P in enumerate(phases, start=1):
                    W = int(1.5 * np.max(P))
                    if W > n:
                        raise ConfigError(f"tail window {W} exceeds n_train={n}")
                    negs, poss = [], []
                    for s in P:
                        negs.append(rng.choice(o[:W], s, replace=False))
                        poss.append(rng.choice(o[-W:], s, replace=False))
                    for tag, drawn in (("neg_tail_test", negs), ("pos_tail_test", poss)):
                        for idx in drawn if tag in types else ():
                            add(f"{tag}-{p}-{t}", idx)
        # Both pools first (they use no rng), then the draws in the original order.
        cluster_types = [t for t in ("same_features", "same_grad") if t in types]
        aside = (self.gradients_set_aside("phase 5", to_disk=not self.executor.distributed)
                 if "same_grad" in cluster_types else contextlib.nullcontext())
        with aside as grads:
            mats = {"same_features": X, "same_grad": grads}
            pools = cached_cluster_pools([mats[t] for t in cluster_types], self.config.get("kmeans_n_init", 10),
                                         self.cluster_cache_dir, executor=self.executor,
                                         max_memory=self.config.get("max_memory")) if cluster_types else []
            del mats
        for tag, pool in zip(cluster_types, pools):
            lens = np.array([len(c) for c in pool])
            for s in sizes:
                valid = np.flatnonzero(lens >= s)
                if len(valid) == 0:
                    continue
                c = rng.choice(valid)
                add(tag, rng.choice(pool[c], s, replace=False))
        D = X.shape[1]
        for s in sizes if "feature_window" in types else ():
            dim = rng.choice(D)
            o = np.argsort(X[:, dim])  # numpy default sort, as the original
            mid = rng.choice(n)
            st = max(mid - s // 2, 0)
            en = min(st + s, n)
            st = en - s
            add("feature_window", o[st:en])
        if not subsets:
            raise ConfigError(f"no group could be drawn: --group-types {','.join(types)} gave no group of the "
                              f"sizes {sorted(set(sizes.tolist()))} on {n} training points")
        return {"subset_tags": tags, "subset_indices": subsets}

    @contextlib.contextmanager
    def gradients_set_aside(self, what: str, to_disk: bool = True):
        """Phase 1's gradient matrix out of the run's memory while the body runs (phase 5
        clusters what this yields; phase 6's refits do not read the matrix at all).

        Multinomial models: the body gets a :class:`experiments.clustering.FactoredMatrix`
        of the gradients at theta_hat (a tenth of the matrix's size for Fashion-MNIST; its
        single linkage on the block route works on the factors: see docs/design.md,
        'Phases of ss_logreg'), once its rows are checked to be phase 1's matrix bit for
        bit; the run's references to the dense matrix are dropped meanwhile and the matrix
        is formed again from the factors afterwards (the same bits). Otherwise (binary
        models, or rows that differ) :meth:`_gradients_on_disk` with ``needed=to_disk``:
        the body gets the matrix's file (phase 5 embedded: each labelling reads its own
        copy), or, ``to_disk`` False (phase 5 on a cluster, whose workers need not see this
        disk), the array, kept in memory."""
        G = self.R.get("train_grad_loss")
        if G is None or self.binary:
            del G
            with self._gradients_on_disk(to_disk, what) as grads:
                yield grads
            return
        grads = clustering.FactoredMatrix(self.model_at_theta_hat().get_indiv_grad_loss_factors(self.train))
        if not grads.forms(G):
            logger.warning("%s: the gradients' factors at theta_hat do not give phase 1's gradient matrix bit "
                           "for bit; setting the dense matrix aside instead", what)
            del G, grads
            with self._gradients_on_disk(to_disk, what) as dense:
                yield dense
            return
        holders = self._drop_gradients(G)
        del G
        release_free_memory()
        logger.info("%s: the gradient matrix (%.2f GB) is held as its factors (%.2f GB)",
                    what, grads.nbytes / 1e9, (grads.factors.R.nbytes + grads.factors.Xa.nbytes) / 1e9)
        try:
            yield grads
        finally:
            self._restore_gradients(holders, grads.load())

    def _drop_gradients(self, G) -> list[dict]:
        """Drop the run's references to the gradient matrix ``G`` (``R`` and phase 1's
        results) and return the dicts that held it (the caller drops its own reference)."""
        holders = [d for d in (self.R, *self.results.values()) if d.get("train_grad_loss") is G]
        for d in holders:
            d["train_grad_loss"] = None
        return holders

    def _restore_gradients(self, holders: list[dict], G) -> None:
        """Give the dicts of :meth:`_drop_gradients` the gradient matrix ``G`` again."""
        for d in holders:
            d["train_grad_loss"] = G

    @contextlib.contextmanager
    def _gradients_on_disk(self, needed: bool, what: str):
        """Phase 1's gradient matrix kept out of memory while the body runs (phase 4 builds
        the dense Hessian's factor, phase 5 clusters the matrix). When ``needed``, it is
        written to a temporary ``.npy`` in the run folder, the run's references to it
        (``R`` and phase 1's results) are dropped and the body gets its
        :class:`experiments.clustering.MatrixFile` (phase 5's labellings each read their
        own copy from it, so the matrix is in memory only as the copies of the labellings
        running, not once more besides them). Afterwards it is read back, bit for bit the
        same array. Otherwise (or when the file cannot be written) the body gets the array."""
        G = self.R.get("train_grad_loss")
        if not needed or G is None:
            yield None if G is None else np.asarray(G)
            return
        with storage.scratch_file(self.base_dir / "train_grad_loss.npy") as path:
            try:
                grads = clustering.MatrixFile.write(path, np.asarray(G))
            except OSError as exc:   # a full or read-only disk: cluster it in memory, as before
                logger.warning("%s: cannot write the gradient matrix to %s (%s); keeping it in memory",
                               what, path, exc)
                yield np.asarray(G)
                return
            holders = self._drop_gradients(G)
            del G
            release_free_memory()
            logger.info("%s: the gradient matrix (%.2f GB) waits in %s", what, grads.nbytes / 1e9, path)
            try:
                yield grads
            finally:
                self._restore_gradients(holders, grads.load())

    def _cg_preconditioner(self):
        """The cg routes' preconditioner at theta_hat (the dense Hessian's factor where it fits
        --max-memory), built once per process (phases 4, 6, 7, 9)."""
        if getattr(self, "_precond", None) is None:
            logger.info("building the cg routes' preconditioner (d = %d)", self.get_model().num_params)
            self._precond = self.influence().preconditioner()
        return self._precond

    def _local_preconditioner(self, explicit: bool):
        """This process's Newton-CG preconditioner for cg runs (None for explicit runs, and
        on a cluster, where each worker builds its own once)."""
        return None if explicit or self.executor.distributed else self._cg_preconditioner()

    @phase(6)
    def retrain(self):
        groups = self.subsets
        explicit = self.config["inverse_hvp_method"] == "explicit"
        # The refits do not read the gradient matrix: set aside, its memory goes to them.
        with self.gradients_set_aside("phase 6"):
            # cg runs (models too large for explicit Hessians): batched Newton-CG refits.
            # Chunk by chunk on the run's executor (experiments.execution; embedded by default).
            r = tasks.refit_groups(self.executor, self.influence(), groups, self.refit_chunk_size(),
                                   preconditioner=self._local_preconditioner(explicit))
            res = {"subset_refit_params": r.thetas, "subset_refit_grad_norm": r.grad_norms,
                   "subset_refit_grad_tol": r.grad_tols, "subset_refit_iters": r.iterations,
                   "subset_refit_hessians": r.hessians, "subset_refit_hvps": r.hvps,
                   "subset_refit_converged": r.converged}
            res.update(self._losses_after_refit(r.thetas, groups))
        return res

    def _losses_after_refit(self, thetas, groups):
        infl = self.influence()
        binary = self.binary
        fixed = np.asarray(self.R["fixed_test"])
        full = self.config.get("store_full_loss_matrices", False)
        test_ds = self.test if full else self.test.subset(fixed)
        res = {"subset_test_losses": infl.evaluate(thetas, test_ds, "loss")}
        whats = ["loss"] + (["margin"] if binary else [])
        if binary:
            res["subset_test_margins"] = infl.evaluate(thetas, test_ds, "margin")
        if full:
            res["subset_train_losses"] = infl.evaluate(thetas, self.train, "loss")
            if binary:
                res["subset_train_margins"] = infl.evaluate(thetas, self.train, "margin")
            return res
        for what in whats:
            key = "subset_train_losses" if what == "loss" else "subset_train_margins"
            res[key] = infl.evaluate_own(thetas, groups, what)
        return res

    @phase(7)
    def compute_self_pred_infl(self):
        model = self.model_at_theta_hat()
        groups = self.subsets
        infl = self.influence()
        G_S = gi.group_gradient_sums(groups, np.asarray(self.R["train_grad_loss"]))
        explicit = self.config["inverse_hvp_method"] == "explicit"
        P = infl.first_order_dparams(G_S, preconditioner=self._local_preconditioner(explicit))
        res = {"subset_pred_dparam": P, "subset_self_pred_infl": gi.self_influence(G_S, P)}
        if model.spec.binary:
            Gm_S = gi.group_gradient_sums(groups, model.get_indiv_grad_margin(self.train))
            res["subset_self_pred_margin_infl"] = gi.self_influence(Gm_S, P)
        return res

    def _stored_group_values(self, key):
        """Per group, the stored train values at its own points (E13 or full mode)."""
        vals = self.R[key]
        if isinstance(vals, list):
            return [np.asarray(v) for v in vals]
        return [np.asarray(vals)[s, idx] for s, idx in enumerate(self.subsets)]

    def _stored_fixed_test(self, key):
        vals = np.asarray(self.R[key])
        if vals.shape[1] == len(self.R["fixed_test"]) and not self.config.get("store_full_loss_matrices"):
            return vals
        return vals[:, np.asarray(self.R["fixed_test"])]

    @phase(8)
    def compute_actl_infl(self):
        fixed = np.asarray(self.R["fixed_test"])
        groups = self.subsets
        res = {}
        quantities = [("loss", "_infl", "losses")]
        if "initial_test_margins" in self.R:
            quantities.append(("margin", "_margin_infl", "margins"))
        for _, suffix, plural in quantities:
            init_test = np.asarray(self.R[f"initial_test_{plural}"])
            init_train = np.asarray(self.R[f"initial_train_{plural}"])
            res[f"subset_fixed_test_actl{suffix}"] = gi.change(self._stored_fixed_test(f"subset_test_{plural}"),
                                                               init_test[fixed])
            pred_key = "fixed_test_pred_infl" if plural == "losses" else "fixed_test_pred_margin_infl"
            res[f"subset_fixed_test_pred{suffix}"] = gi.point_influence_group_sums(groups, np.asarray(self.R[pred_key]))
            after = self._stored_group_values(f"subset_train_{plural}")
            res[f"subset_self_actl{suffix}"] = gi.self_actual(after, init_train, groups)
        return res

    @phase(9)
    def newton(self):
        if not newton_enabled(self.config):
            return {}
        model = self.model_at_theta_hat()
        groups = self.subsets
        infl = self.influence()
        G_S = gi.group_gradient_sums(groups, np.asarray(self.R["train_grad_loss"]))
        res = {}
        explicit = self.config["inverse_hvp_method"] == "explicit"
        # The spectra are kept only in the phase file (the summary of a master-only run
        # leaves them out, and so do its figures): a master-only run does not compute them.
        spectrum = explicit and not self.config["skip_hessian_spectrum"] and not self.config.get("master_only")
        out = tasks.newton_groups(self.executor, infl, groups, G_S, spectrum=spectrum,
                                  preconditioner=self._local_preconditioner(explicit), progress=self.progress)
        Q = out["newton_dparam"]
        if "spectrum" in out:
            res["subset_hessian_spectrum"] = out["spectrum"].astype(np.complex128)
        T, Tm = self.fixed_test_grads()
        res["subset_newton_dparam"] = Q
        res["subset_self_newton_infl"] = gi.self_influence(G_S, Q)
        res["subset_fixed_test_newton_infl"] = gi.target_influence(Q, T)
        if model.spec.binary:
            Gm_S = gi.group_gradient_sums(groups, model.get_indiv_grad_margin(self.train))
            res["subset_self_newton_margin_infl"] = gi.self_influence(Gm_S, Q)
            res["subset_fixed_test_newton_margin_infl"] = gi.target_influence(Q, Tm)
        return res

    @phase(10)
    def fixed_test_newton(self):
        return {}  # merged into phase 9, as in the original

    @phase(11)
    def param_changes(self):
        infl = self.influence()
        thetas = np.asarray(self.R["subset_refit_params"])
        return {
            "subset_dparam": gi.actual_dparams(thetas, self.theta_hat()),
            "subset_train_accuracy": infl.accuracies(thetas, self.train),
            "subset_test_accuracy": infl.accuracies(thetas, self.test),
        }

    @phase(12)
    def param_change_norms(self):
        if self.config["skip_param_change_norms"]:
            return {}
        H = np.asarray(self.R["hessian"])
        res = {"subset_grad_loss_l2_norm": gi.l2_norms(
            gi.group_gradient_sums(self.subsets, np.asarray(self.R["train_grad_loss"])))}
        for key in ("subset_dparam", "subset_pred_dparam", "subset_newton_dparam"):
            Delta = np.asarray(self.R[key])
            res[f"{key}_l2_norm"] = gi.l2_norms(Delta)
            res[f"{key}_hessian_norm"] = gi.hessian_norms(Delta, H)
        return res

    @phase(13)
    def z_norms(self):
        model = self.model_at_theta_hat()
        if self.config["skip_z_norms"] or not model.spec.binary:
            return {}
        Z = model.get_zs(self.train)
        return {"zs": Z, **gi.z_norms(Z, np.asarray(self.R["hessian"]))}

    @phase(14)
    def compute_pparam_infl(self):
        infl = self.influence()
        fixed = np.asarray(self.R["fixed_test"])
        groups = self.subsets
        test_fixed = self.test.subset(fixed)
        init_test = np.asarray(self.R["initial_test_losses"])[fixed]
        init_train = np.asarray(self.R["initial_train_losses"])
        res = {}
        todo = [("subset_pred_dparam", "pparam")]
        if "subset_newton_dparam" in self.R:
            todo.append(("subset_newton_dparam", "nparam"))
        for key, name in todo:
            Delta = np.asarray(self.R[key])
            res[f"subset_fixed_test_{name}_infl"] = infl.param_influence(Delta, test_fixed, init_test, "loss")
            if self.binary:
                init_m = np.asarray(self.R["initial_test_margins"])[fixed]
                res[f"subset_fixed_test_{name}_margin_infl"] = infl.param_influence(Delta, test_fixed, init_m, "margin")
            res[f"subset_self_{name}_infl"] = infl.self_param_influence(Delta, groups, init_train, "loss")
        return res

    # ------------------------------------------------------------------ output
    def summary_keys(self) -> list[str]:
        return SUMMARY_KEYS + EXTRA_SUMMARY_KEYS

    def get_subtitle(self) -> str:
        c = self.config
        ds = c["dataset_config"]["dataset_id"]
        if c["subset_choice_type"] == "types":
            return f"{ds}, {c['num_subsets']} subsets per type, proportion {py2_float_str(c['subset_rel_size'])}"
        return (f"{ds}, {c['num_subsets']} subsets per type, proportion "
                f"{py2_float_str(c['subset_min_rel_size'])}-{py2_float_str(c['subset_max_rel_size'])}")

    def plot_all(self, save_and_close: bool = True) -> list[Path]:
        """The original's detailed figures (one per target and pair of estimates) under
        ``{run_dir}/plots/`` (:func:`experiments.subset_plots.plot_all`)."""
        return plot_all(self, save_and_close=save_and_close)

    def groups_table(self):
        """One row per group: type, size, predicted, Newton and actual effect per target,
        refit certificate and indices (a pandas DataFrame; :mod:`experiments.subset_groups`)."""
        return subset_groups.groups_table(self.R)

    def save_groups_table(self) -> Path:
        """Write :meth:`groups_table` to ``{run_dir}/groups.csv``; returns the path."""
        return subset_groups.save_groups_csv(self.R, self.base_dir)

    def plot_summary(self, save_and_close: bool = True) -> Path:
        """The run's summary figure ``{run_dir}/summary.png``
        (:func:`experiments.subset_plots.plot_summary`)."""
        return plot_summary(self, save_and_close=save_and_close)
