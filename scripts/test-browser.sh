#!/usr/bin/env bash
# The live dashboard in a real browser (tests/browser): pytest drives a headless Chromium with Selenium
# against a real `trellis demo` (target/debug/trellis, built by the cargo steps before this one).
#
# Why: the Rust tests check what the server sends; only a browser shows whether the page a trader opens
# signs in, follows the WebSocket live (fills arriving, positions opening), and whether the kill switch a
# trader presses in a hurry really stops trading and closes positions. The same page is checked at phone width.
#
# Chromium and chromedriver come from Debian (/usr/bin/chromium, /usr/bin/chromedriver: packages chromium
# and chromium-driver, installed by scripts/services.sh); Selenium Manager is kept offline (SE_OFFLINE) so
# nothing is downloaded at test time. Screenshots (and the demo's log) stay in target/browser-artifacts/.
#
# Knobs: TRELLIS_BIN (the binary under test), CI=true (a missing binary or browser fails instead of skipping),
# and any pytest arguments (e.g. -k phone).
set -euo pipefail
cd "$(dirname "$0")/.."

SELENIUM_VERSION=4.27.1
PYTEST_VERSION=8.3.4
VENV=target/browser-venv  # under target/: ignored by git, removed by `cargo clean`
BIN="${TRELLIS_BIN:-target/debug/trellis}"
ARTIFACTS=target/browser-artifacts

if [ ! -x "$BIN" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "test-browser: $BIN is missing: scripts/test.sh builds it (cargo) before this stage" >&2
    exit 1
  fi
  echo "test-browser: $BIN is missing (build it with cargo build); skipping the browser tests" >&2
  exit 0
fi
for tool in /usr/bin/chromium /usr/bin/chromedriver; do
  if [ ! -x "$tool" ]; then
    if [ "${CI:-}" = "true" ]; then
      echo "test-browser: $tool is missing: install chromium and chromium-driver (scripts/services.sh)" >&2
      exit 1
    fi
    echo "test-browser: $tool is missing (scripts/services.sh installs it); skipping the browser tests" >&2
    exit 0
  fi
done

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "selenium==$SELENIUM_VERSION" "pytest==$PYTEST_VERSION"

mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS"/*.png
export SE_OFFLINE=true
export TRELLIS_BIN="$BIN"
BROWSER_ARTIFACTS="$(pwd)/$ARTIFACTS"
export BROWSER_ARTIFACTS
set +e
"$VENV/bin/python" -m pytest -q --tb=short -p no:cacheprovider tests/browser "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test-browser: pytest collected no tests" >&2
  exit 1
fi
if compgen -G "$ARTIFACTS/*.png" >/dev/null; then
  echo "test-browser: screenshots:"
  for shot in "$ARTIFACTS"/*.png; do echo "  $shot"; done
fi
exit "$status"
