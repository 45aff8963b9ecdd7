"""Clusterings used to build the ``same_features`` / ``same_grad`` groups (ss_logreg §3 phase 5).

:func:`single_linkage_fcluster` is ``scipy.cluster.hierarchy.fclusterdata(X, 1)`` (single
linkage, Euclidean, ``'inconsistent'`` criterion, t = 1, depth 2) with the pairwise
distances computed by blocked matrix products instead of ``pdist`` (about 10x faster).
For integer-valued features (hospital, spam counts) the products are exact, so the
distances are bit-identical to ``pdist``; otherwise they agree to rounding, and the tree
is the same up to exact ties (as with fastcluster, spec §6 E11).

:func:`cluster_labels_one_thread` adds the KMeans fits and runs everything on one
thread (BLAS and OpenMP), so a pool does not depend on the machine's core count and
pools of several matrices can be built in parallel processes. :func:`pool_parts` and
:func:`cluster_part_one_thread` split a pool into its labellings (the single linkage,
then one KMeans per k), each computed exactly as in :func:`cluster_labels_one_thread`,
so that the labellings of several matrices can be spread over processes.
"""
from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, inconsistent, linkage


def condensed_euclidean(X: np.ndarray, block: int = 2048) -> np.ndarray:
    """The condensed distance vector of ``pdist(X)`` via ``(|x|^2 + |y|^2) - 2 x.y``.

    Only the upper triangle is formed: block rows ``[a, b)`` are multiplied with rows
    ``a+1..n-1`` (half the products of a full ``X X^T``), and the elementwise work runs
    in place on that block, in the same order of operations as the full-matrix version.
    With integer-valued features every product is exact, so the result is ``pdist(X)``
    bit for bit for any ``block``; otherwise it agrees with it to rounding.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    n = X.shape[0]
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty(n * (n - 1) // 2)
    # Two work buffers reused by every block: fresh (block, n) arrays per block cost
    # more in page faults than the arithmetic.
    buf_g = np.empty(min(block, n) * n)
    buf_d = np.empty(min(block, n) * n)
    pos = 0
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)
        b, m = stop - start, n - start - 1
        # Columns are points start+1..n-1; row i (point start+i) needs columns >= i.
        G = buf_g[:b * m].reshape(b, m)
        D2 = buf_d[:b * m].reshape(b, m)
        np.matmul(X[start:stop], X[start + 1:].T, out=G)
        np.add(sq[start:stop, None], sq[None, start + 1:], out=D2)
        G *= -2.0  # exact
        D2 += G    # == (|x|^2 + |y|^2) - 2 x.y bit for bit
        np.maximum(D2, 0.0, out=D2)
        np.sqrt(D2, out=D2)
        for i in range(b):
            row = D2[i, i:]
            out[pos:pos + row.size] = row
            pos += row.size
    return out


def single_linkage_fcluster(X: np.ndarray, t: float = 1.0, depth: int = 2) -> np.ndarray:
    """Flat cluster labels (1..k) equal to ``fclusterdata(X, t)`` with scipy's defaults."""
    Z = linkage(condensed_euclidean(X), method="single")
    R = inconsistent(Z, d=depth)
    return fcluster(Z, t=t, criterion="inconsistent", depth=depth, R=R)


def single_linkage_fcluster_one_thread(X: np.ndarray, t: float = 1.0, depth: int = 2) -> np.ndarray:
    """:func:`single_linkage_fcluster` with one BLAS thread (for a worker process that
    runs next to other work; the distances are the same bit for bit)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return single_linkage_fcluster(X, t, depth)


KMEANS_KS = (4, 8, 16, 32, 64, 128)


def kmeans_labels(X: np.ndarray, n_init: int = 10, seed: int = 0, ks=KMEANS_KS) -> list[np.ndarray]:
    """KMeans labels for each k in ``ks`` (k-means++, ``n_init`` restarts, seeded).

    ``algorithm='elkan'``: what sklearn 0.20's default ``'auto'`` ran on dense data (the
    original's setting); the same objective as Lloyd, and faster here.
    """
    from sklearn.cluster import KMeans

    return [KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="elkan").fit(X).labels_
            for k in ks if k <= X.shape[0]]


def cluster_labels_one_thread(X: np.ndarray, n_init: int = 10, seed: int = 0) -> list[np.ndarray]:
    """``[single_linkage_fcluster(X, 1)] + kmeans_labels(X)``, on one BLAS/OpenMP thread.

    One thread makes the labels independent of the core count (sklearn's OpenMP
    reductions sum the centres in a thread-dependent order, which changes labels) and
    costs little: on hospital, two threads made KMeans only 10-15% faster.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [single_linkage_fcluster(np.asarray(X, dtype=np.float64), 1)] + kmeans_labels(X, n_init, seed)


def pool_parts(n_rows: int, ks=KMEANS_KS) -> list:
    """The labellings of a pool of a matrix with ``n_rows`` rows, in the pool's order:
    ``"single"`` (single linkage), then each KMeans ``k`` of ``ks`` with ``k <= n_rows``."""
    return ["single"] + [k for k in ks if k <= n_rows]


def cluster_part_one_thread(X: np.ndarray, part, n_init: int = 10, seed: int = 0) -> np.ndarray:
    """One labelling of :func:`cluster_labels_one_thread`, on one BLAS/OpenMP thread:
    ``part == "single"`` gives the single-linkage labels, an int ``k`` KMeans' labels
    (the same calls, so the same labels bit for bit)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        if part == "single":
            return single_linkage_fcluster(np.asarray(X, dtype=np.float64), 1)
        return kmeans_labels(X, n_init, seed, ks=(int(part),))[0]


# Matrices of a clustering worker process, sent once by the pool's initializer (not with
# every task).
_WORKER_MATS: list = []


def init_worker(mats) -> None:
    """Initializer of a clustering worker process: keep ``mats`` for :func:`worker_part`."""
    _WORKER_MATS[:] = list(mats)


def worker_part(i: int, part, n_init: int, seed: int) -> np.ndarray:
    """:func:`cluster_part_one_thread` of the worker's matrix ``i``."""
    return cluster_part_one_thread(_WORKER_MATS[i], part, n_init, seed)
