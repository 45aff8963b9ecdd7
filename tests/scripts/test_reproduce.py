"""The README's main job end to end, on small real runs made here.

``scripts/reproduce.py`` (what ``scripts/quickstart.sh`` runs after setting up) is run
as a user would, with a reduced workload: ``ss_logreg`` on the offline ``breast_cancer``
data with 3 groups per type, the ``ortho2`` counterexample in both precisions, and the
figures notebook executed headless (nbclient). Before it, the application scripts run
on generated files in the exact formats of the Babble Labble database and the MultiNLI
bundle, so every figure of the notebook draws from results of the real engines.
The notebook must run without a cell error, write every figure and table, report the
runs it lacks (``gauss4``) with their command, and its correlation tables must equal
scipy's Spearman computed here directly from the result files.
"""
from __future__ import annotations

import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from datasets import storage
from experiments import figures as fd
from tests.conftest import REPO_ROOT
from tests.experiments.app_fixtures import make_cdr_db, make_mnli_files

NUM = 3
BC_RID = f"breast_cancer_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-{NUM}"
PDFS = ["paper-fig1.pdf", "paper-fig2.pdf", "paper-fig3.pdf", "paper-fig4.pdf", "paper-fig4-float32.pdf",
        "paper-fig5.pdf", "paper-fig6.pdf", "paper-suppfig-mnli-acc-test.pdf", "paper-suppfig-babble-acc-test.pdf",
        "paper-combined-apps.pdf"]


def _script(name, *args, timeout=900):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *map(str, args)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    data, out, plots = root / "data", root / "output", root / "plots"
    make_cdr_db(data)
    make_mnli_files(data)
    common = ["--data-dir", data, "--out-dir", out, "--no-progress"]
    _script("babble_reduce.py", *common, "--dataset-id", "cdr", "--fit-intercept", "--sample-weights")
    _script("data_valuation.py", *common, "--dataset-id", "reduced_cdr", "--sample-weights",
            "--cv-range", "1e-3", "1e-1", "2")
    _script("credit_assignment.py", *common, "--dataset-id", "mnli", "--no-intermediate-results",
            "--cv-range", "1e-3", "1e-1", "2")
    stdout = _script("reproduce.py", "--datasets", "breast_cancer", "--num-subsets", NUM, "--counterexamples",
                     "ortho2", "--data-dir", data, "--out-dir", out, "--plot-dir", plots)
    nb = nbformat.read(plots / "paper-figures.executed.ipynb", as_version=4)
    nb_stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                        if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return {"out": out, "plots": plots, "stdout": stdout, "nb": nb, "nb_stdout": nb_stdout}


def test_main_job_runs_every_step(reproduced):
    s = reproduced["stdout"]
    for step in ("ss_logreg breast_cancer", "counterexamples ortho2", "counterexamples ortho2 float32",
                 "figures notebook"):
        assert f"=== {step}: ok" in s or f"=== {step} (num-subsets {NUM}): ok" in s, step
    assert "FAILED" not in s and "gauss4" not in s
    out = reproduced["out"]
    for rel in (f"ss_logreg/{BC_RID}", "counterexamples/ortho2", "counterexamples/ortho2_float32",
                "data_valuation/reduced_cdr_sample_weights-True", "credit_assignment/mnli_sample_weights-None"):
        assert (out / rel / "config.json").is_file(), rel


def test_notebook_has_no_error_and_writes_the_figures(reproduced):
    nb, plots = reproduced["nb"], reproduced["plots"]
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    for name in PDFS:
        assert (plots / name).read_bytes()[:5] == b"%PDF-", name


def test_missing_runs_are_named_with_their_command(reproduced):
    assert ("missing counterexamples/gauss4: run python scripts/counterexamples.py --dataset-id gauss4 "
            "--no-intermediate-results") in reproduced["nb_stdout"]


def test_tables_equal_spearman_of_the_result_files(reproduced):
    out, plots = reproduced["out"], reproduced["plots"]
    R, _ = storage.load_result(out / "ss_logreg" / BC_RID / "result_summary.npz")
    t1 = pd.read_csv(plots / "paper-fig1-spearman.csv", index_col=0)
    # breast_cancer is outside the paper's table: the fixed test point with the highest loss.
    k = int(np.argmax(np.asarray(R["initial_test_losses"])[np.asarray(R["fixed_test"])]))
    run = fd.load_ss_logreg(fd.Settings(out, plots, ["breast_cancer"], NUM, [], 10), "breast_cancer")
    assert k == fd.fixed_test_column(run, "breast_cancer", "max")
    expect = spearmanr(R["subset_fixed_test_actl_infl"][:, k], R["subset_fixed_test_pred_infl"][:, k])[0]
    assert t1.loc["Influence on test loss", "Breast cancer"] == pytest.approx(expect, rel=1e-12)
    expect = spearmanr(R["subset_self_actl_infl"], R["subset_self_pred_infl"])[0]
    assert t1.loc["Influence on self-loss", "Breast cancer"] == pytest.approx(expect, rel=1e-12)
    # The real runs are informative: influence ranks groups well on this easy problem.
    assert expect > 0.5
    # Applications: the tables are filled from the runs on the generated data.
    tm = pd.read_csv(plots / "paper-suppfig-mnli-acc-test-spearman.csv", index_col=0)
    assert list(tm.columns) == fd.MNLI_TEST_GENRES and tm.notna().all().all()
    tb = pd.read_csv(plots / "paper-suppfig-babble-acc-test-spearman.csv", index_col=0)
    assert tb.notna().all().all()
