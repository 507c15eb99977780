#!/usr/bin/env bash
# The Python tests: the bridge (clients/mt5-bridge), then the trading client (clients/trellis-client). Each gets a
# venv with its package and pytest, then pytest against a real `trellis serve` (target/debug/trellis, built by the
# cargo steps before this one). Arguments go to both pytest runs. The exit status is the first failure; the last
# line sums both runs in pytest's own format ("27 passed in 12.3s", "1 failed, 26 passed in 12.3s"), which is the
# line scripts/test.sh reads.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
passed=0
failed=0
seconds=0

run_pytest() {
  local dir="$1"
  shift
  cd "$root/$dir"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  local s=0
  if .venv/bin/python -m pip install -q -e '.[test]'; then
    set +e
    .venv/bin/python -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$out"
    s=${PIPESTATUS[0]}
    set -e
    if [ "$s" -eq 5 ]; then
      echo "test-python: pytest collected no tests in $dir" >&2
      s=1
    fi
    # pytest's last line: "9 passed in 7.8s", "1 failed, 8 passed, 1 error in 9.1s" (errors count as failures)
    local p f t
    read -r p f t < <(grep -E '^[0-9]+ [a-z]+.* in [0-9.]+s' "$out" | tail -n 1 | awk '
      { for (i = 1; i < NF; i++) {
          if ($(i + 1) ~ /^passed/) p += $i
          if ($(i + 1) ~ /^(failed|error)/) f += $i
          if ($i == "in") { x = $(i + 1); gsub(/[^0-9.]/, "", x); t += x } } }
      END { print p + 0, f + 0, t + 0 }')
    passed=$((passed + p))
    failed=$((failed + f))
    seconds=$(awk -v a="$seconds" -v b="$t" 'BEGIN { print a + b }')
  else
    s=1
    echo "test-python: installing $dir failed" >&2
  fi
  [ "$status" -eq 0 ] && status=$s
  return 0
}

run_pytest clients/mt5-bridge "$@"
run_pytest clients/trellis-client "$@"

if [ "$failed" -gt 0 ]; then
  printf '%d failed, %d passed in %.2fs\n' "$failed" "$passed" "$seconds"
else
  printf '%d passed in %.2fs\n' "$passed" "$seconds"
fi
exit "$status"
