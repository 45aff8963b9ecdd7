"""Clusterings used to build the ``same_features`` / ``same_grad`` groups (ss_logreg's phase 5).

:func:`single_linkage_fcluster` is ``scipy.cluster.hierarchy.fclusterdata(X, 1)`` (single
linkage, Euclidean, ``'inconsistent'`` criterion, t = 1, depth 2) with the pairwise
distances computed by blocked matrix products instead of ``pdist`` (faster).
For integer-valued features (hospital, spam counts) the products are exact, so the
distances are bit-identical to ``pdist``; otherwise they agree to rounding, and the tree
is the same up to exact ties (as with fastcluster).

:func:`cluster_labels_one_thread` adds the KMeans fits and runs everything on one
thread (BLAS and OpenMP), so a pool does not depend on the machine's core count and
pools of several matrices can be built in parallel processes. :func:`pool_parts` and
:func:`cluster_part_one_thread` split a pool into its labellings (the single linkage,
then one KMeans per k), each computed exactly as in :func:`cluster_labels_one_thread`,
so that the labellings of several matrices can be spread over the executor's workers
(:mod:`experiments.execution`).
"""
from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, inconsistent


def condensed_euclidean(X: np.ndarray, block: int = 256) -> np.ndarray:
    """The condensed distance vector of ``pdist(X)`` via ``(|x|^2 + |y|^2) - 2 x.y``.

    Only the upper triangle is formed: block rows ``[a, b)`` are multiplied with rows
    ``a+1..n-1`` (half the products of a full ``X X^T``), and the elementwise work runs
    in place on that block, in the same order of operations as the full-matrix version.
    With integer-valued features every product is exact, so the result is ``pdist(X)``
    bit for bit for any ``block``; otherwise it agrees with it to rounding, and so do
    two block sizes (which rows share a BLAS call can change the last bits, depending on
    the BLAS kernel: see docs/bitwise.md). Blocks of 256 rows keep the elementwise passes
    in cache (docs/performance.md).
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


def mst_single_linkage(y: np.ndarray, n: int) -> np.ndarray:
    """``scipy.cluster.hierarchy.linkage(y, "single")`` for a finite condensed matrix ``y``.

    The same algorithm step for step as scipy's ``_hierarchy.mst_single_linkage`` (Prim's
    algorithm from point 0; a distance replaces the current one only if strictly smaller;
    the next point is the lowest-numbered one at the minimum; a stable sort of the merge
    heights; then the union-find relabelling of ``_hierarchy.label``), so ``Z`` is the
    same bit for bit, ties included. Faster because each step works only on the points
    not yet merged, with vectorised gathers instead of a scan of all ``n`` points.
    """
    Z = np.empty((n - 1, 4))
    if n < 2:
        return Z
    rem = np.arange(1, n, dtype=np.int64)   # points not merged yet, increasing
    D = np.full(n - 1, np.inf)              # their distance to the merged set
    j = np.arange(n, dtype=np.int64)
    # condensed index of (a, b), a < b: n a - a (a + 1) / 2 + b - a - 1
    row_start = n * j - j * (j + 1) // 2 - j - 1   # index of (a, b) = row_start[a] + b
    x = 0
    for k in range(n - 1):
        split = int(np.searchsorted(rem, x))
        lo, hi = rem[:split], rem[split:]
        # dist(x, i): (i, x) for i < x, (x, i) for i > x
        vals = np.concatenate((y[row_start[lo] + x], y[row_start[x] + hi]))
        np.copyto(D, vals, where=vals < D)
        i = int(np.argmin(D))
        Z[k, 0], Z[k, 1], Z[k, 2] = x, rem[i], D[i]
        x = int(rem[i])
        rem = np.delete(rem, i)
        D = np.delete(D, i)
    Z = Z[np.argsort(Z[:, 2], kind="mergesort")]
    _label(Z, n)
    return Z


def _label(Z: np.ndarray, n: int) -> None:
    """scipy's ``_hierarchy.label``: cluster ids and sizes of a sorted merge list, in place."""
    parent = list(range(2 * n - 1))
    size = [1] * (2 * n - 1)

    def find(x):
        p = x
        while parent[x] != x:
            x = parent[x]
        while parent[p] != x:
            p, parent[p] = parent[p], x
        return x

    nxt = n
    for i in range(n - 1):
        xr, yr = find(int(Z[i, 0])), find(int(Z[i, 1]))
        Z[i, 0], Z[i, 1] = (xr, yr) if xr < yr else (yr, xr)
        parent[xr] = parent[yr] = nxt
        size[nxt] = size[xr] + size[yr]
        Z[i, 3] = size[nxt]
        nxt += 1


def single_linkage_fcluster(X: np.ndarray, t: float = 1.0, depth: int = 2) -> np.ndarray:
    """Flat cluster labels (1..k) equal to ``fclusterdata(X, t)`` with scipy's defaults."""
    X = np.asarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError("single linkage needs finite features; X has NaN or infinite entries")
    Z = mst_single_linkage(condensed_euclidean(X), X.shape[0])
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


def one_thread():
    """A context with one BLAS and one OpenMP thread for this process's libraries.

    threadpoolctl limits only the libraries already loaded, so scikit-learn (and its
    OpenMP runtime) is imported first: imported inside the context, KMeans would run on
    the default number of OpenMP threads (the CPU count), whose reduction order can
    change the labels.
    """
    import sklearn.cluster  # noqa: F401  (loads the OpenMP runtime before limiting it)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def cluster_labels_one_thread(X: np.ndarray, n_init: int = 10, seed: int = 0) -> list[np.ndarray]:
    """``[single_linkage_fcluster(X, 1)] + kmeans_labels(X)``, on one BLAS/OpenMP thread.

    One thread makes the labels independent of the core count (sklearn's OpenMP
    reductions sum the centres in a thread-dependent order, which changes labels); a
    second thread gains little.
    """
    return [cluster_part_one_thread(X, part, n_init, seed) for part in pool_parts(X.shape[0])]


def part_memory(X: np.ndarray, part) -> int:
    """Bytes a labelling of ``X`` allocates beyond ``X`` itself (for scheduling parts side by
    side): single linkage its condensed float64 distances (``n (n - 1) / 2`` doubles, 12.1 GB
    at n = 55,000), two 256-row work blocks and a float64 copy of a float32 ``X``; KMeans
    scikit-learn's copy of ``X`` (``copy_x``) and about four ``(n, k)`` float64 arrays."""
    n = int(X.shape[0])
    if part == "single":
        copy = 0 if X.dtype == np.float64 else 8 * int(np.prod(X.shape))
        return 8 * (n * (n - 1) // 2) + 2 * 8 * 256 * n + copy
    return int(X.nbytes) + 4 * 8 * n * int(part)


def pool_parts(n_rows: int, ks=KMEANS_KS) -> list:
    """The labellings of a pool of a matrix with ``n_rows`` rows, in the pool's order:
    ``"single"`` (single linkage), then each KMeans ``k`` of ``ks`` with ``k <= n_rows``."""
    return ["single"] + [k for k in ks if k <= n_rows]


def cluster_part_one_thread(X: np.ndarray, part, n_init: int = 10, seed: int = 0) -> np.ndarray:
    """One labelling of :func:`cluster_labels_one_thread`, on one BLAS/OpenMP thread:
    ``part == "single"`` gives the single-linkage labels, an int ``k`` KMeans' labels
    (the same calls, so the same labels bit for bit)."""
    with one_thread():
        if part == "single":
            return single_linkage_fcluster(np.asarray(X, dtype=np.float64), 1)
        return kmeans_labels(X, n_init, seed, ks=(int(part),))[0]


def pool_part_task(mats, spec) -> tuple[np.ndarray, float]:
    """A task of phase 5 (:meth:`experiments.execution.Executor.map`): labelling
    ``part`` of matrix ``i`` of the scattered ``mats`` for ``spec = (i, part, n_init, seed)``,
    and its wall time in seconds; the same labels as :func:`cluster_part_one_thread`."""
    import time

    i, part, n_init, seed = spec
    t0 = time.perf_counter()
    labels = cluster_part_one_thread(mats[i], part, n_init, seed)
    return labels, time.perf_counter() - t0
