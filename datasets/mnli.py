"""``mnli`` and its supplements: MultiNLI with pre-computed features (see docs/design.md, 'Datasets and preprocessing').

The features were computed outside the original repository; the files come from the
CodaLab bundle ``0x5258e3771b974983abfb10bfa75e207d`` (the original symlinked it as
``data/multinli_1.0``). Files expected in ``<data_dir>/multinli_1.0/``:

* ``mnli.npz``: ``x0``, ``lab0`` (train, 392,702 rows) and ``x2``, ``lab2``
  (dev-matched = test, 9,815 rows); only the first 600 feature columns are kept.
  Labels: 0 = entailment, 1 = neutral, 2 = contradiction.
* ``mnli_nonfires.npz``: ``x``, ``labels`` (dev-mismatched, 9,832 rows), first 600 columns.
* ``mnli_genres.npz``: ``genres`` per split ([0] train, [2] dev-matched);
  ``mnli_nonfires_genres.npz``: ``genres`` of dev-mismatched.
* ``multinli_1.0_{train,dev_matched,dev_mismatched}_with_annotators.jsonl``: one JSON
  object per line with the crowd worker id ``sentence2_author``; read only to build the
  annotator caches ``mnli_annotators.npz`` and ``mnli_nonfires_annotators.npz``.

A missing file is fetched from the bundle if possible; otherwise one error names every
missing file, the bundle and the exact path to place it. Object arrays in the bundle's
npz files (the per-split ``genres``) are read with :mod:`datasets.safe_pickle`.

Deviations: the validation split is an empty (0, 600) float32 matrix (the original used a
1-D empty array); the annotator caches store ``ids_0``, ``ids_1`` (empty), ``ids_2``
(resp. ``ids``) as plain arrays instead of a pickled object array; annotator lines whose
``gold_label`` is ``-`` (pairs without a gold label, which are not in the feature files)
are skipped, and the id counts are checked against the feature files' row counts.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets import safe_pickle
from datasets.common import DataSet, DatasetIntegrityError, Datasets, empty_dataset, get_dataset_dir, read_cache
from datasets.download import DataUnavailableError, DownloadError, maybe_download
from datasets.storage import save_arrays

logger = logging.getLogger(__name__)

SUBDIR = "multinli_1.0"
BUNDLE = "0x5258e3771b974983abfb10bfa75e207d"
BUNDLE_PAGE = f"https://worksheets.codalab.org/bundles/{BUNDLE}"
BUNDLE_BLOB_URL = f"https://worksheets.codalab.org/rest/bundles/{BUNDLE}/contents/blob/"
NUM_FEATURES = 600
MAIN_FILE = "mnli.npz"
NONFIRES_FILE = "mnli_nonfires.npz"
GENRES_FILE = "mnli_genres.npz"
NONFIRES_GENRES_FILE = "mnli_nonfires_genres.npz"
TRAIN_ANNOTATORS = "multinli_1.0_train_with_annotators.jsonl"
MATCHED_ANNOTATORS = "multinli_1.0_dev_matched_with_annotators.jsonl"
MISMATCHED_ANNOTATORS = "multinli_1.0_dev_mismatched_with_annotators.jsonl"
IDS_CACHE = "mnli_annotators.npz"
NONFIRES_IDS_CACHE = "mnli_nonfires_annotators.npz"
AUTHOR_FIELD = "sentence2_author"
NO_GOLD_LABEL = "-"


class MnliFormatError(DatasetIntegrityError):
    """A MultiNLI bundle file lacks the documented keys or shapes."""


def require_files(dataset_dir: Path, names: Sequence[str], progress: bool = True) -> list[Path]:
    """Paths of ``names`` in ``dataset_dir``, fetching missing ones from the CodaLab bundle.

    Raises one :class:`DataUnavailableError` naming every file that is still missing, the
    bundle, and where to place the files.
    """
    errors, missing = [], []
    for name in names:
        if (dataset_dir / name).is_file():
            continue
        try:
            maybe_download([BUNDLE_BLOB_URL + name], name, dataset_dir, progress=progress,
                           source=f"CodaLab bundle {BUNDLE}")
        except DownloadError as exc:
            errors.append(exc)
            missing.append(name)
    if errors:
        where = dataset_dir.resolve()
        first = (f"MultiNLI files missing: {', '.join(missing)} (download failed: {errors[0].reason}); "
                 f"place them by hand in {where}, or make {where} a link to the contents of the "
                 f"pre-processed CodaLab bundle {BUNDLE} ({BUNDLE_PAGE})")
        error = DataUnavailableError("\n".join([first] + [str(e) for e in errors]))
        error.reason = errors[0].reason
        raise error
    return [dataset_dir / n for n in names]


def _load_keys(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Only ``keys`` of an npz file (object arrays via the restricted unpickler)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise MnliFormatError(f"{path}: missing keys {missing}; found {npz.files}")
            return {k: npz[k] for k in keys}
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
    arrays = safe_pickle.load_npz(path)
    return {k: arrays[k] for k in keys}


def _first_columns(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] < NUM_FEATURES:
        raise MnliFormatError(f"{path}:{key} must have at least {NUM_FEATURES} columns; got shape {x.shape}")
    # A contiguous copy, so that the bundle's full matrix (1,200 columns) is not kept alive by a view.
    return np.ascontiguousarray(x[:, :NUM_FEATURES])


def load_mnli(data_dir=None, progress: bool = True) -> Datasets:
    """Load ``mnli``: float32 train (392702, 600), validation (0, 600), test (9815, 600); labels 0/1/2."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    (path,) = require_files(dataset_dir, [MAIN_FILE], progress)
    a = _load_keys(path, ("x0", "lab0", "x2", "lab2"))
    train = DataSet(_first_columns(a["x0"], path, "x0"), a["lab0"])
    test = DataSet(_first_columns(a["x2"], path, "x2"), a["lab2"])
    validation = empty_dataset(NUM_FEATURES, label_dtype=a["lab0"].dtype)
    return Datasets(train, validation, test)


def load_mnli_nonfires(data_dir=None, progress: bool = True) -> DataSet:
    """Dev-mismatched: float32 x (9832, 600), labels 0/1/2."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    (path,) = require_files(dataset_dir, [NONFIRES_FILE], progress)
    a = _load_keys(path, ("x", "labels"))
    return DataSet(_first_columns(a["x"], path, "x"), a["labels"])


def _as_str_array(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)],
                    dtype=str)


def load_mnli_genres(data_dir=None, progress: bool = True) -> list[np.ndarray]:
    """``[train_genres, [], test_genres]`` as str arrays (dev-matched genres for test)."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    (path,) = require_files(dataset_dir, [GENRES_FILE], progress)
    genres = _load_keys(path, ("genres",))["genres"]
    if len(genres) != 3:
        raise MnliFormatError(f"{path}: genres must hold 3 per-split arrays; got {len(genres)}")
    return [_as_str_array(g) for g in genres]


def load_mnli_nonfires_genres(data_dir=None, progress: bool = True) -> np.ndarray:
    """str array of the dev-mismatched genres (facetoface, letters, nineeleven, oup, verbatim)."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    (path,) = require_files(dataset_dir, [NONFIRES_GENRES_FILE], progress)
    return _as_str_array(_load_keys(path, ("genres",))["genres"])


def read_annotators(path: str | os.PathLike) -> np.ndarray:
    """The ``sentence2_author`` of every line with a gold label, in file order."""
    path = Path(path)
    ids = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MnliFormatError(f"{path}:{lineno}: not JSON ({exc})") from exc
            if record.get("gold_label") == NO_GOLD_LABEL:
                continue
            if AUTHOR_FIELD not in record:
                raise MnliFormatError(f"{path}:{lineno}: no {AUTHOR_FIELD!r} field (the public MultiNLI "
                                      "release lacks it; the *_with_annotators files are needed)")
            ids.append(record[AUTHOR_FIELD])
    return np.asarray(ids) if ids else np.zeros(0, dtype=str)


def _check_rows(dataset_dir: Path, ids: np.ndarray, file: str, key: str, what: str) -> None:
    path = dataset_dir / file
    if not path.is_file():
        return
    n = len(_load_keys(path, (key,))[key])
    if n != len(ids):
        raise DatasetIntegrityError(f"{what}: {len(ids)} annotator ids but {path}:{key} has {n} rows")


def _build_id_caches(dataset_dir: Path, progress: bool) -> None:

    paths = require_files(dataset_dir, [TRAIN_ANNOTATORS, MATCHED_ANNOTATORS, MISMATCHED_ANNOTATORS], progress)
    train, matched, mismatched = (read_annotators(p) for p in paths)
    _check_rows(dataset_dir, train, MAIN_FILE, "lab0", "train")
    _check_rows(dataset_dir, matched, MAIN_FILE, "lab2", "dev-matched")
    _check_rows(dataset_dir, mismatched, NONFIRES_FILE, "labels", "dev-mismatched")
    empty = np.zeros(0, dtype=train.dtype)
    save_arrays(dataset_dir / NONFIRES_IDS_CACHE, ids=mismatched)
    save_arrays(dataset_dir / IDS_CACHE, ids_0=train, ids_1=empty, ids_2=matched)


def _read_ids_cache(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    arrays = read_cache(path, keys)
    if arrays is None and path.is_file():
        # The original's caches hold a pickled object array ``ids``: read it safely.
        try:
            legacy = safe_pickle.load_npz(path)
        except (ValueError, OSError, safe_pickle.UnsafePickleError) as exc:
            logger.warning("ignoring unreadable %s (%s)", path, exc)
            return None
        if "ids" in legacy:
            ids = legacy["ids"]
            if keys == ("ids",):
                return {"ids": np.asarray(list(ids))}
            if len(ids) == 3:
                return {f"ids_{s}": np.asarray(list(ids[s])) for s in range(3)}
    return arrays


def load_mnli_ids(data_dir=None, progress: bool = True) -> list[np.ndarray]:
    """``[train_ids, [], test_ids]``: ``sentence2_author`` of each train / dev-matched row."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    keys = ("ids_0", "ids_1", "ids_2")
    arrays = _read_ids_cache(dataset_dir / IDS_CACHE, keys)
    if arrays is None:
        _build_id_caches(dataset_dir, progress)
        arrays = read_cache(dataset_dir / IDS_CACHE, keys)
    return [arrays[k] for k in keys]


def load_mnli_nonfires_ids(data_dir=None, progress: bool = True) -> np.ndarray:
    """``sentence2_author`` of each dev-mismatched (nonfires) row."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    arrays = _read_ids_cache(dataset_dir / NONFIRES_IDS_CACHE, ("ids",))
    if arrays is None:
        _build_id_caches(dataset_dir, progress)
        arrays = read_cache(dataset_dir / NONFIRES_IDS_CACHE, ("ids",))
    return arrays["ids"]
