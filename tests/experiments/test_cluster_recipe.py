"""The documented cluster recipe, with real processes: ``dask scheduler`` and ``dask worker``
started from the command line on 127.0.0.1, the project importable through ``PYTHONPATH``.

A run against them equals the embedded run bit for bit; a scheduler or a worker that cannot
import the project stops the script with exit code 2 and one line naming the missing module
and the fix. Every process started here is stopped (its own process group) in a finally.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from experiments.execution import ClusterImportError, Executor
from tests.experiments.test_execution import assert_identical, run_ss
from tests.scripts.test_faults import assert_one_line_error

REPO_ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")

pytestmark = pytest.mark.skipif(not DASK.exists(), reason=f"no dask command line at {DASK}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(project: bool) -> dict:
    """This environment with the repository on PYTHONPATH (``project``) or with no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if project:
        env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group this test started (a worker's nanny and
    its worker process)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"no scheduler on port {port} after {timeout} s")


@contextmanager
def dask_cli_cluster(tmp_path, scheduler_has_project: bool = True, worker_has_project: bool = True):
    """``dask scheduler`` and one ``dask worker`` (one process, one thread), as the README's
    recipe starts them; yields the scheduler address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            cwd=tmp_path, env=env_with(scheduler_has_project), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "scheduler.log", "wb")))
        wait_for_port(port, procs[0])
        procs.append(subprocess.Popen(
            [str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
             "--dashboard-address", ":0"],
            cwd=tmp_path, env=env_with(worker_has_project), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "wb")))
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)


def run_script_on(address, tmp_path):
    """counterexamples on the cluster at ``address`` (a short run; exits before any phase
    if the cluster cannot import the project)."""
    env = dict(env_with(False), INFLUENCE_DASK_TIMEOUT="10")
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "counterexamples.py"), "--dataset-id", "fixed",
                           "--out-dir", str(tmp_path / "out"), "--no-intermediate-results", "--no-progress",
                           "--scheduler-address", address], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_scheduler_that_cannot_import_the_project_is_one_line_exit_2(tmp_path):
    with dask_cli_cluster(tmp_path, scheduler_has_project=False) as address:
        proc = run_script_on(address, tmp_path)
    line = assert_one_line_error(proc, 2, f"the Dask scheduler at {address} cannot import this project",
                                 "No module named 'experiments'", f"PYTHONPATH={REPO_ROOT} dask scheduler")
    assert "pip install -e" not in line  # it installs only influence/, not the experiments
    assert not (tmp_path / "out" / "counterexamples").exists() or not any((tmp_path / "out").rglob("*.npz"))


@pytest.mark.slow
def test_workers_that_cannot_import_the_project_are_one_line_exit_2(tmp_path):
    with dask_cli_cluster(tmp_path, worker_has_project=False) as address:
        with pytest.raises(ClusterImportError, match="1 of 1 Dask workers .* cannot import this project "
                                                     r"\(ModuleNotFoundError: No module named 'experiments'\)"):
            Executor(scheduler_address=address, timeout=10, progress=False).start()
        proc = run_script_on(address, tmp_path)
    assert_one_line_error(proc, 2, "Dask workers", "No module named 'experiments'", f"PYTHONPATH={REPO_ROOT} dask worker")


@pytest.mark.slow
def test_the_cluster_recipe_gives_the_embedded_results(tmp_path):
    """ss_logreg (breast_cancer, master-only) on a scheduler and a worker started with the
    ``dask`` command line equals the embedded run bit for bit."""
    embedded = run_ss(tmp_path / "embedded")
    with dask_cli_cluster(tmp_path) as address:
        with Executor(scheduler_address=address, timeout=10, progress=False) as executor:
            assert executor.mode == "remote"
            R = run_ss(tmp_path / "remote", executor)
    assert_identical(embedded, R)
