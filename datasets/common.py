"""Shared dataset containers and helpers (spec ``datasets.md`` §0)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import scipy.sparse as sp

from datasets.storage import atomic_write, load_arrays

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT / "data"


class DataSet:
    """A split of a dataset: features ``x`` and labels ``labels``.

    As in the original, ``x`` is cast to float32 and arrays with more than two
    dimensions are flattened row-wise (image tensors NHWC become row vectors in H, W, C
    order); scipy sparse matrices stay sparse. ``labels`` is flattened and keeps its
    dtype (some datasets have int labels, some float 0./1.). The model casts both to
    its own float dtype (float64 by default).
    """

    def __init__(self, x, labels, rng: np.random.RandomState | None = None, seed: int = 0):
        if sp.issparse(x):
            x = x.astype(np.float32)
        else:
            x = np.asarray(x)
            if x.ndim > 2:
                x = x.reshape(x.shape[0], -1)
            x = x.astype(np.float32)
        labels = np.asarray(labels).reshape(-1)
        if x.shape[0] != labels.shape[0]:
            raise ValueError(
                f"x and labels must have the same number of rows; got x.shape[0]={x.shape[0]} "
                f"and labels.shape[0]={labels.shape[0]}"
            )
        self._x = x
        self._labels = labels
        self._rng = rng if rng is not None else np.random.RandomState(seed)
        self.initialize_indices()

    @property
    def x(self):
        return self._x

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def num_examples(self) -> int:
        return self._x.shape[0]

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return f"DataSet(x={self._x.shape} {self._x.dtype}, labels={self._labels.shape} {self._labels.dtype})"

    def subset(self, indices, rng=None, seed: int = 0) -> "DataSet":
        x = self._x.tocsr() if sp.issparse(self._x) and not hasattr(self._x, "__getitem__") else self._x
        return DataSet(x[indices], self._labels[indices], rng=rng, seed=seed)

    def clone(self) -> "DataSet":
        ds = DataSet(self._x, self._labels, rng=self._rng)
        ds._index_in_epoch = self._index_in_epoch
        ds._epoch_indices = self._epoch_indices.copy()
        return ds

    # Mini-batching, kept from the original for interface compatibility.
    def initialize_indices(self) -> None:
        self._index_in_epoch = self.num_examples
        self._epoch_indices = np.arange(self.num_examples)

    def _get_indices(self, n: int) -> np.ndarray:
        if self._index_in_epoch >= self.num_examples:
            self._epoch_indices = self._rng.permutation(self.num_examples)
            self._index_in_epoch = 0
        take = self._epoch_indices[self._index_in_epoch:self._index_in_epoch + n]
        self._index_in_epoch += len(take)
        return take

    def next_batch_indices(self, batch_size: int) -> np.ndarray:
        if self.num_examples == 0:
            raise ValueError("cannot draw batches from an empty DataSet")
        parts, need = [], batch_size
        while need > 0:
            idx = self._get_indices(need)
            parts.append(idx)
            need -= len(idx)
        return np.concatenate(parts)

    def next_batch(self, batch_size: int):
        idx = self.next_batch_indices(batch_size)
        return self._x[idx], self._labels[idx]

    def next_batch_with_indices(self, batch_size: int):
        idx = self.next_batch_indices(batch_size)
        return self._x[idx], self._labels[idx], idx


class Datasets(NamedTuple):
    """``(train, validation, test)``; ``validation`` may be ``None`` or empty."""

    train: DataSet
    validation: DataSet | None
    test: DataSet


def get_dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/<name>``, created if missing (``data_dir`` defaults to ``<repo>/data``)."""
    base = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    path = base / name
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"dataset directory {path} exists but is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def center_data(datasets: Datasets) -> Datasets:
    """Subtract the train column mean from every split (spec ``datasets.md`` §0.2).

    Sparse x is densified. ``None`` splits stay ``None``.
    """
    mean = np.asarray(datasets.train.x.mean(axis=0)).reshape(1, -1)

    def c(ds):
        return None if ds is None else DataSet(_dense(ds.x) - mean, ds.labels)

    return Datasets(c(datasets.train), c(datasets.validation), c(datasets.test))


def append_bias(datasets: Datasets) -> Datasets:
    """Append a column of ones to every split (float64 hstack, then the float32 cast)."""

    def a(ds):
        if ds is None:
            return None
        x = _dense(ds.x).astype(np.float64)
        return DataSet(np.hstack([x, np.ones((x.shape[0], 1))]), ds.labels)

    return Datasets(a(datasets.train), a(datasets.validation), a(datasets.test))


# --------------------------------------------------------------------------- integrity
class DatasetIntegrityError(ValueError):
    """Raw data does not have the structure or size the spec states (``datasets.md``)."""


def check_expected(what: str, got, expected, strict: bool = True) -> None:
    """Raise :class:`DatasetIntegrityError` (or only warn if not ``strict``) when ``got != expected``.

    The spec marks some sizes "verify" (they are turned into runtime checks here);
    inferred sizes are only warned about, so that smaller, format-exact test files load.
    """
    if got == expected:
        return
    message = f"{what}: expected {expected}, got {got}"
    if strict:
        raise DatasetIntegrityError(message + " (corrupt or different raw data?)")
    logger.warning("%s (the spec's size is inferred; continuing)", message)


# --------------------------------------------------------------------------- caches
def read_cache(path: str | os.PathLike, required_keys: Iterable[str]) -> dict[str, np.ndarray] | None:
    """Arrays of a cache file written by this project, or ``None`` if it must be rebuilt.

    ``None`` when the file is missing, unreadable (for instance the original's pickled
    object arrays, which are never loaded) or lacks one of ``required_keys``.
    """

    path = Path(path)
    if not path.is_file():
        return None
    try:
        arrays = load_arrays(path)
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("ignoring unreadable cache %s (%s); rebuilding it", path, exc)
        return None
    missing = [k for k in required_keys if k not in arrays]
    if missing:
        logger.warning("ignoring cache %s without keys %s (older format?); rebuilding it", path, missing)
        return None
    return arrays


def save_sparse(path: str | os.PathLike, matrix) -> None:
    """Atomically write a scipy sparse matrix as CSR with ``scipy.sparse.save_npz`` (no pickle)."""

    with atomic_write(path) as f:
        sp.save_npz(f, sp.csr_matrix(matrix), compressed=True)


def load_sparse(path: str | os.PathLike) -> sp.csr_matrix:
    """Read a ``save_npz`` file (CSR, or the original's COO) as a CSR matrix."""
    return sp.csr_matrix(sp.load_npz(path))


def empty_dataset(n_features: int, x_dtype=np.float32, label_dtype=np.float64) -> DataSet:
    """A 0-row split of width ``n_features`` (spam and mnli have an empty validation set)."""
    return DataSet(np.zeros((0, n_features), dtype=x_dtype), np.zeros(0, dtype=label_dtype))
