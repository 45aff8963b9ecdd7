"""The storage module: pickle-free round trips and atomic writes."""
import os

import numpy as np
import pytest

from datasets import storage


def test_round_trip_of_every_kind(tmp_path):
    result = {
        "array": np.arange(6.0).reshape(2, 3),
        "ints": np.array([3, 1, 2]),
        "scalar_float": 2.5,
        "scalar_int": np.int64(7),
        "ragged": [np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)],
        "tags": ["random", "same_grad", "neg_tail_test-1-5"],
        "nothing": None,
        "empty": [],
        "complex": np.array([1 + 2j, 3 - 1j]),
    }
    path = tmp_path / "r.npz"
    storage.save_result(path, result, {"config_hash": "abc"})
    loaded, attrs = storage.load_result(path)
    assert attrs == {"config_hash": "abc"}
    assert set(loaded) == set(result)
    np.testing.assert_array_equal(loaded["array"], result["array"])
    assert loaded["scalar_float"] == 2.5 and isinstance(loaded["scalar_float"], float)
    assert loaded["scalar_int"] == 7 and isinstance(loaded["scalar_int"], int)
    assert [list(r) for r in loaded["ragged"]] == [[1, 2, 3], [4], []]
    assert loaded["tags"] == result["tags"]
    assert loaded["nothing"] is None and loaded["empty"] == []
    np.testing.assert_array_equal(loaded["complex"], result["complex"])
    # Loads with allow_pickle=False: no object arrays inside.
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(storage.StorageError, match="result key 'bad'"):
        storage.save_result(tmp_path / "x.npz", {"bad": np.array([{}, 1], dtype=object)})
    assert not (tmp_path / "x.npz").exists()


def test_crash_mid_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "result_0-a.npz"
    storage.save_result(path, {"x": np.arange(3)})
    real_savez = np.savez

    def exploding_savez(f, **arrays):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(KeyboardInterrupt):
        storage.save_result(path, {"x": np.arange(100)})
    monkeypatch.setattr(np, "savez", real_savez)
    loaded, _ = storage.load_result(path)
    np.testing.assert_array_equal(loaded["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["result_0-a.npz"]  # no temporary file left behind


def test_corrupt_file_raises_storage_error(tmp_path):
    path = tmp_path / "r.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(storage.StorageError, match="cannot read result file"):
        storage.load_result(path)


def test_config_hash_ignores_tuple_vs_list():
    assert storage.config_hash({"a": (1, 2)}) == storage.config_hash({"a": [1, 2]})
    assert storage.config_hash({"a": 1}) != storage.config_hash({"a": 2})
