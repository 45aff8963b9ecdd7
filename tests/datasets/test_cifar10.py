"""cifar10 / cifar10_small on a generated python-pickle tar.gz."""
import os
import pickle

import numpy as np
import pytest

from datasets import cifar10, safe_pickle
from datasets.mnist import small_indices
from tests.datasets.helpers import md5_of, write_tar_gz

SPEC_SMALL_FIRST_TEN = [44693, 24175, 19038, 23910, 9722, 35616, 2788, 31805, 44059, 26497]


def batch_bytes(data: np.ndarray, labels: list[int], name: bytes) -> bytes:
    # The layout of the python version: dict with bytes keys, uint8 (n, 3072) CHW rows.
    return pickle.dumps({b"batch_label": name, b"labels": labels, b"data": data,
                         b"filenames": [b"img%d.png" % i for i in range(len(labels))]}, protocol=2)


def make_archive(path, per_batch=4, n_test=6, seed=0):
    rng = np.random.RandomState(seed)
    files, raw = {}, {}
    for name in cifar10.TRAIN_BATCHES:
        data = rng.randint(0, 256, (per_batch, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, per_batch)]
        files[f"{cifar10.BATCHES_DIR}/{name}"] = batch_bytes(data, labels, name.encode())
        raw[name] = (data, labels)
    data = rng.randint(0, 256, (n_test, 3072)).astype(np.uint8)
    labels = [int(v) for v in rng.randint(0, 10, n_test)]
    files[f"{cifar10.BATCHES_DIR}/{cifar10.TEST_BATCH}"] = batch_bytes(data, labels, b"test")
    raw[cifar10.TEST_BATCH] = (data, labels)
    files[f"{cifar10.BATCHES_DIR}/batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
    return write_tar_gz(path, files), raw


@pytest.fixture
def served(tmp_path, server, monkeypatch):
    archive, raw = make_archive(tmp_path / "src" / cifar10.ARCHIVE_NAME)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", md5_of(archive))
    server.serve(cifar10.ARCHIVE_URLS[0], archive)
    return archive, raw


def test_small_indices_match_the_spec():
    keep = small_indices(49000, seed=0)
    assert len(keep) == 4900 and keep[:10].tolist() == SPEC_SMALL_FIRST_TEN


def test_cifar10_layout_scaling_and_split(served, data_dir):
    _, raw = served
    ds = cifar10.load_cifar10(data_dir, validation_size=5, progress=False)
    assert ds.train.x.shape == (15, 3072) and ds.validation.x.shape == (5, 3072) and ds.test.x.shape == (6, 3072)
    assert ds.train.x.dtype == np.float32 and ds.train.labels.dtype == np.int64
    all_data = np.concatenate([raw[n][0] for n in cifar10.TRAIN_BATCHES])
    all_labels = np.concatenate([raw[n][1] for n in cifar10.TRAIN_BATCHES])
    assert np.array_equal(ds.validation.labels, all_labels[:5]) and np.array_equal(ds.train.labels, all_labels[5:])
    # DataSet flattens NHWC: column (h*32 + w)*3 + c holds channel c of pixel (h, w),
    # stored at c*1024 + h*32 + w in the CHW rows; value = float32(float64(v) / 255).
    i, h, w, c = 7, 3, 30, 2
    v = all_data[5 + i, c * 1024 + h * 32 + w]
    assert ds.train.x[i, (h * 32 + w) * 3 + c] == np.float32(np.float64(v) / 255.0)
    expected = (all_data[:5].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(5, -1) / 255.0).astype(np.float32)
    assert np.array_equal(ds.validation.x, expected)
    assert np.array_equal(ds.test.labels, raw[cifar10.TEST_BATCH][1])


def test_cache_round_trip_without_raw_files(served, data_dir, monkeypatch):
    first = cifar10.load_cifar10(data_dir, validation_size=5, progress=False)
    cache = data_dir / "cifar10" / "cifar10.npz"
    with np.load(cache, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(cifar10.CACHE_KEYS)
        assert npz["train_images"].shape == (20, 32, 32, 3) and npz["train_images"].dtype == np.uint8
    import shutil

    shutil.rmtree(data_dir / "cifar10" / cifar10.BATCHES_DIR)
    (data_dir / "cifar10" / cifar10.ARCHIVE_NAME).unlink()
    monkeypatch.setattr(cifar10, "read_batch", lambda *a: pytest.fail("raw batches read on a cache hit"))
    again = cifar10.load_cifar10(data_dir, validation_size=5)
    for a, b in zip(first, again):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)
    # One cache serves any validation size.
    other = cifar10.load_cifar10(data_dir, validation_size=2)
    assert other.validation.x.shape == (2, 3072) and np.array_equal(other.train.x[3:], first.train.x)


def test_cifar10_small(served, data_dir):
    full = cifar10.load_cifar10(data_dir, validation_size=5, progress=False)
    # Called directly: the registry would refuse the one-example (one-class) train split.
    small = cifar10.load_small_cifar10(data_dir, validation_size=5, progress=False)
    keep = small_indices(15, 0)
    assert small.train.num_examples == 1
    assert np.array_equal(small.train.x, full.train.x[keep])
    assert np.array_equal(small.test.x, full.test.x)


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(safe_pickle.UnsafePickleError, match="refusing to load global"):
        cifar10.read_batch(path)


def test_python2_style_numpy_core_pickles_load(tmp_path):
    data = np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    blob = batch_bytes(data, [1, 2], b"b")
    assert b"numpy._core.multiarray" in blob
    # numpy 1.x (and the original Python 2 files) name numpy.core.multiarray.
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    images, labels = cifar10.read_batch(path)
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [1, 2]
    assert images[1, 0, 1, 0] == data[1, 1]


def test_malformed_batch_is_named(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(cifar10.CifarFormatError, match="uint8 \\(n, 3072\\)"):
        cifar10.read_batch(path)
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(cifar10.CifarFormatError, match="dict"):
        cifar10.read_batch(path)
    good = batch_bytes(np.zeros((1, 3072), np.uint8), [3], b"b")
    path.write_bytes(good[: len(good) // 2])  # a truncated file
    with pytest.raises(cifar10.CifarFormatError, match="not a readable CIFAR-10 batch"):
        cifar10.read_batch(path)
