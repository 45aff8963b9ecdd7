"""Certified fits against scikit-learn and the optimality condition."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLR

from influence.logistic_regression import LogisticRegression
from influence.numerics import ConvergenceWarning
from tests.conftest import assert_close
from tests.influence.problems import gaussian_classes


def problem(num_classes, fit_intercept, n=50, D=5, seed=3):
    return gaussian_classes(num_classes, fit_intercept, n, D, seed)[:3]


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("fit_method", ["newton", "newton_cg"])
def test_fit_matches_sklearn_and_is_certified(num_classes, fit_intercept, fit_method):
    model, X, y = problem(num_classes, fit_intercept)
    model.config["fit_method"] = fit_method
    l2 = 0.5
    s = np.random.RandomState(0).uniform(0.2, 3.0, len(y))
    res = model.fit((X, y), s, l2)
    assert res.converged and res.grad_norm <= res.grad_tol
    # The certificate is what it claims: recompute the gradient independently.
    g = model.get_total_grad_loss((X, y), s, l2)
    assert np.linalg.norm(g) == pytest.approx(res.grad_norm, rel=1e-6, abs=1e-14)
    assert res.grad_tol <= 1e-12 * model.grad_scale((X, y), s) + 1e-300
    sk = SkLR(C=1 / l2, fit_intercept=fit_intercept, solver="newton-cholesky", tol=1e-14, max_iter=500)
    sk.fit(X, y, sample_weight=s)
    coef, intercept = model.get_coef_intercept()
    sk_coef = sk.coef_
    sk_int = sk.intercept_ if fit_intercept else np.zeros(coef.shape[0])
    if num_classes > 2 and fit_intercept:
        # Multinomial intercepts are defined up to a common constant (softmax is
        # invariant); compare centred values. Our fit keeps sum(b) = 0.
        assert abs(intercept.sum()) < 1e-12
        sk_int = sk_int - sk_int.mean()
    assert_close(coef, sk_coef, 1e-8, what="coef vs sklearn")
    assert_close(intercept, sk_int, 1e-8, atol=1e-10, what="intercept vs sklearn")


def test_warm_fit_from_optimum_takes_no_step_and_refit_without_points():
    model, X, y = problem(2, True)
    l2 = 0.5
    model.fit((X, y), None, l2)
    theta = model.get_params_flat()
    res = model.warm_fit((X, y), None, l2)
    assert res.iterations == 0 and np.array_equal(model.get_params_flat(), theta)
    s = np.ones(len(y))
    s[:5] = 0
    res = model.warm_fit((X, y), s, l2)
    assert res.converged and res.iterations >= 1
    cold = problem(2, True)[0]
    cold.fit((X[5:], y[5:]), None, l2)
    assert_close(model.get_params_flat(), cold.get_params_flat(), 1e-10, what="weight 0 == removal")


def test_fit_unregularised_intercept_only_direction():
    # With a huge lambda the weights vanish and the intercept must equal log-odds.
    model, X, y = problem(2, True)
    model.fit((X, y), None, 1e12)
    p = y.mean()
    assert abs(model.params[-1] - np.log(p / (1 - p))) < 1e-8
    assert np.abs(model.params[:-1]).max() < 1e-9


def test_float32_mode_fits_close_to_float64():
    model, X, y = problem(2, True)
    model.fit((X, y), None, 0.5)
    cfg = dict(model.config, dtype="float32")
    m32 = LogisticRegression(cfg)
    r32 = m32.fit((X, y), None, 0.5)
    assert m32.get_params_flat().dtype == np.float32
    assert r32.converged
    # float32 has eps ~1.2e-7 and this problem's condition number is ~20: agreement to
    # 1e-5 relative is what single precision can give, not a loosened check.
    assert_close(m32.get_params_flat(), model.get_params_flat(), 1e-5, what="float32 vs float64")


def test_non_convergence_warns_with_remedy():
    model, X, y = problem(2, True)
    model.config["max_newton_iter"] = 1
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        res = model.fit((X, y), None, 0.5)
    assert not res.converged and res.iterations == 1


def test_save_load_round_trip(tmp_path):
    model, X, y = problem(3, True)
    model.model_dir = tmp_path
    model.fit((X, y), None, 0.5)
    model.save("initial")
    theta = model.get_params_flat()
    model.set_params_flat(np.zeros_like(theta))
    model.load("initial")
    assert np.array_equal(model.get_params_flat(), theta)
    assert list(tmp_path.iterdir()) == []  # influence/ writes no files
    # get_state / set_state carry the states as arrays (the caller stores them).
    state = model.get_state()
    fresh = LogisticRegression(model.config)
    fresh.set_state(state)
    fresh.load("initial")
    assert np.array_equal(fresh.get_params_flat(), theta)
    with pytest.raises(KeyError, match="no saved model state"):
        fresh.load("missing")
    with pytest.raises(ValueError, match="num_params"):
        fresh.set_state({"state/bad": np.zeros(3)})


# ----------------------------------------------------------------------------- Newton-CG along a path
PATH_L2 = (0.05, 0.5, 5.0)  # ascending, as the cross-validation paths


def sklearn_params(X, y, s, l2, fit_intercept):
    """sklearn's multinomial optimum (intercepts centred: softmax fixes them up to a constant)."""
    sk = SkLR(C=1 / l2, fit_intercept=fit_intercept, solver="newton-cholesky", tol=1e-14, max_iter=500)
    sk.fit(X, y, sample_weight=s)
    return sk.coef_, (sk.intercept_ - sk.intercept_.mean()) if fit_intercept else np.zeros(sk.coef_.shape[0])


def newton_cg_path(reuse, s=None, num_classes=3):
    """A cold fit, then warm fits along PATH_L2, of a Newton-CG model; (model, data, fits)."""
    model, X, y = problem(num_classes, True)
    model.config["fit_method"] = "newton_cg"
    model.config["reuse_fit_preconditioner"] = reuse
    fits = [model.fit((X, y), s, PATH_L2[0])]
    params = [model.get_params_flat()]
    for l2 in PATH_L2[1:]:
        fits.append(model.warm_fit((X, y), s, l2))
        params.append(model.get_params_flat())
    return model, X, y, fits, params


@pytest.mark.parametrize("weights", [False, True])
def test_newton_cg_path_reuses_its_preconditioner_and_matches_sklearn(weights):
    s = np.random.RandomState(1).uniform(0.2, 3.0, 50) if weights else None
    model, X, y, fits, params = newton_cg_path(True, s)
    # The cold fit starts with the exact Hessian at zero (no Hessian of the rows); the first
    # warm fit forms the rows' Hessian at its start, and every later warm fit on the same
    # design and weights keeps it and only refactors it for its l2_reg (18 parameters: CG
    # never needs more than 18 iterations, so it never goes stale).
    assert fits[0].preconditioner_hessians == 0 and fits[0].preconditioner_factorizations >= 1
    assert (fits[1].preconditioner_hessians, fits[1].preconditioner_factorizations) == (1, 1)
    for fit in fits[2:]:
        assert (fit.preconditioner_hessians, fit.preconditioner_factorizations) == (0, 1)
    assert all(fit.hvps > 0 for fit in fits)
    assert model.fit_preconditioner.hessians == 1
    for fit, theta, l2 in zip(fits, params, PATH_L2):
        assert fit.converged and fit.grad_norm <= fit.grad_tol
        model.set_params_flat(theta)
        coef, intercept = model.get_coef_intercept()
        sk_coef, sk_int = sklearn_params(X, y, s, l2, True)
        assert abs(intercept.sum()) < 1e-12
        assert_close(coef, sk_coef, 1e-8, what=f"coef vs sklearn at l2={l2}")
        assert_close(intercept, sk_int, 1e-8, atol=1e-10, what=f"intercept vs sklearn at l2={l2}")
    # Without reuse every fit forms its own Hessian; the optima agree to the certificate.
    _, _, _, fresh_fits, fresh = newton_cg_path(False, s)
    assert all(f.preconditioner_hessians >= 1 for f in fresh_fits[1:])
    for a, b, l2 in zip(params, fresh, PATH_L2):
        assert_close(a, b, 1e-9, what=f"reused vs fresh preconditioner at l2={l2}")


def test_newton_cg_preconditioner_is_not_reused_across_designs_weights_or_cold_fits():
    model, X, y, fits, _ = newton_cg_path(True)
    s = np.ones(len(y))
    s[:3] = 0.0
    assert model.warm_fit((X, y), s, PATH_L2[0]).preconditioner_hessians == 1   # other weights
    assert model.warm_fit((X, y), s, PATH_L2[1]).preconditioner_hessians == 0   # the same again
    assert model.warm_fit((X[3:].copy(), y[3:].copy()), None, PATH_L2[1]).preconditioner_hessians == 1
    before = model.fit_preconditioner
    assert model.fit((X, y), None, PATH_L2[2]).preconditioner_factorizations >= 1  # cold: a fresh start
    assert model.fit_preconditioner is not before and model.fit_preconditioner.hessians == 0
    model.release_fit_preconditioner()
    assert model.fit_preconditioner is None


@pytest.mark.parametrize("max_rows", [20, 10000])
def test_path_preconditioner_is_make_preconditioners_at_its_iterate(max_rows):
    """The path's factor is make_preconditioner's at the iterate its Hessian was formed at,
    for the l2_reg of each call ('subsampled' with 20 of 50 rows, 'hessian' with all)."""
    import tensorflow as tf

    from influence.newton import PathPreconditioner, make_preconditioner
    from influence.objective import LogisticObjective

    model, X, y = problem(3, True)
    Xa, yt, s = model.design((X, y))
    theta0 = np.random.RandomState(2).normal(0, 0.3, model.num_params)
    theta1 = theta0 + 0.5
    kind = "subsampled" if max_rows < len(y) else "hessian"
    path = PathPreconditioner(max_rows=max_rows)
    R = np.random.RandomState(4).normal(size=(3, model.num_params))
    for l2, theta in ((0.5, theta0), (5.0, theta1)):
        obj = LogisticObjective(model.spec, Xa, yt, s, l2)
        P = path(obj, tf.constant(theta))
        ref = make_preconditioner(model.spec, theta0, Xa, s, l2, kind, max_rows=max_rows, float32=False)
        assert_close(P(R), ref(R), 1e-10, what=f"path vs make_preconditioner at l2={l2}")
    assert (path.hessians, path.factorizations) == (1, 2)
    path.stale()
    P = path(obj, tf.constant(theta1))
    ref = make_preconditioner(model.spec, theta1, Xa, s, 5.0, kind, max_rows=max_rows, float32=False)
    assert_close(P(R), ref(R), 1e-10, what="after stale(): formed at the new iterate")
    assert (path.hessians, path.factorizations) == (2, 3)


def test_path_preconditioner_in_float32_steers_the_same_certified_fit():
    """The float32 factorisations (the rule for models of 1,024 parameters or more) give
    the float64 factor's products to float32 accuracy, and the certified optimum is the same."""
    import tensorflow as tf

    from influence.newton import NewtonCG, PathPreconditioner, armijo_step, newton_loop
    from influence.objective import LogisticObjective

    model, X, y = problem(3, True)
    Xa, yt, s = model.design((X, y))
    obj = LogisticObjective(model.spec, Xa, yt, s, 0.5)
    theta = tf.constant(np.random.RandomState(2).normal(0, 0.3, model.num_params))
    R = np.random.RandomState(4).normal(size=(3, model.num_params))
    P32, P64 = PathPreconditioner(float32=True)(obj, theta), PathPreconditioner(float32=False)(obj, theta)
    assert P32.float32 and not P64.float32
    # Loosened: float32 products and factorisation of a Hessian of condition number ~1e3
    # (l2 = 0.5 on 50 points) err by about cond * eps32 ~ 1e-4 relative.
    assert_close(P32(R), P64(R), 1e-3, what="float32 vs float64 factor")
    tol = np.array([1e-12 * model.grad_scale((X, y))])
    thetas = []
    for f32 in (True, False):
        strategy = NewtonCG(None, 1000, floor=1e-14, tighten=False, rebuild_after=25, search=armijo_step,
                            path=PathPreconditioner(float32=f32))
        res = newton_loop(obj, tf.zeros([1, model.num_params], dtype=tf.float64), tol, strategy, 100, polish_steps=2)
        assert res.converged.all()
        thetas.append(res.thetas[0])
    assert_close(thetas[0], thetas[1], 1e-9, what="float32 vs float64 preconditioner optimum")


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_uniform_start_preconditioner_is_the_exact_hessian_at_zero(fit_intercept):
    """The cold start's preconditioner (all probabilities 1/K) against the full Hessian's
    Cholesky factor at theta = 0 (make_preconditioner 'hessian'), and its use by the path."""
    import tensorflow as tf

    from influence.newton import PathPreconditioner, UniformStartPreconditioner, make_preconditioner
    from influence.objective import LogisticObjective

    model, X, y = problem(3, fit_intercept)
    Xa, yt, s = model.design((X, y))
    w = np.random.RandomState(5).uniform(0.2, 3.0, len(y))
    R = np.random.RandomState(4).normal(size=(3, model.num_params))
    zero = np.zeros(model.num_params)
    P = UniformStartPreconditioner.make(model.spec, Xa.numpy(), w, 0.5)
    ref = make_preconditioner(model.spec, zero, Xa, w, 0.5, "hessian", float32=False)
    assert_close(P(R), ref(R), 1e-10, what="uniform start vs full Hessian at 0")
    path = PathPreconditioner()
    obj = LogisticObjective(model.spec, Xa, yt, tf.constant(w), 0.5)
    assert isinstance(path(obj, tf.constant(zero)), UniformStartPreconditioner)
    assert (path.hessians, path.factorizations) == (0, 1)
    path(obj, tf.constant(zero + 0.1))  # away from zero: the Hessian of the rows
    assert (path.hessians, path.factorizations) == (1, 2)
    if not fit_intercept:  # no regularisation: singular along the classes' mean, no shortcut
        assert UniformStartPreconditioner.make(model.spec, Xa.numpy(), w, 0.0) is None


@pytest.mark.parametrize("num_classes", [2, 3])
def test_fit_path_equals_separate_fold_fits_and_sklearn(num_classes):
    """fit_path (every fold's problem along the lambda path at once: cold at the first
    lambda, warm after) against a separate cold fit on each fold's training rows and
    against scikit-learn's multinomial fit, with sample weights; all certified."""
    model, X, y = problem(num_classes, True, n=120, D=4)
    n = len(y)
    s = np.random.RandomState(1).uniform(0.5, 2.0, n)
    folds = np.array_split(np.arange(n), 4)
    W = np.repeat(s[:, None], len(folds), axis=1)
    for k, val in enumerate(folds):
        W[val, k] = 0.0
    regs = (0.2, 0.8, 3.0)
    before = model.get_params_flat().copy()
    path = model.fit_path((X, y), W, regs)
    assert np.array_equal(model.get_params_flat(), before)  # the model's parameters stay
    ref = LogisticRegression(model.config)
    for res, l2 in zip(path, regs):
        assert res.thetas.shape == (len(folds), model.num_params)
        assert res.converged.all() and (res.grad_norms <= res.grad_tols).all()
        for k, val in enumerate(folds):
            tr = np.setdiff1d(np.arange(n), val)
            fit = ref.fit((X[tr], y[tr]), s[tr], l2)
            # The same certificate scale as the separate fit (its rows' weighted norms).
            assert res.grad_tols[k] == pytest.approx(fit.grad_tol, rel=1e-12)
            # Two certified optima of one strictly convex problem.
            assert_close(res.thetas[k], ref.get_params_flat(), 1e-8, what=f"fold {k} at l2={l2}")
            sk = SkLR(C=1 / l2, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[tr], y[tr], sample_weight=s[tr])
            model.set_params_flat(res.thetas[k])
            coef, _ = model.get_coef_intercept()
            assert_close(coef, sk.coef_, 1e-7, what=f"fold {k} at l2={l2} vs sklearn")
    model.set_params_flat(before)


def test_fit_path_rejects_bad_fold_weights():
    model, X, y = problem(3, True)
    n = len(y)
    with pytest.raises(ValueError, match=rf"fold_weights must be finite, >= 0 and of shape \({n}, F\)"):
        model.fit_path((X, y), np.ones(n), (1.0,))
    W = np.ones((n, 2))
    W[0, 1] = -1.0
    with pytest.raises(ValueError, match="fold_weights must be finite, >= 0"):
        model.fit_path((X, y), W, (1.0,))
    W[0, 1] = 2.0  # row 0 weighted 1 in one problem and 2 in the other
    with pytest.raises(ValueError, match="one weight in every problem that keeps it"):
        model.fit_path((X, y), W, (1.0,))
