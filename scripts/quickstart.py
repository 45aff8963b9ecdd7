"""Offline demo: fit on a bundled dataset, remove groups, compare predicted and actual influence.

    python scripts/quickstart.py [--dataset-id breast_cancer] [--num-subsets 8] [--fixed-reg 1e-3]

Fits L2-regularised logistic regression to a certified optimum, removes groups of
training points of several sizes and kinds, and prints, per group, the first-order
("pred"), one-step Newton and actual change of the total test loss, all three from one
call of the group-influence API (:func:`influence.group_influence.group_influence`); the
actual change comes from an exact refit certified by the gradient norm of the reduced
objective.
"""
import logging
import time

import _bootstrap  # noqa: F401

import numpy as np

from experiments import cli
from experiments.common import ConfigError


def make_parser():
    p = cli.ArgumentParser(__doc__)
    p.add_argument("--dataset-id", default="breast_cancer",
                   help="a registered dataset id (offline: breast_cancer, digits, synthetic_binary, synthetic_multiclass)")
    p.add_argument("--data-dir", default=None, help="data folder (default: <repo>/data)")
    p.add_argument("--num-subsets", "--num-groups", dest="num_groups", type=int, default=8,
                   help="groups removed (sizes from n/400 to n/4)")
    p.add_argument("--fixed-reg", type=float, default=1e-3, metavar="R", help="lambda = R * n_train (R = lambda/n)")
    p.add_argument("--seed", type=int, default=0, help="seed of the groups")
    return p


def main(argv=None):
    return cli.run_cli(make_parser(), run, argv, log_level=logging.WARNING)


def run(args):
    if args.num_groups < 1:
        raise ConfigError(f"--num-subsets must be >= 1; got {args.num_groups}")
    if not args.fixed_reg > 0:
        raise ConfigError(f"--fixed-reg must be > 0; got {args.fixed_reg}")
    from datasets.loader import load_dataset
    from influence.group_influence import group_influence
    from influence.logistic_regression import LogisticRegression

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset_id, data_dir=args.data_dir)
    train, test = ds.train, ds.test
    n = train.num_examples
    l2 = args.fixed_reg * n
    cfg = LogisticRegression.default_config()
    cfg["arch"] = dict(LogisticRegression.infer_arch(train), fit_intercept=True)
    model = LogisticRegression(cfg)
    fit = model.fit(train, None, l2)
    print(f"{args.dataset_id}: n_train={n}, n_test={test.num_examples}, params={model.num_params}, "
          f"lambda={l2:g}")
    print(f"fit: {fit.iterations} Newton iterations, ||grad L|| = {fit.grad_norm:.2e} "
          f"(certified <= {fit.grad_tol:.2e}), test accuracy {model.get_accuracy(test):.4f}")

    rng = np.random.RandomState(args.seed)
    sizes = np.unique(np.linspace(max(1, n // 400), n // 4, args.num_groups).astype(int))
    kinds, groups = [], []
    for k, size in enumerate(sizes):
        if k % 2 == 0:
            kind, idx = "random", rng.choice(n, size, replace=False)
        else:
            cls = rng.choice(np.unique(train.labels))
            pool = np.flatnonzero(train.labels == cls)
            kind, idx = f"same_class-{cls}", rng.choice(pool, min(size, len(pool)), replace=False)
        kinds.append(kind)
        groups.append(idx)
    res = group_influence(model, train, groups, l2, targets=("test_loss_sum",), test=test)
    est, cert = res.estimates["test_loss_sum"], res.refit
    print(f"\n{'group':>22} {'size':>5} {'first-order':>12} {'Newton':>12} {'actual':>12} "
          f"{'iters':>5} {'||grad L_-U||':>13}")
    for k, (kind, idx) in enumerate(zip(kinds, groups)):
        print(f"{kind:>22} {len(idx):>5} {est['pred'][k]:>12.5f} {est['newton'][k]:>12.5f} "
              f"{est['actl'][k]:>12.5f} {cert['iters'][k]:>5} {cert['grad_norm'][k]:>13.2e}")
    worst = float(np.max(cert["grad_norm"] / cert["grad_tol"]))
    print(f"\nInfluence = change in total test loss caused by REMOVING the group. Every refit is "
          f"certified: worst ||grad||/tolerance = {worst:.2e} (<= 1 means converged).")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
