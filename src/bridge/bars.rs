//! The terminal's bar history on the wire (protocol 3): which `bars_request`s are out, and the assembly of
//! their paged `bars` answers into one answer each.
//!
//! Why a type of its own, outside the session actor: the rules are pure and worth testing without a
//! connection. An answer comes in pages (a frame holds at most [`MAX_BARS_PER_FRAME`] bars); the pages of one
//! request must name its symbol and timeframe, stay inside its range, go forward in time, and together hold at
//! most [`MAX_BARS_PER_ANSWER`] bars. A page that breaks a rule ends its request with an error (the caller
//! also tells the bridge, `invalid_value`).
//!
//! # Invariants
//! - At most [`MAX_IN_FLIGHT`] requests are on the wire at once, at most [`MAX_WAITING`] wait for their turn; so
//!   however many a caller asks, at most `MAX_IN_FLIGHT × MAX_BARS_PER_ANSWER` bars are held.
//! - Every request taken ends in exactly one [`Answer`]: complete, refused, expired, or failed with the link.
//! - Wire ids are the session's own (never the caller's `request_id`), unique across the session's lives, so a
//!   late page of an earlier request can never complete a newer one.

use std::collections::{HashMap, VecDeque};

use super::protocol::{BarsFrame, BarsRequest, MAX_BARS_PER_ANSWER, MAX_BARS_PER_FRAME};
use crate::domain::{Bar, Symbol, Timeframe};

/// Requests on the wire at once per terminal: a terminal answers them one after the other anyway.
pub const MAX_IN_FLIGHT: usize = 4;
/// Requests waiting for their turn; beyond, a request is refused at once.
pub const MAX_WAITING: usize = 1_000;

/// One request for bars, as the caller (market data) asked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The caller's id, given back in the answer.
    pub request_id: u64,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub from_ms: i64,
    pub to_ms: i64,
    /// At most this many (the newest of the range).
    pub count: usize,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub request_id: u64,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    /// Complete bars, oldest first.
    pub bars: Vec<Bar>,
    pub forming: Option<Bar>,
    pub error: Option<String>,
}

impl Answer {
    fn failed(ask: Ask, why: String) -> Self {
        Self {
            request_id: ask.request_id,
            symbol: ask.symbol,
            timeframe: ask.timeframe,
            bars: Vec::new(),
            forming: None,
            error: Some(why),
        }
    }
}

/// What one `bars` page did.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    /// Kept; more pages follow.
    Partial,
    /// The last page: the request is answered.
    Done(Answer),
    /// The page broke a rule: the request is answered with the error, which the bridge is told too.
    Refused { answer: Answer, why: String },
    /// No request of that id is out (it expired, or was never made): ignored.
    Unknown,
}

#[derive(Debug)]
struct Asked {
    ask: Ask,
    bars: Vec<Bar>,
    forming: Option<Bar>,
}

/// The bar requests of one session.
#[derive(Debug)]
pub struct BarsRequests {
    /// Wire ids start above this (the session's epoch), so they differ between the session's lives.
    base: u64,
    issued: u64,
    in_flight: HashMap<u64, Asked>,
    waiting: VecDeque<Ask>,
}

impl BarsRequests {
    pub fn new(base: u64) -> Self {
        Self {
            base,
            issued: 0,
            in_flight: HashMap::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Takes a request; it waits for its turn (see [`Self::start`]). A full queue answers it with an error
    /// at once.
    pub fn ask(&mut self, ask: Ask) -> Result<(), Box<Answer>> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(Box::new(Answer::failed(
                ask,
                format!(
                    "{MAX_WAITING} bar requests already wait for this terminal; ask again later"
                ),
            )));
        }
        self.waiting.push_back(ask);
        Ok(())
    }

    /// The requests to put on the wire now (up to [`MAX_IN_FLIGHT`] out at once), with their wire ids and
    /// `seq` 0 for the caller to fill.
    pub fn start(&mut self) -> Vec<BarsRequest> {
        let mut out = Vec::new();
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(ask) = self.waiting.pop_front() else {
                break;
            };
            self.issued += 1;
            let id = self.base + self.issued;
            out.push(BarsRequest {
                seq: 0,
                request_id: id,
                symbol: ask.symbol.as_str().to_owned(),
                timeframe: ask.timeframe.as_str().to_owned(),
                from_msc: ask.from_ms,
                to_msc: ask.to_ms,
                count: Some(ask.count as u64),
            });
            self.in_flight.insert(
                id,
                Asked {
                    ask,
                    bars: Vec::new(),
                    forming: None,
                },
            );
        }
        out
    }

    /// Whether a request of this wire id is out.
    pub fn is_out(&self, id: u64) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// Ends a request that took too long (`None` when it was answered meanwhile).
    pub fn expire(&mut self, id: u64, why: String) -> Option<Answer> {
        self.in_flight
            .remove(&id)
            .map(|asked| Answer::failed(asked.ask, why))
    }

    /// Ends every request, on the wire or waiting (the link dropped: no page of theirs will come).
    pub fn fail_all(&mut self, why: &str) -> Vec<Answer> {
        let mut asks: Vec<Ask> = self.in_flight.drain().map(|(_, a)| a.ask).collect();
        asks.sort_by_key(|a| a.request_id);
        asks.extend(self.waiting.drain(..));
        asks.into_iter()
            .map(|ask| Answer::failed(ask, why.to_owned()))
            .collect()
    }

    /// Applies one page (already decoded and checked by `protocol::decode`).
    pub fn page(&mut self, frame: BarsFrame) -> Page {
        let Some(mut asked) = self.in_flight.remove(&frame.request_id) else {
            return Page::Unknown;
        };
        if let Some(error) = frame.error {
            let answer = Answer::failed(asked.ask, format!("the terminal: {error}"));
            return Page::Done(answer);
        }
        if let Err(why) = asked.take(&frame) {
            let answer = Answer::failed(
                asked.ask,
                format!("the terminal's answer was refused: {why}"),
            );
            return Page::Refused { answer, why };
        }
        if frame.more {
            self.in_flight.insert(frame.request_id, asked);
            return Page::Partial;
        }
        Page::Done(Answer {
            request_id: asked.ask.request_id,
            symbol: asked.ask.symbol,
            timeframe: asked.ask.timeframe,
            bars: asked.bars,
            forming: asked.forming,
            error: None,
        })
    }
}

impl Asked {
    /// Adds a page's bars after checking it belongs to this request.
    fn take(&mut self, frame: &BarsFrame) -> Result<(), String> {
        let ask = &self.ask;
        if frame.symbol != ask.symbol.as_str()
            || Timeframe::parse(&frame.timeframe) != Some(ask.timeframe)
        {
            return Err(format!(
                "request {} asked for {} {}, the page is {} {}",
                frame.request_id, ask.symbol, ask.timeframe, frame.symbol, frame.timeframe
            ));
        }
        if frame.bars.len() > MAX_BARS_PER_FRAME
            || self.bars.len() + frame.bars.len() > MAX_BARS_PER_ANSWER
        {
            return Err(format!(
                "more than {MAX_BARS_PER_ANSWER} bars in one answer"
            ));
        }
        let range = ask.from_ms..=ask.to_ms;
        if let Some(r) = frame.bars.iter().find(|r| !range.contains(&r.time_msc)) {
            return Err(format!(
                "bar at {} is outside the range asked [{}, {}]",
                r.time_msc, ask.from_ms, ask.to_ms
            ));
        }
        let last = self.bars.last().map(|b| b.open_time_ms);
        if let (Some(last), Some(first)) = (last, frame.bars.first()) {
            if first.time_msc <= last {
                return Err(format!(
                    "pages must go forward in time: {} follows {last}",
                    first.time_msc
                ));
            }
        }
        self.bars.extend(
            frame
                .bars
                .iter()
                .map(|r| r.to_bar(&ask.symbol, ask.timeframe)),
        );
        if let Some(f) = &frame.forming {
            let newest = self.bars.last().map(|b| b.open_time_ms);
            if newest.is_some_and(|t| f.time_msc <= t) {
                return Err(format!(
                    "the forming bar ({}) is not after the last complete bar",
                    f.time_msc
                ));
            }
            // Outside the range asked, the forming bar is not what was asked for: left out.
            self.forming = range
                .contains(&f.time_msc)
                .then(|| f.to_bar(&ask.symbol, ask.timeframe));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::protocol::BarRow;

    const MIN: i64 = 60_000;

    fn d(s: &str) -> rust_decimal::Decimal {
        s.parse().expect("decimal literal")
    }

    fn row(t: i64) -> BarRow {
        BarRow {
            time_msc: t,
            open: d("1.1"),
            high: d("1.2"),
            low: d("1.0"),
            close: d("1.15"),
            tick_volume: 3,
        }
    }

    fn ask(request_id: u64) -> Ask {
        Ask {
            request_id,
            symbol: Symbol::new("EURUSD"),
            timeframe: Timeframe::M1,
            from_ms: 0,
            to_ms: 100 * MIN,
            count: 1_000,
        }
    }

    fn page(id: u64, bars: Vec<BarRow>, forming: Option<BarRow>, more: bool) -> BarsFrame {
        BarsFrame {
            seq: 1,
            request_id: id,
            symbol: "EURUSD".into(),
            timeframe: "M1".into(),
            bars,
            forming,
            error: None,
            more,
        }
    }

    /// One request taken and put on the wire; its wire id.
    fn started(r: &mut BarsRequests, a: Ask) -> u64 {
        r.ask(a).expect("room");
        r.start()[0].request_id
    }

    #[test]
    fn pages_of_one_answer_become_one_answer_with_the_callers_id_and_the_forming_bar() {
        let mut r = BarsRequests::new(1_000);
        let id = started(&mut r, ask(7));
        assert_eq!(id, 1_001, "the wire id is the session's, not the caller's");

        assert_eq!(
            r.page(page(id, vec![row(0), row(MIN)], None, true)),
            Page::Partial
        );
        let Page::Done(answer) = r.page(page(id, vec![row(2 * MIN)], Some(row(3 * MIN)), false))
        else {
            panic!("the last page answers")
        };

        assert_eq!(answer.request_id, 7);
        assert_eq!(
            answer
                .bars
                .iter()
                .map(|b| b.open_time_ms)
                .collect::<Vec<_>>(),
            vec![0, MIN, 2 * MIN]
        );
        assert_eq!(answer.forming.map(|b| b.open_time_ms), Some(3 * MIN));
        assert_eq!(answer.error, None);
        assert!(!r.is_out(id));
    }

    #[test]
    fn a_page_for_another_symbol_a_bar_outside_the_range_or_a_page_going_back_is_refused() {
        let mut r = BarsRequests::new(0);
        let other = started(&mut r, ask(1));
        let mut wrong = page(other, vec![row(0)], None, false);
        wrong.symbol = "GBPUSD".into();
        let outside = started(&mut r, ask(2));
        let back = started(&mut r, ask(3));
        r.page(page(back, vec![row(5 * MIN)], None, true));

        let refused = [
            r.page(wrong),
            r.page(page(outside, vec![row(500 * MIN)], None, false)),
            r.page(page(back, vec![row(4 * MIN)], None, false)),
        ];

        for (p, id) in refused.iter().zip([1, 2, 3]) {
            let Page::Refused { answer, why } = p else {
                panic!("refused: {p:?}")
            };
            assert_eq!(answer.request_id, id);
            assert!(answer.bars.is_empty());
            assert!(answer
                .error
                .as_deref()
                .is_some_and(|e| e.contains(why.as_str())));
        }
    }

    #[test]
    fn the_terminals_error_ends_the_request_and_a_page_of_no_request_is_ignored() {
        let mut r = BarsRequests::new(0);
        let id = started(&mut r, ask(4));
        let mut err = page(id, vec![], None, false);
        err.error = Some("(-2, 'Terminal: Invalid params')".into());

        let Page::Done(answer) = r.page(err) else {
            panic!("answered")
        };

        assert!(answer
            .error
            .as_deref()
            .is_some_and(|e| e.contains("Invalid params")));
        assert_eq!(r.page(page(id, vec![row(0)], None, false)), Page::Unknown);
    }

    #[test]
    fn at_most_four_requests_are_out_and_the_rest_wait_their_turn() {
        let mut r = BarsRequests::new(0);
        for i in 0..6 {
            r.ask(ask(i)).expect("room");
        }

        let first = r.start();
        assert_eq!(first.len(), MAX_IN_FLIGHT);
        assert!(r.start().is_empty());
        assert!(matches!(
            r.page(page(first[0].request_id, vec![], None, false)),
            Page::Done(_)
        ));
        let next = r.start();

        assert_eq!(next.len(), 1);
        assert_eq!(next[0].from_msc, 0);
    }

    #[test]
    fn a_dropped_link_and_a_timeout_answer_every_request_once() {
        let mut r = BarsRequests::new(0);
        for i in 0..6 {
            r.ask(ask(i)).expect("room");
        }
        let out = r.start();

        let expired = r.expire(out[0].request_id, "too slow".into());
        let again = r.expire(out[0].request_id, "too slow".into());
        let failed = r.fail_all("link dropped");

        assert_eq!(expired.map(|a| a.request_id), Some(0));
        assert_eq!(again, None);
        assert_eq!(
            failed.iter().map(|a| a.request_id).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert!(failed
            .iter()
            .all(|a| a.error.as_deref() == Some("link dropped")));
        assert!(r.fail_all("again").is_empty());
    }
}
