"""One row per group of an ``ss_logreg`` run: ``groups.csv`` and the Spearman summary.

The targets are the quantities whose change the groups cause (see docs/design.md, 'Result
keys'): ``self`` (the group's own summed training loss) and ``test-{i}`` (the loss of
fixed test point ``i``), and for binary models also ``test-{i}_margin``. For each target
the table holds three effects of removing the group:

* ``{target}_predicted``: the first-order influence estimate (``subset_*_pred_*``),
* ``{target}_newton``: the one-step Newton estimate (``subset_*_newton_*``; NaN when the
  run has no Newton approximation),
* ``{target}_actual``: the change after the exact refit (``subset_*_actl_*``),

and per group the refit certificate ``refit_grad_norm``, ``refit_grad_tol`` and
``certified`` (``refit_grad_norm <= refit_grad_tol``). ``indices`` lists the group's
training rows (positions in the training split, space-separated).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets.storage import atomic_write
from experiments.plot import get_simple_subset_tags, spearman

GROUPS_FILE = "groups.csv"


def targets(R: dict[str, Any]) -> list[tuple[str, str, str, str, int | None]]:
    """``(name, actual key, predicted key, Newton key, column)`` of each target present
    in ``R`` (``column``: the fixed test point's column, None for ``self``)."""
    out = []
    if "subset_self_actl_infl" in R and "subset_self_pred_infl" in R:
        out.append(("self", "subset_self_actl_infl", "subset_self_pred_infl", "subset_self_newton_infl", None))
    fixed = [int(i) for i in np.asarray(R.get("fixed_test", []))]
    for suffix, name in (("_infl", "test-{}"), ("_margin_infl", "test-{}_margin")):
        actl, pred = f"subset_fixed_test_actl{suffix}", f"subset_fixed_test_pred{suffix}"
        if actl in R and pred in R:
            out += [(name.format(i), actl, pred, f"subset_fixed_test_newton{suffix}", j) for j, i in enumerate(fixed)]
    return out


def _column(R: dict[str, Any], key: str, col: int | None, size: int) -> np.ndarray:
    if R.get(key) is None:
        return np.full(size, np.nan)
    v = np.asarray(R[key], dtype=np.float64)
    return v if col is None else v[:, col]


def groups_table(R: dict[str, Any]):
    """A pandas DataFrame with one row per group (see the module docstring)."""
    import pandas as pd

    tags = list(R["subset_tags"])
    S = len(tags)
    cols: dict[str, Any] = {"group": np.arange(S), "type": get_simple_subset_tags(tags), "tag": tags}
    indices = R.get("subset_indices")
    cols["size"] = [len(ix) for ix in indices] if indices is not None else np.full(S, -1)
    for name, actl, pred, newton, j in targets(R):
        cols[f"{name}_predicted"] = _column(R, pred, j, S)
        cols[f"{name}_newton"] = _column(R, newton, j, S)
        cols[f"{name}_actual"] = _column(R, actl, j, S)
    norm = _column(R, "subset_refit_grad_norm", None, S)
    tol = _column(R, "subset_refit_grad_tol", None, S)
    cols["refit_grad_norm"], cols["refit_grad_tol"], cols["certified"] = norm, tol, norm <= tol
    if indices is not None:
        cols["indices"] = [" ".join(map(str, np.asarray(ix, dtype=np.int64).tolist())) for ix in indices]
    return pd.DataFrame(cols)


def spearman_by_target(R: dict[str, Any], margins: bool = False) -> dict[str, float]:
    """Spearman's rho of predicted (first-order) against actual effects over the groups,
    per loss target (also the margin targets with ``margins``); NaN when undefined."""
    return {name: spearman(_column(R, pred, j, len(R["subset_tags"])), _column(R, actl, j, len(R["subset_tags"])))[0]
            for name, actl, pred, _, j in targets(R) if margins or not name.endswith("_margin")}


def spearman_line(R: dict[str, Any]) -> str:
    """``Spearman(predicted, actual): self 0.981, test-12 0.954, ...`` for the run's last line."""
    rhos = spearman_by_target(R)
    return "Spearman(predicted, actual): " + ", ".join(f"{k} {v:.3f}" for k, v in rhos.items())


def save_groups_csv(R: dict[str, Any], run_dir: str | Path) -> Path:
    """Write :func:`groups_table` to ``{run_dir}/groups.csv`` (atomically); returns the path."""
    path = Path(run_dir) / GROUPS_FILE
    text = groups_table(R).to_csv(index=False, float_format="%.17g")
    with atomic_write(path, "w") as f:
        f.write(text)
    return path
