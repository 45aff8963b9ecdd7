"""dogfish / animals on generated Inception-feature npz files."""
import logging

import numpy as np
import pytest

from datasets import processed_animals as pa
from datasets.download import DataUnavailableError
from datasets.loader import load_dataset


def write_features(path, n, d=2048, classes=2, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, d).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, inception_features_val=x, labels=y)
    return x, y


@pytest.mark.parametrize("name, classes", [("dogfish", 2), ("animals", 10)])
def test_loads_features_labels_uint8_no_validation(tmp_path, data_dir, server, caplog, name, classes):
    train_name, test_name = pa.file_names(name)
    x_tr, y_tr = write_features(tmp_path / "src" / train_name, 20, classes=classes, seed=1)
    x_te, y_te = write_features(tmp_path / "src" / test_name, 10, classes=classes, seed=2)
    server.serve(pa.BASE_URL + train_name, tmp_path / "src" / train_name)
    server.serve(pa.BASE_URL + test_name, tmp_path / "src" / test_name)
    with caplog.at_level(logging.WARNING, logger="datasets.common"):
        ds = load_dataset(name, data_dir=data_dir, progress=False)
    assert ds.validation is None
    assert ds.train.x.shape == (20, 2048) and ds.test.x.shape == (10, 2048)
    assert np.array_equal(ds.train.x, x_tr) and np.array_equal(ds.test.x, x_te)
    assert ds.train.labels.dtype == np.uint8 and np.array_equal(ds.test.labels, y_te)
    assert (data_dir / "processed_animals" / train_name).is_file()
    # Smaller than the original's sizes: a warning, not an error (those sizes are partly inferred).
    assert "training rows: expected" in caplog.text


def test_missing_files_error_names_both_and_the_folder(data_dir):
    with pytest.raises(DataUnavailableError) as info:
        pa.load_dogfish(data_dir)
    first = str(info.value).splitlines()[0]
    for filename in pa.file_names("dogfish"):
        assert filename in first
        assert pa.BASE_URL + filename in str(info.value)
    assert str((data_dir / "processed_animals").resolve()) in first


def test_file_without_the_documented_keys_is_rejected(tmp_path, data_dir, server):
    train_name, test_name = pa.file_names("dogfish")
    folder = data_dir / "processed_animals"
    folder.mkdir()
    np.savez(folder / train_name, features=np.zeros((2, 3)), labels=np.zeros(2))
    write_features(folder / test_name, 2)
    with pytest.raises(pa.FeatureFileError, match="missing keys \\['inception_features_val'\\]"):
        pa.load_dogfish(data_dir)
    (folder / train_name).write_bytes(b"truncated")
    with pytest.raises(pa.FeatureFileError, match="not a readable npz"):
        pa.load_dogfish(data_dir)
