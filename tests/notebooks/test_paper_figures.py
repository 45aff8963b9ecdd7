"""The paper-figures notebook against small fake-but-well-formed output folders.

The folders are written with :mod:`datasets.storage` (``save_result`` /
``save_json``) using the original's exact key names and shapes:

* ``ss_logreg`` master-only summaries: a binary run with all 15
  keys (hospital), a multiclass run with 10 (mnist), a normal run with phase files
  (breast_cancer), and a run that is missing (spam); part of hospital's
  regularisation sweep;
* ``counterexamples`` summaries (gauss4, ortho2, gauss4_float32; ortho2_float32 missing);
* ``data_valuation/reduced_cdr_sample_weights-True`` phase files plus the CDR
  labelling-info caches; ``credit_assignment/mnli_sample_weights-None`` summary plus
  the MultiNLI genres supplement.

The notebook is executed headless with nbclient on a kernel that runs this
interpreter; any cell error fails the test.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from datasets import storage
from experiments import figures as fd, plot

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "notebooks" / "paper-figures.ipynb"
NUM = 7  # INFLUENCE_FIG_NUM_SUBSETS of the fake runs
FIG_DATASETS = ["hospital", "spam", "mnist", "breast_cancer"]
HOSPITAL_RID = f"hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-{NUM}"
SPAM_RID = f"spam_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-{NUM}"
MNIST_RID = f"mnist_ihvp-cg_seed-0_sizes-0.0025-0.25_num-{NUM}"
BC_RID = f"breast_cancer_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-{NUM}"
HOSPITAL_REGS = {"0.0001": 1e-4, "1.0": 1.0, "100.0": 100.0}  # 4 of hospital's 7 values missing

# paper-fig4-float32.pdf is not made (ortho2_float32 is missing), nor any -generated figure.
EXPECTED_PDFS = [
    "paper-fig1.pdf", "paper-fig2.pdf", "paper-fig3.pdf", "paper-regs-spearman.pdf", "paper-fig4.pdf",
    "paper-fig5.pdf", "paper-fig6.pdf", "paper-suppfig-mnli-acc-test.pdf",
    "paper-suppfig-mnli-acc-nonfires.pdf", "paper-suppfig-mnli-size.pdf", "paper-suppfig-mnli-genre-effect.pdf",
    "paper-suppfig-mnli-genre-contrib.pdf", "paper-suppfig-babble-acc-test.pdf", "paper-suppfig-babble-sizes.pdf",
    "paper-suppfig-babble-accs.pdf", "paper-combined-apps.pdf",
]
EXPECTED_CSVS = [
    "fixed-test-points.csv", "paper-fig1-spearman.csv", "paper-fig2-spearman.csv", "paper-fig3-spearman.csv",
    "paper-fig4-spearman.csv", "paper-fig5-spearman.csv", "paper-fig6-spearman.csv",
    "paper-suppfig-mnli-acc-test-spearman.csv", "paper-suppfig-mnli-acc-nonfires-spearman.csv",
    "paper-suppfig-babble-acc-test-spearman.csv",
]




# --------------------------------------------------------------------------- fake runs
def _tags(rng: np.random.RandomState, per_type: int = 5) -> list[str]:
    tags = []
    for t in ("random", "feature_window", "same_features", "same_grad"):
        tags += [t] * per_type
    tags += [f"random_same_class-{rng.randint(2)}" for _ in range(per_type)]
    tags += [f"pos_tail_test-{i % 3}-{17 + i}" for i in range(per_type)]
    tags += [f"neg_tail_test-{i % 3}-{17 + i}" for i in range(per_type)]
    return tags


def ss_logreg_result(rng: np.random.RandomState, binary: bool = True, newton: bool = True,
                     n_test: int = 200) -> dict:
    """The ss_logreg summary keys with their shapes: (S, 6), (S,), (n_t,), (6,)."""
    tags = _tags(rng)
    S = len(tags)
    actl = lambda shape: rng.normal(0, 1, shape)  # noqa: E731
    noisy = lambda a: a * 0.8 + 0.2 * rng.normal(0, 1, a.shape)  # noqa: E731
    R = {"cv_l2_reg": 0.1, "initial_test_losses": rng.exponential(1, n_test),
         "fixed_test": np.array([3, 150, 7, 42, 99, 120]), "subset_tags": tags}
    quantities = ["_infl"] + (["_margin_infl"] if binary else [])
    for q in quantities:
        a = actl((S, 6))
        R[f"subset_fixed_test_actl{q}"] = a
        R[f"subset_fixed_test_pred{q}"] = noisy(a)
    a = np.abs(actl(S))
    R["subset_self_actl_infl"] = a
    R["subset_self_pred_infl"] = noisy(a)
    R["subset_self_pparam_infl"] = noisy(a)
    R["subset_fixed_test_pparam_infl"] = noisy(R["subset_fixed_test_actl_infl"])
    if newton:
        R["subset_self_nparam_infl"] = noisy(a)
        R["subset_fixed_test_nparam_infl"] = noisy(R["subset_fixed_test_actl_infl"])
        if binary:
            R["subset_fixed_test_nparam_margin_infl"] = noisy(R["subset_fixed_test_actl_margin_infl"])
    return R


def ss_logreg_config(dataset_id: str, master_only: bool, num: int = NUM, fixed_reg: float | None = None) -> dict:
    from experiments.subset_influence import build_config
    return build_config(dataset_id=dataset_id, subset_choice_type="range", num_subsets=num,
                        master_only=master_only, fixed_reg=fixed_reg)


def write_summary(run_dir: Path, config: dict, R: dict) -> None:
    storage.save_json(run_dir / "config.json", config)
    storage.save_result(run_dir / "result_summary.npz", R)


def write_phases(run_dir: Path, config: dict, phases: dict[str, dict]) -> None:
    storage.save_json(run_dir / "config.json", config)
    for name, result in phases.items():
        storage.save_result(run_dir / f"result_{name}.npz", result)


def cex_result(rng, S: int, tags: list[str], k120: bool) -> dict:
    a = rng.normal(0, 1, (S, len(tags)))
    R = {"cex_tags": tags, "cex_subset_test_pred_margin_infl": a,
         "cex_subset_test_newton_pred_margin_infl": a * 1.1 + 0.3 * rng.normal(0, 1, a.shape)}
    if k120:
        R["cex_lstsq_uv_K-120_subsets"] = rng.choice(S, 120, replace=False)
    return R


CEX_TAGS = (["lstsq_uv_K-30"] * 3 + ["lstsq_uv_K-120_gauss"] * 4 + ["cex_avg_K-1_C-0.1", "cex_factor"]
            + ["cex_random"] * 2 + ["cex_one"])

LF_IDS = [1, 2, 3, 5, 6]           # LF 4 has no rows: the group order differs from id - 1
LF_POSITIVE = {1: True, 2: False, 3: True, 5: False, 6: True}


def build_fake_outputs(root: Path) -> tuple[Path, Path]:
    """Write every fake run and supplement under ``root``; returns (out_dir, data_dir)."""
    rng = np.random.RandomState(0)
    out, data = root / "output", root / "data"
    ss = out / "ss_logreg"
    hospital = ss_logreg_result(rng)
    write_summary(ss / HOSPITAL_RID, ss_logreg_config("hospital", True), hospital)
    write_summary(ss / MNIST_RID, ss_logreg_config("mnist", True),
                  ss_logreg_result(rng, binary=False, newton=False, n_test=300))
    # A normal (non-master) run: the same keys spread over the phase files.
    bc = ss_logreg_result(rng, n_test=120)
    bc["fixed_test"] = np.array([5, 17, 64, 2, 90, 33])
    bc["initial_test_losses"][bc["fixed_test"]] = [0.5, 0.7, 9.0, 0.1, 0.3, 0.6]  # column 2: highest loss
    phase_of = {"cv_l2_reg": "0-cross_validation", "initial_test_losses": "1-initial_training",
                "fixed_test": "2-pick_test_points", "subset_tags": "5-pick_subsets",
                "subset_self_pred_infl": "7-compute_self_pred_infl"}
    phases: dict[str, dict] = {}
    for key, value in bc.items():
        name = phase_of.get(key, "14-compute_pparam_infl" if ("pparam" in key or "nparam" in key)
                            else "8-compute_actl_infl")
        phases.setdefault(name, {})[key] = value
    phases["5-pick_subsets"]["subset_indices"] = [np.arange(i + 1) for i in range(len(bc["subset_tags"]))]
    phases["6-retrain"] = {"subset_fixed_test_actl_infl": np.zeros((3, 6))}  # must not be read
    write_phases(ss / BC_RID, ss_logreg_config("breast_cancer", False), phases)
    for r_str, r in HOSPITAL_REGS.items():
        rid = f"hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-{r_str}"
        write_summary(ss / rid, ss_logreg_config("hospital", True, 10, r), ss_logreg_result(rng))

    cex = out / "counterexamples"
    for rid, S, k120 in (("gauss4", 150, True), ("ortho2", 116, False), ("gauss4_float32", 150, True)):
        write_summary(cex / rid, {"dataset_id": rid.split("_")[0], "seed": 0, "max_memory": 10 ** 9,
                                  "master_only": True, "dtype": "float32" if "32" in rid else "float64"},
                      cex_result(rng, S, CEX_TAGS, k120))

    # data_valuation: one group per LF (tag same_features), always phase files.
    sizes = [30, 12, 25, 8, 40]
    starts = np.cumsum([0] + sizes)
    groups = [np.arange(starts[i], starts[i + 1]) for i in range(len(sizes))]
    dv_config = {"dataset_config": {"dataset_id": "reduced_cdr", "center_data": False, "append_bias": False,
                                    "data_dir": str(data)}, "cross_validation_folds": 5,
                 "normalized_cross_validation_range": [1e-4, 1e-1, 10], "max_memory": 10 ** 9,
                 "sample_weights": True}
    dv8 = {}
    for t in ("pos", "neg", "all"):
        a = rng.normal(0, 1, len(sizes))
        dv8[f"subset_{t}_test_actl_infl"] = a
        dv8[f"subset_{t}_test_pred_infl"] = a + 0.1 * rng.normal(0, 1, len(sizes))
    write_phases(out / "data_valuation" / "reduced_cdr_sample_weights-True", dv_config, {
        "0-cross_validation": {"cv_l2_reg": 1.5},
        "5-pick_subsets": {"subset_tags": ["same_features"] * len(sizes), "subset_indices": groups,
                           "subset_LF_ids": np.array(LF_IDS)},
        "8-compute_actl_infl": dv8})
    # CDR labelling info caches: votes (value, candidate, LF key) and gold (value, candidate).
    votes, gold = [], []
    for cand in range(60):
        gold.append((1 if cand % 2 else -1, cand))
    for lf in LF_IDS:
        sign = 1 if LF_POSITIVE[lf] else -1
        for cand in range(lf, 60, 3):
            votes.append((sign, cand, lf))
    storage.save_arrays(data / "babble" / "cdr_LF_labels.npz", LF_labels=np.array(votes, dtype=np.int64),
                        columns=np.array(["value", "candidate_id", "key_id"]))
    storage.save_arrays(data / "babble" / "cdr_gold_labels.npz", gold_labels=np.array(gold, dtype=np.int64),
                        columns=np.array(["value", "candidate_id"]))

    # credit_assignment: master-only summary (one group per worker) + MNLI genres supplement.
    n_workers, n_train = 12, 240
    train_genres = np.array(fd.MNLI_TEST_GENRES)[rng.randint(0, 5, n_train)]
    owner = rng.randint(0, n_workers, n_train)
    ca = {"cv_l2_reg": 3.0, "initial_test_losses": rng.exponential(1, 50),
          "subset_tags": [f"same_turker-{w}" for w in range(n_workers)],
          "test_genres": list(fd.MNLI_TEST_GENRES), "nonfires_genres": list(fd.MNLI_NONFIRES_GENRES),
          "subset_indices": [np.flatnonzero(owner == w) for w in range(n_workers)],
          "all_test_pred_infl": rng.normal(0, 1, n_workers)}
    for g in fd.MNLI_TEST_GENRES:
        a = rng.normal(0, 0.5, n_workers)
        ca[f"{g}_test_actl_infl"], ca[f"{g}_test_pred_infl"] = a, a + 0.05 * rng.normal(0, 1, n_workers)
    for g in fd.MNLI_NONFIRES_GENRES:
        a = rng.normal(0, 0.5, n_workers)
        ca[f"{g}_nonfires_actl_infl"], ca[f"{g}_nonfires_pred_infl"] = a, a + 0.05 * rng.normal(0, 1, n_workers)
    ca_config = {"dataset_config": {"dataset_id": "mnli", "center_data": False, "append_bias": False,
                                    "data_dir": str(data)}, "sample_weights": None, "master_only": True}
    write_summary(out / "credit_assignment" / "mnli_sample_weights-None", ca_config, ca)
    # The bundle's genres file is a pickled per-split object array (read by the restricted unpickler).
    genres = np.empty(3, dtype=object)
    genres[0], genres[1], genres[2] = train_genres, np.array([], dtype=str), np.array(fd.MNLI_TEST_GENRES)
    (data / "multinli_1.0").mkdir(parents=True, exist_ok=True)
    np.savez(data / "multinli_1.0" / "mnli_genres.npz", genres=genres)
    return out, data


@pytest.fixture(scope="module")
def fake_outputs(tmp_path_factory):
    return build_fake_outputs(tmp_path_factory.mktemp("figures"))


# --------------------------------------------------------------------------- notebook execution
def _kernel_path(root: Path) -> Path:
    """A folder for JUPYTER_PATH whose ``python3`` kernelspec runs this interpreter."""
    kdir = root / "jupyter" / "kernels" / "python3"
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    return root / "jupyter"


@pytest.fixture(scope="module")
def executed(fake_outputs, tmp_path_factory):
    """Run the notebook once against the fake outputs; returns (notebook, plot_dir, stdout).

    It runs as a user runs it: ``scripts/run_figures.py`` without flags, the folders
    given only by ``INFLUENCE_OUT_DIR`` / ``INFLUENCE_PLOT_DIR`` (the flags'
    defaults used to override them), on a kernel that runs this interpreter.
    """
    import nbformat

    out, _ = fake_outputs
    root = tmp_path_factory.mktemp("nbrun")
    plots = root / "plots"
    env = dict(os.environ, JUPYTER_PATH=str(_kernel_path(root)), INFLUENCE_OUT_DIR=str(out),
               INFLUENCE_PLOT_DIR=str(plots), INFLUENCE_FIG_DATASETS=",".join(FIG_DATASETS),
               INFLUENCE_FIG_NUM_SUBSETS=str(NUM), INFLUENCE_FIG_REG_DATASETS="hospital,spam", MPLBACKEND="Agg")
    env.pop("INFLUENCE_FIG_DATA_DIR", None)
    env.pop("PYTHONPATH", None)   # run_figures.py puts the repository on the kernel's path
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "run_figures.py"), "--timeout", "600"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"run_figures.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"in {plots} from {out}" in proc.stdout
    nb = nbformat.read(plots / "paper-figures.executed.ipynb", as_version=4)
    stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return nb, plots, stdout


def test_notebook_has_no_hard_coded_absolute_paths():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "/work/" not in src and "/home/" not in src and "/tmp/" not in src
    # No plotting maths in cells: drawing goes through experiments.plot.
    assert "scatter(" not in src and "spearmanr" not in src


def test_notebook_runs_and_writes_every_figure(executed):
    nb, plots, _ = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    missing = [n for n in EXPECTED_PDFS + EXPECTED_CSVS if not (plots / n).is_file()]
    assert not missing, f"not written: {missing}"
    assert all((plots / n).read_bytes()[:5] == b"%PDF-" for n in EXPECTED_PDFS)
    # No file for a figure that cannot be made: exactly the expected PDFs are there.
    assert sorted(p.name for p in plots.glob("*.pdf")) == sorted(EXPECTED_PDFS)


def test_figures_not_made_are_listed_with_their_command(executed):
    _, plots, stdout = executed
    t = pd.read_csv(plots / "figures-not-made.csv", index_col=0)
    col = "missing (and the command that makes it)"
    fig4 = t[t["figure"] == "paper-fig4-float32.pdf"]
    assert list(fig4["status"]) == ["not made"]
    assert fig4[col].iloc[0].startswith("missing counterexamples/ortho2_float32: run python scripts/counterexamples.py")
    generated = t[t["figure"] == "paper-combined-apps-generated.pdf"]
    assert (generated["status"] == "not made").all() and generated[col].str.contains("scripts/reproduce.py").all()
    # Figure 1 is drawn without the missing spam run, which is named with its command.
    fig1 = t[t["figure"] == "paper-fig1.pdf"]
    assert list(fig1["status"]) == ["drawn without"] and fig1[col].iloc[0].startswith(f"missing ss_logreg/{SPAM_RID}")
    assert "paper-fig4-float32.pdf (not made):" in stdout


def test_missing_runs_are_reported_with_their_command(executed):
    _, _, stdout = executed
    assert (f"missing ss_logreg/{SPAM_RID}: run python scripts/subsets_infl_logreg.py --dataset-id spam "
            "--subset-choice-type range --subset-min-rel-size 0.0025 --subset-max-rel-size 0.25 "
            f"--num-subsets {NUM} --max-memory 100000000 --no-intermediate-results") in stdout
    assert "missing counterexamples/ortho2_float32: run python scripts/counterexamples.py --dataset-id ortho2 " \
           "--no-intermediate-results --float32" in stdout
    # Hospital's sweep is partial: only the absent values are listed.
    line = next(ln for ln in stdout.splitlines() if ln.startswith("missing ss_logreg/hospital_") and "rel-reg" in ln)
    assert "rel-reg-{0.001,0.01,0.1,10.0}: run for R in 0.001 0.01 0.1 10.0; do" in line and "--fixed-reg $R" in line
    assert "missing ss_logreg/spam_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-" in stdout


def test_spearman_tables_match_scipy_on_the_fake_data(executed, fake_outputs):
    _, plots, _ = executed
    out, _ = fake_outputs
    hospital, _ = storage.load_result(out / "ss_logreg" / HOSPITAL_RID / "result_summary.npz")
    t1 = pd.read_csv(plots / "paper-fig1-spearman.csv", index_col=0)
    assert list(t1.columns) == ["Diabetes", "MNIST", "Breast cancer"]   # no column for the missing Enron run
    k = fd.FIXED_TEST_IDX["hospital"]
    expect = spearmanr(hospital["subset_fixed_test_actl_infl"][:, k], hospital["subset_fixed_test_pred_infl"][:, k])[0]
    assert t1.loc["Influence on test loss", "Diabetes"] == pytest.approx(expect, rel=1e-12)
    expect = spearmanr(hospital["subset_self_actl_infl"], hospital["subset_self_pred_infl"])[0]
    assert t1.loc["Influence on self-loss", "Diabetes"] == pytest.approx(expect, rel=1e-12)
    assert np.isnan(t1.loc["Influence on test prediction", "MNIST"])    # no margin (multiclass)
    assert t1["Breast cancer"].notna().all()                            # read from phase files
    # Breast cancer is not in the paper's table: its highest-loss fixed point (column 2).
    bc = fd.load_ss_logreg(fd.Settings(out, plots, FIG_DATASETS, NUM, [], 10), "breast_cancer")
    expect = spearmanr(bc.R["subset_fixed_test_actl_infl"][:, 2], bc.R["subset_fixed_test_pred_infl"][:, 2])[0]
    assert t1.loc["Influence on test loss", "Breast cancer"] == pytest.approx(expect, rel=1e-12)
    # Figure 5 uses the median column (hospital: 3).
    t5 = pd.read_csv(plots / "paper-fig5-spearman.csv", index_col=0)
    expect = spearmanr(hospital["subset_fixed_test_actl_infl"][:, 3], hospital["subset_fixed_test_pred_infl"][:, 3])[0]
    assert t5.loc["Influence on test loss", "Diabetes"] == pytest.approx(expect, rel=1e-12)
    # Figure 3: one rho per lambda/n, present runs only.
    t3 = pd.read_csv(plots / "paper-fig3-spearman.csv", index_col=0)
    row = t3[(t3["row"] == "Influence on self-loss") & (t3["dataset"] == "hospital")].iloc[0]
    assert row[["0.0001", "1.0", "100.0"]].notna().all() and row[["0.001", "1e-07"]].isna().all()
    # MNLI: one rho per genre.
    tm = pd.read_csv(plots / "paper-suppfig-mnli-acc-test-spearman.csv", index_col=0)
    assert list(tm.columns) == fd.MNLI_TEST_GENRES and tm.notna().all().all()


def test_fixed_test_table(executed):
    _, plots, _ = executed
    t = pd.read_csv(plots / "fixed-test-points.csv", index_col=0)
    bc = t[t["dataset"] == "breast_cancer"]
    assert list(bc["test_index"]) == [5, 17, 64, 2, 90, 33]
    assert bc.loc[bc["column"] == 2, "rank"].iloc[0] == 119  # the highest of 120 losses
    assert "plotted (max)" in bc.loc[bc["column"] == 2, "role"].iloc[0]
    assert t.loc[t["dataset"] == "spam", "status"].iloc[0].startswith("missing ss_logreg/")


# --------------------------------------------------------------------------- loaders (no kernel)
@pytest.fixture
def settings(fake_outputs, tmp_path):
    out, _ = fake_outputs
    return fd.Settings(out, tmp_path / "plots", FIG_DATASETS, NUM, ["hospital"], 10)


def test_phase_files_and_summary_give_the_same_keys(settings):
    bc = fd.load_ss_logreg(settings, "breast_cancer")
    hosp = fd.load_ss_logreg(settings, "hospital")
    assert bc.ok and hosp.ok
    from experiments.subset_influence import SUMMARY_KEYS
    assert set(SUMMARY_KEYS) <= set(bc.R) and set(hosp.R) == set(SUMMARY_KEYS)
    assert bc.R["subset_fixed_test_actl_infl"].shape[1] == 6    # phase 8's, not phase 6's
    assert isinstance(bc.R["subset_tags"], list) and isinstance(bc.R["subset_tags"][0], str)


def test_load_result_keys_reads_only_the_keys_asked(tmp_path):
    path = tmp_path / "r.npz"
    storage.save_result(path, {"a": np.arange(3), "tags": ["x", "y"], "rag": [np.arange(2), np.arange(3)], "s": 1.5})
    assert set(storage.load_result_keys(path, ["tags", "rag", "absent"])) == {"tags", "rag"}
    assert storage.load_result_keys(path)["s"] == 1.5


def test_missing_and_broken_runs_never_raise(settings, capsys, tmp_path):
    run = fd.load_ss_logreg(settings, "spam")
    assert not run.ok and run.message.startswith(f"missing ss_logreg/{SPAM_RID}: run python scripts/")
    assert f"missing ss_logreg/{SPAM_RID}" in capsys.readouterr().out
    own = fd.Settings(tmp_path / "out", tmp_path / "plots", ["digits"], NUM, [], 10)
    broken = own.out_dir / "ss_logreg" / "digits_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-7"
    broken.mkdir(parents=True)
    storage.save_json(broken / "config.json", {"master_only": True})
    assert fd.load_ss_logreg(own, "digits").problem.startswith("incomplete")
    (broken / "result_summary.npz").write_bytes(b"not an npz")
    run = fd.load_ss_logreg(own, "digits")
    assert run.problem.startswith("unreadable") and "subsets_infl_logreg.py" in run.message
    storage.save_json(broken / "config.json", {"master_only": False})
    assert fd.load_ss_logreg(own, "digits").problem.startswith("incomplete (no phase files")


def test_missing_run_becomes_a_labelled_empty_panel(settings):
    import matplotlib.pyplot as plt

    runs = {ds: fd.load_ss_logreg(settings, ds, verbose=False) for ds in ("hospital", "spam")}
    rows = [("Influence on\ntest loss", "subset_fixed_test_actl_infl", "subset_fixed_test_pred_infl"),
            ("Influence on\nself-loss", "subset_self_actl_infl", "subset_self_pred_infl")]
    panels, labels, titles = fd.group_grid(runs, rows)
    assert [p.kind for p in panels[0]] == ["scatter", "missing"]
    fig, axes, rhos = plot.plot_panel_grid(panels, labels, titles, legend=plot.subset_legend_entries())
    texts = " ".join(" ".join(t.get_text() for t in axes[0, 1].texts).split())  # wrapped at spaces only
    assert "missing ss_logreg/spam_" in texts and "scripts/subsets_infl_logreg.py" in texts
    assert axes[0, 1].get_xticks().size == 0 and np.isnan(rhos[:, 1]).all()
    assert axes[0, 1].get_title() == "Enron" and axes[0, 0].get_ylabel() == "Influence on\ntest loss"
    assert not np.isnan(rhos[:, 0]).any()
    plt.close(fig)


def test_fixed_test_column_rules(settings):
    hosp = fd.load_ss_logreg(settings, "hospital", verbose=False)
    assert fd.fixed_test_column(hosp, "hospital", "max") == 2
    assert fd.fixed_test_column(hosp, "hospital", "median") == 3
    run = fd.LoadedRun("ss_logreg", "x", "cmd", R={"fixed_test": np.array([0, 1, 2, 3]),
                                                      "initial_test_losses": np.array([5.0, 0.0, 2.0, 1.0, 3.0])})
    assert fd.fixed_test_column(run, "new", "max") == 0
    assert fd.fixed_test_column(run, "new", "median") == 2     # loss 2.0 has the median rank
    with pytest.raises(ValueError, match="which"):
        fd.fixed_test_column(run, "new", "mean")


def test_lf_statistics_and_group_alignment(settings):
    lf = np.array([[1, 0, 7], [1, 1, 7], [-1, 2, 7], [-1, 0, 8], [1, 5, 8]])
    gold = np.array([[1, 0], [-1, 1], [-1, 2]])
    positive, precision = fd.lf_statistics(lf, gold, [7, 8, 9])
    assert list(positive) == [True, False, False]
    assert precision[0] == pytest.approx(2 / 3) and precision[1] == 0.0 and np.isnan(precision[2])
    cdr = fd.load_data_valuation(settings)
    lfs = fd.cdr_lfs(settings, cdr)
    assert list(lfs.lf_ids) == LF_IDS   # subset_LF_ids, not k + 1
    assert list(lfs.positive) == [LF_POSITIVE[i] for i in LF_IDS]
    assert lfs.coverage.sum() == pytest.approx(1.0)


def test_mnli_genre_effect_order(settings):
    run = fd.load_credit_assignment(settings)
    M, labels = fd.mnli_genre_effect(run)
    assert labels == ["fiction", "facetoface", "nineeleven", "slate", "telephone", "travel", "government",
                      "verbatim", "letters", "oup"]
    # Workers sorted by their mean over verbatim, government, travel, letters, oup.
    key = M[[labels.index(g) for g in ("verbatim", "government", "travel", "letters", "oup")]].mean(axis=0)
    assert np.all(np.diff(key) >= 0)
    assert fd.mnli_genre_effect(fd.LoadedRun("credit_assignment", "x", "cmd", problem="missing"))[0] is None


def test_env_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUENCE_OUT_DIR", str(tmp_path / "o"))
    monkeypatch.setenv("INFLUENCE_PLOT_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("INFLUENCE_FIG_DATASETS", "breast_cancer, digits")
    monkeypatch.setenv("INFLUENCE_FIG_NUM_SUBSETS", "30")
    s = fd.settings_from_env()
    assert s.datasets == ["breast_cancer", "digits"] and s.num_subsets == 30 and s.plot_dir.is_dir()
    assert s.out_dir == tmp_path / "o" and s.reg_num_subsets == 10 and s.data_dir is None
    monkeypatch.delenv("INFLUENCE_FIG_DATASETS")
    monkeypatch.delenv("INFLUENCE_OUT_DIR")
    s = fd.settings_from_env(repo_root=tmp_path / "repo")   # the default is <repo>/output, created
    assert s.datasets == fd.DEFAULT_DATASETS and s.out_dir == tmp_path / "repo" / "output" and s.out_dir.is_dir()
    monkeypatch.setenv("INFLUENCE_FIG_NUM_SUBSETS", "many")
    with pytest.raises(ValueError, match="INFLUENCE_FIG_NUM_SUBSETS"):
        fd.settings_from_env()
    # An explicit mapping is read instead of os.environ.
    s = fd.settings_from_env({"INFLUENCE_PLOT_DIR": str(tmp_path / "q"), "INFLUENCE_FIG_REG_NUM_SUBSETS": "3",
                              "INFLUENCE_FIG_DATA_DIR": str(tmp_path / "d")}, repo_root=tmp_path / "repo")
    assert (s.plot_dir, s.num_subsets, s.reg_num_subsets, s.data_dir) == (tmp_path / "q", 100, 3, tmp_path / "d")


# --------------------------------------------------------------------------- the run registry
# The run ids the paper's figures read, written out.
SPEC_RUN_IDS = [
    (fd.ss_logreg_run("hospital", 100), "ss_logreg", "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-100"),
    (fd.ss_logreg_run("mnist", 100), "ss_logreg", "mnist_ihvp-cg_seed-0_sizes-0.0025-0.25_num-100"),
    (fd.ss_logreg_run("mnist_small", 10, 1e-7), "ss_logreg",
     "mnist_small_ihvp-cg_seed-0_sizes-0.0025-0.25_num-10_rel-reg-1e-07"),
    (fd.ss_logreg_run("hospital", 10, 1e-4), "ss_logreg",
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-0.0001"),
    (fd.ss_logreg_run("hospital", 10, 1.0), "ss_logreg",
     "hospital_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-10_rel-reg-1.0"),
    (fd.counterexamples_run("gauss4"), "counterexamples", "gauss4"),
    (fd.counterexamples_run("ortho2", "float32"), "counterexamples", "ortho2_float32"),
    (fd.data_valuation_run(), "data_valuation", "reduced_cdr_sample_weights-True"),
    (fd.credit_assignment_run(), "credit_assignment", "mnli_sample_weights-None"),
]


@pytest.mark.parametrize("spec, experiment_id, run_id", SPEC_RUN_IDS, ids=[r for _, _, r in SPEC_RUN_IDS])
def test_registry_run_ids_are_the_experiments(spec, experiment_id, run_id):
    assert (spec.experiment_id, spec.run_id) == (experiment_id, run_id)


def test_registry_run_ids_equal_the_experiment_classes_for_the_same_settings():
    from experiments import counterexamples as cex, subset_influence as si

    for ds in ("breast_cancer", "digits", "dogfish", "spam", "animals"):
        for num, reg in ((30, None), (10, 0.01), (10, 100.0)):
            config = si.build_config(dataset_id=ds, subset_choice_type="range", subset_min_rel_size=0.0025,
                                     subset_max_rel_size=0.25, num_subsets=num, fixed_reg=reg)
            assert fd.ss_logreg_run(ds, num, reg).run_id == si.SubsetInfluenceLogreg(config).run_id
    for ds in ("gauss4", "ortho2"):
        for dtype in ("float64", "float32"):
            config = cex.build_config(dataset_id=ds, master_only=True, dtype=dtype)
            assert fd.counterexamples_run(ds, dtype).run_id == cex.Counterexamples(config).run_id


def _script_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_figures_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spec", [fd.ss_logreg_run("hospital", 100), fd.ss_logreg_run("spam", 10, 1e-7),
                                  fd.counterexamples_run("gauss4"), fd.counterexamples_run("ortho2", "float32"),
                                  fd.data_valuation_run(), fd.credit_assignment_run()],
                         ids=["ss_logreg", "ss_logreg_reg", "cex", "cex_float32", "data_valuation", "credit"])
def test_registry_commands_make_the_runs_the_figures_read(spec, monkeypatch, tmp_path):
    """Each command, parsed by its own script, builds the same config and run id.

    The experiment is caught where the script creates it, so nothing runs.
    """
    from experiments.common import result_config

    class Made(Exception):
        pass

    class Capture(spec.experiment):
        def __init__(self, config, out_dir=None, **kwargs):
            raise Made(config, out_dir)

    monkeypatch.setattr(sys.modules[spec.experiment.__module__], spec.experiment.__name__, Capture)
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    argv = shlex.split(spec.command(tmp_path / "out"))
    assert argv[:2] == ["python", spec.script] and argv[-2:] == ["--out-dir", str(tmp_path / "out")]
    script = _script_module(REPO_ROOT / spec.script)
    with pytest.raises(Made) as made:  # the script's body, without the CLI's error-to-exit-code mapping
        script.run(script.make_parser().parse_args(argv[2:]))
    config, out_dir = made.value.args
    assert spec.experiment(config).run_id == spec.run_id
    assert result_config(config) == result_config(spec.config)
    assert Path(out_dir) == tmp_path / "out"
    # The scripts' default folder is not spelled out.
    from experiments.common import DEFAULT_OUT_DIR
    assert "--out-dir" not in spec.command(DEFAULT_OUT_DIR) and "--out-dir" not in spec.command()


def test_invalid_settings_become_a_labelled_run(settings, capsys):
    run = fd.load_ss_logreg(settings, "unknown_ds")
    assert not run.ok and run.problem.startswith("invalid settings (--dataset-id must be one of")
    assert "python scripts/subsets_infl_logreg.py --dataset-id unknown_ds" in run.message
    assert "invalid settings" in capsys.readouterr().out


def test_figure4_panels_pick_the_spec_test_points(settings):
    left = fd.load_counterexamples(settings, "gauss4")
    right = fd.load_counterexamples(settings, "ortho2")
    (lp, rp), = fd.figure4_panels(left, right)
    t = [i for i, tag in enumerate(CEX_TAGS) if tag == "lstsq_uv_K-120_gauss"][2]
    groups = left.R["cex_lstsq_uv_K-120_subsets"]
    np.testing.assert_array_equal(lp.x, left.R["cex_subset_test_newton_pred_margin_infl"][groups, t])
    np.testing.assert_array_equal(lp.y, left.R["cex_subset_test_pred_margin_infl"][groups, t])
    assert lp.kind == rp.kind == "cross" and len(rp.x) == 116
    np.testing.assert_array_equal(rp.y, right.R["cex_subset_test_pred_margin_infl"][:, CEX_TAGS.index("cex_one")])
    # ortho2 has no K-120 groups; a broken run gives a labelled panel, not an IndexError.
    assert fd.cex_panel(right, "lstsq_uv_K-120_gauss", 2, "cex_lstsq_uv_K-120_subsets").kind == "na"
    bad = fd.LoadedRun("counterexamples", "x", "cmd", R=dict(left.R, **{"cex_lstsq_uv_K-120_subsets": np.array([999])}))
    assert "inconsistent" in fd.cex_panel(bad, "lstsq_uv_K-120_gauss", 2, "cex_lstsq_uv_K-120_subsets").text


def test_figure_log_writes_no_file_for_a_figure_not_made(tmp_path, capsys):
    import matplotlib.pyplot as plt

    s = fd.Settings(tmp_path / "out", tmp_path / "plots", [], NUM, [], 10)
    s.plot_dir.mkdir()
    (s.plot_dir / "paper-fig4.pdf").write_bytes(b"%PDF- an earlier run's figure")
    log = fd.FigureLog(s)
    log.skip("paper-fig4.pdf", ["missing counterexamples/gauss4: run python scripts/counterexamples.py"])
    assert not (s.plot_dir / "paper-fig4.pdf").exists()   # a stale file is removed, none is written
    fig, ax = plt.subplots()
    log.save(fig, "paper-fig1.pdf", missing=["missing ss_logreg/spam_x: run python scripts/subsets_infl_logreg.py"])
    assert (s.plot_dir / "paper-fig1.pdf").read_bytes()[:5] == b"%PDF-" and log.written == ["paper-fig1.pdf"]
    t = log.table()
    assert list(t["figure"]) == ["paper-fig4.pdf", "paper-fig1.pdf"]
    assert list(t["status"]) == ["not made", "drawn without"]
    assert t.iloc[0, 2].endswith("scripts/counterexamples.py")
    assert "not made: paper-fig4.pdf" in capsys.readouterr().out
