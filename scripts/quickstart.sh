#!/usr/bin/env bash
# Set up .venv (first run only) and run the main job on offline data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python scripts/quickstart.py "$@"
