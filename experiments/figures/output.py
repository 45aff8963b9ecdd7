"""Writing the paper figures and their correlation tables to the plot folder."""
from __future__ import annotations

from pathlib import Path

from experiments.figure_settings import Settings


def save_figure(fig, name: str, settings: Settings) -> Path:
    """Save ``fig`` as ``plot_dir/name`` (dpi 300, bbox tight); close it unless shown inline."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(settings.plot_dir) / name
    fig.savefig(path, dpi=300, bbox_inches="tight")
    print(f"wrote {path}")
    if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
        plt.close(fig)
    return path


def save_table(table, name: str, settings: Settings, title: str | None = None) -> Path:
    """Print ``table`` (a DataFrame) and write it as ``plot_dir/name`` (CSV)."""
    import pandas as pd

    path = Path(settings.plot_dir) / name
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.precision", 4):
        print(title or name)
        print(table.to_string())
    table.to_csv(path)
    print(f"wrote {path}")
    return path
