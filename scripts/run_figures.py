"""Execute the paper-figures notebook headless and leave the figures in the plot folder.

    python scripts/run_figures.py [--out-dir DIR] [--plot-dir DIR] [--timeout 1200]

The folders are ``--out-dir`` / ``--plot-dir`` when given, else ``$INFLUENCE_OUT_DIR`` /
``$INFLUENCE_PLOT_DIR``, else ``<repo>/output`` / ``<repo>/plots``; the other
``INFLUENCE_FIG_*`` variables select the runs (see ``experiments/figure_settings.py``).
Runs every cell with nbclient on a kernel whose environment carries these folders and has
the repository on ``PYTHONPATH``, and writes the executed notebook to
``{plot_dir}/paper-figures.executed.ipynb``. Exits 1 on any cell error (2 on a bad
flag or setting; ``--debug`` shows tracebacks).
"""
import os
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from experiments import cli
from experiments.figure_settings import settings_from_env

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "paper-figures.ipynb"


def notebook_environ(out_dir=None, plot_dir=None, environ=None) -> dict:
    """The kernel's environment: ``environ`` (default ``os.environ``) with the folders given.

    A folder given here (a flag) replaces ``INFLUENCE_OUT_DIR`` / ``INFLUENCE_PLOT_DIR``;
    one not given leaves the variable as it is. Folder variables are made absolute
    (relative to this process's working directory: the kernel runs in ``notebooks/``).
    The repository leads ``PYTHONPATH`` (so the notebook imports this checkout) and
    ``MPLBACKEND`` defaults to ``Agg``.
    """
    env = dict(os.environ if environ is None else environ)
    for var, flag in (("INFLUENCE_OUT_DIR", out_dir), ("INFLUENCE_PLOT_DIR", plot_dir),
                      ("INFLUENCE_FIG_DATA_DIR", None)):
        value = flag if flag is not None else env.get(var)
        if value:
            env[var] = str(Path(value).expanduser().resolve())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + paths)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_notebook(env: dict, plot_dir: Path, timeout: int = 1200, notebook: Path = NOTEBOOK) -> Path:
    """Execute ``notebook`` on a kernel with environment ``env``; returns the executed copy's path."""
    import nbformat
    from nbclient import NotebookClient

    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    client.execute(env=env)
    executed = Path(plot_dir) / "paper-figures.executed.ipynb"
    nbformat.write(nb, executed)
    return executed


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--out-dir", default=None, help="results folder (default: $INFLUENCE_OUT_DIR, else <repo>/output)")
    p.add_argument("--plot-dir", default=None, help="figures folder (default: $INFLUENCE_PLOT_DIR, else <repo>/plots)")
    p.add_argument("--timeout", type=int, default=1200, help="seconds allowed per notebook cell")
    return p


def run(args):
    env = notebook_environ(args.out_dir, args.plot_dir)
    try:
        settings = settings_from_env(env)  # the folders the notebook will use (created here)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    t0 = time.perf_counter()
    try:
        executed = run_notebook(env, settings.plot_dir, args.timeout)
    except Exception as exc:  # nbclient raises CellExecutionError and friends
        if args.debug:
            raise
        print(f"error: the figures notebook failed: {exc}", file=sys.stderr)
        return cli.EXIT_FAILURE
    pdfs = sorted(settings.plot_dir.glob("*.pdf"))
    print(f"figures: {len(pdfs)} PDF files in {settings.plot_dir} from {settings.out_dir} "
          f"({time.perf_counter() - t0:.0f} s); executed notebook: {executed}")
    return 0


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
