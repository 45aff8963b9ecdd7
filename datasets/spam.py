"""``spam``: Enron-Spam, preprocessed "Enron1" (spec ``datasets.md`` §2; paper: "Enron").

Preprocessing (§2, in order): read every file of ``enron1/spam`` then of ``enron1/ham``
(bytes decoded as latin-1); lemmatise each document with spaCy keeping alphabetic,
non-stop tokens; labels 1 = spam, 0 = ham (float64); shuffle the (document, label) list
with ``RandomState(0)``; the first ``int(0.8 n)`` documents are train, none validation,
the rest test; a ``CountVectorizer(min_df=5)`` vocabulary fitted on the train documents
gives dense int64 count matrices.

Result on the full corpus: train (4137, V), validation (0, V), test (1035, V), where the
vocabulary size V depends on the spaCy pipeline.

Modernisation (README decision 5), documented deviations from the original:

* File names are read in sorted order (the original used ``os.listdir`` order, which is
  filesystem-dependent and cannot be recovered).
* spaCy 3 cannot reproduce the original's out-of-vocabulary filter (``Lexeme.is_oov`` is
  read-only and means "has no vector"), so it is dropped: tokens are kept if
  ``token.is_alpha and not token.is_stop``. The pipeline is ``en_core_web_sm`` when that
  package is installed (its parser and NER are excluded: they do not change lemmas),
  otherwise ``spacy.blank('en')`` with the lookup lemmatizer from ``spacy-lookups-data``.
  The pipeline and package versions are part of the cache file name
  (``spam/spam_truncate-None_<pipeline>.npz``) and stored in it (key ``nlp_pipeline``),
  so a cache made with another pipeline is never reused.
* The cache stores each count matrix as CSR parts (``X_train_data``, ``X_train_indices``,
  ``X_train_indptr``, ``X_train_shape``, ...) instead of the original's dense ``X_train``
  (same values, a few MB instead of ~220 MB), plus ``Y_*``, ``vocabulary`` (the
  CountVectorizer's sorted feature names) and ``nlp_pipeline``.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets.common import DataSet, Datasets, get_dataset_dir, read_cache
from datasets.download import extract_archive, maybe_download
from datasets.storage import save_arrays

logger = logging.getLogger(__name__)

SUBDIR = "spam"
ARCHIVE_NAME = "enron1.tar.gz"
# The AUEB host is also reachable as www2.aueb.gr; plain http because other projects
# report a broken TLS certificate there (§2). The sha256 guards the bytes either way.
ARCHIVE_URLS = (
    "http://www.aueb.gr/users/ion/data/enron-spam/preprocessed/enron1.tar.gz",
    "http://www2.aueb.gr/users/ion/data/enron-spam/preprocessed/enron1.tar.gz",
)
ARCHIVE_SHA256 = "fc85a8d3fa5e9845a7ee572de3e92ae057f7c2be06171818539ef0983da89ad8"
SOURCE = "Enron-Spam preprocessed Enron1, Metsis, Androutsopoulos and Paliouras 2006"
CORPUS_DIR = "enron1"
CLASS_DIRS = (("spam", 1.0), ("ham", 0.0))  # read order and label (§2 steps 2, 4)
SHUFFLE_SEED = 0
TRAIN_FRACTION = 0.8
VALID_FRACTION = 0.0
MIN_DF = 5
CACHE_KEYS = tuple(f"X_{s}_{part}" for s in ("train", "valid", "test")
                   for part in ("data", "indices", "indptr", "shape")) + ("Y_train", "Y_valid", "Y_test")

BLANK_PIPELINE = "blank_en"
SM_PIPELINE = "en_core_web_sm"


class SpacyPipelineError(RuntimeError):
    """No usable spaCy pipeline (neither en_core_web_sm nor spacy-lookups-data)."""


# --------------------------------------------------------------------------- spaCy
def _sm_installed() -> bool:
    return importlib.util.find_spec(SM_PIPELINE) is not None


def nlp_pipeline_tag() -> str:
    """Identify the pipeline that :func:`make_nlp` would build, without loading it.

    For example ``spacy-3.8.18_blank_en-lookups-1.0.5`` or
    ``spacy-3.8.18_en_core_web_sm-3.8.0``; used in the cache file name.
    """
    spacy_version = importlib.metadata.version("spacy")
    if _sm_installed():
        try:
            model_version = importlib.metadata.version(SM_PIPELINE)
        except importlib.metadata.PackageNotFoundError:
            model_version = "unknown"
        return f"spacy-{spacy_version}_{SM_PIPELINE}-{model_version}"
    try:
        lookups_version = importlib.metadata.version("spacy-lookups-data")
    except importlib.metadata.PackageNotFoundError as exc:
        raise SpacyPipelineError(
            "spam preprocessing needs en_core_web_sm or the spacy-lookups-data package "
            "(pip install spacy-lookups-data); neither is installed") from exc
    return f"spacy-{spacy_version}_{BLANK_PIPELINE}-lookups-{lookups_version}"


_NLP_CACHE: dict = {}


def make_nlp():
    """Build the spaCy pipeline of README decision 5; returns ``(nlp, tag)``.

    The pipeline is built once per process (loading takes a second or two).
    """
    import spacy

    tag = nlp_pipeline_tag()
    if tag in _NLP_CACHE:
        return _NLP_CACHE[tag], tag
    if _sm_installed():
        nlp = spacy.load(SM_PIPELINE, exclude=["parser", "ner"])
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()  # loads the lemma_lookup table from spacy-lookups-data
    _NLP_CACHE[tag] = nlp
    return nlp, tag


def lemmatize(texts: Sequence[str], nlp, progress: bool = True) -> list[str]:
    """Each text reduced to the lemmas of its alphabetic non-stop tokens, space-joined."""
    from tqdm import tqdm

    if texts:
        nlp.max_length = max(nlp.max_length, max(len(t) for t in texts) + 1)
    docs = nlp.pipe(texts, batch_size=64)
    out = []
    for doc in tqdm(docs, total=len(texts), desc="spaCy", unit="doc",
                    disable=not (progress and sys.stderr.isatty())):
        out.append(" ".join(tok.lemma_ for tok in doc if tok.is_alpha and not tok.is_stop))
    return out


# --------------------------------------------------------------------------- corpus
def read_documents(corpus_dir: str | os.PathLike, truncate: int | None = None) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)``: all spam files then all ham files, each in sorted name order.

    ``truncate`` keeps only the first ``truncate`` files of each class. Labels are float64
    (1.0 = spam).
    """
    corpus_dir = Path(corpus_dir)
    texts: list[str] = []
    labels: list[float] = []
    for sub, label in CLASS_DIRS:
        folder = corpus_dir / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"spam corpus folder {folder} is missing")
        names = sorted(os.listdir(folder))[:truncate]
        for name in names:
            texts.append((folder / name).read_bytes().decode("latin-1"))
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.float64)


def shuffle_permutation(n: int, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """The order in which ``RandomState(seed).shuffle`` puts a list of length ``n``.

    Shuffling the (document, label) list in place, as the original did, and indexing
    with this permutation give the same order (same Fisher-Yates draws).
    """
    perm = np.arange(n)
    np.random.RandomState(seed).shuffle(perm)
    return perm


def process_spam_texts(texts: Sequence[str], labels: np.ndarray, nlp,
                       progress: bool = True) -> dict[str, np.ndarray]:
    """§2 steps 3-7 on raw documents; returns the cache arrays (and ``vocabulary``)."""
    from sklearn.feature_extraction.text import CountVectorizer

    n = len(texts)
    if n != len(labels):
        raise ValueError(f"texts and labels must have the same length; got {n} and {len(labels)}")
    docs = lemmatize(texts, nlp, progress=progress)
    perm = shuffle_permutation(n)
    docs = [docs[i] for i in perm]
    labels = np.asarray(labels, dtype=np.float64)[perm]
    n_train = int(TRAIN_FRACTION * n)
    n_valid = int(VALID_FRACTION * n)
    vectorizer = CountVectorizer(min_df=MIN_DF)
    vectorizer.fit(docs[:n_train])

    def counts(part):
        return vectorizer.transform(part).toarray().astype(np.int64)

    return {
        "X_train": counts(docs[:n_train]), "Y_train": labels[:n_train],
        "X_valid": counts(docs[n_train:n_train + n_valid]), "Y_valid": labels[n_train:n_train + n_valid],
        "X_test": counts(docs[n_train + n_valid:]), "Y_test": labels[n_train + n_valid:],
        "vocabulary": np.array(vectorizer.get_feature_names_out(), dtype=str),
    }


def _pack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cache layout: each dense count matrix ``X_*`` stored as CSR parts.

    The dense int64 matrices are ~99.5% zeros (170 MB for train); as ``X_*_data``,
    ``X_*_indices``, ``X_*_indptr``, ``X_*_shape`` the cache is a few MB and loads fast.
    """
    import scipy.sparse as sp

    out = {}
    for key, value in arrays.items():
        if key.startswith("X_"):
            m = sp.csr_matrix(value)
            out.update({f"{key}_data": m.data, f"{key}_indices": m.indices, f"{key}_indptr": m.indptr,
                        f"{key}_shape": np.array(m.shape, dtype=np.int64)})
        else:
            out[key] = value
    return out


def _unpack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import scipy.sparse as sp

    out = {k: v for k, v in arrays.items() if not k.startswith("X_")}
    for key in ("X_train", "X_valid", "X_test"):
        shape = tuple(int(n) for n in arrays[f"{key}_shape"])
        m = sp.csr_matrix((arrays[f"{key}_data"], arrays[f"{key}_indices"], arrays[f"{key}_indptr"]),
                          shape=shape)
        out[key] = m.toarray().astype(np.int64)
    return out


def ensure_corpus(dataset_dir: Path, progress: bool = True) -> Path:
    """``spam/enron1`` with its ``spam`` and ``ham`` folders, downloading and extracting if needed."""
    corpus = dataset_dir / CORPUS_DIR
    if all((corpus / sub).is_dir() for sub, _ in CLASS_DIRS):
        return corpus
    archive = maybe_download(ARCHIVE_URLS, ARCHIVE_NAME, dataset_dir, sha256=ARCHIVE_SHA256,
                             progress=progress, source=SOURCE)
    extract_archive(archive, dataset_dir)
    if not all((corpus / sub).is_dir() for sub, _ in CLASS_DIRS):
        raise FileNotFoundError(f"{archive} did not contain {CORPUS_DIR}/spam and {CORPUS_DIR}/ham")
    return corpus


def cache_path(dataset_dir: Path, truncate: int | None, tag: str) -> Path:
    return dataset_dir / f"spam_truncate-{truncate}_{tag}.npz"


def load_spam(data_dir=None, truncate: int | None = None, force_refresh: bool = False,
              progress: bool = True) -> Datasets:
    """Load ``spam``: dense float32 counts (train (4137, V), validation (0, V), test (1035, V)).

    Labels are float64 0./1. (1 = spam).
    """
    if truncate is not None and (int(truncate) != truncate or truncate < 0):
        raise ValueError(f"truncate must be None or a non-negative integer; got {truncate!r}")
    dataset_dir = get_dataset_dir(SUBDIR, data_dir)
    tag = nlp_pipeline_tag()
    path = cache_path(dataset_dir, truncate, tag)
    packed = None if force_refresh else read_cache(path, CACHE_KEYS)
    if packed is not None:
        arrays = _unpack(packed)
    else:
        corpus = ensure_corpus(dataset_dir, progress=progress)
        texts, labels = read_documents(corpus, truncate)
        nlp, tag = make_nlp()
        logger.info("processing %d e-mails with spaCy pipeline %s", len(texts), tag)
        arrays = process_spam_texts(texts, labels, nlp, progress=progress)
        arrays["nlp_pipeline"] = np.array(tag)

        save_arrays(path, **_pack(arrays))
        logger.info("cached %s", path)
    return Datasets(
        train=DataSet(arrays["X_train"], arrays["Y_train"]),
        validation=DataSet(arrays["X_valid"].reshape(0, arrays["X_train"].shape[1]), arrays["Y_valid"]),
        test=DataSet(arrays["X_test"], arrays["Y_test"]),
    )
