#!/usr/bin/env bash
# Execute the figures notebook headless; PDFs land in ./plots.
set -euo pipefail
python scripts/run_figures.py --out-dir "$(pwd)/output" --plot-dir "$(pwd)/plots"
