"""Prepare a script run as ``python scripts/x.py``: make the repository importable and
quiet TensorFlow's C++ start-up noise.

``TF_CPP_MIN_LOG_LEVEL=3`` (set only if the user has not set it, and inherited by the
figures notebook's kernel) silences the C++ log after start-up; the lines TensorFlow
writes before its logger is initialised are filtered by :mod:`influence.quiet`, which
``import influence`` installs. ``--debug`` on the command line (or
``INFLUENCE_TF_NOISE=1``) leaves everything as TensorFlow prints it.
"""
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if "--debug" in sys.argv[1:]:
    os.environ["INFLUENCE_TF_NOISE"] = "1"
if os.environ.get("INFLUENCE_TF_NOISE") != "1":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import influence  # noqa: E402,F401  (installs influence.quiet)
