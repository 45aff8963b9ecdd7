"""Writing the paper figures and their correlation tables to the plot folder."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

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


@dataclass
class FigureLog:
    """Which figures the notebook wrote and which it could not make, with the command that
    makes what is missing. A figure without data is never written (no empty placeholder)."""

    settings: Settings
    written: list[str] = field(default_factory=list)
    not_made: list[tuple[str, str]] = field(default_factory=list)   # (figure, what is missing and its command)
    partial: list[tuple[str, str]] = field(default_factory=list)    # drawn without some runs

    def save(self, fig, name: str, missing: Sequence[str] = ()) -> Path:
        """Write ``fig`` as ``name``; ``missing``: messages of runs left out of it."""
        path = save_figure(fig, name, self.settings)
        self.written.append(name)
        for message in missing:
            self.partial.append((name, message))
            print(f"{name} drawn without: {message}")
        return path

    def skip(self, name: str, missing: Sequence[str]) -> None:
        """Record that ``name`` was not made and why; no file is written, and a file of that
        name left by an earlier run (from results no longer there) is removed."""
        for message in missing:
            self.not_made.append((name, message))
        stale = Path(self.settings.plot_dir) / name
        if stale.is_file():
            stale.unlink()
            print(f"removed {stale} (an earlier run's; its results are not there now)")
        print(f"not made: {name} ({len(missing)} run(s) missing; see the list at the end)")

    def table(self):
        """The figures not made (and those drawn without some runs), one row per missing run."""
        import pandas as pd

        rows = ([{"figure": f, "status": "not made", "missing (and the command that makes it)": m}
                 for f, m in self.not_made]
                + [{"figure": f, "status": "drawn without", "missing (and the command that makes it)": m}
                   for f, m in self.partial])
        return pd.DataFrame(rows, columns=["figure", "status", "missing (and the command that makes it)"])
