//! Dates and time ticks: UTC dates of ms-since-epoch times as the report shows them, and the calendar-aware
//! ticks of a time axis.
//!
//! Apart so the dates are in one place, away from the drawing. The calendar itself (days to dates, month
//! lengths, leap years) is jiff's: [`utc`] turns a time into a `jiff::civil::DateTime` and [`month_start`]
//! a month back into a time; this file only lays the fields out and chooses the ticks. jiff covers the
//! years -9999..=9999; times beyond are shown as its first or last instant (a report never has them).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;
use jiff::Timestamp;

pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub(super) const SEC_MS: i64 = 1_000;
pub(super) const MIN_MS: i64 = 60 * SEC_MS;
pub(super) const HOUR_MS: i64 = 60 * MIN_MS;
pub(super) const DAY_MS: i64 = 24 * HOUR_MS;

/// A calendar-aware tick step.
#[derive(Clone, Copy)]
pub(super) enum Step {
    /// Multiples of this many ms after an offset (weeks start on Monday, 1970-01-05).
    Ms(i64, i64),
    /// Every this many months, on month starts whose index (year * 12 + month) it divides.
    Months(i64),
}

pub(super) const MONDAY_MS: i64 = 4 * DAY_MS;

pub(super) fn time_steps() -> Vec<Step> {
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
pub(super) fn step_ticks(step: Step, t0: i64, t1: i64) -> Vec<i64> {
    let mut out = Vec::new();
    match step {
        Step::Ms(len, offset) => {
            let (t0, t1) = (i128::from(t0), i128::from(t1));
            let (len, offset) = (i128::from(len), i128::from(offset));
            let mut t = offset + (t0 - offset).div_euclid(len) * len;
            if t < t0 {
                t += len;
            }
            while t <= t1 && out.len() < 8 {
                out.extend(i64::try_from(t).ok());
                t += len;
            }
        }
        Step::Months(k) => {
            let c = utc(t0);
            let mut mi = i64::from(c.year()) * 12 + i64::from(c.month()) - 1;
            if month_start(mi).is_some_and(|s| s < t0) {
                mi += 1;
            }
            mi += (k - mi.rem_euclid(k)) % k;
            while let Some(t) = month_start(mi).filter(|&t| t <= t1) {
                if out.len() >= 8 {
                    break;
                }
                out.push(t);
                mi += k;
            }
        }
    }
    out
}

/// Ms at the start (UTC) of month index `mi` (year * 12 + month - 1); `None` outside jiff's years.
pub(super) fn month_start(mi: i64) -> Option<i64> {
    let year = i16::try_from(mi.div_euclid(12)).ok()?;
    let month = i8::try_from(mi.rem_euclid(12) + 1).ok()?;
    let start = Date::new(year, month, 1)
        .ok()?
        .to_datetime(Time::midnight());
    Some(Offset::UTC.to_timestamp(start).ok()?.as_millisecond())
}

/// 4–6 date ticks on round calendar steps, labelled as precisely as the step needs; evenly spaced ticks
/// (5) when no round step gives 4–6.
pub(super) fn time_ticks(t0: i64, t1: i64) -> Vec<(i64, String)> {
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
                    Step::Months(k) if k % 12 == 0 => format!("{:04}", utc(t).year()),
                    Step::Months(_) => {
                        let c = utc(t);
                        format!("{:04}-{:02}", c.year(), c.month())
                    }
                    Step::Ms(len, _) if len >= DAY_MS => fmt_day(t),
                    Step::Ms(len, _) if len >= MIN_MS => fmt_minute(t),
                    Step::Ms(..) => {
                        let c = utc(t);
                        format!("{:02}:{:02}:{:02}", c.hour(), c.minute(), c.second())
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

/// The UTC date and time of `ms` since the Unix epoch; outside jiff's range, its first or last instant.
pub(super) fn utc(ms: i64) -> DateTime {
    let at = Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    Offset::UTC.to_datetime(at)
}

/// `YYYY-MM-DD` (UTC).
pub(super) fn fmt_day(ms: i64) -> String {
    let c = utc(ms);
    format!("{:04}-{:02}-{:02}", c.year(), c.month(), c.day())
}

/// `YYYY-MM-DD HH:MM` (UTC).
pub(super) fn fmt_minute(ms: i64) -> String {
    let c = utc(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year(),
        c.month(),
        c.day(),
        c.hour(),
        c.minute()
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub(super) fn fmt_msc(ms: i64) -> String {
    let c = utc(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        c.year(),
        c.month(),
        c.day(),
        c.hour(),
        c.minute(),
        c.second(),
        c.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::ms;
    use super::*;

    #[test]
    fn utc_dates_are_laid_out_to_the_minute_or_the_millisecond() {
        assert_eq!(fmt_minute(0), "1970-01-01 00:00");
        assert_eq!(
            fmt_msc(951_782_400_000 + 13 * HOUR_MS + 7),
            "2000-02-29 13:00:00.007"
        );
        assert_eq!(fmt_msc(-1), "1969-12-31 23:59:59.999");
        assert_eq!(fmt_day(ms(2100, 3, 1) - 1), "2100-02-28");
        assert_eq!(fmt_minute(1_709_251_199_000), "2024-02-29 23:59");
        assert_eq!(month_start(2024 * 12 + 1), Some(ms(2024, 2, 1)));
        assert_eq!(month_start(1969 * 12 + 11), Some(ms(1969, 12, 1)));
        // Beyond jiff's years: its last instant, no panic, no tick.
        assert!(fmt_minute(i64::MAX).starts_with("9999-12-"));
        assert!(fmt_msc(i64::MIN).starts_with("-9999-"));
        assert_eq!(month_start(10_000 * 12), None);
        assert_eq!(time_ticks(i64::MIN, i64::MAX).len(), 5);
    }

    #[test]
    fn time_axes_get_four_to_six_round_ticks() {
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
    }
}
