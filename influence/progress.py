"""The one progress policy of the suite (tqdm; no TensorFlow import).

Every long loop shows its progress through :func:`progress_bar` in one mode: ``bar`` (a
tqdm bar that disappears when done), ``log`` (one timestamped line on stderr at most every
``INFLUENCE_PROGRESS_INTERVAL`` seconds, default 30, and a last one at the end: what a job
writing to a file shows), ``off``, or ``auto`` (``bar`` on a terminal or in a Jupyter
kernel, else ``log``). :func:`set_mode` (the scripts' ``--progress``) exports it as
``INFLUENCE_PROGRESS`` for child processes; unset, it is ``auto``. A caller's
``progress=False`` turns one loop off.
"""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm as _plain_tqdm
from tqdm.auto import tqdm

MODES = ("auto", "bar", "log", "off")
MODE_ENV = "INFLUENCE_PROGRESS"
INTERVAL_ENV = "INFLUENCE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) | {rate_fmt} | {elapsed} elapsed, {remaining} left"
LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} done | {rate_fmt} | {elapsed} elapsed"


def set_mode(mode: str) -> None:
    """Use ``mode`` (one of :data:`MODES`) here and in child processes (``INFLUENCE_PROGRESS``)."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}; got {mode!r}")
    os.environ[MODE_ENV] = mode


def get_mode() -> str:
    """The configured mode (``INFLUENCE_PROGRESS``; ``auto`` when unset or not a mode)."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower()
    return mode if mode in MODES else "auto"


def log_interval() -> float:
    """Seconds between two log lines (``INFLUENCE_PROGRESS_INTERVAL``; 30 when unset or invalid)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


def effective_mode(progress: bool | None = None) -> str:
    """``bar``, ``log`` or ``off`` for one loop: off when ``progress`` is False, else the
    configured mode with ``auto`` resolved (bar on a terminal or in a notebook, else log)."""
    if progress is False:
        return "off"
    mode = get_mode()
    if mode == "auto":
        try:
            # A notebook kernel's stderr is ipykernel's stream (ipykernel merely being imported,
            # as by a test or a tool, is not a notebook).
            interactive = type(sys.stderr).__module__.startswith("ipykernel") or sys.stderr.isatty()
        except (AttributeError, ValueError):
            interactive = False
        return "bar" if interactive else "log"
    return mode


class _LineWriter:
    """A file for tqdm that turns each refresh (``\\r`` + status) into one timestamped line."""

    def __init__(self, stream=None):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line:
            stream = self.stream or sys.stderr
            stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} progress: {line}\n")
            stream.flush()

    def flush(self) -> None:
        (self.stream or sys.stderr).flush()


def progress_bar(iterable=None, desc: str = "", total: int | None = None, progress: bool | None = None,
                 stream=None, **kwargs):
    """A progress display of ``iterable`` following the policy (module docstring).

    Returns a tqdm object (iterate it, or call ``update(n)`` / ``close()``); ``kwargs`` go
    to tqdm (e.g. ``unit='B', unit_scale=True`` for downloads). ``stream``: where log lines
    go (default stderr).
    """
    mode = effective_mode(progress)
    if mode == "bar":
        return tqdm(iterable, desc=desc, total=total, leave=False, **kwargs)
    if mode == "off":
        return _plain_tqdm(iterable, desc=desc, total=total, disable=True, **kwargs)
    if total is None and iterable is not None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    interval = log_interval()
    return _plain_tqdm(iterable, desc=desc, total=total, file=_LineWriter(stream), leave=True, ascii=True,
                       mininterval=interval, maxinterval=max(interval, 1e-3), miniters=1, dynamic_ncols=False,
                       bar_format=LOG_FORMAT if total else LOG_FORMAT_NO_TOTAL, **kwargs)
