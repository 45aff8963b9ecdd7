"""Influence of CDR labelling functions as data sources: the ``data_valuation`` experiment.

Spec ``experiments.md`` §4. Needs ``reduced_cdr``: run ``scripts/babble_reduce.py`` first
(it needs the Babble Labble CDR database ``{data_dir}/babble/cdr.db``). Paper run
(``codalab/run_data_valuation.sh``):

    python scripts/data_valuation.py --data-dir ./data --out-dir ./output --dataset-id reduced_cdr --sample-weights

Results go to ``{out_dir}/data_valuation/reduced_cdr_sample_weights-True/``. As in the
original, the script does not draw the plots (``--plots`` does, a project addition).
Model selection uses the test-set F1 (QUIRK of the original, kept).
"""
import argparse
import logging
import sys
import time

import _bootstrap  # noqa: F401

import matplotlib

matplotlib.use("Agg")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=str, default=None, help="default: <repo>/data")
    p.add_argument("--out-dir", type=str, default=None, help="default: <repo>/output")
    p.add_argument("--max-memory", type=int, default=int(1e9), help="bytes; bounds the refit batch size")
    p.add_argument("--force-refresh", action="store_true", help="recompute every phase")
    p.add_argument("--invalidate", type=int, default=None, help="recompute phases with index >= this")
    p.add_argument("--dataset-id", type=str, default="reduced_cdr")
    p.add_argument("--sample-weights", action="store_true",
                   help="weight each train row by 1/#LFs that fired on its candidate")
    # Project additions.
    p.add_argument("--cv-range", type=float, nargs=3, default=None, metavar=("LOW", "HIGH", "NUM"),
                   help="normalised regularisation grid (default 1e-4 1e-1 10, as in the original)")
    p.add_argument("--cv-folds", type=int, default=5, help="contiguous folds (default 5)")
    p.add_argument("--plots", action="store_true", help="also draw plot_all's figures")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from experiments.data_valuation import ConfigError, DataValuation, build_config

    try:
        kw = {} if args.cv_range is None else {"cross_validation_range": tuple(args.cv_range)}
        config = build_config(dataset_id=args.dataset_id, data_dir=args.data_dir, max_memory=args.max_memory,
                              sample_weights=args.sample_weights, cross_validation_folds=args.cv_folds, **kw)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    exp = DataValuation(config, out_dir=args.out_dir, progress=False if args.no_progress else None)
    R = exp.run(force_refresh=args.force_refresh, invalidate_phase=args.invalidate)
    if args.plots:
        exp.plot_all()
    ratio = R["subset_refit_grad_norm"] / R["subset_refit_grad_tol"]
    print(f"data_valuation done: {exp.base_dir} | {len(R['subset_tags'])} labelling functions | l2_reg "
          f"{R['cv_l2_reg']:.4g} | refit certificate: {int((ratio <= 1).sum())}/{len(ratio)} certified "
          f"(worst ||grad||/tol = {ratio.max():.2e}) | wall time {time.perf_counter() - t0:.1f} s")
    return 0 if (ratio <= 1).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
