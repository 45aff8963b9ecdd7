"""Seeded synthetic classification data for tests and examples (no download).

``make_synthetic`` draws class means ``mu_k ~ N(0, sep^2 I)`` and points
``x ~ N(mu_y, I)`` with labels drawn uniformly, all from one
``np.random.RandomState(seed)``. The registry exposes two fixed instances:

* ``synthetic_binary``: 2 classes, 8 features, 600 train / 200 test;
* ``synthetic_multiclass``: 3 classes, 5 features, 600 train / 200 test.
"""
from __future__ import annotations

import numpy as np

from datasets.common import DataSet, Datasets


def make_synthetic(
    n_train: int = 600,
    n_test: int = 200,
    n_features: int = 8,
    num_classes: int = 2,
    sep: float = 1.0,
    seed: int = 0,
) -> Datasets:
    for name, value, low in (("n_train", n_train, num_classes), ("n_test", n_test, 1),
                             ("n_features", n_features, 1), ("num_classes", num_classes, 2)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    rng = np.random.RandomState(seed)
    means = rng.normal(0.0, sep, (num_classes, n_features))

    def draw(n):
        y = rng.randint(0, num_classes, n)
        # Make sure every class is present, so that num_classes is inferred correctly.
        y[:num_classes] = np.arange(num_classes)
        rng.shuffle(y)
        x = means[y] + rng.normal(0.0, 1.0, (n, n_features))
        return DataSet(x, y.astype(np.int64))

    train = draw(n_train)
    test = draw(n_test)
    return Datasets(train, None, test)


def load_synthetic_binary(data_dir=None) -> Datasets:
    return make_synthetic(600, 200, 8, 2, sep=1.0, seed=0)


def load_synthetic_multiclass(data_dir=None) -> Datasets:
    return make_synthetic(600, 200, 5, 3, sep=1.5, seed=1)
