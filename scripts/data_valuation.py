"""Influence of CDR labelling functions as data sources: the ``data_valuation`` experiment.

Needs ``reduced_cdr``: run ``scripts/babble_reduce.py`` first
(it needs the Babble Labble CDR database ``{data_dir}/babble/cdr.db``). Paper run
(``codalab/run_data_valuation.sh``):

    python scripts/data_valuation.py --data-dir ./data --out-dir ./output --dataset-id reduced_cdr --sample-weights

Results go to ``{out_dir}/data_valuation/reduced_cdr_sample_weights-True/``. As in the
original, the script does not draw the plots (``--plots`` does, a project addition).
Model selection uses the test-set F1 (QUIRK of the original, kept).

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error, 3 a refit not
certified (README "What happens when things go wrong"); ``--debug`` shows tracebacks.
"""

import argparse

import _bootstrap  # noqa: F401

import matplotlib

from experiments import cli

matplotlib.use("Agg")


def make_parser():
    p = cli.ArgumentParser(__doc__)
    # The original has no --worker or --no-intermediate-results here.
    cli.add_run_flags(p, worker=False, no_intermediate_results=False,
                      max_memory_help="memory bound of the refit batches in bytes")
    p.add_argument("--dataset-id", type=str, default="reduced_cdr", metavar="{reduced_cdr}",
                   help="the matrices written by scripts/babble_reduce.py")
    p.add_argument("--sample-weights", action="store_true",
                   help="weight each train row by 1/#LFs that fired on its candidate")
    # Project additions.
    cli.add_cv_flags(p)
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=False,
                   help="also draw plot_all's figures (the original drew none here)")
    return p


def run(args):
    from experiments.data_valuation import DataValuation, build_config

    config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir, max_memory=args.max_memory,
                          sample_weights=args.sample_weights, **cli.cv_settings(args))
    return cli.run_experiment(DataValuation, config, args, after=lambda exp: args.plots and exp.plot_all(),
                              details=lambda R: (f"{len(R['subset_tags'])} labelling functions | l2_reg "
                                                 f"{R['cv_l2_reg']:.4g}"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
