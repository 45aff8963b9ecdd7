"""``counterexamples``: synthetic constructions behind the paper's theory (Figure 4).

Eight small synthetic datasets
(``gauss``, ``fixed``, ``repeats``, ``gauss2``, ``gauss3``, ``gauss4``, ``ortho2``,
``gauss5``) are always generated together from one seeded ``RandomState`` (phase 0);
the run id selects one of them. On it a binary logistic regression without intercept is
fitted with ``lambda = N_train * 1e-3`` (phase 1; objective
``sum_i l_i(theta) + lambda/2 ||theta||^2``, summed loss, no sample weights). For every
removed group S (phase 2) phase 3 computes the first-order change ``a_S = H^-1 g_S``,
the one-step Newton change ``b_S = (H - H_S)^-1 g_S`` and the actual change
``theta_-S - theta_hat`` (sign convention: the change caused by REMOVING S). Phase 4
constructs 1,027 adversarial test points from the pairs (a_S, b_S) and phase 5
evaluates the linear and the non-linear influences of every group on them.

Run id: the dataset id, e.g. ``ortho2``, ``gauss4``; with the float32 mode the suffix
``_float32`` is added (the mode is recorded in ``config.json`` and named in the run id
only when it is not the default; see docs/design.md, 'Run ids and configs'). As in the original the seed is
not part of the run id (a quirk kept); a rerun with another seed in the same folder is
refused unless ``--force-refresh`` is given.

Figure 4, left panel, and precision
----------------------------------
The paper's left panel scatters, for the test point ``lstsq_uv_K-120_gauss[2]`` of
``gauss4``, the Newton margin influence against the first-order one over the 120 groups
of ``cex_lstsq_uv_K-120_subsets``. Because of the ``+1e-4`` in ``subset_cos_dparam``
(kept, see below) those 120 groups are not the least-aligned ones but the pairs with
the smallest parameter changes (median ``||a_S|| ~ 4e-4``), whose first-order and
Newton changes agree to ~1e-3 relative. In float64 the constructed test point therefore
gives an almost perfect straight line (Spearman ~1.000, both ranges ~[-0.77, 0.79]);
the diffuse cloud of the published figure comes from float32 rounding in the original
(TensorFlow 1 float32 gradients, Hessian and Cholesky), which the least-squares
construction amplifies. Both variants are produced here: run id ``gauss4`` (float64,
the default: the straight line) and ``gauss4_float32`` (``--float32``: the float32
numerics of the original, a scattered cloud). The float32 variant is an emulation (this project's
float32 kernels), not the original TF 1 code: the test point has norm ~1e11 and the
influences are float32 dot products of size ~1 cancelling terms of size ~1e7, so the
cloud depends on rounding and summation order and matches the published one in
character, not point for point. The right panel (``ortho2``, ``cex_one``) is the same
cone in both precisions.

Also note (the original's ``lstsq_uv_K-{D//2}_gauss`` fit is meant to be exact when 2K <= D):
that holds only when ``A = [a_E; b_E]`` has full row rank. Without an intercept
``g_i`` is parallel to ``x_i``, so every row of A lies in the span of ``H^-1 x_i`` over
the points of the selected groups, and the selected pairs share points: with seed 0,
gauss2's K = 5 pairs use 9 points (rank 9 of 10) and gauss4's K = 30 pairs use 9
points (rank 9 of 60); for the singletons of gauss5, ``b_S`` is parallel to ``a_S``.
There the points are minimum-norm least-squares solutions, not exact fits.

Behaviour kept from the original, on purpose
--------------------------------------------
* ``subset_cos_dparam = a.b / (||a|| ||b|| + 1e-4)`` (QUIRK): the ``1e-4`` dominates
  when ``||a|| ||b|| << 1e-4``, so "lowest cosine" ranks tiny changes first.
* The ``+axis/2`` block of a Gaussian mixture gets label 0; ``repeats`` draws an unused
  ``axis``; the RNG call order of phase 0 and phase 4 is exactly the original's.

Differences from the original (see docs/design.md, 'Where this suite differs from the original')
------------------------------------------------------------------------------------------------
* Engine (docs/design.md, 'Certified fits and refits'): float64 by default, float32 as a setting. The fit is
  a certified Newton fit (not scikit-learn lbfgs), and the actual refits are batched
  certified Newton refits from theta_hat (:mod:`influence.small_refit`) rather than
  lbfgs warm fits chained from the previous group. Phase 3 adds the keys
  ``subset_refit_grad_norm``, ``subset_refit_grad_tol`` and ``subset_refit_iters``;
  phase 1 adds ``initial_params``, ``initial_fit_grad_norm``, ``initial_fit_grad_tol``,
  ``initial_fit_iters`` (theta_hat replaces the ``'initial'`` checkpoint).
* In float64 mode the generated data are used in float64 (the original's ``DataSet``
  cast them to float32); in float32 mode the model casts them, as the original did.
* Not a deviation: ``np.linalg.lstsq`` is called with ``rcond=None``, as the original
  did (singular values below ``eps * max(M, N)`` times the largest are dropped). In
  float64 gauss4's K = 120 matrix has numerically zero singular values (rows ``a_S`` and
  ``b_S`` agree to ~1e-3); the cutoff drops them and gives the straight line of the
  float64 panel, while in float32 rounding noise lifts them (~4e-9 of the largest) above the
  cutoff, which gives the published scatter.
* Sorting uses a stable sort, so equal keys (the identical groups of ``fixed``) are
  ordered by group index; the original's quicksort order of ties is not reproducible.
* Normalising a zero vector (the orthogonal component ``b - a (a.b)/(a.a)`` when ``a``
  and ``b`` are exactly parallel, as in ``ortho2``) returns the zero vector instead of
  NaNs (0/0 in the original).
* In float32 mode the refits are certified at the float32 tolerance (gradient norm
  below 1e-6 of its scale, the project's float32 default), so the actual change of a
  group whose removal moves the optimum by less than that is reported as 0.
* The file-based task queue is gone: phases 3 and 5 map pure chunk functions in
  process or on Dask workers (docs/design.md, 'Parallel execution').
* The original's dead plotting methods (they crashed) are not ported.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from experiments import tasks
from experiments.common import ConfigError, phase
from experiments.influence_base import InfluenceExperiment
from influence import group_influence as gi
from influence.numerics import DTYPES

logger = logging.getLogger(__name__)

DATASET_IDS = ("gauss", "fixed", "repeats", "gauss2", "gauss3", "gauss4", "ortho2", "gauss5")
DEFAULT_DATASET_ID = "ortho2"
L2_REG_PER_POINT = 1e-3
# (size_min, size_max) of the itertools.combinations groups; others: (2, 3).
SUBSET_SIZES = {"gauss2": (2, 2), "gauss3": (2, 2), "gauss4": (2, 2), "gauss": (1, 3), "gauss5": (1, 1)}
DEFAULT_SUBSET_SIZES = (2, 3)
COS_EPS = 1e-4                         # QUIRK of subset_cos_dparam, kept
# numpy's current default, eps * max(M, N) (see the module docstring).
RCOND = None
NUM_LSTSQ_POINTS = 100
AVG_KS = (1,) + tuple(range(10, 201, 10))
# C and its Python-2 str() as used in the tags.
AVG_CS = ((0.1, "0.1"), (1e-5, "1e-05"), (1.0, "1"), (2.0, "2"), (10.0, "10"))
NUM_FACTOR_POINTS = 50
NUM_RANDOM_POINTS = 50
REFIT_CHUNK = 1024   # most groups per phase-3 chunk (fewer only if --max-memory is small)
EVAL_CHUNK = 1024

SUMMARY_KEYS = ["cex_tags", "cex_lstsq_uv_K-120_subsets", "cex_subset_test_pred_margin_infl",
                "cex_subset_test_newton_pred_margin_infl"]


def build_config(dataset_id: str = DEFAULT_DATASET_ID, subset_seed: int = 0, max_memory: int = int(1e9),
                 master_only: bool = False, dtype: str = "float64") -> dict[str, Any]:
    """The original's config plus this project's ``dtype`` setting."""
    if dataset_id not in DATASET_IDS:
        raise ConfigError(f"--dataset-id must be one of {', '.join(DATASET_IDS)}; got {dataset_id!r} "
                          "(the original's default 'hospital' is not a synthetic id)")
    if int(subset_seed) != subset_seed or not 0 <= subset_seed < 2 ** 32:
        raise ConfigError(f"--subset-seed must be an integer in [0, 2**32) (a numpy RandomState seed); "
                          f"got {subset_seed!r}")
    if int(max_memory) != max_memory or max_memory < 1:
        raise ConfigError(f"--max-memory must be a positive integer number of bytes; got {max_memory!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {tuple(DTYPES)}; got {dtype!r}")
    return {"dataset_id": dataset_id, "seed": int(subset_seed), "max_memory": int(max_memory),
            "master_only": bool(master_only), "dtype": dtype}


# ---------------------------------------------------------------- phase 0 (pure)
def _normalise(v: np.ndarray) -> np.ndarray:
    """``v / ||v||``; the zero vector stays zero (the original divided 0 by 0)."""
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def generate_datasets(seed: int = 0) -> dict[str, Any]:
    """All eight datasets of the original from one ``RandomState(seed)``, in its call order.

    Returns ``{name}_train_X``, ``{name}_train_Y``, ``{name}_test_X``, ``{name}_test_Y``
    (float64 X; float Y except ``fixed``, whose Y is int), ``repeats_N_unique`` and
    ``ortho2_ids``.
    """
    rng = np.random.RandomState(seed)
    R: dict[str, Any] = {}

    def mixture(N, D, axis):
        X_pos = rng.normal(0, 1, (N, D)) + axis / 2
        X_neg = rng.normal(0, 1, (N, D)) - axis / 2
        X = np.vstack([X_pos, X_neg])
        Y = np.hstack([np.zeros(N), np.ones(N)])  # the +axis/2 block is label 0 (as the original)
        idx = np.arange(2 * N)
        rng.shuffle(idx)
        return X[idx], Y[idx]

    def unit(D):
        v = rng.normal(0, 1, (D,))
        return v / np.linalg.norm(v)

    def store(name, train, test):
        R[f"{name}_train_X"], R[f"{name}_train_Y"] = train
        R[f"{name}_test_X"], R[f"{name}_test_Y"] = test

    # 1. gauss
    sep = unit(5)
    store("gauss", mixture(20, 5, sep), mixture(20, 5, sep))

    # 2. fixed: 3 x [1,0] (label 0), 3 x [0,1] (label 1), two confusing points; shuffled.
    X = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3 + [[0.75, 0.25], [0.25, 0.75]])
    Y = np.array([0] * 3 + [1] * 3 + [1, 0])
    idx = np.arange(len(X))
    rng.shuffle(idx)
    store("fixed", (X[idx], Y[idx]), (X[idx], Y[idx]))

    # 3. repeats: 20 orthonormal vectors (rejection + Gram-Schmidt), vector i repeated
    #    i + 1 times, then 40 small random points with random labels.
    N_unique, D, N_random = 20, 20, 40
    first = rng.normal(0, 1, (1, D))
    basis = first / np.linalg.norm(first)
    while basis.shape[0] < N_unique:
        v = rng.normal(0, 1, (1, D))
        if np.linalg.matrix_rank(np.vstack([basis, v])) <= basis.shape[0]:
            continue
        v = v - (v @ basis.T) @ basis
        norm = np.linalg.norm(v)
        if norm < 1e-3:
            continue
        basis = np.vstack([basis, v / norm])
    rng.normal(0, 1, (D,))  # 'axis': unused, but it consumes the RNG
    Y_unique = rng.randint(0, 2, (N_unique,))
    reps = np.repeat(np.arange(N_unique), np.arange(1, N_unique + 1))
    X = np.vstack([basis[reps], rng.normal(0, 0.1, (N_random, D))])
    Y = np.hstack([Y_unique[reps], rng.randint(0, 2, (N_random,))]).astype(np.float64)
    store("repeats", (X, Y), (X, Y))
    R["repeats_N_unique"] = N_unique

    # 4.-6. gauss2 (zero separation), gauss3 (2N < D), gauss4 (N = D).
    for name, N, D, scale in (("gauss2", 20, 10, 0.0), ("gauss3", 40, 100, 0.1), ("gauss4", 60, 60, 0.5)):
        sep = unit(D) * scale
        store(name, mixture(N, D, sep), mixture(N, D, sep))

    # 7. ortho2: no randomness.
    e = np.eye(2)
    blocks = [(40, 0.25 * 0.3 * e[0], 0.0), (20, 0.5 * 0.3 * e[0], 1.0),
              (40, 1.0 * e[1], 0.0), (20, 0.1 * e[1], 1.0)]
    X = np.vstack([np.tile(x, (count, 1)) for count, x, _ in blocks])
    Y = np.hstack([np.full(count, label) for count, _, label in blocks])
    store("ortho2", (X, Y), (X, Y))
    R["ortho2_ids"] = np.repeat(np.arange(len(blocks)), [count for count, _, _ in blocks])

    # 8. gauss5: a Gaussian plane (zero 11th coordinate) plus random points.
    N_random, N_per_class, D = 20, 40, 10
    sep = unit(D)
    X, Y = mixture(N_per_class, D, sep)
    X = np.hstack([X, np.zeros((X.shape[0], 1))])
    X = np.vstack([X, rng.normal(0, 1, (N_random, D + 1))])
    Y = np.hstack([Y, rng.randint(0, 2, (N_random,))])
    store("gauss5", (X, Y), (X, Y))
    return R


# ---------------------------------------------------------------- phase 2 (pure)
def pick_subsets(dataset_id: str, R: dict[str, Any]) -> list[np.ndarray]:
    """The removed groups of the original, as int64 index arrays in the original's order."""
    if dataset_id == "repeats":
        groups = []
        for i in range(int(R["repeats_N_unique"])):
            start = i * (i + 1) // 2
            groups.extend(np.arange(start, start + size) for size in range(1, i + 2))
        return [np.asarray(g, dtype=np.int64) for g in groups]
    if dataset_id == "ortho2":
        ids = np.asarray(R["ortho2_ids"])
        groups = []
        for block in np.unique(ids):
            members = np.flatnonzero(ids == block)
            groups.extend(members[:size] for size in range(1, len(members)))
        return [np.asarray(g, dtype=np.int64) for g in groups]
    n = len(R[f"{dataset_id}_train_Y"])
    lo, hi = SUBSET_SIZES.get(dataset_id, DEFAULT_SUBSET_SIZES)
    return [np.array(c, dtype=np.int64) for r in range(lo, hi + 1) for c in itertools.combinations(range(n), r)]


# ---------------------------------------------------------------- phase 4 (pure)
def lstsq_ks(D: int) -> tuple[int, ...]:
    return (D // 2, D, 2 * D, 3 * D)


def find_adversarial_test(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The counterexample test set of the original from first-order / Newton changes.

    ``a``, ``b``: arrays of shape (S, D), ``a[s] = H^-1 g_S`` and
    ``b[s] = (H - H_S)^-1 g_S``. Every point has label 1 except ``cex_random``; with no
    intercept its margin gradient is x, so ``a.x`` / ``b.x`` are the first-order /
    Newton margin influences. Draws from a fresh ``RandomState(seed)`` in the original's
    order. Returns the phase-4 keys (``cex_X`` as float64).
    """
    a, b = np.asarray(a), np.asarray(b)
    S, D = a.shape
    rng = np.random.RandomState(seed)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("sd,sd->s", a, b)
    cos = dot / (na * nb + COS_EPS)  # QUIRK kept: see the module docstring
    cos_indices = np.argsort(cos, kind="stable")
    res: dict[str, Any] = {"subset_cos_dparam": cos}
    xs: list[np.ndarray] = []
    ys: list[float] = []
    tags: list[str] = []

    def add(x, tag, label=1.0):
        xs.append(np.asarray(x, dtype=np.float64))
        ys.append(float(label))
        tags.append(tag)

    # 1. Least squares.
    for K in lstsq_ks(D):
        if K > S:
            continue
        E = cos_indices[:K]
        res[f"cex_lstsq_uv_K-{K}_subsets"] = E
        A = np.vstack([a[E], b[E]])
        # One lstsq call per draw with all 100 right-hand sides as columns (the same
        # SVD-based solve as 100 separate calls, 100 times cheaper).
        uv = rng.normal(0, 1, (NUM_LSTSQ_POINTS, 2))
        targets = np.repeat(uv, K, axis=1)                     # rows [u]*K + [v]*K
        for x in np.linalg.lstsq(A, targets.T, rcond=RCOND)[0].T:
            add(_normalise(x), f"lstsq_uv_K-{K}")
        targets = rng.normal(0, 1, (NUM_LSTSQ_POINTS, 2 * K))
        for x in np.linalg.lstsq(A, targets.T, rcond=RCOND)[0].T:
            add(x, f"lstsq_uv_K-{K}_gauss")

    # 2. Average direction.
    for K in AVG_KS:
        E = cos_indices[:K]
        res[f"cex_avg_K-{K}"] = E
        am, bm = a[E].mean(axis=0), b[E].mean(axis=0)
        for C, C_str in AVG_CS:
            add(_normalise(-am + C * bm), f"cex_avg_K-{K}_C-{C_str}")
        add(_normalise(bm - am * (am @ bm) / (am @ am)), f"cex_avg_K-{K}_01")

    # 3. Factor direction: the component of b orthogonal to a, largest first.
    factor = nb ** 2 - dot ** 2 / na ** 2
    for s in np.argsort(-factor, kind="stable")[:NUM_FACTOR_POINTS]:
        add(_normalise(b[s] - a[s] * dot[s] / (a[s] @ a[s])), "cex_factor")

    # 4. Random points, random labels.
    X_rand = rng.normal(0, 1, (NUM_RANDOM_POINTS, D))
    Y_rand = rng.randint(0, 2, (NUM_RANDOM_POINTS,))
    for x, label in zip(X_rand, Y_rand):
        add(x, "cex_random", label)

    # 5. The all-ones point.
    add(np.ones(D), "cex_one")

    res["cex_X"] = np.vstack(xs)
    res["cex_Y"] = np.array(ys)
    res["cex_tags"] = tags
    return res


def retrain_and_newton_task(ctx: tasks.InfluenceContext, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """Phase-3 work for groups ``start..end-1``: first-order and Newton changes and the
    exact refits (a pure task of :mod:`experiments.execution`)."""
    start, end = span
    infl = ctx.influence()
    np_dtype = infl.at_optimum().np_dtype
    groups = ctx.groups(start, end)
    # g_S in the model's dtype (float32 sums in the float32 mode, as the original).
    G_S = gi.group_gradient_sums(groups, ctx.arrays["train_grad_losses"], keep_dtype=True)
    pred = infl.first_order_dparams(G_S)
    newton = infl.newton_dparams(groups, G_S, method="small")["newton_dparam"]
    refit = infl.refit(groups, len(groups), method="small", progress=False)
    return {
        "subset_pred_dparam": np.asarray(pred, dtype=np_dtype),
        "subset_newton_pred_dparam": newton.astype(np_dtype),
        "subset_dparam": gi.actual_dparams(refit.thetas, ctx.params).astype(np_dtype),
        "subset_refit_grad_norm": refit.grad_norms,
        "subset_refit_grad_tol": refit.grad_tols,
        "subset_refit_iters": refit.iterations,
    }


def cex_test_infl_task(ctx: tasks.InfluenceContext, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """Phase-5 non-linear influences of groups ``start..end-1`` on the cex points (a pure task)."""
    start, end = span
    infl = ctx.influence()
    model = infl.at_optimum()
    cex = ctx.arrays["cex"]
    before = {"loss": model.get_indiv_loss(cex), "margin": model.get_indiv_margin(cex)}
    res = {}
    for name, key in (("actl", "subset_dparam"), ("pparam", "subset_pred_dparam"),
                      ("nparam", "subset_newton_pred_dparam")):
        D = np.asarray(ctx.arrays[key][start:end])
        res[f"cex_subset_test_{name}_infl"] = infl.param_influence(D, cex, before["loss"], "loss",
                                                                   chunk=end - start)
        res[f"cex_subset_test_{name}_margin_infl"] = infl.param_influence(D, cex, before["margin"], "margin",
                                                                          chunk=end - start)
    return res


class Counterexamples(InfluenceExperiment):
    """First-order vs one-step Newton group influence on adversarial test points."""

    experiment_id = "counterexamples"
    fit_intercept = False   # binary, no intercept
    refit_max_chunk = REFIT_CHUNK
    l2_key = "l2_reg"
    _data = None

    def __init__(self, config: dict[str, Any], out_dir=None, progress: bool | None = None):
        config = dict(config)
        config.setdefault("dtype", "float64")
        super().__init__(config, out_dir, progress)
        self._data = None

    # ------------------------------------------------------------------ setup
    @property
    def run_id(self) -> str:
        rid = self.config["dataset_id"]
        if self.config.get("dtype", "float64") != "float64":
            rid += f"_{self.config['dtype']}"
        return rid

    @property
    def dtype(self) -> str:
        return self.config.get("dtype", "float64")

    def get_dataset(self, dataset_id: str | None = None):
        """``(train, test)`` as ``(X, Y)`` tuples from the phase-0 results."""
        ds = dataset_id or self.config["dataset_id"]
        if f"{ds}_train_X" not in self.R:
            raise ValueError(f"Dataset {ds} has not been generated")
        return ((self.R[f"{ds}_train_X"], self.R[f"{ds}_train_Y"]),
                (self.R[f"{ds}_test_X"], self.R[f"{ds}_test_Y"]))

    @property
    def train(self):
        if self._data is None:
            self._data = self.get_dataset()
        return self._data[0]

    @property
    def test(self):
        if self._data is None:
            self._data = self.get_dataset()
        return self._data[1]

    @property
    def num_train(self) -> int:
        return len(self.train[1])

    def inverse_methods(self) -> tuple[str, str]:
        return ("explicit", "cholesky")

    # ------------------------------------------------------------------ phases
    @phase(0)
    def generate_datasets(self):
        return generate_datasets(self.config["seed"])

    @phase(1)
    def training(self):
        model = self.get_model()
        train, test = self.train, self.test
        l2_reg = len(train[1]) * L2_REG_PER_POINT
        fit = model.fit(train, None, l2_reg)
        res = {
            "l2_reg": l2_reg,
            "train_losses": model.get_indiv_loss(train),
            "train_margins": model.get_indiv_margin(train),
            "train_accuracy": model.get_accuracy(train),
            "test_losses": model.get_indiv_loss(test),
            "test_margins": model.get_indiv_margin(test),
            "test_accuracy": model.get_accuracy(test),
            "train_grad_losses": model.get_indiv_grad_loss(train),
            "train_grad_margins": model.get_indiv_grad_margin(train),
            "test_grad_losses": model.get_indiv_grad_loss(test),
            "test_grad_margins": model.get_indiv_grad_margin(test),
            "hessian": model.get_hessian(train, None, l2_reg),
            "initial_params": model.get_params_flat(),
            "initial_fit_grad_norm": fit.grad_norm,
            "initial_fit_grad_tol": fit.grad_tol,
            "initial_fit_iters": fit.iterations,
        }
        logger.info("%s: lambda %g, train acc %.3f, ||grad|| %.2e after %d Newton iterations",
                    self.config["dataset_id"], l2_reg, res["train_accuracy"], fit.grad_norm, fit.iterations)
        return res

    @phase(2)
    def pick_subsets(self):
        return {"subset_indices": pick_subsets(self.config["dataset_id"], self.R)}

    @phase(3)
    def retrain_and_newton(self):
        ctx = tasks.InfluenceContext.from_influence(self.influence(), groups=self.subsets,
                                                        train_grad_losses=np.asarray(self.R["train_grad_losses"]))
        res = self.executor.map_chunks(retrain_and_newton_task, ctx, len(self.subsets), self.refit_chunk_size(),
                                       "refits and Newton steps")
        ratio = res["subset_refit_grad_norm"] / res["subset_refit_grad_tol"]
        logger.info("%d exact refits: %d certified, worst ||grad L_-S||/tol = %.2e, iterations %d-%d",
                    len(ratio), int((ratio <= 1).sum()), ratio.max(), res["subset_refit_iters"].min(),
                    res["subset_refit_iters"].max())
        return res

    @phase(4)
    def find_adversarial_test(self):
        return find_adversarial_test(np.asarray(self.R["subset_pred_dparam"]),
                                     np.asarray(self.R["subset_newton_pred_dparam"]), self.config["seed"])

    def _cex(self):
        return (np.asarray(self.R["cex_X"]), np.asarray(self.R["cex_Y"]))

    @phase(5)
    def compute_test_infl(self):
        ctx = tasks.InfluenceContext.from_influence(
            self.influence(), cex=self._cex(),
            **{key: np.asarray(self.R[key]) for key in ("subset_dparam", "subset_pred_dparam",
                                                        "subset_newton_pred_dparam")})
        res = self.executor.map_chunks(cex_test_infl_task, ctx, len(self.subsets), EVAL_CHUNK, "cex test influences")
        # Linear influences at theta_hat: dparam . grad f_t.
        model = self.model_at_theta_hat()
        cex = self._cex()
        grad_loss = model.get_indiv_grad_loss(cex)
        grad_margin = model.get_indiv_grad_margin(cex)
        pred = np.asarray(self.R["subset_pred_dparam"])
        newton = np.asarray(self.R["subset_newton_pred_dparam"])
        res["cex_subset_test_pred_infl"] = gi.target_influence(pred, grad_loss)
        res["cex_subset_test_pred_margin_infl"] = gi.target_influence(pred, grad_margin)
        res["cex_subset_test_newton_pred_infl"] = gi.target_influence(newton, grad_loss)
        res["cex_subset_test_newton_pred_margin_infl"] = gi.target_influence(newton, grad_margin)
        return res

    # ------------------------------------------------------------------ output
    def summary_keys(self) -> list[str]:
        return list(SUMMARY_KEYS)
