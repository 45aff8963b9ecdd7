"""The main job: reproduce the paper's analyses offline and draw the figures.

    python scripts/reproduce.py              # quick offline reproduction (default)
    python scripts/reproduce.py --num-subsets 100 --datasets breast_cancer digits

Steps (each is a documented command of the README, run as a subprocess):
1. ``ss_logreg`` range runs (0.25%-25% groups, master-only summaries, as the paper's
   ``run_subsets.sh``) on the offline real datasets bundled with scikit-learn;
2. the counterexamples ``ortho2`` and ``gauss4`` in float64 and in float32 (Figure 4's
   precision note);
3. the figures notebook, executed headless, leaving PDFs in ``plots/``.
Finished runs are reused (each experiment resumes or returns its saved summary).

Exit codes: 0 every step succeeded; otherwise that of the failed steps (2 input error,
3 a refit not certified, 1 anything else), as for every script (``--debug`` shows tracebacks).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from experiments import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def step(title, cmd, env=None):
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=REPO_ROOT, env=env)
    dt = time.perf_counter() - t0
    print(f"=== {title}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {dt:.0f} s", flush=True)
    return rc, dt


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--datasets", nargs="+", default=["breast_cancer", "digits"])
    p.add_argument("--num-subsets", type=int, default=30,
                   help="groups per type in the ss_logreg range runs (the paper used 100)")
    p.add_argument("--out-dir", default=str(REPO_ROOT / "output"))
    p.add_argument("--plot-dir", default=str(REPO_ROOT / "plots"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--counterexamples", nargs="*", default=["ortho2", "gauss4"], metavar="DATASET_ID",
                   help="counterexample datasets run in float64 and float32 (default: ortho2 gauss4, "
                        "the two panels of Figure 4)")
    p.add_argument("--skip-figures", action="store_true")
    return p


def check_args(args):
    from datasets.loader import DATASETS
    from experiments.common import ConfigError
    from experiments.counterexamples import DATASET_IDS as CEX_IDS

    if args.num_subsets < 3:
        raise ConfigError(f"--num-subsets must be >= 3; got {args.num_subsets}")
    for cex in args.counterexamples:
        if cex not in CEX_IDS:
            raise ConfigError(f"--counterexamples: each id must be one of {list(CEX_IDS)}; got {cex!r}")
    for ds in args.datasets:
        if ds not in DATASETS:
            raise ConfigError(f"--datasets: each id must be one of {sorted(DATASETS)}; got {ds!r}")


def run(args):
    check_args(args)
    t0 = time.perf_counter()
    timings, failed, codes = [], [], set()
    common = ["--out-dir", args.out_dir] + (["--data-dir", args.data_dir] if args.data_dir else [])
    for ds in args.datasets:
        cmd = [PY, "scripts/subsets_infl_logreg.py", "--dataset-id", ds, "--subset-choice-type", "range",
               "--subset-min-rel-size", "0.0025", "--subset-max-rel-size", "0.25",
               "--num-subsets", str(args.num_subsets), "--no-intermediate-results"] + common
        rc, dt = step(f"ss_logreg {ds} (num-subsets {args.num_subsets})", cmd)
        timings.append((f"ss_logreg {ds}", dt))
        failed += [f"ss_logreg {ds}"] if rc else []
        codes.add(rc)
    for cex in args.counterexamples:
        for prec in ([], ["--float32"]):
            name = f"counterexamples {cex}{' float32' if prec else ''}"
            cmd = [PY, "scripts/counterexamples.py", "--dataset-id", cex, "--no-intermediate-results",
                   "--out-dir", args.out_dir] + prec
            rc, dt = step(name, cmd)
            timings.append((name, dt))
            failed += [name] if rc else []
            codes.add(rc)
    if not args.skip_figures:
        env = dict(os.environ, INFLUENCE_FIG_DATASETS=",".join(args.datasets),
                   INFLUENCE_FIG_NUM_SUBSETS=str(args.num_subsets))
        rc, dt = step("figures notebook", [PY, "scripts/run_figures.py", "--out-dir", args.out_dir,
                                           "--plot-dir", args.plot_dir], env=env)
        timings.append(("figures notebook", dt))
        failed += ["figures notebook"] if rc else []
        codes.add(rc)
    print("\nsummary:")
    for name, dt in timings:
        print(f"  {name:<32} {dt:7.0f} s")
    print(f"  {'total':<32} {time.perf_counter() - t0:7.0f} s")
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
