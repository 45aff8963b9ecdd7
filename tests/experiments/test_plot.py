"""Plot helpers of plot_all and the figures notebook, on the Agg backend."""
import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from experiments import plot  # noqa: E402

TAGS = (["random"] * 6 + ["pos_tail_test-2-1790"] * 5 + ["neg_tail_test-0-9009"] * 4
        + ["random_same_class-1"] * 3 + ["same_grad"] * 2)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def xy():
    rng = np.random.RandomState(3)
    x = rng.normal(0, 1, len(TAGS))
    y = 0.5 * x + 0.3 * rng.normal(0, 1, len(TAGS)) + 2.0
    return x, y


def _ax():
    return plt.subplots(figsize=(4, 4))[1]


def _diagonals(ax):
    return [ln for ln in ax.lines if np.allclose(ln.get_xdata(), ln.get_ydata()) and len(ln.get_xdata()) == 2]


# --------------------------------------------------------------------------- small helpers
def test_get_simple_subset_tags():
    out = plot.get_simple_subset_tags(iter(["random_same_class-1", "pos_tail_test-2-1790", "random", "same_grad"]))
    assert out == ["random_same_class", "pos_tail_test", "random", "same_grad"]
    assert isinstance(out, list)


def test_generate_color_cycle_gives_one_rainbow_colour_per_label():
    labels = ["b", "a", "c", "a", "b"]
    colors, cmap = plot.generate_color_cycle(labels)
    assert colors.shape == (5, 4) and sorted(cmap) == ["a", "b", "c"]
    np.testing.assert_allclose(cmap["a"], plt.cm.rainbow(0.0))
    np.testing.assert_allclose(cmap["c"], plt.cm.rainbow(1.0))
    np.testing.assert_allclose(colors[1], colors[3])        # same label, same colour
    assert not np.allclose(colors[0], colors[1])
    assert plot.generate_color_cycle(labels, only_colors=True).shape == (3, 4)
    # Natural order: "Data source 2" gets an earlier colour than "Data source 10".
    _, natural = plot.generate_color_cycle(["Data source 10", "Data source 2"], sorted_labels=True)
    np.testing.assert_allclose(natural["Data source 2"], plt.cm.rainbow(0.0))
    _, lexical = plot.generate_color_cycle(["Data source 10", "Data source 2"])
    np.testing.assert_allclose(lexical["Data source 10"], plt.cm.rainbow(0.0))
    assert plot.generate_color_cycle([], only_colors=True).shape == (0, 4)


def test_spearman_helpers(xy):
    x, y = xy
    assert plot.spearman(x, y)[0] == pytest.approx(spearmanr(x, y)[0], rel=1e-12)
    assert np.isnan(plot.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])
    assert np.isnan(plot.spearman([], [])[0])
    with pytest.raises(ValueError, match="same length"):
        plot.spearman([1.0], [1.0, 2.0])
    g = np.array([1, 1, 1, 2, 2, 2, 2] + [3] * (len(x) - 7))
    by = plot.spearman_by_group(x, y, g)
    assert set(by) == {1, 2, 3}
    assert by[2] == pytest.approx(spearmanr(x[3:7], y[3:7])[0])


# --------------------------------------------------------------------------- plot_influence_correlation
def test_equal_axes_share_the_padded_union_range(xy):
    x, y = xy
    ax = _ax()
    plot.plot_influence_correlation(ax, x, y)
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = 0.05 * (hi - lo)
    np.testing.assert_allclose(ax.get_xlim(), (lo - pad, hi + pad))
    np.testing.assert_allclose(ax.get_ylim(), (lo - pad, hi + pad))
    (diag,) = _diagonals(ax)
    np.testing.assert_allclose(diag.get_xdata(), (lo - pad, hi + pad))
    assert diag.get_color() == "grey" and diag.get_alpha() == 0.3


def test_unequal_axes_and_balanced_ranges(xy):
    x, y = xy
    ax = _ax()
    plot.plot_influence_correlation(ax, x, y, equal=False)
    np.testing.assert_allclose(ax.get_xlim(), (x.min() - 0.05 * np.ptp(x), x.max() + 0.05 * np.ptp(x)))
    np.testing.assert_allclose(ax.get_ylim(), (y.min() - 0.05 * np.ptp(y), y.max() + 0.05 * np.ptp(y)))
    # balanced crashed in the original (np.max with an axis argument); now symmetric,
    # padded by 5 % of the symmetric width (2 m) on each side.
    ax = _ax()
    plot.plot_influence_correlation(ax, x, y, equal=False, balanced=True)
    mx, my = np.abs(x).max(), np.abs(y).max()
    np.testing.assert_allclose(ax.get_xlim(), (-1.1 * mx, 1.1 * mx))
    np.testing.assert_allclose(ax.get_ylim(), (-1.1 * my, 1.1 * my))
    ax = _ax()
    plot.plot_influence_correlation(ax, x, y, balanced=True)
    m = max(mx, my)
    np.testing.assert_allclose(ax.get_xlim(), (-1.1 * m, 1.1 * m))
    np.testing.assert_allclose(ax.get_ylim(), ax.get_xlim())
    (diag,) = _diagonals(ax)
    np.testing.assert_allclose(diag.get_xdata(), (-1.1 * m, 1.1 * m))


def test_title_carries_scipys_spearman(xy):
    x, y = xy
    ax = _ax()
    rho = plot.plot_influence_correlation(ax, x, y, title="Group self-influence on loss", subtitle="hospital")
    expect, p = spearmanr(x, y)
    assert rho == pytest.approx(expect, rel=1e-12)
    title = ax.get_title()
    assert title.startswith("Group self-influence on loss\nhospital\nSpearman $\\rho$ = ")
    m = re.search(r"Spearman \$\\rho\$ = ([-0-9.e]+), \$p\$ = ([-0-9.e+]+)", title)
    assert float(m.group(1)) == pytest.approx(expect, abs=5e-5)
    assert float(m.group(2)) == pytest.approx(p, rel=1e-2)
    ax = _ax()
    assert np.isnan(plot.plot_influence_correlation(ax, x, y, title="t", spearmanr=False))
    assert ax.get_title() == "t"
    assert ax.get_xlabel() == "Actual influence" and ax.get_ylabel() == "Predicted influence"


def test_points_are_shuffled_with_randomstate_0_and_coloured_by_label(xy):
    x, y = xy
    labels = plot.get_simple_subset_tags(TAGS)
    ax = _ax()
    rho = plot.plot_influence_correlation(ax, x, y, label=map(str, labels))   # a one-shot iterator
    perm = np.random.RandomState(0).permutation(len(x))
    (sc,) = ax.collections
    np.testing.assert_allclose(sc.get_offsets(), np.column_stack([x[perm], y[perm]]))
    _, cmap = plot.generate_color_cycle(labels)
    expect = np.array([cmap[labels[i]] for i in perm])
    np.testing.assert_allclose(sc.get_facecolors()[:, :3], expect[:, :3])
    assert sc.get_alpha() == 0.5 and np.allclose(sc.get_sizes(), 5)
    # Shuffling never changes rho: same value as on the unshuffled and on reversed data.
    assert rho == pytest.approx(spearmanr(x, y)[0], rel=1e-12)
    assert plot.plot_influence_correlation(_ax(), x[::-1], y[::-1]) == pytest.approx(rho, rel=1e-12)


def test_label_colours_from_a_dict(xy):
    x, y = xy
    labels = ["a"] * 10 + ["b"] * (len(x) - 10)
    ax = _ax()
    plot.plot_influence_correlation(ax, x, y, label=labels, colors={"a": (1, 0, 0, 1), "b": (0, 0, 1, 1)})
    perm = np.random.RandomState(0).permutation(len(x))
    fc = ax.collections[0].get_facecolors()
    assert all(np.allclose(fc[k, :3], (1, 0, 0) if perm[k] < 10 else (0, 0, 1)) for k in range(len(x)))
    with pytest.raises(ValueError, match="label has"):
        plot.plot_influence_correlation(_ax(), x, y, label=["a"])


@pytest.mark.parametrize("x, y", [([], []), ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0]), ([0.0], [0.0]),
                                  ([0.0, 0.0], [1.0, 3.0]), ([1e-14, 1e-14], [1e-14, 1e-14])])
@pytest.mark.parametrize("balanced", [False, True])
def test_degenerate_inputs_do_not_crash_or_warn(x, y, balanced):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = _ax()
        rho = plot.plot_influence_correlation(ax, np.array(x), np.array(y), balanced=balanced, title="t")
        assert np.isnan(rho) and "nan" in ax.get_title()
        lo, hi = ax.get_xlim()
        assert np.isfinite([lo, hi]).all() and hi > lo
        ax = _ax()
        assert np.isnan(plot.plot_group_correlation(ax, np.array(x), np.array(y), balanced=balanced))
        assert np.diff(ax.get_ylim())[0] > 0
        plot.plot_distribution(_ax(), np.array(x), "t", "s", "x", "y")


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        plot.plot_influence_correlation(_ax(), [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        plot.plot_group_correlation(_ax(), [1.0, 2.0], [1.0])


def test_figures_are_written_to_files(tmp_path, xy):
    x, y = xy
    fig, ax = plt.subplots(figsize=(8, 8))
    plot.plot_influence_correlation(ax, x, y, label=TAGS, title="t", subtitle="s")
    for name in ("f.png", "f.pdf"):
        fig.savefig(tmp_path / name, bbox_inches="tight")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"


# --------------------------------------------------------------------------- distribution, sizes
def test_plot_distribution_is_a_density_histogram_with_kde():
    ax = _ax()
    plot.plot_distribution(ax, np.random.RandomState(0).normal(size=200), "Z-norms", "hospital", "Z-norm", "Frequency")
    assert ax.get_title() == "Z-norms\nhospital" and ax.get_xlabel() == "Z-norm"
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    assert len(heights) > 3 and (heights * widths).sum() == pytest.approx(1.0, rel=1e-6)   # density
    assert len(ax.lines) == 1                                                               # the KDE
    ax = _ax()
    plot.plot_distribution(ax, [], "t", "", "x", "y")
    assert ax.get_title() == "t"


def test_plot_against_subset_size():
    tags = ["b", "a", "b", "a", "b"]
    indices = [np.arange(5), np.arange(3), np.arange(1), np.arange(7), np.arange(2)]
    value = np.array([5.0, 3.0, 1.0, 7.0, 2.0])
    ax = _ax()
    plot.plot_against_subset_size(ax, tags, indices, value, "Group self-influence", "sub", "Group size", "Self")
    assert [ln.get_label() for ln in ax.lines] == ["a", "b"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [3, 7])
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [1, 2, 5])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [1.0, 2.0, 5.0])
    assert ax.get_legend() is not None and ax.get_title() == "Group self-influence\nsub"
    with pytest.raises(ValueError, match="same length"):
        plot.plot_against_subset_size(_ax(), tags, indices[:2], value)


# --------------------------------------------------------------------------- notebook helpers
def test_plot_group_correlation_limits_diagonal_and_rho(xy):
    x, y = xy
    ax = _ax()
    rho = plot.plot_group_correlation(ax, x, y, colors=plot.subset_type_colors(TAGS), order=plot.tail_first(TAGS))
    assert rho == pytest.approx(spearmanr(x, y)[0], rel=1e-12)
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    np.testing.assert_allclose(ax.get_xlim(), (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    np.testing.assert_allclose(ax.get_ylim(), ax.get_xlim())
    (diag,) = _diagonals(ax)
    assert diag.get_alpha() == 0.8 and diag.get_linewidth() == 2 and diag.get_color() == "grey"
    assert all(np.allclose(s.get_edgecolor(), matplotlib.colors.to_rgba("grey")) for s in ax.spines.values())
    (sc,) = ax.collections
    order = plot.tail_first(TAGS)
    np.testing.assert_allclose(sc.get_offsets(), np.column_stack([x[order], y[order]]))
    np.testing.assert_allclose(sc.get_facecolors(), plot.subset_type_colors(TAGS)[order])
    assert ax.xaxis.get_major_formatter().get_useMathText()
    with pytest.raises(ValueError, match="permutation"):
        plot.plot_group_correlation(_ax(), x, y, order=np.zeros(len(x), dtype=int))


@pytest.mark.parametrize("equal, balanced, expect", [
    (False, False, ((-1.0, 2.0), (0.5, 4.0))),
    (True, False, ((-1.0, 4.0), (-1.0, 4.0))),
    (False, True, ((-2.0, 2.0), (-4.0, 4.0))),
    (True, True, ((-4.0, 4.0), (-4.0, 4.0))),  # one shared symmetric range
])
def test_limits_helper_is_the_range_rule_of_both_scatters(equal, balanced, expect):
    x, y = np.array([-1.0, 2.0, np.nan, 0.5]), np.array([0.5, 4.0, 1.0, np.inf])   # non-finite values ignored
    assert plot.data_limits(x, y, equal, balanced) == expect
    # Both scatter functions pad the same ranges by 5 %.
    for draw in (plot.plot_influence_correlation, plot.plot_group_correlation):
        ax = _ax()
        draw(ax, x, y, equal=equal, balanced=balanced)
        for lim, (lo, hi) in zip((ax.get_xlim(), ax.get_ylim()), expect):
            assert lim == pytest.approx((lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)), rel=1e-12)
    assert plot.data_limits(np.array([]), np.array([np.nan]), True, True) == ((0.0, 0.0), (0.0, 0.0))


@pytest.mark.parametrize("anchor, expect", [("min", (0.0, 4.0)), ("max", (6.0, 10.0)), ("mid", (3.0, 7.0))])
def test_shrink_anchors_and_padding(anchor, expect):
    x = np.array([0.0, 10.0, 5.0])
    ax = _ax()
    plot.plot_group_correlation(ax, x, x, shrinkx=0.4, shrinky=0.4, anchor=anchor, padx=0.0, pady=0.25)
    np.testing.assert_allclose(ax.get_xlim(), expect)
    np.testing.assert_allclose(ax.get_ylim(), (expect[0] - 1.0, expect[1] + 1.0))
    with pytest.raises(ValueError, match="anchor"):
        plot.plot_group_correlation(_ax(), x, x, shrinkx=0.5, anchor="left")


def test_limit_overrides_balanced_and_zero_line():
    x, y = np.array([-1.0, 2.0, 0.5]), np.array([0.0, 4.0, 1.0])
    ax = _ax()
    plot.plot_group_correlation(ax, x, y, equal=False, xlim=(-0.3, None), ylim=(None, 8.0), show_diagonal=False,
                                show_x_axis=True)
    assert ax.get_xlim() == pytest.approx((-0.3, 2.15)) and ax.get_ylim() == pytest.approx((-0.2, 8.0))
    assert not _diagonals(ax)
    assert any(np.allclose(ln.get_ydata(), 0) for ln in ax.lines)
    ax = _ax()
    plot.plot_group_correlation(ax, x, y, balanced=True)
    # 5 % of the symmetric width 8 on each side.
    assert ax.get_xlim() == pytest.approx((-4.4, 4.4)) and ax.get_ylim() == pytest.approx((-4.4, 4.4))


def test_warn_if_hidden_marks_the_spines():
    x = np.array([0.0, 1.0, 2.0, 50.0, 60.0])
    ax = _ax()
    plot.plot_group_correlation(ax, x, x, xlim=(None, 5.0), ylim=(-10.0, 100.0))
    assert matplotlib.colors.to_hex(ax.spines["right"].get_edgecolor()) == "#ff0000"
    assert matplotlib.colors.to_hex(ax.spines["left"].get_edgecolor()) != "#ff0000"
    assert any(t.get_text() == "2 points beyond the axes" for t in ax.texts)
    counts = plot.warn_if_hidden(ax, x, x)
    assert counts == {"left": 0, "right": 2, "bottom": 0, "top": 0, "total": 2}


def test_outliers_are_cut_at_the_fences_and_counted_in_the_panel():
    rng = np.random.RandomState(0)
    x = rng.normal(size=200)
    y = x + 0.1 * rng.normal(size=200)
    x_out, y_out = np.append(x, [5e3, -4e3, 7e3]), np.append(y, [1.0, 2e3, 0.0])
    # The fences of the bulk: 2%-98% quantile range widened by 1.5 widths on each side.
    q_lo, q_hi = np.quantile(x_out, [0.02, 0.98])
    assert plot.robust_bounds(x_out) == pytest.approx((q_lo - 1.5 * (q_hi - q_lo), q_hi + 1.5 * (q_hi - q_lo)))
    assert plot.robust_bounds(x) == pytest.approx((x.min(), x.max()))  # nothing beyond: the plain range
    ax = _ax()
    plot.plot_group_correlation(ax, x_out, y_out, equal=False)
    lo, hi = ax.get_xlim()
    assert hi < 50 and lo > -50  # the bulk spans a few units; the three outliers do not squash it
    hidden = int(np.sum((x_out < lo) | (x_out > hi) | (y_out < ax.get_ylim()[0]) | (y_out > ax.get_ylim()[1])))
    assert hidden == 3 and any(t.get_text() == "3 points beyond the axes" for t in ax.texts)
    ax = _ax()
    plot.plot_group_correlation(ax, x_out, y_out, equal=False, clip_outliers=False)
    assert ax.get_xlim()[1] > 7e3 and not ax.texts


def test_plot_cross_draws_zero_lines_and_diagonal():
    rng = np.random.RandomState(0)
    x = rng.normal(size=30)
    y = x + 0.1 * rng.normal(size=30)
    ax = _ax()
    rho = plot.plot_cross(ax, x, y)
    assert rho == pytest.approx(spearmanr(x, y)[0])
    assert np.allclose(ax.collections[0].get_sizes(), 15)
    assert any(np.allclose(ln.get_xdata(), 0) for ln in ax.lines)      # x = 0
    assert any(np.allclose(ln.get_ydata(), 0) for ln in ax.lines)      # y = 0
    assert len(_diagonals(ax)) == 1


def test_tail_first_and_subset_colours():
    order = plot.tail_first(TAGS)
    simple = plot.get_simple_subset_tags(TAGS)
    assert sorted(order) == list(range(len(TAGS)))
    assert all(simple[i] in plot.TAIL_TAGS for i in order[:9])
    assert not any(simple[i] in plot.TAIL_TAGS for i in order[9:])
    np.testing.assert_array_equal(order, plot.tail_first(TAGS))            # seeded
    assert not np.array_equal(order, plot.tail_first(TAGS, seed=1))
    colors = plot.subset_type_colors(TAGS + ["mystery"])
    np.testing.assert_allclose(colors[0], plt.cm.tab10(5))                # random
    np.testing.assert_allclose(colors[6], plt.cm.tab10(0))                # pos_tail_test
    np.testing.assert_allclose(colors[15], plt.cm.tab10(6))               # random_same_class
    np.testing.assert_allclose(colors[-1], plot.UNKNOWN_TAG_COLOR)
    labels = [lab for lab, _ in plot.subset_legend_entries()]
    assert labels == ["Shared feature value", "Feature clustering", "Gradient clustering", "Random within class",
                      "Random", "Large positive test infl.", "Large negative test infl."]
    assert [lab for lab, _ in plot.subset_legend_entries(["random", "x-1"])] == ["Random", "x"]


def test_reg_colors_follow_log_lambda():
    cmap, norm = plot.reg_cmap_norm()
    c = plot.reg_colors([1e-7, 1.0, 100.0])
    np.testing.assert_allclose(c[0], cmap(norm(-7)))
    np.testing.assert_allclose(c[2], cmap(norm(2)))
    assert not np.allclose(c[0], c[1])


def test_axis_helpers():
    ax = _ax()
    plot.empty_panel(ax, "missing ss_logreg/x: run python scripts/subsets_infl_logreg.py --dataset-id x")
    assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    assert "subsets_infl_logreg.py" in ax.texts[0].get_text().replace("\n", "")
    ax = _ax()
    plot.hide_axis(ax)
    assert not ax.axison
    ax = _ax()
    plot.simplify_axis_ticks(ax)
    assert ax.get_yticks().size == 0


# --------------------------------------------------------------------------- panel grids
def test_panel_validation():
    with pytest.raises(ValueError, match="kind"):
        plot.Panel(kind="pie")
    with pytest.raises(ValueError, match="needs x and y"):
        plot.Panel(kind="scatter")
    with pytest.raises(ValueError, match="same length"):
        plot.Panel(x=[1.0], y=[1.0, 2.0])


def test_panel_grid_puts_the_legend_right_of_the_panels_never_in_one(xy):
    x, y = xy
    panels = [[plot.Panel(x=x, y=y), plot.Panel(kind="na", text="no margin"),
               plot.Panel(kind="missing", text="missing a/b: run c")],
              [plot.Panel(x=x, y=-y), plot.Panel(kind="cross", x=x, y=y), plot.Panel(kind="missing", text="see above")]]
    fig, axes, rhos = plot.plot_panel_grid(panels, ["row 0", "row 1"], ["A", "B", "C"], xlabel="Actual effect",
                                           legend=plot.subset_legend_entries())
    assert axes.shape == (2, 4)
    legends = [(i, j) for i in range(2) for j in range(4) if axes[i, j].get_legend() is not None]
    assert legends == [(0, 3)] and not axes[0, 3].axison
    # The 'na' slot keeps its own text instead of the legend.
    assert axes[0, 1].get_legend() is None and "no margin" in axes[0, 1].texts[0].get_text()
    assert rhos[0, 0] == pytest.approx(spearmanr(x, y)[0]) and rhos[1, 0] == pytest.approx(-rhos[0, 0])
    assert np.isnan(rhos[0, 1]) and np.isnan(rhos[:, 2]).all() and not np.isnan(rhos[1, 1])
    assert [a.get_title() for a in axes[0, :3]] == ["A", "B", "C"]
    assert axes[1, 0].get_ylabel() == "row 1"
    assert "missing a/b" in axes[0, 2].texts[0].get_text()
    assert fig.get_supxlabel() == "Actual effect"


def test_panel_grid_adds_a_legend_column_when_there_is_no_slot(xy, tmp_path):
    x, y = xy
    fig, axes, rhos = plot.plot_panel_grid([[plot.Panel(x=x, y=y), plot.Panel(x=y, y=x)]],
                                           legend=[("Pos. LF", "b"), ("Neg. LF", "r")])
    assert axes.shape == (1, 3) and axes[0, 2].get_legend() is not None and rhos.shape == (1, 2)
    fig.savefig(tmp_path / "g.pdf")
    # Colorbar in its own column too (Figure 3).
    fig, axes, _ = plot.plot_panel_grid([[plot.Panel(x=x, y=y, colors=plot.reg_colors(np.full(len(x), 1e-3))),
                                          plot.Panel(kind="na")]], colorbar=True)
    assert axes.shape == (1, 3) and len(axes[0, 2].child_axes) == 1 and not axes[0, 1].child_axes
    with pytest.raises(ValueError, match="width_ratios"):
        plot.plot_panel_grid([[plot.Panel(x=x, y=y)]], width_ratios=[1, 2])
    # Only missing runs: no legend column, nothing crashes.
    fig, axes, rhos = plot.plot_panel_grid([[plot.Panel(kind="missing", text="m")]], legend=[("a", "b")])
    assert axes.shape == (1, 1) and np.isnan(rhos).all()


def test_regs_spearman_and_genre_effect_figures():
    series = {"row 0": [("Diabetes", [1e-4, 1e-3, 1e-2], [0.5, np.nan, 0.9], "purple")], "row 1": []}
    fig, axes = plot.plot_regs_spearman(series, ["Test prediction", "Test loss"])
    assert axes[0].get_xscale() == "log" and len(axes[0].lines) == 1
    np.testing.assert_allclose(axes[0].lines[0].get_xdata(), [1e-4, 1e-2])
    fig, ax = plt.subplots()
    im = plot.plot_genre_effect(ax, np.random.RandomState(0).normal(size=(3, 7)), ["a", "b", "c"])
    assert im.get_clim() == (-0.8, 0.8) and im.get_cmap().name == "bwr"
