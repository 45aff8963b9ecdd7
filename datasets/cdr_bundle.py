"""A generated Babble Labble CDR database in the exact format :mod:`datasets.babble` reads.

The real database (CodaLab bundle ``0x38e021ee339a4f6aa21d9c4a16c1b7ee``) is not
reachable offline, so the offline main job (``scripts/reproduce.py``) runs the CDR
pipeline (``babble_reduce`` then ``data_valuation``) on a database generated here, and
labels every figure drawn from it as generated. :func:`write_cdr_db` writes
``{data_dir}/babble/cdr.db``: a SQLite file with Snorkel's tables ``candidate`` (id, type,
split 0/1/2 = train/validation/test), ``label`` (candidate, labelling function, vote
+-1), ``feature`` (candidate, feature, 1.0) and ``gold_label`` (candidate, 1, +-1).

**Structure.** Each candidate has a hidden class (positive with probability 0.4). The
first :data:`INFORMATIVE` features fire mostly for one class, the others are noise; every
candidate has at least one feature. The labelling functions :data:`LFS` (ids 1, 2, 3, 5,
6, 7: id 4 is never used, as an LF without votes in the real data) vote for their class
with a known accuracy and firing rate; a train candidate no LF fires on gets one vote of a
random LF, except the last :attr:`CdrSpec.num_nonfires` train candidates, which get none
(the "nonfires"). The test split has 3,900 candidates by default so that the paper's
fixed test indices (up to 3,894) exist. Deterministic given ``seed``.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

import numpy as np

from datasets.common import get_dataset_dir

SUBDIR = "babble"
DB_NAME = "cdr.db"
# LF id -> (class it fires for, accuracy, firing probability)
LFS = {1: (1, 0.9, 0.5), 2: (0, 0.85, 0.5), 3: (1, 0.7, 0.3), 5: (0, 0.75, 0.3),
       6: (1, 0.6, 0.15), 7: (0, 0.95, 0.2)}
INFORMATIVE = 6
POSITIVE_RATE = 0.4

SCHEMA = """
    CREATE TABLE candidate (id INTEGER PRIMARY KEY, type VARCHAR, split INTEGER);
    CREATE TABLE label (candidate_id INTEGER, key_id INTEGER, value INTEGER, PRIMARY KEY (candidate_id, key_id));
    CREATE TABLE feature (candidate_id INTEGER, key_id INTEGER, value FLOAT, PRIMARY KEY (candidate_id, key_id));
    CREATE TABLE gold_label (candidate_id INTEGER, key_id INTEGER, value INTEGER,
                             PRIMARY KEY (candidate_id, key_id));
"""


class CdrSpecError(ValueError):
    """A size or seed of a generated database is out of range."""


@dataclass(frozen=True)
class CdrSpec:
    """Sizes and seed of a generated CDR database."""

    num_train: int = 800
    num_validation: int = 200
    num_test: int = 3900
    num_nonfires: int = 50
    num_features: int = 40
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_validation", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise CdrSpecError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(self.num_nonfires, (int, np.integer)) or self.num_nonfires < 0:
            raise CdrSpecError(f"num_nonfires must be an integer >= 0; got {self.num_nonfires!r}")
        if not isinstance(self.num_features, (int, np.integer)) or self.num_features <= INFORMATIVE:
            raise CdrSpecError(f"num_features must be an integer > {INFORMATIVE}; got {self.num_features!r}")
        if not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2 ** 32:
            raise CdrSpecError(f"seed must be an integer in [0, 2**32); got {self.seed!r}")


def generate_rows(spec: CdrSpec):
    """``(candidates, votes, features, gold)``: the rows of the four tables."""
    rng = np.random.RandomState(spec.seed)
    lf_ids = list(LFS)
    candidates, votes, features, gold = [], [], [], []
    cid = 0
    sizes = (spec.num_train, spec.num_validation, spec.num_test)
    for split, size in enumerate(sizes):
        for j in range(size + (spec.num_nonfires if split == 0 else 0)):
            cid += 1
            nonfire = split == 0 and j >= size
            y = int(rng.rand() < POSITIVE_RATE)
            candidates.append((cid, split))
            gold.append((cid, 1 if y else -1))
            feats = {k for k in range(1, spec.num_features + 1)
                     if rng.rand() < (0.05 if k > INFORMATIVE else (0.7 if (k % 2) == y else 0.03))}
            feats.add(int(rng.randint(1, spec.num_features + 1)))  # every candidate has a feature
            features.extend((cid, k, 1.0) for k in sorted(feats))
            if nonfire:
                continue
            fired = []
            for lf, (cls, acc, p) in LFS.items():
                if rng.rand() < p:
                    vote = cls if rng.rand() < acc else 1 - cls
                    fired.append((cid, lf, 1 if vote else -1))
            if not fired:
                lf = lf_ids[rng.randint(len(lf_ids))]
                fired.append((cid, lf, 1 if LFS[lf][0] else -1))
            votes.extend(fired)
    return candidates, votes, features, gold


def write_cdr_db(data_dir=None, spec: CdrSpec = CdrSpec()) -> dict:
    """Write ``{data_dir}/babble/cdr.db`` (replacing it and the caches built from it);
    return the row counts. Written to a temporary file and moved in place at the end."""
    folder = get_dataset_dir(SUBDIR, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DB_NAME
    tmp = folder / f".{DB_NAME}.generating.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    candidates, votes, features, gold = generate_rows(spec)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(SCHEMA)
            conn.executemany("INSERT INTO candidate VALUES (?, 'chemical_disease', ?)", candidates)
            conn.executemany("INSERT INTO label VALUES (?, ?, ?)", votes)
            conn.executemany("INSERT INTO feature VALUES (?, ?, ?)", features)
            conn.executemany("INSERT INTO gold_label VALUES (?, 1, ?)", gold)
            conn.commit()
        finally:
            conn.close()
        # Caches built from an earlier database (the loader's cdr_*.npz, babble_reduce's output).
        for stale in [*folder.glob("cdr*.npz"), *folder.glob("reduced_cdr*.npz")]:
            stale.unlink()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": path, "candidates": len(candidates), "votes": len(votes), "features": len(features)}
