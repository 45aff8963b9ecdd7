#!/usr/bin/env bash
set -euo pipefail
python scripts/credit_assignment.py --data-dir ./data --out-dir ./output --dataset-id mnli --no-intermediate-results
