"""Benchmark: the cost of running per-group work on Dask (README "Run on a cluster").

    python scripts/benchmark_dask.py                      # no-op tasks only
    python scripts/benchmark_dask.py --data-dir data --num-subsets 512

Measures, on this machine:

* the **per-task overhead**: wall time per no-op task embedded (a Python call) and on a
  local cluster of ``--workers`` processes (submit, schedule, run, gather; one thread per
  worker), after a warm-up;
* with ``--num-subsets S`` (needs the hospital archive): the **hospital refits** as
  ss_logreg's phase 6 runs them (:func:`experiments.tasks.refit_groups`, chunks of
  64 groups of 0.25%-25% of the training set, lambda = ``--fixed-reg`` * n): the time to scatter
  the phase's data once, the wall time per chunk task embedded and on the cluster, and
  whether both give the same bits.
"""
import logging
import time

import _bootstrap  # noqa: F401

import numpy as np

from experiments import cli
from experiments.common import ConfigError


def noop_overhead(executor, num_tasks: int) -> float:
    from experiments.execution import measure_overhead
    return measure_overhead(executor, num_tasks)


def hospital_refits(executor_embedded, executor_cluster, data_dir, num_groups: int, l2_per_n: float, seed: int):
    from datasets.loader import load_dataset
    from experiments.tasks import InfluenceContext, refit_task
    from influence.group_influence import GroupInfluence
    from influence.logistic_regression import LogisticRegression
    from influence.memory import refit_chunk_size

    train = load_dataset("hospital", data_dir=data_dir).train
    X, y = np.asarray(train.x, dtype=np.float64), np.asarray(train.labels)
    n = X.shape[0]
    cfg = LogisticRegression.default_config()
    cfg["arch"] = dict(LogisticRegression.infer_arch(train), fit_intercept=False)
    model = LogisticRegression(cfg)
    lam = l2_per_n * n
    model.fit((X, y), None, lam)
    H = model.get_hessian((X, y), None, lam)
    infl = GroupInfluence(model, (X, y), lam, hessian=H)
    rng = np.random.RandomState(seed)
    sizes = np.linspace(int(0.0025 * n), int(0.25 * n), num_groups).astype(int)
    groups = [rng.choice(n, s, replace=False) for s in rng.permutation(sizes)]
    chunk = refit_chunk_size(model.num_params, n, None)  # no memory bound: chunks of MAX_REFIT_CHUNK (64) groups
    spans = [(a, min(a + chunk, num_groups)) for a in range(0, num_groups, chunk)]
    ctx = InfluenceContext.from_influence(infl, groups=groups)
    out = {"n": n, "d": model.num_params, "chunk": chunk, "tasks": len(spans)}

    t0 = time.perf_counter()
    emb = executor_embedded.map(refit_task, ctx, spans, "embedded refits")
    out["embedded_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = executor_cluster.scatter(ctx)
    out["scatter_s"] = time.perf_counter() - t0
    # First pass: each worker imports TensorFlow and rebuilds the model once (start-up);
    # second pass: the steady state of a phase.
    t0 = time.perf_counter()
    executor_cluster.map(refit_task, shared, spans, "cluster refits (cold)")
    out["cluster_cold_s"] = time.perf_counter() - t0
    from distributed import get_task_stream

    with get_task_stream(executor_cluster.client) as ts:
        t0 = time.perf_counter()
        dist = executor_cluster.map(refit_task, shared, spans, "cluster refits")
        out["cluster_s"] = time.perf_counter() - t0
    # Compute time of each task inside its worker; the rest of the wall time is Dask's.
    compute = [sum(ss["stop"] - ss["start"] for ss in t["startstops"] if ss["action"] == "compute")
               for t in ts.data if str(t["key"]).startswith("refit_task")]
    out["task_compute_s"] = float(np.mean(compute))
    workers = len(executor_cluster.client.scheduler_info()["workers"])
    out["overhead_s"] = (out["cluster_s"] * workers - float(np.sum(compute))) / len(spans)
    out["identical"] = all(a.thetas.tobytes() == b.thetas.tobytes() for a, b in zip(emb, dist))
    out["certified"] = all(np.all(r.grad_norms <= r.grad_tols) for r in emb)
    return out


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--num-workers", "--workers", dest="workers", type=int, default=2, metavar="N",
                   help="worker processes of the local Dask cluster")
    p.add_argument("--tasks", type=int, default=300, help="no-op tasks timed")
    p.add_argument("--data-dir", default=None, help="data folder (default: <repo>/data)")
    p.add_argument("--num-subsets", "--hospital-groups", dest="hospital_groups", type=int, default=0,
                   help="hospital groups refitted and timed (0: skip the hospital refits)")
    p.add_argument("--fixed-reg", "--l2-reg-per-n", dest="l2_reg_per_n", type=float, default=2e-3, metavar="R",
                   help="lambda = R * n_train (R = lambda/n; hospital's cross-validated choice: 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the groups")
    return p


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv, log_level=logging.WARNING)


def run(args):
    for name, flag in (("workers", "--num-workers"), ("tasks", "--tasks")):
        if getattr(args, name) < 1:
            raise ConfigError(f"{flag} must be >= 1; got {getattr(args, name)}")
    if args.hospital_groups < 0:
        raise ConfigError(f"--num-subsets must be >= 0; got {args.hospital_groups}")
    if not args.l2_reg_per_n > 0:
        raise ConfigError(f"--fixed-reg must be > 0; got {args.l2_reg_per_n}")
    from experiments.execution import Executor

    embedded = Executor(progress=False)
    with Executor(num_workers=args.workers, progress=False) as cluster:
        e = noop_overhead(embedded, args.tasks)
        c = noop_overhead(cluster, args.tasks)
        print(f"no-op task: embedded {1e3 * e:.4f} ms, {args.workers}-worker LocalCluster {1e3 * c:.2f} ms per task "
              f"({args.tasks} tasks)")
        if args.hospital_groups:
            r = hospital_refits(embedded, cluster, args.data_dir, args.hospital_groups, args.l2_reg_per_n, args.seed)
            per_e, per_c = r["embedded_s"] / r["tasks"], r["cluster_s"] / r["tasks"]
            print(f"hospital refits: n={r['n']}, d={r['d']}, {args.hospital_groups} groups in {r['tasks']} tasks of "
                  f"{r['chunk']}; scatter once {r['scatter_s']:.2f} s; embedded {r['embedded_s']:.1f} s "
                  f"({per_e:.2f} s/task, {r['embedded_s'] / args.hospital_groups * 1e3:.1f} ms/group); "
                  f"{args.workers} workers: first pass (workers import TensorFlow, rebuild the model) "
                  f"{r['cluster_cold_s']:.1f} s, then {r['cluster_s']:.1f} s ({per_c:.2f} s/task wall, "
                  f"speed-up {r['embedded_s'] / r['cluster_s']:.2f}x; compute {r['task_compute_s']:.2f} s per task "
                  f"on a one-thread worker, Dask overhead {1e3 * r['overhead_s']:.0f} ms per task); "
                  f"identical bits: {r['identical']}; certified: {r['certified']}")


if __name__ == "__main__":
    raise SystemExit(main())
