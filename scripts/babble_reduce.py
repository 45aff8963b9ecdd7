"""L1 feature selection on CDR that writes the ``reduced_cdr`` matrices: the ``babble_reduce`` experiment.

Needs the Babble Labble CDR SQLite database
``{data_dir}/babble/cdr.db`` (CodaLab bundle 0x38e021ee339a4f6aa21d9c4a16c1b7ee; fetched
automatically when the network is available). Paper run (``codalab/prepare_babble.sh``):

    python scripts/babble_reduce.py --data-dir ./data --out-dir ./output --save-reduced-dir ./data/babble \\
        --dataset-id cdr --fit-intercept --sample-weights

Results go to ``{out_dir}/babble_reduce/cdr_regularization_type-l1_sample_weights-True/``;
the reduced matrices to ``--save-reduced-dir`` (default ``{data_dir}/babble``, where
``reduced_cdr`` reads them). ``--no-sample-weights`` (a project addition) runs unweighted
(the original crashed without weights). ``--workers N`` / ``--scheduler-address`` run the
ten L1 fits as Dask tasks (one per regularisation strength, each from the random state its
fit had on the original's sequential path), with results identical to the default run.

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error, 3 a refit not
certified (README "What happens when things go wrong"); ``--debug`` shows tracebacks.
"""
import _bootstrap  # noqa: F401

from experiments import cli


def make_parser():
    p = cli.ArgumentParser(__doc__)
    cli.add_run_flags(p, worker=False, no_intermediate_results=False,
                      max_memory_unused="the L1 fits run whole, as in the original")
    p.add_argument("--save-reduced-dir", type=str, default=None,
                   help="where the reduced_cdr matrices go (default: {data_dir}/babble)")
    p.add_argument("--dataset-id", type=str, default="cdr", metavar="{cdr}",
                   help="the Babble Labble database {data_dir}/babble/{id}.db")
    p.add_argument("--fit-intercept", action="store_true", default=True,
                   help="accepted for compatibility (always on, as in the original)")
    p.add_argument("--sample-weights", dest="sample_weights", action="store_true", default=True,
                   help="weight each vote row by 1/#LFs of its candidate (default)")
    p.add_argument("--no-sample-weights", dest="sample_weights", action="store_false",
                   help="unweighted fits and scores (project addition)")
    return p


def run(args):
    from experiments.babble_reduce import BabbleReduce, build_config

    config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir,
                          save_reduced_dir=args.save_reduced_dir, max_memory=args.max_memory,
                          fit_intercept=args.fit_intercept, sample_weights=args.sample_weights)
    return cli.run_experiment(BabbleReduce, config, args, certified=False, details=lambda R: (
        f"best reg {R['regs'][R['best_i']]:.4g} | {len(R['feature_inds'])} of {R['coefs'].shape[1]} features kept "
        f"| validation F1 {R['f1s'][1][R['best_i']]:.4f} | reduced matrices in {config['save_reduced_dir']}"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
