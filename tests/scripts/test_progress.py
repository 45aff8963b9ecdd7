"""The one progress policy (influence/progress.py) and what a job writing to a file shows.

Log mode writes one line per ``INFLUENCE_PROGRESS_INTERVAL`` seconds at most (done/total,
rate, time left) plus a last line; the tests use an interval of 0 (a line per update) or
a huge one (only the first and last lines) instead of waiting 30 seconds.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from influence import progress
from tests.conftest import REPO_ROOT

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d progress: (?P<desc>.+): (?P<n>\d+)/(?P<total>\d+) "
                  r"\(\d+%\) \|\s+(?P<rate>\S+) \| \S+ elapsed, \S+ left$")


@pytest.fixture
def mode(monkeypatch):
    def set_(mode, interval=None):
        monkeypatch.setenv(progress.MODE_ENV, mode)
        if interval is None:
            monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
        else:
            monkeypatch.setenv(progress.INTERVAL_ENV, str(interval))
    return set_


def test_log_lines_carry_done_total_rate_and_time_left(mode):
    mode("log", 0)
    out = io.StringIO()
    assert list(progress.progress_bar(range(5), "exact refits", stream=out)) == list(range(5))
    lines = out.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m["n"]) for m in parsed][:6] == [0, 1, 2, 3, 4, 5] and {m["total"] for m in parsed} == {"5"}
    assert {m["desc"] for m in parsed} == {"exact refits"}
    assert parsed[-1]["rate"].endswith("it/s") and parsed[-1]["n"] == "5"


def test_log_mode_prints_at_most_one_line_per_interval(mode):
    mode("log", 1e6)   # nothing between the first and the last line
    out = io.StringIO()
    bar = progress.progress_bar(None, "download", 1000, True, stream=out, unit="B")
    for _ in range(100):
        bar.update(10)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "0/1000" in lines[0] and "1000/1000" in lines[1] and "B/s" in lines[1]


def test_modes_and_the_default_interval(mode, monkeypatch):
    mode("off")
    out = io.StringIO()
    assert list(progress.progress_bar(range(3), "x", stream=out)) == [0, 1, 2] and out.getvalue() == ""
    mode("log")
    assert progress.log_interval() == 30.0 and progress.effective_mode(False) == "off"
    assert progress.effective_mode(None) == progress.effective_mode(True) == "log"
    mode("bar")
    assert progress.effective_mode() == "bar"
    mode("auto")
    monkeypatch.setattr(sys, "stderr", io.StringIO())   # output redirected: not a terminal
    assert progress.effective_mode() == "log"
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    assert progress.log_interval() == 30.0
    with pytest.raises(ValueError, match="one of auto, bar, log, off; got 'loud'"):
        progress.set_mode("loud")


def test_a_job_writing_to_a_file_prints_progress_during_its_long_phases(tmp_path):
    """ss_logreg with its output redirected to a file (as a cluster job or nohup): the
    cross-validation fits (phase 0) and the exact refits (phase 6, the longest phase of
    the paper's runs) print progress lines between their 'computing' and 'done' lines."""
    log = tmp_path / "job.log"
    env = {k: v for k, v in os.environ.items() if k != progress.MODE_ENV}
    env[progress.INTERVAL_ENV] = "0"
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, str(REPO_ROOT / "scripts" / "subsets_infl_logreg.py"), "--dataset-id",
                              "breast_cancer", "--num-subsets", "3", "--no-intermediate-results",
                              "--out-dir", str(tmp_path / "out")], stdout=f, stderr=subprocess.STDOUT, env=env,
                             cwd=REPO_ROOT, timeout=600)
    lines = log.read_text().splitlines()
    assert rc == 0, "\n".join(lines[-20:])
    for phase, desc in ((0, "cross-validation fits"), (6, "exact refits")):
        start = next(i for i, line in enumerate(lines) if re.search(rf"phase {phase} \w+: computing", line))
        end = next(i for i, line in enumerate(lines) if re.search(rf"phase {phase} \w+: done", line))
        inside = [LINE.match(line) for line in lines[start:end]]
        inside = [m for m in inside if m]
        assert inside and {m["desc"] for m in inside} == {desc}, lines[start:end + 1]
        assert inside[-1]["n"] == inside[-1]["total"]
    # With --progress off nothing is printed.
    with open(log, "w") as f:
        subprocess.call([sys.executable, str(REPO_ROOT / "scripts" / "subsets_infl_logreg.py"), "--dataset-id",
                         "breast_cancer", "--num-subsets", "3", "--no-intermediate-results", "--progress", "off",
                         "--out-dir", str(tmp_path / "out"), "--force-refresh"], stdout=f, stderr=subprocess.STDOUT,
                        env=env, cwd=REPO_ROOT, timeout=600)
    assert " progress: " not in log.read_text()
