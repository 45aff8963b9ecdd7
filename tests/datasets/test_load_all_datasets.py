"""scripts/load_all_datasets.py."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from datasets import loader
from datasets.common import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "load_all_datasets.py"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(SCRIPT.parent))  # for `import _bootstrap`, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("load_all_datasets_under_test", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_prints_shapes_skips_unknown_and_reports_failures(script, data_dir, capsys):
    rc = script.main(["--data-dir", str(data_dir), "--dataset-ids", "digits", "bogus", "hospital",
                      "--supplement-ids", "none"])
    out = capsys.readouterr().out.splitlines()
    assert "Unknown dataset ID: bogus" in out
    assert "digits: train=(1437, 64), val=None, test=(360, 64)" in out
    failure = [line for line in out if line.startswith("hospital: FAILED: DataUnavailableError")]
    assert len(failure) == 1
    assert str((data_dir / "hospital" / "dataset_diabetes.zip").resolve()) in failure[0]
    assert rc == 2  # missing data is an input error


def test_success_exits_zero_and_unknown_supplements_are_skipped(script, data_dir, capsys):
    rc = script.main(["--data-dir", str(data_dir), "--dataset-ids", "breast_cancer", "--supplement-ids", "bogus"])
    out = capsys.readouterr().out.splitlines()
    assert out == ["Unknown supplement ID: bogus", "breast_cancer: train=(455, 30), val=None, test=(114, 30)"]
    assert rc == 0


def test_omitted_flags_mean_everything(script, data_dir, capsys, monkeypatch):
    # The original crashed here (len(None)); now omitted = all registered ids.
    monkeypatch.setattr(loader, "DATASETS", {"digits": loader.DATASETS["digits"],
                                             "synthetic_binary": loader.DATASETS["synthetic_binary"]})
    monkeypatch.setattr(loader, "SUPPLEMENTS", {"thing_ids": lambda data_dir, progress: [np.arange(3), []]})
    rc = script.main(["--data-dir", str(data_dir)])
    out = capsys.readouterr().out.splitlines()
    assert out == ["digits: train=(1437, 64), val=None, test=(360, 64)",
                   "synthetic_binary: train=(600, 8), val=None, test=(200, 8)",
                   "thing_ids: [(3,), list]"]
    assert rc == 0
    assert script.main(["--data-dir", str(data_dir), "--dataset-ids", "--supplement-ids", "none"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # an explicitly empty list also means all


def test_center_and_bias_flags(script, data_dir, capsys):
    script.main(["--data-dir", str(data_dir), "--dataset-ids", "digits", "--supplement-ids", "none",
                 "--center-data", "--append-bias"])
    assert capsys.readouterr().out.splitlines() == ["digits: train=(1437, 65), val=None, test=(360, 65)"]


def test_runs_from_the_repo_root_without_pythonpath(data_dir):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["INFLUENCE_OFFLINE"] = "1"  # never download, even where there is network
    proc = subprocess.run([sys.executable, "scripts/load_all_datasets.py", "--data-dir", str(data_dir),
                           "--dataset-ids", "synthetic_binary", "spam", "--supplement-ids", "none"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    assert "synthetic_binary: train=(600, 8), val=None, test=(200, 8)" in lines
    assert any(line.startswith("spam: FAILED: DataUnavailableError") and "enron1.tar.gz" in line for line in lines)
    assert proc.returncode == 2  # missing data is an input error
    assert "www.aueb.gr" in proc.stderr  # the full error, with every URL, is logged
