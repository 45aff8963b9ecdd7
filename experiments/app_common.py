"""Config checks shared by the application experiments (``data_valuation``, ``credit_assignment``).

What the influence experiments share beyond config checks (model setup, cross-validation,
refit chunking, progress bars) is in :mod:`experiments.influence_base`; every influence
formula is in :mod:`influence.group_influence`.
"""
from __future__ import annotations

from experiments.common import ConfigError


def check_cv_range(value) -> tuple[float, float, int]:
    try:
        low, high, num = value
    except (TypeError, ValueError):
        raise ConfigError(f"the cross-validation range must be (low, high, num); got {value!r}") from None
    if not (0 < float(low) <= float(high)) or int(num) != num or num < 1:
        raise ConfigError(f"the cross-validation range needs 0 < low <= high and an integer num >= 1; got {value!r}")
    return float(low), float(high), int(num)


def check_positive_int(name: str, value) -> int:
    if int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_folds(value) -> int:
    folds = check_positive_int("--cv-folds", value)
    if folds < 2:
        raise ConfigError(f"--cv-folds must be >= 2 (a fold model needs training rows); got {value!r}")
    return folds
