"""Offline real datasets bundled with scikit-learn (no download needed).

Both are split with a seeded shuffle so that runs are reproducible:
``perm = np.random.RandomState(0).permutation(n)``; the first ``int(0.8 * n)`` points
of ``perm`` form the training set and the rest the test set. There is no validation
split (``validation=None``), as for ``hospital``.

* ``breast_cancer``: 569 x 30, binary (0 = malignant, 1 = benign); train 455, test 114.
* ``digits``: 1,797 x 64 (8x8 images, pixel values 0..16), 10 classes; train 1,437,
  test 360.
"""
from __future__ import annotations

import numpy as np

from datasets.common import DataSet, Datasets

TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


def _split(x: np.ndarray, y: np.ndarray) -> Datasets:
    n = x.shape[0]
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_train = int(TRAIN_FRACTION * n)
    tr, te = perm[:n_train], perm[n_train:]
    return Datasets(DataSet(x[tr], y[tr]), None, DataSet(x[te], y[te]))


def load_breast_cancer(data_dir=None) -> Datasets:
    from sklearn.datasets import load_breast_cancer as _load

    bunch = _load()
    return _split(bunch.data, bunch.target.astype(np.int64))


def load_digits(data_dir=None) -> Datasets:
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    return _split(bunch.data, bunch.target.astype(np.int64))
