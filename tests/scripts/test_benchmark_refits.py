"""scripts/benchmark_refits.py: the matmul rates and the table of large products."""
import pytest

from tests.scripts.test_cli_fuzz import load_script


def test_products_only_prints_the_rates_and_the_product_table(capsys):
    module = load_script("benchmark_refits")
    assert module.main(["--dataset-id", "breast_cancer", "--products-only", "--product-batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "float64 square matrix multiply" in out and "numpy 2048^2" in out and "tensorflow 31^2" in out
    rows = [line for line in out.splitlines() if "E^2" in line or "E K'" in line]
    names = ["full Hessian, TensorFlow", "full Hessian, NumPy syrk", "the same, one BLAS thread",
             "8 Hessian-vector products", "gradients of 8 problems", "their two design products alone"]
    assert len(rows) == len(names) and all(name in row for name, row in zip(names, rows))
    for row in rows:
        tokens = row.removesuffix("< 1/2").split()
        gflop, wall, rate, ratio, cpu, rate_cpu, ratio_cpu = map(float, tokens[-7:])
        assert wall > 0 and min(cpu, rate, ratio, rate_cpu, ratio_cpu) >= 0   # printed rounded
    # The flops counted for breast_cancer (binary, n = 455, E = 31): 2 n E^2 for the product.
    assert float(rows[0].removesuffix("< 1/2").split()[-7]) == round(2 * 455 * 31 ** 2 / 1e9, 3)
    assert "refits certified" not in out   # --products-only stops before the refits


def test_best_seconds_times_the_calls():
    module = load_script("benchmark_refits")
    calls = []
    wall, cpu = module.best_seconds(lambda: calls.append(1), reps=4)
    assert len(calls) == 5 and 0 <= wall < 0.1 and 0 <= cpu < 0.1   # one warm-up, then four timed


@pytest.mark.slow
def test_cg_workload_runs_the_dense_route_next_to_the_data_route(capsys, monkeypatch):
    """A model above explicit_max_params takes ss_logreg's cg route: the dense Hessian's
    factor without a memory budget, Newton-CG through the data with --data-route; both
    certified and within the certificates of each other."""
    from influence.logistic_regression import LogisticRegression

    module = load_script("benchmark_refits")
    default = LogisticRegression.default_config
    monkeypatch.setattr(LogisticRegression, "default_config", staticmethod(lambda: {**default(), "explicit_max_params": 10}))
    assert module.main(["--dataset-id", "breast_cancer", "--no-products", "--num-groups", "4",
                        "--baseline-groups", "1", "--data-route"]) == 0
    out = capsys.readouterr().out
    assert "with the dense Hessian's factor (4 groups" in out
    line = next(x for x in out.splitlines() if x.startswith("Newton-CG through the data"))
    assert "all certified: True" in line
    rel = float(line.split("(")[-1].split(" of the largest")[0])
    assert rel < 1e-8   # two certified optima of the same problems
    assert "all engine refits certified: True" in out
    for what in ("Newton changes (phase 9)", "first-order changes (phase 7)"):
        line = next(x for x in out.splitlines() if x.startswith(what))
        assert float(line.split("largest relative difference ")[1]) < 1e-6   # both routes to cg_rtol 1e-10
    assert "E^2" not in out   # --no-products: no product table
    # Under a budget below twice the factor's bytes the route through the data is taken.
    assert module.main(["--dataset-id", "breast_cancer", "--no-products", "--num-groups", "2",
                        "--baseline-groups", "1", "--max-memory", str(2 * 8 * 31 ** 2 - 1)]) == 0
    assert "engine: batched Newton-CG (2 groups" in capsys.readouterr().out
