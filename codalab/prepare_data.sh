#!/usr/bin/env bash
# Download and preprocess datasets into ./data. Usage: bash codalab/prepare_data.sh ID [ID ...]
set -euo pipefail
python scripts/load_all_datasets.py --data-dir ./data --dataset-ids "$@" --supplement-ids none
