#!/usr/bin/env bash
# Builds the guest examples (docs/strategy-modules.md, "Guest SDKs"): `ema_cross` as a strategy module in
# Rust (examples/wasm-strategy-rust, no_std) and in C (examples/wasm-strategy-c, clang without libc), into
#
#   target/wasm-examples/ema_cross_rust.wasm  ema_cross_rust.json
#   target/wasm-examples/ema_cross_c.wasm     ema_cross_c.json
#
# (each module with its manifest beside it, as `trellis backtest --module ... --module-manifest ...` takes
# them). Installs what is missing first: the Rust target wasm32-unknown-unknown, Debian's clang and lld.
# Safe to run again: it rebuilds what changed. Run by scripts/test.sh and by the test
# `backtest::cli::guest_examples` when the modules are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
out="$root/target/wasm-examples"

as_root() { # as_root COMMAND...: COMMAND as root, through sudo when not root already
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "installing the Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null; then
  echo "installing clang and lld (wasm-ld)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y clang lld
fi

mkdir -p "$out"

# Rust: a crate of its own (its own workspace and Cargo.lock) in a target directory of its own. Run from
# its directory so that its .cargo/config.toml applies; flags meant for trellis's build do not.
(
  cd examples/wasm-strategy-rust
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
    cargo build --locked --release --target wasm32-unknown-unknown --target-dir "$root/target/wasm-guest"
)
cp target/wasm-guest/wasm32-unknown-unknown/release/ema_cross.wasm "$out/ema_cross_rust.wasm"
cp examples/wasm-strategy-rust/manifest.json "$out/ema_cross_rust.json"

# C: no libc, no entry point; exactly the interface's functions exported (wasm-ld adds `memory`), each
# named so that a missing one fails the link. No -ffast-math, no contraction: the arithmetic as written.
exports=(trellis_interface_version param init warm_up_bars on_bar)
clang --target=wasm32 -O2 -ffreestanding -ffp-contract=off -nostdlib \
  -Wall -Wextra -Werror \
  -Wl,--no-entry -Wl,--strip-all "${exports[@]/#/-Wl,--export=}" \
  -o "$out/ema_cross_c.wasm" examples/wasm-strategy-c/ema_cross.c
cp examples/wasm-strategy-c/manifest.json "$out/ema_cross_c.json"

for module in ema_cross_rust ema_cross_c; do
  printf 'built target/wasm-examples/%s.wasm (%d bytes) with %s.json\n' \
    "$module" "$(wc -c <"$out/$module.wasm")" "$module"
done
