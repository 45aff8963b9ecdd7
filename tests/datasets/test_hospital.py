"""hospital: real UCI archive end to end, plus small frames for the rules."""
import io
import logging
import os
import zipfile

import numpy as np
import pandas as pd
import pytest

from datasets import common, download, hospital
from datasets.download import ArchiveLimitError, DataUnavailableError
from datasets.loader import load_dataset
from tests.datasets.helpers import FileServer, real_archive


# --------------------------------------------------------------------------- small frames
def small_frame(n=60, seed=0) -> pd.DataFrame:
    rng = np.random.RandomState(seed)
    cols = {c: rng.randint(0, 10, n) for c in hospital.NUMERIC_COLUMNS}
    levels = {
        "gender": ["Female", "Male", "Unknown/Invalid"],
        "race": ["Caucasian", "?", "AfricanAmerican"],
        "max_glu_serum": ["None", ">200", "Norm", ">300"],
        "A1Cresult": ["None", ">7", "Norm"],
        "change": ["Ch", "No"],
        "diabetesMed": ["Yes", "No"],
        "examide": ["No"],
        "discharge_disposition_id": [1, 3, 25],
    }
    for c in hospital.CATEGORICAL_COLUMNS:
        options = levels.get(c, ["No", "Steady"])
        values = [options[i % len(options)] for i in range(n)]
        cols[c] = rng.permutation(np.array(values, dtype=object))
    cols["readmitted"] = np.array((["<30"] * 20 + [">30"] * 20 + ["NO"] * 20)[:n], dtype=object)
    cols["weight"] = ["?"] * n  # an unused column
    return pd.DataFrame(cols)


def test_literal_none_is_a_category_only_with_keep_default_na(tmp_path):
    csv = tmp_path / "d.csv"
    small_frame().to_csv(csv, index=False)
    kept = hospital.read_csv(csv)
    assert set(kept["max_glu_serum"]) == {"None", ">200", "Norm", ">300"}
    # The pandas >= 2 pitfall this guards against (reading the literal None as NaN).
    default = pd.read_csv(csv)
    assert default["max_glu_serum"].isna().any()
    X, _ = hospital.featurize(kept)
    assert "max_glu_serum_None" in X.columns and "A1Cresult_None" in X.columns


def test_one_hot_rules_binary_constant_and_multilevel():
    X, Y = hospital.featurize(small_frame())
    cols = list(X.columns)
    assert cols[:8] == list(hospital.NUMERIC_COLUMNS)
    # binary -> one indicator for the second sorted category
    assert "change_No" in cols and "change_Ch" not in cols
    assert "diabetesMed_Yes" in cols and "diabetesMed_No" not in cols
    assert "acetohexamide_Steady" in cols and "acetohexamide_No" not in cols
    # a single category -> one constant column
    assert "examide_No" in cols and (X["examide_No"] == 1).all()
    # >= 3 categories -> one column per category, sorted
    assert [c for c in cols if c.startswith("gender_")] == ["gender_Female", "gender_Male", "gender_Unknown/Invalid"]
    assert [c for c in cols if c.startswith("discharge_disposition_id_")] == [
        "discharge_disposition_id_1", "discharge_disposition_id_3", "discharge_disposition_id_25"]
    # gender 3, race 3, age 1 (binary here), discharge 3, max_glu_serum 4, A1Cresult 3,
    # then 25 binary or constant columns with one indicator each.
    expected_width = 8 + (3 + 3 + 1 + 3 + 4 + 3) + 25
    assert X.shape[1] == expected_width
    assert X.dtypes.unique().tolist() == [np.float32]
    # +1 = '<30', -1 otherwise
    assert Y.dtype == np.int8 and (Y[:20] == 1).all() and (Y[20:] == -1).all()
    # each one-hot block sums to one per row
    assert np.allclose(X[[c for c in cols if c.startswith("race_")]].sum(axis=1), 1)


def test_split_shuffles_positives_then_negatives_with_randomstate_2():
    Y = np.array([1] * 30 + [-1] * 45, dtype=np.int8)
    np.random.RandomState(5).shuffle(Y)
    train, test = hospital.split_indices(Y, num_train_per_class=10)
    assert len(train) == 20 and len(test) == 55
    assert (Y[train] == 1).sum() == 10 and (Y[test] == 1).sum() == 20
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(75))
    # Independent derivation of the call order of the train/test split.
    rng = np.random.RandomState(2)
    pos, neg = np.where(Y == 1)[0], np.where(Y == -1)[0]
    rng.shuffle(pos)
    rng.shuffle(neg)
    expected_train = np.concatenate([pos[:10], neg[:10]])
    rng.shuffle(expected_train)
    assert np.array_equal(train, expected_train)
    with pytest.raises(ValueError, match="num_train_per_class"):
        hospital.split_indices(Y, num_train_per_class=31)


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="readmitted"):
        hospital.featurize(small_frame().drop(columns=["readmitted"]))


def test_current_uci_layout_is_searched_for_the_csv(tmp_path, data_dir, server):
    csv_bytes = b"a,b\n1,2\n"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("diabetes+130-us+hospitals+for+years+1999-2008/diabetic_data.csv", csv_bytes)
    outer = tmp_path / "current.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("readme.txt", "x")
        zf.writestr("nested/diabetes.zip", inner.getvalue())
    server.serve(hospital.CURRENT_UCI_URL, outer)  # the historic URL is not served
    path = hospital.ensure_csv(data_dir / "hospital", progress=False)
    assert path == data_dir / "hospital" / "dataset_diabetes" / "diabetic_data.csv"
    assert path.read_bytes() == csv_bytes
    assert server.calls == list(hospital.ARCHIVE_URLS) + [hospital.CURRENT_UCI_URL]


def _zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_nested_csv_beyond_the_size_limit_is_refused(tmp_path, monkeypatch):
    inner = _zip_bytes({"d/diabetic_data.csv": b"a,b\n" + b"1,2\n" * 1000})
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"nested/diabetes.zip": inner}))
    monkeypatch.setattr(download, "MAX_MEMBER_BYTES", 3000)
    with pytest.raises(ArchiveLimitError, match=r"a.zip:nested/diabetes.zip: member 'd/diabetic_data.csv' would "
                                                r"expand to 4004 bytes, more than the limit of 3000 bytes"):
        hospital.extract_csv(archive, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_nested_decompression_bomb_is_refused(tmp_path):
    # 64 MiB of zeros deflates ~1000:1: refused from its header, before decompression.
    bomb = _zip_bytes({"diabetic_data.csv": bytes(64 << 20)})
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"inner.zip": bomb}))
    with pytest.raises(ArchiveLimitError, match="decompression bomb"):
        hospital.extract_csv(archive, tmp_path / "out.csv")


def test_zips_nested_too_deep_are_refused(tmp_path):
    data = _zip_bytes({"diabetic_data.csv": b"a,b\n1,2\n"})
    for level in range(3):
        data = _zip_bytes({f"level{level}.zip": data})
    archive = tmp_path / "a.zip"
    archive.write_bytes(data)
    with pytest.raises(ArchiveLimitError, match="nests zip archives more than 2 deep"):
        hospital.extract_csv(archive, tmp_path / "out.csv")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(hospital, "MAX_ZIP_NESTING", 3)
    try:
        assert hospital.extract_csv(archive, tmp_path / "out.csv").read_bytes() == b"a,b\n1,2\n"
    finally:
        monkeypatch.undo()


def test_offline_error_names_both_sources_and_the_manual_path(data_dir):
    with pytest.raises(DataUnavailableError) as info:
        hospital.load_hospital(data_dir)
    message = str(info.value)
    assert hospital.ARCHIVE_URLS[0] in message and hospital.CURRENT_UCI_URL in message
    first_line = message.splitlines()[0]
    assert str((data_dir / "hospital" / "dataset_diabetes.zip").resolve()) in first_line
    assert hospital.ARCHIVE_SHA256 in first_line
    # The summary counts every URL tried: the historic archive's and the current one.
    assert f"from {len(hospital.ARCHIVE_URLS) + 1} URLs" in first_line and "URL(s)" not in message
    assert message.count("URLs tried:") == 1


# --------------------------------------------------------------------------- real archive
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    archive = real_archive("hospital/dataset_diabetes.zip")
    data_dir = tmp_path_factory.mktemp("hospital_data")
    fs = FileServer()
    fs.serve(hospital.ARCHIVE_URLS[0], archive)
    with pytest.MonkeyPatch.context() as mp:
        from datasets import download

        mp.setattr(download, "fetch_url", fs)
        ds = load_dataset("hospital", data_dir=data_dir, progress=False)
    return data_dir, ds, fs


@pytest.mark.realdata
def test_real_hospital_shapes_and_balance(real):
    data_dir, ds, fs = real
    assert fs.calls == [hospital.ARCHIVE_URLS[0]]  # through the real downloader, sha256-verified
    assert ds.validation is None
    assert ds.train.x.shape == (20000, 127) and ds.train.x.dtype == np.float32
    assert ds.test.x.shape == (81766, 127)
    assert ds.train.labels.dtype == np.int64
    assert np.bincount(ds.train.labels).tolist() == [10000, 10000]
    assert np.bincount(ds.test.labels).tolist() == [80409, 1357]
    # The 8 numeric columns are counts; all others are 0/1 indicators.
    assert np.all(ds.train.x[:, 8:] * (1 - ds.train.x[:, 8:]) == 0)
    assert ds.train.x[:, :8].max() > 1


@pytest.mark.realdata
def test_real_hospital_cache_has_the_spec_keys(real):
    data_dir, ds, _ = real
    cache = data_dir / "hospital" / "hospital.npz"
    with np.load(cache, allow_pickle=False) as npz:
        for key in hospital.CACHE_KEYS:
            assert key in npz.files
        assert npz["Y_train"].dtype == np.int8
        assert np.array_equal((npz["Y_train"] + 1) // 2, npz["lr_Y_train"])
        names = list(npz["feature_names"])
    assert len(names) == 127
    for name in ("max_glu_serum_None", "A1Cresult_None", "change_No", "diabetesMed_Yes",
                 "acetohexamide_Steady", "examide_No", "citoglipton_No", "race_?"):
        assert name in names


@pytest.mark.realdata
def test_real_hospital_cache_round_trip_does_not_touch_the_raw_files(real, monkeypatch, server):
    data_dir, ds, _ = real
    (data_dir / "hospital" / "dataset_diabetes" / "diabetic_data.csv").rename(data_dir / "moved.csv")
    try:
        monkeypatch.setattr(hospital, "read_csv", lambda *a: pytest.fail("the CSV was read on a cache hit"))
        again = hospital.load_hospital(data_dir)
    finally:
        (data_dir / "moved.csv").rename(data_dir / "hospital" / "dataset_diabetes" / "diabetic_data.csv")
    assert server.calls == []
    for a, b in ((ds.train, again.train), (ds.test, again.test)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)
        assert a.labels.dtype == b.labels.dtype


@pytest.mark.realdata
@pytest.mark.parametrize("also_remove_csv", [False, True])
def test_real_truncated_cache_is_rebuilt_offline_with_a_warning(real, server, caplog, also_remove_csv):
    # Issue 14, item 1: `truncate -s 20000000 D/hospital/hospital.npz`, then load offline.
    data_dir, ds, _ = real
    cache = data_dir / "hospital" / "hospital.npz"
    assert cache.stat().st_size > 20_000_000
    os.truncate(cache, 20_000_000)
    if also_remove_csv:  # re-read from the archive itself (verified by its sha256, not fetched)
        (data_dir / "hospital" / "dataset_diabetes" / "diabetic_data.csv").unlink()
    with caplog.at_level(logging.WARNING):
        again = hospital.load_hospital(data_dir, progress=False)
    assert server.calls == []  # offline: nothing fetched
    assert f"{cache} is damaged" in caplog.text and "rebuilding it" in caplog.text
    for a, b in ((ds.train, again.train), (ds.test, again.test)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)
    assert common.read_cache(cache, hospital.CACHE_KEYS) is not None  # rewritten whole
