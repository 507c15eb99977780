#!/usr/bin/env bash
# The test command (README, .ci/run): installs and starts what the tests need, then formatting, lints and the
# whole test suite. Safe to run again: servers already up are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

eval "$(scripts/services.sh)"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log" "${browser_log:-}"' EXIT
# Every suite runs even when an earlier one failed; the exit status reports the first failure.
set +e
echo "== cargo test (embedded profile: SQLite)"
cargo test --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "== cargo test --test api (real profile: PostgreSQL with row-level security, ClickHouse, Redis)"
TRELLIS_TEST_PROFILE=real cargo test --locked --test api 2>&1 | tee -a "$log"
real_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$real_status
echo "== pytest (clients/mt5-bridge and clients/trellis-client against a real trellis serve)"
bash scripts/test-python.sh 2>&1 | tee -a "$log"
python_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$python_status
echo "== browser (the dashboard in Debian's Chromium against a real trellis demo)"
browser_log="$(mktemp)"
bash scripts/test-browser.sh 2>&1 | tee "$browser_log"
browser_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$browser_status
echo "== schemathesis (OpenAPI fuzzer against a real trellis serve)"
# Printed, not added to "$log": its counts are generated requests, not tests, and its failure reports quote
# server answers, which must not reach the closing line's greps.
bash scripts/fuzz-api.sh 2>&1
fuzz_status=$?
[ "$status" -eq 0 ] && status=$fuzz_status

# One closing line for the whole run: the sum over every test binary.
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
# pytest's last line: "9 passed in 7.8s" or "1 failed, 8 passed in 9.1s".
# test-python.sh ends with one line for both of its runs; the browser stage has its own.
py_summary=$(
  grep -E '^[0-9]+ (passed|failed).* in [0-9.]+s' "$log" | tail -n 1 || true
  grep -E '^[0-9]+ (passed|failed).* in [0-9.]+s' "$browser_log" | tail -n 1 || true
)
py_passed=$(echo "$py_summary" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
py_failed=$(echo "$py_summary" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
passed=$((passed + py_passed))
failed=$((failed + py_failed))
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
