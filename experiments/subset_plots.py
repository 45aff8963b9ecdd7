"""``plot_all`` of the ss_logreg experiment: the original's figures of a run.

Every figure is 8x8 in, saved as PNG (bbox tight) under ``{run_dir}/plots/``. A figure
whose keys are missing is skipped (the original crashed on master-only runs).
``_imbalanced`` copies with unequal axes are added where the value ranges differ by
more than 10x (or one is below 1e-9).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from datasets.storage import atomic_write
from experiments.plot import (
    get_simple_subset_tags,
    plot_against_subset_size,
    plot_distribution,
    plot_group_correlation,
    plot_influence_correlation,
    subset_legend_entries,
    subset_type_colors,
    tail_first,
)
from experiments.subset_groups import spearman_by_target, targets

logger = logging.getLogger(__name__)

AXIS_LABELS = {
    "actl": "Actual influence",
    "pred": "First-order influence",
    "newton": "Newton influence",
    "pparam": "Predicted parameter influence",
    "nparam": "Newton predicted parameter influence",
}


def _imbalanced(x, y) -> bool:
    rx = float(np.max(x) - np.min(x)) if len(x) else 0.0
    ry = float(np.max(y) - np.min(y)) if len(y) else 0.0
    return abs(rx) < 1e-9 or abs(ry) < 1e-9 or rx / ry < 0.1 or ry / rx < 0.1


class _Plotter:
    def __init__(self, exp, save_and_close: bool):
        import matplotlib
        matplotlib.use("Agg", force=False)
        self.exp, self.R = exp, exp.R
        self.save_and_close = save_and_close
        self.dir = Path(exp.base_dir) / "plots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.subtitle = exp.get_subtitle()
        self.written: list[Path] = []

    def has(self, *keys) -> bool:
        return all(k in self.R and self.R[k] is not None for k in keys)

    def save(self, fig, name: str) -> None:
        import matplotlib.pyplot as plt
        path = self.dir / name
        fig.savefig(path, bbox_inches="tight")
        self.written.append(path)
        if self.save_and_close:
            plt.close(fig)

    def group_influence(self, kind: str, quantity: str, x, y, xa: str, ya: str) -> None:
        import matplotlib.pyplot as plt

        labels = get_simple_subset_tags(self.R["subset_tags"])
        if kind == "self":
            title = f"Group self-influence on {quantity}"
        else:
            title = f"Group influence on test pt {kind.split('-')[-1]}'s {quantity}"
        variants = [(True, "")]
        if _imbalanced(x, y):
            variants.append((False, "_imbalanced"))
        for equal, suffix in variants:
            fig, ax = plt.subplots(1, 1, figsize=(8, 8))
            plot_influence_correlation(ax, np.asarray(x), np.asarray(y), label=labels, title=title,
                                       subtitle=self.subtitle, xlabel=AXIS_LABELS[xa], ylabel=AXIS_LABELS[ya],
                                       equal=equal)
            self.save(fig, f"{kind}_{quantity}_{xa}-{ya}{suffix}.png")

    def run(self) -> list[Path]:
        R = self.R
        fixed = list(np.asarray(R.get("fixed_test", [])))
        qs = [("loss", "_infl")] + ([("margin", "_margin_infl")] if self.has("initial_test_margins") else [])
        # 1. self influence.
        for q, suf in qs:
            if self.has(f"subset_self_actl{suf}", f"subset_self_pred{suf}"):
                self.group_influence("self", q, R[f"subset_self_actl{suf}"], R[f"subset_self_pred{suf}"],
                                     "actl", "pred")
        # 2. fixed test points.
        for j, idx in enumerate(fixed):
            for q, suf in qs:
                if self.has(f"subset_fixed_test_actl{suf}", f"subset_fixed_test_pred{suf}"):
                    self.group_influence(f"fixed-test-{idx}", q, R[f"subset_fixed_test_actl{suf}"][:, j],
                                         R[f"subset_fixed_test_pred{suf}"][:, j], "actl", "pred")
        # 3. Newton.
        if self.has("subset_self_newton_infl"):
            for xa in ("actl", "pred"):
                if self.has(f"subset_self_{xa}_infl"):
                    self.group_influence("self", "loss", R[f"subset_self_{xa}_infl"], R["subset_self_newton_infl"],
                                         xa, "newton")
            for j, idx in enumerate(fixed):
                for q, suf in qs:
                    for xa in ("actl", "pred"):
                        if self.has(f"subset_fixed_test_{xa}{suf}", f"subset_fixed_test_newton{suf}"):
                            self.group_influence(f"fixed-test-{idx}", q, R[f"subset_fixed_test_{xa}{suf}"][:, j],
                                                 R[f"subset_fixed_test_newton{suf}"][:, j], xa, "newton")
        # 4. Parameter-evaluated influences.
        for name in ("pparam", "nparam"):
            if not self.has(f"subset_self_{name}_infl"):
                continue
            if self.has("subset_self_actl_infl"):
                self.group_influence("self", "loss", R["subset_self_actl_infl"], R[f"subset_self_{name}_infl"],
                                     "actl", name)
            for j, idx in enumerate(fixed):
                for q, suf in qs:
                    if self.has(f"subset_fixed_test_actl{suf}", f"subset_fixed_test_{name}{suf}"):
                        self.group_influence(f"fixed-test-{idx}", q, R[f"subset_fixed_test_actl{suf}"][:, j],
                                             R[f"subset_fixed_test_{name}{suf}"][:, j], "actl", name)
        # 5. z-norms.
        if self.has("z_norms"):
            self.distribution(R["z_norms"], "Z-norms", "Z-norm", "z-norms.png")
        # 6. Group sizes (range mode only).
        if self.exp.config["subset_choice_type"] == "range" and self.has("subset_indices", "subset_tags"):
            self.sizes()
        # 7. Hessian spectrum.
        if self.has("subset_hessian_spectrum"):
            max_eig = np.max(np.abs(np.asarray(R["subset_hessian_spectrum"])), axis=1)
            self.distribution(max_eig, r"Maximum eigenvalue of $H_{\lambda}(s)^{-1} H(w)$", "Eigenvalue",
                              "subset-hessian-max-eig.png")
        logger.info("wrote %d plots to %s", len(self.written), self.dir)
        return self.written

    def distribution(self, values, title, xlabel, name):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 1, figsize=(8, 8))
        plot_distribution(ax, np.asarray(values), title=title, subtitle=self.subtitle, xlabel=xlabel,
                          ylabel="Frequency")
        self.save(fig, name)

    def sizes(self):
        import matplotlib.pyplot as plt

        R = self.R
        specs = []
        if self.has("subset_self_pred_infl"):
            specs.append(("sizes_self_loss.png", "Group self-influence", "Self-influence", R["subset_self_pred_infl"]))
        if self.has("subset_fixed_test_pred_infl"):
            for j, idx in enumerate(np.asarray(R["fixed_test"])):
                specs.append((f"sizes_fixed-test-{idx}_loss.png", f"Group influence on test pt {idx}", "Influence",
                              np.asarray(R["subset_fixed_test_pred_infl"])[:, j]))
        if self.has("subset_train_accuracy"):
            specs.append(("sizes_train-accuracy.png", "Train accuracy by subset size", "Train accuracy",
                          R["subset_train_accuracy"]))
        if self.has("subset_test_accuracy"):
            specs.append(("sizes_test-accuracy.png", "Test accuracy by subset size", "Test accuracy",
                          R["subset_test_accuracy"]))
        for name, title, ylabel, value in specs:
            fig, ax = plt.subplots(1, 1, figsize=(8, 8))
            plot_against_subset_size(ax, R["subset_tags"], R["subset_indices"], np.asarray(value), title=title,
                                     subtitle=self.subtitle, xlabel="Group size", ylabel=ylabel)
            self.save(fig, name)


def plot_all(exp, save_and_close: bool = True) -> list[Path]:
    """Draw every figure of the original's ``plot_all`` for a finished ss_logreg run; returns the files."""
    return _Plotter(exp, save_and_close).run()


SUMMARY_FIGURE = "summary.png"


def plot_summary(exp, save_and_close: bool = True) -> Path:
    """The run's one summary figure, ``{run_dir}/summary.png``: the paper's scatter of
    predicted (first-order) against actual group effects, one panel per loss target
    (``self`` and each fixed test point), points coloured by group type with a legend, and
    Spearman's rho in each panel's title. Works on summary-mode runs too."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    R = exp.R
    tags = list(R["subset_tags"])
    panels = [t for t in targets(R) if not t[0].endswith("_margin")]
    rhos = spearman_by_target(R)
    ncols = min(4, max(len(panels), 1))
    nrows = max(1, -(-len(panels) // ncols))
    height = 3.6 * nrows + 0.6  # 0.6 in for the legend below the panels
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, height), squeeze=False)
    colors, order = subset_type_colors(tags), tail_first(tags)
    for ax, (name, actl, pred, _, j) in zip(axes.flat, panels):
        x = np.asarray(R[actl], dtype=float) if j is None else np.asarray(R[actl], dtype=float)[:, j]
        y = np.asarray(R[pred], dtype=float) if j is None else np.asarray(R[pred], dtype=float)[:, j]
        plot_group_correlation(ax, x, y, colors=colors, size=12, alpha=0.7, order=order)
        what = "own training loss" if name == "self" else f"loss of test point {name.split('-', 1)[1]}"
        ax.set_title(f"{what}\nSpearman $\\rho$ = {rhos[name]:.3f}", fontsize=9)
        ax.set_xlabel("Actual effect", fontsize=8)
        ax.set_ylabel("Predicted effect (first order)", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [Line2D([0], [0], marker="o", linestyle="", markersize=7, markerfacecolor=c, markeredgecolor=c,
                      label=lab) for lab, c in subset_legend_entries(tags)]
    handles.append(Line2D([0], [0], color="grey", label="predicted = actual"))
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"Group effects of removing each group: {exp.get_subtitle()}", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / height, 1, 0.97))
    path = Path(exp.base_dir) / SUMMARY_FIGURE
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    if save_and_close:
        plt.close(fig)
    return path
