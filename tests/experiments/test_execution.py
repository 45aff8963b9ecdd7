"""Dask execution (experiments/execution.py): embedded and cluster runs agree bit for bit,
a killed worker changes nothing, an unreachable scheduler is one line (exit 2).

One 2-worker LocalCluster on 127.0.0.1 serves the session (the ``cluster`` fixture of
tests/experiments/conftest.py, shut down in its finally); the killed-worker tests run
last in the module, since the nanny then restarts those workers.
"""
import functools
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from experiments import cli, execution, tasks
from experiments.common import result_config
from experiments.counterexamples import Counterexamples, build_config as cex_config
from experiments.execution import Executor, SchedulerUnreachableError
from experiments.subset_influence import SubsetInfluenceLogreg, build_config
from tests.scripts.test_cli_fuzz import load_script


class SmallChunks(SubsetInfluenceLogreg):
    """ss_logreg with one group per refit task, so that phase 6 is many short tasks."""

    refit_max_chunk = 1


def ss_config():
    return build_config(dataset_id="breast_cancer", num_subsets=4, master_only=True)


def run_ss(out_dir, executor=None):
    exp = SmallChunks(ss_config(), out_dir=out_dir, progress=False)
    if executor is not None:
        exp.executor = executor
    exp.run(save_phase_results=False)
    return exp.R


def run_cex(out_dir, executor=None):
    exp = Counterexamples(cex_config("ortho2", master_only=True), out_dir=out_dir, progress=False)
    if executor is not None:
        exp.executor = executor
    exp.run(save_phase_results=False)
    return exp.R


def assert_identical(A, B):
    """Every key of A in B, equal bit for bit (arrays, ragged lists, scalars, None)."""
    assert sorted(A) == sorted(B)
    for k in A:
        a, b = A[k], B[k]
        if isinstance(a, list):
            assert len(a) == len(b), k
            for x, y in zip(a, b):
                x, y = np.asarray(x), np.asarray(y)
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), k
        elif a is None:
            assert b is None, k
        else:
            x, y = np.asarray(a), np.asarray(b)
            assert x.dtype == y.dtype and x.shape == y.shape, k
            if x.dtype == object:
                assert x.tolist() == y.tolist(), k
            else:
                assert x.tobytes() == y.tobytes(), f"{k} differs between embedded and cluster runs"


@pytest.fixture(scope="module")
def ss_embedded(tmp_path_factory):
    return run_ss(tmp_path_factory.mktemp("embedded"))


# ----------------------------------------------------------------------------- embedded
def test_embedded_is_the_default_and_starts_nothing(tmp_path):
    exp = SubsetInfluenceLogreg(ss_config(), out_dir=tmp_path)
    assert exp.executor.mode == "embedded" and not exp.executor.distributed
    assert exp.executor.client is None
    assert Executor().map(execution.timed_noop, None, [3, 1, 2]) == [3, 1, 2]


def test_execution_settings_are_operational():
    base = ss_config()
    for extra in (execution.settings(num_workers=3), execution.settings(scheduler="tcp://10.0.0.1:8786")):
        cfg = dict(base, **extra)
        assert extra and result_config(cfg) == result_config(base)
        assert SubsetInfluenceLogreg(cfg).run_id == SubsetInfluenceLogreg(base).run_id
    assert execution.settings() == {}


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_workers=0), "--workers must be a positive integer"),
    (dict(num_workers=2, scheduler="tcp://127.0.0.1:1"), "not both"),
    (dict(scheduler="127.0.0.1:8786"), "tcp://HOST:PORT"),
    (dict(scheduler="tcp://host"), "tcp://HOST:PORT"),
])
def test_bad_execution_settings(kwargs, match):
    with pytest.raises(execution.ConfigError, match=match):
        execution.settings(**kwargs)


def test_every_experiment_script_takes_the_flags(monkeypatch):
    monkeypatch.delenv(execution.ENV_SCHEDULER, raising=False)
    for name in ("subsets_infl_logreg", "counterexamples", "data_valuation", "credit_assignment"):
        parser = load_script(name).make_parser()
        args = parser.parse_args(["--workers", "3"])
        assert execution.settings_from_args(args) == {"num_workers": 3}
        args = parser.parse_args(["--scheduler-address", "tcp://127.0.0.1:8786"])
        assert execution.settings_from_args(args) == {"scheduler": "tcp://127.0.0.1:8786"}
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["--workers", "2", "--scheduler-address", "tcp://127.0.0.1:8786"])
        assert exc.value.code == cli.EXIT_USAGE
    monkeypatch.setenv(execution.ENV_SCHEDULER, "tcp://127.0.0.1:9999")
    assert execution.settings_from_args(parser.parse_args([])) == {"scheduler": "tcp://127.0.0.1:9999"}
    assert execution.settings_from_args(parser.parse_args(["--workers", "1"])) == {"num_workers": 1}


# ----------------------------------------------------------------------------- determinism
def task_names(cluster, fn, *args):
    """``fn(*args)`` and the names of the tasks it ran on the cluster."""
    from dask.utils import key_split
    from distributed import get_task_stream

    with get_task_stream(cluster.client) as ts:
        out = fn(*args)
    return out, {key_split(t["key"]) for t in ts.data}


def test_ss_logreg_on_two_workers_equals_embedded(ss_embedded, cluster, tmp_path):
    assert cluster.mode == "local"
    R, names = task_names(cluster, run_ss, tmp_path, cluster)
    assert {"cv_fold_task", "pool_part_task", "refit_task", "newton_task"} <= names  # phases 0, 5, 6, 9
    assert_identical(ss_embedded, R)


def test_counterexamples_on_two_workers_equal_embedded(cluster, tmp_path):
    R, names = task_names(cluster, run_cex, tmp_path / "b", cluster)
    assert {"retrain_and_newton_task", "cex_test_infl_task"} <= names  # phases 3, 5
    assert_identical(run_cex(tmp_path / "a"), R)


def test_results_come_back_in_submission_order(cluster):
    assert cluster.map(execution.timed_noop, np.arange(5), list(range(40))[::-1]) == list(range(40))[::-1]


def test_cold_fit_cross_validation_with_a_score_on_two_workers(cluster):
    """Per-(fold, lambda) tasks and a picklable score (data_valuation's weighted F1)."""
    from experiments.data_valuation import weighted_f1
    from experiments.influence_base import contiguous_folds, cv_regs
    from influence.logistic_regression import LogisticRegression

    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 4))
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=120) > 0).astype(np.int64)
    w = rng.uniform(0.5, 1.5, size=120)
    score = functools.partial(weighted_f1, X[:40], y[:40], w[:40])
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": 4, "fit_intercept": True, "num_classes": 2}
    args = (X, y, cv_regs(120, (1e-4, 1e-1, 3)), contiguous_folds(120, 5), w, False, score)
    emb = tasks.cross_validation_fits(Executor(), LogisticRegression(cfg), *args)
    dist = tasks.cross_validation_fits(cluster, LogisticRegression(cfg), *args)
    for a, b in zip(emb, dist):
        assert a.shape == (3, 5) and a.tobytes() == b.tobytes()
    assert np.all(emb[2] > 0)  # the scores were computed


def test_an_existing_scheduler_is_used_and_left_running(cluster):
    address = cluster.client.scheduler.address
    with Executor(scheduler_address=address, progress=False) as remote:
        assert remote.mode == "remote"
        assert remote.map(execution.timed_noop, None, [5, 6]) == [5, 6]
    assert cluster.map(execution.timed_noop, None, [7]) == [7]  # still up


# ----------------------------------------------------------------------------- faults
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_one_line_user_error(monkeypatch, capsys, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(SchedulerUnreachableError, match=f"cannot reach the Dask scheduler at {address}"):
        Executor(scheduler_address=address, timeout=1).client  # noqa: B018
    assert time.perf_counter() - t0 < 30
    # Through a script: exit 2, one line naming the address (timeout from the environment).
    monkeypatch.setenv(execution.ENV_TIMEOUT, "1")
    monkeypatch.setenv(execution.ENV_SCHEDULER, address)
    module = load_script("counterexamples")
    assert module.main(["--dataset-id", "fixed", "--out-dir", str(tmp_path),
                        "--no-intermediate-results", "--no-progress"]) == cli.EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and address in err[0] and "DASK_SCHEDULER_ADDRESS" in err[0]


def test_a_scheduler_without_workers_is_named():
    from distributed import LocalCluster

    empty = LocalCluster(n_workers=0, host="127.0.0.1", scheduler_port=0, dashboard_address=None)
    try:
        with pytest.raises(SchedulerUnreachableError, match=f"{empty.scheduler_address} has no workers.*dask worker"):
            Executor(scheduler_address=empty.scheduler_address, timeout=0.5).client  # noqa: B018
    finally:
        empty.close()


def test_worker_flag_prints_the_dask_worker_command(capsys):
    module = load_script("subsets_infl_logreg")
    assert module.main(["--worker", "--scheduler-address", "tcp://127.0.0.1:8786"]) == 0
    out = capsys.readouterr().out
    assert "dask worker tcp://127.0.0.1:8786 --nworkers 1 --nthreads 1" in out and "PYTHONPATH=" in out


def _alive(pid, wait=10.0) -> bool:
    """Whether process ``pid`` still exists after up to ``wait`` s (its nanny reaps it)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("task, phase", [pytest.param("cv_fold_task", 0, marks=pytest.mark.slow),
                                         pytest.param("pool_part_task", 5, marks=pytest.mark.slow),
                                         ("refit_task", 6),
                                         pytest.param("newton_task", 9, marks=pytest.mark.slow)])
def test_a_worker_killed_during_a_phase_changes_nothing(ss_embedded, cluster, tmp_path, task, phase):
    """SIGKILL one of the two worker processes while tasks of the phase are unfinished (cross-
    validation, clustering, refits, Newton changes); Dask recomputes its tasks elsewhere or
    the executor submits them again, and the results equal the embedded run's."""
    client = cluster.client
    pids = client.run(os.getpid)  # the nanny restarts a killed worker: fresh pids per test
    killed = {}

    def killer():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed.get("stop"):
            mine = [f for k, f in list(client.futures.items()) if str(k).startswith(task)]
            done = sum(f.status == "finished" for f in mine)
            if mine and done < len(mine):  # the phase's tasks are running
                busy = sorted(w for w, keys in client.processing().items()
                              if any(str(k).startswith(task) for k in keys))
                worker = (busy or sorted(pids))[0]
                if worker in pids:
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.update(worker=worker, pid=pids[worker], finished_before=done, tasks=len(mine),
                                  busy=bool(busy))
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        R = run_ss(tmp_path, cluster)
    finally:
        killed.setdefault("stop", True)
        thread.join(5)
    assert "pid" in killed, f"no {task} was seen unfinished; the worker was not killed"
    assert not _alive(killed["pid"])
    print(f"phase {phase}: killed worker {killed['worker']} (pid {killed['pid']}, busy with it: {killed['busy']}) "
          f"after {killed['finished_before']} of {killed['tasks']} {task}s had finished")
    assert killed["finished_before"] < killed["tasks"]
    assert_identical(ss_embedded, R)


def test_a_rebuilt_context_keeps_the_memory_budget():
    # A worker rebuilds the group-influence API from the pickled context: the run's
    # --max-memory must reach it, so its refit and evaluation chunks stay bounded too.
    import pickle

    from influence.group_influence import GroupInfluence
    from influence.logistic_regression import LogisticRegression

    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(40, 3)), np.tile([0, 1], 20)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": 3, "fit_intercept": True, "num_classes": 2}
    model = LogisticRegression(cfg)
    model.fit((X, y), None, 1.0)
    infl = GroupInfluence(model, (X, y), 1.0, max_memory=123_456_789)
    rebuilt = pickle.loads(pickle.dumps(tasks.InfluenceContext.from_influence(infl))).influence()
    assert rebuilt is not infl and rebuilt.max_memory == 123_456_789


def test_downdate_refit_tasks_side_by_side_equal_them_one_after_the_other(monkeypatch):
    # Embedded, the refit tasks of the downdate route run in threads (RefitRoute.task_memory):
    # each group's refit must be the one the tasks compute one after the other, bit for bit
    # (the same calls on the same machine), and the threads must really overlap.
    import influence.downdate as dd
    from influence.group_influence import GroupInfluence
    from influence.logistic_regression import LogisticRegression
    from influence.newton import RefitResult

    monkeypatch.setattr(dd, "DOWNDATE_MIN_PARAMS", 1)  # this small model takes the downdate route
    monkeypatch.setattr(execution, "num_cpus", lambda: 2)
    rng = np.random.RandomState(0)
    n, D = 90, 14
    X = (rng.poisson(1.0, (n, D)) * (rng.rand(n, D) < 0.25)).astype(float)
    y = (X @ rng.normal(0, 1, D) + rng.normal(0, 1, n) > 0.5).astype(float)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": 2}
    model = LogisticRegression(cfg)
    model.fit((X, y), None, 0.3)
    infl = GroupInfluence(model, (X, y), 0.3, max_memory=10 ** 8)
    groups = [rng.choice(n, s, replace=False) for s in (1, 3, 8, 20, 40, 5, 12, 30, 2, 25, 9, 16)]
    ctx = tasks.InfluenceContext.from_influence(infl, groups=groups)
    spans = [(a, b, 2) for a, b in tasks.chunks(len(groups), 2 * tasks.REFIT_CHUNKS_PER_TASK)]
    assert len(spans) == 2
    serial = RefitResult.concat([tasks.refit_task(ctx, span) for span in spans])

    running, overlapped, lock = set(), [], threading.Lock()
    refit_task = tasks.refit_task

    def watched(c, span):
        with lock:
            running.add(span)
            overlapped.append(len(running) > 1)
        try:
            time.sleep(0.2)  # the first task waits long enough for the second to start
            return refit_task(c, span)
        finally:
            with lock:
                running.discard(span)
    monkeypatch.setattr(tasks, "refit_task", watched)
    threaded = tasks.map_refits(Executor(), ctx, len(groups), 2)
    assert any(overlapped), "the refit tasks ran one after the other"
    assert threaded.converged.all()
    for key in ("thetas", "grad_norms", "grad_tols", "iterations", "hessians", "hvps", "converged"):
        a, b = getattr(serial, key), getattr(threaded, key)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), key
