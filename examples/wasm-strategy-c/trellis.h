/*
 * trellis.h: the C guest SDK of trellis strategy modules, interface v1 (docs/strategy-modules.md).
 *
 * No libc: a module is built with clang for wasm32 without a standard library,
 *
 *   clang --target=wasm32 -O2 -ffreestanding -ffp-contract=off -nostdlib -Wl,--no-entry -o module.wasm module.c
 *
 * (scripts/build-wasm-examples.sh also names each export with -Wl,--export=..., so a misspelt one fails the
 * link). What it gives:
 *
 *   - the host functions of the `trellis` namespace: trellis_set_target, trellis_log, trellis_random, and
 *     trellis_target (sets the target and returns the status that says so), trellis_log_str;
 *   - TRELLIS_EXPORT(name), which exports a function under its interface name;
 *   - the export trellis_interface_version(), returning TRELLIS_INTERFACE_VERSION (a weak definition, so
 *     several files may include this header);
 *   - trellis_bar and TRELLIS_ON_BAR(handler), which exports on_bar calling
 *     `int32_t handler(const trellis_bar *bar)`.
 *
 * The module's own exports: on_bar (required), and as needed param(int32_t index, double value),
 * int32_t init(void), int32_t warm_up_bars(void), int32_t on_tick(double bid, double ask, int64_t
 * time_msc), void on_fill(double signed_volume, double price). wasm-ld exports `memory` itself.
 *
 * Floating point: wasm32 has no fused multiply-add and clang does not reassociate without -ffast-math, so
 * an expression computes what it says, in IEEE 754 double; build with -ffp-contract=off to say so.
 */
#ifndef TRELLIS_H
#define TRELLIS_H

#if !defined(__wasm32__)
#error "a trellis strategy module is built with --target=wasm32"
#endif

/* One of the headers a freestanding compiler provides itself. */
#include <stdint.h>

/* The interface version this header speaks; the host refuses a module that returns another. */
#define TRELLIS_INTERFACE_VERSION 1

/* Statuses of on_bar and on_tick. */
enum {
  /* The position stays as it is. */
  TRELLIS_NO_CHANGE = 0,
  /* The target is the last value passed to trellis_set_target during this call. */
  TRELLIS_TARGET_SET = 1,
};

/* Exports a function as `name` of the interface. */
#define TRELLIS_EXPORT(name) __attribute__((export_name(#name)))

/* Imports host function `name` of the `trellis` namespace; nothing else may be imported (the host
 * refuses the module at load, naming the import). */
#define TRELLIS_IMPORT(name) __attribute__((import_module("trellis"), import_name(#name)))

/* Records `multiple` (of the strategy's volume: 1.0 long, -1.0 short, 0.0 flat; finite, within ±1000) as
 * the target of the current call; read by the host when the call returns TRELLIS_TARGET_SET. */
TRELLIS_IMPORT(set_target) void trellis_set_target(double multiple);

/* Logs `len` bytes of UTF-8 at `line` as one line (at INFO, with the strategy's kind); 512 bytes of a
 * line and 16 lines per call are kept, the rest dropped and counted. */
TRELLIS_IMPORT(log) void trellis_log(const char *line, int32_t len);

/* Uniform in [0, 1), seeded from the module's bytes: the same sequence live, in a backtest, on a rerun. */
TRELLIS_IMPORT(random) double trellis_random(void);

/* Sets the target and returns the status that says so: `return trellis_target(1.0);`. */
static inline int32_t trellis_target(double multiple) {
  trellis_set_target(multiple);
  return TRELLIS_TARGET_SET;
}

/* Logs a NUL-terminated string. */
static inline void trellis_log_str(const char *line) {
  int32_t len = 0;
  while (line[len] != 0) {
    len++;
  }
  trellis_log(line, len);
}

/* A closed bar of the strategy's symbol and timeframe. */
typedef struct {
  double open, high, low, close;
  int64_t tick_volume;
  /* Start of the bar, milliseconds since the Unix epoch. */
  int64_t open_time_ms;
} trellis_bar;

/* Exports on_bar, calling `int32_t handler(const trellis_bar *bar)` with the bar. */
#define TRELLIS_ON_BAR(handler)                                                                           \
  TRELLIS_EXPORT(on_bar)                                                                                  \
  int32_t on_bar(double open, double high, double low, double close, int64_t tick_volume,                 \
                 int64_t open_time_ms) {                                                                  \
    trellis_bar bar = {open, high, low, close, tick_volume, open_time_ms};                                \
    return handler(&bar);                                                                                 \
  }

/* Interface v1: the host calls this at load and refuses any other answer. */
TRELLIS_EXPORT(trellis_interface_version)
__attribute__((weak)) int32_t trellis_interface_version(void) { return TRELLIS_INTERFACE_VERSION; }

#endif /* TRELLIS_H */
