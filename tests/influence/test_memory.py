"""Memory budgets: the chunk-size rule, chunked refits, and the peak memory of a refit."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from influence import memory
from influence.logistic_regression import LogisticRegression
from influence.memory import chunk_size, downdate_bytes_per_group, refit_bytes_per_group, refit_chunk_size
from influence.refit import refit_chunk, refit_chunk_cg
from tests.conftest import REPO_ROOT


def test_chunk_size_rule_and_one_warning(caplog):
    assert chunk_size(1000, 100) == 10
    assert chunk_size(1000, 100, max_items=4) == 4
    assert chunk_size(None, 100, max_items=7) == 7
    assert refit_chunk_size(10, 100, 10 ** 12) == memory.MAX_REFIT_CHUNK
    per = refit_bytes_per_group(100, 1000, 3)
    assert per == 8 * (4 * 100 ** 2 + 4 * 1000 * 3)
    assert refit_chunk_size(100, 1000, 5 * per + 1, 3) == 5
    assert refit_chunk_size(100, 1000, 5 * per + 1, 3, explicit=False) == (5 * per + 1) // (8 * 4 * 1000 * 3)
    memory.WARNED.discard("test item")
    with caplog.at_level(logging.WARNING, logger="influence.memory"):
        assert chunk_size(10, 2_500_000_000, what="test item") == 1
        assert chunk_size(10, 2_500_000_000, what="test item") == 1
    msgs = [r.getMessage() for r in caplog.records if "test item" in r.getMessage()]
    assert len(msgs) == 1 and "2.5 GB" in msgs[0] and "10 B" in msgs[0]
    for bad in (0, -5, 1.5):
        with pytest.raises(ValueError, match="max_memory"):
            chunk_size(bad, 10)
    with pytest.raises(ValueError, match="bytes_per_item"):
        chunk_size(100, 0)


def _problem(num_classes, n=80, D=5, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, num_classes, n)
    X = rng.normal(0, 1.5, (num_classes, D))[y] + rng.normal(0, 1, (n, D))
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": num_classes}
    m = LogisticRegression(cfg)
    m.fit((X, y), None, 0.5)
    groups = [rng.choice(n, k, replace=False) for k in (1, 3, 7, 2, 12, 5, 4)]
    return m, X, y, groups


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("engine", ["explicit", "cg"])
def test_refit_within_max_memory_equals_refits_of_its_sub_chunks(num_classes, engine):
    m, X, y, groups = _problem(num_classes)
    Xa, yt, s = m.design((X, y))
    theta = m.get_params_flat()
    n, d = len(y), m.num_params
    per = refit_bytes_per_group(d, n, m.spec.num_rows, engine == "explicit")
    budget = 3 * per  # three groups per sub-chunk
    H = m.get_hessian((X, y), None, 0.5)
    if engine == "explicit":
        def run(gs, **kw):
            return refit_chunk(m.spec, theta, Xa, yt, s, 0.5, gs, hessian_hat=H, hess_chunk=2, **kw)
    else:
        from influence.newton import make_preconditioner
        pre = make_preconditioner(m.spec, theta, Xa, s, 0.5)
        def run(gs, **kw):
            return refit_chunk_cg(m.spec, theta, Xa, yt, s, 0.5, gs, preconditioner=pre, **kw)
    whole = run(groups, max_memory=budget)
    parts = [run(groups[i:i + 3]) for i in range(0, len(groups), 3)]
    assert whole.converged.all()
    for name in ("thetas", "grad_norms", "grad_tols", "iterations", "hessians", "hvps", "first_steps"):
        assert np.array_equal(getattr(whole, name), np.concatenate([getattr(p, name) for p in parts])), name


_CHILD = r"""
import os, resource, sys
import numpy as np
import influence.downdate as dd
from influence.logistic_regression import LogisticRegression
from influence.refit import downdate_basis, refit_chunk, refit_chunk_downdate
refit, max_memory, route = sys.argv[1] == "refit", int(sys.argv[2]), sys.argv[3]
if route == "explicit":
    dd.DOWNDATE_MIN_PARAMS = 10 ** 9  # keep this binary model on the explicit-Hessian route
rng = np.random.RandomState(0)
n, D = 600, 1499
X = rng.randn(n, D) / np.sqrt(D)
y = (X @ rng.randn(D) + 0.5 * rng.randn(n) > 0).astype(np.int64)
cfg = LogisticRegression.default_config()
cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": 2}
m = LogisticRegression(cfg)
m.fit((X, y), None, 1.0)
H = m.get_hessian((X, y), None, 1.0)
Xa, yt, s = m.design((X, y))
groups = [rng.choice(n, 5 if route == "explicit" else 300, replace=False) for _ in range(12)]
# The downdate route's shared operators (H^-1, the Gram matrix) are data: built in both children.
basis = downdate_basis(m.spec, m.get_params_flat(), Xa, s, H) if route == "downdate" else None
if refit:
    args = (m.spec, m.get_params_flat(), Xa, yt, s, 1.0, groups)
    r = (refit_chunk(*args, hessian_hat=H, max_memory=max_memory) if basis is None
         else refit_chunk_downdate(*args, basis, max_memory=max_memory))
    assert r.converged.all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak_rss(mode, max_memory, route="explicit"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               # A fixed mmap threshold: glibc otherwise raises it to the size of freed
               # blocks and keeps later (d, d) arrays in the heap, so the peak would count
               # allocator retention rather than the working arrays the budget bounds.
               MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(max_memory), route], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_refit_peak_memory_stays_within_max_memory():
    """12 groups of a d = 1,500 model with explicit Hessians (18 MB each): all at once
    they take about 0.9 GB; with max_memory = 160 MB the refit runs in chunks of two
    groups and its peak, above a child that did everything but the refit, stays within
    the budget plus the data it copies (the design and the full Hessian)."""
    max_memory = 160 * 10 ** 6
    d, n = 1500, 600
    assert refit_chunk_size(d, n, max_memory) == 2
    data = 8 * (n * d + d * d)
    extra = _peak_rss("refit", max_memory) - _peak_rss("base", max_memory)
    assert extra <= max_memory + data, f"refit used {extra / 1e6:.0f} MB > {(max_memory + data) / 1e6:.0f} MB"


def test_downdate_refit_peak_memory_stays_within_max_memory():
    """The same model on the downdate route (influence/downdate.py), 12 groups of 300
    points: each group's working arrays are its 300 x 300 factor and a few (n,) and (d,)
    vectors (downdate_bytes_per_group, about 0.8 MB), so with max_memory = 2 MB the
    continuously batched refit runs two groups at a time; its peak above a child that
    built the shared operators stays within the budget plus the data it copies (the design)."""
    max_memory = 2 * 10 ** 6
    d, n = 1500, 600
    assert 2 * downdate_bytes_per_group(n, d, 300) <= max_memory < 3 * downdate_bytes_per_group(n, d, 300)
    data = 8 * n * d
    extra = _peak_rss("refit", max_memory, "downdate") - _peak_rss("base", max_memory, "downdate")
    assert extra <= max_memory + data, f"refit used {extra / 1e6:.0f} MB > {(max_memory + data) / 1e6:.0f} MB"


def test_one_group_over_budget_warns_once_with_the_amount_and_goes_on(caplog):
    m, X, y, groups = _problem(2)
    Xa, yt, s = m.design((X, y))
    per = refit_bytes_per_group(m.num_params, len(y))
    memory.WARNED.discard("refit group")
    with caplog.at_level(logging.WARNING, logger="influence.memory"):
        r = refit_chunk(m.spec, m.get_params_flat(), Xa, yt, s, 0.5, groups, max_memory=per // 2)
    msgs = [rec.getMessage() for rec in caplog.records if "refit group" in rec.getMessage()]
    assert len(msgs) == 1 and memory.format_bytes(per) in msgs[0], msgs
    assert r.converged.all() and r.thetas.shape == (len(groups), m.num_params)


_CHILD_PATH = r"""
import resource, sys
import numpy as np
from influence.logistic_regression import LogisticRegression
mode, n = sys.argv[1], int(sys.argv[2])
D, K, F = 600, 3, 5  # MultiNLI's model (3 x 601 = 1,803 parameters), five CV folds
rng = np.random.RandomState(0)
y = rng.randint(0, K, n)
X = (rng.normal(0, 0.1, (K, D))[y] + rng.normal(0, 1, (n, D))).astype(np.float32)
cfg = LogisticRegression.default_config()
cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": K}
m = LogisticRegression(cfg)
if mode == "path":
    W = np.ones((n, F))
    for k, val in enumerate(np.array_split(np.arange(n), F)):
        W[val, k] = 0.0
    for r in m.fit_path((X, y), W, (1e-3 * n, 3e-3 * n)):
        assert r.converged.all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_multinli_shaped_cross_validation_path_peak_memory():
    """fit_path as MultiNLI's cross-validation runs it (1,803 parameters, float32 input,
    five folds as weights on one design, a cold and a warm lambda) on 40,000 rows. Its peak
    above a child that only made the data stays within four float64 designs (the design
    tensor, the NumPy array it is made from, one fold block of rows copied twice for its
    Hessian and the syrk products' weighted row blocks) and 40 (d, d) matrices (per fold:
    the start Hessian, its block sum, gauge-fixed copy, factor and a fresh Hessian): no
    fold copy of the design and nothing of size (n, d)."""
    n, d, E = 40000, 1803, 601
    bound = 8 * (4 * n * E + 40 * d * d)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MALLOC_MMAP_THRESHOLD_="65536")
    peaks = {}
    for mode in ("base", "path"):
        out = subprocess.run([sys.executable, "-c", _CHILD_PATH, mode, str(n)], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[mode] = int(out.stdout.strip().splitlines()[-1])
    extra = peaks["path"] - peaks["base"]
    assert extra <= bound, f"the path used {extra / 1e6:.0f} MB > {bound / 1e6:.0f} MB"


def test_newton_cg_fit_preconditioner_does_not_keep_a_dropped_design_alive(monkeypatch):
    """The Newton-CG fits' preconditioner is tied to its design by a weak reference: once
    the design cache drops the training design it is freed (a large one made again would
    otherwise be held twice), and a warm fit on the design made again forms a new
    preconditioner, while one on the kept design reuses it."""
    import gc
    import weakref

    import influence.logistic_regression as lr

    rng = np.random.default_rng(3)
    X, Xt = rng.normal(size=(300, 6)), rng.normal(size=(40, 6))
    y, yt = rng.integers(0, 3, 300), rng.integers(0, 3, 40)
    cfg = LogisticRegression.default_config()
    cfg.update(arch={"input_dim": 6, "fit_intercept": True, "num_classes": 3}, fit_method="newton_cg")
    model = LogisticRegression(cfg)
    model.fit((X, y), None, 1.0)
    first = model.fit_preconditioner
    model.warm_fit((X, y), None, 2.0)
    assert first is not None and model.fit_preconditioner is first  # the kept design: reused
    ref = weakref.ref(model.design((X, y))[0])
    monkeypatch.setattr(lr, "CACHE_MAX_BYTES", 0)  # every older design is dropped
    model.get_indiv_loss((Xt, yt))
    assert not any(x is X for x in model.cached_inputs)
    gc.collect()
    assert ref() is None
    model.warm_fit((X, y), None, 3.0)  # on the design made again: a new preconditioner
    assert model.fit_preconditioner is not first and model.last_fit.grad_norm <= model.last_fit.grad_tol
