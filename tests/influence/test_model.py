"""Oracle tests of the logistic-regression kernels (autodiff, finite differences, sklearn)."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression as SkLR

from influence import objective as K
from influence.logistic_regression import LogisticRegression
from tests.conftest import ATOL_PREDICT, RTOL_AUTODIFF, RTOL_FD, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import reference_hessian, reference_loss, reference_losses

CASES = [  # (num_classes, fit_intercept)
    (2, True), (2, False), (3, True), (3, False),
]


def make_problem(num_classes, fit_intercept, n=40, D=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(0, 1, (n, D))
    y = rng.randint(0, num_classes, n)
    y[:num_classes] = np.arange(num_classes)
    s = rng.uniform(0.5, 2.0, n)
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": fit_intercept, "num_classes": num_classes}
    model = LogisticRegression(cfg)
    model.set_params_flat(rng.normal(0, 0.7, model.num_params))
    return model, (X, y), s


def autodiff_total_grad_and_hessian(model, data, s, l2):
    X, y = data
    Xa, yt, st = model.design(data, s)
    theta = tf.Variable(model.params)
    with tf.GradientTape() as t2:
        with tf.GradientTape() as t1:
            f = reference_loss(theta, Xa, yt, st, l2, model.spec)
        g = t1.gradient(f, theta)
    H = t2.jacobian(g, theta)
    return g.numpy(), H.numpy()


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_gradient_and_hessian_match_autodiff(num_classes, fit_intercept):
    model, data, s = make_problem(num_classes, fit_intercept)
    l2 = 0.3
    g_ad, H_ad = autodiff_total_grad_and_hessian(model, data, s, l2)
    assert_close(model.get_total_grad_loss(data, s, l2), g_ad, RTOL_AUTODIFF, what="total grad")
    assert_close(model.get_hessian(data, s, l2), H_ad, RTOL_AUTODIFF, what="hessian")
    # Per-example gradients: autodiff of each example's loss.
    X, y = data
    Xa, yt, _ = model.design(data)
    theta = tf.Variable(model.params)
    with tf.GradientTape() as t:
        losses = reference_losses(theta, Xa, yt, model.spec)
    G_ad = t.jacobian(losses, theta).numpy()
    assert_close(model.get_indiv_grad_loss(data), G_ad, RTOL_AUTODIFF, what="indiv grads")


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_derivatives_match_finite_differences(num_classes, fit_intercept):
    model, data, s = make_problem(num_classes, fit_intercept)
    l2 = 0.3
    theta0 = model.get_params_flat()
    g = model.get_total_grad_loss(data, s, l2)
    H = model.get_hessian(data, s, l2)
    h = 1e-5
    g_fd = np.zeros_like(g)
    H_fd = np.zeros_like(H)
    for j in range(len(theta0)):
        e = np.zeros_like(theta0)
        e[j] = h
        model.set_params_flat(theta0 + e)
        fp, gp = model.get_total_loss(data, s, l2), model.get_total_grad_loss(data, s, l2)
        model.set_params_flat(theta0 - e)
        fm, gm = model.get_total_loss(data, s, l2), model.get_total_grad_loss(data, s, l2)
        g_fd[j] = (fp - fm) / (2 * h)
        H_fd[:, j] = (gp - gm) / (2 * h)
    model.set_params_flat(theta0)
    assert_close(g, g_fd, RTOL_FD, what="gradient vs FD")
    assert_close(H, H_fd, RTOL_FD, what="hessian vs FD")


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_two_paths_agree(num_classes, fit_intercept):
    model, data, s = make_problem(num_classes, fit_intercept)
    l2 = 0.3
    G = model.get_indiv_grad_loss(data)
    mask = model.spec.weight_mask()
    total = G.T @ s + l2 * mask * model.params
    assert_close(model.get_total_grad_loss(data, s, l2), total, RTOL_TWO_PATHS, what="sum of indiv grads")
    H = model.get_hessian(data, s, l2)
    V = np.random.RandomState(1).normal(size=(model.num_params, 3))
    assert_close(model.get_hvp(V, data, s, l2), H @ V, RTOL_TWO_PATHS, what="closed-form HVP")
    assert_close(model.get_hvp(V[:, 0], data, s, l2, method="autodiff"), H @ V[:, 0], RTOL_TWO_PATHS,
                 what="autodiff HVP")
    # Unweighted loss is the sum of per-example losses plus the penalty.
    total_loss = model.get_indiv_loss(data) @ s + 0.5 * l2 * np.sum(mask * model.params ** 2)
    assert abs(model.get_total_loss(data, s, l2) - total_loss) <= RTOL_TWO_PATHS * abs(total_loss)


def test_bias_is_not_regularised_and_weights_are():
    model, data, s = make_problem(2, True)
    H0 = model.get_hessian(data, s, 0.0)
    H1 = model.get_hessian(data, s, 2.0)
    diff = H1 - H0
    assert_close(np.diag(diff)[:-1], np.full(4, 2.0), RTOL_TWO_PATHS, what="lambda on weights")
    assert diff[-1, -1] == 0.0  # the intercept is unregularised
    g0 = model.get_total_grad_loss(data, s, 0.0)
    g1 = model.get_total_grad_loss(data, s, 2.0)
    assert_close(g1 - g0, 2.0 * model.spec.weight_mask() * model.params, RTOL_TWO_PATHS)


def test_parameter_layout_multinomial_is_class_major_then_biases():
    model, (X, y), _ = make_problem(3, True)
    theta = model.get_params_flat()
    W = theta[:12].reshape(3, 4)
    b = theta[12:]
    Z = X @ W.T + b
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    assert_close(model.get_predictions(X), P, 0, atol=ATOL_PREDICT)
    # Per-example gradient row: (p - onehot) kron x for weights, then (p - onehot).
    R = P - np.eye(3)[y]
    G = np.hstack([(R[:, :, None] * X[:, None, :]).reshape(len(X), -1), R])
    assert_close(model.get_indiv_grad_loss((X, y)), G, RTOL_TWO_PATHS)


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_predictions_match_sklearn_with_copied_parameters(num_classes, fit_intercept):
    model, (X, y), _ = make_problem(num_classes, fit_intercept)
    sk = SkLR(fit_intercept=fit_intercept)
    coef, intercept = model.get_coef_intercept()
    sk.coef_ = coef
    sk.intercept_ = intercept if fit_intercept else np.zeros(coef.shape[0])
    sk.classes_ = np.arange(num_classes)
    assert_close(model.get_predictions(X), sk.predict_proba(X), 0, atol=ATOL_PREDICT, what="predict_proba")
    assert model.get_accuracy((X, y)) == pytest.approx(np.mean(sk.predict(X) == y), abs=0)


def test_margins_binary():
    model, (X, y), s = make_problem(2, True)
    w, b = model.params[:-1], model.params[-1]
    sign = 2 * y - 1
    assert_close(model.get_indiv_margin((X, y)), sign * (X @ w + b), RTOL_TWO_PATHS)
    Gm = model.get_indiv_grad_margin((X, y))
    assert_close(Gm, sign[:, None] * np.hstack([X, np.ones((len(X), 1))]), 0)
    assert_close(model.get_total_grad_margin((X, y), s), Gm.T @ s, RTOL_TWO_PATHS)
    # Margin gradient by finite differences (a sign flip would fail this).
    theta0, h = model.get_params_flat(), 1e-6
    for j in range(model.num_params):
        e = np.zeros_like(theta0)
        e[j] = h
        model.set_params_flat(theta0 + e)
        mp = model.get_indiv_margin((X, y))
        model.set_params_flat(theta0 - e)
        mm = model.get_indiv_margin((X, y))
        assert_close((mp - mm) / (2 * h), Gm[:, j], RTOL_FD, what=f"margin grad col {j}")
    model.set_params_flat(theta0)
    # Loss / margin identity: grad l = -sigma(-m) grad m.
    m = model.get_indiv_margin((X, y))
    G = model.get_indiv_grad_loss((X, y))
    assert_close(G, -(1 / (1 + np.exp(m)))[:, None] * Gm, RTOL_TWO_PATHS)


def test_zs_factor_the_hessian():
    model, data, s = make_problem(2, True)
    Z = model.get_zs(data)
    assert_close(Z.T @ Z, model.get_hessian(data, None, 0.0), RTOL_TWO_PATHS)
    with pytest.raises(ValueError, match="binary"):
        make_problem(3, True)[0].get_zs(data)


def test_bad_inputs_raise_clear_errors():
    model, (X, y), s = make_problem(2, True)
    with pytest.raises(ValueError, match="sample_weights must have length 40"):
        model.get_total_grad_loss((X, y), np.ones(3))
    with pytest.raises(ValueError, match="l2_reg must be finite and >= 0"):
        model.get_hessian((X, y), None, -1.0)
    with pytest.raises(ValueError, match="labels must be integers"):
        model.get_indiv_loss((X, y + 5))
    with pytest.raises(ValueError, match="params must have length"):
        model.set_params_flat(np.zeros(2))
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": 4, "fit_intercept": True, "num_classes": 2}
    cfg["dtype"] = "float16"
    with pytest.raises(ValueError, match="config\\['dtype'\\]"):
        LogisticRegression(cfg)


@pytest.mark.parametrize("num_classes,fit_intercept", [(2, True), (3, True), (4, False)])
def test_numpy_syrk_hessian_equals_tensorflow_hessian(num_classes, fit_intercept, monkeypatch):
    """The 'syrk' and 'matmul' strategies of LogisticObjective.hessians against each other
    and against the autodiff Hessian of an independent loss."""
    spec = K.ModelSpec(5, num_classes, fit_intercept)
    rng = np.random.RandomState(0)
    Xa = K.augment(tf.constant(rng.randn(40, 5)), spec)
    y = rng.randint(0, num_classes, 40)
    theta = rng.randn(spec.num_params)
    s = rng.uniform(0.5, 2.0, 40)
    # Tiny row blocks force several of them on both routes.
    monkeypatch.setattr(K, "HESSIAN_BLOCK_BYTES", 8 * spec.num_params * num_classes * 7)
    obj = K.LogisticObjective(spec, Xa, None, tf.constant(s), 0.3, Xa_np=Xa.numpy())
    Theta = tf.constant(theta)[None]
    H_np = obj.hessians(Theta, method="syrk", gauge=False, as_numpy=True)[0]
    H_tf = obj.hessians(Theta, method="matmul", gauge=False)[0].numpy()
    assert_close(H_np, H_tf, RTOL_TWO_PATHS, what="syrk Hessian")
    H_ad = reference_hessian(tf.constant(theta), Xa, y, tf.constant(s), 0.3, spec)
    assert_close(H_tf, H_ad, RTOL_AUTODIFF, what="Hessian vs autodiff")


@pytest.mark.parametrize("num_classes,fit_intercept", [(2, True), (3, False)])
def test_fmin_ncg_inverse_hvp_is_the_originals_solver(num_classes, fit_intercept):
    """'fmin_ncg' (scipy.optimize.fmin_ncg, the original's solver) against the direct
    solve; it reads the fmin_ncg_* config keys, which plain 'cg' does not."""
    from tests.conftest import RTOL_CG
    model, data, s = make_problem(num_classes, fit_intercept)
    V = np.random.RandomState(3).normal(size=(model.num_params, 2))
    direct = model.get_inverse_hvp(V, dataset=data, sample_weights=s, l2_reg=0.3, inverse_hvp_method="explicit")
    ncg = model.get_inverse_hvp(V, dataset=data, sample_weights=s, l2_reg=0.3, inverse_hvp_method="fmin_ncg")
    assert_close(ncg, direct, RTOL_CG, what="fmin_ncg inverse HVP")
    one = model.get_inverse_hvp(V[:, 0], dataset=data, sample_weights=s, l2_reg=0.3, inverse_hvp_method="fmin_ncg")
    assert one.shape == (model.num_params,) and np.array_equal(one, ncg[:, 0])
    model.config["fmin_ncg_maxiter"] = 1
    capped = model.get_inverse_hvp(V, dataset=data, sample_weights=s, l2_reg=0.3, inverse_hvp_method="fmin_ncg")
    assert np.max(np.abs(capped - direct)) > 1e3 * RTOL_CG * np.max(np.abs(direct))
    cg = model.get_inverse_hvp(V, dataset=data, sample_weights=s, l2_reg=0.3, inverse_hvp_method="cg")
    assert_close(cg, direct, RTOL_CG, what="plain CG ignores fmin_ncg_maxiter")


def test_tensor_cache_keeps_few_large_designs(monkeypatch):
    """The model's tensor cache keeps up to four designs, but old ones only within
    CACHE_MAX_BYTES (cross-validation folds at MultiNLI size filled the memory)."""
    import influence.logistic_regression as lr
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": 3, "fit_intercept": True, "num_classes": 2}
    m = LogisticRegression(cfg)
    rng = np.random.RandomState(0)
    data = [(rng.normal(size=(50, 3)), rng.randint(0, 2, 50)) for _ in range(5)]
    for ds in data:
        m.design(ds)
    assert len(m.cached_inputs) == 4 and m.cached_inputs[0] is data[-1][0]
    monkeypatch.setattr(lr, "CACHE_MAX_BYTES", 50 * 4 * 8 + 50 * 8)  # room for one old design
    for ds in data[:3]:
        m.design(ds)
    assert len(m.cached_inputs) == 2 and m.cached_inputs[0] is data[2][0] and m.cached_inputs[1] is data[1][0]


def test_tensor_cache_keeps_the_large_design_across_small_evaluations(monkeypatch):
    """The newest large design (a training set's) stays kept while designs of small sets
    (test sets, the row chunks of gradient sums) come and go, so it is never made again;
    accuracy on it is computed from the kept tensor (no second copy) and agrees with
    scikit-learn; a new large design replaces it."""
    import influence.logistic_regression as lr
    model, _, _ = make_problem(3, True)
    monkeypatch.setattr(lr, "CACHE_MAX_BYTES", 100 * 5 * 8)  # designs of more than 100 rows are large
    rng = np.random.RandomState(1)
    big = (rng.normal(size=(300, 4)), rng.randint(0, 3, 300))
    Xa = model.design(big)[0]
    for a in range(0, 300, 30):  # small designs: test sets and row chunks
        model.design((rng.normal(size=(20, 4)), rng.randint(0, 3, 20)))
        model.design((big[0][a:a + 30], big[1][a:a + 30]))
    assert model.design(big)[0] is Xa
    assert sum(x is big[0] for x in model.cached_inputs) == 1 and len(model.cached_inputs) <= 5

    sk = SkLR()
    sk.coef_, sk.intercept_ = model.get_coef_intercept()
    sk.classes_ = np.arange(3)

    def no_copy(X):
        raise AssertionError("get_accuracy made its own design of a kept one")

    monkeypatch.setattr(model, "get_predictions", no_copy)
    assert model.get_accuracy(big) == np.mean(sk.predict(big[0]) == big[1])

    other = (rng.normal(size=(200, 4)), rng.randint(0, 3, 200))
    model.design(other)
    assert not any(x is big[0] for x in model.cached_inputs)
    assert model.cached_inputs[0] is other[0]
