"""LogisticObjective against an independent loss (TensorFlow's cross-entropy ops) and its
autodiff and finite-difference derivatives; the Hessian strategies against each other."""
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from influence import objective
from influence.objective import (
    LogisticObjective,
    ModelSpec,
    augment,
    gauge_fix,
    gauge_fix_ext_inplace,
    gauge_fix_inplace,
)
from tests.conftest import RTOL_AUTODIFF, RTOL_FD, RTOL_TWO_PATHS, assert_close
from tests.influence.problems import reference_hessian, reference_loss

CASES = [(2, True), (2, False), (3, True), (4, False)]


def problem(num_classes, fit_intercept, n=30, D=4, B=3, seed=0):
    """A spec, an objective of B weight columns and B parameter rows near zero."""
    rng = np.random.RandomState(seed)
    spec = ModelSpec(D, num_classes, fit_intercept)
    Xa = augment(tf.constant(rng.normal(size=(n, D))), spec)
    y = rng.randint(0, num_classes, n)
    S = tf.constant(rng.uniform(0.0, 2.0, (n, B)))
    Theta = tf.constant(rng.normal(0, 0.5, (B, spec.num_params)))
    return spec, Xa, y, S, Theta


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_loss_gradient_matches_autodiff_of_an_independent_loss(num_classes, fit_intercept):
    spec, Xa, y, S, Theta = problem(num_classes, fit_intercept)
    obj = LogisticObjective(spec, Xa, y, S, 0.7)
    f, g = obj.loss_gradient(Theta)
    for b in range(obj.B):
        theta = tf.Variable(Theta[b])
        with tf.GradientTape() as tape:
            f_ref = reference_loss(theta, Xa, y, S[:, b], 0.7, spec)
        assert_close(f[b].numpy(), f_ref.numpy(), RTOL_TWO_PATHS, what=f"loss {b}")
        assert_close(g[b].numpy(), tape.gradient(f_ref, theta).numpy(), RTOL_AUTODIFF, what=f"gradient {b}")
    # The separate calls are the two halves of the combined one.
    assert_close(obj.loss(Theta).numpy(), f.numpy(), 1e-15, what="loss()")
    assert_close(obj.gradient(Theta).numpy(), g.numpy(), 1e-15, what="gradient()")


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_gradient_matches_central_finite_differences(num_classes, fit_intercept):
    spec, Xa, y, S, Theta = problem(num_classes, fit_intercept, B=1)
    obj = LogisticObjective(spec, Xa, y, S[:, 0], 0.7)
    theta = Theta[0]
    g = obj.gradient_at(theta).numpy()
    rng = np.random.RandomState(5)
    h = 1e-5
    for _ in range(3):
        v = tf.constant(rng.normal(size=spec.num_params))
        fd = (obj.loss_at(theta + h * v) - obj.loss_at(theta - h * v)).numpy() / (2 * h)
        assert_close(fd, g @ v.numpy(), RTOL_FD, what="directional derivative")


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
def test_hessian_strategies_match_autodiff(num_classes, fit_intercept):
    spec, Xa, y, S, Theta = problem(num_classes, fit_intercept)
    methods = ["matmul", "syrk"] + (["einsum", "sparse"] if spec.binary else [])
    obj = LogisticObjective(spec, Xa, y, S, 0.7, Xa_np=Xa.numpy(), Xa_sparse=sp.csr_matrix(Xa.numpy()))
    want = [reference_hessian(Theta[b], Xa, y, S[:, b], 0.7, spec) for b in range(obj.B)]
    for method in methods:
        H = obj.hessians(Theta, method=method, gauge=False).numpy()
        for b in range(obj.B):
            assert_close(H[b], want[b], RTOL_AUTODIFF, what=f"{method} Hessian {b}")
    # Closed-form and autodiff Hessian-vector products at one parameter vector.
    one = LogisticObjective(spec, Xa, y, S[:, 0], 0.7)
    V = tf.constant(np.random.RandomState(1).normal(size=(spec.num_params, 2)))
    for autodiff in (False, True):
        assert_close(one.hvp_at(Theta[0], V, autodiff).numpy(), want[0] @ V.numpy(), RTOL_AUTODIFF,
                     what=f"hvp_at autodiff={autodiff}")


def test_hessian_strategy_is_chosen_in_one_place():
    spec, Xa, y, S, _ = problem(2, True)
    Xs = sp.csr_matrix(Xa.numpy())
    assert LogisticObjective(spec, Xa, y, S, 0.7).hessian_method() == "matmul"
    assert LogisticObjective(spec, Xa, y, S, 0.7, Xa_np=Xa.numpy()).hessian_method() == "syrk"
    assert LogisticObjective(spec, Xa, y, S, 0.7, Xa_np=Xa.numpy(), Xa_sparse=Xs).hessian_method() == "sparse"
    with pytest.raises(ValueError, match="hessian method must be one of"):
        LogisticObjective(spec, Xa, y, S, 0.7).hessian_method("qr")
    spec3, Xa3, y3, S3, _ = problem(3, True)
    with pytest.raises(ValueError, match="'einsum' is for binary models only"):
        LogisticObjective(spec3, Xa3, y3, S3, 0.7).hessian_method("einsum")
    # Multinomial models: TensorFlow products unless asked (the stored Hessians' arithmetic).
    assert LogisticObjective(spec3, Xa3, y3, S3, 0.7).hessian_method() == "matmul"


@pytest.mark.parametrize("block_rows", [None, 7])
@pytest.mark.parametrize("num_classes,fit_intercept", [(3, True), (4, False)])
def test_multinomial_group_hessians_match_autodiff(num_classes, fit_intercept, block_rows, monkeypatch):
    """The multinomial group Hessians, exact (TensorFlow products) and as chord matrices
    (``chord``: one syrk product per class block, the last class's blocks derived from the
    others'), against TensorFlow autodiff of an independent loss on each group's rows,
    with and without the minuend; at a mild and at a confident parameter vector; groups
    of consecutive rows (read in place) and scattered ones; with ``block_rows``: the sums
    over blocks of at most that many rows."""
    spec, Xa, y, S, Theta = problem(num_classes, fit_intercept, n=40)
    if block_rows is not None:  # the row blocks of both forms (the chord form counts K E per row)
        monkeypatch.setattr(objective, "HESSIAN_BLOCK_BYTES", block_rows * 8 * num_classes * spec.ext_dim)
    s = S[:, 0]
    groups = [np.array([3]), np.arange(0, 40, 3), np.arange(5, 25)]
    batch = LogisticObjective.without_groups(spec, Xa, tf.constant(y), s, 0.7, groups)
    M = tf.constant(np.random.RandomState(2).normal(size=(spec.num_params, spec.num_params)))
    for theta in (Theta[0], 8.0 * Theta[1]):
        want = [reference_hessian(theta, tf.gather(Xa, idx), y[idx], tf.gather(s, idx), 0.0, spec) for idx in groups]
        for chord in (False, True):
            got = batch.group_hessians(theta, groups, chord=chord).numpy()
            minus = batch.group_hessians(theta, groups, minuend=M, chord=chord).numpy()
            for b in range(len(groups)):
                # Normwise (assert_close): the chord form's cancelling entries lose relative accuracy.
                assert_close(got[b], want[b], RTOL_AUTODIFF, what=f"group {b} chord={chord}")
                assert_close(minus[b], M.numpy() - want[b], RTOL_AUTODIFF, what=f"minuend - group {b} chord={chord}")


@pytest.mark.parametrize("num_classes,fit_intercept", [(3, True), (4, False)])
def test_multinomial_start_matrices_are_the_minuend_minus_the_group_hessians_gauge_fixed(
        num_classes, fit_intercept, monkeypatch):
    """The refits' start matrices ``gauge_fix(M - H_U)`` (``group_hessians`` with ``minuend``
    and ``gauge``, written into one batch array in place) against autodiff of an independent
    loss on each group's rows; with row blocks of 8 rows, so that a group's products are
    summed over several blocks. And the same as the TensorFlow operations on the batch of
    ``H_U`` (subtraction, then :func:`gauge_fix`) to the last bit: both take the same
    products and do the same elementwise arithmetic on them."""
    spec, Xa, y, S, Theta = problem(num_classes, fit_intercept, n=40)
    monkeypatch.setattr(objective, "HESSIAN_BLOCK_BYTES", 8 * num_classes ** 2 * spec.ext_dim * 8)
    s = S[:, 0]
    groups = [np.array([3]), np.arange(0, 40, 3), np.arange(5, 25), np.arange(40)]
    batch = LogisticObjective.without_groups(spec, Xa, tf.constant(y), s, 0.7, groups)
    A = np.random.RandomState(2).normal(size=(spec.num_params, spec.num_params))
    M = tf.constant(A @ A.T)
    for theta in (Theta[0], 8.0 * Theta[1]):
        got = batch.group_hessians(theta, groups, minuend=M, gauge=True).numpy()
        for b, idx in enumerate(groups):
            want = M.numpy() - reference_hessian(theta, tf.gather(Xa, idx), y[idx], tf.gather(s, idx), 0.0, spec)
            want = gauge_fix(tf.constant(want), spec).numpy()
            assert_close(got[b], want, RTOL_AUTODIFF, what=f"start matrix {b}")
        two_steps = gauge_fix(M[None] - batch.group_hessians(theta, groups), spec).numpy()
        assert np.array_equal(got, two_steps)
        if spec.has_gauge:
            assert not np.allclose(got, (M[None] - batch.group_hessians(theta, groups)).numpy())


@pytest.mark.parametrize("num_classes, fit_intercept", [(2, True), (3, True), (3, False)])
def test_gauge_fix_inplace_is_gauge_fix(num_classes, fit_intercept):
    """The in-place NumPy form on a batch (parameter layout) against gauge_fix, to the last
    bit (the same mean of the diagonal, the same products and sums)."""
    spec = ModelSpec(5, num_classes, fit_intercept)
    A = np.random.RandomState(0).randn(3, spec.num_params, spec.num_params)
    H = A @ np.swapaxes(A, 1, 2)
    got = H.copy()
    gauge_fix_inplace(got, spec)
    assert np.array_equal(got, gauge_fix(tf.constant(H), spec).numpy())
    assert np.array_equal(got, H) == (not spec.has_gauge)


@pytest.mark.parametrize("num_classes, fit_intercept", [(2, True), (3, True), (4, True), (3, False)])
def test_gauge_fix_ext_inplace_is_gauge_fix_in_the_extended_layout(num_classes, fit_intercept):
    """The in-place NumPy form (extended layout) against gauge_fix (TensorFlow, parameter layout)."""
    spec = ModelSpec(5, num_classes, fit_intercept)
    A = np.random.RandomState(0).randn(spec.num_params, spec.num_params)
    H = A @ A.T
    inv = spec.ext_inverse_permutation()
    H_ext = H[np.ix_(inv, inv)].copy()
    gauge_fix_ext_inplace(H_ext, spec)
    want = gauge_fix(tf.constant(H), spec).numpy()[np.ix_(inv, inv)]
    assert_close(H_ext, want, RTOL_TWO_PATHS, what="gauge-fixed Hessian")
    if not spec.has_gauge:
        assert np.array_equal(H_ext, H[np.ix_(inv, inv)])
    else:
        assert not np.allclose(H_ext, H[np.ix_(inv, inv)])   # the term was added


@pytest.mark.parametrize("num_classes,fit_intercept", CASES)
@pytest.mark.parametrize("block_rows", [1, 7, 1000])
def test_per_example_gradients_by_blocks_are_the_products_of_all_rows(num_classes, fit_intercept, block_rows,
                                                                      monkeypatch):
    """Written block of rows by block, the per-example gradients are bit for bit the
    products of all rows at once (r_ik x_ij, then the biases r_ik), and sum to the
    unregularised gradient."""
    from influence import objective

    spec, Xa, y, S, Theta = problem(num_classes, fit_intercept, n=31)
    obj = LogisticObjective(spec, Xa, y, None, 0.0)
    K, D = spec.num_rows, spec.input_dim
    monkeypatch.setattr(objective, "PER_EXAMPLE_BLOCK_BYTES", block_rows * K * D * 8)
    G = np.asarray(obj.per_example_gradients(Theta[0]))
    R = obj.residual(Theta[:1])[:, 0]
    if spec.binary:
        want = (R[:, None] * Xa).numpy()
    else:
        G_w = tf.reshape(R[:, :, None] * Xa[:, None, :D], [-1, K * D])
        want = (tf.concat([G_w, R], axis=1) if fit_intercept else G_w).numpy()
    assert G.shape == (31, spec.num_params) and np.array_equal(G, want)
    assert_close(G.sum(axis=0), obj.gradient(Theta[:1]).numpy()[0], RTOL_TWO_PATHS, what="sum of rows")


@pytest.mark.parametrize("num_classes,fit_intercept", [(3, True), (4, False), (5, True)])
def test_gradient_factors_form_the_per_example_gradients_bit_for_bit(num_classes, fit_intercept):
    """The factors' rows are the per-example gradients bit for bit, whole or by any row
    range, and the products of all rows at once in TensorFlow (an independent oracle:
    r_ik x_ij in class-major order, then the biases r_ik); the factors are the residuals
    and the design."""
    spec, Xa, y, _, Theta = problem(num_classes, fit_intercept, n=23)
    obj = LogisticObjective(spec, Xa, y, None, 0.0)
    G = obj.per_example_gradients(Theta[0])
    f = obj.per_example_gradient_factors(Theta[0])
    R = obj.residual(Theta[:1])[:, 0]
    K, D = spec.num_rows, spec.input_dim
    G_w = tf.reshape(R[:, :, None] * Xa[:, None, :D], [-1, K * D])
    want = (tf.concat([G_w, R], axis=1) if fit_intercept else G_w).numpy()
    assert f.shape == G.shape == (23, spec.num_params) and f.dtype == G.dtype
    assert np.array_equal(f.R, R.numpy()) and np.array_equal(f.Xa, Xa.numpy())
    assert np.array_equal(f.rows(0, 23), want) and np.array_equal(G, want)
    for a, b in [(0, 1), (3, 11), (22, 23), (20, 99)]:
        assert np.array_equal(f.rows(a, b), want[a:b])
    assert f.rows(5, 5).shape == (0, spec.num_params)


@pytest.mark.parametrize("num_classes,fit_intercept", [(3, True), (4, False)])
def test_gradient_factors_give_the_gram_matrix_and_norms_of_the_gradients(num_classes, fit_intercept):
    """(R_A R_B^T) * (Xa_A Xa_B^T) is the Gram matrix of the dense gradient rows, and
    |r|^2 |xa|^2 their squared norms, to rounding (a second code path: the dense products)."""
    spec, Xa, y, _, Theta = problem(num_classes, fit_intercept, n=29)
    obj = LogisticObjective(spec, Xa, y, None, 0.0)
    f = obj.per_example_gradient_factors(Theta[0])
    G = f.rows(0, 29)
    assert_close(f.gram(0, 29, 0, 29), G @ G.T, RTOL_TWO_PATHS, what="Gram matrix")
    assert_close(f.gram(3, 10, 12, 29), G[3:10] @ G[12:29].T, RTOL_TWO_PATHS, what="Gram block")
    assert_close(f.squared_norms(), np.einsum("ij,ij->i", G, G), RTOL_TWO_PATHS, what="squared norms")


def test_gradient_factors_are_for_multinomial_models_and_checked():
    spec, Xa, y, _, Theta = problem(2, True)
    with pytest.raises(ValueError, match="multinomial"):
        LogisticObjective(spec, Xa, y, None, 0.0).per_example_gradient_factors(Theta[0])
    with pytest.raises(ValueError, match="as many rows"):
        objective.GradientFactors(np.zeros((3, 2)), np.zeros((4, 3)), True)
    with pytest.raises(ValueError, match="one dtype"):
        objective.GradientFactors(np.zeros((3, 2)), np.zeros((3, 3), np.float32), True)


def test_row_norms_of_a_design_tensor_are_computed_once(monkeypatch):
    """The row norms (the certificate scales of every refit chunk) are those of numpy, kept
    for the last design tensor: a second call on it computes nothing, another tensor (or
    dtype) gets its own."""
    import influence.objective as obj

    monkeypatch.setattr(obj, "ROW_NORM_BLOCK", 7)  # several blocks
    rng = np.random.RandomState(4)
    X1, X2 = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    A, B = tf.constant(X1), tf.constant(X2)
    first = obj.row_norms(A)
    assert_close(first.numpy(), np.linalg.norm(X1, axis=1), RTOL_TWO_PATHS)
    calls = []
    monkeypatch.setattr(obj.tf, "norm", lambda *a, **k: calls.append(1) or tf.linalg.norm(*a, **k))
    assert obj.row_norms(A) is first and not calls
    assert_close(obj.row_norms(B).numpy(), np.linalg.norm(X2, axis=1), RTOL_TWO_PATHS)
    assert calls
    assert obj.row_norms(B, tf.float32).dtype == tf.float32
