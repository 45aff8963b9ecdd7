"""mnli and its supplements on generated bundle files."""
import json

import numpy as np
import pytest

from datasets import mnli
from datasets.common import DatasetIntegrityError
from datasets.download import DataUnavailableError
from datasets.loader import load_dataset, load_supplemental_info

N_TRAIN, N_TEST, N_NONFIRES = 8, 5, 4
TRAIN_GENRES = ["fiction", "slate", "travel", "fiction", "government", "telephone", "slate", "travel"]
TEST_GENRES = ["fiction", "government", "slate", "telephone", "travel"]
NONFIRE_GENRES = ["facetoface", "letters", "nineeleven", "oup"]


def write_jsonl(path, authors, drop_gold_at=()):
    lines = []
    for i, author in enumerate(authors):
        lines.append(json.dumps({"gold_label": "neutral", "sentence2_author": author, "pairID": str(i)}))
        if i in drop_gold_at:  # an unlabelled pair: not in the feature files
            lines.append(json.dumps({"gold_label": "-", "sentence2_author": "Z9", "pairID": f"{i}x"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_bundle(folder):
    rng = np.random.RandomState(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x0": rng.randn(N_TRAIN, 1200).astype(np.float32), "lab0": rng.randint(0, 3, N_TRAIN),
        "x2": rng.randn(N_TEST, 1200).astype(np.float32), "lab2": rng.randint(0, 3, N_TEST),
    }
    np.savez(folder / mnli.MAIN_FILE, **arrays)
    nonfires = {"x": rng.randn(N_NONFIRES, 1200), "labels": rng.randint(0, 3, N_NONFIRES)}
    np.savez(folder / mnli.NONFIRES_FILE, **nonfires)
    # As the original wrote it: a ragged per-split list, i.e. a pickled object array.
    genres = np.empty(3, dtype=object)
    genres[:] = [np.array(TRAIN_GENRES), [], np.array(TEST_GENRES)]
    np.savez(folder / mnli.GENRES_FILE, genres=genres)
    np.savez(folder / mnli.NONFIRES_GENRES_FILE, genres=np.array(NONFIRE_GENRES))
    write_jsonl(folder / mnli.TRAIN_ANNOTATORS, ["A1", "B2", "A1", "C3", "B2", "A1", "D4", "C3"])
    write_jsonl(folder / mnli.MATCHED_ANNOTATORS, ["E5", "A1", "F6", "E5", "B2"], drop_gold_at=(1,))
    write_jsonl(folder / mnli.MISMATCHED_ANNOTATORS, ["G7", "G7", "H8", "A1"])
    return arrays, nonfires


@pytest.fixture
def bundle(data_dir):
    return make_bundle(data_dir / "multinli_1.0")


def test_mnli_keeps_600_columns_and_an_empty_validation(bundle, data_dir):
    arrays, _ = bundle
    ds = load_dataset("mnli", data_dir=data_dir)
    assert ds.train.x.shape == (N_TRAIN, 600) and ds.test.x.shape == (N_TEST, 600)
    assert np.array_equal(ds.train.x, arrays["x0"][:, :600]) and np.array_equal(ds.test.labels, arrays["lab2"])
    assert ds.validation.x.shape == (0, 600) and ds.validation.num_examples == 0
    nonfires = load_supplemental_info("mnli_nonfires", data_dir=data_dir)
    assert nonfires.x.shape == (N_NONFIRES, 600) and nonfires.x.dtype == np.float32


def test_genres_from_pickled_object_arrays(bundle, data_dir):
    genres = load_supplemental_info("mnli_genres", data_dir=data_dir)
    assert len(genres) == 3
    assert genres[0].tolist() == TRAIN_GENRES and genres[1].tolist() == [] and genres[2].tolist() == TEST_GENRES
    assert genres[0].dtype.kind == "U"
    assert load_supplemental_info("mnli_nonfires_genres", data_dir=data_dir).tolist() == NONFIRE_GENRES


def test_annotator_ids_skip_unlabelled_pairs_and_are_cached(bundle, data_dir):
    ids = load_supplemental_info("mnli_ids", data_dir=data_dir)
    assert [x.tolist() for x in ids] == [["A1", "B2", "A1", "C3", "B2", "A1", "D4", "C3"], [],
                                         ["E5", "A1", "F6", "E5", "B2"]]
    folder = data_dir / "multinli_1.0"
    with np.load(folder / mnli.IDS_CACHE, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["ids_0", "ids_1", "ids_2"]
    with np.load(folder / mnli.NONFIRES_IDS_CACHE, allow_pickle=False) as npz:
        assert npz["ids"].tolist() == ["G7", "G7", "H8", "A1"]
    for name in (mnli.TRAIN_ANNOTATORS, mnli.MATCHED_ANNOTATORS, mnli.MISMATCHED_ANNOTATORS):
        (folder / name).unlink()
    assert load_supplemental_info("mnli_nonfires_ids", data_dir=data_dir).tolist() == ["G7", "G7", "H8", "A1"]
    assert mnli.load_mnli_ids(data_dir)[0].tolist() == ids[0].tolist()


def test_original_pickled_id_caches_are_read_safely(data_dir):
    folder = data_dir / "multinli_1.0"
    folder.mkdir(parents=True)
    ids = np.empty(3, dtype=object)
    ids[:] = [["a", "b"], [], ["c"]]
    np.savez(folder / mnli.IDS_CACHE, ids=ids)
    assert [x.tolist() for x in mnli.load_mnli_ids(data_dir)] == [["a", "b"], [], ["c"]]


def test_id_count_must_match_the_feature_rows(bundle, data_dir):
    write_jsonl(data_dir / "multinli_1.0" / mnli.TRAIN_ANNOTATORS, ["A1", "B2"])
    with pytest.raises(DatasetIntegrityError, match="train: 2 annotator ids but .*lab0 has 8 rows"):
        mnli.load_mnli_ids(data_dir)


def test_public_release_without_authors_is_named(bundle, data_dir):
    (data_dir / "multinli_1.0" / mnli.TRAIN_ANNOTATORS).write_text(json.dumps({"gold_label": "neutral"}) + "\n")
    with pytest.raises(mnli.MnliFormatError, match="sentence2_author"):
        mnli.load_mnli_ids(data_dir)


def test_missing_files_are_fetched_from_the_bundle(tmp_path, data_dir, server):
    make_bundle(tmp_path / "bundle")
    for name in (mnli.MAIN_FILE, mnli.GENRES_FILE):
        server.serve(mnli.BUNDLE_BLOB_URL + name, tmp_path / "bundle" / name)
    assert load_dataset("mnli", data_dir=data_dir).train.num_examples == N_TRAIN
    assert mnli.load_mnli_genres(data_dir)[2].tolist() == TEST_GENRES
    assert server.calls == [mnli.BUNDLE_BLOB_URL + mnli.MAIN_FILE, mnli.BUNDLE_BLOB_URL + mnli.GENRES_FILE]


def test_missing_files_error_names_each_file_the_bundle_and_the_path(data_dir):
    with pytest.raises(DataUnavailableError) as info:
        mnli.load_mnli_ids(data_dir)
    first = str(info.value).splitlines()[0]
    for name in (mnli.TRAIN_ANNOTATORS, mnli.MATCHED_ANNOTATORS, mnli.MISMATCHED_ANNOTATORS):
        assert name in first
    assert mnli.BUNDLE in first and str((data_dir / "multinli_1.0").resolve()) in first


def test_too_few_columns_is_an_error(data_dir):
    folder = data_dir / "multinli_1.0"
    folder.mkdir(parents=True)
    np.savez(folder / mnli.NONFIRES_FILE, x=np.zeros((2, 300)), labels=np.zeros(2))
    with pytest.raises(mnli.MnliFormatError, match="at least 600 columns"):
        mnli.load_mnli_nonfires(data_dir)
