"""Prepare a script run as ``python scripts/x.py``: make the repository importable and
quiet TensorFlow's C++ start-up noise.

TensorFlow prints, before anything of ours, lines such as "Could not find cuda drivers on
your machine", "oneDNN custom operations are on" and, at its first operation, "failed
call to cuInit: ... CUDA error" on every machine without a GPU; users read them as
errors. ``TF_CPP_MIN_LOG_LEVEL=3`` (set only if the user has not set it, and inherited by
the figures notebook's kernel) silences the C++ log after start-up; the lines TensorFlow
writes before its logger is initialised ignore that variable, so the import of
``tensorflow`` (and its CUDA probe, made right after it) runs with file descriptor 2
captured, and every line that is not one of the known start-up notices is written back.
``--debug`` on the command line (or ``INFLUENCE_TF_NOISE=1``) leaves everything as
TensorFlow prints it.
"""
import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

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
def _filtered_stderr():
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


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` inside :func:`_filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _filtered_stderr():
                exec_module(module)
                # The CUDA probe ("failed call to cuInit") runs once, at the first device
                # query: run it here, where its message is filtered, not at the first op.
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices("GPU")

        spec.loader.exec_module = quiet_exec_module
        return spec


if "--debug" not in sys.argv[1:] and os.environ.get("INFLUENCE_TF_NOISE") != "1":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
