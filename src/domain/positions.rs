//! Positions, realised and unrealised PnL, and performance figures, in exact decimal arithmetic.
//!
//! A [`Book`] follows one account as its trade server does: in a netting account one position per symbol,
//! in a hedging account one per `position_id`, closed by deals whose `entry` is OUT. Strategies are followed
//! with netting books of their own (their "virtual" position), since a strategy thinks in net exposure.
//! PnL is in the quote currency: price difference × volume (lots) × contract size.

use std::collections::BTreeMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Side, Symbol};

/// MT5 `ACCOUNT_MARGIN_MODE`: netting (0) or hedging (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountMode {
    Netting,
    Hedging,
}

impl AccountMode {
    /// From MT5 `margin_mode` (RETAIL_NETTING 0, EXCHANGE 1, RETAIL_HEDGING 2).
    pub fn from_margin_mode(code: u32) -> Self {
        if code == 2 {
            Self::Hedging
        } else {
            Self::Netting
        }
    }
}

/// MT5 `DEAL_ENTRY_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DealEntry {
    In,
    Out,
    InOut,
    OutBy,
}

impl DealEntry {
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::In,
            1 => Self::Out,
            2 => Self::InOut,
            3 => Self::OutBy,
            _ => return None,
        })
    }

    pub fn code(self) -> u32 {
        match self {
            Self::In => 0,
            Self::Out => 1,
            Self::InOut => 2,
            Self::OutBy => 3,
        }
    }
}

/// A deal (fill) as the book needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fill {
    pub symbol: Symbol,
    pub side: Side,
    pub volume: Decimal,
    pub price: Decimal,
    pub position_id: u64,
    pub entry: DealEntry,
    pub commission: Decimal,
    pub time_msc: i64,
}

/// An open position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Position {
    pub position_id: u64,
    pub symbol: Symbol,
    pub side: Side,
    pub volume: Decimal,
    pub price_open: Decimal,
}

impl Position {
    pub fn signed_volume(&self) -> Decimal {
        self.volume * self.side.sign()
    }

    pub fn unrealised(&self, bid: Decimal, ask: Decimal, contract_size: Decimal) -> Decimal {
        // A long closes at the bid, a short at the ask.
        let exit = match self.side {
            Side::Buy => bid,
            Side::Sell => ask,
        };
        (exit - self.price_open) * self.side.sign() * self.volume * contract_size
    }
}

/// One account's (or one strategy's) positions and realised PnL. Each fill comes with its symbol's contract
/// size, so one book holds symbols of different sizes and its PnL is money.
#[derive(Debug, Clone)]
pub struct Book {
    mode: AccountMode,
    /// Netting: key = 0 per symbol. Hedging: key = position_id.
    positions: BTreeMap<(Symbol, u64), Position>,
    pub realised: Decimal,
    pub commission: Decimal,
    /// Realised PnL of every reduction, in order: what win rate and profit factor are computed from.
    pub closed_trades: Vec<Decimal>,
}

impl Book {
    pub fn new(mode: AccountMode) -> Self {
        Self {
            mode,
            positions: BTreeMap::new(),
            realised: Decimal::ZERO,
            commission: Decimal::ZERO,
            closed_trades: Vec::new(),
        }
    }

    pub fn mode(&self) -> AccountMode {
        self.mode
    }

    /// Applies a fill of a symbol whose lot is `contract_size` units; returns the PnL it realised.
    pub fn apply(&mut self, fill: &Fill, contract_size: Decimal) -> Decimal {
        self.commission += fill.commission;
        let realised = match self.mode {
            AccountMode::Netting => self.apply_netting(fill, contract_size),
            AccountMode::Hedging => self.apply_hedging(fill, contract_size),
        };
        if let Some(r) = realised {
            self.realised += r;
            self.closed_trades.push(r);
        }
        realised.unwrap_or(Decimal::ZERO)
    }

    fn apply_netting(&mut self, fill: &Fill, contract_size: Decimal) -> Option<Decimal> {
        let key = (fill.symbol.clone(), 0);
        let signed = fill.volume * fill.side.sign();
        let Some(pos) = self.positions.get_mut(&key) else {
            self.positions.insert(
                key,
                Position {
                    position_id: fill.position_id,
                    symbol: fill.symbol.clone(),
                    side: fill.side,
                    volume: fill.volume,
                    price_open: fill.price,
                },
            );
            return None;
        };
        let current = pos.signed_volume();
        if pos.side == fill.side {
            let total = pos.volume + fill.volume;
            pos.price_open = (pos.price_open * pos.volume + fill.price * fill.volume) / total;
            pos.volume = total;
            return None;
        }
        let closing = fill.volume.min(pos.volume);
        let pnl = (fill.price - pos.price_open) * pos.side.sign() * closing * contract_size;
        let after = current + signed;
        if after.is_zero() {
            self.positions.remove(&key);
        } else if after.is_sign_positive() == current.is_sign_positive() {
            pos.volume = after.abs();
        } else {
            // Reversed: what is left opens at the fill price.
            pos.side = fill.side;
            pos.volume = after.abs();
            pos.price_open = fill.price;
            pos.position_id = fill.position_id;
        }
        Some(pnl)
    }

    fn apply_hedging(&mut self, fill: &Fill, contract_size: Decimal) -> Option<Decimal> {
        let key = (fill.symbol.clone(), fill.position_id);
        match fill.entry {
            DealEntry::In => {
                let pos = self.positions.entry(key).or_insert_with(|| Position {
                    position_id: fill.position_id,
                    symbol: fill.symbol.clone(),
                    side: fill.side,
                    volume: Decimal::ZERO,
                    price_open: fill.price,
                });
                let total = pos.volume + fill.volume;
                pos.price_open = (pos.price_open * pos.volume + fill.price * fill.volume) / total;
                pos.volume = total;
                None
            }
            DealEntry::Out | DealEntry::OutBy | DealEntry::InOut => {
                let pos = self.positions.get_mut(&key)?;
                let closing = fill.volume.min(pos.volume);
                let pnl = (fill.price - pos.price_open) * pos.side.sign() * closing * contract_size;
                pos.volume -= closing;
                if pos.volume.is_zero() {
                    self.positions.remove(&key);
                }
                Some(pnl)
            }
        }
    }

    /// Open positions, by symbol then position id.
    pub fn positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values()
    }

    /// Net signed volume of a symbol across its positions.
    pub fn net(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .values()
            .filter(|p| &p.symbol == symbol)
            .map(Position::signed_volume)
            .sum()
    }

    /// Net signed volume per symbol with a position.
    pub fn nets(&self) -> Vec<(Symbol, Decimal)> {
        let mut out: Vec<(Symbol, Decimal)> = Vec::new();
        for p in self.positions.values() {
            match out.last_mut() {
                Some((s, v)) if s == &p.symbol => *v += p.signed_volume(),
                _ => out.push((p.symbol.clone(), p.signed_volume())),
            }
        }
        out
    }

    pub fn open_count(&self) -> usize {
        self.positions.len()
    }

    /// Unrealised PnL at the quotes `quote` gives (bid, ask); symbols without a quote count as flat.
    pub fn unrealised(
        &self,
        quote: impl Fn(&Symbol) -> Option<(Decimal, Decimal)>,
        contract_size: impl Fn(&Symbol) -> Decimal,
    ) -> Decimal {
        self.positions
            .values()
            .filter_map(|p| {
                quote(&p.symbol).map(|(bid, ask)| p.unrealised(bid, ask, contract_size(&p.symbol)))
            })
            .sum()
    }
}

/// Performance of a run or an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Performance {
    pub total_pnl: Decimal,
    pub realised_pnl: Decimal,
    pub unrealised_pnl: Decimal,
    pub commission: Decimal,
    pub trades: usize,
    pub win_rate: f64,
    /// Gross profit / gross loss; `None` when nothing was lost.
    pub profit_factor: Option<f64>,
    /// Largest fall of equity from a previous peak, in money.
    pub max_drawdown: Decimal,
    /// Mean / standard deviation of daily PnL, × √252; `None` with fewer than two days.
    pub sharpe: Option<f64>,
}

/// Follows equity over time for drawdown and daily returns.
#[derive(Debug, Clone, Default)]
pub struct EquityCurve {
    peak: Decimal,
    max_drawdown: Decimal,
    /// PnL at the end of each UTC day seen.
    daily_close: BTreeMap<i64, Decimal>,
}

impl EquityCurve {
    /// Records the PnL (realised + unrealised − commission) at a time.
    pub fn mark(&mut self, time_msc: i64, pnl: Decimal) {
        if pnl > self.peak {
            self.peak = pnl;
        }
        let dd = self.peak - pnl;
        if dd > self.max_drawdown {
            self.max_drawdown = dd;
        }
        self.daily_close
            .insert(time_msc.div_euclid(86_400_000), pnl);
    }

    pub fn max_drawdown(&self) -> Decimal {
        self.max_drawdown
    }

    pub fn sharpe(&self) -> Option<f64> {
        let closes: Vec<f64> = self
            .daily_close
            .values()
            .filter_map(|d| d.to_f64())
            .collect();
        if closes.len() < 2 {
            return None;
        }
        let mut returns = Vec::with_capacity(closes.len());
        let mut prev = 0.0;
        for c in closes {
            returns.push(c - prev);
            prev = c;
        }
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let sd = var.sqrt();
        (sd > 0.0).then(|| mean / sd * 252f64.sqrt())
    }
}

/// Computes the figures of a book and its equity curve.
pub fn performance(book: &Book, unrealised: Decimal, curve: &EquityCurve) -> Performance {
    let wins = book
        .closed_trades
        .iter()
        .filter(|p| p.is_sign_positive() && !p.is_zero())
        .count();
    let gross_profit: Decimal = book
        .closed_trades
        .iter()
        .filter(|p| p.is_sign_positive())
        .sum();
    let gross_loss: Decimal = book
        .closed_trades
        .iter()
        .filter(|p| p.is_sign_negative())
        .map(|p| -*p)
        .sum();
    let trades = book.closed_trades.len();
    Performance {
        total_pnl: book.realised + unrealised - book.commission,
        realised_pnl: book.realised,
        unrealised_pnl: unrealised,
        commission: book.commission,
        trades,
        win_rate: if trades == 0 {
            0.0
        } else {
            wins as f64 / trades as f64
        },
        profit_factor: if gross_loss.is_zero() {
            None
        } else {
            (gross_profit / gross_loss).to_f64()
        },
        max_drawdown: curve.max_drawdown(),
        sharpe: curve.sharpe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn fill(side: Side, vol: &str, price: &str, pos: u64, entry: DealEntry) -> Fill {
        Fill {
            symbol: "EURUSD".into(),
            side,
            volume: d(vol),
            price: d(price),
            position_id: pos,
            entry,
            commission: Decimal::ZERO,
            time_msc: 0,
        }
    }

    #[test]
    fn netting_averages_in_realises_on_reduction_and_reopens_on_reversal() {
        let cs = d("100000");
        let mut b = Book::new(AccountMode::Netting);
        b.apply(&fill(Side::Buy, "0.1", "1.1000", 1, DealEntry::In), cs);
        b.apply(&fill(Side::Buy, "0.1", "1.1010", 1, DealEntry::In), cs);
        assert_eq!(b.net(&"EURUSD".into()), d("0.2"));
        // Sell 0.3 at 1.1025: closes 0.2 averaged at 1.1005 (+0.0020 × 0.2 × 100000 = 40), opens 0.1 short.
        let pnl = b.apply(&fill(Side::Sell, "0.3", "1.1025", 1, DealEntry::InOut), cs);
        assert_eq!(pnl, d("40"));
        assert_eq!(b.net(&"EURUSD".into()), d("-0.1"));
        let pos = b.positions().next().expect("a short remains");
        assert_eq!((pos.side, pos.price_open), (Side::Sell, d("1.1025")));
    }

    #[test]
    fn hedging_keeps_positions_apart_and_closes_by_position_id() {
        let cs = d("100000");
        let mut b = Book::new(AccountMode::Hedging);
        b.apply(&fill(Side::Buy, "0.1", "1.1000", 7, DealEntry::In), cs);
        b.apply(&fill(Side::Sell, "0.1", "1.1050", 8, DealEntry::In), cs);
        assert_eq!(b.open_count(), 2);
        let pnl = b.apply(&fill(Side::Sell, "0.1", "1.0990", 7, DealEntry::Out), cs);
        assert_eq!(pnl, d("-10"));
        assert_eq!(b.open_count(), 1);
    }

    #[test]
    fn performance_counts_wins_profit_factor_and_drawdown() {
        let mut b = Book::new(AccountMode::Netting);
        let mut curve = EquityCurve::default();
        for (side, price, t) in [
            (Side::Buy, "10", 0),
            (Side::Sell, "13", 1),
            (Side::Buy, "13", 2),
            (Side::Sell, "12", 3),
        ] {
            b.apply(&fill(side, "1", price, 1, DealEntry::In), Decimal::ONE);
            curve.mark(t, b.realised);
        }
        let p = performance(&b, Decimal::ZERO, &curve);
        assert_eq!(p.trades, 2);
        assert_eq!(p.win_rate, 0.5);
        assert_eq!(p.profit_factor, Some(3.0));
        assert_eq!(p.max_drawdown, d("1"));
        assert_eq!(p.total_pnl, d("2"));
    }
}

/// Tickets from here up are trellis's own reconciliation entries (MT5 tickets stay far below 2^62): a deal
/// that brings trellis's position to the terminal's when history could not explain the difference.
pub const RECONCILIATION_TICKET_BASE: u64 = 1 << 62;

/// A deal as recorded: the fill plus where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deal {
    pub account: super::Login,
    /// The trade server's deal ticket: unique per account, what makes recording idempotent.
    pub ticket: u64,
    /// The trade server's order ticket.
    pub order: u64,
    pub client_order_id: Option<String>,
    pub strategy_id: Option<String>,
    pub fill: Fill,
    pub swap: Decimal,
    /// The terminal's own profit figure for the deal (kept for reconciliation; trellis computes its own).
    pub profit: Decimal,
}

impl Deal {
    /// A reconciliation entry made by trellis, not a deal of the trade server.
    pub fn is_reconciliation(&self) -> bool {
        self.ticket >= RECONCILIATION_TICKET_BASE
    }
}
