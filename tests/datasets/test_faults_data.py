"""Fault injection on the data files, through the scripts in a subprocess.

Each scenario damages a file under a fresh ``--data-dir`` and checks the exit code and the
exact message (or the clean recovery). No network: ``INFLUENCE_OFFLINE=1``.
"""
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from datasets import hospital
from datasets.storage import save_arrays
from tests.conftest import REPO_ROOT
from tests.datasets.helpers import real_archive


def run(script, *args):
    env = {**os.environ, "INFLUENCE_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *map(str, args)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def load_hospital(data_dir):
    return run("load_all_datasets.py", "--data-dir", data_dir, "--dataset-ids", "hospital", "--supplement-ids", "none")


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_non_finite_features_stop_the_run_with_exit_2_and_no_result(tmp_path):
    # A hospital cache with NaN and inf features (e.g. edited by hand): a cache hit, then the check.
    data_dir, out_dir = tmp_path / "D", tmp_path / "O"
    rng = np.random.RandomState(0)
    x = rng.rand(40, 127).astype(np.float32)
    x[7, 3] = x[9, 4] = np.nan
    x[12, 5] = np.inf
    y = np.tile([1, -1], 20).astype(np.int8)
    save_arrays(data_dir / "hospital" / hospital.CACHE_NAME, X_train=x, Y_train=y, lr_Y_train=(y + 1) // 2,
                X_test=x[:10] * 0, Y_test=y[:10], lr_Y_test=(y[:10] + 1) // 2)
    proc = run("subsets_infl_logreg.py", "--dataset-id", "hospital", "--num-subsets", "10", "--data-dir", data_dir,
               "--out-dir", out_dir, "--no-plots")
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc.stderr) == [
        "error: dataset 'hospital': train x has 3 non-finite value(s) (NaN or infinite); the first is at row 7, "
        "column 3. Fix or delete the data files (and the cache) of this dataset"]
    assert "Traceback" not in proc.stderr
    # Nothing written: the data are checked before the run folder and its config.json.
    assert not out_dir.exists() or not [p for p in out_dir.rglob("*") if p.is_file()]


def test_corrupt_archive_on_disk_is_named_as_corrupt_in_the_first_line(tmp_path):
    data_dir = tmp_path / "D"
    archive = data_dir / "hospital" / hospital.ARCHIVE_NAME
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"PK\x03\x04 an interrupted download")
    proc = load_hospital(data_dir)
    assert proc.returncode == 2, proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("hospital: FAILED")]
    assert len(failed) == 1
    line = failed[0]
    assert line.startswith(f"hospital: FAILED: ChecksumMismatchError: {archive.resolve()} is corrupt (sha256 ")
    assert f"expected {hospital.ARCHIVE_SHA256})" in line
    assert "delete it and rerun to download it again, or replace it with a correct copy" in line
    assert archive.read_bytes() == b"PK\x03\x04 an interrupted download"  # kept for the user to inspect


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_nested_decompression_bomb_is_refused_with_exit_2(tmp_path):
    # The current-UCI fallback archive has no published digest, so its content is what is checked.
    data_dir = tmp_path / "D"
    archive = data_dir / "hospital" / hospital.CURRENT_UCI_NAME
    archive.parent.mkdir(parents=True)
    archive.write_bytes(_zip({"nested/diabetes.zip": _zip({"diabetic_data.csv": bytes(256 << 20)})}))
    proc = load_hospital(data_dir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ArchiveLimitError" in proc.stdout and "decompression bomb" in proc.stdout
    assert not (data_dir / "hospital" / "dataset_diabetes").exists()


@pytest.mark.realdata
def test_truncated_hospital_cache_is_rebuilt_offline(tmp_path):
    # `truncate -s 20000000 D/hospital/hospital.npz`, then load hospital offline.
    data_dir = tmp_path / "D"
    (data_dir / "hospital").mkdir(parents=True)
    archive = real_archive("hospital/dataset_diabetes.zip")
    (data_dir / "hospital" / hospital.ARCHIVE_NAME).write_bytes(archive.read_bytes())
    assert load_hospital(data_dir).returncode == 0
    cache = data_dir / "hospital" / hospital.CACHE_NAME
    os.truncate(cache, 20_000_000)
    proc = load_hospital(data_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"WARNING datasets.common: {cache} is damaged: BadZipFile" in proc.stderr
    assert "ignoring this cache and rebuilding it from the raw data" in proc.stderr
    assert "hospital: train=(20000, 127), val=None, test=(81766, 127)" in proc.stdout
    assert cache.stat().st_size > 50_000_000
