"""The fast single-linkage clustering and the clustered-group pools (ss_logreg's phase 5)."""
import os

import numpy as np
import pytest
from scipy.cluster.hierarchy import fclusterdata
from scipy.spatial.distance import pdist

from experiments import clustering
from experiments.clustering import (
    condensed_euclidean,
    single_linkage_fcluster,
    single_linkage_fcluster_one_thread,
)
from experiments.subset_influence import cluster_pool, cluster_pools
from tests.conftest import RTOL_TWO_PATHS


def _integer_data(n=60, D=4, seed=0):
    return np.random.RandomState(seed).randint(0, 4, (n, D)).astype(np.float64)


def _float_data(n=60, D=5, seed=1):
    rng = np.random.RandomState(seed)
    return rng.normal(0, 1, (n, D)) + rng.randint(0, 3, (n, 1)) * 3.0


@pytest.mark.parametrize("block", [1, 7, 16, 2048])
def test_condensed_distances_equal_pdist(block):
    X = _integer_data()
    # Integer features: every product is exact, so the distances equal pdist bit for bit.
    assert np.array_equal(condensed_euclidean(X, block=block), pdist(X))
    F = _float_data()
    np.testing.assert_allclose(condensed_euclidean(F, block=block), pdist(F), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [700, 2301])
def test_condensed_distances_do_not_depend_on_the_default_block(n):
    # Float features: the default block (256) and the earlier default (2048) agree to
    # rounding, not bit for bit: which rows share a BLAS kernel call changes the last bits
    # under OpenBLAS's AVX-512 kernel (not under its AVX2 one), so only the same call is
    # compared with itself bit for bit (see docs/bitwise.md).
    G = np.random.RandomState(2).normal(0, 1, (n, 128))
    small = condensed_euclidean(G)
    assert np.array_equal(small, condensed_euclidean(G)), "same call, same bits"
    np.testing.assert_allclose(small, condensed_euclidean(G, block=2048), rtol=RTOL_TWO_PATHS, atol=0)
    np.testing.assert_allclose(small, pdist(G), rtol=RTOL_TWO_PATHS, atol=0)


@pytest.mark.parametrize("make", [_integer_data, _float_data])
def test_single_linkage_equals_scipy_fclusterdata(make):
    X = make()
    expected = fclusterdata(X, 1)
    assert np.array_equal(single_linkage_fcluster(X, 1), expected)
    assert np.array_equal(single_linkage_fcluster_one_thread(X, 1), expected)


def test_parallel_pools_equal_serial_pools():
    rng = np.random.RandomState(0)
    # n >= 2000 so that the worker process is used.
    A = rng.randint(0, 3, (2100, 4)).astype(np.float32)
    B = rng.normal(0, 1, (2100, 3))
    par = cluster_pools([A, B], n_init=1, parallel=True)
    for M, pool in zip([A, B], par):
        ser = cluster_pool(M, n_init=1)
        assert len(pool) == len(ser) and all(np.array_equal(a, b) for a, b in zip(pool, ser))


@pytest.mark.parametrize("n, make", [(2, _integer_data), (3, _float_data), (400, _integer_data),
                                     (250, _float_data)])
def test_mst_single_linkage_equals_scipy_bit_for_bit(n, make):
    from scipy.cluster.hierarchy import linkage

    from experiments.clustering import mst_single_linkage
    X = make(n=n)
    X[n // 2:] = X[: n - n // 2]  # duplicated points: zero distances and many exact ties
    y = condensed_euclidean(X)
    assert np.array_equal(mst_single_linkage(y, n), linkage(y, method="single"))


def test_single_linkage_rejects_non_finite_features():
    X = _float_data()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        single_linkage_fcluster(X)


def test_one_thread_limits_openmp_even_before_sklearn_is_imported():
    # threadpoolctl only limits loaded libraries: a worker process that has not imported
    # scikit-learn yet must still run KMeans on one OpenMP thread.
    import subprocess
    import sys

    code = ("import sys; from experiments.clustering import one_thread; assert 'sklearn' not in sys.modules\n"
            "with one_thread():\n"
            "    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads\n"
            "    print(_openmp_effective_n_threads())")
    from experiments.common import REPO_ROOT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO_ROOT),
                         env={"OMP_NUM_THREADS": "2", "PATH": ""}, check=True)
    assert out.stdout.split() == ["1"]


# ---------------------------------------------------------------- the block-wise route

def _tree_is_spanning(u, v, n):
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for a, b in zip(u, v):
        ra, rb = find(int(a)), find(int(b))
        if ra == rb:
            return False
        parent[ra] = rb
    return len(u) == n - 1


@pytest.mark.parametrize("make", [_integer_data, _float_data])
@pytest.mark.parametrize("n, block", [(2, 1), (3, 2), (60, 1), (60, 7), (61, 16), (200, 64), (150, 150), (90, 500)])
def test_block_spanning_tree_is_a_minimum_spanning_tree(make, n, block):
    from scipy.cluster.hierarchy import linkage

    from experiments.clustering import spanning_tree_blocks
    X = make(n=n)
    X[n // 2: n // 2 + 5] = X[:5][: n - n // 2]  # duplicated points: zero distances and exact ties
    u, v, w = spanning_tree_blocks(X, block)
    assert _tree_is_spanning(u, v, n)
    D = pdist(X)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    # Each edge weighs its distance, and the heights are scipy's (the sorted weights of
    # every minimum spanning tree are the same): exactly for integer features.
    pairs = n * lo - lo * (lo + 1) // 2 + hi - lo - 1
    heights = linkage(D, method="single")[:, 2]
    if make is _integer_data:
        assert np.array_equal(w, D[pairs])
        assert np.array_equal(np.sort(w), heights)
    else:
        # The Gram formula rounds squared distances at about eps |x|^2, so a zero distance
        # (a duplicated point) comes out as up to sqrt(eps) |x|: compare squares.
        atol = 1e-12 * np.max(np.einsum("ij,ij->i", X, X))
        np.testing.assert_allclose(w ** 2, D[pairs] ** 2, rtol=RTOL_TWO_PATHS, atol=atol)
        np.testing.assert_allclose(np.sort(w) ** 2, heights ** 2, rtol=RTOL_TWO_PATHS, atol=atol)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block", [1, 5, 32, 1000])
def test_block_single_linkage_equals_fclusterdata_without_ties(seed, block):
    from scipy.cluster.hierarchy import linkage

    from experiments.clustering import linkage_from_tree, spanning_tree_blocks
    X = _float_data(n=120, seed=seed)
    expected = fclusterdata(X, 1)
    assert len(np.unique(expected)) > 3
    assert np.array_equal(single_linkage_fcluster(X, 1, route="blocks", block=block), expected)
    Z = linkage_from_tree(*spanning_tree_blocks(X, block), X.shape[0])
    ref = linkage(pdist(X), method="single")
    assert np.array_equal(Z[:, [0, 1, 3]], ref[:, [0, 1, 3]])
    np.testing.assert_allclose(Z[:, 2], ref[:, 2], rtol=RTOL_TWO_PATHS, atol=0)


def test_one_place_chooses_the_route():
    from experiments.clustering import CONDENSED_MAX_BYTES, single_linkage_route
    largest = max(n for n in range(23_000, 23_300) if 8 * (n * (n - 1) // 2) <= CONDENSED_MAX_BYTES)
    assert single_linkage_route(2) == single_linkage_route(largest) == "condensed"
    assert single_linkage_route(largest + 1) == single_linkage_route(55_000) == "blocks"


def test_cache_key_names_the_block_route(monkeypatch):
    from experiments import cluster_cache, clustering
    X = _float_data(n=40)
    before = cluster_cache.cache_key(X, ["single", 4], 1, 0)
    monkeypatch.setattr(clustering, "CONDENSED_MAX_BYTES", 8)
    blocks = cluster_cache.cache_key(X, ["single", 4], 1, 0)
    monkeypatch.setattr(clustering, "MST_BLOCK", 7)
    assert len({before, blocks, cluster_cache.cache_key(X, ["single", 4], 1, 0)}) == 3


@pytest.mark.parametrize("kwargs, match", [({"route": "pdist"}, "route"), ({"route": "blocks", "block": 0}, "block"),
                                           ({"route": "blocks", "block": 2.5}, "block")])
def test_single_linkage_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        single_linkage_fcluster(_float_data(), 1, **kwargs)
    with pytest.raises(ValueError, match="2-d"):
        single_linkage_fcluster(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2 rows"):
        single_linkage_fcluster(np.zeros((1, 3)), route="blocks")


_BLOCKS_CHILD = r"""
import sys
import numpy as np
import psutil
from experiments.clustering import one_thread, single_linkage_fcluster
n, block = int(sys.argv[1]), int(sys.argv[2])
X = np.random.RandomState(0).normal(0, 1, (n, 6))
with one_thread():
    single_linkage_fcluster(X[:50], 1, route="blocks", block=8)   # imports and first calls
    open('/proc/self/clear_refs', 'w').write('5')   # reset the high-water mark (VmHWM) to now
    base = psutil.Process().memory_info().rss
    labels = single_linkage_fcluster(X, 1, route="blocks", block=block)
peak = 1024 * int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
print(base, peak, labels.max())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's resettable peak RSS")
def test_block_route_memory_does_not_grow_with_the_condensed_matrix():
    """Peak RSS of the block route in a fresh process: 8,000 points, whose condensed
    distances alone would be 256 MB, within the block work arrays of part_memory."""
    import subprocess
    import sys

    from experiments.common import REPO_ROOT
    n, block = 8_000, 1024
    out = subprocess.run([sys.executable, "-c", _BLOCKS_CHILD, str(n), str(block)], capture_output=True, text=True,
                         cwd=str(REPO_ROOT), check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    base, peak, clusters = (int(x) for x in out.stdout.split())
    assert clusters > 1
    condensed = 8 * n * (n - 1) // 2
    work = 6 * 8 * block ** 2 + 32 * 8 * n
    assert peak - base <= work + 16 * 2 ** 20, (peak - base, work)   # 16 MB: allocator slack
    assert peak - base < condensed / 4
    assert peak - base >= 2 * 8 * block ** 2   # a distance block and its product: the peak was seen


def test_block_route_warns_at_tied_merge_heights(caplog):
    import logging
    X = _integer_data(n=80)
    with caplog.at_level(logging.WARNING, logger="experiments.clustering"):
        single_linkage_fcluster(X, 1, route="blocks", block=16)
    assert any("tied" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="experiments.clustering"):
        single_linkage_fcluster(_float_data(n=80), 1, route="blocks", block=16)
    assert not caplog.records


@pytest.mark.parametrize("shape", [(4000, 2), (3001, 7), (1500, 300)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_variances_equal_numpy_var_bit_for_bit(shape, dtype):
    """Block by block (here blocks of 37 rows, and of a single row) the variances are
    np.var's, bit for bit: the same additions in the same order."""
    rng = np.random.RandomState(shape[1])
    X = (rng.normal(0, 1, shape) * rng.uniform(0.1, 3, shape[1]) + rng.uniform(-5, 5, shape[1])).astype(dtype)
    want = np.var(X, axis=0)
    for rows in (37, 1):
        got = clustering.column_variances(X, block_bytes=rows * X.shape[1] * X.itemsize)
        assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8))


def _kmeans_data(n=3000, d=20, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(0, 1, (n, d)) + rng.randint(0, 6, (n, 1)) * 1.5


@pytest.mark.parametrize("k", [4, 16, 64])
def test_kmeans_labels_equal_scikit_learns_default_path(k, tmp_path, monkeypatch):
    """kmeans_labels (its own copy of X, copy_x=False, the tolerance by blocks) gives the
    labels of scikit-learn's default KMeans (copy_x=True, np.var) for the same call on
    the same thread count, bit for bit; also from a MatrixFile, also with blocks of rows
    small enough that the tolerance takes the block route."""
    from sklearn.cluster import KMeans

    X = _kmeans_data()
    path = tmp_path / "x.npy"
    M = clustering.MatrixFile.write(path, X)
    with clustering.one_thread():
        want = KMeans(n_clusters=k, n_init=3, random_state=0, algorithm="elkan").fit(X)
        got = clustering.kmeans_labels(X, n_init=3, seed=0, ks=(k,))[0]
        monkeypatch.setattr(clustering, "VARIANCE_BLOCK_BYTES", 8 * X.shape[1] * 100)
        from_file = clustering.kmeans_labels(M, n_init=3, seed=0, ks=(k,))[0]
    assert np.array_equal(got, want.labels_) and np.array_equal(from_file, want.labels_)
    assert got.dtype == want.labels_.dtype
    assert np.array_equal(np.load(path), X)            # the file is never changed


def test_kmeans_labels_leave_x_unchanged_and_depend_on_the_tolerance():
    """X is not centred in place (each fit has its own copy), and the tolerance matters for
    these data: a fit that stopped at another tolerance would give other labels here, so
    the test above would see a wrong tolerance."""
    from sklearn.cluster import KMeans

    X = _kmeans_data(seed=3)
    before = X.copy()
    with clustering.one_thread():
        got = clustering.kmeans_labels(X, n_init=1, seed=0, ks=(32,))[0]
        loose = KMeans(n_clusters=32, n_init=1, random_state=0, algorithm="elkan", tol=1e-1).fit(X).labels_
    assert np.array_equal(X, before)
    assert not np.array_equal(got, loose)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k, n_init, seed", [(2, 3, 0), (5, 10, 7), (16, 4, 1), (64, 2, 3)])
def test_restarts_side_by_side_equal_scikit_learns_fit(dtype, k, n_init, seed):
    """CentredMatrix's restarts (from the RandomState states scikit-learn's loop reaches,
    one or three at a time on one shared centred copy) give the labels of
    ``KMeans(...).fit`` bit for bit, for both dtypes KMeans fits in; several k's share
    one copy (kmeans_labels)."""
    from sklearn.cluster import KMeans

    X = _kmeans_data(n=1500, d=8, seed=seed).astype(dtype)
    with clustering.one_thread():
        want = KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="elkan").fit(X).labels_
        other = KMeans(n_clusters=4, n_init=n_init, random_state=seed, algorithm="elkan").fit(X).labels_
        data = clustering.CentredMatrix(X)
        serial, side = data.labels(k, n_init, seed), data.labels(k, n_init, seed, threads=3)
        both = clustering.kmeans_labels(X, n_init, seed, ks=(4, k), threads=2)
    for got in (serial, side, both[1]):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(both[0], other)


def test_restart_states_are_checked_against_the_seeding():
    """Each restart starts from the seed's state advanced by seeding_draws(k) per restart
    before it; a wrong count is caught after the seeding, not turned into other labels."""
    X = _kmeans_data(n=300, d=3)
    data = clustering.CentredMatrix(X)
    rs = np.random.RandomState(0)
    from sklearn.cluster import kmeans_plusplus
    kmeans_plusplus(data.X, 12, x_squared_norms=data.norms, random_state=rs)
    ref = np.random.RandomState(0)
    ref.random_sample(clustering.seeding_draws(12))
    assert np.array_equal(rs.get_state()[1], ref.get_state()[1]) and rs.get_state()[2] == ref.get_state()[2]
    real = clustering.seeding_draws
    import unittest.mock as mock
    with mock.patch.object(clustering, "seeding_draws", lambda k: real(k) + 1), pytest.raises(RuntimeError):
        data.labels(12, 2, 0)


@pytest.mark.parametrize("k, n_init", [(1, 2), (301, 2), (4, 0), (2.5, 1)])
def test_centred_matrix_rejects_bad_settings(k, n_init):
    data = clustering.CentredMatrix(_kmeans_data(n=300, d=3))
    with pytest.raises(ValueError, match="k must be|n_init must be"):
        data.labels(k, n_init, 0)


def test_same_clustering_is_a_relabelling_test():
    """Exhaustively on small label vectors: labels2 is a function of labels1 (scikit-learn's
    definition), checked by brute force."""
    import itertools

    for a in itertools.product(range(3), repeat=4):
        for b in itertools.product(range(3), repeat=4):
            mapping, ok = {}, True
            for x, y in zip(a, b):
                ok = ok and mapping.setdefault(x, y) == y
            assert clustering.same_clustering(np.array(a, np.int32), np.array(b, np.int32)) == ok


def test_matrix_file_holds_the_matrix(tmp_path):
    X = np.arange(35.0).reshape(7, 5)
    M = clustering.MatrixFile.write(tmp_path / "m.tmp", X)
    assert M.shape == (7, 5) and M.dtype == X.dtype and M.nbytes == X.nbytes
    assert np.array_equal(M.load(), X) and M.load() is not M.load()
    assert b"".join(M.chunks(size=16)) == X.tobytes()
    np.save(tmp_path / "v.npy", np.arange(3.0))
    with pytest.raises(ValueError, match="2-d"):
        clustering.MatrixFile(tmp_path / "v.npy")


def test_single_linkage_of_a_matrix_file_equals_the_array(tmp_path):
    X = _float_data(300)
    M = clustering.MatrixFile.write(tmp_path / "m.npy", X)
    assert np.array_equal(clustering.cluster_part_one_thread(M, "single"),
                          clustering.cluster_part_one_thread(X, "single"))


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_block_route_reads_a_matrix_file_block_by_block_with_the_same_labels(block, tmp_path):
    """From a MatrixFile the block route reads two blocks of rows at a time and gives the
    array's labels bit for bit (the same products on the same values); a non-finite entry
    in any block is found."""
    X = _float_data(400, 6, seed=block)
    M = clustering.MatrixFile.write(tmp_path / "m.npy", X)
    want = single_linkage_fcluster(X, route="blocks", block=block)
    assert np.array_equal(single_linkage_fcluster(M, route="blocks", block=block), want)
    assert np.array_equal(M.rows(5, 5 + block), X[5:5 + block]) and M.rows(399, 999).shape == (1, 6)
    X[-1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        single_linkage_fcluster(clustering.MatrixFile.write(tmp_path / "nan.npy", X), route="blocks", block=block)


def factored_gradients(n=150, K=4, D=5, fit_intercept=True, seed=3):
    """A FactoredMatrix of softmax-residual-like factors (rows of R sum to zero) and its
    dense rows."""
    from influence.objective import GradientFactors
    rng = np.random.RandomState(seed)
    P = rng.dirichlet(np.ones(K), n)
    R = P - np.eye(K)[rng.randint(0, K, n)]
    X = rng.normal(0, 1, (n, D)) + rng.randint(0, 3, (n, 1)) * 2.0
    Xa = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    M = clustering.FactoredMatrix(GradientFactors(R, Xa, fit_intercept))
    return M, M.load()


def test_factored_matrix_holds_the_matrix_and_pickles():
    import pickle
    M, G = factored_gradients(n=37)
    assert M.shape == G.shape == (37, 4 * 5 + 4) and M.dtype == G.dtype and M.nbytes == G.nbytes
    assert M.ndim == 2 and M.load() is not M.load() and np.array_equal(M.rows(3, 9), G[3:9])
    assert b"".join(M.chunks(size=100)) == G.tobytes()
    assert M.forms(G) and not M.forms(G[:-1]) and not M.forms(G.astype(np.float32))
    H = G.copy()
    H[-1, -1] = np.nextafter(H[-1, -1], np.inf)
    assert not M.forms(H)
    back = pickle.loads(pickle.dumps(M))
    assert isinstance(back, clustering.FactoredMatrix) and np.array_equal(back.load(), G)
    assert np.array_equal(clustering.cluster_part_one_thread(back, "single"),
                          clustering.cluster_part_one_thread(M, "single"))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("block", [1, 7, 64])
def test_factored_block_distances_equal_cdist_of_the_dense_rows(fit_intercept, block):
    """The block route's edges weigh the Euclidean distances of the dense gradient rows
    (scipy's cdist, another formula: a second code path) though computed from the factors,
    and form a minimum spanning tree of them (its heights are scipy's linkage's)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import cdist

    from experiments.clustering import spanning_tree_blocks
    M, G = factored_gradients(n=90, fit_intercept=fit_intercept, seed=block)
    u, v, w = spanning_tree_blocks(M, block)
    assert _tree_is_spanning(u, v, 90)
    D = cdist(G, G)
    np.testing.assert_allclose(w, D[u, v], rtol=RTOL_TWO_PATHS, atol=0)
    np.testing.assert_allclose(np.sort(w), linkage(pdist(G), method="single")[:, 2], rtol=RTOL_TWO_PATHS, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block", [1, 5, 32, 1000])
def test_factored_single_linkage_equals_fclusterdata_of_the_dense_rows(seed, block):
    """Forced onto the block route with small blocks, single linkage of a factored matrix
    gives fclusterdata's labels of its dense rows (random data: no tied merge heights);
    the condensed route loads the dense rows: the array's labels bit for bit."""
    M, G = factored_gradients(n=160, seed=seed)
    expected = fclusterdata(G, 1)
    assert len(np.unique(expected)) > 3
    assert np.array_equal(single_linkage_fcluster(M, 1, route="blocks", block=block), expected)
    assert np.array_equal(single_linkage_fcluster(M, 1, route="condensed"), single_linkage_fcluster(G, 1))


@pytest.mark.parametrize("k", [4, 8])
def test_kmeans_of_a_factored_matrix_equals_the_dense_matrix_bit_for_bit(k):
    M, G = factored_gradients(n=300, seed=k)
    assert np.array_equal(clustering.cluster_part_one_thread(M, k, n_init=3, seed=1),
                          clustering.cluster_part_one_thread(G, k, n_init=3, seed=1))


def test_factored_single_linkage_rejects_non_finite_factors():
    M, _ = factored_gradients(n=40)
    M.factors.Xa[7, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        single_linkage_fcluster(M, route="blocks", block=8)


def test_part_memory_counts_a_factored_matrix(monkeypatch):
    """A factored matrix is formed whole on the condensed route (a float64 copy beside the
    dense array's needs) and in KMeans (the fit's own copy, as for the array); on the block
    route no copy: the residuals' Gram block, the squared norms and the factors'
    finiteness booleans instead of the array's. (Measured peaks: test_cluster_cache.)"""
    M, G = factored_gradients(n=200)
    f = M.factors
    assert clustering.part_memory(M, "single") == clustering.part_memory(G, "single") + 8 * G.size
    assert clustering.part_memory(M, 4) == clustering.part_memory(G, 4)
    monkeypatch.setattr(clustering, "CONDENSED_MAX_BYTES", 8)
    assert clustering.part_memory(M, "single") == (clustering.part_memory(G, "single") - G.size
                                                   + 8 * clustering.MST_BLOCK ** 2 + 2 * 8 * 200
                                                   + f.R.size + f.Xa.size)
