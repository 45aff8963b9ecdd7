"""The one storage module: atomic, pickle-free result files.

Every file the project writes goes through :func:`atomic_write` (write a temporary file
in the destination folder, flush and fsync it, then ``os.replace`` it over the final
name), so a crash mid-write never leaves a truncated or half-written result behind.

Result dictionaries are stored as ``.npz`` archives that load with
``allow_pickle=False``, so results are safe to load from others (see docs/design.md,
'Storage format'):

* numpy arrays and Python/numpy scalars are stored as arrays; 0-d arrays load back as
  Python scalars, as in the original framework;
* ragged lists (for example ``subset_indices``: a list of index arrays of different
  lengths) are stored as ``{key}__values`` and ``{key}__offsets`` (CSR style);
* lists of strings are stored as unicode arrays and load back as lists of ``str``;
* ``None`` is recorded in the metadata and loads back as ``None``;
* a JSON metadata entry ``__meta__`` records the kind of every key and free-form
  attributes (for example the hash of the config that produced the file).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import socket
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

META_KEY = "__meta__"
FORMAT_VERSION = 1


class StorageError(ValueError):
    """A result file cannot be written or read as requested."""


class CorruptFileError(StorageError):
    """A file exists but cannot be read back: truncated, overwritten, empty, random bytes,
    or not the kind of file expected (for example JSON that is not an object).

    Raised by every load function of this module (:func:`load_result`,
    :func:`load_result_keys`, :func:`load_arrays`, :func:`load_json`) for any damaged
    file; a missing file still raises :class:`FileNotFoundError` and an unreadable one
    (permissions) its :class:`OSError`. ``path`` is the file, ``reason`` says what is
    wrong with it. Callers treat a damaged result or cache as missing (recompute it) and
    a damaged settings file as a user error.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = str(reason)
        super().__init__(f"{self.path} is damaged: {self.reason}")

    def __reduce__(self):  # picklable across processes despite the two-argument __init__
        return (type(self), (self.path, self.reason))


# Errors that reading a damaged .npz / .json can raise (numpy, zipfile, zlib, json; the
# parser's RecursionError for JSON nested deeper than the interpreter's recursion limit).
# FileNotFoundError, PermissionError and IsADirectoryError are not damage and pass through.
_DAMAGE_ERRORS = (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, OSError, RecursionError)
_NOT_DAMAGE = (FileNotFoundError, PermissionError, IsADirectoryError)

# Temporary files of atomic_write: ".{name}.{host}.{pid}.{random}.tmp" in the destination
# folder, so that a later run can tell its own dead temporaries from live ones.
_TMP_SUFFIX = ".tmp"
TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_LEGACY_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's
STALE_TMP_AGE = 3600.0  # seconds without a write after which any temporary is dead


def host_name() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create ``path``'s temporary with mode 0o666 filtered by the umask (mkstemp would
    force 0o600: results shared on a cluster must be readable as the umask says)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{host_name()}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched. The file
    gets mode ``0o666 & ~umask`` like any file the user creates. A temporary left by a
    killed process is removed by :func:`remove_stale_temporaries`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def scratch_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file named like :func:`atomic_write`'s next to ``path`` (created empty),
    deleted when the body ends; a killed process's is removed by
    :func:`remove_stale_temporaries` like any other dead temporary. For data kept on disk
    only while a computation runs (phase 5's gradient matrix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, max_age: float = STALE_TMP_AGE) -> list[Path]:
    """Remove the dead temporaries :func:`atomic_write` left in ``folder`` (a killed writer).

    Only files named like ours (``.{name}.{host}.{pid}.{hex}.tmp``, and the older
    ``.{name}.{random}.tmp`` of ``mkstemp``) are considered. A temporary is dead when its
    writer was on this host and that process no longer exists, or, for any writer
    (another host sharing the folder, or an old name without a pid), when it has not been
    written for ``max_age`` seconds: a live writer writes continuously and renames within
    seconds, so a concurrent run's temporary is never removed. Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    host, now = host_name(), time.time()
    for tmp in folder.glob(f".*{_TMP_SUFFIX}"):
        ours, legacy = TMP_NAME.match(tmp.name), _LEGACY_TMP_NAME.match(tmp.name)
        if not (ours or legacy):
            continue
        try:
            age = now - tmp.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = age > max_age
        if ours and ours["host"] == host:
            pid = int(ours["pid"])
            dead = dead or (pid != os.getpid() and not _pid_alive(pid))
        if dead and tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _is_ragged_list(value: Any) -> bool:
    """A non-empty list whose items are all 1-D sequences (of any lengths)."""
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        return False
    return all(
        isinstance(v, (list, tuple, np.ndarray)) and not isinstance(v, str) and np.ndim(v) == 1
        for v in value
    )


def encode_result(result: dict[str, Any], attrs: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Turn a result dict into plain (non-object) arrays plus a JSON metadata entry."""
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for key, value in result.items():
        if not isinstance(key, str) or "__" in key:
            raise StorageError(f"result key {key!r}: keys must be str without '__' (reserved)")
        if value is None:
            kinds[key] = "none"
        elif isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value):
            kinds[key] = "str_list"
            arrays[key] = np.array(value, dtype=str)
        elif _is_ragged_list(value):
            parts = [np.asarray(v) for v in value]
            dtypes = {p.dtype for p in parts if p.size}
            dtype = np.result_type(*dtypes) if dtypes else np.int64
            kinds[key] = "ragged"
            lengths = np.array([p.size for p in parts], dtype=np.int64)
            arrays[f"{key}__offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            arrays[f"{key}__values"] = (
                np.concatenate([p.ravel() for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)
            )
        elif isinstance(value, (list, tuple)) and len(value) == 0:
            kinds[key] = "empty_list"
        else:
            arr = np.asarray(value)
            if arr.dtype == object:
                raise StorageError(
                    f"result key {key!r}: object arrays cannot be stored without pickle; "
                    "store a ragged list of arrays or a numeric/str array instead"
                )
            kinds[key] = "scalar" if arr.ndim == 0 else "array"
            arrays[key] = arr
    meta = {"format_version": FORMAT_VERSION, "kinds": kinds, "attrs": attrs or {}}
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def decode_result(npz: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of :func:`encode_result`. Returns ``(result, attrs)``."""
    meta = _read_meta(npz)
    result: dict[str, Any] = {}
    for key, kind in meta["kinds"].items():
        if kind == "none":
            result[key] = None
        elif kind == "empty_list":
            result[key] = []
        elif kind == "str_list":
            result[key] = [str(s) for s in npz[key]]
        elif kind == "ragged":
            values, offsets = npz[f"{key}__values"], npz[f"{key}__offsets"]
            result[key] = [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        elif kind == "scalar":
            result[key] = npz[key][()].item()
        else:
            result[key] = npz[key]
    return result, meta["attrs"]


_KINDS = ("none", "empty_list", "str_list", "ragged", "scalar", "array")


def _read_meta(npz: Any) -> dict[str, Any]:
    """The checked metadata entry of a result file (``ValueError`` if it is not one)."""
    if META_KEY not in npz:
        raise ValueError("missing metadata entry; not a result file written by this project")
    meta = json.loads(str(npz[META_KEY][()]))
    if not isinstance(meta, dict) or not isinstance(meta.get("kinds"), dict):
        raise ValueError("metadata entry is not a dict with 'kinds'")
    if any(kind not in _KINDS for kind in meta["kinds"].values()):
        raise ValueError(f"metadata names unknown kinds {sorted(set(meta['kinds'].values()))}")
    attrs = meta.setdefault("attrs", {})
    if not isinstance(attrs, dict):
        raise ValueError("metadata 'attrs' is not a dict")
    return meta


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any error of reading a damaged file into :class:`CorruptFileError`."""
    try:
        yield
    except _NOT_DAMAGE:
        raise
    except _DAMAGE_ERRORS as exc:
        raise CorruptFileError(path, f"{type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator[Any]:
    """``np.load(path)`` as an ``.npz`` archive without pickle; any damage met while the
    body reads it becomes :class:`CorruptFileError`."""
    with _reading(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] != b"PK":  # np.load would try pickle and suggest allow_pickle=True
            raise ValueError("empty file" if not head else f"not an .npz archive (starts with {head!r})")
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with npz:
            yield npz


def result_digest(result: dict[str, Any]) -> str:
    """A digest of ``result``'s content as :func:`save_result` stores it (keys, kinds,
    dtypes, shapes and bytes): equal for bitwise-equal results, whatever the run."""
    h = hashlib.sha256()
    for key, arr in sorted(encode_result(result).items()):
        a = np.ascontiguousarray(arr)
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def save_result(path: str | os.PathLike, result: dict[str, Any], attrs: dict[str, Any] | None = None) -> None:
    """Atomically write ``result`` to ``path`` (an ``.npz`` file, no pickle)."""
    arrays = encode_result(result, attrs)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_result(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`save_result`. Returns ``(result, attrs)``."""
    path = Path(path)
    with _open_npz(path) as npz:
        return decode_result(npz)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON."""
    data = json.dumps(obj, indent=2, sort_keys=False, default=_json_default).encode()
    with atomic_write(path) as f:
        f.write(data + b"\n")


def load_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """Read a JSON file; :class:`CorruptFileError` if it is not valid UTF-8 JSON or, with
    ``expect`` (e.g. ``dict``), if the value is not of that type."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    with _reading(path):
        obj = json.loads(data)
    if expect is not None and not isinstance(obj, expect):
        raise CorruptFileError(path, f"expected a JSON {expect.__name__}, found {type(obj).__name__}")
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def normalise_json(obj: Any) -> Any:
    """The value ``obj`` takes after a JSON round trip (tuples become lists, ...)."""
    return json.loads(json.dumps(obj, default=_json_default))


def config_hash(config: dict[str, Any]) -> str:
    """A stable digest of a JSON-serialisable config."""
    blob = json.dumps(normalise_json(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_arrays(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> None:
    """Atomically write plain numeric/str arrays (dataset caches). No pickle."""
    for key, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise StorageError(f"array {key!r}: object arrays cannot be stored without pickle")
    with atomic_write(path) as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file written by :func:`save_arrays`
    (:class:`CorruptFileError` if the file is damaged)."""
    with _open_npz(Path(path)) as npz:
        return {k: npz[k] for k in npz.files}


class _KeyView:
    """An ``NpzFile`` seen through :func:`decode_result` with only some keys."""

    def __init__(self, npz, keys: Iterable[str] | None):
        self.npz = npz
        meta = _read_meta(npz)
        if keys is not None:
            wanted = set(keys)
            meta["kinds"] = {k: v for k, v in meta["kinds"].items() if k in wanted}
        self.meta = np.array(json.dumps(meta))

    def __contains__(self, key):
        return key == META_KEY or key in self.npz.files

    def __getitem__(self, key):
        return self.meta if key == META_KEY else self.npz[key]


def load_result_keys(path: str | os.PathLike, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The ``keys`` present in a result file of :mod:`datasets.storage` (no pickle)."""
    with _open_npz(Path(path)) as npz:
        return decode_result(_KeyView(npz, keys))[0]
