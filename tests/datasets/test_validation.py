"""Data checks on load (validate_datasets) and damaged caches treated as missing."""
import logging
import os

import numpy as np
import pytest
import scipy.sparse as sp

from datasets import common, loader
from datasets.common import DataSet, Datasets, DatasetValidationError, validate_datasets
from datasets.storage import save_arrays


def make(train_x, train_y, test_x=None, test_y=None, validation=None):
    test_x = train_x if test_x is None else test_x
    test_y = train_y if test_y is None else test_y
    return Datasets(DataSet(train_x, train_y), validation, DataSet(test_x, test_y))


def good_x(n=6, d=3):
    return np.arange(n * d, dtype=np.float64).reshape(n, d)


Y = np.array([0, 1, 0, 1, 1, 0])


# --------------------------------------------------------------------------- validation
def test_clean_data_pass_unchanged():
    ds = make(good_x(), Y)
    assert validate_datasets(ds, "ok") is ds
    # Float 0./1. labels (spam, cdr) are integers too; an empty 1-D validation (mnli) is fine.
    empty = DataSet(np.zeros(0, dtype=np.float32), np.zeros(0))
    validate_datasets(make(good_x(), Y.astype(np.float64), validation=empty), "ok")
    validate_datasets(make(good_x(), Y, validation=DataSet(np.zeros((0, 3)), np.zeros(0))), "ok")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_dense_x_names_dataset_array_count_and_first_index(bad):
    x = good_x()
    x[4, 2] = bad
    x[5, 0] = bad
    test_x = good_x()
    test_x[1, 1] = bad
    with pytest.raises(DatasetValidationError) as info:
        validate_datasets(make(good_x(), Y, test_x, Y), "mydata")
    assert str(info.value).startswith("dataset 'mydata': test x has 1 non-finite value(s) (NaN or infinite); "
                                      "the first is at row 1, column 1")
    with pytest.raises(DatasetValidationError, match=r"'mydata': train x has 2 non-finite value\(s\) .*"
                                                     r"the first is at row 4, column 2"):
        validate_datasets(make(x, Y), "mydata")


def test_float64_values_beyond_float32_become_infinite_and_are_caught():
    x = good_x()
    x[2, 1] = 1e300  # DataSet casts x to float32, as the original
    with np.errstate(over="ignore"):
        ds = make(x, Y)
    with pytest.raises(DatasetValidationError, match="train x has 1 non-finite.*row 2, column 1"):
        validate_datasets(ds, "big")


def test_non_finite_found_across_check_blocks(monkeypatch):
    monkeypatch.setattr(common, "CHECK_BLOCK", 4)  # 18 values in 5 blocks
    x = good_x()
    x[3, 0] = x[5, 2] = np.nan  # flat indices 9 and 17: second-to-last and last block
    with pytest.raises(DatasetValidationError, match=r"2 non-finite value\(s\).*row 3, column 0"):
        validate_datasets(make(x, Y), "blocks")


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil"])
def test_sparse_x_is_checked_through_its_stored_values(fmt):
    dense = good_x()
    dense[2, 1] = np.nan
    dense[4, 0] = np.inf
    x = sp.csr_matrix(dense).asformat(fmt)
    with pytest.raises(DatasetValidationError, match=r"train x has 2 non-finite value\(s\).*"
                                                     r"the first is at row (2, column 1|4, column 0)"):
        validate_datasets(make(x, Y, sp.csr_matrix(good_x()), Y), "sparse")
    if fmt == "csr":  # row-major: the first stored bad value is (2, 1)
        with pytest.raises(DatasetValidationError, match="row 2, column 1"):
            validate_datasets(make(x, Y, sp.csr_matrix(good_x()), Y), "sparse")


def test_sparse_check_never_densifies():
    # 10^6 x 10^6 would need 4 TB dense; only the three stored values are looked at.
    x = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), (np.array([0, 5, 999_999]), np.array([7, 0, 999_998]))),
                      shape=(1_000_000, 1_000_000))
    y = np.zeros(1_000_000, dtype=np.int64)
    y[5] = 1
    validate_datasets(make(x, y), "huge_sparse")
    x.data[2] = np.nan
    with pytest.raises(DatasetValidationError, match="row 999999, column 999998"):
        validate_datasets(make(x, y), "huge_sparse")


def test_one_class_is_refused():
    with pytest.raises(DatasetValidationError, match=r"'one': train labels must contain at least two classes; "
                                                     r"got 1 \(\[1\]\) in 6 rows"):
        validate_datasets(make(good_x(), np.ones(6, dtype=np.int64)), "one")


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, 0.5, 1, 1, 0]), r"train labels must be integers .* 1 are not, the first at index 2"),
    (np.array([0, 1, 0, np.nan, 1, np.inf]), r"train labels have 2 non-finite value\(s\).*first is at index 3"),
    (np.array([0, 1, -1, 1, -1, 0]),
     r"train labels must be class indices 0..K-1; 2 are negative, the first at index 2"),
    (np.array(["a", "b", "a", "b", "a", "b"]), r"train labels must be numeric class indices; got dtype <U1"),
])
def test_labels_must_be_finite_non_negative_integers(labels, match):
    with pytest.raises(DatasetValidationError, match=match):
        validate_datasets(make(good_x(), labels, good_x(), Y), "labels")


def test_shapes_must_agree():
    ds = make(good_x(), Y, good_x(d=4), Y)
    with pytest.raises(DatasetValidationError, match="'shapes': test x has 4 features but train x has 3"):
        validate_datasets(ds, "shapes")

    class Broken(DataSet):  # DataSet refuses this itself; a loader could still build it by hand
        labels = property(lambda self: Y[:5])

    broken = Broken(good_x(), Y)
    with pytest.raises(DatasetValidationError, match="'shapes': train x has 6 rows but there are 5 labels"):
        validate_datasets(Datasets(broken, None, DataSet(good_x(), Y)), "shapes")
    with pytest.raises(DatasetValidationError, match="'shapes': validation x has 2 features"):
        validate_datasets(make(good_x(), Y, validation=DataSet(np.zeros((0, 2)), np.zeros(0))), "shapes")


def test_the_registry_validates_every_dataset(monkeypatch, tmp_path):
    x = good_x()
    x[0, 0] = np.nan
    written = []
    monkeypatch.setitem(loader.DATASETS, "nan_data", lambda data_dir=None: make(x, Y))
    with pytest.raises(DatasetValidationError, match="dataset 'nan_data': train x has 1 non-finite"):
        loader.load_dataset("nan_data", center_data=True, data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == written  # nothing written
    assert isinstance(DatasetValidationError("x"), ValueError)


@pytest.mark.parametrize("dataset_id", ["breast_cancer", "digits", "synthetic_binary", "synthetic_multiclass"])
def test_offline_datasets_pass(dataset_id):
    loader.load_dataset(dataset_id)


# --------------------------------------------------------------------------- damaged caches
def damage(path, how):
    if how == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    elif how == "empty":
        os.truncate(path, 0)
    elif how == "random":
        path.write_bytes(np.random.RandomState(0).bytes(5000))
    elif how == "overwritten":
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(size // 2)
            f.write(b"\xff" * 64)


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "overwritten"])
def test_damaged_cache_is_treated_as_missing_with_a_warning_naming_it(tmp_path, caplog, how):
    path = tmp_path / "cache.npz"
    save_arrays(path, x=np.arange(100_000, dtype=np.float64), y=np.arange(10))
    damage(path, how)
    with caplog.at_level(logging.WARNING, logger="datasets.common"):
        assert common.read_cache(path, ["x", "y"]) is None
    assert str(path) in caplog.text and "rebuilding it" in caplog.text


@pytest.mark.parametrize("how", ["truncated", "random"])
def test_damaged_sparse_cache_is_treated_as_missing(tmp_path, caplog, how):
    path = tmp_path / "x.npz"
    common.save_sparse(path, sp.random(300, 200, density=0.3, format="csr", random_state=0))
    assert common.read_sparse_cache(path).shape == (300, 200)
    damage(path, how)
    with caplog.at_level(logging.WARNING, logger="datasets.common"):
        assert common.read_sparse_cache(path) is None
    assert str(path) in caplog.text
    assert common.read_sparse_cache(tmp_path / "missing.npz") is None


def test_load_sparse_reads_the_original_coo_files(tmp_path):
    m = sp.random(20, 10, density=0.3, format="coo", random_state=1)
    sp.save_npz(tmp_path / "coo.npz", m)
    assert np.array_equal(common.load_sparse(tmp_path / "coo.npz").toarray(), m.toarray())
    sp.save_npz(tmp_path / "csc.npz", m.tocsc())
    assert np.array_equal(common.load_sparse(tmp_path / "csc.npz").toarray(), m.toarray())
