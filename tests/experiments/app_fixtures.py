"""Small files in the exact raw formats of the CDR database and the MultiNLI bundle.

Neither source is reachable offline, so the application tests generate them with a
known structure:

* :func:`make_cdr_db` writes a Snorkel/Babble Labble SQLite database (tables
  ``candidate``, ``label``, ``feature``, ``gold_label``, Snorkel's column order) to
  ``{data_dir}/babble/cdr.db``. Candidates carry a hidden class; a few features are
  informative, the rest noise. Labelling functions (LF ids in :data:`CDR_LF_IDS`; id 4
  is never used, so its group must be skipped) vote with known accuracies; some
  train candidates get no vote (the nonfires). The test split has 3,900
  candidates so that the paper's fixed test indices (up to 3894) exist.
* :func:`make_mnli_files` writes ``mnli.npz``, ``mnli_nonfires.npz``,
  ``mnli_genres.npz`` (pickled per-split object array, as the bundle's),
  ``mnli_nonfires_genres.npz`` and the three ``*_with_annotators.jsonl`` files to
  ``{data_dir}/multinli_1.0/``. Dev-matched has 9,815 rows and dev-mismatched 9,832 (the
  real sizes, so the paper's fixed indices exist); train is small, written by the
  workers in :data:`MNLI_WORKERS` (one of them labels at random).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

CDR_LF_IDS = (1, 2, 3, 5, 6, 7)
# LF id -> (fires on class, accuracy, firing probability)
CDR_LFS = {1: (1, 0.9, 0.5), 2: (0, 0.85, 0.5), 3: (1, 0.7, 0.3), 5: (0, 0.75, 0.3),
           6: (1, 0.6, 0.15), 7: (0, 0.95, 0.2)}
CDR_SPLIT_SIZES = (160, 60, 3900)
CDR_NONFIRES = 25
CDR_FEATURES = 30
CDR_INFORMATIVE = 6


def make_cdr_db(data_dir: Path, seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    babble = Path(data_dir) / "babble"
    babble.mkdir(parents=True, exist_ok=True)
    path = babble / "cdr.db"
    candidates, votes, features, gold = [], [], [], []
    cid = 0
    for split, size in enumerate(CDR_SPLIT_SIZES):
        for j in range(size + (CDR_NONFIRES if split == 0 else 0)):
            cid += 1
            nonfire = split == 0 and j >= size
            y = int(rng.rand() < 0.4)
            candidates.append((cid, split))
            gold.append((cid, 1 if y else -1))
            feats = {k for k in range(1, CDR_FEATURES + 1)
                     if rng.rand() < (0.05 if k > CDR_INFORMATIVE else (0.7 if (k % 2) == y else 0.03))}
            feats.add(int(rng.randint(1, CDR_FEATURES + 1)))  # every candidate has a feature
            features.extend((cid, k, 1.0) for k in sorted(feats))
            if nonfire:
                continue
            fired = []
            for lf, (cls, acc, p) in CDR_LFS.items():
                if rng.rand() < p:
                    vote = cls if rng.rand() < acc else 1 - cls
                    fired.append((cid, lf, 1 if vote else -1))
            if not fired:
                lf = CDR_LF_IDS[rng.randint(len(CDR_LF_IDS))]
                fired.append((cid, lf, 1 if CDR_LFS[lf][0] else -1))
            votes.extend(fired)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE candidate (id INTEGER PRIMARY KEY, type VARCHAR, split INTEGER);
        CREATE TABLE label (candidate_id INTEGER, key_id INTEGER, value INTEGER, PRIMARY KEY (candidate_id, key_id));
        CREATE TABLE feature (candidate_id INTEGER, key_id INTEGER, value FLOAT, PRIMARY KEY (candidate_id, key_id));
        CREATE TABLE gold_label (candidate_id INTEGER, key_id INTEGER, value INTEGER,
                                 PRIMARY KEY (candidate_id, key_id));
    """)
    conn.executemany("INSERT INTO candidate VALUES (?, 'chemical_disease', ?)", candidates)
    conn.executemany("INSERT INTO label VALUES (?, ?, ?)", votes)
    conn.executemany("INSERT INTO feature VALUES (?, ?, ?)", features)
    conn.executemany("INSERT INTO gold_label VALUES (?, 1, ?)", gold)
    conn.commit()
    conn.close()
    return path


# worker id -> (number of train examples, label noise: 0 = careful, 1 = random labels)
MNLI_WORKERS = {"A1X": 40, "A2Y": 25, "B3Z": 60, "C4Q": 8, "D5R": 15, "E6S": 30, "F7T": 5, "G8U": 20}
MNLI_NOISY_WORKER = "E6S"
MNLI_TEST_SIZE = 9815
MNLI_NONFIRES_SIZE = 9832
MNLI_COLUMNS = 620  # the loader keeps the first 600
MNLI_TRAIN_GENRES = ("fiction", "government", "slate", "telephone", "travel")
MNLI_NONFIRES_GENRES = ("facetoface", "letters", "nineeleven", "oup", "verbatim")


def _mnli_split(rng, n, means, noisy=None):
    y = rng.randint(0, 3, n)
    x = 0.5 * rng.randn(n, MNLI_COLUMNS) + means[y]
    labels = y.copy()
    if noisy is not None:
        labels[noisy] = rng.randint(0, 3, int(noisy.sum()))
    return x.astype(np.float32), labels.astype(np.int64)


def make_mnli_files(data_dir: Path, seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    folder = Path(data_dir) / "multinli_1.0"
    folder.mkdir(parents=True, exist_ok=True)
    means = np.zeros((3, MNLI_COLUMNS))
    means[:, :600] = 0.08 * rng.randn(3, 600)
    authors = np.concatenate([[w] * n for w, n in MNLI_WORKERS.items()])
    rng.shuffle(authors)
    x0, lab0 = _mnli_split(rng, len(authors), means, noisy=authors == MNLI_NOISY_WORKER)
    x2, lab2 = _mnli_split(rng, MNLI_TEST_SIZE, means)
    xn, labn = _mnli_split(rng, MNLI_NONFIRES_SIZE, means)
    np.savez(folder / "mnli.npz", x0=x0, lab0=lab0, x2=x2, lab2=lab2)
    np.savez(folder / "mnli_nonfires.npz", x=xn, labels=labn)
    train_genres = rng.choice(MNLI_TRAIN_GENRES, len(authors))
    test_genres = rng.choice(MNLI_TRAIN_GENRES, MNLI_TEST_SIZE)
    nonfires_genres = rng.choice(MNLI_NONFIRES_GENRES, MNLI_NONFIRES_SIZE)
    genres = np.empty(3, dtype=object)
    genres[0], genres[1], genres[2] = train_genres, np.array([], dtype=str), test_genres
    np.savez(folder / "mnli_genres.npz", genres=genres)  # object array, as in the bundle
    np.savez(folder / "mnli_nonfires_genres.npz", genres=nonfires_genres)
    names = {0: "entailment", 1: "neutral", 2: "contradiction"}
    for fname, labels, auth in (("multinli_1.0_train_with_annotators.jsonl", lab0, authors),
                                ("multinli_1.0_dev_matched_with_annotators.jsonl", lab2,
                                 rng.choice(["T1", "T2", "T3"], MNLI_TEST_SIZE)),
                                ("multinli_1.0_dev_mismatched_with_annotators.jsonl", labn,
                                 rng.choice(["T4", "T5"], MNLI_NONFIRES_SIZE))):
        with open(folder / fname, "w", encoding="utf-8") as f:
            for lab, a in zip(labels, auth):
                f.write(json.dumps({"gold_label": names[int(lab)], "sentence1": "s1", "sentence2": "s2",
                                    "sentence2_author": str(a)}) + "\n")
    return folder
