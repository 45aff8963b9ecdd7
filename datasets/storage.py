"""The one storage module: atomic, pickle-free result files.

Every file the project writes goes through :func:`atomic_write` (write a temporary file
in the destination folder, flush and fsync it, then ``os.replace`` it over the final
name), so a crash mid-write never leaves a truncated or half-written result behind.

Result dictionaries are stored as ``.npz`` archives that load with
``allow_pickle=False`` (README decision 3 of the spec):

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
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

META_KEY = "__meta__"
FORMAT_VERSION = 1


class StorageError(ValueError):
    """A result file cannot be written or read as requested."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    if META_KEY not in npz:
        raise StorageError("missing metadata entry; not a file written by this project")
    meta = json.loads(str(npz[META_KEY][()]))
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
    return result, meta.get("attrs", {})


def save_result(path: str | os.PathLike, result: dict[str, Any], attrs: dict[str, Any] | None = None) -> None:
    """Atomically write ``result`` to ``path`` (an ``.npz`` file, no pickle)."""
    arrays = encode_result(result, attrs)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_result(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`save_result`. Returns ``(result, attrs)``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return decode_result(npz)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise StorageError(f"cannot read result file {path}: {exc}") from exc


def result_exists(path: str | os.PathLike) -> bool:
    return Path(path).is_file()


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON."""
    data = json.dumps(obj, indent=2, sort_keys=False, default=_json_default).encode()
    with atomic_write(path) as f:
        f.write(data + b"\n")


def load_json(path: str | os.PathLike) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


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
    """Read every array of an ``.npz`` file written by :func:`save_arrays`."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


class _KeyView:
    """An ``NpzFile`` seen through :func:`decode_result` with only some keys."""

    def __init__(self, npz, keys: Iterable[str] | None):
        self.npz = npz
        meta = json.loads(str(npz[META_KEY][()]))
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
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise StorageError("missing metadata entry; not a file written by this project")
            return decode_result(_KeyView(npz, keys))[0]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise StorageError(f"cannot read result file {path}: {exc}") from exc
