"""Fault injection: every damaged file, crash and bad input ends in a clean recovery or a
one-line message with the documented exit code (README "What happens when things go wrong").

Each scenario runs in a subprocess, as a user would meet it. Two kinds of run:

* a toy experiment of the framework (pure numpy, five phases, no TensorFlow: a process
  takes well under a second), killed with SIGKILL at every phase boundary and in the
  middle of every phase file's write; the resumed run must give arrays bitwise identical
  to an uninterrupted one;
* the real ``scripts/subsets_infl_logreg.py`` on ``breast_cancer`` with 3 groups per
  type (one reference run, then reruns on copies of its run folder).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from datasets import storage

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "subsets_infl_logreg.py"
SS_ARGS = ["--dataset-id", "breast_cancer", "--num-subsets", "3", "--no-plots", "--no-progress"]
RUN_ID = "breast_cancer_ihvp-explicit_seed-0_size-0.1_num-3"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")
TF_NOISE = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "cpu_feature_guard",
            "rebuild TensorFlow")


def run_script(script, args, umask=None, timeout=600, **kw):
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask else None, **kw)


def foreign_lines(stderr: str) -> list[str]:
    """stderr lines that are neither our log records nor their continuation."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def assert_one_line_error(proc, code, *fragments):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = foreign_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(("error: ", "subsets_infl_logreg.py: error: ")), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


# ----------------------------------------------------------------------------- toy runs
TOY = textwrap.dedent('''
    import logging, os, signal, sys
    logging.basicConfig(level=logging.INFO)
    sys.path.insert(0, {repo!r})
    import numpy as np
    from datasets import storage
    from experiments.common import Experiment, phase

    KILL = os.environ.get("FAULT_KILL", "")  # "before:K" or "write:K"

    def maybe_kill(when, index):
        if KILL == f"{{when}}:{{index}}":
            os.kill(os.getpid(), signal.SIGKILL)

    real_save_result = storage.save_result

    def save_result(path, result, attrs=None):
        for k in range(5):
            if KILL == f"write:{{k}}" and os.path.basename(str(path)).startswith(f"result_{{k}}-"):
                with storage.atomic_write(path) as f:  # die with half a file written
                    f.write(b"PK\\x03\\x04 half of a zip member"); f.flush(); os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
        return real_save_result(path, result, attrs)

    storage.save_result = save_result

    class Chain(Experiment):
        experiment_id = "chain"
        run_id = "seed-0"

        @phase(0)
        def draw(self):
            maybe_kill("before", 0)
            return {{"x": np.random.RandomState(0).normal(size=(50, 4))}}

        @phase(1)
        def gram(self):
            maybe_kill("before", 1)
            return {{"G": self.R["x"].T @ self.R["x"]}}

        @phase(2)
        def solve(self):
            maybe_kill("before", 2)
            return {{"w": np.linalg.solve(self.R["G"] + np.eye(4), self.R["x"].sum(0))}}

        @phase(3)
        def groups(self):
            maybe_kill("before", 3)
            rng = np.random.RandomState(int(1e6 * abs(self.R["w"][0])) % 1000)
            return {{"groups": [rng.choice(50, s, replace=False) for s in (3, 5, 8)]}}

        @phase(4)
        def effects(self):
            maybe_kill("before", 4)
            return {{"effects": np.array([self.R["x"][g].sum() * self.R["w"].sum() for g in self.R["groups"]])}}

    inv = int(sys.argv[2]) if len(sys.argv) > 2 else None
    R = Chain({{"seed": 0}}, out_dir=sys.argv[1]).run(invalidate_phase=inv)
    storage.save_result(os.path.join(sys.argv[1], "final.npz"), {{k: R[k] for k in ("x", "G", "w", "effects")}})
''')


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "chain.py"
    path.write_text(TOY.format(repo=str(REPO_ROOT)))
    ref = tmp_path_factory.mktemp("toy_ref")
    assert run_script(path, [ref]).returncode == 0
    return path, storage.load_result(ref / "final.npz")[0]


def run_toy(toy_script, out, kill="", invalidate=None):
    env = dict(os.environ, FAULT_KILL=kill)
    return run_script(toy_script, [out] + ([invalidate] if invalidate is not None else []), env=env)


def assert_bitwise(final_path, reference):
    final, _ = storage.load_result(final_path)
    for key, value in reference.items():
        assert np.array_equal(final[key], value), key
        assert final[key].tobytes() == np.asarray(value).tobytes(), key


@pytest.mark.parametrize("kill", [f"before:{k}" for k in range(5)] + [f"write:{k}" for k in range(5)])
def test_kill_9_at_every_phase_boundary_and_mid_write_resumes_bitwise(toy, tmp_path, kill):
    script, reference = toy
    killed = run_toy(script, tmp_path, kill)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "chain" / "seed-0"
    k = int(kill.split(":")[1])
    temporaries = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    if kill.startswith("write"):
        assert temporaries and temporaries[0].startswith(f".result_{k}-")  # what kill -9 leaves behind
    assert not (run_dir / f"result_{k}-{['draw', 'gram', 'solve', 'groups', 'effects'][k]}.npz").exists()
    resumed = run_toy(script, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_bitwise(tmp_path / "final.npz", reference)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # stale temporaries removed
    for t in temporaries:
        assert f"removed {run_dir / t}" in resumed.stderr


@pytest.mark.parametrize("kill_at", [2, 3, 4])
def test_crash_after_invalidate_cannot_undo_the_invalidation(toy, tmp_path, kill_at):
    script, reference = toy
    assert run_toy(script, tmp_path).returncode == 0
    run_dir = tmp_path / "chain" / "seed-0"
    mtime = (run_dir / "result_1-gram.npz").stat().st_mtime_ns
    assert run_toy(script, tmp_path, f"before:{kill_at}", invalidate=1).returncode == -signal.SIGKILL
    # Phase 1 was rewritten, the later files were deleted before that and only those
    # recomputed since (phases 2 .. kill_at - 1) exist again.
    assert (run_dir / "result_1-gram.npz").stat().st_mtime_ns != mtime
    left = sorted(int(p.name.split("_")[1].split("-")[0]) for p in run_dir.glob("result_*.npz"))
    assert left == list(range(kill_at))
    resumed = run_toy(script, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "phase 0 draw: loaded" in resumed.stderr and "phase 1 gram: loaded" in resumed.stderr
    assert "phase 4 effects: computing" in resumed.stderr
    assert_bitwise(tmp_path / "final.npz", reference)


# ------------------------------------------------------------------- the real script
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run of the script, under umask 027."""
    out = tmp_path_factory.mktemp("ss_ref")
    proc = run_script(SCRIPT, SS_ARGS + ["--out-dir", out], umask=0o027)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def copy_run(reference_run, tmp_path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)
    return out, out / "ss_logreg" / RUN_ID


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted(run_dir.glob("result_*.npz")):
        result, _ = storage.load_result(path)
        arrays.update({k: v for k, v in result.items() if isinstance(v, np.ndarray)})
    return arrays


def test_reference_run_stderr_is_only_our_log_and_files_follow_the_umask(reference_run):
    out, proc = reference_run
    assert not [line for line in proc.stderr.splitlines() if any(n in line for n in TF_NOISE)], proc.stderr[:2000]
    assert foreign_lines(proc.stderr) == [], foreign_lines(proc.stderr)[:10]
    run_dir = out / "ss_logreg" / RUN_ID
    files = list(run_dir.iterdir())
    assert len(files) == 17  # config.json, groups.csv and 15 phase files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o640, (path.name, oct(path.stat().st_mode))


def test_truncated_phase_file_is_recomputed_and_stale_temporary_removed(reference_run, tmp_path):
    out, run_dir = copy_run(reference_run, tmp_path)
    reference = final_arrays(run_dir)
    target = run_dir / "result_6-retrain.npz"
    os.truncate(target, target.stat().st_size // 2)  # as `truncate -s` does
    stale = run_dir / f".result_7-compute_self_pred_infl.npz.{storage.host_name()}.{dead_pid()}.0badf00d.tmp"
    stale.write_bytes(b"PK\x03\x04 the start of a write that was killed")
    proc = run_script(SCRIPT, SS_ARGS + ["--out-dir", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{target} is damaged: BadZipFile" in proc.stderr and "treating it as missing and recomputing" in proc.stderr
    assert f"removed {stale}" in proc.stderr and not stale.exists()
    assert "phase 5 pick_subsets: loaded" in proc.stderr and "phase 6 retrain: computing" in proc.stderr
    again = final_arrays(run_dir)
    assert again.keys() == reference.keys()
    for key in reference:
        assert np.array_equal(again[key], reference[key], equal_nan=True), key


@pytest.mark.parametrize("content, reason", [
    (b'{"dataset_config": {"dataset_id": "breast_', "JSONDecodeError"),
    (bytes(range(128, 256)) * 4, "UnicodeDecodeError"),
    (b"[1, 2]", "expected a JSON dict, found list"),
    (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),  # nested deeper than the JSON parser can recurse
])
def test_corrupt_config_json_is_one_line_exit_2_naming_file_and_way_out(reference_run, tmp_path, content, reason):
    out, run_dir = copy_run(reference_run, tmp_path)
    (run_dir / "config.json").write_bytes(content)
    proc = run_script(SCRIPT, SS_ARGS + ["--out-dir", out])
    assert_one_line_error(proc, 2, str(run_dir / "config.json"), reason, "--force-refresh")


def test_nested_phase_metadata_is_recomputed_and_cache_temporaries_removed(reference_run, tmp_path):
    """A phase file whose ``__meta__`` nests deeper than the JSON parser can recurse is damage
    (one warning, recomputed); a temporary a killed run left in ``<out-dir>/.cache`` is
    removed like the run folder's."""
    out, run_dir = copy_run(reference_run, tmp_path)
    reference = final_arrays(run_dir)
    target = run_dir / "result_13-z_norms.npz"
    arrays = storage.load_arrays(target)
    arrays[storage.META_KEY] = np.array("[" * 100_000 + "]" * 100_000)
    np.savez(target, **arrays)
    cache = out / ".cache"
    assert cache.is_dir()  # phase 5's clustering labellings
    stale = cache / f".cluster-labels-0.npz.{storage.host_name()}.{dead_pid()}.0badf00d.tmp"
    stale.write_bytes(b"PK\x03\x04 the start of a write that was killed")
    proc = run_script(SCRIPT, SS_ARGS + ["--out-dir", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{target} is damaged: RecursionError" in proc.stderr and "recomputing" in proc.stderr
    assert foreign_lines(proc.stderr) == [] and "Traceback" not in proc.stderr
    assert f"removed {stale}" in proc.stderr and not stale.exists()
    again = final_arrays(run_dir)
    for key in reference:
        assert np.array_equal(again[key], reference[key], equal_nan=True), key


def test_a_folder_in_place_of_a_result_file_is_one_line_exit_2(reference_run, tmp_path):
    out, run_dir = copy_run(reference_run, tmp_path)
    target = run_dir / "result_9-newton.npz"
    target.unlink()
    target.mkdir()
    assert_one_line_error(run_script(SCRIPT, SS_ARGS + ["--out-dir", out]), 2, str(target), "is not a file",
                          "--out-dir")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder in which nothing can be created: chmod 555, or, for root (whom chmod does not
    stop), a path under /sys, where mkdir fails with EPERM."""
    if os.geteuid() != 0:
        ro = tmp_path / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    ro = Path("/sys/group-influence-read-only-test")
    try:
        ro.mkdir()
    except OSError:
        yield ro
        return
    ro.rmdir()
    pytest.skip("no read-only location available to this user")


def test_a_read_only_data_dir_is_one_line_exit_2(read_only_dir, tmp_path):
    env = dict(os.environ, INFLUENCE_OFFLINE="1")
    proc = run_script(SCRIPT, ["--dataset-id", "hospital", "--data-dir", read_only_dir, "--out-dir", tmp_path,
                               "--num-subsets", "3"], env=env)
    assert_one_line_error(proc, 2, f"--data-dir {read_only_dir}", "cannot create", "writable folder")
    assert not (tmp_path / "ss_logreg").exists()


def test_input_errors_come_before_a_cluster_starts(reference_run, tmp_path):
    out, _ = copy_run(reference_run, tmp_path)
    for extra, fragment in ((["--kmeans-n-init", "3"], "kmeans_n_init: saved 10, now 3"),
                            (["--max-memory", "100000"], "max_memory: saved 1000000000, now 100000")):
        proc = run_script(SCRIPT, SS_ARGS + ["--out-dir", out, "--workers", "2"] + extra)
        assert_one_line_error(proc, 2, "different config", fragment, "--force-refresh")
        assert "Dask" not in proc.stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, X_train=np.ones((500, 2)), y_train=np.arange(500) % 2, X_test=np.ones((6, 2)) * 1e30,
             y_test=np.arange(6) % 2)
    proc = run_script(SCRIPT, ["--dataset-file", bad, "--out-dir", out, "--workers", "2", "--num-subsets", "3"])
    assert_one_line_error(proc, 2, str(bad), "X_test column 0 holds 1e+30", "--standardize")
    assert "Dask" not in proc.stderr


def test_crash_after_invalidate_6_then_plain_rerun_recomputes_7_to_14(reference_run, tmp_path):
    out, run_dir = copy_run(reference_run, tmp_path)
    reference = final_arrays(run_dir)
    cmd = [sys.executable, str(SCRIPT), *SS_ARGS, "--out-dir", str(out), "--invalidate", "6"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:  # kill -9 as soon as phase 7 starts, i.e. right after phase 6 was rewritten
        seen.append(line)
        if "phase 7 compute_self_pred_infl: computing" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    assert not (run_dir / "result_7-compute_self_pred_infl.npz").exists()
    assert not (run_dir / "result_14-compute_pparam_infl.npz").exists()
    rerun = run_script(SCRIPT, SS_ARGS + ["--out-dir", out])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "phase 6 retrain: loaded" in rerun.stderr
    for k, name in ((7, "compute_self_pred_infl"), (14, "compute_pparam_infl")):
        assert f"phase {k} {name}: computing" in rerun.stderr
    again = final_arrays(run_dir)
    for key in reference:
        assert np.array_equal(again[key], reference[key], equal_nan=True), key


def test_user_errors_exit_2_in_one_line(reference_run, tmp_path):
    out, _ = copy_run(reference_run, tmp_path)
    # Config mismatch: same run id, a setting that changes results.
    assert_one_line_error(run_script(SCRIPT, SS_ARGS + ["--out-dir", out, "--kmeans-n-init", "3"]), 2,
                          "different config", "kmeans_n_init: saved 10, now 3", "--force-refresh")
    # Group sizes, checked before anything runs.
    assert_one_line_error(run_script(SCRIPT, SS_ARGS + ["--out-dir", out, "--subset-rel-size", "1.0"]), 2,
                          "--subset-rel-size 1.0", "455 of the 455")
    assert_one_line_error(run_script(SCRIPT, SS_ARGS + ["--out-dir", out, "--subset-choice-type", "range",
                                                        "--subset-min-rel-size", "0.001"]), 2,
                          "--subset-min-rel-size 0.001", "int(455 x 0.001) = 0")
    # Unwritable --out-dir.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert_one_line_error(run_script(SCRIPT, SS_ARGS + ["--out-dir", blocker / "sub"]), 2,
                          "cannot create the run folder", "--out-dir")
    # argparse.
    assert_one_line_error(run_script(SCRIPT, ["--num-subsets", "three"]), 2, "--num-subsets", "invalid int")
    assert_one_line_error(run_script(SCRIPT, ["--no-such-flag"]), 2, "unrecognized arguments")


def test_missing_data_exits_2_in_one_line(tmp_path):
    env = dict(os.environ, INFLUENCE_OFFLINE="1")
    proc = run_script(REPO_ROOT / "scripts" / "counterexamples.py", ["--out-dir", tmp_path, "--dataset-id", "nope"],
                      env=env)
    assert_one_line_error(proc, 2, "--dataset-id must be one of")
    proc = run_script(SCRIPT, ["--dataset-id", "spam", "--data-dir", tmp_path / "data", "--out-dir", tmp_path,
                               "--num-subsets", "3"], env=env)
    assert_one_line_error(proc, 2, "spam")


def test_debug_shows_the_traceback(reference_run, tmp_path):
    out, run_dir = copy_run(reference_run, tmp_path)
    (run_dir / "config.json").write_bytes(b"[1, 2]")
    proc = run_script(SCRIPT, SS_ARGS + ["--out-dir", out, "--debug"])
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "ConfigFileError" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("phase_index", [0, 3, 5, 6, 9, 14])
def test_real_script_kill_9_at_phase_start_resumes_bitwise(reference_run, tmp_path, phase_index):
    out = tmp_path / "out"
    reference = final_arrays(reference_run[0] / "ss_logreg" / RUN_ID)
    cmd = [sys.executable, str(SCRIPT), *SS_ARGS, "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if re.search(rf"phase {phase_index} \w+: computing", line):
            time.sleep(0.2 * (phase_index % 2))  # sometimes mid-phase
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    rerun = run_script(SCRIPT, SS_ARGS + ["--out-dir", out])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = final_arrays(out / "ss_logreg" / RUN_ID)
    for key in reference:
        assert np.array_equal(again[key], reference[key], equal_nan=True), key
