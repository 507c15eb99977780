//! Tick sources for the simulator (and the backtester): a seeded random walk, and CSV files of
//! `time_msc,bid,ask[,symbol]` with a header line.

use std::io::BufRead;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::domain::{Symbol, Tick};

/// A random walk per symbol: each tick moves one symbol's mid by up to `max_step_points` either way, at
/// a fixed spread, with tick time advancing by `time_step_ms` (so market time can run faster than the
/// wall clock and bars close quickly in a demo).
pub struct RandomWalk {
    symbols: Vec<(Symbol, Decimal, Decimal)>,
    rng: SmallRng,
    next: usize,
    time_msc: i64,
    time_step_ms: i64,
    max_step_points: i64,
    spread_points: i64,
}

impl RandomWalk {
    /// `symbols`: name, start price, point size.
    pub fn new(
        symbols: Vec<(Symbol, Decimal, Decimal)>,
        start_msc: i64,
        time_step_ms: i64,
        seed: u64,
    ) -> Self {
        Self {
            symbols,
            rng: SmallRng::seed_from_u64(seed),
            next: 0,
            time_msc: start_msc,
            time_step_ms: time_step_ms.max(1),
            max_step_points: 10,
            spread_points: 2,
        }
    }

    pub fn with_steps(mut self, max_step_points: i64, spread_points: i64) -> Self {
        self.max_step_points = max_step_points.max(1);
        self.spread_points = spread_points.max(0);
        self
    }

    /// The usual majors with their points.
    pub fn default_symbols(names: &[String]) -> Vec<(Symbol, Decimal, Decimal)> {
        names
            .iter()
            .map(|n| {
                let (start, point) = match n.as_str() {
                    "USDJPY" => (Decimal::new(150_000, 3), Decimal::new(1, 3)),
                    "GBPUSD" => (Decimal::new(127_000, 5), Decimal::new(1, 5)),
                    "AUDUSD" => (Decimal::new(66_000, 5), Decimal::new(1, 5)),
                    "XAUUSD" => (Decimal::new(200_000, 2), Decimal::new(1, 2)),
                    _ => (Decimal::new(110_000, 5), Decimal::new(1, 5)),
                };
                (Symbol(n.clone()), start, point)
            })
            .collect()
    }
}

impl Iterator for RandomWalk {
    type Item = Tick;

    fn next(&mut self) -> Option<Tick> {
        if self.symbols.is_empty() {
            return None;
        }
        let i = self.next % self.symbols.len();
        self.next += 1;
        let step = self
            .rng
            .gen_range(-self.max_step_points..=self.max_step_points);
        let (symbol, mid, point) = &mut self.symbols[i];
        let moved = *mid + Decimal::from(step) * *point;
        if moved > *point * Decimal::from(100) {
            *mid = moved;
        }
        let bid = *mid;
        let ask = *mid + Decimal::from(self.spread_points) * *point;
        self.time_msc += self.time_step_ms;
        Some(Tick {
            symbol: symbol.clone(),
            time_msc: self.time_msc,
            bid,
            ask,
        })
    }
}

/// A line of a tick CSV that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct CsvError {
    pub line: usize,
    pub reason: String,
}

/// What reading a CSV produced.
#[derive(Debug, Default)]
pub struct CsvTicks {
    pub ticks: Vec<Tick>,
    /// Lines skipped with `skip_bad` (line number and reason).
    pub skipped: Vec<CsvError>,
}

/// Reads `time_msc,bid,ask[,symbol]` with a header line. Bad lines (unparsable, time going backwards per
/// symbol, bid above ask) stop the read with their line number, or are skipped and listed with `skip_bad`.
pub fn read_ticks_csv(
    path: &Path,
    default_symbol: Option<&str>,
    skip_bad: bool,
) -> Result<CsvTicks, CsvError> {
    let file = std::fs::File::open(path).map_err(|e| CsvError {
        line: 0,
        reason: format!("cannot open {}: {e}", path.display()),
    })?;
    parse_ticks_csv(std::io::BufReader::new(file), default_symbol, skip_bad)
}

pub fn parse_ticks_csv(
    reader: impl BufRead,
    default_symbol: Option<&str>,
    skip_bad: bool,
) -> Result<CsvTicks, CsvError> {
    let mut out = CsvTicks::default();
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut saw_header = false;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| CsvError {
            line: n,
            reason: format!("unreadable: {e}"),
        })?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !saw_header {
            let cols: Vec<String> = line
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            if cols.len() < 3 || cols[0] != "time_msc" || cols[1] != "bid" || cols[2] != "ask" {
                return Err(CsvError {
                    line: n,
                    reason: "missing header `time_msc,bid,ask[,symbol]`".into(),
                });
            }
            saw_header = true;
            continue;
        }
        match parse_line(line, default_symbol, &last) {
            Ok(t) => {
                last.insert(t.symbol.0.clone(), t.time_msc);
                out.ticks.push(t);
            }
            Err(reason) => {
                let e = CsvError { line: n, reason };
                if !skip_bad {
                    return Err(e);
                }
                out.skipped.push(e);
            }
        }
    }
    if !saw_header {
        return Err(CsvError {
            line: 1,
            reason: "empty file: missing header `time_msc,bid,ask[,symbol]`".into(),
        });
    }
    Ok(out)
}

fn parse_line(
    line: &str,
    default_symbol: Option<&str>,
    last: &std::collections::HashMap<String, i64>,
) -> Result<Tick, String> {
    let cols: Vec<&str> = line.split(',').map(str::trim).collect();
    if cols.len() < 3 || cols.len() > 4 {
        return Err(format!("expected 3 or 4 columns, found {}", cols.len()));
    }
    let time_msc: i64 = cols[0]
        .parse()
        .map_err(|_| format!("time_msc `{}` is not an integer", cols[0]))?;
    let bid: Decimal = cols[1]
        .parse()
        .map_err(|_| format!("bid `{}` is not a number", cols[1]))?;
    let ask: Decimal = cols[2]
        .parse()
        .map_err(|_| format!("ask `{}` is not a number", cols[2]))?;
    let symbol = match (cols.get(3), default_symbol) {
        (Some(s), _) if !s.is_empty() => (*s).to_owned(),
        (_, Some(d)) => d.to_owned(),
        _ => return Err("no symbol column and no default symbol".into()),
    };
    if bid <= Decimal::ZERO {
        return Err(format!("bid {bid} is not positive"));
    }
    if bid > ask {
        return Err(format!("bid {bid} is above ask {ask}"));
    }
    if let Some(prev) = last.get(&symbol) {
        if time_msc < *prev {
            return Err(format!(
                "time {time_msc} is before the previous tick of {symbol} ({prev})"
            ));
        }
    }
    Ok(Tick {
        symbol: Symbol(symbol),
        time_msc,
        bid,
        ask,
    })
}

/// Sends `ticks` to a simulator at `rate` ticks per second (in batches every 10 ms), or as fast as the
/// simulator takes them when `rate` is 0. Returns how many were sent (it stops when the simulator does).
pub async fn pace(sim: &super::Feeder, ticks: impl IntoIterator<Item = Tick>, rate: u64) -> u64 {
    let mut sent = 0u64;
    let mut ticks = ticks.into_iter();
    if rate == 0 {
        for t in ticks {
            if !sim.tick(t) {
                return sent;
            }
            sent += 1;
            if sent % 1_000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        return sent;
    }
    let period = std::time::Duration::from_millis(10);
    let mut clock = tokio::time::interval(period);
    let started = tokio::time::Instant::now();
    loop {
        clock.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let Some(t) = ticks.next() else { return sent };
            if !sim.tick(t) {
                return sent;
            }
            sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_line_is_named_with_its_number() {
        let parse = |s: &str| parse_ticks_csv(s.as_bytes(), Some("EURUSD"), false);
        assert_eq!(parse("1,1.1,1.2\n").expect_err("no header").line, 1);
        assert_eq!(
            parse("time_msc,bid,ask\n1,1.1,1.2\nx,1.1,1.2\n")
                .expect_err("bad")
                .line,
            3
        );
        assert!(parse("time_msc,bid,ask\n1,1.3,1.2\n")
            .expect_err("bid>ask")
            .reason
            .contains("above ask"));
        assert!(parse("time_msc,bid,ask\n5,1.1,1.2\n4,1.1,1.2\n")
            .expect_err("back")
            .reason
            .contains("before"));
        let skipped = parse_ticks_csv(
            "time_msc,bid,ask\n1,1.1,1.2\nbad\n2,1.1,1.2\n".as_bytes(),
            Some("X"),
            true,
        )
        .expect("skip");
        assert_eq!((skipped.ticks.len(), skipped.skipped.len()), (2, 1));
    }
}
