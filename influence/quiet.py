"""A quiet start of TensorFlow for every user of ``influence`` (scripts, notebooks, imports).

TensorFlow prints, before anything of ours, lines such as "Could not find cuda drivers on
your machine", "oneDNN custom operations are on" and, at its first device query, "failed
call to cuInit: ... CUDA error" on every machine without a GPU; users read them as
errors. The lines TensorFlow writes before its C++ logger is initialised ignore
``TF_CPP_MIN_LOG_LEVEL``, so :func:`install` makes the first ``import tensorflow`` (and
its CUDA probe, run right after it) write with file descriptor 2 captured; every captured
line that is not one of the known start-up notices (:data:`TF_NOISE`) is written back.
``INFLUENCE_TF_NOISE=1`` in the environment leaves everything as TensorFlow prints it.

This module imports nothing of TensorFlow itself.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# The start-up notices of TensorFlow's C++ runtime on a CPU-only machine (TF 2.1x).
TF_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|cpu_feature_guard\.cc"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT")


@contextlib.contextmanager
def filtered_stderr():
    """Capture file descriptor 2; afterwards write back the lines that are not TF_NOISE."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not TF_NOISE.search(line.decode("utf-8", "replace"))]
            if kept:
                os.write(2, b"".join(kept))


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` inside :func:`filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        """The spec of ``tensorflow`` with a filtered ``exec_module``; None for other names."""
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr():
                exec_module(module)
                # The CUDA probe ("failed call to cuInit") runs once, at the first device
                # query: run it here, where its message is filtered, not at the first op.
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices("GPU")

        spec.loader.exec_module = quiet_exec_module
        return spec


def install() -> None:
    """Make the first ``import tensorflow`` of this process quiet (see the module
    docstring); does nothing with ``INFLUENCE_TF_NOISE=1``, once TensorFlow is imported,
    or when already installed."""
    if os.environ.get("INFLUENCE_TF_NOISE") == "1" or "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())
