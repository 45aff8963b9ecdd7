"""The shared base of the influence experiments: chunk-size rule, folds, cross-validation, model setup."""
import numpy as np
import pytest

from experiments.counterexamples import Counterexamples
from experiments.credit_assignment import CreditAssignment
from experiments.data_valuation import DataValuation
from experiments.influence_base import InfluenceExperiment, contiguous_folds, cv_regs
from experiments.subset_influence import SubsetInfluenceLogreg
from influence import memory
from influence.group_influence import GroupInfluence


def test_every_influence_experiment_derives_from_the_base():
    for cls in (SubsetInfluenceLogreg, Counterexamples, DataValuation, CreditAssignment):
        assert issubclass(cls, InfluenceExperiment)


def test_refit_chunk_size_is_the_one_memory_rule():
    # Every experiment sizes its refit chunks by influence.memory.refit_chunk_size from its
    # --max-memory: hospital-sized ss_logreg keeps 64 groups at the paper's 1e8 bytes ...
    per = memory.refit_bytes_per_group(128, 20000, 1)
    assert per == 8 * (4 * 128 ** 2 + 4 * 20000)
    assert memory.refit_chunk_size(128, 20000, 10 ** 8) == 64
    # ... spam-sized explicit Hessians (d = 5,298) no longer fit even one at a time: one group.
    assert memory.refit_chunk_size(5298, 4137, 10 ** 8) == 1
    # cg runs hold no (d, d) matrices.
    assert memory.refit_chunk_size(7850, 55000, 10 ** 9, 10, explicit=False) == \
        min(64, 10 ** 9 // (8 * 4 * 55000 * 10))
    # Counterexamples: up to 1024 groups per chunk.
    assert memory.refit_chunk_size(3, 120, 10 ** 9, max_items=1024) == 1024


def test_experiment_chunk_size_follows_max_memory(monkeypatch):
    def model(d):
        class _Model:
            num_params = d

            class spec:
                num_rows, binary, num_params = 1, True, d
        return _Model()

    # Explicit Hessians per group (d = 128), and the downdate route of large binary models
    # (d = 2,000: no (d, d) per group, only the (n,) arrays in this rule; a budget of four (d, d)
    # matrices, one explicit group, holds 64 of them).
    for d, budget, want in ((128, 10 ** 8, 64), (128, 8 * (4 * 128 ** 2 + 4 * 20000) * 5, 5),
                            (2000, 10 ** 8, 64), (2000, 8 * 4 * 20000 * 5, 5), (2000, 8 * 4 * 2000 ** 2, 64)):
        exp = InfluenceExperiment.__new__(InfluenceExperiment)
        exp.config = {"max_memory": budget}
        monkeypatch.setattr(InfluenceExperiment, "get_model", lambda self, d=d: model(d))
        monkeypatch.setattr(InfluenceExperiment, "inverse_methods", lambda self: ("explicit", "cholesky_lu"))
        monkeypatch.setattr(InfluenceExperiment, "num_train", property(lambda self: 20000))
        assert exp.refit_chunk_size() == want


def test_folds_and_grid():
    folds = contiguous_folds(10, 4)
    assert [f.tolist() for f in folds] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(contiguous_folds(6, 5)) == 3 and len(contiguous_folds(6, 5, skip_empty=False)) == 5
    assert np.allclose(cv_regs(100, (1e-3, 1e-1, 3)), [0.1, 1.0, 10.0], rtol=1e-12)


class _Tiny(InfluenceExperiment):
    experiment_id = "tiny"

    def __init__(self, train):
        super().__init__({"max_memory": 10 ** 9}, out_dir="/nonexistent")
        self._train = train

    @property
    def run_id(self):
        return "tiny"

    @property
    def train(self):
        return self._train

    @property
    def num_train(self):
        return len(self._train[1])


@pytest.mark.parametrize("warm_start", [False, True])
def test_cross_validate_equals_fits_on_each_fold(warm_start):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(np.int64)
    w = rng.uniform(0.5, 2, 30)
    exp = _Tiny((X, y))
    regs = cv_regs(30, (1e-2, 1e-1, 2))
    folds = contiguous_folds(30, 3)
    cv = exp.cross_validate(X, y, regs, folds, weights=w, warm_start=warm_start, score=lambda m: 1.0)
    m = exp.get_model()
    for i, reg in enumerate(regs):
        errs, accs = [], []
        for val in folds:
            tr = np.setdiff1d(np.arange(30), val)
            m.fit((X[tr], y[tr]), w[tr], reg)
            errs.append(np.sum(w[val] * m.get_indiv_loss((X[val], y[val]))))
            accs.append(m.get_accuracy((X[val], y[val])))
        # Certified optima: warm-started fits agree with cold ones to the fit tolerance.
        assert cv["cv_errors"][i] == pytest.approx(sum(errs), rel=1e-9)
        assert cv["cv_accs"][i] == pytest.approx(np.mean(accs))
    assert np.all(cv["cv_scores"] == 1.0)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_cross_validate_with_batched_folds_equals_fits_on_each_fold(num_classes):
    """batch_folds: every fold's warm-started path advanced together (fold weights on the
    whole design, LogisticRegression.fit_path) gives the held-out losses and accuracies of
    cold fits on each fold's own rows."""
    rng = np.random.RandomState(2)
    n = 90
    y = rng.randint(0, num_classes, n)
    X = rng.normal(0, 1.0, (num_classes, 3))[y] + rng.normal(size=(n, 3))
    w = rng.uniform(0.5, 2, n)
    exp = _Tiny((X, y))
    regs = cv_regs(n, (1e-2, 1e-1, 3))
    folds = contiguous_folds(n, 3)
    cv = exp.cross_validate(X, y, regs, folds, weights=w, warm_start=True, batch_folds=True)
    # One design, the training set's own, left cached for the next fit on it (no fold copies).
    cached = exp.get_model().cached_inputs
    assert len(cached) == 1 and cached[0] is X
    with pytest.raises(ValueError, match="batch_folds needs warm_start"):
        exp.cross_validate(X, y, regs, folds, weights=w, batch_folds=True)
    m = exp.get_model()
    for i, reg in enumerate(regs):
        errs, accs = [], []
        for val in folds:
            tr = np.setdiff1d(np.arange(n), val)
            fit = m.fit((X[tr], y[tr]), w[tr], reg)
            assert fit.converged
            errs.append(np.sum(w[val] * m.get_indiv_loss((X[val], y[val]))))
            accs.append(m.get_accuracy((X[val], y[val])))
        # Certified optima of the same problems: agreement to the fit tolerance.
        assert cv["cv_errors"][i] == pytest.approx(sum(errs), rel=1e-9)
        assert cv["cv_accs"][i] == pytest.approx(np.mean(accs))


def test_influence_hands_the_run_to_the_api():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(20, 2))
    y = (X[:, 1] > 0).astype(np.int64)
    exp = _Tiny((X, y))
    m = exp.get_model()
    assert m.spec.fit_intercept and m.num_params == 3
    m.fit((X, y), None, 1.0)
    exp.R.update({"initial_params": m.get_params_flat(), "cv_l2_reg": 1.0, "hessian": m.get_hessian((X, y), None, 1.0)})
    infl = exp.influence()
    assert isinstance(infl, GroupInfluence)
    assert np.array_equal(infl.params, exp.R["initial_params"]) and infl.hessian is exp.R["hessian"]
    assert exp.refit_chunk_size() == memory.refit_chunk_size(3, 20, 10 ** 9, 1)
    assert infl.max_memory == 10 ** 9


def test_influence_is_one_object_per_set_of_inputs():
    """influence() gives the same GroupInfluence while the run's inputs are the same objects
    (what it builds once, such as the downdate basis of large binary models, is then built
    once per run), and a new one when any of them changes."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    exp = _Tiny((X, y))
    exp.R = {exp.l2_key: 0.5, "initial_params": np.zeros(4)}
    first = exp.influence()
    assert exp.influence() is first
    exp.R["hessian"] = np.eye(4)
    with_h = exp.influence()
    assert with_h is not first and with_h.hessian is exp.R["hessian"] and exp.influence() is with_h
    exp.R[exp.l2_key] = 0.25
    assert exp.influence() is not with_h and exp.influence().l2_reg == 0.25
    exp.R["initial_params"] = np.ones(4)
    assert np.array_equal(exp.influence().params, np.ones(4))
