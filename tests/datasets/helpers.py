"""Helpers of the dataset tests: a stand-in for the network, raw-format file writers.

Every test in this folder runs with ``datasets.download.fetch_url`` replaced by
:class:`FileServer`, which serves registered URLs from local files through the *real*
``fetch_url`` (``file://`` URLs go through ``urllib.request`` like any other) and refuses
every other URL with ``URLError``, as a machine without network would.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from datasets import download

REAL_FETCH = download.fetch_url
# The real archives (see ../shared/data/README.md): ../shared/data from the repo root,
# or $INFLUENCE_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("INFLUENCE_SHARED_DATA")
                   or Path(__file__).resolve().parents[2] / ".." / "shared" / "data")


class FileServer:
    """Stands in for the network: ``serve(url, path)`` makes ``url`` return ``path``'s bytes."""

    def __init__(self):
        self.routes: dict[str, Path] = {}
        self.calls: list[str] = []

    def serve(self, url: str, path: str | os.PathLike) -> None:
        self.routes[url] = Path(path)

    def __call__(self, url, out, progress=True, desc=None, **kwargs):
        self.calls.append(url)
        if url in self.routes:
            return REAL_FETCH(self.routes[url].resolve().as_uri(), out, progress=progress, desc=desc)
        if url.startswith("file:"):
            return REAL_FETCH(url, out, progress=progress, desc=desc)
        raise urllib.error.URLError("network disabled in tests")


def real_archive(relpath: str) -> Path:
    """Path of a real archive under the shared data folder; skips the test if absent."""
    path = SHARED_DATA / relpath
    if not path.is_file():
        pytest.skip(f"real archive not found: {path}")
    return path


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def md5_of(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    """A .tar.gz holding ``files`` (archive path -> bytes), in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return path


def write_idx_images(path: Path, images: np.ndarray, magic: int = 2051) -> Path:
    """A gzipped IDX3 file of uint8 images (n, rows, cols)."""
    n, rows, cols = images.shape
    header = np.array([magic, n, rows, cols], dtype=">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())
    return path


def write_idx_labels(path: Path, labels: np.ndarray, magic: int = 2049) -> Path:
    header = np.array([magic, len(labels)], dtype=">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + labels.astype(np.uint8).tobytes())
    return path


def no_temp_files(directory: Path) -> bool:
    return not [p for p in Path(directory).rglob("*") if p.name.endswith(".part") or p.name.endswith(".tmp")]
