"""Execute the paper-figures notebook headless and leave the figures in the plot folder.

    python scripts/run_figures.py [--out-dir output] [--plot-dir plots] [--timeout 1200]

Sets ``INFLUENCE_OUT_DIR`` / ``INFLUENCE_PLOT_DIR`` for the notebook (as CodaLab's
``run_figures.sh`` did), runs every cell with nbclient, and writes the executed notebook
to ``{plot_dir}/paper-figures.executed.ipynb``. Exits 1 on any cell error (2 on a bad
flag; ``--debug`` shows tracebacks).
"""
import os
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from experiments import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "paper-figures.ipynb"


def run_notebook(out_dir: Path, plot_dir: Path, timeout: int = 1200, notebook: Path = NOTEBOOK) -> Path:
    import nbformat
    from nbclient import NotebookClient

    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    plot_dir.mkdir(parents=True, exist_ok=True)
    os.environ["INFLUENCE_OUT_DIR"] = str(Path(out_dir).resolve())
    os.environ["INFLUENCE_PLOT_DIR"] = str(Path(plot_dir).resolve())
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    client.execute()
    executed = plot_dir / "paper-figures.executed.ipynb"
    nbformat.write(nb, executed)
    return executed


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--out-dir", default=str(REPO_ROOT / "output"))
    p.add_argument("--plot-dir", default=str(REPO_ROOT / "plots"))
    p.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    return p


def run(args):
    t0 = time.perf_counter()
    try:
        executed = run_notebook(Path(args.out_dir), Path(args.plot_dir), args.timeout)
    except Exception as exc:  # nbclient raises CellExecutionError and friends
        if args.debug:
            raise
        print(f"error: the figures notebook failed: {exc}", file=sys.stderr)
        return cli.EXIT_FAILURE
    pdfs = sorted(Path(args.plot_dir).glob("*.pdf"))
    print(f"figures: {len(pdfs)} PDF files in {args.plot_dir} ({time.perf_counter() - t0:.0f} s); "
          f"executed notebook: {executed}")
    return 0


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
