"""Dask execution of ``estimator_ladder`` and ``babble_reduce`` (experiments/execution.py): a
run on a local cluster of two worker processes equals the embedded run bit for bit, and
the work really ran as tasks on the workers.

The session's 2-worker LocalCluster on 127.0.0.1 (the ``cluster`` fixture of
tests/experiments/conftest.py) serves it, as tests/experiments/test_execution.py, whose
comparison helpers are reused.
"""
import numpy as np
import pytest

from experiments import execution
from experiments.babble_reduce import BabbleReduce, build_config as br_config, make_sklearn_model, path_random_states
from experiments.estimator_ladder import EstimatorLadder, build_config as ladder_config
from experiments.subset_influence import build_config as ss_config
from tests.experiments.app_fixtures import make_cdr_db
from tests.experiments.test_execution import assert_identical, task_names
from tests.scripts.test_cli_fuzz import load_script


class SmallChunks(EstimatorLadder):
    """The ladder with several tasks per estimator phase (51 groups in chunks of 16)."""

    estimator_chunk = 16

    def _newton_chunk(self, explicit: bool = True) -> int:
        return 16


def without_timings(R):
    """The results that do not measure time (costs are wall times, different in every run)."""
    return {k: v for k, v in R.items() if not k.endswith("_seconds") and not k.startswith("cost_seconds")}


# ----------------------------------------------------------------------------- estimator_ladder
def run_ladder(out_dir, executor=None):
    exp = SmallChunks(ladder_config(ss_config(dataset_id="breast_cancer", num_subsets=3), master_only=True),
                      out_dir=out_dir, progress=False)
    if executor is not None:
        exp.executor = executor
    exp.run(save_phase_results=False)
    return exp


def test_estimator_ladder_on_two_workers_equals_embedded(cluster, tmp_path):
    embedded = run_ladder(tmp_path / "a")
    assert embedded.executor.mode == "embedded"
    exp, names = task_names(cluster, run_ladder, tmp_path / "b", cluster)
    # The ladder's phases (and the ss_logreg run it starts, on the same cluster) ran as tasks.
    assert {"estimator_task", "newton_steps_task", "refit_task", "cv_fold_task", "newton_task"} <= names
    S = len(exp.R["subset_sizes"])
    assert S > 2 * SmallChunks.estimator_chunk   # several chunks per phase
    R, E = without_timings(exp.R), without_timings(embedded.R)
    assert len(R) > 60 and not any(k.endswith("_seconds") for k in R)
    assert_identical(E, R)
    assert exp.R["actual_retime_max_diff"] == embedded.R["actual_retime_max_diff"] == 0.0
    assert all(float(exp.R[f"{e}_seconds"]) > 0 for e in ("first_order", "rescaled", "newton_3", "actual"))
    assert (exp.base_dir / "accuracy.csv").read_bytes() == (embedded.base_dir / "accuracy.csv").read_bytes()


# ----------------------------------------------------------------------------- babble_reduce
@pytest.fixture(scope="module")
def cdr_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cdr") / "data"
    make_cdr_db(data_dir)
    return data_dir


def run_babble(data_dir, out_dir, executor=None):
    exp = BabbleReduce(br_config(data_dir=str(data_dir), save_reduced_dir=str(out_dir / "reduced")),
                       out_dir=out_dir, progress=False)
    if executor is not None:
        exp.executor = executor
    exp.run(save_phase_results=False)
    return exp


@pytest.fixture(scope="module")
def babble_embedded(cdr_dir, tmp_path_factory):
    """The embedded run (no cluster), shared by the tests that compare with it."""
    return run_babble(cdr_dir, tmp_path_factory.mktemp("babble_embedded"))


def reduced_files(exp):
    return {p.name: p.read_bytes() for p in sorted((exp.base_dir.parent.parent / "reduced").iterdir())}


def test_babble_reduce_on_two_workers_equals_embedded(cluster, cdr_dir, babble_embedded, tmp_path):
    embedded = babble_embedded
    exp, names = task_names(cluster, run_babble, cdr_dir, tmp_path / "b", cluster)
    assert "l1_fit_task" in names
    R = {k: v for k, v in exp.R.items() if k != "reduced_files"}
    assert_identical({k: v for k, v in embedded.R.items() if k != "reduced_files"}, R)
    files = reduced_files(exp)
    assert files == reduced_files(embedded) and "reduced_cdr_x.npz" in files


def test_babble_reduce_fits_equal_the_original_sequential_path(babble_embedded):
    """Oracle: the original's path, one model refit with set_params(C=1/reg), so its one
    RandomState(1) gives fit i the (i+1)-th seed. Each task starting from
    path_random_states()[i] must give the same fits, bit for bit."""
    exp = babble_embedded
    R, train, w = exp.R, exp.datasets[0], exp.sample_weights[0]
    model = make_sklearn_model(R["regs"][0])
    for i, reg in enumerate(R["regs"]):
        model.set_params(C=1.0 / reg)
        model.fit(train.x, train.labels, sample_weight=w)
        assert model.coef_[0].tobytes() == R["coefs"][i].tobytes(), i
        assert model.intercept_[0] == R["intercepts"][i]
    # The seeds differ along the path (a fresh RandomState(1) per fit would repeat one).
    seeds = []
    for state in path_random_states(3):
        rs = np.random.RandomState()
        rs.set_state(state)
        seeds.append(rs.randint(np.iinfo("i").max))
    stream = np.random.RandomState(1)
    assert seeds == [stream.randint(np.iinfo("i").max) for _ in range(3)] and len(set(seeds)) == 3


def test_babble_reduce_script_with_workers(cdr_dir, babble_embedded, tmp_path, capsys):
    """``--workers 2`` through the script: a local cluster is started (its dashboard is
    printed), the run succeeds and its results equal the embedded run's."""
    module = load_script("babble_reduce")
    embedded = babble_embedded
    out = tmp_path / "b"
    assert module.main(["--data-dir", str(cdr_dir), "--out-dir", str(out), "--save-reduced-dir",
                        str(out / "reduced"), "--workers", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "Dask local cluster" in err and "2 workers" in err and "dashboard" in err
    exp = BabbleReduce(br_config(data_dir=str(cdr_dir), save_reduced_dir=str(out / "reduced")), out_dir=out,
                       progress=False)
    exp.run()   # everything loaded from the script's phase files
    assert exp.executor.mode == "embedded"
    assert_identical({k: v for k, v in embedded.R.items() if k != "reduced_files"},
                     {k: v for k, v in exp.R.items() if k != "reduced_files"})


def test_both_scripts_take_the_execution_flags(monkeypatch):
    monkeypatch.delenv(execution.ENV_SCHEDULER, raising=False)
    for name in ("babble_reduce", "estimator_ladder"):
        parser = load_script(name).make_parser()
        assert execution.settings_from_args(parser.parse_args(["--workers", "3"])) == {"num_workers": 3}
        args = parser.parse_args(["--scheduler-address", "tcp://127.0.0.1:8786"])
        assert execution.settings_from_args(args) == {"scheduler": "tcp://127.0.0.1:8786"}
