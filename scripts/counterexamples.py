"""Counterexamples for first-order vs Newton group influence: the ``counterexamples`` experiment.

The paper's Figure 4 reads the summaries of ``gauss4`` (left
panel) and ``ortho2`` (right panel). Examples (run from the repository root):

    python scripts/counterexamples.py --dataset-id ortho2 --no-intermediate-results
    python scripts/counterexamples.py --dataset-id gauss4 --no-intermediate-results
    python scripts/counterexamples.py --dataset-id gauss4 --no-intermediate-results --float32

Results go to ``{out_dir}/counterexamples/{dataset_id}[_float32]/``. Float64 is the
default; ``--float32`` reproduces the original's single-precision numerics, which is
where the scatter of Figure 4's left panel comes from (in float64 that panel is a
straight line; see ``experiments/counterexamples.py``).

Fixes of the original: the default ``--dataset-id`` is ``ortho2`` (the original's
default ``hospital`` is not a synthetic dataset and crashed with
``ValueError('Dataset gauss has not been generated')``); ``--worker`` prints the
``dask worker`` command that replaced the file-based task queue (README "Run on a cluster").

Exit codes: 0 success, 1 unexpected failure, 2 usage or input error, 3 a refit not
certified (README "What happens when things go wrong"); ``--debug`` shows tracebacks.
"""

import _bootstrap  # noqa: F401

from experiments import cli


def make_parser():
    p = cli.ArgumentParser(__doc__)
    cli.add_run_flags(p, data_dir=False, max_memory_unused="the counterexamples are small: nothing is batched")
    p.add_argument("--dataset-id", type=str, default="ortho2",
                   metavar="{gauss,fixed,repeats,gauss2,gauss3,gauss4,ortho2,gauss5}",
                   help="the synthetic counterexample dataset (default: ortho2)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the groups")
    # Project additions.
    p.add_argument("--float32", action="store_true",
                   help="compute in float32 like the original (run id gets a _float32 suffix)")
    return p


def run(args):
    from experiments.counterexamples import Counterexamples, build_config

    config = build_config(dataset_id=args.dataset_id, subset_seed=args.subset_seed,
                          max_memory=args.max_memory, master_only=args.no_intermediate_results,
                          dtype="float32" if args.float32 else "float64")
    return cli.run_experiment(Counterexamples, config, args, details=lambda R: (
        f"{len(R['subset_indices'])} groups, {len(R['cex_tags'])} test points"))


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
