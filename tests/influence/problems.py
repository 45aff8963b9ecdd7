"""Small seeded problems shared by the influence tests (Gaussian class means, n <= 60, D <= 5)."""
import numpy as np

from influence.logistic_regression import LogisticRegression


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
