"""Write a generated Babble Labble CDR database in the exact format of the real one.

The real database (CodaLab bundle 0x38e021ee339a4f6aa21d9c4a16c1b7ee) is not reachable
offline; this writes ``{data_dir}/babble/cdr.db`` with candidates of a hidden class, a few
informative features and six labelling functions of known accuracy
(``datasets/cdr_bundle.py``), replacing the caches built from an earlier database.
Deterministic given ``--seed``. Then, e.g.:

    python scripts/make_cdr_db.py --data-dir /tmp/gen/data
    python scripts/babble_reduce.py --data-dir /tmp/gen/data --out-dir /tmp/gen/output
    python scripts/data_valuation.py --data-dir /tmp/gen/data --out-dir /tmp/gen/output \\
        --dataset-id reduced_cdr --sample-weights

Results of generated data are not the paper's: keep them in their own ``--out-dir``.
"""
import time

import _bootstrap  # noqa: F401

from datasets.cdr_bundle import CdrSpec, CdrSpecError, write_cdr_db
from experiments import cli
from experiments.common import ConfigError


def make_parser():
    d = CdrSpec()
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--data-dir", type=str, default=None, help="data folder (default: <repo>/data)")
    p.add_argument("--num-train", type=int, default=d.num_train, help="train candidates with votes")
    p.add_argument("--num-validation", type=int, default=d.num_validation, help="validation candidates")
    p.add_argument("--num-test", type=int, default=d.num_test, help="test candidates")
    p.add_argument("--num-nonfires", type=int, default=d.num_nonfires,
                   help="extra train candidates no labelling function fires on")
    p.add_argument("--num-features", type=int, default=d.num_features, help="feature columns")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the generator")
    return p


def run(args):
    try:
        spec = CdrSpec(num_train=args.num_train, num_validation=args.num_validation, num_test=args.num_test,
                       num_nonfires=args.num_nonfires, num_features=args.num_features, seed=args.seed)
    except CdrSpecError as exc:
        raise ConfigError(f"--{str(exc).replace('_', '-', 1)}") from None
    t0 = time.perf_counter()
    s = write_cdr_db(args.data_dir, spec)
    print(f"wrote {s['path']} in {time.perf_counter() - t0:.1f} s | {s['candidates']} candidates, "
          f"{s['votes']} votes, {s['features']} feature entries (generated data, not the paper's CDR)")


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
