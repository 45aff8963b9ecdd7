"""``dogfish`` and ``animals``: pre-computed Inception-v3 features (see docs/design.md, 'Datasets and preprocessing').

Raw files under ``processed_animals/``: ``{name}_900_300_inception_features_{train,test}.npz``
with keys ``inception_features_val`` (float (n, 2048)) and ``labels`` (cast to uint8),
downloaded from the authors' server. No checksum is published; a download shorter than
its ``Content-Length`` is rejected and files are written atomically. No preprocessing,
no cache of their own, ``validation=None``.

* ``dogfish``: dog = 0, fish = 1; train (1800, 2048), test (600, 2048).
* ``animals``: 10 ImageNet classes (dog, cat, bird, fish, horse, monkey, zebra, panda,
  lemur, wombat = 0..9); train (9000, 2048) [inferred], test (3000, 2048).
"""
from __future__ import annotations

import logging

import numpy as np

from datasets.common import DataSet, Datasets, check_expected, get_dataset_dir
from datasets.download import download_all

logger = logging.getLogger(__name__)

SUBDIR = "processed_animals"
BASE_URL = "http://mitra.stanford.edu/kundaje/pangwei/"
SOURCE = "Inception-v3 features of ImageNet images, Koh and Liang 2017"
FEATURES_KEY = "inception_features_val"
LABELS_KEY = "labels"
NUM_FEATURES = 2048
# name -> (train rows, test rows) stated (dogfish, animals test) or inferred (animals train).
EXPECTED_ROWS = {"dogfish": (1800, 600), "animals": (9000, 3000)}


class FeatureFileError(ValueError):
    """An Inception-feature file lacks the documented keys or shapes."""


def file_names(name: str) -> tuple[str, str]:
    """``(train_file, test_file)`` for ``dogfish`` or ``animals``."""
    return (f"{name}_900_300_inception_features_train.npz", f"{name}_900_300_inception_features_test.npz")


def read_features(path) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)``: float (n, 2048) and uint8 (n,) from one npz file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in (FEATURES_KEY, LABELS_KEY) if k not in npz.files]
            if missing:
                raise FeatureFileError(f"{path}: missing keys {missing}; found {npz.files}")
            x, y = npz[FEATURES_KEY], npz[LABELS_KEY]
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, FeatureFileError):
            raise
        raise FeatureFileError(f"{path}: not a readable npz file ({exc}); delete it and retry") from exc
    if x.ndim != 2 or len(x) != len(y):
        raise FeatureFileError(f"{path}: {FEATURES_KEY} must be (n, d) with n labels; got {x.shape} "
                               f"and {y.shape}")
    return x, y.astype(np.uint8)


def _load(name: str, data_dir=None, progress: bool = True) -> Datasets:
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    items = [([BASE_URL + filename], filename, None, None) for filename in file_names(name)]
    paths = download_all(items, dataset_dir, f"{name} ({SOURCE})", progress=progress)
    (x_train, y_train), (x_test, y_test) = (read_features(p) for p in paths)
    expected_train, expected_test = EXPECTED_ROWS[name]
    check_expected(f"{name} training rows", len(x_train), expected_train, strict=False)
    check_expected(f"{name} test rows", len(x_test), expected_test, strict=False)
    check_expected(f"{name} feature dimension", x_train.shape[1], NUM_FEATURES, strict=False)
    if x_train.shape[1] != x_test.shape[1]:
        raise FeatureFileError(f"{name}: train has {x_train.shape[1]} features but test {x_test.shape[1]}")
    return Datasets(DataSet(x_train, y_train), None, DataSet(x_test, y_test))


def load_dogfish(data_dir=None, progress: bool = True) -> Datasets:
    """Load ``dogfish``: float32 train (1800, 2048), ``validation=None``, test (600, 2048); uint8 labels."""
    return _load("dogfish", data_dir, progress)


def load_animals(data_dir=None, progress: bool = True) -> Datasets:
    """Load ``animals``: float32 train (9000, 2048), ``validation=None``, test (3000, 2048); uint8 labels 0-9."""
    return _load("animals", data_dir, progress)
