"""Compare two plot folders written by ``scripts/run_figures.py`` (e.g. before and after a change).

    python scripts/compare_figures.py BEFORE_PLOT_DIR AFTER_PLOT_DIR

Both folders should come from the same runs (the same ``--out-dir`` and ``INFLUENCE_FIG_*``
settings). Checked: the same PDF and CSV files; every CSV table byte-identical; every PDF
byte-identical apart from its ``/CreationDate`` (matplotlib writes the time, unless
``SOURCE_DATE_EPOCH`` is set); the notebook's printed output
(``paper-figures.executed.ipynb``, when both folders have it) identical once each folder's
own path is replaced. Prints what differs; exits 0 when everything agrees, 1 otherwise.
"""
import re
from pathlib import Path

import _bootstrap  # noqa: F401

from experiments import cli

EXECUTED = "paper-figures.executed.ipynb"


def _pdf_content(path: Path) -> bytes:
    return re.sub(rb"/CreationDate \(D:[^)]*\)", b"", path.read_bytes())


def _notebook_stdout(plot_dir: Path) -> str:
    import nbformat

    nb = nbformat.read(plot_dir / EXECUTED, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("output_type") == "stream")
    return text.replace(str(plot_dir), "<PLOT_DIR>")


def compare(before: Path, after: Path) -> list[str]:
    """What differs between the two plot folders (an empty list when nothing does)."""
    problems = []
    names = {}
    for d in (before, after):
        if not d.is_dir():
            raise FileNotFoundError(f"not a folder: {d}")
        names[d] = {p.name for p in d.iterdir() if p.suffix in (".pdf", ".csv")}
    for name in sorted(names[before] ^ names[after]):
        problems.append(f"only in {before if name in names[before] else after}: {name}")
    for name in sorted(names[before] & names[after]):
        read = _pdf_content if name.endswith(".pdf") else Path.read_bytes
        if read(before / name) != read(after / name):
            problems.append(f"differs: {name}")
    if (before / EXECUTED).is_file() and (after / EXECUTED).is_file():
        import difflib

        diff = list(difflib.unified_diff(_notebook_stdout(before.resolve()).splitlines(),
                                         _notebook_stdout(after.resolve()).splitlines(), lineterm="", n=0))
        if diff:
            problems.append("notebook output differs:\n" + "\n".join(diff[2:]))
    return problems


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("before", type=Path, help="the first plot folder")
    p.add_argument("after", type=Path, help="the second plot folder")
    return p


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv)


def run(args):
    for d in (args.before, args.after):
        if not d.is_dir():
            raise cli.ConfigError(f"not a folder: {d}")
    problems = compare(args.before, args.after)
    n_pdf = sum(1 for q in args.after.glob("*.pdf"))
    n_csv = sum(1 for q in args.after.glob("*.csv"))
    if problems:
        print("\n".join(problems))
        return 1
    print(f"identical: {n_pdf} PDF files (apart from /CreationDate), {n_csv} CSV tables"
          + (", notebook output" if (args.after / EXECUTED).is_file() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
