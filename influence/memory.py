"""Chunk sizes that keep batched work within a memory budget (``--max-memory``, bytes).

Every batched computation processes its items (groups, parameter rows) in chunks of
:func:`chunk_size` items, from the bytes one item's working arrays take; an item alone
over the budget gets one logged warning and the work goes on one item at a time.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

FLOAT_BYTES = 8
# Groups refitted together at most (the explicit engine's per-group Python work and the
# batched products stop gaining beyond this).
MAX_REFIT_CHUNK = 64

# The kinds of item (``what``) already warned about: one warning each per process.
WARNED: set[str] = set()


def chunk_size(max_memory: int | None, bytes_per_item: int, max_items: int | None = None,
               what: str = "item", warn: bool = True) -> int:
    """How many items fit in ``max_memory`` bytes at ``bytes_per_item`` each.

    Returns ``max(1, min(max_items, max_memory // bytes_per_item))`` (``max_items``
    when ``max_memory`` is None). Where one item alone needs more than ``max_memory``,
    logs a warning once per ``what`` with the amount (unless ``warn`` is False: a
    sub-budget of a computation that warns itself), and returns 1.
    """
    if bytes_per_item < 1:
        raise ValueError(f"bytes_per_item must be >= 1; got {bytes_per_item!r}")
    if max_memory is None:
        if max_items is None:
            raise ValueError("chunk_size needs max_memory or max_items")
        return int(max(1, max_items))
    if int(max_memory) != max_memory or max_memory < 1:
        raise ValueError(f"max_memory must be a positive integer number of bytes; got {max_memory!r}")
    fit = int(max_memory) // int(bytes_per_item)
    if fit < 1 and warn and what not in WARNED:
        WARNED.add(what)
        logger.warning("one %s needs about %s of working memory, more than max_memory = %s; "
                       "going on one at a time", what, format_bytes(bytes_per_item), format_bytes(max_memory))
    if max_items is not None:
        fit = min(fit, int(max_items))
    return int(max(1, fit))


# Largest model whose regularised Hessian the cg routes hold as one dense Cholesky
# factor (8 d^2 bytes: 1.15 GB here), as make_preconditioner's full factors.
DENSE_HESSIAN_MAX_PARAMS = 12000
# Right-hand sides that iterate together in the dense CG solves at most (the triangular
# solves and products run at matrix-multiply speed from a few dozen on).
MAX_CG_WIDTH = 256


def dense_hessian_bytes(num_params: int) -> int:
    """Bytes of the dense Hessian factor of the cg routes (one float64 (d, d) array)."""
    return FLOAT_BYTES * int(num_params) ** 2


def dense_hessian_fits(num_params: int, max_memory: int | None) -> bool:
    """Whether the cg routes hold the full Hessian's dense factor: at most
    :data:`DENSE_HESSIAN_MAX_PARAMS` parameters and, under a budget, the factor within
    half of ``max_memory`` (the other half stays for the batched work,
    :func:`dense_work_memory`)."""
    if num_params > DENSE_HESSIAN_MAX_PARAMS:
        return False
    return max_memory is None or 2 * dense_hessian_bytes(num_params) <= int(max_memory)


def dense_work_memory(num_params: int, max_memory: int | None) -> int | None:
    """The budget of the batched work next to the dense Hessian factor: ``max_memory``
    minus the factor (None: no budget)."""
    return None if max_memory is None else int(max_memory) - dense_hessian_bytes(num_params)


def cg_width(num_params: int, max_memory: int | None, max_items: int = MAX_CG_WIDTH) -> int:
    """Right-hand sides iterating together in a dense CG solve within ``max_memory`` (the
    budget of the work): six (d,) float64 vectors each (solution, residual, preconditioned
    residual, direction, its product, the operator's scratch)."""
    return chunk_size(max_memory, 6 * FLOAT_BYTES * int(num_params), max_items, what="CG right-hand side")


def format_bytes(n: float) -> str:
    """``1.5 GB``-style amount (decimal units, as ``--max-memory``)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def refit_bytes_per_group(num_params: int, n: int, num_rows: int = 1, explicit: bool = True) -> int:
    """Working bytes of one group in a refit chunk: with explicit Hessians, four (d, d)
    matrices (Hessian, factor, and the NumPy and TensorFlow copies of a fresh Hessian)
    and four (n, K') arrays (weights, logits, residuals, curvature); without
    (Newton-CG), the (n, K') arrays only."""
    return FLOAT_BYTES * (4 * num_params ** 2 * int(bool(explicit)) + 4 * n * num_rows)


def downdate_bytes_per_group(n: int, num_params: int, size: int) -> int:
    """Working bytes of one group of ``size`` points in a downdate refit chunk
    (:func:`influence.refit.refit_chunk_downdate`): the factor of its (size, size) Woodbury
    matrix, four (n,) arrays (weights, logits, residuals, curvature) and about ten (d,)
    vectors (iterate, gradient, direction, CG vectors)."""
    return FLOAT_BYTES * (int(size) ** 2 + 4 * n + 10 * num_params)


def refit_chunk_size(num_params: int, n: int, max_memory: int | None, num_rows: int = 1,
                     explicit: bool = True, max_items: int = MAX_REFIT_CHUNK) -> int:
    """Groups refitted together within ``max_memory`` (at most ``max_items``, default
    :data:`MAX_REFIT_CHUNK`): the one refit chunk-size rule (:func:`refit_bytes_per_group`)."""
    return chunk_size(max_memory, refit_bytes_per_group(num_params, n, num_rows, explicit), max_items,
                      what="refit group")


def eval_chunk_size(n: int, num_rows: int, max_memory: int | None, max_items: int = 64) -> int:
    """Parameter rows evaluated together on n points (logits (n, K'), values and
    gathers: four (n, K') arrays per row)."""
    return chunk_size(max_memory, FLOAT_BYTES * 4 * n * max(1, num_rows), max_items, what="evaluation row")
