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

import _bootstrap  # noqa: F401

import matplotlib

from experiments import cli

matplotlib.use("Agg")


def make_parser():
    p = cli.ArgumentParser(__doc__)
    cli.add_run_flags(p, max_memory_help="bytes; bounds the refit batch size")
    p.add_argument("--dataset-id", type=str, default="mnli")
    p.add_argument("--inverse-hvp-method", type=str, default=None)
    p.add_argument("--inverse-vp-method", type=str, default=None)
    # The original's batch sizes of its float32 gradient and Hessian sums: refused when given
    # (run() says so in one line), as batch sizes here follow --max-memory.
    p.add_argument("--grad-batch-size", type=int, default=None, help="not supported: batch sizes follow --max-memory")
    p.add_argument("--hessian-batch-size", type=int, default=None,
                   help="not supported: batch sizes follow --max-memory")
    # Project additions.
    cli.add_cv_flags(p)
    p.add_argument("--full-loss-matrices", action="store_true",
                   help="store the original (S, N_train) subset_train_losses matrix")
    p.add_argument("--no-plots", action="store_true", help="phase 9 draws no figures")
    return p


def run(args):
    from experiments.common import ConfigError
    from experiments.credit_assignment import CreditAssignment, build_config

    for flag, value in (("--grad-batch-size", args.grad_batch_size), ("--hessian-batch-size", args.hessian_batch_size)):
        if value is not None:
            raise ConfigError(f"{flag} is not supported (batch sizes follow --max-memory); got {value}")
    config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir, max_memory=args.max_memory,
                          inverse_hvp_method=args.inverse_hvp_method, inverse_vp_method=args.inverse_vp_method,
                          master_only=args.no_intermediate_results,
                          store_full_loss_matrices=args.full_loss_matrices, **cli.cv_settings(args))
    return cli.run_experiment(CreditAssignment, config, args, plots=not args.no_plots, details=lambda R: (
        f"{len(R['subset_tags'])} workers | l2_reg {R['cv_l2_reg']:.4g}"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
