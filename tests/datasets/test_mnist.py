"""mnist / mnist_small on generated gzipped IDX files; Fashion-MNIST at scale."""
import numpy as np
import pytest

from datasets import mnist
from datasets.download import ChecksumMismatchError
from datasets.loader import load_dataset
from tests.datasets.helpers import md5_of, no_temp_files, write_idx_images, write_idx_labels

SPEC_SMALL_FIRST_TEN = [2921, 53711, 27402, 14832, 49726, 10701, 24413, 18057, 52822, 24651]


def make_idx_files(folder, n_train=60, n_test=12, seed=0):
    rng = np.random.RandomState(seed)
    arrays = {
        "train_images": rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "test_labels": rng.randint(0, 10, n_test).astype(np.uint8),
    }
    files = {
        mnist.TRAIN_IMAGES: write_idx_images(folder / mnist.TRAIN_IMAGES, arrays["train_images"]),
        mnist.TRAIN_LABELS: write_idx_labels(folder / mnist.TRAIN_LABELS, arrays["train_labels"]),
        mnist.TEST_IMAGES: write_idx_images(folder / mnist.TEST_IMAGES, arrays["test_images"]),
        mnist.TEST_LABELS: write_idx_labels(folder / mnist.TEST_LABELS, arrays["test_labels"]),
    }
    return files, arrays


@pytest.fixture
def served(tmp_path, server, monkeypatch):
    """Generated IDX files served at the second mirror (the first two hosts are down)."""
    files, arrays = make_idx_files(tmp_path / "src")
    monkeypatch.setattr(mnist, "FILES_MD5", {name: md5_of(path) for name, path in files.items()})
    for name, path in files.items():
        server.serve(mnist.BASE_URLS[2] + name, path)
    return files, arrays


def test_small_indices_match_the_spec():
    keep = mnist.small_indices(55000, seed=0)
    assert len(keep) == 5500
    assert keep[:10].tolist() == SPEC_SMALL_FIRST_TEN
    assert len(np.unique(keep)) == 5500


def test_load_mnist_splits_scales_and_flattens(served, data_dir, server):
    files, arrays = served
    ds = load_dataset("mnist", data_dir=data_dir, validation_size=10, progress=False)
    assert [c.rsplit("/", 1)[0] + "/" for c in server.calls[:3]] == list(mnist.BASE_URLS)
    assert ds.train.x.shape == (50, 784) and ds.validation.x.shape == (10, 784) and ds.test.x.shape == (12, 784)
    assert ds.train.x.dtype == np.float32 and ds.train.labels.dtype == np.uint8
    # validation = first images of the training file, train = the rest, file order kept
    expected_val = arrays["train_images"][:10].reshape(10, -1).astype(np.float32) / np.float32(255)
    assert np.array_equal(ds.validation.x, expected_val)
    assert np.array_equal(ds.train.labels, arrays["train_labels"][10:])
    assert np.array_equal(ds.test.x[3].reshape(28, 28) * 255, arrays["test_images"][3].astype(np.float32))
    assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    assert no_temp_files(data_dir)


def test_mnist_has_no_cache_and_reuses_verified_files(served, data_dir, server):
    mnist.load_mnist(data_dir, validation_size=10, progress=False)
    n_calls = len(server.calls)
    mnist.load_mnist(data_dir, validation_size=10, progress=False)
    assert len(server.calls) == n_calls  # intact files are not fetched again
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(mnist.FILES_MD5)


def test_mnist_small_keeps_a_tenth_in_permuted_order_and_caches(served, data_dir, monkeypatch):
    files, arrays = served
    ds = load_dataset("mnist_small", data_dir=data_dir, validation_size=10, progress=False)
    keep = mnist.small_indices(50, 0)
    assert len(keep) == 5
    assert np.array_equal(ds.train.labels, arrays["train_labels"][10:][keep])
    assert ds.validation.x.shape == (10, 784) and ds.test.x.shape == (12, 784)
    cache = data_dir / "mnist" / "mnist_small_val-10_seed-0.npz"
    with np.load(cache, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(mnist.SMALL_CACHE_KEYS)
        assert npz["train_images"].shape == (5, 784) and npz["train_images"].dtype == np.float32
    for name in mnist.FILES_MD5:
        (data_dir / "mnist" / name).unlink()
    monkeypatch.setattr(mnist, "load_mnist", lambda *a, **k: pytest.fail("raw files read on a cache hit"))
    again = mnist.load_small_mnist(data_dir, validation_size=10)
    for a, b in zip(ds, again):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)


def test_corrupt_partial_file_is_fetched_again(served, data_dir, server):
    files, _ = served
    target = data_dir / "mnist" / mnist.TRAIN_IMAGES
    target.parent.mkdir()
    target.write_bytes(files[mnist.TRAIN_IMAGES].read_bytes()[:500])
    ds = mnist.load_mnist(data_dir, validation_size=10, progress=False)
    assert ds.train.num_examples == 50
    assert target.read_bytes() == files[mnist.TRAIN_IMAGES].read_bytes()


def test_checksum_mismatch_raises_and_keeps_nothing(served, data_dir, monkeypatch):
    monkeypatch.setitem(mnist.FILES_MD5, mnist.TEST_LABELS, "0" * 32)
    with pytest.raises(ChecksumMismatchError) as info:
        mnist.load_mnist(data_dir, validation_size=10, progress=False)
    assert mnist.TEST_LABELS in str(info.value).splitlines()[0]
    assert not (data_dir / "mnist" / mnist.TEST_LABELS).exists()
    assert no_temp_files(data_dir)


def test_offline_error_names_the_four_files_and_the_folder(data_dir):
    from datasets.download import DataUnavailableError

    with pytest.raises(DataUnavailableError) as info:
        mnist.load_mnist(data_dir)
    first = str(info.value).splitlines()[0]
    for name in mnist.FILES_MD5:
        assert name in first
    assert str((data_dir / "mnist").resolve()) in first
    for base in mnist.BASE_URLS:
        assert base + mnist.TRAIN_IMAGES in str(info.value)


def test_wrong_magic_truncated_and_non_gzip_files_are_rejected(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(mnist.IdxFormatError, match="invalid magic number 2049"):
        mnist.read_idx_images(write_idx_images(tmp_path / "a.gz", images, magic=2049))
    with pytest.raises(mnist.IdxFormatError, match="invalid magic number 2051"):
        mnist.read_idx_labels(write_idx_labels(tmp_path / "b.gz", np.zeros(3), magic=2051))
    good = write_idx_images(tmp_path / "c.gz", images).read_bytes()
    (tmp_path / "d.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(mnist.IdxFormatError, match="not a complete gzip file"):
        mnist.read_idx_images(tmp_path / "d.gz")
    (tmp_path / "e.gz").write_bytes(b"plain bytes")
    with pytest.raises(ValueError):
        mnist.read_idx_labels(tmp_path / "e.gz")
    import gzip

    with gzip.open(tmp_path / "f.gz", "wb") as f:  # header promises 3 images, holds 2
        f.write(np.array([2051, 3, 28, 28], ">u4").tobytes() + bytes(2 * 784))
    with pytest.raises(mnist.IdxFormatError, match="header promises 3 images"):
        mnist.read_idx_images(tmp_path / "f.gz")


def test_validation_size_is_checked(tmp_path):
    make_idx_files(tmp_path, n_train=20, n_test=5)
    with pytest.raises(ValueError, match="validation_size must be between 0 and 20"):
        mnist.load_mnist_from_dir(tmp_path, validation_size=21)


@pytest.mark.slow
def test_full_size_mnist_path_on_debian_fashion_mnist(data_dir, server, monkeypatch):
    src = mnist.FASHION_MNIST_DEBIAN_DIR
    if not all((src / n).is_file() for n in mnist.FILES_MD5):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    # Fashion-MNIST is not MNIST: use its own digests, but the real download and parse path.
    monkeypatch.setattr(mnist, "FILES_MD5", {n: md5_of(src / n) for n in mnist.FILES_MD5})
    for name in mnist.FILES_MD5:
        server.serve(mnist.BASE_URLS[0] + name, src / name)
    ds = load_dataset("mnist", data_dir=data_dir, progress=False)
    assert ds.train.x.shape == (55000, 784) and ds.validation.x.shape == (5000, 784)
    assert ds.test.x.shape == (10000, 784)
    assert sorted(np.unique(ds.train.labels).tolist()) == list(range(10))
    assert ds.train.x.min() == 0.0 and ds.train.x.max() == 1.0
    small = load_dataset("mnist_small", data_dir=data_dir, progress=False)
    assert small.train.x.shape == (5500, 784)
    assert np.array_equal(small.train.x[:10], ds.train.x[SPEC_SMALL_FIRST_TEN])
    assert (data_dir / "mnist" / "mnist_small_val-5000_seed-0.npz").is_file()
    debian = mnist.load_fashion_mnist_debian()
    assert np.array_equal(debian.test.x, ds.test.x)


def test_fashion_mnist_reads_idx_files_from_the_data_dir(data_dir, monkeypatch):
    # The Debian folder is pointed at an empty place: the data dir's files must be used.
    monkeypatch.setattr(mnist, "FASHION_MNIST_DEBIAN_DIR", data_dir / "absent")
    _, arrays = make_idx_files(data_dir / mnist.FASHION_SUBDIR, n_train=40, n_test=7, seed=3)
    ds = load_dataset("fashion_mnist", data_dir=data_dir, validation_size=8)
    assert ds.train.x.shape == (32, 784) and ds.validation.x.shape == (8, 784) and ds.test.x.shape == (7, 784)
    assert ds.train.x.dtype == np.float32 and ds.train.labels.dtype == np.uint8
    scaled = arrays["train_images"].reshape(40, -1).astype(np.float32) / np.float32(255)
    assert np.array_equal(ds.validation.x, scaled[:8]) and np.array_equal(ds.train.x, scaled[8:])
    assert np.array_equal(ds.train.labels, arrays["train_labels"][8:])
    assert np.array_equal(ds.test.labels, arrays["test_labels"])


def test_fashion_mnist_without_files_names_both_places(data_dir, monkeypatch):
    monkeypatch.setattr(mnist, "FASHION_MNIST_DEBIAN_DIR", data_dir / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", data_dir=data_dir)
    assert str(data_dir / mnist.FASHION_SUBDIR) in str(err.value)
    # Part of the files in the data dir is an error, not a silent fall-back to Debian's.
    files, _ = make_idx_files(data_dir / "src", n_train=20, n_test=5)
    target = data_dir / mnist.FASHION_SUBDIR / mnist.TRAIN_IMAGES
    target.write_bytes(files[mnist.TRAIN_IMAGES].read_bytes())
    with pytest.raises(FileNotFoundError, match="holds only"):
        load_dataset("fashion_mnist", data_dir=data_dir)


@pytest.mark.slow
@pytest.mark.realdata
def test_fashion_mnist_from_debian_files(data_dir):
    src = mnist.FASHION_MNIST_DEBIAN_DIR
    if not all((src / n).is_file() for n in mnist.FILES_MD5):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion_mnist", data_dir=data_dir)
    assert ds.train.x.shape == (55000, 784) and ds.validation.x.shape == (5000, 784)
    assert ds.test.x.shape == (10000, 784)
    assert ds.train.x.dtype == np.float32 and ds.train.x.min() == 0.0 and ds.train.x.max() == 1.0
    for split in (ds.train, ds.validation, ds.test):
        assert sorted(np.unique(split.labels).tolist()) == list(range(10))
    from experiments.subset_influence import NUM_TRAIN
    assert NUM_TRAIN["fashion_mnist"] == ds.train.num_examples
    # Same split as mnist: validation = the first 5,000 images of the training file.
    raw = mnist.read_idx_labels(src / mnist.TRAIN_LABELS)
    assert np.array_equal(ds.validation.labels, raw[:5000]) and np.array_equal(ds.train.labels, raw[5000:])
