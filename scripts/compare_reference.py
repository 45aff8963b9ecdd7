"""Record reference outputs and check that a change leaves every result key unchanged.

    python scripts/compare_reference.py record  --ref-dir DIR [--workloads NAME ...] [--quick]
    python scripts/compare_reference.py compare --ref-dir DIR --new-dir DIR2 [--no-run] [--quick]

``record`` runs a fixed list of workloads (:data:`WORKLOADS`), each as the documented
command line in a subprocess, in its own folder ``DIR/<workload>/`` with relative
``--out-dir out`` and ``--data-dir data`` (so the saved configs, and their hashes, do not
depend on DIR), and writes ``DIR/manifest.json``: per workload the command lines, the
git commit, and the wall time of each step. ``compare`` runs the same workloads with the
current code into DIR2 (or, with ``--no-run``, takes DIR2 as it is) and compares every
file: identical run ids and file names, identical key sets, and every key's values by the
rule of its family (:func:`rule_for`):

* ``exact`` (bitwise): every integer, boolean and string array (indices, group tags,
  iteration counts, flags, run ids); every file below ``data/`` (generated inputs, the
  loaders' caches, ``babble_reduce``'s reduced matrices: no engine arithmetic); the
  counterexamples' generated datasets (phase 0) and the CV grid ``cv_regs``; configs
  (``config.json``) and the metadata of every result file (its key kinds, config hash,
  phase name; only the phase's ``seconds`` and the lineage ids ``phase_id`` / ``inputs``
  are ignored);
* ``rel`` (|a - b| <= 1e-10 max(|a|, |b|, 1e-12 max|a_ref|)): every other float key.
  They are computed by the influence engine (fits, Hessians, solves, refits, influences),
  whose floating-point summation order may legitimately change in a refactor (BLAS
  blocking and batch composition, kernels merged, sums regrouped), so a difference of a
  few rounding errors is not a change of behaviour. The floor ``1e-12 max|a_ref|``
  covers entries that are pure rounding noise relative to their key (zero eigenvalues of
  a rank-deficient group Hessian, cancellations): their own relative error is
  meaningless;
* ``certificate``: the refit/fit gradient norms (``*_grad_norm``) are residuals at
  rounding level, so any change of summation order changes them by O(1) relative; the
  rule is ``rel`` OR every value certified (<= its ``*_grad_tol`` of the same file) in
  both runs.

It prints one row per workload (files, keys compared, bitwise-equal keys, worst relative
difference, PASS/FAIL), every key that is not bitwise equal, every failure naming file
and key, and the wall times of reference and new side by side; it exits 1 on any failure.
``--quick`` skips the hospital workload (the one that needs the real UCI archive and
minutes of run time). The hospital archive is read from ``--shared-data`` (default
``$INFLUENCE_SHARED_DATA`` or ``../shared/data``; see its README) through a symlink in
the workload's data folder: nothing is copied.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import _bootstrap  # noqa: F401

import numpy as np

from experiments import cli
from experiments.common import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
RTOL = 1e-10
NOISE_FLOOR = 1e-12
LOG_DIR = "logs"
PY = "{python}"  # placeholder for the interpreter in recorded command lines

SS_RANGE = ["--subset-choice-type", "range", "--subset-min-rel-size", "0.0025", "--subset-max-rel-size", "0.25",
            "--max-memory", "100000000"]
COMMON = ["--out-dir", "out", "--no-progress"]


@dataclass(frozen=True)
class Workload:
    """A named list of steps (``(step name, argv)``), run in ``DIR/<name>/`` one after the other."""

    name: str
    steps: tuple[tuple[str, tuple[str, ...]], ...]
    prepare: str | None = None  # name of a preparation in PREPARATIONS (not timed with the steps)
    quick: bool = True  # part of --quick
    help: str = ""


def _ss_logreg(ds, num, summary=False):
    mode = ("--no-intermediate-results",) if summary else ("--no-plots",)
    return (PY, "scripts/subsets_infl_logreg.py", "--dataset-id", ds, *SS_RANGE, "--num-subsets", str(num),
            *mode, "--data-dir", "data", *COMMON)


def _cex(ds, float32):
    return (PY, "scripts/counterexamples.py", "--dataset-id", ds, *COMMON) + (("--float32",) if float32 else ())


WORKLOADS = {w.name: w for w in [
    Workload("hospital", (("ss_logreg", _ss_logreg("hospital", 100)),), prepare="hospital", quick=False,
             help="the paper's main run (range, 100 groups per type), phase files kept"),
    Workload("digits", (("ss_logreg", _ss_logreg("digits", 30)),),
             help="the same command on digits with 30 groups per type (as scripts/reproduce.py)"),
    Workload("breast_cancer", (("ss_logreg", _ss_logreg("breast_cancer", 30, summary=True)),),
             help="breast_cancer, 30 groups per type, summary file only (scripts/reproduce.py's command)"),
    *[Workload(f"{ds}{'_float32' if f32 else ''}", (("counterexamples", _cex(ds, f32)),),
               help=f"counterexamples {ds}{' --float32' if f32 else ''}")
      for ds in ("ortho2", "gauss4") for f32 in (False, True)],
    Workload("cdr", (("babble_reduce", (PY, "scripts/babble_reduce.py", "--dataset-id", "cdr", "--fit-intercept",
                                        "--sample-weights", "--data-dir", "data", *COMMON)),
                     ("data_valuation", (PY, "scripts/data_valuation.py", "--dataset-id", "reduced_cdr",
                                         "--sample-weights", "--data-dir", "data", *COMMON))),
             prepare="cdr", help="babble_reduce then data_valuation on a generated CDR database"),
    Workload("mnli", (("credit_assignment", (PY, "scripts/credit_assignment.py", "--dataset-id", "mnli",
                                             "--cv-range", "1e-3", "1e-1", "2", "--no-plots", "--data-dir", "data",
                                             *COMMON)),),
             prepare="mnli", help="credit_assignment on a generated MultiNLI bundle (the tests' CV range)"),
]}


# ---------------------------------------------------------------------------- preparations
def _prepare_hospital(wdir: Path, args) -> list[str]:
    archive = Path(args.shared_data) / "hospital" / "dataset_diabetes.zip"
    if not archive.is_file():
        raise SystemExit(f"error: --shared-data: the hospital workload needs {archive} (see "
                         f"{Path(args.shared_data) / 'README.md'}); use --quick to skip it")
    link = wdir / "data" / "hospital" / "dataset_diabetes.zip"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(archive.resolve())
    # Extract and cache the data before the timed run, so wall times measure the experiment.
    return [PY, "scripts/load_all_datasets.py", "--data-dir", "data", "--dataset-ids", "hospital",
            "--supplement-ids", "none", "--no-progress"]


def _prepare_cdr(wdir: Path, args) -> None:
    from tests.experiments.app_fixtures import make_cdr_db  # the tests' generator: one place for the format

    make_cdr_db(wdir / "data")


def _prepare_mnli(wdir: Path, args) -> None:
    from tests.experiments.app_fixtures import make_mnli_files

    make_mnli_files(wdir / "data")


PREPARATIONS = {"hospital": _prepare_hospital, "cdr": _prepare_cdr, "mnli": _prepare_mnli}


# ---------------------------------------------------------------------------- running
def _git(*cmd) -> str:
    out = subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _argv(cmd) -> list[str]:
    return [sys.executable if c == PY else str(REPO_ROOT / c) if c.startswith("scripts/") else c for c in cmd]


def _run_step(wdir: Path, name: str, cmd, timeout: float) -> float:
    log = wdir / LOG_DIR / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, INFLUENCE_OFFLINE="1")
    print(f"  [{wdir.name}] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(_argv(cmd), cwd=wdir, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    dt = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{tail}\nerror: workload {wdir.name}, step {name} failed (exit {rc}); full log {log}; "
                         f"{wdir} is incomplete (not in the manifest): remove it before recording again")
    print(f"  [{wdir.name}] {name}: ok in {dt:.1f} s", flush=True)
    return dt


def _load_manifest(root: Path) -> dict:
    path = root / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {"workloads": {}}


def _save_manifest(root: Path, manifest: dict) -> None:
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)


def record(root: Path, names: list[str], args) -> dict:
    """Run ``names`` into ``root``; refuses a workload whose folder exists (it would be reused, not rerun)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (root / name).exists():
            raise SystemExit(f"error: {root / name} exists; record into a new --ref-dir/--new-dir or remove it "
                             "(the experiments would reuse its results instead of computing them)")
    manifest = _load_manifest(root)
    manifest.update(git_commit=_git("rev-parse", "HEAD"), git_dirty=_git("status", "--porcelain") != "",
                    repo=str(REPO_ROOT), python=platform.python_version(), numpy=np.__version__,
                    host=platform.node(), cpus=os.cpu_count(),
                    env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                         if k in os.environ})
    for name in names:
        w = WORKLOADS[name]
        wdir = root / name
        wdir.mkdir()
        print(f"workload {name}: {w.help}", flush=True)
        entry = {"help": w.help, "git_commit": manifest["git_commit"], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "steps": [], "prepare_seconds": 0.0}
        if w.prepare:
            t0 = time.perf_counter()
            cmd = PREPARATIONS[w.prepare](wdir, args)
            if cmd:
                _run_step(wdir, "prepare", cmd, args.timeout)
                entry["prepare_command"] = list(cmd)
            entry["prepare_seconds"] = time.perf_counter() - t0
        for step, cmd in w.steps:
            dt = _run_step(wdir, step, cmd, args.timeout)
            entry["steps"].append({"step": step, "command": list(cmd), "cwd": name, "wall_seconds": dt})
        entry["wall_seconds"] = sum(s["wall_seconds"] for s in entry["steps"])
        manifest["workloads"][name] = entry
        _save_manifest(root, manifest)
    return manifest


# ---------------------------------------------------------------------------- comparing
@dataclass
class KeyResult:
    file: str
    key: str
    rule: str
    bitwise: bool
    ok: bool
    max_rel: float = 0.0
    note: str = ""


@dataclass
class WorkloadResult:
    name: str
    files: int = 0
    keys: list[KeyResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # structural failures (files, key sets, configs)
    phase_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)  # result file -> (ref, new)

    @property
    def ok(self) -> bool:
        return not self.errors and all(k.ok for k in self.keys)


def rule_for(relpath: str, key: str, arr: np.ndarray) -> str:
    """The comparison rule of one key (see the module docstring for the reasons)."""
    if arr.dtype.kind not in "fc":
        return "exact"
    if relpath.startswith("data/") or key == "cv_regs":
        return "exact"
    if relpath.startswith("out/counterexamples/") and Path(relpath).name.startswith("result_0-"):
        return "exact"
    if key.endswith("_grad_norm"):
        return "certificate"
    return "rel"


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a|, |b|, NOISE_FLOOR * max|a|), NaNs equal when in the same places."""
    a = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)
    b = b.astype(a.dtype)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if np.any(nan_a != nan_b):
        return float("inf")
    a, b = a[~nan_a], b[~nan_b]
    if a.size == 0:
        return 0.0
    inf = ~np.isfinite(a) | ~np.isfinite(b)
    if np.any(a[inf] != b[inf]):
        return float("inf")
    a, b = a[~inf], b[~inf]
    if a.size == 0:
        return 0.0
    floor = NOISE_FLOOR * float(np.max(np.abs(a)))
    den = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    diff = np.abs(a - b)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.where(den == 0, 1.0, den))
    return float(np.max(rel))


def _certified(arrays: dict, key: str) -> bool:
    tol = arrays.get(key[: -len("_grad_norm")] + "_grad_tol")
    return tol is not None and tol.shape == arrays[key].shape and bool(np.all(arrays[key] <= tol))


def _compare_arrays(rel: str, key: str, a: np.ndarray, b: np.ndarray, ra: dict, rb: dict) -> KeyResult:
    rule = rule_for(rel, key, a)
    if a.dtype != b.dtype or a.shape != b.shape:
        return KeyResult(rel, key, rule, False, False, float("inf"),
                         f"dtype/shape {a.dtype}{a.shape} -> {b.dtype}{b.shape}")
    if a.tobytes() == b.tobytes():
        return KeyResult(rel, key, rule, True, True)
    if rule == "exact":
        n = int(np.sum(a != b)) if a.dtype.kind not in "fc" else int(np.sum(~((a == b) | (np.isnan(a) & np.isnan(b)))))
        mr = _max_rel(a, b) if a.dtype.kind in "fc" else float("nan")
        return KeyResult(rel, key, rule, False, False, mr, f"{n} of {a.size} values differ (rule exact)")
    mr = _max_rel(a, b)
    if mr <= RTOL:
        return KeyResult(rel, key, rule, False, True, mr)
    if rule == "certificate" and _certified(ra, key) and _certified(rb, key):
        return KeyResult(rel, key, rule, False, True, mr, "differs, but certified (<= *_grad_tol) in both runs")
    return KeyResult(rel, key, rule, False, False, mr, f"max relative difference {mr:.3g} > {RTOL:g}")


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _needs_pickle(path: Path) -> bool:
    """An ``.npz`` holding object arrays (the MultiNLI bundle's genres): compared by its bytes."""
    try:
        _npz(path)
    except ValueError:
        return True
    return False


# Attributes of a result file that identify one write of it and of the phase files it was
# computed from (experiments.common: crash-proof invalidation); new ids on every run.
LINEAGE_ATTRS = ("phase_id", "inputs")


def _compare_meta(rel: str, a: np.ndarray, b: np.ndarray, res: WorkloadResult) -> KeyResult:
    ma, mb = json.loads(str(a[()])), json.loads(str(b[()]))
    sa, sb = (m.get("attrs", {}).pop("seconds", None) for m in (ma, mb))
    for m in (ma, mb):  # lineage ids (fresh per write, by design): not results
        for k in LINEAGE_ATTRS:
            m.get("attrs", {}).pop(k, None)
    if sa is not None and sb is not None:
        res.phase_seconds[rel] = (sa, sb)
    if ma == mb:  # equal but for the phase's seconds: counted as bitwise equal
        return KeyResult(rel, "__meta__", "exact", True, True)
    diff = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
    return KeyResult(rel, "__meta__", "exact", False, False, float("inf"), f"metadata differs in {diff}: "
                     f"{ {k: ma.get(k) for k in diff} } -> { {k: mb.get(k) for k in diff} }")


def _files(root: Path) -> dict[str, Path]:
    """Every file of a workload folder except the logs, by relative path (plots by name only)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(LOG_DIR + "/") or p.is_dir() or p.name.startswith("."):
            continue
        out[rel] = p
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compare_workload(name: str, ref: Path, new: Path) -> WorkloadResult:
    res = WorkloadResult(name)
    fa, fb = _files(ref), _files(new)
    runs = lambda fs: sorted({"/".join(r.split("/")[:3]) for r in fs if r.startswith("out/")})  # noqa: E731
    if runs(fa) != runs(fb):
        res.errors.append(f"run ids differ: {runs(fa)} -> {runs(fb)}")
    for rel in sorted(set(fa) ^ set(fb)):
        res.errors.append(f"file {rel} only in {'reference' if rel in fa else 'new'}")
    for rel in sorted(set(fa) & set(fb)):
        pa, pb = fa[rel], fb[rel]
        res.files += 1
        if pa.is_symlink() or pb.is_symlink() or pa.suffix in (".png", ".pdf"):
            continue  # the shared archive's link; figures are not results
        if pa.suffix == ".npz" and not _needs_pickle(pa):
            ra, rb = _npz(pa), _npz(pb)
            for key in sorted(set(ra) ^ set(rb)):
                res.errors.append(f"{rel}: key {key} only in {'reference' if key in ra else 'new'}")
            for key in sorted(set(ra) & set(rb)):
                if key == "__meta__":
                    res.keys.append(_compare_meta(rel, ra[key], rb[key], res))
                else:
                    res.keys.append(_compare_arrays(rel, key, ra[key], rb[key], ra, rb))
        elif pa.suffix == ".json":
            ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
            ok = ja == jb
            res.keys.append(KeyResult(rel, "(json)", "exact", pa.read_bytes() == pb.read_bytes(), ok,
                                      0.0 if ok else float("inf"), "" if ok else "JSON content differs"))
        else:
            same = _sha256(pa) == _sha256(pb)
            res.keys.append(KeyResult(rel, "(bytes)", "exact", same, same, 0.0 if same else float("inf"),
                                      "" if same else "file bytes differ"))
    return res


def _fmt(x: float) -> str:
    return "0" if x == 0 else ("-" if x != x else f"{x:.2e}")


def _phase_order(item) -> tuple[str, int]:
    """(run folder, phase index) of ``out/<experiment>/<run id>/result_<index>-<name>.npz``."""
    folder, _, name = item[0].rpartition("/")
    index = name.removeprefix("result_").split("-", 1)[0]
    return folder, int(index) if index.isdigit() else -1


def report(results: list[WorkloadResult], ref_manifest: dict, new_manifest: dict, phase_times: bool = False) -> bool:
    print(f"\n{'workload':<16} {'files':>5} {'keys':>6} {'bitwise':>8} {'max rel diff':>13}  result")
    for r in results:
        mr = max([k.max_rel for k in r.keys if k.max_rel == k.max_rel] or [0.0])
        print(f"{r.name:<16} {r.files:>5} {len(r.keys):>6} {sum(k.bitwise for k in r.keys):>8} {_fmt(mr):>13}  "
              f"{'PASS' if r.ok else 'FAIL'}")
    print(f"(keys: result keys, plus one per JSON or other file; rules: exact = bitwise; rel = |a-b| <= {RTOL:g} "
          f"max(|a|, |b|, {NOISE_FLOOR:g} max|a_ref|); certificate = rel, or <= *_grad_tol in both runs)")
    for r in results:
        diff = [k for k in r.keys if not k.bitwise]
        if diff:
            print(f"\n{r.name}: keys not bitwise equal ({len(diff)})")
            for k in diff:
                print(f"  {'ok  ' if k.ok else 'FAIL'} {k.file} :: {k.key} [{k.rule}] max rel {_fmt(k.max_rel)}"
                      f"{'  ' + k.note if k.note else ''}")
        for e in r.errors:
            print(f"  FAIL {r.name}: {e}")
    print(f"\n{'wall time (s)':<44} {'reference':>10} {'new':>10} {'new/ref':>8}")
    for r in results:
        wa = ref_manifest.get("workloads", {}).get(r.name, {})
        wb = new_manifest.get("workloads", {}).get(r.name, {})
        for s in wa.get("steps", []):
            sb = next((x for x in wb.get("steps", []) if x["step"] == s["step"]), None)
            tb = sb["wall_seconds"] if sb else float("nan")
            label = f"{r.name}/{s['step']}"
            print(f"{label:<44} {s['wall_seconds']:>10.1f} {tb:>10.1f} {tb / s['wall_seconds']:>8.2f}")
        for rel, (sa, sb) in sorted(r.phase_seconds.items(), key=_phase_order) if phase_times else ():
            label = f"{rel.split('/')[1]}: {Path(rel).stem.split('-', 1)[-1]}"[:42]  # experiment: phase
            print(f"  {label:<42} {sa:>10.2f} {sb:>10.2f} {sb / sa if sa else float('nan'):>8.2f}")
    print(f"reference commit {ref_manifest.get('git_commit', '?')}, new commit {new_manifest.get('git_commit', '?')}")
    ok = all(r.ok for r in results)
    print(f"\n{'PASS' if ok else 'FAIL'}: {sum(r.ok for r in results)} of {len(results)} workloads unchanged")
    return ok


def compare(ref: Path, new: Path, names: list[str], args) -> bool:
    ref_manifest = _load_manifest(ref)
    missing = [n for n in names if n not in ref_manifest["workloads"] or not (ref / n).is_dir()]
    if missing:
        raise SystemExit(f"error: --ref-dir {ref} has no recorded workload {missing}; run record first")
    for n in names:  # the commands must be the recorded ones, else the comparison means nothing
        recorded = [(s["step"], s["command"]) for s in ref_manifest["workloads"][n]["steps"]]
        current = [(s, list(c)) for s, c in WORKLOADS[n].steps]
        if recorded != current:
            raise SystemExit(f"error: workload {n}: the command lines differ from the recorded ones:\n"
                             f"  recorded {recorded}\n  current  {current}")
    new_manifest = _load_manifest(new) if args.no_run else record(new, names, args)
    results = [compare_workload(n, ref / n, new / n) for n in names]
    return report(results, ref_manifest, new_manifest, args.phase_times)


def _default_shared_data() -> str:
    return os.environ.get("INFLUENCE_SHARED_DATA") or str(REPO_ROOT.parent / "shared" / "data")


def make_parser():
    p = cli.ArgumentParser(__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{record,compare}",
                           help="record: run the workloads and save the reference; compare: run them again "
                                "and compare with the reference")
    for name in ("record", "compare"):
        s = sub.add_parser(name, help=f"{name} the reference outputs", subcommand=True)
        s.add_argument("--ref-dir", required=True, help="folder of the reference outputs and manifest.json")
        s.add_argument("--workloads", nargs="+", default=None, metavar="NAME",  # workloads, not datasets
                       help=f"default: all ({' '.join(WORKLOADS)}) for record, the recorded ones for compare")
        s.add_argument("--quick", action="store_true", help="skip the hospital workload")
        s.add_argument("--shared-data", default=_default_shared_data(),
                       help="folder holding hospital/dataset_diabetes.zip (default $INFLUENCE_SHARED_DATA or "
                            "../shared/data)")
        s.add_argument("--timeout", type=float, default=7200, help="seconds allowed per step")
        if name == "compare":
            s.add_argument("--new-dir", required=True, help="folder for the new outputs (must not hold them yet)")
            s.add_argument("--no-run", action="store_true", help="compare the outputs already in --new-dir")
            s.add_argument("--phase-times", action="store_true",
                           help="also print each phase's seconds (from the result files) side by side")
    return p


def main(argv=None) -> int:
    return cli.run_cli(make_parser(), run, argv)


def run(args) -> int:
    ref = Path(args.ref_dir).resolve()
    if args.workloads is not None:
        names = args.workloads
    elif args.command == "compare":
        names = [n for n in WORKLOADS if n in _load_manifest(ref)["workloads"]]
    else:
        names = list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ConfigError(f"--workloads: each name must be one of {list(WORKLOADS)}; got {unknown}")
    if args.quick:
        names = [n for n in names if WORKLOADS[n].quick]
    if not names:
        raise ConfigError("--workloads: no workload selected (none recorded in --ref-dir, or --quick left out all)")
    if args.command == "record":
        record(ref, names, args)
        print(f"recorded {names} in {ref}")
        return 0
    new = Path(args.new_dir).resolve()
    if new == ref:
        raise ConfigError(f"--new-dir must differ from --ref-dir; both are {ref}")
    return 0 if compare(ref, new, names, args) else 1


if __name__ == "__main__":
    raise SystemExit(main())
