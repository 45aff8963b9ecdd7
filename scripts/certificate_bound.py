"""Check that refits which moved between two output folders stay within their certificates.

    python scripts/certificate_bound.py --ref-dir DIR --new-dir DIR2

For a change that is meant to move the refits (a new step rule, say): the refits of both
folders are certified, yet ``scripts/compare_reference.py compare`` reports their
parameters and every key computed from them as changed. For each ``ss_logreg`` run with
phase files in both folders (``DIR/<workload>/out/ss_logreg/<run id>/``, as ``compare``
writes them) this checks every refit whose parameters differ by more than 1e-10 relative in
some entry: two points of a refit objective whose gradient norms are g_a and g_b lie within
(g_a + g_b) / mu of each other near its optimum, mu the objective's smallest curvature
(``GroupInfluence.refit_curvature``: the smallest eigenvalue of its Hessian at the new
refit, the multinomial flat direction left out). It prints per run how many refits differ,
how many lie outside that bound and the largest ratio, and exits 1 if any refit lies
outside or is not certified in both folders. Summary-only runs have no phase files to
rebuild the objective from and are skipped with a note. The run's data folder is read
relative to its workload folder in DIR2 (as ``compare`` runs it).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import _bootstrap  # noqa: F401

import numpy as np

from experiments import cli
from experiments.subset_influence import SubsetInfluenceLogreg

RTOL = 1e-10  # compare_reference.py's relative rule for engine floats
RETRAIN = "result_6-retrain.npz"


def _arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    den = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
    return bool(np.any(np.abs(a - b) > RTOL * den))


def run_bound(run: Path, ref_run: Path) -> tuple[int, int, float]:
    """(refits that differ, refits outside the bound or uncertified, largest ||dtheta|| /
    bound) of one ``ss_logreg`` run folder against the reference's."""
    config = json.loads((run / "config.json").read_text())
    exp = SubsetInfluenceLogreg(config, out_dir=run.parent.parent, progress=False)
    exp.load_phases(range(0, 6))
    a, b = _arrays(ref_run / RETRAIN), _arrays(run / RETRAIN)
    certified = ((a["subset_refit_grad_norm"] <= a["subset_refit_grad_tol"])
                 & (b["subset_refit_grad_norm"] <= b["subset_refit_grad_tol"]))
    ta, tb = a["subset_refit_params"], b["subset_refit_params"]
    differ = [j for j in range(len(ta)) if _differs(ta[j], tb[j])]
    gi = exp.influence()
    outside, worst = 0, 0.0
    for j in differ:
        mu = gi.refit_curvature(exp.subsets[j], tb[j])
        ratio = float(np.linalg.norm(ta[j] - tb[j]) * mu
                      / (a["subset_refit_grad_norm"][j] + b["subset_refit_grad_norm"][j]))
        worst = max(worst, ratio)
        outside += int(not (certified[j] and ratio <= 1.0))
    return len(differ), outside, worst


@contextlib.contextmanager
def _working_dir(path: Path):
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def bound(ref: Path, new: Path) -> bool:
    ok, seen = True, 0
    for run in sorted(new.glob("*/out/ss_logreg/*")):
        rel = run.relative_to(new)
        ref_run = ref / rel
        if not (run / RETRAIN).exists() or not (ref_run / RETRAIN).exists():
            print(f"{rel}: skipped (no phase files in both folders)")
            continue
        with _working_dir(new / rel.parts[0]):  # the run's data folder is relative to its workload folder
            differ, outside, worst = run_bound(run, ref_run)
        seen += 1
        ok &= outside == 0
        print(f"{rel}: {differ} refits differ beyond rel, {outside} outside the certificate bound, "
              f"largest ||dtheta|| / bound {worst:.3g}  {'PASS' if outside == 0 else 'FAIL'}")
    if not seen:
        raise cli.ConfigError(f"--new-dir: no ss_logreg run with phase files in both {new} and {ref}")
    return ok


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--ref-dir", required=True, type=Path, help="folder of the reference outputs")
    p.add_argument("--new-dir", required=True, type=Path, help="folder of the new outputs (as compare writes them)")
    return p


def main(argv=None) -> int:
    return cli.run_cli(make_parser(), run, argv)


def run(args) -> int:
    return 0 if bound(args.ref_dir.resolve(), args.new_dir.resolve()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
