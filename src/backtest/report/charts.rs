//! The charts: inline SVG written by hand — time charts (equity, drawdown, stitched out-of-sample equity),
//! the optimisation heatmap with its legend, the one-parameter score chart, and the value axes' ticks.
//!
//! Hand-built on purpose: the page needs small, self-contained inline SVG (a `viewBox`, no fonts, no
//! namespace, no scripts) and a plotting crate such as plotters cannot be made to emit that without a large
//! dependency (plotters' SVG backend writes a standalone document per chart and brings font handling and
//! a large API for what is here a few hundred lines of `write!`). As the SVG is written by hand, the text
//! it carries (titles, tooltips, axis labels, the figure captions) is escaped here by a small `esc`; the
//! rest of the page is escaped by maud (see `page`).

use std::fmt::Write as _;

use super::format::{fmt_count, fmt_num, fmt_sig, params_text};
use super::time::{fmt_minute, time_ticks};
use super::{finite, param_name, Candidate, Optimisation};

/// Curves are drawn from at most this many buckets, each contributing its minimum and maximum.
pub(super) const DRAW_BUCKETS: usize = 750;
/// A heatmap axis with more distinct values than this is split into [`AXIS_BINS`] equal-width bins.
pub(super) const MAX_AXIS_CELLS: usize = 60;
pub(super) const AXIS_BINS: usize = 40;

// Chart geometry, in viewBox units.
pub(super) const W: f64 = 800.0;
pub(super) const H: f64 = 320.0;
pub(super) const ML: f64 = 84.0;
pub(super) const MR: f64 = 28.0;
pub(super) const MT: f64 = 36.0;
pub(super) const MB: f64 = 40.0;
/// Heatmap: taller, with room for the legend on the right and the parameter's name below.
pub(super) const HM_H: f64 = 390.0;
pub(super) const HM_MR: f64 = 140.0;
pub(super) const HM_MB: f64 = 52.0;

pub(super) const GREY: &str = "#d9d9d9";
pub(super) const TEXT: &str = "#555";

/// One axis of the heatmap or score chart: the distinct values of a parameter, or equal-width bins when
/// there are too many of them (e.g. random search over a continuous range).
pub(super) struct Axis {
    pub(super) name: String,
    pub(super) param: usize,
    /// Representative value per cell: the distinct value, or the bin's centre.
    pub(super) cells: Vec<f64>,
    /// (lowest value, bin width) when binned.
    pub(super) bins: Option<(f64, f64)>,
    pub(super) distinct: usize,
}

impl Axis {
    pub(super) fn new(name: &str, param: usize, results: &[Candidate]) -> Self {
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
pub(super) fn label_indices(n: usize) -> Vec<usize> {
    let k = n.div_ceil(6).max(1);
    (0..n).step_by(k).collect()
}

/// Best feasible finite score per cell (row-major, `y` outer), with the candidate it came from, and how
/// many candidates (feasible or not) fell in each cell.
pub(super) fn best_by_cell(
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
pub(super) fn best_cell(grid: &[Option<(f64, usize)>]) -> Option<(usize, f64, f64)> {
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

pub(super) fn heatmap(opt: &Optimisation, ax: &Axis, ay: &Axis) -> String {
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
pub(super) fn legend(s: &mut String, range: Option<(f64, f64)>, ph: f64) {
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
pub(super) fn colour(t: f64) -> String {
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
pub(super) fn score_chart(opt: &Optimisation, ax: &Axis) -> String {
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

// ---------------------------------------------------------------------------------------------------------
// Time charts

pub(super) struct TimeChart<'a> {
    pub(super) title: &'a str,
    pub(super) class: &'a str,
    /// In time order, finite.
    pub(super) points: &'a [(i64, f64)],
    /// A dashed horizontal reference line and its label.
    pub(super) baseline: Option<(f64, &'a str)>,
    /// Fill between the curve and zero (the drawdown).
    pub(super) fill_to_zero: bool,
    /// Dashed vertical lines at these times (those inside the curve's span).
    pub(super) markers: &'a [i64],
    pub(super) colour: &'a str,
}

/// A line chart over time, or `None` when the points do not span any time.
pub(super) fn time_chart(c: &TimeChart<'_>) -> Option<String> {
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

pub(super) fn svg_open(s: &mut String, class: &str, height: f64, title: &str) {
    put!(
        s,
        "<figure class=\"chart {class}\"><svg viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{t}\" \
         font-size=\"11\"><title>{t}</title>\n\
         <text x=\"{ML}\" y=\"22\" font-size=\"14\" font-weight=\"600\" fill=\"#1d1d1f\">{t}</text>\n",
        t = esc(title)
    );
}

/// Horizontal grid lines with value labels on the left.
pub(super) fn y_grid(s: &mut String, ticks: &Ticks, y: &dyn Fn(f64) -> f64, right: f64) {
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

/// At most `2 * buckets + 2` points: each of at most `buckets` consecutive stretches contributes its
/// minimum and maximum (in time order), and the first and last points are always kept.
pub(super) fn downsample(points: &[(i64, f64)], buckets: usize) -> Vec<(i64, f64)> {
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
pub(super) struct Ticks {
    pub(super) values: Vec<f64>,
    pub(super) decimals: usize,
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

pub(super) fn value_ticks(lo: f64, hi: f64) -> Ticks {
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

/// Escapes text for SVG text, `<title>`s, quoted attribute values and the figure captions: the charts are
/// built by hand, so the text they carry (parameter names, axis labels) is escaped here.
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
    use super::super::fixtures::*;
    use super::super::time::MIN_MS;
    use super::super::{html, Document, Optimisation, Run};
    use super::*;

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
            &table[table.find("<tbody>").expect("body")..table.find("</tr><tr").expect("rows")];
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
    fn value_axes_get_four_to_six_round_ticks() {
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
    }
}
