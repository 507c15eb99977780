//! The page: the HTML document, its sections (runs, optimisation, walk-forward) and their tables.
//!
//! It exists apart from the charts so the document's structure can be read in one place; the charts come
//! from [`super::charts`] as finished `<figure>`s.

use std::fmt::Write as _;

use super::charts::{heatmap, score_chart, time_chart, Axis, TimeChart};
use super::format::{esc, fmt_count, fmt_num, fmt_sig, params_text};
use super::time::{fmt_minute, fmt_msc, MONTHS};
use super::{
    clean_curve, finite, monthly_returns, param_name, Candidate, Document, MonthlyReturns,
    Optimisation, Run, TradeRow, WalkForward, MAX_CANDIDATE_ROWS, MAX_TRADE_ROWS,
};

pub(super) const CSS: &str = "\
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

// ---------------------------------------------------------------------------------------------------------
// Runs

pub(super) fn run_section(out: &mut String, run: &Run, index: usize) {
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
pub(super) fn drawdown(curve: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut peak = f64::NEG_INFINITY;
    curve
        .iter()
        .map(|&(t, v)| {
            peak = peak.max(v);
            (t, v - peak)
        })
        .collect()
}

pub(super) fn monthly_table(out: &mut String, rows: &[MonthlyReturns]) {
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

pub(super) fn pct_cell(out: &mut String, v: Option<f64>, class: &str) {
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

pub(super) fn trade_table(out: &mut String, trades: &[TradeRow]) {
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

pub(super) fn is_negative_text(s: &str) -> bool {
    let s = s.trim_start();
    s.starts_with('-') || s.starts_with('\u{2212}')
}

// ---------------------------------------------------------------------------------------------------------
// Optimisation

pub(super) fn optimisation_section(out: &mut String, opt: &Optimisation) {
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

/// Candidate indices, best first: finite scores descending, then missing scores; ties put feasible first
/// and otherwise keep the input order.
pub(super) fn ranking(results: &[Candidate]) -> Vec<usize> {
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

pub(super) fn candidates_table(out: &mut String, opt: &Optimisation, names: &[String]) {
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

pub(super) fn walk_forward_section(out: &mut String, wf: &WalkForward, names: &[String]) {
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

pub(super) fn chart_or_note(out: &mut String, chart: Option<String>, missing: &str) {
    match chart {
        Some(svg) => out.push_str(&svg),
        None => note(out, missing),
    }
}

pub(super) fn note(out: &mut String, text: &str) {
    put!(out, "<p class=\"note\">{}</p>\n", esc(text));
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
