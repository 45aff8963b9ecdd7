"""The dataset registry (see docs/design.md, 'Datasets and preprocessing').

``DATASETS`` maps every dataset id of the original registry (plus the offline datasets
added by this project) to its loader; ``SUPPLEMENTS`` maps supplement ids to theirs.
Experiments look supplements up by concatenation: ``dataset_id + '_weights'``,
``'_nonfires'``, ``'_LFs'``, ``'_ids'``, ``'_genres'``, ``'_nonfires_genres'``.
Loaders are imported lazily, so that importing the registry stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from datasets import common, sklearn_data, synthetic, user_file
from datasets.common import Datasets


def _lazy(module: str, function: str) -> Callable[..., Any]:
    """A loader that imports ``datasets.<module>`` only when called."""

    def load(*args, **kwargs):
        return getattr(importlib.import_module(f"datasets.{module}"), function)(*args, **kwargs)

    load.__name__ = function
    load.__qualname__ = function
    load.__doc__ = f"Calls ``datasets.{module}.{function}`` (imported on first use)."
    return load


# id -> loader(data_dir=..., **kwargs) returning Datasets.
DATASETS: dict[str, Callable[..., Datasets]] = {
    "mnist": _lazy("mnist", "load_mnist"),
    "mnist_small": _lazy("mnist", "load_small_mnist"),
    "spam": _lazy("spam", "load_spam"),
    "hospital": _lazy("hospital", "load_hospital"),
    "cifar10": _lazy("cifar10", "load_cifar10"),
    "cifar10_small": _lazy("cifar10", "load_small_cifar10"),
    "cdr": _lazy("babble", "load_cdr"),
    "reduced_cdr": _lazy("babble", "load_reduced_cdr"),
    "mnli": _lazy("mnli", "load_mnli"),
    "dogfish": _lazy("processed_animals", "load_dogfish"),
    "animals": _lazy("processed_animals", "load_animals"),
    # Offline datasets added by this project (no download).
    "fashion_mnist": _lazy("mnist", "load_fashion_mnist"),
    "breast_cancer": sklearn_data.load_breast_cancer,
    "digits": sklearn_data.load_digits,
    "synthetic_binary": synthetic.load_synthetic_binary,
    "synthetic_multiclass": synthetic.load_synthetic_multiclass,
}

# id -> loader(data_dir=..., **kwargs) returning supplementary information.
SUPPLEMENTS: dict[str, Callable[..., Any]] = {
    "cdr_LFs": _lazy("babble", "load_cdr_LFs"),
    "reduced_cdr_LFs": _lazy("babble", "load_cdr_LFs"),
    "cdr_nonfires": _lazy("babble", "load_cdr_nonfires"),
    "reduced_cdr_nonfires": _lazy("babble", "load_reduced_cdr_nonfires"),
    "cdr_weights": _lazy("babble", "load_cdr_weights"),
    "reduced_cdr_weights": _lazy("babble", "load_cdr_weights"),
    "cdr_labeling_info": _lazy("babble", "load_cdr_labeling_info"),
    "reduced_cdr_labeling_info": _lazy("babble", "load_cdr_labeling_info"),
    "mnli_nonfires": _lazy("mnli", "load_mnli_nonfires"),
    "mnli_nonfires_genres": _lazy("mnli", "load_mnli_nonfires_genres"),
    "mnli_genres": _lazy("mnli", "load_mnli_genres"),
    "mnli_ids": _lazy("mnli", "load_mnli_ids"),
    "mnli_nonfires_ids": _lazy("mnli", "load_mnli_nonfires_ids"),
}

# Ids that need no download and no files: usable on a machine with no network.
OFFLINE_DATASETS = ("breast_cancer", "digits", "synthetic_binary", "synthetic_multiclass")
# The ids of the original release's registry, in its order.
ORIGINAL_DATASETS = ("mnist", "mnist_small", "spam", "hospital", "cifar10", "cifar10_small", "cdr",
                     "reduced_cdr", "mnli", "dogfish", "animals")


class UnknownDatasetError(ValueError):
    """An id that is not in the registry."""


def load_dataset(dataset_id: str, center_data: bool = False, append_bias: bool = False,
                 data_dir=None, dataset_file=None, dataset_sha256: str | None = None, **kwargs) -> Datasets:
    """Load ``dataset_id`` (downloading and caching under ``data_dir`` if needed).

    ``center_data`` subtracts the train column means, then ``append_bias`` appends a
    column of ones (in that order, as the original); both densify sparse x. The loaded data are
    checked first (:func:`datasets.common.validate_datasets`: finite values, integer
    labels, at least two training classes, consistent shapes), so a bad dataset stops
    with :class:`datasets.common.DatasetValidationError` before anything uses it.

    ``dataset_file``: a user's ``.npz`` or ``.csv`` file instead of a registered dataset
    (:mod:`datasets.user_file`; ``dataset_id`` is then its ``file-{stem}-{hash}`` id,
    ``dataset_sha256``, if given, the digest the file must still have, and the keyword
    ``standardize=True`` standardises its features).
    """
    if dataset_file is not None:
        standardize = bool(kwargs.pop("standardize", False))
        if kwargs:
            raise TypeError(f"a dataset file takes no loader arguments but standardize; got {sorted(kwargs)}")
        ds = user_file.load_user_datasets(dataset_file, sha256=dataset_sha256, standardize=standardize)
    elif dataset_id not in DATASETS:
        raise UnknownDatasetError(
            f"dataset_id must be one of {sorted(DATASETS)}; got {dataset_id!r}"
        )
    else:
        ds = common.validate_datasets(DATASETS[dataset_id](data_dir=data_dir, **kwargs), dataset_id)
    if center_data:
        ds = common.center_data(ds)
    if append_bias:
        ds = common.append_bias(ds)
    return ds


def load_supplemental_info(description: str, data_dir=None, **kwargs) -> Any:
    """Load a supplement such as ``reduced_cdr_weights`` or ``mnli_ids``."""
    if description not in SUPPLEMENTS:
        raise UnknownDatasetError(
            f"supplement id must be one of {sorted(SUPPLEMENTS)}; got {description!r}"
        )
    return SUPPLEMENTS[description](data_dir=data_dir, **kwargs)
