#!/usr/bin/env bash
# The main job: builds trellis and runs the demo — the runtime on its embedded store, a demo tenant with
# strategies, and a simulated MT5 terminal connected over WebSocket, trading until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec ./target/release/trellis demo "$@"
