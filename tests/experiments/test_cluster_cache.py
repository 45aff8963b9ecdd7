"""The cache of phase 5's clustering labellings (experiments/cluster_cache.py): reused only
for exactly the same inputs, damaged files rebuilt, results bitwise identical."""
import contextlib
import os

import numpy as np
import pytest

from experiments import cluster_cache, execution, subset_influence as si
from experiments.subset_influence import SubsetInfluenceLogreg, build_config


def _mats(n=300):
    rng = np.random.RandomState(0)
    A = rng.randint(0, 3, (n, 4)).astype(np.float32)
    B = rng.normal(0, 1, (n, 3)) + rng.randint(0, 3, (n, 1)) * 3.0
    return A, B


def _same_pools(p, q):
    return len(p) == len(q) and all(len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
                                    for a, b in zip(p, q))


def _files(folder):
    return sorted(p.name for p in folder.glob(cluster_cache.CACHE_PREFIX + "*.npz"))


def test_cached_pools_equal_fresh_pools_and_are_reused(tmp_path, monkeypatch):
    A, B = _mats()
    fresh = si.cluster_pools([A, B], n_init=2, parallel=False)
    first = si.cached_cluster_pools([A, B], n_init=2, cache_dir=tmp_path, parallel=False)
    assert _same_pools(first, fresh) and len(_files(tmp_path)) == 2

    asked = []
    real = si.cluster_labelings

    def recording(mats, *args, **kwargs):
        asked.append([M.copy() for M in mats])
        return real(mats, *args, **kwargs)

    monkeypatch.setattr(si, "cluster_labelings", recording)
    again = si.cached_cluster_pools([A, B], n_init=2, cache_dir=tmp_path, parallel=False)
    assert _same_pools(again, fresh) and asked == []  # nothing recomputed
    # One changed entry of B: only B's labellings are computed again (X of a lambda sweep).
    B2 = B.copy()
    B2[5, 1] += 1e-9
    out = si.cached_cluster_pools([A, B2], n_init=2, cache_dir=tmp_path, parallel=False)
    assert len(asked) == 1 and len(asked[0]) == 1 and np.array_equal(asked[0][0], B2)
    assert _same_pools(out, si.cluster_pools([A, B2], n_init=2, parallel=False))
    # Another n_init is another key.
    asked.clear()
    si.cached_cluster_pools([A], n_init=1, cache_dir=tmp_path, parallel=False)
    assert len(asked) == 1 and len(_files(tmp_path)) == 4


def test_key_covers_content_dtype_shape_and_settings():
    A, _ = _mats()
    parts = ["single", 4, 8]
    k = cluster_cache.cache_key(A, parts, 10, 0)
    assert k == cluster_cache.cache_key(np.asfortranarray(A.copy()), parts, 10, 0)  # same content
    A2 = A.copy()
    A2[0, 0] += 1
    others = [cluster_cache.cache_key(A2, parts, 10, 0), cluster_cache.cache_key(A.astype(np.float64), parts, 10, 0),
              cluster_cache.cache_key(A.reshape(-1, 2), parts, 10, 0), cluster_cache.cache_key(A, parts, 9, 0),
              cluster_cache.cache_key(A, parts, 10, 1), cluster_cache.cache_key(A, parts[:2], 10, 0)]
    assert len({k, *others}) == 7


def test_damaged_or_foreign_cache_files_are_rebuilt(tmp_path, caplog):
    A, B = _mats()
    fresh = si.cluster_pools([A], n_init=1, parallel=False)
    si.cached_cluster_pools([A], n_init=1, cache_dir=tmp_path, parallel=False)
    (path,) = tmp_path.glob(cluster_cache.CACHE_PREFIX + "*.npz")
    good = path.read_bytes()
    for damaged in (good[: len(good) // 2], b"\0" * 100, b""):
        path.write_bytes(damaged)
        assert _same_pools(si.cached_cluster_pools([A], n_init=1, cache_dir=tmp_path, parallel=False), fresh)
        assert path.read_bytes() == good  # rewritten whole
    # A file holding another matrix's labellings under this name is not trusted.
    key = path.name[len(cluster_cache.CACHE_PREFIX):-4]
    other = si.cluster_labelings([B[:200]], 1, parallel=False)[0]
    cluster_cache.save_labels(tmp_path, key, other)
    with caplog.at_level("WARNING"):
        assert _same_pools(si.cached_cluster_pools([A], n_init=1, cache_dir=tmp_path, parallel=False), fresh)
    assert "ignoring cache" in caplog.text
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_regularisation_sweep_reuses_the_feature_pool_with_identical_groups(tmp_path, monkeypatch):
    def run(out, reg):
        cfg = build_config(dataset_id="synthetic_binary", subset_choice_type="range", num_subsets=3,
                           fixed_reg=reg, kmeans_n_init=2)
        return SubsetInfluenceLogreg(cfg, out_dir=out, progress=False).run()

    cache = tmp_path / "cached" / ".cache"
    cached = [run(tmp_path / "cached", reg) for reg in (1e-3, 1e-1)]
    # Run 1 cached X's and its gradients' labellings; run 2 only its own gradients'.
    assert len(_files(cache)) == 3
    monkeypatch.setenv("INFLUENCE_CLUSTER_CACHE", "0")
    plain = [run(tmp_path / "plain", reg) for reg in (1e-3, 1e-1)]
    assert not (tmp_path / "plain" / ".cache").exists()
    for a, b in zip(cached, plain):
        assert list(a["subset_tags"]) == list(b["subset_tags"])
        assert all(np.array_equal(x, y) for x, y in zip(a["subset_indices"], b["subset_indices"]))
        assert np.array_equal(a["subset_self_actl_infl"], b["subset_self_actl_infl"])


def test_parallel_labellings_of_one_matrix_equal_serial(monkeypatch):
    # n >= PARALLEL_MIN_ROWS and two CPUs: the tasks of a single matrix run side by side.
    monkeypatch.setattr(execution, "num_cpus", lambda: 2)
    rng = np.random.RandomState(1)
    B = rng.normal(0, 1, (si.PARALLEL_MIN_ROWS, 3))
    par = si.cluster_labelings([B], n_init=1, parallel=True)
    ser = si.cluster_labelings([B], n_init=1, parallel=False)
    assert len(par[0]) == 7 and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(par[0], ser[0]))


def test_the_memory_rule_reads_psutil(monkeypatch):
    import psutil

    class Fake:
        available = 123_456_789
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Fake())
    assert execution.available_memory() == 123_456_789
    assert 1 <= execution.num_cpus() <= (os.cpu_count() or 1)


def test_interrupted_pools_resume_from_their_finished_labellings(tmp_path, monkeypatch, caplog):
    """Each finished labelling is stored at once; a run stopped in the middle of phase 5
    resumes with them (only the rest is computed), gives the pools of an uninterrupted run,
    and removes the part files once the whole pools are stored."""
    from experiments import clustering
    A, B = _mats()
    fresh = si.cluster_pools([A, B], n_init=2, parallel=False)
    real = clustering.cluster_part_one_thread
    calls = []

    def stops_after_three(M, part, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt("stopped")
        calls.append((M.shape[1], part))
        return real(M, part, *args)

    monkeypatch.setattr(clustering, "cluster_part_one_thread", stops_after_three)
    with pytest.raises(KeyboardInterrupt):
        si.cached_cluster_pools([A, B], n_init=2, cache_dir=tmp_path, parallel=False)
    # Longest first, the matrices alternating: A's and B's single linkage, then A's k=128
    # (A has 300 rows, so k = 4..128 all apply).
    assert calls == [(4, "single"), (3, "single"), (4, 128)]
    assert len(_files(tmp_path)) == 3 and all("-part" in f for f in _files(tmp_path))

    calls.clear()
    monkeypatch.setattr(clustering, "cluster_part_one_thread",
                        lambda M, part, *a: (calls.append(part), real(M, part, *a))[1])
    with caplog.at_level("INFO"):
        out = si.cached_cluster_pools([A, B], n_init=2, cache_dir=tmp_path, parallel=False)
    assert _same_pools(out, fresh)
    assert len(calls) == 2 * 7 - 3 and "single" not in calls        # only the missing ones
    assert "3 labellings reused from an interrupted run" in caplog.text
    assert "clustering: KMeans k=4 of matrix" in caplog.text        # each part logged with its time
    assert len(_files(tmp_path)) == 2 and not any("-part" in f for f in _files(tmp_path))


def test_damaged_or_foreign_part_files_are_recomputed(tmp_path, caplog):
    A, _ = _mats()
    parts = ["single", 4, 8, 16, 32, 64, 128]
    key = cluster_cache.cache_key(A, parts, 1, si.KMEANS_SEED)
    good = si.cluster_labelings([A], 1, parallel=False)[0]
    cluster_cache.save_part(tmp_path, key, 0, good[0])
    assert np.array_equal(cluster_cache.load_part(tmp_path, key, 0, A.shape[0]), good[0])
    cluster_cache.part_path(tmp_path, key, 1).write_bytes(b"\0" * 10)             # damaged
    cluster_cache.save_part(tmp_path, key, 2, good[2][:10])                          # wrong shape
    cluster_cache.save_part(tmp_path, key, 3, good[3])
    cluster_cache.part_path(tmp_path, key, 3).rename(cluster_cache.part_path(tmp_path, key, 4))  # wrong index
    with caplog.at_level("WARNING"):
        for j in (1, 2, 4):
            assert cluster_cache.load_part(tmp_path, key, j, A.shape[0]) is None
    assert "ignoring cache" in caplog.text
    out = si.cached_cluster_pools([A], n_init=1, cache_dir=tmp_path, parallel=False)
    assert _same_pools(out, si.cluster_pools([A], n_init=1, parallel=False))
    assert not any("-part" in f for f in _files(tmp_path))


def _spy_parts(monkeypatch):
    """Record, for every labelling, its thread, the BLAS/OpenMP thread counts it ran with
    and how many parts ran at the same time."""
    import threading

    from threadpoolctl import threadpool_info

    from experiments import clustering
    log, live, lock = [], [], threading.Lock()
    real_kmeans, real_single = clustering.kmeans_labels, clustering.single_linkage_fcluster

    def threads_now():
        return {p["user_api"]: p["num_threads"] for p in threadpool_info()}

    def wrap(real, name):
        def spy(X, *a, **k):
            with lock:
                live.append(name)
                log.append((name, threading.get_ident(), threads_now(), list(live)))
            try:
                return real(X, *a, **k)
            finally:
                with lock:
                    live.remove(name)
        return spy

    monkeypatch.setattr(clustering, "kmeans_labels", wrap(real_kmeans, "kmeans"))
    monkeypatch.setattr(clustering, "single_linkage_fcluster", wrap(real_single, "single"))
    return log


def test_threaded_labellings_equal_serial_on_one_thread_each(monkeypatch):
    """Memory for 1.5 distance matrices: the labellings run in two threads of this process
    (the executor's embedded pool), each on one BLAS and one OpenMP thread, and equal the
    serial ones bit for bit."""
    import threading
    monkeypatch.setattr(execution, "num_cpus", lambda: 2)
    rng = np.random.RandomState(3)
    A = rng.normal(0, 1, (si.PARALLEL_MIN_ROWS, 4))
    B = rng.normal(0, 1, (si.PARALLEL_MIN_ROWS, 3)) + rng.randint(0, 3, (si.PARALLEL_MIN_ROWS, 1)) * 3.0
    ser = si.cluster_labelings([A, B], n_init=1, parallel=False)
    need = 8 * A.shape[0] * (A.shape[0] - 1) // 2
    monkeypatch.setattr(execution, "available_memory", lambda: int(1.5 * need / execution.THREAD_MEMORY_SHARE))
    log = _spy_parts(monkeypatch)
    thr = si.cluster_labelings([A, B], n_init=1, parallel=True)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for x, y in zip(thr, ser) for a, b in zip(x, y))
    assert len(log) == 14
    assert {t for _, t, _, _ in log} - {threading.get_ident()}, "no labelling ran in a worker thread"
    assert max(len(live) for *_, live in log) == 2                      # side by side
    for name, _, threads, _ in log:
        assert threads.get("blas", 1) == 1 and threads.get("openmp", 1) == 1, (name, threads)
    # 1.5 distance matrices fit: never two single linkages at once.
    assert all(live.count("single") <= 1 for *_, live in log)


def test_threaded_labellings_respect_the_memory_budget(monkeypatch):
    """A part starts only while it fits next to the running ones (here only one part at a
    time fits, so they run one after the other), and the labels are unchanged."""
    monkeypatch.setattr(execution, "num_cpus", lambda: 2)
    B = np.random.RandomState(4).normal(0, 1, (si.PARALLEL_MIN_ROWS, 3))
    ser = si.cluster_labelings([B], n_init=1, parallel=False)
    from experiments import clustering
    # No two parts fit together (a part alone always runs).
    small = clustering.part_memory(B, 4) + clustering.part_memory(B, 8)
    monkeypatch.setattr(execution, "available_memory", lambda: int(small / execution.THREAD_MEMORY_SHARE) - 1)
    log = _spy_parts(monkeypatch)
    thr = si.cluster_labelings([B], n_init=1, parallel=True)
    assert all(np.array_equal(a, b) for a, b in zip(thr[0], ser[0]))
    assert len(log) == 7 and max(len(live) for *_, live in log) == 1
    need = 8 * B.shape[0] * (B.shape[0] - 1) // 2
    assert clustering.part_memory(B, "single") > need
    assert clustering.part_memory(B.astype(np.float32), "single") == clustering.part_memory(B, "single") + B.nbytes
    per_restart = 8 * 128 * (2 * B.shape[0] + 4 * B.shape[1])
    assert clustering.part_memory(B, 128) == 2 * B.nbytes + per_restart
    assert clustering.part_memory(B, 128, threads=3) == 2 * B.nbytes + 3 * per_restart


def test_a_kmeans_that_runs_alone_runs_its_restarts_side_by_side(monkeypatch):
    """A KMeans that the budget lets run beside no other of its size runs its restarts one
    per CPU (threads in its task's spec, counted in its memory); with room for two, each
    keeps one thread; the single linkage always one; the labels equal the serial ones."""
    from experiments import clustering
    monkeypatch.setattr(execution, "num_cpus", lambda: 2)
    # 600 columns: each KMeans (its copy and tolerance block) needs more than half the
    # single linkage's memory, the largest part.
    B = np.random.RandomState(6).normal(0, 1, (si.PARALLEL_MIN_ROWS, 600))
    assert all(2 * clustering.part_memory(B, k) > clustering.part_memory(B, "single")
               for k in clustering.KMEANS_KS)
    ser = si.cluster_labelings([B], n_init=2, parallel=False)
    real = clustering.pool_part_task
    for max_memory, want in ((0, 2), (10 ** 9, 1)):
        specs = []

        def spy(mats, spec, specs=specs):
            specs.append(spec)
            return real(mats, spec)

        monkeypatch.setattr(clustering, "pool_part_task", spy)
        thr = si.cluster_labelings([B], n_init=2, parallel=True, max_memory=max_memory)
        assert all(np.array_equal(a, b) for a, b in zip(thr[0], ser[0]))
        threads = {spec[1]: spec[4] for spec in specs}
        assert threads.pop("single") == 1 and set(threads) == set(clustering.KMEANS_KS)
        assert set(threads.values()) == {want}, (max_memory, threads)


def test_labellings_side_by_side_need_at_most_the_largest_plus_max_memory(monkeypatch):
    """With ``max_memory`` the parts running together need at most the largest part's memory
    plus ``max_memory``: here the single linkage (its condensed distances) runs alone, while
    KMeans parts, smaller together than it, still run two at a time."""
    monkeypatch.setattr(execution, "num_cpus", lambda: 2)
    B = np.random.RandomState(5).normal(0, 1, (si.PARALLEL_MIN_ROWS, 3))
    from experiments import clustering
    parts = clustering.pool_parts(B.shape[0])
    sizes = {p: clustering.part_memory(B, p) for p in parts}
    assert sizes["single"] == max(sizes.values()) and sizes[128] + sizes[64] <= sizes["single"]
    ser = si.cluster_labelings([B], n_init=1, parallel=False)
    log = _spy_parts(monkeypatch)
    thr = si.cluster_labelings([B], n_init=1, parallel=True, max_memory=1)
    assert all(np.array_equal(a, b) for a, b in zip(thr[0], ser[0]))
    assert len(log) == 7
    assert all(live == ["single"] for name, *_, live in log if name == "single")
    assert max(len(live) for *_, live in log) == 2                      # KMeans parts side by side
    assert all(sum(sizes[128] if x == "kmeans" else sizes["single"] for x in live) <= sizes["single"] + 1
               or len(live) == 1 for *_, live in log)


_LABELLING_CHILD = r"""
import sys
import numpy as np
import psutil
from experiments import clustering
from sklearn.cluster import KMeans
from influence import objective
from influence.objective import GradientFactors
variant = sys.argv[1]
X = np.random.RandomState(0).normal(0, 1, (6000, 2000))   # 96 MB, above one tolerance block
if variant.endswith("factored"):   # the same size from factors: 8 classes, 249 features and the ones
    rng = np.random.RandomState(0)
    factors = GradientFactors(rng.normal(0, 1, (6000, 8)), np.hstack([rng.normal(0, 1, (6000, 249)),
                                                                      np.ones((6000, 1))]), True)
    X = factors.rows(0, 6000)
nbytes = X.nbytes
clustering.CONDENSED_MAX_BYTES = 0      # single linkage by blocks, as at Fashion-MNIST's size
clustering.VARIANCE_BLOCK_BYTES = 2 ** 22   # the tolerance's block and the single linkage's blocks
clustering.MST_BLOCK = 512                  # of rows about as small next to X as at that size
objective.PER_EXAMPLE_BLOCK_BYTES = 2 ** 22    # (and the blocks in which rows are formed from factors)
with clustering.one_thread():
    clustering.kmeans_labels(X[:50], n_init=1, ks=(4,))   # imports and first calls
    if variant.endswith("file"):
        src = clustering.MatrixFile.write(sys.argv[2], X)
        del X                           # as phase 5 drops the gradient matrix
    elif variant.endswith("factored"):
        src = clustering.FactoredMatrix(factors)
        del X
    else:
        src = X
    bound = clustering.part_memory(src, "single" if variant.startswith("single") else 4)
    open('/proc/self/clear_refs', 'w').write('5')   # reset the high-water mark (VmHWM) to now
    base = psutil.Process().memory_info().rss
    if variant == "sklearn-default":
        KMeans(n_clusters=4, n_init=1, random_state=0, algorithm="elkan").fit(src)
    elif variant.startswith("kmeans"):
        clustering.kmeans_labels(src, n_init=1, ks=(4,))
    else:
        clustering.cluster_part_one_thread(src, "single")
peak = 1024 * int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
print(base, peak, bound, nbytes)
"""


def _labelling_peak(variant, tmp_path):
    import subprocess
    import sys

    from experiments.common import REPO_ROOT
    out = subprocess.run([sys.executable, "-c", _LABELLING_CHILD, variant, str(tmp_path / "x.npy")],
                         capture_output=True, text=True, cwd=str(REPO_ROOT), check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return (int(x) for x in out.stdout.split())


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's resettable peak RSS")
@pytest.mark.parametrize("variant, copies", [("sklearn-default", (1.9, 2.2)), ("kmeans", (0.95, 1.2)),
                                             ("kmeans-file", (0.95, 1.2)), ("single-file", (0.0, 0.5)),
                                             ("kmeans-factored", (0.95, 1.2)), ("single-factored", (0.0, 0.5))])
def test_a_labelling_holds_one_copy_of_the_matrix(variant, copies, tmp_path):
    """Peak RSS of one labelling of a 96 MB matrix in a fresh process, in copies of the
    matrix above what the process held before: scikit-learn's default KMeans makes two
    (its copy of X and its tolerance's temporary of X's size), kmeans_labels one (its own
    copy; the tolerance by blocks of rows), also from a MatrixFile with X no longer in
    memory, so that phase 5 holds one copy of the gradient matrix per KMeans running.
    Single linkage from a file holds no copy: the block route reads two blocks of rows
    at a time (with its work arrays, under half a copy here), nor from factors (its Gram
    blocks come from them; KMeans forms its one copy from them). Each stays within
    part_memory."""
    base, peak, bound, nbytes = _labelling_peak(variant, tmp_path)
    slack = 16 * 2 ** 20   # allocator and page granularity
    lo, hi = copies
    assert lo * nbytes <= peak - base <= hi * nbytes, (variant, (peak - base) / nbytes)
    if variant != "sklearn-default":
        assert peak - base <= bound + slack, (peak - base, bound)


def phase_5_seen_by_the_pools(tmp_path, monkeypatch, dataset_id):
    """Phases 0-4 of a small range run, then phase 5 with a spy on the pools' call: the run,
    phase 1's gradient matrix (a copy), phase 5's result and what the pools saw (the
    matrices' types, the run's two references to the gradients meanwhile, the scratch
    files in the run folder); the spy checks the matrix the pools got is phase 1's."""
    monkeypatch.setenv("INFLUENCE_CLUSTER_CACHE", "0")
    cfg = build_config(dataset_id=dataset_id, subset_choice_type="range", num_subsets=3, kmeans_n_init=2)
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)
    exp.PHASES = [p for p in exp.PHASES if p.index <= 4]
    exp.run()
    G = exp.R["train_grad_loss"].copy()
    seen = []
    real = si.cached_cluster_pools

    def spy(mats, *a, **k):
        seen.append(([type(M).__name__ for M in mats], exp.R["train_grad_loss"],
                     exp.results["initial_training"]["train_grad_loss"],
                     sorted(p.name for p in exp.base_dir.iterdir() if p.name.endswith(".tmp"))))
        assert np.array_equal(mats[1].load(), G)
        return real(mats, *a, **k)

    monkeypatch.setattr(si, "cached_cluster_pools", spy)
    res = exp.pick_subsets()
    [saw] = seen
    return exp, G, res, saw


def test_phase_5_clusters_the_gradients_from_a_file_and_restores_them(tmp_path, monkeypatch):
    """While the pools are built the run holds no reference to the gradient matrix (R and
    phase 1's results), which the labellings read from a temporary file in the run folder;
    afterwards R holds it again bit for bit, the file is gone, and the groups are those of
    the pools of the in-memory matrix."""
    exp, G, res, (kinds, in_R, in_results, scratch) = phase_5_seen_by_the_pools(tmp_path, monkeypatch,
                                                                              "synthetic_binary")
    assert kinds == ["ndarray", "MatrixFile"] and in_R is None and in_results is None and len(scratch) == 1
    assert exp.R["train_grad_loss"] is exp.results["initial_training"]["train_grad_loss"]
    assert np.array_equal(exp.R["train_grad_loss"], G)
    assert not [p for p in exp.base_dir.iterdir() if p.name.endswith(".tmp")]
    pools = si.cluster_pools([np.asarray(exp.train.x), G], n_init=2, parallel=False)
    monkeypatch.setattr(si, "cached_cluster_pools", lambda mats, *a, **k: pools)
    again = exp.pick_subsets()
    assert res["subset_tags"] == again["subset_tags"]
    assert all(np.array_equal(a, b) for a, b in zip(res["subset_indices"], again["subset_indices"]))


def test_phase_5_clusters_the_gradients_in_memory_when_the_file_cannot_be_written(tmp_path, monkeypatch, caplog):
    from experiments import clustering
    monkeypatch.setenv("INFLUENCE_CLUSTER_CACHE", "0")
    cfg = build_config(dataset_id="synthetic_binary", subset_choice_type="range", num_subsets=3, kmeans_n_init=2)
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)
    exp.PHASES = [p for p in exp.PHASES if p.index <= 4]
    exp.run()
    want = exp.pick_subsets()

    def full_disk(path, X):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(clustering.MatrixFile, "write", full_disk)
    got = exp.pick_subsets()
    assert "cannot write the gradient matrix" in caplog.text
    assert got["subset_tags"] == want["subset_tags"]
    assert all(np.array_equal(a, b) for a, b in zip(got["subset_indices"], want["subset_indices"]))
    assert exp.R["train_grad_loss"] is not None
    assert not [p for p in exp.base_dir.iterdir() if p.name.endswith(".tmp")]


def test_cg_phase_4_builds_its_factor_with_the_gradients_on_disk(tmp_path):
    """A cg run's phase 4 builds its preconditioner (the dense Hessian's factor) while the
    run holds no reference to the gradient matrix (it waits in a temporary file of the run
    folder); afterwards R holds it again bit for bit, the file is gone, and the influences
    are those of the same calls with the factor built beside the matrix, and agree with an
    explicit solve."""
    from tests.conftest import assert_close

    seen = []

    class Spy(SubsetInfluenceLogreg):
        def _cg_preconditioner(self):
            seen.append((self.R["train_grad_loss"], self.results["initial_training"]["train_grad_loss"],
                         [p.name for p in self.base_dir.iterdir() if p.name.endswith(".tmp")]))
            return super()._cg_preconditioner()

    cfg = build_config(dataset_id="synthetic_multiclass", subset_choice_type="range", num_subsets=3,
                       inverse_hvp_method="cg")
    exp = Spy(cfg, out_dir=tmp_path, progress=False)
    exp.PHASES = [p for p in exp.PHASES if p.index <= 4]
    R = exp.run()
    [(in_R, in_results, scratch)] = seen     # once, in phase 4 (phases 0-3 need none)
    assert in_R is None and in_results is None and len(scratch) == 1
    assert not [p for p in exp.base_dir.iterdir() if p.name.endswith(".tmp")]
    assert R["train_grad_loss"] is exp.results["initial_training"]["train_grad_loss"]
    model = exp.model_at_theta_hat()
    G = model.get_indiv_grad_loss(exp.train)          # phase 1's call at the same parameters
    assert np.array_equal(R["train_grad_loss"], G)
    T, _ = exp.fixed_test_grads()
    fresh = SubsetInfluenceLogreg(cfg, out_dir=tmp_path / "other", progress=False)
    fresh.R, fresh.results = dict(R), dict(exp.results)
    want = fresh.influence().first_order_influence(G, T).T   # factor built with G in memory
    assert np.array_equal(R["fixed_test_pred_infl"], want)
    H = model.get_hessian(exp.train, None, R["cv_l2_reg"])
    assert_close(R["fixed_test_pred_infl"], (G @ np.linalg.solve(H, T.T)).T, 1e-8, 1e-12)


@pytest.mark.parametrize("dataset_id, aside", [("synthetic_multiclass", "factors"), ("synthetic_binary", "file")])
def test_phase_6_refits_with_the_gradients_set_aside(tmp_path, monkeypatch, dataset_id, aside):
    """A cg run's refits run while the run holds no reference to the gradient matrix (a
    multinomial model's held as its factors, no file; a binary model's in a temporary file
    of the run folder); afterwards R holds it again bit for bit, no file is left, and the
    refits and losses are those of the same run with the matrix kept in memory."""
    monkeypatch.setenv("INFLUENCE_CLUSTER_CACHE", "0")
    cfg = build_config(dataset_id=dataset_id, subset_choice_type="range", num_subsets=3, kmeans_n_init=2,
                       inverse_hvp_method="cg")

    def run(folder, spy_on=None):
        exp = SubsetInfluenceLogreg(cfg, out_dir=folder, progress=False)
        exp.PHASES = [p for p in exp.PHASES if p.index <= 6]
        if spy_on is not None:
            real = si.tasks.refit_groups

            def spy(*a, **k):
                spy_on.append((exp.R["train_grad_loss"], exp.results["initial_training"]["train_grad_loss"],
                               sorted(p.name for p in exp.base_dir.iterdir() if p.name.endswith(".tmp"))))
                return real(*a, **k)
            monkeypatch.setattr(si.tasks, "refit_groups", spy)
        return exp, exp.run()

    seen = []
    exp, R = run(tmp_path / "aside", seen)
    [(in_R, in_results, scratch)] = seen
    assert in_R is None and in_results is None and len(scratch) == (aside == "file")
    assert not [p for p in exp.base_dir.iterdir() if p.name.endswith(".tmp")]
    assert R["train_grad_loss"] is exp.results["initial_training"]["train_grad_loss"]
    assert np.array_equal(R["train_grad_loss"], exp.model_at_theta_hat().get_indiv_grad_loss(exp.train))
    monkeypatch.undo()
    monkeypatch.setenv("INFLUENCE_CLUSTER_CACHE", "0")
    monkeypatch.setattr(SubsetInfluenceLogreg, "gradients_set_aside",
                        lambda self, what, to_disk=True: contextlib.nullcontext(self.R["train_grad_loss"]))
    _, kept = run(tmp_path / "kept")
    assert np.array_equal(kept["train_grad_loss"], R["train_grad_loss"])
    for key in ("subset_refit_params", "subset_refit_grad_norm", "subset_refit_converged", "subset_test_losses"):
        assert np.array_equal(np.asarray(R[key]), np.asarray(kept[key])), key
    assert all(np.array_equal(a, b) for a, b in zip(R["subset_train_losses"], kept["subset_train_losses"]))
    assert np.all(R["subset_refit_converged"])


def test_a_factored_matrix_has_its_own_key_on_the_block_route_only(tmp_path, monkeypatch):
    """On the condensed route a factored matrix's labellings are those of its dense rows
    (the same key as the array's and its file's); on the block route its distances come
    from the factors (other roundings): another key, which covers the factors, while the
    array's and the file's keys stay equal to each other."""
    from experiments import clustering
    from tests.experiments.test_clustering import factored_gradients

    M, G = factored_gradients(n=60)
    parts = ["single", 4]
    F = clustering.MatrixFile.write(tmp_path / "g.npy", G)
    assert cluster_cache.cache_key(M, parts, 1, 0) == cluster_cache.cache_key(G, parts, 1, 0) \
        == cluster_cache.cache_key(F, parts, 1, 0)
    monkeypatch.setattr(clustering, "CONDENSED_MAX_BYTES", 8)
    dense = cluster_cache.cache_key(G, parts, 1, 0)
    assert cluster_cache.cache_key(F, parts, 1, 0) == dense
    factored = cluster_cache.cache_key(M, parts, 1, 0)
    assert factored != dense
    M.factors.Xa[5, 1] = np.nextafter(M.factors.Xa[5, 1], np.inf)
    assert cluster_cache.cache_key(M, parts, 1, 0) not in (factored, dense)


def test_phase_5_clusters_a_multinomial_models_gradients_from_their_factors(tmp_path, monkeypatch):
    """A multinomial model's gradient matrix is clustered as its factors at theta_hat
    (checked to be phase 1's matrix bit for bit), with no file and no reference to the dense
    matrix in the run meanwhile; afterwards R holds it again bit for bit, and the groups are
    those of the pools of the in-memory matrix (the condensed route: the same labels)."""
    exp, G, res, (kinds, in_R, in_results, scratch) = phase_5_seen_by_the_pools(tmp_path, monkeypatch,
                                                                              "synthetic_multiclass")
    assert kinds == ["ndarray", "FactoredMatrix"] and in_R is None and in_results is None and not scratch
    assert exp.R["train_grad_loss"] is exp.results["initial_training"]["train_grad_loss"]
    assert np.array_equal(exp.R["train_grad_loss"], G)
    pools = si.cluster_pools([np.asarray(exp.train.x), G], n_init=2, parallel=False)
    monkeypatch.setattr(si, "cached_cluster_pools", lambda mats, *a, **k: pools)
    again = exp.pick_subsets()
    assert "same_grad" in res["subset_tags"] and res["subset_tags"] == again["subset_tags"]
    assert all(np.array_equal(a, b) for a, b in zip(res["subset_indices"], again["subset_indices"]))


def test_phase_5_clusters_the_dense_gradients_when_the_factors_do_not_give_them(tmp_path, monkeypatch, caplog):
    """Factors whose rows differ from phase 1's matrix in any bit are not used: the dense
    matrix is clustered (from its file), with a warning."""
    from influence.logistic_regression import LogisticRegression
    from influence.objective import GradientFactors

    monkeypatch.setenv("INFLUENCE_CLUSTER_CACHE", "0")
    cfg = build_config(dataset_id="synthetic_multiclass", subset_choice_type="range", num_subsets=3,
                       kmeans_n_init=2)
    exp = SubsetInfluenceLogreg(cfg, out_dir=tmp_path, progress=False)
    exp.PHASES = [p for p in exp.PHASES if p.index <= 4]
    exp.run()
    want = exp.pick_subsets()
    real = LogisticRegression.get_indiv_grad_loss_factors

    def nudged(self, ds):
        f = real(self, ds)
        R = f.R.copy()
        R[-1, 0] = np.nextafter(R[-1, 0], np.inf)
        return GradientFactors(R, f.Xa, f.fit_intercept)

    kinds = []
    real_pools = si.cached_cluster_pools
    monkeypatch.setattr(LogisticRegression, "get_indiv_grad_loss_factors", nudged)
    monkeypatch.setattr(si, "cached_cluster_pools",
                        lambda mats, *a, **k: kinds.append([type(M).__name__ for M in mats]) or real_pools(mats, *a, **k))
    got = exp.pick_subsets()
    assert kinds == [["ndarray", "MatrixFile"]] and "bit for bit" in caplog.text
    assert got["subset_tags"] == want["subset_tags"]
    assert all(np.array_equal(a, b) for a, b in zip(got["subset_indices"], want["subset_indices"]))
