//! Rolling covariance of a tenant's symbols' returns, shrunk with Ledoit–Wolf, and the portfolio volatility
//! it implies.
//!
//! # Why
//!
//! A tenant's risk is not the sum of its positions' risks: two long positions in symbols that move together
//! are close to one position of twice the size, and a long and a short in them nearly cancel. Bounding the
//! portfolio's volatility needs the covariance matrix `Σ` of the symbols' returns: with `w` the exposures in
//! account currency, the one-period P&L is about `wᵀr` and its volatility `√(wᵀ Σ w)`
//! ([`portfolio_volatility`]).
//!
//! The covariance has to come from a short recent window (regimes change), and the sample covariance of a
//! short window is noisy: its large eigenvalues are too large, its small ones too small, and with fewer
//! observations than symbols (`n ≤ p`) it is singular, so some long/short combination looks riskless when it
//! is not. The sample is therefore shrunk towards a structured target with the optimal intensity of Ledoit
//! and Wolf (2004), "A well-conditioned estimator for large-dimensional covariance matrices", *Journal of
//! Multivariate Analysis* 88(2), 365–411 ([`ledoit_wolf`]).
//!
//! # The estimator
//!
//! The target is LW 2004's scaled identity `μI`: every symbol gets the average variance, and no
//! correlation. With `n` rows `x_k` of `p` returns, demeaned per symbol:
//!
//! ```text
//! S    = (1/n) Σ_k x_k x_kᵀ                     sample covariance, 1/n normalisation
//! μ    = tr(S) / p
//! ‖A‖² = tr(A Aᵀ) / p                            LW's normalised Frobenius norm
//! δ²   = ‖S − μI‖²                               how far the sample is from the target
//! β̄²   = (1/n²) Σ_k ‖x_k x_kᵀ − S‖²              how noisy the sample is
//! β²   = min(β̄², δ²)
//! ρ    = β² / δ²                                 the shrinkage intensity, in [0, 1]
//! Σ    = ρ μ I + (1 − ρ) S
//! ```
//!
//! This is scikit-learn's convention (`sklearn.covariance.ledoit_wolf` with the default
//! `assume_centered=False`): data centred, `S` the maximum-likelihood covariance with `1/n`, `ρ` as above.
//! scikit-learn computes `β̄²` in the expanded form `(1/(n p)) · ((1/n) Σ_k ‖x_k‖⁴₂ − ‖S‖²_F)`, which is
//! the same quantity; this module sums `‖x_k x_kᵀ − S‖²` directly, which cannot go negative by rounding, and
//! a test checks the two agree. The `1/n` variance is low by the factor `(n − 1)/n` (5 % on 20 rows); it is
//! kept because LW's optimality result and the reference implementation use it.
//!
//! `Σ` keeps the trace of `S` and is positive definite whenever `ρ > 0` and `μ > 0`, whatever `n` and `p`
//! (`ρμI` is positive definite and `S` positive semi-definite).
//!
//! ## Edge cases
//!
//! - **Zero dispersion** (`δ² = 0`: `S` is already `μI`, in particular when every return is constant):
//!   there is nothing to divide by, and the sample equals the target, so `ρ` is reported as 1 and
//!   `Σ = μI = S`. (scikit-learn reports 0 here; the matrix is the same.)
//! - **Two rows**: after demeaning `x₂ = −x₁`, so every `x_k x_kᵀ` equals `S`, `β̄² = 0` and `ρ = 0`: the
//!   result is the rank-one sample covariance, singular for `p ≥ 2`. LW's noise estimate has nothing to
//!   work with; use windows of at least 3 rows (in practice dozens) for a positive definite estimate.
//! - **A constant symbol** among varying ones gets variance `ρμ > 0` from the target: shrinkage does not
//!   know the symbol cannot move.
//! - **Magnitude**: the rows are scaled by a power of two (exact) so that the largest `|x|` is about 1
//!   before anything is squared, and the result is scaled back: returns of any finite magnitude give
//!   the same `ρ` without overflow or underflow in the intermediate fourth powers. Only a result that is
//!   itself beyond `f64` (variances above ~1.8e308) is refused ([`CovError::Overflow`]).
//!
//! # Returns and alignment
//!
//! [`ReturnWindow`] keeps the last `n` rows of log returns for a fixed, ordered list of symbols, in a
//! bounded ring. Rows are either pushed whole ([`ReturnWindow::push_row`]) or built from closes
//! ([`ReturnWindow::push_closes`]): a row is the log return `ln(c_t) − ln(c_prev)` of every symbol between
//! two *complete* bar times, a bar time at which every symbol has a close. A bar time that some symbol
//! misses is skipped, and it also breaks the chain: the next complete bar time only becomes the new base,
//! so that every row is a return over two consecutive bar times seen here, never a two-bar return mixed in
//! with one-bar ones. A stretch where *no* symbol has a bar (a weekend) is invisible at this level and
//! gives one ordinary row across it.
//!
//! # Units
//!
//! `Σ` is the covariance of one-bar log returns (dimensionless); with exposures in account currency,
//! [`portfolio_volatility`] is the one-bar P&L volatility in account currency (log returns ≈ simple returns
//! for the small moves of one bar), and [`parametric_var`] the one-bar normal VaR. Over `h` bars of
//! independent returns both scale by `√h`.

use std::collections::VecDeque;

/// The standard normal quantile for 99 %, one-sided (often rounded to 2.33).
pub const Z_99: f64 = 2.326_347_874_040_841;
/// The standard normal quantile for 95 %, one-sided.
pub const Z_95: f64 = 1.644_853_626_951_472_2;

/// Why a covariance or a volatility could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CovError {
    #[error("no symbols: a covariance needs at least one")]
    NoSymbols,
    #[error("symbol {0} is listed more than once")]
    DuplicateSymbol(String),
    #[error("{rows} rows of returns; a covariance needs at least 2")]
    TooFewRows { rows: usize },
    /// `row` is the row's index in the input; for [`ReturnWindow::push_row`], the number of rows the
    /// window had accepted before it.
    #[error("row {row} has {len} returns; there are {expected} symbols")]
    RaggedRow {
        row: usize,
        len: usize,
        expected: usize,
    },
    /// `row` as for [`CovError::RaggedRow`].
    #[error("row {row}: the return of {symbol} is {value}, not a finite number")]
    NonFinite {
        row: usize,
        symbol: String,
        value: f64,
    },
    #[error("the close of {symbol} is {value}; a close must be finite and above 0")]
    BadClose { symbol: String, value: f64 },
    #[error("unknown symbol {0}: it is not one of the covariance's symbols")]
    UnknownSymbol(String),
    #[error("the exposure to {symbol} is {value}, not a finite amount")]
    NonFiniteExposure { symbol: String, value: f64 },
    /// A [`Covariance`] built by hand that is not a finite, square, positive semi-definite matrix over its
    /// symbols.
    #[error("malformed covariance: {0}")]
    Malformed(String),
    #[error("the result is too large for an f64")]
    Overflow,
}

/// A shrunk covariance matrix of one-bar log returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Covariance {
    /// The symbols, in the order of the matrix's rows and columns.
    pub symbols: Vec<String>,
    /// `Σ = ρ μ I + (1 − ρ) S`, symmetric, `p × p`.
    pub matrix: Vec<Vec<f64>>,
    /// The Ledoit–Wolf intensity `ρ` in `[0, 1]`: 0 is the sample covariance, 1 the target `μI`.
    pub shrinkage: f64,
    /// Rows of returns it was estimated from.
    pub observations: usize,
}

impl Covariance {
    /// The correlation matrix `Σᵢⱼ / √(Σᵢᵢ Σⱼⱼ)`, clamped to `[−1, 1]`. A correlation is undefined when a
    /// variance is 0 (or the entry is not finite); it is reported as 0, the diagonal included, so a symbol
    /// that cannot move shows no correlation with anything. Otherwise the diagonal is exactly 1. Missing entries of a hand-built ragged matrix
    /// count as 0; the result is square, of the matrix's row count.
    pub fn correlations(&self) -> Vec<Vec<f64>> {
        let p = self.matrix.len();
        let at = |i: usize, j: usize| {
            self.matrix
                .get(i)
                .and_then(|row| row.get(j))
                .copied()
                .unwrap_or(0.0)
        };
        let sd: Vec<f64> = (0..p).map(|i| at(i, i).max(0.0).sqrt()).collect();
        (0..p)
            .map(|i| {
                (0..p)
                    .map(|j| {
                        let (si, sj) = (sd[i], sd[j]);
                        if !(si > 0.0 && sj > 0.0) {
                            return 0.0;
                        }
                        if i == j {
                            return 1.0;
                        }
                        // Divide by each deviation in turn: their product may overflow or underflow.
                        let c = at(i, j) / si / sj;
                        if c.is_finite() {
                            c.clamp(-1.0, 1.0)
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// The Ledoit–Wolf shrunk covariance of `rows` (one row of `p` returns per observation, in the order of
/// `symbols`); see the module documentation for the formulas and edge cases.
///
/// Errors: no symbols, a symbol listed twice, fewer than 2 rows, a row whose length is not `p`, a
/// non-finite value, or a result beyond `f64`.
pub fn ledoit_wolf(rows: &[Vec<f64>], symbols: Vec<String>) -> Result<Covariance, CovError> {
    let rows: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
    estimate(&rows, symbols)
}

/// The volatility `√(wᵀ Σ w)` of a portfolio, in the currency of the exposures: `w` holds the exposure to
/// each of `cov`'s symbols in account currency (positive long, negative short). Symbols without an exposure
/// count as 0; a symbol given more than once has its exposures added.
///
/// Errors: a symbol not in `cov` (named), a non-finite exposure, a malformed `cov` (not square over its
/// symbols, a non-finite entry, a repeated symbol, or a clearly negative `wᵀΣw`: not positive
/// semi-definite), or a volatility beyond `f64`. A `wᵀΣw` that rounding alone makes slightly negative is
/// taken as 0.
pub fn portfolio_volatility(
    cov: &Covariance,
    exposures: &[(String, f64)],
) -> Result<f64, CovError> {
    let p = cov.symbols.len();
    check_symbols(&cov.symbols).map_err(|e| CovError::Malformed(e.to_string()))?;
    if cov.matrix.len() != p {
        return Err(CovError::Malformed(format!(
            "{} rows for {p} symbols",
            cov.matrix.len()
        )));
    }
    for (i, row) in cov.matrix.iter().enumerate() {
        if row.len() != p {
            return Err(CovError::Malformed(format!(
                "row {i} has {} entries for {p} symbols",
                row.len()
            )));
        }
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(CovError::Malformed(format!("row {i} has the entry {v}")));
        }
    }
    let mut w = vec![0.0; p];
    for (symbol, value) in exposures {
        let i = cov
            .symbols
            .iter()
            .position(|s| s == symbol)
            .ok_or_else(|| CovError::UnknownSymbol(symbol.clone()))?;
        if !value.is_finite() {
            return Err(CovError::NonFiniteExposure {
                symbol: symbol.clone(),
                value: *value,
            });
        }
        w[i] += value;
    }
    // Work with w / max|w| so that wᵀΣw cannot overflow when the volatility itself is representable.
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return Ok(0.0);
    }
    if !scale.is_finite() {
        return Err(CovError::Overflow);
    }
    let u: Vec<f64> = w.iter().map(|v| v / scale).collect();
    let (mut q, mut size) = (0.0, 0.0);
    for (row, ui) in cov.matrix.iter().zip(&u) {
        for (sij, uj) in row.iter().zip(&u) {
            let term = ui * sij * uj;
            q += term;
            size += term.abs();
        }
    }
    if !q.is_finite() {
        return Err(CovError::Overflow);
    }
    if q < -1e-12 * size {
        return Err(CovError::Malformed(format!(
            "not positive semi-definite: wᵀΣw = {} for these exposures",
            q * scale * scale
        )));
    }
    let vol = scale * q.max(0.0).sqrt();
    if vol.is_finite() {
        Ok(vol)
    } else {
        Err(CovError::Overflow)
    }
}

/// One-period parametric (normal, zero-mean) value at risk: the loss exceeded with probability `1 − c` is
/// `z · vol`, `z` the standard normal quantile of the confidence `c` ([`Z_99`] ≈ 2.33 for 99 %, [`Z_95`]
/// ≈ 1.645 for 95 %) and `vol` from [`portfolio_volatility`], in the same currency. For `h` periods of
/// independent returns multiply by `√h`. Fat tails make this an underestimate in stress; it is a bound for
/// ordinary days, not a stress test.
pub fn parametric_var(vol: f64, z: f64) -> f64 {
    z * vol
}

/// The last `window` rows of log returns for a fixed, ordered list of symbols (see the module
/// documentation for how closes are aligned).
#[derive(Debug, Clone)]
pub struct ReturnWindow {
    symbols: Vec<String>,
    window: usize,
    rows: VecDeque<Vec<f64>>,
    accepted: usize,
    skipped_bars: usize,
    /// The bar time being filled in, with the closes received for it so far.
    pending: Option<(i64, Vec<Option<f64>>)>,
    /// The last complete bar time and its closes: the base of the next row.
    base: Option<(i64, Vec<f64>)>,
    /// The last complete bar time, kept when the base is dropped, to ignore stale closes.
    last_complete: Option<i64>,
}

impl ReturnWindow {
    /// An empty window over `symbols` keeping the last `window` rows. A symbol listed twice is kept once
    /// (its first place); a window below 2 is raised to 2, the fewest rows a covariance needs.
    pub fn new(symbols: Vec<String>, window: usize) -> Self {
        let mut unique: Vec<String> = Vec::with_capacity(symbols.len());
        for s in symbols {
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        let window = window.max(2);
        Self {
            symbols: unique,
            window,
            // Do not trust `window` for an allocation: it is a bound, not a size hint.
            rows: VecDeque::with_capacity(window.min(1024)),
            accepted: 0,
            skipped_bars: 0,
            pending: None,
            base: None,
            last_complete: None,
        }
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// The most rows kept.
    pub fn capacity(&self) -> usize {
        self.window
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows accepted since construction (including those since evicted).
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// Bar times given to [`ReturnWindow::push_closes`] that never had a close for every symbol.
    pub fn skipped_bars(&self) -> usize {
        self.skipped_bars
    }

    /// The rows held, oldest first.
    pub fn rows(&self) -> impl Iterator<Item = &[f64]> + '_ {
        self.rows.iter().map(Vec::as_slice)
    }

    /// Appends a row of returns, one per symbol in the window's order, evicting the oldest row when full.
    /// A row of the wrong length or with a non-finite value is refused and the window left as it was.
    pub fn push_row(&mut self, returns: &[f64]) -> Result<(), CovError> {
        check_row(self.accepted, returns, &self.symbols)?;
        self.append(returns.to_vec());
        Ok(())
    }

    /// Adds closes for the bar that opened at `bar_time_ms`; they may come all at once or spread over
    /// several calls. When every symbol has a close for that bar time and the previous complete bar time is
    /// the base, the row of log returns between them is pushed and `Ok(true)` returned; otherwise
    /// `Ok(false)`.
    ///
    /// A close for a later bar time while the pending one is incomplete abandons the pending one (counted
    /// in [`ReturnWindow::skipped_bars`]) and drops the base. Closes for a bar time at or before the last
    /// complete one, or before the pending one, are stale and ignored. A symbol given twice in one call
    /// takes its last close. An unknown symbol, or a close that is not finite and above 0, refuses the whole
    /// call with the window left as it was.
    pub fn push_closes(
        &mut self,
        bar_time_ms: i64,
        closes: &[(String, f64)],
    ) -> Result<bool, CovError> {
        let mut indexed = Vec::with_capacity(closes.len());
        for (symbol, close) in closes {
            let i = self
                .symbols
                .iter()
                .position(|s| s == symbol)
                .ok_or_else(|| CovError::UnknownSymbol(symbol.clone()))?;
            if !(close.is_finite() && *close > 0.0) {
                return Err(CovError::BadClose {
                    symbol: symbol.clone(),
                    value: *close,
                });
            }
            indexed.push((i, *close));
        }
        if indexed.is_empty() || self.last_complete.is_some_and(|t| bar_time_ms <= t) {
            return Ok(false);
        }
        if self.pending.as_ref().is_some_and(|(t, _)| bar_time_ms < *t) {
            return Ok(false);
        }
        let p = self.symbols.len();
        let pending = match self.pending.take() {
            Some((t, got)) if t == bar_time_ms => (t, got),
            Some(_) => {
                // A later bar time while this one is incomplete: it never will be.
                self.skipped_bars = self.skipped_bars.saturating_add(1);
                self.base = None;
                (bar_time_ms, vec![None; p])
            }
            None => (bar_time_ms, vec![None; p]),
        };
        let (time, mut got) = pending;
        for (i, close) in indexed {
            if let Some(slot) = got.get_mut(i) {
                *slot = Some(close);
            }
        }
        let complete: Option<Vec<f64>> = got.iter().copied().collect();
        let Some(now) = complete else {
            self.pending = Some((time, got));
            return Ok(false);
        };
        self.last_complete = Some(time);
        let pushed = match self.base.take() {
            Some((_, before)) => {
                let row: Vec<f64> = now
                    .iter()
                    .zip(&before)
                    .map(|(c, b)| c.ln() - b.ln())
                    .collect();
                self.append(row);
                true
            }
            None => false,
        };
        self.base = Some((time, now));
        Ok(pushed)
    }

    /// The Ledoit–Wolf covariance of the rows held ([`ledoit_wolf`]).
    pub fn covariance(&self) -> Result<Covariance, CovError> {
        let rows: Vec<&[f64]> = self.rows().collect();
        estimate(&rows, self.symbols.clone())
    }

    fn append(&mut self, row: Vec<f64>) {
        while self.rows.len() >= self.window {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
        self.accepted = self.accepted.saturating_add(1);
    }
}

fn check_symbols(symbols: &[String]) -> Result<(), CovError> {
    if symbols.is_empty() {
        return Err(CovError::NoSymbols);
    }
    for (i, s) in symbols.iter().enumerate() {
        if symbols[..i].contains(s) {
            return Err(CovError::DuplicateSymbol(s.clone()));
        }
    }
    Ok(())
}

fn check_row(row: usize, values: &[f64], symbols: &[String]) -> Result<(), CovError> {
    if values.len() != symbols.len() {
        return Err(CovError::RaggedRow {
            row,
            len: values.len(),
            expected: symbols.len(),
        });
    }
    match values.iter().zip(symbols).find(|(v, _)| !v.is_finite()) {
        Some((value, symbol)) => Err(CovError::NonFinite {
            row,
            symbol: symbol.clone(),
            value: *value,
        }),
        None => Ok(()),
    }
}

/// `2^e` exactly, for `e` within the normal exponent range (callers stay within ±540).
fn pow2(e: i32) -> f64 {
    let e = e.clamp(-1022, 1023);
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Multiplies by `2^e` for `|e|` up to about 2100, in steps that are each representable.
fn scale_by_pow2(x: f64, e: i32) -> f64 {
    let mut x = x;
    let mut left = e;
    while left != 0 {
        let step = left.clamp(-512, 512);
        x *= pow2(step);
        left -= step;
    }
    x
}

fn estimate(rows: &[&[f64]], symbols: Vec<String>) -> Result<Covariance, CovError> {
    check_symbols(&symbols)?;
    let (n, p) = (rows.len(), symbols.len());
    if n < 2 {
        return Err(CovError::TooFewRows { rows: n });
    }
    for (r, row) in rows.iter().enumerate() {
        check_row(r, row, &symbols)?;
    }

    // Scale by 2^-k so the largest |x| is about 1: exact, and it keeps x⁴ away from overflow and underflow.
    let max_abs = rows
        .iter()
        .flat_map(|r| r.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let k = if max_abs > 0.0 {
        max_abs.log2().floor() as i32 + 1
    } else {
        0
    };
    let nf = n as f64;
    let mut mean = vec![0.0; p];
    for row in rows {
        for (m, v) in mean.iter_mut().zip(row.iter()) {
            *m += scale_by_pow2(*v, -k) / nf;
        }
    }
    // Demeaned, scaled data, row-major n × p.
    let mut x = Vec::with_capacity(n * p);
    for row in rows {
        x.extend(
            row.iter()
                .zip(&mean)
                .map(|(v, m)| scale_by_pow2(*v, -k) - m),
        );
    }

    // S, upper triangle computed, mirrored: exactly symmetric.
    let mut s = vec![0.0; p * p];
    for i in 0..p {
        for j in i..p {
            let sum: f64 = x.chunks_exact(p).map(|xk| xk[i] * xk[j]).sum();
            s[i * p + j] = sum / nf;
            s[j * p + i] = sum / nf;
        }
    }
    let pf = p as f64;
    let mu = (0..p).map(|i| s[i * p + i]).sum::<f64>() / pf;
    let delta2 = (0..p * p)
        .map(|ij| {
            let d = s[ij] - if ij % (p + 1) == 0 { mu } else { 0.0 };
            d * d
        })
        .sum::<f64>()
        / pf;
    let mut beta_bar2 = 0.0;
    for xk in x.chunks_exact(p) {
        for i in 0..p {
            for j in 0..p {
                let d = xk[i] * xk[j] - s[i * p + j];
                beta_bar2 += d * d;
            }
        }
    }
    beta_bar2 /= pf * nf * nf;
    let beta2 = beta_bar2.min(delta2);
    let shrinkage = if delta2 > 0.0 {
        (beta2 / delta2).clamp(0.0, 1.0)
    } else {
        1.0
    };

    let mut matrix = vec![vec![0.0; p]; p];
    for i in 0..p {
        for j in i..p {
            let target = if i == j { shrinkage * mu } else { 0.0 };
            let v = scale_by_pow2(target + (1.0 - shrinkage) * s[i * p + j], 2 * k);
            if !v.is_finite() {
                return Err(CovError::Overflow);
            }
            matrix[i][j] = v;
            matrix[j][i] = v;
        }
    }
    Ok(Covariance {
        symbols,
        matrix,
        shrinkage,
        observations: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn names(p: usize) -> Vec<String> {
        (0..p).map(|i| format!("S{i}")).collect()
    }

    fn close_to(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Standard normals by Box–Muller.
    fn normal(rng: &mut SmallRng) -> f64 {
        let u: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
        let v: f64 = rng.gen();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// `n` rows of `L z`, `z` independent standard normals: returns with covariance `L Lᵀ`.
    fn correlated(seed: u64, n: usize, l: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let z: Vec<f64> = l.iter().map(|_| normal(&mut rng)).collect();
                l.iter()
                    .map(|li| li.iter().zip(&z).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect()
    }

    /// The smallest pivot `l_ii²` of a Cholesky factorisation (the first non-positive one if it fails). Each
    /// pivot is a Schur complement `1 / (A_k⁻¹)_kk` of a leading block, so the smallest is at least the
    /// smallest eigenvalue.
    fn smallest_cholesky_pivot(m: &[Vec<f64>]) -> f64 {
        let p = m.len();
        let mut l = vec![vec![0.0; p]; p];
        let mut smallest = f64::INFINITY;
        for i in 0..p {
            for j in 0..=i {
                let s = m[i][j]
                    - l[i][..j]
                        .iter()
                        .zip(&l[j][..j])
                        .map(|(a, b)| a * b)
                        .sum::<f64>();
                if i == j {
                    smallest = smallest.min(s);
                    if s <= 0.0 {
                        return s;
                    }
                    l[i][i] = s.sqrt();
                } else {
                    l[i][j] = s / l[j][j];
                }
            }
        }
        smallest
    }

    fn is_positive_definite(m: &[Vec<f64>]) -> bool {
        smallest_cholesky_pivot(m) > 0.0
    }

    /// The sample covariance with 1/n, computed plainly.
    fn sample_covariance(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (n, p) = (rows.len() as f64, rows[0].len());
        let mean: Vec<f64> = (0..p)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        (0..p)
            .map(|i| {
                (0..p)
                    .map(|j| {
                        rows.iter()
                            .map(|r| (r[i] - mean[i]) * (r[j] - mean[j]))
                            .sum::<f64>()
                            / n
                    })
                    .collect()
            })
            .collect()
    }

    /// scikit-learn's expanded form of the shrinkage (`ledoit_wolf_shrinkage`, written independently):
    /// β = ((1/n) Σ_k ‖x_k‖⁴ − ‖S‖²_F) / (n p), δ = (‖S‖²_F − 2 μ tr S + p μ²) / p.
    fn expanded_shrinkage(rows: &[Vec<f64>]) -> f64 {
        let (n, p) = (rows.len() as f64, rows[0].len());
        let mean: Vec<f64> = (0..p)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().zip(&mean).map(|(v, m)| v - m).collect())
            .collect();
        let trace: f64 = x.iter().flatten().map(|v| v * v).sum::<f64>() / n;
        let mu = trace / p as f64;
        let fourth: f64 = x
            .iter()
            .map(|r| r.iter().map(|v| v * v).sum::<f64>().powi(2))
            .sum();
        let mut s_sq = 0.0;
        for i in 0..p {
            for j in 0..p {
                let sij: f64 = x.iter().map(|r| r[i] * r[j]).sum::<f64>() / n;
                s_sq += sij * sij;
            }
        }
        let beta = (fourth / n - s_sq) / (n * p as f64);
        let delta = (s_sq - 2.0 * mu * trace + p as f64 * mu * mu) / p as f64;
        beta.min(delta) / delta
    }

    #[test]
    fn ledoit_wolf_matches_a_hand_worked_five_by_two_example_in_scikit_learns_convention() {
        // Convention: scikit-learn's `ledoit_wolf(X)` (assume_centered=False): centred data, S with 1/n.
        //
        // X = (1, 1), (2, −1), (3, 5), (4, 3), (5, 7); both means are 3, so the demeaned rows are
        //   x = (−2, −2), (−1, −4), (0, 2), (1, 0), (2, 4).
        // S11 = (4 + 1 + 0 + 1 + 4)/5 = 2, S22 = (4 + 16 + 4 + 0 + 16)/5 = 8,
        // S12 = (4 + 4 + 0 + 0 + 8)/5 = 3.2.
        // μ = (2 + 8)/2 = 5.
        // S − μI = [[−3, 3.2], [3.2, 3]]: squared Frobenius 9 + 9 + 2·10.24 = 38.48, δ² = 38.48/2 = 19.24.
        // x_k x_kᵀ − S and its squared Frobenius norm:
        //   k=1 [[4,4],[4,4]]   − S = [[ 2, 0.8],[0.8,−4]]:  4 +  1.28 + 16 =  21.28
        //   k=2 [[1,4],[4,16]]  − S = [[−1, 0.8],[0.8, 8]]:  1 +  1.28 + 64 =  66.28
        //   k=3 [[0,0],[0,4]]   − S = [[−2,−3.2],[−3.2,−4]]: 4 + 20.48 + 16 =  40.48
        //   k=4 [[1,0],[0,0]]   − S = [[−1,−3.2],[−3.2,−8]]: 1 + 20.48 + 64 =  85.48
        //   k=5 [[4,8],[8,16]]  − S = [[ 2, 4.8],[4.8, 8]]:  4 + 46.08 + 64 = 114.08
        //   sum 327.6 (check: Σ‖x_k‖⁴ − n‖S‖²_F = (64 + 289 + 16 + 1 + 400) − 5·88.48 = 770 − 442.4).
        // β̄² = 327.6 / p / n² = 327.6 / 2 / 25 = 6.552 (scikit-learn: (770/5 − 88.48)/(5·2) = 6.552).
        // β² = min(6.552, 19.24) = 6.552; ρ = 6.552/19.24 = 63/185 = 0.340540…
        // Σ11 = ρ·5 + (1 − ρ)·2   = (315 + 244)/185 = 559/185  = 3.021621…
        // Σ22 = ρ·5 + (1 − ρ)·8   = (315 + 976)/185 = 1291/185 = 6.978378…
        // Σ12 = (1 − ρ)·3.2       = 122·3.2/185     = 1952/925 = 2.110270…
        // (trace 10 = tr S, as shrinkage towards μI keeps it).
        let rows = vec![
            vec![1.0, 1.0],
            vec![2.0, -1.0],
            vec![3.0, 5.0],
            vec![4.0, 3.0],
            vec![5.0, 7.0],
        ];
        let cov = ledoit_wolf(&rows, names(2)).unwrap();
        assert_eq!(cov.observations, 5);
        assert_eq!(cov.symbols, names(2));
        assert!(
            close_to(cov.shrinkage, 63.0 / 185.0, 1e-12),
            "{}",
            cov.shrinkage
        );
        assert!(close_to(cov.matrix[0][0], 559.0 / 185.0, 1e-12));
        assert!(close_to(cov.matrix[1][1], 1291.0 / 185.0, 1e-12));
        assert!(close_to(cov.matrix[0][1], 1952.0 / 925.0, 1e-12));
        assert_eq!(cov.matrix[0][1], cov.matrix[1][0]);
        assert!(close_to(expanded_shrinkage(&rows), 63.0 / 185.0, 1e-12));
        let corr = cov.correlations();
        let expected = (1952.0 / 925.0) / ((559.0f64 / 185.0) * (1291.0 / 185.0)).sqrt();
        assert!(close_to(corr[0][1], expected, 1e-12) && corr[0][0] == 1.0 && corr[1][1] == 1.0);
    }

    #[test]
    fn the_direct_noise_sum_agrees_with_the_expanded_form_scikit_learn_uses() {
        let mut rng = SmallRng::seed_from_u64(7);
        for (n, p) in [(3, 2), (7, 4), (5, 9), (40, 6)] {
            let rows: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..p).map(|_| normal(&mut rng) * 0.01).collect())
                .collect();
            let cov = ledoit_wolf(&rows, names(p)).unwrap();
            let reference = expanded_shrinkage(&rows);
            assert!(
                close_to(cov.shrinkage, reference, 1e-9),
                "n={n} p={p}: {} vs {reference}",
                cov.shrinkage
            );
        }
    }

    #[test]
    fn shrinkage_lies_in_zero_one_and_falls_as_more_observations_of_the_same_process_arrive() {
        // Returns with standard deviations 1 %, 2 %, 0.5 % and correlations around 0.6.
        let l = vec![
            vec![0.01, 0.0, 0.0],
            vec![0.012, 0.016, 0.0],
            vec![0.002, 0.001, 0.0045],
        ];
        let sizes = [10, 100, 1000];
        let mut mean = [0.0; 3];
        for seed in 0..20 {
            let rows = correlated(seed, 1000, &l);
            let rho: Vec<f64> = sizes
                .iter()
                .map(|&n| ledoit_wolf(&rows[..n], names(3)).unwrap().shrinkage)
                .collect();
            for r in &rho {
                assert!(*r > 0.0 && *r <= 1.0, "seed {seed}: {rho:?}");
            }
            assert!(rho[2] < rho[0], "seed {seed}: {rho:?}");
            for (m, r) in mean.iter_mut().zip(&rho) {
                *m += r / 20.0;
            }
        }
        assert!(mean[0] > mean[1] && mean[1] > mean[2], "{mean:?}");
    }

    #[test]
    fn the_estimate_is_positive_definite_even_with_more_symbols_than_observations() {
        let mut rng = SmallRng::seed_from_u64(11);
        for (n, p) in [(3, 3), (4, 10), (5, 30), (60, 8)] {
            let rows: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..p).map(|_| normal(&mut rng) * 0.01).collect())
                .collect();
            let cov = ledoit_wolf(&rows, names(p)).unwrap();
            assert!(
                cov.shrinkage > 0.0 && cov.shrinkage <= 1.0,
                "n={n} p={p}: {}",
                cov.shrinkage
            );
            // Σ ⪰ ρμI: its smallest eigenvalue, hence its smallest pivot, is at least ρμ.
            let mu = (0..p).map(|i| cov.matrix[i][i]).sum::<f64>() / p as f64;
            let pivot = smallest_cholesky_pivot(&cov.matrix);
            assert!(
                pivot >= cov.shrinkage * mu * (1.0 - 1e-9),
                "n={n} p={p}: {pivot}"
            );
            if n <= p {
                // The sample covariance has rank at most n − 1: singular to working precision.
                let s = sample_covariance(&rows);
                assert!(smallest_cholesky_pivot(&s) <= 1e-12 * mu, "n={n} p={p}");
            }
        }
    }

    #[test]
    fn two_observations_give_no_shrinkage_and_the_singular_sample_covariance() {
        // Demeaned, x₂ = −x₁: every x_k x_kᵀ equals S, so β̄² = 0 and ρ = 0.
        let rows = vec![vec![1.0, 2.0, 3.0], vec![2.0, 0.0, 5.0]];
        let cov = ledoit_wolf(&rows, names(3)).unwrap();
        assert_eq!(cov.shrinkage, 0.0);
        // S = d dᵀ / 4 with d = x₂ − x₁ = (1, −2, 2).
        let d = [1.0, -2.0, 2.0];
        for i in 0..3 {
            for j in 0..3 {
                assert!(close_to(cov.matrix[i][j], d[i] * d[j] / 4.0, 1e-15));
            }
        }
        assert!(!is_positive_definite(&cov.matrix));
    }

    #[test]
    fn zero_variance_data_gives_full_shrinkage_without_dividing_by_zero() {
        let rows = vec![vec![0.01, -0.02]; 5];
        let cov = ledoit_wolf(&rows, names(2)).unwrap();
        assert_eq!(cov.shrinkage, 1.0);
        assert_eq!(cov.matrix, vec![vec![0.0, 0.0], vec![0.0, 0.0]]);
        assert_eq!(cov.correlations(), vec![vec![0.0, 0.0], vec![0.0, 0.0]]);
        assert_eq!(
            portfolio_volatility(&cov, &[("S0".into(), 1e6), ("S1".into(), -3e5)]),
            Ok(0.0)
        );

        // One symbol: S is already μI (δ² = 0), ρ = 1 and Σ is the sample variance.
        let one = ledoit_wolf(&[vec![1.0], vec![3.0], vec![2.0]], names(1)).unwrap();
        assert_eq!(one.shrinkage, 1.0);
        assert!(close_to(one.matrix[0][0], 2.0 / 3.0, 1e-15));

        // A constant symbol among moving ones gets variance ρμ from the target.
        let mixed = ledoit_wolf(
            &[
                vec![1.0, 0.5],
                vec![3.0, 0.5],
                vec![2.0, 0.5],
                vec![0.0, 0.5],
            ],
            names(2),
        )
        .unwrap();
        assert!(mixed.shrinkage > 0.0 && mixed.matrix[1][1] > 0.0 && mixed.matrix[0][1] == 0.0);
    }

    #[test]
    fn scaling_the_returns_scales_the_covariance_by_the_square_and_keeps_the_shrinkage() {
        let l = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.5, 0.8, 0.0],
            vec![-0.3, 0.2, 1.5],
        ];
        let rows = correlated(3, 12, &l);
        let base = ledoit_wolf(&rows, names(3)).unwrap();
        for c in [2f64.powi(-1000), 1e-150, 1e-3, 7.0, 1e150] {
            let scaled: Vec<Vec<f64>> = rows
                .iter()
                .map(|r| r.iter().map(|v| v * c).collect())
                .collect();
            let cov = ledoit_wolf(&scaled, names(3)).unwrap();
            assert!(close_to(cov.shrinkage, base.shrinkage, 1e-12), "c={c}");
            for i in 0..3 {
                for j in 0..3 {
                    let expected = base.matrix[i][j] * c * c;
                    assert!(
                        close_to(cov.matrix[i][j], expected, 1e-12 * expected.abs()),
                        "c={c}"
                    );
                }
            }
        }
        // Variances near 1e400 are beyond f64.
        let huge: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v * 1e200).collect())
            .collect();
        assert_eq!(ledoit_wolf(&huge, names(3)), Err(CovError::Overflow));
    }

    #[test]
    fn correlations_are_bounded_and_zero_where_undefined() {
        let l = vec![vec![0.01, 0.0], vec![0.019, 0.006]];
        let cov = ledoit_wolf(&correlated(5, 300, &l), names(2)).unwrap();
        let corr = cov.correlations();
        assert_eq!((corr[0][0], corr[1][1]), (1.0, 1.0));
        assert!(
            corr[0][1] > 0.9 && corr[0][1] < 1.0 && corr[0][1] == corr[1][0],
            "{corr:?}"
        );

        let hand = Covariance {
            symbols: names(3),
            matrix: vec![
                vec![4.0, 2.0, 0.0],
                vec![2.0, 9.0, 1.0],
                vec![0.0, 1.0, 0.0],
            ],
            shrinkage: 0.0,
            observations: 0,
        };
        let c = hand.correlations();
        assert!(close_to(c[0][1], 2.0 / 6.0, 1e-15));
        assert_eq!((c[1][2], c[2][2], c[2][0]), (0.0, 0.0, 0.0));
        // A ragged hand-built matrix does not panic.
        let ragged = Covariance {
            matrix: vec![vec![1.0], vec![]],
            ..hand
        };
        assert_eq!(ragged.correlations(), vec![vec![1.0, 0.0], vec![0.0, 0.0]]);
    }

    fn two_by_two(s1: f64, s2: f64, corr: f64) -> Covariance {
        Covariance {
            symbols: vec!["EURUSD".into(), "GBPUSD".into()],
            matrix: vec![vec![s1 * s1, corr * s1 * s2], vec![corr * s1 * s2, s2 * s2]],
            shrinkage: 0.0,
            observations: 100,
        }
    }

    #[test]
    fn portfolio_volatility_matches_a_hand_computed_two_by_two_case() {
        // σ1 = 1 %, σ2 = 2 %, correlation 0.9; 100 000 in EURUSD and 50 000 in GBPUSD:
        // wᵀΣw = (1e5·0.01)² + (5e4·0.02)² + 2·0.9·(1e5·0.01)(5e4·0.02) = 1e6 + 1e6 + 1.8e6 = 3.8e6,
        // volatility √3.8e6 = 1949.358868961792…; short GBPUSD instead: 1e6 + 1e6 − 1.8e6 = 2e5 → 447.2136…
        let cov = two_by_two(0.01, 0.02, 0.9);
        let long =
            portfolio_volatility(&cov, &[("EURUSD".into(), 1e5), ("GBPUSD".into(), 5e4)]).unwrap();
        assert!(close_to(long, 3.8e6f64.sqrt(), 1e-9), "{long}");
        assert!(close_to(long, 1_949.358_868_961_792_6, 1e-9));
        let short =
            portfolio_volatility(&cov, &[("EURUSD".into(), 1e5), ("GBPUSD".into(), -5e4)]).unwrap();
        assert!(close_to(short, 2e5f64.sqrt(), 1e-9), "{short}");
        // A perfect hedge under perfect correlation: rounding must not make it an error or NaN.
        let perfect = two_by_two(0.01, 0.02, 1.0);
        let hedged =
            portfolio_volatility(&perfect, &[("EURUSD".into(), 2e5), ("GBPUSD".into(), -1e5)])
                .unwrap();
        assert!(hedged.abs() < 1e-6, "{hedged}");
    }

    #[test]
    fn long_exposure_to_a_correlated_symbol_adds_risk_and_short_exposure_hedges_it() {
        // Correlation 0.95 between two symbols, estimated from 250 bars and shrunk.
        let l = vec![
            vec![0.01, 0.0],
            vec![0.02 * 0.95, 0.02 * (1.0 - 0.95f64 * 0.95).sqrt()],
        ];
        let cov = ledoit_wolf(&correlated(17, 250, &l), names(2)).unwrap();
        let only_first = portfolio_volatility(&cov, &[("S0".into(), 1e5)]).unwrap();
        let plus_long =
            portfolio_volatility(&cov, &[("S0".into(), 1e5), ("S1".into(), 5e4)]).unwrap();
        let plus_short =
            portfolio_volatility(&cov, &[("S0".into(), 1e5), ("S1".into(), -5e4)]).unwrap();
        assert!(plus_long > only_first, "{plus_long} vs {only_first}");
        assert!(plus_short < only_first, "{plus_short} vs {only_first}");
        // Close to the hand figures of the true process: 1000, ~1975, ~316.
        assert!((800.0..1200.0).contains(&only_first), "{only_first}");
        assert!(plus_short < 0.6 * only_first, "{plus_short}");
    }

    #[test]
    fn symbols_without_exposure_count_as_zero_and_repeated_exposures_add() {
        let cov = two_by_two(0.01, 0.02, 0.5);
        let one = portfolio_volatility(&cov, &[("GBPUSD".into(), 1e5)]).unwrap();
        assert!(close_to(one, 2000.0, 1e-9));
        let split =
            portfolio_volatility(&cov, &[("GBPUSD".into(), 4e4), ("GBPUSD".into(), 6e4)]).unwrap();
        assert!(close_to(split, one, 1e-9));
        assert_eq!(portfolio_volatility(&cov, &[]), Ok(0.0));
        // Very large exposures: wᵀΣw would overflow but the volatility does not.
        let big = portfolio_volatility(&cov, &[("GBPUSD".into(), 1e200)]).unwrap();
        assert!(close_to(big / 2e198, 1.0, 1e-12), "{big}");
    }

    #[test]
    fn unknown_symbols_bad_exposures_and_malformed_matrices_are_errors() {
        let cov = two_by_two(0.01, 0.02, 0.5);
        assert_eq!(
            portfolio_volatility(&cov, &[("EURUSD".into(), 1.0), ("XAUUSD".into(), 1.0)]),
            Err(CovError::UnknownSymbol("XAUUSD".into()))
        );
        assert!(matches!(
            portfolio_volatility(&cov, &[("EURUSD".into(), f64::NAN)]),
            Err(CovError::NonFiniteExposure { symbol, .. }) if symbol == "EURUSD"
        ));
        assert_eq!(
            portfolio_volatility(
                &cov,
                &[("EURUSD".into(), f64::MAX), ("EURUSD".into(), f64::MAX)]
            ),
            Err(CovError::Overflow)
        );
        let mut ragged = cov.clone();
        ragged.matrix[1].pop();
        assert!(matches!(
            portfolio_volatility(&ragged, &[]),
            Err(CovError::Malformed(_))
        ));
        let mut short = cov.clone();
        short.matrix.pop();
        assert!(matches!(
            portfolio_volatility(&short, &[]),
            Err(CovError::Malformed(_))
        ));
        let mut nan = cov.clone();
        nan.matrix[0][1] = f64::NAN;
        assert!(matches!(
            portfolio_volatility(&nan, &[]),
            Err(CovError::Malformed(_))
        ));
        let mut twice = cov.clone();
        twice.symbols[1] = "EURUSD".into();
        assert!(matches!(
            portfolio_volatility(&twice, &[]),
            Err(CovError::Malformed(_))
        ));
        // Correlation 2: not positive semi-definite, and a hedge would show negative variance.
        let impossible = two_by_two(0.01, 0.02, 2.0);
        assert!(matches!(
            portfolio_volatility(
                &impossible,
                &[("EURUSD".into(), 2e5), ("GBPUSD".into(), -1e5)]
            ),
            Err(CovError::Malformed(_))
        ));
        let empty = Covariance {
            symbols: vec![],
            matrix: vec![],
            shrinkage: 0.0,
            observations: 0,
        };
        assert!(matches!(
            portfolio_volatility(&empty, &[]),
            Err(CovError::Malformed(_))
        ));
    }

    #[test]
    fn bad_rows_are_errors() {
        let good = vec![vec![0.01, 0.02], vec![0.0, -0.01], vec![0.02, 0.0]];
        assert_eq!(
            ledoit_wolf(&good[..1], names(2)),
            Err(CovError::TooFewRows { rows: 1 })
        );
        assert_eq!(
            ledoit_wolf(&[], names(2)),
            Err(CovError::TooFewRows { rows: 0 })
        );
        assert_eq!(ledoit_wolf(&good, vec![]), Err(CovError::NoSymbols));
        assert_eq!(
            ledoit_wolf(&good, vec!["A".into(), "A".into()]),
            Err(CovError::DuplicateSymbol("A".into()))
        );
        assert_eq!(
            ledoit_wolf(&good, names(3)),
            Err(CovError::RaggedRow {
                row: 0,
                len: 2,
                expected: 3
            })
        );
        let mut ragged = good.clone();
        ragged[2].push(0.0);
        assert_eq!(
            ledoit_wolf(&ragged, names(2)),
            Err(CovError::RaggedRow {
                row: 2,
                len: 3,
                expected: 2
            })
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut rows = good.clone();
            rows[1][1] = bad;
            match ledoit_wolf(&rows, names(2)) {
                Err(CovError::NonFinite { row: 1, symbol, .. }) => assert_eq!(symbol, "S1"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // The messages name what is wrong.
        let message = ledoit_wolf(&ragged, names(2)).unwrap_err().to_string();
        assert!(
            message.contains("row 2") && message.contains("3 returns"),
            "{message}"
        );
    }

    #[test]
    fn parametric_var_is_z_times_the_volatility() {
        assert_eq!(parametric_var(1000.0, 2.33), 2330.0);
        assert!(close_to(
            parametric_var(1000.0, Z_99),
            2_326.347_874_040_841,
            1e-9
        ));
        assert!(close_to(
            parametric_var(1000.0, Z_95),
            1_644.853_626_951_472,
            1e-9
        ));
        assert_eq!(parametric_var(0.0, Z_99), 0.0);
    }

    #[test]
    fn the_return_window_keeps_only_the_last_rows_and_refuses_bad_ones_unchanged() {
        let mut w = ReturnWindow::new(vec!["A".into(), "B".into(), "A".into()], 3);
        assert_eq!(w.symbols(), ["A".to_string(), "B".to_string()]);
        assert!(w.is_empty());
        for i in 0..5 {
            w.push_row(&[i as f64, -(i as f64)]).unwrap();
        }
        assert_eq!((w.len(), w.capacity(), w.accepted()), (3, 3, 5));
        let firsts: Vec<f64> = w.rows().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![2.0, 3.0, 4.0]);
        assert_eq!(
            w.push_row(&[1.0]),
            Err(CovError::RaggedRow {
                row: 5,
                len: 1,
                expected: 2
            })
        );
        assert!(matches!(
            w.push_row(&[1.0, f64::NAN]),
            Err(CovError::NonFinite { row: 5, .. })
        ));
        assert_eq!((w.len(), w.accepted()), (3, 5));
        assert_eq!(w.rows().next(), Some(&[2.0, -2.0][..]));

        assert_eq!(ReturnWindow::new(names(2), 0).capacity(), 2);
        let huge = ReturnWindow::new(names(2), usize::MAX);
        assert_eq!(huge.capacity(), usize::MAX);
        assert_eq!(huge.covariance(), Err(CovError::TooFewRows { rows: 0 }));
        assert_eq!(
            ReturnWindow::new(vec![], 5).covariance(),
            Err(CovError::NoSymbols)
        );
    }

    #[test]
    fn window_covariance_is_ledoit_wolf_on_the_rows_held() {
        let l = vec![
            vec![0.01, 0.0, 0.0],
            vec![0.005, 0.01, 0.0],
            vec![0.0, 0.003, 0.02],
        ];
        let rows = correlated(23, 50, &l);
        let mut w = ReturnWindow::new(names(3), 20);
        for r in &rows {
            w.push_row(r).unwrap();
        }
        assert_eq!(w.covariance(), ledoit_wolf(&rows[30..], names(3)));
        assert_eq!(w.covariance().unwrap().observations, 20);
    }

    fn c(symbol: &str, close: f64) -> (String, f64) {
        (symbol.to_string(), close)
    }

    #[test]
    fn closes_for_every_symbol_at_consecutive_bar_times_become_log_returns() {
        let mut w = ReturnWindow::new(vec!["A".into(), "B".into()], 10);
        assert_eq!(w.push_closes(0, &[c("A", 100.0), c("B", 50.0)]), Ok(false)); // the first base
        assert_eq!(w.push_closes(60_000, &[c("B", 49.0)]), Ok(false)); // A not yet in
        assert_eq!(w.push_closes(60_000, &[c("A", 101.0)]), Ok(true));
        assert_eq!(
            w.push_closes(120_000, &[c("A", 99.0), c("B", 49.5)]),
            Ok(true)
        );
        let rows: Vec<Vec<f64>> = w.rows().map(<[f64]>::to_vec).collect();
        let expected = [
            [(101.0f64 / 100.0).ln(), (49.0f64 / 50.0).ln()],
            [(99.0f64 / 101.0).ln(), (49.5f64 / 49.0).ln()],
        ];
        for (row, want) in rows.iter().zip(&expected) {
            for (a, b) in row.iter().zip(want) {
                assert!(close_to(*a, *b, 1e-15));
            }
        }
        assert_eq!((rows.len(), w.skipped_bars()), (2, 0));
    }

    #[test]
    fn a_bar_time_missing_a_symbol_is_skipped_and_the_next_complete_one_only_starts_a_new_base() {
        let mut w = ReturnWindow::new(vec!["A".into(), "B".into()], 10);
        w.push_closes(0, &[c("A", 100.0), c("B", 50.0)]).unwrap();
        assert_eq!(w.push_closes(60, &[c("A", 101.0)]), Ok(false)); // B has no bar at 60
        assert_eq!(
            w.push_closes(120, &[c("A", 102.0), c("B", 51.0)]),
            Ok(false)
        ); // 60 dropped, new base
        assert_eq!((w.len(), w.skipped_bars()), (0, 1));
        assert_eq!(w.push_closes(180, &[c("A", 103.0), c("B", 52.0)]), Ok(true));
        let row = w.rows().next().unwrap().to_vec();
        assert!(close_to(row[0], (103.0f64 / 102.0).ln(), 1e-15));
        assert!(close_to(row[1], (52.0f64 / 51.0).ln(), 1e-15));
    }

    #[test]
    fn stale_closes_are_ignored_and_bad_closes_are_refused_without_changing_the_window() {
        let mut w = ReturnWindow::new(vec!["A".into(), "B".into()], 10);
        w.push_closes(100, &[c("A", 10.0), c("B", 20.0)]).unwrap();
        w.push_closes(200, &[c("A", 11.0), c("B", 21.0)]).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w.push_closes(200, &[c("A", 12.0), c("B", 22.0)]), Ok(false)); // repeated
        assert_eq!(w.push_closes(50, &[c("A", 12.0), c("B", 22.0)]), Ok(false)); // older
        assert_eq!(w.push_closes(300, &[c("A", 12.0)]), Ok(false));
        assert_eq!(w.push_closes(250, &[c("B", 1.0)]), Ok(false)); // before the pending bar time
        assert_eq!(w.push_closes(300, &[]), Ok(false));
        assert_eq!(
            w.push_closes(300, &[c("B", 1.0), c("XAU", 5.0)]),
            Err(CovError::UnknownSymbol("XAU".into()))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                w.push_closes(300, &[c("B", bad)]),
                Err(CovError::BadClose { symbol, .. }) if symbol == "B"
            ));
        }
        assert_eq!((w.len(), w.skipped_bars()), (1, 0));
        // The pending bar at 300 still completes from where it was; the last close given for B wins.
        assert_eq!(w.push_closes(300, &[c("B", 1.0), c("B", 22.0)]), Ok(true));
        let last = w.rows().last().unwrap().to_vec();
        assert!(close_to(last[0], (12.0f64 / 11.0).ln(), 1e-15));
        assert!(close_to(last[1], (22.0f64 / 21.0).ln(), 1e-15));
        // Extreme but valid closes give finite returns.
        w.push_closes(400, &[c("A", f64::MAX), c("B", f64::MIN_POSITIVE)])
            .unwrap();
        assert!(w.rows().last().unwrap().iter().all(|v| v.is_finite()));
    }

    mod properties {
        use super::super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn rows_of(
            values: impl Strategy<Value = f64> + Clone,
        ) -> impl Strategy<Value = (usize, Vec<Vec<f64>>)> {
            (1usize..7).prop_flat_map(move |p| (Just(p), vec(vec(values.clone(), p), 0..10)))
        }

        fn check_well_formed(cov: &Covariance, p: usize, n: usize) -> Result<(), TestCaseError> {
            prop_assert_eq!(cov.observations, n);
            prop_assert!(
                (0.0..=1.0).contains(&cov.shrinkage),
                "shrinkage {}",
                cov.shrinkage
            );
            prop_assert_eq!(cov.matrix.len(), p);
            for i in 0..p {
                prop_assert_eq!(cov.matrix[i].len(), p);
                prop_assert!(cov.matrix[i][i] >= 0.0, "diagonal {}", cov.matrix[i][i]);
                for j in 0..p {
                    prop_assert!(cov.matrix[i][j].is_finite());
                    prop_assert_eq!(cov.matrix[i][j].to_bits(), cov.matrix[j][i].to_bits());
                }
            }
            for row in cov.correlations() {
                for v in row {
                    prop_assert!((-1.0..=1.0).contains(&v));
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

            #[test]
            fn random_bounded_returns_give_a_symmetric_matrix_with_a_non_negative_diagonal(
                (p, rows) in rows_of(prop_oneof![4 => -1e3..1e3f64, 1 => Just(0.0), 1 => Just(0.01)]),
                exposures in vec(-1e9..1e9f64, 6),
            ) {
                let n = rows.len();
                match ledoit_wolf(&rows, (0..p).map(|i| format!("S{i}")).collect()) {
                    Ok(cov) => {
                        prop_assert!(n >= 2);
                        check_well_formed(&cov, p, n)?;
                        // Positive semi-definite: every portfolio has a finite, non-negative volatility.
                        let w: Vec<(String, f64)> =
                            exposures.iter().take(p).enumerate().map(|(i, x)| (format!("S{i}"), *x)).collect();
                        let vol = portfolio_volatility(&cov, &w);
                        prop_assert!(matches!(vol, Ok(v) if v.is_finite() && v >= 0.0), "{:?}", vol);
                    }
                    Err(e) => prop_assert_eq!(e, CovError::TooFewRows { rows: n }),
                }
            }

            #[test]
            fn any_finite_returns_never_panic_and_give_a_well_formed_matrix_or_an_overflow(
                (p, rows) in rows_of(
                    prop::num::f64::POSITIVE
                        | prop::num::f64::NEGATIVE
                        | prop::num::f64::NORMAL
                        | prop::num::f64::SUBNORMAL
                        | prop::num::f64::ZERO
                ),
            ) {
                let n = rows.len();
                match ledoit_wolf(&rows, (0..p).map(|i| format!("S{i}")).collect()) {
                    Ok(cov) => check_well_formed(&cov, p, n)?,
                    Err(CovError::TooFewRows { rows }) => prop_assert!(rows == n && n < 2),
                    Err(e) => prop_assert_eq!(e, CovError::Overflow),
                }
            }

            #[test]
            fn arbitrary_closes_never_panic_the_window(
                bars in vec((0i64..20, vec((0usize..4, prop_oneof![1e-3..1e3f64, Just(0.0), Just(f64::NAN)]), 0..4)), 0..40),
            ) {
                let symbols: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
                let mut w = ReturnWindow::new(symbols, 8);
                for (time, closes) in bars {
                    let closes: Vec<(String, f64)> =
                        closes.into_iter().map(|(i, v)| (["A", "B", "C", "D"][i].to_string(), v)).collect();
                    let _ = w.push_closes(time * 60_000, &closes);
                    prop_assert!(w.len() <= 8);
                }
                for row in w.rows() {
                    prop_assert!(row.len() == 3 && row.iter().all(|v| v.is_finite()));
                }
                if let Ok(cov) = w.covariance() {
                    check_well_formed(&cov, 3, w.len())?;
                }
            }
        }
    }
}
