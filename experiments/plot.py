"""Plot helpers shared by the experiments' ``plot_all`` and the paper-figures notebook.

The original's plot helpers and the paper-figures notebook's own. Two families:

* ``plot_all`` helpers, with the original's signatures: :func:`plot_distribution`,
  :func:`generate_color_cycle`, :func:`plot_influence_correlation`,
  :func:`plot_against_subset_size`, :func:`get_simple_subset_tags`.
* Paper-figure helpers: :func:`plot_group_correlation` (the notebook's variant: zoom,
  padding, diagonal, scientific ticks, no shuffling), :func:`plot_cross` (Figure 4),
  :func:`warn_if_hidden`, :func:`simplify_axis_ticks`, :func:`hide_axis`,
  :func:`empty_panel` (a labelled blank panel for a run that is missing),
  :func:`tail_first`, the subset-type colours of the notebook, and
  :func:`plot_panel_grid`, which lays out a grid of :class:`Panel` objects.

Conventions: in every scatter x is the **actual** effect (or the reference quantity)
and y the **predicted** one; all correlations are Spearman's rho (there is no Pearson
in the paper). Functions draw on a given ``Axes`` and never save or close figures.

Fixes and deviations from the original (see docs/design.md, 'Where this suite differs from the original'):

* ``balanced=True`` crashed in ``plot_influence_correlation``
  (``np.max(np.abs(minX), np.abs(maxX))`` passes the second value as the axis); here
  it makes each range symmetric about 0 (one shared range when ``equal``).
* ``seaborn.distplot`` (removed) becomes ``histplot(kde=True, stat='density')``.
* Labels may be any iterable (the callers passed a Python 3 ``map``; the original then
  broke); ``get_simple_subset_tags`` returns a list.
* Degenerate inputs (empty, constant) do not crash: limits get a small pad and the
  Spearman value is NaN (scipy would warn and return NaN for constant input).
* ``warn_if_hidden`` uses ``int`` (``np.int`` is gone in NumPy >= 1.24).
* Unseeded shuffles of the notebook (``tail_first``) use ``RandomState(0)`` (see
  docs/design.md, 'Randomness').
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------- constants
# Subset (group) types of ss_logreg and their tab10 colour index (the notebook's colours).
SUBSET_TAG_COLOR_INDEX = {
    "pos_tail_test": 0,
    "neg_tail_test": 1,
    "feature_window": 2,
    "same_features": 3,
    "same_grad": 4,
    "random": 5,
    "random_same_class": 6,
}
SUBSET_TAG_LABELS = {
    "pos_tail_test": "Large positive test infl.",
    "neg_tail_test": "Large negative test infl.",
    "feature_window": "Shared feature value",
    "same_features": "Feature clustering",
    "same_grad": "Gradient clustering",
    "random": "Random",
    "random_same_class": "Random within class",
}
# Legend order of the notebook (``subset_tag_order``).
SUBSET_TAG_ORDER = ["feature_window", "same_features", "same_grad", "random_same_class", "random",
                    "pos_tail_test", "neg_tail_test"]
TAIL_TAGS = ("pos_tail_test", "neg_tail_test")
UNKNOWN_TAG_COLOR = (0.5, 0.5, 0.5, 1.0)

# Figure 3: log10(lambda / n) colour scale.
REG_CMAP_NAME = "plasma"
REG_CMAP_LEVELS = 10
REG_NORM_RANGE = (-7.5, 2.5)

PADDING = 0.05
DIAGONAL_STYLE = {"color": "grey", "alpha": 0.8, "linewidth": 2}
CROSS_STYLE = {"color": "grey", "alpha": 0.8, "linewidth": 1}
SPINE_COLOR = "grey"
HIDDEN_COLOR = "red"
# Outliers that would squash a panel: values beyond the 2%-98% quantile range widened by
# 1.5 times its width on each side (Tukey's fences on wider quantiles) fall outside the
# axis limits, and the panel says how many points it does not show.
OUTLIER_QUANTILES = (0.02, 0.98)
OUTLIER_FENCE = 1.5
OUTLIER_MIN_POINTS = 10


# --------------------------------------------------------------------------- small helpers
def get_simple_subset_tags(tags: Iterable[str]) -> list[str]:
    """``tag.split('-')[0]`` for every tag containing '-', else the tag (a list).

    ``random_same_class-1`` -> ``random_same_class``; ``pos_tail_test-2-1790`` ->
    ``pos_tail_test``. The original returned a Python 3 ``map`` (one-shot iterator).
    """
    return [t.split("-")[0] if "-" in t else t for t in (str(t) for t in tags)]


def _natural_key(label: Any):
    """Sort key putting ``'Data source 2'`` before ``'Data source 10'``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(label))]


def _unique_labels(labels: Sequence[Any], sorted_labels: bool = False) -> list[Any]:
    unique = list(np.unique(np.asarray(labels, dtype=object).astype(str))) if len(labels) else []
    if sorted_labels:
        unique = sorted(unique, key=_natural_key)
    return unique


def generate_color_cycle(labels: Iterable[Any], only_colors: bool = False, sorted_labels: bool = False):
    """Colours of ``plt.cm.rainbow`` spread evenly over the unique labels.

    Returns ``(colors, color_map)``: an RGBA float array of shape (n_points, 4), one
    row per label, and the dict label -> RGBA. With ``only_colors`` returns only the
    (n_unique, 4) array of the unique labels' colours. Unique labels are in
    ``np.unique`` order (as strings), or natural order with ``sorted_labels``.
    """
    import matplotlib.pyplot as plt

    labels = [str(lab) for lab in labels]
    unique = _unique_labels(labels, sorted_labels)
    colors = plt.cm.rainbow(np.linspace(0, 1, len(unique))) if unique else np.zeros((0, 4))
    if only_colors:
        return colors
    color_map = {lab: colors[i] for i, lab in enumerate(unique)}
    point_colors = np.array([color_map[lab] for lab in labels]).reshape(len(labels), 4)
    return point_colors, color_map


def _finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)]


def _bounds(v: np.ndarray) -> tuple[float, float]:
    f = _finite(v)
    return (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)


def robust_bounds(v) -> tuple[float, float]:
    """The range of the finite values of ``v``, cut at the outlier fences
    (:data:`OUTLIER_QUANTILES` widened by :data:`OUTLIER_FENCE` times their distance on
    each side) when values lie beyond them; the plain range for fewer than
    :data:`OUTLIER_MIN_POINTS` values or a zero quantile range."""
    f = _finite(np.asarray(v, dtype=float).ravel())
    lo, hi = _bounds(f)
    if f.size < OUTLIER_MIN_POINTS:
        return lo, hi
    q_lo, q_hi = np.quantile(f, OUTLIER_QUANTILES)
    width = q_hi - q_lo
    if not width > 0:
        return lo, hi
    return max(lo, float(q_lo - OUTLIER_FENCE * width)), min(hi, float(q_hi + OUTLIER_FENCE * width))


def data_limits(x: np.ndarray, y: np.ndarray, equal: bool, balanced: bool, robust: bool = False):
    """``((min_x, max_x), (min_y, max_y))``: the data ranges before zoom and padding.

    Each range spans the finite values (cut at the outlier fences with ``robust``:
    :func:`robust_bounds`); with ``equal`` both become their union; with ``balanced`` each
    becomes symmetric about 0, [-m, m] with m its largest magnitude (one shared m when
    ``equal``: the union is already shared, so both m agree).
    """
    bounds = robust_bounds if robust else _bounds
    (min_x, max_x), (min_y, max_y) = bounds(x), bounds(y)
    if equal:
        min_x = min_y = min(min_x, min_y)
        max_x = max_y = max(max_x, max_y)
    if balanced:
        mx, my = max(abs(min_x), abs(max_x)), max(abs(min_y), abs(max_y))
        min_x, max_x, min_y, max_y = -mx, mx, -my, my
    return (min_x, max_x), (min_y, max_y)


def _pad(lo: float, hi: float, frac: float) -> tuple[float, float]:
    """[lo, hi] widened by ``frac`` of its width on each side (never zero width)."""
    width = hi - lo
    if width > 0:
        pad = frac * width
    else:  # constant or empty data: a small pad around the value
        pad = frac * max(abs(lo), abs(hi)) or frac or PADDING
    return lo - pad, hi + pad


def spearman(x, y) -> tuple[float, float]:
    """Spearman's (rho, p) over the pairs where both values are finite.

    NaN (no warning) when fewer than 2 pairs remain or either side is constant.
    """
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length; got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rho, p = spearmanr(x, y)
    return float(rho), float(p)


def spearman_by_group(x, y, groups) -> dict[Any, float]:
    """Spearman rho of the points of each group value (Figure 3: one rho per lambda)."""
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    return {g.item() if hasattr(g, "item") else g: spearman(x[groups == g], y[groups == g])[0]
            for g in np.unique(groups)}


# --------------------------------------------------------------------------- plot_all helpers
def plot_distribution(ax, value, title: str = "", subtitle: str = "", xlabel: str = "", ylabel: str = ""):
    """Histogram with a KDE of ``value``; the title gets ``"\\n" + subtitle``.

    ``seaborn.histplot(kde=True, stat='density')`` replaces the removed ``distplot``.
    Non-finite values are dropped; constant data get a histogram without KDE and
    empty data an empty panel.
    """
    import seaborn as sns

    value = _finite(np.asarray(value, dtype=float).ravel())
    if value.size >= 2 and np.ptp(value) > 0:
        sns.histplot(value, kde=True, stat="density", ax=ax)
    elif value.size:
        sns.histplot(value, kde=False, stat="density", ax=ax)
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _color_spec(colors, n: int):
    """``colors`` as one colour (returned as is) or per-point colours (array or list).

    Per point: a 2-D array-like with n rows, or a 1-D sequence of n colour names or
    values. A 1-D numeric sequence of length 3 or 4 is one RGB(A) colour.
    """
    if colors is None or isinstance(colors, str):
        return colors
    if isinstance(colors, Mapping):
        raise TypeError("a dict of colours needs labels")
    if np.ndim(colors) == 2 and len(colors) == n:
        return np.asarray(colors, dtype=float)
    if np.ndim(colors) == 1 and len(colors) == n:
        arr = np.asarray(colors)
        if arr.dtype.kind in "fiu" and n in (3, 4):
            return np.atleast_2d(arr.astype(float))  # one RGB(A) colour, unambiguous for scatter
        return arr if arr.dtype.kind in "fiu" else list(colors)
    if np.ndim(colors) == 1 and len(colors) in (3, 4) and np.asarray(colors).dtype.kind in "fiu":
        return np.atleast_2d(np.asarray(colors, dtype=float))  # one RGB(A) colour
    return colors


def _take(colors, idx: np.ndarray, n: int):
    """Per-point ``colors`` reordered by ``idx``; a single colour unchanged."""
    if isinstance(colors, np.ndarray) and colors.ndim >= 1 and len(colors) == n:
        return colors[idx]
    if isinstance(colors, list) and len(colors) == n:
        return [colors[i] for i in idx]
    return colors


def _point_colors(n: int, label, colors, sorted_labels: bool):
    """Per-point colours for ``plot_influence_correlation`` (None: matplotlib's default)."""
    if label is not None:
        if len(label) != n:
            raise ValueError(f"label has {len(label)} entries for {n} points")
        if isinstance(colors, Mapping):
            return np.array([colors[lab] for lab in label], dtype=float).reshape(n, -1)
        if colors is not None:
            return _color_spec(colors, n)
        return generate_color_cycle(label, sorted_labels=sorted_labels)[0]
    return _color_spec(colors, n)


def plot_influence_correlation(ax, x, y, label=None, alpha=0.5, size=5, colors=None, title="", subtitle="",
                               xlabel="Actual influence", ylabel="Predicted influence", balanced=False,
                               equal=True, spearmanr=True, sorted_labels=False):
    """Scatter of predicted (y) against actual (x) influence with the y = x diagonal.

    Parameters
    ----------
    x, y : array-like of shape (n_points,)
        Actual and predicted influences (any iterable; flattened to float64).
    label : iterable of str, optional
        A label per point (any iterable, e.g. a ``map``); points get the rainbow colour
        of their label (:func:`generate_color_cycle`). As in the original, the legend
        is not drawn.
    colors : optional
        With ``label``: a dict label -> colour, or per-point colours. Without: per-point
        colours or one colour.
    equal : bool
        x and y share one range [min, max] over both.
    balanced : bool
        Ranges symmetric about 0 (the original crashed here; fixed).
    spearmanr : bool
        Append ``"Spearman $\\rho$ = ..., $p$ = ..."`` to the title.
    sorted_labels : bool
        Assign the rainbow colours in natural label order (``'Data source 2'`` before
        ``'Data source 10'``) instead of ``np.unique`` order.

    Limits get 5 % padding; the grey diagonal (alpha 0.3) spans the padded union range.
    Points are drawn in the order of ``RandomState(0).permutation(n)`` (rho does not
    depend on it). Returns Spearman's rho (NaN if undefined or ``spearmanr=False``).
    """
    x = np.asarray(list(x) if not hasattr(x, "__len__") else x, dtype=float).ravel()
    y = np.asarray(list(y) if not hasattr(y, "__len__") else y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length; got {x.size} and {y.size}")
    n = x.size
    if label is not None:
        label = [str(lab) for lab in label]
    point_colors = _point_colors(n, label, colors, sorted_labels)

    perm = np.random.RandomState(0).permutation(n)
    x, y = x[perm], y[perm]
    point_colors = _take(point_colors, perm, n)

    (min_x, max_x), (min_y, max_y) = data_limits(x, y, equal, balanced)
    xlim, ylim = _pad(min_x, max_x, PADDING), _pad(min_y, max_y, PADDING)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    lo, hi = min(xlim[0], ylim[0]), max(xlim[1], ylim[1])
    ax.plot([lo, hi], [lo, hi], color="grey", alpha=0.3)
    ax.scatter(x, y, c=point_colors, alpha=alpha, s=size)

    rho = float("nan")
    text = f"{title}\n{subtitle}" if subtitle else title
    if spearmanr:
        rho, p = spearman(x, y)
        text += f"\nSpearman $\\rho$ = {rho:.4f}, $p$ = {p:.3g}"
    ax.set_title(text)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return rho


def plot_against_subset_size(ax, subset_tags, subset_indices, value, title="", subtitle="",
                             xlabel="Group size", ylabel=""):
    """One line+marker series per (full) tag of ``value`` against group size.

    Series are in sorted tag order (the original's py2 dict order was arbitrary), each
    sorted by size, with rainbow colours and a legend outside the axes on the right.
    """
    tags = [str(t) for t in subset_tags]
    sizes = np.array([len(i) for i in subset_indices], dtype=np.int64)
    value = np.asarray(value, dtype=float).ravel()
    if not (len(tags) == len(sizes) == len(value)):
        raise ValueError(f"subset_tags ({len(tags)}), subset_indices ({len(sizes)}) and value "
                         f"({len(value)}) must have the same length")
    unique = sorted(set(tags))
    colors = generate_color_cycle(unique, only_colors=True)
    tag_arr = np.array(tags, dtype=object)
    for color, tag in zip(colors, unique):
        sel = np.flatnonzero(tag_arr == tag)
        order = sel[np.argsort(sizes[sel], kind="stable")]
        ax.plot(sizes[order], value[order], marker="o", markersize=3, label=tag, color=color)
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if unique:
        ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize="small")


# --------------------------------------------------------------------------- paper-figure style
def set_paper_style() -> None:
    """The notebook's style (its first cell), in the original's call order."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set()
    sns.set(color_codes=True)
    sns.set(font_scale=2)
    sns.set_style(style="whitegrid")
    plt.rcParams["font.family"] = "serif"
    plt.rcParams["mathtext.fontset"] = "cm"


def subset_tag_color(tag: str):
    """The tab10 colour of a (simple) subset type; grey for an unknown type."""
    import matplotlib.pyplot as plt

    i = SUBSET_TAG_COLOR_INDEX.get(tag)
    return UNKNOWN_TAG_COLOR if i is None else tuple(plt.cm.tab10(i))


def subset_type_colors(tags: Iterable[str]) -> np.ndarray:
    """RGBA array (n, 4) of the subset-type colours of ``tags`` (full or simple tags)."""
    simple = get_simple_subset_tags(tags)
    return np.array([subset_tag_color(t) for t in simple], dtype=float).reshape(len(simple), 4)


def subset_legend_entries(tags: Iterable[str] | None = None) -> list[tuple[str, Any]]:
    """``(label, colour)`` in the notebook's legend order, for the types in ``tags``.

    All seven types if ``tags`` is None; types not in the table come last, in grey.
    """
    present = None if tags is None else set(get_simple_subset_tags(tags))
    entries = [(SUBSET_TAG_LABELS[t], subset_tag_color(t)) for t in SUBSET_TAG_ORDER
               if present is None or t in present]
    if present is not None:
        entries += [(t, UNKNOWN_TAG_COLOR) for t in sorted(present - set(SUBSET_TAG_ORDER))]
    return entries


def tail_first(subset_tags: Iterable[str], seed: int = 0) -> np.ndarray:
    """Drawing order: tail groups first (beneath), then the others; each block shuffled.

    Returns an int64 permutation of ``range(len(subset_tags))``. The notebook's
    ``np.random.shuffle`` was unseeded; here ``RandomState(seed)`` (docs/design.md, 'Randomness').
    """
    simple = get_simple_subset_tags(subset_tags)
    rng = np.random.RandomState(seed)
    tail = np.array([i for i, t in enumerate(simple) if t in TAIL_TAGS], dtype=np.int64)
    rest = np.array([i for i, t in enumerate(simple) if t not in TAIL_TAGS], dtype=np.int64)
    rng.shuffle(tail)
    rng.shuffle(rest)
    return np.concatenate([tail, rest])


def reg_colors(lambda_over_n) -> np.ndarray:
    """Figure 3 colours: ``plasma`` with 10 levels over log10(lambda/n) in [-7.5, 2.5]."""
    cmap, norm = reg_cmap_norm()
    return cmap(norm(np.log10(np.asarray(lambda_over_n, dtype=float))))


def reg_cmap_norm():
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    return plt.get_cmap(REG_CMAP_NAME, REG_CMAP_LEVELS), mcolors.Normalize(*REG_NORM_RANGE)


# --------------------------------------------------------------------------- axis helpers
def hide_axis(ax) -> None:
    """Blank a subplot (no frame, ticks, labels or grid)."""
    ax.set_axis_off()


def simplify_axis_ticks(ax) -> None:
    """No y ticks, no grid; inward x ticks (labelsize 20) also on the right side."""
    ax.set_yticks([])
    ax.grid(False)
    ax.tick_params(axis="x", direction="in", labelsize=20)
    ax.tick_params(axis="y", which="both", right=True, direction="in")


def warn_if_hidden(ax, x, y) -> dict[str, int]:
    """Colour red each spine beyond which points fall outside the axis limits, and say in
    the panel how many points it does not show (``"3 points beyond the axes"``).

    Returns the counts per side and, under ``"total"``, the number of points not shown.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    counts = {"left": int((x < x0).sum()), "right": int((x > x1).sum()),
              "bottom": int((y < y0).sum()), "top": int((y > y1).sum())}
    for side, count in counts.items():
        if count:
            ax.spines[side].set_color(HIDDEN_COLOR)
            ax.spines[side].set_visible(True)
    total = int(((x < x0) | (x > x1) | (y < y0) | (y > y1)).sum())
    if total:
        ax.annotate(f"{total} point{'s' if total > 1 else ''} beyond the axes", xy=(0.03, 0.97),
                    xycoords="axes fraction", color=HIDDEN_COLOR, ha="left", va="top", fontsize="x-small",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    counts["total"] = total
    return counts


def empty_panel(ax, text: str, width: int = 26, fontsize: float = 14) -> None:
    """A labelled empty panel: no ticks, the (wrapped) ``text`` in the middle.

    Used for a run that is missing (the text names the command that produces it) or a
    quantity that a run does not have.
    """
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_color("lightgrey")
        spine.set_linestyle("--")
    wrapped = "\n".join(textwrap.fill(line, width=width, break_long_words=False, break_on_hyphens=False)
                        for line in str(text).splitlines() or [""])
    ax.text(0.5, 0.5, wrapped, transform=ax.transAxes, ha="center", va="center", fontsize=fontsize,
            color="dimgrey", family="monospace", wrap=False)


def draw_legend(ax, entries: Sequence[tuple[str, Any]], loc: str = "center", marker_size: float = 10,
                fontsize: Any = None, hide: bool = True, **kwargs):
    """A legend of round markers ``entries = [(label, colour), ...]`` on ``ax``.

    With ``hide`` the axis itself is blanked (the notebook puts legends in empty slots).
    """
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], marker="o", linestyle="", markersize=marker_size, markerfacecolor=c,
                      markeredgecolor=c, label=lab) for lab, c in entries]
    if hide:
        hide_axis(ax)
    if not handles:
        return None
    return ax.legend(handles=handles, loc=loc, fontsize=fontsize, frameon=not hide, **kwargs)


def draw_reg_colorbar(fig, ax, label: str = "Regularization\n($\\lambda/n$)", squeeze: float = 0.5 / 4):
    """Figure 3's colorbar in the slot ``ax``: squeezed to ``squeeze`` of its width.

    Ticks at 10^-7 ... 10^2 of lambda/n. The slot's own frame is hidden.
    """
    import matplotlib.cm as cm

    cmap, norm = reg_cmap_norm()
    sm = cm.ScalarMappable(cmap=cmap, norm=norm)
    sm.set_array([])
    hide_axis(ax)
    cax = ax.inset_axes([0.0, 0.0, squeeze, 1.0])
    ticks = np.arange(-7, 3)
    cbar = fig.colorbar(sm, cax=cax, ticks=ticks)
    cbar.ax.set_yticklabels([f"$10^{{{t}}}$" for t in ticks])
    cbar.set_label(label)
    return cbar


# --------------------------------------------------------------------------- notebook scatter
def _zoom(lo: float, hi: float, shrink: float | None, anchor: str) -> tuple[float, float]:
    if shrink is None:
        return lo, hi
    if not shrink > 0:
        raise ValueError(f"shrink must be > 0; got {shrink!r}")
    width = (hi - lo) * shrink
    if anchor == "min":
        return lo, lo + width
    if anchor == "max":
        return hi - width, hi
    if anchor == "mid":
        mid = (lo + hi) / 2
        return mid - width / 2, mid + width / 2
    raise ValueError(f"anchor must be 'min', 'max' or 'mid'; got {anchor!r}")


def plot_group_correlation(ax, x, y, colors=None, size=5, alpha=None, equal=True, balanced=False,
                           shrinkx=None, shrinky=None, anchor="min", padx=PADDING, pady=PADDING,
                           xlim=None, ylim=None, show_diagonal=True, show_x_axis=False, scientific=True,
                           order=None, warn_hidden=True, zorder=3, clip_outliers=True):
    """The notebook's group scatter: x = actual effect, y = prediction.

    Parameters
    ----------
    x, y : array-like of shape (n_points,)
    colors : per-point colours (array (n, 3|4) or list) or one colour; optional.
    equal : both axes share one range (the union of the data ranges).
    balanced : ranges symmetric about 0.
    shrinkx, shrinky : zoom factors (e.g. 0.6) applied to the range before padding,
        keeping its ``anchor`` end ('min', 'max') or centre ('mid').
    padx, pady : padding as a fraction of the (zoomed) range; 5 % by default.
    xlim, ylim : ``(low, high)`` overriding the computed limits; either end may be None.
    show_diagonal : grey y = x line (alpha 0.8, linewidth 2) across the plot.
    show_x_axis : grey y = 0 line.
    scientific : ``ticklabel_format(style='sci', scilimits=(-3, 3), useMathText=True)``.
    order : drawing order (indices), e.g. :func:`tail_first`; no shuffling otherwise.
    warn_hidden : mark spines beyond which points are hidden and count them in the panel
        (:func:`warn_if_hidden`).
    clip_outliers : when no zoom or limit is given, cut each range at its outlier fences
        (:func:`robust_bounds`) so that a few far points do not squash the rest.

    Spines are grey and there are at most ~4 ticks per axis. Returns Spearman's rho
    of (x, y) (NaN if undefined).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length; got {x.size} and {y.size}")
    n = x.size
    robust = clip_outliers and shrinkx is None and shrinky is None and xlim is None and ylim is None
    (min_x, max_x), (min_y, max_y) = data_limits(x, y, equal, balanced, robust)
    min_x, max_x = _zoom(min_x, max_x, shrinkx, anchor)
    min_y, max_y = _zoom(min_y, max_y, shrinky, anchor)
    xl, yl = _pad(min_x, max_x, padx), _pad(min_y, max_y, pady)
    if xlim is not None:
        xl = (xl[0] if xlim[0] is None else xlim[0], xl[1] if xlim[1] is None else xlim[1])
    if ylim is not None:
        yl = (yl[0] if ylim[0] is None else ylim[0], yl[1] if ylim[1] is None else ylim[1])

    if show_diagonal:
        lo, hi = min(xl[0], yl[0]), max(xl[1], yl[1])
        ax.plot([lo, hi], [lo, hi], zorder=1, **DIAGONAL_STYLE)
    if show_x_axis:
        ax.axhline(0, zorder=1, **CROSS_STYLE)
    idx = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if sorted(idx.tolist()) != list(range(n)):
        raise ValueError(f"order must be a permutation of range({n})")
    c = _take(_color_spec(colors, n), idx, n)
    if n:
        ax.scatter(x[idx], y[idx], s=size, c=c, alpha=alpha, zorder=zorder, linewidths=0)
    ax.set_xlim(*xl)
    ax.set_ylim(*yl)
    for spine in ax.spines.values():
        spine.set_color(SPINE_COLOR)
    if scientific:
        ax.ticklabel_format(style="sci", scilimits=(-2, 3), useMathText=True)
    # At most 4 ticks on x (3 intervals) so that labels of a narrow panel never collide.
    ax.locator_params(axis="x", nbins=3)
    ax.locator_params(axis="y", nbins=4)
    if warn_hidden:
        warn_if_hidden(ax, x, y)
    return spearman(x, y)[0]


def plot_cross(ax, x, y, colors=None, size=15, **kwargs):
    """Figure 4's scatter: grey lines x = 0 and y = 0 plus the y = x diagonal.

    ``x`` is the Newton approximation, ``y`` the first-order influence on the test
    prediction. Equal axes; other keyword arguments go to
    :func:`plot_group_correlation`. Returns Spearman's rho.
    """
    rho = plot_group_correlation(ax, x, y, colors=colors, size=size, **kwargs)
    ax.axhline(0, zorder=1, **CROSS_STYLE)
    ax.axvline(0, zorder=1, **CROSS_STYLE)
    return rho


def plot_lines_vs_reg(ax, series: Sequence[tuple[str, Sequence[float], Sequence[float], Any]],
                      title: str = "", ylabel: str = "", legend: bool = False):
    """Spearman rho against lambda/n (log x), one line per ``(label, regs, rhos, colour)``.

    Used by ``paper-regs-spearman.pdf``; NaN values are skipped.
    """
    for label, regs, rhos, color in series:
        regs, rhos = np.asarray(regs, float), np.asarray(rhos, float)
        ok = np.isfinite(regs) & np.isfinite(rhos) & (regs > 0)
        if ok.any():
            ax.plot(regs[ok], rhos[ok], marker="o", label=label, color=color)
    ax.set_xscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")


def plot_regs_spearman(series_by_row: Mapping[str, Sequence], titles: Sequence[str],
                       ylabel: str = r"Spearman $\rho$", xlabel: str = r"Regularization ($\lambda/n$)",
                       figsize: tuple[float, float] | None = None):
    """``paper-regs-spearman.pdf``: one :func:`plot_lines_vs_reg` panel per row of Figure 3.

    ``series_by_row``: ``{row: [(label, regs, rhos, colour), ...]}`` in panel order.
    The legend is drawn in the last panel (lower right). Returns ``(fig, axes)``.
    """
    import matplotlib.pyplot as plt

    rows = list(series_by_row)
    n = max(len(rows), 1)
    fig, axes = plt.subplots(1, n, figsize=figsize or (6 * n, 5), squeeze=False, layout="constrained")
    for j, row in enumerate(rows):
        plot_lines_vs_reg(axes[0, j], series_by_row[row], title=titles[j] if j < len(titles) else str(row),
                          legend=(j == n - 1))
    if not rows:
        empty_panel(axes[0, 0], "no regularisation runs")
    axes[0, 0].set_ylabel(ylabel)
    fig.supxlabel(xlabel)
    return fig, axes[0]


def plot_genre_effect(ax, matrix, row_labels: Sequence[str], vmin: float = -0.8, vmax: float = 0.8,
                      cmap: str = "bwr", colorbar_label: str = "Influence on genre loss", xlabel: str = "Worker"):
    """Heat map of influence per (genre row, worker column) with a colorbar."""
    matrix = np.asarray(matrix, dtype=float)
    im = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_yticks(np.arange(len(row_labels)))
    ax.set_yticklabels(list(row_labels))
    ax.set_xticks([])
    ax.set_xlabel(xlabel)
    ax.grid(False)
    cbar = ax.figure.colorbar(im, ax=ax)
    cbar.set_label(colorbar_label)
    return im


# --------------------------------------------------------------------------- panel grids
PANEL_KINDS = ("scatter", "cross", "missing", "na", "hidden")


@dataclass
class Panel:
    """One subplot of :func:`plot_panel_grid`.

    ``kind``: ``'scatter'`` (:func:`plot_group_correlation` with ``options``),
    ``'cross'`` (:func:`plot_cross`), ``'missing'`` (an empty panel labelled with
    ``text``, e.g. the command that produces a missing run), ``'na'`` (the run has no
    such quantity: the slot may take the legend or colorbar, else it is blanked or
    shows ``text``), or ``'hidden'``.
    """

    kind: str = "scatter"
    x: Any = None
    y: Any = None
    colors: Any = None
    order: Any = None
    options: dict = field(default_factory=dict)
    text: str = ""
    title: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    legend: Sequence[tuple[str, Any]] | None = None  # the grid's legend (drawn right of the panels)
    groups: Any = None  # per-point group values (e.g. lambda), for spearman_by_group

    def __post_init__(self):
        if self.kind not in PANEL_KINDS:
            raise ValueError(f"Panel kind must be one of {PANEL_KINDS}; got {self.kind!r}")
        if self.kind in ("scatter", "cross"):
            if self.x is None or self.y is None:
                raise ValueError(f"a {self.kind!r} panel needs x and y")
            self.x = np.asarray(self.x, dtype=float).ravel()
            self.y = np.asarray(self.y, dtype=float).ravel()
            if self.x.shape != self.y.shape:
                raise ValueError(f"x and y must have the same length; got {self.x.size} and {self.y.size}")


def plot_panel_grid(panels: Sequence[Sequence[Panel]], row_labels: Sequence[str] | None = None,
                    col_titles: Sequence[str] | None = None, xlabel: str | None = None,
                    cell_size: tuple[float, float] = (4, 4), width_ratios: Sequence[float] | None = None,
                    figsize: tuple[float, float] | None = None, legend: Sequence[tuple[str, Any]] | None = None,
                    colorbar: bool = False, suptitle: str | None = None,
                    col_xlabels: Sequence[str] | None = None):
    """Draw a grid of :class:`Panel` (rows x columns) and return ``(fig, axes, rhos)``.

    ``row_labels`` become the y labels of the first column, ``col_titles`` the titles
    of the first row, ``col_xlabels`` the x labels of the last row, ``xlabel`` a
    figure-wide x label. ``legend`` entries ``[(label, colour)]`` go into an extra column
    right of the panels (never over a panel); ``colorbar=True`` puts Figure 3's lambda/n
    colorbar there instead. An ``'na'`` panel shows its ``text`` (e.g. why the quantity
    is not defined). ``rhos`` is a float array (rows, columns) of the Spearman values of
    the scatter panels (NaN elsewhere).
    """
    import matplotlib.pyplot as plt

    grid = [list(row) for row in panels]
    nrows = len(grid)
    ncols = max((len(r) for r in grid), default=0)
    if nrows == 0 or ncols == 0:
        raise ValueError("plot_panel_grid needs at least one panel")
    for r in grid:
        r.extend(Panel(kind="hidden") for _ in range(ncols - len(r)))
    if legend is None and not colorbar:  # a panel's own legend goes right of the panels as well
        legend = next((p.legend for r in grid for p in r if p.legend and p.kind in ("scatter", "cross")), None)
    any_data = any(p.kind in ("scatter", "cross") for r in grid for p in r)
    needs_slot = (legend is not None or colorbar) and any_data
    slot = None
    extra = needs_slot
    total_cols = ncols + (1 if extra else 0)
    if extra:
        slot = ((nrows - 1) // 2, ncols)
    ratios = list(width_ratios) if width_ratios is not None else [1.0] * ncols
    if len(ratios) != ncols:
        raise ValueError(f"width_ratios has {len(ratios)} entries for {ncols} columns")
    if extra:
        ratios.append(0.5 if colorbar else 1.0)
    if figsize is None:
        figsize = (cell_size[0] * sum(ratios), cell_size[1] * nrows)
    fig, axes = plt.subplots(nrows, total_cols, figsize=figsize, squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": ratios})
    rhos = np.full((nrows, ncols), np.nan)
    for i in range(nrows):
        for j in range(total_cols):
            ax = axes[i, j]
            if j >= ncols:
                if (i, j) != slot:
                    hide_axis(ax)
                continue
            p = grid[i][j]
            if p.kind in ("scatter", "cross"):
                fn = plot_group_correlation if p.kind == "scatter" else plot_cross
                rhos[i, j] = fn(ax, p.x, p.y, colors=p.colors, order=p.order, **p.options)
            elif p.kind == "missing":
                empty_panel(ax, p.text)
            elif p.kind in ("na", "hidden"):
                if p.text:
                    empty_panel(ax, p.text)
                else:
                    hide_axis(ax)
            if p.title is not None:
                ax.set_title(p.title)
            if p.xlabel is not None:
                ax.set_xlabel(p.xlabel)
            if p.ylabel is not None:
                ax.set_ylabel(p.ylabel)
    if row_labels is not None:
        for i, label in enumerate(row_labels):
            if label and grid[i][0].ylabel is None:
                axes[i, 0].set_ylabel(label)
    if col_titles is not None:
        for j, title in enumerate(col_titles):
            if title and grid[0][j].title is None:
                axes[0, j].set_title(title)
    if col_xlabels is not None:
        for j, label in enumerate(col_xlabels):
            if label and grid[-1][j].xlabel is None:
                axes[-1, j].set_xlabel(label)
    if slot is not None:
        if colorbar:
            draw_reg_colorbar(fig, axes[slot])
        else:
            draw_legend(axes[slot], legend, loc="center", fontsize="small")
    if xlabel:
        fig.supxlabel(xlabel)
    if suptitle:
        fig.suptitle(suptitle)
    return fig, axes, rhos
