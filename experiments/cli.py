"""The command-line skeleton every script in ``scripts/`` uses.

One parser class, one set of run flags, one ``main`` wrapper (:func:`run_cli`) that turns
what went wrong into a documented exit code and, unless ``--debug`` is given, one line:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     an unexpected failure (a bug or the machine: rerun with ``--debug``)
2     a usage or input error: a bad flag (argparse), :class:`ConfigError`,
      :class:`ConfigMismatchError` (including a damaged ``config.json``), an
      unwritable ``--out-dir`` or run folder (or a folder where a result file goes),
      an unusable ``--data-dir``, missing, damaged or badly scaled data, group sizes,
      a Dask cluster that cannot be reached or cannot import the project
3     the run finished but at least one exact refit was not certified (its
      gradient norm is above the tolerance; the results are saved)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from typing import Any, Callable, Sequence

import numpy as np

from datasets import storage
from datasets.download import DownloadError
from experiments import execution
from experiments.common import ConfigError, ConfigMismatchError, OutputDirError
from influence import progress as progress_policy

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNCERTIFIED = 3
EXIT_INTERRUPTED = 130

# Errors that mean "the user's input is wrong" (exit 2). Every exception class defined in
# the datasets package is one too (missing, damaged or malformed data): see is_user_error.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ConfigMismatchError, OutputDirError,
                                                storage.StorageError, DownloadError)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger(__name__)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and ends every option's help with its default
    (unless the help already states it, or the flag is a switch that is off by default),
    or with "(required)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)"
        if ("default" in text.lower() or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS
                or action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction)):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with the script's docstring as description, ``--debug`` and
    ``--progress`` flags, every default in the help, and usage errors reported in one line
    (exit 2) instead of the usage block. A subcommand's parser (``subcommand=True``) has
    them too, without defaults of its own, so that they may come before or after the
    subcommand."""

    def __init__(self, description: str | None = None, subcommand: bool = False, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(description=description, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if subcommand else False,
                          help="show the full traceback of any error (and debug logging)")
        self.add_argument("--progress", choices=progress_policy.MODES,
                          default=argparse.SUPPRESS if subcommand else "auto",
                          help="progress of long work: bar (a terminal), log (a line at most every 30 s: "
                               "done/total, rate, time left), off, or auto: bar on a terminal, else log; "
                               "child processes follow it (default: auto)")

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class RefusedFlag(argparse.Action):
    """A flag this script accepts from the original's command line but does not use:
    giving it is a usage error naming why (exit 2), so that nobody believes it acted."""

    def __init__(self, option_strings, dest, reason: str = "", **kwargs):
        self.reason = reason
        kwargs.setdefault("help", f"not used here ({reason}); giving it is an error")
        super().__init__(option_strings, dest, nargs=None, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not used by this script ({self.reason}); leave it out")


def add_refused_flag(p: argparse.ArgumentParser, flag: str, reason: str) -> None:
    """``flag`` (of the original's command line) refused with ``reason``; see :class:`RefusedFlag`."""
    p.add_argument(flag, action=RefusedFlag, reason=reason, metavar="VALUE")


def add_no_progress_flag(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: the earlier spelling of ``--progress off``."""
    p.add_argument("--no-progress", dest="progress", action="store_const", const="off",
                   help="same as --progress off")


def add_run_flags(p: argparse.ArgumentParser, *, data_dir: bool = True, worker: bool = True,
                  no_intermediate_results: bool = True, max_memory_help: str = "bytes",
                  max_memory_default: Any = int(1e9), max_memory_unused: str | None = None) -> None:
    """The original's flags shared by the experiment scripts, with their defaults.

    ``max_memory_unused``: why ``--max-memory`` does nothing in this script; it is then
    refused (:class:`RefusedFlag`) and the config records the default.
    """
    if data_dir:
        p.add_argument("--data-dir", type=str, default=None, help="data folder (default: <repo>/data)")
    p.add_argument("--out-dir", type=str, default=None, help="results folder (default: <repo>/output)")
    if max_memory_unused:
        add_refused_flag(p, "--max-memory", max_memory_unused)
        p.set_defaults(max_memory=max_memory_default)
    else:
        p.add_argument("--max-memory", type=int, default=max_memory_default, help=max_memory_help)
    p.add_argument("--force-refresh", action="store_true", help="recompute every phase")
    if no_intermediate_results:
        p.add_argument("--no-intermediate-results", action="store_true",
                       help="run in memory and save only result_summary.npz (no phase files)")
    p.add_argument("--invalidate", type=int, default=None, metavar="PHASE",
                   help="recompute the phases with index >= PHASE (default: none)")
    if worker:
        p.add_argument("--worker", action="store_true",
                       help="print the `dask worker` command that replaces the original's file-based "
                            "queue worker, and exit (to start local workers use --num-workers)")
    add_no_progress_flag(p)
    add_execution_flags(p)


def add_execution_flags(p: argparse.ArgumentParser) -> None:
    """``--num-workers`` (alias ``--workers``) / ``--scheduler-address``: where per-group and per-fit work runs
    (:mod:`experiments.execution`; embedded in this process by default). Operational: they
    change neither run ids nor results."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--num-workers", "--workers", dest="workers", type=int, default=None, metavar="N",
                   help="run per-group and per-fit work on a local Dask cluster of N worker processes "
                        "(default: in this process)")
    g.add_argument("--scheduler-address", type=str, default=None, metavar="tcp://HOST:PORT",
                   help="run per-group and per-fit work on an existing Dask cluster (default: "
                        "$DASK_SCHEDULER_ADDRESS if set, else in this process)")


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports bad input (exit 2) rather than a failure (exit 1)."""
    return isinstance(exc, USER_ERRORS) or type(exc).__module__.split(".")[0] == "datasets"


def _first_line(exc: BaseException) -> tuple[str, bool]:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__), len(lines) > 1


def configure_logging(debug: bool = False, level: int = logging.INFO) -> None:
    """Log to stderr (``level``, or DEBUG with ``--debug``); TensorFlow's Python logger quiet."""
    logging.basicConfig(level=logging.DEBUG if debug else level, format=LOG_FORMAT)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    for noisy in ("matplotlib", "PIL", "h5py", "numba", "asyncio", "traitlets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
            argv: Sequence[str] | None = None, configure: bool = True, log_level: int = logging.INFO) -> int:
    """Parse ``argv``, run ``body(args)`` and return the exit code (see the module docstring).

    With ``--worker`` (kept from the original), it prints the ``dask worker`` command for
    ``--scheduler-address`` (:func:`experiments.execution.worker_notice`) and returns 0.
    ``body`` returns an exit code (``None`` means 0); logging goes to stderr at
    ``log_level`` unless ``configure`` is false. Usage errors return 2, user errors
    print ``error: <one line>`` and return 2, other exceptions print one line and return 1;
    with ``--debug`` the traceback is printed as well.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    if getattr(args, "progress", None) is not None:
        progress_policy.set_mode(args.progress)
    if configure:
        configure_logging(debug, log_level)
    if getattr(args, "worker", False):  # the original's queue worker is a `dask worker` now
        print(execution.worker_notice(getattr(args, "scheduler_address", None)))
        return EXIT_OK
    try:
        code = body(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that maps every error to an exit code
        line, more = _first_line(exc)
        if debug:
            traceback.print_exc()
        user = is_user_error(exc)
        hint = "" if debug else (" (more with --debug)" if more else "")
        if user:
            print(f"error: {line}{hint}", file=sys.stderr)
            return EXIT_USAGE
        print(f"error: unexpected failure: {type(exc).__name__}: {line}"
              f"{'' if debug else ' (rerun with --debug for the traceback)'}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if code is None else int(code)


def certificate(R: dict[str, Any]) -> tuple[np.ndarray, int]:
    """``(ratios, exit_code)`` of the exact refits of a run: ``||grad|| / tol`` per group
    and 0 if every refit is certified (ratio <= 1), else 3."""
    ratio = np.asarray(R["subset_refit_grad_norm"], dtype=float) / np.asarray(R["subset_refit_grad_tol"], dtype=float)
    ok = bool(np.all(ratio <= 1))
    if not ok:
        bad = ratio[~(ratio <= 1)]
        logger.warning("%d of %d exact refits are not certified (worst ||grad||/tol = %.2e); exit code %d",
                       bad.size, ratio.size, np.max(bad), EXIT_UNCERTIFIED)
    return ratio, EXIT_OK if ok else EXIT_UNCERTIFIED


def progress_of(args) -> bool | None:
    """The experiments' ``progress`` setting: False for ``--progress off`` (or
    ``--no-progress``), else None (the policy of :mod:`influence.progress` decides)."""
    return False if getattr(args, "progress", None) == "off" else None


def add_cv_flags(p: argparse.ArgumentParser) -> None:
    """``--cv-range`` and ``--cv-folds`` of the application experiments (project additions)."""
    p.add_argument("--cv-range", type=float, nargs=3, default=None, metavar=("LOW", "HIGH", "NUM"),
                   help="cross-validation grid of lambda/n: NUM log-spaced values from LOW to HIGH (default: "
                        "1e-4 1e-1 10, as in the original)")
    p.add_argument("--cv-folds", type=int, default=5, help="contiguous cross-validation folds (default: 5)")


def cv_settings(args) -> dict[str, Any]:
    """``build_config`` keywords of :func:`add_cv_flags`."""
    kw: dict[str, Any] = {"cross_validation_folds": args.cv_folds}
    if args.cv_range is not None:
        kw["cross_validation_range"] = tuple(args.cv_range)
    return kw


def run_experiment(cls, config: dict[str, Any], args, details: Callable[[dict[str, Any]], str],
                   after: Callable[[Any], None] | None = None, certified: bool = True, **kwargs: Any) -> int:
    """Run one experiment the way every script does, and report it in one line.

    Builds ``cls(config + --workers/--scheduler-address, out_dir=--out-dir,
    progress=--progress, **kwargs)``, runs its phases (phase files, or
    ``result_summary.npz`` only with ``--no-intermediate-results``), calls ``after(exp)``
    (e.g. plots), and prints ``{experiment_id} done: {run folder} | {details(R)} | refit
    certificate: k/n certified (worst ||grad||/tol = r) | wall time t s``. Returns the exit
    code: 0, or 3 when a refit is not certified (``certified=False``: no refits to check).
    """
    t0 = time.perf_counter()
    exp = cls({**config, **execution.settings_from_args(args)}, out_dir=args.out_dir, progress=progress_of(args),
              **kwargs)
    exp.run_from_cli(args.force_refresh, args.invalidate, getattr(args, "no_intermediate_results", False))
    if after is not None:
        after(exp)
    R = exp.R
    line = f"{exp.experiment_id} done: {exp.base_dir} | {details(R)}"
    code = EXIT_OK
    if certified:
        ratio, code = certificate(R)
        line += (f" | refit certificate: {int((ratio <= 1).sum())}/{ratio.size} certified "
                 f"(worst ||grad||/tol = {ratio.max():.2e})")
    print(f"{line} | wall time {time.perf_counter() - t0:.1f} s")
    return code
