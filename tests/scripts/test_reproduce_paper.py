"""``scripts/reproduce.py --paper``: the plan of runs, the step runner, its table and its errors.

The plan is checked without running it, against independent sources: the configs its
commands build (through the scripts' own parsers) must equal those of the paper's recipe
(``codalab/run_subsets.sh``, ``codalab/run_reg.sh``), of the README's Fashion-MNIST
command and the run ids the figures notebook reads (``experiments.figures``). The runner
is checked on fake steps (exit codes, peak memory of a grandchild, the table file); two slow
tests run tiny real ``--paper`` jobs: three in a row (reuse, and resume after a lost phase
file), and one that stages the real hospital archive into an empty data folder.
"""
from __future__ import annotations

import csv
import importlib.util
import re
import shlex
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

from experiments import figures as fd
from experiments.common import result_config
from experiments.estimator_ladder import build_config as ladder_config
from experiments.figures.ladder import ladder_dir
from tests.conftest import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(f"_paper_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


rep = load("reproduce")
ss_script = load("subsets_infl_logreg")


def paper_args(*argv) -> Namespace:
    args = rep.make_parser().parse_args(["--paper", *map(str, argv)])
    rep.check_args(args)
    return args


def script_args(cmd) -> list[str]:
    """The flags of a planned command (after ``python scripts/x.py``) as strings."""
    assert Path(cmd[0]) == Path(sys.executable)
    return [str(c) for c in cmd[2:]]


def ss_config(argv: list[str]) -> dict:
    """The ss_logreg result config that ``scripts/subsets_infl_logreg.py argv`` runs."""
    return result_config(ss_script.config_from_args(ss_script.make_parser().parse_args(argv)))


def recipe_flags(path: Path) -> list[str]:
    """The flags of the ``python scripts/subsets_infl_logreg.py`` line of a CodaLab recipe."""
    text = path.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "scripts/subsets_infl_logreg.py" in ln)
    return shlex.split(line.split("scripts/subsets_infl_logreg.py", 1)[1])


def without(flags: list[str], *names: str) -> list[str]:
    """``flags`` without ``names`` and their values (a name followed by a non-flag value)."""
    out, i = [], 0
    while i < len(flags):
        if flags[i] in names:
            i += 2 if i + 1 < len(flags) and not flags[i + 1].startswith("--") else 1
        else:
            out.append(flags[i])
            i += 1
    return out


# ------------------------------------------------------------------------------ the plan
def test_paper_plan_lists_the_runs_in_order():
    args = paper_args("--out-dir", "/tmp/o", "--plot-dir", "/tmp/p", "--data-dir", "/tmp/d")
    titles = [s.title for s in rep.plan(args)]
    sweep = [f"ss_logreg hospital --fixed-reg {r}" for r in ("0.0001", "0.001", "0.01", "0.1", "1.0", "10.0", "100.0")]
    sweep += [f"ss_logreg spam --fixed-reg {r}" for r in ("1e-07", "1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1")]
    assert titles == [
        "data: hospital", "data: spam", "data: fashion_mnist",
        "ss_logreg hospital (num-subsets 100)", "ss_logreg spam (num-subsets 100)",
        "ss_logreg fashion_mnist (num-subsets 100)",
        "estimator ladder hospital", "estimator ladder spam",
        "counterexamples ortho2", "counterexamples ortho2 float32", "counterexamples gauss4",
        "counterexamples gauss4 float32",
        *sweep,
        "generated CDR database", "babble_reduce (generated CDR)", "data_valuation (generated CDR)",
        "generated MultiNLI bundle", "credit_assignment (generated MultiNLI)",
        "figures notebook"]
    steps = {s.title: s for s in rep.plan(args)}
    for ds in ("hospital", "spam", "fashion_mnist"):
        assert script_args(steps[f"data: {ds}"].cmd) == [
            "--data-dir", "/tmp/d", "--dataset-ids", ds, "--supplement-ids", "none"]
    # What each step reads: a run is not started when the data or run it needs failed.
    assert {t: s.needs for t, s in steps.items() if s.needs} == {
        "ss_logreg hospital (num-subsets 100)": ("data: hospital",),
        "ss_logreg spam (num-subsets 100)": ("data: spam",),
        "ss_logreg fashion_mnist (num-subsets 100)": ("data: fashion_mnist",),
        "estimator ladder hospital": ("ss_logreg hospital (num-subsets 100)",),
        "estimator ladder spam": ("ss_logreg spam (num-subsets 100)",),
        **{t: (f"data: {t.split()[1]}",) for t in sweep},
        "babble_reduce (generated CDR)": ("generated CDR database",),
        "data_valuation (generated CDR)": ("babble_reduce (generated CDR)",),
        "credit_assignment (generated MultiNLI)": ("generated MultiNLI bundle",)}
    assert all(n in titles[:titles.index(t)] for t, s in steps.items() for n in s.needs)
    # Every run keeps its phase files (so that a rerun resumes it), every run writes to the
    # folders given, and no step draws the per-run figures (the notebook draws them).
    for s in rep.plan(args):
        flags = script_args(s.cmd)
        assert "--no-intermediate-results" not in flags, s.title
        if "--out-dir" in flags:
            out = Path(flags[flags.index("--out-dir") + 1])
            assert out in (Path("/tmp/o"), Path("/tmp/o/generated")), s.title


def test_main_runs_are_the_recipes_runs():
    """hospital and spam: the config of codalab/run_subsets.sh; fashion_mnist: of the README's
    command. Equal result configs mean the same run id and interchangeable results."""
    args = paper_args("--out-dir", "/tmp/o")
    steps = {s.title: s for s in rep.plan(args)}
    recipe = without(recipe_flags(REPO_ROOT / "codalab" / "run_subsets.sh"), "--data-dir", "--out-dir")
    for ds in ("hospital", "spam"):
        flags = script_args(steps[f"ss_logreg {ds} (num-subsets 100)"].cmd)
        assert ss_config(flags) == ss_config([a.replace('"$ID"', ds).replace("$ID", ds) for a in recipe]), ds
        assert "--max-memory" in flags and flags[flags.index("--max-memory") + 1] == "100000000"
    readme = REPO_ROOT.joinpath("README.md").read_text()
    m = re.search(r"`python scripts/subsets_infl_logreg.py (--dataset-id fashion_mnist [^`]*)`", readme)
    assert m, "the README's Fashion-MNIST command"
    flags = script_args(steps["ss_logreg fashion_mnist (num-subsets 100)"].cmd)
    assert ss_config(flags) == ss_config(shlex.split(m.group(1)))
    assert flags[flags.index("--max-memory") + 1] == "1000000000"


def test_sweeps_are_the_recipes_runs_at_the_values_figure_3_plots():
    args = paper_args("--out-dir", "/tmp/o")
    recipe_text = (REPO_ROOT / "codalab" / "run_reg.sh").read_text()
    recipe_regs = [float(r) for r in re.search(r"for REG in ([^;]+);", recipe_text).group(1).split()]
    recipe = without(recipe_flags(REPO_ROOT / "codalab" / "run_reg.sh"), "--data-dir", "--out-dir", "--fixed-reg")
    settings = fd.Settings(Path("/tmp/o"), Path("/tmp/p"), ["hospital", "spam"], 100, ["hospital", "spam"], 10)
    for ds in ("hospital", "spam"):
        runs = [s for s in rep.plan(args) if s.title.startswith(f"ss_logreg {ds} --fixed-reg")]
        figure_runs = fd.load_reg_sweep(settings, ds)   # the runs Figure 3 reads (missing here)
        assert len(runs) == len(figure_runs) == 7
        for s, (r, loaded) in zip(runs, figure_runs):
            flags = script_args(s.cmd)
            assert float(flags[flags.index("--fixed-reg") + 1]) == r and r in recipe_regs
            want = [a.replace('"$ID"', ds).replace("$ID", ds) for a in recipe] + ["--fixed-reg", str(r)]
            assert ss_config(flags) == ss_config(want)
            cfg = ss_script.config_from_args(ss_script.make_parser().parse_args(flags))
            assert fd.ss_logreg_run(ds, 10, r).run_id == loaded.run_id == ss_run_id(cfg)


def ss_run_id(config: dict) -> str:
    from experiments.subset_influence import SubsetInfluenceLogreg
    return SubsetInfluenceLogreg(config).run_id


def test_ladders_read_the_main_runs_and_the_figures_read_every_run():
    args = paper_args("--out-dir", "/tmp/o")
    steps = {s.title: s for s in rep.plan(args)}
    settings = fd.Settings(Path("/tmp/o"), Path("/tmp/p"), args.datasets, 100, args.reg_dataset_ids, 10)
    for ds in ("hospital", "spam", "fashion_mnist"):
        main = ss_script.config_from_args(ss_script.make_parser().parse_args(
            script_args(steps[f"ss_logreg {ds} (num-subsets 100)"].cmd)))
        assert ss_run_id(main) == fd.ss_logreg_run(ds, 100).run_id   # what Figures 1, 2, 5, 6 read
        if ds == "fashion_mnist":
            continue
        ladder = load("estimator_ladder").make_parser().parse_args(script_args(steps[f"estimator ladder {ds}"].cmd))
        ladder_ss = ladder_config(ss_script.config_from_args(ladder))["ss_logreg"]
        # The same result config: the ladder reads the main run's phase files, not a new run.
        assert result_config(ladder_ss) == result_config(main)
        assert ladder_dir(settings, ds) == Path("/tmp/o") / "estimator_ladder" / ss_run_id(main)
    # The notebook is told which runs to read; the figures' sweep values are its own.
    fig = steps["figures notebook"]
    assert fig.env["INFLUENCE_FIG_DATASETS"] == "hospital,spam,fashion_mnist"
    assert fig.env["INFLUENCE_FIG_NUM_SUBSETS"] == "100"
    assert fig.env["INFLUENCE_FIG_REG_DATASETS"] == "hospital,spam"
    assert fig.env["INFLUENCE_FIG_REG_NUM_SUBSETS"] == "10"
    assert script_args(fig.cmd) == ["--out-dir", "/tmp/o", "--plot-dir", str(rep.REPO_ROOT / "plots-paper")]


def test_paper_figures_ignore_a_sweep_setting_in_the_environment(monkeypatch):
    monkeypatch.setenv("INFLUENCE_FIG_REG_VALUES", "0.5")
    fig = rep.plan(paper_args())[-1]
    assert "INFLUENCE_FIG_REG_VALUES" not in fig.env
    fig = rep.plan(paper_args("--reg-values", "0.5", "2"))[-1]
    assert fig.env["INFLUENCE_FIG_REG_VALUES"] == "0.5,2.0"


def test_paper_applications_use_the_real_mnli_size_and_the_papers_settings():
    steps = {s.title: s for s in rep.plan(paper_args("--out-dir", "/tmp/o"))}
    assert script_args(steps["generated MultiNLI bundle"].cmd) == ["--data-dir", "/tmp/o/generated/data",
                                                                   "--keep-existing"]
    assert script_args(steps["credit_assignment (generated MultiNLI)"].cmd) == [
        "--data-dir", "/tmp/o/generated/data", "--out-dir", "/tmp/o/generated", "--dataset-id", "mnli", "--no-plots"]
    credit = load("credit_assignment").make_parser().parse_args(
        script_args(steps["credit_assignment (generated MultiNLI)"].cmd))
    default = load("credit_assignment").make_parser().parse_args(["--dataset-id", "mnli"])
    assert vars(credit) | {"data_dir": None, "out_dir": None, "plots": None} == \
        vars(default) | {"data_dir": None, "out_dir": None, "plots": None}


def test_quick_plan_is_the_main_job_as_before():
    """The default job's commands, written out: --paper must not change them."""
    args = rep.make_parser().parse_args(["--out-dir", "/tmp/o", "--plot-dir", "/tmp/p"])
    rep.check_args(args)
    rng = ["--subset-choice-type", "range", "--subset-min-rel-size", "0.0025", "--subset-max-rel-size", "0.25"]
    o = ["--out-dir", "/tmp/o"]
    g = ["--data-dir", "/tmp/o/generated/data", "--out-dir", "/tmp/o/generated"]
    cv = ["--cv-range", "1e-3", "1e-1", "2", "--cv-folds", "2"]
    want = [
        ("subsets_infl_logreg", ["--dataset-id", "breast_cancer", *rng, "--num-subsets", "30", "--no-plots", *o]),
        ("subsets_infl_logreg", ["--dataset-id", "digits", *rng, "--num-subsets", "30", "--no-plots", *o]),
        ("estimator_ladder", ["--dataset-id", "breast_cancer", *rng, "--num-subsets", "30",
                              "--no-intermediate-results", *o]),
        ("counterexamples", ["--dataset-id", "ortho2", "--no-intermediate-results", *o]),
        ("counterexamples", ["--dataset-id", "ortho2", "--no-intermediate-results", *o, "--float32"]),
        ("counterexamples", ["--dataset-id", "gauss4", "--no-intermediate-results", *o]),
        ("counterexamples", ["--dataset-id", "gauss4", "--no-intermediate-results", *o, "--float32"]),
        *[("subsets_infl_logreg", ["--dataset-id", "breast_cancer", *rng, "--num-subsets", "5", "--fixed-reg", r,
                                   "--no-intermediate-results", *o]) for r in ("1e-05", "0.001", "0.1", "10.0")],
        ("make_cdr_db", ["--data-dir", "/tmp/o/generated/data"]),
        ("babble_reduce", [*g, "--dataset-id", "cdr"]),
        ("data_valuation", [*g, "--dataset-id", "reduced_cdr", "--sample-weights", *cv]),
        ("make_mnli_bundle", ["--data-dir", "/tmp/o/generated/data", "--num-train", "600", "--num-columns", "600",
                              "--num-crowd-workers", "30"]),
        ("credit_assignment", [*g, "--dataset-id", "mnli", "--no-intermediate-results", "--no-plots", *cv]),
        ("run_figures", ["--out-dir", "/tmp/o", "--plot-dir", "/tmp/p"]),
    ]
    steps = rep.plan(args)
    assert [(Path(s.cmd[1]).stem, script_args(s.cmd)) for s in steps] == want
    assert steps[-1].env["INFLUENCE_FIG_REG_VALUES"] == "1e-05,0.001,0.1,10.0"
    assert steps[-1].env["INFLUENCE_FIG_DATASETS"] == "breast_cancer,digits"


# ------------------------------------------------------------------------------ the runner
def fake_step(title, code):
    return rep.Step(title, [sys.executable, "-c", code])


ALLOC_MB = 300
GRANDCHILD = (f"import subprocess, sys; subprocess.run([sys.executable, '-c', "
              f"'x = b\"\\\\x01\" * ({ALLOC_MB} << 20)'], check=True)")


def test_runner_times_each_step_and_writes_the_table(tmp_path, capsys):
    args = rep.make_parser().parse_args(["--out-dir", str(tmp_path / "o"), "--plot-dir", str(tmp_path / "p")])
    steps = [fake_step("small", "pass"), fake_step("grandchild allocates", GRANDCHILD),
             fake_step("uncertified", "raise SystemExit(3)")]
    assert rep.run(args, steps) == 3
    out = capsys.readouterr().out
    for i, title in enumerate(["small", "grandchild allocates"], 1):
        assert re.search(rf"^=== {title}: ok in \d+ s, peak RSS [\d.]+ [MG]B \[{i}/3, \d+ s so far\]$", out, re.M)
    assert re.search(r"^=== uncertified: FAILED \(exit 3\) in", out, re.M)
    assert re.search(r"^  total +\d+ s", out, re.M)
    rows = list(csv.DictReader((tmp_path / "o" / "reproduce-quick-runs.csv").open()))
    assert [r["step"] for r in rows] == ["small", "grandchild allocates", "uncertified"]
    assert [int(r["exit_code"]) for r in rows] == [0, 0, 3]
    peak = {r["step"]: float(r["peak_rss_mb"]) for r in rows}
    # The grandchild's bytes are counted (wait4: the step and every process it waited for);
    # a bare interpreter stays well below them.
    assert peak["grandchild allocates"] >= ALLOC_MB * 1.048 > peak["small"]
    assert all(float(r["wall_seconds"]) >= 0 and float(r["cpu_seconds"]) >= 0 for r in rows)
    assert rows[0]["command"] == f"{sys.executable} -c pass"


@pytest.mark.parametrize("codes, expect", [([0, 0], 0), ([0, 3], 3), ([2, 3], 2), ([3, 1], 1), ([0, 7], 1)])
def test_exit_code_of_the_job(codes, expect):
    results = [rep.StepResult(str(i), [], c, 0.0, 0.0, 0) for i, c in enumerate(codes)]
    assert rep.exit_code(results) == expect


def test_a_failed_step_does_not_stop_the_others(tmp_path, capsys):
    args = rep.make_parser().parse_args(["--out-dir", str(tmp_path)])
    assert rep.run(args, [fake_step("broken", "raise SystemExit(1)"), fake_step("after", "pass")]) == 1
    captured = capsys.readouterr()
    assert "=== after: ok" in captured.out and "FAILED: broken" in captured.err


def test_a_step_needing_a_failed_step_is_skipped_at_once(tmp_path, capsys):
    args = rep.make_parser().parse_args(["--out-dir", str(tmp_path)])
    marker = tmp_path / "ran"
    steps = [rep.Step("data: a", [sys.executable, "-c", "raise SystemExit(1)"]),
             rep.Step("data: b", [sys.executable, "-c", "pass"]),
             rep.Step("run a", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], needs=("data: a",)),
             rep.Step("ladder a", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], needs=("run a",)),
             rep.Step("run b", [sys.executable, "-c", "raise SystemExit(3)"], needs=("data: b",)),
             rep.Step("ladder b", [sys.executable, "-c", "pass"], needs=("run b",)),
             rep.Step("figures", [sys.executable, "-c", "pass"])]
    assert rep.run(args, steps) == 1   # the failures' codes (1 and 3); the skipped steps add none
    assert not marker.exists()
    captured = capsys.readouterr()
    assert re.search(r"^=== run a: skipped: it needs data: a, which failed \(exit 1\) \[3/7\]$", captured.out, re.M)
    assert re.search(r"^=== ladder a: skipped: it needs run a, which was skipped \[4/7\]$", captured.out, re.M)
    assert "=== ladder b: skipped" in captured.out and "=== figures: ok" in captured.out
    assert re.search(r"^  run a +skipped +0 s +n/a +n/a$", captured.out, re.M)
    assert captured.err.strip().splitlines()[-1] == ("FAILED: data: a, run b; not run (a step they need failed): "
                                                     "run a, ladder a, ladder b")
    rows = list(csv.DictReader((tmp_path / "reproduce-quick-runs.csv").open()))
    assert [r["exit_code"] for r in rows] == ["1", "0", "skipped", "skipped", "3", "skipped", "0"]
    assert rows[2]["cpu_seconds"] == rows[2]["peak_rss_mb"] == ""


@pytest.mark.parametrize("codes, expect", [([1, None, 0], 1), ([3, None], 3)])
def test_exit_code_ignores_skipped_steps(codes, expect):
    results = [rep.StepResult(str(i), [], c, 0.0, None, None) for i, c in enumerate(codes)]
    assert rep.exit_code(results) == expect


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    assert rep.main(["--paper", "--dry-run", "--out-dir", str(out), "--data-dir", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    assert text.count("\n    $ ") == len(rep.plan(paper_args("--out-dir", out, "--data-dir", tmp_path / "d")))
    assert "[32] figures notebook" in text and not out.exists() and not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------ archives
def test_archives_are_copied_once_into_the_data_folder(tmp_path):
    src = tmp_path / "shared"
    (src / "hospital").mkdir(parents=True)
    (src / "hospital" / "dataset_diabetes.zip").write_bytes(b"zip bytes")
    args = paper_args("--archives", src, "--data-dir", tmp_path / "data", "--dataset-ids", "hospital", "spam",
                      "--reg-dataset-ids", "spam")
    lines = rep.stage_archives(args)
    assert (tmp_path / "data" / "hospital" / "dataset_diabetes.zip").read_bytes() == b"zip bytes"
    assert lines[0].startswith("hospital: copied")
    assert lines[1] == (f"spam: enron1.tar.gz is neither in {tmp_path / 'data' / 'spam'} nor in {src / 'spam'}; "
                        f"the loader reads its cache if there is one, else downloads it")
    # Only the datasets of the runs that are not skipped.
    skipped = paper_args("--archives", src, "--data-dir", tmp_path / "data2", "--dataset-ids", "hospital",
                         "--ladder-dataset-ids", "hospital",
                         "--reg-dataset-ids", "spam", "--skip", "reg-sweep")
    assert [ln.split(":")[0] for ln in rep.stage_archives(skipped)] == ["hospital"]
    assert rep.plan(skipped)[0].title == "data: hospital"
    (src / "hospital" / "dataset_diabetes.zip").write_bytes(b"other bytes")
    assert rep.stage_archives(args)[0] == f"hospital: {tmp_path / 'data' / 'hospital' / 'dataset_diabetes.zip'} is there"
    assert (tmp_path / "data" / "hospital" / "dataset_diabetes.zip").read_bytes() == b"zip bytes"


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("argv, message", [
    (["--paper", "--archives", "/nonexistent/shared"], "--archives must be a folder holding hospital/"
                                                        "dataset_diabetes.zip and spam/enron1.tar.gz; got "
                                                        "/nonexistent/shared (not a folder)"),
    (["--archives", "."], "--archives applies to --paper only; got --archives ."),
    (["--paper", "--ladder-dataset-ids", "fashion_mnist"], "--ladder-dataset-ids: the estimator ladder needs an "
                                                           "explicit-Hessian run; fashion_mnist's run uses 'cg'; "
                                                           "got 'fashion_mnist'"),
    (["--paper", "--num-subsets", "2"], "--num-subsets must be >= 3; got 2"),
    (["--paper", "--dataset-ids", "mnist_typo"], "--dataset-ids: each id must be one of"),
    (["--paper", "--out-dir", ""], "--out-dir is an empty string; give a folder"),
])
def test_input_errors_are_one_line(argv, message, capsys):
    assert rep.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert "===" not in captured.out


def test_an_out_dir_that_cannot_be_made_stops_before_any_step(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert rep.main(["--paper", "--out-dir", str(tmp_path / "file" / "o")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out-dir {tmp_path / 'file' / 'o'}: cannot create it")
    assert "===" not in captured.out


# ------------------------------------------------------------------------------ tiny real runs
def reproduce(*argv, timeout=900):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(SCRIPTS / "reproduce.py"), *map(str, argv)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=timeout)
    return out, time.perf_counter() - t0


COMPUTING = re.compile(r"phase (\d+) \w+: computing")


def phase_index(path: Path) -> int:
    """``k`` of a phase file ``result_{k}-{name}.npz``."""
    return int(path.name.split("_", 1)[1].split("-", 1)[0])


def phase_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("result_[0-9]*.npz"))}


@pytest.mark.slow   # three jobs, each starting TensorFlow twice: 1-3 minutes on 2 shared cores
def test_tiny_paper_job_resumes_and_reuses_its_runs(tmp_path):
    """Three tiny --paper jobs in a row on breast_cancer: the second reuses every phase file
    of the main run; the third, after the main run's last phase file was deleted (as a kill
    during that phase leaves it), recomputes only that phase."""
    argv = ["--paper", "--dataset-ids", "breast_cancer", "--num-subsets", "3", "--ladder-dataset-ids",
            "breast_cancer", "--skip", "ladder", "counterexamples", "reg-sweep", "applications", "figures",
            "--out-dir", tmp_path / "out", "--data-dir", tmp_path / "data", "--progress", "off"]
    first, _ = reproduce(*argv)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    main = tmp_path / "out" / "ss_logreg" / "breast_cancer_ihvp-explicit_seed-0_sizes-0.0025-0.25_num-3"
    before = {main: phase_files(main)}
    assert len(before[main]) > 5
    second, _ = reproduce(*argv)
    assert second.returncode == 0, second.stderr[-3000:]
    assert not COMPUTING.findall(second.stderr)
    assert second.stderr.count(": loaded ") == len(before[main])
    assert phase_files(main) == before[main]   # reused, not rewritten
    last = max(main.glob("result_[0-9]*.npz"), key=phase_index)
    last.unlink()
    third, _ = reproduce(*argv)
    assert third.returncode == 0, third.stderr[-3000:]
    assert COMPUTING.findall(third.stderr) == [str(phase_index(last))]
    after = phase_files(main)
    assert after.keys() == before[main].keys()
    assert {k: v for k, v in after.items() if k != last.name} == \
        {k: v for k, v in before[main].items() if k != last.name}
    rows = list(csv.DictReader((tmp_path / "out" / "reproduce-paper-runs.csv").open()))
    assert [r["step"] for r in rows] == ["ss_logreg breast_cancer (num-subsets 3)"]
    assert all(int(r["exit_code"]) == 0 and float(r["peak_rss_mb"]) > 0 for r in rows)


@pytest.mark.slow
def test_paper_job_stages_the_hospital_archive_into_an_empty_data_folder(tmp_path, shared_data):
    argv = ["--paper", "--dataset-ids", "hospital", "--num-subsets", "3", "--ladder-dataset-ids", "hospital",
            "--reg-dataset-ids", "hospital", "--reg-values", "0.1", "--reg-num-subsets", "3", "--counterexamples",
            "ortho2", "--skip", "applications", "--archives", shared_data, "--out-dir", tmp_path / "out",
            "--plot-dir", tmp_path / "plots", "--data-dir", tmp_path / "data", "--progress", "off"]
    out, _ = reproduce(*argv, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"data: hospital: copied {shared_data / 'hospital' / 'dataset_diabetes.zip'}" in out.stdout
    assert (tmp_path / "data" / "hospital" / "dataset_diabetes.zip").read_bytes() == \
        (shared_data / "hospital" / "dataset_diabetes.zip").read_bytes()
    rows = list(csv.DictReader((tmp_path / "out" / "reproduce-paper-runs.csv").open()))
    assert [r["step"] for r in rows] == [
        "data: hospital", "ss_logreg hospital (num-subsets 3)", "estimator ladder hospital",
        "counterexamples ortho2", "counterexamples ortho2 float32", "ss_logreg hospital --fixed-reg 0.1",
        "figures notebook"]
    assert all(int(r["exit_code"]) == 0 for r in rows)
    assert (tmp_path / "plots" / "paper-fig1.pdf").is_file() and (tmp_path / "plots" / "ladder-rel-error.pdf").is_file()


def test_mnli_bundle_is_kept_only_when_written_with_the_same_settings(tmp_path):
    bundle = load("make_mnli_bundle")
    small = ["--data-dir", tmp_path, "--num-train", "400", "--num-test", "60", "--num-nonfires", "60",
             "--num-columns", "600", "--num-crowd-workers", "8", "--progress", "off"]
    folder = tmp_path / "multinli_1.0"

    def run(*extra):
        out = subprocess.run([sys.executable, str(SCRIPTS / "make_mnli_bundle.py"), *map(str, small), *extra],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout, {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    out, first = run("--keep-existing")
    assert out.startswith("wrote ") and set(bundle.bundle_files()) | {bundle.SPEC_FILE} <= set(first)
    out, second = run("--keep-existing")
    assert out.startswith("kept ") and second == first
    out, _ = run("--keep-existing", "--seed", "1")      # other settings: written again
    assert out.startswith("wrote ")
    out, _ = run()                                      # without the flag: always written
    assert out.startswith("wrote ")
    (folder / bundle.bundle_files()[0]).unlink()        # incomplete: written again
    out, _ = run("--keep-existing")
    assert out.startswith("wrote ")
