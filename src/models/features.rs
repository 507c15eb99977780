//! The feature library: one definition of every model input, shared by live model actors, the backtester
//! and training, so a model sees exactly the same numbers in all three. A model is trained on the names of
//! its features (`rsi_14`, `ema_ratio_12_26`, …); whoever runs it parses the same names into a
//! [`FeatureSet`] and feeds bars to a [`FeatureState`], incrementally (live) or through [`compute_all`]
//! (batch), which is the same code stepped over a slice.
//!
//! # Definitions
//! `c`, `h`, `l` are the close, high and low of the latest bar, `c[k]` the close `k` bars earlier, and
//! `r = ln(c / c[1])` the 1-bar log return. Prices are converted from `Decimal` to `f64`; values are computed
//! in `f64` and written as `f32`.
//!
//! | name | value | bars needed |
//! |---|---|---|
//! | `return_N` | `c / c[N] − 1` | N + 1 |
//! | `log_return_N` | `ln(c / c[N])` | N + 1 |
//! | `volatility_N` | sample standard deviation (divisor N − 1) of the last N values of `r`; N ≥ 2 | N + 1 |
//! | `rsi_N` | Wilder's RSI scaled to 0..1: `G / (G + L)`, with `G`, `L` the Wilder averages of the gains `max(c − c[1], 0)` and losses `max(c[1] − c, 0)`; 0.5 when both are 0 | N + 1 |
//! | `ema_ratio_F_S` | `EMA_F(c) / EMA_S(c) − 1`, F < S, `EMA_n` with α = 2 / (n + 1) | S |
//! | `atr_N` | Wilder average of the true range `max(h − l, abs(h − c[1]), abs(l − c[1]))`, divided by `c` | N + 1 |
//! | `bar_range` | `(h − l) / c` | 1 |
//! | `tod_sin`, `tod_cos` | `sin`, `cos` of `2π · (open_time_ms mod 86 400 000) / 86 400 000` (UTC) | 1 |
//! | `dow_sin`, `dow_cos` | `sin`, `cos` of `2π · d / 7`, `d` the UTC weekday of the bar's open, Monday = 0 (1970-01-01 was a Thursday, `d` = 3) | 1 |
//!
//! Every N, F and S is a whole number from 1 to [`MAX_PERIOD`], written without leading zeros, so each
//! feature has exactly one name. Averages are seeded as is standard: an EMA with the simple average of its
//! first n closes, a Wilder average (`A ← A + (x − A) / n`) with the simple average of its first n inputs.
//! A set's warm-up is the largest "bars needed" of its features.
//!
//! # Use
//! One [`FeatureState`] per bar stream (one symbol and timeframe), fed closed bars in time order.
//! [`FeatureState::write`] refuses (returns `false`) until warm and whenever a value is not finite (a zero
//! or negative price, say); such a row must be skipped, not used. The recursive features (EMA, RSI, ATR)
//! depend slightly on where the stream started, so live actors should warm up on as much history as
//! training used windows of, well beyond the warm-up minimum.
//!
//! `on_bar` and `write` do O(1) amortised work per feature and do not allocate: the rings of past closes
//! and log returns are sized when the state is built. Rolling volatility slides its mean and sum of squares
//! (Welford's update for a fixed window) and recomputes them exactly from the window every N bars, so
//! rounding cannot accumulate and a bad value is forgotten once it leaves the window.

use std::f64::consts::TAU;
use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::domain::Bar;

/// The largest period (N, F or S) a feature name may have.
pub const MAX_PERIOD: usize = 1000;

const DAY_MS: i64 = 86_400_000;
/// Weekday of 1970-01-01 (a Thursday), counting Monday as 0.
const EPOCH_WEEKDAY: i64 = 3;

/// The accepted forms, for error messages.
const ACCEPTED: &str = "return_N, log_return_N, rsi_N, atr_N (N from 1 to 1000), volatility_N (N from 2 to \
                        1000), ema_ratio_F_S (1 <= F < S <= 1000), bar_range, tod_sin, tod_cos, dow_sin, \
                        dow_cos; numbers are written without leading zeros";

/// One model input. See the module documentation for the definitions; the names are the `Display` and
/// `FromStr` forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// `return_N`: `c / c[N] − 1`.
    Return(usize),
    /// `log_return_N`: `ln(c / c[N])`.
    LogReturn(usize),
    /// `volatility_N`: sample standard deviation of the last N 1-bar log returns.
    Volatility(usize),
    /// `rsi_N`: Wilder's RSI over N bars, scaled to 0..1.
    Rsi(usize),
    /// `ema_ratio_F_S`: `EMA_F / EMA_S − 1` of the closes, F < S.
    EmaRatio { fast: usize, slow: usize },
    /// `atr_N`: Wilder's average true range over N bars divided by the close.
    Atr(usize),
    /// `bar_range`: `(h − l) / c`.
    BarRange,
    /// `tod_sin`: sine of the time of day of the bar's open (UTC).
    TodSin,
    /// `tod_cos`: cosine of the time of day of the bar's open (UTC).
    TodCos,
    /// `dow_sin`: sine of the weekday of the bar's open (UTC, Monday = 0).
    DowSin,
    /// `dow_cos`: cosine of the weekday of the bar's open (UTC, Monday = 0).
    DowCos,
}

impl Feature {
    /// How many bars must have been seen before this feature is defined.
    pub fn warmup(&self) -> usize {
        match *self {
            Self::Return(n)
            | Self::LogReturn(n)
            | Self::Volatility(n)
            | Self::Rsi(n)
            | Self::Atr(n) => n.saturating_add(1),
            Self::EmaRatio { slow, .. } => slow,
            Self::BarRange | Self::TodSin | Self::TodCos | Self::DowSin | Self::DowCos => 1,
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Return(n) => write!(f, "return_{n}"),
            Self::LogReturn(n) => write!(f, "log_return_{n}"),
            Self::Volatility(n) => write!(f, "volatility_{n}"),
            Self::Rsi(n) => write!(f, "rsi_{n}"),
            Self::EmaRatio { fast, slow } => write!(f, "ema_ratio_{fast}_{slow}"),
            Self::Atr(n) => write!(f, "atr_{n}"),
            Self::BarRange => f.write_str("bar_range"),
            Self::TodSin => f.write_str("tod_sin"),
            Self::TodCos => f.write_str("tod_cos"),
            Self::DowSin => f.write_str("dow_sin"),
            Self::DowCos => f.write_str("dow_cos"),
        }
    }
}

/// A period as written in a name: 1 to [`MAX_PERIOD`], ASCII digits, no sign, no leading zero.
fn parse_period(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 4 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| (1..=MAX_PERIOD).contains(n))
}

impl FromStr for Feature {
    type Err = FeatureError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        const PERIOD: &str =
            "the period must be a whole number from 1 to 1000 without leading zeros";
        let invalid = |reason: &'static str| FeatureError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let period = |s: &str| parse_period(s).ok_or_else(|| invalid(PERIOD));
        match name {
            "bar_range" => return Ok(Self::BarRange),
            "tod_sin" => return Ok(Self::TodSin),
            "tod_cos" => return Ok(Self::TodCos),
            "dow_sin" => return Ok(Self::DowSin),
            "dow_cos" => return Ok(Self::DowCos),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("ema_ratio_") {
            let (fast, slow) = rest
                .split_once('_')
                .ok_or_else(|| invalid("ema_ratio needs two periods, fast and slow"))?;
            let (fast, slow) = (period(fast)?, period(slow)?);
            if fast >= slow {
                return Err(invalid("the fast period must be shorter than the slow one"));
            }
            return Ok(Self::EmaRatio { fast, slow });
        }
        if let Some(n) = name.strip_prefix("log_return_") {
            return Ok(Self::LogReturn(period(n)?));
        }
        if let Some(n) = name.strip_prefix("return_") {
            return Ok(Self::Return(period(n)?));
        }
        if let Some(n) = name.strip_prefix("volatility_") {
            let n = period(n)?;
            if n < 2 {
                return Err(invalid(
                    "a sample standard deviation needs at least 2 returns",
                ));
            }
            return Ok(Self::Volatility(n));
        }
        if let Some(n) = name.strip_prefix("rsi_") {
            return Ok(Self::Rsi(period(n)?));
        }
        if let Some(n) = name.strip_prefix("atr_") {
            return Ok(Self::Atr(period(n)?));
        }
        Err(FeatureError::Unknown(name.to_owned()))
    }
}

/// Why a feature name or a feature set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The name matches no form.
    #[error("unknown feature `{0}`; accepted: {ACCEPTED}")]
    Unknown(String),
    /// The name has a known form but a bad parameter.
    #[error("bad feature `{name}`: {reason}; accepted: {ACCEPTED}")]
    Invalid { name: String, reason: &'static str },
    /// No feature was given.
    #[error("a feature set needs at least one feature; accepted: {ACCEPTED}")]
    Empty,
    /// The same feature was given twice.
    #[error("feature `{0}` is listed more than once")]
    Duplicate(String),
}

/// An ordered list of distinct features: the input layout of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSet {
    features: Vec<Feature>,
}

impl FeatureSet {
    /// Parses names in order; an empty list, an unknown or bad name, or a name given twice is an error.
    pub fn parse(names: &[String]) -> Result<Self, FeatureError> {
        if names.is_empty() {
            return Err(FeatureError::Empty);
        }
        let mut features: Vec<Feature> = Vec::with_capacity(names.len());
        for name in names {
            let feature: Feature = name.parse()?;
            if features.contains(&feature) {
                return Err(FeatureError::Duplicate(name.clone()));
            }
            features.push(feature);
        }
        Ok(Self { features })
    }

    /// The features in order.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// The canonical names in order.
    pub fn names(&self) -> Vec<String> {
        self.features.iter().map(Feature::to_string).collect()
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Always false for a parsed set (an empty list is refused).
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// How many bars must have been seen before every feature is defined.
    pub fn warmup(&self) -> usize {
        self.features.iter().map(Feature::warmup).max().unwrap_or(0)
    }

    /// A fresh incremental computer for one bar stream.
    pub fn state(&self) -> FeatureState {
        FeatureState::new(self)
    }
}

/// A fixed-capacity ring of the latest values; never reallocates.
#[derive(Debug, Clone)]
struct Ring {
    buf: Vec<f64>,
    next: usize,
    len: usize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0.0; capacity],
            next: 0,
            len: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.buf.len()
    }

    fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Adds `x`; once full, returns the value it displaced.
    fn push(&mut self, x: f64) -> Option<f64> {
        let capacity = self.buf.len();
        let slot = self.buf.get_mut(self.next)?;
        let old = std::mem::replace(slot, x);
        self.next = (self.next + 1) % capacity;
        if self.len == capacity {
            Some(old)
        } else {
            self.len += 1;
            None
        }
    }

    /// The value pushed `k` pushes ago (0 = the latest).
    fn back(&self, k: usize) -> Option<f64> {
        if k >= self.len {
            return None;
        }
        let capacity = self.buf.len();
        self.buf
            .get((self.next + capacity - 1 - k) % capacity)
            .copied()
    }
}

/// An exponential average seeded with the simple average of its first `n` inputs: an EMA (α = 2/(n+1))
/// or Wilder's average (α = 1/n).
#[derive(Debug, Clone)]
struct Average {
    n: usize,
    alpha: f64,
    seen: usize,
    value: f64,
}

impl Average {
    fn ema(n: usize) -> Self {
        Self::with_alpha(n, 2.0 / (n as f64 + 1.0))
    }

    fn wilder(n: usize) -> Self {
        Self::with_alpha(n, 1.0 / n as f64)
    }

    fn with_alpha(n: usize, alpha: f64) -> Self {
        Self {
            n,
            alpha,
            seen: 0,
            value: 0.0,
        }
    }

    fn update(&mut self, x: f64) {
        if self.seen < self.n {
            self.value += x;
            self.seen += 1;
            if self.seen == self.n {
                self.value /= self.n as f64;
            }
        } else {
            self.value += self.alpha * (x - self.value);
        }
    }

    fn get(&self) -> Option<f64> {
        (self.n > 0 && self.seen >= self.n).then_some(self.value)
    }
}

/// Rolling sample standard deviation over a fixed window.
#[derive(Debug, Clone)]
struct RollingStd {
    window: Ring,
    mean: f64,
    /// Sum of squared deviations from `mean`.
    m2: f64,
    /// Slides since the last exact recomputation.
    slides: usize,
}

impl RollingStd {
    fn new(n: usize) -> Self {
        Self {
            window: Ring::new(n),
            mean: 0.0,
            m2: 0.0,
            slides: 0,
        }
    }

    fn push(&mut self, x: f64) {
        let n = self.window.capacity();
        match self.window.push(x) {
            None => {
                if n > 0 && self.window.is_full() {
                    self.recompute();
                }
            }
            Some(old) => {
                self.slides += 1;
                if self.slides >= n {
                    self.recompute();
                } else {
                    let mean = self.mean + (x - old) / n as f64;
                    self.m2 += (x - old) * (x - mean + old - self.mean);
                    self.mean = mean;
                }
            }
        }
    }

    /// Two-pass mean and squared deviations of the (full) window: O(n), done once every n slides.
    fn recompute(&mut self) {
        let n = self.window.buf.len() as f64;
        self.mean = self.window.buf.iter().sum::<f64>() / n;
        self.m2 = self
            .window
            .buf
            .iter()
            .map(|x| (x - self.mean).powi(2))
            .sum();
        self.slides = 0;
    }

    fn get(&self) -> Option<f64> {
        let n = self.window.capacity();
        if n < 2 || !self.window.is_full() {
            return None;
        }
        // Rounding may leave a tiny negative m2; a NaN must stay NaN (f64::max would hide it).
        let m2 = if self.m2 < 0.0 { 0.0 } else { self.m2 };
        Some((m2 / (n - 1) as f64).sqrt())
    }
}

/// The running state behind one feature.
#[derive(Debug, Clone)]
enum Calc {
    /// Reads the shared ring of closes.
    Return(usize),
    /// Reads the shared ring of closes.
    LogReturn(usize),
    Volatility(RollingStd),
    Rsi {
        gain: Average,
        loss: Average,
    },
    EmaRatio {
        fast: Average,
        slow: Average,
    },
    Atr(Average),
    BarRange,
    TodSin,
    TodCos,
    DowSin,
    DowCos,
}

/// What is kept of the latest bar.
#[derive(Debug, Clone, Copy)]
struct Latest {
    high: f64,
    low: f64,
    close: f64,
    open_time_ms: i64,
}

/// Computes a [`FeatureSet`] incrementally over one bar stream.
#[derive(Debug, Clone)]
pub struct FeatureState {
    calcs: Vec<Calc>,
    /// The latest closes, as many as the longest `return_N` / `log_return_N` needs (N + 1).
    closes: Ring,
    latest: Option<Latest>,
    seen: usize,
    warmup: usize,
}

fn price(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

impl FeatureState {
    fn new(set: &FeatureSet) -> Self {
        let mut lag = None;
        let calcs = set
            .features
            .iter()
            .map(|feature| match *feature {
                Feature::Return(n) => {
                    lag = lag.max(Some(n));
                    Calc::Return(n)
                }
                Feature::LogReturn(n) => {
                    lag = lag.max(Some(n));
                    Calc::LogReturn(n)
                }
                Feature::Volatility(n) => Calc::Volatility(RollingStd::new(n)),
                Feature::Rsi(n) => Calc::Rsi {
                    gain: Average::wilder(n),
                    loss: Average::wilder(n),
                },
                Feature::EmaRatio { fast, slow } => Calc::EmaRatio {
                    fast: Average::ema(fast),
                    slow: Average::ema(slow),
                },
                Feature::Atr(n) => Calc::Atr(Average::wilder(n)),
                Feature::BarRange => Calc::BarRange,
                Feature::TodSin => Calc::TodSin,
                Feature::TodCos => Calc::TodCos,
                Feature::DowSin => Calc::DowSin,
                Feature::DowCos => Calc::DowCos,
            })
            .collect();
        Self {
            calcs,
            closes: Ring::new(lag.map_or(0, |n| n.saturating_add(1))),
            latest: None,
            seen: 0,
            warmup: set.warmup(),
        }
    }

    /// Takes the next closed bar of the stream (in time order).
    pub fn on_bar(&mut self, bar: &Bar) {
        let (high, low, close) = (price(bar.high), price(bar.low), price(bar.close));
        let prev = self.latest.map(|latest| latest.close);
        self.closes.push(close);
        for calc in &mut self.calcs {
            match calc {
                Calc::Volatility(std) => {
                    if let Some(prev) = prev {
                        std.push((close / prev).ln());
                    }
                }
                Calc::Rsi { gain, loss } => {
                    if let Some(prev) = prev {
                        let change = close - prev;
                        gain.update(if change > 0.0 { change } else { 0.0 });
                        loss.update(if change < 0.0 { -change } else { 0.0 });
                    }
                }
                Calc::EmaRatio { fast, slow } => {
                    fast.update(close);
                    slow.update(close);
                }
                Calc::Atr(atr) => {
                    if let Some(prev) = prev {
                        let true_range = (high - low)
                            .max((high - prev).abs())
                            .max((low - prev).abs());
                        atr.update(true_range);
                    }
                }
                Calc::Return(_)
                | Calc::LogReturn(_)
                | Calc::BarRange
                | Calc::TodSin
                | Calc::TodCos
                | Calc::DowSin
                | Calc::DowCos => {}
            }
        }
        self.latest = Some(Latest {
            high,
            low,
            close,
            open_time_ms: bar.open_time_ms,
        });
        self.seen = self.seen.saturating_add(1);
    }

    /// Whether enough bars have been seen for every feature to be defined.
    pub fn is_warm(&self) -> bool {
        self.seen >= self.warmup
    }

    /// Writes the features, in the set's order, into `out` (whose length must be the set's). Returns false
    /// — and `out` must not be used — while not warm, if any value is not finite, or if `out` has the wrong
    /// length.
    pub fn write(&self, out: &mut [f32]) -> bool {
        if !self.is_warm() || out.len() != self.calcs.len() {
            return false;
        }
        let Some(latest) = self.latest else {
            return false;
        };
        for (slot, calc) in out.iter_mut().zip(&self.calcs) {
            let value = self.value(calc, &latest).map(|v| v as f32);
            match value {
                Some(v) if v.is_finite() => *slot = v,
                _ => return false,
            }
        }
        true
    }

    fn value(&self, calc: &Calc, latest: &Latest) -> Option<f64> {
        let value = match calc {
            Calc::Return(n) => self.closes.back(0)? / self.closes.back(*n)? - 1.0,
            Calc::LogReturn(n) => (self.closes.back(0)? / self.closes.back(*n)?).ln(),
            Calc::Volatility(std) => std.get()?,
            Calc::Rsi { gain, loss } => {
                let (gain, loss) = (gain.get()?, loss.get()?);
                let total = gain + loss;
                // Written so that a NaN total falls through to the division and is reported.
                if total <= 0.0 {
                    0.5
                } else {
                    gain / total
                }
            }
            Calc::EmaRatio { fast, slow } => fast.get()? / slow.get()? - 1.0,
            Calc::Atr(atr) => atr.get()? / latest.close,
            Calc::BarRange => (latest.high - latest.low) / latest.close,
            Calc::TodSin => time_of_day_angle(latest.open_time_ms).sin(),
            Calc::TodCos => time_of_day_angle(latest.open_time_ms).cos(),
            Calc::DowSin => day_of_week_angle(latest.open_time_ms).sin(),
            Calc::DowCos => day_of_week_angle(latest.open_time_ms).cos(),
        };
        Some(value)
    }
}

/// `2π · (ms since UTC midnight) / day`.
fn time_of_day_angle(open_time_ms: i64) -> f64 {
    TAU * open_time_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64
}

/// `2π · weekday / 7`, Monday = 0, UTC.
fn day_of_week_angle(open_time_ms: i64) -> f64 {
    let weekday = (open_time_ms.div_euclid(DAY_MS) + EPOCH_WEEKDAY).rem_euclid(7);
    TAU * weekday as f64 / 7.0
}

/// The features after each bar (`None` until warm or when a value is not finite): the batch form for
/// training and backtests, computed by stepping a [`FeatureState`] so that it agrees with live use.
pub fn compute_all(set: &FeatureSet, bars: &[Bar]) -> Vec<Option<Vec<f32>>> {
    let mut state = set.state();
    let mut row = vec![0.0_f32; set.len()];
    bars.iter()
        .map(|bar| {
            state.on_bar(bar);
            state.write(&mut row).then(|| row.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rust_decimal::prelude::FromPrimitive;

    use super::*;
    use crate::domain::Timeframe;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    fn bar(open_time_ms: i64, high: f64, low: f64, close: f64) -> Bar {
        let d = |x: f64| Decimal::from_f64(x).expect("finite price");
        Bar {
            symbol: "EURUSD".into(),
            timeframe: Timeframe::M1,
            open_time_ms,
            open: d(close),
            high: d(high),
            low: d(low),
            close: d(close),
            tick_volume: 1,
        }
    }

    /// (high, low, close) of the small fixed series. Bar 3 gaps up (its true range is high − previous
    /// close) and bar 6 gaps down (low − previous close).
    const FIXED: [(f64, f64, f64); 8] = [
        (101.0, 99.0, 100.0),
        (103.0, 100.0, 102.0),
        (102.5, 100.5, 101.0),
        (105.5, 103.0, 105.0),
        (106.0, 103.0, 104.0),
        (107.5, 104.0, 107.0),
        (106.5, 105.5, 106.0),
        (110.5, 106.0, 110.0),
    ];

    fn fixed_closes() -> Vec<f64> {
        FIXED.iter().map(|&(_, _, c)| c).collect()
    }

    fn fixed_bars() -> Vec<Bar> {
        FIXED
            .iter()
            .enumerate()
            .map(|(i, &(h, l, c))| bar(i as i64 * MINUTE, h, l, c))
            .collect()
    }

    /// A longer deterministic series with some swing and gaps.
    fn generated_bars(count: usize) -> Vec<Bar> {
        (0..count)
            .map(|i| {
                let t = i as f64;
                let close = 100.0 + 5.0 * (0.7 * t).sin() + 0.1 * t + 0.3 * (2.9 * t).cos();
                let high = close + 0.5 + 0.3 * (1.3 * t).sin().abs();
                let low = close - 0.4 - 0.2 * (0.9 * t).cos().abs();
                bar(1_704_067_200_000 + i as i64 * 15 * MINUTE, high, low, close)
            })
            .collect()
    }

    fn set(names: &[&str]) -> FeatureSet {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        FeatureSet::parse(&names).expect("valid feature set")
    }

    /// The single feature `name` after each bar.
    fn series(name: &str, bars: &[Bar]) -> Vec<Option<f32>> {
        compute_all(&set(&[name]), bars)
            .into_iter()
            .map(|row| row.map(|row| row[0]))
            .collect()
    }

    fn close_to(actual: f32, expected: f64) -> bool {
        (actual as f64 - expected).abs() <= 1e-6 * expected.abs() + 1e-9
    }

    fn assert_series(name: &str, actual: &[Option<f32>], expected: &[Option<f64>]) {
        assert_eq!(actual.len(), expected.len(), "{name}: length");
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            match (a, e) {
                (None, None) => {}
                (Some(a), Some(e)) => {
                    assert!(close_to(*a, *e), "{name} at bar {i}: got {a}, expected {e}")
                }
                _ => panic!("{name} at bar {i}: got {a:?}, expected {e:?}"),
            }
        }
    }

    fn sample_std(xs: &[f64]) -> f64 {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    }

    #[test]
    fn every_feature_name_round_trips_through_parse_and_display() {
        let cases = [
            ("return_1", Feature::Return(1)),
            ("return_1000", Feature::Return(1000)),
            ("log_return_7", Feature::LogReturn(7)),
            ("volatility_2", Feature::Volatility(2)),
            ("volatility_1000", Feature::Volatility(1000)),
            ("rsi_1", Feature::Rsi(1)),
            ("rsi_14", Feature::Rsi(14)),
            ("ema_ratio_12_26", Feature::EmaRatio { fast: 12, slow: 26 }),
            (
                "ema_ratio_1_1000",
                Feature::EmaRatio {
                    fast: 1,
                    slow: 1000,
                },
            ),
            ("atr_14", Feature::Atr(14)),
            ("bar_range", Feature::BarRange),
            ("tod_sin", Feature::TodSin),
            ("tod_cos", Feature::TodCos),
            ("dow_sin", Feature::DowSin),
            ("dow_cos", Feature::DowCos),
        ];
        for (name, feature) in cases {
            assert_eq!(name.parse::<Feature>(), Ok(feature), "{name}");
            assert_eq!(feature.to_string(), name);
        }
    }

    #[test]
    fn bad_names_are_rejected_naming_the_name_and_listing_the_accepted_forms() {
        for name in [
            "rsi_0",
            "ema_ratio_26_12",
            "ema_ratio_12_12",
            "ema_ratio_12",
            "ema_ratio_12_26_1",
            "foo",
            "",
            "return_1001",
            "return_05",
            "return_+5",
            "return_-1",
            "return_1.5",
            "atr_99999999999999999999",
            "volatility_1",
            "rsi_",
            "rsi",
            "RSI_14",
            " rsi_14",
            "rsi_14 ",
            "bar_range_1",
            "tod",
        ] {
            let err = name.parse::<Feature>().expect_err(name);
            let message = err.to_string();
            assert!(message.contains(&format!("`{name}`")), "{message}");
            assert!(message.contains("accepted: return_N"), "{message}");
            assert!(message.contains("ema_ratio_F_S"), "{message}");
        }
        assert!(matches!("foo".parse::<Feature>(), Err(FeatureError::Unknown(n)) if n == "foo"));
        assert!(matches!(
            "ema_ratio_26_12".parse::<Feature>(),
            Err(FeatureError::Invalid { reason, .. }) if reason.contains("shorter")
        ));
    }

    #[test]
    fn feature_sets_keep_the_given_order_and_refuse_empty_lists_duplicates_and_bad_names() {
        let s = set(&["tod_sin", "rsi_14", "return_1"]);
        assert_eq!(s.names(), ["tod_sin", "rsi_14", "return_1"]);
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert_eq!(FeatureSet::parse(&[]), Err(FeatureError::Empty));
        let names = [
            "rsi_14".to_string(),
            "return_1".to_string(),
            "rsi_14".to_string(),
        ];
        assert_eq!(
            FeatureSet::parse(&names),
            Err(FeatureError::Duplicate("rsi_14".to_string()))
        );
        let names = ["rsi_14".to_string(), "foo".to_string()];
        assert_eq!(
            FeatureSet::parse(&names),
            Err(FeatureError::Unknown("foo".to_string()))
        );
    }

    #[test]
    fn returns_and_log_returns_match_a_hand_computation() {
        let bars = fixed_bars();
        assert_series(
            "return_1",
            &series("return_1", &bars),
            &[
                None,
                Some(102.0 / 100.0 - 1.0),
                Some(101.0 / 102.0 - 1.0),
                Some(105.0 / 101.0 - 1.0),
                Some(104.0 / 105.0 - 1.0),
                Some(107.0 / 104.0 - 1.0),
                Some(106.0 / 107.0 - 1.0),
                Some(110.0 / 106.0 - 1.0),
            ],
        );
        assert_series(
            "return_3",
            &series("return_3", &bars),
            &[
                None,
                None,
                None,
                Some(0.05),
                Some(104.0 / 102.0 - 1.0),
                Some(107.0 / 101.0 - 1.0),
                Some(106.0 / 105.0 - 1.0),
                Some(110.0 / 104.0 - 1.0),
            ],
        );
        assert_series(
            "log_return_2",
            &series("log_return_2", &bars),
            &[
                None,
                None,
                Some((101.0_f64 / 100.0).ln()),
                Some((105.0_f64 / 102.0).ln()),
                Some((104.0_f64 / 101.0).ln()),
                Some((107.0_f64 / 105.0).ln()),
                Some((106.0_f64 / 104.0).ln()),
                Some((110.0_f64 / 107.0).ln()),
            ],
        );
    }

    #[test]
    fn volatility_is_the_sample_standard_deviation_of_the_last_n_log_returns() {
        let closes = fixed_closes();
        let r: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        // r[i - 1] is the log return of bar i.
        let mut expected = vec![None; 3];
        expected.extend((3..closes.len()).map(|i| Some(sample_std(&r[i - 3..i]))));
        assert_series(
            "volatility_3",
            &series("volatility_3", &fixed_bars()),
            &expected,
        );

        // A long series slides the window many times across exact recomputations.
        let bars = generated_bars(300);
        let closes: Vec<f64> = bars
            .iter()
            .map(|b| b.close.to_f64().expect("f64"))
            .collect();
        let r: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        for n in [2, 5, 17] {
            let mut expected = vec![None; n];
            expected.extend((n..closes.len()).map(|i| Some(sample_std(&r[i - n..i]))));
            let name = format!("volatility_{n}");
            assert_series(&name, &series(&name, &bars), &expected);
        }
    }

    #[test]
    fn rsi_matches_wilder_smoothing_seeded_with_the_average_of_the_first_n_changes() {
        // Changes: +2, −1, +4, −1, +3, −1, +4. Bar 3: G = (2 + 0 + 4)/3 = 2, L = (0 + 1 + 0)/3 = 1/3.
        // Then G ← (2G + gain)/3, L ← (2L + loss)/3:
        // bar 4: G = 4/3,    L = 5/9;    bar 5: G = 17/9,   L = 10/27;
        // bar 6: G = 34/27,  L = 47/81;  bar 7: G = 176/81, L = 94/243.  RSI = G / (G + L).
        let expected = [
            None,
            None,
            None,
            Some(2.0 / (2.0 + 1.0 / 3.0)),
            Some(12.0 / 17.0),
            Some(51.0 / 61.0),
            Some(102.0 / 149.0),
            Some(264.0 / 311.0),
        ];
        assert_series("rsi_3", &series("rsi_3", &fixed_bars()), &expected);
        // Classic 0..100 RSI at bar 3: 100 − 100/(1 + RS), RS = G/L = 6.
        assert!(close_to(
            series("rsi_3", &fixed_bars())[3].expect("warm"),
            (100.0 - 100.0 / (1.0 + 6.0)) / 100.0
        ));
    }

    #[test]
    fn rsi_is_one_half_on_a_flat_series_one_on_a_rising_series_and_zero_on_a_falling_one() {
        let flat: Vec<Bar> = (0..6)
            .map(|i| bar(i * MINUTE, 100.5, 99.5, 100.0))
            .collect();
        assert_eq!(series("rsi_3", &flat)[5], Some(0.5));
        let rising: Vec<Bar> = (0..6)
            .map(|i| {
                bar(
                    i * MINUTE,
                    101.0 + i as f64,
                    99.0 + i as f64,
                    100.0 + i as f64,
                )
            })
            .collect();
        assert_eq!(series("rsi_3", &rising)[5], Some(1.0));
        let falling: Vec<Bar> = (0..6)
            .map(|i| {
                bar(
                    i * MINUTE,
                    101.0 - i as f64,
                    99.0 - i as f64,
                    100.0 - i as f64,
                )
            })
            .collect();
        assert_eq!(series("rsi_3", &falling)[5], Some(0.0));
    }

    #[test]
    fn ema_ratio_matches_emas_seeded_with_the_simple_average_of_the_first_n_closes() {
        let closes = fixed_closes();
        // The EMA by its definition: SMA of the first n closes, then e ← e + 2/(n+1) · (c − e).
        let ema = |n: usize| -> Vec<Option<f64>> {
            let mut out = vec![None; n - 1];
            let mut e = closes[..n].iter().sum::<f64>() / n as f64;
            out.push(Some(e));
            for &c in &closes[n..] {
                e += 2.0 / (n as f64 + 1.0) * (c - e);
                out.push(Some(e));
            }
            out
        };
        let (fast, slow) = (ema(2), ema(4));
        let expected: Vec<Option<f64>> = fast
            .iter()
            .zip(&slow)
            .map(|(f, s)| Some(f.as_ref()? / s.as_ref()? - 1.0))
            .collect();
        // By hand at bar 3: fast = 101 (bar 1), 101 (bar 2), 101 + 2/3 · 4 = 311/3; slow = 408/4 = 102.
        assert!(
            matches!(expected[3], Some(v) if (v - ((311.0 / 3.0) / 102.0 - 1.0)).abs() < 1e-12)
        );
        assert_series(
            "ema_ratio_2_4",
            &series("ema_ratio_2_4", &fixed_bars()),
            &expected,
        );
    }

    #[test]
    fn atr_matches_wilder_smoothing_of_the_true_range_divided_by_the_close() {
        // True ranges of bars 1..7: 3, 2, 4.5 (105.5 − 101), 3, 3.5, 1.5 (107 − 105.5), 4.5.
        // ATR_3: bar 3 = 9.5/3, then A ← (2A + TR)/3: 28/9, 87.5/27, 215.5/81, 795.5/243.
        let expected = [
            None,
            None,
            None,
            Some(9.5 / 3.0 / 105.0),
            Some(28.0 / 9.0 / 104.0),
            Some(87.5 / 27.0 / 107.0),
            Some(215.5 / 81.0 / 106.0),
            Some(795.5 / 243.0 / 110.0),
        ];
        assert_series("atr_3", &series("atr_3", &fixed_bars()), &expected);
        // atr_1 is the latest true range.
        let expected = [
            None,
            Some(3.0 / 102.0),
            Some(2.0 / 101.0),
            Some(4.5 / 105.0),
            Some(3.0 / 104.0),
            Some(3.5 / 107.0),
            Some(1.5 / 106.0),
            Some(4.5 / 110.0),
        ];
        assert_series("atr_1", &series("atr_1", &fixed_bars()), &expected);
    }

    #[test]
    fn bar_range_is_high_minus_low_over_close() {
        let expected: Vec<Option<f64>> = FIXED.iter().map(|&(h, l, c)| Some((h - l) / c)).collect();
        assert_eq!(expected[0], Some(0.02));
        assert_series("bar_range", &series("bar_range", &fixed_bars()), &expected);
    }

    #[test]
    fn time_of_day_and_day_of_week_encode_known_timestamps() {
        let s = set(&["tod_sin", "tod_cos", "dow_sin", "dow_cos"]);
        let weekday = |d: f64| (TAU * d / 7.0).sin_cos();
        let cases = [
            // 1970-01-01 00:00, a Thursday.
            (0, (0.0, 1.0), weekday(3.0)),
            // 1970-01-01 06:00.
            (6 * HOUR, (1.0, 0.0), weekday(3.0)),
            // 1970-01-01 23:59:59.999: just before midnight, still Thursday.
            (
                24 * HOUR - 1,
                ((-TAU / DAY_MS as f64).sin(), 1.0),
                weekday(3.0),
            ),
            // 1970-01-04 18:00, a Sunday.
            (3 * DAY_MS + 18 * HOUR, (-1.0, 0.0), weekday(6.0)),
            // 1970-01-05 00:00, a Monday.
            (4 * DAY_MS, (0.0, 1.0), (0.0, 1.0)),
            // 1969-12-31 18:00, a Wednesday (negative time).
            (-6 * HOUR, (-1.0, 0.0), weekday(2.0)),
            // 2024-01-01 12:00, a Monday.
            (1_704_067_200_000 + 12 * HOUR, (0.0, -1.0), (0.0, 1.0)),
        ];
        for (t, (tod_sin, tod_cos), (dow_sin, dow_cos)) in cases {
            let mut state = s.state();
            state.on_bar(&bar(t, 101.0, 99.0, 100.0));
            let mut out = [0.0_f32; 4];
            assert!(state.write(&mut out), "{t}");
            for (got, want) in out.iter().zip([tod_sin, tod_cos, dow_sin, dow_cos]) {
                assert!(close_to(*got, want), "{t}: got {out:?}");
            }
        }
    }

    #[test]
    fn warm_up_is_exact_write_refuses_on_bar_warmup_minus_one_and_accepts_on_bar_warmup() {
        let cases: [(&[&str], usize); 16] = [
            (&["return_1"], 2),
            (&["return_5"], 6),
            (&["log_return_3"], 4),
            (&["volatility_2"], 3),
            (&["volatility_4"], 5),
            (&["rsi_1"], 2),
            (&["rsi_14"], 15),
            (&["ema_ratio_1_2"], 2),
            (&["ema_ratio_3_7"], 7),
            (&["atr_1"], 2),
            (&["atr_5"], 6),
            (&["bar_range"], 1),
            (&["tod_sin", "tod_cos"], 1),
            (&["dow_sin", "dow_cos"], 1),
            (&["bar_range", "rsi_14", "ema_ratio_12_26", "return_3"], 26),
            (&["volatility_20", "atr_14", "log_return_1"], 21),
        ];
        let bars = generated_bars(40);
        for (names, warmup) in cases {
            let s = set(names);
            assert_eq!(s.warmup(), warmup, "{names:?}");
            let mut state = s.state();
            let mut out = vec![0.0_f32; s.len()];
            assert!(!state.write(&mut out), "{names:?} before any bar");
            for (i, bar) in bars.iter().enumerate() {
                state.on_bar(bar);
                let seen = i + 1;
                assert_eq!(
                    state.write(&mut out),
                    seen >= warmup,
                    "{names:?} after {seen} bars"
                );
                assert_eq!(state.is_warm(), seen >= warmup);
            }
        }
    }

    #[test]
    fn compute_all_equals_stepping_a_feature_state() {
        let s = set(&[
            "return_1",
            "return_10",
            "log_return_4",
            "volatility_6",
            "rsi_14",
            "ema_ratio_5_20",
            "atr_14",
            "bar_range",
            "tod_sin",
            "tod_cos",
            "dow_sin",
            "dow_cos",
        ]);
        let bars = generated_bars(200);
        let batch = compute_all(&s, &bars);
        assert_eq!(batch.len(), bars.len());
        let mut state = s.state();
        let mut out = vec![0.0_f32; s.len()];
        for (i, (bar, row)) in bars.iter().zip(&batch).enumerate() {
            state.on_bar(bar);
            let stepped = state.write(&mut out).then(|| out.clone());
            assert_eq!(&stepped, row, "bar {i}");
            assert_eq!(row.is_some(), i + 1 >= s.warmup(), "bar {i}");
        }
    }

    #[test]
    fn write_refuses_non_finite_values_and_a_wrong_length() {
        // A zero close: return_1 is −1 on that bar, infinite on the next, finite again after.
        let bars = [
            bar(0, 101.0, 99.0, 100.0),
            bar(MINUTE, 101.0, 0.0, 0.0),
            bar(2 * MINUTE, 101.0, 99.0, 100.0),
            bar(3 * MINUTE, 102.0, 100.0, 101.0),
        ];
        assert_series(
            "return_1",
            &series("return_1", &bars),
            &[None, Some(-1.0), None, Some(0.01)],
        );
        let s = set(&["return_1", "bar_range"]);
        let mut state = s.state();
        for bar in &bars {
            state.on_bar(bar);
        }
        assert!(state.write(&mut [0.0; 2]));
        assert!(!state.write(&mut [0.0; 1]));
        assert!(!state.write(&mut [0.0; 3]));
    }

    #[test]
    fn a_bad_price_spoils_volatility_only_while_it_is_inside_the_window() {
        let closes = [100.0, 0.0, 100.0, 101.0, 102.5, 101.5];
        let bars: Vec<Bar> = closes
            .iter()
            .enumerate()
            .map(|(i, &c)| bar(i as i64 * MINUTE, c + 1.0, c, c))
            .collect();
        let r = |a: f64, b: f64| (b / a).ln();
        assert_series(
            "volatility_2",
            &series("volatility_2", &bars),
            &[
                None,
                None,
                None,
                None,
                Some(sample_std(&[r(101.0, 102.5), r(100.0, 101.0)])),
                Some(sample_std(&[r(102.5, 101.5), r(101.0, 102.5)])),
            ],
        );
    }
}
