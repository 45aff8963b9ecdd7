"""cdr, reduced_cdr and the CDR supplements on a generated Snorkel database.

The database uses Snorkel's column orders (``candidate_id, key_id, value``), not the
(value, candidate_id, key_id) order the original assumed in loops, so reading columns by
position would fail these tests.
"""
import sqlite3

import numpy as np
import pytest
import scipy.sparse as sp

from datasets import babble
from datasets.common import DatasetIntegrityError
from datasets.download import DataUnavailableError
from datasets.loader import load_dataset, load_supplemental_info

# candidate id -> split: 1-5 train, 6-8 dev, 9-12 test
SPLITS = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1, 7: 1, 8: 1, 9: 2, 10: 2, 11: 2, 12: 2}
# (candidate_id, key_id = LF id, vote) in table order: not grouped by candidate.
VOTES = [(2, 1, 1), (1, 1, -1), (2, 3, 1), (6, 2, -1), (1, 2, 1), (3, 3, -1), (9, 1, 1), (7, 1, 1)]
# candidate -> {feature key_id (1-based): value}
FEATURES = {1: {1: 1.0, 3: 1.0}, 2: {2: 1.0}, 3: {1: 1.0, 6: 1.0}, 4: {4: 1.0}, 5: {5: 1.0},
            6: {2: 1.0, 3: 1.0}, 7: {6: 1.0}, 8: {1: 1.0}, 9: {3: 1.0, 4: 1.0}, 10: {2: 1.0},
            11: {5: 1.0, 6: 1.0}, 12: {1: 1.0}}
# gold labels, table order scrambled
GOLD = [(12, -1), (3, 1), (9, 1), (1, 1), (11, 1), (10, -1), (4, -1), (2, 1), (8, 1), (5, 1), (7, -1), (6, -1)]
N_FEATURES = 6


def make_db(path):
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE candidate (id INTEGER PRIMARY KEY, type VARCHAR, split INTEGER);
        CREATE INDEX ix_candidate_split ON candidate (split);
        CREATE TABLE label (candidate_id INTEGER, key_id INTEGER, value INTEGER,
                            PRIMARY KEY (candidate_id, key_id));
        CREATE TABLE feature (candidate_id INTEGER, key_id INTEGER, value FLOAT,
                              PRIMARY KEY (candidate_id, key_id));
        CREATE TABLE gold_label (candidate_id INTEGER, key_id INTEGER, value INTEGER,
                                 PRIMARY KEY (candidate_id, key_id));
    """)
    conn.executemany("INSERT INTO candidate VALUES (?, 'chemical_disease', ?)", sorted(SPLITS.items(), reverse=True))
    conn.executemany("INSERT INTO label VALUES (?, ?, ?)", VOTES)
    feature_rows = [(c, k, v) for c in sorted(FEATURES, reverse=True) for k, v in FEATURES[c].items()]
    conn.executemany("INSERT INTO feature VALUES (?, ?, ?)", feature_rows)
    conn.executemany("INSERT INTO gold_label VALUES (?, 1, ?)", GOLD)
    conn.commit()
    conn.close()
    return path


def dense(cands):
    out = np.zeros((len(cands), N_FEATURES), np.float32)
    for r, c in enumerate(cands):
        for k, v in FEATURES[c].items():
            out[r, k - 1] = v
    return out


GOLD_OF = dict(GOLD)
TRAIN_VOTES = [v for v in VOTES if SPLITS[v[0]] == 0]
DEV_VOTES = [v for v in VOTES if SPLITS[v[0]] == 1]
TEST_CANDS = [c for c in sorted(SPLITS) if SPLITS[c] == 2]
VOTED = {v[0] for v in VOTES}
NONFIRES = [c for c, _ in GOLD if c not in VOTED]


@pytest.fixture
def served_db(tmp_path, server):
    db = make_db(tmp_path / "src.db")
    server.serve(babble.db_url("cdr"), db)
    return db


def test_cdr_rows_labels_and_sparse_features(served_db, data_dir, server):
    ds = load_dataset("cdr", data_dir=data_dir, progress=False)
    assert server.calls == [babble.db_url("cdr")]
    assert (data_dir / "babble" / "cdr.db").is_file()
    train, dev, test = ds
    assert sp.issparse(train.x) and train.x.format == "csr" and train.x.dtype == np.float32
    assert train.x.shape == (len(TRAIN_VOTES), N_FEATURES)
    assert np.array_equal(train.x.toarray(), dense([c for c, _, _ in TRAIN_VOTES]))
    assert train.labels.tolist() == [(v + 1) / 2 for _, _, v in TRAIN_VOTES] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert np.array_equal(dev.x.toarray(), dense([c for c, _, _ in DEV_VOTES]))
    assert dev.labels.tolist() == [0.0, 1.0]
    # Test: one row per test candidate (candidate-table order), gold labels joined on id.
    assert np.array_equal(test.x.toarray(), dense(TEST_CANDS))
    assert test.labels.tolist() == [(GOLD_OF[c] + 1) / 2 for c in TEST_CANDS] == [1.0, 0.0, 1.0, 0.0]
    assert train.labels.dtype == np.float64
    # sparse rows can be subset (DataSet.subset works on CSR)
    assert np.array_equal(train.subset([4, 0]).x.toarray(), dense([3, 2]))


def test_supplements_are_aligned_with_the_rows(served_db, data_dir):
    weights = load_supplemental_info("cdr_weights", data_dir=data_dir, progress=False)
    # candidates 1 and 2 have two votes each, 3 one: 1/k per vote row
    assert [w.tolist() for w in weights] == [[0.5, 0.5, 0.5, 0.5, 1.0], [1.0, 1.0], [1.0] * 4]
    lfs = load_supplemental_info("cdr_LFs", data_dir=data_dir)
    assert [x.tolist() for x in lfs] == [[1, 1, 3, 2, 3], [2, 1], [1]]
    assert lfs[0].dtype == np.int64
    assert [x.tolist() for x in load_supplemental_info("reduced_cdr_LFs", data_dir=data_dir)] == [
        x.tolist() for x in lfs]
    nonfires = load_supplemental_info("cdr_nonfires", data_dir=data_dir)
    assert sp.issparse(nonfires.x)
    assert np.array_equal(nonfires.x.toarray(), dense(NONFIRES))  # gold_label table order
    assert nonfires.labels.tolist() == [(GOLD_OF[c] + 1) / 2 for c in NONFIRES]
    lf_labels, gold_labels = load_supplemental_info("cdr_labeling_info", data_dir=data_dir)
    assert lf_labels.tolist() == [[v, c, k] for c, k, v in VOTES]  # (value, candidate_id, key_id)
    assert gold_labels.tolist() == [[GOLD_OF[c], c] for c in sorted(GOLD_OF)]  # (value, candidate_id)
    assert lf_labels.dtype == np.int64


def test_one_pass_writes_every_cache_without_pickle(served_db, data_dir, server, monkeypatch):
    first = babble.load_cdr(data_dir, progress=False)
    folder = data_dir / "babble"
    expected = ["cdrx0.npz", "cdrx1.npz", "cdrx2.npz", "cdrlabels.npz", "cdr_weights.npz", "cdr_LF_ids.npz",
                "cdr_nonfiresx.npz", "cdr_nonfireslabels.npz", "cdr_LF_labels.npz", "cdr_gold_labels.npz"]
    for name in expected:
        with np.load(folder / name, allow_pickle=False) as npz:
            for key in npz.files:
                assert npz[key].dtype != object
    with np.load(folder / "cdrlabels.npz") as npz:
        assert sorted(npz.files) == ["labels_0", "labels_1", "labels_2"]
    # Caches answer every loader without the database.
    (folder / "cdr.db").unlink()
    monkeypatch.setattr(babble, "read_tables", lambda *a: pytest.fail("database read on a cache hit"))
    again = babble.load_cdr(data_dir)
    for a, b in zip(first, again):
        assert (a.x != b.x).nnz == 0 and np.array_equal(a.labels, b.labels)
    for supplement in ("cdr_weights", "cdr_LFs", "cdr_nonfires", "cdr_labeling_info"):
        assert load_supplemental_info(supplement, data_dir=data_dir) is not None
    assert server.calls == [babble.db_url("cdr")]


def test_old_format_cache_is_rebuilt(served_db, data_dir):
    folder = data_dir / "babble"
    folder.mkdir()
    # The original's cache: a pickled object array under 'weights'.
    np.savez(folder / "cdr_weights.npz", weights=np.array([np.ones(2), np.ones(3), np.ones(1)], dtype=object))
    weights = babble.load_cdr_weights(data_dir, progress=False)
    assert [len(w) for w in weights] == [5, 2, 4]


def test_missing_column_and_corrupt_db_are_named(tmp_path, data_dir):
    folder = data_dir / "babble"
    folder.mkdir()
    conn = sqlite3.connect(folder / "cdr.db")
    conn.executescript("CREATE TABLE candidate (id INTEGER PRIMARY KEY, kind INTEGER);")
    conn.close()
    with pytest.raises(babble.BabbleSchemaError, match="table 'candidate' lacks the columns \\['split'\\]"):
        babble.load_cdr(data_dir)
    (folder / "cdr.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(babble.BabbleSchemaError, match="not a readable SQLite database"):
        babble.load_cdr(data_dir)


def test_vote_on_unknown_candidate_is_an_error(tmp_path, data_dir, server):
    db = make_db(tmp_path / "x.db")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO label VALUES (99, 1, 1)")
    conn.commit()
    conn.close()
    server.serve(babble.db_url("cdr"), db)
    with pytest.raises(DatasetIntegrityError, match="label.candidate_id refers to candidate ids not in"):
        babble.load_cdr(data_dir)


def test_offline_error_names_the_bundle_and_the_path(data_dir):
    with pytest.raises(DataUnavailableError) as info:
        babble.load_cdr(data_dir)
    first = str(info.value).splitlines()[0]
    assert babble.DB_BUNDLES["cdr"] in first
    assert str((data_dir / "babble" / "cdr.db").resolve()) in first
    assert babble.db_url("cdr") in str(info.value)


# --------------------------------------------------------------------------- reduced cdr
def reduce(data_dir, cols):
    """What the babble_reduce experiment does: keep columns, save with save_reduced_cdr."""
    cdr = babble.load_cdr(data_dir, progress=False)
    nonfires = babble.load_cdr_nonfires(data_dir)
    return babble.save_reduced_cdr(data_dir, [d.x[:, cols] for d in cdr], nonfires.x[:, cols], feature_inds=cols)


def test_reduced_cdr_round_trip(served_db, data_dir):
    cols = np.array([0, 2, 5])
    paths = reduce(data_dir, cols)
    assert [p.name for p in paths] == ["reduced_cdr_x.npz", "reduced_cdr_nonfires_x.npz"]
    with np.load(paths[0], allow_pickle=False) as npz:
        assert str(npz["format"]) == babble.REDUCED_FORMAT and npz["feature_inds"].tolist() == [0, 2, 5]
        assert "x_2_indptr" in npz.files
    ds = load_dataset("reduced_cdr", data_dir=data_dir)
    assert isinstance(ds.train.x, np.ndarray) and ds.train.x.dtype == np.float32
    assert np.array_equal(ds.train.x, dense([c for c, _, _ in TRAIN_VOTES])[:, cols])
    assert np.array_equal(ds.test.x, dense(TEST_CANDS)[:, cols])
    assert ds.train.labels.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    nonfires = load_supplemental_info("reduced_cdr_nonfires", data_dir=data_dir)
    assert np.array_equal(nonfires.x, dense(NONFIRES)[:, cols])
    assert nonfires.labels.tolist() == [(GOLD_OF[c] + 1) / 2 for c in NONFIRES]
    matrices, nonfires_x = babble.load_reduced_cdr_x(data_dir)
    assert [m.shape for m in matrices] == [(5, 3), (2, 3), (4, 3)] and nonfires_x.shape == (6, 3)
    assert (data_dir / "babble" / "reduced_cdr.npz").is_file()
    # reduced_cdr_weights / labeling_info are the cdr ones
    assert [w.tolist() for w in load_supplemental_info("reduced_cdr_weights", data_dir=data_dir)][0] == [
        0.5, 0.5, 0.5, 0.5, 1.0]
    assert load_supplemental_info("reduced_cdr_labeling_info", data_dir=data_dir)[0].shape == (len(VOTES), 3)


def test_new_babble_reduce_output_is_not_masked_by_the_old_cache(served_db, data_dir):
    reduce(data_dir, np.array([0, 1]))
    assert load_dataset("reduced_cdr", data_dir=data_dir).train.x.shape == (5, 2)
    assert babble.load_reduced_cdr_nonfires(data_dir).x.shape == (6, 2)
    reduce(data_dir, np.array([1, 3, 4, 5]))
    assert load_dataset("reduced_cdr", data_dir=data_dir).train.x.shape == (5, 4)
    assert babble.load_reduced_cdr_nonfires(data_dir).x.shape == (6, 4)


def test_reduced_cdr_missing_names_the_babble_reduce_command(data_dir):
    with pytest.raises(babble.ReducedDataMissingError) as info:
        load_dataset("reduced_cdr", data_dir=data_dir)
    assert "scripts/babble_reduce.py" in str(info.value) and "--save-reduced-dir" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_reduced_cdr_checks(served_db, data_dir):
    babble.load_cdr(data_dir, progress=False)
    m = sp.csr_matrix(np.ones((3, 2)))
    with pytest.raises(ValueError, match="3 matrices"):
        babble.save_reduced_cdr(data_dir, [m, m], m)
    with pytest.raises(ValueError, match="same number of columns"):
        babble.save_reduced_cdr(data_dir, [m, m, m], sp.csr_matrix(np.ones((3, 5))))
    babble.save_reduced_cdr(data_dir, [m, m, m], m)  # 3 rows where cdr train has 5
    with pytest.raises(DatasetIntegrityError, match="split 0 has 3 rows but cdr has 5 labels"):
        babble.load_reduced_cdr(data_dir)
    # A file in the original's format (pickled object array 'reduced_x') is refused clearly.
    np.savez(data_dir / "babble" / "reduced_cdr_x.npz", reduced_x=np.array([m, m, m], dtype=object))
    with pytest.raises(DatasetIntegrityError, match="re-run babble_reduce"):
        babble.load_reduced_cdr(data_dir)
