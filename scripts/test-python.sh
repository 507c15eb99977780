#!/usr/bin/env bash
# The Python bridge's tests (clients/mt5-bridge): a venv with the package and pytest, then pytest against a
# real `trellis serve` (target/debug/trellis, built by the cargo steps before this one).
set -euo pipefail
cd "$(dirname "$0")/../clients/mt5-bridge"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q -e '.[test]'
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test-python: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
