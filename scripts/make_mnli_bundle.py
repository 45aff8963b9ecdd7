"""Write a generated MultiNLI bundle in the exact format of the pre-processed one.

The real bundle (CodaLab 0x5258e3771b974983abfb10bfa75e207d) and its annotator files are
not reachable offline; this writes ``mnli.npz``, ``mnli_nonfires.npz``,
``mnli_genres.npz``, ``mnli_nonfires_genres.npz`` and the three
``multinli_1.0_*_with_annotators.jsonl`` files to ``{data_dir}/multinli_1.0/`` at any
size (default the real one: 392,702 x 1,200 train, of which the loader keeps 600
columns; 9,815 dev-matched; 9,832 dev-mismatched; 3 classes), with 380 crowd workers of
lognormal(sigma 1.4) sizes. Sizes, worker distribution and features:
``datasets/mnli_bundle.py``. Deterministic given ``--seed``. Then, e.g.:

    python scripts/make_mnli_bundle.py --data-dir /tmp/mnli/data
    python scripts/credit_assignment.py --data-dir /tmp/mnli/data --out-dir /tmp/mnli/output \\
        --dataset-id mnli --no-intermediate-results

Existing files of the bundle in that folder are replaced (the annotator caches too).
About 2.3 GB of disk at the real size.
"""
import time

import _bootstrap  # noqa: F401

from experiments import cli


def make_parser():
    from datasets.mnli_bundle import BundleSpec

    d = BundleSpec()
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--data-dir", type=str, default=None, help="data folder (default: <repo>/data)")
    p.add_argument("--num-train", type=int, default=d.num_train, help="train rows (default %(default)s)")
    p.add_argument("--num-test", type=int, default=d.num_test, help="dev-matched rows (default %(default)s)")
    p.add_argument("--num-nonfires", type=int, default=d.num_nonfires,
                   help="dev-mismatched rows (default %(default)s)")
    p.add_argument("--num-columns", type=int, default=d.num_columns,
                   help="stored feature columns, >= 600 (default %(default)s)")
    p.add_argument("--num-crowd-workers", dest="num_crowd_workers", type=int, default=d.num_workers,
                   help="crowd workers who wrote the examples = credit-assignment groups (not Dask "
                        "workers) (default %(default)s)")
    p.add_argument("--size-sigma", type=float, default=d.size_sigma,
                   help="sigma of the lognormal worker sizes (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the generator (default %(default)s)")
    return p


def run(args):
    from datasets.common import get_dataset_dir
    from datasets.mnli import SUBDIR
    from datasets.mnli_bundle import BundleSpec, write_mnli_bundle

    spec = BundleSpec(num_train=args.num_train, num_test=args.num_test, num_nonfires=args.num_nonfires,
                      num_columns=args.num_columns, num_workers=args.num_crowd_workers, size_sigma=args.size_sigma,
                      seed=args.seed)
    t0 = time.perf_counter()
    s = write_mnli_bundle(args.data_dir, spec)
    print(f"wrote {get_dataset_dir(SUBDIR, args.data_dir)} in {time.perf_counter() - t0:.1f} s | "
          f"{s['workers']} workers writing {s['min']} to {s['max']} examples (median {s['median']:g}; "
          f"largest {100 * s['largest_share']:.1f}%, top 10 {100 * s['top10_share']:.1f}%, "
          f"half of the examples by {s['half_of_examples_by']} workers)")


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
