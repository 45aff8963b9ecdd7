"""The "Beyond the paper" figure and table of the figures notebook: the estimator ladder
(:mod:`experiments.estimator_ladder`) of each main run.

For each dataset of the notebook's settings it reads
``{out_dir}/estimator_ladder/{main ss_logreg run id}/accuracy.csv`` (the ladder of the paper-style
range run, :func:`experiments.figures.runs.ss_logreg_run`), and draws the median relative
error against group size, one line per estimator, one panel per dataset.
"""
from __future__ import annotations

from pathlib import Path

from experiments.common import DEFAULT_OUT_DIR
from experiments.estimator_ladder import ACCURACY_FILE, ESTIMATORS, EstimatorLadder
from experiments.figure_settings import Settings, display_name
from experiments.figures.runs import ss_logreg_run


def ladder_dir(settings: Settings, dataset_id: str) -> Path:
    run_id = ss_logreg_run(dataset_id, settings.num_subsets).run_id
    return Path(settings.out_dir) / EstimatorLadder.experiment_id / run_id


def ladder_message(settings: Settings, dataset_id: str) -> str:
    """What is missing for ``dataset_id``'s ladder and the command that makes it."""
    path = ladder_dir(settings, dataset_id) / ACCURACY_FILE
    out = "" if Path(settings.out_dir).resolve() == DEFAULT_OUT_DIR.resolve() else f" --out-dir {settings.out_dir}"
    return (f"missing {path}: run python scripts/estimator_ladder.py --dataset-id {dataset_id} "
            f"--subset-choice-type range --num-subsets {settings.num_subsets} --no-intermediate-results{out}")


def load_ladder_tables(settings: Settings, datasets=None) -> dict:
    """``{dataset: DataFrame of accuracy.csv}`` for the datasets whose ladder exists (see
    :func:`ladder_message` for the others)."""
    import pandas as pd

    tables = {}
    for ds in datasets or settings.datasets:
        path = ladder_dir(settings, ds) / ACCURACY_FILE
        if path.is_file():
            tables[ds] = pd.read_csv(path, dtype={"size_decile": str})
    return tables


def ladder_summary(tables: dict, target: str = "test_loss"):
    """All groups: one row per (dataset, estimator, form) with the accuracy statistics."""
    import pandas as pd

    cols = ["spearman", "median_rel_error", "p90_rel_error", "sign_agreement", "n_values"]
    parts = []
    for ds, t in tables.items():
        sel = t[(t.group_type == "all") & (t.size_decile == "all") & (t.target == target)]
        parts.append(sel.assign(dataset=ds).set_index(["dataset", "estimator", "form"])[cols])
    return pd.concat(parts) if parts else pd.DataFrame(columns=cols)


def plot_ladder(tables: dict, target: str = "test_loss", cell_size=(6.5, 5.0)):
    """Median relative error (log scale) against group size (the middle of each size decile),
    one line per estimator (form ``param``), one panel per dataset."""
    import matplotlib.pyplot as plt

    names = list(tables) or ["(no ladder runs)"]
    fig, axes = plt.subplots(1, len(names), figsize=(cell_size[0] * len(names), cell_size[1]), squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap("tab10")
    for ax, ds in zip(axes[0], names):
        t = tables.get(ds)
        ax.set_xlabel("Group size")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if t is None:
            ax.text(0.5, 0.5, "no estimator_ladder runs", ha="center", va="center", transform=ax.transAxes)
            continue
        sel = t[(t.group_type == "all") & (t.size_decile != "all") & (t.target == target) & (t.form == "param")]
        for k, e in enumerate(e for e in ESTIMATORS if e != "actual"):
            c = sel[sel.estimator == e].sort_values("size_min")
            ax.plot((c.size_min + c.size_max) / 2, c.median_rel_error.clip(lower=1e-12), "o-", ms=3,
                    color=colours(k), label=e)
        ax.set_title(display_name(ds))
    axes[0][0].set_ylabel(f"Median relative error\n({target.replace('_', ' ')})")
    if tables:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    return fig
