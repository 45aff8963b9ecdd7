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
About 2.3 GB of disk at the real size. The settings are saved next to the files
(``generated_spec.json``, written last); ``--keep-existing`` leaves a complete bundle
that this script wrote with the same settings as it is (``scripts/reproduce.py --paper``
reruns use it).
"""
import dataclasses
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
    p.add_argument("--keep-existing", action="store_true",
                   help="leave the folder as it is if it holds a complete bundle written with these settings")
    return p


SPEC_FILE = "generated_spec.json"


def bundle_files() -> list[str]:
    from datasets import mnli

    return [mnli.MAIN_FILE, mnli.NONFIRES_FILE, mnli.GENRES_FILE, mnli.NONFIRES_GENRES_FILE, mnli.TRAIN_ANNOTATORS,
            mnli.MATCHED_ANNOTATORS, mnli.MISMATCHED_ANNOTATORS]


def written_with(folder, spec) -> bool:
    """Whether ``folder`` holds every file of a bundle this script wrote with ``spec``."""
    from datasets import storage

    path = folder / SPEC_FILE
    if not path.is_file() or not all((folder / name).is_file() for name in bundle_files()):
        return False
    try:
        return storage.load_json(path) == dataclasses.asdict(spec)
    except (storage.StorageError, OSError, ValueError):
        return False


def run(args):
    from datasets import storage
    from datasets.common import get_dataset_dir
    from datasets.mnli import SUBDIR
    from datasets.mnli_bundle import BundleSpec, write_mnli_bundle

    spec = BundleSpec(num_train=args.num_train, num_test=args.num_test, num_nonfires=args.num_nonfires,
                      num_columns=args.num_columns, num_workers=args.num_crowd_workers, size_sigma=args.size_sigma,
                      seed=args.seed)
    folder = get_dataset_dir(SUBDIR, args.data_dir)
    if args.keep_existing and written_with(folder, spec):
        print(f"kept {folder}: it holds the bundle of these settings ({folder / SPEC_FILE})")
        return 0
    (folder / SPEC_FILE).unlink(missing_ok=True)  # written again only once every file is in place
    t0 = time.perf_counter()
    s = write_mnli_bundle(args.data_dir, spec)
    storage.save_json(folder / SPEC_FILE, dataclasses.asdict(spec))
    print(f"wrote {folder} in {time.perf_counter() - t0:.1f} s | "
          f"{s['workers']} workers writing {s['min']} to {s['max']} examples (median {s['median']:g}; "
          f"largest {100 * s['largest_share']:.1f}%, top 10 {100 * s['top10_share']:.1f}%, "
          f"half of the examples by {s['half_of_examples_by']} workers)")


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
