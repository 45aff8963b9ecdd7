"""Benchmark: exact group refits, this engine versus the original method.

    python scripts/benchmark_refits.py --dataset-id digits
    python scripts/benchmark_refits.py --dataset-id hospital --data-dir data --baseline-groups 6
    python scripts/benchmark_refits.py --dataset-id mnist-scale --num-subsets 32 --baseline-groups 3
                                                # needs fashion_mnist: Debian's dataset-fashion-mnist

For one workload it fits the model once (certified), draws groups of 0.25%-25% of the
training set (as the paper's range runs), and refits without each group:

* the **original method**: scikit-learn ``LogisticRegression(C=1/lambda, solver='lbfgs',
  tol=1e-8, max_iter=2048, warm_start=True)``, run sequentially, each fit warm-started
  from the previous group's solution (the original's chained warm starts). It is slow,
  so only ``--baseline-groups`` groups (evenly spread over the sizes) are timed;
* **this engine**: batched certified Newton from theta_hat on all groups:
  :func:`influence.refit.refit_chunk` (explicit Hessians) up to 4,000 parameters,
  beyond it ss_logreg's ``cg`` route (:func:`influence.routes.choose_routes` with
  ``--max-memory``): :func:`influence.refit.refit_chunk_factor` (chord steps with the
  dense Hessian's factor, L-BFGS on the chord matrix) where the factor fits, else
  :func:`influence.refit.refit_chunk_cg` (Newton-CG through the data);
  ``--data-route`` also times the latter next to the former and prints how far apart
  their refits are. Its shared setup at theta_hat (Hessian, factor or preconditioner) is
  timed separately and also reported amortised.

It prints per-group wall times and their ratio, the gradient-norm certificate of both
(``||grad L_-U||`` at the returned parameters, computed by the same kernel), the largest
parameter difference and the error of the original's parameter change, and the achieved
GFLOP/s of the engine next to a float64 matrix-multiply rate measured in the same process.

Before the refits it measures that rate (square products of 2048 and of d, the number of
parameters, in NumPy and TensorFlow) and prints a table of the engine's large products
at the workload's sizes (:func:`product_rates`: the full Hessian as ``get_hessian`` and as
the Newton-CG preconditioner form it, a batch of Hessian-vector products, a batch of
gradients), each with its achieved GFLOP/s, per wall second and per CPU second (the
steadier measure on a shared machine), and its ratio to the 2048^2 matmul rate in the same
measure (ratios below 1/2 are marked: the target for a product the engine relies on). ``--products-only``
stops there.
Exit codes as every script (0 ok, 1 unexpected failure, 2 bad flag or missing data; ``--debug``).
"""
import logging
import os
import time
import warnings

import _bootstrap  # noqa: F401

import numpy as np

from experiments import cli
from experiments.common import ConfigError


def best_seconds(fn, reps: int = 5) -> tuple[float, float]:
    """``(wall, cpu)``: the fastest wall time and the smallest process CPU time (all threads)
    of ``reps`` timed calls of ``fn``, after an untimed warm-up call. On a shared machine
    the CPU time is the steadier of the two (a preempted call loses wall time, not CPU time)."""
    fn()
    wall = cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def matmul_rates(sizes, reps: int = 5) -> list[tuple[str, int, float, float]]:
    """Measured float64 square matrix-multiply rates ``(library, size, GFLOP/s, GFLOP per
    CPU second)`` of NumPy (its BLAS) and TensorFlow for each size (2 size^3 flops)."""
    import tensorflow as tf

    rows = []
    for n in sorted({int(m) for m in sizes}):
        a = np.random.RandomState(0).standard_normal((n, n))
        at = tf.constant(a)
        for lib, fn in (("numpy", lambda a=a: a @ a), ("tensorflow", lambda at=at: tf.matmul(at, at).numpy())):
            wall, cpu = best_seconds(fn, reps)
            rows.append((lib, n, 2.0 * n ** 3 / wall / 1e9, 2.0 * n ** 3 / max(cpu, 1e-9) / 1e9))
    return rows


def best_rates(a, b):
    """Per (library, size), the better wall rate and the better CPU rate of two measurements."""
    return [(x[0], x[1], max(x[2], y[2]), max(x[3], y[3])) for x, y in zip(a, b)]


def product_rates(model, X, y, lam: float, batch: int, seed: int = 0, reps: int = 5) -> list[tuple]:
    """The engine's large products at theta_hat on the workload, timed (best of ``reps``):
    ``(name, flops counted, flops, seconds)`` for

    * the full Hessian ``Xa^T D Xa`` as :meth:`LogisticRegression.get_hessian` forms it
      (TensorFlow: one general product, ``2 n E^2`` flops binary; multinomial
      ``Xa^T [A_i kron xa_i]_i``, ``2 n E (K E)^2 / E = 2 n K^2 E^2``);
    * the full Hessian by :meth:`LogisticObjective.hessians` with ``method='syrk'`` (BLAS syrk: ``n E^2``
      binary; multinomial ``n (K E)^2 + K n E^2``), the Newton-CG preconditioner's;
    * ``batch`` Hessian-vector products in one call (:meth:`LogisticObjective.hvp`: two
      design products, ``4 n E K'`` flops per vector);
    * the gradients of ``batch`` problems at ``batch`` parameter vectors in one call
      (:meth:`LogisticObjective.gradient`, as the batched refits: logits and one product
      back, ``4 n E K'`` flops per problem).
    """
    import tensorflow as tf

    from influence.numerics import one_blas_thread
    from influence.objective import LogisticObjective

    spec = model.spec
    n, E, Kr = X.shape[0], spec.ext_dim, spec.num_rows
    Xa, yt, s = model.design((X, y))
    theta = model.get_params_flat()
    l2 = tf.constant(float(lam), dtype=Xa.dtype)
    rng = np.random.RandomState(seed)
    rows = []
    t = best_seconds(lambda: model.get_hessian((X, y), None, lam), reps)   # (wall, cpu)
    rows.append(("full Hessian, TensorFlow (get_hessian)",
                 "2 n E^2" if spec.binary else "2 n K^2 E^2", (2.0 if spec.binary else 2.0 * Kr * Kr) * n * E * E, t))
    syrk = ("n E^2" if spec.binary else "n K^2 E^2 + K n E^2",
            n * E * E if spec.binary else n * (Kr * E) ** 2 + Kr * n * E * E)
    obj_np = LogisticObjective(spec, Xa, yt, s, l2, Xa_np=Xa.numpy())
    theta_row = tf.constant(theta[None, :], dtype=Xa.dtype)

    def hessian_syrk():
        return obj_np.hessians(theta_row, method="syrk", gauge=False, as_numpy=True, pin_blas=False)

    t = best_seconds(hessian_syrk, reps)
    rows.append(("full Hessian, NumPy syrk (hessians, 'syrk')", *syrk, t))
    with one_blas_thread():   # NumPy's BLAS threads compete with TensorFlow's pool for 2 cores
        t = best_seconds(hessian_syrk, reps)
    rows.append(("  the same, one BLAS thread", *syrk, t))
    obj = LogisticObjective(spec, Xa, yt, s, l2)
    curv = obj.curvature(tf.constant(theta[None, :], dtype=Xa.dtype))
    V = rng.standard_normal((batch, spec.num_params))
    t = best_seconds(lambda: obj.hvp(curv, V), reps)
    rows.append((f"{batch} Hessian-vector products (hvp)", "4 n E K' each", 4.0 * n * E * Kr * batch, t))
    objB = LogisticObjective(spec, Xa, yt, tf.tile(s[:, None], [1, batch]), l2)
    Theta = tf.constant(theta[None, :] + 1e-3 * rng.standard_normal((batch, spec.num_params)), dtype=Xa.dtype)
    t = best_seconds(lambda: objB.gradient(Theta).numpy(), reps)
    rows.append((f"gradients of {batch} problems (gradient)", "4 n E K' each", 4.0 * n * E * Kr * batch, t))
    # What both batches cost in matrix products alone: Xa (n, E) times (E, batch K') and back.
    Vx = tf.constant(rng.standard_normal((batch * Kr, E)), dtype=Xa.dtype)
    T = tf.constant(rng.standard_normal((n, batch * Kr)), dtype=Xa.dtype)
    t = best_seconds(lambda: (tf.matmul(Xa, Vx, transpose_b=True).numpy(),
                              tf.matmul(T, Xa, transpose_a=True).numpy()), reps)
    rows.append(("  their two design products alone (matmul)", "4 n E K' each", 4.0 * n * E * Kr * batch, t))
    return rows


def print_product_table(products, rates, n: int, E: int, Kr: int, d: int) -> None:
    """The products' achieved rates, per wall second and per CPU second, and their ratios to
    the matmul rates of the largest square product measured (2048^2, the better of NumPy
    and TensorFlow in each measure): a sustained rate, where a small d^2 product can run
    from cache faster than any product streaming the n x E design can."""
    size = max(r[1] for r in rates)
    peak, peak_cpu = (max(r[k] for r in rates if r[1] == size) for k in (2, 3))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average (1, 5, 15 min): {load} on {os.cpu_count()} cores")
    print("float64 square matrix multiply (best of 5 before and 5 after the products), GFLOP/s and GFLOP per "
          "CPU second: " + ", ".join(f"{lib} {size}^2 {r:.1f} / {rc:.1f}" for lib, size, r, rc in rates))
    print(f"large products at theta_hat (n={n}, E={E}, K'={Kr}, d={d}), best of 5; ratios to the {size}^2 matmul "
          f"rates ({peak:.1f} GFLOP/s, {peak_cpu:.1f} GFLOP per CPU s); < 1/2 marks a ratio below one half:")
    print(f"{'product':44}{'flops counted':>22}{'GFLOP':>8}{'wall s':>9}{'GFLOP/s':>8}{'ratio':>7}"
          f"{'CPU s':>9}{'GFLOP/CPU s':>12}{'ratio':>7}")
    for name, formula, flops, (wall, cpu) in products:
        rate, rate_cpu = flops / wall / 1e9, flops / max(cpu, 1e-9) / 1e9
        flag = "" if rate >= 0.5 * peak and rate_cpu >= 0.5 * peak_cpu else "  < 1/2"
        print(f"{name:44}{formula:>22}{flops / 1e9:>8.3f}{wall:>9.2e}{rate:>8.1f}{rate / peak:>7.2f}"
              f"{cpu:>9.2e}{rate_cpu:>12.1f}{rate_cpu / peak_cpu:>7.2f}{flag}")


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


def newton_side_by_side(model, theta, Xa, s, lam, X, y, groups, F, P, max_memory) -> None:
    """ss_logreg's phase 9 and phase 7 kernels on the groups by both cg routes: the Newton
    changes ``(H - H_U)^{-1} g_U`` and the first-order changes ``H^{-1} g_U`` (empty
    groups), to ``cg_rtol``; prints seconds per group and how far apart the routes are."""
    from influence import groups as G
    from influence.memory import cg_width, dense_work_memory

    spec, tol = model.spec, model.config["cg_rtol"]
    G_S = np.stack([model.get_total_grad_loss((X[g], y[g])) for g in groups])   # g_U at theta_hat
    width = cg_width(spec.num_params, dense_work_memory(spec.num_params, max_memory))
    empty = [np.zeros(0, dtype=np.int64)] * len(groups)
    for what, gs in (("Newton changes (phase 9)", groups), ("first-order changes (phase 7)", empty)):
        t0 = time.perf_counter()
        new = G.newton_factor(spec, theta, Xa, s, lam, gs, G_S, F, tol=tol, width=width)
        t_new = time.perf_counter() - t0
        t0 = time.perf_counter()
        old = G.newton_cg(spec, theta, Xa, s, lam, gs, G_S, tol=tol, preconditioner=P, max_memory=max_memory)
        t_old = time.perf_counter() - t0
        rel = np.linalg.norm(new - old, axis=1) / np.linalg.norm(old, axis=1)
        print(f"{what}: dense route {t_new / len(groups):.3f} s per group, through the data "
              f"{t_old / len(groups):.3f} s per group ({t_old / t_new:.1f}x); largest relative difference "
              f"{rel.max():.1e}")


def engine_flops_factor(spec, n, groups, result) -> float:
    """Flops of the dense-factor engine: per inner CG iteration two triangular solves with
    the (d, d) factor (``2 d^2``) and two products with the group's rows; per Newton
    iteration one gradient at the candidate (the first comes from the group's rows). The
    factor itself is the setup (not counted here)."""
    E, Kr, d = spec.ext_dim, spec.num_rows, spec.num_params
    grad = 4.0 * n * d
    rows = np.array([len(g) for g in groups], dtype=np.float64)
    return float(np.sum(result.hvps * (2.0 * d * d + 4.0 * rows * E * Kr) + result.iterations * grad))


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--dataset-id", "--workload", dest="workload", default="digits",
                   choices=["digits", "breast_cancer", "hospital", "spam", "mnist-scale"],
                   help="the dataset refitted (mnist-scale: Fashion-MNIST at MNIST's size) (default: digits)")
    p.add_argument("--data-dir", default=None, help="data folder (default: <repo>/data)")
    p.add_argument("--num-subsets", "--num-groups", dest="num_groups", type=int, default=100,
                   help="groups refitted by the engine")
    p.add_argument("--baseline-groups", type=int, default=6, help="groups timed for the original method")
    p.add_argument("--fixed-reg", type=float, default=1e-3, metavar="R",
                   help="lambda = R * n_train (R = lambda/n; hospital's cross-validated choice is 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the groups")
    p.add_argument("--product-batch", type=int, default=64,
                   help="vectors per Hessian-vector-product batch and problems per batched gradient (default 64)")
    p.add_argument("--products-only", action="store_true",
                   help="only the matmul rate and the product table (no refits)")
    p.add_argument("--no-products", action="store_true",
                   help="skip the product table (at MNIST scale it forms 18 full Hessians) and time the refits only")
    p.add_argument("--max-memory", type=int, default=None, metavar="BYTES",
                   help="memory budget of the cg routes, as ss_logreg's --max-memory (default: none; the dense "
                        "Hessian's factor where it fits half of it)")
    p.add_argument("--data-route", action="store_true",
                   help="cg workloads with the dense route: also time Newton-CG through the data (the route "
                        "without the dense factor) on the same groups")
    return p


def run(args):
    for name, flag in (("num_groups", "--num-subsets"), ("baseline_groups", "--baseline-groups"),
                       ("product_batch", "--product-batch")):
        if getattr(args, name) < 1:
            raise ConfigError(f"{flag} must be >= 1; got {getattr(args, name)}")
    if not args.fixed_reg > 0:
        raise ConfigError(f"--fixed-reg must be > 0; got {args.fixed_reg}")
    if args.products_only and args.no_products:
        raise ConfigError("--products-only and --no-products exclude each other; got both")
    if args.max_memory is not None and args.max_memory < 1:
        raise ConfigError(f"--max-memory must be a positive number of bytes; got {args.max_memory}")

    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.linear_model import LogisticRegression as SkLR

    from influence.logistic_regression import LogisticRegression
    from influence.memory import dense_hessian_fits, dense_work_memory, refit_chunk_size
    from influence.newton import hessian_factor, make_preconditioner
    from influence.refit import refit_chunk, refit_chunk_cg, refit_chunk_factor

    train, label = load_workload(args.workload, args.data_dir)
    X = np.asarray(train.x, dtype=np.float64)
    y = np.asarray(train.labels)
    n = X.shape[0]
    lam = args.fixed_reg * n
    cfg = LogisticRegression.default_config()
    cfg["arch"] = dict(LogisticRegression.infer_arch(train), fit_intercept=True)
    model = LogisticRegression(cfg)
    rates = matmul_rates((2048, min(model.num_params, 2048)))
    t0 = time.perf_counter()
    fit = model.fit((X, y), None, lam)
    t_fit = time.perf_counter() - t0
    theta = model.get_params_flat()
    print(f"workload: {label}: n={n}, D={X.shape[1]}, classes={model.spec.num_classes}, "
          f"params={model.num_params}, lambda={lam:g}")
    print(f"initial fit: {t_fit:.2f} s, {fit.iterations} Newton iterations, ||grad|| = {fit.grad_norm:.2e}")
    if not args.no_products:
        products = product_rates(model, X, y, lam, args.product_batch, args.seed)
        # The matmul rate again after the products: on a shared machine the best of both
        # measurements is the closer estimate of what the cores deliver.
        rates = best_rates(rates, matmul_rates((2048, min(model.num_params, 2048))))
        print_product_table(products, rates, n, model.spec.ext_dim, model.spec.num_rows, model.num_params)
    peak = max(r[2] for r in rates if r[1] == 2048)
    if args.products_only:
        return 0

    rng = np.random.RandomState(args.seed)
    sizes = np.linspace(max(1, int(0.0025 * n)), int(0.25 * n), args.num_groups).astype(int)
    groups = [rng.choice(n, s, replace=False) for s in sizes]
    Xa, yt, s = model.design((X, y))
    # Explicit-Hessian Newton up to the model's explicit_max_params, Newton-CG beyond (as
    # ss_logreg's explicit / cg runs). The shared setup at theta_hat (the Hessian, or the
    # CG preconditioner) is computed once per run and timed separately.
    use_cg = model.num_params > model.config["explicit_max_params"]
    dense = use_cg and dense_hessian_fits(model.num_params, args.max_memory)

    setups = {}

    def engine(route):
        """(setup seconds, refit seconds, [(start, RefitResult)], chunk) of one engine route."""
        t0 = time.perf_counter()
        if route == "dense":
            F = hessian_factor(model.spec, theta, Xa, s, lam)
            budget = dense_work_memory(model.num_params, args.max_memory)
            chunk = refit_chunk_size(model.num_params, n, budget, model.spec.num_rows, explicit=False)
        elif route == "data":
            P = make_preconditioner(model.spec, theta, Xa, s, lam)
            chunk = int(max(1, min(64, (2 ** 28) // (n * 8 * model.spec.num_rows))))
        else:
            H = model.get_hessian((X, y), None, lam)
            chunk = int(max(1, min(64, (2 ** 28) // (n * model.spec.ext_dim * 8 * model.spec.num_rows))))
        t_setup = time.perf_counter() - t0
        setups[route] = F if route == "dense" else (P if route == "data" else H)
        t0 = time.perf_counter()
        results = []
        for start in range(0, len(groups), chunk):
            part = groups[start:start + chunk]
            if route == "dense":
                r = refit_chunk_factor(model.spec, theta, Xa, yt, s, lam, part, factor=F, rtol=model.fit_rtol,
                                       max_memory=budget)
            elif route == "data":
                r = refit_chunk_cg(model.spec, theta, Xa, yt, s, lam, part, preconditioner=P, rtol=model.fit_rtol)
            else:
                r = refit_chunk(model.spec, theta, Xa, yt, s, lam, part, hessian_hat=H, rtol=model.fit_rtol)
            results.append((start, r))
        return t_setup, time.perf_counter() - t0, results, chunk

    route = ("dense" if dense else "data") if use_cg else "explicit"
    t_setup, t_engine, results, chunk = engine(route)
    thetas = np.concatenate([r.thetas for _, r in results])
    gnorms = np.concatenate([r.grad_norms for _, r in results])
    if route == "dense":
        flops = sum(engine_flops_factor(model.spec, n, groups[st:st + len(r.thetas)], r) for st, r in results)
        hvps = np.concatenate([r.hvps for _, r in results])
        iters = np.concatenate([r.iterations for _, r in results])
        print(f"engine: quasi-Newton steps on the chord matrix H - H_U with the dense Hessian's factor "
              f"({len(groups)} groups, chunks of {chunk}), "
              f"factor built in {t_setup:.1f} s; products with H - H_U per group: median {np.median(hvps):.0f}, "
              f"max {hvps.max()}; Newton steps (full-data gradients) per group: median {np.median(iters):.0f}, "
              f"max {iters.max()}")
        if args.data_route:
            d_setup, d_engine, d_results, d_chunk = engine("data")
            d_thetas = np.concatenate([r.thetas for _, r in d_results])
            d_hvps = np.concatenate([r.hvps for _, r in d_results])
            scale = np.abs(d_thetas - theta).max()
            print(f"Newton-CG through the data (the route without the factor): {d_engine / len(groups):.3f} s per "
                  f"group ({d_setup:.1f} s preconditioner), median {np.median(d_hvps):.0f} Hessian-vector products; "
                  f"all certified: {bool(all(r.converged.all() for _, r in d_results))}; largest difference of "
                  f"the two routes' refits {np.abs(d_thetas - thetas).max():.2e} "
                  f"({np.abs(d_thetas - thetas).max() / scale:.1e} of the largest parameter change); "
                  f"dense route {d_engine / t_engine:.1f}x faster per group")
            newton_side_by_side(model, theta, Xa, s, lam, X, y, groups, setups["dense"], setups["data"],
                                args.max_memory)
    elif use_cg:
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
          f"({flops / t_engine / 1e9 / peak:.0%} of the measured 2048^2 matmul rate)")
    print(f"all engine refits certified: {bool(all(r.converged.all() for _, r in results))}")


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
