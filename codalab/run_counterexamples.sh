#!/usr/bin/env bash
# Figure 4's counterexamples, in float64 (this project's default) and float32 (the original's numerics).
set -euo pipefail
for ID in ortho2 gauss4; do
  python scripts/counterexamples.py --out-dir ./output --dataset-id "$ID" --no-intermediate-results
  python scripts/counterexamples.py --out-dir ./output --dataset-id "$ID" --no-intermediate-results --float32
done
