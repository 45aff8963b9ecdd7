"""scripts/benchmark_refits.py: the matmul rates and the table of large products."""
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
