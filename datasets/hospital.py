"""``hospital``: UCI "Diabetes 130-US hospitals for years 1999-2008" (see docs/design.md, 'Datasets and preprocessing').

The paper calls it "Diabetes". Label 1 = readmitted within 30 days (``<30``), 0 otherwise.

Preprocessing, in order: 8 numeric columns, then 31 categorical columns one-hot
encoded with sorted categories (one indicator for binary variables, one constant column
for single-category variables); ``RandomState(2)`` shuffles the positive then the negative
indices; train = first 10,000 of each (pos then neg, then shuffled); test = the rest (pos
then neg, then shuffled). No scaling, no validation split.

Result: train float32 (20000, 127) balanced 10,000/10,000, test float32 (81766, 127)
with 1,357 positives, labels int64 0/1. Cached as ``hospital/hospital.npz`` (keys
``X_train``, ``Y_train`` (+1/-1 int8), ``lr_Y_train`` (0/1), ``X_test``, ``Y_test``,
``lr_Y_test``); a cache hit does not touch the CSV.

Modernisation (docs/design.md, 'Where this suite differs from the original'):
pandas >= 2 reads the literal ``None`` (meaning "not measured" in ``max_glu_serum`` and
``A1Cresult``) as NaN, which would drop a category and give 125 features; the CSV is
read with ``keep_default_na=False``.
"""
from __future__ import annotations

import io
import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.common import DataSet, Datasets, check_expected, get_dataset_dir, read_cache
from datasets.download import (
    ArchiveLimitError,
    ChecksumMismatchError,
    DownloadError,
    count,
    file_digest,
    maybe_download,
    read_zip_member,
)
from datasets.storage import atomic_write, save_arrays

logger = logging.getLogger(__name__)

SUBDIR = "hospital"
ARCHIVE_NAME = "dataset_diabetes.zip"
ARCHIVE_URLS = ("https://archive.ics.uci.edu/ml/machine-learning-databases/00296/dataset_diabetes.zip",)
# sha256 of the archive published with the test data (../shared/data/SHA256SUMS).
ARCHIVE_SHA256 = "3a17a3b55b6dd4a1926703185c0ad8e2ed30bc8e2f9b927cdd1000b733d1de8e"
# The current UCI page serves a differently laid out archive: search it for the CSV.
CURRENT_UCI_URL = ("https://archive.ics.uci.edu/static/public/296/"
                   "diabetes+130-us+hospitals+for+years+1999-2008.zip")
CURRENT_UCI_NAME = "diabetes+130-us+hospitals+for+years+1999-2008.zip"
CSV_RELPATH = Path("dataset_diabetes") / "diabetic_data.csv"
CSV_NAME = "diabetic_data.csv"
# sha256 of diabetic_data.csv inside the archive above (19,159,383 bytes).
CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"
CACHE_NAME = "hospital.npz"
CACHE_KEYS = ("X_train", "Y_train", "lr_Y_train", "X_test", "Y_test", "lr_Y_test")
SOURCE = "UCI Machine Learning Repository dataset 296, CC BY 4.0"

NUMERIC_COLUMNS = (
    "time_in_hospital", "num_lab_procedures", "num_procedures", "num_medications",
    "number_outpatient", "number_emergency", "number_inpatient", "number_diagnoses",
)
CATEGORICAL_COLUMNS = (
    "gender", "race", "age", "discharge_disposition_id", "max_glu_serum", "A1Cresult",
    "metformin", "repaglinide", "nateglinide", "chlorpropamide", "glimepiride",
    "acetohexamide", "glipizide", "glyburide", "tolbutamide", "pioglitazone",
    "rosiglitazone", "acarbose", "miglitol", "troglitazone", "tolazamide", "examide",
    "citoglipton", "insulin", "glyburide-metformin", "glipizide-metformin",
    "glimepiride-pioglitazone", "metformin-rosiglitazone", "metformin-pioglitazone",
    "change", "diabetesMed",
)
LABEL_COLUMN = "readmitted"
SPLIT_SEED = 2
NUM_TRAIN_PER_CLASS = 10_000

# Sizes of the original's data; checked when the full CSV is processed.
EXPECTED_ROWS = 101_766
EXPECTED_FEATURES = 127
EXPECTED_POSITIVES = 11_357


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``diabetic_data.csv`` keeping ``None`` and ``?`` as strings (see the module docstring)."""
    return pd.read_csv(path, keep_default_na=False)


def featurize(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature columns and labels: ``(X, Y)`` with X a float32 frame and Y int8 in {+1, -1}.

    Y = +1 for ``readmitted == '<30'`` (code 0 of the sorted categories
    ``['<30', '>30', 'NO']``), -1 otherwise.
    """
    missing = [c for c in NUMERIC_COLUMNS + CATEGORICAL_COLUMNS + (LABEL_COLUMN,) if c not in df.columns]
    if missing:
        raise ValueError(f"hospital CSV lacks the columns {missing}; got {list(df.columns)}")
    parts = [df[list(NUMERIC_COLUMNS)].astype(np.float32)]
    for name in CATEGORICAL_COLUMNS:
        cat = pd.Categorical(df[name])
        # A binary variable keeps one indicator (the second sorted category, e.g.
        # change_No); 1 or >= 3 categories keep one column per category.
        dummies = pd.get_dummies(cat, prefix=name, drop_first=len(cat.categories) == 2)
        dummies.index = df.index
        parts.append(dummies.astype(np.float32))
    X = pd.concat(parts, axis=1)
    codes = pd.Categorical(df[LABEL_COLUMN]).codes.astype(np.int8)
    Y = codes.copy()
    Y[Y >= 1] = -1
    Y[Y == 0] = 1
    return X, Y


def split_indices(Y: np.ndarray, num_train_per_class: int = NUM_TRAIN_PER_CLASS,
                  seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The train/test split: ``(train_idx, test_idx)`` from one ``RandomState(seed)``, in this call order."""
    rng = np.random.RandomState(seed)
    pos_idx = np.where(Y == 1)[0]
    neg_idx = np.where(Y == -1)[0]
    for name, idx in (("positive", pos_idx), ("negative", neg_idx)):
        if len(idx) < num_train_per_class:
            raise ValueError(f"num_train_per_class must be <= the number of {name} rows "
                             f"({len(idx)}); got {num_train_per_class}")
    rng.shuffle(pos_idx)
    rng.shuffle(neg_idx)
    train_idx = np.concatenate([pos_idx[:num_train_per_class], neg_idx[:num_train_per_class]])
    rng.shuffle(train_idx)
    test_idx = np.concatenate([pos_idx[num_train_per_class:], neg_idx[num_train_per_class:]])
    rng.shuffle(test_idx)
    return train_idx, test_idx


def process_hospital(df: pd.DataFrame, num_train_per_class: int = NUM_TRAIN_PER_CLASS) -> dict[str, np.ndarray]:
    """All of the preprocessing on a data frame; returns the cache arrays (``CACHE_KEYS``)."""
    X, Y = featurize(df)
    train_idx, test_idx = split_indices(Y, num_train_per_class)
    values = X.to_numpy(dtype=np.float32)
    lr_Y = ((Y.astype(np.int64) + 1) // 2).astype(np.int64)
    return {
        "X_train": values[train_idx], "Y_train": Y[train_idx], "lr_Y_train": lr_Y[train_idx],
        "X_test": values[test_idx], "Y_test": Y[test_idx], "lr_Y_test": lr_Y[test_idx],
        "feature_names": np.array(X.columns, dtype=str),
    }


# The current UCI archive nests the historic zip in its own; deeper nesting is refused.
MAX_ZIP_NESTING = 2


def _find_csv_member(zf: zipfile.ZipFile, where: str, depth: int = 0) -> bytes | None:
    """The bytes of ``diabetic_data.csv`` in a zip archive, searching nested zips too.

    Every member read (the CSV, a nested zip) is size- and ratio-limited
    (:func:`datasets.download.read_zip_member`), and zips nest at most
    ``MAX_ZIP_NESTING`` deep, so a hostile archive cannot exhaust memory.
    """
    infos = zf.infolist()
    for info in infos:
        if info.filename.rsplit("/", 1)[-1] == CSV_NAME:
            return read_zip_member(zf, info, where)
    for info in infos:
        if info.filename.lower().endswith(".zip"):
            if depth >= MAX_ZIP_NESTING:
                raise ArchiveLimitError(f"{where}: {info.filename!r} nests zip archives more than "
                                        f"{MAX_ZIP_NESTING} deep; this is not the expected archive: delete "
                                        "it and retry")
            with zipfile.ZipFile(io.BytesIO(read_zip_member(zf, info, where))) as inner:
                found = _find_csv_member(inner, f"{where}:{info.filename}", depth + 1)
            if found is not None:
                return found
    return None


def extract_csv(archive: str | os.PathLike, csv_path: str | os.PathLike) -> Path:
    """Write the archive's ``diabetic_data.csv`` atomically to ``csv_path``."""

    archive, csv_path = Path(archive), Path(csv_path)
    try:
        with zipfile.ZipFile(archive) as zf:
            data = _find_csv_member(zf, str(archive))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(f"{archive} is not a valid zip archive ({exc}); delete it and retry") from exc
    if data is None:
        raise DownloadError(f"{archive} does not contain {CSV_NAME}")
    with atomic_write(csv_path) as f:
        f.write(data)
    return csv_path


def ensure_csv(dataset_dir: Path, progress: bool = True) -> Path:
    """Path of ``hospital/dataset_diabetes/diabetic_data.csv``, downloading if needed.

    Tries the historic archive (sha256-verified), then the current UCI archive (no
    published digest: its CSV is compared with the known CSV digest and the processed
    data is checked against the original's sizes).
    """
    csv_path = dataset_dir / CSV_RELPATH
    if csv_path.is_file():
        return csv_path
    try:
        archive = maybe_download(ARCHIVE_URLS, ARCHIVE_NAME, dataset_dir, sha256=ARCHIVE_SHA256,
                                 progress=progress, source=SOURCE)
    except DownloadError as primary_error:
        try:
            archive = maybe_download([CURRENT_UCI_URL], CURRENT_UCI_NAME, dataset_dir,
                                     progress=progress, source=SOURCE + ", current layout")
        except DownloadError as fallback_error:
            # One summary counting every URL tried (the historic archive's and the current one),
            # unless the archive on disk is corrupt: that first line says so and how to recover.
            tried = len(ARCHIVE_URLS) + 1
            first = (str(primary_error).splitlines()[0] if isinstance(primary_error, ChecksumMismatchError) else
                     f"could not download the hospital data ({SOURCE}) from {count(tried, 'URL')} "
                     f"({primary_error.reason}); place a correct copy of {ARCHIVE_NAME} by hand at "
                     f"{dataset_dir / ARCHIVE_NAME} (sha256 {ARCHIVE_SHA256})")
            tried_lines = [line for e in (primary_error, fallback_error) for line in str(e).splitlines()[1:]
                           if line.startswith("  - ")]
            error = type(primary_error)("\n".join([first, "URLs tried:"] + tried_lines))
            error.reason = primary_error.reason
            raise error from fallback_error
        logger.info("using the current UCI archive %s (no published digest)", archive)
    extract_csv(archive, csv_path)
    return csv_path


def load_hospital(data_dir=None, force_refresh: bool = False, progress: bool = True) -> Datasets:
    """Load ``hospital``: train float32 (20000, 127), ``validation=None``, test (81766, 127).

    Labels are int64 0/1 (1 = readmitted within 30 days).
    """
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    cache_path = dataset_dir / CACHE_NAME
    arrays = None if force_refresh else read_cache(cache_path, CACHE_KEYS)
    if arrays is None:
        csv_path = ensure_csv(dataset_dir, progress=progress)
        digest = file_digest(csv_path)
        if digest != CSV_SHA256:
            logger.warning("%s differs from the known release (sha256 %s); relying on the size "
                           "checks", csv_path, digest)
        df = read_csv(csv_path)
        check_expected(f"number of rows of {csv_path}", len(df), EXPECTED_ROWS)
        arrays = process_hospital(df)
        n_features = arrays["X_train"].shape[1]
        check_expected("number of hospital features (pandas keep_default_na=False)", n_features,
                       EXPECTED_FEATURES)
        n_pos = int(arrays["lr_Y_train"].sum() + arrays["lr_Y_test"].sum())
        check_expected("number of '<30' readmissions", n_pos, EXPECTED_POSITIVES)

        save_arrays(cache_path, **arrays)
        logger.info("cached %s", cache_path)
    return Datasets(
        train=DataSet(arrays["X_train"], arrays["lr_Y_train"].astype(np.int64)),
        validation=None,
        test=DataSet(arrays["X_test"], arrays["lr_Y_test"].astype(np.int64)),
    )
