"""Read the two third-party pickle formats the datasets come in, without running code.

Two raw inputs are pickles we do not produce: the CIFAR-10 "python version" batches
(dicts of ``b'data'``/``b'labels'``) and object arrays inside the MultiNLI bundle's
``.npz`` files (``genres`` and, from the original code,
``ids`` are per-split lists). ``pickle.load`` on such files would execute any callable a
tampered file names. :class:`RestrictedUnpickler` instead resolves only the few globals
needed to rebuild numpy arrays, dtypes and scalars (plus ``_codecs.encode``, which
Python 3 uses to pickle ``bytes`` at protocol 2); anything else raises
:class:`UnsafePickleError`. The project's own caches never use pickle.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from typing import IO, Any

import numpy as np

logger = logging.getLogger(__name__)

# (module, name) pairs a data pickle may reference. numpy 1.x pickles name
# ``numpy.core.*``, numpy 2.x ``numpy._core.*``; Python 2 pickles name ``copy_reg``.
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that a data file has no reason to contain."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes, scalars and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        canonical = module
        if module.startswith("numpy.core"):
            canonical = "numpy._core" + module[len("numpy.core"):]
        elif module == "copy_reg":  # Python 2 name
            canonical = "copyreg"
        elif module == "__builtin__":
            canonical = "builtins"
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a data file should only contain "
                "numpy arrays, numbers, strings and containers"
            )
        return super().find_class(canonical, name)


def load_pickle(f: IO[bytes], encoding: str = "bytes") -> Any:
    """Unpickle a data object from an open binary file with :class:`RestrictedUnpickler`.

    ``encoding='bytes'`` keeps Python 2 ``str`` objects as ``bytes`` (the CIFAR-10 keys
    are ``b'data'``, ``b'labels'``); use ``'latin1'`` for numpy object arrays.
    """
    return RestrictedUnpickler(f, encoding=encoding).load()


def _header_dtype(f: IO[bytes], name: str) -> np.dtype:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)[2]
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)[2]
    raise ValueError(f"{name}: unsupported .npy format version {version} for an object array")


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file; object arrays are read with the restricted unpickler."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            with zf.open(member) as f:
                try:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
                    continue
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
            with zf.open(member) as f:
                dtype = _header_dtype(f, f"{path}:{member}")
                if not dtype.hasobject:
                    raise ValueError(f"{path}:{member}: unreadable array")
                arr = load_pickle(f, encoding="latin1")
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"{path}:{member}: expected a pickled numpy array, got {type(arr).__name__}")
            out[key] = arr
    return out
