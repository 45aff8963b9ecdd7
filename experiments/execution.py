"""Where per-group and per-fit work runs: in this process or on a Dask cluster (see
docs/design.md, 'Parallel execution').

One :class:`Executor`, three modes:

* **embedded** (default): nothing is started; every task runs here, in submission order
  (the path the experiments always had);
* **local** (``--workers N``): a ``distributed.LocalCluster`` of N worker processes (one
  thread each) on 127.0.0.1, shut down when the run ends;
* **remote** (``--scheduler-address tcp://HOST:PORT`` or ``DASK_SCHEDULER_ADDRESS``): an
  existing cluster (``dask scheduler`` plus ``dask worker`` processes, README "Run on a
  cluster"). A scheduler that cannot be reached within the connection timeout
  (``INFLUENCE_DASK_TIMEOUT`` seconds, default 5) raises :class:`SchedulerUnreachableError`.

Work is a pure module-level task function ``fn(data, spec)`` mapped over task specs
(usually chunk bounds ``(start, end)``): ``data`` holds everything the tasks of a phase
share (training design, labels, theta_hat, Hessian, groups, ...) and is sent to every
worker once per phase (``client.scatter(..., broadcast=True)``); each task carries only
its spec. Results are collected in submission order, so they do not depend on the
number of workers, the completion order or (where the chunk function allows it) the
chunking. A lost worker's tasks are recomputed elsewhere by Dask; that is safe because
every task is pure.

TensorFlow models do not pickle, so shared data is a small picklable context
(:class:`InfluenceContext`, :class:`FitContext`): arrays plus the model config, from
which a worker rebuilds the model once (cached on the worker's copy of the context). In
embedded mode the context carries the experiment's live objects, so nothing is rebuilt
and results are those of the in-process code, bit for bit.

Embedded, tasks run one after the other, or, when the caller gives each task's memory
need (``map(..., memory=...)``: the clustering labellings of ss_logreg phase 5 and the refit
tasks of the downdate route, :func:`experiments.tasks.map_refits`), side by
side in threads of this process: as many as there are CPUs, and no more than fit together
in :data:`THREAD_MEMORY_SHARE` of the memory available (``psutil``), each on one
BLAS/OpenMP thread; the results are those of the serial loop, bit for bit. This executor
is the only pool of the ``experiments`` package.

A cluster must be able to import this project on the scheduler (which unpickles task
graphs) and on every worker: :meth:`Executor.start` runs an import check there first and
raises :class:`ClusterImportError` (exit 2, one line naming the missing module and the
fix: ``PYTHONPATH=<repo>`` where the process starts; ``pip install -e`` installs only
``influence``, not the experiments the tasks need). A
worker lost while tasks run (killed, out of memory, its machine gone) costs only time:
Dask recomputes its tasks on the other workers, and if a transfer or the scattered data
was lost with it, the unfinished tasks are submitted again (up to :data:`MAX_RESUBMITS`
times) with the shared data scattered afresh; every task is pure, so results do not change.

Workers are started with one BLAS/OpenMP thread (Dask's nanny sets ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` to 1); the per-group kernels already run
their BLAS calls on one thread (:func:`influence.numerics.one_blas_thread`), so results
match the embedded run bit for bit (tests/experiments/test_execution.py).
"""
from __future__ import annotations

import logging
import os
import pkgutil
import sys
import time
from typing import Any, Callable, Sequence

import psutil

from experiments.common import REPO_ROOT, ConfigError, chunks, collate_results
from influence.progress import progress_bar

# This module imports nothing of TensorFlow (experiments.cli imports it for its flags, and
# `--help` should not wait for TensorFlow): the task functions and the shared data of
# the influence phases, which rebuild the model on a worker, are in experiments.tasks.
# distributed is imported when a cluster is first used.

logger = logging.getLogger(__name__)

ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"
ENV_TIMEOUT = "INFLUENCE_DASK_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 5.0
WORKER_PLACEHOLDER = "tcp://SCHEDULER_HOST:8786"
# The module whose task functions a cluster must import (it imports the rest of the project).
IMPORT_CHECK_MODULE = "experiments.tasks"
# How many times the unfinished tasks of one map are submitted again after a lost worker.
MAX_RESUBMITS = 3
# Share of the available memory that embedded tasks run side by side in threads may use.
THREAD_MEMORY_SHARE = 0.85


class SchedulerUnreachableError(ConfigError):
    """The Dask scheduler given by ``--scheduler-address`` / ``DASK_SCHEDULER_ADDRESS`` does
    not answer (a user error: exit code 2 with one line naming the address)."""


class ClusterImportError(ConfigError):
    """The Dask scheduler or a worker cannot import this project (a user error: exit code 2
    with one line naming the process, the missing module and the fix)."""


def available_memory() -> int:
    """Bytes of memory available for new allocations without swapping (``psutil``)."""
    return int(psutil.virtual_memory().available)


def num_cpus() -> int:
    """CPUs this process may run on (its affinity where the system reports one)."""
    try:
        return max(1, len(psutil.Process().cpu_affinity()))
    except (AttributeError, psutil.Error):  # no affinity on this system
        return psutil.cpu_count() or 1


# ----------------------------------------------------------------------------- settings
def settings(num_workers: int | None = None, scheduler: str | None = None) -> dict[str, Any]:
    """The config entries of the execution mode (operational keys: they change neither run
    ids nor results, see :data:`experiments.common.OPERATIONAL_KEYS`); empty when embedded,
    so embedded configs are as before."""
    if num_workers is not None and (int(num_workers) != num_workers or num_workers < 1):
        raise ConfigError(f"--workers must be a positive integer (worker processes); got {num_workers!r}")
    if num_workers is not None and scheduler:
        raise ConfigError(f"give --workers ({num_workers}) or --scheduler-address ({scheduler}), not both: "
                          "--workers starts a local cluster, --scheduler-address uses an existing one")
    if scheduler is not None:
        check_address(scheduler)
    out: dict[str, Any] = {}
    if num_workers is not None:
        out["num_workers"] = int(num_workers)
    if scheduler:
        out["scheduler"] = str(scheduler)
    return out


def settings_from_args(args) -> dict[str, Any]:
    """:func:`settings` from the run flags ``--workers`` / ``--scheduler-address`` (or the
    environment variable ``DASK_SCHEDULER_ADDRESS`` when neither flag is given)."""
    workers = getattr(args, "workers", None)
    scheduler = getattr(args, "scheduler_address", None)
    if scheduler is None and workers is None:
        scheduler = os.environ.get(ENV_SCHEDULER) or None
    return settings(workers, scheduler)


def check_address(address: str) -> str:
    """``tcp://HOST:PORT`` (also ``tls://``, ``ucx://``, ``inproc://``); :class:`ConfigError` otherwise."""
    a = str(address)
    scheme, sep, rest = a.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or scheme not in ("tcp", "tls", "ucx", "inproc") or not host or not colon or not port.isdigit():
        raise ConfigError(f"--scheduler-address must look like tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786); "
                          f"got {address!r}")
    return a


def connect_timeout() -> float:
    """Seconds to wait for a scheduler (``INFLUENCE_DASK_TIMEOUT``, default 5)."""
    raw = os.environ.get(ENV_TIMEOUT)
    if raw is None:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_TIMEOUT} must be a number of seconds; got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{ENV_TIMEOUT} must be > 0 seconds; got {raw!r}")
    return value


def scheduler_command(repo: str | None = None) -> str:
    """The command that starts a scheduler for this project's runs (it unpickles the task
    graphs, so it imports the project like the workers)."""
    return f"PYTHONPATH={repo or REPO_ROOT} dask scheduler"


def worker_command(scheduler: str | None = None, repo: str | None = None) -> str:
    """The command that starts a worker for this project's runs (what the original's
    ``--worker`` queue worker became): one process, one thread, the repository importable."""

    address = scheduler or os.environ.get(ENV_SCHEDULER) or WORKER_PLACEHOLDER
    repo = repo or str(REPO_ROOT)
    return f"PYTHONPATH={repo} dask worker {address} --nworkers 1 --nthreads 1"


def worker_notice(scheduler: str | None = None) -> str:
    """What ``--worker`` prints: the ``dask worker`` command replacing the original's queue worker."""
    cmd = worker_command(scheduler)
    return ("--worker: the original's file-based task queue was replaced by Dask. Start workers with\n"
            f"    {cmd}\n"
            f"(on every worker machine, with this repository and its environment; start the scheduler with "
            f"`{scheduler_command()}`), then run the script with --scheduler-address "
            f"{scheduler or os.environ.get(ENV_SCHEDULER) or WORKER_PLACEHOLDER}. README: \"Run on a cluster\".")


# ----------------------------------------------------------------------------- the executor
class Executor:
    """Runs pure task functions embedded, on a local cluster or on an existing one.

    ``num_workers``: start a ``LocalCluster`` of that many processes; ``scheduler_address``:
    connect to a running scheduler; neither: embedded. ``progress``: tqdm bars (None lets
    tqdm decide). ``client``: an existing ``distributed.Client`` to use (tests; not closed
    here). Start-up is lazy: nothing is started until the first task is mapped.
    """

    def __init__(self, num_workers: int | None = None, scheduler_address: str | None = None,
                 progress: bool | None = None, client=None, timeout: float | None = None,
                 threads_per_worker: int = 1):
        settings(num_workers, scheduler_address)  # the checks
        self.num_workers = num_workers
        self.scheduler_address = scheduler_address
        self.progress = progress
        self.timeout = timeout
        self.threads_per_worker = int(threads_per_worker)
        self._client = client
        self._cluster = None
        self._own_client = client is None

    @classmethod
    def from_config(cls, config: dict[str, Any], progress: bool | None = None) -> "Executor":
        return cls(config.get("num_workers"), config.get("scheduler"), progress=progress)

    @property
    def mode(self) -> str:
        if self._client is not None and not self._own_client:
            return "remote"
        if self.scheduler_address:
            return "remote"
        return "local" if self.num_workers else "embedded"

    @property
    def distributed(self) -> bool:
        return self.mode != "embedded"

    # ------------------------------------------------------------------ lifecycle
    @property
    def client(self):
        """The ``distributed.Client`` (started on first use); None when embedded."""
        if not self.distributed:
            return None
        if self._client is None:
            self._start()
        return self._client

    def start(self) -> None:
        """Start the local cluster or connect to the scheduler now (no-op when embedded or
        already started), so that an unreachable scheduler or a cluster that cannot import
        this project stops a run before its first phase."""
        if self.distributed:
            self.client  # noqa: B018 - starts it

    def _start(self) -> None:
        from distributed import Client, LocalCluster

        if self.scheduler_address:
            timeout = self.timeout if self.timeout is not None else connect_timeout()
            try:
                self._client = Client(self.scheduler_address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise SchedulerUnreachableError(
                    f"cannot reach the Dask scheduler at {self.scheduler_address} within {timeout:g} s "
                    f"(--scheduler-address / {ENV_SCHEDULER}): {type(exc).__name__}; start it with "
                    f"`dask scheduler` or fix the address") from exc
            try:
                self._client.wait_for_workers(1, timeout=6 * timeout)  # 30 s by default
            except (OSError, TimeoutError) as exc:
                self.close()
                raise SchedulerUnreachableError(
                    f"the Dask scheduler at {self.scheduler_address} has no workers (waited "
                    f"{6 * timeout:g} s); start some with `{worker_command(self.scheduler_address)}`") from exc
        else:
            self._cluster = LocalCluster(n_workers=int(self.num_workers), threads_per_worker=self.threads_per_worker,
                                         processes=True, host="127.0.0.1", scheduler_port=0,
                                         dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING)
            self._client = Client(self._cluster, set_as_default=False)
        try:
            self._check_imports()
        except BaseException:
            self.close()
            raise
        info = self._client.scheduler_info()
        print(f"Dask {self.mode} cluster: scheduler {self._client.scheduler.address}, "
              f"{len(info.get('workers', {}))} workers; dashboard {self._client.dashboard_link}",
              file=sys.stderr, flush=True)

    def _check_imports(self) -> None:
        """:class:`ClusterImportError` unless the scheduler and every worker can import
        :data:`IMPORT_CHECK_MODULE` (the check function is the standard library's, so
        any process can unpickle it)."""
        client, name = self._client, f"{IMPORT_CHECK_MODULE}:__name__"
        try:
            client.run_on_scheduler(pkgutil.resolve_name, name)
        except ImportError as exc:
            raise ClusterImportError(
                f"the Dask scheduler at {client.scheduler.address} cannot import this project "
                f"({type(exc).__name__}: {exc}); restart it as `{scheduler_command()}`") from exc
        outcome = client.run(pkgutil.resolve_name, name, on_error="return")
        failed = {w: e for w, e in outcome.items() if isinstance(e, BaseException)}
        if failed:
            worker, exc = sorted(failed.items())[0]
            raise ClusterImportError(
                f"{len(failed)} of {len(outcome)} Dask workers (e.g. {worker}) cannot import this project "
                f"({type(exc).__name__}: {exc}); restart them as "
                f"`{worker_command(client.scheduler.address)}`") from exc

    def close(self) -> None:
        """Close the client and stop the local cluster (if this executor started them)."""
        if self._own_client and self._client is not None:
            self._client.close()
        if self._cluster is not None:
            # Workers holding TensorFlow thread pools can take more than the nanny's 4 s
            # to exit; it then kills them, which is fine at shutdown: no warning.
            nanny_log = logging.getLogger("distributed.nanny")
            level = nanny_log.level
            nanny_log.setLevel(logging.ERROR)
            try:
                self._cluster.close()
            finally:
                nanny_log.setLevel(level)
        self._client = self._cluster = None

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ work
    def scatter(self, data):
        """``data`` on every worker (one transfer per worker; a future), or ``data`` itself
        when embedded. Pass the result to :meth:`map` as many times as needed."""
        if not self.distributed or data is None or _is_future(data):
            return data
        return self.client.scatter(data, broadcast=True, hash=False)

    def map(self, fn: Callable[[Any, Any], Any], data, specs: Sequence[Any], desc: str = "tasks",
            large_specs: bool = False, memory: Sequence[int] | None = None,
            on_result: Callable[[int, Any], None] | None = None, memory_budget: int | None = None) -> list:
        """``[fn(data, spec) for spec in specs]``, in that order, wherever the tasks run.

        ``fn`` must be a pure module-level function (it is pickled by name). ``data`` is
        scattered once (unless already a future from :meth:`scatter`); each task carries
        only its spec (``large_specs``: specs holding big arrays are scattered, each to
        one worker, instead of travelling in the task graph). ``memory``: the bytes each
        task allocates; embedded, the tasks then run side by side in threads
        (:meth:`_map_threads`; ``memory_budget``: bytes that the tasks running side by side may
        use together at most, besides the share of the available memory), else one after the
        other. ``on_result(i, result)`` is
        called in this thread as task ``i`` finishes (e.g. to save it). A progress bar
        follows the tasks as they complete.
        """
        specs = list(specs)
        if memory is not None and len(memory) != len(specs):
            raise ValueError(f"memory: one entry per task needed; got {len(memory)} for {len(specs)} tasks")
        results: dict[int, Any] = {}

        def done(i, result):
            results[i] = result
            if on_result is not None:
                on_result(i, result)

        bar = progress_bar(None, desc, len(specs), self.progress)
        try:
            if self.distributed:
                self._map_distributed(fn, data, specs, large_specs, done, bar, desc)
            elif memory is not None and len(specs) > 1 and num_cpus() > 1:
                self._map_threads(fn, data, specs, memory, done, bar, memory_budget)
            else:
                for i, spec in enumerate(specs):
                    done(i, fn(data, spec))
                    bar.update(1)
        finally:
            bar.close()
        return [results[i] for i in range(len(specs))]

    def _map_threads(self, fn, data, specs, memory, done, bar, memory_budget=None) -> None:
        """The tasks in threads of this process, in submission order, as many side by side as
        there are CPUs and as fit in :data:`THREAD_MEMORY_SHARE` of :func:`available_memory`
        and in ``memory_budget`` (if given; a task alone always runs). The BLAS limit is process-wide, so one BLAS/OpenMP
        thread is held for the whole pool (a task that sets its own limit then restores 1,
        never the default); the results are those of the serial loop, bit for bit."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from threadpoolctl import threadpool_limits

        budget = int(THREAD_MEMORY_SHARE * available_memory())
        if memory_budget is not None:
            budget = min(budget, int(memory_budget))
        threads = min(num_cpus(), len(specs))
        queue, running = list(range(len(specs))), {}
        with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=threads) as pool:
            while queue or running:
                used = sum(int(memory[i]) for i in running.values())
                while queue and len(running) < threads:
                    pick = next((i for i in queue if not running or used + int(memory[i]) <= budget), None)
                    if pick is None:
                        break
                    queue.remove(pick)
                    used += int(memory[pick])
                    running[pool.submit(fn, data, specs[pick])] = pick
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in finished:
                    done(running.pop(f), f.result())
                    bar.update(1)

    def _map_distributed(self, fn, data, specs, large_specs, done, bar, desc) -> None:
        """The tasks on the cluster; after a lost worker, the unfinished ones are submitted
        again (at most :data:`MAX_RESUBMITS` times), the shared data scattered afresh."""
        from distributed import as_completed

        client = self.client
        finished: set[int] = set()
        for attempt in range(MAX_RESUBMITS + 1):
            workers = set(client.scheduler_info().get("workers", {}))
            futures = {}
            try:
                shared = self.scatter(data)
                todo = [i for i in range(len(specs)) if i not in finished]
                sent = client.scatter([specs[i] for i in todo], hash=False) if large_specs else \
                    [specs[i] for i in todo]
                futures = {client.submit(fn, shared, spec, pure=False): i for i, spec in zip(todo, sent)}
                for future in as_completed(list(futures), loop=client.loop):
                    i = futures[future]
                    done(i, future.result())
                    finished.add(i)
                    bar.update(1)
                return
            except Exception as exc:  # noqa: BLE001 - sorted below: a lost worker, the cluster's imports, or the task's own error
                _raise_import_error(exc)
                lost = workers - set(client.scheduler_info().get("workers", {}))
                if not (lost or _is_comm_failure(exc)) or attempt == MAX_RESUBMITS or _is_future(data):
                    raise
                logger.warning("a Dask worker was lost during %s (%s: %s); submitting the %d unfinished tasks "
                               "again", desc, type(exc).__name__,
                               _first_line(exc), len(specs) - len(finished))
            finally:
                for f in futures:
                    f.release()

    def map_chunks(self, fn: Callable[[Any, tuple[int, int]], dict[str, Any]], data, n: int, size: int,
                   desc: str = "chunks") -> dict[str, Any]:
        """:meth:`map` over the chunk bounds ``(start, end)`` of ``range(n)`` in blocks of
        ``size``, collated as the original task queue (:func:`experiments.common.collate_results`)."""
        return collate_results(self.map(fn, data, chunks(n, size), desc))


def _is_future(x) -> bool:
    return type(x).__name__ == "Future" and type(x).__module__.startswith("distributed")


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _raise_import_error(exc: BaseException) -> None:
    """:class:`ClusterImportError` if ``exc`` (or its cause) is a process of the cluster
    failing to import this project: a worker that joined after :meth:`Executor.start`
    checked the others, or a scheduler failing to unpickle a task graph."""
    for e in _causes(exc):
        if isinstance(e, ImportError):
            where = "the Dask scheduler" if "deserialization of the task graph" in str(exc) else "a Dask worker"
            fix = scheduler_command() if where == "the Dask scheduler" else worker_command()
            raise ClusterImportError(f"{where} cannot import this project ({type(e).__name__}: {e}); restart it "
                                     f"as `{fix}`") from exc


def _is_comm_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is Dask losing a worker or a transfer rather than the task's own error."""
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    return any(isinstance(e, (CommClosedError, FutureCancelledError, KilledWorker)) for e in _causes(exc))


# ----------------------------------------------------------------------------- overhead
def timed_noop(data, spec) -> float:
    """A task that does nothing (for measuring the per-task overhead); returns its spec."""
    return spec


def measure_overhead(executor: Executor, num_tasks: int = 200) -> float:
    """Wall seconds per no-op task on ``executor`` (after a warm-up), for the README's table."""
    executor.map(timed_noop, None, range(4), "warm-up")
    t0 = time.perf_counter()
    executor.map(timed_noop, None, range(num_tasks), "no-op tasks")
    return (time.perf_counter() - t0) / num_tasks


# ----------------------------------------------------------------------------- experiments
class ExecutorMixin:
    """The run's :class:`Executor` for an :class:`experiments.common.Experiment` (put it first
    in the bases): built from the config's ``num_workers`` / ``scheduler`` (embedded when
    neither is set) on first use, or the one assigned to :attr:`executor` (not closed by the
    experiment). :meth:`run` connects before any phase (an unreachable scheduler stops the
    run before any work) and shuts down a cluster the run started itself."""

    # Class defaults, so that instances made without __init__ (load_run) work.
    progress: bool | None = None
    _executor: Executor | None = None
    _own_executor = False

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor.from_config(self.config, progress=self.progress)
            self._own_executor = True
        return self._executor

    @executor.setter
    def executor(self, value: Executor) -> None:
        self._executor, self._own_executor = value, False

    def before_phases(self) -> None:
        """Connect to (or start) the cluster after the inputs and the run folder were checked
        and before any phase (an unreachable scheduler stops the run before any work)."""
        super().before_phases()
        self.executor.start()

    def run(self, *args, **kwargs):
        try:
            return super().run(*args, **kwargs)
        finally:
            if self._own_executor and self._executor is not None:
                self._executor.close()
                self._executor, self._own_executor = None, False
