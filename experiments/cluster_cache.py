"""A cache of phase 5's clustering labellings, keyed by exactly what they depend on.

A pool's labellings (single linkage, then KMeans for k = 4..128; ss_logreg's phase 5)
depend only on the matrix (dtype, shape and bytes), KMeans' ``n_init`` and seed, the
k's, the clustering code (:data:`CLUSTERING_VERSION`, raised whenever
:mod:`experiments.clustering` changes its results; the single-linkage route of
:func:`experiments.clustering.single_linkage_route` when it is not the condensed one) and the numpy / scipy / scikit-learn
versions; they are computed on one thread, so not on the machine. The key is the SHA-256
of all of these. Runs that share a training matrix, such as the regularisation sweep
(``--fixed-reg``: the feature matrix X is the same for every lambda, only the gradient
matrix changes), build the X pool once. A cached labelling is the stored result of the
same computation, so results are bitwise identical with and without the cache.

Files: ``<cache_dir>/.cluster-labels-<key>.npz`` (keys ``key`` and ``labels_0``,
``labels_1``, ...), written atomically by :func:`datasets.storage.save_arrays`; the name
is hidden so that result comparisons and listings skip it. A damaged file, a file of
another key or of other shapes is ignored (with a warning) and rebuilt. Deleting the
folder is always safe.

While a pool is being built, each finished labelling is also stored on its own
(``.cluster-labels-<key>-part<j>.npz``, :func:`save_part`), so a run stopped in the middle
of a long phase 5 (Fashion-MNIST's pools take hours on 2 cores) resumes with the parts it
had; the part files are removed once the whole pool is stored.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from datasets.common import read_cache
from datasets.storage import save_arrays
from experiments import clustering

logger = logging.getLogger(__name__)

# Raise when the clustering code changes its labels (experiments/clustering.py).
CLUSTERING_VERSION = 1
CACHE_PREFIX = ".cluster-labels-"


def cache_key(X, parts, n_init: int, seed: int) -> str:
    """SHA-256 (hex) of the matrix content and every setting its labellings depend on
    (``X``: an array or a :class:`experiments.clustering.MatrixFile`, the same key for the
    same matrix; or a :class:`experiments.clustering.FactoredMatrix`: the key of its dense
    rows where it takes the condensed route, another one on the block route)."""
    import scipy
    import sklearn

    held = clustering.is_held(X)
    X = X if held else np.ascontiguousarray(X)
    h = hashlib.sha256()
    # The single-linkage route (and the blocks of the block-wise one) is part of the
    # computation: pools of matrices that take the condensed route keep their keys.
    route = clustering.single_linkage_route(X.shape[0])
    single = "" if route == "condensed" else f"single={route}:{clustering.MST_BLOCK}|"
    # A factored matrix's block route computes its distances from the factors (other
    # roundings than the dense rows'): its key names that and hashes the factors, which
    # determine every labelling (the dense rows are formed from them). On the condensed
    # route it computes what the dense matrix does: the same key.
    chunks = X.chunks() if held else (memoryview(X).cast("B"),)   # a held matrix: never whole in memory
    if isinstance(X, clustering.FactoredMatrix) and route != "condensed":
        f = X.factors
        single += f"factored:R={f.R.dtype.str}{f.R.shape}:Xa={f.Xa.dtype.str}{f.Xa.shape}|"
        chunks = X.factor_chunks()
    head = (f"v{CLUSTERING_VERSION}|{single}{X.dtype.str}|{X.shape}|parts={list(parts)}|n_init={int(n_init)}|"
            f"seed={int(seed)}|numpy={np.__version__}|scipy={scipy.__version__}|sklearn={sklearn.__version__}|")
    h.update(head.encode())
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"{CACHE_PREFIX}{key}.npz"


def load_labels(cache_dir: str | os.PathLike, key: str, n_rows: int, n_parts: int) -> list[np.ndarray] | None:
    """The cached labellings of ``key``, or ``None`` if absent, damaged or not matching."""
    path = cache_path(cache_dir, key)
    names = [f"labels_{j}" for j in range(n_parts)]
    arrays = read_cache(path, ["key"] + names)
    if arrays is None:
        return None
    labels = [arrays[n] for n in names]
    if str(arrays["key"]) != key or any(a.shape != (n_rows,) or a.dtype.kind not in "iu" for a in labels):
        logger.warning("ignoring cache %s: it does not hold %d labellings of %d rows for its key; "
                       "rebuilding it", path, n_parts, n_rows)
        return None
    return labels


def save_labels(cache_dir: str | os.PathLike, key: str, labels) -> None:
    """Store ``labels`` under ``key`` (atomically; a folder that cannot be written only warns)."""
    path = cache_path(cache_dir, key)
    try:
        save_arrays(path, key=np.array(key), **{f"labels_{j}": np.asarray(a) for j, a in enumerate(labels)})
    except OSError as exc:
        logger.warning("cannot write the clustering cache %s (%s); continuing without it", path, exc)


def part_path(cache_dir: str | os.PathLike, key: str, j: int) -> Path:
    return Path(cache_dir) / f"{CACHE_PREFIX}{key}-part{int(j)}.npz"


def load_part(cache_dir: str | os.PathLike, key: str, j: int, n_rows: int) -> np.ndarray | None:
    """Labelling ``j`` of the pool ``key`` stored by :func:`save_part`, or ``None`` if absent,
    damaged or not matching (key, index and shape are checked)."""
    path = part_path(cache_dir, key, j)
    arrays = read_cache(path, ["key", "part", "labels"])
    if arrays is None:
        return None
    labels = arrays["labels"]
    if (str(arrays["key"]) != key or int(arrays["part"]) != int(j) or labels.shape != (n_rows,)
            or labels.dtype.kind not in "iu"):
        logger.warning("ignoring cache %s: it does not hold labelling %d of %d rows for its key; "
                       "rebuilding it", path, j, n_rows)
        return None
    return labels


def save_part(cache_dir: str | os.PathLike, key: str, j: int, labels) -> None:
    """Store labelling ``j`` of the pool ``key`` on its own (atomically; only warns on failure)."""
    path = part_path(cache_dir, key, j)
    try:
        save_arrays(path, key=np.array(key), part=np.array(int(j)), labels=np.asarray(labels))
    except OSError as exc:
        logger.warning("cannot write the clustering cache %s (%s); continuing without it", path, exc)


def remove_parts(cache_dir: str | os.PathLike, key: str, n_parts: int) -> None:
    """Delete the part files of ``key`` (after the whole pool was stored)."""
    for j in range(n_parts):
        try:
            part_path(cache_dir, key, j).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("cannot remove %s (%s)", part_path(cache_dir, key, j), exc)
