"""Download, preprocess and cache datasets and supplements, printing their shapes.

    python scripts/load_all_datasets.py [--data-dir DIR] [--center-data] [--append-bias]
        [--dataset-ids ID ...] [--supplement-ids ID ... | --supplement-ids none]

Omitting ``--dataset-ids`` (or
giving it no ids) loads every registered dataset; likewise for ``--supplement-ids``;
``none`` loads nothing of that kind. For each dataset it prints
``{id}: train={shape}, val={shape}, test={shape}``. Unknown ids print
``Unknown dataset ID: x`` (or ``Unknown supplement ID: x``) and are skipped. A dataset
that fails to load (no network, missing file, ...) prints a one-line error and the script
goes on (the full error, with every URL tried, is logged to stderr). Exit status: 0 if
everything requested loaded (unknown ids are only reported, as in the original); 2 if
some failed for missing or damaged data (an input error, as for every script); 1 if some
failed unexpectedly. ``--debug`` logs the traceback of each failure.

Fixed from the original: with a flag omitted its default was
``None`` and ``len(None)`` crashed, so the bare command never ran.
"""
from __future__ import annotations

import logging
import sys
import time

import _bootstrap  # noqa: F401

import numpy as np
import scipy.sparse as sp

from datasets import loader
from datasets.common import DataSet, Datasets
from experiments import cli

logger = logging.getLogger("load_all_datasets")
NONE_WORD = "none"


def _shape(obj) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, DataSet):
        return str(tuple(obj.x.shape))
    if isinstance(obj, np.ndarray) or sp.issparse(obj):
        return str(tuple(obj.shape))
    return type(obj).__name__


def describe(obj) -> str:
    """A one-line summary of a dataset or supplement (shapes, not values)."""
    if isinstance(obj, Datasets):
        return f"train={_shape(obj.train)}, val={_shape(obj.validation)}, test={_shape(obj.test)}"
    if isinstance(obj, DataSet):
        return f"x={tuple(obj.x.shape)}, labels={tuple(obj.labels.shape)}"
    if isinstance(obj, np.ndarray):
        return f"array {tuple(obj.shape)} {obj.dtype}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(_shape(o) for o in obj) + "]"
    return repr(obj)


def _one_line(exc: BaseException) -> str:
    """The error's first line (the loaders put the summary and the manual path there)."""
    lines = [part.strip() for part in str(exc).splitlines() if part.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _select(requested: list[str] | None, registry: dict, kind: str) -> tuple[list[str], int]:
    """Ids to load (all if none requested, nothing for ``none``) and the number of unknown ones."""
    if not requested:
        return list(registry), 0
    if [r.lower() for r in requested] == [NONE_WORD]:
        return [], 0
    ids, unknown = [], 0
    for i in requested:
        if i in registry:
            ids.append(i)
        else:
            print(f"Unknown {kind} ID: {i}", flush=True)
            unknown += 1
    return ids, unknown


def make_parser():
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--data-dir", default=None, help="data folder (default: <repo>/data)")
    parser.add_argument("--center-data", action="store_true", help="subtract the train column means")
    parser.add_argument("--append-bias", action="store_true", help="append a column of ones")
    parser.add_argument("--dataset-ids", nargs="*", default=None,
                        help=f"dataset ids (default: all of {', '.join(loader.DATASETS)}; 'none' for no dataset)")
    parser.add_argument("--supplement-ids", nargs="*", default=None,
                        help="supplement ids (default: all; 'none' for no supplement)")
    cli.add_no_progress_flag(parser)
    return parser


def _report_failure(item_id: str, exc: Exception, failed: list[tuple[str, bool]], debug: bool) -> None:
    print(f"{item_id}: FAILED: {_one_line(exc)}", flush=True)
    logger.info("%s: full error:\n%s", item_id, exc, exc_info=exc if debug else None)
    failed.append((item_id, cli.is_user_error(exc)))


def run(args) -> int:
    dataset_ids, unknown = _select(args.dataset_ids, loader.DATASETS, "dataset")
    supplement_ids, unknown_s = _select(args.supplement_ids, loader.SUPPLEMENTS, "supplement")
    failed: list[tuple[str, bool]] = []  # (id, whether the failure is an input error)
    for dataset_id in dataset_ids:
        start = time.perf_counter()
        kwargs = {} if dataset_id in loader.OFFLINE_DATASETS else {"progress": cli.progress_of(args) is not False}
        try:
            ds = loader.load_dataset(dataset_id, center_data=args.center_data, append_bias=args.append_bias,
                                     data_dir=args.data_dir, **kwargs)
        except Exception as exc:  # report and go on: one dataset must not stop the others
            _report_failure(dataset_id, exc, failed, args.debug)
            continue
        print(f"{dataset_id}: {describe(ds)}", flush=True)
        logger.info("%s loaded in %.1f s", dataset_id, time.perf_counter() - start)
    for supplement_id in supplement_ids:
        try:
            info = loader.load_supplemental_info(supplement_id, data_dir=args.data_dir,
                                                 progress=cli.progress_of(args) is not False)
        except Exception as exc:  # same policy as for datasets
            _report_failure(supplement_id, exc, failed, args.debug)
            continue
        print(f"{supplement_id}: {describe(info)}", flush=True)
    if failed:
        print(f"{len(failed)} failed: {', '.join(i for i, _ in failed)}", flush=True)
        return cli.EXIT_USAGE if all(user for _, user in failed) else cli.EXIT_FAILURE
    return cli.EXIT_OK


def main(argv=None) -> int:
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
