"""Fixtures shared by the experiment tests."""
import pytest

from experiments.execution import Executor


@pytest.fixture(scope="session")
def cluster():
    """A 2-worker Dask LocalCluster on 127.0.0.1, shut down at the end of the session: one
    start-up for every module that runs on it."""
    ex = Executor(num_workers=2, progress=False)
    try:
        ex.client  # noqa: B018 - start the cluster
        yield ex
    finally:
        ex.close()
