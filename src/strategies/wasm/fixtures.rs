//! Modules of the tests, written as WebAssembly text: an `ema_cross` twin of the native strategy, and the
//! pieces hostile modules are made of. Shared with the backtester's tests.

use super::{WasmManifest, WasmParam};

/// `ema_cross` as a module: the same arithmetic as `strategies::EmaCross` (alpha = 2/(n+1), seeded with
/// the first close, silent until `slow` bars, then long while fast ≥ slow, short otherwise), so its
/// decisions must equal the native strategy's bit for bit. Parameters: 0 = fast, 1 = slow.
pub(crate) const EMA_CROSS: &str = r#"
(module
  (import "trellis" "set_target" (func $set_target (param f64)))
  (memory (export "memory") 1)
  (global $fast_n (mut f64) (f64.const 10))
  (global $slow_n (mut f64) (f64.const 20))
  (global $fast_a (mut f64) (f64.const 0))
  (global $slow_a (mut f64) (f64.const 0))
  (global $fast (mut f64) (f64.const 0))
  (global $slow (mut f64) (f64.const 0))
  (global $bars (mut i32) (i32.const 0))
  (func (export "trellis_interface_version") (result i32) (i32.const 1))
  (func (export "param") (param $i i32) (param $v f64)
    (if (i32.eq (local.get $i) (i32.const 0)) (then (global.set $fast_n (local.get $v))))
    (if (i32.eq (local.get $i) (i32.const 1)) (then (global.set $slow_n (local.get $v)))))
  (func (export "init") (result i32)
    (if (f64.ge (global.get $fast_n) (global.get $slow_n)) (then (return (i32.const 1))))
    (global.set $fast_a (f64.div (f64.const 2) (f64.add (global.get $fast_n) (f64.const 1))))
    (global.set $slow_a (f64.div (f64.const 2) (f64.add (global.get $slow_n) (f64.const 1))))
    (i32.const 0))
  (func (export "warm_up_bars") (result i32)
    (i32.trunc_f64_s (f64.mul (global.get $slow_n) (f64.const 3))))
  (func (export "on_bar")
        (param $open f64) (param $high f64) (param $low f64) (param $close f64)
        (param $tick_volume i64) (param $open_time_ms i64) (result i32)
    (if (i32.eqz (global.get $bars))
      (then
        (global.set $fast (local.get $close))
        (global.set $slow (local.get $close)))
      (else
        (global.set $fast (f64.add (global.get $fast)
          (f64.mul (global.get $fast_a) (f64.sub (local.get $close) (global.get $fast)))))
        (global.set $slow (f64.add (global.get $slow)
          (f64.mul (global.get $slow_a) (f64.sub (local.get $close) (global.get $slow)))))))
    (global.set $bars (i32.add (global.get $bars) (i32.const 1)))
    (if (f64.lt (f64.convert_i32_s (global.get $bars)) (global.get $slow_n))
      (then (return (i32.const 0))))
    (call $set_target
      (select (f64.const 1) (f64.const -1) (f64.ge (global.get $fast) (global.get $slow))))
    (i32.const 1)))
"#;

/// The manifest of [`EMA_CROSS`], with the native strategy's defaults.
pub(crate) fn ema_cross_manifest() -> WasmManifest {
    let param = |name: &str, default: f64, min: f64| WasmParam {
        name: name.into(),
        default,
        min: Some(min),
        max: Some(10_000.0),
    };
    WasmManifest {
        params: vec![param("fast", 10.0, 1.0), param("slow", 20.0, 2.0)],
        ..WasmManifest::default()
    }
}

/// The binary of a module in text.
pub(crate) fn wasm(text: &str) -> Vec<u8> {
    match wat::parse_str(text) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a test module does not parse: {e}"),
    }
}

/// A module of interface v1 with `imports` first and `body` after the memory and the version.
pub(crate) fn module(imports: &str, body: &str) -> Vec<u8> {
    wasm(&format!(
        r#"(module {imports}
             (memory (export "memory") 1)
             (func (export "trellis_interface_version") (result i32) (i32.const 1))
             {body})"#
    ))
}

/// An `on_bar` export whose body is `body` (which must leave an i32 status).
pub(crate) fn on_bar(body: &str) -> String {
    format!(r#"(func (export "on_bar") (param f64 f64 f64 f64 i64 i64) (result i32) {body})"#)
}
