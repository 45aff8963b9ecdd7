"""The dataset registry (spec ``datasets.md`` §0.4)."""
from __future__ import annotations

from typing import Any, Callable

from datasets import common, sklearn_data, synthetic
from datasets.common import Datasets

# id -> loader(data_dir=..., **kwargs) returning Datasets.
DATASETS: dict[str, Callable[..., Datasets]] = {
    "breast_cancer": sklearn_data.load_breast_cancer,
    "digits": sklearn_data.load_digits,
    "synthetic_binary": synthetic.load_synthetic_binary,
    "synthetic_multiclass": synthetic.load_synthetic_multiclass,
}

# id -> loader(data_dir=..., **kwargs) returning supplementary information.
SUPPLEMENTS: dict[str, Callable[..., Any]] = {}

# Ids that need no download and no files: usable on a machine with no network.
OFFLINE_DATASETS = ("breast_cancer", "digits", "synthetic_binary", "synthetic_multiclass")


class UnknownDatasetError(ValueError):
    """An id that is not in the registry."""


def load_dataset(dataset_id: str, center_data: bool = False, append_bias: bool = False,
                 data_dir=None, **kwargs) -> Datasets:
    """Load ``dataset_id`` (downloading and caching under ``data_dir`` if needed)."""
    if dataset_id not in DATASETS:
        raise UnknownDatasetError(
            f"dataset_id must be one of {sorted(DATASETS)}; got {dataset_id!r}"
        )
    ds = DATASETS[dataset_id](data_dir=data_dir, **kwargs)
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
