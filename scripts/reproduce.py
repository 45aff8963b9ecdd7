"""The main job: reproduce the paper's analyses offline at small size and draw the figures.

    python scripts/reproduce.py              # quick offline reproduction (default)
    python scripts/reproduce.py --num-subsets 100 --dataset-ids breast_cancer digits

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

Finished runs are reused (each experiment resumes or returns its saved summary).

Exit codes: 0 every step succeeded; otherwise that of the failed steps (2 input error,
3 a refit not certified, 1 anything else), as for every script (``--debug`` shows tracebacks).
"""
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from datasets.loader import DATASETS
from experiments import cli
from experiments.common import ConfigError, py2_float_str
from experiments.figure_settings import GENERATED_SUBDIR

REPO_ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STEPS = ("ladder", "counterexamples", "reg-sweep", "applications", "figures")
RANGE_FLAGS = ["--subset-choice-type", "range", "--subset-min-rel-size", "0.0025", "--subset-max-rel-size", "0.25"]
# The generated application data: small, but with the real dev/test sizes the fixed test
# indices of the original need (CDR test 3,900; MultiNLI dev 9,815 / 9,832).
GENERATED_MNLI = ["--num-train", "600", "--num-columns", "600", "--num-crowd-workers", "30"]
GENERATED_CV = ["--cv-range", "1e-3", "1e-1", "2", "--cv-folds", "2"]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def step(title, cmd, env=None):
    """Run ``cmd``; returns ``(exit code, wall seconds, CPU seconds)``."""
    print(f"\n=== {title}\n$ {' '.join(str(c) for c in cmd)}", flush=True)
    t0, c0 = time.perf_counter(), children_cpu_seconds()
    rc = subprocess.call([str(c) for c in cmd], cwd=REPO_ROOT, env=env)
    dt, cpu = time.perf_counter() - t0, children_cpu_seconds() - c0
    print(f"=== {title}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {dt:.0f} s", flush=True)
    return rc, dt, cpu


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--dataset-ids", "--datasets", dest="datasets", nargs="+", default=["breast_cancer", "digits"],
                   metavar="DATASET_ID", help="offline datasets of the ss_logreg range runs and the ladder")
    p.add_argument("--num-subsets", type=int, default=30,
                   help="groups per type in the ss_logreg range runs (the paper used 100)")
    p.add_argument("--counterexamples", nargs="*", default=["ortho2", "gauss4"], metavar="DATASET_ID",
                   help="counterexample datasets run in float64 and float32 (default: ortho2 gauss4, "
                        "the two panels of Figure 4)")
    p.add_argument("--ladder-dataset-ids", nargs="+", default=["breast_cancer"], metavar="DATASET_ID",
                   help="datasets (among --dataset-ids) whose runs get the estimator ladder")
    p.add_argument("--reg-dataset-ids", nargs="+", default=["breast_cancer"], metavar="DATASET_ID",
                   help="datasets of the regularisation sweep")
    p.add_argument("--reg-values", nargs="+", type=float, default=[1e-5, 1e-3, 1e-1, 10.0], metavar="R",
                   help="the sweep's --fixed-reg values (lambda/n)")
    p.add_argument("--reg-num-subsets", type=int, default=5, help="groups per type in each sweep run")
    p.add_argument("--skip", nargs="+", default=[], choices=STEPS, metavar="STEP",
                   help=f"steps left out: any of {', '.join(STEPS)} (default: none)")
    p.add_argument("--skip-figures", dest="skip", action="append_const", const="figures",
                   help="same as --skip figures")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "output"), help="results folder")
    p.add_argument("--plot-dir", default=str(REPO_ROOT / "plots"), help="figures folder")
    p.add_argument("--data-dir", default=None, help="data folder of the real datasets (default: <repo>/data)")
    return p


def check_args(args):
    from experiments.counterexamples import DATASET_IDS as CEX_IDS  # imports TensorFlow: not for --help

    if args.num_subsets < 3:
        raise ConfigError(f"--num-subsets must be >= 3; got {args.num_subsets}")
    if args.reg_num_subsets < 3:
        raise ConfigError(f"--reg-num-subsets must be >= 3; got {args.reg_num_subsets}")
    for r in args.reg_values:
        if not r > 0:
            raise ConfigError(f"--reg-values: each value must be > 0; got {r}")
    for cex in args.counterexamples:
        if cex not in CEX_IDS:
            raise ConfigError(f"--counterexamples: each id must be one of {list(CEX_IDS)}; got {cex!r}")
    for ds in args.ladder_dataset_ids:
        if ds not in args.datasets:
            raise ConfigError(f"--ladder-dataset-ids: each id must be one of --dataset-ids {args.datasets}; got {ds!r}")
    for flag, ids in (("--dataset-ids", args.datasets), ("--reg-dataset-ids", args.reg_dataset_ids)):
        for ds in ids:
            if ds not in DATASETS:
                raise ConfigError(f"{flag}: each id must be one of {sorted(DATASETS)}; got {ds!r}")


def plan(args) -> list[tuple[str, list, dict | None]]:
    """The steps to run: ``(title, command, environment or None)``."""
    out = Path(args.out_dir)
    common = ["--out-dir", out] + (["--data-dir", args.data_dir] if args.data_dir else [])
    skip = set(args.skip)
    steps = []
    for ds in args.datasets:
        # Phase files (not a master-only summary): the ladder reads them instead of recomputing.
        steps.append((f"ss_logreg {ds} (num-subsets {args.num_subsets})",
                      [PY, "scripts/subsets_infl_logreg.py", "--dataset-id", ds, *RANGE_FLAGS, "--num-subsets",
                       args.num_subsets, "--no-plots", *common], None))
    if "ladder" not in skip:
        for ds in args.ladder_dataset_ids:
            steps.append((f"estimator ladder {ds}",
                          [PY, "scripts/estimator_ladder.py", "--dataset-id", ds, *RANGE_FLAGS, "--num-subsets",
                           args.num_subsets, "--no-intermediate-results", *common], None))
    if "counterexamples" not in skip:
        for cex in args.counterexamples:
            for prec in ([], ["--float32"]):
                steps.append((f"counterexamples {cex}{' float32' if prec else ''}",
                              [PY, "scripts/counterexamples.py", "--dataset-id", cex, "--no-intermediate-results",
                               "--out-dir", out, *prec], None))
    if "reg-sweep" not in skip:
        for ds in args.reg_dataset_ids:
            for r in args.reg_values:
                steps.append((f"ss_logreg {ds} --fixed-reg {py2_float_str(r)}",
                              [PY, "scripts/subsets_infl_logreg.py", "--dataset-id", ds, *RANGE_FLAGS,
                               "--num-subsets", args.reg_num_subsets, "--fixed-reg", py2_float_str(r),
                               "--no-intermediate-results", *common], None))
    if "applications" not in skip:
        gen_out = out / GENERATED_SUBDIR
        gen = ["--data-dir", gen_out / "data", "--out-dir", gen_out]
        steps += [
            ("generated CDR database", [PY, "scripts/make_cdr_db.py", "--data-dir", gen_out / "data"], None),
            ("babble_reduce (generated CDR)", [PY, "scripts/babble_reduce.py", *gen, "--dataset-id", "cdr"], None),
            ("data_valuation (generated CDR)", [PY, "scripts/data_valuation.py", *gen, "--dataset-id", "reduced_cdr",
                                                "--sample-weights", *GENERATED_CV], None),
            ("generated MultiNLI bundle", [PY, "scripts/make_mnli_bundle.py", "--data-dir", gen_out / "data",
                                           *GENERATED_MNLI], None),
            ("credit_assignment (generated MultiNLI)", [PY, "scripts/credit_assignment.py", *gen, "--dataset-id",
                                                        "mnli", "--no-intermediate-results", "--no-plots",
                                                        *GENERATED_CV], None),
        ]
    if "figures" not in skip:
        env = dict(os.environ, INFLUENCE_FIG_DATASETS=",".join(args.datasets),
                   INFLUENCE_FIG_NUM_SUBSETS=str(args.num_subsets),
                   INFLUENCE_FIG_REG_DATASETS=",".join(args.reg_dataset_ids),
                   INFLUENCE_FIG_REG_NUM_SUBSETS=str(args.reg_num_subsets),
                   INFLUENCE_FIG_REG_VALUES=",".join(py2_float_str(r) for r in args.reg_values))
        steps.append(("figures notebook", [PY, "scripts/run_figures.py", "--out-dir", out, "--plot-dir",
                                           args.plot_dir], env))
    return steps


def run(args):
    check_args(args)
    t0, c0 = time.perf_counter(), children_cpu_seconds()
    timings, failed, codes = [], [], set()
    for title, cmd, env in plan(args):
        rc, dt, cpu = step(title, cmd, env)
        timings.append((title, dt, cpu))
        failed += [title] if rc else []
        codes.add(rc)
    print(f"\nsummary (CPU: user + system seconds of the step's processes):\n  {'step':<44} {'wall':>7} {'CPU':>7}")
    for name, dt, cpu in timings:
        print(f"  {name:<44} {dt:6.0f}s {cpu:6.0f}s")
    print(f"  {'total':<44} {time.perf_counter() - t0:6.0f}s {children_cpu_seconds() - c0:6.0f}s")
    print(f"results: {args.out_dir}   figures: {args.plot_dir}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        codes.discard(0)
        if codes <= {cli.EXIT_USAGE, cli.EXIT_UNCERTIFIED}:
            return cli.EXIT_USAGE if cli.EXIT_USAGE in codes else cli.EXIT_UNCERTIFIED
        return cli.EXIT_FAILURE
    return cli.EXIT_OK


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
