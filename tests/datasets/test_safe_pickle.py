"""The restricted unpickler for third-party data pickles (CIFAR batches, MNLI object arrays)."""
import os
import pickle

import numpy as np
import pytest

from datasets import safe_pickle


def test_object_arrays_in_npz_load_without_allow_pickle(tmp_path):
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.array(["a", "b"]), [], np.array([1.5])]
    np.savez(tmp_path / "r.npz", ragged=ragged, plain=np.arange(4).reshape(2, 2))
    out = safe_pickle.load_npz(tmp_path / "r.npz")
    assert out["plain"].tolist() == [[0, 1], [2, 3]]
    assert out["ragged"][0].tolist() == ["a", "b"] and out["ragged"][1] == [] and out["ragged"][2][0] == 1.5


def test_code_execution_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    np.savez(tmp_path / "evil.npz", genres=arr)
    with pytest.raises(safe_pickle.UnsafePickleError, match="posix.system|os.system"):
        safe_pickle.load_npz(tmp_path / "evil.npz")
    with pytest.raises(safe_pickle.UnsafePickleError):
        import io

        safe_pickle.load_pickle(io.BytesIO(pickle.dumps(eval)))
