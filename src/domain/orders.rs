//! Orders: MT5 codes, the order state machine with its in-flight states, and how a trade server's return
//! code is to be treated (shared/MT5.md).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Login, Side, Symbol};

/// MT5 `TRADE_ACTION_*`.
pub mod action {
    pub const DEAL: u32 = 1;
    pub const PENDING: u32 = 5;
    pub const SLTP: u32 = 6;
    pub const MODIFY: u32 = 7;
    pub const REMOVE: u32 = 8;
    pub const CLOSE_BY: u32 = 10;
}

/// MT5 `TRADE_RETCODE_*` values trellis reasons about.
pub mod retcode {
    pub const REQUOTE: u32 = 10004;
    pub const REJECT: u32 = 10006;
    pub const CANCEL: u32 = 10007;
    pub const PLACED: u32 = 10008;
    pub const DONE: u32 = 10009;
    pub const DONE_PARTIAL: u32 = 10010;
    pub const ERROR: u32 = 10011;
    pub const TIMEOUT: u32 = 10012;
    pub const INVALID: u32 = 10013;
    pub const INVALID_VOLUME: u32 = 10014;
    pub const INVALID_PRICE: u32 = 10015;
    pub const INVALID_STOPS: u32 = 10016;
    pub const TRADE_DISABLED: u32 = 10017;
    pub const MARKET_CLOSED: u32 = 10018;
    pub const NO_MONEY: u32 = 10019;
    pub const PRICE_CHANGED: u32 = 10020;
    pub const PRICE_OFF: u32 = 10021;
    pub const LOCKED: u32 = 10028;
    pub const INVALID_FILL: u32 = 10030;
    pub const CONNECTION: u32 = 10031;
}

/// How to treat a trade server return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetcodeClass {
    /// 10008, 10009, 10010.
    Accepted,
    /// Definitive: record the reason, never retry.
    Rejected,
    /// 10004, 10020, 10021: may be retried with a fresh price.
    Requote,
    /// 10011, 10012, 10031, 10028: the order may or may not exist; keep it in flight and reconcile.
    Ambiguous,
}

pub fn classify(code: u32) -> RetcodeClass {
    match code {
        retcode::PLACED | retcode::DONE | retcode::DONE_PARTIAL => RetcodeClass::Accepted,
        retcode::REQUOTE | retcode::PRICE_CHANGED | retcode::PRICE_OFF => RetcodeClass::Requote,
        retcode::ERROR | retcode::TIMEOUT | retcode::CONNECTION | retcode::LOCKED => {
            RetcodeClass::Ambiguous
        }
        _ => RetcodeClass::Rejected,
    }
}

/// Market, limit or stop, in one direction: maps to MT5 `ORDER_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderKind {
    Market,
    Limit,
    Stop,
}

/// MT5 `ORDER_TYPE_*` for a side and kind.
pub fn mt5_order_type(side: Side, kind: OrderKind) -> u32 {
    match (kind, side) {
        (OrderKind::Market, Side::Buy) => 0,
        (OrderKind::Market, Side::Sell) => 1,
        (OrderKind::Limit, Side::Buy) => 2,
        (OrderKind::Limit, Side::Sell) => 3,
        (OrderKind::Stop, Side::Buy) => 4,
        (OrderKind::Stop, Side::Sell) => 5,
    }
}

/// The side and kind of an MT5 `ORDER_TYPE_*` trellis can execute (0–5).
pub fn from_mt5_order_type(code: u32) -> Option<(Side, OrderKind)> {
    Some(match code {
        0 => (Side::Buy, OrderKind::Market),
        1 => (Side::Sell, OrderKind::Market),
        2 => (Side::Buy, OrderKind::Limit),
        3 => (Side::Sell, OrderKind::Limit),
        4 => (Side::Buy, OrderKind::Stop),
        5 => (Side::Sell, OrderKind::Stop),
        _ => return None,
    })
}

/// Where an order is in its life. `Sent` and `Placed` are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Approved by risk, not yet handed to a session.
    New,
    /// In the session's outbox; no result from the terminal yet.
    Sent,
    /// A pending order accepted by the trade server (10008).
    Placed,
    PartiallyFilled,
    Filled,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Filled | Self::Rejected | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Sent => "sent",
            Self::Placed => "placed",
            Self::PartiallyFilled => "partially_filled",
            Self::Filled => "filled",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::New,
            Self::Sent,
            Self::Placed,
            Self::PartiallyFilled,
            Self::Filled,
            Self::Rejected,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    fn can_become(self, next: Self) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (New, Sent | Rejected)
                | (
                    Sent,
                    Placed | PartiallyFilled | Filled | Rejected | Cancelled
                )
                | (Placed, PartiallyFilled | Filled | Cancelled | Rejected)
                | (PartiallyFilled, PartiallyFilled | Filled | Cancelled)
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("order {client_order_id}: cannot go from {from:?} to {to:?}")]
pub struct TransitionError {
    pub client_order_id: String,
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// An order trellis sent (or refused to send) to a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Order {
    pub client_order_id: String,
    pub account: Login,
    pub strategy_id: Option<String>,
    pub symbol: Symbol,
    pub side: Side,
    pub kind: OrderKind,
    pub volume: Decimal,
    /// Limit or stop price; `None` for market orders.
    pub price: Option<Decimal>,
    pub status: OrderStatus,
    pub filled_volume: Decimal,
    /// Volume-weighted fill price, once something filled.
    pub avg_price: Option<Decimal>,
    pub retcode: Option<u32>,
    /// The trade server's order ticket.
    pub broker_order: Option<u64>,
    /// Why it was rejected, or the terminal's comment.
    pub reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Order {
    /// Moves to `next` if the state machine allows it.
    pub fn transition(&mut self, next: OrderStatus, at_ms: i64) -> Result<(), TransitionError> {
        if self.status == next && next == OrderStatus::PartiallyFilled {
            self.updated_ms = at_ms;
            return Ok(());
        }
        if !self.status.can_become(next) {
            return Err(TransitionError {
                client_order_id: self.client_order_id.clone(),
                from: self.status,
                to: next,
            });
        }
        self.status = next;
        self.updated_ms = at_ms;
        Ok(())
    }

    /// Adds a fill; the status follows the filled volume (a fill can arrive after a final DONE result).
    pub fn add_fill(&mut self, volume: Decimal, price: Decimal, at_ms: i64) {
        let before = self.filled_volume;
        self.filled_volume += volume;
        self.avg_price = Some(match self.avg_price {
            Some(avg) if !before.is_zero() => (avg * before + price * volume) / self.filled_volume,
            _ => price,
        });
        self.updated_ms = at_ms;
        if self.status != OrderStatus::Filled {
            let next = if self.filled_volume >= self.volume {
                OrderStatus::Filled
            } else {
                OrderStatus::PartiallyFilled
            };
            // A fill proves the order exists, whatever state we had: take the fill's word for it.
            self.status = next;
        }
    }

    pub fn remaining(&self) -> Decimal {
        (self.volume - self.filled_volume).max(Decimal::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order {
            client_order_id: "c1".into(),
            account: Login::new(1),
            strategy_id: None,
            symbol: "EURUSD".into(),
            side: Side::Buy,
            kind: OrderKind::Market,
            volume: Decimal::ONE,
            price: None,
            status: OrderStatus::New,
            filled_volume: Decimal::ZERO,
            avg_price: None,
            retcode: None,
            broker_order: None,
            reason: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn a_final_order_cannot_come_back_to_life() {
        let mut o = order();
        o.transition(OrderStatus::Sent, 1).expect("new → sent");
        o.transition(OrderStatus::Rejected, 2)
            .expect("sent → rejected");
        assert!(o.transition(OrderStatus::Filled, 3).is_err());
        assert!(o.transition(OrderStatus::Sent, 3).is_err());
    }

    #[test]
    fn fills_average_the_price_and_complete_the_order() {
        let mut o = order();
        o.transition(OrderStatus::Sent, 1).expect("sent");
        o.add_fill("0.4".parse().expect("d"), "1.1".parse().expect("d"), 2);
        assert_eq!(o.status, OrderStatus::PartiallyFilled);
        o.add_fill("0.6".parse().expect("d"), "1.2".parse().expect("d"), 3);
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.avg_price, Some("1.16".parse().expect("d")));
    }

    #[test]
    fn return_codes_are_classified_as_mt5_documents() {
        assert_eq!(classify(10009), RetcodeClass::Accepted);
        assert_eq!(classify(10019), RetcodeClass::Rejected);
        assert_eq!(classify(10030), RetcodeClass::Rejected);
        assert_eq!(classify(10004), RetcodeClass::Requote);
        assert_eq!(classify(10012), RetcodeClass::Ambiguous);
    }
}
