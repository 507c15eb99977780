//! Placeholder: `MarketData`'s side of the terminal's bar history (issue 36), so the session's side compiles
//! and runs before the warm-up lands. It only logs; the warm-up's own implementation replaces this file.

use actix::prelude::*;

use super::market_data::MarketData;
use super::messages::{BarsFetched, TerminalLinked};

impl Handler<BarsFetched> for MarketData {
    type Result = ();

    fn handle(&mut self, msg: BarsFetched, _ctx: &mut Self::Context) {
        tracing::debug!(request_id = msg.request_id, symbol = %msg.symbol, timeframe = %msg.timeframe,
            bars = msg.bars.len(), forming = msg.forming.is_some(), error = ?msg.error, "bars fetched");
    }
}

impl Handler<TerminalLinked> for MarketData {
    type Result = ();

    fn handle(&mut self, msg: TerminalLinked, _ctx: &mut Self::Context) {
        tracing::debug!(account = %msg.login, serves_bars = msg.serves_bars, "terminal linked");
    }
}
