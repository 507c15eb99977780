/*
 * ema_cross as a trellis strategy module, in C: two exponential moving averages of the close
 * (alpha = 2/(n+1), seeded with the first close); once both have seen `slow` bars, long (target 1.0) while
 * fast >= slow, short (-1.0) otherwise, reversing on each cross.
 *
 * Its decisions equal the native src/strategies/ema_cross.rs bit for bit: the same double arithmetic in the
 * same order (wasm32 has no fused multiply-add; built with -ffp-contract=off and without -ffast-math), the
 * same warm-up (3 x slow bars), and init refuses what the native strategy refuses (fast >= slow, periods
 * that are not whole). Parameters, in the order of manifest.json: 0 = fast, 1 = slow.
 */
#include "trellis.h"

/* An EMA seeded with its first value (as strategies::ema_cross::Ema). */
typedef struct {
  double alpha;
  double value;
  int seeded;
} ema;

static ema ema_new(uint32_t period) {
  ema e = {2.0 / ((double)period + 1.0), 0.0, 0};
  return e;
}

static double ema_update(ema *e, double x) {
  double v = e->seeded ? e->value + e->alpha * (x - e->value) : x;
  e->value = v;
  e->seeded = 1;
  return v;
}

/* The parameters as passed (the native strategy's defaults until then), checked by init. */
static double fast_param = 10.0;
static double slow_param = 20.0;
static ema fast_ema, slow_ema;
static uint32_t slow_period = 20;
static uint32_t bars;

/* A whole number of bars the native strategy accepts (1 to 10 000) in *n, or 0. */
static int period(double v, uint32_t *n) {
  if (!(v >= 1.0 && v <= 10000.0)) {
    return 0;
  }
  *n = (uint32_t)v;
  return (double)*n == v;
}

TRELLIS_EXPORT(param) void param(int32_t index, double value) {
  if (index == 0) {
    fast_param = value;
  } else if (index == 1) {
    slow_param = value;
  }
}

TRELLIS_EXPORT(init) int32_t init(void) {
  uint32_t fast, slow;
  if (!period(fast_param, &fast) || !period(slow_param, &slow)) {
    trellis_log_str("ema_cross: `fast` and `slow` must be whole numbers of bars");
    return 2;
  }
  if (fast >= slow) {
    trellis_log_str("ema_cross: `fast` must be smaller than `slow`");
    return 1;
  }
  fast_ema = ema_new(fast);
  slow_ema = ema_new(slow);
  slow_period = slow;
  bars = 0;
  return 0;
}

TRELLIS_EXPORT(warm_up_bars) int32_t warm_up_bars(void) { return (int32_t)(slow_period * 3); }

static int32_t decide(const trellis_bar *bar) {
  double fast = ema_update(&fast_ema, bar->close);
  double slow = ema_update(&slow_ema, bar->close);
  if (bars < 0xffffffffu) {
    bars++;
  }
  if (bars < slow_period) {
    return TRELLIS_NO_CHANGE;
  }
  return trellis_target(fast >= slow ? 1.0 : -1.0);
}

TRELLIS_ON_BAR(decide)
