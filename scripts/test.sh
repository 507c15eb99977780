#!/usr/bin/env bash
# The test command (README, .ci/run): installs and starts what the tests need, then formatting, lints and the
# whole test suite. Safe to run again: servers already up are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clean clone builds everything once: incremental caches would only be written, never read.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
# The suites build and run without the benchmark suite (a default feature: `trellis bench`); clippy checks it.
FEATURES=(--no-default-features)

# Each stage's wall time, printed at the end (the command must stay well inside CI's 90 minutes).
stage_names=()
stage_secs=()
stage_started=$SECONDS
stage_name=""
stage() { # stage NAME: ends the running stage and starts NAME
  if [ -n "$stage_name" ]; then
    stage_names+=("$stage_name")
    stage_secs+=($((SECONDS - stage_started)))
  fi
  stage_name="$1"
  stage_started=$SECONDS
  [ -n "$1" ] && echo "== $1"
  return 0
}
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

stage "services (install and start PostgreSQL, Redis, ClickHouse, S3)"
eval "$(scripts/services.sh)"

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
stage "wasm guest examples (Rust and C, built for wasm32)"
bash scripts/build-wasm-examples.sh
log="$(mktemp)"
trap 'rm -f "$log" "${browser_log:-}"' EXIT
# Every suite runs even when an earlier one failed; the exit status reports the first failure.
set +e
stage "cargo build (the library, the binary and the test binaries, once)"
cargo test --locked "${FEATURES[@]}" --no-run 2>&1 | tail -n 5
stage "cargo test (embedded profile: SQLite)"
cargo test --locked "${FEATURES[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
stage "cargo test --test api (real profile: PostgreSQL with row-level security, ClickHouse, Redis)"
TRELLIS_TEST_PROFILE=real cargo test --locked "${FEATURES[@]}" --test api 2>&1 | tee -a "$log"
real_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$real_status
stage "examples (built with the tests; each checks itself against the simulated terminal's deals)"
for example in custom_strategy embedded_runtime; do
  ./target/debug/examples/$example 2>&1 | tail -n 5
  example_status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] && status=$example_status
done
stage "doc-test (the crate guide's example; doc-tests are off in Cargo.toml but this one is the guide)"
cargo test --locked "${FEATURES[@]}" --doc 2>&1 | tee -a "$log" | tail -n 3
doc_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$doc_status
stage "pytest (clients/mt5-bridge and clients/trellis-client against a real trellis serve)"
bash scripts/test-python.sh 2>&1 | tee -a "$log"
python_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$python_status
stage "browser (the dashboard in Debian's Chromium against a real trellis demo)"
browser_log="$(mktemp)"
bash scripts/test-browser.sh 2>&1 | tee "$browser_log"
browser_status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && status=$browser_status
stage "schemathesis (OpenAPI fuzzer against a real trellis serve)"
# Printed, not added to "$log": its counts are generated requests, not tests, and its failure reports quote
# server answers, which must not reach the closing line's greps.
bash scripts/fuzz-api.sh 2>&1
fuzz_status=$?
[ "$status" -eq 0 ] && status=$fuzz_status

stage ""

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
echo "stage timings (wall clock):"
for i in "${!stage_names[@]}"; do
  printf '  %5d s  %s\n' "${stage_secs[$i]}" "${stage_names[$i]}"
done
printf '  %5d s  total\n' "$SECONDS"
echo "tests: $passed passed, $failed failed"
exit "$status"
