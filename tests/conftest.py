"""Shared tolerances and fixtures.

Each tolerance is the float64 one for its kind of check; a test that loosens one says why."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INFLUENCE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Same quantity by two code paths (sum of per-example grads = total, H v = HVP, ...).
RTOL_TWO_PATHS = 1e-10
# Closed-form derivatives against tf.GradientTape.
RTOL_AUTODIFF = 1e-10
# Gradients / Hessians against central finite differences.
RTOL_FD = 1e-6
# Residual ||H x - v|| / ||v|| of explicit Cholesky / LU solves.
RESID_SOLVE = 1e-9
# CG (tight tolerance) against a direct solve.
RTOL_CG = 1e-6
# Predictions from copied parameters against sklearn predict_proba.
ATOL_PREDICT = 1e-12
# One-step Newton for a single point against first-order / (1 - leverage).
RTOL_LEVERAGE = 1e-10


def assert_close(actual, desired, rtol, atol=0.0, what=""):
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = np.max(np.abs(desired)) if desired.size else 0.0
    err = np.max(np.abs(actual - desired)) if desired.size else 0.0
    assert err <= rtol * scale + atol, \
        f"{what}: max abs error {err:.3e} > rtol {rtol:g} * scale {scale:.3e} + atol {atol:g}"


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real archives not found at {SHARED_DATA}")
    return SHARED_DATA
