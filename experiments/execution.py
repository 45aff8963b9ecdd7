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

Workers are started with one BLAS/OpenMP thread (Dask's nanny sets ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` to 1); the per-group kernels already run
their BLAS calls on one thread (:func:`influence.numerics.one_blas_thread`), so results
match the embedded run bit for bit (tests/experiments/test_execution.py).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Sequence

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


class SchedulerUnreachableError(ConfigError):
    """The Dask scheduler given by ``--scheduler-address`` / ``DASK_SCHEDULER_ADDRESS`` does
    not answer (a user error: exit code 2 with one line naming the address)."""


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
            "(on every worker machine, with this repository and its environment; start the scheduler with "
            "`dask scheduler`), then run the script with --scheduler-address "
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
        info = self._client.scheduler_info()
        print(f"Dask {self.mode} cluster: scheduler {self._client.scheduler.address}, "
              f"{len(info.get('workers', {}))} workers; dashboard {self._client.dashboard_link}",
              file=sys.stderr, flush=True)

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
            large_specs: bool = False) -> list:
        """``[fn(data, spec) for spec in specs]``, in that order, wherever the tasks run.

        ``fn`` must be a pure module-level function (it is pickled by name). ``data`` is
        scattered once (unless already a future from :meth:`scatter`); each task carries
        only its spec (``large_specs``: specs holding big arrays are scattered, each to
        one worker, instead of travelling in the task graph). A progress bar follows the
        tasks as they complete.
        """
        specs = list(specs)
        if not self.distributed:
            return [fn(data, spec) for spec in progress_bar(specs, desc, len(specs), self.progress)]
        from distributed import as_completed

        client = self.client
        shared = self.scatter(data)
        if large_specs:
            specs = client.scatter(specs, hash=False)
        futures = [client.submit(fn, shared, spec, pure=False) for spec in specs]
        try:
            for _ in progress_bar(as_completed(futures, loop=client.loop), desc, len(futures), self.progress):
                pass
            return client.gather(futures)
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

    def run(self, *args, **kwargs):
        try:
            if self.executor.distributed:
                self.executor.client  # noqa: B018 - connect now (SchedulerUnreachableError)
            return super().run(*args, **kwargs)
        finally:
            if self._own_executor and self._executor is not None:
                self._executor.close()
                self._executor, self._own_executor = None, False
