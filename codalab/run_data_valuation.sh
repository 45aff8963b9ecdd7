#!/usr/bin/env bash
set -euo pipefail
python scripts/data_valuation.py --data-dir ./data --out-dir ./output --dataset-id reduced_cdr --sample-weights
