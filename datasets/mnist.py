"""``mnist`` and ``mnist_small`` (see docs/design.md, 'Datasets and preprocessing').

Raw files: the four gzipped IDX files of MNIST under ``mnist/``, verified by their
published MD5s and fetched from yann.lecun.com or its usual mirrors.

* ``mnist``: validation = the first ``validation_size`` (5,000) training images, train =
  the remaining 55,000 (file order kept), test = 10,000. Images are float32 in [0, 1]
  (pixel / 255) flattened to 784 columns (row-major 28 x 28); labels uint8 digits 0-9.
  No cache file: the gz files are parsed on every call (about a second).
* ``mnist_small``: train = 5,500 of those 55,000 images, picked by
  ``RandomState(0).shuffle(arange(55000))`` and kept in that permuted order (first ten
  2921, 53711, 27402, ...); validation and test unchanged. Cached as
  ``mnist/mnist_small_val-{validation_size}_seed-{random_seed}.npz`` (keys
  ``train_images``, ``train_labels``, ``validation_images``, ``validation_labels``,
  ``test_images``, ``test_labels``; images flattened float32).

``fashion_mnist`` (an offline dataset added by this project; not in the original): Zalando's
Fashion-MNIST, same IDX format, sizes, split and preprocessing as ``mnist`` (train
55,000 / validation 5,000 / test 10,000, float32 pixel / 255, 10 classes). Read from the
four files (MNIST's names) in ``<data_dir>/fashion_mnist/`` when all four are there,
otherwise from Debian's ``dataset-fashion-mnist`` package
(:data:`FASHION_MNIST_DEBIAN_DIR`); never downloaded. Files in the data dir may be
smaller (sizes only warned about, as for ``mnist``); Debian's must have the full sizes.
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from datasets.common import DataSet, Datasets, check_expected, get_dataset_dir, read_cache
from datasets.download import download_all
from datasets.storage import save_arrays

logger = logging.getLogger(__name__)

SUBDIR = "mnist"
BASE_URLS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
# The MD5s published with the files; file sizes 9,912,422 / 28,881 / 1,648,877 / 4,542 bytes.
FILES_MD5 = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}
SOURCE = "MNIST, LeCun, Cortes and Burges"
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
DEFAULT_VALIDATION_SIZE = 5000
SMALL_FRACTION_DENOMINATOR = 10
EXPECTED_TRAIN_FILE_ROWS = 60_000
EXPECTED_TEST_ROWS = 10_000
SMALL_CACHE_KEYS = ("train_images", "train_labels", "validation_images", "validation_labels",
                    "test_images", "test_labels")
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_SUBDIR = "fashion_mnist"


class IdxFormatError(ValueError):
    """A file is not a valid (gzipped) IDX image or label file."""


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: not a complete gzip file ({type(exc).__name__}: {exc}); "
                             "delete it so that it is downloaded again") from exc


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 array of shape (n, rows, cols, 1) from a gzipped IDX3 file (magic 2051)."""
    path = Path(path)
    data = _read_gz(path)
    if len(data) < 16:
        raise IdxFormatError(f"{path}: too short for an IDX image header ({len(data)} bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGE_MAGIC:
        raise IdxFormatError(f"{path}: invalid magic number {magic} in MNIST image file; expected {IMAGE_MAGIC}")
    size = n * rows * cols
    if len(data) - 16 != size:
        raise IdxFormatError(f"{path}: header promises {n} images of {rows}x{cols} ({size} bytes) "
                             f"but the file holds {len(data) - 16} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols, 1).copy()


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """uint8 array of shape (n,) from a gzipped IDX1 file (magic 2049)."""
    path = Path(path)
    data = _read_gz(path)
    if len(data) < 8:
        raise IdxFormatError(f"{path}: too short for an IDX label header ({len(data)} bytes)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != LABEL_MAGIC:
        raise IdxFormatError(f"{path}: invalid magic number {magic} in MNIST label file; expected {LABEL_MAGIC}")
    if len(data) - 8 != n:
        raise IdxFormatError(f"{path}: header promises {n} labels but the file holds {len(data) - 8}")
    return np.frombuffer(data, dtype=np.uint8, offset=8).copy()


def ensure_files(dataset_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Download (or verify) the four IDX files; returns ``{filename: path}``."""
    items = [([base + name for base in BASE_URLS], name, None, md5) for name, md5 in FILES_MD5.items()]
    paths = download_all(items, dataset_dir, SOURCE, progress=progress)
    return dict(zip(FILES_MD5, paths))


def load_mnist_from_dir(directory: str | os.PathLike, validation_size: int = DEFAULT_VALIDATION_SIZE,
                        expected_sizes: bool = False) -> Datasets:
    """Parse the four IDX files in ``directory`` into train / validation / test.

    Images become float32 pixel / 255, flattened to (n, rows * cols); labels stay uint8.
    """
    directory = Path(directory)
    train_images = read_idx_images(directory / TRAIN_IMAGES)
    train_labels = read_idx_labels(directory / TRAIN_LABELS)
    test_images = read_idx_images(directory / TEST_IMAGES)
    test_labels = read_idx_labels(directory / TEST_LABELS)
    for what, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if len(images) != len(labels):
            raise IdxFormatError(f"{directory}: {len(images)} {what} images but {len(labels)} labels")
    check_expected("number of MNIST training images", len(train_images), EXPECTED_TRAIN_FILE_ROWS,
                   strict=expected_sizes)
    check_expected("number of MNIST test images", len(test_images), EXPECTED_TEST_ROWS, strict=expected_sizes)
    if not 0 <= validation_size <= len(train_images):
        raise ValueError(f"validation_size must be between 0 and {len(train_images)} "
                         f"(the training file's size); got {validation_size}")

    def scale(images):
        return images.astype(np.float32) / np.float32(255.0)

    return Datasets(
        train=DataSet(scale(train_images[validation_size:]), train_labels[validation_size:]),
        validation=DataSet(scale(train_images[:validation_size]), train_labels[:validation_size]),
        test=DataSet(scale(test_images), test_labels),
    )


def load_mnist(data_dir=None, validation_size: int = DEFAULT_VALIDATION_SIZE, progress: bool = True) -> Datasets:
    """Load ``mnist``: float32 train (55000, 784), validation (5000, 784), test (10000, 784)."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    ensure_files(dataset_dir, progress=progress)
    return load_mnist_from_dir(dataset_dir, validation_size)


def small_indices(n_train: int, seed: int = 0) -> np.ndarray:
    """Training rows kept by ``mnist_small``: ``RandomState(seed).shuffle(arange(n_train))[:n_train // 10]``.

    For ``n_train = 55000``, ``seed = 0`` the first ten are 2921, 53711, 27402, 14832,
    49726, 10701, 24413, 18057, 52822, 24651.
    """
    perm = np.arange(n_train)
    np.random.RandomState(seed).shuffle(perm)
    return perm[:int(n_train / SMALL_FRACTION_DENOMINATOR)]


def load_small_mnist(data_dir=None, validation_size: int = DEFAULT_VALIDATION_SIZE, random_seed: int = 0,
                     progress: bool = True) -> Datasets:
    """Load ``mnist_small``: train (5500, 784), validation (5000, 784), test (10000, 784)."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    path = dataset_dir / f"mnist_small_val-{validation_size}_seed-{random_seed}.npz"
    arrays = read_cache(path, SMALL_CACHE_KEYS)
    if arrays is None:
        full = load_mnist(data_dir, validation_size=validation_size, progress=progress)
        arrays = small_arrays(full, random_seed)

        save_arrays(path, **arrays)
        logger.info("cached %s", path)
    return Datasets(
        train=DataSet(arrays["train_images"], arrays["train_labels"]),
        validation=DataSet(arrays["validation_images"], arrays["validation_labels"]),
        test=DataSet(arrays["test_images"], arrays["test_labels"]),
    )


def small_arrays(full: Datasets, random_seed: int = 0) -> dict[str, np.ndarray]:
    """The ``mnist_small`` (or ``cifar10_small``) arrays: a tenth of train, the rest unchanged."""
    keep = small_indices(full.train.num_examples, random_seed)
    return {
        "train_images": full.train.x[keep], "train_labels": full.train.labels[keep],
        "validation_images": full.validation.x, "validation_labels": full.validation.labels,
        "test_images": full.test.x, "test_labels": full.test.labels,
    }


def load_fashion_mnist(data_dir=None, validation_size: int = DEFAULT_VALIDATION_SIZE,
                       progress: bool = True) -> Datasets:
    """Load ``fashion_mnist``: float32 train (55000, 784), validation (5000, 784), test (10000, 784).

    From ``<data_dir>/fashion_mnist/`` if it holds the four IDX files, else from Debian's
    package; ``FileNotFoundError`` naming both places (and the package) when neither has
    them. ``progress`` is accepted for the loader interface (nothing is downloaded).
    """
    directory = get_dataset_dir(FASHION_SUBDIR, data_dir)
    if all((directory / n).is_file() for n in FILES_MD5):
        return load_mnist_from_dir(directory, validation_size)
    present = [n for n in FILES_MD5 if (directory / n).is_file()]
    if present:
        raise FileNotFoundError(f"fashion_mnist: {directory} holds only {present} of the four IDX files "
                                f"{list(FILES_MD5)}; add the others or remove these to use "
                                f"{FASHION_MNIST_DEBIAN_DIR}")
    try:
        return load_fashion_mnist_debian(validation_size, FASHION_MNIST_DEBIAN_DIR)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"fashion_mnist: no IDX files in {directory} and {exc}") from None


def load_fashion_mnist_debian(validation_size: int = DEFAULT_VALIDATION_SIZE,
                              directory: str | os.PathLike = FASHION_MNIST_DEBIAN_DIR) -> Datasets:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, split like ``mnist``.

    Not MNIST: same IDX format and sizes, for tests and benchmarks at MNIST scale.
    Raises ``FileNotFoundError`` naming the package when it is not installed.
    """
    directory = Path(directory)
    missing = [n for n in FILES_MD5 if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST files {missing} not found in {directory}; "
                                "install them with: apt-get install dataset-fashion-mnist")
    return load_mnist_from_dir(directory, validation_size, expected_sizes=True)
