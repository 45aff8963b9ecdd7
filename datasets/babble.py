"""``cdr``, ``reduced_cdr`` and the CDR supplements: Babble Labble CDR (see docs/design.md,
'Datasets and preprocessing').

Source: the Snorkel/Babble Labble SQLite database ``babble/cdr.db`` (CodaLab bundle
``0x38e021ee339a4f6aa21d9c4a16c1b7ee``). Tables and the columns used, read **by name**
(the original assumed positional column orders in places):

* ``candidate(id, split)``: split 0 = train, 1 = dev, 2 = test;
* ``label(value, candidate_id, key_id)``: one row per labelling-function (LF) vote,
  ``value`` in {-1, +1}, ``key_id`` = LF id;
* ``feature(value, candidate_id, key_id)``: ``key_id`` = 1-based feature id;
* ``gold_label(value, candidate_id)``.

"Table order" below is the order of a full scan of the table (``SELECT ... FROM t NOT
INDEXED``, i.e. the original's ``select *``), never an index order.

``cdr``: train/validation rows are the ``label`` rows of split-0/1 candidates, in
table order (a candidate labelled by k LFs appears k times) with label (vote + 1) / 2;
test has one row per split-2 candidate, in candidate-table order, labelled (gold + 1) / 2
(joined on candidate id). ``x`` is a float32 CSR matrix of width ``max(feature.key_id)``
holding each row's candidate features. Sparse x is only meant for ``babble_reduce``.

Supplements, all aligned with those rows:

* ``cdr_weights``: ``[w_train, w_dev, w_test]`` float64; a row of a candidate with k
  votes weighs 1/k; test weights are ones.
* ``cdr_LFs``: ``[LF_ids_0, LF_ids_1, LF_ids_2]`` int64, the ``key_id`` of each vote row
  of split s (for s = 2 these are the votes on test candidates, not aligned with the
  test rows, which are per candidate).
* ``cdr_nonfires``: gold-labelled candidates of any split with no LF vote, in
  ``gold_label`` table order; sparse x, float64 labels (gold + 1) / 2.
* ``cdr_labeling_info``: ``(LF_labels, gold_labels)``: int64 arrays with rows
  (value, candidate_id, key_id) of the whole ``label`` table in table order and
  (value, candidate_id) of ``gold_label`` ordered by candidate_id.

Caches in ``babble/`` (no pickle; ragged per-split lists become one key per split):
``cdrx0.npz``, ``cdrx1.npz``, ``cdrx2.npz`` (``scipy.sparse.save_npz``, CSR),
``cdrlabels.npz`` (``labels_0``, ``labels_1``, ``labels_2``), ``cdr_weights.npz``
(``weights_0..2``), ``cdr_LF_ids.npz`` (``LF_ids_0..2``), ``cdr_nonfiresx.npz`` (CSR),
``cdr_nonfireslabels.npz`` (``labels``), ``cdr_LF_labels.npz`` (``LF_labels``,
``columns``) and ``cdr_gold_labels.npz`` (``gold_labels``, ``columns``) instead of the
original's pandas pickles. One pass over the database writes all of them.

``reduced_cdr`` needs the output of the ``babble_reduce`` experiment, written with
:func:`save_reduced_cdr` (format below); it is densified and cached as
``babble/reduced_cdr.npz`` / ``babble/reduced_cdr_nonfires.npz`` together with the
sha256 of the file they came from, so a newer ``babble_reduce`` output is never masked by
an old cache.

Reduced-matrix file format (``reduced_cdr_x.npz``, ``reduced_cdr_nonfires_x.npz``;
replaces the original's pickled object array ``reduced_x``): keys ``format`` (the string
``"csr-v1"``), ``num_matrices`` (3, or 1 for nonfires), and for each matrix i
``x_{i}_data``, ``x_{i}_indices``, ``x_{i}_indptr``, ``x_{i}_shape`` (the CSR parts),
plus optionally ``feature_inds`` (the kept columns of the ``cdr`` matrices).
"""
from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from datasets.common import (
    DataSet,
    DatasetIntegrityError,
    Datasets,
    get_dataset_dir,
    load_sparse,
    read_cache,
    read_sparse_cache,
    save_sparse,
)
from datasets.download import file_digest, maybe_download
from datasets.storage import load_arrays, save_arrays

logger = logging.getLogger(__name__)

SUBDIR = "babble"
CODALAB_BLOB_URL = "https://worksheets.codalab.org/rest/bundles/{bundle}/contents/blob/"
DB_BUNDLES = {
    "cdr": "0x38e021ee339a4f6aa21d9c4a16c1b7ee",
    # Not registered (removed from the original's registry in b781b4a); kept for reference.
    "spouse": "0x32a8394d80064f028859c9e57310a7f7",
}
SPLITS = (0, 1, 2)
REDUCED_FORMAT = "csr-v1"
_FETCH_ROWS = 1_000_000  # rows per sqlite fetch while reading a table
BABBLE_REDUCE_COMMAND = ("python scripts/babble_reduce.py --data-dir {data_dir} --dataset-id cdr "
                         "--fit-intercept --sample-weights --save-reduced-dir {babble_dir}")


class BabbleSchemaError(DatasetIntegrityError):
    """The database lacks a table or column of the documented schema."""


class ReducedDataMissingError(FileNotFoundError):
    """``reduced_cdr`` was requested before the ``babble_reduce`` experiment wrote its input."""


# --------------------------------------------------------------------------- paths
def db_url(name: str = "cdr") -> str:
    return CODALAB_BLOB_URL.format(bundle=DB_BUNDLES[name])


def _paths(babble_dir: Path, name: str) -> dict[str, Path]:
    p = babble_dir
    return {
        "db": p / f"{name}.db",
        "x0": p / f"{name}x0.npz", "x1": p / f"{name}x1.npz", "x2": p / f"{name}x2.npz",
        "labels": p / f"{name}labels.npz",
        "weights": p / f"{name}_weights.npz",
        "LF_ids": p / f"{name}_LF_ids.npz",
        "nonfires_x": p / f"{name}_nonfiresx.npz",
        "nonfires_labels": p / f"{name}_nonfireslabels.npz",
        "LF_labels": p / f"{name}_LF_labels.npz",
        "gold_labels": p / f"{name}_gold_labels.npz",
        "reduced_x": p / f"reduced_{name}_x.npz",
        "reduced_nonfires_x": p / f"reduced_{name}_nonfires_x.npz",
        "reduced": p / f"reduced_{name}.npz",
        "reduced_nonfires": p / f"reduced_{name}_nonfires.npz",
    }


# --------------------------------------------------------------------------- database
@dataclass
class BabbleTables:
    """The four tables as arrays, each in table order."""

    candidate_id: np.ndarray      # int64 (n_candidates,)
    candidate_split: np.ndarray   # int64 (n_candidates,)
    label_value: np.ndarray       # float64 (n_votes,)
    label_candidate: np.ndarray   # int64 (n_votes,)
    label_key: np.ndarray         # int64 (n_votes,)
    feature_value: np.ndarray     # float64 (n_feature_rows,)
    feature_candidate: np.ndarray  # int64
    feature_key: np.ndarray       # int64, 1-based
    gold_value: np.ndarray        # float64 (n_gold,)
    gold_candidate: np.ndarray    # int64 (n_gold,)


def _read_columns(conn: sqlite3.Connection, table: str, columns: Sequence[str], dtypes) -> list[np.ndarray]:
    found = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
    if not found:
        raise BabbleSchemaError(f"database has no table {table!r}")
    missing = [c for c in columns if c not in found]
    if missing:
        raise BabbleSchemaError(f"table {table!r} lacks the columns {missing}; it has {found}")
    cols = ", ".join(f'"{c}"' for c in columns)
    # NOT INDEXED: a full scan in table order, never the order of a covering index.
    cursor = conn.execute(f'SELECT {cols} FROM "{table}" NOT INDEXED')
    chunks = []
    while True:
        rows = cursor.fetchmany(_FETCH_ROWS)
        if not rows:
            break
        # float64 holds every id below 2**53 exactly; NULL becomes NaN and is caught below.
        try:
            chunks.append(np.array(rows, dtype=np.float64).reshape(len(rows), len(columns)))
        except (TypeError, ValueError) as exc:
            raise BabbleSchemaError(f"table {table!r}: columns {list(columns)} must be numeric ({exc})") from exc
    table_values = np.concatenate(chunks) if chunks else np.zeros((0, len(columns)))
    out = []
    for i, (column, dtype) in enumerate(zip(columns, dtypes)):
        values = table_values[:, i]
        if np.isnan(values).any():
            raise BabbleSchemaError(f"table {table!r} has NULL or non-numeric values in column {column!r}")
        out.append(values.astype(dtype))
    return out


def read_tables(db_path: str | os.PathLike) -> BabbleTables:
    """Read the four tables of a Babble Labble database (read-only, columns by name)."""
    db_path = Path(db_path)
    uri = db_path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise BabbleSchemaError(f"cannot open {db_path} as SQLite: {exc}") from exc
    try:
        cand_id, cand_split = _read_columns(conn, "candidate", ("id", "split"), (np.int64, np.int64))
        lab = _read_columns(conn, "label", ("value", "candidate_id", "key_id"), (np.float64, np.int64, np.int64))
        feat = _read_columns(conn, "feature", ("value", "candidate_id", "key_id"),
                             (np.float64, np.int64, np.int64))
        gold = _read_columns(conn, "gold_label", ("value", "candidate_id"), (np.float64, np.int64))
    except sqlite3.DatabaseError as exc:
        raise BabbleSchemaError(f"{db_path} is not a readable SQLite database ({exc}); delete it and "
                                "retry") from exc
    finally:
        conn.close()
    return BabbleTables(cand_id, cand_split, *lab, *feat, *gold)


class _CandidateIndex:
    """Maps candidate ids to their position in the candidate table."""

    def __init__(self, ids: np.ndarray):
        if len(np.unique(ids)) != len(ids):
            raise DatasetIntegrityError("candidate.id is not unique")
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def rows(self, ids: np.ndarray, what: str) -> np.ndarray:
        pos = np.searchsorted(self._sorted, ids)
        pos_clipped = np.minimum(pos, max(len(self._sorted) - 1, 0))
        ok = (pos < len(self._sorted)) & (self._sorted[pos_clipped] == ids) if len(self._sorted) else \
            np.zeros(len(ids), dtype=bool)
        if not ok.all():
            bad = np.unique(ids[~ok])[:5]
            raise DatasetIntegrityError(f"{what} refers to candidate ids not in the candidate table, "
                                        f"e.g. {bad.tolist()}")
        return self._order[pos]


def _feature_matrix(t: BabbleTables, index: _CandidateIndex) -> sp.csr_matrix:
    """float64 CSR (n_candidates, max(key_id)): row i = features of candidate-table row i."""
    n_features = int(t.feature_key.max()) if len(t.feature_key) else 0
    if len(t.feature_key) and t.feature_key.min() < 1:
        raise DatasetIntegrityError(f"feature.key_id must be >= 1 (1-based); got {t.feature_key.min()}")
    rows = index.rows(t.feature_candidate, "feature.candidate_id")
    cols = t.feature_key - 1
    vals = t.feature_value
    key = rows * max(n_features, 1) + cols
    if len(np.unique(key)) != len(key):
        # The original assigned into a dok matrix: a repeated (candidate, feature) keeps
        # the last value in table order.
        _, first_in_reversed = np.unique(key[::-1], return_index=True)
        keep = np.sort(len(key) - 1 - first_in_reversed)
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(t.candidate_id), n_features))


def _integral(values: np.ndarray) -> np.ndarray:
    return values.astype(np.int64) if np.all(values == np.round(values)) else values


def build_caches(babble_dir: Path, tables: BabbleTables, name: str = "cdr") -> None:
    """One pass over the database tables: write every cache of ``cdr`` and its supplements."""

    paths = _paths(babble_dir, name)
    t = tables
    index = _CandidateIndex(t.candidate_id)
    features = _feature_matrix(t, index)
    vote_rows = index.rows(t.label_candidate, "label.candidate_id")
    vote_split = t.candidate_split[vote_rows]
    # Each vote row of a candidate with k votes weighs 1/k (``cdr_weights``).
    _, inverse, counts = np.unique(t.label_candidate, return_inverse=True, return_counts=True)
    vote_weight = 1.0 / counts[inverse.reshape(-1)]

    test_rows = np.where(t.candidate_split == 2)[0]
    test_ids = t.candidate_id[test_rows]
    gold_index = _gold_lookup(t)
    missing = [int(c) for c in test_ids if c not in gold_index]
    if missing:
        raise DatasetIntegrityError(f"{len(missing)} test candidates have no gold label, e.g. {missing[:5]}")
    test_gold = np.array([gold_index[int(c)] for c in test_ids], dtype=np.float64)
    _compare_with_positional_gold(t, test_gold)

    xs, labels, weights, lf_ids = [], [], [], []
    for s in (0, 1):
        mask = vote_split == s
        xs.append(features[vote_rows[mask]])
        labels.append((t.label_value[mask] + 1.0) / 2.0)
        weights.append(vote_weight[mask])
    xs.append(features[test_rows])
    labels.append((test_gold + 1.0) / 2.0)
    weights.append(np.ones(len(test_rows), dtype=np.float64))
    for s in SPLITS:
        lf_ids.append(t.label_key[vote_split == s].astype(np.int64))

    voted = np.isin(t.gold_candidate, t.label_candidate)
    nonfire_ids = t.gold_candidate[~voted]
    nonfires_x = features[index.rows(nonfire_ids, "gold_label.candidate_id")]
    nonfires_labels = (t.gold_value[~voted] + 1.0) / 2.0

    order = np.argsort(t.gold_candidate, kind="stable")
    lf_labels = np.column_stack([_integral(t.label_value), t.label_candidate, t.label_key])
    gold_labels = np.column_stack([_integral(t.gold_value[order]), t.gold_candidate[order]])

    for s in SPLITS:
        save_sparse(paths[f"x{s}"], xs[s].astype(np.float32))
    save_arrays(paths["weights"], **{f"weights_{s}": weights[s] for s in SPLITS})
    save_arrays(paths["LF_ids"], **{f"LF_ids_{s}": lf_ids[s] for s in SPLITS})
    save_sparse(paths["nonfires_x"], nonfires_x.astype(np.float32))
    save_arrays(paths["nonfires_labels"], labels=nonfires_labels.astype(np.float64))
    save_arrays(paths["LF_labels"], LF_labels=lf_labels, columns=np.array(["value", "candidate_id", "key_id"]))
    save_arrays(paths["gold_labels"], gold_labels=gold_labels, columns=np.array(["value", "candidate_id"]))
    # Written last: its presence marks the cdr cache as complete.
    save_arrays(paths["labels"], **{f"labels_{s}": labels[s].astype(np.float64) for s in SPLITS})
    logger.info("%s: train %s, dev %s, test %s, nonfires %s, %d features; caches written to %s", name,
                xs[0].shape[0], xs[1].shape[0], xs[2].shape[0], nonfires_x.shape[0], features.shape[1], babble_dir)


def _gold_lookup(t: BabbleTables) -> dict[int, float]:
    gold: dict[int, float] = {}
    for cid, value in zip(t.gold_candidate.tolist(), t.gold_value.tolist()):
        if cid in gold and gold[cid] != value:
            raise DatasetIntegrityError(f"candidate {cid} has conflicting gold labels {gold[cid]} and {value}")
        gold[cid] = value
    return gold


def _compare_with_positional_gold(t: BabbleTables, joined: np.ndarray) -> None:
    """Warn if the original's positional alignment of test gold labels would have differed.

    The original took ``gold_label`` rows with ``candidate_id >= min(test id)`` ordered by
    candidate id and paired them with the test candidates by position; here they are
    joined on candidate id. Both agree on a well-formed database.
    """
    if not np.any(t.candidate_split == 2):
        return
    start = t.candidate_id[t.candidate_split == 2].min()
    mask = t.gold_candidate >= start
    positional = t.gold_value[mask][np.argsort(t.gold_candidate[mask], kind="stable")]
    if len(positional) != len(joined) or not np.array_equal(positional, joined):
        logger.warning("test gold labels joined on candidate id differ from the original's positional "
                       "pairing (%d vs %d labels); using the join", len(joined), len(positional))


def ensure_caches(data_dir=None, name: str = "cdr", required: Sequence[str] = (), force_refresh: bool = False,
                  progress: bool = True) -> dict[str, Path]:
    """Paths of the caches; (re)build them all from the database if any of ``required`` is missing."""
    babble_dir = get_dataset_dir(SUBDIR, data_dir)
    paths = _paths(babble_dir, name)
    if force_refresh or not all(paths[k].is_file() for k in required):
        db = maybe_download([db_url(name)], paths["db"].name, babble_dir, progress=progress,
                            source=f"Babble Labble {name.upper()} SQLite database, CodaLab bundle "
                                   f"{DB_BUNDLES[name]}")
        logger.info("reading %s", db)
        build_caches(babble_dir, read_tables(db), name)
    return paths


def _cached_split_arrays(data_dir, name: str, key: str, prefix: str, progress: bool) -> list[np.ndarray]:
    paths = ensure_caches(data_dir, name, required=(key,), progress=progress)
    arrays = read_cache(paths[key], [f"{prefix}_{s}" for s in SPLITS])
    if arrays is None:  # unreadable or old format: rebuild once
        paths = ensure_caches(data_dir, name, force_refresh=True, progress=progress)
        arrays = read_cache(paths[key], [f"{prefix}_{s}" for s in SPLITS])
    return [arrays[f"{prefix}_{s}"] for s in SPLITS]


# --------------------------------------------------------------------------- public loaders
def load_cdr(data_dir=None, force_refresh: bool = False, progress: bool = True) -> Datasets:
    """Load ``cdr``: sparse float32 CSR x per split, float64 0./1. labels.

    Train/validation rows are LF votes (one per (candidate, LF)); test rows are the
    4,101 test candidates with gold labels.
    """
    keys = ("x0", "x1", "x2", "labels")
    paths = ensure_caches(data_dir, "cdr", required=keys, force_refresh=force_refresh, progress=progress)
    labels = read_cache(paths["labels"], [f"labels_{s}" for s in SPLITS])
    xs = [read_sparse_cache(paths[f"x{s}"]) for s in SPLITS]
    if labels is None or any(x is None for x in xs):  # damaged or old format: rebuild once
        paths = ensure_caches(data_dir, "cdr", force_refresh=True, progress=progress)
        labels = read_cache(paths["labels"], [f"labels_{s}" for s in SPLITS])
        xs = [load_sparse(paths[f"x{s}"]) for s in SPLITS]
    splits = [DataSet(xs[s], labels[f"labels_{s}"]) for s in SPLITS]
    return Datasets(*splits)


def load_cdr_labels(data_dir=None, name: str = "cdr", progress: bool = True) -> list[np.ndarray]:
    """``[labels_train, labels_dev, labels_test]`` of ``cdr`` (float64 0./1.)."""
    return _cached_split_arrays(data_dir, name, "labels", "labels", progress)


def load_cdr_weights(data_dir=None, progress: bool = True) -> list[np.ndarray]:
    """``[w_train, w_dev, w_test]``: float64 sample weights aligned with the cdr rows (1/k per vote)."""
    return _cached_split_arrays(data_dir, "cdr", "weights", "weights", progress)


def load_cdr_LFs(data_dir=None, progress: bool = True) -> list[np.ndarray]:
    """``[LF_ids_0, LF_ids_1, LF_ids_2]``: int64 LF id (``label.key_id``) of each vote row per split."""
    return _cached_split_arrays(data_dir, "cdr", "LF_ids", "LF_ids", progress)


def load_cdr_nonfires(data_dir=None, progress: bool = True) -> DataSet:
    """Gold-labelled candidates no LF voted on: sparse float32 x, float64 0./1. labels."""
    paths = ensure_caches(data_dir, "cdr", required=("nonfires_x", "nonfires_labels"), progress=progress)
    labels = read_cache(paths["nonfires_labels"], ["labels"])
    x = read_sparse_cache(paths["nonfires_x"])
    if labels is None or x is None:
        paths = ensure_caches(data_dir, "cdr", force_refresh=True, progress=progress)
        labels = read_cache(paths["nonfires_labels"], ["labels"])
        x = load_sparse(paths["nonfires_x"])
    return DataSet(x, labels["labels"].reshape(-1))


def load_cdr_labeling_info(data_dir=None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(LF_labels, gold_labels)``.

    ``LF_labels``: int64 (n_votes, 3) rows (value, candidate_id, key_id), the whole
    ``label`` table in table order. ``gold_labels``: int64 (n_gold, 2) rows
    (value, candidate_id) ordered by candidate_id.
    """
    paths = ensure_caches(data_dir, "cdr", required=("LF_labels", "gold_labels"), progress=progress)
    lf = read_cache(paths["LF_labels"], ["LF_labels"])
    gold = read_cache(paths["gold_labels"], ["gold_labels"])
    if lf is None or gold is None:
        paths = ensure_caches(data_dir, "cdr", force_refresh=True, progress=progress)
        lf, gold = read_cache(paths["LF_labels"], ["LF_labels"]), read_cache(paths["gold_labels"], ["gold_labels"])
    return lf["LF_labels"], gold["gold_labels"]


# --------------------------------------------------------------------------- reduced cdr
def _csr_parts(prefix: str, matrix) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(matrix)
    return {f"{prefix}_data": m.data, f"{prefix}_indices": m.indices, f"{prefix}_indptr": m.indptr,
            f"{prefix}_shape": np.array(m.shape, dtype=np.int64)}


def _csr_from_parts(arrays: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    shape = tuple(int(n) for n in arrays[f"{prefix}_shape"])
    return sp.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
                         shape=shape)


def save_reduced_cdr_files(directory: str | os.PathLike, matrices: Sequence, nonfires_matrix,
                           feature_inds=None, name: str = "cdr") -> tuple[Path, Path]:
    """Write ``reduced_{name}_x.npz`` and ``reduced_{name}_nonfires_x.npz`` into ``directory``.

    Parameters
    ----------
    matrices : sequence of 3 matrices (sparse or dense)
        The train, validation and test matrices restricted to the selected columns.
    nonfires_matrix : matrix
        The nonfires matrix restricted to the same columns.
    feature_inds : int array, optional
        The selected columns of the ``cdr`` matrices (recorded for reference).

    Derived dense caches (``reduced_{name}.npz``, ``reduced_{name}_nonfires.npz``) in the
    same folder are removed, since they were made from the previous matrices.
    """

    if len(matrices) != 3:
        raise ValueError(f"matrices must hold 3 matrices (train, validation, test); got {len(matrices)}")
    widths = {m.shape[1] for m in matrices} | {nonfires_matrix.shape[1]}
    if len(widths) != 1:
        raise ValueError(f"all reduced matrices must have the same number of columns; got {sorted(widths)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = _paths(directory, name)
    extra = {}
    if feature_inds is not None:
        extra["feature_inds"] = np.asarray(feature_inds, dtype=np.int64).reshape(-1)
        if len(extra["feature_inds"]) != widths.pop():
            raise ValueError("feature_inds must have one entry per column of the reduced matrices")
    main = {"format": np.array(REDUCED_FORMAT), "num_matrices": np.array(3)}
    for i, m in enumerate(matrices):
        main.update(_csr_parts(f"x_{i}", m))
    nonfires = {"format": np.array(REDUCED_FORMAT), "num_matrices": np.array(1), **_csr_parts("x_0", nonfires_matrix)}
    for stale in (paths["reduced"], paths["reduced_nonfires"]):
        stale.unlink(missing_ok=True)
    save_arrays(paths["reduced_x"], **main, **extra)
    save_arrays(paths["reduced_nonfires_x"], **nonfires, **extra)
    logger.info("wrote %s and %s", paths["reduced_x"], paths["reduced_nonfires_x"])
    return paths["reduced_x"], paths["reduced_nonfires_x"]


def save_reduced_cdr(data_dir, matrices: Sequence, nonfires_matrix, feature_inds=None) -> tuple[Path, Path]:
    """Write the ``babble_reduce`` output where ``reduced_cdr`` reads it: ``<data_dir>/babble/``."""
    return save_reduced_cdr_files(get_dataset_dir(SUBDIR, data_dir), matrices, nonfires_matrix, feature_inds)


def _read_reduced(path: Path, data_dir, expected_matrices: int) -> list[sp.csr_matrix]:
    if not path.is_file():
        babble_dir = path.parent
        raise ReducedDataMissingError(
            f"{path} is missing: it is written by the babble_reduce experiment. Run "
            f"`{BABBLE_REDUCE_COMMAND.format(data_dir=babble_dir.parent, babble_dir=babble_dir)}` first "
            "(it needs the cdr dataset).")

    try:
        arrays = load_arrays(path)
    except ValueError as exc:  # storage.CorruptFileError: damaged, or the original's pickles
        raise DatasetIntegrityError(
            f"{path} is damaged or not in this project's format ({exc}); files written by the original "
            "code (pickled object array 'reduced_x') are not loaded: re-run babble_reduce") from exc
    if str(arrays.get("format", "")) != REDUCED_FORMAT or int(arrays.get("num_matrices", -1)) != expected_matrices:
        raise DatasetIntegrityError(f"{path}: expected format {REDUCED_FORMAT!r} with {expected_matrices} "
                                    f"matrices; got keys {sorted(arrays)}")
    return [_csr_from_parts(arrays, f"x_{i}") for i in range(expected_matrices)]


def load_reduced_cdr_x(data_dir=None) -> tuple[list[sp.csr_matrix], sp.csr_matrix]:
    """The ``babble_reduce`` output as written: ``([x_train, x_dev, x_test], x_nonfires)`` CSR."""
    paths = _paths(get_dataset_dir(SUBDIR, data_dir), "cdr")
    return (_read_reduced(paths["reduced_x"], data_dir, 3),
            _read_reduced(paths["reduced_nonfires_x"], data_dir, 1)[0])


def load_reduced_cdr(data_dir=None, progress: bool = True) -> Datasets:
    """Load ``reduced_cdr``: dense float32 x with the L1-selected columns, float64 0./1. labels."""
    paths = _paths(get_dataset_dir(SUBDIR, data_dir), "cdr")
    source = paths["reduced_x"]
    keys = [f"{p}_{s}" for p in ("x", "labels") for s in SPLITS] + ["source_sha256"]
    digest = file_digest(source) if source.is_file() else None
    arrays = read_cache(paths["reduced"], keys)
    if arrays is None or digest is None or str(arrays["source_sha256"]) != digest:
        matrices = _read_reduced(source, data_dir, 3)
        labels = load_cdr_labels(data_dir, progress=progress)
        for s in SPLITS:
            if matrices[s].shape[0] != len(labels[s]):
                raise DatasetIntegrityError(
                    f"{source}: split {s} has {matrices[s].shape[0]} rows but cdr has {len(labels[s])} "
                    "labels; re-run babble_reduce on the current cdr data")
        arrays = {f"x_{s}": matrices[s].toarray().astype(np.float32) for s in SPLITS}
        arrays.update({f"labels_{s}": labels[s] for s in SPLITS})
        arrays["source_sha256"] = np.array(digest)

        save_arrays(paths["reduced"], **arrays)
    return Datasets(*(DataSet(arrays[f"x_{s}"], arrays[f"labels_{s}"]) for s in SPLITS))


def load_reduced_cdr_nonfires(data_dir=None, progress: bool = True) -> DataSet:
    """Nonfires with the ``reduced_cdr`` columns: dense float32 x, float64 0./1. labels."""
    paths = _paths(get_dataset_dir(SUBDIR, data_dir), "cdr")
    source = paths["reduced_nonfires_x"]
    digest = file_digest(source) if source.is_file() else None
    arrays = read_cache(paths["reduced_nonfires"], ["x", "labels", "source_sha256"])
    if arrays is None or digest is None or str(arrays["source_sha256"]) != digest:
        x = _read_reduced(source, data_dir, 1)[0]
        labels = load_cdr_nonfires(data_dir, progress=progress).labels
        if x.shape[0] != len(labels):
            raise DatasetIntegrityError(f"{source}: {x.shape[0]} rows but cdr_nonfires has {len(labels)} "
                                        "labels; re-run babble_reduce on the current cdr data")
        arrays = {"x": x.toarray().astype(np.float32), "labels": labels, "source_sha256": np.array(digest)}

        save_arrays(paths["reduced_nonfires"], **arrays)
    return DataSet(arrays["x"], arrays["labels"])
