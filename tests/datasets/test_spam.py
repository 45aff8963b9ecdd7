"""spam (spec datasets.md §2): seeded shuffle, spaCy rule, cache naming, real Enron1 archive."""
import numpy as np
import pytest

from datasets import spam
from datasets.download import ChecksumMismatchError
from datasets.loader import load_dataset
from tests.datasets.helpers import FileServer, real_archive, sha256_of, write_tar_gz

SPEC_FIRST_TEN = [3324, 15, 4950, 3964, 2315, 861, 2350, 1767, 965, 2630]


def test_shuffle_permutation_matches_the_spec():
    assert spam.shuffle_permutation(5172)[:10].tolist() == SPEC_FIRST_TEN


def test_shuffling_the_pair_list_equals_indexing_with_the_permutation():
    # The original shuffled a list of (doc, label) pairs in place with RandomState(0).
    pairs = [(f"doc{i}", i % 3) for i in range(5172)]
    np.random.RandomState(0).shuffle(pairs)
    perm = spam.shuffle_permutation(5172)
    assert [p[0] for p in pairs] == [f"doc{i}" for i in perm]


SPAM_TEXT = "Subject: cheap pills\nBuy cheap pills now! The best offers, 100% free money for you."
HAM_TEXT = "Subject: meeting\nThe children were running to the meeting about gas contracts and meters."


def small_corpus(tmp_path, n_spam=8, n_ham=12):
    files = {}
    # Added in reverse name order: the loader must not depend on archive or listdir order.
    for i in reversed(range(n_ham)):
        files[f"enron1/ham/{i:04d}.ham.txt"] = f"{HAM_TEXT} item{i}".encode("latin-1")
    for i in reversed(range(n_spam)):
        files[f"enron1/spam/{i:04d}.spam.txt"] = f"{SPAM_TEXT} caf\xe9 {i}".encode("latin-1")
    files["enron1/Summary.txt"] = b"summary"
    return write_tar_gz(tmp_path / "src" / "enron1.tar.gz", files)


@pytest.fixture
def served_small(tmp_path, server, monkeypatch):
    archive = small_corpus(tmp_path)
    monkeypatch.setattr(spam, "ARCHIVE_SHA256", sha256_of(archive))
    server.serve(spam.ARCHIVE_URLS[1], archive)  # the primary host is down: the mirror is used
    return archive


def test_read_documents_sorted_spam_first_latin1(served_small, data_dir):
    corpus = spam.ensure_corpus(data_dir / "spam", progress=False)
    texts, labels = spam.read_documents(corpus)
    assert labels.dtype == np.float64 and labels.tolist() == [1.0] * 8 + [0.0] * 12
    assert texts[0].endswith("caf\xe9 0") and texts[7].endswith("caf\xe9 7")
    assert texts[8].endswith("item0") and texts[19].endswith("item11")
    t_texts, t_labels = spam.read_documents(corpus, truncate=3)
    assert len(t_texts) == 6 and t_labels.tolist() == [1.0] * 3 + [0.0] * 3


def test_lemmatize_keeps_alphabetic_non_stop_lemmas():
    nlp, tag = spam.make_nlp()
    (out,) = spam.lemmatize(["The children were running, 42 times! mice"], nlp, progress=False)
    words = out.lower().split()
    assert "child" in words and "run" in words and "mouse" in words
    assert "the" not in words and "were" not in words and "42" not in words and "," not in words


def test_small_corpus_end_to_end(served_small, data_dir, server):
    ds = spam.load_spam(data_dir, progress=False)
    assert server.calls == list(spam.ARCHIVE_URLS)
    n = 20
    n_train = int(0.8 * n)
    assert ds.train.num_examples == n_train and ds.test.num_examples == n - n_train
    assert ds.validation.num_examples == 0 and ds.validation.x.shape[1] == ds.train.x.shape[1]
    labels = np.array([1.0] * 8 + [0.0] * 12)[spam.shuffle_permutation(n)]
    assert np.array_equal(np.concatenate([ds.train.labels, ds.test.labels]), labels)
    cache = spam.cache_path(data_dir / "spam", None, spam.nlp_pipeline_tag())
    with np.load(cache, allow_pickle=False) as npz:
        vocabulary = list(npz["vocabulary"])
        assert str(npz["nlp_pipeline"]) == spam.nlp_pipeline_tag()
    # min_df=5 on the train documents: words of both templates, lowercased, sorted.
    assert vocabulary == sorted(vocabulary)
    for word in ("cheap", "pill", "child", "run", "contract", "subject"):
        assert word in vocabulary
    assert not any(w.isdigit() for w in vocabulary)
    # Counts: every spam document says "cheap" twice.
    col = vocabulary.index("cheap")
    x = np.vstack([ds.train.x, ds.test.x])
    assert np.array_equal(x[:, col], np.where(labels == 1, 2.0, 0.0))
    assert ds.train.x.dtype == np.float32 and ds.train.labels.dtype == np.float64


def test_cache_is_reused_and_tied_to_the_spacy_pipeline(served_small, data_dir, monkeypatch):
    first = spam.load_spam(data_dir, progress=False)
    calls = []
    real_make = spam.make_nlp
    monkeypatch.setattr(spam, "make_nlp", lambda: calls.append(1) or real_make())
    again = spam.load_spam(data_dir, progress=False)
    assert calls == []
    assert np.array_equal(first.train.x, again.train.x) and np.array_equal(first.test.labels, again.test.labels)
    # A different pipeline (e.g. en_core_web_sm installed later) must not reuse that cache.
    monkeypatch.setattr(spam, "nlp_pipeline_tag", lambda: "spacy-3.8.18_en_core_web_sm-3.8.0")
    spam.load_spam(data_dir, progress=False)
    assert calls == [1]
    names = sorted(p.name for p in (data_dir / "spam").glob("spam_truncate-None_*.npz"))
    assert len(names) == 2


def test_truncate_goes_into_the_cache_name(served_small, data_dir):
    ds = spam.load_spam(data_dir, truncate=6, progress=False)
    assert ds.train.num_examples + ds.test.num_examples == 12
    assert list((data_dir / "spam").glob("spam_truncate-6_*.npz"))
    with pytest.raises(ValueError, match="truncate"):
        spam.load_spam(data_dir, truncate=-1)


def test_archive_with_the_wrong_digest_is_rejected_and_not_kept(tmp_path, data_dir, server):
    server.serve(spam.ARCHIVE_URLS[0], small_corpus(tmp_path))  # not the real Enron1 bytes
    with pytest.raises(ChecksumMismatchError):
        spam.load_spam(data_dir)
    assert sorted(p.name for p in (data_dir / "spam").iterdir()) == []


def test_pipeline_tag_records_which_pipeline(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "en_core_web_sm" else real_find_spec(name, *a))
    tag = spam.nlp_pipeline_tag()
    assert tag.startswith("spacy-3.") and "_blank_en-lookups-" in tag


# --------------------------------------------------------------------------- real archive
def _serve_real(server_like):
    archive = real_archive("spam/enron1.tar.gz")
    server_like.serve(spam.ARCHIVE_URLS[0], archive)
    return archive


@pytest.mark.realdata
def test_real_enron_truncated_through_the_real_archive(data_dir, server):
    _serve_real(server)
    ds = spam.load_spam(data_dir, truncate=150, progress=False)
    assert server.calls == [spam.ARCHIVE_URLS[0]]
    assert ds.train.num_examples == 240 and ds.test.num_examples == 60
    assert len(list((data_dir / "spam" / "enron1" / "ham").iterdir())) == 3672
    assert len(list((data_dir / "spam" / "enron1" / "spam").iterdir())) == 1500
    assert np.concatenate([ds.train.labels, ds.test.labels]).sum() == 150


@pytest.mark.slow
@pytest.mark.realdata
def test_real_enron_full_shapes_and_cache_round_trip(data_dir, monkeypatch):
    fs = FileServer()
    _serve_real(fs)
    from datasets import download

    monkeypatch.setattr(download, "fetch_url", fs)
    ds = load_dataset("spam", data_dir=data_dir, progress=False)
    assert ds.train.x.shape[0] == 4137 and ds.test.x.shape[0] == 1035
    assert ds.validation.x.shape == (0, ds.train.x.shape[1])
    assert ds.train.labels.sum() + ds.test.labels.sum() == 1500
    assert ds.train.x.shape[1] > 1000  # the min_df=5 vocabulary of spaCy-3 lemmas
    assert np.all(ds.train.x == np.round(ds.train.x)) and ds.train.x.min() == 0
    import shutil

    shutil.rmtree(data_dir / "spam" / "enron1")
    (data_dir / "spam" / "enron1.tar.gz").unlink()
    monkeypatch.setattr(spam, "make_nlp", lambda: pytest.fail("reprocessed on a cache hit"))
    again = load_dataset("spam", data_dir=data_dir)
    for a, b in zip(ds, again):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)
