"""L1 feature selection on CDR that writes the ``reduced_cdr`` matrices: the ``babble_reduce`` experiment.

Spec ``experiments.md`` §5. Needs the Babble Labble CDR SQLite database
``{data_dir}/babble/cdr.db`` (CodaLab bundle 0x38e021ee339a4f6aa21d9c4a16c1b7ee; fetched
automatically when the network is available). Paper run (``codalab/prepare_babble.sh``):

    python scripts/babble_reduce.py --data-dir ./data --out-dir ./output --save-reduced-dir ./data/babble \\
        --dataset-id cdr --fit-intercept --sample-weights

Results go to ``{out_dir}/babble_reduce/cdr_regularization_type-l1_sample_weights-True/``;
the reduced matrices to ``--save-reduced-dir`` (default ``{data_dir}/babble``, where
``reduced_cdr`` reads them). ``--no-sample-weights`` (a project addition) runs unweighted
(the original crashed without weights).
"""
import argparse
import logging
import sys

import _bootstrap  # noqa: F401


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=str, default=None, help="default: <repo>/data")
    p.add_argument("--out-dir", type=str, default=None, help="default: <repo>/output")
    p.add_argument("--max-memory", type=int, default=int(1e9), help="bytes (unused, as in the original)")
    p.add_argument("--save-reduced-dir", type=str, default=None, help="default: {data_dir}/babble")
    p.add_argument("--force-refresh", action="store_true", help="recompute every phase")
    p.add_argument("--invalidate", type=int, default=None, help="recompute phases with index >= this")
    p.add_argument("--dataset-id", type=str, default="cdr")
    p.add_argument("--fit-intercept", action="store_true", default=True,
                   help="accepted for compatibility (always on, as in the original)")
    p.add_argument("--sample-weights", dest="sample_weights", action="store_true", default=True,
                   help="weight each vote row by 1/#LFs of its candidate (default)")
    p.add_argument("--no-sample-weights", dest="sample_weights", action="store_false",
                   help="unweighted fits and scores (project addition)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from experiments.babble_reduce import BabbleReduce, ConfigError, build_config

    try:
        config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir,
                              save_reduced_dir=args.save_reduced_dir, max_memory=args.max_memory,
                              fit_intercept=args.fit_intercept, sample_weights=args.sample_weights)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exp = BabbleReduce(config, out_dir=args.out_dir, progress=False if args.no_progress else None)
    R = exp.run(force_refresh=args.force_refresh, invalidate_phase=args.invalidate)
    print(f"babble_reduce done: {exp.base_dir} | best reg {R['regs'][R['best_i']]:.4g} | "
          f"{len(R['feature_inds'])} of {R['coefs'].shape[1]} features kept | validation F1 "
          f"{R['f1s'][1][R['best_i']]:.4f} | reduced matrices in {config['save_reduced_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
