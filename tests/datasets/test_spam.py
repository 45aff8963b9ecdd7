"""spam: seeded shuffle, spaCy rule, cache naming, real Enron1 archive."""
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


# --------------------------------------------------------------------------- vocabulary filter
# A tiny stand-in for en_lexeme_prob: word -> log probability. Ranked: the, Subject, cheap,
# meeting (tie with cheap, after it by the word), pills, gas, children, zebra.
TINY_TABLE = {"the": -3.0, "Subject": -6.0, "cheap": -7.0, "meeting": -7.0, "pills": -8.0,
              "gas": -8.5, "children": -9.0, "zebra": -20.0}


@pytest.fixture
def tiny_table(tmp_path, monkeypatch):
    import gzip
    import json

    path = tmp_path / "en_lexeme_prob.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(TINY_TABLE, f)
    monkeypatch.setattr(spam, "lexeme_prob_path", lambda: path)
    return path


def test_top_words_ranks_by_probability_then_word(tiny_table):
    assert spam.top_words(1) == {"the"}
    # "cheap" and "meeting" tie at -7.0: the word breaks the tie (alphabetical).
    assert spam.top_words(3) == {"the", "Subject", "cheap"}
    assert spam.top_words(4) == {"the", "Subject", "cheap", "meeting"}
    assert spam.top_words(100) == set(TINY_TABLE)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(spam.VocabFilterError, match="vocab_top_k"):
            spam.top_words(bad)


def test_the_real_table_is_the_one_of_spacy_lookups_data():
    words = spam.top_words(spam.VOCAB_TOP_K)
    assert len(words) == spam.VOCAB_TOP_K
    assert {"the", "meeting", "money"} <= words and "zzzzqx" not in words


def test_filter_keeps_a_token_whose_text_or_lowercase_is_a_top_word(tiny_table):
    nlp, _ = spam.make_nlp()
    text = "SUBJECT Subject subject: cheap Cheap pills meetings zebra gas"
    (kept,) = spam.lemmatize([text], nlp, progress=False, keep=spam.top_words(5))
    # Subject is a top word: "Subject" by its text; "SUBJECT"/"subject" match neither
    # "Subject" by text nor by lowercase. "Cheap" matches by lowercase. "meetings" is not a
    # top word (only "meeting" is), "zebra" and "gas" are below the top 5. The lemmas keep
    # the case of the text (CountVectorizer lowercases them later).
    assert kept.split() == ["Subject", "cheap", "Cheap", "pill"]
    (unfiltered,) = spam.lemmatize([text], nlp, progress=False)
    assert "zebra" in unfiltered.split() and "gas" in unfiltered.split()


def test_vocab_filter_selects_the_vocabulary_and_names_the_cache(served_small, data_dir, tiny_table):
    # K = 6 keeps: the, Subject, cheap, meeting, pills, gas (children, zebra are out).
    filtered = spam.load_spam(data_dir, progress=False, vocab_top_k=6)
    unfiltered = spam.load_spam(data_dir, progress=False, vocab_filter="none")
    folder = data_dir / "spam"
    tag = spam.nlp_pipeline_tag()
    vocab = {}
    for name in ("lexeme_prob-top6", "none"):
        path = spam.cache_path(folder, None, tag, name)
        assert path.name == f"spam_truncate-None_{tag}_vocab-{name}.npz"
        with np.load(path, allow_pickle=False) as npz:
            vocab[name] = list(npz["vocabulary"])
            assert str(npz["vocab_filter"]) == name
    # Lemmas of the kept words ("meeting" -> "meet"), lowercased by CountVectorizer.
    assert vocab["lexeme_prob-top6"] == ["cheap", "gas", "meet", "pill", "subject"]
    assert {"child", "contract", "run", "buy", "money"} <= set(vocab["none"])
    assert filtered.train.x.shape[1] == 5 and unfiltered.train.x.shape[1] == len(vocab["none"])
    # Same documents, same order, same labels: only the columns differ.
    assert np.array_equal(filtered.train.labels, unfiltered.train.labels)
    col_f, col_u = vocab["lexeme_prob-top6"].index("cheap"), vocab["none"].index("cheap")
    assert np.array_equal(filtered.train.x[:, col_f], unfiltered.train.x[:, col_u])
    with pytest.raises(spam.VocabFilterError, match="vocab_filter must be one of"):
        spam.load_spam(data_dir, vocab_filter="oov")


def test_default_filter_is_the_lexeme_prob_word_list():
    assert spam.DEFAULT_VOCAB_FILTER == "lexeme_prob"
    assert spam.vocab_filter_tag() == f"lexeme_prob-top{spam.VOCAB_TOP_K}"
    assert spam.vocab_filter_tag("none") == "none"


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
def test_real_enron_default_filter_gives_the_paper_feature_count(data_dir, monkeypatch):
    """Full Enron1 with the default filter: the paper's 3,294 features; then a cache hit."""
    fs = FileServer()
    _serve_real(fs)
    from datasets import download

    monkeypatch.setattr(download, "fetch_url", fs)
    ds = load_dataset("spam", data_dir=data_dir, progress=False)
    assert ds.train.x.shape[0] == 4137 and ds.test.x.shape[0] == 1035
    assert ds.validation.x.shape == (0, ds.train.x.shape[1])
    assert ds.train.labels.sum() + ds.test.labels.sum() == 1500
    if spam.nlp_pipeline_tag() == "spacy-3.8.18_blank_en-lookups-1.0.5":  # the calibration pipeline
        assert ds.train.x.shape[1] == spam.PAPER_NUM_FEATURES == 3294
    else:
        assert abs(ds.train.x.shape[1] - spam.PAPER_NUM_FEATURES) < 300
    assert np.all(ds.train.x == np.round(ds.train.x)) and ds.train.x.min() == 0
    import shutil

    shutil.rmtree(data_dir / "spam" / "enron1")
    (data_dir / "spam" / "enron1.tar.gz").unlink()
    monkeypatch.setattr(spam, "make_nlp", lambda: pytest.fail("reprocessed on a cache hit"))
    again = load_dataset("spam", data_dir=data_dir)
    for a, b in zip(ds, again):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_enron_unfiltered_rule_keeps_every_alphabetic_non_stop_lemma(data_dir, server):
    _serve_real(server)
    ds = spam.load_spam(data_dir, vocab_filter="none", progress=False)
    assert ds.train.x.shape == (4137, 5297) and ds.test.x.shape == (1035, 5297)
