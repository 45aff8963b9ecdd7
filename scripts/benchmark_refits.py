"""Benchmark: exact group refits, this engine versus the original method.

    python scripts/benchmark_refits.py --workload digits
    python scripts/benchmark_refits.py --workload hospital --data-dir data --baseline-groups 6
    python scripts/benchmark_refits.py --workload mnist-scale --num-groups 32 --baseline-groups 3
                                                # needs fashion_mnist: Debian's dataset-fashion-mnist

For one workload it fits the model once (certified), draws groups of 0.25%-25% of the
training set (as the paper's range runs), and refits without each group:

* the **original method**: scikit-learn ``LogisticRegression(C=1/lambda, solver='lbfgs',
  tol=1e-8, max_iter=2048, warm_start=True)``, run sequentially, each fit warm-started
  from the previous group's solution (the original's chained warm starts). It is slow,
  so only ``--baseline-groups`` groups (evenly spread over the sizes) are timed;
* **this engine**: batched certified Newton from theta_hat on all groups:
  :func:`influence.refit.refit_chunk` (explicit Hessians) up to 4,000 parameters,
  :func:`influence.refit.refit_chunk_cg` (preconditioned Newton-CG) beyond, as
  ss_logreg's ``explicit`` and ``cg`` runs. Its shared setup at theta_hat (Hessian or
  preconditioner) is timed separately and also reported amortised.

It prints per-group wall times and their ratio, the gradient-norm certificate of both
(``||grad L_-U||`` at the returned parameters, computed by the same kernel), the largest
parameter difference and the error of the original's parameter change, and the achieved
GFLOP/s of the engine next to a float64 matrix-multiply peak measured in the same process.
Exit codes as every script (0 ok, 1 unexpected failure, 2 bad flag or missing data; ``--debug``).
"""
import logging
import time
import warnings

import _bootstrap  # noqa: F401

import numpy as np

from experiments import cli
from experiments.common import ConfigError


def matmul_peak(n: int = 2048, reps: int = 3) -> float:
    """Measured float64 GEMM rate (GFLOP/s) of TensorFlow on this machine."""
    import tensorflow as tf
    a = tf.random.normal([n, n], dtype=tf.float64)
    tf.matmul(a, a).numpy()
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        tf.matmul(a, a).numpy()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def load_workload(name: str, data_dir):
    from datasets.loader import load_dataset

    if name == "mnist-scale":  # the fashion_mnist dataset id (data dir's files, else Debian's)
        ds = load_dataset("fashion_mnist", data_dir=data_dir)
        return ds.train, "fashion_mnist (MNIST format)"
    ds = load_dataset(name, data_dir=data_dir)
    return ds.train, name


def engine_flops(spec, n, groups, result) -> float:
    """Flops of the dominant operations the engine performed (multiply-adds count 2)."""
    E, Kr = spec.ext_dim, spec.num_rows
    d = spec.num_params
    # Binary Hessians are symmetric rank-n updates (BLAS syrk: n E^2 flops, half a general
    # product); multinomial ones one general product with K^2 E columns.
    full_hess = 1.0 * n * E ** 2 if spec.binary else 2.0 * n * E * (Kr * Kr * E)
    grad = 4.0 * n * d
    flops = 0.0
    for b, idx in enumerate(groups):
        flops += (full_hess / n) * len(idx)               # H_U at theta_hat
        flops += d ** 3 / 3.0                             # first Cholesky
        flops += result.hessians[b] * (full_hess + d ** 3 / 3.0)
        # One solve and one gradient (at the candidate) per iteration, plus the first
        # gradient; line-search objective evaluations are not counted (they are rare).
        flops += result.iterations[b] * 2.0 * d * d + (result.iterations[b] + 1) * grad
        # Newton-CG steps preconditioned by the stale factor: two design products and
        # two triangular solves per Hessian-vector product.
        flops += result.hvps[b] * (grad + 2.0 * d * d)
    return flops


def engine_flops_cg(spec, n, result) -> float:
    """Flops of the Newton-CG engine: two design products per Hessian-vector product and
    the preconditioner's two triangular solves; per Newton iteration the logits for the
    curvature and one gradient at the candidate, plus the first gradient. Line-search
    objective evaluations are not counted (they are rare)."""
    E, Kr, d = spec.ext_dim, spec.num_rows, spec.num_params
    hvp = 4.0 * n * E * Kr + 2.0 * d * d
    grad = 4.0 * n * d
    return float(np.sum(result.hvps * hvp + result.iterations * 2.0 * n * d + (result.iterations + 1) * grad))


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--workload", default="digits", choices=["digits", "breast_cancer", "hospital", "spam",
                                                            "mnist-scale"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--num-groups", type=int, default=100, help="groups refitted by the engine")
    p.add_argument("--baseline-groups", type=int, default=6, help="groups timed for the original method")
    p.add_argument("--l2-reg", type=float, default=None, help="default: 1e-3 * n (hospital's CV choice is 2e-3 n)")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args):
    for name in ("num_groups", "baseline_groups"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")

    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.linear_model import LogisticRegression as SkLR

    from influence.logistic_regression import LogisticRegression
    from influence.refit import make_preconditioner, refit_chunk, refit_chunk_cg

    train, label = load_workload(args.workload, args.data_dir)
    X = np.asarray(train.x, dtype=np.float64)
    y = np.asarray(train.labels)
    n = X.shape[0]
    lam = args.l2_reg if args.l2_reg is not None else 1e-3 * n
    cfg = LogisticRegression.default_config()
    cfg["arch"] = dict(LogisticRegression.infer_arch(train), fit_intercept=True)
    model = LogisticRegression(cfg)
    peak = matmul_peak()
    t0 = time.perf_counter()
    fit = model.fit((X, y), None, lam)
    t_fit = time.perf_counter() - t0
    theta = model.get_params_flat()
    print(f"workload: {label}: n={n}, D={X.shape[1]}, classes={model.spec.num_classes}, "
          f"params={model.num_params}, lambda={lam:g}")
    print(f"initial fit: {t_fit:.2f} s, {fit.iterations} Newton iterations, ||grad|| = {fit.grad_norm:.2e}")
    print(f"float64 matmul peak (TensorFlow, 2048^2): {peak:.1f} GFLOP/s")

    rng = np.random.RandomState(args.seed)
    sizes = np.linspace(max(1, int(0.0025 * n)), int(0.25 * n), args.num_groups).astype(int)
    groups = [rng.choice(n, s, replace=False) for s in sizes]
    Xa, yt, s = model.design((X, y))
    # Explicit-Hessian Newton up to the model's explicit_max_params, Newton-CG beyond (as
    # ss_logreg's explicit / cg runs). The shared setup at theta_hat (the Hessian, or the
    # CG preconditioner) is computed once per run and timed separately.
    use_cg = model.num_params > model.config["explicit_max_params"]
    t0 = time.perf_counter()
    if use_cg:
        P = make_preconditioner(model.spec, theta, Xa, s, lam)
        chunk = int(max(1, min(64, (2 ** 28) // (n * 8 * model.spec.num_rows))))
    else:
        H = model.get_hessian((X, y), None, lam)
        chunk = int(max(1, min(64, (2 ** 28) // (n * model.spec.ext_dim * 8 * model.spec.num_rows))))
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = []
    for start in range(0, len(groups), chunk):
        part = groups[start:start + chunk]
        if use_cg:
            r = refit_chunk_cg(model.spec, theta, Xa, yt, s, lam, part, preconditioner=P, rtol=model.fit_rtol)
        else:
            r = refit_chunk(model.spec, theta, Xa, yt, s, lam, part, hessian_hat=H, rtol=model.fit_rtol)
        results.append((start, r))
    t_engine = time.perf_counter() - t0
    thetas = np.concatenate([r.thetas for _, r in results])
    gnorms = np.concatenate([r.grad_norms for _, r in results])
    if use_cg:
        flops = sum(engine_flops_cg(model.spec, n, r) for _, r in results)
        hvps = np.concatenate([r.hvps for _, r in results])
        print(f"engine: batched Newton-CG ({len(groups)} groups, chunks of {chunk}), preconditioner built in "
              f"{t_setup:.1f} s; Hessian-vector products per group: median {np.median(hvps):.0f}, max {hvps.max()}")
    else:
        flops = sum(engine_flops(model.spec, n, groups[st:st + len(r.thetas)], r) for st, r in results)
        print(f"engine: batched explicit Newton ({len(groups)} groups, chunks of {chunk}), Hessian at theta_hat "
              f"in {t_setup:.1f} s")
    per_group_engine = t_engine / len(groups)

    pick = np.unique(np.linspace(0, len(groups) - 1, args.baseline_groups).astype(int))
    sk = SkLR(C=1.0 / lam, solver="lbfgs", tol=1e-8, max_iter=2048, warm_start=True, fit_intercept=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        sk.fit(X, y)  # the original starts from the full-data fit, then chains warm starts
    base_times, base_gn, base_err, base_iters, base_pdiff = [], [], [], [], []
    for i in pick:
        w = np.ones(n)
        w[groups[i]] = 0.0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkConvergenceWarning)
            sk.fit(X, y, sample_weight=w)
        base_times.append(time.perf_counter() - t0)
        base_iters.append(int(np.max(sk.n_iter_)))
        if model.spec.binary:
            th_sk = np.concatenate([sk.coef_[0], sk.intercept_])
        else:
            th_sk = np.concatenate([sk.coef_.ravel(), sk.intercept_ - sk.intercept_.mean()])
        model.set_params_flat(th_sk)
        base_gn.append(np.linalg.norm(model.get_total_grad_loss((X, y), w, lam)))
        d_true = thetas[i] - theta
        base_err.append(np.linalg.norm((th_sk - theta) - d_true) / np.linalg.norm(d_true))
        base_pdiff.append(np.abs(th_sk - thetas[i]).max())
    per_group_base = float(np.mean(base_times))
    print(f"\n{'':28}{'original (sklearn lbfgs)':>26}{'this engine':>16}")
    print(f"{'groups timed':28}{len(pick):>26}{len(groups):>16}")
    print(f"{'wall time per group (s)':28}{per_group_base:>26.4f}{per_group_engine:>16.5f}")
    print(f"{'max ||grad L_-U|| (certif.)':28}{max(base_gn):>26.2e}{gnorms[pick].max():>16.2e}")
    print(f"{'median ||grad L_-U||':28}{np.median(base_gn):>26.2e}{np.median(gnorms[pick]):>16.2e}")
    print(f"{'lbfgs iterations (max)':28}{max(base_iters):>26}")
    print(f"{'  incl. shared setup':28}{'':>26}{(t_engine + t_setup) / len(groups):>16.5f}")
    print(f"speed-up per group: {per_group_base / per_group_engine:.1f}x "
          f"({per_group_base * len(groups) / (t_engine + t_setup):.1f}x with the setup amortised over "
          f"{len(groups)} groups); certificate tightening: "
          f"{max(base_gn) / max(gnorms[pick].max(), 1e-300):.1e}x")
    print(f"largest parameter difference |theta_sklearn - theta_engine|: {max(base_pdiff):.2e}; "
          f"relative error of sklearn's parameter change: {min(base_err):.2%} - {max(base_err):.2%}")
    print(f"engine: {flops / 1e9:.1f} GFLOP in {t_engine:.2f} s = {flops / t_engine / 1e9:.1f} GFLOP/s "
          f"({flops / t_engine / 1e9 / peak:.0%} of the measured matmul peak)")
    print(f"all engine refits certified: {bool(all(r.converged.all() for _, r in results))}")


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
