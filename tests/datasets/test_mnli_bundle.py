"""Generated MultiNLI bundles (datasets/mnli_bundle.py) read back by the real loaders."""
import hashlib
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from datasets import mnli, mnli_bundle
from datasets.loader import load_dataset, load_supplemental_info
from datasets.mnli_bundle import BundleSpec, BundleSpecError, write_mnli_bundle

SMALL = BundleSpec(num_train=900, num_test=120, num_nonfires=80, num_columns=612, num_workers=15, seed=3)
FILES = (mnli.MAIN_FILE, mnli.NONFIRES_FILE, mnli.GENRES_FILE, mnli.NONFIRES_GENRES_FILE, mnli.TRAIN_ANNOTATORS,
         mnli.MATCHED_ANNOTATORS, mnli.MISMATCHED_ANNOTATORS)


def digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


@pytest.fixture
def small(data_dir):
    stats = write_mnli_bundle(data_dir, SMALL)
    return data_dir, stats


def test_the_loaders_read_what_is_written(small):
    data_dir, stats = small
    ds = load_dataset("mnli", data_dir=data_dir)
    assert ds.train.x.shape == (900, 600) and ds.test.x.shape == (120, 600) and ds.validation.num_examples == 0
    assert ds.train.x.dtype == np.float32 and np.isfinite(ds.train.x).all()
    # The real class proportions (130,899 / 130,900 / 130,903 of 392,702) at this size.
    assert np.bincount(ds.train.labels).tolist() == [300, 300, 300]
    assert np.bincount(ds.test.labels).tolist() == mnli_bundle.class_counts(120, mnli_bundle.REAL_TEST_CLASSES).tolist()
    with np.load(data_dir / "multinli_1.0" / mnli.MAIN_FILE) as npz:  # stored wider, as the bundle
        assert sorted(npz.files) == ["lab0", "lab2", "x0", "x2"] and npz["x0"].shape == (900, 612)
        assert np.array_equal(npz["x0"][:, :600], ds.train.x)
    nonfires = load_supplemental_info("mnli_nonfires", data_dir=data_dir)
    assert nonfires.x.shape == (80, 600) and set(np.unique(nonfires.labels)) == {0, 1, 2}

    # Groups: one per worker, every one non-empty, sizes as generated.
    ids = load_supplemental_info("mnli_ids", data_dir=data_dir)
    assert len(ids[0]) == 900 and len(ids[1]) == 0 and len(ids[2]) == 120
    sizes = Counter(ids[0].tolist())
    assert len(sizes) == 15 == stats["workers"]
    assert sorted(sizes.values(), reverse=True) == mnli_bundle.worker_sizes(900, 15, SMALL.size_sigma).tolist()
    assert max(sizes.values()) == stats["max"] and min(sizes.values()) == stats["min"] >= 1
    assert all(len(w) == 14 and w[0] == "A" for w in sizes)
    assert len(load_supplemental_info("mnli_nonfires_ids", data_dir=data_dir)) == 80

    genres = load_supplemental_info("mnli_genres", data_dir=data_dir)
    assert [len(g) for g in genres] == [900, 0, 120]
    assert set(genres[0]) <= set(mnli_bundle.TRAIN_GENRES) and set(genres[2]) == set(mnli_bundle.TRAIN_GENRES)
    nf_genres = load_supplemental_info("mnli_nonfires_genres", data_dir=data_dir)
    assert set(nf_genres) == set(mnli_bundle.NONFIRES_GENRES) and len(nf_genres) == 80


def test_dev_files_hold_unlabelled_pairs_as_multinli(small):
    data_dir, _ = small
    lines = (data_dir / "multinli_1.0" / mnli.MATCHED_ANNOTATORS).read_text().splitlines()
    extra = mnli_bundle.unlabelled_count(120, 9815, 185)
    assert extra == 2 and len(lines) == 120 + extra
    assert sum('"gold_label": "-"' in line for line in lines) == extra
    assert mnli_bundle.unlabelled_count(9815, 9815, 185) + 9815 == 10_000  # the real 10,000-line file


def test_generation_is_deterministic_and_the_seed_matters(small, tmp_path):
    data_dir, _ = small
    write_mnli_bundle(tmp_path / "again", SMALL)
    assert digests(tmp_path / "again" / "multinli_1.0") == digests(data_dir / "multinli_1.0")
    other = BundleSpec(**{**SMALL.__dict__, "seed": 4})
    write_mnli_bundle(tmp_path / "other", other)
    d0, d1 = digests(data_dir / "multinli_1.0"), digests(tmp_path / "other" / "multinli_1.0")
    assert all(d0[name] != d1[name] for name in FILES)


def test_rewriting_replaces_the_stale_annotator_cache(small):
    data_dir, _ = small
    first = load_supplemental_info("mnli_ids", data_dir=data_dir)[0]
    assert (data_dir / "multinli_1.0" / mnli.IDS_CACHE).is_file()
    write_mnli_bundle(data_dir, BundleSpec(**{**SMALL.__dict__, "seed": 5}))
    second = load_supplemental_info("mnli_ids", data_dir=data_dir)[0]
    assert set(first.tolist()).isdisjoint(second.tolist())


def test_an_interrupted_generation_leaves_the_folder_as_it_was(small, monkeypatch):
    data_dir, _ = small
    before = digests(data_dir / "multinli_1.0")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mnli_bundle, "write_annotator_jsonl", fail)
    with pytest.raises(OSError, match="disk full"):
        write_mnli_bundle(data_dir, BundleSpec(**{**SMALL.__dict__, "seed": 9}))
    assert digests(data_dir / "multinli_1.0") == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["multinli_1.0"]  # no temporary folder left


def test_real_size_worker_distribution():
    sizes = mnli_bundle.worker_sizes(392_702, 380, 1.4)
    stats = mnli_bundle.worker_statistics(sizes, 392_702)
    assert sizes.sum() == 392_702 and np.all(np.diff(sizes) <= 0)
    assert stats == {"workers": 380, "min": 7, "median": 395.0, "max": 26_561, "largest_share": 26_561 / 392_702,
                     "top10_share": pytest.approx(0.2833, abs=1e-4), "half_of_examples_by": 32}
    assert mnli_bundle.class_counts(392_702, mnli_bundle.REAL_TRAIN_CLASSES).tolist() == [130_899, 130_900, 130_903]
    default = BundleSpec()
    assert (default.num_train, default.num_test, default.num_nonfires, default.num_columns) == (392_702, 9_815,
                                                                                                9_832, 1_200)


@pytest.mark.parametrize("field, value, match", [
    ("num_train", 0, "num_train must be a positive integer; got 0"),
    ("num_workers", 901, "num_workers must be at most num_train \\(900\\).*got 901"),
    ("num_columns", 599, "num_columns must be an integer >= 600.*got 599"),
    ("size_sigma", -1.0, "size_sigma must be a finite number >= 0; got -1.0"),
    ("seed", -1, "seed must be an integer in \\[0, 2\\*\\*32\\); got -1"),
])
def test_bad_sizes_name_the_parameter(field, value, match):
    with pytest.raises(BundleSpecError, match=match):
        BundleSpec(**{**SMALL.__dict__, field: value})


def test_script_writes_a_bundle_and_refuses_bad_sizes_in_one_line(tmp_path):
    script = mnli_bundle.__file__.replace("datasets/mnli_bundle.py", "scripts/make_mnli_bundle.py")
    args = [sys.executable, script, "--data-dir", str(tmp_path), "--num-train", "300", "--num-test", "30",
            "--num-nonfires", "20", "--num-crowd-workers", "9"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "9 workers writing" in proc.stdout
    assert load_dataset("mnli", data_dir=tmp_path).train.x.shape == (300, 600)
    proc = subprocess.run(args[:-1] + ["400"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: num_workers must be at most num_train (300) so that "
                                                    "every worker writes an example; got 400")
