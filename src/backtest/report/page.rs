//! The page: the HTML document, its sections (runs, optimisation, walk-forward) and their tables.
//!
//! It exists apart from the charts so the document's structure can be read in one place. It is written
//! with maud's `html!` templates, which are checked at compile time and escape every interpolated text
//! (titles, strategy names, symbols, parameter names, summary labels and values) — nothing here escapes
//! by hand. The charts come from [`super::charts`] as finished `<figure>`s of inline SVG, inserted as
//! `PreEscaped` (the charts escape their own text), and the style sheet is a constant, inserted the same
//! way.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::charts::{heatmap, score_chart, time_chart, Axis, TimeChart};
use super::format::{fmt_count, fmt_num, fmt_sig, params_text};
use super::time::{fmt_minute, fmt_msc, MONTHS};
use super::{
    clean_curve, finite, monthly_returns, param_name, Candidate, Document, MonthlyReturns,
    Optimisation, Run, TradeRow, WalkForward, MAX_CANDIDATE_ROWS, MAX_TRADE_ROWS,
};

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
pub(super) fn page(doc: &Document) -> String {
    let title = if doc.title.trim().is_empty() {
        "Report"
    } else {
        doc.title.as_str()
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (title) }
                @if doc.runs.is_empty() && doc.optimisation.is_none() {
                    (note("Nothing to report: no runs and no optimisation."))
                }
                @for (i, run) in doc.runs.iter().enumerate() {
                    (run_section(run, i))
                }
                @if let Some(opt) = &doc.optimisation {
                    (optimisation_section(opt))
                }
                footer {
                    p {
                        "Self-contained report by trellis: no scripts, no external resources; charts are \
                         inline SVG; all times are UTC."
                    }
                }
            }
        }
    }
    .into_string()
}

// ---------------------------------------------------------------------------------------------------------
// Runs

fn run_section(run: &Run, index: usize) -> Markup {
    let heading = if run.heading.trim().is_empty() {
        format!("Run {}", index + 1)
    } else {
        run.heading.clone()
    };
    let curve = clean_curve(&run.equity);
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
    html! {
        section.run {
            h2 { (heading) }
            @if run.summary.is_empty() {
                (note("No summary figures."))
            } @else {
                div.scroll {
                    table.kv {
                        tbody {
                            @for (k, v) in &run.summary {
                                tr { th scope="row" { (k) } td { (v) } }
                            }
                        }
                    }
                }
            }
            h3 { "Equity" }
            (chart_or_note(
                time_chart(&equity),
                "No equity curve to draw (it needs points at two different times).",
            ))
            h3 { "Drawdown" }
            (chart_or_note(
                time_chart(&drawdown),
                "No drawdown to draw (it needs equity at two different times).",
            ))
            h3 { "Monthly returns (%)" }
            (monthly_table(&monthly_returns(run.starting_balance, &curve)))
            h3 { "Trades (" (fmt_count(run.trades.len())) ")" }
            (trade_table(&run.trades))
        }
    }
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

fn monthly_table(rows: &[MonthlyReturns]) -> Markup {
    if rows.is_empty() {
        return note("No equity data, so no monthly returns.");
    }
    html! {
        div.scroll {
            table.monthly {
                thead {
                    tr {
                        th.l { "Year" }
                        @for m in MONTHS { th { (m) } }
                        th { "Whole year" }
                    }
                }
                tbody {
                    @for (year, months, total) in rows {
                        tr {
                            th.l scope="row" { (year) }
                            @for m in months { (pct_cell(*m, "")) }
                            (pct_cell(*total, "year"))
                        }
                    }
                }
            }
        }
    }
}

/// A percentage cell: `class` plus "neg" or "pos" by its sign; empty when the value is missing.
fn pct_cell(v: Option<f64>, class: &str) -> Markup {
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
    let classes = (!classes.is_empty()).then(|| classes.join(" "));
    html! { td class=[classes] { (text) } }
}

/// "neg" for a negative amount, for a cell's optional class.
fn neg(v: f64) -> Option<&'static str> {
    (v < 0.0).then_some("neg")
}

fn trade_table(trades: &[TradeRow]) -> Markup {
    if trades.is_empty() {
        return note("No trades.");
    }
    html! {
        div.scroll {
            table.trades {
                thead {
                    tr {
                        th.l { "Time (UTC)" }
                        th.l { "Strategy" }
                        th.l { "Symbol" }
                        th.l { "Side" }
                        th { "Volume" }
                        th { "Price" }
                        th.l { "Entry" }
                        th { "Commission" }
                        th { "Profit" }
                    }
                }
                tbody {
                    @for t in trades.iter().take(MAX_TRADE_ROWS) {
                        tr {
                            td.l { (fmt_msc(t.time_msc)) }
                            td.l { (t.strategy) }
                            td.l { (t.symbol) }
                            td.l { (t.side) }
                            td { (t.volume) }
                            td { (t.price) }
                            td.l { (t.entry) }
                            td { (t.commission) }
                            td class=[is_negative_text(&t.profit).then_some("neg")] { (t.profit) }
                        }
                    }
                }
            }
        }
        @if trades.len() > MAX_TRADE_ROWS {
            (note(&format!(
                "Showing the first {} of {} trades; {} more were left out.",
                fmt_count(MAX_TRADE_ROWS),
                fmt_count(trades.len()),
                fmt_count(trades.len() - MAX_TRADE_ROWS)
            )))
        }
    }
}

fn is_negative_text(s: &str) -> bool {
    let s = s.trim_start();
    s.starts_with('-') || s.starts_with('\u{2212}')
}

// ---------------------------------------------------------------------------------------------------------
// Optimisation

fn optimisation_section(opt: &Optimisation) -> Markup {
    let feasible = opt.results.iter().filter(|c| c.feasible).count();
    let nparams = opt
        .results
        .iter()
        .map(|c| c.params.len())
        .max()
        .unwrap_or(0)
        .max(opt.param_names.len());
    let names: Vec<String> = (0..nparams).map(|i| param_name(opt, i)).collect();
    html! {
        section.optimisation {
            h2 { "Optimisation" }
            div.scroll {
                table.kv {
                    tbody {
                        tr { th scope="row" { "Objective" } td { (opt.objective) } }
                        tr { th scope="row" { "Method" } td { (opt.method) } }
                        tr {
                            th scope="row" { "Candidates" }
                            td { (fmt_count(opt.results.len())) " (" (fmt_count(feasible)) " feasible)" }
                        }
                    }
                }
            }
            @if opt.results.is_empty() {
                @if opt.walk_forward.is_some() {
                    (note("No overall candidate list: each walk-forward window's winner is in the table below."))
                } @else {
                    (note("No candidates were evaluated."))
                }
            } @else {
                (candidates_table(opt, &names))
                (parameter_chart(opt, &names))
            }
            @if let Some(wf) = &opt.walk_forward {
                (walk_forward_section(wf, &names))
            }
        }
    }
}

/// The heatmap over the two parameters with the most distinct values, or the score chart of the only one.
fn parameter_chart(opt: &Optimisation, names: &[String]) -> Markup {
    let mut axes: Vec<Axis> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Axis::new(name, i, &opt.results))
        .filter(|a| !a.cells.is_empty())
        .collect();
    // Most distinct values first; ties keep the parameters' order.
    axes.sort_by_key(|a| std::cmp::Reverse(a.distinct));
    match (axes.first(), axes.get(1)) {
        (Some(x), Some(y)) if y.distinct >= 2 => html! {
            h3 { "Best score by " (x.name) " and " (y.name) }
            (PreEscaped(heatmap(opt, x, y)))
        },
        (Some(x), _) => html! {
            h3 { "Best score by " (x.name) }
            (PreEscaped(score_chart(opt, x)))
        },
        _ => note("No parameter values to chart."),
    }
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

fn candidates_table(opt: &Optimisation, names: &[String]) -> Markup {
    let order = ranking(&opt.results);
    let shown = order.len().min(MAX_CANDIDATE_ROWS);
    let objective = if opt.objective.trim().is_empty() {
        "score"
    } else {
        opt.objective.as_str()
    };
    let rows = order
        .iter()
        .take(shown)
        .filter_map(|&i| opt.results.get(i))
        .enumerate();
    html! {
        h3 { "Best " (fmt_count(shown)) " of " (fmt_count(order.len())) " candidates by " (objective) }
        div.scroll {
            table.candidates {
                thead {
                    tr {
                        th { "#" }
                        @for n in names { th { (n) } }
                        th { "Score" }
                        th { "Net profit" }
                        th { "Trades" }
                        th { "Max drawdown" }
                        th.l { "Feasible" }
                    }
                }
                tbody {
                    @for (rank, c) in rows {
                        tr class=[(!c.feasible).then_some("infeasible")] {
                            td { (rank + 1) }
                            @for p in 0..names.len() {
                                td { @if let Some(v) = c.params.get(p) { (fmt_sig(*v, 10)) } }
                            }
                            td { (finite(c.score).map_or_else(|| "n/a".to_owned(), |s| fmt_sig(s, 6))) }
                            td class=[neg(c.net_profit)] { (fmt_num(c.net_profit, 2)) }
                            td { (c.trades) }
                            td { (fmt_num(c.max_drawdown, 2)) }
                            @if c.feasible {
                                td.l { "yes" }
                            } @else {
                                td.l { span.flag { "infeasible" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn walk_forward_section(wf: &WalkForward, names: &[String]) -> Markup {
    let efficiency = finite(wf.efficiency).map_or_else(|| "n/a".to_owned(), |e| fmt_sig(e, 3));
    let total = wf.windows.iter().fold(0.0, |sum, w| sum + w.out_net_profit);
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
    html! {
        h3 { "Walk-forward" }
        div.scroll {
            table.kv {
                tbody {
                    tr { th scope="row" { "Mode" } td { (wf.mode) } }
                    tr { th scope="row" { "Windows" } td { (fmt_count(wf.windows.len())) } }
                    tr { th scope="row" { "Walk-forward efficiency" } td.efficiency { (efficiency) } }
                }
            }
        }
        @if wf.windows.is_empty() {
            (note("No walk-forward windows."))
        } @else {
            div.scroll {
                table.windows {
                    thead {
                        tr {
                            th { "#" }
                            th.l { "In-sample from (UTC)" }
                            th.l { "In-sample to (UTC)" }
                            th.l { "Out-of-sample from (UTC)" }
                            th.l { "Out-of-sample to (UTC)" }
                            th.l { "Parameters" }
                            th { "In-sample score" }
                            th { "Out-of-sample net profit" }
                        }
                    }
                    tbody {
                        @for (i, w) in wf.windows.iter().enumerate() {
                            tr {
                                td { (i + 1) }
                                td.l { (fmt_minute(w.in_from_ms)) }
                                td.l { (fmt_minute(w.in_to_ms)) }
                                td.l { (fmt_minute(w.out_from_ms)) }
                                td.l { (fmt_minute(w.out_to_ms)) }
                                td.l { (params_text(names, &w.params)) }
                                td { (finite(w.in_score).map_or_else(|| "n/a".to_owned(), |s| fmt_sig(s, 6))) }
                                td class=[neg(w.out_net_profit)] { (fmt_num(w.out_net_profit, 2)) }
                            }
                        }
                        tr {
                            th.l colspan="7" scope="row" { "Total out-of-sample" }
                            td class=[neg(total)] { (fmt_num(total, 2)) }
                        }
                    }
                }
            }
        }
        (chart_or_note(
            time_chart(&chart),
            "No stitched out-of-sample equity to draw (it needs points at two different times).",
        ))
    }
}

/// A finished chart (inline SVG, escaped by the chart code) or, when there is nothing to draw, a note.
fn chart_or_note(chart: Option<String>, missing: &str) -> Markup {
    match chart {
        Some(svg) => PreEscaped(svg),
        None => note(missing),
    }
}

fn note(text: &str) -> Markup {
    html! { p.note { (text) } }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::html;
    use super::*;

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
        // maud leaves ' as it is: every attribute it writes is double-quoted.
        assert!(page.contains("run &lt;i&gt;'1'&lt;/i&gt;"));
        assert!(page.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
        assert!(page.contains("X&amp;Y&lt;Z&gt;"));
        assert!(page.contains("&quot;v&quot; &amp; 'w'"));
        assert!(page.contains("f&lt;a&gt;st"));
        for raw in ["<b>", "<i>", "<Z>", "<a>", "<k>", "&\""] {
            assert!(!page.contains(raw), "unescaped {raw}");
        }
    }

    #[test]
    fn a_script_in_a_strategy_name_or_symbol_is_escaped_by_the_templates() {
        const NASTY: &str = "<script>alert(1)</script>&\"";
        const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;";
        let mut r = run();
        r.heading = NASTY.to_owned();
        r.trades = vec![trade(0, NASTY, NASTY)];
        r.summary = vec![(NASTY.to_owned(), NASTY.to_owned())];
        let mut opt = optimisation(true);
        opt.objective = NASTY.to_owned();
        opt.method = NASTY.to_owned();
        opt.param_names[0] = NASTY.to_owned();
        if let Some(wf) = opt.walk_forward.as_mut() {
            wf.mode = NASTY.to_owned();
        }
        let page = html(&Document {
            title: NASTY.to_owned(),
            runs: vec![r],
            optimisation: Some(opt),
        });
        assert!(!page.to_lowercase().contains("<script"));
        assert!(!page.contains(NASTY));
        assert!(page.contains(&format!("<title>{ESCAPED}</title>")));
        assert!(page.contains(&format!("<h1>{ESCAPED}</h1>")));
        assert!(page.contains(&format!("<h2>{ESCAPED}</h2>")));
        // The strategy and the symbol of the trade.
        assert!(page.contains(&format!(
            "<td class=\"l\">{ESCAPED}</td><td class=\"l\">{ESCAPED}</td>"
        )));
        // The parameter's name in the candidates table, the heatmap's heading and the windows' parameters.
        assert!(page.contains(&format!("<th>{ESCAPED}</th>")));
        assert!(page.contains(&format!("<h3>Best score by {ESCAPED} and slow</h3>")));
        assert!(page.contains(&format!("{ESCAPED} = 10, slow = 30")));
        // Inside the heatmap, the charts' own escape.
        assert!(figure(&page, "heatmap").contains(ESCAPED));
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
}
