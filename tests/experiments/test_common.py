"""The experiment framework: phases, resume, invalidation, config guard, summaries."""
import numpy as np
import pytest

from datasets import storage
from experiments.common import (
    ConfigFileError,
    ConfigMismatchError,
    Experiment,
    OutputDirError,
    collate_results,
    phase,
    py2_float_str,
    release_free_memory,
    resident_bytes,
)
from experiments.execution import Executor

CALLS = []


class Toy(Experiment):
    experiment_id = "toy"

    @property
    def run_id(self):
        return f"toy_seed-{self.config['seed']}"

    @phase(0)
    def make(self):
        CALLS.append("make")
        rng = np.random.RandomState(self.config["seed"])
        return {"x": rng.normal(size=5), "groups": [np.arange(3), np.arange(1)], "tags": ["a", "b"]}

    @phase(1)
    def square(self):
        CALLS.append("square")
        return {"x2": self.R["x"] ** 2}

    @phase(2)
    def total(self):
        CALLS.append("total")
        if self.config.get("crash"):
            raise RuntimeError("simulated crash in phase 2")
        return {"total": float(self.R["x2"].sum()), "n": len(self.R["groups"])}


@pytest.fixture(autouse=True)
def reset_calls():
    CALLS.clear()


def test_run_writes_files_and_resumes_without_recomputing(tmp_path):
    exp = Toy({"seed": 0}, out_dir=tmp_path)
    R = exp.run()
    assert CALLS == ["make", "square", "total"]
    base = tmp_path / "toy" / "toy_seed-0"
    assert sorted(p.name for p in base.iterdir()) == [
        "config.json", "result_0-make.npz", "result_1-square.npz", "result_2-total.npz"]
    CALLS.clear()
    again = Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == []
    assert again["total"] == R["total"]
    np.testing.assert_array_equal(again["x"], R["x"])


def test_invalidate_recomputes_from_that_phase(tmp_path):
    Toy({"seed": 0}, out_dir=tmp_path).run()
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run(invalidate_phase=1)
    assert CALLS == ["square", "total"]
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run(force_refresh=True)
    assert CALLS == ["make", "square", "total"]


def test_missing_middle_phase_recomputes_everything_after_it(tmp_path):
    Toy({"seed": 0}, out_dir=tmp_path).run()
    (tmp_path / "toy" / "toy_seed-0" / "result_1-square.npz").unlink()
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == ["square", "total"]


def test_crash_resumes_from_the_failed_phase(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        Toy({"seed": 0, "crash": True}, out_dir=tmp_path).run()
    base = tmp_path / "toy" / "toy_seed-0"
    assert not (base / "result_2-total.npz").exists()
    assert not [p for p in base.iterdir() if p.name.endswith(".tmp")]
    CALLS.clear()
    R = Toy({"seed": 0, "crash": True}, out_dir=tmp_path)
    R.config["crash"] = False  # fixed code, same config file would otherwise refuse
    with pytest.raises(ConfigMismatchError):
        R.run()
    CALLS.clear()
    R = Toy({"seed": 0, "crash": False}, out_dir=tmp_path).run(force_refresh=True)
    assert CALLS == ["make", "square", "total"]


def test_config_guard_refuses_different_config(tmp_path):
    Toy({"seed": 0, "alpha": 1}, out_dir=tmp_path).run()
    with pytest.raises(ConfigMismatchError, match="config.json.*alpha: saved 1, now 2.*--force-refresh"):
        Toy({"seed": 0, "alpha": 2}, out_dir=tmp_path).run()
    # Operational keys do not matter.
    CALLS.clear()
    Toy({"seed": 0, "alpha": 1, "num_workers": 5, "progress": False}, out_dir=tmp_path).run()
    assert CALLS == []


def test_phase_file_from_another_config_is_not_reused(tmp_path):
    Toy({"seed": 0, "alpha": 1}, out_dir=tmp_path).run()
    base = tmp_path / "toy" / "toy_seed-0"
    # Someone overwrites config.json by hand: the phase files carry the old hash.
    storage.save_json(base / "config.json", {"seed": 0, "alpha": 3})
    CALLS.clear()
    Toy({"seed": 0, "alpha": 3}, out_dir=tmp_path).run()
    assert CALLS == ["make", "square", "total"]


def test_master_only_summary_and_load_run(tmp_path):
    exp = Toy({"seed": 1, "master_only": True}, out_dir=tmp_path)
    exp.run(save_phase_results=False)
    exp.save_summary(["total", "groups", "absent_key"])
    base = tmp_path / "toy" / "toy_seed-1"
    assert sorted(p.name for p in base.iterdir()) == ["config.json", "result_summary.npz"]
    loaded = Toy.load_run("toy_seed-1", out_dir=tmp_path)
    assert set(loaded.R) == {"total", "groups"}
    assert loaded.R["total"] == exp.R["total"]
    full = Toy({"seed": 2}, out_dir=tmp_path)
    full.run()
    part = Toy.load_run("toy_seed-2", out_dir=tmp_path, phase_indices=[1])
    assert set(part.R) == {"x2"}
    with pytest.raises(FileNotFoundError, match="no run 'nope'"):
        Toy.load_run("nope", out_dir=tmp_path)


def _base(tmp_path, seed=0):
    return tmp_path / "toy" / f"toy_seed-{seed}"


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "empty", "random"])
def test_damaged_phase_file_is_treated_as_missing(tmp_path, caplog, damage):
    R = Toy({"seed": 0}, out_dir=tmp_path).run()
    path = _base(tmp_path) / "result_1-square.npz"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "overwrite": data[:200] + b"\0" * 300 + data[500:],
                      "empty": b"", "random": np.random.default_rng(0).bytes(len(data))}[damage])
    CALLS.clear()
    again = Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == ["square", "total"]
    assert again["total"] == R["total"]
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(path) in w and "is damaged" in w and "recomputing" in w for w in warning), warning
    storage.load_result(path)  # rewritten whole


@pytest.mark.parametrize("content, reason", [(b'{"seed": 0, "al', "JSONDecodeError"),
                                             (bytes(range(200, 256)), "UnicodeDecodeError"),
                                             (b"[1, 2]", "expected a JSON dict, found list")])
def test_damaged_config_names_the_file_and_the_way_out(tmp_path, content, reason):
    Toy({"seed": 0}, out_dir=tmp_path).run()
    cfg = _base(tmp_path) / "config.json"
    cfg.write_bytes(content)
    with pytest.raises(ConfigFileError, match=reason) as info:
        Toy({"seed": 0}, out_dir=tmp_path).run()
    msg = str(info.value)
    assert str(cfg) in msg and "--force-refresh" in msg and "\n" not in msg
    assert isinstance(info.value, ConfigMismatchError)
    with pytest.raises(ConfigFileError, match="is damaged"):
        Toy.load_run("toy_seed-0", out_dir=tmp_path)
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run(force_refresh=True)  # the way out
    assert CALLS == ["make", "square", "total"]
    assert storage.load_json(cfg, expect=dict) == {"seed": 0}


def test_crash_after_invalidate_never_reuses_later_phases(tmp_path, monkeypatch):
    Toy({"seed": 0}, out_dir=tmp_path).run()
    base = _base(tmp_path)
    # Simulate a crash right after the invalidated phase 1 was rewritten: phase 2's
    # computation dies (as kill -9 would).
    monkeypatch.setattr(Toy, "total", phase(2)(lambda self: (_ for _ in ()).throw(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        Toy({"seed": 0}, out_dir=tmp_path).run(invalidate_phase=1)
    assert not (base / "result_2-total.npz").exists()  # deleted before phase 1 was rewritten
    monkeypatch.undo()
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == ["total"]


def test_phase_file_computed_from_an_older_input_is_recomputed(tmp_path, caplog, monkeypatch):
    """Lineage: even if a later file survives (copied back, older code), its recorded
    inputs no longer match a phase whose content changed, and it is not reused."""
    Toy({"seed": 0}, out_dir=tmp_path).run()
    base = _base(tmp_path)
    old_total = (base / "result_2-total.npz").read_bytes()
    # A code change in phase 1, then --invalidate 1.
    monkeypatch.setattr(Toy, "square", phase(1)(lambda self: {"x2": self.R["x"] ** 2 + 1}))
    Toy({"seed": 0}, out_dir=tmp_path).run(invalidate_phase=1)
    (base / "result_2-total.npz").write_bytes(old_total)
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == ["total"]
    assert any("earlier version of phase(s) [1]" in r.getMessage() for r in caplog.records)
    _, attrs = storage.load_result(base / "result_2-total.npz")
    ids = [storage.load_result(base / f"result_{i}-{n}.npz")[1]["phase_id"] for i, n in ((0, "make"), (1, "square"))]
    assert attrs["inputs"] == {"0": ids[0], "1": ids[1]}


def test_phase_ids_are_reproducible_digests(tmp_path):
    """Ids depend on config, inputs and content only: two identical runs write identical
    files (so reference comparisons stay bitwise), and a bitwise-identical recomputation
    keeps the id, so later phases computed from it stay valid."""
    for out in (tmp_path / "a", tmp_path / "b"):
        Toy({"seed": 0}, out_dir=out).run()
    names = ["result_0-make.npz", "result_1-square.npz", "result_2-total.npz"]
    attrs = [[storage.load_result(out / "toy" / "toy_seed-0" / n)[1] for n in names] for out in
             (tmp_path / "a", tmp_path / "b")]
    for a, b in zip(*attrs):
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    assert len({a["phase_id"] for a in attrs[0]}) == 3
    other = Toy({"seed": 1}, out_dir=tmp_path / "c")
    other.run()
    assert storage.load_result(other.base_dir / names[0])[1]["phase_id"] != attrs[0][0]["phase_id"]


def test_files_without_phase_ids_are_reused_as_a_prefix(tmp_path):
    """Run folders written before phase ids existed keep working."""
    Toy({"seed": 0}, out_dir=tmp_path).run()
    base = _base(tmp_path)
    for path in sorted(base.glob("result_*.npz")):
        result, attrs = storage.load_result(path)
        storage.save_result(path, result, {k: v for k, v in attrs.items() if k not in ("phase_id", "inputs")})
    CALLS.clear()
    Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == []


def test_stale_temporaries_removed_by_the_next_run(tmp_path, caplog):
    import subprocess
    import sys

    Toy({"seed": 0}, out_dir=tmp_path).run()
    base = _base(tmp_path)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    stale = base / f".result_2-total.npz.{storage.host_name()}.{dead}.00ff00ff.tmp"
    stale.write_bytes(b"half a file")
    Toy({"seed": 0}, out_dir=tmp_path).run()
    assert not stale.exists()
    assert any(str(stale) in r.getMessage() for r in caplog.records)


def test_unwritable_out_dir_is_an_output_dir_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="cannot create the run folder .*--out-dir"):
        Toy({"seed": 0}, out_dir=blocker).run()


def test_a_folder_in_place_of_a_result_file_stops_before_any_phase(tmp_path):
    Toy({"seed": 0}, out_dir=tmp_path).run()
    target = _base(tmp_path) / "result_1-square.npz"
    target.unlink()
    target.mkdir()
    CALLS.clear()
    with pytest.raises(OutputDirError, match=f"{target} is not a file .*remove it, or use another --out-dir"):
        Toy({"seed": 0}, out_dir=tmp_path).run()
    assert CALLS == []


class MidRun(Toy):
    """Phase 1 puts a folder where phase 2's file goes (the run folder changed mid-run)."""

    @phase(1)
    def square(self):
        (self.base_dir / "result_2-total.npz").mkdir()
        return {"x2": self.R["x"] ** 2}


def test_a_folder_appearing_mid_run_is_an_output_dir_error(tmp_path):
    with pytest.raises(OutputDirError, match=r"cannot write .*result_2-total.npz .*(Is a directory|Directory not empty)"):
        MidRun({"seed": 0}, out_dir=tmp_path).run()
    assert (_base(tmp_path) / "result_1-square.npz").is_file()  # the phases before it are kept


def test_a_run_folder_made_unwritable_mid_run_is_an_output_dir_error(tmp_path, monkeypatch):
    # (The test may run as root, which chmod does not stop: the write itself is made to fail.)
    Toy({"seed": 0}, out_dir=tmp_path).run(invalidate_phase=99)
    real = storage.save_result

    def save_result(path, *args, **kwargs):
        if "result_2" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(storage, "save_result", save_result)
    with pytest.raises(OutputDirError, match=r"cannot write .*result_2-total.npz .*Permission denied; make the run "
                                             r"folder writable"):
        Toy({"seed": 1}, out_dir=tmp_path).run()


def test_max_memory_is_part_of_the_config_guard(tmp_path):
    """--max-memory sets chunk sizes, whose sums round differently: a run resumed with
    another value is refused (the other execution settings are not)."""
    from experiments.common import result_config

    Toy({"seed": 0, "max_memory": 10**9}, out_dir=tmp_path).run()
    assert result_config({"max_memory": 1}) != result_config({"max_memory": 2})
    assert result_config({"num_workers": 1, "scheduler": "tcp://a:1"}) == result_config({})
    with pytest.raises(ConfigMismatchError, match="max_memory: saved 1000000000, now 100000"):
        Toy({"seed": 0, "max_memory": 100000}, out_dir=tmp_path).run()
    Toy({"seed": 0, "max_memory": 100000}, out_dir=tmp_path).run(force_refresh=True)


def test_temporaries_of_scratch_folders_are_removed(tmp_path, caplog):
    import subprocess
    import sys

    class WithCache(Toy):
        def scratch_dirs(self):
            return [self.out_dir / ".cache"]

    (tmp_path / ".cache").mkdir(parents=True)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    stale = tmp_path / ".cache" / f".cluster-labels-abc.npz.{storage.host_name()}.{dead}.00ff00ff.tmp"
    stale.write_bytes(b"half a file")
    WithCache({"seed": 0}, out_dir=tmp_path).run()
    assert not stale.exists() and any(str(stale) in r.getMessage() for r in caplog.records)


def test_load_run_verbose_prints_each_file(tmp_path, capsys):
    Toy({"seed": 0}, out_dir=tmp_path).run()
    E = Toy.load_run("toy_seed-0", out_dir=tmp_path, phase_indices=[0, 2], verbose=True)
    assert set(E.R) == {"x", "groups", "tags", "total", "n"} and E.config == {"seed": 0}
    assert capsys.readouterr().out.count("Loaded ") == 2
    Toy.load_run("toy_seed-0", out_dir=tmp_path, verbose=False)
    assert capsys.readouterr().out == ""


def test_collate_and_map_chunks():
    def fn(s, e):
        return {"a": np.arange(s, e), "b": np.ones((e - s, 2)) * s, "c": [f"t{i}" for i in range(s, e)]}
    out = Executor(progress=False).map_chunks(lambda _, span: fn(*span), None, 7, 3)
    np.testing.assert_array_equal(out["a"], np.arange(7))
    assert out["b"].shape == (7, 2) and out["b"][6, 0] == 6
    assert out["c"] == [f"t{i}" for i in range(7)]
    with pytest.raises(Exception, match="different keys"):
        collate_results([{"a": np.ones(1)}, {"b": np.ones(1)}])


@pytest.mark.parametrize("value,text", [
    (0.0025, "0.0025"), (0.25, "0.25"), (1e-07, "1e-07"), (1e-05, "1e-05"), (0.0001, "0.0001"),
    (1.0, "1.0"), (10.0, "10.0"), (100.0, "100.0"), (1e11, "1e+11"), (0.1 + 0.2, "0.3"),
    (9.999e-05, "9.999e-05"), (99999999999.0, "99999999999.0"), (123456789012.0, "1.23456789012e+11"),
    (0.001, "0.001"), (0.01, "0.01"), (0.1, "0.1"), (-2.5, "-2.5"),
])
def test_py2_float_formatting(value, text):
    assert py2_float_str(value) == text


def _glibc() -> bool:
    return release_free_memory() is not None   # None: no glibc or no /proc


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's; /proc is Linux's")
def test_release_free_memory_returns_freed_heap_to_the_system():
    """Blocks below glibc's mmap threshold live in its heap; freed, with a live block above
    them (so that free() cannot trim the heap's top), they stay resident until
    release_free_memory() hands their pages back."""
    release_free_memory()
    blocks = [np.ones(8192) for _ in range(4000)]   # 64 KiB each, about 260 MB in the heap
    keep = np.ones(8192)                              # above them: the heap's top stays in use
    before = resident_bytes()
    del blocks
    after_free = resident_bytes()
    released = release_free_memory()
    after = resident_bytes()
    assert after_free > before - 100e6              # free() alone kept most of them resident
    assert released > 200e6 and after < after_free - 200e6
    assert keep.sum() == 8192                         # the live block is untouched
