"""The batched refit engine against independent refits and closed forms."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLR

from influence.logistic_regression import LogisticRegression
from influence.refit import refit_chunk
from tests.conftest import assert_close


def fitted(num_classes, n=60, D=4, seed=0, lam=0.5):
    rng = np.random.RandomState(seed)
    means = rng.normal(0, 1.5, (num_classes, D))
    y = rng.randint(0, num_classes, n)
    y[:num_classes] = np.arange(num_classes)
    X = means[y] + rng.normal(0, 1, (n, D))
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": True, "num_classes": num_classes}
    m = LogisticRegression(cfg)
    m.fit((X, y), None, lam)
    groups = [rng.choice(n, s, replace=False) for s in (1, 2, 5, 12, 20)]
    return m, X, y, lam, groups


@pytest.mark.parametrize("num_classes", [2, 3])
def test_batched_refits_equal_independent_fits(num_classes):
    m, X, y, lam, groups = fitted(num_classes)
    theta = m.get_params_flat()
    Xa, yt, s = m._tensors((X, y))
    r = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, rtol=1e-12)
    assert r.converged.all() and (r.grad_norms <= r.grad_tols).all()
    D = X.shape[1]
    for b, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(len(y)), idx)
        sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14, max_iter=500).fit(X[keep], y[keep])
        if num_classes == 2:
            want = np.concatenate([sk.coef_[0], sk.intercept_])
        else:
            want = np.concatenate([sk.coef_.ravel(), sk.intercept_ - sk.intercept_.mean()])
        assert_close(r.thetas[b], want, 1e-8, what=f"group {b}")
        # The certificate is the true gradient norm of the reduced objective.
        w = np.ones(len(y))
        w[idx] = 0
        m.set_params_flat(r.thetas[b])
        assert np.linalg.norm(m.get_total_grad_loss((X, y), w, lam)) == pytest.approx(r.grad_norms[b], rel=1e-6, abs=1e-13)
    # Chunk composition does not matter.
    single = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups[2:3], rtol=1e-12)
    assert_close(single.thetas[0], r.thetas[2], 1e-9)


def test_first_step_is_the_newton_approximation():
    m, X, y, lam, groups = fitted(2)
    theta = m.get_params_flat()
    H = m.get_hessian((X, y), None, lam)
    G = m.get_indiv_grad_loss((X, y))
    Xa, yt, s = m._tensors((X, y))
    r = refit_chunk(m.spec, theta, Xa, yt, s, lam, groups, hessian_hat=H)
    resid = m.get_total_grad_loss((X, y), None, lam)
    for b, idx in enumerate(groups):
        H_U = m.get_hessian((X[idx], y[idx]), None, 0.0)
        exact_first = np.linalg.solve(H - H_U, G[idx].sum(0) - resid)
        if r.first_full_step[b]:
            assert_close(r.first_steps[b], exact_first, 1e-10, what=f"group {b}")


def test_sample_weights_are_respected():
    m, X, y, lam, groups = fitted(2)
    w = np.random.RandomState(3).uniform(0.5, 2.0, len(y))
    m.fit((X, y), w, lam)
    Xa, yt, s = m._tensors((X, y), w)
    r = refit_chunk(m.spec, m.get_params_flat(), Xa, yt, s, lam, groups[3:4])
    keep = np.setdiff1d(np.arange(len(y)), groups[3])
    sk = SkLR(C=1 / lam, solver="newton-cholesky", tol=1e-14).fit(X[keep], y[keep], sample_weight=w[keep])
    assert_close(r.thetas[0], np.concatenate([sk.coef_[0], sk.intercept_]), 1e-8)


def test_numpy_hessians_equal_tensorflow_hessians():
    """The binary fast path (NumPy syrk) against the TensorFlow kernels."""
    import tensorflow as tf

    from influence import kernels as K
    from influence.refit import _Batch, _group_hessians
    m, X, y, lam, groups = fitted(2)
    theta = tf.constant(m.get_params_flat())
    Xa, yt, s = m._tensors((X, y))
    Xa_np = Xa.numpy()
    H_tf = _group_hessians(m.spec, theta, Xa, s, groups)
    H_np = _group_hessians(m.spec, theta, Xa, s, groups, Xa_np)
    assert_close(H_np.numpy(), H_tf.numpy(), 1e-12, what="group Hessians")
    keep = np.ones((len(y), len(groups)))
    for b, g in enumerate(groups):
        keep[g, b] = 0.0
    S = tf.constant(keep)
    Theta = tf.constant(m.get_params_flat()[None, :] + 0.1 * np.random.RandomState(0).randn(len(groups), m.num_params))
    l2 = tf.constant(lam, dtype=tf.float64)
    H1 = _Batch(m.spec, Xa, yt, S, l2).hessians(Theta).numpy()
    H2 = _Batch(m.spec, Xa, yt, S, l2, Xa_np).hessians(Theta).numpy()
    assert_close(H2, H1, 1e-12, what="full reduced Hessians")
    for b in range(len(groups)):
        ref = K.hessian(Theta[b], Xa, S[:, b], l2, m.spec).numpy()
        assert_close(H2[b], ref, 1e-12, what=f"Hessian {b}")
    # A column sub-batch evaluates the same problems.
    cols = np.array([3, 0])
    batch = _Batch(m.spec, Xa, yt, S, l2, Xa_np)
    assert_close(batch.columns(cols).gradient(tf.gather(Theta, cols)).numpy(),
                 tf.gather(batch.gradient(Theta), cols).numpy(), 1e-12, what="sub-batch gradients")
