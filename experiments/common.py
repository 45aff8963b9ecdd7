"""The experiment framework (see docs/design.md, 'Storage format' and
docs/design.md, 'Run ids and configs').

An :class:`Experiment` has a fixed ``experiment_id`` and a ``run_id`` derived from its
config; its results live in ``{out_dir}/{experiment_id}/{run_id}/``. Methods decorated
with :func:`phase` run in increasing index order; each returns a dict saved as
``result_{index}-{name}.npz`` (atomically, without pickle: see
:mod:`datasets.storage`). All results are merged into the flat dict ``self.R``.

Differences from the original, each a fix of one of its quirks or bugs:

* The config is saved as ``config.json``. A rerun whose saved config differs (in a key
  that can change results) refuses with :class:`ConfigMismatchError` unless
  ``force_refresh`` is given; each phase file also records the hash of the config that
  produced it and is recomputed if it does not match.
* Once a phase is recomputed, every later phase is recomputed too, so a result is never
  combined with stale results of the phases it depends on (the original reloaded any
  file that existed). This survives crashes: the later phase files are deleted before
  the recomputed phase is written, and each phase file records the ids of the phase files
  it was computed from (``inputs``; an id is a digest of the file's config, inputs and
  content), so a file whose inputs have changed since is recomputed, never reused.
* A damaged phase file (truncated, overwritten, empty) is treated as missing: a warning
  names it and the phase is recomputed. A damaged ``config.json`` stops the run with
  :class:`ConfigFileError`, which names the file and the way out (``--force-refresh``).
* Temporary files that a killed run left in the run folder are removed by the next run.
* In "no intermediate results" (master-only) mode no phase file is read, so stale files
  of an earlier run cannot override fresh in-memory results.
* ``load_phases`` looks phases up by their index, not by list position.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from datasets import storage
from datasets.loader import load_dataset

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = REPO_ROOT / "output"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "result_summary.npz"

# Config keys that never change results (operational settings); they are saved but
# ignored when deciding whether saved results can be reused. ``max_memory`` is not one:
# it sets the chunk sizes of the batched refits and products, whose sums then round
# differently (last bits), so a run resumed with another --max-memory is refused like
# any other config change (see docs/design.md, 'Run ids and configs').
OPERATIONAL_KEYS = ("master_only", "progress", "num_workers", "scheduler")


class ConfigError(ValueError):
    """A flag or config value that the experiment cannot run with (the one config error of
    every experiment; scripts turn it into a one-line message and exit code 2)."""


class ConfigMismatchError(ValueError):
    """A run folder holds results computed under a different config."""


class ConfigFileError(ConfigMismatchError):
    """A run folder's ``config.json`` is damaged, so its results cannot be trusted."""


class OutputDirError(ValueError):
    """The run folder (under ``--out-dir``) cannot be created or written."""


class PhaseError(RuntimeError):
    """A phase is missing or returned something that is not a dict."""


@dataclass(frozen=True)
class ExperimentPhase:
    name: str
    index: int
    deps: tuple
    method: Callable


def phase(index: int, deps: Sequence[int] = ()):
    """Mark a method as phase ``index``. ``deps`` is recorded for documentation only."""

    def decorator(fn):
        fn._phase = (int(index), tuple(deps))
        return fn

    return decorator


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of ``config`` that can change results (operational keys removed; also where
    the data live: ``data_dir``, and ``dataset_file``, whose content hash is kept)."""
    cfg = storage.normalise_json(config)

    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items()
                    if k not in OPERATIONAL_KEYS and k not in ("data_dir", "dataset_file")}
        return d

    return strip(cfg)


class Experiment:
    """Base class of every experiment; subclasses set ``experiment_id`` and ``run_id``."""

    experiment_id: str = ""

    def __init__(self, config: dict[str, Any], out_dir: str | Path | None = None):
        self.config = storage.normalise_json(config)
        if out_dir is not None and str(out_dir) == "":
            raise OutputDirError("--out-dir is an empty string; give a folder (default: <repo>/output)")
        self.out_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
        self.R: dict[str, Any] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self.PHASES = self._collect_phases()

    @classmethod
    def _collect_phases(cls) -> list[ExperimentPhase]:
        phases = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                if callable(member) and hasattr(member, "_phase"):
                    index, deps = member._phase
                    phases[name] = ExperimentPhase(name, index, deps, member)
        ordered = sorted(phases.values(), key=lambda p: p.index)
        indices = [p.index for p in ordered]
        if len(set(indices)) != len(indices):
            raise PhaseError(f"{cls.__name__}: duplicate phase indices {indices}")
        return ordered

    # ------------------------------------------------------------------ paths
    @property
    def run_id(self) -> str:
        raise NotImplementedError

    @property
    def base_dir(self) -> Path:
        return self.out_dir / self.experiment_id / self.run_id

    def phase_path(self, ph: ExperimentPhase) -> Path:
        return self.base_dir / f"result_{ph.index}-{ph.name}.npz"

    @property
    def config_path(self) -> Path:
        return self.base_dir / CONFIG_FILE

    @property
    def summary_path(self) -> Path:
        return self.base_dir / SUMMARY_FILE

    @property
    def config_hash(self) -> str:
        return storage.config_hash(result_config(self.config))

    def get_phase(self, index: int) -> ExperimentPhase:
        for ph in self.PHASES:
            if ph.index == index:
                return ph
        raise PhaseError(f"{type(self).__name__} has no phase {index}; phases are "
                         f"{[p.index for p in self.PHASES]}")

    # ------------------------------------------------------------ config guard
    def check_config(self, force_refresh: bool = False) -> None:
        """Refuse to mix results of different configs in one run folder."""
        path = self.config_path
        if path.is_file() and not force_refresh:
            saved = _read_config(path, "rerun with --force-refresh to recompute the run and overwrite it, "
                                       "or use another --out-dir")
            if result_config(saved) != result_config(self.config):
                diff = _dict_diff(result_config(saved), result_config(self.config))
                raise ConfigMismatchError(
                    f"{path} holds results computed under a different config ({diff}); "
                    "rerun with --force-refresh to recompute and overwrite them, or use another "
                    "--out-dir")
        try:
            storage.save_json(path, self.config)
        except OSError as exc:
            raise OutputDirError(f"cannot write {path} (--out-dir {self.out_dir}): {exc.strerror or exc}") from exc

    def check_inputs(self) -> None:
        """Hook: validate the experiment's inputs before the run folder is written
        (:class:`DatasetMixin` loads its datasets, which the loader checks)."""

    def prepare_run_folder(self) -> None:
        """Create the run folder and remove the temporaries a killed run left in it (and in
        the folders of :meth:`scratch_dirs`)."""
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(f"cannot create the run folder {self.base_dir} (--out-dir {self.out_dir}): "
                                 f"{exc.strerror or exc}") from exc
        for folder in (self.base_dir, *self.scratch_dirs()):
            for tmp in storage.remove_stale_temporaries(folder):
                logger.warning("removed %s, a temporary file left by a run that was killed while saving", tmp)

    def scratch_dirs(self) -> list[Path]:
        """Hook: other folders this experiment writes through :func:`datasets.storage.atomic_write`
        (caches shared by runs), cleaned of dead temporaries like the run folder."""
        return []

    def before_phases(self) -> None:
        """Hook: run after the inputs, the run folder and the config were checked and before
        the first phase (an experiment's Dask cluster starts here, so input errors come first)."""

    def save_file(self, path: Path, save: Callable[[], None]) -> None:
        """``save()``, which writes ``path``; a file system error (the run folder made
        unwritable, a folder where the file should be, a full disk) becomes
        :class:`OutputDirError` naming the file."""
        try:
            save()
        except OSError as exc:
            raise OutputDirError(f"cannot write {path} (--out-dir {self.out_dir}): {exc.strerror or exc}; make "
                                 "the run folder writable (or free space) and rerun to resume, or use another "
                                 "--out-dir") from exc

    def check_result_path(self, path: Path) -> None:
        """:class:`OutputDirError` if something other than a file stands at a result file's path."""
        if path.exists() and not path.is_file():
            raise OutputDirError(f"{path} is not a file (a folder?); a result file of the run goes there: "
                                 f"remove it, or use another --out-dir")

    # ------------------------------------------------------------------ run
    def run(self, force_refresh: bool = False, invalidate_phase: int | None = None,
            save_phase_results: bool = True) -> dict[str, Any]:
        """Run every phase in order, reusing saved results where valid.

        ``force_refresh`` recomputes everything; ``invalidate_phase=k`` recomputes
        phases with index >= k; ``save_phase_results=False`` (master-only mode) neither
        reads nor writes phase files.
        """
        if invalidate_phase is not None and int(invalidate_phase) != invalidate_phase:
            raise ValueError(f"invalidate_phase must be an integer; got {invalidate_phase!r}")
        self.check_inputs()  # bad data stop the run before anything is written
        self.prepare_run_folder()
        self.check_config(force_refresh)
        for path in [self.summary_path] + [self.phase_path(ph) for ph in self.PHASES if save_phase_results]:
            self.check_result_path(path)
        if force_refresh and self.summary_path.exists():
            self.save_file(self.summary_path, self.summary_path.unlink)
        self.before_phases()
        recompute_rest = bool(force_refresh)
        inputs: dict[str, str | None] = {}  # phase index -> id of the file this run used
        for ph in self.PHASES:
            path = self.phase_path(ph)
            invalid = invalidate_phase is not None and ph.index >= invalidate_phase
            loaded = None
            if save_phase_results and not recompute_rest and not invalid and path.is_file():
                loaded = self._load_phase_file(ph, inputs)
            if loaded is None:
                recompute_rest = True
                result = self._compute_phase(ph)
                phase_id = self._phase_id(ph, result, inputs) if save_phase_results else None
                if save_phase_results:
                    # Later files were computed from the old version of this phase: delete
                    # them first, so that a crash from here on cannot leave them to be reused.
                    attrs = {"config_hash": self.config_hash, "phase": ph.name, "index": ph.index,
                             "seconds": self.timings.get(ph.name), "phase_id": phase_id, "inputs": dict(inputs)}

                    def write(ph=ph, path=path, result=result, attrs=attrs):
                        self._delete_later_phase_files(ph)
                        storage.save_result(path, result, attrs)

                    self.save_file(path, write)
            else:
                result, phase_id = loaded
                logger.info("phase %d %s: loaded %s", ph.index, ph.name, path)
            inputs[str(ph.index)] = phase_id
            self._merge(ph, result)
        return self.R

    def _phase_id(self, ph: ExperimentPhase, result: dict[str, Any], inputs: dict[str, str | None]) -> str:
        """The id a phase file records: a digest of its config, inputs and content, so that
        a bitwise-identical recomputation keeps the id (and files are reproducible)."""
        blob = json.dumps([self.config_hash, ph.index, ph.name, inputs, storage.result_digest(result)],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _delete_later_phase_files(self, ph: ExperimentPhase) -> None:
        for later in self.PHASES:
            if later.index > ph.index:
                path = self.phase_path(later)
                if path.is_file():
                    path.unlink()
                    logger.info("phase %d %s: deleted %s (computed from the previous phase %d)",
                                later.index, later.name, path.name, ph.index)

    def _compute_phase(self, ph: ExperimentPhase) -> dict[str, Any]:
        logger.info("phase %d %s: computing", ph.index, ph.name)
        t0 = time.perf_counter()
        result = ph.method(self)
        if result is None:
            result = {}
        if not isinstance(result, dict):
            raise PhaseError(f"phase {ph.name} returned {type(result).__name__}, expected dict")
        self.timings[ph.name] = time.perf_counter() - t0
        logger.info("phase %d %s: done in %.2f s", ph.index, ph.name, self.timings[ph.name])
        released = release_free_memory()
        if released:
            logger.debug("phase %d %s: %.2f GB of freed memory returned to the system", ph.index, ph.name,
                        released / 1e9)
        return result

    def _load_phase_file(self, ph: ExperimentPhase,
                         inputs: dict[str, str | None]) -> tuple[dict[str, Any], str | None] | None:
        """``(result, phase_id)`` of a reusable phase file, or ``None`` (recompute).

        Reusable means: readable, computed under this config, and computed from exactly
        the earlier phase files this run used (``inputs``; files written before phase ids
        existed carry none and are reusable only after other such files).
        """
        path = self.phase_path(ph)
        try:
            result, attrs = storage.load_result(path)
        except storage.StorageError as exc:
            logger.warning("phase %d %s: %s; treating it as missing and recomputing", ph.index, ph.name, exc)
            return None
        if attrs.get("config_hash") != self.config_hash:
            logger.warning("phase %d %s: %s was computed under another config; recomputing",
                           ph.index, ph.name, path)
            return None
        if attrs.get("index", ph.index) != ph.index:
            logger.warning("phase %d %s: %s holds phase %s; recomputing", ph.index, ph.name, path,
                           attrs.get("index"))
            return None
        recorded = attrs.get("inputs", {k: None for k in inputs})
        if recorded != inputs:
            stale = sorted((int(k) for k in set(recorded) | set(inputs) if recorded.get(k) != inputs.get(k)))
            logger.warning("phase %d %s: %s was computed from an earlier version of phase(s) %s; "
                           "recomputing", ph.index, ph.name, path, stale)
            return None
        return result, attrs.get("phase_id")

    def _merge(self, ph: ExperimentPhase, result: dict[str, Any]) -> None:
        self.results[ph.name] = result
        self.R.update(result)

    def load_phases(self, phase_indices: Iterable[int] | None = None, verbose: bool = False) -> None:
        """Load saved phase results (all phases, or those with the given indices).

        A damaged file raises :class:`datasets.storage.CorruptFileError` naming it (rerun
        the experiment to recompute it); with ``verbose`` each loaded file is printed.
        """
        indices = [p.index for p in self.PHASES] if phase_indices is None else list(phase_indices)
        for index in indices:
            ph = self.get_phase(index)
            path = self.phase_path(ph)
            if not path.is_file():
                raise FileNotFoundError(f"phase {index} ({ph.name}) has no result file {path}")
            result, _ = storage.load_result(path)
            if verbose:
                print(f"Loaded {path}")
            self._merge(ph, result)

    def run_from_cli(self, force_refresh: bool = False, invalidate_phase: int | None = None,
                     no_intermediate_results: bool = False) -> dict[str, Any]:
        """The scripts' run: every phase with its result file, or, with
        ``no_intermediate_results``, master-only mode that writes only the summary of
        :meth:`summary_keys` (which such an experiment defines)."""
        if no_intermediate_results:
            self.run(force_refresh, invalidate_phase, save_phase_results=False)
            self.save_summary(self.summary_keys())
        else:
            self.run(force_refresh, invalidate_phase)
        return self.R

    # -------------------------------------------------------------- summary
    def save_summary(self, keys: Sequence[str]) -> Path:
        """Write the keys of ``R`` that are present to ``result_summary.npz``."""
        summary = {k: self.R[k] for k in keys if k in self.R}
        self.check_result_path(self.summary_path)
        self.save_file(self.summary_path, lambda: storage.save_result(
            self.summary_path, summary, {"config_hash": self.config_hash, "keys": list(keys)}))
        return self.summary_path

    @classmethod
    def load_run(cls, run_id: str, out_dir: str | Path | None = None,
                 phase_indices: Iterable[int] | None = None, verbose: bool = False) -> "Experiment":
        """Reload a finished run: its config and results (no data is loaded until used).

        The original's notebook API: ``E = SubsetInfluenceLogreg.load_run(run_id,
        out_dir=..., phase_indices=[0, 7, 8], verbose=False)``, then ``E.R``,
        ``E.config``, ``E.num_train``. Master-only runs load ``result_summary.npz`` and
        ignore ``phase_indices``. ``verbose`` prints each file loaded.
        """
        out_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT_DIR
        base = out_dir / cls.experiment_id / run_id
        cfg_path = base / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no run {run_id!r} of {cls.experiment_id!r}: {cfg_path} does not exist")
        config = _read_config(cfg_path, "rerun the experiment with --force-refresh to recompute it")
        exp = cls.__new__(cls)
        Experiment.__init__(exp, config, out_dir)
        exp._loaded_run_id = run_id
        if config.get("master_only"):
            if not exp.summary_path.is_file():
                raise FileNotFoundError(f"master-only run without summary: {exp.summary_path}")
            exp.R, _ = storage.load_result(exp.summary_path)
            if verbose:
                print(f"Loaded {exp.summary_path}")
        else:
            exp.load_phases(phase_indices, verbose=verbose)
        return exp


def _read_config(path: Path, way_out: str) -> dict[str, Any]:
    """A run folder's saved config; :class:`ConfigFileError` naming the file if damaged."""
    try:
        return storage.load_json(path, expect=dict)
    except storage.CorruptFileError as exc:
        raise ConfigFileError(f"{path} is damaged ({exc.reason}), so the results next to it cannot be "
                              f"checked; {way_out}") from exc


def _dict_diff(a: dict, b: dict, prefix: str = "") -> str:
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = _dict_diff(va, vb, f"{prefix}{k}.")
            if sub:
                diffs.append(sub)
        elif va != vb:
            diffs.append(f"{prefix}{k}: saved {va!r}, now {vb!r}")
    return "; ".join(diffs)


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux ``/proc/self/statm``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> int | None:
    """Return the process's freed heap memory to the system (glibc's ``malloc_trim(0)``).

    Memory that NumPy and TensorFlow free below glibc's mmap threshold stays in the
    allocator's arenas and counts as resident until it is reused; a long phase (many
    fits on fold arrays) leaves gigabytes of it, which later phases cannot use for their
    own large arrays. Trimming changes no result. Called after every phase; returns the
    resident bytes released (None where there is no glibc or no ``/proc``)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):   # not glibc (macOS, musl): nothing to do
        return None
    before = resident_bytes()
    trim(0)
    after = resident_bytes()
    return None if before is None or after is None else max(before - after, 0)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in blocks of ``size``."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1; got {size}")
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def collate_results(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-chunk result dicts collated as in the original task queue: 1-D arrays are
    concatenated, others stacked along the first axis; lists are concatenated
    (:meth:`experiments.execution.Executor.map_chunks`)."""
    if not outs:
        return {}
    keys = set(outs[0])
    for o in outs[1:]:
        if set(o) != keys:
            raise PhaseError(f"chunk results have different keys: {sorted(keys)} vs {sorted(o)}")
    collated = {}
    for k in outs[0]:
        vals = [o[k] for o in outs]
        if isinstance(vals[0], list):
            collated[k] = [v for part in vals for v in part]
        else:
            arrs = [np.asarray(v) for v in vals]
            collated[k] = np.concatenate(arrs) if arrs[0].ndim == 1 else np.concatenate(arrs, axis=0)
    return collated


def py2_float_str(x: float) -> str:
    """Python 2.7 ``str(float)``: 12 significant digits (the original's run ids were built with it).

    Used in run ids, tags and plot subtitles so that run ids equal the original's for
    every value (e.g. ``1e-07``, ``0.0001``, ``1.0``, ``1e+11``, ``0.3`` for 0.1+0.2).
    """
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "-0.0" if str(x).startswith("-") else "0.0"
    s = f"{x:.11e}"  # 12 significant digits
    mantissa, exp = s.split("e")
    e = int(exp)
    if e < -4 or e >= 11:
        m = mantissa.rstrip("0").rstrip(".")
        return f"{m}e{'-' if e < 0 else '+'}{abs(e):02d}"
    digits = max(11 - e, 0)
    fixed = f"{float(s):.{digits}f}".rstrip("0")
    return fixed + "0" if fixed.endswith(".") else fixed


@contextlib.contextmanager
def benchmark(task: str):
    """Context manager printing ``"{task}..."`` on entry and ``"{task} took {t} seconds."`` on a
    normal exit (nothing more if the block raises). The original's timing helper, kept for
    code written against it; this suite's phases record their times in ``Experiment.timings``."""
    print(f"{task}...", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"{task} took {time.perf_counter() - t0} seconds.", flush=True)


class DatasetMixin:
    """Lazy access to the datasets named by ``config["dataset_config"]``, loaded once.

    Experiments that read a registered dataset inherit ``datasets``, ``train``, ``test``
    and ``data_dir``; :meth:`load_datasets` is the hook for a conversion on load.
    """

    _datasets = None

    @property
    def dataset_id(self) -> str:
        """The id of the dataset of ``config["dataset_config"]``."""
        return self.config["dataset_config"]["dataset_id"]

    def load_datasets(self):
        return load_dataset(**self.config["dataset_config"])

    def check_inputs(self) -> None:
        """Load (and so check: :func:`datasets.common.validate_datasets`) the datasets."""
        _ = self.datasets

    @property
    def datasets(self):
        if self._datasets is None:
            self._datasets = self.load_datasets()
        return self._datasets

    @property
    def train(self):
        return self.datasets.train

    @property
    def test(self):
        return self.datasets.test

    @property
    def data_dir(self):
        return self.config["dataset_config"]["data_dir"]
