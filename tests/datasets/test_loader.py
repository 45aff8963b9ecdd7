"""The registry and the common helpers."""
import numpy as np
import pytest
import scipy.sparse as sp

from datasets import common, loader
from datasets.common import DataSet, Datasets

SPEC_SUPPLEMENTS = {
    "cdr_LFs", "reduced_cdr_LFs", "cdr_nonfires", "reduced_cdr_nonfires", "cdr_weights", "reduced_cdr_weights",
    "cdr_labeling_info", "reduced_cdr_labeling_info", "mnli_nonfires", "mnli_nonfires_genres", "mnli_genres",
    "mnli_ids", "mnli_nonfires_ids",
}


def test_registry_has_every_id_of_the_original():
    assert set(loader.ORIGINAL_DATASETS) <= set(loader.DATASETS)
    assert set(loader.SUPPLEMENTS) == SPEC_SUPPLEMENTS
    # Experiments build supplement ids by concatenation.
    for suffix in ("_weights", "_nonfires", "_LFs", "_labeling_info"):
        assert "reduced_cdr" + suffix in loader.SUPPLEMENTS
    for suffix in ("_ids", "_genres", "_nonfires", "_nonfires_genres"):
        assert "mnli" + suffix in loader.SUPPLEMENTS


def test_importing_the_registry_does_not_import_heavy_loaders():
    import subprocess
    import sys

    code = "import sys; import datasets.loader; print('spacy' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(common.REPO_ROOT))
    assert out.stdout.split() == ["False", "False"]


def test_unknown_ids_raise_a_value_error_naming_the_id():
    with pytest.raises(loader.UnknownDatasetError, match="'nope'"):
        loader.load_dataset("nope")
    with pytest.raises(ValueError, match="'nope_weights'"):
        loader.load_supplemental_info("nope_weights")


def test_center_then_append_bias():
    ds = loader.load_dataset("breast_cancer", center_data=True, append_bias=True)
    assert ds.train.x.shape == (455, 31) and ds.test.x.shape == (114, 31)
    assert np.allclose(ds.train.x[:, :-1].mean(axis=0), 0, atol=1e-3)
    assert np.all(ds.train.x[:, -1] == 1) and np.all(ds.test.x[:, -1] == 1)
    assert ds.validation is None


def test_center_and_bias_densify_sparse_and_keep_empty_splits():
    x = sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 2.0]]))
    ds = Datasets(DataSet(x, np.array([0, 1])), DataSet(np.zeros((0, 2)), np.zeros(0)), DataSet(x, np.array([1, 0])))
    out = common.append_bias(common.center_data(ds))
    assert np.array_equal(out.train.x, np.array([[-1, -1, 1], [1, 1, 1]], dtype=np.float32))
    assert out.validation.x.shape == (0, 3)


def test_read_cache_rejects_missing_keys_and_pickles(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.arange(3))
    assert common.read_cache(tmp_path / "a.npz", ["x"])["x"].tolist() == [0, 1, 2]
    assert common.read_cache(tmp_path / "a.npz", ["x", "y"]) is None
    assert common.read_cache(tmp_path / "missing.npz", ["x"]) is None
    np.savez(tmp_path / "b.npz", x=np.array([np.arange(2), np.arange(3)], dtype=object))
    assert common.read_cache(tmp_path / "b.npz", ["x"]) is None


def test_check_expected_strict_and_lenient(caplog):
    common.check_expected("rows", 3, 3)
    with pytest.raises(common.DatasetIntegrityError, match="rows: expected 4, got 3"):
        common.check_expected("rows", 3, 4)
    common.check_expected("rows", 3, 4, strict=False)
    assert "rows: expected 4, got 3" in caplog.text
