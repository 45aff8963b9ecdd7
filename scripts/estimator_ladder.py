"""The accuracy ladder of group-effect estimators against certified refits (``estimator_ladder``).

Takes the dataset and group flags of ``scripts/subsets_infl_logreg.py`` (the same parser),
reads the matching ``ss_logreg`` run (running it first when its results are missing) and
adds the estimators first_order, newton, newton_2, newton_3, second_order_basu,
second_order_exact, rescaled and actual, writing ``accuracy.csv`` and ``cost.csv`` to
``{out-dir}/estimator_ladder/{ss_logreg run id}/``. ``--force-refresh``, ``--invalidate``
and ``--no-intermediate-results`` apply to the ladder's own phases (the ``ss_logreg`` run is
resumed from its files as they are). ``--workers N`` / ``--scheduler-address`` run the
per-group work (the ``ss_logreg`` phases it has to run, and the ladder's estimators and
refits in chunks of groups) on Dask, with results identical to the default run (the
costs are then the wall times on the cluster).

Examples (run from the repository root):

    python scripts/estimator_ladder.py --dataset-id breast_cancer
    python scripts/estimator_ladder.py --dataset-id digits --subset-choice-type range --num-subsets 10
    python scripts/estimator_ladder.py --dataset-file my_data.csv --num-subsets 10

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error, 3 a refit of the
``ss_logreg`` run not certified; ``--debug`` shows tracebacks.
"""

import _bootstrap  # noqa: F401

from experiments import cli
from subsets_infl_logreg import config_from_args, make_parser as ss_parser


def make_parser():
    p = ss_parser()
    p.description = __doc__
    p.add_argument("--no-retime-actual", action="store_true",
                   help="do not refit the groups again to time the actual effect (its cost is then NaN)")
    return p


def run(args):
    from experiments.estimator_ladder import EstimatorLadder, build_config

    config = build_config(config_from_args(args), master_only=args.no_intermediate_results,
                          retime_actual=not args.no_retime_actual)

    def costs(R):
        return ", ".join(f"{e} {float(s) * 1e3:.3g} ms"
                         for e, s in zip(R["cost_estimator"], R["cost_seconds_per_group"]))

    return cli.run_experiment(EstimatorLadder, config, args, details=lambda R: (
        f"{len(R['subset_sizes'])} groups | per group: {costs(R)}"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
