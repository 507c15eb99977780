//! Self-contained HTML reports for backtests and optimisations.
//!
//! A report is something a user mails to a colleague, attaches to a ticket or archives next to a strategy's
//! source, and opens offline — possibly years later, in whatever browser exists then. So [`html`] writes ONE
//! HTML5 file that depends on nothing:
//! - no JavaScript: nothing to break when browsers change, nothing a mail filter strips, nothing to audit;
//! - no external references (no `src=`, `href=`, `url(`, no fonts, style sheets or images from anywhere):
//!   nothing that can rot, be blocked, or tell a server that the report was opened;
//! - every chart is inline SVG written here by hand. Inline SVG in HTML5 needs no namespace declaration;
//!   text uses the reader's font with fixed anchors, so no font metrics are needed; each chart has a
//!   `viewBox` and CSS `max-width:100%`, so it scales down to a phone's width.
//!
//! Inputs are plain types (`f64`, `i64`, `String`) so callers convert from their decimals and symbols; every
//! caller-supplied text is HTML-escaped (by maud's templates on the page, by the charts' own escape in the
//! SVG). Times are milliseconds since the Unix epoch and shown in UTC, through jiff's calendar.
//!
//! Per run the page shows the summary table, the equity curve, the drawdown (equity minus its running peak,
//! filled below zero), the monthly returns (see [`monthly_returns`]) and the trade list (at most
//! [`MAX_TRADE_ROWS`] rows, saying how many were left out). Long curves are downsampled for drawing to at most
//! ~1 500 points by keeping each bucket's minimum and maximum, so drawdown troughs and peaks stay visible.
//!
//! For an optimisation it shows the best 50 candidates by score (a higher score is better; infeasible
//! candidates are listed where their score puts them, marked), a heatmap of the best feasible score over the
//! two parameters with the most distinct values (or a bar chart of score against the only parameter), and,
//! with walk-forward, the windows, the efficiency and the stitched out-of-sample equity with the windows'
//! boundaries. Non-finite scores count as missing. Empty inputs give a short note instead of a chart.
//!
//! The code is split by concern: `page` writes the page, its sections and tables; `charts` draws the
//! inline SVG charts; `time` turns times into UTC dates and chooses the time axis' ticks; `format`
//! formats numbers. This file holds the input types and the entry points.

/// `write!` into a `String`, which cannot fail (the caller imports `std::fmt::Write`).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

mod charts;
mod format;
mod page;
mod time;

/// One backtest run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// The run's heading, e.g. "ma_cross on EURUSD M5".
    pub heading: String,
    /// Label and value pairs, already formatted by the caller, shown in this order.
    pub summary: Vec<(String, String)>,
    /// Equity before the first trade, in account money: the base of the first month's return.
    pub starting_balance: f64,
    /// (time in ms since the Unix epoch, equity in account money). Non-finite values are skipped; points
    /// are put in time order.
    pub equity: Vec<(i64, f64)>,
    /// Fills, shown in the order given.
    pub trades: Vec<TradeRow>,
}

/// One line of the trade list; the caller formats volumes, prices and money.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradeRow {
    /// Ms since the Unix epoch, shown in UTC.
    pub time_msc: i64,
    pub strategy: String,
    pub symbol: String,
    pub side: String,
    pub volume: String,
    pub price: String,
    /// "in", "out", "inout" …
    pub entry: String,
    pub commission: String,
    /// Shown in the "negative" style when it starts with a minus sign.
    pub profit: String,
}

/// An optimisation: every candidate evaluated, and optionally a walk-forward analysis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Optimisation {
    /// What the score measures, e.g. "sharpe". A higher score is better.
    pub objective: String,
    /// How candidates were chosen, e.g. "grid" or "random (500)".
    pub method: String,
    /// Names of the parameters, in the order of [`Candidate::params`].
    pub param_names: Vec<String>,
    pub results: Vec<Candidate>,
    pub walk_forward: Option<WalkForward>,
}

/// One evaluated parameter set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    pub params: Vec<f64>,
    /// The objective's value; `None`, NaN and infinities count as missing.
    pub score: Option<f64>,
    pub net_profit: f64,
    pub trades: u64,
    /// Shown as given (the caller decides money or percent).
    pub max_drawdown: f64,
    /// False when the candidate broke a constraint (e.g. too few trades); it is never a heatmap cell's value.
    pub feasible: bool,
}

/// A walk-forward analysis: optimise in-sample, trade the winner out-of-sample, window after window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalkForward {
    /// E.g. "rolling" or "anchored".
    pub mode: String,
    pub windows: Vec<Window>,
    /// The out-of-sample equity of all windows joined: (ms since the Unix epoch, equity).
    pub stitched: Vec<(i64, f64)>,
    /// Walk-forward efficiency as the caller computed it, shown as a plain number.
    pub efficiency: Option<f64>,
}

/// One walk-forward window; times in ms since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub in_from_ms: i64,
    pub in_to_ms: i64,
    pub out_from_ms: i64,
    pub out_to_ms: i64,
    /// The in-sample winner, in the order of [`Optimisation::param_names`].
    pub params: Vec<f64>,
    pub in_score: Option<f64>,
    pub out_net_profit: f64,
}

/// Everything one report file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub title: String,
    pub runs: Vec<Run>,
    pub optimisation: Option<Optimisation>,
}

/// The trade list shows at most this many rows (the first ones) and says how many were left out.
pub const MAX_TRADE_ROWS: usize = 5_000;
/// The candidates table shows this many, best score first.
pub const MAX_CANDIDATE_ROWS: usize = 50;

/// The whole report: one HTML5 page with inline CSS and SVG, and nothing it has to fetch.
pub fn html(doc: &Document) -> String {
    page::page(doc)
}

/// One row of [`monthly_returns`]: (year, January..December in %, the year in %).
pub type MonthlyReturns = (i32, [Option<f64>; 12], Option<f64>);

/// Returns per calendar month (UTC) and per year, in percent, for the years that have data.
///
/// A month's return is its last equity over the equity at its start, minus one: the start is the last
/// equity before the month (which carries over months without data), or `starting_balance` for the first
/// month. Months without data are `None`. The year's return is the year's last equity over the equity at
/// the year's start (the last equity before it, or `starting_balance`), minus one — the same as compounding
/// its months, as each month starts where the one before ended. A return whose base is not positive is
/// `None`. Non-finite equity values are skipped; points are taken in time order.
pub fn monthly_returns(
    starting_balance: f64,
    equity: &[(i64, f64)],
) -> Vec<(i32, [Option<f64>; 12], Option<f64>)> {
    let curve = clean_curve(equity);
    // (year, month 0..12, last equity of the month)
    let mut months: Vec<(i32, usize, f64)> = Vec::new();
    for &(t, v) in &curve {
        let c = time::utc(t);
        let (y, m) = (
            i32::from(c.year()),
            usize::from(c.month().unsigned_abs()) - 1,
        );
        match months.last_mut() {
            Some(last) if last.0 == y && last.1 == m => last.2 = v,
            _ => months.push((y, m, v)),
        }
    }
    let ret = |start: f64, end: f64| {
        (start > 0.0 && start.is_finite()).then(|| (end / start - 1.0) * 100.0)
    };
    let mut rows: Vec<MonthlyReturns> = Vec::new();
    let mut prev = starting_balance;
    let mut year_start = starting_balance;
    for (y, m, end) in months {
        if rows.last().is_none_or(|r| r.0 != y) {
            rows.push((y, [None; 12], None));
            year_start = prev;
        }
        if let Some(row) = rows.last_mut() {
            row.1[m] = ret(prev, end);
            row.2 = ret(year_start, end);
        }
        prev = end;
    }
    rows
}

/// `YYYY-MM-DD HH:MM` in UTC of a time in ms since the Unix epoch, as the report shows window bounds.
pub fn date_time(ms: i64) -> String {
    time::fmt_minute(ms)
}

fn param_name(opt: &Optimisation, i: usize) -> String {
    match opt.param_names.get(i) {
        Some(n) if !n.trim().is_empty() => n.clone(),
        _ => format!("param {}", i + 1),
    }
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

/// Finite points in time order (stable, so equal times keep their order).
fn clean_curve(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut curve: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if !curve.windows(2).all(|w| w[0].0 <= w[1].0) {
        curve.sort_by_key(|p| p.0);
    }
    curve
}

#[cfg(test)]
mod fixtures {
    //! Inputs and page probes shared by the tests of this module's files.
    use super::time::{HOUR_MS, MIN_MS};
    use super::*;

    pub(super) fn ms(y: i16, m: i8, d: i8) -> i64 {
        jiff::civil::date(y, m, d)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .expect("a UTC date")
            .timestamp()
            .as_millisecond()
    }

    pub(super) fn trade(i: i64, strategy: &str, symbol: &str) -> TradeRow {
        TradeRow {
            time_msc: ms(2024, 1, 2) + i * HOUR_MS,
            strategy: strategy.to_owned(),
            symbol: symbol.to_owned(),
            side: "buy".to_owned(),
            volume: "0.10".to_owned(),
            price: "1.08500".to_owned(),
            entry: "in".to_owned(),
            commission: "-0.70".to_owned(),
            profit: if i % 2 == 0 { "12.50" } else { "-3.20" }.to_owned(),
        }
    }

    pub(super) fn run() -> Run {
        Run {
            heading: "ma_cross on EURUSD M5".to_owned(),
            summary: vec![
                ("Net profit".to_owned(), "1 000.00".to_owned()),
                ("Trades".to_owned(), "2".to_owned()),
            ],
            starting_balance: 100_000.0,
            equity: vec![
                (ms(2024, 1, 2), 100_000.0),
                (ms(2024, 1, 20), 100_800.0),
                (ms(2024, 2, 10), 99_500.0),
                (ms(2024, 3, 5), 101_000.0),
            ],
            trades: vec![
                trade(0, "ma_cross", "EURUSD"),
                trade(1, "ma_cross", "EURUSD"),
            ],
        }
    }

    pub(super) fn candidate(params: &[f64], score: Option<f64>, feasible: bool) -> Candidate {
        Candidate {
            params: params.to_vec(),
            score,
            net_profit: score.unwrap_or(0.0) * 100.0,
            trades: 42,
            max_drawdown: 250.0,
            feasible,
        }
    }

    pub(super) fn walk_forward() -> WalkForward {
        WalkForward {
            mode: "rolling".to_owned(),
            windows: vec![
                Window {
                    in_from_ms: ms(2024, 1, 1),
                    in_to_ms: ms(2024, 3, 1),
                    out_from_ms: ms(2024, 3, 1),
                    out_to_ms: ms(2024, 4, 1) + 13 * HOUR_MS + 5 * MIN_MS,
                    params: vec![10.0, 30.0],
                    in_score: Some(1.5),
                    out_net_profit: 420.0,
                },
                Window {
                    in_from_ms: ms(2024, 2, 1),
                    in_to_ms: ms(2024, 4, 1) + 13 * HOUR_MS + 5 * MIN_MS,
                    out_from_ms: ms(2024, 4, 1) + 13 * HOUR_MS + 5 * MIN_MS,
                    out_to_ms: ms(2024, 5, 1),
                    params: vec![20.0, 40.0],
                    in_score: Some(f64::NAN),
                    out_net_profit: -120.5,
                },
            ],
            stitched: vec![
                (ms(2024, 3, 1), 100_000.0),
                (ms(2024, 3, 20), 100_300.0),
                (ms(2024, 4, 1) + 13 * HOUR_MS + 5 * MIN_MS, 100_420.0),
                (ms(2024, 4, 20), 100_200.0),
                (ms(2024, 5, 1), 100_299.5),
            ],
            efficiency: Some(0.63),
        }
    }

    /// fast ∈ {5, 10, 15, 20} (4 values) × slow ∈ {30, 40, 50} (3 values), a third parameter varying.
    pub(super) fn optimisation(with_walk_forward: bool) -> Optimisation {
        let mut results = Vec::new();
        for (i, fast) in [5.0, 10.0, 15.0, 20.0].into_iter().enumerate() {
            for (j, slow) in [30.0, 40.0, 50.0].into_iter().enumerate() {
                if (fast, slow) == (20.0, 50.0) {
                    continue; // a cell without any candidate
                }
                let feasible = (fast, slow) != (5.0, 30.0); // a cell with only an infeasible candidate
                let score = 0.1 * (i + j) as f64;
                results.push(candidate(&[fast, slow, 1.0], Some(score), feasible));
                results.push(candidate(&[fast, slow, 2.0], Some(score - 0.05), feasible));
            }
        }
        // The best: fast = 15, slow = 40 with stop = 3 beats every other candidate.
        results.push(candidate(&[15.0, 40.0, 3.0], Some(2.5), true));
        // Infeasible with a higher score: listed first but marked, never a cell's value.
        results.push(candidate(&[10.0, 40.0, 3.0], Some(9.0), false));
        Optimisation {
            objective: "sharpe".to_owned(),
            method: "grid".to_owned(),
            param_names: vec!["fast".to_owned(), "slow".to_owned(), "stop".to_owned()],
            results,
            walk_forward: with_walk_forward.then(walk_forward),
        }
    }

    pub(super) fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    /// The `<svg …>…</svg>` of the figure with this class.
    pub(super) fn figure<'a>(page: &'a str, class: &str) -> &'a str {
        let start = page
            .find(&format!("<figure class=\"chart {class}\""))
            .expect("figure present");
        let end = start + page[start..].find("</figure>").expect("figure closed");
        &page[start..end]
    }

    pub(super) fn polyline_points(svg: &str) -> usize {
        let start = svg
            .find("<polyline class=\"line\" points=\"")
            .expect("polyline")
            + 31;
        let end = start + svg[start..].find('"').expect("closing quote");
        svg[start..end].split(' ').count()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::time::HOUR_MS;
    use super::*;

    #[test]
    fn monthly_returns_on_a_hand_made_curve_equal_the_hand_computation() {
        let curve = [
            (ms(2024, 1, 5), 100_500.0),
            (ms(2024, 1, 31) + 23 * HOUR_MS, 101_000.0),
            (ms(2024, 2, 1), f64::NAN), // skipped
            (ms(2024, 2, 10), 99_990.0),
            // no data in March
            (ms(2024, 4, 1), 100_989.9),
            (ms(2025, 1, 15), 98_980.0),
        ];
        let rows = monthly_returns(100_000.0, &curve);
        assert_eq!(rows.len(), 2);
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);

        let (y, m, total) = rows[0];
        assert_eq!(y, 2024);
        assert!(close(m[0], 1.0), "Jan {:?}", m[0]); // 101 000 / 100 000 − 1
        assert!(close(m[1], -1.0), "Feb {:?}", m[1]); // 99 990 / 101 000 − 1
        assert_eq!(m[2], None); // March: no data
        assert!(close(m[3], 1.0), "Apr {:?}", m[3]); // 100 989.9 / 99 990 − 1
        assert!(m[4..].iter().all(Option::is_none));
        assert!(close(total, 0.9899), "2024 {total:?}"); // 100 989.9 / 100 000 − 1
        let compounded = (1.01 * 0.99 * 1.01 - 1.0) * 100.0;
        assert!(close(total, compounded));

        let (y, m, total) = rows[1];
        assert_eq!(y, 2025);
        let jan = (98_980.0 / 100_989.9 - 1.0) * 100.0;
        assert!(close(m[0], jan));
        assert!(close(total, jan));
        assert!(m[1..].iter().all(Option::is_none));

        // The table shows them, negative ones styled, empty cells empty.
        let doc = Document {
            title: "m".to_owned(),
            runs: vec![Run {
                starting_balance: 100_000.0,
                equity: curve.to_vec(),
                ..Run::default()
            }],
            optimisation: None,
        };
        let page = html(&doc);
        assert!(page.contains("<td class=\"pos\">1.00</td><td class=\"neg\">-1.00</td><td></td>"));
        assert!(page.contains("<td class=\"year pos\">0.99</td>"));
        assert!(page.contains("<td class=\"year neg\">-1.99</td>"));

        assert!(monthly_returns(100_000.0, &[]).is_empty());
        assert_eq!(monthly_returns(0.0, &curve)[0].1[0], None);
    }
}
