"""Helpers shared by the application experiments (``data_valuation``, ``credit_assignment``).

Config checks, the cross-validation grid and folds, chunked weighted gradient sums over
index sets, and batched certified refits through :func:`influence.refit.refit_chunk`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

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


def cv_regs(n: int, cv_range) -> np.ndarray:
    """``logspace(log10(low n), log10(high n), num)`` (spec §3.4 / §4.4 phase 0)."""
    a, b, num = cv_range
    return np.logspace(np.log10(a * n), np.log10(b * n), int(num))


def contiguous_folds(n: int, folds: int) -> list[np.ndarray]:
    """Contiguous, unshuffled held-out folds of size ceil(n / folds)."""
    size = int(math.ceil(n / folds))
    return [np.arange(k * size, min((k + 1) * size, n)) for k in range(folds) if k * size < n]


def dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def weighted_grad_sums(model, X, y, w, sets: Sequence[np.ndarray], chunk: int = 4096,
                       margin: bool = False) -> np.ndarray:
    """``sum_{i in T} w_i grad q_i(theta)`` for every index set T, shape (len(sets), d).

    q is the loss (or the margin). Rows are processed in chunks, so the (n, d) matrix
    of per-example gradients is never formed (MultiNLI: 392,702 x 1,803).
    """
    from influence.groups import incidence

    n = X.shape[0]
    Inc = incidence([np.asarray(s, dtype=np.int64) for s in sets], n)
    out = np.zeros((len(sets), model.num_params))
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        part = (X[a:b], y[a:b])
        G = model.get_indiv_grad_margin(part) if margin else model.get_indiv_grad_loss(part)
        out += np.asarray(Inc[:, a:b] @ (w[a:b, None] * G))
    return out


def refit_groups(model, theta_hat, train, s, l2_reg, groups, hessian, chunk_size: int, bar) -> dict[str, Any]:
    """Certified exact refits without each group (weights of the group zeroed, others kept).

    Returns ``params`` (S, d) and the certificate arrays.
    """
    from influence.refit import refit_chunk

    Xa, y, s_t = model._tensors(train, s)
    S = len(groups)
    out = {"params": np.zeros((S, model.num_params)), "grad_norm": np.zeros(S), "grad_tol": np.zeros(S),
           "iters": np.zeros(S, dtype=np.int64), "converged": np.zeros(S, dtype=bool)}
    for start in bar(range(0, S, chunk_size), "exact refits", math.ceil(S / chunk_size)):
        sel = list(range(start, min(start + chunk_size, S)))
        r = refit_chunk(model.spec, theta_hat, Xa, y, s_t, l2_reg, [groups[i] for i in sel], hessian_hat=hessian,
                        rtol=model.fit_rtol, max_iter=model.config["max_newton_iter"])
        out["params"][sel] = r.thetas
        out["grad_norm"][sel] = r.grad_norms
        out["grad_tol"][sel] = r.grad_tols
        out["iters"][sel] = r.iterations
        out["converged"][sel] = r.converged
    return out


def refit_chunk_size(num_params: int, n: int, max_memory: int, num_rows: int = 1) -> int:
    """Groups refitted together: B stacked (d, d) Hessians and (n, B) work arrays within max_memory."""
    per_group = 8 * (3 * num_params ** 2 + 4 * n * num_rows)
    return int(max(1, min(64, max_memory // per_group)))
