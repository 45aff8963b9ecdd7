"""Shared dataset containers and helpers."""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import scipy.sparse as sp

from datasets.storage import CorruptFileError, atomic_write, load_arrays

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

    # clone and the mini-batching below are the original's interface, kept for code written
    # against it; this suite's computations use whole splits and never call them.
    def clone(self) -> "DataSet":
        """A DataSet on the same ``x`` and ``labels`` arrays (not copied) with a copy of the
        batching state (random state, epoch order, position): it then draws the same batches
        as this one, independently of it."""
        ds = copy.copy(self)
        ds._rng = copy.deepcopy(self._rng)
        ds._epoch_indices = self._epoch_indices.copy()
        return ds

    def initialize_indices(self) -> None:
        """Reset the batching state: the next batch starts a new epoch."""
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
        """The next ``batch_size`` row indices: each epoch is a fresh permutation of the rows
        drawn from the DataSet's random state, and a batch runs on into the next epoch."""
        if self.num_examples == 0:
            raise ValueError("cannot draw batches from an empty DataSet")
        parts, need = [], batch_size
        while need > 0:
            idx = self._get_indices(need)
            parts.append(idx)
            need -= len(idx)
        return np.concatenate(parts)

    def next_batch(self, batch_size: int):
        """``(x[idx], labels[idx])`` for ``idx = next_batch_indices(batch_size)``."""
        idx = self.next_batch_indices(batch_size)
        return self._x[idx], self._labels[idx]

    def next_batch_with_indices(self, batch_size: int):
        """``(x[idx], labels[idx], idx)`` for ``idx = next_batch_indices(batch_size)``."""
        idx = self.next_batch_indices(batch_size)
        return self._x[idx], self._labels[idx], idx


class Datasets(NamedTuple):
    """``(train, validation, test)``; ``validation`` may be ``None`` or empty."""

    train: DataSet
    validation: DataSet | None
    test: DataSet


class DataDirError(ValueError):
    """The data folder (``--data-dir``) cannot hold a dataset: a file stands where a folder is
    needed, or the folder cannot be created (read-only, no permission, disk full)."""


def get_dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/<name>``, created if missing (``data_dir`` defaults to ``<repo>/data``);
    :class:`DataDirError` naming the folder and the way out if it cannot be."""
    base = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    path = base / name
    way_out = "give a writable folder with --data-dir (default: <repo>/data)"
    if path.exists() and not path.is_dir():
        raise DataDirError(f"--data-dir {base}: {path} exists but is not a folder; remove it or {way_out}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"--data-dir {base}: cannot create {path} ({exc.strerror or exc}); "
                           f"{way_out}") from exc
    return path


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def center_data(datasets: Datasets) -> Datasets:
    """Subtract the train column mean from every split (as the original).

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
    """Raw data does not have the structure or size its loader expects (see docs/design.md,
    'Datasets and preprocessing')."""


def check_expected(what: str, got, expected, strict: bool = True) -> None:
    """Raise :class:`DatasetIntegrityError` (or only warn if not ``strict``) when ``got != expected``.

    Sizes the original's data are known to have are checked (``strict``); sizes that were
    only inferred are warned about, so that smaller, format-exact test files load.
    """
    if got == expected:
        return
    message = f"{what}: expected {expected}, got {got}"
    if strict:
        raise DatasetIntegrityError(message + " (corrupt or different raw data?)")
    logger.warning("%s (an inferred size; continuing)", message)


# --------------------------------------------------------------------------- validation
class DatasetValidationError(ValueError):
    """Loaded data the experiments cannot use: non-finite values, fewer than two classes,
    non-integer labels, or inconsistent shapes. The message names the dataset, the array,
    the count of bad entries and the first bad index."""


SPLIT_NAMES = ("train", "validation", "test")
# Elements checked per block, so that a large dense x (mnli: 392,702 x 600) never needs
# a full boolean copy.
CHECK_BLOCK = 1 << 22


def first_nonfinite(values: np.ndarray) -> tuple[int, int]:
    """``(count, first flat index)`` of the non-finite entries of a 1-D or 2-D array (count 0: none)."""
    flat = values.reshape(-1) if values.flags.c_contiguous else np.ravel(values)
    count, first = 0, -1
    for start in range(0, flat.size, CHECK_BLOCK):
        block = flat[start:start + CHECK_BLOCK]
        if np.isfinite(block).all():  # the fast path: one reduction, no index search
            continue
        bad = np.flatnonzero(~np.isfinite(block))
        if first < 0:
            first = start + int(bad[0])
        count += bad.size
    return count, first


def _check_x(name: str, split: str, x) -> None:
    where = f"dataset {name!r}: {split} x"
    if x.ndim != 2:
        raise DatasetValidationError(f"{where} must be 2-D (n_samples, n_features); got shape {x.shape}")
    if sp.issparse(x):
        # Only the stored values can be non-finite: check .data, then locate the first one.
        m = x if x.format in ("csr", "csc", "coo") else x.tocsr()
        count, k = first_nonfinite(np.asarray(m.data))
        if count:
            if m.format == "coo":
                row, col = int(m.row[k]), int(m.col[k])
            else:
                outer = int(np.searchsorted(m.indptr, k, side="right") - 1)
                inner = int(m.indices[k])
                row, col = (outer, inner) if m.format == "csr" else (inner, outer)
    else:
        count, k = first_nonfinite(np.asarray(x))
        if count:
            row, col = divmod(k, x.shape[1])
    if count:
        raise DatasetValidationError(
            f"{where} has {count} non-finite value(s) (NaN or infinite); the first is at row {row}, "
            f"column {col}. Fix or delete the data files (and the cache) of this dataset")


def _check_labels(name: str, split: str, labels: np.ndarray) -> None:
    where = f"dataset {name!r}: {split} labels"
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise DatasetValidationError(f"{where} must be numeric class indices; got dtype {labels.dtype}")
    if labels.dtype.kind == "f":
        count, k = first_nonfinite(labels)
        if count:
            raise DatasetValidationError(f"{where} have {count} non-finite value(s) (NaN or infinite); "
                                         f"the first is at index {k}")
        bad = np.flatnonzero(labels != np.round(labels))
        if bad.size:
            raise DatasetValidationError(f"{where} must be integers (class indices 0..K-1); {bad.size} are "
                                         f"not, the first at index {bad[0]} ({labels[bad[0]]!r})")
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        raise DatasetValidationError(f"{where} must be class indices 0..K-1; {bad.size} are negative, "
                                     f"the first at index {bad[0]} ({labels[bad[0]]!r})")


def validate_datasets(ds: Datasets, name: str) -> Datasets:
    """Check loaded data before anything uses it; return ``ds`` unchanged.

    Every split that is not ``None``: x is 2-D with as many rows as there are labels, x
    and labels are finite, labels are non-negative integers (class indices; float 0./1.
    is fine). Every split has the train split's number of features; a 0-row split is
    only checked for that when it is 2-D (mnli's empty validation x is 1-D, as in the
    original). The train split has at least two classes. Sparse x is checked through its
    stored values only.

    Raises :class:`DatasetValidationError` naming ``name``, the split and array, the
    number of bad entries and the first bad index.
    """
    if not isinstance(ds, Datasets) or ds.train is None or ds.test is None:
        raise DatasetValidationError(f"dataset {name!r}: the loader must return Datasets(train, validation, "
                                     f"test) with a train and a test split; got {type(ds).__name__}")
    n_features = None
    for split, part in zip(SPLIT_NAMES, ds):
        if part is None:
            continue
        x, labels = part.x, np.asarray(part.labels)
        if x.shape[0] == 0 and x.ndim != 2:
            continue  # an empty placeholder split (mnli validation)
        if x.shape[0] != labels.shape[0]:
            raise DatasetValidationError(f"dataset {name!r}: {split} x has {x.shape[0]} rows but there are "
                                         f"{labels.shape[0]} labels")
        _check_x(name, split, x)
        if n_features is None:
            n_features = x.shape[1]
        elif x.shape[1] != n_features:
            raise DatasetValidationError(f"dataset {name!r}: {split} x has {x.shape[1]} features but train "
                                         f"x has {n_features}")
        _check_labels(name, split, labels)
    classes = np.unique(np.asarray(ds.train.labels))
    if classes.size < 2:
        raise DatasetValidationError(f"dataset {name!r}: train labels must contain at least two classes; "
                                     f"got {classes.size} ({classes.tolist()}) in {ds.train.num_examples} rows")
    return ds


# --------------------------------------------------------------------------- caches
def _read_cache_file(path: Path, read):
    """``read(path)``, or ``None`` (with a warning naming the file) if it is missing or damaged."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except CorruptFileError as exc:
        # Truncated, overwritten, random bytes, or the original's pickled object arrays
        # (never loaded): a cache is derived data, so it is rebuilt, not trusted.
        logger.warning("%s; ignoring this cache and rebuilding it from the raw data", exc)
        return None


def read_cache(path: str | os.PathLike, required_keys: Iterable[str]) -> dict[str, np.ndarray] | None:
    """Arrays of a cache file written by this project, or ``None`` if it must be rebuilt.

    ``None`` when the file is missing, damaged (a warning names it; see
    :class:`datasets.storage.CorruptFileError`) or lacks one of ``required_keys``.
    """
    path = Path(path)
    arrays = _read_cache_file(path, load_arrays)
    if arrays is None:
        return None
    missing = [k for k in required_keys if k not in arrays]
    if missing:
        logger.warning("ignoring cache %s without keys %s (older format?); rebuilding it", path, missing)
        return None
    return arrays


def read_sparse_cache(path: str | os.PathLike) -> sp.csr_matrix | None:
    """:func:`load_sparse`, or ``None`` if the file is missing or damaged (a warning names it)."""
    return _read_cache_file(Path(path), load_sparse)


def save_sparse(path: str | os.PathLike, matrix) -> None:
    """Atomically write a scipy sparse matrix as CSR with ``scipy.sparse.save_npz`` (no pickle)."""

    with atomic_write(path) as f:
        sp.save_npz(f, sp.csr_matrix(matrix), compressed=True)


def load_sparse(path: str | os.PathLike) -> sp.csr_matrix:
    """Read a ``save_npz`` file (CSR/CSC, or the original's COO) as a CSR matrix.

    Raises :class:`datasets.storage.CorruptFileError` if the file is damaged.
    """
    arrays = load_arrays(path)
    try:
        fmt = arrays["format"].item()
        fmt = fmt.decode("ascii") if isinstance(fmt, bytes) else str(fmt)
        shape = tuple(int(n) for n in arrays["shape"])
        if fmt in ("csr", "csc"):
            cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
            matrix = cls((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        elif fmt == "coo":
            matrix = sp.coo_matrix((arrays["data"], (arrays["row"], arrays["col"])), shape=shape)
        else:
            raise ValueError(f"unsupported sparse format {fmt!r}")
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise CorruptFileError(path, f"not a scipy sparse matrix file ({type(exc).__name__}: {exc})") from exc
    return sp.csr_matrix(matrix)


def empty_dataset(n_features: int, x_dtype=np.float32, label_dtype=np.float64) -> DataSet:
    """A 0-row split of width ``n_features`` (spam and mnli have an empty validation set)."""
    return DataSet(np.zeros((0, n_features), dtype=x_dtype), np.zeros(0, dtype=label_dtype))
