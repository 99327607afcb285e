#!/usr/bin/env bash
# Install (first time) and run the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test || exit 1
export QT_QPA_PLATFORM=offscreen   # display tests run offscreen; the xcb test starts its own Xvfb
export PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m pytest -ra -q "$@"
code=$?
if [ "$code" = 5 ]; then
  echo "test: error: pytest collected no tests" >&2
  exit 1
fi
exit "$code"
