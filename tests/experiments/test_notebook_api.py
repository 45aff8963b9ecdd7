"""The original's public API for notebooks (how the figures notebook loads runs):
``<ExperimentClass>.load_run(run_id, out_dir=..., phase_indices=[...], verbose=False)``,
then ``E.R``, ``E.config``, ``E.num_train`` and ``E.get_simple_subset_tags()``."""
import numpy as np
import pytest

from experiments.counterexamples import Counterexamples, build_config as cex_config
from experiments.subset_influence import SUMMARY_KEYS, SubsetInfluenceLogreg, build_config

SIMPLE_TAGS = {"random", "random_same_class", "neg_tail_test", "pos_tail_test", "same_features", "same_grad",
               "feature_window"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A normal ss_logreg run on breast_cancer and the master-only form of the same results."""
    out = tmp_path_factory.mktemp("nb_api")
    cfg = build_config(dataset_id="breast_cancer", num_subsets=3)
    exp = SubsetInfluenceLogreg(cfg, out_dir=out, progress=False)
    exp.run()
    master = SubsetInfluenceLogreg(build_config(dataset_id="breast_cancer", num_subsets=3, master_only=True,
                                                tag="master"), out_dir=out, progress=False)
    master.prepare_run_folder()
    master.check_config()
    master.R = dict(exp.R)
    master.save_summary(SUMMARY_KEYS)
    return out, exp, master


def test_load_run_as_the_paper_notebook_does(runs, capsys):
    out, exp, _ = runs
    # Cell pattern of figure 3: phases [0, 7, 8], quietly.
    E = SubsetInfluenceLogreg.load_run(exp.run_id, out_dir=out, phase_indices=[0, 7, 8], verbose=False)
    assert capsys.readouterr().out == ""
    assert E.run_id == exp.run_id and E.config == exp.config
    assert E.config["dataset_config"]["data_dir"] is None
    assert E.num_train == 455
    assert E.R["cv_l2_reg"] == exp.R["cv_l2_reg"]
    for key in ("subset_fixed_test_actl_infl", "subset_fixed_test_pred_infl", "subset_self_actl_infl",
                "subset_self_pred_infl"):
        np.testing.assert_array_equal(E.R[key], exp.R[key])
    assert "subset_refit_params" not in E.R  # phase 6 not requested
    lam_over_n = E.R["cv_l2_reg"] / E.num_train  # figure 3's colour: a point of the CV grid (x n)
    assert np.isclose(lam_over_n, np.logspace(-4, -1, 10), rtol=1e-12).any()
    # verbose prints each file loaded; get_simple_subset_tags is a method returning a list.
    E = SubsetInfluenceLogreg.load_run(exp.run_id, out_dir=out, phase_indices=[5], verbose=True)
    assert capsys.readouterr().out.count("Loaded ") == 1
    simple = E.get_simple_subset_tags()
    assert isinstance(simple, list) and len(simple) == len(E.R["subset_tags"])
    assert set(simple) <= SIMPLE_TAGS and "random_same_class" in simple and "pos_tail_test" in simple
    assert simple == list(E.get_simple_subset_tags())  # not a one-shot iterator


def test_master_only_run_loads_the_summary_and_ignores_phase_indices(runs):
    out, exp, master = runs
    E = SubsetInfluenceLogreg.load_run(master.run_id, out_dir=out, phase_indices=[0, 7, 8], verbose=False)
    assert set(E.R) == set(SUMMARY_KEYS)
    assert E.config["master_only"] is True and E.num_train == 455
    np.testing.assert_array_equal(E.R["subset_fixed_test_actl_infl"], exp.R["subset_fixed_test_actl_infl"])
    assert len(E.get_simple_subset_tags()) == len(exp.R["subset_tags"])


def test_counterexamples_load_run_with_verbose(tmp_path):
    cfg = cex_config(dataset_id="fixed", master_only=True)
    exp = Counterexamples(cfg, out_dir=tmp_path, progress=False)
    exp.run_from_cli(no_intermediate_results=True)
    E = Counterexamples.load_run("fixed", out_dir=tmp_path, verbose=False)
    assert E.config == exp.config and set(E.R) <= set(exp.R) and "cex_tags" in E.R
