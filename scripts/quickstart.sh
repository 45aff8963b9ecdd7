#!/usr/bin/env bash
# The README's first command: set up .venv (first run only), then run the main job
# offline (scripts/reproduce.py): ss_logreg on the offline real datasets with a reduced
# number of groups, the Figure 4 counterexamples in both precisions, and the figures
# notebook executed headless. Results go to output/, figures to plots/.
# Extra arguments go to reproduce.py (e.g. --num-subsets 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python scripts/reproduce.py "$@"
