"""Fixtures of the dataset tests: no network; local files served through the real downloader.

Every test in this folder runs with ``datasets.download.fetch_url`` replaced by a
:class:`tests.datasets.helpers.FileServer`, which serves registered URLs from local files
through the real ``fetch_url`` and refuses every other URL, as a machine without network
would.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from datasets import download
from tests.datasets.helpers import FileServer


@pytest.fixture(autouse=True)
def server(monkeypatch) -> FileServer:
    fs = FileServer()
    monkeypatch.setattr(download, "fetch_url", fs)
    return fs


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


