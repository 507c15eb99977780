//! The simulated trade server behind `trellis mt5-sim`: executes market, limit and stop orders with MT5
//! return codes, optional slippage and partial fills, and keeps balance, equity, margin and positions for a
//! netting or hedging account. Orders are idempotent by `client_order_id`: a repeat gets the stored result.

use std::collections::HashMap;
use std::io::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::bridge::protocol::{
    AccountFrame, CancelRequest, CancelResultFrame, DealFrame, OrderRequest, OrderResultFrame,
    PositionItem,
};
use crate::domain::orders::{action, from_mt5_order_type, retcode, OrderKind};
use crate::domain::positions::AccountMode;
use crate::domain::Side;

/// How the simulated broker behaves.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub login: u64,
    pub mode: AccountMode,
    pub currency: String,
    pub balance: Decimal,
    pub leverage: u32,
    /// Units per lot for every symbol.
    pub contract_size: Decimal,
    /// Price of one point (10^-digits).
    pub point: Decimal,
    /// Market orders fill up to this many points worse than the quote (uniformly at random, or exactly
    /// this many with `fixed_slippage`).
    pub max_slippage_points: u32,
    pub fixed_slippage: bool,
    /// When set, market orders fill only this fraction of their volume (MT5 10010 DONE_PARTIAL, the rest
    /// cancelled as with IOC).
    pub partial_fill: Option<Decimal>,
    pub volume_min: Decimal,
    pub volume_max: Decimal,
    pub volume_step: Decimal,
    /// Commission per lot and side, in account currency.
    pub commission_per_lot: Decimal,
    pub seed: u64,
    /// Append every deal to this CSV as it happens (`ticket,order,client_order_id,symbol,side,volume,price,
    /// time_msc`), flushed per line: the terminal's own record to check trellis against.
    pub deals_csv: Option<std::path::PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            login: 5_001,
            mode: AccountMode::Netting,
            currency: "USD".into(),
            balance: Decimal::from(100_000),
            leverage: 100,
            contract_size: Decimal::from(100_000),
            point: Decimal::new(1, 5),
            max_slippage_points: 0,
            fixed_slippage: false,
            partial_fill: None,
            volume_min: Decimal::new(1, 2),
            volume_max: Decimal::from(100),
            volume_step: Decimal::new(1, 2),
            commission_per_lot: Decimal::ZERO,
            seed: 7,
            deals_csv: None,
        }
    }
}

#[derive(Debug, Clone)]
struct SimPosition {
    identifier: u64,
    symbol: String,
    side: Side,
    volume: Decimal,
    price_open: Decimal,
    time_msc: i64,
    magic: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    ticket: u64,
    request: OrderRequest,
    side: Side,
    kind: OrderKind,
}

/// What an order (or a triggered pending order) produced; `seq` fields are 0 until sent.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    pub result: Option<OrderResultFrame>,
    pub deals: Vec<DealFrame>,
}

pub struct Broker {
    cfg: BrokerConfig,
    quotes: HashMap<String, (Decimal, Decimal, i64)>,
    positions: Vec<SimPosition>,
    pending: Vec<Pending>,
    balance: Decimal,
    next_ticket: u64,
    journal: HashMap<String, OrderResultFrame>,
    /// Pending orders removed by a cancel: client order id → ticket (a repeated cancel answers DONE again).
    cancelled: HashMap<String, u64>,
    /// Orders actually executed (not answered from the journal).
    pub executed: u64,
    rng: SmallRng,
    /// Every deal made, in order (MT5 `history_deals_get`).
    deals: Vec<DealFrame>,
    deals_csv: Option<std::fs::File>,
}

impl Broker {
    pub fn new(cfg: BrokerConfig) -> Self {
        Self {
            balance: cfg.balance,
            rng: SmallRng::seed_from_u64(cfg.seed),
            cfg,
            quotes: HashMap::new(),
            positions: Vec::new(),
            pending: Vec::new(),
            next_ticket: 1_000,
            journal: HashMap::new(),
            cancelled: HashMap::new(),
            executed: 0,
            deals: Vec::new(),
            deals_csv: None,
        }
    }

    /// A broker that also appends its deals to `cfg.deals_csv` (created with a header if new).
    pub fn with_deals_csv(cfg: BrokerConfig) -> std::io::Result<Self> {
        let path = cfg.deals_csv.clone();
        let mut broker = Self::new(cfg);
        if let Some(path) = path {
            let fresh = std::fs::metadata(&path)
                .map(|m| m.len() == 0)
                .unwrap_or(true);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            if fresh {
                writeln!(
                    file,
                    "ticket,order,client_order_id,symbol,side,volume,price,time_msc"
                )?;
            }
            broker.deals_csv = Some(file);
        }
        Ok(broker)
    }

    /// Every deal made so far, in order.
    pub fn deals(&self) -> &[DealFrame] {
        &self.deals
    }

    /// Trade deals with `time_msc` ≥ `from_msc` (what `history_deals_get` answers).
    pub fn history(&self, from_msc: i64) -> Vec<DealFrame> {
        self.deals
            .iter()
            .filter(|d| d.time_msc >= from_msc)
            .cloned()
            .collect()
    }

    /// A market order typed in by hand at the terminal (no client order id, magic 0). Returns its deals.
    pub fn manual_deal(&mut self, symbol: &str, side: Side, volume: Decimal) -> Vec<DealFrame> {
        let Some(&(bid, ask, time_msc)) = self.quotes.get(symbol) else {
            return Vec::new();
        };
        let req = OrderRequest {
            seq: 0,
            client_order_id: String::new(),
            action: action::DEAL,
            symbol: symbol.to_owned(),
            order_type: if side == Side::Buy { 0 } else { 1 },
            volume,
            price: Decimal::ZERO,
            sl: Decimal::ZERO,
            tp: Decimal::ZERO,
            deviation: 0,
            magic: 0,
            comment: "manual".into(),
            type_filling: 1,
            type_time: 0,
            position: 0,
        };
        let ticket = self.ticket();
        let price = if side == Side::Buy { ask } else { bid };
        self.fill(&req, ticket, side, volume, price, time_msc)
    }

    fn record(&mut self, deals: &[DealFrame]) {
        for d in deals {
            self.deals.push(d.clone());
            if let Some(file) = &mut self.deals_csv {
                let side = if d.deal_type == 0 { "buy" } else { "sell" };
                let line = format!(
                    "{},{},{},{},{},{},{},{}",
                    d.ticket,
                    d.order,
                    d.client_order_id.as_deref().unwrap_or(""),
                    d.symbol,
                    side,
                    d.volume,
                    d.price,
                    d.time_msc
                );
                if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                    tracing::error!(error = %e, "could not append to the deals CSV");
                }
            }
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Whether limit or stop orders wait for a price.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn login(&self) -> u64 {
        self.cfg.login
    }

    /// Updates the quote and fills pending orders the new price touches.
    pub fn on_tick(
        &mut self,
        symbol: &str,
        time_msc: i64,
        bid: Decimal,
        ask: Decimal,
    ) -> Vec<Execution> {
        self.quotes.insert(symbol.to_owned(), (bid, ask, time_msc));
        let mut fired = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let price = p.request.price;
            let touched = p.request.symbol == symbol
                && match (p.kind, p.side) {
                    (OrderKind::Limit, Side::Buy) => ask <= price,
                    (OrderKind::Limit, Side::Sell) => bid >= price,
                    (OrderKind::Stop, Side::Buy) => ask >= price,
                    (OrderKind::Stop, Side::Sell) => bid <= price,
                    (OrderKind::Market, _) => true,
                };
            if touched {
                let p = self.pending.remove(i);
                let fill_price = match p.kind {
                    OrderKind::Limit => p.request.price,
                    _ => match p.side {
                        Side::Buy => ask,
                        Side::Sell => bid,
                    },
                };
                let deals = self.fill(
                    &p.request,
                    p.ticket,
                    p.side,
                    p.request.volume,
                    fill_price,
                    time_msc,
                );
                fired.push(Execution {
                    result: None,
                    deals,
                });
            } else {
                i += 1;
            }
        }
        fired
    }

    /// Executes (or answers from the journal) one order request.
    pub fn execute(&mut self, req: &OrderRequest) -> Execution {
        if let Some(done) = self.journal.get(&req.client_order_id) {
            return Execution {
                result: Some(done.clone()),
                deals: Vec::new(),
            };
        }
        self.executed += 1;
        let exec = self.try_execute(req);
        if let Some(r) = &exec.result {
            self.journal.insert(req.client_order_id.clone(), r.clone());
        }
        exec
    }

    /// Removes a pending order (MT5 TRADE_ACTION_REMOVE), found by its client order id or ticket. Answers
    /// 10009 DONE when it was removed — or had been by an earlier copy of this cancel — and 10013 INVALID
    /// when no such order waits (it filled, or was never placed).
    pub fn cancel(&mut self, req: &CancelRequest) -> CancelResultFrame {
        let answer = |retcode, order, comment: &str| CancelResultFrame {
            seq: 0,
            client_order_id: req.client_order_id.clone(),
            retcode,
            order,
            comment: comment.into(),
        };
        if let Some(&ticket) = self.cancelled.get(&req.client_order_id) {
            return answer(retcode::DONE, ticket, "removed");
        }
        let found = self.pending.iter().position(|p| {
            p.request.client_order_id == req.client_order_id
                || (req.order != 0 && p.ticket == req.order)
        });
        match found {
            Some(i) => {
                let p = self.pending.remove(i);
                self.cancelled
                    .insert(p.request.client_order_id.clone(), p.ticket);
                answer(retcode::DONE, p.ticket, "removed")
            }
            None => answer(retcode::INVALID, req.order, "no such pending order"),
        }
    }

    fn reject(&self, req: &OrderRequest, code: u32, comment: &str) -> Execution {
        let (bid, ask) = self
            .quotes
            .get(&req.symbol)
            .map(|q| (Some(q.0), Some(q.1)))
            .unwrap_or((None, None));
        Execution {
            result: Some(OrderResultFrame {
                seq: 0,
                client_order_id: req.client_order_id.clone(),
                retcode: code,
                deal: 0,
                order: 0,
                volume: Decimal::ZERO,
                price: Decimal::ZERO,
                bid,
                ask,
                comment: comment.to_owned(),
                request_id: None,
                retcode_external: None,
            }),
            deals: Vec::new(),
        }
    }

    fn try_execute(&mut self, req: &OrderRequest) -> Execution {
        let Some((side, kind)) = from_mt5_order_type(req.order_type) else {
            return self.reject(req, retcode::INVALID, "unsupported order type");
        };
        let Some(&(bid, ask, time_msc)) = self.quotes.get(&req.symbol) else {
            return self.reject(req, retcode::INVALID, "unknown symbol or no quote");
        };
        let c = self.cfg.clone();
        let steps = req.volume / c.volume_step;
        if req.volume < c.volume_min || req.volume > c.volume_max || steps != steps.trunc() {
            return self.reject(req, retcode::INVALID_VOLUME, "invalid volume");
        }
        let increases = req.position == 0 && self.net(&req.symbol) * side.sign() >= Decimal::ZERO;
        if increases {
            let price = if side == Side::Buy { ask } else { bid };
            let needed = req.volume * c.contract_size * price / Decimal::from(c.leverage.max(1));
            if self.margin() + needed > self.equity() {
                return self.reject(req, retcode::NO_MONEY, "no money");
            }
        }
        let order_ticket = self.ticket();
        match (req.action, kind) {
            (action::DEAL, OrderKind::Market) => {}
            (action::PENDING, OrderKind::Limit | OrderKind::Stop) if req.price > Decimal::ZERO => {
                self.pending.push(Pending {
                    ticket: order_ticket,
                    request: req.clone(),
                    side,
                    kind,
                });
                return Execution {
                    result: Some(OrderResultFrame {
                        seq: 0,
                        client_order_id: req.client_order_id.clone(),
                        retcode: retcode::PLACED,
                        deal: 0,
                        order: order_ticket,
                        volume: req.volume,
                        price: req.price,
                        bid: Some(bid),
                        ask: Some(ask),
                        comment: "placed".into(),
                        request_id: None,
                        retcode_external: None,
                    }),
                    deals: Vec::new(),
                };
            }
            _ => return self.reject(req, retcode::INVALID, "action and order type do not match"),
        }
        let slip = if c.fixed_slippage {
            Decimal::from(c.max_slippage_points) * c.point
        } else if c.max_slippage_points > 0 {
            Decimal::from(self.rng.gen_range(0..=c.max_slippage_points)) * c.point
        } else {
            Decimal::ZERO
        };
        let price = match side {
            Side::Buy => ask + slip,
            Side::Sell => bid - slip,
        };
        let mut volume = req.volume;
        let mut code = retcode::DONE;
        if let Some(frac) = self.cfg.partial_fill {
            let part = ((req.volume * frac) / self.cfg.volume_step).trunc() * self.cfg.volume_step;
            if part >= self.cfg.volume_min && part < req.volume {
                volume = part;
                code = retcode::DONE_PARTIAL;
            }
        }
        let deals = self.fill(req, order_ticket, side, volume, price, time_msc);
        Execution {
            result: Some(OrderResultFrame {
                seq: 0,
                client_order_id: req.client_order_id.clone(),
                retcode: code,
                deal: deals.first().map(|d| d.ticket).unwrap_or(0),
                order: order_ticket,
                volume,
                price,
                bid: Some(bid),
                ask: Some(ask),
                comment: if code == retcode::DONE {
                    "done".into()
                } else {
                    "done partially".into()
                },
                request_id: None,
                retcode_external: None,
            }),
            deals,
        }
    }

    fn net(&self, symbol: &str) -> Decimal {
        self.positions
            .iter()
            .filter(|p| p.symbol == symbol)
            .map(|p| p.volume * p.side.sign())
            .sum()
    }

    /// Books a fill into positions and balance, returning its deals.
    fn fill(
        &mut self,
        req: &OrderRequest,
        order: u64,
        side: Side,
        volume: Decimal,
        price: Decimal,
        time_msc: i64,
    ) -> Vec<DealFrame> {
        let commission = -(self.cfg.commission_per_lot * volume);
        let mut deals = Vec::new();
        let cs = self.cfg.contract_size;
        let mut deal =
            |this: &mut Self, position_id: u64, entry: u32, vol: Decimal, profit: Decimal| {
                let ticket = this.ticket();
                this.balance += profit;
                deals.push(DealFrame {
                    seq: 0,
                    ticket,
                    order,
                    client_order_id: Some(req.client_order_id.clone()).filter(|c| !c.is_empty()),
                    position_id,
                    symbol: req.symbol.clone(),
                    deal_type: if side == Side::Buy { 0 } else { 1 },
                    entry,
                    volume: vol,
                    price,
                    commission: Decimal::ZERO,
                    swap: Decimal::ZERO,
                    profit,
                    fee: Decimal::ZERO,
                    magic: req.magic,
                    comment: req.comment.clone(),
                    time_msc,
                });
            };
        match self.cfg.mode {
            AccountMode::Hedging if req.position != 0 => {
                if let Some(i) = self
                    .positions
                    .iter()
                    .position(|p| p.identifier == req.position)
                {
                    let p = &mut self.positions[i];
                    let closing = volume.min(p.volume);
                    let profit = (price - p.price_open) * p.side.sign() * closing * cs;
                    p.volume -= closing;
                    let id = p.identifier;
                    if p.volume.is_zero() {
                        self.positions.remove(i);
                    }
                    deal(self, id, 1, closing, profit);
                }
            }
            AccountMode::Hedging => {
                let id = order;
                self.positions.push(SimPosition {
                    identifier: id,
                    symbol: req.symbol.clone(),
                    side,
                    volume,
                    price_open: price,
                    time_msc,
                    magic: req.magic,
                });
                deal(self, id, 0, volume, Decimal::ZERO);
            }
            AccountMode::Netting => {
                match self.positions.iter().position(|p| p.symbol == req.symbol) {
                    None => {
                        self.positions.push(SimPosition {
                            identifier: order,
                            symbol: req.symbol.clone(),
                            side,
                            volume,
                            price_open: price,
                            time_msc,
                            magic: req.magic,
                        });
                        deal(self, order, 0, volume, Decimal::ZERO);
                    }
                    Some(i) => {
                        let p = &mut self.positions[i];
                        let id = p.identifier;
                        if p.side == side {
                            let total = p.volume + volume;
                            p.price_open = (p.price_open * p.volume + price * volume) / total;
                            p.volume = total;
                            deal(self, id, 0, volume, Decimal::ZERO);
                        } else {
                            let closing = volume.min(p.volume);
                            let profit = (price - p.price_open) * p.side.sign() * closing * cs;
                            if volume < p.volume {
                                p.volume -= volume;
                                deal(self, id, 1, volume, profit);
                            } else if volume == p.volume {
                                self.positions.remove(i);
                                deal(self, id, 1, volume, profit);
                            } else {
                                p.side = side;
                                p.volume = volume - closing;
                                p.price_open = price;
                                p.time_msc = time_msc;
                                deal(self, id, 2, volume, profit);
                            }
                        }
                    }
                }
            }
        }
        self.balance += commission;
        if let Some(first) = deals.first_mut() {
            first.commission = commission;
        }
        self.record(&deals);
        deals
    }

    fn unrealised(&self) -> Decimal {
        let cs = self.cfg.contract_size;
        self.positions
            .iter()
            .filter_map(|p| {
                let (bid, ask, _) = self.quotes.get(&p.symbol)?;
                let exit = if p.side == Side::Buy { *bid } else { *ask };
                Some((exit - p.price_open) * p.side.sign() * p.volume * cs)
            })
            .sum()
    }

    pub fn equity(&self) -> Decimal {
        self.balance + self.unrealised()
    }

    pub fn margin(&self) -> Decimal {
        let lev = Decimal::from(self.cfg.leverage.max(1));
        self.positions
            .iter()
            .map(|p| p.volume * self.cfg.contract_size * p.price_open / lev)
            .sum()
    }

    pub fn account(&self) -> AccountFrame {
        let equity = self.equity();
        let margin = self.margin();
        AccountFrame {
            seq: 0,
            login: self.cfg.login,
            currency: self.cfg.currency.clone(),
            leverage: self.cfg.leverage,
            balance: self.balance,
            equity,
            margin,
            margin_free: Some(equity - margin),
            profit: Some(self.unrealised()),
            margin_mode: match self.cfg.mode {
                AccountMode::Netting => 0,
                AccountMode::Hedging => 2,
            },
        }
    }

    pub fn positions(&self) -> Vec<PositionItem> {
        self.positions
            .iter()
            .map(|p| PositionItem {
                ticket: p.identifier,
                identifier: p.identifier,
                symbol: p.symbol.clone(),
                kind: if p.side == Side::Buy { 0 } else { 1 },
                volume: p.volume,
                price_open: p.price_open,
                price_current: self.quotes.get(&p.symbol).map(|q| {
                    if p.side == Side::Buy {
                        q.0
                    } else {
                        q.1
                    }
                }),
                profit: None,
                magic: Some(p.magic),
                time_msc: Some(p.time_msc),
            })
            .collect()
    }

    pub fn balance(&self) -> Decimal {
        self.balance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn market(coid: &str, order_type: u32, volume: &str) -> OrderRequest {
        OrderRequest {
            seq: 1,
            client_order_id: coid.into(),
            action: action::DEAL,
            symbol: "EURUSD".into(),
            order_type,
            volume: d(volume),
            price: Decimal::ZERO,
            sl: Decimal::ZERO,
            tp: Decimal::ZERO,
            deviation: 10,
            magic: 1,
            comment: coid.into(),
            type_filling: 1,
            type_time: 0,
            position: 0,
        }
    }

    #[test]
    fn a_market_buy_fills_at_the_ask_and_a_repeat_is_answered_from_the_journal() {
        let mut b = Broker::new(BrokerConfig::default());
        b.on_tick("EURUSD", 1, d("1.1000"), d("1.1002"));
        let first = b.execute(&market("c1", 0, "0.1"));
        let r = first.result.expect("result");
        assert_eq!((r.retcode, r.price), (retcode::DONE, d("1.1002")));
        assert_eq!(first.deals.len(), 1);
        let again = b.execute(&market("c1", 0, "0.1"));
        assert_eq!(again.result.expect("stored").order, r.order);
        assert!(again.deals.is_empty());
        assert_eq!(b.executed, 1);
    }

    #[test]
    fn volumes_off_the_step_and_orders_beyond_the_margin_are_refused_with_mt5_codes() {
        let mut b = Broker::new(BrokerConfig {
            balance: d("1000"),
            ..BrokerConfig::default()
        });
        b.on_tick("EURUSD", 1, d("1.1000"), d("1.1002"));
        assert_eq!(
            b.execute(&market("v", 0, "0.015"))
                .result
                .expect("r")
                .retcode,
            retcode::INVALID_VOLUME
        );
        assert_eq!(
            b.execute(&market("m", 0, "10")).result.expect("r").retcode,
            retcode::NO_MONEY
        );
    }

    #[test]
    fn netting_reversal_realises_profit_into_the_balance() {
        let mut b = Broker::new(BrokerConfig::default());
        b.on_tick("EURUSD", 1, d("1.1000"), d("1.1000"));
        b.execute(&market("a", 0, "0.1"));
        b.on_tick("EURUSD", 2, d("1.1010"), d("1.1010"));
        let e = b.execute(&market("b", 1, "0.2"));
        assert_eq!(e.deals[0].entry, 2);
        assert_eq!(e.deals[0].profit, d("10"));
        assert_eq!(b.balance(), d("100010"));
        assert_eq!(b.positions()[0].kind, 1);
    }

    #[test]
    fn a_buy_limit_fills_when_the_ask_touches_it() {
        let mut b = Broker::new(BrokerConfig::default());
        b.on_tick("EURUSD", 1, d("1.1000"), d("1.1002"));
        let mut req = market("l", 2, "0.1");
        req.action = action::PENDING;
        req.price = d("1.0990");
        assert_eq!(b.execute(&req).result.expect("r").retcode, retcode::PLACED);
        assert!(b.on_tick("EURUSD", 2, d("1.0995"), d("1.0997")).is_empty());
        let fired = b.on_tick("EURUSD", 3, d("1.0988"), d("1.0990"));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].deals[0].price, d("1.0990"));
    }

    #[test]
    fn a_cancelled_limit_never_fills_and_a_cancel_of_a_filled_order_is_refused() {
        let mut b = Broker::new(BrokerConfig::default());
        b.on_tick("EURUSD", 1, d("1.1000"), d("1.1002"));
        let mut req = market("l", 2, "0.1");
        req.action = action::PENDING;
        req.price = d("1.0990");
        let placed = b.execute(&req).result.expect("r");
        let cancel = CancelRequest {
            seq: 9,
            client_order_id: "l".into(),
            order: 0,
        };
        let done = b.cancel(&cancel);
        assert_eq!((done.retcode, done.order), (retcode::DONE, placed.order));
        // Asked again (a re-sent frame): the same answer, and the price that would have filled it does not.
        assert_eq!(b.cancel(&cancel).retcode, retcode::DONE);
        assert!(b.on_tick("EURUSD", 3, d("1.0980"), d("1.0982")).is_empty());
        assert!(b.deals().is_empty());

        let mut req = market("m", 2, "0.1");
        req.action = action::PENDING;
        req.price = d("1.0990");
        b.execute(&req);
        assert_eq!(b.on_tick("EURUSD", 4, d("1.0980"), d("1.0982")).len(), 1);
        let late = b.cancel(&CancelRequest {
            seq: 10,
            client_order_id: "m".into(),
            order: 0,
        });
        assert_eq!(late.retcode, retcode::INVALID);
    }
}
