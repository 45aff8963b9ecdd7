"""Generated MultiNLI bundles in the exact format :mod:`datasets.mnli` reads, at any size.

The pre-processed bundle (CodaLab ``0x5258e3771b974983abfb10bfa75e207d``; see
docs/design.md, 'Datasets and preprocessing') and its annotator files are not reachable
offline, so the real-size credit-assignment run is measured on files generated here.
:func:`write_mnli_bundle` writes into ``{data_dir}/multinli_1.0/``:

* ``mnli.npz``: ``x0`` float32 (num_train, num_columns), ``lab0`` int64, ``x2`` float32
  (num_test, num_columns), ``lab2`` int64 (the loader keeps the first 600 columns; the
  bundle's matrices had 1,200, so that is the default);
* ``mnli_nonfires.npz``: ``x``, ``labels`` (dev-mismatched);
* ``mnli_genres.npz``: ``genres``, a pickled object array of the three per-split genre
  arrays (train, empty validation, dev-matched), as the bundle stores it;
  ``mnli_nonfires_genres.npz``: ``genres`` (str array);
* ``multinli_1.0_{train,dev_matched,dev_mismatched}_with_annotators.jsonl``: one JSON
  object per line with the public MultiNLI 1.0 fields (``annotator_labels``, ``genre``,
  ``gold_label``, ``pairID``, ``promptID``, ``sentence1``, ``sentence1_binary_parse``,
  ``sentence1_parse``, ``sentence2``, ``sentence2_binary_parse``, ``sentence2_parse``;
  placeholder text) plus ``sentence2_author``. The dev files hold 185 / 168 unlabelled
  (``gold_label`` ``-``) pairs per 9,815 / 9,832 labelled ones, as MultiNLI's 10,000-line
  dev files do; they are not in the feature files.

Defaults are the real sizes: 392,702 train rows (130,899 / 130,900 / 130,903 per class,
0 = entailment, 1 = neutral, 2 = contradiction), 9,815 dev-matched (3,479 / 3,123 /
3,213) and 9,832 dev-mismatched (3,463 / 3,129 / 3,240); other sizes keep these class
proportions.

**Workers (the credit-assignment groups).** ``num_workers`` crowd workers (default 380,
the number of distinct hypothesis writers Geva, Goldberg and Berant (EMNLP 2019, "Are We
Modeling the Task or the Annotator?") report for MultiNLI's training set; the real
annotator files were not available to check it). Their example counts follow the
quantiles of a lognormal with ``size_sigma`` (default 1.4; :func:`worker_sizes`), a heavy
right tail: at the real size the largest worker writes 26,561 examples (6.8%, about
5,300 per genre, within the range of the paper's genre-contribution figure, whose x axis
ends at 6,000), the ten largest 28%, 32 workers half of the set, the median worker 395
and the smallest 7. Every worker writes at least one example; the seed decides which id
gets which count. Ids look like Mechanical Turk worker ids (``A`` + 13 characters).
Each worker has a genre mix (Dirichlet(0.5) over the five training genres), a label-noise
rate (Beta(0.5, 8): mostly careful, a few careless) and a small feature shift (their
writing style), so that workers differ in their influence.

**Features.** Column j < 600 of a row is ``class mean + genre shift + worker shift +
N(0, 1)`` (class means 1.5 apart: a linear model reaches about 60% accuracy); the
columns beyond 600 are N(0, 1) noise, which the loader drops. The labels written are the
exact class counts above; a worker's noisy example is drawn from a random class's mean.

Generation is deterministic given ``seed`` (one ``RandomState``, fixed draw order, fixed
chunking), and the files are byte-identical for the same arguments (the npz members carry
a fixed timestamp). Memory stays at a few hundred MB whatever the size: the feature
matrices are generated and written in chunks of rows.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from datasets import mnli
from datasets.common import get_dataset_dir
from datasets.storage import atomic_write

logger = logging.getLogger(__name__)

REAL_TRAIN_CLASSES = (130_899, 130_900, 130_903)
REAL_TEST_CLASSES = (3_479, 3_123, 3_213)
REAL_NONFIRES_CLASSES = (3_463, 3_129, 3_240)
# Unlabelled ("-") pairs in MultiNLI's 10,000-line dev files.
REAL_TEST_UNLABELLED, REAL_NONFIRES_UNLABELLED = 185, 168
BUNDLE_COLUMNS = 1200
NUM_WORKERS = 380
SIZE_SIGMA = 1.4
LABEL_NAMES = ("entailment", "neutral", "contradiction")
TRAIN_GENRES = ("fiction", "government", "slate", "telephone", "travel")
NONFIRES_GENRES = ("facetoface", "letters", "nineeleven", "oup", "verbatim")
CLASS_DISTANCE = 1.5   # distance between two class means (features of unit noise)
GENRE_SHIFT = 0.5      # norm of a genre's mean shift
WORKER_SHIFT = 0.3     # typical norm of a worker's mean shift
CHUNK_ROWS = 16_384
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ID_CHARS = string.ascii_uppercase + string.digits


class BundleSpecError(ValueError):
    """A size or seed of a generated bundle is out of range."""


@dataclass(frozen=True)
class BundleSpec:
    """Sizes and seed of a generated bundle (defaults: the real MultiNLI sizes)."""

    num_train: int = sum(REAL_TRAIN_CLASSES)
    num_test: int = sum(REAL_TEST_CLASSES)
    num_nonfires: int = sum(REAL_NONFIRES_CLASSES)
    num_columns: int = BUNDLE_COLUMNS
    num_workers: int = NUM_WORKERS
    size_sigma: float = SIZE_SIGMA
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_test", "num_nonfires", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise BundleSpecError(f"{name} must be a positive integer; got {value!r}")
        if self.num_workers > self.num_train:
            raise BundleSpecError(f"num_workers must be at most num_train ({self.num_train}) so that every worker "
                             f"writes an example; got {self.num_workers}")
        if not isinstance(self.num_columns, (int, np.integer)) or self.num_columns < mnli.NUM_FEATURES:
            raise BundleSpecError(f"num_columns must be an integer >= {mnli.NUM_FEATURES} (the loader keeps the first "
                             f"{mnli.NUM_FEATURES}); got {self.num_columns!r}")
        if not np.isfinite(self.size_sigma) or self.size_sigma < 0:
            raise BundleSpecError(f"size_sigma must be a finite number >= 0; got {self.size_sigma!r}")
        if not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2 ** 32:
            raise BundleSpecError(f"seed must be an integer in [0, 2**32); got {self.seed!r}")


def class_counts(n: int, real: tuple[int, ...]) -> np.ndarray:
    """Per-class counts summing to ``n`` in the proportions of ``real`` (``real`` itself at its size)."""
    counts = np.floor(n * np.asarray(real, dtype=np.float64) / sum(real)).astype(np.int64)
    counts[: n - counts.sum()] += 1
    return counts


def worker_sizes(num_train: int, num_workers: int, sigma: float) -> np.ndarray:
    """Examples per worker, largest first: 1 each, the rest split in proportion to the
    lognormal(0, sigma) quantiles at (k - 1/2) / num_workers (largest remainders rounded
    up), so the spread is the distribution's, not a draw's."""
    q = (np.arange(num_workers, 0, -1) - 0.5) / num_workers
    weights = np.exp(sigma * ndtri(q))
    share = (num_train - num_workers) * weights / weights.sum()
    sizes = np.floor(share).astype(np.int64)
    rest = num_train - num_workers - int(sizes.sum())
    sizes[np.argsort(sizes - share, kind="stable")[:rest]] += 1
    return 1 + sizes


def worker_ids(num_workers: int, rng: np.random.RandomState) -> np.ndarray:
    """Distinct Mechanical-Turk-like ids, ``A`` + 13 upper-case letters and digits."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < num_workers:
        wid = "A" + "".join(rng.choice(list(_ID_CHARS), 13))
        if wid not in seen:
            seen.add(wid)
            ids.append(wid)
    return np.array(ids)


def _labels(n: int, real: tuple[int, ...], rng: np.random.RandomState) -> np.ndarray:
    counts = class_counts(n, real)
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int64)


class _NpzWriter:
    """An uncompressed npz (what ``np.savez`` writes) with fixed member timestamps; a
    member can be written in row chunks (:meth:`write_rows`)."""

    def __init__(self, f):
        self.zip = zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def _open(self, key):
        return self.zip.open(zipfile.ZipInfo(key + ".npy", date_time=_ZIP_TIME), "w", force_zip64=True)

    def write(self, key: str, array: np.ndarray) -> None:
        with self._open(key) as member:
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=array.dtype.hasobject)

    def write_rows(self, key: str, shape: tuple[int, int], dtype, chunks) -> None:
        """Member ``key`` of ``shape`` and ``dtype`` from the C-ordered row blocks ``chunks`` yields."""
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": tuple(int(s) for s in shape)}
        rows = 0
        with self._open(key) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for block in chunks:
                block = np.ascontiguousarray(block, dtype=dtype)
                member.write(block.tobytes())
                rows += block.shape[0]
        if rows != shape[0]:
            raise RuntimeError(f"{key}: wrote {rows} rows, expected {shape[0]}")

    def close(self) -> None:
        self.zip.close()


def _write_npz(path: Path, **arrays) -> None:
    with atomic_write(path) as f:
        writer = _NpzWriter(f)
        for key, value in arrays.items():
            writer.write(key, value)
        writer.close()


class _Generator:
    """The draws, in a fixed order, from one ``RandomState(seed)``."""

    def __init__(self, spec: BundleSpec):
        self.spec = spec
        rng = self.rng = np.random.RandomState(spec.seed)
        d = mnli.NUM_FEATURES
        self.means = CLASS_DISTANCE / np.sqrt(2 * d) * rng.randn(3, d)
        genres = TRAIN_GENRES + NONFIRES_GENRES
        self.genre_shift = dict(zip(genres, GENRE_SHIFT / np.sqrt(d) * rng.randn(len(genres), d)))
        W = spec.num_workers
        self.ids = worker_ids(W, rng)
        self.sizes = rng.permutation(worker_sizes(spec.num_train, W, spec.size_sigma))
        self.genre_mix = rng.dirichlet(np.full(len(TRAIN_GENRES), 0.5), W)
        self.noise_rate = rng.beta(0.5, 8.0, W)
        self.worker_shift = WORKER_SHIFT / np.sqrt(d) * rng.randn(W, d)
        # Train rows: workers in a random order of examples.
        self.train_worker = rng.permutation(np.repeat(np.arange(W), self.sizes))
        self.lab0 = _labels(spec.num_train, REAL_TRAIN_CLASSES, rng)
        cum = np.cumsum(self.genre_mix, axis=1)
        u = rng.rand(spec.num_train)
        g = (u[:, None] > cum[self.train_worker]).sum(axis=1)
        self.train_genres = np.array(TRAIN_GENRES)[np.minimum(g, len(TRAIN_GENRES) - 1)]
        noisy = rng.rand(spec.num_train) < self.noise_rate[self.train_worker]
        self.train_class = np.where(noisy, rng.randint(0, 3, spec.num_train), self.lab0)
        self.lab2 = _labels(spec.num_test, REAL_TEST_CLASSES, rng)
        self.test_genres = np.array(TRAIN_GENRES)[rng.randint(0, len(TRAIN_GENRES), spec.num_test)]
        self.labn = _labels(spec.num_nonfires, REAL_NONFIRES_CLASSES, rng)
        self.nonfires_genres = np.array(NONFIRES_GENRES)[rng.randint(0, len(NONFIRES_GENRES), spec.num_nonfires)]
        p = self.sizes / self.sizes.sum()
        self.test_authors = self.ids[rng.choice(W, spec.num_test, p=p)]
        self.nonfires_authors = self.ids[rng.choice(W, spec.num_nonfires, p=p)]

    def rows(self, classes, genres, workers=None):
        """Feature rows (float32, ``num_columns`` wide) in chunks of :data:`CHUNK_ROWS`."""
        d, C = mnli.NUM_FEATURES, self.spec.num_columns
        shift = np.stack([self.genre_shift[g] for g in sorted(self.genre_shift)])
        gidx = np.searchsorted(np.array(sorted(self.genre_shift)), genres)
        for start in range(0, len(classes), CHUNK_ROWS):
            sl = slice(start, start + CHUNK_ROWS)
            block = self.rng.standard_normal((len(classes[sl]), C))
            block[:, :d] += self.means[classes[sl]] + shift[gidx[sl]]
            if workers is not None:
                block[:, :d] += self.worker_shift[workers[sl]]
            yield block.astype(np.float32)


def write_annotator_jsonl(path: Path, labels, genres, authors, unlabelled: int, rng: np.random.RandomState,
                          prefix: str) -> None:
    """MultiNLI-style lines; ``unlabelled`` extra ``-`` lines are interleaved at random positions."""
    n = len(labels)
    extra = np.sort(rng.choice(n + unlabelled, unlabelled, replace=False)) if unlabelled else np.zeros(0, int)
    is_extra = np.zeros(n + unlabelled, dtype=bool)
    is_extra[extra] = True
    k = 0
    with atomic_write(path, "w") as f:
        for line in range(n + unlabelled):
            if is_extra[line]:
                gold, genre, author = "-", str(genres[k % n]), str(authors[k % n])
            else:
                gold, genre, author = LABEL_NAMES[int(labels[k])], str(genres[k]), str(authors[k])
                k += 1
            prompt = f"{prefix}{line // 3}"
            s1, s2 = f"premise {prompt}", f"hypothesis {prefix}{line}"
            record = {"annotator_labels": [gold], "genre": genre, "gold_label": gold,
                      "pairID": f"{prompt}{'enc'[line % 3]}", "promptID": prompt,
                      "sentence1": s1, "sentence1_binary_parse": f"( {s1} )", "sentence1_parse": f"(ROOT {s1})",
                      "sentence2": s2, "sentence2_binary_parse": f"( {s2} )", "sentence2_parse": f"(ROOT {s2})",
                      "sentence2_author": author}
            f.write(json.dumps(record) + "\n")


def unlabelled_count(n: int, real_labelled: int, real_unlabelled: int) -> int:
    return int(round(n * real_unlabelled / real_labelled))


def write_mnli_bundle(data_dir=None, spec: BundleSpec = BundleSpec()) -> dict:
    """Write a generated bundle to ``{data_dir}/multinli_1.0/`` and return its worker statistics.

    All files are written to a temporary folder next to it and moved in place at the end,
    so an interrupted run leaves the folder as it was; stale annotator caches
    (``mnli_annotators.npz``, ``mnli_nonfires_annotators.npz``) are removed, since they
    belong to the files replaced.
    """
    folder = get_dataset_dir(mnli.SUBDIR, data_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.generating.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        gen = _Generator(spec)
        s = spec
        logger.info("writing %s (train %d x %d, %d workers)", mnli.MAIN_FILE, s.num_train, s.num_columns,
                    s.num_workers)
        with atomic_write(tmp / mnli.MAIN_FILE) as f:
            w = _NpzWriter(f)
            w.write_rows("x0", (s.num_train, s.num_columns), np.float32,
                         gen.rows(gen.train_class, gen.train_genres, gen.train_worker))
            w.write("lab0", gen.lab0)
            w.write_rows("x2", (s.num_test, s.num_columns), np.float32, gen.rows(gen.lab2, gen.test_genres))
            w.write("lab2", gen.lab2)
            w.close()
        with atomic_write(tmp / mnli.NONFIRES_FILE) as f:
            w = _NpzWriter(f)
            w.write_rows("x", (s.num_nonfires, s.num_columns), np.float32, gen.rows(gen.labn, gen.nonfires_genres))
            w.write("labels", gen.labn)
            w.close()
        genres = np.empty(3, dtype=object)
        genres[0], genres[1], genres[2] = gen.train_genres, np.array([], dtype=str), gen.test_genres
        _write_npz(tmp / mnli.GENRES_FILE, genres=genres)
        _write_npz(tmp / mnli.NONFIRES_GENRES_FILE, genres=gen.nonfires_genres)
        logger.info("writing the annotator files")
        write_annotator_jsonl(tmp / mnli.TRAIN_ANNOTATORS, gen.lab0, gen.train_genres, gen.ids[gen.train_worker],
                              0, gen.rng, "t")
        write_annotator_jsonl(tmp / mnli.MATCHED_ANNOTATORS, gen.lab2, gen.test_genres, gen.test_authors,
                              unlabelled_count(s.num_test, sum(REAL_TEST_CLASSES), REAL_TEST_UNLABELLED), gen.rng, "m")
        write_annotator_jsonl(tmp / mnli.MISMATCHED_ANNOTATORS, gen.labn, gen.nonfires_genres, gen.nonfires_authors,
                              unlabelled_count(s.num_nonfires, sum(REAL_NONFIRES_CLASSES), REAL_NONFIRES_UNLABELLED),
                              gen.rng, "x")
        folder.mkdir(exist_ok=True)
        for cache in (mnli.IDS_CACHE, mnli.NONFIRES_IDS_CACHE):
            (folder / cache).unlink(missing_ok=True)
        for path in sorted(tmp.iterdir()):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return worker_statistics(gen.sizes, s.num_train)


def worker_statistics(sizes: np.ndarray, num_train: int) -> dict:
    """Number of workers and the spread of their example counts (for the report)."""
    desc = np.sort(sizes)[::-1]
    return {"workers": int(len(sizes)), "min": int(desc[-1]), "median": float(np.median(desc)),
            "max": int(desc[0]), "largest_share": float(desc[0] / num_train),
            "top10_share": float(desc[:10].sum() / num_train),
            "half_of_examples_by": int(np.searchsorted(np.cumsum(desc), num_train / 2) + 1)}
