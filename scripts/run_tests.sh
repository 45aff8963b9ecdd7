#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite. Extra arguments go to pytest
# (e.g. `bash scripts/run_tests.sh -m slow` for the slow tests).
# pytest's exit code 5 ("no tests collected") is turned into a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
