"""Influence of MultiNLI crowd workers: the ``credit_assignment`` experiment.

Needs the pre-processed MultiNLI files in
``{data_dir}/multinli_1.0/`` (CodaLab bundle 0x5258e3771b974983abfb10bfa75e207d):
``mnli.npz``, ``mnli_nonfires.npz``, ``mnli_genres.npz``, ``mnli_nonfires_genres.npz``
and the annotator files ``multinli_1.0_{train,dev_matched,dev_mismatched}_with_annotators.jsonl``
(or the cache ``mnli_annotators.npz`` built from them). Paper run
(``codalab/run_credit_assignment.sh``):

    python scripts/credit_assignment.py --data-dir ./data --out-dir ./output --dataset-id mnli \\
        --no-intermediate-results

Results go to ``{out_dir}/credit_assignment/mnli_sample_weights-None/``. ``--worker`` prints
the ``dask worker`` command that replaced the file-based task queue; ``--workers N`` or
``--scheduler-address`` run the fits on Dask (README "Run on a cluster").

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
    cli.add_run_flags(p, max_memory_help="memory bound of the refit batches in bytes")
    p.add_argument("--dataset-id", type=str, default="mnli", metavar="{mnli}",
                   help="the MultiNLI bundle in {data_dir}/multinli_1.0")
    p.add_argument("--inverse-hvp-method", type=str, default=None, metavar="{explicit,cg}",
                   help="how inverse-Hessian products are computed (default: explicit)")
    p.add_argument("--inverse-vp-method", type=str, default=None, metavar="{cholesky,lu,cholesky_lu}",
                   help="how the explicit Newton changes solve their systems (default: cholesky_lu)")
    cli.add_refused_flag(p, "--grad-batch-size", "batches follow --max-memory")
    cli.add_refused_flag(p, "--hessian-batch-size", "batches follow --max-memory")
    # Project additions.
    cli.add_cv_flags(p)
    p.add_argument("--full-loss-matrices", action="store_true",
                   help="store the original (S, N_train) subset_train_losses matrix")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="phase 9 draws the figures (--no-plots: it draws none)")
    return p


def run(args):
    from experiments.credit_assignment import CreditAssignment, build_config

    config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir, max_memory=args.max_memory,
                          inverse_hvp_method=args.inverse_hvp_method, inverse_vp_method=args.inverse_vp_method,
                          master_only=args.no_intermediate_results,
                          store_full_loss_matrices=args.full_loss_matrices, **cli.cv_settings(args))
    return cli.run_experiment(CreditAssignment, config, args, plots=args.plots, details=lambda R: (
        f"{len(R['subset_tags'])} workers | l2_reg {R['cv_l2_reg']:.4g}"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
