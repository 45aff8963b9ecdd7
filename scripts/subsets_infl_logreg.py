"""Group influence in logistic regression: the ``ss_logreg`` experiment.

Examples (run from the repository root):

    python scripts/subsets_infl_logreg.py --dataset-id breast_cancer
    python scripts/subsets_infl_logreg.py --dataset-file my_data.csv --num-subsets 10
    python scripts/subsets_infl_logreg.py --data-dir ./data --out-dir ./output --dataset-id hospital \\
        --subset-choice-type range --subset-min-rel-size 0.0025 --subset-max-rel-size 0.25 \\
        --num-subsets 100 --max-memory 100000000 --no-intermediate-results

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error, 3 a refit not
certified; ``--debug`` shows tracebacks.
"""


import argparse

import _bootstrap  # noqa: F401

import matplotlib

from experiments import cli

matplotlib.use("Agg")


def make_parser():
    p = cli.ArgumentParser(__doc__)
    cli.add_run_flags(p, max_memory_default=1e9,
                      max_memory_help="memory bound of batched work in bytes; plain digits (e.g. 100000000), "
                                      "as in the original (default: 1e9)")
    p.add_argument("--dataset-id", type=str, default=None,
                   help="a registered dataset id, e.g. breast_cancer, digits, hospital, spam, mnist "
                        "(default: hospital)")
    p.add_argument("--dataset-file", type=str, default=None,
                   help="your own data instead of --dataset-id: an .npz with X_train, y_train, X_test, y_test "
                        "or a .csv with 'label' and 'split' (train/test) columns; "
                        "the run id gets file-{stem}-{sha256[:12]} (default: none)")
    p.add_argument("--standardize", action="store_true",
                   help="with --dataset-file: standardise each feature column (training mean and standard "
                        "deviation) instead of refusing features beyond 2**26 in magnitude; run id suffix "
                        "_standardized")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the random groups")
    p.add_argument("--subset-choice-type", type=str, default="types", metavar="{types,range}",
                   help="types: groups of every kind at --subset-rel-size; range: sizes spread from "
                        "--subset-min-rel-size to --subset-max-rel-size (the paper's runs)")
    p.add_argument("--skip-hessian-spectrum", action="store_true",
                   help="skip the eigenvalues of each group's Hessian downdate")
    p.add_argument("--fixed-reg", type=float, default=None, metavar="R",
                   help="use lambda = R * n_train instead of cross-validation (R = lambda/n; the run id "
                        "gets _rel-reg-R, which replaces --tag) (default: cross-validated)")
    p.add_argument("--tag", type=str, default=None, help="suffix _TAG of the run id (default: none)")
    p.add_argument("--subset-rel-size", type=float, default=0.1,
                   help="group size as a fraction of the training set (types)")
    p.add_argument("--num-subsets", "--num-groups", dest="num_subsets", type=int, default=5,
                   help="groups per kind of group (>= 3)")
    p.add_argument("--subset-min-rel-size", type=float, default=0.0025, help="smallest group fraction (range)")
    p.add_argument("--subset-max-rel-size", type=float, default=0.25, help="largest group fraction (range)")
    p.add_argument("--inverse-hvp-method", type=str, default=None, metavar="{explicit,cg,fmin_ncg}",
                   help="explicit (Hessians) or cg (Newton-CG); fmin_ncg = cg with the original's scipy "
                        "fmin_ncg first-order solves (default: per dataset)")
    p.add_argument("--inverse-vp-method", type=str, default=None, metavar="{cholesky,lu,cholesky_lu}",
                   help="how the explicit Newton changes solve their systems (default: cholesky_lu)")
    # Project additions.
    p.add_argument("--float32", action="store_true",
                   help="compute in float32 like the original (run id gets a _float32 suffix)")
    p.add_argument("--full-loss-matrices", action="store_true",
                   help="store the original (S, n_t) and (S, n) loss matrices in phase 6")
    p.add_argument("--kmeans-n-init", type=int, default=10,
                   help="KMeans restarts for the clustered groups (10 = the original's sklearn 0.20 default)")
    p.add_argument("--spam-vocab-filter", type=str, default=None, choices=("lexeme_prob", "none"),
                   help="spam's token filter: lexeme_prob (default: the paper's 3,294-word vocabulary) or "
                        "none (every alphabetic non-stop lemma; run id suffix _vocab-none)")
    p.add_argument("--group-types", type=str, default=None,
                   help="comma-separated group types to draw (default: all): random, random_same_class, "
                        "neg_tail_test, pos_tail_test, same_features, same_grad, feature_window; the run id gets "
                        "_types-...; a dataset under 400 training points skips the tail types")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None,
                   help="--plots: also draw plot_all's detailed figures (one per target and pair of estimates) "
                        "under plots/ (not with --no-intermediate-results); --no-plots: draw no figure, not even "
                        "summary.png (default: summary.png only)")
    return p


def config_from_args(args):
    """The ss_logreg config of the parsed flags (also used by scripts/estimator_ladder.py)."""
    from experiments.subset_influence import build_config

    return build_config(
        dataset_id=args.dataset_id, data_dir=args.data_dir, subset_seed=args.subset_seed,
        subset_choice_type=args.subset_choice_type, subset_rel_size=args.subset_rel_size,
        subset_min_rel_size=args.subset_min_rel_size, subset_max_rel_size=args.subset_max_rel_size,
        num_subsets=args.num_subsets, inverse_hvp_method=args.inverse_hvp_method,
        inverse_vp_method=args.inverse_vp_method, max_memory=args.max_memory,
        skip_hessian_spectrum=args.skip_hessian_spectrum, tag=args.tag,
        master_only=args.no_intermediate_results, fixed_reg=args.fixed_reg,
        dtype="float32" if args.float32 else "float64",
        store_full_loss_matrices=args.full_loss_matrices, kmeans_n_init=args.kmeans_n_init,
        dataset_file=args.dataset_file, spam_vocab_filter=args.spam_vocab_filter,
        standardize=getattr(args, "standardize", False),
        group_types=getattr(args, "group_types", None))


def run(args):
    from experiments.subset_groups import spearman_line
    from experiments.subset_influence import SubsetInfluenceLogreg

    def outputs(exp):
        # Every run (summary mode too): groups.csv and, unless --no-plots, summary.png;
        # plot_all's detailed figures only with --plots, and as in the original never in
        # summary mode.
        exp.save_groups_table()
        if args.plots is not False:
            exp.plot_summary(save_and_close=True)
            if args.plots and not args.no_intermediate_results:
                exp.plot_all(save_and_close=True)

    return cli.run_experiment(SubsetInfluenceLogreg, config_from_args(args), args, after=outputs, details=lambda R: (
        f"{len(R['subset_tags'])} groups (max ||grad L_-U|| = {R['subset_refit_grad_norm'].max():.2e}) | "
        f"{spearman_line(R)}"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
