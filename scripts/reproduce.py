"""The main job: reproduce the paper's analyses offline at small size and draw the figures;
with ``--paper``, every run of the paper the offline data allow, at full size.

    python scripts/reproduce.py              # quick offline reproduction (default)
    python scripts/reproduce.py --num-subsets 100 --dataset-ids breast_cancer digits
    python scripts/reproduce.py --paper      # the whole offline paper (docs/reproduce.md)

Steps (each a command of the scripts, run as a subprocess; ``--skip`` leaves steps out):

1. ``ss_logreg`` range runs (0.25%-25% groups, as the paper's ``run_subsets.sh``, with
   phase files, which the ladder reads) on the offline real datasets bundled with
   scikit-learn;
2. ``ladder``: the accuracy ladder of estimators on the ``breast_cancer`` run
   (``--ladder-dataset-ids``);
3. ``counterexamples``: ``ortho2`` and ``gauss4`` in float64 and in float32 (Figure 4 and
   its precision note);
4. ``reg-sweep``: a short regularisation sweep (``--fixed-reg``) for Figure 3;
5. ``applications``: the CDR and MultiNLI pipelines on GENERATED data (a CDR database and
   a MultiNLI bundle written by ``scripts/make_cdr_db.py`` and ``scripts/make_mnli_bundle.py``
   into ``{out_dir}/generated/data``; results in ``{out_dir}/generated``, never next to real
   runs; their figures end in ``-generated`` and say so);
6. ``figures``: the figures notebook, executed headless, leaving PDFs in ``--plot-dir``. A
   figure whose runs are missing is not written: the notebook lists it with the command
   that makes it.

Runs with phase files (the ``ss_logreg`` runs) are reused when finished; the steps that
save only a summary (``--no-intermediate-results``) run again.

``--paper`` runs the same steps with the paper's runs (defaults of the flags below change;
folders ``<repo>/output-paper`` and ``<repo>/plots-paper``):

0. ``data``: the ``hospital`` and ``spam`` archives copied from ``--archives`` into
   ``--data-dir`` when they are not there, then each dataset preprocessed and cached, one
   step per dataset (``scripts/load_all_datasets.py``; ``fashion_mnist`` comes from
   Debian's ``dataset-fashion-mnist`` package);
1. the main runs of ``hospital`` and ``spam`` (the flags of ``codalab/run_subsets.sh``) and
   of ``fashion_mnist``, standing in for MNIST (``--max-memory 1000000000
   --inverse-hvp-method cg``, as in the README);
2. the ladder on ``hospital`` and ``spam``;
3. the counterexamples as above;
4. the sweeps of Figure 3 on ``hospital`` and ``spam`` (10 groups per type, the
   ``--fixed-reg`` values the figure plots);
5. the applications: CDR as above, MultiNLI on a generated bundle of the real size with the
   paper's settings;
6. the figures.

Every ``--paper`` run keeps its phase files: a rerun reuses the finished runs and resumes
a killed one from its last phase file; an experiment never reuses results computed under
another config (it stops with exit code 2 instead).

Each step prints a line with its wall time and peak memory when it ends; the job ends with
a table of every step (wall time, CPU time, peak RSS), also written to
``{out_dir}/reproduce-{quick,paper}-runs.csv`` (after every step, so a killed job leaves
the steps so far). Peak RSS is that of the step's largest process (the step's command or
any process it started and waited for), as ``/usr/bin/time -v`` reports it; processes
running side by side are not summed.

A failed step does not stop the job, but the steps that read its results are skipped at
once (``skipped`` in the table): the runs of a dataset whose data step failed, the ladder
of a main run that failed, an application whose generated data were not made.

Exit codes: 0 every step succeeded; otherwise that of the failed steps (2 input error,
3 a refit not certified, 1 anything else), as for every script (``--debug`` shows tracebacks).
"""
import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import _bootstrap  # noqa: F401

from datasets import hospital, spam, storage
from datasets.common import DEFAULT_DATA_DIR
from datasets.loader import DATASETS
from experiments import cli
from experiments.common import ConfigError, py2_float_str
from experiments.figure_settings import GENERATED_SUBDIR, reg_values
from experiments.figures.runs import PAPER_MAX_MEMORY

REPO_ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STEPS = ("ladder", "counterexamples", "reg-sweep", "applications", "figures")
RANGE_FLAGS = ["--subset-choice-type", "range", "--subset-min-rel-size", "0.0025", "--subset-max-rel-size", "0.25"]
# The generated application data: small, but with the real dev/test sizes the fixed test
# indices of the original need (CDR test 3,900; MultiNLI dev 9,815 / 9,832).
GENERATED_MNLI = ["--num-train", "600", "--num-columns", "600", "--num-crowd-workers", "30"]
GENERATED_CV = ["--cv-range", "1e-3", "1e-1", "2", "--cv-folds", "2"]

# The settings of each mode that its flags default to (None: per dataset, see plan()).
MODE_DEFAULTS = {
    "quick": {"datasets": ["breast_cancer", "digits"], "num_subsets": 30, "ladder_dataset_ids": ["breast_cancer"],
              "reg_dataset_ids": ["breast_cancer"], "reg_values": [1e-5, 1e-3, 1e-1, 10.0], "reg_num_subsets": 5,
              "out_dir": REPO_ROOT / "output", "plot_dir": REPO_ROOT / "plots"},
    "paper": {"datasets": ["hospital", "spam", "fashion_mnist"], "num_subsets": 100,
              "ladder_dataset_ids": ["hospital", "spam"], "reg_dataset_ids": ["hospital", "spam"],
              "reg_values": None, "reg_num_subsets": 10,
              "out_dir": REPO_ROOT / "output-paper", "plot_dir": REPO_ROOT / "plots-paper"},
}
# PAPER_MAX_MEMORY (imported): --max-memory of the paper's runs (codalab/run_subsets.sh,
# codalab/run_reg.sh); the flags of the MNIST-scale run (the README's command: with 100 MB
# a refit chunk would hold 5 groups instead of 56).
PAPER_RUN_FLAGS = {"fashion_mnist": ["--max-memory", "1000000000", "--inverse-hvp-method", "cg"]}
# Raw archives the --paper runs need in --data-dir, copied from --archives: dataset id ->
# (sub-folder, file name), the loaders' own names.
ARCHIVES = {"hospital": (hospital.SUBDIR, hospital.ARCHIVE_NAME), "spam": (spam.SUBDIR, spam.ARCHIVE_NAME)}
# Datasets shipped with scikit-learn or generated in memory: nothing to prepare.
BUNDLED_DATASETS = ("breast_cancer", "digits", "synthetic_binary", "synthetic_multiclass")
TABLE_COLUMNS = ("step", "exit_code", "wall_seconds", "cpu_seconds", "peak_rss_mb", "command")


class Step(NamedTuple):
    """One command of the job: a title, the command (run from the repository root), its
    environment (None: this process's) and the titles of the earlier steps whose results it
    reads: it is not run when one of them failed or was not run."""

    title: str
    cmd: list
    env: dict | None = None
    needs: tuple = ()


class StepResult(NamedTuple):
    title: str
    cmd: list
    exit_code: int | None      # None: not run (a step it needs failed)
    wall: float
    cpu: float | None          # user + system seconds of the step's processes
    peak_rss: int | None       # bytes: the largest resident set of any of them (None: not measurable here)


def default_archives_dir() -> Path:
    """``$INFLUENCE_SHARED_DATA``, else ``shared/data`` next to the repository."""
    return Path(os.environ.get("INFLUENCE_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


def maxrss_bytes(ru_maxrss: int) -> int:
    """``ru_maxrss`` in bytes (kilobytes on Linux and the BSDs, bytes on macOS)."""
    return int(ru_maxrss) if sys.platform == "darwin" else int(ru_maxrss) * 1024


# The step's command runs under this small wrapper, which reports on file descriptor
# argv[1] the usage of every process of the step (getrusage of its children: the CPU time,
# and the peak RSS of the largest single process, as /usr/bin/time -v). Measured from the
# job's own process instead, every step would show at least that process's size: Linux
# starts a forked child's peak from the size of the process that forked it.
PEAK_WRAPPER = """
import os, resource, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the step's to handle: wait for it
rc = p.wait()
u = resource.getrusage(resource.RUSAGE_CHILDREN)
os.write(int(sys.argv[1]), f"{u.ru_maxrss} {u.ru_utime + u.ru_stime}".encode())
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def run_step(cmd, env=None) -> tuple[int, float, float | None, int | None]:
    """Run ``cmd`` from the repository root; ``(exit code, wall seconds, CPU seconds, peak RSS
    bytes)`` (see :data:`PEAK_WRAPPER`; a step killed by signal N exits 128 + N). Off POSIX
    the CPU time and peak are None."""
    cmd = [str(c) for c in cmd]
    t0 = time.perf_counter()
    if os.name != "posix":
        return subprocess.call(cmd, cwd=REPO_ROOT, env=env), time.perf_counter() - t0, None, None
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([PY, "-I", "-S", "-c", PEAK_WRAPPER, str(w), *cmd], cwd=REPO_ROOT, env=env,
                                pass_fds=(w,))
        os.close(w)
        w = None
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.wait()  # the step got Ctrl-C too: let it stop as it does on its own
            raise
        wall = time.perf_counter() - t0
        report = os.read(r, 256).decode().split()
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
    if len(report) != 2:  # the wrapper could not report (killed)
        return rc, wall, None, None
    return rc, wall, float(report[1]), maxrss_bytes(int(report[0]))


def format_rss(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 1e9:.2f} GB" if peak >= 1e9 else f"{peak / 1e6:.0f} MB"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def make_parser():
    q, pp = MODE_DEFAULTS["quick"], MODE_DEFAULTS["paper"]

    def both(key):
        def show(v):
            return " ".join(py2_float_str(x) if isinstance(x, float) else str(x) for x in v) \
                if isinstance(v, list) else str(v)
        return f"default: {show(q[key])}; with --paper: {'per dataset' if pp[key] is None else show(pp[key])}"

    p = cli.ArgumentParser(__doc__)
    p.add_argument("--paper", action="store_true",
                   help="run every run of the paper the offline data allow, at full size (over 45 minutes; "
                        "docs/reproduce.md), instead of the quick job")
    p.add_argument("--dataset-ids", "--datasets", dest="datasets", nargs="+", default=None,
                   metavar="DATASET_ID", help=f"datasets of the ss_logreg range runs and the ladder ({both('datasets')})")
    p.add_argument("--num-subsets", type=int, default=None,
                   help=f"groups per type in the ss_logreg range runs; the paper used 100 ({both('num_subsets')})")
    p.add_argument("--counterexamples", nargs="*", default=["ortho2", "gauss4"], metavar="DATASET_ID",
                   help="counterexample datasets run in float64 and float32 (default: ortho2 gauss4, "
                        "the two panels of Figure 4)")
    p.add_argument("--ladder-dataset-ids", nargs="+", default=None, metavar="DATASET_ID",
                   help=f"datasets (among --dataset-ids) whose runs get the estimator ladder "
                        f"({both('ladder_dataset_ids')})")
    p.add_argument("--reg-dataset-ids", nargs="+", default=None, metavar="DATASET_ID",
                   help=f"datasets of the regularisation sweep ({both('reg_dataset_ids')})")
    p.add_argument("--reg-values", nargs="+", type=float, default=None, metavar="R",
                   help=f"the sweep's --fixed-reg values (lambda/n) ({both('reg_values')}: "
                        f"the values Figure 3 plots)")
    p.add_argument("--reg-num-subsets", type=int, default=None,
                   help=f"groups per type in each sweep run ({both('reg_num_subsets')})")
    p.add_argument("--skip", nargs="+", default=[], choices=STEPS, metavar="STEP",
                   help=f"steps left out: any of {', '.join(STEPS)} (default: none)")
    p.add_argument("--skip-figures", dest="skip", action="append_const", const="figures",
                   help="same as --skip figures")
    p.add_argument("--out-dir", default=None,
                   help="results folder (default: <repo>/output; with --paper: <repo>/output-paper)")
    p.add_argument("--plot-dir", default=None,
                   help="figures folder (default: <repo>/plots; with --paper: <repo>/plots-paper)")
    p.add_argument("--data-dir", default=None, help="data folder of the real datasets (default: <repo>/data)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the steps' commands, in order, and stop (nothing is run or written)")
    p.add_argument("--archives", default=None, metavar="DIR",
                   help="--paper: folder holding hospital/dataset_diabetes.zip and spam/enron1.tar.gz, copied "
                        "into --data-dir when missing there (default: $INFLUENCE_SHARED_DATA, else "
                        "shared/data beside the repository folder, if it exists; without them the loaders "
                        "download the archives)")
    return p


def mode_of(args) -> str:
    return "paper" if args.paper else "quick"


def check_args(args):
    """Fill the flags left out with the mode's defaults (:data:`MODE_DEFAULTS`), then check
    every rule; a broken rule is a :class:`ConfigError` naming the flag, rule and value."""
    from experiments import subset_influence  # imports TensorFlow: not for --help
    from experiments.counterexamples import DATASET_IDS as CEX_IDS

    for key, value in MODE_DEFAULTS[mode_of(args)].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.paper and args.archives is not None:
        raise ConfigError(f"--archives applies to --paper only; got --archives {args.archives}")
    if args.num_subsets < 3:
        raise ConfigError(f"--num-subsets must be >= 3; got {args.num_subsets}")
    if args.reg_num_subsets < 3:
        raise ConfigError(f"--reg-num-subsets must be >= 3; got {args.reg_num_subsets}")
    for r in args.reg_values or []:
        if not r > 0:
            raise ConfigError(f"--reg-values: each value must be > 0; got {r}")
    for cex in args.counterexamples:
        if cex not in CEX_IDS:
            raise ConfigError(f"--counterexamples: each id must be one of {list(CEX_IDS)}; got {cex!r}")
    for flag, ids in (("--dataset-ids", args.datasets), ("--reg-dataset-ids", args.reg_dataset_ids)):
        for ds in ids:
            if ds not in DATASETS:
                raise ConfigError(f"{flag}: each id must be one of {sorted(DATASETS)}; got {ds!r}")
    for ds in args.ladder_dataset_ids:
        if ds not in args.datasets:
            raise ConfigError(f"--ladder-dataset-ids: each id must be one of --dataset-ids {args.datasets}; got {ds!r}")
    for ds in args.ladder_dataset_ids:
        method = subset_influence.DATASET_TABLE.get(ds, ("explicit",))[0]
        if method != "explicit":
            raise ConfigError(f"--ladder-dataset-ids: the estimator ladder needs an explicit-Hessian run; "
                              f"{ds}'s run uses {method!r}; got {ds!r}")
    for flag in ("out_dir", "plot_dir", "data_dir"):
        if getattr(args, flag) is not None and str(getattr(args, flag)).strip() == "":
            raise ConfigError(f"--{flag.replace('_', '-')} is an empty string; give a folder")
    if args.archives is not None and not Path(args.archives).is_dir():
        raise ConfigError(f"--archives must be a folder holding hospital/{hospital.ARCHIVE_NAME} and "
                          f"spam/{spam.ARCHIVE_NAME}; got {args.archives} (not a folder)")


def data_dir_of(args) -> Path:
    return Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR


def prepared_datasets(args) -> list[str]:
    """The datasets of the plan's runs whose files must be found, unpacked or preprocessed."""
    ids = dict.fromkeys(args.datasets + ([] if "reg-sweep" in args.skip else args.reg_dataset_ids))
    return [ds for ds in ids if ds not in BUNDLED_DATASETS]


def stage_archives(args) -> list[str]:
    """Copy the raw archives of :data:`ARCHIVES` the plan needs from ``--archives`` (or its
    default, if it exists) into ``--data-dir`` when they are not there; one line per
    dataset saying what was done. The loaders check the archives' sha256 when they read them."""
    source = Path(args.archives) if args.archives else default_archives_dir()
    lines = []
    for ds in prepared_datasets(args):
        if ds not in ARCHIVES:
            continue
        sub, name = ARCHIVES[ds]
        target = data_dir_of(args) / sub / name
        if target.is_file():
            lines.append(f"{ds}: {target} is there")
            continue
        found = source / sub / name
        if not found.is_file():
            lines.append(f"{ds}: {name} is neither in {target.parent} nor in {source / sub}; the loader reads "
                         f"its cache if there is one, else downloads it")
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with storage.atomic_write(target) as dst, open(found, "rb") as src:
                shutil.copyfileobj(src, dst)
        except OSError as exc:
            raise ConfigError(f"--data-dir {data_dir_of(args)}: cannot copy {found} to {target}: "
                              f"{exc.strerror or exc}") from exc
        lines.append(f"{ds}: copied {found} to {target}")
    return lines


def ss_logreg_flags(args, ds: str) -> list:
    """The flags of an ``ss_logreg`` range run (and of its ladder) in the job's mode."""
    flags = [*RANGE_FLAGS, "--num-subsets", args.num_subsets]
    if args.paper:
        flags += PAPER_RUN_FLAGS.get(ds, ["--max-memory", PAPER_MAX_MEMORY])
    return flags


def plan(args) -> list[Step]:
    """The steps to run, in order (``args`` completed by :func:`check_args`).

    The quick job keeps only summaries where nothing reads phase files; ``--paper``
    keeps every run's phase files, so that a rerun resumes it.
    """
    out = Path(args.out_dir)
    common = ["--out-dir", out] + (["--data-dir", args.data_dir] if args.data_dir else [])
    summary_only = [] if args.paper else ["--no-intermediate-results"]
    skip = set(args.skip)
    steps = []
    # One data step per dataset, so that a dataset that cannot be prepared (an archive
    # missing offline) stops only the runs that read it, at once.
    data_step = {}
    if args.paper:
        for ds in prepared_datasets(args):
            title = f"data: {ds}"
            data_step[ds] = (title,)
            steps.append(Step(title, [PY, "scripts/load_all_datasets.py", "--data-dir", data_dir_of(args),
                                      "--dataset-ids", ds, "--supplement-ids", "none"]))
    main_run = {}
    for ds in args.datasets:
        # Phase files (not a master-only summary): the ladder reads them instead of recomputing.
        main_run[ds] = f"ss_logreg {ds} (num-subsets {args.num_subsets})"
        steps.append(Step(main_run[ds],
                          [PY, "scripts/subsets_infl_logreg.py", "--dataset-id", ds, *ss_logreg_flags(args, ds),
                           "--no-plots", *common], needs=data_step.get(ds, ())))
    if "ladder" not in skip:
        for ds in args.ladder_dataset_ids:
            steps.append(Step(f"estimator ladder {ds}",
                              [PY, "scripts/estimator_ladder.py", "--dataset-id", ds, *ss_logreg_flags(args, ds),
                               *summary_only, *common], needs=(main_run[ds],)))
    if "counterexamples" not in skip:
        for cex in args.counterexamples:
            for prec in ([], ["--float32"]):
                steps.append(Step(f"counterexamples {cex}{' float32' if prec else ''}",
                                  [PY, "scripts/counterexamples.py", "--dataset-id", cex, *summary_only,
                                   "--out-dir", out, *prec]))
    if "reg-sweep" not in skip:
        memory = ["--max-memory", PAPER_MAX_MEMORY] if args.paper else []
        for ds in args.reg_dataset_ids:
            for r in args.reg_values or reg_values(ds):
                steps.append(Step(f"ss_logreg {ds} --fixed-reg {py2_float_str(r)}",
                                  [PY, "scripts/subsets_infl_logreg.py", "--dataset-id", ds, *RANGE_FLAGS,
                                   "--num-subsets", args.reg_num_subsets, *memory, "--fixed-reg", py2_float_str(r),
                                   *(["--no-plots"] if args.paper else summary_only), *common],
                                  needs=data_step.get(ds, ())))
    if "applications" not in skip:
        gen_out = out / GENERATED_SUBDIR
        gen = ["--data-dir", gen_out / "data", "--out-dir", gen_out]
        # --paper: the MultiNLI bundle at the real size (2.3 GB, not rewritten by a rerun) and
        # the paper's cross-validation.
        mnli_size, mnli_cv = (["--keep-existing"], []) if args.paper else (GENERATED_MNLI, GENERATED_CV)
        cdr, babble, mnli = "generated CDR database", "babble_reduce (generated CDR)", "generated MultiNLI bundle"
        steps += [
            Step(cdr, [PY, "scripts/make_cdr_db.py", "--data-dir", gen_out / "data"]),
            Step(babble, [PY, "scripts/babble_reduce.py", *gen, "--dataset-id", "cdr"], needs=(cdr,)),
            # reduced_cdr is babble_reduce's output.
            Step("data_valuation (generated CDR)", [PY, "scripts/data_valuation.py", *gen, "--dataset-id",
                                                    "reduced_cdr", "--sample-weights", *GENERATED_CV], needs=(babble,)),
            Step(mnli, [PY, "scripts/make_mnli_bundle.py", "--data-dir", gen_out / "data", *mnli_size]),
            Step("credit_assignment (generated MultiNLI)", [PY, "scripts/credit_assignment.py", *gen, "--dataset-id",
                                                            "mnli", *summary_only, "--no-plots", *mnli_cv],
                 needs=(mnli,)),
        ]
    if "figures" not in skip:
        env = dict(os.environ, INFLUENCE_FIG_DATASETS=",".join(args.datasets),
                   INFLUENCE_FIG_NUM_SUBSETS=str(args.num_subsets),
                   INFLUENCE_FIG_REG_DATASETS=",".join(args.reg_dataset_ids),
                   INFLUENCE_FIG_REG_NUM_SUBSETS=str(args.reg_num_subsets))
        if args.reg_values:
            env["INFLUENCE_FIG_REG_VALUES"] = ",".join(py2_float_str(r) for r in args.reg_values)
        else:   # the figure's own values per dataset, whatever the caller's environment says
            env.pop("INFLUENCE_FIG_REG_VALUES", None)
        steps.append(Step("figures notebook", [PY, "scripts/run_figures.py", "--out-dir", out, "--plot-dir",
                                               args.plot_dir], env))
    return steps


def table_path(args) -> Path:
    return Path(args.out_dir) / f"reproduce-{mode_of(args)}-runs.csv"


def write_table(path: Path, results: list[StepResult]) -> None:
    """The steps' table as CSV (atomically: a reader never sees half a table)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    for r in results:
        w.writerow([r.title, "skipped" if r.exit_code is None else r.exit_code, f"{r.wall:.1f}",
                    "" if r.cpu is None else f"{r.cpu:.1f}",
                    "" if r.peak_rss is None else f"{r.peak_rss / 1e6:.0f}", " ".join(str(c) for c in r.cmd)])
    with storage.atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def status_word(code: int | None) -> str:
    return "skipped" if code is None else "ok" if code == 0 else f"exit {code}"


def summary_lines(results: list[StepResult], total_wall: float) -> list[str]:
    """The table printed at the end: one row per step, then the total."""
    width = max([44] + [len(r.title) for r in results])
    lines = [f"  {'step':<{width}} {'result':>8} {'wall':>9} {'CPU':>9} {'peak RSS':>9}"]
    for r in results:
        lines.append(f"  {r.title:<{width}} {status_word(r.exit_code):>8} "
                     f"{format_seconds(r.wall):>9} {'n/a' if r.cpu is None else format_seconds(r.cpu):>9} "
                     f"{format_rss(r.peak_rss):>9}")
    peaks = [r.peak_rss for r in results if r.peak_rss is not None]
    cpus = [r.cpu for r in results if r.cpu is not None]
    lines.append(f"  {'total':<{width}} {'':>8} {format_seconds(total_wall):>9} "
                 f"{format_seconds(sum(cpus)) if cpus else 'n/a':>9} "
                 f"{format_rss(max(peaks)) if peaks else 'n/a':>9}")
    return lines


def execute(steps: list[Step], table: Path) -> list[StepResult]:
    """Run ``steps`` in order, each to its end whatever the others did, except a step that
    needs one that failed or was not run (it is skipped at once); print a line per step when
    it starts and ends, and rewrite ``table`` after each."""
    results: list[StepResult] = []
    codes: dict[str, int | None] = {}
    t0 = time.perf_counter()
    for i, s in enumerate(steps, 1):
        blocked = [n for n in s.needs if codes.get(n, 0) != 0]
        if blocked:
            results.append(StepResult(s.title, s.cmd, None, 0.0, None, None))
            codes[s.title] = None
            why = "; ".join(f"{n}, which {'was skipped' if codes[n] is None else f'failed (exit {codes[n]})'}"
                            for n in blocked)
            print(f"\n=== {s.title}: skipped: it needs {why} [{i}/{len(steps)}]", flush=True)
            write_table(table, results)
            continue
        print(f"\n=== {s.title} [{i}/{len(steps)}]\n$ {' '.join(str(c) for c in s.cmd)}", flush=True)
        try:
            rc, wall, cpu, peak = run_step(s.cmd, s.env)
        except KeyboardInterrupt:
            print(f"=== {s.title}: interrupted [{i}/{len(steps)}]; the table of the steps before it: {table}; "
                  f"the same command resumes", flush=True)
            raise
        results.append(StepResult(s.title, s.cmd, rc, wall, cpu, peak))
        codes[s.title] = rc
        print(f"=== {s.title}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {format_seconds(wall)}, "
              f"peak RSS {format_rss(peak)} [{i}/{len(steps)}, {format_seconds(time.perf_counter() - t0)} "
              f"so far]", flush=True)
        write_table(table, results)
    return results


def exit_code(results: list[StepResult]) -> int:
    """0 if every step succeeded; 2 or 3 if every failure was that; else 1 (a skipped step
    adds nothing: the failure that stopped it is counted)."""
    codes = {r.exit_code for r in results} - {0, None}
    if not codes:
        return cli.EXIT_OK
    if codes <= {cli.EXIT_USAGE, cli.EXIT_UNCERTIFIED}:
        return cli.EXIT_USAGE if cli.EXIT_USAGE in codes else cli.EXIT_UNCERTIFIED
    return cli.EXIT_FAILURE


def run(args, steps: list[Step] | None = None):
    """The job: check the flags, prepare the data (``--paper``), run ``steps`` (default:
    :func:`plan`) and report. Nothing is run or written when a flag breaks a rule."""
    check_args(args)
    if args.dry_run:
        for i, s in enumerate(plan(args) if steps is None else steps, 1):
            print(f"[{i}] {s.title}\n    $ {' '.join(str(c) for c in s.cmd)}")
        return cli.EXIT_OK
    table = table_path(args)
    try:
        table.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out-dir {args.out_dir}: cannot create it: {exc.strerror or exc}") from exc
    if args.paper:
        print(f"--paper: results in {args.out_dir}, figures in {args.plot_dir}, data in {data_dir_of(args)}")
        for line in stage_archives(args):
            print(f"data: {line}")
    steps = plan(args) if steps is None else steps
    t0 = time.perf_counter()
    results = execute(steps, table)
    print("\nsummary (CPU: user + system seconds of the step's processes; peak RSS: its largest process):")
    print("\n".join(summary_lines(results, time.perf_counter() - t0)))
    print(f"results: {args.out_dir}   figures: {args.plot_dir}   this table: {table}")
    failed = [r.title for r in results if r.exit_code not in (0, None)]
    skipped = [r.title for r in results if r.exit_code is None]
    if failed:
        print(f"FAILED: {', '.join(failed)}" + (f"; not run (a step they need failed): {', '.join(skipped)}"
                                                 if skipped else ""), file=sys.stderr)
    return exit_code(results)


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
