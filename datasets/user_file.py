"""A user's own data from one file: ``--dataset-file``.

Two formats, chosen by the file's suffix:

``.npz`` (``numpy.savez``; read with ``allow_pickle=False``)
    Arrays ``X_train`` (n_train, n_features), ``y_train`` (n_train,), ``X_test``
    (n_test, n_features), ``y_test`` (n_test,), and optionally ``sample_weights``
    (n_train,). No other array names are accepted (a typo such as ``sample_weight``
    would otherwise be ignored silently).

``.csv`` (one file, a header row, comma-separated)
    A column ``split`` whose value is ``train`` or ``test`` on every row, a column
    ``label``, optionally a column ``sample_weight`` (read on train rows; leave it empty
    on test rows, where it is ignored); every other column is a numeric feature, in the
    file's order. Example::

        mean radius,mean texture,label,split
        17.99,10.38,0,train
        13.54,14.36,1,test

Labels must be integers (``3``, ``-1`` or ``1.0``; not ``1.5`` or ``"cat"``). They are
mapped to class indices ``0..K-1`` in the order of ``np.unique(y_train)`` (so -1/1
becomes 0/1 and 3/7 becomes 0/1); :attr:`UserData.classes` keeps the original values.
Every test label must occur in ``y_train``.

Rules (each broken one raises :class:`UserFileError`, a
:class:`~datasets.common.DatasetValidationError`, with one line naming the file, the
array and the rule): the four arrays are present; X is 2-D and numeric with at least one
feature, y and ``sample_weights`` 1-D; as many labels (and weights) as rows;
``X_test`` has ``X_train``'s number of features; no NaN or infinite value (the count and
the first index are given); labels are integers; ``y_train`` has at least two classes;
the test set has at least :data:`MIN_TEST_POINTS` points (``ss_logreg`` follows six
fixed test points, three of them the worst-predicted); weights are finite and
non-negative; no feature exceeds :data:`MAX_ABS_FEATURE` (2**26) in magnitude, unless
the features are standardised (``standardize``, the flag ``--standardize``: each column
centred and scaled by the training set's mean and standard deviation). Then
:func:`datasets.common.validate_datasets` checks the result as it checks every
registered dataset.

Sample weights: ``ss_logreg`` fits unweighted models, so a file whose
``sample_weights`` are not all 1 is refused (:func:`load_user_datasets`) rather than
having its weights silently dropped. Features are stored as float32, as for every
dataset (:class:`datasets.common.DataSet`).

The dataset id of a file is ``file-{stem}-{sha256[:12]}`` (:func:`dataset_id_for`): the
file's name and a digest of its bytes, so an edited file never reuses old results.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.common import DataSet, Datasets, DatasetValidationError, first_nonfinite, validate_datasets

logger = logging.getLogger(__name__)

FORMATS = (".npz", ".csv")
REQUIRED_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
WEIGHTS_ARRAY = "sample_weights"
CSV_LABEL, CSV_SPLIT, CSV_WEIGHT = "label", "split", "sample_weight"
CSV_SPLITS = ("train", "test")
# ss_logreg's phase 2 follows 6 fixed test points (3 worst-predicted, 3 drawn from the rest).
MIN_TEST_POINTS = 6
# Largest feature magnitude accepted: 2**26 = 1/sqrt(float64 epsilon), about 6.7e7. The
# Hessian of the loss holds x_j x_k sums next to the bias's sum of p(1 - p) (scale 1) and
# the regulariser; a feature beyond 1/sqrt(eps) makes its entries exceed those by more than
# 1/eps, so the Hessian is numerically singular (its Cholesky fails) and the logits
# x.theta overflow the exponentials of the loss long before float64's range ends.
MAX_ABS_FEATURE = 2.0 ** 26
ID_PREFIX = "file-"
HASH_CHARS = 12
_STEM_MAX = 64


class UserFileError(DatasetValidationError):
    """A ``--dataset-file`` that cannot be used; the message starts with the file's path."""


@dataclass(frozen=True)
class UserData:
    """A loaded, checked file: ``datasets`` (labels 0..K-1, ``validation=None``),
    ``sample_weights`` (float64 of shape (n_train,), or ``None``), ``classes`` (the
    original label values, class k is ``classes[k]``) and the file's ``sha256``."""

    datasets: Datasets
    sample_weights: np.ndarray | None
    classes: np.ndarray
    sha256: str


def _show(value) -> str:
    """``repr`` of a value read from a file, without numpy's ``np.float64(...)`` wrapper."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _fail(path, message: str):
    raise UserFileError(f"{path}: {message}")


def file_format(path: str | os.PathLike) -> str:
    """``'.npz'`` or ``'.csv'`` (the lower-cased suffix), else :class:`UserFileError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        _fail(path, f"--dataset-file must end in .npz or .csv (see README \"Ask the question of your own "
                    f"data\"); got suffix {suffix or '(none)'!r}")
    return suffix


def _read_bytes(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        _fail(path, "no such file (--dataset-file)")
    except IsADirectoryError:
        _fail(path, "is a folder, not a file (--dataset-file)")
    except OSError as exc:
        _fail(path, f"cannot be read: {exc.strerror or exc}")


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file's bytes (:class:`UserFileError` if it cannot be read)."""
    return hashlib.sha256(_read_bytes(path)).hexdigest()


def dataset_id_for(path: str | os.PathLike, sha256: str) -> str:
    """``file-{stem}-{sha256[:12]}``; characters of the stem outside ``[A-Za-z0-9._-]``
    become ``_`` and it is cut to 64 characters, so the id is a safe folder name."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).stem)[:_STEM_MAX].strip(".") or "data"
    return f"{ID_PREFIX}{stem}-{sha256[:HASH_CHARS]}"


def num_train(path: str | os.PathLike) -> int | None:
    """The number of training points, read cheaply (``y_train`` alone, or the CSV's
    ``split`` column); ``None`` if the file cannot tell (loading it then says why)."""
    try:
        if file_format(path) == ".npz":
            z = np.load(path, allow_pickle=False)
            if not hasattr(z, "files"):  # a .npy under an .npz name
                return None
            with z:
                return int(np.shape(z["y_train"])[0])
        import pandas as pd

        split = pd.read_csv(path, usecols=[CSV_SPLIT], dtype=str, keep_default_na=False,
                            skipinitialspace=True)[CSV_SPLIT]
        return int((split.str.strip() == "train").sum())
    except (UserFileError, OSError, KeyError, ValueError, IndexError, TypeError, EOFError, zipfile.BadZipFile):
        return None


# ----------------------------------------------------------------------------- reading
@dataclass
class _Raw:
    """The arrays of a file before the checks; ``rows``/``columns`` translate array
    indices into CSV line numbers and column names (``None`` for npz)."""

    arrays: dict
    rows: dict | None = None
    columns: list | None = None


def _read_npz(path, data: bytes) -> _Raw:
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        _fail(path, f"is not a readable .npz file ({type(exc).__name__}: {exc})")
    if not hasattr(z, "files"):
        _fail(path, "holds a single array (.npy), not an .npz archive of X_train, y_train, X_test, y_test; "
                    "save it with numpy.savez(path, X_train=..., y_train=..., X_test=..., y_test=...)")
    with z:
        allowed = REQUIRED_ARRAYS + (WEIGHTS_ARRAY,)
        unknown = [k for k in z.files if k not in allowed]
        if unknown:
            _fail(path, f"unexpected array(s) {unknown}; an .npz holds only {list(allowed)}")
        missing = [k for k in REQUIRED_ARRAYS if k not in z.files]
        if missing:
            _fail(path, f"missing array(s) {missing}; an .npz needs {list(REQUIRED_ARRAYS)} "
                        f"(and optionally {WEIGHTS_ARRAY!r})")
        arrays = {}
        for k in z.files:
            try:
                arrays[k] = z[k]
            except ValueError as exc:  # object arrays need pickle, which is refused
                _fail(path, f"{k} cannot be read without pickle ({exc}); save plain numeric arrays")
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                _fail(path, f"{k} is damaged ({type(exc).__name__}: {exc})")
    return _Raw(arrays)


def _read_csv(path, data: bytes) -> _Raw:
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data), skipinitialspace=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        _fail(path, f"is not a readable CSV file ({type(exc).__name__}: {str(exc).strip()})")
    cols = [str(c) for c in frame.columns]
    # pandas renames a repeated column "a" to "a.1": look at the header as written.
    header = [c.strip() for c in next(csv.reader(io.StringIO(data.decode("utf-8", "replace").partition("\n")[0])))]
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        _fail(path, f"duplicate column name(s) {dup}")
    for required in (CSV_LABEL, CSV_SPLIT):
        if required not in cols:
            shown = cols[:6] + (["..."] if len(cols) > 6 else [])
            _fail(path, f"missing column {required!r}; a CSV needs a header row with a {CSV_LABEL!r} column, "
                        f"a {CSV_SPLIT!r} column (train or test) and numeric feature columns, separated by commas "
                        f"(found columns {shown})")
    if frame.shape[0] == 0:
        _fail(path, "has a header row but no data rows")
    lines = np.arange(frame.shape[0]) + 2  # the header is line 1
    split = frame[CSV_SPLIT].astype(str).str.strip().to_numpy()
    bad = np.flatnonzero(~np.isin(split, CSV_SPLITS))
    if bad.size:
        _fail(path, f"column {CSV_SPLIT!r} must be 'train' or 'test' on every row; {bad.size} row(s) are not, "
                    f"the first on line {lines[bad[0]]} ({_show(split[bad[0]])})")
    features = [c for c in cols if c not in (CSV_LABEL, CSV_SPLIT, CSV_WEIGHT)]
    if not features:
        _fail(path, "has no feature columns (every column other than label, split, sample_weight is a feature)")
    for c in features:
        if frame[c].dtype.kind not in "biuf":
            values = frame[c].to_numpy()
            numeric = pd.to_numeric(frame[c], errors="coerce").to_numpy()
            first = int(np.flatnonzero(np.isnan(numeric) & pd.notna(values))[0])
            _fail(path, f"feature column {c!r} must be numeric; line {lines[first]} holds {_show(values[first])}")
    X = frame[features].to_numpy(dtype=np.float64)
    is_train = split == "train"
    arrays = {"X_train": X[is_train], "X_test": X[~is_train],
              "y_train": frame[CSV_LABEL].to_numpy()[is_train], "y_test": frame[CSV_LABEL].to_numpy()[~is_train]}
    if CSV_WEIGHT in cols:
        w = frame[CSV_WEIGHT].to_numpy()[is_train]
        if w.dtype.kind not in "biuf":
            numeric = pd.to_numeric(pd.Series(w), errors="coerce").to_numpy()
            first = int(np.flatnonzero(np.isnan(numeric) & pd.notna(w))[0])
            _fail(path, f"column {CSV_WEIGHT!r} must be numeric; line {lines[is_train][first]} holds {_show(w[first])}")
        arrays[WEIGHTS_ARRAY] = w
    return _Raw(arrays, rows={"train": lines[is_train], "test": lines[~is_train]}, columns=features)


# ----------------------------------------------------------------------------- checks
def _where(raw: _Raw, name: str, row: int, col: int | None = None) -> str:
    """``row r[, column c]``, with the CSV line (and column name) when the file is a CSV."""
    at = f"row {row}" + ("" if col is None else f", column {col}")
    if raw.rows is None:
        return at
    line = raw.rows["train" if name.endswith("_train") or name == WEIGHTS_ARRAY else "test"][row]
    return at + f" (CSV line {line}" + ("" if col is None else f", column {raw.columns[col]!r}") + ")"


def _check_x(path, raw: _Raw, name: str) -> np.ndarray:
    x = np.asarray(raw.arrays[name])
    if x.dtype.kind not in "biuf":
        _fail(path, f"{name} must be numeric; got dtype {x.dtype}")
    if x.ndim != 2:
        _fail(path, f"{name} must be 2-D (n_samples, n_features); got shape {x.shape}")
    if x.shape[1] == 0:
        _fail(path, f"{name} has no features (shape {x.shape})")
    count, k = first_nonfinite(x)
    if count:
        row, col = divmod(k, x.shape[1])
        _fail(path, f"{name} has {count} NaN or infinite value(s); the first is at {_where(raw, name, row, col)}")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:  # features are stored as float32 (DataSet)
        big = np.flatnonzero(np.abs(x) > np.finfo(np.float32).max)
        if big.size:
            row, col = divmod(int(big[0]), x.shape[1])
            _fail(path, f"{name} has {big.size} value(s) beyond float32's range (3.4e38), where features are "
                        f"stored; the first is at {_where(raw, name, row, col)}")
    return x


def _check_vector(path, raw: _Raw, name: str, n_rows: int, what: str) -> np.ndarray:
    v = np.asarray(raw.arrays[name])
    if v.ndim != 1:
        _fail(path, f"{name} must be 1-D (n_samples,); got shape {v.shape}")
    x_name = "X_test" if name == "y_test" else "X_train"
    if v.shape[0] != n_rows:
        _fail(path, f"{x_name} has {n_rows} rows but {name} has {v.shape[0]} {what}; they must be equal")
    if v.dtype.kind == "f":
        count, k = first_nonfinite(v)
        if count:
            _fail(path, f"{name} has {count} NaN or infinite value(s); the first is at {_where(raw, name, k)}")
    return v


def _check_labels(path, raw: _Raw, name: str, n_rows: int) -> np.ndarray:
    y = _check_vector(path, raw, name, n_rows, "labels")
    if y.dtype.kind == "O":  # a CSV column of mixed text and numbers
        import pandas as pd

        numeric = pd.to_numeric(pd.Series(y), errors="coerce").to_numpy()
        bad = np.flatnonzero(np.isnan(numeric))
        if bad.size:
            _fail(path, f"{name} must hold integer class labels; {bad.size} are not numbers, the first at "
                        f"{_where(raw, name, int(bad[0]))} ({_show(y[bad[0]])})")
        y = _check_vector(path, _Raw({**raw.arrays, name: numeric}, raw.rows, raw.columns), name, n_rows, "labels")
    if y.dtype.kind not in "biuf":
        _fail(path, f"{name} must hold integer class labels; got dtype {y.dtype}")
    if y.dtype.kind == "f":
        bad = np.flatnonzero(y != np.round(y))
        if bad.size:
            _fail(path, f"{name} must hold integer class labels; {bad.size} are not integers, the first at "
                        f"{_where(raw, name, int(bad[0]))} ({_show(y[bad[0]])})")
        if np.abs(y).max(initial=0) >= 2 ** 53:
            _fail(path, f"{name} holds labels beyond 2**53, which float64 cannot represent exactly")
        y = y.astype(np.int64)
    return y.astype(np.int64)


def _check_scale(path, raw: _Raw, name: str, x: np.ndarray, standardized: bool = False) -> None:
    """Refuse a feature of magnitude above :data:`MAX_ABS_FEATURE` (one line: where, the
    value, the remedy)."""
    big = np.flatnonzero(np.abs(x) > MAX_ABS_FEATURE)
    if big.size:
        k = int(big[np.argmax(np.abs(x.ravel()[big]))])
        row, col = divmod(k, x.shape[1])
        remedy = ("even after --standardize (the training mean and standard deviation): the test values lie "
                  "far outside the training range of that column; fix or drop the column" if standardized else
                  "standardise the columns (subtract the mean, divide by the standard deviation) or rerun with "
                  "--standardize")
        _fail(path, f"{name} column {col} holds {_show(x.ravel()[k])} at {_where(raw, name, row, col)} "
                    f"({big.size} value(s) beyond 2**26 = {MAX_ABS_FEATURE:.3g} in magnitude), which makes the "
                    f"Hessian numerically singular and overflows the loss; {remedy}")


def standardized(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X - mean) / std`` per column with the training set's mean and standard deviation
    (columns with zero deviation are only centred), computed in float64."""
    X_train, X_test = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def check_arrays(path, raw: _Raw, standardize: bool = False) -> tuple[Datasets, np.ndarray | None, np.ndarray]:
    """Apply the file rules (module docstring) to ``raw``; ``(datasets, weights, classes)``.
    ``standardize``: the features are standardised (:func:`standardized`) instead of being
    refused when beyond :data:`MAX_ABS_FEATURE`."""
    X_train, X_test = _check_x(path, raw, "X_train"), _check_x(path, raw, "X_test")
    if X_test.shape[1] != X_train.shape[1]:
        _fail(path, f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}; they must be equal")
    if standardize:
        X_train, X_test = standardized(X_train, X_test)
    _check_scale(path, raw, "X_train", X_train, standardize)
    _check_scale(path, raw, "X_test", X_test, standardize)
    y_train = _check_labels(path, raw, "y_train", X_train.shape[0])
    y_test = _check_labels(path, raw, "y_test", X_test.shape[0])
    classes = np.unique(y_train)
    if classes.size < 2:
        _fail(path, f"y_train must contain at least two classes; got {classes.size} ({classes.tolist()}) in "
                    f"{y_train.size} rows")
    if X_test.shape[0] == 0:
        _fail(path, "the test set is empty (X_test and y_test have 0 rows); the experiment measures test losses")
    if X_test.shape[0] < MIN_TEST_POINTS:
        _fail(path, f"the test set has {X_test.shape[0]} points; ss_logreg needs at least {MIN_TEST_POINTS} "
                    "(it follows six fixed test points)")
    unseen = np.flatnonzero(~np.isin(y_test, classes))
    if unseen.size:
        _fail(path, f"y_test has {unseen.size} label(s) that y_train does not have, the first at "
                    f"{_where(raw, 'y_test', int(unseen[0]))} ({int(y_test[unseen[0]])}); y_train's classes "
                    f"are {classes.tolist()}")
    weights = None
    if WEIGHTS_ARRAY in raw.arrays:
        w = _check_vector(path, raw, WEIGHTS_ARRAY, X_train.shape[0], "weights")
        if w.dtype.kind not in "biuf":
            _fail(path, f"{WEIGHTS_ARRAY} must be numeric; got dtype {w.dtype}")
        neg = np.flatnonzero(w < 0)
        if neg.size:
            _fail(path, f"{WEIGHTS_ARRAY} must be non-negative; {neg.size} are negative, the first at "
                        f"{_where(raw, WEIGHTS_ARRAY, int(neg[0]))} ({_show(w[neg[0]])})")
        weights = w.astype(np.float64)
    ds = Datasets(DataSet(X_train, np.searchsorted(classes, y_train)), None,
                  DataSet(X_test, np.searchsorted(classes, y_test)))
    return validate_datasets(ds, str(path)), weights, classes


def load_user_file(path: str | os.PathLike, sha256: str | None = None, standardize: bool = False) -> UserData:
    """Read and check ``path`` (:class:`UserData`). With ``sha256``, the file's bytes must
    still have that digest (the one its run id was made from); ``standardize``: see
    :func:`check_arrays`."""
    fmt = file_format(path)
    data = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        _fail(path, f"has changed since this run was configured (sha256 {digest[:HASH_CHARS]}..., expected "
                    f"{sha256[:HASH_CHARS]}...); rerun the command so that the run id follows the new content")
    raw = _read_npz(path, data) if fmt == ".npz" else _read_csv(path, data)
    ds, weights, classes = check_arrays(path, raw, standardize)
    logger.info("%s: %d train and %d test points, %d features, %d classes (labels %s)", path,
                ds.train.num_examples, ds.test.num_examples, ds.train.x.shape[1], classes.size,
                classes.tolist() if classes.size <= 10 else f"{classes[:10].tolist()}...")
    return UserData(ds, weights, classes, digest)


def load_user_datasets(path: str | os.PathLike, sha256: str | None = None, data_dir=None,
                       standardize: bool = False) -> Datasets:
    """The registry's loader of a file (:func:`datasets.loader.load_dataset` with
    ``dataset_file``): :func:`load_user_file`'s datasets. ``Datasets`` carry no weights,
    so a file with ``sample_weights`` that are not all 1 is refused rather than fitted
    unweighted."""
    user = load_user_file(path, sha256, standardize)
    if user.sample_weights is not None and not np.all(user.sample_weights == 1):
        first = int(np.flatnonzero(user.sample_weights != 1)[0])
        _fail(path, f"{WEIGHTS_ARRAY} are not supported yet: ss_logreg fits unweighted models (the first weight "
                    f"!= 1 is at row {first}, {_show(user.sample_weights[first])}); remove the array (or column) "
                    "to fit without weights")
    return user.datasets
