"""Clusterings used to build the ``same_features`` / ``same_grad`` groups (ss_logreg's phase 5).

:func:`single_linkage_fcluster` is ``scipy.cluster.hierarchy.fclusterdata(X, 1)`` (single
linkage, Euclidean, ``'inconsistent'`` criterion, t = 1, depth 2) with the pairwise
distances computed by blocked matrix products instead of ``pdist`` (faster).
For integer-valued features (hospital, spam counts) the products are exact, so the
distances are bit-identical to ``pdist``; otherwise they agree to rounding, and the tree
is the same up to exact ties (as with fastcluster). Above :data:`CONDENSED_MAX_BYTES` of
distances the condensed matrix is not formed: :func:`spanning_tree_blocks` builds the
minimum spanning tree block pair by block pair (:func:`single_linkage_route` chooses).

:func:`cluster_labels_one_thread` adds the KMeans fits and runs everything on one
thread (BLAS and OpenMP), so a pool does not depend on the machine's core count and
pools of several matrices can be built in parallel processes. :func:`pool_parts` and
:func:`cluster_part_one_thread` split a pool into its labellings (the single linkage,
then one KMeans per k), each computed exactly as in :func:`cluster_labels_one_thread`,
so that the labellings of several matrices can be spread over the executor's workers
(:mod:`experiments.execution`).

KMeans: :class:`CentredMatrix` prepares the matrix once as scikit-learn's ``KMeans.fit``
does (its own copy, the tolerance by blocks of rows with :func:`column_variances`, the
centring) and runs the restarts on it, each on one thread and several side by side if
asked, with the labels of scikit-learn's default path bit for bit; so a labelling holds
one copy of the matrix, not two, whatever the number of restarts running. A matrix can
also be held in a file (:class:`MatrixFile`), read by each labelling when it starts
(:func:`part_memory` counts it), or, for a multinomial model's per-example gradients, as
its factors (:class:`FactoredMatrix`): the block route's single linkage then takes the
inner products from the factors, about ``K E / (K + E)`` times fewer products, and
everything else forms the dense rows, bit for bit.
"""
from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.cluster.hierarchy import fcluster, inconsistent

logger = logging.getLogger(__name__)


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


# Single linkage keeps the condensed distance matrix (and so scipy's own tie order, see
# mst_single_linkage) up to this many bytes of distances (n <= 23,170 rows); larger
# matrices take the block-wise spanning tree, whose memory does not grow with n^2.
CONDENSED_MAX_BYTES = 2 ** 31
# Rows per block of the block-wise spanning tree: its work arrays are at most
# 6 * 8 * MST_BLOCK^2 bytes (200 MB), whatever n.
MST_BLOCK = 2048


def single_linkage_route(n_rows: int) -> str:
    """How single linkage of ``n_rows`` points is computed (the one place that chooses):
    ``"condensed"`` (:func:`condensed_euclidean`, then :func:`mst_single_linkage`) while the
    condensed distances fit in :data:`CONDENSED_MAX_BYTES`, else ``"blocks"``
    (:func:`spanning_tree_blocks`, then :func:`linkage_from_tree`)."""
    return "condensed" if 8 * (n_rows * (n_rows - 1) // 2) <= CONDENSED_MAX_BYTES else "blocks"


def _block_distances(G, sq, a0, a1, b0, b1) -> np.ndarray:
    """Distances of rows ``[a0, a1)`` to rows ``[b0, b1)`` from their inner products ``G``
    (overwritten) with the formula of :func:`condensed_euclidean` (the lower-numbered
    point's row on the left)."""
    D2 = np.add(sq[a0:a1, None], sq[None, b0:b1])
    G *= -2.0
    D2 += G
    np.maximum(D2, 0.0, out=D2)
    return np.sqrt(D2, out=D2)


def _prim(row, m: int):
    """Prim's algorithm from vertex 0 on ``m`` vertices of a connected graph; ``row(v, out)``
    writes the edge weights of ``v`` to every vertex into ``out`` (``inf``: no edge).
    Returns the tree's ``(u, v, w)`` as arrays of ``m - 1`` entries."""
    D = np.full(m, np.inf)
    parent = np.zeros(m, dtype=np.int64)
    done = np.zeros(m, dtype=bool)
    r = np.empty(m)
    upd = np.empty(m, dtype=bool)
    us, vs, ws = (np.empty(m - 1, dtype=np.int64), np.empty(m - 1, dtype=np.int64), np.empty(m - 1))
    x = 0
    for k in range(m - 1):
        done[x] = True
        D[x] = np.inf
        row(x, r)
        np.less(r, D, out=upd)
        upd &= ~done
        np.copyto(D, r, where=upd)
        np.copyto(parent, x, where=upd)
        x = int(np.argmin(D))
        us[k], vs[k], ws[k] = parent[x], x, D[x]
    return us, vs, ws


def _spanning_forest(u, v, w, n: int):
    """A minimum spanning forest of the edges ``(u, v, w)`` on ``n`` vertices (duplicate
    edges allowed), by scipy's Kruskal on the edges' ranks (ties in ``w`` ordered by the
    vertex pair, so the forest is unique; ranks also keep zero weights as edges)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    lo, hi = np.minimum(u, v), np.maximum(u, v)
    _, first = np.unique(lo * n + hi, return_index=True)
    lo, hi, w = lo[first], hi[first], w[first]
    order = np.lexsort((hi, lo, w))
    rank = np.empty(order.size)
    rank[order] = np.arange(1, order.size + 1, dtype=np.float64)
    T = minimum_spanning_tree(csr_matrix((rank, (lo, hi)), shape=(n, n))).tocoo()
    pick = order[T.data.astype(np.int64) - 1]
    return lo[pick], hi[pick], w[pick]


def _dense_rows(D):
    """``row(v, out)`` for :func:`_prim` on the symmetric dense weight matrix ``D``."""
    def row(x, out):
        out[:] = D[x]
    return row


def _pair_rows(TI, DIJ, TJ):
    """``row(v, out)`` for :func:`_prim` on a pair of blocks: vertices ``0..p-1`` are block
    I, ``p..`` block J; ``TI``, ``TJ`` the blocks' own trees as dense matrices (``inf``:
    no edge), ``DIJ`` their cross distances."""
    p = TI.shape[0]
    DJI = np.ascontiguousarray(DIJ.T)

    def row(x, out):
        if x < p:
            out[:p], out[p:] = TI[x], DIJ[x]
        else:
            out[:p], out[p:] = DJI[x - p], TJ[x - p]
    return row


def _tree_matrix(a0, a1, tree):
    """The tree ``(u, v, w)`` on the points ``[a0, a1)`` as a dense symmetric matrix
    (``inf``: no edge)."""
    T = np.full((a1 - a0, a1 - a0), np.inf)
    u, v, w = tree
    T[u - a0, v - a0] = w
    T[v - a0, u - a0] = w
    return T


def _row_norms(X: np.ndarray) -> np.ndarray:
    """Squared row norms (each row's own sum: the same bits for a block of rows as for the
    whole matrix)."""
    return np.einsum("ij,ij->i", X, X)


def _row_reader(X):
    """``rows(a, b)``: rows ``[a, b)`` of ``X`` as a float64 C-contiguous array; a view of an
    in-memory matrix, read from the file of a :class:`MatrixFile`."""
    if isinstance(X, MatrixFile):
        return lambda a, b: np.ascontiguousarray(X.rows(a, b), dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    return lambda a, b: X[a:b]


def _gram_blocks(X):
    """``(sq, take, gram)`` for :func:`spanning_tree_blocks`: the squared row norms of ``X``
    (float64, (n,)), ``take(a, b)`` what a block of rows ``[a, b)`` keeps in memory, and
    ``gram(A, B)`` the inner products of two taken blocks (a new float64 array). Dense rows
    (an array or a :class:`MatrixFile`): the rows and ``A B^T``; a :class:`FactoredMatrix`:
    the row range, and the Gram block from the factors (never the dense rows)."""
    if isinstance(X, FactoredMatrix):
        f = X.factors
        return f.squared_norms(), (lambda a, b: (a, b)), (lambda A, B: f.gram(*A, *B))
    rows = _row_reader(X)
    sq = np.concatenate([_row_norms(rows(a, min(a + MST_BLOCK, X.shape[0])))
                         for a in range(0, X.shape[0], MST_BLOCK)])
    return sq, rows, (lambda A, B: A @ B.T)


def spanning_tree_blocks(X, block: int | None = None):
    """A minimum spanning tree of the complete graph of Euclidean distances between the
    rows of ``X``, as ``(u, v, w)`` arrays of ``n - 1`` edges, without the condensed matrix.

    ``X``: an array, or a :class:`MatrixFile` whose blocks of rows are read from its file as
    they are needed (two blocks at a time in memory, not the matrix), or a
    :class:`FactoredMatrix`, whose inner products come from its factors.

    The rows are cut into blocks of ``block``; the minimum spanning tree of a graph is one
    of the union of minimum spanning forests of subgraphs that together hold every edge.
    The subgraphs are each block alone and each pair of blocks (its cross distances plus
    the two blocks' own trees), each solved by Prim on its dense distances; the candidate
    edges are reduced to a forest after each row of pairs, so memory stays O(block^2 + n).
    Distances use the formula of :func:`condensed_euclidean` (equal to it to rounding;
    bit for bit for integer-valued features and dense rows). With distinct merge heights
    every minimum spanning tree gives the same single-linkage ``Z``.
    """
    block = MST_BLOCK if block is None else int(block)
    sq, rows, gram = _gram_blocks(X)
    n = X.shape[0]
    starts = list(range(0, n, block))
    bounds = [(a, min(a + block, n)) for a in starts]

    def own_tree(a0, a1):
        m = a1 - a0
        if m < 2:
            return (np.empty(0, np.int64),) * 2 + (np.empty(0),)
        XA = rows(a0, a1)
        D = np.triu(_block_distances(gram(XA, XA), sq, a0, a1, a0, a1), 1)
        D += D.T   # the upper triangle (lower-numbered point on the left), mirrored
        u, v, w = _prim(_dense_rows(D), m)
        return u + a0, v + a0, w

    trees = [own_tree(a0, a1) for a0, a1 in bounds]
    cand = [np.concatenate(parts) for parts in zip(*trees)]
    for bi, (a0, a1) in enumerate(bounds):
        TI = _tree_matrix(a0, a1, trees[bi])
        found = [cand]
        XA = rows(a0, a1) if bi + 1 < len(bounds) else None
        for bj in range(bi + 1, len(bounds)):
            b0, b1 = bounds[bj]
            DIJ = _block_distances(gram(XA, rows(b0, b1)), sq, a0, a1, b0, b1)
            TJ = _tree_matrix(b0, b1, trees[bj])
            u, v, w = _prim(_pair_rows(TI, DIJ, TJ), (a1 - a0) + (b1 - b0))
            p = a1 - a0
            found.append((np.where(u < p, u + a0, u - p + b0), np.where(v < p, v + a0, v - p + b0), w))
            del DIJ, TJ   # before the next pair's blocks are allocated
        if len(found) > 1:
            cand = _spanning_forest(*(np.concatenate(parts) for parts in zip(*found)), n)
    return cand


def linkage_from_tree(u, v, w, n: int) -> np.ndarray:
    """Single-linkage ``Z`` (scipy's format) from a minimum spanning tree's ``n - 1`` edges:
    the edges sorted by height (stably), then scipy's relabelling. Equal to
    ``scipy.cluster.hierarchy.linkage(y, "single")`` when the merge heights are distinct;
    at tied heights scipy merges in the order of its Prim run instead."""
    Z = np.empty((n - 1, 4))
    order = np.argsort(w, kind="mergesort")
    Z[:, 0], Z[:, 1], Z[:, 2] = u[order], v[order], w[order]
    _label(Z, n)
    return Z


def single_linkage_fcluster(X, t: float = 1.0, depth: int = 2, route: str | None = None,
                            block: int | None = None) -> np.ndarray:
    """Flat cluster labels (1..k) equal to ``fclusterdata(X, t)`` with scipy's defaults.

    ``route``: ``"condensed"`` or ``"blocks"`` (``None``: :func:`single_linkage_route`);
    ``block``: the block rows of the ``"blocks"`` route (``None``: :data:`MST_BLOCK`). ``X``
    may be a :class:`MatrixFile` or a :class:`FactoredMatrix`: the block route reads the
    file block by block, or takes the inner products from the factors (the distances then
    agree with the dense rows' to rounding, see docs/design.md, 'Phases of ss_logreg'); the
    condensed route loads the dense matrix (the same labels as the array).
    """
    route = single_linkage_route(X.shape[0]) if route is None else route
    if is_held(X) and route != "blocks":
        X = X.load()
    if not is_held(X):
        X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"single linkage needs a 2-d feature matrix; X has shape {X.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"single linkage needs at least 2 rows; X has shape {X.shape}")
    if not (X.finite() if is_held(X) else np.isfinite(X).all()):
        raise ValueError("single linkage needs finite features; X has NaN or infinite entries")
    n = X.shape[0]
    if route == "condensed":
        Z = mst_single_linkage(condensed_euclidean(X), n)
    elif route == "blocks":
        block = MST_BLOCK if block is None else block
        if int(block) != block or block < 1:
            raise ValueError(f"block must be a positive integer number of rows; got {block!r}")
        Z = linkage_from_tree(*spanning_tree_blocks(X, int(block)), n)
        ties = int(np.count_nonzero(Z[1:, 2] == Z[:-1, 2]))
        if ties:
            logger.warning("single linkage: %d of %d merge heights are tied; at tied heights the block route "
                           "does not reproduce scipy's merge order, so the labels can differ from fclusterdata's",
                           ties, n - 1)
    else:
        raise ValueError(f"route must be 'condensed', 'blocks' or None; got {route!r}")
    R = inconsistent(Z, d=depth)
    return fcluster(Z, t=t, criterion="inconsistent", depth=depth, R=R)


def single_linkage_fcluster_one_thread(X: np.ndarray, t: float = 1.0, depth: int = 2) -> np.ndarray:
    """:func:`single_linkage_fcluster` with one BLAS thread (for a worker process that
    runs next to other work; the distances are the same bit for bit)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return single_linkage_fcluster(X, t, depth)


KMEANS_KS = (4, 8, 16, 32, 64, 128)

# Bytes of rows that column_variances works on at a time (its one temporary).
VARIANCE_BLOCK_BYTES = 2 ** 26


def column_variances(X: np.ndarray, block_bytes: int | None = None) -> np.ndarray:
    """``np.var(X, axis=0)`` bit for bit, with a temporary of at most ``block_bytes``
    instead of one of X's size (default :data:`VARIANCE_BLOCK_BYTES`).

    For a C-contiguous 2-d float matrix with at least two columns, numpy sums along axis 0
    row after row (an elementwise accumulation per column, no pairwise summation), so the
    same additions in the same order, block by block, give the same sums; the mean and the
    final division use numpy's own calls (an ``intp`` count, as ``np.var``). Matrices of
    one column (summed pairwise by numpy) or no larger than a block go to ``np.var``.
    """
    X = np.asarray(X)
    block_bytes = VARIANCE_BLOCK_BYTES if block_bytes is None else int(block_bytes)
    if X.ndim != 2 or X.shape[1] < 2 or X.nbytes <= block_bytes or not X.flags.c_contiguous \
            or X.dtype not in (np.float32, np.float64):
        return np.var(X, axis=0)
    n, d = X.shape
    count = np.intp(n)
    rows = max(1, block_bytes // (d * X.itemsize))
    mean = np.zeros((1, d), dtype=X.dtype)
    for row in X:
        np.add(mean[0], row, out=mean[0])
    np.true_divide(mean, count, out=mean, casting="unsafe")
    out = np.zeros(d, dtype=X.dtype)
    for start in range(0, n, rows):
        dev = np.subtract(X[start:start + rows], mean)
        np.square(dev, out=dev)
        for row in dev:
            np.add(out, row, out=out)
    return np.true_divide(out, np.maximum(count, 0), out=out, casting="unsafe")


# scikit-learn's KMeans defaults (``tol``, ``max_iter``), which the pools' fits keep.
KMEANS_TOL = 1e-4
KMEANS_MAX_ITER = 300


def kmeans_input(X) -> np.ndarray:
    """A private C-contiguous copy of ``X`` in the dtype scikit-learn's KMeans fits in
    (float32 stays float32, anything else becomes float64); a :class:`MatrixFile` is read
    from its file (the matrix need not stay in memory), a :class:`FactoredMatrix`'s rows
    are formed from its factors."""
    if is_held(X):
        return X.load()
    X = np.asarray(X)
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    return np.array(X, dtype=dtype, order="C", copy=True)


def seeding_draws(k: int) -> int:
    """Uniform draws one k-means++ seeding of ``k`` centres takes from its ``RandomState``
    (scikit-learn's ``kmeans_plusplus``: one for the first centre, then ``2 + int(log k)``
    candidates for each further one), whatever the data: so restart ``r`` of a fit starts
    from the seed's state advanced by ``r`` seedings."""
    return 1 + (k - 1) * (2 + int(np.log(k)))


def _same_state(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def same_clustering(labels1: np.ndarray, labels2: np.ndarray) -> bool:
    """Whether ``labels2`` is a function of ``labels1`` (scikit-learn's test of whether a
    restart found "the same clustering up to a permutation of the labels")."""
    pairs = np.unique(np.stack([labels1, labels2]), axis=1)
    return pairs.shape[1] == np.unique(labels1).size


class CentredMatrix:
    """What scikit-learn's ``KMeans.fit`` prepares before its restarts, made once and shared
    (read-only) by every ``k`` and restart of :meth:`labels`: a private copy of ``X``
    (:func:`kmeans_input`), the tolerance ``mean(var(X, axis=0)) * tol`` of the uncentred
    copy (:func:`column_variances`: ``np.var``'s bits without its temporary of X's size),
    the copy centred in place, its squared row norms and unit sample weights. The same
    operations on the same values as ``fit``'s, so the same bits."""

    def __init__(self, X):
        from sklearn.utils.extmath import row_norms

        X = kmeans_input(X)
        self.tol = np.mean(column_variances(X)) * KMEANS_TOL
        X -= X.mean(axis=0)
        self.X = X
        self.norms = row_norms(X, squared=True)
        self.weights = np.ones(X.shape[0], dtype=X.dtype)

    def restart(self, k: int, state) -> tuple[np.ndarray, float, tuple]:
        """One restart of ``k`` clusters from the ``RandomState`` state ``state``: the
        k-means++ seeding, then Elkan's iterations on one thread; returns the labels, the
        inertia and the state after the seeding."""
        from sklearn.cluster import kmeans_plusplus

        # scikit-learn runs one restart on prepared data only inside KMeans.fit; its
        # single-run function is the one fit calls (the labels tests compare with fit's).
        from sklearn.cluster._kmeans import _kmeans_single_elkan as elkan_single

        rs = np.random.RandomState()
        rs.set_state(state)
        centres, _ = kmeans_plusplus(self.X, k, sample_weight=self.weights, x_squared_norms=self.norms,
                                     random_state=rs)
        labels, inertia, _, _ = elkan_single(self.X, self.weights, centres, max_iter=KMEANS_MAX_ITER,
                                             verbose=False, tol=self.tol, n_threads=1)
        return labels, inertia, rs.get_state()

    def labels(self, k: int, n_init: int, seed: int, threads: int = 1) -> np.ndarray:
        """The labels of ``KMeans(n_clusters=k, n_init=n_init, random_state=seed,
        algorithm="elkan").fit(X)`` on one BLAS/OpenMP thread, bit for bit: the restarts
        start from the states scikit-learn's loop would reach (:func:`seeding_draws`;
        checked after each seeding), each on one thread, ``threads`` of them at a time
        sharing this matrix, and the best is chosen in restart order by fit's rule (a
        lower inertia and not :func:`same_clustering` as the best so far). ``k >= 2``
        (scikit-learn runs Lloyd's algorithm for one cluster)."""
        if int(k) != k or k < 2 or k > self.X.shape[0]:
            raise ValueError(f"k must be an integer from 2 to the number of rows ({self.X.shape[0]}); got {k!r}")
        if int(n_init) != n_init or n_init < 1:
            raise ValueError(f"n_init must be a positive integer; got {n_init!r}")
        rs = np.random.RandomState(seed)
        states = []
        for _ in range(n_init + 1):
            states.append(rs.get_state())
            rs.random_sample(seeding_draws(k))
        if threads > 1 and n_init > 1:
            with ThreadPoolExecutor(max_workers=min(int(threads), n_init)) as pool:
                runs = list(pool.map(lambda r: self.restart(k, states[r]), range(n_init)))
        else:
            runs = (self.restart(k, states[r]) for r in range(n_init))
        best, best_inertia = None, None
        for r, (labels, inertia, after) in enumerate(runs):
            if not _same_state(after, states[r + 1]):
                raise RuntimeError("k-means++ took another number of draws than seeding_draws(k) says; "
                                   "this scikit-learn version seeds differently")
            if best is None or (inertia < best_inertia and not same_clustering(labels, best)):
                best, best_inertia = labels, inertia
        if np.unique(best).size < k:
            from sklearn.exceptions import ConvergenceWarning
            warnings.warn(f"Number of distinct clusters ({np.unique(best).size}) found smaller than n_clusters "
                          f"({k}). Possibly due to duplicate points in X.", ConvergenceWarning, stacklevel=2)
        return best


def kmeans_labels(X, n_init: int = 10, seed: int = 0, ks=KMEANS_KS, threads: int = 1) -> list[np.ndarray]:
    """KMeans labels for each k in ``ks`` (k-means++, ``n_init`` restarts, seeded).

    ``algorithm='elkan'``: what sklearn 0.20's default ``'auto'`` ran on dense data (the
    original's setting); the same objective as Lloyd, and faster here.

    The labels are those of ``KMeans(n_clusters=k, n_init=n_init, random_state=seed,
    algorithm="elkan").fit(X)`` on one BLAS/OpenMP thread, bit for bit
    (:meth:`CentredMatrix.labels`), with one copy of X for all the k's and restarts instead
    of scikit-learn's two per fit (its copy and its tolerance's temporary); ``threads``
    restarts run side by side on that copy (each on one thread: the same labels for any
    ``threads``). The copy is centred in place and dropped at the end, never reused:
    adding the mean back does not restore X exactly.
    """
    ks = [k for k in ks if k <= X.shape[0]]
    if not ks:
        return []
    data = CentredMatrix(X)
    return [data.labels(k, n_init, seed, threads) for k in ks]


class HeldMatrix:
    """A 2-d matrix not held as an array (:class:`MatrixFile`, :class:`FactoredMatrix`), whose
    rows are read or formed on demand: ``shape`` and ``dtype`` as an array's; each kind has
    ``load()``, ``rows(a, b)``, ``chunks()`` and ``finite()``."""

    shape: tuple[int, int]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return 2


class MatrixFile(HeldMatrix):
    """A matrix kept in a ``.npy`` file instead of memory (phase 5 writes the gradient
    matrix to one while it is clustered): ``shape``, ``dtype`` and ``nbytes`` as an array's,
    :meth:`load` a fresh private copy. Labellings read it when they start, so the matrix is
    in memory only as the copies of the labellings running."""

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)
        view = np.load(self.path, mmap_mode="r", allow_pickle=False)   # the header only; no page is read
        if view.ndim != 2 or not view.flags.c_contiguous:
            raise ValueError(f"{self.path}: a C-ordered 2-d matrix is needed; the file holds shape {view.shape}")
        self.shape, self.dtype, self.offset = tuple(int(s) for s in view.shape), view.dtype, int(view.offset)
        del view

    @classmethod
    def write(cls, path, X: np.ndarray) -> "MatrixFile":
        """Write ``X`` (C order) to ``path`` and return its :class:`MatrixFile`."""
        with open(path, "wb") as f:   # np.save(path) would append ".npy" to another suffix
            np.save(f, np.ascontiguousarray(X), allow_pickle=False)
        return cls(path)

    def load(self) -> np.ndarray:
        """The matrix, read into a new array (bit for bit what was written)."""
        return np.load(self.path, allow_pickle=False)

    def finite(self) -> bool:
        """Whether every entry is finite (read :data:`MST_BLOCK` rows at a time, as the
        block route reads them)."""
        return all(np.isfinite(self.rows(a, a + MST_BLOCK)).all() for a in range(0, self.shape[0], MST_BLOCK))

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)``, read from the file into a new array."""
        a, b = max(0, int(a)), min(int(b), self.shape[0])
        width = int(np.prod(self.shape[1:]))
        with open(self.path, "rb") as f:
            f.seek(self.offset + a * width * self.dtype.itemsize)
            out = np.fromfile(f, dtype=self.dtype, count=max(b - a, 0) * width)
        if out.size != max(b - a, 0) * width:
            raise ValueError(f"{self.path} is shorter than its header says")
        return out.reshape(max(b - a, 0), width)

    def chunks(self, size: int = 2 ** 24):
        """The matrix's bytes in C order, ``size`` bytes at a time (for hashing without loading it)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.nbytes
            while left > 0:
                b = f.read(min(size, left))
                if not b:
                    raise ValueError(f"{self.path} is shorter than its header says")
                left -= len(b)
                yield b


class FactoredMatrix(HeldMatrix):
    """A multinomial model's per-example gradient matrix held as its factors
    (:class:`influence.objective.GradientFactors`: residuals ``R`` (n, K) and the augmented
    design ``Xa`` (n, E), about ``K E / (K + E)`` times smaller than the matrix): ``shape``,
    ``dtype``, ``nbytes`` (of the matrix) as an array's, :meth:`rows` and :meth:`load` form
    the dense rows, bit for bit those of ``per_example_gradients``. Single linkage on the
    ``"blocks"`` route takes its inner products from the factors
    (``g_i . g_j = (r_i . r_j) (xa_i . xa_j)``), ``K + E`` instead of ``K E`` products per
    pair; the condensed route and KMeans use the dense rows. Pickles with its factors."""

    def __init__(self, factors):
        self.factors = factors
        self.shape, self.dtype = tuple(int(s) for s in factors.shape), np.dtype(factors.dtype)

    def finite(self) -> bool:
        """Whether every entry of the matrix is finite (its factors and squared row norms are)."""
        f = self.factors
        return bool(np.isfinite(f.R).all() and np.isfinite(f.Xa).all() and np.isfinite(f.squared_norms()).all())

    def load(self) -> np.ndarray:
        """The matrix, formed in a new array."""
        return self.factors.rows(0, self.shape[0])

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)``, formed in a new array."""
        return self.factors.rows(a, b)

    def chunks(self, size: int = 2 ** 24):
        """The matrix's bytes in C order, about ``size`` bytes (whole rows) at a time."""
        step = max(1, size // max(1, self.shape[1] * self.dtype.itemsize))
        for a in range(0, self.shape[0], step):
            yield memoryview(self.rows(a, a + step)).cast("B")

    def forms(self, G) -> bool:
        """Whether the rows formed from the factors are the array ``G`` bit for bit (compared
        by blocks of :data:`MST_BLOCK` rows: no second matrix in memory)."""
        G = np.asarray(G)
        return G.shape == self.shape and G.dtype == self.dtype and all(
            np.array_equal(self.rows(a, a + MST_BLOCK), G[a:a + MST_BLOCK]) for a in range(0, G.shape[0], MST_BLOCK))

    def factor_chunks(self):
        """The factors' bytes (``R``, then ``Xa``, each in C order), what the block route's
        single linkage depends on (for hashing)."""
        for M in (self.factors.R, self.factors.Xa):
            yield memoryview(np.ascontiguousarray(M)).cast("B")


def is_held(X) -> bool:
    """Whether ``X`` is a matrix not held as an array (:class:`MatrixFile`,
    :class:`FactoredMatrix`), whose rows are read or formed on demand."""
    return isinstance(X, HeldMatrix)


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


def part_memory(X, part, threads: int = 1) -> int:
    """Bytes a labelling of ``X`` (an array, or a :class:`MatrixFile` read by the labelling,
    or a :class:`FactoredMatrix`, whose factors count as ``X`` itself) allocates beyond an
    in-memory ``X`` itself (for scheduling parts side by side).

    Single linkage: a float64 copy of a float32 ``X`` or of a file-held or factored one on
    the condensed route (plus the array read from a file or formed from factors that is
    not float64; on the block route a file is read two blocks of rows at a time), the
    finiteness check's booleans (one byte per entry; of the factors for a factored ``X``)
    and, on the ``"condensed"`` route (:func:`single_linkage_route`), its condensed float64
    distances (``n (n - 1) / 2`` doubles) and two 256-row work blocks, on the ``"blocks"``
    route six ``MST_BLOCK x MST_BLOCK`` float64 arrays (seven from factors: the residuals'
    Gram block besides the design's) and at most 32 float64 values per
    row (the candidate edges and their reduction). KMeans: the fit's own copy of ``X``
    (:func:`kmeans_input`; formed from factors by blocks of rows no larger than the
    tolerance's, and freed before it), the tolerance's block of rows (:func:`column_variances`; all
    of X for a single column) and, per restart running (``threads`` of them), two ``(n, k)``
    and four ``(k, d)`` float64 arrays (Elkan's lower bounds and centres, the restart's
    labels; measured about one ``(n, k)`` array and a few ``(k, d)`` ones, see
    :meth:`CentredMatrix.restart`)."""
    n = int(X.shape[0])
    size = int(np.prod(X.shape))
    from_file = isinstance(X, MatrixFile)
    if part == "single":
        if single_linkage_route(n) == "condensed":
            copy = 0 if X.dtype == np.float64 and not is_held(X) else 8 * size
            if is_held(X) and X.dtype != np.float64:
                copy += int(X.nbytes)
            return 8 * (n * (n - 1) // 2) + 2 * 8 * 256 * n + copy + size
        work = 6 * 8 * MST_BLOCK ** 2 + 32 * 8 * n
        if isinstance(X, FactoredMatrix):   # + the Gram block of R, the squared norms, the booleans
            f = X.factors
            return work + 8 * MST_BLOCK ** 2 + 2 * 8 * n + f.R.size + f.Xa.size
        if from_file:   # two blocks of rows read at a time (and a block's raw read and booleans)
            row = int(np.prod(X.shape[1:]))
            return work + MST_BLOCK * row * (2 * 8 + X.dtype.itemsize + 1)
        return work + (0 if X.dtype == np.float64 else 8 * size) + size
    item = 4 if X.dtype == np.float32 else 8
    row = item * int(np.prod(X.shape[1:]))
    tolerance = item * size if row == item else min(item * size, max(VARIANCE_BLOCK_BYTES, row))
    per_restart = 8 * int(part) * (2 * n + 4 * (row // item))
    return item * size + tolerance + per_restart * max(1, int(threads))


def pool_parts(n_rows: int, ks=KMEANS_KS) -> list:
    """The labellings of a pool of a matrix with ``n_rows`` rows, in the pool's order:
    ``"single"`` (single linkage), then each KMeans ``k`` of ``ks`` with ``k <= n_rows``."""
    return ["single"] + [k for k in ks if k <= n_rows]


def cluster_part_one_thread(X, part, n_init: int = 10, seed: int = 0, threads: int = 1) -> np.ndarray:
    """One labelling of :func:`cluster_labels_one_thread`, on one BLAS/OpenMP thread:
    ``part == "single"`` gives the single-linkage labels, an int ``k`` KMeans' labels
    (the same calls, so the same labels bit for bit). ``X``: an array or a
    :class:`MatrixFile` (read here, the same labels as the array it holds). ``threads``:
    KMeans restarts run side by side, each on one thread (the same labels)."""
    with one_thread():
        if part == "single":
            return single_linkage_fcluster(X if is_held(X) else np.asarray(X, dtype=np.float64), 1)
        return kmeans_labels(X, n_init, seed, ks=(int(part),), threads=threads)[0]


def pool_part_task(mats, spec) -> tuple[np.ndarray, float]:
    """A task of phase 5 (:meth:`experiments.execution.Executor.map`): labelling
    ``part`` of matrix ``i`` of the scattered ``mats`` for ``spec = (i, part, n_init, seed,
    threads)`` (``threads``: KMeans restarts side by side), and its wall time
    in seconds; the same labels as :func:`cluster_part_one_thread`."""
    import time

    i, part, n_init, seed, threads = spec
    t0 = time.perf_counter()
    labels = cluster_part_one_thread(mats[i], part, n_init, seed, threads)
    return labels, time.perf_counter() - t0
