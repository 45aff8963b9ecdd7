"""Names of the original release's public interface that this suite keeps but never calls.

Code written against the original may still use them, so they stay, each checked here
against an independent oracle. This is the one list of them:

* ``datasets.common.DataSet``: ``clone``, ``initialize_indices``, ``next_batch_indices``,
  ``next_batch``, ``next_batch_with_indices`` (the original's mini-batching);
* ``experiments.common.benchmark`` (the original's timer);
* the flags ``--grad-batch-size`` and ``--hessian-batch-size`` of
  ``scripts/credit_assignment.py``: batch sizes here follow ``--max-memory``, so the flags
  are refused in one line (exit code 2) instead of being silently ignored.
"""
import subprocess
import sys

import numpy as np
import pytest

from datasets.common import DataSet
from experiments.common import benchmark
from tests.conftest import REPO_ROOT

KEPT = {
    DataSet: ("clone", "initialize_indices", "next_batch_indices", "next_batch", "next_batch_with_indices"),
}


def test_the_kept_names_exist():
    for owner, names in KEPT.items():
        missing = [n for n in names if not callable(getattr(owner, n, None))]
        assert not missing, f"{owner.__name__} lost {missing}"


def small_set(n=5, seed=3):
    x = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
    return DataSet(x, np.arange(n) % 2, seed=seed), x


def test_batches_are_epochs_of_seeded_permutations_and_straddle_epochs():
    ds, x = small_set()
    oracle = np.random.RandomState(3)  # the DataSet's seed: one permutation per epoch
    stream = np.concatenate([oracle.permutation(5) for _ in range(4)])
    got = np.concatenate([ds.next_batch_indices(3) for _ in range(6)])  # 18 draws: 4 epochs, 3 straddled
    assert np.array_equal(got, stream[:18])
    bx, by, idx = ds.next_batch_with_indices(2)
    assert np.array_equal(idx, stream[18:20])
    assert np.array_equal(bx, x[idx].astype(np.float32)) and np.array_equal(by, np.arange(5)[idx] % 2)
    bx, by = ds.next_batch(4)  # runs on into a fifth epoch, as the oracle's next permutation says
    nxt = np.concatenate([stream[20:], oracle.permutation(5)])[:4]
    assert np.array_equal(bx, x[nxt].astype(np.float32)) and np.array_equal(by, nxt % 2)


def test_initialize_indices_starts_a_new_epoch():
    ds, _ = small_set()
    oracle = np.random.RandomState(3)
    first = oracle.permutation(5)
    assert np.array_equal(ds.next_batch_indices(2), first[:2])
    ds.initialize_indices()
    assert np.array_equal(ds.next_batch_indices(5), oracle.permutation(5))


def test_clone_shares_the_arrays_and_copies_the_batching_state():
    ds, _ = small_set()
    ds.next_batch_indices(2)
    twin = ds.clone()
    assert twin.x is ds.x and twin.labels is ds.labels
    ahead = [twin.next_batch_indices(4) for _ in range(3)]  # the clone draws first ...
    # ... and the original, unaffected, draws the same batches afterwards.
    assert all(np.array_equal(a, ds.next_batch_indices(4)) for a in ahead)


def test_an_empty_set_has_no_batches():
    with pytest.raises(ValueError, match="empty DataSet"):
        DataSet(np.zeros((0, 2)), np.zeros(0)).next_batch(1)


def test_benchmark_prints_the_task_and_its_time(capsys):
    with benchmark("fitting"):
        pass
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fitting..." and len(lines) == 2
    head, seconds, tail = lines[1].rpartition(" took ")[0], lines[1].split(" took ")[1].split()[0], lines[1][-9:]
    assert head == "fitting" and tail == " seconds." and float(seconds) >= 0.0
    with pytest.raises(RuntimeError), benchmark("failing"):
        raise RuntimeError("boom")
    assert capsys.readouterr().out == "failing...\n"  # nothing more after an exception


@pytest.mark.parametrize("flag", ["--grad-batch-size", "--hessian-batch-size"])
def test_the_original_batch_size_flags_are_refused_in_one_line(flag, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "credit_assignment.py"), flag, "400",
                           "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"credit_assignment.py: error: {flag} is not used by this script (batches follow "
                           f"--max-memory); leave it out (see --help)\n")
    assert not (tmp_path / "out").exists()  # refused before anything is written
