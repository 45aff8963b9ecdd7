"""The maths: L2-regularised logistic regression and its influence quantities.

Pure functions of arrays and settings (no paths, no file I/O, no argparse).
Public entry points hand float64 NumPy arrays back (float32 in the float32 mode).
"""
import os

# TensorFlow prints CUDA probing noise on CPU-only machines; keep real warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The lines TensorFlow prints before its logger starts ignore that variable: filter them.
from influence import quiet  # noqa: E402

quiet.install()
