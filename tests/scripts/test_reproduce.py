"""The README's main job end to end, on small real runs made here.

``scripts/reproduce.py`` (what ``scripts/quickstart.sh`` runs after setting up) is run
as a user would, with a reduced workload: ``ss_logreg`` on the offline ``breast_cancer``
data with 3 groups per type, its estimator ladder, the ``ortho2`` counterexample in both
precisions, a two-value regularisation sweep, the CDR and MultiNLI pipelines on
generated data, and the figures notebook executed headless (nbclient). The notebook must
run without a cell error, write exactly the figures it has runs for (no placeholder
file), list the others (Figure 4 lacks ``gauss4``) with their command, label the figures
of generated data, and its correlation tables must equal scipy's Spearman computed here
directly from the result files.
"""
from __future__ import annotations

import re
import subprocess
import sys
import zlib

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from experiments import figures as fd
from tests.conftest import REPO_ROOT

NUM = 3
BC_RID = f"breast_cancer_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-{NUM}"
GEN = fd.GENERATED_SUFFIX
PDFS = ["paper-fig1.pdf", "paper-fig2.pdf", "paper-fig3.pdf", "paper-regs-spearman.pdf", "paper-fig5.pdf",
        "paper-fig6.pdf", "ladder-rel-error.pdf"] + [
    f"{name}{GEN}.pdf" for name in (
        "paper-suppfig-mnli-acc-test", "paper-suppfig-mnli-acc-nonfires", "paper-suppfig-mnli-size",
        "paper-suppfig-mnli-genre-effect", "paper-suppfig-mnli-genre-contrib", "paper-suppfig-babble-acc-test",
        "paper-suppfig-babble-sizes", "paper-suppfig-babble-accs", "paper-combined-apps")]


def _script(name, *args, timeout=1800):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *map(str, args)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    out, plots = root / "output", root / "plots"
    stdout = _script("reproduce.py", "--dataset-ids", "breast_cancer", "--num-subsets", NUM, "--counterexamples",
                     "ortho2", "--reg-values", "1e-3", "1e-1", "--reg-num-subsets", NUM, "--out-dir", out,
                     "--plot-dir", plots, "--progress", "off")
    nb = nbformat.read(plots / "paper-figures.executed.ipynb", as_version=4)
    nb_stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                        if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return {"out": out, "plots": plots, "stdout": stdout, "nb": nb, "nb_stdout": nb_stdout}


def test_main_job_runs_every_step(reproduced):
    s = reproduced["stdout"]
    for step in (f"ss_logreg breast_cancer (num-subsets {NUM})", "estimator ladder breast_cancer",
                 "counterexamples ortho2", "counterexamples ortho2 float32", "ss_logreg breast_cancer --fixed-reg 0.001",
                 "ss_logreg breast_cancer --fixed-reg 0.1", "generated CDR database", "babble_reduce (generated CDR)",
                 "data_valuation (generated CDR)", "generated MultiNLI bundle",
                 "credit_assignment (generated MultiNLI)", "figures notebook"):
        assert f"=== {step}: ok" in s, step
    assert "FAILED" not in s and "gauss4" not in s
    out = reproduced["out"]
    for rel in (f"ss_logreg/{BC_RID}", f"estimator_ladder/{BC_RID}", "counterexamples/ortho2",
                "counterexamples/ortho2_float32", f"ss_logreg/{BC_RID}_rel-reg-0.1",
                "generated/data_valuation/reduced_cdr_sample_weights-True",
                "generated/credit_assignment/mnli_sample_weights-None"):
        assert (out / rel / "config.json").is_file(), rel
    # The generated data stay apart from the real runs and data.
    assert (out / "generated" / "data" / "babble" / "cdr.db").is_file()
    assert not (out / "data_valuation").exists() and not (out / "credit_assignment").exists()


def test_notebook_writes_exactly_the_figures_it_has_runs_for(reproduced):
    nb, plots = reproduced["nb"], reproduced["plots"]
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    for name in PDFS:
        assert (plots / name).read_bytes()[:5] == b"%PDF-", name
    # No placeholder: no file for Figure 4 (gauss4 missing) nor for the real applications.
    assert sorted(p.name for p in plots.glob("*.pdf")) == sorted(PDFS)


def test_figures_not_made_are_named_with_their_command(reproduced):
    t = pd.read_csv(reproduced["plots"] / "figures-not-made.csv", index_col=0)
    col = "missing (and the command that makes it)"
    for name in ("paper-fig4.pdf", "paper-fig4-float32.pdf"):
        rows = t[(t["figure"] == name) & (t["status"] == "not made")]
        assert rows[col].str.startswith("missing counterexamples/gauss4").any(), name
    assert ("missing counterexamples/gauss4: run python scripts/counterexamples.py --dataset-id gauss4 "
            "--no-intermediate-results") in reproduced["nb_stdout"]
    real = t[t["figure"] == "paper-combined-apps.pdf"]
    assert (real["status"] == "not made").all() and real[col].str.contains("scripts/credit_assignment.py").any()


def _pdf_text(path) -> bytes:
    """The text drawn by a matplotlib PDF: its deflated content streams inflated, each
    ``[(G) -0.2 (E) ...] TJ`` string array joined (the numbers are kerning). A stream is
    inflated up to its own end (``decompressobj``), with the end-of-line before
    ``endstream`` left over: a compressed stream may itself end in a carriage return,
    which a pattern that strips an optional one would cut off."""
    data = path.read_bytes()
    content = b"\n".join(zlib.decompressobj().decompress(m.group(1))
                         for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S)
                         if m.group(1)[:1] == b"x")
    return b"\n".join(b"".join(re.findall(rb"\(((?:[^()\\]|\\.)*)\)", m.group(1)))
                      for m in re.finditer(rb"\[(.*?)\] TJ", content, re.S))


def test_figures_of_generated_data_say_so(reproduced):
    plots = reproduced["plots"]
    for name in PDFS:
        text = _pdf_text(plots / name)
        assert (b"GENERATED" in text) == name.endswith(f"{GEN}.pdf"), name


def test_tables_equal_spearman_of_the_result_files(reproduced):
    out, plots = reproduced["out"], reproduced["plots"]
    run = fd.load_ss_logreg(fd.Settings(out, plots, ["breast_cancer"], NUM, [], 10), "breast_cancer")
    R = run.R   # read from the run's phase files
    t1 = pd.read_csv(plots / "paper-fig1-spearman.csv", index_col=0)
    # breast_cancer is outside the paper's table: the fixed test point with the highest loss.
    k = int(np.argmax(np.asarray(R["initial_test_losses"])[np.asarray(R["fixed_test"])]))
    assert k == fd.fixed_test_column(run, "breast_cancer", "max")
    expect = spearmanr(R["subset_fixed_test_actl_infl"][:, k], R["subset_fixed_test_pred_infl"][:, k])[0]
    assert t1.loc["Influence on test loss", "Breast cancer"] == pytest.approx(expect, rel=1e-12)
    expect = spearmanr(R["subset_self_actl_infl"], R["subset_self_pred_infl"])[0]
    assert t1.loc["Influence on self-loss", "Breast cancer"] == pytest.approx(expect, rel=1e-12)
    # The real runs are informative: influence ranks groups well on this easy problem.
    assert expect > 0.5
    # Applications: the tables are filled from the runs on the generated data.
    tm = pd.read_csv(plots / f"paper-suppfig-mnli-acc-test{GEN}-spearman.csv", index_col=0)
    assert list(tm.columns) == fd.MNLI_TEST_GENRES and tm.notna().all().all()
    tb = pd.read_csv(plots / f"paper-suppfig-babble-acc-test{GEN}-spearman.csv", index_col=0)
    assert tb.notna().all().all()
