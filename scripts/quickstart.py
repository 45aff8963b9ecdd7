"""Offline demo: fit on a bundled dataset, remove groups, compare predicted and actual influence.

    python scripts/quickstart.py [--dataset-id breast_cancer] [--num-groups 8]

Fits L2-regularised logistic regression to a certified optimum, removes groups of
training points of several sizes and kinds, and prints, per group, the first-order
("pred"), one-step Newton and actual change of the total test loss, all three from one
call of the group-influence API (:func:`influence.group_influence.group_influence`); the
actual change comes from an exact refit certified by the gradient norm of the reduced
objective.
"""
import argparse
import logging
import time

import _bootstrap  # noqa: F401

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-id", default="breast_cancer")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--num-groups", type=int, default=8)
    parser.add_argument("--l2-reg", type=float, default=None, help="default: 1e-3 * n_train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_groups < 1:
        parser.error(f"--num-groups must be >= 1; got {args.num_groups}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from datasets.loader import load_dataset
    from influence.group_influence import group_influence
    from influence.logistic_regression import LogisticRegression

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset_id, data_dir=args.data_dir)
    train, test = ds.train, ds.test
    n = train.num_examples
    l2 = args.l2_reg if args.l2_reg is not None else 1e-3 * n
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
