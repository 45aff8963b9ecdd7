"""The fast single-linkage clustering and the clustered-group pools (ss_logreg's phase 5)."""
import numpy as np
import pytest
from scipy.cluster.hierarchy import fclusterdata
from scipy.spatial.distance import pdist

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
