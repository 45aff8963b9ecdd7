"""Small seeded problems shared by the influence tests (Gaussian class means, n <= 60, D <= 5)."""
import numpy as np

from influence.logistic_regression import LogisticRegression
from tests.conftest import RTOL_TWO_PATHS, assert_close


def spd_rows(d, b, seed):
    """``(A, B)``: ``b`` random symmetric positive definite (d, d) operators, the j-th with
    smallest eigenvalue above ``1 + j``, and ``b`` right-hand sides (rows of B): a batch of
    independent CG problems whose direct solutions ``np.linalg.solve`` gives."""
    rng = np.random.RandomState(seed)
    A = []
    for j in range(b):
        Q = rng.randn(d, d)
        A.append(Q @ Q.T + (1 + j) * np.eye(d))
    return np.array(A), rng.randn(b, d)


def gaussian_classes(num_classes, fit_intercept=True, n=50, D=5, seed=3):
    """``(model, X, y, rng)``: an unfitted model and data with every class present; ``rng``
    is the generator after drawing the data (for further seeded draws)."""
    rng = np.random.RandomState(seed)
    means = rng.normal(0, 1.5, (num_classes, D))
    y = rng.randint(0, num_classes, n)
    y[:num_classes] = np.arange(num_classes)
    X = means[y] + rng.normal(0, 1, (n, D))
    cfg = LogisticRegression.default_config()
    cfg["arch"] = {"input_dim": D, "fit_intercept": fit_intercept, "num_classes": num_classes}
    return LogisticRegression(cfg), X, y, rng


def reference_losses(theta, Xa, y, spec):
    """Unweighted cross-entropy of every example by TensorFlow's own cross-entropy ops, an
    oracle independent of :class:`influence.objective.LogisticObjective`: binary logits
    ``[x; 1] . theta``; multinomial logits ``X W^T + b`` with ``theta = [vec(W); b]``."""
    import tensorflow as tf

    if spec.binary:
        z = tf.linalg.matvec(Xa, theta)
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(y, z.dtype), logits=z)
    K, D = spec.num_classes, spec.input_dim
    W = tf.reshape(theta[:K * D], [K, D])
    Z = tf.matmul(Xa[:, :D], W, transpose_b=True)
    if spec.fit_intercept:
        Z = Z + theta[K * D:][None, :]
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=Z)


def reference_loss(theta, Xa, y, s, l2, spec):
    """``sum_i s_i l_i + l2 / 2 ||W||^2`` from :func:`reference_losses` (biases unregularised)."""
    import tensorflow as tf

    mask = tf.constant(spec.weight_mask(), dtype=theta.dtype)
    return tf.reduce_sum(s * reference_losses(theta, Xa, y, spec)) + 0.5 * l2 * tf.reduce_sum(mask * theta * theta)


def reference_hessian(theta, Xa, y, s, l2, spec) -> np.ndarray:
    """The Hessian of :func:`reference_loss` by automatic differentiation (a float64 array)."""
    import tensorflow as tf

    theta = tf.Variable(theta)
    with tf.GradientTape() as t2:
        with tf.GradientTape() as t1:
            f = reference_loss(theta, Xa, y, s, l2, spec)
        g = t1.gradient(f, theta)
    return t2.jacobian(g, theta).numpy()


def refit_in_one_batch_and_in_slots(refit, args, groups, slots, counters, pending=False, **slot_kw):
    """``(whole, queued)``: the refits of ``groups`` by ``refit(*args, groups, rtol=1e-12)``
    in one batch and in ``slots`` batch slots (continuous batching: a stopped group's slot is
    refilled at once from the queue; ``slot_kw`` go to the queued call only). Checks what
    the two must share: every group certified and reported to ``on_finish``; the same
    steps per group (``iterations``, ``first_full_step``, ``stalled`` and the per-group
    ``counters``); the same optima and certificates to rounding (only the batched products'
    shapes differ); never more than ``slots`` groups at once, and every group's iterations
    spent in some loop iteration. ``pending``: the route keeps a group busy in loop
    iterations without a step (a CG run that goes on), so the loop iterations a group
    occupies may exceed its Newton iterations."""
    whole = refit(*args, groups, rtol=1e-12)
    done = []
    queued = refit(*args, groups, rtol=1e-12, slots=slots, on_finish=done.append, **slot_kw)
    assert whole.converged.all() and queued.converged.all() and sum(done) == len(groups)
    for name in ("iterations", "first_full_step", "stalled") + tuple(counters):
        np.testing.assert_array_equal(getattr(queued, name), getattr(whole, name), err_msg=name)
    assert_close(queued.thetas, whole.thetas, RTOL_TWO_PATHS, what=f"{slots} slots vs one batch")
    assert_close(queued.grad_tols, whole.grad_tols, RTOL_TWO_PATHS, what="certificates")
    assert queued.occupancy.max() <= slots
    if pending:
        assert queued.occupancy.sum() >= queued.iterations.sum() and whole.occupancy.sum() >= whole.iterations.sum()
    else:
        assert queued.occupancy.sum() == whole.occupancy.sum() == queued.iterations.sum()
    return whole, queued


def assert_slots_stay_full(queued, slots):
    """Until the last group is admitted every slot is busy (it then runs at most
    max(iterations) loop iterations, so only those can be short of groups), and the batch
    is still full after the first group finished: a refilled slot was used."""
    full = len(queued.occupancy) - queued.iterations.max()
    assert full > queued.iterations.min() and (queued.occupancy[:full] == slots).all()
