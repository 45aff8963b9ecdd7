"""The group-influence API against independent oracles.

Oracles: dense NumPy Hessians and explicit ``np.linalg.solve`` for H^-1 and (H - H_U)^-1,
the single-point closed form first-order / (1 - leverage) for one-step Newton, sums of
individual influences for group predictions, scikit-learn refits at tight tolerance for
the actual effect, and central finite differences for the linear influences.
"""
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from sklearn.linear_model import LogisticRegression as SkLR

from influence import group_influence as gi
from influence.group_influence import GroupInfluence, group_influence
from influence.logistic_regression import LogisticRegression
from influence.objective import augment
from tests.conftest import RESID_SOLVE, RTOL_CG, RTOL_FD, RTOL_LEVERAGE, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import reference_hessian, reference_loss

LAM = 0.5


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def binary_problem(n=40, D=4, seed=0, weights=False):
    rng = np.random.RandomState(seed)
    X = rng.normal(0, 1, (n, D))
    y = (rng.uniform(size=n) < sigmoid(X @ rng.normal(0, 1, D) + 0.3)).astype(np.int64)
    Xt = rng.normal(0, 1, (12, D))
    yt = (rng.uniform(size=12) < 0.5).astype(np.int64)
    s = rng.uniform(0.5, 2.0, n) if weights else None
    groups = [np.sort(rng.choice(n, k, replace=False)) for k in (1, 2, 3, 5, 8, 13)]
    return (X, y), (Xt, yt), s, groups


def fitted(train, s=None, fit_intercept=True, num_classes=2, method="explicit"):
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": train[0].shape[1], "fit_intercept": fit_intercept, "num_classes": num_classes}
    cfg["inverse_hvp_method"] = method
    m = LogisticRegression(cfg)
    m.fit(train, s, LAM)
    return m


def oracle_binary(theta, X, y, s, fit_intercept=True):
    """Per-example gradients, dense regularised Hessian and curvature rows, from the formulas."""
    Xa = np.hstack([X, np.ones((len(X), 1))]) if fit_intercept else X
    s = np.ones(len(y)) if s is None else s
    p = sigmoid(Xa @ theta)
    G = (p - y)[:, None] * Xa
    mask = np.ones(Xa.shape[1])
    if fit_intercept:
        mask[-1] = 0.0
    H = Xa.T @ ((s * p * (1 - p))[:, None] * Xa) + LAM * np.diag(mask)
    return G, H, Xa, p


def sk_refit(X, y, s, idx):
    w = np.ones(len(y)) if s is None else s.copy()
    w[idx] = 0.0
    sk = SkLR(C=1 / LAM, solver="newton-cholesky", tol=1e-14, max_iter=500)
    sk.fit(X, y, sample_weight=w)
    return np.concatenate([sk.coef_[0], sk.intercept_])


@pytest.fixture(scope="module", params=[False, True], ids=["unweighted", "weighted"])
def binary(request):
    train, test, s, groups = binary_problem(weights=request.param)
    m = fitted(train, s)
    theta = m.get_params_flat()
    G, H, Xa, p = oracle_binary(theta, *train, s)
    infl = GroupInfluence(m, train, LAM, sample_weights=s, hessian=m.get_hessian(train, s, LAM))
    return dict(train=train, test=test, s=s, groups=groups, m=m, theta=theta, G=G, H=H, Xa=Xa, p=p, infl=infl)


def group_grads(b):
    w = np.ones(len(b["train"][1])) if b["s"] is None else b["s"]
    return np.array([(w[g, None] * b["G"][g]).sum(axis=0) for g in b["groups"]])


# ----------------------------------------------------------------------------- first order
def test_first_order_is_the_explicit_solve(binary):
    G_S = gi.group_gradient_sums(binary["groups"], binary["G"], binary["s"])
    assert_close(G_S, group_grads(binary), RTOL_TWO_PATHS, what="g_U")
    P = binary["infl"].first_order_dparams(G_S)
    resid = np.linalg.norm(P @ binary["H"] - G_S, axis=1) / np.linalg.norm(G_S, axis=1)
    assert resid.max() <= RESID_SOLVE
    assert_close(gi.self_influence(G_S, P), np.einsum("sd,sd->s", G_S, np.linalg.solve(binary["H"], G_S.T).T),
                 RTOL_TWO_PATHS, what="self influence")
    # E7: the Hessian norm of the first-order change squared is the self-influence.
    assert_close(gi.hessian_norms(P, binary["H"]) ** 2, gi.self_influence(G_S, P), RTOL_TWO_PATHS)


def test_group_prediction_is_the_sum_of_individual_influences(binary):
    infl, s = binary["infl"], binary["s"]
    T = binary["m"].get_indiv_grad_loss(binary["test"])
    G = binary["G"]
    point = infl.first_order_influence(G, T).T            # (m, n): point i on target j
    group_sum = gi.point_influence_group_sums(binary["groups"], point, s)
    direct = gi.target_influence(infl.first_order_dparams(gi.group_gradient_sums(binary["groups"], G, s)), T)
    assert_close(group_sum, direct, RTOL_TWO_PATHS, what="sum of individual = group")
    one = gi.point_influence_group_sums(binary["groups"], point[0], s)
    assert_close(one, group_sum[:, 0], RTOL_TWO_PATHS, what="1-D target")
    # The same group gradients from the data in row chunks (the (n, d) matrix never formed).
    chunked = infl.gradient_sums(binary["train"], binary["groups"], s, chunk=7)
    assert_close(chunked, gi.group_gradient_sums(binary["groups"], G, s), RTOL_TWO_PATHS, what="chunked g_U")
    margin = infl.gradient_sums(binary["train"], binary["groups"], s, margin=True, chunk=7)
    Gm = binary["m"].get_indiv_grad_margin(binary["train"])
    assert_close(margin, gi.group_gradient_sums(binary["groups"], Gm, s), RTOL_TWO_PATHS, what="margin g_U")


def test_linear_influence_by_finite_differences(binary):
    """grad f . D against central differences of f along D (f = test losses and margins)."""
    infl, test = binary["infl"], binary["test"]
    m = infl.at_optimum()
    D = infl.first_order_dparams(gi.group_gradient_sums(binary["groups"], binary["G"], binary["s"]))
    eps = 1e-5
    for what, T in (("loss", m.get_indiv_grad_loss(test)), ("margin", m.get_indiv_grad_margin(test))):
        zero = np.zeros(len(test[1]))
        fd = (infl.param_influence(eps * D, test, zero, what) - infl.param_influence(-eps * D, test, zero, what)) / (2 * eps)
        assert_close(gi.target_influence(D, T), fd, RTOL_FD, what=what)


# ----------------------------------------------------------------------------- Newton
@pytest.mark.parametrize("method", ["explicit", "cg", "small"])
def test_newton_is_the_reduced_hessian_solve(binary, method):
    G_S = gi.group_gradient_sums(binary["groups"], binary["G"], binary["s"])
    Q = binary["infl"].newton_dparams(binary["groups"], G_S, method=method)["newton_dparam"]
    w = np.ones(len(binary["p"])) if binary["s"] is None else binary["s"]
    c = w * binary["p"] * (1 - binary["p"])
    Xa = binary["Xa"]
    for k, g in enumerate(binary["groups"]):
        H_U = Xa[g].T @ (c[g, None] * Xa[g])
        exact = np.linalg.solve(binary["H"] - H_U, G_S[k])
        assert_close(Q[k], exact, RTOL_CG if method == "cg" else 1e-9, what=f"{method} group {k}")


def test_single_point_newton_is_first_order_over_one_minus_leverage(binary):
    """For U = {i}: g_i is parallel to z_i, so (H - z z^T)^-1 g_i = H^-1 g_i / (1 - z^T H^-1 z)."""
    infl, theta = binary["infl"], binary["theta"]
    H, Xa, p = binary["H"], binary["Xa"], binary["p"]
    w = np.ones(len(p)) if binary["s"] is None else binary["s"]
    singles = [np.array([i]) for i in (0, 7, 19)]
    G_S = gi.group_gradient_sums(singles, binary["G"], binary["s"])
    P = infl.first_order_dparams(G_S)
    Q = infl.newton_dparams(singles, G_S, method="explicit")["newton_dparam"]
    for k, (i,) in enumerate(singles):
        z = np.sqrt(w[i] * p[i] * (1 - p[i])) * Xa[i]
        lev = z @ np.linalg.solve(H, z)
        assert_close(Q[k], P[k] / (1 - lev), RTOL_LEVERAGE, what=f"point {i}")
    assert theta.shape == (Xa.shape[1],)


def test_multinomial_newton_and_first_order():
    rng = np.random.RandomState(3)
    n, D, K = 45, 3, 3
    X = rng.normal(0, 1, (n, D))
    y = rng.randint(0, K, n)
    train = (X, y)
    m = fitted(train, fit_intercept=False, num_classes=K)
    Hm = m.get_hessian(train, None, LAM)
    infl = GroupInfluence(m, train, LAM, hessian=Hm)
    G = m.get_indiv_grad_loss(train)
    groups = [np.arange(0, 4), np.arange(10, 22)]
    G_S = gi.group_gradient_sums(groups, G)
    P = infl.first_order_dparams(G_S)
    assert_close(P, np.linalg.solve(Hm, G_S.T).T, RTOL_TWO_PATHS)
    Q = infl.newton_dparams(groups, G_S)["newton_dparam"]
    for k, g in enumerate(groups):
        H_U = m.get_hessian((X[g], y[g]), None, 0.0)
        assert_close(Q[k], np.linalg.solve(Hm - H_U, G_S[k]), 1e-9, what=f"group {k}")


# ----------------------------------------------------------------------------- actual effect
@pytest.mark.parametrize("method", ["explicit", "cg", "small"])
def test_refits_match_sklearn_and_are_certified(binary, method):
    r = binary["infl"].refit(binary["groups"], chunk_size=4, method=method, progress=False)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    A = gi.actual_dparams(r.thetas, binary["theta"])
    X, y = binary["train"]
    for k, g in enumerate(binary["groups"]):
        # sklearn at tol 1e-14 against a certified optimum: agreement to ~1e-8 relative.
        assert_close(r.thetas[k], sk_refit(X, y, binary["s"], g), 1e-7, what=f"{method} group {k}")
    assert_close(A, r.thetas - binary["theta"][None], RTOL_TWO_PATHS)


def test_fmin_ncg_is_the_originals_solver_for_first_order_and_newton_cg_for_refits(binary, monkeypatch):
    """'fmin_ncg' changes only the first-order solves: scipy's fmin_ncg, one call per
    group, to its avextol; the refits take the Newton-CG route (Hessian-vector products
    counted), to the certified optima of the explicit refits."""
    import scipy.optimize

    calls = []
    real = scipy.optimize.fmin_ncg
    monkeypatch.setattr(scipy.optimize, "fmin_ncg", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    m, train, s = binary["m"], binary["train"], binary["s"]
    infl = GroupInfluence(m, train, LAM, sample_weights=s, hessian=m.get_hessian(train, s, LAM),
                          inverse_hvp_method="fmin_ncg")
    G_S = group_grads(binary)
    P = infl.first_order_dparams(G_S)
    assert len(calls) == len(G_S)
    # scipy's fmin_ncg stops at avextol 1e-8 (the original's setting): agreement to that accuracy.
    assert_close(P, np.linalg.solve(binary["H"], G_S.T).T, 1e-5, 1e-9, what="fmin_ncg first order")
    r = infl.refit(binary["groups"], chunk_size=4, progress=False)
    assert r.converged.all() and (r.hvps > 0).all() and len(calls) == len(G_S)
    ref = binary["infl"].refit(binary["groups"], chunk_size=4, method="explicit", progress=False)
    assert_close(r.thetas, ref.thetas, 1e-8, what="fmin_ncg refits vs explicit")


def test_actual_changes_of_targets(binary):
    infl, test, s = binary["infl"], binary["test"], binary["s"]
    m = infl.at_optimum()
    groups = binary["groups"]
    r = infl.refit(groups, chunk_size=64, progress=False)
    X, y = binary["train"]
    Xt, yt = test
    loss = lambda th, A, b: np.logaddexp(0, A @ th[:-1] + th[-1]) - b * (A @ th[:-1] + th[-1])  # noqa: E731
    after = np.array([loss(th, Xt, yt) for th in r.thetas])
    D = gi.change(infl.evaluate(r.thetas, test, "loss"), m.get_indiv_loss(test))
    assert_close(D, after - loss(binary["theta"], Xt, yt)[None], 1e-12)
    assert_close(infl.param_influence(gi.actual_dparams(r.thetas, binary["theta"]), test,
                                      m.get_indiv_loss(test)), D, 1e-12)
    w = np.ones(len(y)) if s is None else s
    own = infl.evaluate_own(r.thetas, groups, "loss")
    expect = np.array([w[g] @ (loss(th, X[g], y[g]) - loss(binary["theta"], X[g], y[g]))
                       for th, g in zip(r.thetas, groups)])
    assert_close(gi.self_actual(own, m.get_indiv_loss((X, y)), groups, w), expect, 1e-10)
    unweighted = np.array([loss(th, X[g], y[g]).sum() - loss(binary["theta"], X[g], y[g]).sum()
                           for th, g in zip(r.thetas, groups)])
    assert_close(gi.self_actual(own, m.get_indiv_loss((X, y)), groups), unweighted, 1e-10)
    sums = np.array([loss(th, X, y) @ w for th in r.thetas])
    assert_close(gi.weighted_sum_change(sums, m.get_indiv_loss((X, y)), w),
                 gi.weighted_sums(gi.change(infl.evaluate(r.thetas, (X, y)), m.get_indiv_loss((X, y))), w),
                 1e-10)
    acc = infl.accuracies(r.thetas, test)
    assert_close(acc, [np.mean(((Xt @ th[:-1] + th[-1]) > 0) == yt) for th in r.thetas], 0.0)


def test_group_influence_in_one_call():
    train, test, s, groups = binary_problem(weights=True, seed=1)
    m = fitted(train, s)
    res = group_influence(m, train, groups, LAM, sample_weights=s, test=test,
                          targets=("params", "self_loss", "self_margin", "test_losses", "test_margins",
                                   "test_loss_sum"))
    est = res.estimates
    assert set(est) == {"params", "self_loss", "self_margin", "test_losses", "test_margins", "test_loss_sum"}
    for e in ("pred", "newton", "actl"):
        assert_close(est["test_loss_sum"][e], est["test_losses"][e].sum(axis=1), 1e-10, what=e)
    X, y = train
    for k, g in enumerate(groups):
        assert_close(est["params"]["actl"][k] + m.get_params_flat(), sk_refit(X, y, s, g), 1e-7)
    # First order and Newton against dense NumPy solves (weighted curvature and gradients).
    G, H, Xa, p = oracle_binary(m.get_params_flat(), X, y, s)
    for k, g in enumerate(groups):
        g_U = (s[g, None] * G[g]).sum(axis=0)
        H_U = Xa[g].T @ ((s[g] * p[g] * (1 - p[g]))[:, None] * Xa[g])
        assert_close(est["params"]["pred"][k], np.linalg.solve(H, g_U), 1e-9, what=f"pred {k}")
        assert_close(est["params"]["newton"][k], np.linalg.solve(H - H_U, g_U), 1e-9, what=f"newton {k}")
    assert res.refit.converged.all()


def test_z_norms_and_l2_norms(binary):
    m = binary["infl"].at_optimum()
    Z = m.get_zs(binary["train"])
    out = gi.z_norms(Z, binary["H"])
    assert_close(out["z_norms"], np.linalg.norm(Z, axis=1), RTOL_TWO_PATHS)
    assert_close(out["z_hessian_norms"] ** 2, np.einsum("nd,nd->n", Z, np.linalg.solve(binary["H"], Z.T).T),
                 RTOL_TWO_PATHS)
    assert_close(gi.l2_norms(Z), out["z_norms"], 0.0)


def test_keep_dtype_sums_in_float32():
    G = np.random.RandomState(0).normal(size=(10, 3)).astype(np.float32)
    groups = [np.array([0, 3]), np.array([5])]
    out = gi.group_gradient_sums(groups, G, keep_dtype=True)
    assert out.dtype == np.float32
    assert_close(out, np.array([G[0] + G[3], G[5]]), 0.0)
    assert gi.group_gradient_sums(groups, G).dtype == np.float64


# ----------------------------------------------------------------------------- validation
def test_bad_inputs_raise_naming_parameter_rule_and_value(binary):
    infl, m, train = binary["infl"], binary["m"], binary["train"]
    G = binary["G"]
    with pytest.raises(ValueError, match=r"groups\[1\] indices must lie in \[0, 40\); got range \[0, 40\]"):
        gi.group_gradient_sums([np.array([0]), np.array([0, 40])], G)
    with pytest.raises(ValueError, match="groups must be a sequence of index arrays"):
        gi.group_gradient_sums(np.array([0, 1]), G)
    with pytest.raises(ValueError, match=r"groups\[0\] must be a 1-D integer index array"):
        gi.group_gradient_sums([np.array([0.5])], G)
    with pytest.raises(ValueError, match=r"weights must have shape \(40,\); got \(3,\)"):
        gi.group_gradient_sums([np.array([0])], G, np.ones(3))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        gi.group_gradient_sums([np.array([0])], G, -np.ones(40))
    with pytest.raises(ValueError, match="group_grads and dparams must have the same shape"):
        gi.self_influence(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"target_grads must have 5 columns; got shape \(2, 4\)"):
        gi.target_influence(np.ones((3, 5)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="l2_reg must be a finite number >= 0; got -1"):
        GroupInfluence(m, train, -1)
    with pytest.raises(ValueError, match="inverse_hvp_method must be one of"):
        GroupInfluence(m, train, LAM, inverse_hvp_method="lissa")
    with pytest.raises(ValueError, match=r"hessian must have 5 columns"):
        GroupInfluence(m, train, LAM, hessian=np.eye(4))
    with pytest.raises(ValueError, match="model must be an influence.logistic_regression.LogisticRegression"):
        GroupInfluence(object(), train, LAM)
    with pytest.raises(ValueError, match="method must be one of .*; got 'woodbury'"):
        infl.newton_dparams(binary["groups"], np.zeros((6, 5)), method="woodbury")
    with pytest.raises(ValueError, match=r"group_grads must have 6 rows"):
        infl.newton_dparams(binary["groups"], np.zeros((5, 5)))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer; got 0"):
        infl.refit(binary["groups"], 0)
    with pytest.raises(ValueError, match="what must be one of .*; got 'hinge'"):
        infl.evaluate(np.zeros((1, 5)), train, "hinge")
    with pytest.raises(ValueError, match="hessian is required"):
        GroupInfluence(m, train, LAM).newton_dparams(binary["groups"][:1], np.zeros((1, 5)), method="explicit")
    with pytest.raises(ValueError, match="targets must be one of .*; got 'accuracy'"):
        group_influence(m, train, binary["groups"], LAM, targets=("accuracy",))
    with pytest.raises(ValueError, match="need the test data; got test=None"):
        group_influence(m, train, binary["groups"], LAM, targets=("test_losses",))
    cold = fitted(train, binary["s"])
    cold.set_params_flat(np.zeros(5))
    with pytest.raises(ValueError, match="model must be at its optimum on train"):
        group_influence(cold, train, binary["groups"], LAM, sample_weights=binary["s"])


def test_cg_first_order_is_preconditioned_chunked_and_equals_the_explicit_solve(monkeypatch):
    """'cg' first-order changes go through the Newton solver with empty groups (H^-1 g_U),
    within --max-memory chunks and with the preconditioner passed in; they equal the
    explicit solve (multinomial with an intercept: the gauge-fixed inverse)."""
    from influence import groups as G_mod, memory
    from influence.newton import make_preconditioner
    rng = np.random.RandomState(5)
    n, D, K = 60, 4, 3
    X = rng.normal(0, 1, (n, D))
    y = rng.randint(0, K, n)
    train = (X, y)
    m = fitted(train, num_classes=K, method="cg")
    Hm = m.get_hessian(train, None, LAM)
    groups = [np.sort(rng.choice(n, k, replace=False)) for k in (1, 3, 5, 8, 13)]
    G_S = gi.group_gradient_sums(groups, m.get_indiv_grad_loss(train))
    u = m.spec.gauge_vector()
    exact = np.linalg.lstsq(Hm, G_S.T, rcond=None)[0].T
    exact -= np.outer(exact @ u, u)
    chunks = []
    real = G_mod.cg_directions

    def spy(batch, Theta, *a, **k):
        chunks.append(int(Theta.shape[0]))
        return real(batch, Theta, *a, **k)

    monkeypatch.setattr(G_mod, "cg_directions", spy)
    # The route through the data (the dense factor's route is tested in test_dense_cg.py).
    monkeypatch.setattr(memory, "DENSE_HESSIAN_MAX_PARAMS", 0)
    per_group = 8 * 4 * n * m.spec.num_rows
    infl = GroupInfluence(m, train, LAM, inverse_hvp_method="cg", max_memory=2 * per_group)
    Xa, _, s = m.design(train)
    pre = make_preconditioner(m.spec, m.get_params_flat(), Xa, s, LAM, "block")
    P = infl.first_order_dparams(G_S, preconditioner=pre)
    assert chunks == [2, 2, 1]               # two groups' work arrays fit in max_memory
    P -= np.outer(P @ u, u)
    assert_close(P, exact, RTOL_CG, what="cg first order vs explicit")


@pytest.mark.parametrize("num_classes", [2, 3])
def test_refit_curvature_is_the_smallest_eigenvalue_off_the_flat_direction(num_classes):
    """Against the autodiff Hessian of an independent loss (``reference_hessian``) with the
    group's weights set to zero, restricted to the complement of the multinomial gauge
    direction by an orthonormal basis (none for binary models); and the bound it gives:
    a point near the refit's optimum lies within ||grad|| / mu of it."""
    rng = np.random.RandomState(5)
    X = rng.normal(0, 1, (50, 3))
    y = rng.randint(0, num_classes, 50)
    s = rng.uniform(0.5, 2.0, 50)
    m = fitted((X, y), s, num_classes=num_classes)
    infl = GroupInfluence(m, (X, y), LAM, sample_weights=s)
    group = np.array([1, 4, 9, 16, 25])
    refit = infl.refit([group], chunk_size=1)
    theta = refit.thetas[0] + 1e-3 * rng.normal(size=refit.thetas.shape[1])  # off the optimum
    spec = m.spec
    w = s.copy()
    w[group] = 0.0
    Xa = augment(tf.constant(X), spec)
    H = reference_hessian(tf.constant(theta), Xa, y, tf.constant(w), LAM, spec)
    u = spec.gauge_vector()
    Q = scipy.linalg.null_space(u[None]) if spec.has_gauge else np.eye(len(u))
    want = np.linalg.eigvalsh(Q.T @ H @ Q)[0]
    mu = infl.refit_curvature(group, theta)
    assert_close(mu, want, RTOL_TWO_PATHS, what="smallest curvature")
    t = tf.Variable(theta)
    with tf.GradientTape() as tape:
        f = reference_loss(t, Xa, y, tf.constant(w), LAM, spec)
    grad = np.linalg.norm(tape.gradient(f, t).numpy())
    assert np.linalg.norm(theta - refit.thetas[0]) <= grad / mu
