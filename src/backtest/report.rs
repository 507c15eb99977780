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
//! caller-supplied text is HTML-escaped. Times are milliseconds since the Unix epoch and shown in UTC,
//! formatted with `domain::calendar`'s days-to-civil conversion (no calendar crate).
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

use std::fmt::Write as _;

use crate::domain::calendar::{civil_from_days, days_from_civil};

/// `write!` into a `String`, which cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

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
/// Curves are drawn from at most this many buckets, each contributing its minimum and maximum.
const DRAW_BUCKETS: usize = 750;
/// A heatmap axis with more distinct values than this is split into [`AXIS_BINS`] equal-width bins.
const MAX_AXIS_CELLS: usize = 60;
const AXIS_BINS: usize = 40;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const SEC_MS: i64 = 1_000;
const MIN_MS: i64 = 60 * SEC_MS;
const HOUR_MS: i64 = 60 * MIN_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

// Chart geometry, in viewBox units.
const W: f64 = 800.0;
const H: f64 = 320.0;
const ML: f64 = 84.0;
const MR: f64 = 28.0;
const MT: f64 = 36.0;
const MB: f64 = 40.0;
/// Heatmap: taller, with room for the legend on the right and the parameter's name below.
const HM_H: f64 = 390.0;
const HM_MR: f64 = 140.0;
const HM_MB: f64 = 52.0;

const GREY: &str = "#d9d9d9";
const TEXT: &str = "#555";

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1d1d1f;background:#fff;\
margin:0 auto;padding:1rem;max-width:76rem;line-height:1.4}\
h1{font-size:1.6rem;margin:.2rem 0 1rem}\
h2{font-size:1.3rem;margin:2rem 0 .6rem;padding-bottom:.2rem;border-bottom:2px solid #ccc}\
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}\
.scroll{overflow-x:auto;max-width:100%}\
table{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}\
th,td{padding:.2rem .6rem;border-bottom:1px solid #e2e2e2;text-align:right;white-space:nowrap}\
thead th{background:#f4f4f6;font-weight:600}\
.l,table.kv th{text-align:left}\
table.kv td{text-align:left}\
.neg{color:#b3261e}.pos{color:#1e6b30}\
td.year{font-weight:600}\
tr.infeasible td{color:#777;background:#faf7f7}\
.flag{color:#b3261e;font-weight:600}\
figure{margin:.6rem 0;max-width:100%}\
figcaption{font-size:.8rem;color:#666}\
svg{display:block;width:100%;max-width:100%;height:auto}\
.note{color:#666;font-style:italic}\
footer{margin-top:3rem;color:#777;font-size:.8rem}\
@media print{.scroll{overflow:visible}}";

/// The whole report: one HTML5 page with inline CSS and SVG, and nothing it has to fetch.
pub fn html(doc: &Document) -> String {
    let title = if doc.title.trim().is_empty() {
        "Report"
    } else {
        doc.title.as_str()
    };
    let mut out = String::with_capacity(64 * 1024);
    put!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    if doc.runs.is_empty() && doc.optimisation.is_none() {
        note(&mut out, "Nothing to report: no runs and no optimisation.");
    }
    for (i, run) in doc.runs.iter().enumerate() {
        run_section(&mut out, run, i);
    }
    if let Some(opt) = &doc.optimisation {
        optimisation_section(&mut out, opt);
    }
    out.push_str(
        "<footer><p>Self-contained report by trellis: no scripts, no external resources; charts are \
         inline SVG; all times are UTC.</p></footer>\n</body>\n</html>\n",
    );
    out
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
        let c = Civil::of(t);
        let (y, m) = (c.year as i32, c.month as usize - 1);
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

// ---------------------------------------------------------------------------------------------------------
// Runs

fn run_section(out: &mut String, run: &Run, index: usize) {
    let heading = if run.heading.trim().is_empty() {
        format!("Run {}", index + 1)
    } else {
        run.heading.clone()
    };
    put!(out, "<section class=\"run\">\n<h2>{}</h2>\n", esc(&heading));

    if run.summary.is_empty() {
        note(out, "No summary figures.");
    } else {
        out.push_str("<div class=\"scroll\"><table class=\"kv\"><tbody>\n");
        for (k, v) in &run.summary {
            put!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n",
                esc(k),
                esc(v)
            );
        }
        out.push_str("</tbody></table></div>\n");
    }

    let curve = clean_curve(&run.equity);
    out.push_str("<h3>Equity</h3>\n");
    let baseline = run
        .starting_balance
        .is_finite()
        .then_some((run.starting_balance, "starting balance"));
    let equity = TimeChart {
        title: "Equity",
        class: "equity",
        points: &curve,
        baseline,
        fill_to_zero: false,
        markers: &[],
        colour: "#1f5fa8",
    };
    chart_or_note(
        out,
        time_chart(&equity),
        "No equity curve to draw (it needs points at two different times).",
    );

    out.push_str("<h3>Drawdown</h3>\n");
    let dd = drawdown(&curve);
    let drawdown = TimeChart {
        title: "Drawdown (equity minus running peak)",
        class: "drawdown",
        points: &dd,
        baseline: None,
        fill_to_zero: true,
        markers: &[],
        colour: "#b3261e",
    };
    chart_or_note(
        out,
        time_chart(&drawdown),
        "No drawdown to draw (it needs equity at two different times).",
    );

    out.push_str("<h3>Monthly returns (%)</h3>\n");
    monthly_table(out, &monthly_returns(run.starting_balance, &curve));

    put!(out, "<h3>Trades ({})</h3>\n", fmt_count(run.trades.len()));
    trade_table(out, &run.trades);
    out.push_str("</section>\n");
}

/// Equity minus its running peak (zero or below); the peak starts at the first point.
fn drawdown(curve: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut peak = f64::NEG_INFINITY;
    curve
        .iter()
        .map(|&(t, v)| {
            peak = peak.max(v);
            (t, v - peak)
        })
        .collect()
}

fn monthly_table(out: &mut String, rows: &[MonthlyReturns]) {
    if rows.is_empty() {
        note(out, "No equity data, so no monthly returns.");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"monthly\"><thead><tr><th class=\"l\">Year</th>",
    );
    for m in MONTHS {
        put!(out, "<th>{m}</th>");
    }
    out.push_str("<th>Whole year</th></tr></thead><tbody>\n");
    for (year, months, total) in rows {
        put!(out, "<tr><th class=\"l\" scope=\"row\">{year}</th>");
        for m in months {
            pct_cell(out, *m, "");
        }
        pct_cell(out, *total, "year");
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

fn pct_cell(out: &mut String, v: Option<f64>, class: &str) {
    let text = v
        .filter(|v| v.is_finite())
        .map(|v| fmt_num(v, 2))
        .unwrap_or_default();
    let sign = if is_negative_text(&text) {
        "neg"
    } else if text.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        "pos"
    } else {
        ""
    };
    let classes: Vec<&str> = [class, sign]
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    if classes.is_empty() {
        put!(out, "<td>{text}</td>");
    } else {
        put!(out, "<td class=\"{}\">{text}</td>", classes.join(" "));
    }
}

fn trade_table(out: &mut String, trades: &[TradeRow]) {
    if trades.is_empty() {
        note(out, "No trades.");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"trades\"><thead><tr><th class=\"l\">Time (UTC)</th>\
         <th class=\"l\">Strategy</th><th class=\"l\">Symbol</th><th class=\"l\">Side</th><th>Volume</th>\
         <th>Price</th><th class=\"l\">Entry</th><th>Commission</th><th>Profit</th></tr></thead><tbody>\n",
    );
    for t in trades.iter().take(MAX_TRADE_ROWS) {
        let profit_class = if is_negative_text(&t.profit) {
            " class=\"neg\""
        } else {
            ""
        };
        put!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             <td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td{profit_class}>{}</td></tr>\n",
            fmt_msc(t.time_msc),
            esc(&t.strategy),
            esc(&t.symbol),
            esc(&t.side),
            esc(&t.volume),
            esc(&t.price),
            esc(&t.entry),
            esc(&t.commission),
            esc(&t.profit)
        );
    }
    out.push_str("</tbody></table></div>\n");
    if trades.len() > MAX_TRADE_ROWS {
        put!(
            out,
            "<p class=\"note\">Showing the first {} of {} trades; {} more were left out.</p>\n",
            fmt_count(MAX_TRADE_ROWS),
            fmt_count(trades.len()),
            fmt_count(trades.len() - MAX_TRADE_ROWS)
        );
    }
}

fn is_negative_text(s: &str) -> bool {
    let s = s.trim_start();
    s.starts_with('-') || s.starts_with('\u{2212}')
}

// ---------------------------------------------------------------------------------------------------------
// Optimisation

fn optimisation_section(out: &mut String, opt: &Optimisation) {
    out.push_str("<section class=\"optimisation\">\n<h2>Optimisation</h2>\n");
    let feasible = opt.results.iter().filter(|c| c.feasible).count();
    put!(
        out,
        "<div class=\"scroll\"><table class=\"kv\"><tbody>\n\
         <tr><th scope=\"row\">Objective</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Method</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Candidates</th><td>{} ({} feasible)</td></tr>\n\
         </tbody></table></div>\n",
        esc(&opt.objective),
        esc(&opt.method),
        fmt_count(opt.results.len()),
        fmt_count(feasible)
    );

    let nparams = opt
        .results
        .iter()
        .map(|c| c.params.len())
        .max()
        .unwrap_or(0)
        .max(opt.param_names.len());
    let names: Vec<String> = (0..nparams).map(|i| param_name(opt, i)).collect();

    if opt.results.is_empty() {
        if opt.walk_forward.is_some() {
            note(
                out,
                "No overall candidate list: each walk-forward window's winner is in the table below.",
            );
        } else {
            note(out, "No candidates were evaluated.");
        }
    } else {
        candidates_table(out, opt, &names);

        let mut axes: Vec<Axis> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Axis::new(name, i, &opt.results))
            .filter(|a| !a.cells.is_empty())
            .collect();
        // Most distinct values first; ties keep the parameters' order.
        axes.sort_by_key(|a| std::cmp::Reverse(a.distinct));
        match (axes.first(), axes.get(1)) {
            (Some(x), Some(y)) if y.distinct >= 2 => {
                put!(
                    out,
                    "<h3>Best score by {} and {}</h3>\n",
                    esc(&x.name),
                    esc(&y.name)
                );
                out.push_str(&heatmap(opt, x, y));
            }
            (Some(x), _) => {
                put!(out, "<h3>Best score by {}</h3>\n", esc(&x.name));
                out.push_str(&score_chart(opt, x));
            }
            _ => note(out, "No parameter values to chart."),
        }
    }

    if let Some(wf) = &opt.walk_forward {
        walk_forward_section(out, wf, &names);
    }
    out.push_str("</section>\n");
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

/// Candidate indices, best first: finite scores descending, then missing scores; ties put feasible first
/// and otherwise keep the input order.
fn ranking(results: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&results[a], &results[b]);
        let by_score = match (finite(ca.score), finite(cb.score)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_score.then(cb.feasible.cmp(&ca.feasible))
    });
    order
}

fn candidates_table(out: &mut String, opt: &Optimisation, names: &[String]) {
    let order = ranking(&opt.results);
    let shown = order.len().min(MAX_CANDIDATE_ROWS);
    put!(
        out,
        "<h3>Best {} of {} candidates by {}</h3>\n",
        fmt_count(shown),
        fmt_count(order.len()),
        if opt.objective.trim().is_empty() {
            "score".to_owned()
        } else {
            esc(&opt.objective)
        }
    );
    out.push_str("<div class=\"scroll\"><table class=\"candidates\"><thead><tr><th>#</th>");
    for n in names {
        put!(out, "<th>{}</th>", esc(n));
    }
    out.push_str(
        "<th>Score</th><th>Net profit</th><th>Trades</th><th>Max drawdown</th><th class=\"l\">Feasible</th>\
         </tr></thead><tbody>\n",
    );
    for (rank, &i) in order.iter().take(shown).enumerate() {
        let c = &opt.results[i];
        if c.feasible {
            out.push_str("<tr>");
        } else {
            out.push_str("<tr class=\"infeasible\">");
        }
        put!(out, "<td>{}</td>", rank + 1);
        for p in 0..names.len() {
            match c.params.get(p) {
                Some(v) => put!(out, "<td>{}</td>", fmt_sig(*v, 10)),
                None => out.push_str("<td></td>"),
            }
        }
        let score = finite(c.score).map_or_else(|| "n/a".to_owned(), |s| fmt_sig(s, 6));
        put!(
            out,
            "<td>{score}</td><td{}>{}</td><td>{}</td><td>{}</td>",
            if c.net_profit < 0.0 {
                " class=\"neg\""
            } else {
                ""
            },
            fmt_num(c.net_profit, 2),
            c.trades,
            fmt_num(c.max_drawdown, 2)
        );
        if c.feasible {
            out.push_str("<td class=\"l\">yes</td></tr>\n");
        } else {
            out.push_str("<td class=\"l\"><span class=\"flag\">infeasible</span></td></tr>\n");
        }
    }
    out.push_str("</tbody></table></div>\n");
}

/// One axis of the heatmap or score chart: the distinct values of a parameter, or equal-width bins when
/// there are too many of them (e.g. random search over a continuous range).
struct Axis {
    name: String,
    param: usize,
    /// Representative value per cell: the distinct value, or the bin's centre.
    cells: Vec<f64>,
    /// (lowest value, bin width) when binned.
    bins: Option<(f64, f64)>,
    distinct: usize,
}

impl Axis {
    fn new(name: &str, param: usize, results: &[Candidate]) -> Self {
        let mut values: Vec<f64> = results
            .iter()
            .filter_map(|c| c.params.get(param).copied())
            .filter(|v| v.is_finite())
            .map(|v| v + 0.0) // -0.0 and 0.0 are one value
            .collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let distinct = values.len();
        let (lo, hi) = match (values.first(), values.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => (0.0, 0.0),
        };
        let width = (hi - lo) / AXIS_BINS as f64;
        if distinct > MAX_AXIS_CELLS && width.is_finite() && width > 0.0 {
            let cells = (0..AXIS_BINS)
                .map(|i| lo + (i as f64 + 0.5) * width)
                .collect();
            Self {
                name: name.to_owned(),
                param,
                cells,
                bins: Some((lo, width)),
                distinct,
            }
        } else {
            Self {
                name: name.to_owned(),
                param,
                cells: values,
                bins: None,
                distinct,
            }
        }
    }

    fn index(&self, params: &[f64]) -> Option<usize> {
        let v = *params.get(self.param)? + 0.0;
        if !v.is_finite() {
            return None;
        }
        match self.bins {
            Some((lo, width)) => {
                let i = ((v - lo) / width).floor().max(0.0) as usize;
                Some(i.min(self.cells.len().saturating_sub(1)))
            }
            None => self.cells.binary_search_by(|c| c.total_cmp(&v)).ok(),
        }
    }

    fn label(&self, i: usize) -> String {
        let v = self.cells.get(i).copied().unwrap_or(f64::NAN);
        match self.bins {
            Some(_) => format!("≈{}", fmt_sig(v, 3)),
            None => fmt_sig(v, 10),
        }
    }
}

/// Indices to label on an axis of `n` cells: all when there are at most six, else every k-th from the
/// first, k chosen so that 4–6 are labelled and the labelled values step regularly.
fn label_indices(n: usize) -> Vec<usize> {
    let k = n.div_ceil(6).max(1);
    (0..n).step_by(k).collect()
}

/// Best feasible finite score per cell (row-major, `y` outer), with the candidate it came from, and how
/// many candidates (feasible or not) fell in each cell.
fn best_by_cell(
    results: &[Candidate],
    ax: &Axis,
    ay: Option<&Axis>,
) -> (Vec<Option<(f64, usize)>>, Vec<usize>) {
    let nx = ax.cells.len();
    let ny = ay.map_or(1, |a| a.cells.len());
    let mut grid: Vec<Option<(f64, usize)>> = vec![None; nx * ny];
    let mut tried = vec![0usize; nx * ny];
    for (k, c) in results.iter().enumerate() {
        let Some(ix) = ax.index(&c.params) else {
            continue;
        };
        let iy = match ay {
            Some(a) => match a.index(&c.params) {
                Some(i) => i,
                None => continue,
            },
            None => 0,
        };
        let cell = iy * nx + ix;
        tried[cell] += 1;
        let Some(s) = finite(c.score).filter(|_| c.feasible) else {
            continue;
        };
        match grid[cell] {
            Some((b, _)) if b >= s => {}
            _ => grid[cell] = Some((s, k)),
        }
    }
    (grid, tried)
}

/// The best cell (first on ties) and the score range over all scored cells.
fn best_cell(grid: &[Option<(f64, usize)>]) -> Option<(usize, f64, f64)> {
    let mut best: Option<(usize, f64)> = None;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, c) in grid.iter().enumerate() {
        if let Some((s, _)) = *c {
            lo = lo.min(s);
            hi = hi.max(s);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
    }
    best.map(|(i, _)| (i, lo, hi))
}

fn params_text(names: &[String], params: &[f64]) -> String {
    params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let name = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("param {}", i + 1));
            format!("{} = {}", name, fmt_sig(*v, 10))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn heatmap(opt: &Optimisation, ax: &Axis, ay: &Axis) -> String {
    let (nx, ny) = (ax.cells.len(), ay.cells.len());
    let (grid, tried) = best_by_cell(&opt.results, ax, Some(ay));
    let best = best_cell(&grid);
    let pw = W - ML - HM_MR;
    let ph = HM_H - MT - HM_MB;
    let (cw, ch) = (pw / nx as f64, ph / ny as f64);
    let cell_x = |ix: usize| ML + ix as f64 * cw;
    let cell_y = |iy: usize| MT + (ny - 1 - iy) as f64 * ch;
    let names: Vec<String> = (0..opt.param_names.len())
        .map(|i| param_name(opt, i))
        .collect();

    let mut s = String::with_capacity(nx * ny * 160 + 4096);
    svg_open(
        &mut s,
        "heatmap",
        HM_H,
        &format!("Best feasible score by {} and {}", ax.name, ay.name),
    );
    for iy in 0..ny {
        for ix in 0..nx {
            let i = iy * nx + ix;
            let (fill, class, tip) = match (grid[i], best) {
                (Some((score, k)), Some((b, lo, hi))) => {
                    let t = if hi > lo {
                        (score - lo) / (hi - lo)
                    } else {
                        1.0
                    };
                    let params = opt
                        .results
                        .get(k)
                        .map(|c| params_text(&names, &c.params))
                        .unwrap_or_default();
                    let class = if i == b { "cell best" } else { "cell" };
                    (
                        colour(t),
                        class,
                        format!("{params}: score {}", fmt_sig(score, 6)),
                    )
                }
                _ => {
                    let why = if tried[i] == 0 {
                        "no candidate"
                    } else {
                        "no feasible candidate with a score"
                    };
                    (
                        GREY.to_owned(),
                        "cell empty",
                        format!(
                            "{} = {}, {} = {}: {why}",
                            ax.name,
                            ax.label(ix),
                            ay.name,
                            ay.label(iy)
                        ),
                    )
                }
            };
            put!(
                s,
                "<rect class=\"{class}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{fill}\">\
                 <title>{}</title></rect>\n",
                cell_x(ix),
                cell_y(iy),
                cw,
                ch,
                esc(&tip)
            );
        }
    }
    if let Some((b, _, _)) = best {
        let (bx, by) = (cell_x(b % nx), cell_y(b / nx));
        put!(
            s,
            "<path class=\"best-mark\" d=\"M{bx:.2} {by:.2}h{cw:.2}v{ch:.2}h{:.2}z\" fill=\"none\" stroke=\"#000\" \
             stroke-width=\"3\"/>\n",
            -cw
        );
    }
    // Axes: labels at cell centres, parameter names.
    for ix in label_indices(nx) {
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>\n",
            cell_x(ix) + cw / 2.0,
            MT + ph + 16.0,
            esc(&ax.label(ix))
        );
    }
    for iy in label_indices(ny) {
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>\n",
            ML - 6.0,
            cell_y(iy) + ch / 2.0 + 4.0,
            esc(&ay.label(iy))
        );
    }
    put!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"600\" fill=\"{TEXT}\">{}</text>\n\
         <text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\" font-weight=\"600\" \
         fill=\"{TEXT}\">{}</text>\n",
        ML + pw / 2.0,
        HM_H - 10.0,
        esc(&ax.name),
        MT + ph / 2.0,
        esc(&ay.name)
    );
    legend(&mut s, best.map(|(_, lo, hi)| (lo, hi)), ph);
    s.push_str("</svg>\n");
    let caption = match best {
        Some((b, _, _)) => {
            let (score, k) = grid[b].unwrap_or((f64::NAN, usize::MAX));
            let params = opt
                .results
                .get(k)
                .map(|c| params_text(&names, &c.params))
                .unwrap_or_default();
            format!(
                "Each cell holds the best score among feasible candidates with that pair of values (other \
                 parameters free); grey cells have no feasible candidate. Outlined: the best cell, {params}, \
                 score {}.",
                fmt_sig(score, 6)
            )
        }
        None => "No feasible candidate has a score: every cell is grey.".to_owned(),
    };
    put!(s, "<figcaption>{}</figcaption></figure>\n", esc(&caption));
    s
}

/// Colour scale legend on the right of the heatmap: ten steps from the lowest (bottom) to the highest
/// score, then a grey swatch. Drawn with paths, so the heatmap's rects are exactly its cells.
fn legend(s: &mut String, range: Option<(f64, f64)>, ph: f64) {
    let x = W - HM_MR + 18.0;
    let steps = 10;
    let bar_h = ph - 44.0;
    let step_h = bar_h / steps as f64;
    if let Some((lo, hi)) = range {
        for i in 0..steps {
            let t = (i as f64 + 0.5) / steps as f64;
            let y = MT + bar_h - (i as f64 + 1.0) * step_h;
            put!(
                s,
                "<path class=\"legend\" d=\"M{x:.1} {y:.2}h16v{step_h:.2}h-16z\" fill=\"{}\"/>\n",
                colour(t)
            );
        }
        let mid = (lo + hi) / 2.0;
        for (v, y) in [(hi, MT), (mid, MT + bar_h / 2.0), (lo, MT + bar_h)] {
            put!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{TEXT}\">{}</text>\n",
                x + 22.0,
                y + 4.0,
                esc(&fmt_sig(v, 4))
            );
        }
    }
    let gy = MT + ph - 16.0;
    put!(
        s,
        "<path class=\"legend\" d=\"M{x:.1} {gy:.1}h16v16h-16z\" fill=\"{GREY}\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{TEXT}\">none feasible</text>\n",
        x + 22.0,
        gy + 12.0
    );
}

/// Viridis-like scale: dark purple (0) → blue → green → yellow (1).
fn colour(t: f64) -> String {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round().clamp(0.0, 255.0) as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// One parameter: a bar per value (or bin) of the best feasible score; grey bands where none is feasible.
fn score_chart(opt: &Optimisation, ax: &Axis) -> String {
    let n = ax.cells.len();
    let (grid, _) = best_by_cell(&opt.results, ax, None);
    let best = best_cell(&grid);
    let (lo, hi) = best.map_or((0.0, 1.0), |(_, lo, hi)| (lo.min(0.0), hi.max(0.0)));
    let ticks = value_ticks(lo, hi);
    let (ylo, yhi) = ticks.range();
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let cw = pw / n as f64;
    let y = |v: f64| MT + (yhi - v) / (yhi - ylo) * ph;

    let mut s = String::with_capacity(n * 160 + 4096);
    svg_open(
        &mut s,
        "scores",
        H,
        &format!("Best feasible score by {}", ax.name),
    );
    y_grid(&mut s, &ticks, &y, W - MR);
    for (i, cell) in grid.iter().enumerate() {
        let x = ML + i as f64 * cw;
        match *cell {
            Some((score, _)) => {
                let (top, bottom) = (y(score.max(0.0)), y(score.min(0.0)));
                let is_best = best.is_some_and(|(b, _, _)| b == i);
                let (class, fill, extra) = if is_best {
                    ("bar best", "#f2a900", " stroke=\"#000\" stroke-width=\"2\"")
                } else {
                    ("bar", "#5b8fd1", "")
                };
                put!(
                    s,
                    "<rect class=\"{class}\" x=\"{:.2}\" y=\"{top:.2}\" width=\"{:.2}\" height=\"{:.2}\" \
                     fill=\"{fill}\"{extra}><title>{} = {}: score {}</title></rect>\n",
                    x + cw * 0.15,
                    cw * 0.7,
                    (bottom - top).max(0.5),
                    esc(&ax.name),
                    esc(&ax.label(i)),
                    fmt_sig(score, 6)
                );
            }
            None => put!(
                s,
                "<rect class=\"bar empty\" x=\"{:.2}\" y=\"{MT}\" width=\"{:.2}\" height=\"{ph:.2}\" \
                 fill=\"{GREY}\" opacity=\"0.6\"><title>{} = {}: no feasible candidate</title></rect>\n",
                x + cw * 0.15,
                cw * 0.7,
                esc(&ax.name),
                esc(&ax.label(i))
            ),
        }
    }
    put!(
        s,
        "<path d=\"M{ML} {MT}V{:.1}H{:.1}\" fill=\"none\" stroke=\"#999\"/>\n",
        MT + ph,
        W - MR
    );
    for i in label_indices(n) {
        put!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>\n",
            ML + (i as f64 + 0.5) * cw,
            MT + ph + 16.0,
            esc(&ax.label(i))
        );
    }
    put!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"600\" fill=\"{TEXT}\">{}</text>\n",
        ML + pw / 2.0,
        H - 6.0,
        esc(&ax.name)
    );
    s.push_str("</svg>\n");
    let caption = match best {
        Some((b, _, _)) => format!(
            "Each bar is the best score among feasible candidates with that value; grey bands have no \
             feasible candidate. Highlighted: {} = {}.",
            ax.name,
            ax.label(b)
        ),
        None => "No feasible candidate has a score.".to_owned(),
    };
    put!(s, "<figcaption>{}</figcaption></figure>\n", esc(&caption));
    s
}

fn walk_forward_section(out: &mut String, wf: &WalkForward, names: &[String]) {
    out.push_str("<h3>Walk-forward</h3>\n");
    let efficiency = finite(wf.efficiency).map_or_else(|| "n/a".to_owned(), |e| fmt_sig(e, 3));
    put!(
        out,
        "<div class=\"scroll\"><table class=\"kv\"><tbody>\n\
         <tr><th scope=\"row\">Mode</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Windows</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Walk-forward efficiency</th><td class=\"efficiency\">{efficiency}</td></tr>\n\
         </tbody></table></div>\n",
        esc(&wf.mode),
        fmt_count(wf.windows.len())
    );
    if wf.windows.is_empty() {
        note(out, "No walk-forward windows.");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table class=\"windows\"><thead><tr><th>#</th>\
             <th class=\"l\">In-sample from (UTC)</th><th class=\"l\">In-sample to (UTC)</th>\
             <th class=\"l\">Out-of-sample from (UTC)</th><th class=\"l\">Out-of-sample to (UTC)</th>\
             <th class=\"l\">Parameters</th><th>In-sample score</th><th>Out-of-sample net profit</th>\
             </tr></thead><tbody>\n",
        );
        let mut total = 0.0;
        for (i, w) in wf.windows.iter().enumerate() {
            total += w.out_net_profit;
            let score = finite(w.in_score).map_or_else(|| "n/a".to_owned(), |s| fmt_sig(s, 6));
            put!(
                out,
                "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
                 <td class=\"l\">{}</td><td class=\"l\">{}</td><td>{score}</td><td{}>{}</td></tr>\n",
                i + 1,
                fmt_minute(w.in_from_ms),
                fmt_minute(w.in_to_ms),
                fmt_minute(w.out_from_ms),
                fmt_minute(w.out_to_ms),
                esc(&params_text(names, &w.params)),
                if w.out_net_profit < 0.0 {
                    " class=\"neg\""
                } else {
                    ""
                },
                fmt_num(w.out_net_profit, 2)
            );
        }
        put!(
            out,
            "<tr><th class=\"l\" colspan=\"7\" scope=\"row\">Total out-of-sample</th><td{}>{}</td></tr>\n\
             </tbody></table></div>\n",
            if total < 0.0 { " class=\"neg\"" } else { "" },
            fmt_num(total, 2)
        );
    }
    let curve = clean_curve(&wf.stitched);
    let mut markers: Vec<i64> = wf.windows.iter().map(|w| w.out_from_ms).collect();
    if let Some(last) = wf.windows.last() {
        markers.push(last.out_to_ms);
    }
    markers.sort_unstable();
    markers.dedup();
    let chart = TimeChart {
        title: "Stitched out-of-sample equity (dashed: window boundaries)",
        class: "stitched",
        points: &curve,
        baseline: None,
        fill_to_zero: false,
        markers: &markers,
        colour: "#1f5fa8",
    };
    chart_or_note(
        out,
        time_chart(&chart),
        "No stitched out-of-sample equity to draw (it needs points at two different times).",
    );
}

// ---------------------------------------------------------------------------------------------------------
// Time charts

struct TimeChart<'a> {
    title: &'a str,
    class: &'a str,
    /// In time order, finite.
    points: &'a [(i64, f64)],
    /// A dashed horizontal reference line and its label.
    baseline: Option<(f64, &'a str)>,
    /// Fill between the curve and zero (the drawdown).
    fill_to_zero: bool,
    /// Dashed vertical lines at these times (those inside the curve's span).
    markers: &'a [i64],
    colour: &'a str,
}

fn chart_or_note(out: &mut String, chart: Option<String>, missing: &str) {
    match chart {
        Some(svg) => out.push_str(&svg),
        None => note(out, missing),
    }
}

/// A line chart over time, or `None` when the points do not span any time.
fn time_chart(c: &TimeChart<'_>) -> Option<String> {
    let (t0, t1) = (c.points.first()?.0, c.points.last()?.0);
    if c.points.len() < 2 || t1 <= t0 {
        return None;
    }
    let drawn = downsample(c.points, DRAW_BUCKETS);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, v) in &drawn {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if let Some((b, _)) = c.baseline {
        lo = lo.min(b);
        hi = hi.max(b);
    }
    if c.fill_to_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let ticks = value_ticks(lo, hi);
    let (ylo, yhi) = ticks.range();
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let span = t1 as f64 - t0 as f64;
    let x = |t: i64| ML + (t as f64 - t0 as f64) / span * pw;
    let y = |v: f64| MT + (yhi - v) / (yhi - ylo) * ph;

    let mut s = String::with_capacity(drawn.len() * 14 + 4096);
    svg_open(&mut s, c.class, H, c.title);
    y_grid(&mut s, &ticks, &y, W - MR);
    for (t, label) in time_ticks(t0, t1) {
        let px = x(t);
        let anchor = if px > W - MR - 48.0 { "end" } else { "middle" };
        put!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{TEXT}\">{}</text>\n",
            MT + ph,
            MT + ph + 5.0,
            MT + ph + 18.0,
            esc(&label)
        );
    }
    for &m in c.markers.iter().filter(|&&m| (t0..=t1).contains(&m)) {
        let px = x(m);
        put!(
            s,
            "<line class=\"boundary\" x1=\"{px:.1}\" y1=\"{MT}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#777\" \
             stroke-dasharray=\"4 3\"><title>{}</title></line>\n",
            MT + ph,
            fmt_minute(m)
        );
    }
    if let Some((b, label)) = c.baseline {
        let py = y(b);
        put!(
            s,
            "<line x1=\"{ML}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#777\" font-size=\"10\">{}</text>\n",
            W - MR,
            W - MR - 4.0,
            py - 4.0,
            esc(label)
        );
    }
    if c.fill_to_zero {
        let zero = y(0.0);
        s.push_str("<polygon class=\"area\" points=\"");
        put!(s, "{:.1},{zero:.1}", x(t0));
        for &(t, v) in &drawn {
            put!(s, " {:.1},{:.1}", x(t), y(v));
        }
        put!(
            s,
            " {:.1},{zero:.1}\" fill=\"{}\" fill-opacity=\"0.25\"/>\n",
            x(t1),
            c.colour
        );
    }
    s.push_str("<polyline class=\"line\" points=\"");
    for (i, &(t, v)) in drawn.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        put!(s, "{:.1},{:.1}", x(t), y(v));
    }
    put!(
        s,
        "\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"/>\n\
         <path d=\"M{ML} {MT}V{:.1}H{:.1}\" fill=\"none\" stroke=\"#999\"/>\n</svg>\n",
        c.colour,
        MT + ph,
        W - MR
    );
    if drawn.len() < c.points.len() {
        put!(
            s,
            "<figcaption>{} points, drawn as {} (each stretch's lowest and highest kept).</figcaption>\n",
            fmt_count(c.points.len()),
            fmt_count(drawn.len())
        );
    }
    s.push_str("</figure>\n");
    Some(s)
}

fn svg_open(s: &mut String, class: &str, height: f64, title: &str) {
    put!(
        s,
        "<figure class=\"chart {class}\"><svg viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{t}\" \
         font-size=\"11\"><title>{t}</title>\n\
         <text x=\"{ML}\" y=\"22\" font-size=\"14\" font-weight=\"600\" fill=\"#1d1d1f\">{t}</text>\n",
        t = esc(title)
    );
}

/// Horizontal grid lines with value labels on the left.
fn y_grid(s: &mut String, ticks: &Ticks, y: &dyn Fn(f64) -> f64, right: f64) {
    for &v in &ticks.values {
        let py = y(v);
        put!(
            s,
            "<line x1=\"{ML}\" y1=\"{py:.1}\" x2=\"{right:.1}\" y2=\"{py:.1}\" stroke=\"#e6e6e6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>\n",
            ML - 6.0,
            py + 4.0,
            fmt_num(v, ticks.decimals)
        );
    }
}

/// Finite points in time order (stable, so equal times keep their order).
fn clean_curve(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut curve: Vec<(i64, f64)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    if !curve.windows(2).all(|w| w[0].0 <= w[1].0) {
        curve.sort_by_key(|p| p.0);
    }
    curve
}

/// At most `2 * buckets + 2` points: each of at most `buckets` consecutive stretches contributes its
/// minimum and maximum (in time order), and the first and last points are always kept.
fn downsample(points: &[(i64, f64)], buckets: usize) -> Vec<(i64, f64)> {
    let buckets = buckets.max(1);
    if points.len() <= 2 * buckets {
        return points.to_vec();
    }
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets + 2);
    for chunk in points.chunks(size) {
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[lo].1 {
                lo = i;
            }
            if p.1 > chunk[hi].1 {
                hi = i;
            }
        }
        let (a, b) = (lo.min(hi), lo.max(hi));
        out.push(chunk[a]);
        if b != a {
            out.push(chunk[b]);
        }
    }
    if let Some(&first) = points.first() {
        if out.first() != Some(&first) {
            out.insert(0, first);
        }
    }
    if let Some(&last) = points.last() {
        if out.last() != Some(&last) {
            out.push(last);
        }
    }
    out
}

/// Value axis ticks: 4–6 round values (steps of 1, 2, 2.5 or 5 × 10ⁿ) covering the range; the first and
/// last are the axis' ends.
struct Ticks {
    values: Vec<f64>,
    decimals: usize,
}

impl Ticks {
    fn range(&self) -> (f64, f64) {
        let lo = self.values.first().copied().unwrap_or(0.0);
        let hi = self.values.last().copied().unwrap_or(1.0);
        if hi > lo {
            (lo, hi)
        } else {
            (lo, lo + 1.0)
        }
    }
}

fn value_ticks(lo: f64, hi: f64) -> Ticks {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() && lo <= hi {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    if hi - lo <= lo.abs().max(hi.abs()) * 1e-12 {
        let pad = (lo.abs() * 0.01).max(1.0);
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / 5.0;
    let exp0 = raw.log10().floor() as i32;
    // (distance of the count from 5, step, first multiple, count, decimals); smaller is better
    let mut best: Option<(i64, f64, f64, i64, usize)> = None;
    for exp in exp0 - 1..=exp0 + 1 {
        for (m, extra) in [(1.0, 0), (2.0, 0), (2.5, 1), (5.0, 0)] {
            let step = m * 10f64.powi(exp);
            if !(step.is_finite() && step > 0.0) {
                continue;
            }
            let a = (lo / step).floor();
            let b = (hi / step).ceil();
            let count = (b - a) as i64 + 1;
            let dist = if (4..=6).contains(&count) {
                (count - 5).abs()
            } else {
                10 + (count - 5).abs()
            };
            let decimals = (extra - exp).max(0) as usize;
            // Prefer the count closest to 5, then the larger step.
            if best.is_none_or(|(d, s, ..)| dist < d || (dist == d && step > s)) {
                best = Some((dist, step, a, count, decimals));
            }
        }
    }
    match best {
        Some((_, step, a, count, decimals)) => Ticks {
            values: (0..count.clamp(2, 50))
                .map(|i| (a + i as f64) * step)
                .collect(),
            decimals,
        },
        None => Ticks {
            values: vec![lo, hi],
            decimals: 2,
        },
    }
}

/// A calendar-aware tick step.
#[derive(Clone, Copy)]
enum Step {
    /// Multiples of this many ms after an offset (weeks start on Monday, 1970-01-05).
    Ms(i64, i64),
    /// Every this many months, on month starts whose index (year * 12 + month) it divides.
    Months(i64),
}

const MONDAY_MS: i64 = 4 * DAY_MS;

fn time_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for s in [1, 2, 5, 10, 15, 20, 30] {
        steps.push(Step::Ms(s * SEC_MS, 0));
    }
    for m in [1, 2, 3, 5, 10, 15, 20, 30] {
        steps.push(Step::Ms(m * MIN_MS, 0));
    }
    for h in [1, 2, 3, 4, 6, 8, 12] {
        steps.push(Step::Ms(h * HOUR_MS, 0));
    }
    for d in [1, 2, 3, 4] {
        steps.push(Step::Ms(d * DAY_MS, 0));
    }
    for w in [1, 2] {
        steps.push(Step::Ms(w * 7 * DAY_MS, MONDAY_MS));
    }
    for m in [1, 2, 3, 4, 6] {
        steps.push(Step::Months(m));
    }
    for y in [1, 2, 3, 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000] {
        steps.push(Step::Months(12 * y));
    }
    steps
}

/// Ticks of `step` within `[t0, t1]`; stops after eight (more are never wanted).
fn step_ticks(step: Step, t0: i64, t1: i64) -> Vec<i64> {
    let (t0, t1) = (i128::from(t0), i128::from(t1));
    let mut out = Vec::new();
    match step {
        Step::Ms(len, offset) => {
            let (len, offset) = (i128::from(len), i128::from(offset));
            let mut t = offset + (t0 - offset).div_euclid(len) * len;
            if t < t0 {
                t += len;
            }
            while t <= t1 && out.len() < 8 {
                out.push(t);
                t += len;
            }
        }
        Step::Months(k) => {
            let k = i128::from(k);
            let c = Civil::of(i64::try_from(t0).unwrap_or(0));
            let mut mi = i128::from(c.year) * 12 + i128::from(c.month) - 1;
            if month_start(mi) < t0 {
                mi += 1;
            }
            mi += (k - mi.rem_euclid(k)) % k;
            while month_start(mi) <= t1 && out.len() < 8 {
                out.push(month_start(mi));
                mi += k;
            }
        }
    }
    out.into_iter()
        .filter_map(|t| i64::try_from(t).ok())
        .collect()
}

/// Ms at the start of month index `mi` (year * 12 + month - 1).
fn month_start(mi: i128) -> i128 {
    let year = i64::try_from(mi.div_euclid(12)).unwrap_or(i64::MAX / 1024);
    let month = mi.rem_euclid(12) as u32 + 1;
    i128::from(days_from_civil(year, month, 1)) * i128::from(DAY_MS)
}

/// 4–6 date ticks on round calendar steps, labelled as precisely as the step needs; evenly spaced ticks
/// (5) when no round step gives 4–6.
fn time_ticks(t0: i64, t1: i64) -> Vec<(i64, String)> {
    let mut best: Option<(Step, Vec<i64>)> = None;
    for step in time_steps() {
        let ticks = step_ticks(step, t0, t1);
        let n = ticks.len() as i64;
        if !(4..=6).contains(&n) {
            continue;
        }
        // Closest to 5, then the larger (later in the list) step.
        if best
            .as_ref()
            .is_none_or(|(_, b)| (n - 5).abs() <= (b.len() as i64 - 5).abs())
        {
            best = Some((step, ticks));
        }
    }
    match best {
        Some((step, ticks)) => ticks
            .into_iter()
            .map(|t| {
                let label = match step {
                    Step::Months(k) if k % 12 == 0 => format!("{:04}", Civil::of(t).year),
                    Step::Months(_) => {
                        let c = Civil::of(t);
                        format!("{:04}-{:02}", c.year, c.month)
                    }
                    Step::Ms(len, _) if len >= DAY_MS => fmt_day(t),
                    Step::Ms(len, _) if len >= MIN_MS => fmt_minute(t),
                    Step::Ms(..) => {
                        let c = Civil::of(t);
                        format!("{:02}:{:02}:{:02}", c.hour, c.minute, c.second)
                    }
                };
                (t, label)
            })
            .collect(),
        None => {
            let (a, b) = (i128::from(t0), i128::from(t1));
            (0..5)
                .filter_map(|i| i64::try_from(a + (b - a) * i / 4).ok())
                .map(|t| (t, fmt_minute(t)))
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Dates (UTC), numbers, escaping

/// A UTC date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    milli: u32,
}

impl Civil {
    fn of(ms: i64) -> Self {
        let (year, month, day) = civil_from_days(ms.div_euclid(DAY_MS));
        let rem = ms.rem_euclid(DAY_MS);
        let secs = rem / SEC_MS;
        Self {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs / 60 % 60) as u32,
            second: (secs % 60) as u32,
            milli: (rem % SEC_MS) as u32,
        }
    }
}

fn fmt_day(ms: i64) -> String {
    let c = Civil::of(ms);
    format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
}

/// `YYYY-MM-DD HH:MM` in UTC of a time in ms since the Unix epoch, as the report shows window bounds.
pub fn date_time(ms: i64) -> String {
    fmt_minute(ms)
}

/// `YYYY-MM-DD HH:MM` (UTC).
fn fmt_minute(ms: i64) -> String {
    let c = Civil::of(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn fmt_msc(ms: i64) -> String {
    let c = Civil::of(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli
    )
}

/// Fixed decimals with thousands grouped by a narrow no-break space; "n/a" when not finite; no "-0".
fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_at(s.find('.').unwrap_or(s.len()));
    let mut out = String::with_capacity(s.len() + 8);
    if v < 0.0 && s.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        out.push('-');
    }
    let n = int.len();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (n - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(ch);
    }
    out.push_str(frac);
    out
}

fn fmt_count(n: usize) -> String {
    fmt_num(n as f64, 0)
}

/// At most `sig` significant digits, trailing zeros dropped (so 0.30000000000000004 shows as 0.3).
fn fmt_sig(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-6..16).contains(&mag) {
        return format!("{:.*e}", (sig - 1).clamp(0, 16) as usize, v);
    }
    let decimals = (sig - 1 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    if s == "-0" {
        "0".to_owned()
    } else {
        s
    }
}

fn note(out: &mut String, text: &str) {
    put!(out, "<p class=\"note\">{}</p>\n", esc(text));
}

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    fn trade(i: i64, strategy: &str, symbol: &str) -> TradeRow {
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

    fn run() -> Run {
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

    fn candidate(params: &[f64], score: Option<f64>, feasible: bool) -> Candidate {
        Candidate {
            params: params.to_vec(),
            score,
            net_profit: score.unwrap_or(0.0) * 100.0,
            trades: 42,
            max_drawdown: 250.0,
            feasible,
        }
    }

    fn walk_forward() -> WalkForward {
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
    fn optimisation(with_walk_forward: bool) -> Optimisation {
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

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    /// The `<svg …>…</svg>` of the figure with this class.
    fn figure<'a>(page: &'a str, class: &str) -> &'a str {
        let start = page
            .find(&format!("<figure class=\"chart {class}\""))
            .expect("figure present");
        let end = start + page[start..].find("</figure>").expect("figure closed");
        &page[start..end]
    }

    fn polyline_points(svg: &str) -> usize {
        let start = svg
            .find("<polyline class=\"line\" points=\"")
            .expect("polyline")
            + 31;
        let end = start + svg[start..].find('"').expect("closing quote");
        svg[start..end].split(' ').count()
    }

    #[test]
    fn the_page_has_an_svg_per_chart_and_no_script_or_external_reference() {
        let doc = Document {
            title: "Backtest".to_owned(),
            runs: vec![run()],
            optimisation: Some(optimisation(true)),
        };
        let page = html(&doc);
        // equity, drawdown, heatmap, stitched out-of-sample equity
        assert_eq!(count(&page, "<svg "), 4);
        assert_eq!(count(&page, "</svg>"), 4);
        assert_eq!(count(&page, "viewBox=\"0 0 "), 4);
        for class in ["equity", "drawdown", "heatmap", "stitched"] {
            assert!(figure(&page, class).contains("<svg "), "{class}");
        }
        let lower = page.to_lowercase();
        for banned in [
            "<script", "src=", "href=", "http", "url(", "xmlns", "@import",
        ] {
            assert!(!lower.contains(banned), "page contains {banned}");
        }
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("max-width:100%"));
        assert!(page.contains("<h3>Monthly returns (%)</h3>"));
        assert!(page.contains("<table class=\"trades\">"));
        assert!(page.contains("<table class=\"candidates\">"));
    }

    #[test]
    fn a_title_with_markup_characters_is_escaped_everywhere() {
        let mut r = run();
        r.heading = "run <i>'1'</i>".to_owned();
        r.trades = vec![trade(0, "a<b>&\"c\"", "X&Y<Z>")];
        r.summary = vec![("<k>".to_owned(), "\"v\" & 'w'".to_owned())];
        let mut opt = optimisation(false);
        opt.param_names[0] = "f<a>st".to_owned();
        let doc = Document {
            title: "<b>&\"".to_owned(),
            runs: vec![r],
            optimisation: Some(opt),
        };
        let page = html(&doc);
        assert!(page.contains("<title>&lt;b&gt;&amp;&quot;</title>"));
        assert!(page.contains("<h1>&lt;b&gt;&amp;&quot;</h1>"));
        assert!(page.contains("run &lt;i&gt;&#39;1&#39;&lt;/i&gt;"));
        assert!(page.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
        assert!(page.contains("X&amp;Y&lt;Z&gt;"));
        assert!(page.contains("&quot;v&quot; &amp; &#39;w&#39;"));
        assert!(page.contains("f&lt;a&gt;st"));
        for raw in ["<b>", "<i>", "<Z>", "<a>", "<k>", "&\""] {
            assert!(!page.contains(raw), "unescaped {raw}");
        }
    }

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

    #[test]
    fn the_heatmap_has_one_rect_per_grid_cell_and_marks_the_best_cell() {
        let doc = Document {
            title: "opt".to_owned(),
            runs: vec![],
            optimisation: Some(optimisation(false)),
        };
        let page = html(&doc);
        let svg = figure(&page, "heatmap");
        // fast has 4 distinct values, slow 3, stop 3: fast × slow.
        assert!(page.contains("<h3>Best score by fast and slow</h3>"));
        assert_eq!(count(svg, "<rect "), 12);
        assert_eq!(count(svg, "<rect class=\"cell"), 12);
        // (20, 50) has no candidate, (5, 30) only an infeasible one.
        assert_eq!(count(svg, "class=\"cell empty\""), 2);
        assert_eq!(count(svg, "class=\"cell best\""), 1);
        assert_eq!(count(svg, "class=\"best-mark\""), 1);
        let best = svg.find("class=\"cell best\"").expect("best cell");
        let best_cell = &svg[best..best + svg[best..].find("</rect>").expect("closed")];
        assert!(
            best_cell.contains("fast = 15, slow = 40, stop = 3: score 2.5"),
            "{best_cell}"
        );
        assert!(best_cell.contains("fill=\"#fde725\"")); // top of the scale
        assert!(svg.contains("none feasible"));
        // Infeasible candidates are ranked by score but marked; the higher score never colours a cell.
        assert!(!svg.contains("score 9"));
        let table = &page[page.find("<table class=\"candidates\">").expect("table")..];
        let first_row =
            &table[table.find("<tbody>").expect("body")..table.find("</tr>\n<tr").expect("rows")];
        assert!(first_row.contains("class=\"infeasible\""));
        assert!(first_row.contains("<span class=\"flag\">infeasible</span>"));
        assert_eq!(count(&page, "<span class=\"flag\">infeasible</span>"), 3);
    }

    #[test]
    fn a_single_parameter_gets_a_score_chart_instead_of_a_heatmap() {
        let results = vec![
            candidate(&[1.0], Some(0.5), true),
            candidate(&[2.0], Some(1.5), true),
            candidate(&[3.0], Some(-0.5), true),
            candidate(&[4.0], Some(3.0), false),
        ];
        let doc = Document {
            title: "one".to_owned(),
            runs: vec![],
            optimisation: Some(Optimisation {
                objective: "profit factor".to_owned(),
                method: "grid".to_owned(),
                param_names: vec!["period".to_owned()],
                results,
                walk_forward: None,
            }),
        };
        let page = html(&doc);
        assert!(!page.contains("heatmap"));
        let svg = figure(&page, "scores");
        assert_eq!(count(svg, "<rect "), 4);
        assert_eq!(count(svg, "class=\"bar best\""), 1);
        assert_eq!(count(svg, "class=\"bar empty\""), 1);
        assert!(svg.contains("period = 2: score 1.5"));
    }

    #[test]
    fn the_walk_forward_section_shows_its_windows_and_efficiency() {
        let doc = Document {
            title: "wf".to_owned(),
            runs: vec![],
            optimisation: Some(optimisation(true)),
        };
        let page = html(&doc);
        assert!(page.contains("<h3>Walk-forward</h3>"));
        assert!(page.contains("<td>rolling</td>"));
        assert!(page.contains("<td class=\"efficiency\">0.63</td>"));
        let table = &page[page.find("<table class=\"windows\">").expect("windows")..];
        let table = &table[..table.find("</table>").expect("closed")];
        assert_eq!(count(table, "<tr><td>"), 2);
        assert!(table.contains(
            "<td class=\"l\">2024-01-01 00:00</td><td class=\"l\">2024-03-01 00:00</td>"
        ));
        assert!(table.contains("2024-04-01 13:05"));
        assert!(table.contains("fast = 10, slow = 30"));
        assert!(table.contains("fast = 20, slow = 40"));
        assert!(table.contains("<td>1.5</td>"));
        assert!(table.contains("<td>n/a</td>")); // the NaN in-sample score
        assert!(table.contains("<td class=\"neg\">-120.50</td>"));
        assert!(table.contains("299.50")); // total out-of-sample
        let svg = figure(&page, "stitched");
        // Boundaries at 2024-03-01, 2024-04-01 13:05 and 2024-05-01 (the last window's end).
        assert_eq!(count(svg, "class=\"boundary\""), 3);
        assert!(svg.contains("<title>2024-04-01 13:05</title>"));

        let mut opt = optimisation(true);
        if let Some(wf) = opt.walk_forward.as_mut() {
            wf.efficiency = Some(f64::INFINITY);
        }
        let page = html(&Document {
            title: "wf".to_owned(),
            runs: vec![],
            optimisation: Some(opt),
        });
        assert!(page.contains("<td class=\"efficiency\">n/a</td>"));
    }

    #[test]
    fn a_hundred_thousand_equity_points_are_downsampled_but_keep_the_minimum() {
        let t0 = ms(2023, 6, 1);
        let mut equity: Vec<(i64, f64)> = (0..100_000)
            .map(|i| {
                let v = 100_000.0 + 2_000.0 * (i as f64 / 3_000.0).sin() + i as f64 * 0.05;
                (t0 + i * MIN_MS, v)
            })
            .collect();
        equity[54_321].1 = 50_000.0; // a one-sample crash
        let drawn = downsample(&equity, DRAW_BUCKETS);
        assert!(drawn.len() <= 2 * DRAW_BUCKETS + 2, "{}", drawn.len());
        assert!(drawn.contains(&equity[54_321]));
        assert_eq!(drawn.first(), equity.first());
        assert_eq!(drawn.last(), equity.last());
        assert!(drawn.windows(2).all(|w| w[0].0 < w[1].0));

        let page = html(&Document {
            title: "long".to_owned(),
            runs: vec![Run {
                heading: "long".to_owned(),
                starting_balance: 100_000.0,
                equity,
                ..Run::default()
            }],
            optimisation: None,
        });
        for class in ["equity", "drawdown"] {
            let svg = figure(&page, class);
            let n = polyline_points(svg);
            assert!((1_000..=3_000).contains(&n), "{class}: {n} points");
        }
        // The crash is drawn: on the 40 000..120 000 axis (plot y 36..280) 50 000 is at y ≈ 249.5, while
        // the rest of the curve stays above 98 000 (y < 110).
        let svg = figure(&page, "equity");
        assert!(svg.contains(">40\u{202f}000</text>") && svg.contains(">120\u{202f}000</text>"));
        let start = svg
            .find("<polyline class=\"line\" points=\"")
            .expect("polyline")
            + 31;
        let end = start + svg[start..].find('"').expect("closing quote");
        let lowest = svg[start..end]
            .split(' ')
            .filter_map(|p| p.split_once(',').and_then(|(_, y)| y.parse::<f64>().ok()))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (lowest - 249.5).abs() < 0.11,
            "lowest point drawn at y = {lowest}"
        );
        assert!(page.contains("100\u{202f}000 points, drawn as"));
    }

    #[test]
    fn empty_inputs_render_notes_without_panicking() {
        let page = html(&Document::default());
        assert!(page.contains("Nothing to report"));
        assert!(!page.contains("<svg"));

        let doc = Document {
            title: String::new(),
            runs: vec![
                Run::default(),
                Run {
                    heading: "one point".to_owned(),
                    starting_balance: 1_000.0,
                    equity: vec![(ms(2024, 1, 1), 1_000.0)],
                    ..Run::default()
                },
                Run {
                    heading: "same time".to_owned(),
                    starting_balance: f64::NAN,
                    equity: vec![(5, 1.0), (5, 2.0), (5, f64::INFINITY)],
                    ..Run::default()
                },
            ],
            optimisation: Some(Optimisation {
                walk_forward: Some(WalkForward::default()),
                ..Optimisation::default()
            }),
        };
        let page = html(&doc);
        assert!(!page.contains("<svg"));
        assert!(page.contains("No trades."));
        assert!(page.contains("No equity curve to draw"));
        assert!(page.contains("No overall candidate list"));
        assert!(page.contains("No walk-forward windows."));
        assert!(page.contains("No stitched out-of-sample equity"));
        assert!(page.contains("<h1>Report</h1>"));

        // Candidates whose scores are all missing, NaN or infinite; parameters missing or odd.
        let opt = Optimisation {
            objective: "sharpe".to_owned(),
            method: "random".to_owned(),
            param_names: vec!["a".to_owned(), "b".to_owned()],
            results: vec![
                candidate(&[1.0, 2.0], Some(f64::NAN), true),
                candidate(&[2.0, 3.0], Some(f64::INFINITY), true),
                candidate(&[3.0], None, true),
                candidate(&[], Some(1.0), false),
                candidate(&[f64::NAN, -0.0], Some(f64::NEG_INFINITY), true),
            ],
            walk_forward: None,
        };
        let page = html(&Document {
            title: "odd".to_owned(),
            runs: vec![],
            optimisation: Some(opt),
        });
        assert!(!page.contains("NaN") && !page.contains("inf<"));
        let svg = figure(&page, "heatmap");
        assert_eq!(count(svg, "class=\"cell empty\""), count(svg, "<rect "));
        assert!(page.contains("No feasible candidate has a score"));

        let no_params = Optimisation {
            results: vec![candidate(&[], Some(1.0), true)],
            ..Optimisation::default()
        };
        let page = html(&Document {
            title: "x".to_owned(),
            runs: vec![],
            optimisation: Some(no_params),
        });
        assert!(page.contains("No parameter values to chart."));
    }

    #[test]
    fn non_finite_scores_rank_after_real_ones() {
        let results = vec![
            candidate(&[1.0], Some(f64::NAN), true),
            candidate(&[2.0], Some(0.5), true),
            candidate(&[3.0], Some(f64::INFINITY), true),
            candidate(&[4.0], Some(1.5), false),
            candidate(&[5.0], Some(1.5), true),
        ];
        assert_eq!(ranking(&results), vec![4, 3, 1, 0, 2]);
    }

    #[test]
    fn the_trade_list_shows_at_most_5000_rows_and_says_how_many_were_left_out() {
        let mut r = run();
        r.trades = (0..5_003).map(|i| trade(i, "s", "XAUUSD")).collect();
        let page = html(&Document {
            title: "t".to_owned(),
            runs: vec![r],
            optimisation: None,
        });
        assert_eq!(count(&page, ">XAUUSD</td>"), 5_000);
        assert!(page.contains(
            "Showing the first 5\u{202f}000 of 5\u{202f}003 trades; 3 more were left out."
        ));
        assert!(page.contains("<td class=\"neg\">-3.20</td>"));
        assert!(page.contains("<td class=\"l\">2024-01-02 00:00:00.000</td>"));
    }

    #[test]
    fn continuous_parameters_are_binned_so_the_heatmap_stays_small() {
        // 500 random-search candidates: 500 distinct values per parameter would be 250 000 cells.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let results: Vec<Candidate> = (0..500)
            .map(|_| {
                let (a, b) = (next() * 10.0, 100.0 + next() * 50.0);
                candidate(&[a, b], Some(a - (b - 125.0).abs() / 10.0), true)
            })
            .collect();
        let page = html(&Document {
            title: "random".to_owned(),
            runs: vec![],
            optimisation: Some(Optimisation {
                objective: "sharpe".to_owned(),
                method: "random".to_owned(),
                param_names: vec!["a".to_owned(), "b".to_owned()],
                results,
                walk_forward: None,
            }),
        });
        let svg = figure(&page, "heatmap");
        assert_eq!(count(svg, "<rect "), AXIS_BINS * AXIS_BINS);
        assert_eq!(count(svg, "class=\"cell best\""), 1);
        assert!(svg.contains(">≈"));
        assert!(count(svg, "class=\"cell empty\"") > 0);
    }

    #[test]
    fn category_axes_label_all_cells_up_to_six_then_every_kth() {
        assert_eq!(label_indices(0), Vec::<usize>::new());
        assert_eq!(label_indices(3), [0, 1, 2]);
        assert_eq!(label_indices(6), [0, 1, 2, 3, 4, 5]);
        assert_eq!(label_indices(8), [0, 2, 4, 6]);
        for n in 7..=200 {
            assert!((4..=6).contains(&label_indices(n).len()), "{n}");
        }
    }

    #[test]
    fn utc_dates_come_from_days_to_civil() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 1, 1), 19_723);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(fmt_minute(0), "1970-01-01 00:00");
        assert_eq!(
            fmt_msc(951_782_400_000 + 13 * HOUR_MS + 7),
            "2000-02-29 13:00:00.007"
        );
        assert_eq!(fmt_msc(-1), "1969-12-31 23:59:59.999");
        assert_eq!(fmt_day(ms(2100, 3, 1) - 1), "2100-02-28");
        assert_eq!(fmt_minute(1_709_251_199_000), "2024-02-29 23:59");
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        }
    }

    #[test]
    fn axes_get_four_to_six_round_ticks() {
        let t0 = 1_700_000_123_456;
        let mut span = 5 * SEC_MS;
        while span < 90 * 365 * DAY_MS {
            let ticks = time_ticks(t0, t0 + span);
            assert!((4..=6).contains(&ticks.len()), "span {span}: {ticks:?}");
            assert!(ticks.iter().all(|(t, _)| (t0..=t0 + span).contains(t)));
            span = span * 13 / 10;
        }
        assert_eq!(
            time_ticks(ms(2024, 1, 1), ms(2024, 12, 31))
                .iter()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>(),
            ["2024-01", "2024-04", "2024-07", "2024-10"]
        );

        for (lo, hi) in [
            (99_500.0, 101_000.0),
            (0.0, 1.0),
            (-12_345.0, 0.0),
            (5.0, 5.0),
            (0.0, 0.0),
            (-0.003, 0.0071),
            (1e9, 3.3e9),
            (f64::NAN, 1.0),
        ] {
            let t = value_ticks(lo, hi);
            assert!(
                (4..=6).contains(&t.values.len()),
                "{lo}..{hi}: {:?}",
                t.values
            );
            let (a, b) = t.range();
            if lo.is_finite() {
                assert!(a <= lo && b >= hi, "{lo}..{hi}: {:?}", t.values);
            }
        }
        let t = value_ticks(99_500.0, 101_000.0);
        let labels: Vec<String> = t.values.iter().map(|v| fmt_num(*v, t.decimals)).collect();
        assert_eq!(
            labels,
            [
                "99\u{202f}500",
                "100\u{202f}000",
                "100\u{202f}500",
                "101\u{202f}000"
            ]
        );
        assert_eq!(fmt_num(-0.001, 2), "0.00");
        assert_eq!(fmt_sig(0.1 + 0.2, 10), "0.3");
    }
}
