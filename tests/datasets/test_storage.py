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


def test_temporary_name_records_host_and_pid(tmp_path):
    seen = []
    with storage.atomic_write(tmp_path / "r.npz") as f:
        seen = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    assert len(seen) == 1 and storage.TMP_NAME.match(seen[0])
    assert f".{storage.host_name()}.{os.getpid()}." in seen[0]
    assert storage.remove_stale_temporaries(tmp_path) == []


def _damaged_copies(path):
    """(label, bytes) for the ways a result file gets damaged on disk."""
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return [
        ("truncated", data[: len(data) // 2]),
        ("truncated_to_header", data[:100]),
        ("empty", b""),
        ("random", noise),
        ("overwritten_middle", data[:1000] + noise + data[3000:]),
        ("overwritten_end", data[:-100] + noise[:100]),
        ("single_npy", b"\x93NUMPY" + data[6:200]),
    ]


@pytest.mark.parametrize("loader", [storage.load_result, storage.load_arrays, storage.load_result_keys])
def test_every_damaged_npz_raises_corrupt_file_error_naming_the_file(tmp_path, loader):
    good = tmp_path / "good.npz"
    storage.save_result(good, {"x": np.arange(1000.0), "r": [np.arange(3), np.arange(2)]})
    for label, data in _damaged_copies(good):
        path = tmp_path / f"{label}.npz"
        path.write_bytes(data)
        with pytest.raises(storage.CorruptFileError) as info:
            loader(path)
        assert info.value.path == path and str(path) in str(info.value), label
        assert "allow_pickle" not in str(info.value), label  # never suggest unsafe loading
        assert isinstance(info.value, storage.StorageError) and isinstance(info.value, ValueError)


def test_npz_that_is_not_a_result_file_is_corrupt_for_load_result_only(tmp_path):
    path = tmp_path / "plain.npz"
    storage.save_arrays(path, x=np.arange(3))
    np.testing.assert_array_equal(storage.load_arrays(path)["x"], np.arange(3))
    with pytest.raises(storage.CorruptFileError, match="missing metadata"):
        storage.load_result(path)


def test_missing_file_is_not_corruption(tmp_path):
    for loader in (storage.load_result, storage.load_arrays, storage.load_json):
        with pytest.raises(FileNotFoundError):
            loader(tmp_path / "absent")


@pytest.mark.parametrize("content, reason", [
    (b'{"dataset_id": "breast', "JSONDecodeError"),
    (bytes(range(128, 256)), "UnicodeDecodeError"),
    (b"[1, 2]", "expected a JSON dict, found list"),
    (b"", "JSONDecodeError"),
    (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),  # deeper than the parser's recursion limit
])
def test_damaged_json_raises_corrupt_file_error(tmp_path, content, reason):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(storage.CorruptFileError, match=reason) as info:
        storage.load_json(path, expect=dict)
    assert info.value.path == path and info.value.reason.startswith(reason)
    if content == b"[1, 2]":
        assert storage.load_json(path) == [1, 2]  # no type expected: any JSON value


def test_deeply_nested_metadata_is_damage(tmp_path):
    """A result file whose ``__meta__`` entry nests deeper than the JSON parser can recurse."""
    path = tmp_path / "nested.npz"
    np.savez(path, x=np.arange(3), **{storage.META_KEY: np.array("[" * 100_000 + "]" * 100_000)})
    for loader in (storage.load_result, storage.load_result_keys):
        with pytest.raises(storage.CorruptFileError, match="RecursionError") as info:
            loader(path)
        assert info.value.path == path


def test_corrupt_file_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(storage.CorruptFileError("/x/y.npz", "truncated")))
    assert err.path.name == "y.npz" and err.reason == "truncated" and "y.npz is damaged" in str(err)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        storage.save_result(tmp_path / "r.npz", {"x": 1})
        storage.save_json(tmp_path / "c.json", {"a": 1})
        storage.save_arrays(tmp_path / "a.npz", x=np.arange(2))
    finally:
        os.umask(old)
    for name in ("r.npz", "c.json", "a.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    import subprocess
    import sys
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = storage.host_name()
    files = {
        "dead_writer": f".result_6-retrain.npz.{host}.{dead_pid}.0123abcd.tmp",
        "live_writer": f".result_7-x.npz.{host}.{os.getpid()}.0123abcd.tmp",
        "other_host_recent": ".result_8-y.npz.otherhost.12345.0123abcd.tmp",
        "other_host_old": ".result_9-z.npz.otherhost.12345.89abcdef.tmp",
        "mkstemp_old": ".config.json.k3j_x9a2.tmp",
        "mkstemp_recent": ".config.json.abcdefgh.tmp",
        "not_ours": ".editor-swap.tmp",
        "not_ours_old": "notes.tmp",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 2 * storage.STALE_TMP_AGE
    for key in ("other_host_old", "mkstemp_old", "not_ours_old", "not_ours"):
        os.utime(tmp_path / files[key], (old, old))
    removed = {p.name for p in storage.remove_stale_temporaries(tmp_path)}
    assert removed == {files[k] for k in ("dead_writer", "other_host_old", "mkstemp_old")}
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(files.values()) - removed


def test_config_hash_ignores_tuple_vs_list():
    assert storage.config_hash({"a": (1, 2)}) == storage.config_hash({"a": [1, 2]})
    assert storage.config_hash({"a": 1}) != storage.config_hash({"a": 2})


def test_result_digest_is_a_content_digest():
    r = {"x": np.arange(6.0).reshape(2, 3), "tags": ["a", "b"], "g": [np.arange(2), np.arange(1)], "s": 1.5}
    d = storage.result_digest(r)
    assert d == storage.result_digest({k: r[k] for k in reversed(list(r))})  # key order does not matter
    for changed in ({"x": np.arange(6.0).reshape(3, 2)}, {"x": np.arange(6).reshape(2, 3)},
                    {"tags": ["a", "c"]}, {"g": [np.arange(1), np.arange(2)]}, {"s": 1.5000000000000002}):
        assert storage.result_digest(dict(r, **changed)) != d, changed
