//! Drift statistics: is a live model still seeing the inputs it was trained on?
//!
//! Each model input feature (and the model's output) is summarised at training time as a [`Reference`]: a
//! histogram of the training values with quantile edges. While the model serves, a [`DriftMonitor`] keeps a
//! bounded rolling window of the live values and compares it with the reference using two statistics:
//!
//! - the **population stability index** ([`psi`]), `PSI = Σᵢ (qᵢ − pᵢ)·ln(qᵢ / pᵢ)` over the reference
//!   bins, `pᵢ` the reference proportion and `qᵢ` the window's;
//! - the **Kolmogorov–Smirnov** distance ([`ks_against_reference`], [`ks_two_sample`]) between the
//!   window's empirical CDF and the reference CDF, with its asymptotic p-value.
//!
//! # Why not the classic PSI rule
//!
//! The usual rule of thumb, "PSI < 0.1 stable, > 0.25 drifted", ignores sampling noise. Even with no
//! drift at all, a window of `n` values drawn from the training distribution has a PSI that is, for large
//! `n` and `m` (the reference size), distributed as
//!
//! ```text
//! PSI ≈ (1/n + 1/m) · χ²(k − 1)          (k bins)
//! ```
//!
//! because `PSI ≈ Σ (qᵢ − pᵢ)² / pᵢ` to second order, and the two independent multinomial samples give
//! `qᵢ − pᵢ` the covariance `(1/n + 1/m)(diag π − π πᵀ)`: the Pearson χ² form. With 20 bins the mean of
//! `χ²(19)` is 19, so a window of 100 values has an *expected* PSI of about 0.19 and exceeds 0.25 in about
//! one window in nine (measured in the tests): the fixed rule false-alarms constantly on small windows.
//! [`psi_threshold`] therefore declares drift only above the `1 − α` quantile of that null distribution,
//!
//! ```text
//! threshold = max(0.1, (1/n + 1/m) · χ²₁₋α(k − 1))
//! ```
//!
//! For k = 20, m = 10 000 and α = 0.01 (χ²₀.₉₉(19) ≈ 36.19): n = 50 → 0.73, n = 100 → 0.37,
//! n = 200 → 0.18, n ≥ 400 → the 0.1 floor. The floor keeps large windows, where any trivial shift is
//! statistically significant, from alarming on shifts too small to matter to the model.
//!
//! The χ² quantile is computed here ([`chi_square_quantile`]): exactly for 1 and 2 degrees of freedom
//! (`z²₍₁₊ₚ₎/₂` and `−2 ln(1 − p)`), otherwise with the Wilson–Hilferty approximation
//! `χ²ₚ(ν) ≈ ν (1 − 2/(9ν) + zₚ √(2/(9ν)))³`, `zₚ` the standard normal quantile from Acklam's rational
//! approximation ([`normal_quantile`], relative error below 1.2·10⁻⁹). Wilson–Hilferty is within about 1 %
//! for ν ≥ 3 at the tail probabilities used for alarms.
//!
//! # Empty bins
//!
//! PSI is infinite when a bin is empty on one side. Both histograms get a pseudo-count of
//! [`PSI_PSEUDO_COUNT`] (0.5, the Jeffreys prior) per bin: `pᵢ = (cᵢ + 0.5) / (m + 0.5k)` and
//! `qᵢ = (wᵢ + 0.5) / (n + 0.5k)`. It shrinks PSI slightly towards 0, which only makes the threshold above
//! a little conservative.
//!
//! # The KS test and the decision
//!
//! The two-sample KS p-value uses the asymptotic Kolmogorov distribution with the Numerical Recipes
//! small-sample correction, `p = Q_KS((√nₑ + 0.12 + 0.11/√nₑ) · D)`, `nₑ = n·m/(n + m)`. Against a
//! reference histogram, the reference CDF is piecewise linear inside each bounded bin; the open-ended
//! first and last bins, whose shape is unknown, are point masses at their finite edge, and window values
//! beyond the outer edges are clamped onto them, so both sides are compared on the same footing.
//!
//! [`DriftMonitor::check`] declares drift only when **both** statistics agree: PSI above its threshold
//! **and** KS p-value below α. Each test alone has a false-alarm rate of about α; requiring both can only
//! lower it (they are positively correlated under no drift, so the joint rate is between α² and α), while
//! any real shift large enough to matter moves both. The PSI side also carries the 0.1 materiality floor;
//! the KS side catches location and scale shifts that a coarse histogram would under-weight.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The largest number of bins a [`Reference`] may have.
pub const MAX_BINS: usize = 100;

/// Pseudo-count added to every bin, on both sides, when computing [`psi`].
pub const PSI_PSEUDO_COUNT: f64 = 0.5;

/// The classic "PSI below 0.1 is stable" level: [`psi_threshold`] never goes below it.
pub const PSI_FLOOR: f64 = 0.1;

/// The smallest window [`DriftMonitor::check`] evaluates (or the capacity, if smaller).
pub const MIN_CHECK_WINDOW: usize = 30;

/// Errors building or validating drift monitoring.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    #[error("reference has no bin edges: at least one edge (two bins) is needed")]
    NoEdges,
    #[error("reference edge {index} is not finite ({value})")]
    NonFiniteEdge { index: usize, value: f64 },
    #[error(
        "reference edges are not strictly increasing at index {index} ({previous} then {value})"
    )]
    UnsortedEdges {
        index: usize,
        previous: f64,
        value: f64,
    },
    #[error("reference has {counts} counts for {edges} edges; expected edges + 1 = {expected}", expected = .edges + 1)]
    CountsLength { edges: usize, counts: usize },
    #[error("reference has {bins} bins; at most {max} are allowed")]
    TooManyBins { bins: usize, max: usize },
    #[error("reference histogram is empty (total count 0)")]
    EmptyReference,
    #[error("reference counts overflow a u64 total")]
    CountOverflow,
    #[error("bin count must be between 2 and {max}, got {bins}")]
    BadBinCount { bins: usize, max: usize },
    #[error("training sample has no finite values")]
    NoFiniteValues,
    #[error("drift window capacity must be at least 1")]
    ZeroCapacity,
    #[error("alpha (false-alarm rate) must be in (0, 1), got {0}")]
    BadAlpha(f64),
}

/// A histogram of a feature's training values: the training reference for drift checks.
///
/// `edges` are strictly increasing and finite; `counts[0]` counts values in `(-∞, edges[0])`,
/// `counts[i]` values in `[edges[i-1], edges[i])`, and the last count values in `[edges.last, +∞)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reference {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

impl Reference {
    /// Builds a reference from training values with `bins` quantile bins (2 to [`MAX_BINS`]).
    ///
    /// Edge `i` is the `i/bins` sample quantile; equal edges (heavy ties) are merged, so the result may
    /// have fewer bins than asked. Non-finite values are ignored.
    pub fn from_sample(values: &[f64], bins: usize) -> Result<Reference, DriftError> {
        if !(2..=MAX_BINS).contains(&bins) {
            return Err(DriftError::BadBinCount {
                bins,
                max: MAX_BINS,
            });
        }
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Err(DriftError::NoFiniteValues);
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mut edges: Vec<f64> = Vec::with_capacity(bins - 1);
        for i in 1..bins {
            let index = (i * n / bins).min(n - 1);
            let edge = sorted[index];
            // `-0.0` and `0.0` are equal: keep one edge for both.
            if edges.last().is_none_or(|last| edge > *last) {
                edges.push(edge);
            }
        }
        let mut counts = vec![0u64; edges.len() + 1];
        for value in &sorted {
            counts[bin_index(&edges, *value)] += 1;
        }
        let reference = Reference { edges, counts };
        reference.validate()?;
        Ok(reference)
    }

    /// Checks the invariants: at least one edge, edges finite and strictly increasing,
    /// `counts.len() == edges.len() + 1`, at most [`MAX_BINS`] bins, total count positive and within u64.
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.edges.is_empty() {
            return Err(DriftError::NoEdges);
        }
        for (index, value) in self.edges.iter().copied().enumerate() {
            if !value.is_finite() {
                return Err(DriftError::NonFiniteEdge { index, value });
            }
        }
        for (index, pair) in self.edges.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                return Err(DriftError::UnsortedEdges {
                    index: index + 1,
                    previous: pair[0],
                    value: pair[1],
                });
            }
        }
        if self.counts.len() != self.edges.len() + 1 {
            return Err(DriftError::CountsLength {
                edges: self.edges.len(),
                counts: self.counts.len(),
            });
        }
        if self.counts.len() > MAX_BINS {
            return Err(DriftError::TooManyBins {
                bins: self.counts.len(),
                max: MAX_BINS,
            });
        }
        let total = self
            .counts
            .iter()
            .try_fold(0u64, |sum, c| sum.checked_add(*c))
            .ok_or(DriftError::CountOverflow)?;
        if total == 0 {
            return Err(DriftError::EmptyReference);
        }
        Ok(())
    }

    /// The number of training values counted (saturating at `u64::MAX`).
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(*c))
    }

    /// The number of bins, `edges.len() + 1` for a valid reference.
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// The reference CDF at `x` (`left`: its left limit `F(x−)`), for `x` within `[edges[0], edges.last]`;
    /// see the module docs for the shape. `prefix[i]` is the count of bins `0..i`. Needs a valid reference.
    fn cdf(&self, prefix: &[u64], total: f64, x: f64, left: bool) -> f64 {
        let last = self.edges.len();
        // Number of edges ≤ x: at least 1 since x ≥ edges[0].
        let b = self.edges.partition_point(|e| *e <= x);
        if b == 0 || (left && x == self.edges[0]) {
            // Below the first edge, or the left limit at it (before its point mass).
            return 0.0;
        }
        if b == last {
            // x is the last edge: its point mass is included unless we want the left limit.
            return if left {
                prefix[last] as f64 / total
            } else {
                1.0
            };
        }
        let (lo, hi) = (self.edges[b - 1], self.edges[b]);
        let within = self.counts[b] as f64 * ((x - lo) / (hi - lo));
        (prefix[b] as f64 + within) / total
    }
}

/// The bin of `x` among `edges`: the number of edges at or below it.
fn bin_index(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e <= x)
}

/// Population stability index between the reference proportions and the window's, over the reference
/// bins, with a pseudo-count of [`PSI_PSEUDO_COUNT`] per bin on both sides (so empty bins stay finite).
///
/// Non-finite window values are ignored. An empty window gives 0 (no evidence of drift); an invalid
/// reference gives NaN (never above a threshold).
pub fn psi(reference: &Reference, window: &[f64]) -> f64 {
    if reference.validate().is_err() {
        return f64::NAN;
    }
    let k = reference.bins();
    let mut observed = vec![0u64; k];
    let mut n = 0u64;
    for value in window.iter().copied().filter(|v| v.is_finite()) {
        observed[bin_index(&reference.edges, value)] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let pseudo_total = PSI_PSEUDO_COUNT * k as f64;
    let m_total = reference.total() as f64 + pseudo_total;
    let n_total = n as f64 + pseudo_total;
    reference
        .counts
        .iter()
        .zip(&observed)
        .map(|(c, w)| {
            let p = (*c as f64 + PSI_PSEUDO_COUNT) / m_total;
            let q = (*w as f64 + PSI_PSEUDO_COUNT) / n_total;
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// The PSI level above which drift is declared at false-alarm rate `alpha`, for `bins` bins, a reference of
/// `n_reference` values and a window of `n_window`:
/// `max(0.1, (1/n_window + 1/n_reference) · χ²₁₋α(bins − 1))` (see the module docs).
///
/// An empty window or reference, or `alpha` ≤ 0 or NaN, gives +∞ (never alarm); `alpha` ≥ 1 gives the
/// 0.1 floor.
pub fn psi_threshold(bins: usize, n_reference: u64, n_window: usize, alpha: f64) -> f64 {
    if n_window == 0 || n_reference == 0 || alpha.is_nan() || alpha <= 0.0 {
        return f64::INFINITY;
    }
    let scale = 1.0 / n_window as f64 + 1.0 / n_reference as f64;
    let quantile = chi_square_quantile(bins.saturating_sub(1), 1.0 - alpha);
    let statistical = scale * quantile;
    if statistical.is_nan() {
        return f64::INFINITY;
    }
    statistical.max(PSI_FLOOR)
}

/// The `p` quantile of the χ² distribution with `dof` degrees of freedom: exact for 1 and 2, the
/// Wilson–Hilferty approximation `dof·(1 − 2/(9·dof) + z·√(2/(9·dof)))³` otherwise (z the standard normal
/// `p` quantile). `dof` 0 gives 0; `p` ≤ 0 gives 0, `p` ≥ 1 gives +∞, NaN gives NaN.
pub fn chi_square_quantile(dof: usize, p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if dof == 0 || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    match dof {
        1 => {
            let z = normal_quantile(0.5 + p / 2.0);
            z * z
        }
        2 => -2.0 * (-p).ln_1p(),
        _ => {
            let nu = dof as f64;
            let c = 2.0 / (9.0 * nu);
            let z = normal_quantile(p);
            let base = (1.0 - c + z * c.sqrt()).max(0.0);
            nu * base * base * base
        }
    }
}

/// The standard normal quantile (inverse CDF) by Acklam's rational approximation (relative error below
/// 1.15·10⁻⁹). `p` ≤ 0 gives −∞, `p` ≥ 1 gives +∞, NaN gives NaN.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;

    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (-p).ln_1p()).sqrt())
    }
}

/// A Kolmogorov–Smirnov statistic and its asymptotic p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KsResult {
    /// The largest absolute difference between the two CDFs, in [0, 1].
    pub statistic: f64,
    /// The probability of a statistic at least this large if both samples share one distribution.
    pub p_value: f64,
}

impl KsResult {
    /// No data on one side: no evidence of a difference.
    const NO_EVIDENCE: KsResult = KsResult {
        statistic: 0.0,
        p_value: 1.0,
    };
}

/// The Kolmogorov survival function `Q_KS(λ) = 2 Σⱼ₌₁^∞ (−1)^(j−1) e^(−2j²λ²)` (Numerical Recipes,
/// 3rd ed., §6.14: the alternating series above λ = 1.18, the Jacobi-transformed one below it).
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda.is_nan() {
        return f64::NAN;
    }
    if lambda <= 0.0 {
        return 1.0;
    }
    let q = if lambda < 1.18 {
        let y = (-std::f64::consts::PI * std::f64::consts::PI / (8.0 * lambda * lambda)).exp();
        let y8 = y.powi(8);
        let series = y * (1.0 + y8 * (1.0 + y8 * y8 * (1.0 + y8 * y8 * y8)));
        // y + y⁹ + y²⁵ + y⁴⁹
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * series
    } else {
        let x = (-2.0 * lambda * lambda).exp();
        2.0 * (x - x.powi(4) + x.powi(9))
    };
    q.clamp(0.0, 1.0)
}

/// The p-value of a KS distance `d` with effective sample size `ne`, with the Numerical Recipes correction.
fn ks_p_value(d: f64, ne: f64) -> f64 {
    let root = ne.sqrt();
    kolmogorov_q((root + 0.12 + 0.11 / root) * d)
}

fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// Two-sample Kolmogorov–Smirnov test. Ties are handled by stepping both samples past all values equal to
/// the current one before comparing the CDFs. Non-finite values are ignored; an empty sample gives
/// statistic 0 and p-value 1.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> KsResult {
    let a = sorted_finite(a);
    let b = sorted_finite(b);
    if a.is_empty() || b.is_empty() {
        return KsResult::NO_EVIDENCE;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut d = 0.0f64;
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    // Once one sample is exhausted its CDF is 1 and the other's only climbs towards 1: no larger gap.
    KsResult {
        statistic: d,
        p_value: ks_p_value(d, n * m / (n + m)),
    }
}

/// KS test of a window against a reference histogram's CDF (piecewise linear within bounded bins, the
/// open-ended first and last bins as point masses at their edge, window values clamped to the outer
/// edges), effective n = n·m/(n + m) with m the reference total.
///
/// Non-finite window values are ignored; an empty window gives statistic 0 and p-value 1; an invalid
/// reference gives NaN for both.
pub fn ks_against_reference(reference: &Reference, window: &[f64]) -> KsResult {
    if reference.validate().is_err() {
        return KsResult {
            statistic: f64::NAN,
            p_value: f64::NAN,
        };
    }
    let (first, last) = match (reference.edges.first(), reference.edges.last()) {
        (Some(first), Some(last)) => (*first, *last),
        _ => return KsResult::NO_EVIDENCE,
    };
    let mut sorted: Vec<f64> = window
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(first, last))
        .collect();
    if sorted.is_empty() {
        return KsResult::NO_EVIDENCE;
    }
    sorted.sort_by(f64::total_cmp);

    let mut prefix = Vec::with_capacity(reference.counts.len() + 1);
    let mut running = 0u64;
    prefix.push(running);
    for c in &reference.counts {
        running = running.saturating_add(*c);
        prefix.push(running);
    }
    let total = running as f64;
    let n = sorted.len() as f64;

    let mut d = 0.0f64;
    let mut i = 0usize;
    while i < sorted.len() {
        let value = sorted[i];
        let below = i;
        while i < sorted.len() && sorted[i] == value {
            i += 1;
        }
        // Between distinct window values the window CDF is flat and the reference CDF rises, so the
        // largest gaps are at the window values themselves, from the left and at the value.
        let left = (below as f64 / n - reference.cdf(&prefix, total, value, true)).abs();
        let at = (i as f64 / n - reference.cdf(&prefix, total, value, false)).abs();
        d = d.max(left).max(at);
    }
    KsResult {
        statistic: d,
        p_value: ks_p_value(d, n * total / (n + total)),
    }
}

/// The outcome of one drift check of a window.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DriftCheck {
    pub psi: f64,
    pub psi_threshold: f64,
    pub ks_statistic: f64,
    pub ks_p_value: f64,
    /// The number of values in the window checked.
    pub window: usize,
    /// `psi > psi_threshold && ks_p_value < alpha`.
    pub drifted: bool,
}

/// Drift monitor of one feature (or model output): a training reference and a bounded rolling window of
/// live values.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    reference: Reference,
    window: VecDeque<f64>,
    capacity: usize,
    alpha: f64,
    ignored: u64,
}

impl DriftMonitor {
    /// A monitor keeping the last `capacity` values and alarming at false-alarm rate `alpha` (in (0, 1)).
    pub fn new(reference: Reference, capacity: usize, alpha: f64) -> Result<Self, DriftError> {
        reference.validate()?;
        if capacity == 0 {
            return Err(DriftError::ZeroCapacity);
        }
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(DriftError::BadAlpha(alpha));
        }
        Ok(DriftMonitor {
            reference,
            window: VecDeque::with_capacity(capacity),
            capacity,
            alpha,
            ignored: 0,
        })
    }

    /// Adds a live value, dropping the oldest once the window is full. Non-finite values are ignored and
    /// counted ([`DriftMonitor::ignored`]).
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            self.ignored = self.ignored.saturating_add(1);
            return;
        }
        if self.window.len() >= self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(value);
    }

    /// Checks the current window against the reference; `None` until it holds at least
    /// `min(capacity, 30)` values. Drift needs both PSI above [`psi_threshold`] and KS p-value below α.
    pub fn check(&self) -> Option<DriftCheck> {
        if self.window.len() < self.capacity.min(MIN_CHECK_WINDOW) {
            return None;
        }
        let values: Vec<f64> = self.window.iter().copied().collect();
        let psi = psi(&self.reference, &values);
        let threshold = psi_threshold(
            self.reference.bins(),
            self.reference.total(),
            values.len(),
            self.alpha,
        );
        let ks = ks_against_reference(&self.reference, &values);
        Some(DriftCheck {
            psi,
            psi_threshold: threshold,
            ks_statistic: ks.statistic,
            ks_p_value: ks.p_value,
            window: values.len(),
            drifted: psi > threshold && ks.p_value < self.alpha,
        })
    }

    /// The number of values in the window.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the window holds no values.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The number of non-finite values pushed and ignored.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// The window capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The false-alarm rate.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The training reference.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Empties the window (after a retrain or a reference change), keeping the ignored count.
    pub fn clear(&mut self) {
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 with Box–Muller normals: deterministic, no crates.
    struct Rng {
        state: u64,
        spare: Option<f64>,
    }

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng {
                state: seed,
                spare: None,
            }
        }

        fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1), never 0.
        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self, mean: f64, sd: f64) -> f64 {
            let z = match self.spare.take() {
                Some(z) => z,
                None => {
                    let radius = (-2.0 * self.uniform().ln()).sqrt();
                    let angle = 2.0 * std::f64::consts::PI * self.uniform();
                    self.spare = Some(radius * angle.sin());
                    radius * angle.cos()
                }
            };
            mean + sd * z
        }

        fn normals(&mut self, count: usize, mean: f64, sd: f64) -> Vec<f64> {
            (0..count).map(|_| self.normal(mean, sd)).collect()
        }
    }

    fn standard_reference(seed: u64) -> Reference {
        let mut rng = Rng::new(seed);
        let training = rng.normals(10_000, 0.0, 1.0);
        Reference::from_sample(&training, 20).expect("reference")
    }

    /// Fractions of windows flagged: by the monitor, by each of its two tests alone, and by the fixed
    /// "PSI > 0.25" rule.
    #[derive(Debug)]
    struct Rates {
        drifted: f64,
        psi_alone: f64,
        ks_alone: f64,
        fixed_rule: f64,
    }

    /// Flag rates over `windows` non-overlapping windows of `size` values from N(mean, sd), checked by a
    /// monitor with α = 0.01.
    fn drift_rates(
        reference: &Reference,
        seed: u64,
        windows: usize,
        size: usize,
        mean: f64,
        sd: f64,
    ) -> Rates {
        let mut rng = Rng::new(seed);
        let mut monitor = DriftMonitor::new(reference.clone(), size, 0.01).expect("monitor");
        let mut counts = [0usize; 4];
        for _ in 0..windows {
            for _ in 0..size {
                monitor.push(rng.normal(mean, sd));
            }
            let check = monitor.check().expect("full window is checked");
            assert_eq!(check.window, size);
            let flags = [
                check.drifted,
                check.psi > check.psi_threshold,
                check.ks_p_value < 0.01,
                check.psi > 0.25,
            ];
            for (count, flag) in counts.iter_mut().zip(flags) {
                *count += usize::from(flag);
            }
        }
        let rate = |count: usize| count as f64 / windows as f64;
        Rates {
            drifted: rate(counts[0]),
            psi_alone: rate(counts[1]),
            ks_alone: rate(counts[2]),
            fixed_rule: rate(counts[3]),
        }
    }

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        ((actual - expected) / expected).abs() <= relative
    }

    #[test]
    fn from_sample_builds_quantile_bins_holding_every_finite_value() {
        let reference = standard_reference(1);
        assert_eq!(reference.bins(), 20);
        assert_eq!(reference.total(), 10_000);
        assert!(reference.validate().is_ok());
        for count in &reference.counts {
            assert!((450..=550).contains(count), "count {count}");
        }
        let with_nan = Reference::from_sample(&[1.0, f64::NAN, 2.0, f64::INFINITY, 3.0, 4.0], 2)
            .expect("reference");
        assert_eq!(with_nan.total(), 4);
    }

    #[test]
    fn from_sample_merges_equal_edges_of_tied_values() {
        let values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0];
        let reference = Reference::from_sample(&values, 4).expect("reference");
        assert_eq!(reference.edges, vec![0.0, 1.0]);
        assert_eq!(reference.counts, vec![0, 6, 2]);
        let constant = Reference::from_sample(&[5.0; 10], 10).expect("reference");
        assert_eq!(constant.edges, vec![5.0]);
        assert_eq!(constant.counts, vec![0, 10]);
    }

    #[test]
    fn from_sample_rejects_bad_bin_counts_and_samples_without_finite_values() {
        assert!(matches!(
            Reference::from_sample(&[1.0, 2.0], 1),
            Err(DriftError::BadBinCount { bins: 1, .. })
        ));
        assert!(matches!(
            Reference::from_sample(&[1.0, 2.0], 101),
            Err(DriftError::BadBinCount { bins: 101, .. })
        ));
        assert_eq!(
            Reference::from_sample(&[f64::NAN, f64::INFINITY], 10),
            Err(DriftError::NoFiniteValues)
        );
    }

    #[test]
    fn validation_rejects_unsorted_edges_and_wrong_counts_length() {
        let unsorted = Reference {
            edges: vec![0.0, 2.0, 1.0],
            counts: vec![1, 1, 1, 1],
        };
        assert!(matches!(
            unsorted.validate(),
            Err(DriftError::UnsortedEdges { index: 2, .. })
        ));
        let duplicate = Reference {
            edges: vec![0.0, 0.0],
            counts: vec![1, 1, 1],
        };
        assert!(matches!(
            duplicate.validate(),
            Err(DriftError::UnsortedEdges { index: 1, .. })
        ));
        let wrong_counts = Reference {
            edges: vec![0.0, 1.0],
            counts: vec![1, 1],
        };
        let error = wrong_counts.validate().expect_err("wrong counts length");
        assert_eq!(
            error,
            DriftError::CountsLength {
                edges: 2,
                counts: 2
            }
        );
        assert!(error.to_string().contains("expected edges + 1 = 3"));
    }

    #[test]
    fn validation_rejects_empty_non_finite_oversized_and_overflowing_references() {
        let check = |edges: Vec<f64>, counts: Vec<u64>| Reference { edges, counts }.validate();
        assert_eq!(check(vec![], vec![3]), Err(DriftError::NoEdges));
        assert!(matches!(
            check(vec![0.0, f64::NAN], vec![1, 1, 1]),
            Err(DriftError::NonFiniteEdge { index: 1, .. })
        ));
        assert_eq!(
            check(vec![0.0], vec![0, 0]),
            Err(DriftError::EmptyReference)
        );
        let edges: Vec<f64> = (0..100).map(f64::from).collect();
        assert!(matches!(
            check(edges, vec![1; 101]),
            Err(DriftError::TooManyBins { bins: 101, .. })
        ));
        assert_eq!(
            check(vec![0.0], vec![u64::MAX, 1]),
            Err(DriftError::CountOverflow)
        );
    }

    #[test]
    fn reference_round_trips_through_json() {
        let reference = Reference {
            edges: vec![-1.0, 0.5],
            counts: vec![3, 4, 5],
        };
        let json = serde_json::to_string(&reference).expect("serialize");
        let back: Reference = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, reference);
    }

    #[test]
    fn psi_of_a_window_from_the_reference_distribution_is_small_and_below_the_threshold() {
        let reference = standard_reference(2);
        let mut rng = Rng::new(3);
        let window = rng.normals(1_000, 0.0, 1.0);
        let value = psi(&reference, &window);
        let threshold = psi_threshold(20, reference.total(), window.len(), 0.01);
        assert!(value < 0.05, "psi {value}");
        assert!(value < threshold, "psi {value} threshold {threshold}");
    }

    #[test]
    fn psi_is_zero_for_identical_proportions_and_finite_with_empty_bins() {
        let reference = Reference {
            edges: vec![0.0, 1.0],
            counts: vec![10, 10, 10],
        };
        assert!(psi(&reference, &[-1.0, 0.5, 2.0]).abs() < 1e-12);
        let one_sided = psi(&reference, &[5.0; 50]);
        assert!(one_sided.is_finite() && one_sided > 1.0, "psi {one_sided}");
        assert_eq!(psi(&reference, &[]), 0.0);
        assert_eq!(psi(&reference, &[f64::NAN]), 0.0);
        let invalid = Reference {
            edges: vec![1.0, 0.0],
            counts: vec![1, 1, 1],
        };
        assert!(psi(&invalid, &[0.5]).is_nan());
    }

    #[test]
    fn chi_square_quantile_matches_table_values() {
        let table = [
            (1, 0.95, 3.841),
            (1, 0.99, 6.635),
            (2, 0.95, 5.991),
            (3, 0.95, 7.815),
            (5, 0.99, 15.086),
            (9, 0.99, 21.666),
            (9, 0.95, 16.919),
            (19, 0.99, 36.191),
            (19, 0.95, 30.144),
            (99, 0.999, 148.230),
        ];
        for (dof, p, expected) in table {
            let actual = chi_square_quantile(dof, p);
            assert!(
                close(actual, expected, 0.015),
                "χ²({dof}, {p}) = {actual}, table {expected}"
            );
        }
        assert_eq!(chi_square_quantile(0, 0.99), 0.0);
        assert_eq!(chi_square_quantile(5, 0.0), 0.0);
        assert_eq!(chi_square_quantile(5, 1.0), f64::INFINITY);
    }

    #[test]
    fn normal_quantile_matches_table_values() {
        assert!(normal_quantile(0.5).abs() < 1e-12);
        assert!(close(normal_quantile(0.975), 1.959_964, 1e-6));
        assert!(close(normal_quantile(0.01), -2.326_348, 1e-6));
        assert!(close(normal_quantile(1e-6), -4.753_424, 1e-6));
        assert!(close(normal_quantile(0.999_999), 4.753_424, 1e-5));
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }

    #[test]
    fn psi_threshold_shrinks_with_the_window_and_never_goes_below_the_classic_floor() {
        let small = psi_threshold(20, 10_000, 50, 0.01);
        let medium = psi_threshold(20, 10_000, 100, 0.01);
        let large = psi_threshold(20, 10_000, 10_000, 0.01);
        // (1/100 + 1/10 000) · χ²₀.₉₉(19) = 0.0101 · 36.19
        assert!(close(medium, 0.0101 * 36.191, 0.01), "threshold {medium}");
        assert!(small > medium && medium > PSI_FLOOR);
        assert_eq!(large, PSI_FLOOR);
        assert!(psi_threshold(20, 10_000, 100, 0.05) < medium);
        assert_eq!(psi_threshold(20, 10_000, 0, 0.01), f64::INFINITY);
        assert_eq!(psi_threshold(20, 0, 100, 0.01), f64::INFINITY);
        assert_eq!(psi_threshold(20, 10_000, 100, f64::NAN), f64::INFINITY);
        assert_eq!(psi_threshold(20, 10_000, 100, 0.0), f64::INFINITY);
    }

    #[test]
    fn ks_statistic_matches_hand_worked_samples_including_ties() {
        let separated = ks_two_sample(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(separated.statistic, 1.0);
        // a: 1,1,2,3  b: 1,2,2,4 → at 1: 2/4 vs 1/4; at 2: 3/4 vs 3/4; at 3: 1 vs 3/4; at 4: 1 vs 1.
        let tied = ks_two_sample(&[3.0, 1.0, 2.0, 1.0], &[1.0, 2.0, 4.0, 2.0]);
        assert_eq!(tied.statistic, 0.25);
        // Stepping one sample at a time through the tie at 0 would see 3/4 vs 0; correctly it is 3/4 vs 1/4.
        let heavy_ties = ks_two_sample(&[0.0, 0.0, 0.0, 1.0], &[0.0, 1.0, 1.0, 1.0]);
        assert_eq!(heavy_ties.statistic, 0.5);
        // Unequal sizes: a: 1,2,3  b: 2.5,4 → at 1: 1/3; at 2: 2/3 vs 0; at 2.5: 2/3 vs 1/2; at 3: 1 vs 1/2.
        let unequal = ks_two_sample(&[1.0, 2.0, 3.0], &[2.5, 4.0]);
        assert!((unequal.statistic - 2.0 / 3.0).abs() < 1e-12);
        let ignored = ks_two_sample(&[f64::NAN], &[1.0]);
        assert_eq!(ignored, KsResult::NO_EVIDENCE);
    }

    #[test]
    fn ks_p_value_is_near_one_for_identical_samples_and_small_for_different_ones() {
        let mut rng = Rng::new(4);
        let a = rng.normals(500, 0.0, 1.0);
        let same = ks_two_sample(&a, &a);
        assert_eq!(same.statistic, 0.0);
        assert_eq!(same.p_value, 1.0);
        let b = rng.normals(500, 0.0, 1.0);
        let null = ks_two_sample(&a, &b);
        assert!(null.p_value > 0.01, "p {}", null.p_value);
        let shifted = rng.normals(500, 1.0, 1.0);
        let different = ks_two_sample(&a, &shifted);
        assert!(different.p_value < 1e-6, "p {}", different.p_value);
        // Kolmogorov distribution: Q(1.358) ≈ 0.05, Q(1.628) ≈ 0.01, both branches continuous at 1.18.
        assert!(close(kolmogorov_q(1.358), 0.05, 0.01));
        assert!(close(kolmogorov_q(1.628), 0.01, 0.01));
        assert!((kolmogorov_q(1.18 - 1e-9) - kolmogorov_q(1.18)).abs() < 1e-6);
        assert!(close(kolmogorov_q(0.5), 0.963_945, 1e-4));
    }

    #[test]
    fn ks_against_reference_uses_the_histogram_cdf_with_point_masses_at_the_outer_edges() {
        // 10% below 0, 80% spread evenly over [0, 1), 10% at or above 1.
        let reference = Reference {
            edges: vec![0.0, 1.0],
            counts: vec![10, 80, 10],
        };
        // A window at the edges: 1/2 at 0 (clamped) vs 0.1, so D = 0.4 at x = 0.
        let at_edges = ks_against_reference(&reference, &[-5.0, -1.0, 1.0, 7.0]);
        assert!((at_edges.statistic - 0.4).abs() < 1e-12, "{at_edges:?}");
        // Uniform-ish window matching the reference: 1 below, 8 inside at bin midpoints, 1 above.
        let mut matching = vec![-3.0, 4.0];
        matching.extend((0..8).map(|i| (f64::from(i) + 0.5) / 8.0));
        let close_fit = ks_against_reference(&reference, &matching);
        assert!(close_fit.statistic <= 0.05 + 1e-12, "{close_fit:?}");
        assert!(close_fit.p_value > 0.9);
        assert_eq!(ks_against_reference(&reference, &[]), KsResult::NO_EVIDENCE);
        // One edge: both open bins are point masses at it, as is every clamped window value.
        let single = Reference {
            edges: vec![0.0],
            counts: vec![3, 7],
        };
        assert_eq!(ks_against_reference(&single, &[-1.0, 2.0]).statistic, 0.0);
    }

    #[test]
    fn ks_against_reference_accepts_a_window_from_the_reference_and_rejects_a_shifted_one() {
        let reference = standard_reference(5);
        let mut rng = Rng::new(6);
        let same = ks_against_reference(&reference, &rng.normals(500, 0.0, 1.0));
        assert!(same.p_value > 0.01, "{same:?}");
        let shifted = ks_against_reference(&reference, &rng.normals(500, 0.5, 1.0));
        assert!(shifted.p_value < 1e-4, "{shifted:?}");
    }

    #[test]
    fn false_alarm_rate_on_windows_from_the_reference_distribution_is_at_most_one_percent() {
        let reference = standard_reference(7);
        let small = drift_rates(&reference, 8, 2_000, 100, 0.0, 1.0);
        let large = drift_rates(&reference, 9, 2_000, 500, 0.0, 1.0);
        eprintln!("no drift, windows of 100: {small:?}\nno drift, windows of 500: {large:?}");
        assert!(
            small.drifted <= 0.01,
            "false alarms {small:?} (windows of 100)"
        );
        assert!(
            large.drifted <= 0.01,
            "false alarms {large:?} (windows of 500)"
        );
        // Each test alone is calibrated near α = 0.01; requiring both lowers the rate further.
        for rates in [&small, &large] {
            assert!(
                rates.psi_alone <= 0.02 && rates.ks_alone <= 0.02,
                "{rates:?}"
            );
        }
        // The fixed rule is what the window-aware threshold replaces: it alarms on pure noise.
        assert!(
            small.fixed_rule > 0.1,
            "fixed rule {small:?} (windows of 100)"
        );
    }

    #[test]
    fn shifted_and_widened_distributions_are_detected_in_at_least_95_percent_of_windows() {
        let reference = standard_reference(10);
        let shifted = drift_rates(&reference, 11, 200, 500, 0.5, 1.0);
        let widened = drift_rates(&reference, 12, 200, 500, 0.0, 2.0);
        eprintln!("N(0.5, 1), windows of 500: {shifted:?}\nN(0, 2), windows of 500: {widened:?}");
        assert!(
            shifted.drifted >= 0.95,
            "detection {shifted:?} for N(0.5, 1)"
        );
        assert!(widened.drifted >= 0.95, "detection {widened:?} for N(0, 2)");
        let shifted_small = drift_rates(&reference, 13, 200, 100, 0.5, 1.0);
        let widened_small = drift_rates(&reference, 14, 200, 100, 0.0, 2.0);
        eprintln!(
            "N(0.5, 1), windows of 100: {shifted_small:?}\nN(0, 2), windows of 100: {widened_small:?}"
        );
    }

    #[test]
    fn monitor_waits_for_enough_values_keeps_a_bounded_window_and_counts_ignored_values() {
        let reference = standard_reference(13);
        let mut monitor = DriftMonitor::new(reference.clone(), 40, 0.01).expect("monitor");
        assert!(monitor.is_empty());
        let mut rng = Rng::new(14);
        for _ in 0..29 {
            monitor.push(rng.normal(0.0, 1.0));
        }
        monitor.push(f64::NAN);
        monitor.push(f64::NEG_INFINITY);
        assert_eq!(monitor.len(), 29);
        assert_eq!(monitor.ignored(), 2);
        assert!(monitor.check().is_none());
        monitor.push(rng.normal(0.0, 1.0));
        assert_eq!(monitor.check().map(|c| c.window), Some(30));
        for _ in 0..100 {
            monitor.push(rng.normal(0.0, 1.0));
        }
        assert_eq!(monitor.len(), 40);

        let mut tiny = DriftMonitor::new(reference.clone(), 5, 0.01).expect("monitor");
        for _ in 0..5 {
            tiny.push(1.0);
        }
        assert_eq!(tiny.check().map(|c| c.window), Some(5));
        tiny.clear();
        assert!(tiny.is_empty());
    }

    #[test]
    fn monitor_rejects_invalid_references_capacities_and_alphas() {
        let reference = standard_reference(15);
        let broken = Reference {
            edges: vec![1.0, 0.0],
            counts: vec![1, 1, 1],
        };
        assert!(matches!(
            DriftMonitor::new(broken, 100, 0.01),
            Err(DriftError::UnsortedEdges { .. })
        ));
        assert!(matches!(
            DriftMonitor::new(reference.clone(), 0, 0.01),
            Err(DriftError::ZeroCapacity)
        ));
        for alpha in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(matches!(
                DriftMonitor::new(reference.clone(), 100, alpha),
                Err(DriftError::BadAlpha(_))
            ));
        }
    }
}
