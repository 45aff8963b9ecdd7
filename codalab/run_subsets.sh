#!/usr/bin/env bash
# Main ss_logreg run of the paper for one dataset (as in the original CodaLab worksheet).
# Usage: bash codalab/run_subsets.sh DATASET_ID
set -euo pipefail
ID="$1"
python scripts/subsets_infl_logreg.py --data-dir ./data --out-dir ./output --dataset-id "$ID" \
  --subset-choice-type range --subset-min-rel-size 0.0025 --subset-max-rel-size 0.25 \
  --num-subsets 100 --max-memory 100000000 --no-intermediate-results
