"""How few training points must be removed to flip a result (``worst_case_groups``).

For each target (by default the predictions at the dataset's six fixed test points), the
methods first_order, rescaled, newton and adaptive (influence.worst_case) propose nested
removal sets and a predicted flip size k; certified refits verify each (docs/worst-case.md).
Writes ``worst_case.csv``, ``verified_sets.npz`` and ``worst_case.png`` to
``{out-dir}/worst_case_groups/{run id}/``.

Examples (run from the repository root):

    python scripts/worst_case_groups.py --dataset-id breast_cancer
    python scripts/worst_case_groups.py --dataset-id hospital --data-dir ./data   # data/hospital/dataset_diabetes.zip
    python scripts/worst_case_groups.py --dataset-id breast_cancer --test-points 3 17 --coefficient 5 \\
        --loss-change increase 0.5 --loss-change decrease 0.05 12
    python scripts/worst_case_groups.py --dataset-id digits --coefficient 10 3 --test-points
    python scripts/worst_case_groups.py --dataset-file my_data.csv --max-fraction 0.05

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error (nothing is written),
3 a refit was not certified (the results are saved); ``--debug`` shows tracebacks.
"""
import argparse
import sys

import _bootstrap  # noqa: F401

import matplotlib

from experiments import cli

matplotlib.use("Agg")

METHODS = ("first_order", "rescaled", "newton", "adaptive")


def make_parser():
    p = cli.ArgumentParser(__doc__)
    cli.add_run_flags(p, max_memory_default=int(1e9), max_memory_help="bytes")
    p.add_argument("--dataset-id", type=str, default=None, help="a registered dataset (default: hospital)")
    p.add_argument("--dataset-file", type=str, default=None,
                   help="your own data instead of --dataset-id: an .npz with X_train, y_train, X_test, y_test "
                        "or a .csv with 'label' and 'split' (train/test) columns (default: none)")
    p.add_argument("--fixed-reg", type=float, default=None,
                   help="lambda / n_train instead of cross-validation (default: cross-validated)")
    p.add_argument("--inverse-vp-method", type=str, default=None, metavar="{cholesky,lu,cholesky_lu}",
                   help="how the explicit Newton steps solve their systems (default: cholesky_lu)")
    p.add_argument("--spam-vocab-filter", type=str, default=None, choices=("lexeme_prob", "none"),
                   help="spam's token filter (default: lexeme_prob, the paper's 3,294-word vocabulary)")
    p.add_argument("--tag", type=str, default=None, help="suffix _TAG of the run id (default: none)")
    p.add_argument("--test-points", type=int, nargs="*", default=None, metavar="I",
                   help="prediction targets at these test indices (default: the six fixed test points; the flag "
                        "alone: no prediction targets)")
    p.add_argument("--coefficient", type=int, nargs="+", action="append", default=None, metavar="J",
                   help="the sign of feature J's weight as a target: 'J' (binary) or 'J CLASS' (multiclass); "
                        "repeatable (default: none)")
    p.add_argument("--loss-change", nargs="+", action="append", default=None, metavar="ARG",
                   help="'DIRECTION AMOUNT [I]': the mean test loss (or test point I's loss) moved by more than "
                        "AMOUNT, DIRECTION 'increase' or 'decrease'; repeatable (default: none)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="M",
                   help=f"any of {', '.join(METHODS)} (default: all)")
    p.add_argument("--max-fraction", type=float, default=0.1,
                   help="the largest removal set tried, as a fraction of the training set, in (0, 1) (default 0.1)")
    p.add_argument("--adaptive-batch", type=int, default=None,
                   help="points removed per adaptive re-scoring (default: automatic, at most 40 steps)")
    p.add_argument("--search-width", type=int, default=8,
                   help="prefix lengths refitted together per search round (default 8)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="draw worst_case.png after the run (default: on)")
    return p


def targets_from_args(args):
    """The config's target dicts from the flags (ConfigError on a malformed one)."""
    from experiments.common import ConfigError

    targets = []
    if args.test_points is None:
        if not args.coefficient and not args.loss_change:
            targets.append({"kind": "prediction", "test_index": None})
    else:
        targets += [{"kind": "prediction", "test_index": i} for i in args.test_points]
    for c in args.coefficient or []:
        if len(c) > 2:
            raise ConfigError(f"--coefficient takes J or J CLASS; got {' '.join(map(str, c))!r}")
        targets.append({"kind": "coefficient", "feature": c[0], "class": c[1] if len(c) == 2 else None})
    for spec in args.loss_change or []:
        if len(spec) not in (2, 3):
            raise ConfigError(f"--loss-change takes DIRECTION AMOUNT [I]; got {' '.join(spec)!r}")
        try:
            amount = float(spec[1])
            index = int(spec[2]) if len(spec) == 3 else None
        except ValueError:
            raise ConfigError(f"--loss-change takes DIRECTION AMOUNT [I] (a number and an integer); got "
                              f"{' '.join(spec)!r}") from None
        targets.append({"kind": "loss", "direction": spec[0], "amount": amount, "test_index": index})
    return targets


def config_from_args(args):
    from experiments.worst_case_groups import build_config

    return build_config(dataset_id=args.dataset_id, data_dir=args.data_dir, dataset_file=args.dataset_file,
                        targets=targets_from_args(args), methods=args.methods, max_fraction=args.max_fraction,
                        adaptive_batch=args.adaptive_batch, search_width=args.search_width,
                        fixed_reg=args.fixed_reg, inverse_vp_method=args.inverse_vp_method,
                        max_memory=args.max_memory, tag=args.tag, spam_vocab_filter=args.spam_vocab_filter,
                        master_only=args.no_intermediate_results)


def run(args):
    import numpy as np

    from experiments.worst_case_groups import WorstCaseGroups

    runs = []

    def plots(exp):
        runs.append(exp)
        if args.plots:
            exp.plot()

    def details(R):
        ks = {m: R[f"{m}_verified_k"] for m in args.methods}
        return (f"{len(R['target_names'])} targets, n_train {R['num_train']} | verified k (per target): "
                + "; ".join(f"{m} {list(map(int, k))}" for m, k in ks.items()))

    code = cli.run_experiment(WorstCaseGroups, config_from_args(args), args, details=details, after=plots,
                              certified=False)
    # Every refit of every method carries a certificate: ||grad|| / tol <= 1.
    worst = max(float(np.max(runs[0].R[f"{m}_max_grad_ratio"], initial=0.0)) for m in args.methods)
    if worst > 1:
        print(f"warning: a refit is not certified (worst ||grad||/tol = {worst:.2e}); exit code "
              f"{cli.EXIT_UNCERTIFIED}", file=sys.stderr)
        return cli.EXIT_UNCERTIFIED
    return code


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
