"""Influence of CDR labelling functions as data sources: the ``data_valuation`` experiment.

Spec ``experiments.md`` §4. Needs ``reduced_cdr``: run ``scripts/babble_reduce.py`` first
(it needs the Babble Labble CDR database ``{data_dir}/babble/cdr.db``). Paper run
(``codalab/run_data_valuation.sh``):

    python scripts/data_valuation.py --data-dir ./data --out-dir ./output --dataset-id reduced_cdr --sample-weights

Results go to ``{out_dir}/data_valuation/reduced_cdr_sample_weights-True/``. As in the
original, the script does not draw the plots (``--plots`` does, a project addition).
Model selection uses the test-set F1 (QUIRK of the original, kept).

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error, 3 a refit not
certified (README "What happens when things go wrong"); ``--debug`` shows tracebacks.
"""
import time

import _bootstrap  # noqa: F401

import matplotlib

from experiments import cli, execution

matplotlib.use("Agg")


def make_parser():
    p = cli.ArgumentParser(__doc__)
    # The original has no --worker or --no-intermediate-results here (spec experiments.md §4).
    cli.add_run_flags(p, worker=False, no_intermediate_results=False,
                      max_memory_help="bytes; bounds the refit batch size")
    p.add_argument("--dataset-id", type=str, default="reduced_cdr")
    p.add_argument("--sample-weights", action="store_true",
                   help="weight each train row by 1/#LFs that fired on its candidate")
    # Project additions.
    p.add_argument("--cv-range", type=float, nargs=3, default=None, metavar=("LOW", "HIGH", "NUM"),
                   help="normalised regularisation grid (default 1e-4 1e-1 10, as in the original)")
    p.add_argument("--cv-folds", type=int, default=5, help="contiguous folds (default 5)")
    p.add_argument("--plots", action="store_true", help="also draw plot_all's figures")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run(args):
    from experiments.data_valuation import DataValuation, build_config

    kw = {} if args.cv_range is None else {"cross_validation_range": tuple(args.cv_range)}
    config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir, max_memory=args.max_memory,
                          sample_weights=args.sample_weights, cross_validation_folds=args.cv_folds, **kw)
    t0 = time.perf_counter()
    config.update(execution.settings_from_args(args))  # --workers / --scheduler-address (operational)
    exp = DataValuation(config, out_dir=args.out_dir, progress=False if args.no_progress else None)
    R = exp.run(force_refresh=args.force_refresh, invalidate_phase=args.invalidate)
    if args.plots:
        exp.plot_all()
    ratio, code = cli.certificate(R)
    print(f"data_valuation done: {exp.base_dir} | {len(R['subset_tags'])} labelling functions | l2_reg "
          f"{R['cv_l2_reg']:.4g} | refit certificate: {int((ratio <= 1).sum())}/{len(ratio)} certified "
          f"(worst ||grad||/tol = {ratio.max():.2e}) | wall time {time.perf_counter() - t0:.1f} s")
    return code


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
