"""Plot helpers shared by ``plot_all`` and the figures notebook (spec experiments.md §9)."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def get_simple_subset_tags(tags: Iterable[str]) -> list[str]:
    """``tag.split('-')[0]`` for tags with a '-' (a list, not the original's py3 map)."""
    return [t.split("-")[0] if "-" in t else t for t in tags]


def generate_color_cycle(labels, only_colors: bool = False):
    """Rainbow colours evenly over the sorted unique labels."""
    import matplotlib.pyplot as plt
    labels = list(labels)
    unique = np.unique(labels)
    colors = plt.cm.rainbow(np.linspace(0, 1, max(len(unique), 1)))
    if only_colors:
        return colors
    color_map = {lab: colors[i] for i, lab in enumerate(unique)}
    return np.array([color_map[lab] for lab in labels]), color_map


def plot_distribution(ax, value, title="", subtitle="", xlabel="", ylabel=""):
    """Histogram with a KDE (``seaborn.histplot``; the original's ``distplot`` is gone)."""
    import seaborn as sns
    value = np.asarray(value, dtype=float)
    if value.size and np.ptp(value) > 0:
        sns.histplot(value, kde=True, stat="density", ax=ax)
    elif value.size:
        ax.axvline(value[0])
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def plot_influence_correlation(ax, x, y, label=None, alpha=0.5, size=5, colors=None, title="", subtitle="",
                               xlabel="Actual influence", ylabel="Predicted influence", balanced=False,
                               equal=True, spearmanr=True, sorted_labels=False):
    """Scatter of predicted against actual influence with the y = x diagonal.

    Points are shuffled with ``RandomState(0)``; the title gets the Spearman rho and p.
    ``balanced`` makes the range symmetric about 0 (the original crashed there: it passed
    the second value of ``np.max`` as the axis; fixed). Returns rho (NaN if undefined).
    """
    from scipy.stats import spearmanr as _spearmanr
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if label is not None:
        label = list(label)
        point_colors, _ = generate_color_cycle(label)
    elif colors is not None:
        point_colors = colors
    else:
        point_colors = None
    perm = np.random.RandomState(0).permutation(len(x))
    x, y = x[perm], y[perm]
    if point_colors is not None and len(np.shape(point_colors)) > 1 and len(point_colors) == len(perm):
        point_colors = np.asarray(point_colors)[perm]
    if len(x):
        min_x, max_x, min_y, max_y = x.min(), x.max(), y.min(), y.max()
    else:
        min_x = max_x = min_y = max_y = 0.0
    if equal:
        min_x = min_y = min(min_x, min_y)
        max_x = max_y = max(max_x, max_y)
    if balanced:
        mx = max(abs(min_x), abs(max_x))
        my = max(abs(min_y), abs(max_y))
        min_x, max_x, min_y, max_y = -mx, mx, -my, my
    pad_x = 0.05 * (max_x - min_x) or 0.05 * max(abs(max_x), 1e-12)
    pad_y = 0.05 * (max_y - min_y) or 0.05 * max(abs(max_y), 1e-12)
    ax.set_xlim(min_x - pad_x, max_x + pad_x)
    ax.set_ylim(min_y - pad_y, max_y + pad_y)
    lo = min(min_x - pad_x, min_y - pad_y)
    hi = max(max_x + pad_x, max_y + pad_y)
    ax.plot([lo, hi], [lo, hi], color="grey", alpha=0.3)
    ax.scatter(x, y, c=point_colors, alpha=alpha, s=size)
    rho = float("nan")
    text = f"{title}\n{subtitle}" if subtitle else title
    if spearmanr and len(x) > 1 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho, p = _spearmanr(x, y)
        text += f"\nSpearman $\\rho$ = {rho:.4f}, $p$ = {p:.3g}"
    ax.set_title(text)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return rho


def plot_against_subset_size(ax, subset_tags, subset_indices, value, title="", subtitle="",
                             xlabel="Group size", ylabel=""):
    """One line+marker series per (full) tag of ``value`` against group size."""
    tags = list(subset_tags)
    sizes = np.array([len(i) for i in subset_indices])
    value = np.asarray(value)
    unique = sorted(set(tags))
    colors = generate_color_cycle(unique, only_colors=True)
    for color, tag in zip(colors, unique):
        sel = np.flatnonzero(np.array(tags) == tag)
        order = sel[np.argsort(sizes[sel], kind="stable")]
        ax.plot(sizes[order], value[order], marker="o", markersize=3, label=tag, color=color)
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize="small")
