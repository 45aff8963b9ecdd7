"""The scikit-learn-style estimator (influence/sklearn_api.py): its fit against
scikit-learn's LogisticRegression(C), its group effects against the group_influence
function (a second code path) and against exact refits by scikit-learn (an independent
oracle), and its input checks."""
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.metrics import log_loss

from influence.group_influence import group_influence
from influence.sklearn_api import InfluenceLogisticRegression
from tests.conftest import ATOL_PREDICT, RTOL_TWO_PATHS, assert_close

# Both fits are certified near machine precision (this one by its gradient norm,
# scikit-learn's newton-cholesky at tol 1e-14); coefficients agree to about 1e-15 here,
# 1e-9 leaves room for the conditioning of other data.
RTOL_SKLEARN_COEF = 1e-9
# Actual effects from two independent exact refits (ours, scikit-learn's): both optima are
# certified, the difference of two losses loses a few digits to cancellation.
RTOL_REFIT = 1e-7


def problem(num_classes, n=48, D=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(0, 1, (n, D)) + 0.5
    y = rng.randint(0, num_classes, n)
    y[:num_classes] = np.arange(num_classes)
    labels = np.array([-1, 1]) if num_classes == 2 else np.arange(num_classes) * 10 + 3  # not 0..K-1
    w = rng.uniform(0.5, 2.0, n)
    Xt, yt = rng.normal(0, 1, (7, D)), labels[rng.randint(0, num_classes, 7)]
    return X, labels[y], w, Xt, yt


def sklearn_fit(X, y, C, w=None, fit_intercept=True):
    return SkLogisticRegression(C=C, solver="newton-cholesky", tol=1e-14, max_iter=1000,
                                fit_intercept=fit_intercept).fit(X, y, sample_weight=w)


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("C", [0.1, 3.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_equals_sklearn_logistic_regression_with_the_same_C(num_classes, C, weighted):
    X, y, w, Xt, _ = problem(num_classes)
    w = w if weighted else None
    est = InfluenceLogisticRegression(C=C).fit(X, y, sample_weight=w)
    sk = sklearn_fit(X, y, C, w)
    assert est.l2_reg_ == 1.0 / C and est.fit_grad_norm_ <= est.fit_grad_tol_
    np.testing.assert_array_equal(est.classes_, sk.classes_)
    assert est.coef_.shape == sk.coef_.shape and est.intercept_.shape == sk.intercept_.shape
    assert_close(est.coef_, sk.coef_, RTOL_SKLEARN_COEF, what="coef_")
    assert_close(est.intercept_, sk.intercept_, RTOL_SKLEARN_COEF, what="intercept_")
    np.testing.assert_allclose(est.predict_proba(Xt), sk.predict_proba(Xt), rtol=0, atol=ATOL_PREDICT)
    np.testing.assert_array_equal(est.predict(Xt), sk.predict(Xt))


def test_without_intercept_and_sklearn_clone():
    X, y, _, _, _ = problem(2)
    est = InfluenceLogisticRegression(C=0.5, fit_intercept=False)
    assert clone(est).get_params() == {"C": 0.5, "fit_intercept": False, "inverse_hvp_method": "explicit"}
    est.fit(X, y)
    sk = sklearn_fit(X, y, 0.5, fit_intercept=False)
    assert_close(est.coef_, sk.coef_, RTOL_SKLEARN_COEF, what="coef_")
    assert np.all(est.intercept_ == 0)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_group_effects_equal_the_group_influence_function(num_classes):
    X, y, w, Xt, yt = problem(num_classes)
    est = InfluenceLogisticRegression(C=2.0).fit(X, y, sample_weight=w)
    groups = [np.arange(0, 5), np.array([7, 3, 30]), np.arange(10, 34)]
    table = est.group_effects(groups, Xt, yt, targets=("self_loss", "test_loss_sum", "test_losses"))
    y_idx = np.searchsorted(est.classes_, y)
    ref = group_influence(est.model_, (X, y_idx), groups, 0.5, targets=("self_loss", "test_loss_sum", "test_losses"),
                          test=(Xt, np.searchsorted(est.classes_, yt)), sample_weights=w)
    for target in ("self_loss", "test_loss_sum"):
        rows = table[table["target"] == target]
        assert list(rows["group"]) == [0, 1, 2] and list(rows["size"]) == [5, 3, 24]
        assert (rows["test_index"] == -1).all()
        for est_name, col in (("pred", "predicted"), ("newton", "newton"), ("actl", "actual")):
            assert_close(rows[col], ref.estimates[target][est_name], RTOL_TWO_PATHS, what=f"{target} {col}")
    rows = table[table["target"] == "test_losses"]
    assert len(rows) == 3 * len(Xt) and list(rows["test_index"][:len(Xt)]) == list(range(len(Xt)))
    assert_close(rows["actual"].to_numpy().reshape(3, len(Xt)), ref.estimates["test_losses"]["actl"], RTOL_TWO_PATHS)
    assert_close(table["refit_grad_norm"][:3], ref.refit.grad_norms, RTOL_TWO_PATHS)
    assert table["certified"].all() and (table["refit_grad_norm"] <= table["refit_grad_tol"]).all()


@pytest.mark.parametrize("num_classes", [2, 3])
def test_actual_effects_equal_refits_by_sklearn(num_classes):
    """Independent oracle: scikit-learn refitted without each group, losses by sklearn's log_loss."""
    X, y, w, Xt, yt = problem(num_classes, seed=1)
    C = 0.7
    est = InfluenceLogisticRegression(C=C).fit(X, y, sample_weight=w)
    groups = [np.arange(0, 6), np.arange(20, 31)]
    table = est.group_effects(groups, Xt, yt, estimators=("actl",))
    full = sklearn_fit(X, y, C, w)
    for g, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(len(y)), idx)
        refit = sklearn_fit(X[keep], y[keep], C, w[keep])

        def self_loss(model, idx=idx):
            return log_loss(y[idx], model.predict_proba(X[idx]), sample_weight=w[idx], normalize=False,
                            labels=full.classes_)

        def test_loss(model):
            return log_loss(yt, model.predict_proba(Xt), normalize=False, labels=full.classes_)

        rows = table[table["group"] == g].set_index("target")
        assert_close(rows.loc["self_loss", "actual"], self_loss(refit) - self_loss(full), RTOL_REFIT, what="self")
        assert_close(rows.loc["test_loss_sum", "actual"], test_loss(refit) - test_loss(full), RTOL_REFIT,
                     what="test sum")
    assert table["predicted"].isna().all() and table["newton"].isna().all()  # not asked for


def test_bad_input_is_one_clear_error():
    X, y, w, Xt, yt = problem(2)
    with pytest.raises(ValueError, match="C must be a positive number"):
        InfluenceLogisticRegression(C=0).fit(X, y)
    with pytest.raises(ValueError, match="inverse_hvp_method must be 'explicit' or 'cg'; got 'lu'"):
        InfluenceLogisticRegression(inverse_hvp_method="lu").fit(X, y)
    with pytest.raises(ValueError, match="at least two classes"):
        InfluenceLogisticRegression().fit(X, np.ones_like(y))
    with pytest.raises(ValueError, match="sample_weight must be a non-negative array"):
        InfluenceLogisticRegression().fit(X, y, sample_weight=-w)
    est = InfluenceLogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match=r"y_test has labels not seen in fit, e.g. \[7\]"):
        est.group_effects([[0, 1]], Xt, np.full(len(Xt), 7))
    with pytest.raises(ValueError, match="need X_test and y_test"):
        est.group_effects([[0, 1]], targets=("test_loss_sum",))
    with pytest.raises(ValueError, match="targets must be among"):
        est.group_effects([[0, 1]], targets=("loss",))
    with pytest.raises(ValueError, match="X must have 4 features"):
        est.predict(X[:, :3])
