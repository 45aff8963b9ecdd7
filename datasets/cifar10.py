"""``cifar10`` and ``cifar10_small`` (see docs/design.md, 'Datasets and preprocessing'; not used in the paper runs).

Raw file: ``cifar10/cifar-10-python.tar.gz`` (MD5 c58f30108f718f92721af3b95e74349a),
extracted to ``cifar10/cifar-10-batches-py/`` (``data_batch_1`` ... ``data_batch_5``,
``test_batch``, ``batches.meta``). Each batch is a Python pickle of a dict with
``b'data'`` (uint8 (10000, 3072), channel-major CHW rows) and ``b'labels'``; it is read
with :mod:`datasets.safe_pickle` (no arbitrary code can run).

* ``cifar10``: pixels / 255 as float64 then float32 (the :class:`DataSet` cast),
  reshaped to NHWC and flattened in H, W, C order (3,072 columns); validation = first
  1,000 training images, train = the other 49,000, test = 10,000; labels int64.
* ``cifar10_small``: train = 4,900 of the 49,000, ``RandomState(0).shuffle(arange(49000))``
  order (first ten 44693, 24175, 19038, ...), validation and test unchanged; no cache.

Cache ``cifar10/cifar10.npz``: keys ``train_images`` (uint8 (50000, 32, 32, 3), all five
batches), ``train_labels``, ``test_images``, ``test_labels``. Deviation: the original
cached float64 images (about 1.5 GB) already split by ``validation_size``; the uint8
pixels (180 MB) give bit-identical float32 values through a 256-entry lookup table and
let any ``validation_size`` share one cache.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from datasets.common import DataSet, Datasets, check_expected, get_dataset_dir, read_cache
from datasets.download import extract_archive, maybe_download
from datasets.mnist import small_indices
from datasets.safe_pickle import UnsafePickleError, load_pickle
from datasets.storage import save_arrays

logger = logging.getLogger(__name__)

SUBDIR = "cifar10"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # [external] 170,498,071 bytes
SOURCE = "CIFAR-10 python version, Krizhevsky 2009"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CACHE_NAME = "cifar10.npz"
CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
DEFAULT_VALIDATION_SIZE = 1000
EXPECTED_TRAIN_ROWS = 50_000
EXPECTED_TEST_ROWS = 10_000

# float32(float64(v) / 255) for every uint8 v: the original divided in float64 and the
# DataSet cast to float32; a lookup reproduces that double rounding exactly.
_PIXEL_TABLE = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


class CifarFormatError(ValueError):
    """A CIFAR-10 batch file does not have the documented structure."""


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: uint8 (n, 32, 32, 3) NHWC and int64 (n,) from one batch file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = load_pickle(f, encoding="bytes")
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise CifarFormatError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}); delete "
                               f"it and the archive {ARCHIVE_NAME} so that they are fetched again") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise CifarFormatError(f"{path}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise CifarFormatError(f"{path}: b'data' must be uint8 (n, 3072) with n labels; got "
                               f"{data.dtype} {data.shape} and {labels.shape[0]} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def ensure_batches(dataset_dir: Path, progress: bool = True) -> Path:
    batches = dataset_dir / BATCHES_DIR
    needed = TRAIN_BATCHES + (TEST_BATCH,)
    if all((batches / n).is_file() for n in needed):
        return batches
    archive = maybe_download(ARCHIVE_URLS, ARCHIVE_NAME, dataset_dir, md5=ARCHIVE_MD5, progress=progress,
                             source=SOURCE)
    extract_archive(archive, dataset_dir)
    missing = [n for n in needed if not (batches / n).is_file()]
    if missing:
        raise CifarFormatError(f"{archive} did not contain {BATCHES_DIR}/{missing}")
    return batches


def pixels_to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 values equal to ``float32(float64(v) / 255)``."""
    return _PIXEL_TABLE[images]


def load_cifar10(data_dir=None, validation_size: int = DEFAULT_VALIDATION_SIZE, force_refresh: bool = False,
                 progress: bool = True) -> Datasets:
    """Load ``cifar10``: float32 train (49000, 3072), validation (1000, 3072), test (10000, 3072)."""
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    cache_path = dataset_dir / CACHE_NAME
    arrays = None if force_refresh else read_cache(cache_path, CACHE_KEYS)
    if arrays is None:
        batches = ensure_batches(dataset_dir, progress=progress)
        parts = [read_batch(batches / name) for name in TRAIN_BATCHES]
        test_images, test_labels = read_batch(batches / TEST_BATCH)
        arrays = {
            "train_images": np.concatenate([p[0] for p in parts]),
            "train_labels": np.concatenate([p[1] for p in parts]),
            "test_images": test_images, "test_labels": test_labels,
        }
        check_expected("number of CIFAR-10 training images", len(arrays["train_labels"]), EXPECTED_TRAIN_ROWS,
                       strict=False)
        check_expected("number of CIFAR-10 test images", len(test_labels), EXPECTED_TEST_ROWS, strict=False)

        save_arrays(cache_path, **arrays)
        logger.info("cached %s", cache_path)
    n = len(arrays["train_labels"])
    if not 0 <= validation_size <= n:
        raise ValueError(f"validation_size must be between 0 and {n}; got {validation_size}")
    train_images = arrays["train_images"]
    return Datasets(
        train=DataSet(pixels_to_float(train_images[validation_size:]), arrays["train_labels"][validation_size:]),
        validation=DataSet(pixels_to_float(train_images[:validation_size]), arrays["train_labels"][:validation_size]),
        test=DataSet(pixels_to_float(arrays["test_images"]), arrays["test_labels"]),
    )


def load_small_cifar10(data_dir=None, validation_size: int = DEFAULT_VALIDATION_SIZE, random_seed: int = 0,
                       progress: bool = True) -> Datasets:
    """Load ``cifar10_small``: train (4900, 3072), validation and test as ``cifar10``."""
    full = load_cifar10(data_dir, validation_size=validation_size, progress=progress)
    keep = small_indices(full.train.num_examples, random_seed)
    return Datasets(full.train.subset(keep), full.validation, full.test)
