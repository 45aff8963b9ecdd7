"""The experiment framework: phases, resume, invalidation, config guard, summaries."""
import numpy as np
import pytest

from datasets import storage
from experiments.common import (ConfigMismatchError, Experiment, collate_results,
                                map_chunks, phase, py2_float_str)

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
    Toy({"seed": 0, "alpha": 1, "max_memory": 5}, out_dir=tmp_path).run()
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


def test_collate_and_map_chunks():
    def fn(s, e):
        return {"a": np.arange(s, e), "b": np.ones((e - s, 2)) * s, "c": [f"t{i}" for i in range(s, e)]}
    out = map_chunks(fn, 7, 3, progress=False)
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
