"""Panels of each paper figure, built from loaded runs.

Each builder selects the result keys and the fixed test column of one figure and
returns :class:`experiments.plot.Panel` grids, which :func:`experiments.plot.plot_panel_grid`
draws; a missing run or quantity becomes a labelled empty panel. Sections follow the
notebook: the fixed test points (cell 6), Figures 1, 2, 5, 6 (one column per dataset),
Figure 3 and ``paper-regs-spearman.pdf`` (the regularisation sweep), Figure 4
(counterexamples), the MultiNLI and CDR supplementary figures and the combined
application figure.

Deviations from the original notebook:

* The fixed-test column of a dataset outside the paper's table is chosen from the
  run's losses: the highest-loss fixed test point ('max'), or the one whose loss rank
  is closest to the median ('median'), which is what the paper's table encoded.
* Figure 3 colours points by the run's relative regularisation r = lambda/n, its
  ``--fixed-reg`` value (the original divided ``cv_l2_reg`` by ``num_train``, which needs
  the dataset; lambda = 10**log10(r n) equals r n up to rounding).
* CDR labelling functions are matched to groups through ``subset_LF_ids`` when the run
  has it (the original's "group k is LF k+1" misaligns when an LF has no rows; it is
  used only as a fallback).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from experiments import plot
from experiments.common import py2_float_str
from experiments.figure_settings import FIXED_TEST_IDX, FIXED_TEST_IDX_MEDIAN, Settings, display_name
from experiments.figures.runs import (
    MNLI_NONFIRES_GENRES,
    MNLI_TEST_GENRES,
    LoadedRun,
    load_cdr_labeling_info,
    load_mnli_train_genres,
    reg_sweep_message,
)

REG_SLOTS = np.logspace(-7, 2, 10)              # the table's columns (spearmans[row][col][10])
REG_LINE_COLORS = {"hospital": "purple", "spam": "green", "dogfish": "blue", "mnist_small": "red"}

MNLI_GENRE_ORDER = [0, 5, 7, 2, 3, 4, 1, 9, 6, 8]
MNLI_SORT_ROWS = [9, 1, 4, 6, 8]

POS_LF_COLOR_INDEX, NEG_LF_COLOR_INDEX = 0, 3   # tab10 blue / red


# --------------------------------------------------------------------------- shared
def _column(value, k: int | None):
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 2:
        if k is None or k >= arr.shape[1]:
            raise ValueError(f"column {k} of an array of shape {arr.shape}")
        return arr[:, k]
    return arr.ravel()


def _see_above(run: LoadedRun) -> str:
    return f"missing {run.name} (see above)"


def rho_table(rhos, row_labels: Sequence[str], col_titles: Sequence[str]):
    import pandas as pd

    return pd.DataFrame(np.asarray(rhos, dtype=float), index=[r.replace("\n", " ") for r in row_labels],
                        columns=list(col_titles))


# --------------------------------------------------------------------------- cell 6: the fixed test points
def fixed_test_column(run: LoadedRun, dataset_id: str, which: str = "max") -> int:
    """The column of ``fixed_test`` a figure plots.

    The paper's table for its datasets; otherwise (or if the table's column does not
    exist) the highest-loss fixed test point (``'max'``) or the one with loss rank
    closest to the median (``'median'``), from ``initial_test_losses``.
    """
    if which not in ("max", "median"):
        raise ValueError(f"which must be 'max' or 'median'; got {which!r}")
    table = FIXED_TEST_IDX if which == "max" else FIXED_TEST_IDX_MEDIAN
    fixed = np.asarray(run.R.get("fixed_test", []) if run.ok else [], dtype=np.int64)
    n_cols = len(fixed) if len(fixed) else 6
    if dataset_id in table and table[dataset_id] < n_cols:
        return table[dataset_id]
    losses = run.R.get("initial_test_losses") if run.ok else None
    if losses is None or not len(fixed):
        return min(2 if which == "max" else 3, n_cols - 1)
    losses = np.asarray(losses, dtype=float)
    if which == "max":
        return int(np.argmax(losses[fixed]))
    ranks = np.argsort(np.argsort(losses, kind="stable"), kind="stable")
    return int(np.argmin(np.abs(ranks[fixed] - (len(losses) - 1) / 2)))


def fixed_test_table(runs: dict[str, LoadedRun]):
    """Cell 6: each fixed test index, its loss and rank (0 = lowest loss) of N_test."""
    import pandas as pd

    rows = []
    for ds, run in runs.items():
        if not run.has("fixed_test", "initial_test_losses"):
            rows.append({"dataset": ds, "run_id": run.run_id, "status": run.message})
            continue
        losses = np.asarray(run.R["initial_test_losses"], dtype=float)
        ranks = np.argsort(np.argsort(losses, kind="stable"), kind="stable")
        k_max, k_med = fixed_test_column(run, ds, "max"), fixed_test_column(run, ds, "median")
        for col, idx in enumerate(np.asarray(run.R["fixed_test"], dtype=np.int64)):
            role = ",".join(r for r, k in (("plotted (max)", k_max), ("plotted (median)", k_med)) if k == col)
            rows.append({"dataset": ds, "run_id": run.run_id, "column": col, "test_index": int(idx),
                         "loss": float(losses[idx]), "rank": int(ranks[idx]), "n_test": len(losses),
                         "role": role, "status": "ok"})
    table = pd.DataFrame(rows, columns=["dataset", "run_id", "column", "test_index", "loss", "rank", "n_test",
                                        "role", "status"])
    return table.astype({c: "Int64" for c in ("column", "test_index", "rank", "n_test")})


# --------------------------------------------------------------------------- Figures 1, 2, 5, 6: one column per dataset
def group_grid(runs: dict[str, LoadedRun], rows: Sequence[tuple[str, str, str]], which: str = "max",
               options: dict | None = None, datasets: Sequence[str] | None = None):
    """Panels of a Figure 1/2/5/6-style grid: rows of quantities, one column per dataset.

    ``rows``: ``(row label, x key, y key)``; 2-D keys take the fixed-test column of
    :func:`fixed_test_column` (``which``). ``options[(row, dataset_id)]``: keyword
    arguments of :func:`experiments.plot.plot_group_correlation`. Points are coloured by
    subset type and drawn tail groups first. Returns ``(panels, row_labels, col_titles)``.
    """
    options = options or {}
    datasets = list(runs) if datasets is None else list(datasets)
    panels = [[None] * len(datasets) for _ in rows]
    for j, ds in enumerate(datasets):
        run = runs[ds]
        if not run.ok:
            for i in range(len(rows)):
                panels[i][j] = plot.Panel(kind="missing", text=run.message if i == 0 else _see_above(run))
            continue
        k = fixed_test_column(run, ds, which)
        tags = run.R.get("subset_tags") or []
        for i, (_, xkey, ykey) in enumerate(rows):
            if not run.has(xkey, ykey):  # e.g. no margin for a multiclass run
                what = "test prediction (margin):\nnot defined for a\nmulticlass model" if "margin" in xkey \
                    else f"not in this run:\n{xkey if not run.has(xkey) else ykey}"
                panels[i][j] = plot.Panel(kind="na", text=what)
                continue
            try:
                x, y = _column(run.R[xkey], k), _column(run.R[ykey], k)
                if not (len(x) == len(y) == len(tags)):
                    raise ValueError(f"{xkey}: {len(x)}, {ykey}: {len(y)}, subset_tags: {len(tags)} entries")
            except ValueError as exc:
                panels[i][j] = plot.Panel(kind="na", text=f"cannot plot {run.name}: {exc}")
                continue
            panels[i][j] = plot.Panel(x=x, y=y, colors=plot.subset_type_colors(tags), order=plot.tail_first(tags),
                                      options=dict(options.get((i, ds), {})))
    return panels, [r[0] for r in rows], [display_name(ds) for ds in datasets]


# ----------------------------------------------------- Figure 3 and paper-regs-spearman.pdf: the regularisation sweep
def reg_grid(settings: Settings, sweeps: dict[str, list[tuple[float, LoadedRun]]],
             rows: Sequence[tuple[str, str, str]], options: dict | None = None):
    """Figure 3 panels: each dataset's sweep pooled in one panel, coloured by lambda/n.

    Each panel's ``groups`` hold r = lambda/n per point (for per-lambda Spearman).
    Returns ``(panels, row_labels, col_titles)``.
    """
    options = options or {}
    datasets = list(sweeps)
    panels = [[None] * len(datasets) for _ in rows]
    for j, ds in enumerate(datasets):
        present = [(r, run) for r, run in sweeps[ds] if run.ok]
        msg = reg_sweep_message(settings, ds, sweeps[ds])
        if msg:
            print(msg)
        if not present:
            for i in range(len(rows)):
                panels[i][j] = plot.Panel(kind="missing", text=msg if i == 0 else f"missing {ds} sweep (see above)")
            continue
        for i, (_, xkey, ykey) in enumerate(rows):
            xs, ys, gs = [], [], []
            for r, run in present:
                if not run.has(xkey, ykey):
                    continue
                k = fixed_test_column(run, ds, "max")
                try:
                    x, y = _column(run.R[xkey], k), _column(run.R[ykey], k)
                except ValueError:
                    continue
                if len(x) != len(y):
                    continue
                xs.append(x)
                ys.append(y)
                gs.append(np.full(len(x), r))
            if not xs:
                panels[i][j] = plot.Panel(kind="na")
                continue
            g = np.concatenate(gs)
            panels[i][j] = plot.Panel(x=np.concatenate(xs), y=np.concatenate(ys), colors=plot.reg_colors(g),
                                      order=np.random.RandomState(0).permutation(len(g)),
                                      options=dict(options.get((i, ds), {})), groups=g)
    return panels, [r[0] for r in rows], [display_name(ds) for ds in datasets]


def reg_spearman_table(panels, row_labels, datasets: Sequence[str]):
    """Per-lambda Spearman of every Figure 3 panel: rows (row, dataset), columns lambda/n."""
    import pandas as pd

    records = []
    for i, row in enumerate(panels):
        for j, p in enumerate(row):
            rhos = plot.spearman_by_group(p.x, p.y, p.groups) if p.kind == "scatter" else {}
            rec = {"row": row_labels[i].replace("\n", " "), "dataset": datasets[j]}
            for slot in REG_SLOTS:
                match = [v for r, v in rhos.items() if np.isclose(r, slot, rtol=1e-6)]
                rec[py2_float_str(slot)] = match[0] if match else np.nan
            records.append(rec)
    return pd.DataFrame(records)


def regs_spearman_series(table, datasets: Sequence[str]):
    """``{row label: [(name, regs, rhos, colour), ...]}`` for ``paper-regs-spearman.pdf``."""
    import matplotlib.pyplot as plt

    reg_cols = [c for c in table.columns if c not in ("row", "dataset")]
    regs = np.array([float(c) for c in reg_cols])
    out = {}
    for row in dict.fromkeys(table["row"]):
        series = []
        for n, ds in enumerate(datasets):
            sel = table[(table["row"] == row) & (table["dataset"] == ds)]
            if not len(sel):
                continue
            rhos = sel[reg_cols].to_numpy(dtype=float)[0]
            color = REG_LINE_COLORS.get(ds, plt.cm.tab10(n % 10))
            series.append((display_name(ds), regs, rhos, color))
        out[row] = series
    return out


# --------------------------------------------------------------------------- Figure 4
def cex_panel(run: LoadedRun, test_tag: str, occurrence: int = 0, subsets_key: str | None = None) -> "plot.Panel":
    """Newton (x) vs first-order (y) margin influence on one counterexample test point.

    The test point is the ``occurrence``-th point tagged ``test_tag``; groups are
    ``R[subsets_key]`` (all groups if None).
    """
    if not run.ok:
        return plot.Panel(kind="missing", text=run.message)
    needed = ["cex_tags", "cex_subset_test_pred_margin_infl", "cex_subset_test_newton_pred_margin_infl"]
    needed += [subsets_key] if subsets_key else []
    absent = [k for k in needed if not run.has(k)]
    if absent:
        return plot.Panel(kind="na", text=f"{run.name} has no {', '.join(absent)}")
    tags = list(run.R["cex_tags"])
    where = [i for i, t in enumerate(tags) if t == test_tag]
    if len(where) <= occurrence:
        return plot.Panel(kind="na", text=f"{run.name}: no test point #{occurrence} tagged {test_tag}")
    t = where[occurrence]
    pred = np.asarray(run.R["cex_subset_test_pred_margin_infl"])
    newton = np.asarray(run.R["cex_subset_test_newton_pred_margin_infl"])
    groups = np.asarray(run.R[subsets_key], dtype=np.int64) if subsets_key else np.arange(len(pred))
    if pred.ndim != 2 or pred.shape != newton.shape or pred.shape[1] != len(tags) or \
            (len(groups) and not 0 <= groups.min() <= groups.max() < len(pred)):
        return plot.Panel(kind="na", text=f"cannot plot {run.name}: inconsistent shapes {pred.shape}, "
                                          f"{newton.shape}, {len(tags)} tags, groups up to {groups.max(initial=-1)}")
    return plot.Panel(kind="cross", x=newton[groups, t], y=pred[groups, t], options={"size": 15})


def figure4_panels(left: LoadedRun, right: LoadedRun) -> list[list["plot.Panel"]]:
    """Left: gauss4, 3rd ``lstsq_uv_K-120_gauss`` point over its 120 groups; right: ortho2 ``cex_one``."""
    return [[cex_panel(left, "lstsq_uv_K-120_gauss", 2, "cex_lstsq_uv_K-120_subsets"),
             cex_panel(right, "cex_one")]]


# --------------------------------------------------------------------------- MNLI supplementary figures
def mnli_genres(run: LoadedRun, which: str) -> list[str]:
    key = f"{which}_genres"
    default = MNLI_TEST_GENRES if which == "test" else MNLI_NONFIRES_GENRES
    return [str(g) for g in run.R[key]] if run.has(key) else list(default)


def mnli_acc_panels(run: LoadedRun, which: str = "test", size: float = 9):
    """Per genre: actual vs predicted influence of each worker on the genre's dev loss."""
    genres = mnli_genres(run, which)
    if not run.ok:
        return [[plot.Panel(kind="missing", text=run.message if j == 0 else _see_above(run))
                 for j in range(len(genres))]], genres
    row = []
    for g in genres:
        xk, yk = f"{g}_{which}_actl_infl", f"{g}_{which}_pred_infl"
        if run.has(xk, yk):
            row.append(plot.Panel(x=run.R[xk], y=run.R[yk], colors=plot.subset_tag_color("pos_tail_test"),
                                  options={"size": size}))
        else:
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {xk}/{yk}"))
    return [row], genres


def _contributions(run: LoadedRun) -> np.ndarray:
    return np.array([len(s) for s in run.R["subset_indices"]], dtype=float)


def mnli_size_panel(run: LoadedRun) -> "plot.Panel":
    if not run.ok:
        return plot.Panel(kind="missing", text=run.message)
    if not run.has("subset_indices", "all_test_pred_infl"):
        return plot.Panel(kind="na", text=f"{run.name} has no subset_indices / all_test_pred_infl")
    return plot.Panel(x=_contributions(run), y=run.R["all_test_pred_infl"],
                      colors=plot.subset_tag_color("pos_tail_test"),
                      options=dict(size=9, equal=False, show_diagonal=False, show_x_axis=True, shrinkx=0.5,
                                   shrinky=0.6, anchor="max"))


def mnli_genre_effect(run: LoadedRun):
    """``(matrix, row_labels)`` of the MultiNLI genre-effect figure, or ``(None, message)``.

    Rows: the 10 genres in the notebook's order; columns: workers sorted by their mean
    influence over verbatim, government, travel, letters and oup.
    """
    if not run.ok:
        return None, run.message
    genres = [(g, "test") for g in mnli_genres(run, "test")] + [(g, "nonfires") for g in mnli_genres(run, "nonfires")]
    keys = [f"{g}_{w}_pred_infl" for g, w in genres]
    absent = [k for k in keys if not run.has(k)]
    if absent:
        return None, f"{run.name} has no {', '.join(absent)}"
    M = np.vstack([np.asarray(run.R[k], dtype=float) for k in keys])
    sort_rows = [r for r in MNLI_SORT_ROWS if r < len(M)]
    M = M[:, np.argsort(M[sort_rows].mean(axis=0), kind="stable")]
    order = [r for r in MNLI_GENRE_ORDER if r < len(M)] if len(M) == 10 else list(range(len(M)))
    return M[order], [genres[r][0] for r in order]


def mnli_genre_contrib_panels(settings: Settings, run: LoadedRun):
    """Per matched genre: the worker's train examples in that genre vs its influence."""
    genres = mnli_genres(run, "test")
    if not run.ok:
        return [[plot.Panel(kind="missing", text=run.message if j == 0 else _see_above(run))
                 for j in range(len(genres))]], genres
    train_genres, msg = load_mnli_train_genres(settings, run)
    if train_genres is None or not run.has("subset_indices"):
        msg = msg or f"{run.name} has no subset_indices"
        print(msg)
        return [[plot.Panel(kind="missing", text=msg if j == 0 else "see above") for j in range(len(genres))]], genres
    top = max((int(np.max(s)) for s in run.R["subset_indices"] if len(s)), default=-1)
    if top >= len(train_genres):
        msg = f"the train genres ({len(train_genres)}) do not match {run.name} (index {top})"
        print(msg)
        return [[plot.Panel(kind="missing", text=msg if j == 0 else "see above") for j in range(len(genres))]], genres
    row = []
    for g in genres:
        yk = f"{g}_test_pred_infl"
        if not run.has(yk):
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {yk}"))
            continue
        counts = np.array([np.sum(train_genres[np.asarray(s, dtype=np.int64)] == g) for s in run.R["subset_indices"]],
                          dtype=float)
        row.append(plot.Panel(x=counts, y=run.R[yk], colors=plot.subset_tag_color("pos_tail_test"),
                              options=dict(size=9, equal=False, show_diagonal=False, show_x_axis=True,
                                           xlim=(-300, 6000), ylim=(-2, 2))))
    return [row], genres


# -------------------------------------------------------------- CDR supplementary figures and paper-combined-apps.pdf
def lf_statistics(lf_labels: np.ndarray, gold_labels: np.ndarray, lf_ids: Sequence[int]):
    """Per LF id: ``(positive, precision)``.

    ``positive``: its first vote (table order) is > 0. ``precision``: the fraction of
    its votes on gold-labelled candidates that equal the gold label (NaN if none).
    ``lf_labels`` rows are (value, candidate_id, key_id); ``gold_labels`` rows
    (value, candidate_id).
    """
    lf_labels, gold_labels = np.asarray(lf_labels), np.asarray(gold_labels)
    gold = dict(zip(gold_labels[:, 1].tolist(), gold_labels[:, 0].tolist()))
    positive, precision = [], []
    for lf in lf_ids:
        votes = lf_labels[lf_labels[:, 2] == lf]
        positive.append(bool(len(votes)) and bool(votes[0, 0] > 0))
        matched = [(v, gold[c]) for v, c in zip(votes[:, 0].tolist(), votes[:, 1].tolist()) if c in gold]
        precision.append(np.mean([v == g for v, g in matched]) if matched else np.nan)
    return np.array(positive, dtype=bool), np.array(precision, dtype=float)


@dataclass
class CdrLFs:
    """The labelling-function groups of the data-valuation run and their statistics."""

    mask: np.ndarray                 # groups tagged same_features (one per LF)
    coverage: np.ndarray             # |S_k| / sum |S|, per LF group
    lf_ids: np.ndarray
    positive: np.ndarray | None      # None when the labelling info is unavailable
    precision: np.ndarray | None
    problem: str | None = None

    def colors(self):
        if self.positive is None:
            return [plot.UNKNOWN_TAG_COLOR]
        import matplotlib.pyplot as plt
        pos, neg = plt.cm.tab10(POS_LF_COLOR_INDEX), plt.cm.tab10(NEG_LF_COLOR_INDEX)
        return np.array([pos if p else neg for p in self.positive])

    @staticmethod
    def legend():
        import matplotlib.pyplot as plt
        return [("Pos. LF", plt.cm.tab10(POS_LF_COLOR_INDEX)), ("Neg. LF", plt.cm.tab10(NEG_LF_COLOR_INDEX))]


def cdr_lfs(settings: Settings, run: LoadedRun) -> CdrLFs | None:
    """LF groups, coverage, polarity and precision (None if the run is missing)."""
    if not run.has("subset_tags", "subset_indices"):
        return None
    tags = np.array([str(t) for t in run.R["subset_tags"]])
    mask = tags == "same_features"
    sizes = np.array([len(s) for s in run.R["subset_indices"]], dtype=float)[mask]
    coverage = sizes / sizes.sum() if sizes.sum() else sizes
    if run.has("subset_LF_ids"):
        lf_ids = np.asarray(run.R["subset_LF_ids"], dtype=np.int64)[mask]
    else:  # the original's assumption: group k is LF k + 1
        lf_ids = np.flatnonzero(mask) + 1
    info, msg = load_cdr_labeling_info(settings, run)
    if info is None:
        print(msg)
        return CdrLFs(mask, coverage, lf_ids, None, None, msg)
    positive, precision = lf_statistics(info[0], info[1], lf_ids)
    return CdrLFs(mask, coverage, lf_ids, positive, precision)


def _cdr_missing(run: LoadedRun, n: int):
    return [[plot.Panel(kind="missing", text=run.message if j == 0 else _see_above(run)) for j in range(n)]]


def cdr_acc_panels(run: LoadedRun, lfs: CdrLFs | None):
    """Actual vs predicted influence of each LF on the pos / neg test loss."""
    if lfs is None:
        return _cdr_missing(run, 2)
    row = []
    for t in ("pos", "neg"):
        xk, yk = f"subset_{t}_test_actl_infl", f"subset_{t}_test_pred_infl"
        if not run.has(xk, yk):
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {xk}/{yk}"))
            continue
        row.append(plot.Panel(x=np.asarray(run.R[xk])[lfs.mask], y=np.asarray(run.R[yk])[lfs.mask],
                              colors=lfs.colors(), options=dict(size=12, scientific=False)))
    if lfs.positive is not None and row[-1].kind == "scatter":
        row[-1].legend = CdrLFs.legend()
    return [row]


def cdr_vs_panels(run: LoadedRun, lfs: CdrLFs | None, quantity: str):
    """LF coverage or precision (x) vs predicted influence on the pos / neg test loss."""
    if lfs is None:
        return _cdr_missing(run, 2)
    if quantity == "precision" and lfs.precision is None:
        return [[plot.Panel(kind="missing", text=lfs.problem if j == 0 else "see above") for j in range(2)]]
    x = lfs.coverage if quantity == "coverage" else lfs.precision
    row = []
    for t in ("pos", "neg"):
        yk = f"subset_{t}_test_pred_infl"
        if not run.has(yk):
            row.append(plot.Panel(kind="na", text=f"{run.name} has no {yk}"))
            continue
        row.append(plot.Panel(x=x, y=np.asarray(run.R[yk])[lfs.mask], colors=lfs.colors(),
                              options=dict(size=12, equal=False, show_diagonal=False, show_x_axis=True, pady=0.3,
                                           scientific=False)))
    if lfs.positive is not None and row[-1].kind == "scatter":
        row[-1].legend = CdrLFs.legend()
    return [row]


def combined_apps_panels(cdr_run: LoadedRun, lfs: CdrLFs | None, mnli_run: LoadedRun):
    """CDR coverage, CDR precision (each LF's influence on its own class's test loss), MultiNLI size."""
    row = []
    for quantity in ("coverage", "precision"):
        if lfs is None:
            row.append(plot.Panel(kind="missing", text=cdr_run.message if quantity == "coverage"
                                  else _see_above(cdr_run)))
            continue
        if lfs.positive is None or not cdr_run.has("subset_pos_test_pred_infl", "subset_neg_test_pred_infl"):
            row.append(plot.Panel(kind="missing", text=lfs.problem or f"{cdr_run.name} has no pos/neg test keys"))
            continue
        pos = lfs.positive
        xq = lfs.coverage if quantity == "coverage" else lfs.precision
        ypos = np.asarray(cdr_run.R["subset_pos_test_pred_infl"])[lfs.mask]
        yneg = np.asarray(cdr_run.R["subset_neg_test_pred_infl"])[lfs.mask]
        colors = lfs.colors()
        row.append(plot.Panel(x=np.concatenate([xq[pos], xq[~pos]]), y=np.concatenate([ypos[pos], yneg[~pos]]),
                              colors=np.concatenate([colors[pos], colors[~pos]]),
                              options=dict(size=12, equal=False, show_diagonal=False, show_x_axis=True, pady=0.3,
                                           scientific=False)))
    if row[1].kind == "scatter":
        row[1].legend = CdrLFs.legend()
    mnli = mnli_size_panel(mnli_run)
    if mnli.kind == "scatter":
        mnli.options = dict(mnli.options, shrinkx=None, shrinky=None)
    row.append(mnli)
    return [row]

