"""The maths: L2-regularised logistic regression and its influence quantities.

Pure functions of arrays and settings (no paths, no file I/O, no argparse).
Public entry points hand float64 NumPy arrays back (float32 in the float32 mode).
"""
import os

# TensorFlow prints CUDA probing noise on CPU-only machines; keep real warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN kernels (on by default on x86) otherwise take their large tensors
# from a pool of their own that never shrinks: whatever the largest TensorFlow work of a
# run once held (the cross-validation fits, say) stays resident until the process ends,
# and neither later phases' NumPy arrays nor the system get it back. With the system
# allocator those blocks are freed like any other (experiments' release_free_memory returns
# them); the arithmetic is the same, so are the results, bit for bit. Read when TensorFlow
# creates its allocator: before the first import of tensorflow (docs/performance.md,
# 'Memory TensorFlow keeps').
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
# The lines TensorFlow prints before its logger starts ignore that variable: filter them.
from influence import quiet  # noqa: E402

quiet.install()
