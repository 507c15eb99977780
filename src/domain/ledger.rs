//! The order and position ledger as pure code: the `Portfolio` actor and the backtester run exactly this.
//!
//! It turns a strategy's target into an order (target − what the strategy holds; nothing while an order of
//! the same strategy and symbol is in flight, so repeated signals never stack), follows the trade server's
//! results and deals through the order state machine, and books deals into positions and PnL — per account
//! (netting or hedging) and per strategy (always netting: a strategy thinks in net exposure). Deals are
//! recognised by ticket, so a deal seen twice is booked once.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;

use super::orders::{
    classify, retcode, Order, OrderKind, OrderStatus, RetcodeClass, TransitionError,
};
use super::positions::{
    performance, AccountMode, Book, Deal, DealEntry, EquityCurve, Fill, Performance, Position,
    RECONCILIATION_TICKET_BASE,
};
use super::risk::OrderFacts;
use super::{Login, Side, Symbol};

/// The result of an order as the ledger needs it.
#[derive(Debug, Clone)]
pub struct OrderResult {
    pub client_order_id: String,
    pub retcode: u32,
    /// The trade server's order ticket (0 when none).
    pub order: u64,
    pub comment: String,
}

/// What applying a result did.
#[derive(Debug)]
pub enum ResultOutcome {
    /// The order changed; store it.
    Updated {
        seq: u64,
        order: Box<Order>,
        transition_error: Option<TransitionError>,
    },
    /// The same result again (re-sent after a reconnect).
    Duplicate,
    Unknown,
}

#[derive(Debug, Default)]
pub struct Ledger {
    orders: HashMap<String, (u64, Order)>,
    /// Client order ids in creation order.
    order_ids: Vec<String>,
    by_broker_order: HashMap<(Login, u64), String>,
    accounts: HashMap<Login, Book>,
    strategies: HashMap<String, Book>,
    deals_seen: HashSet<(Login, u64)>,
    deals: Vec<Deal>,
    pub curve: EquityCurve,
    next_seq: u64,
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            ..Self::default()
        }
    }

    pub fn account(&mut self, login: Login) -> &mut Book {
        self.accounts
            .entry(login)
            .or_insert_with(|| Book::new(AccountMode::Netting))
    }

    /// Follows the terminal's account mode while the account holds no position.
    pub fn set_mode(&mut self, login: Login, mode: AccountMode) {
        let book = self.account(login);
        if book.mode() != mode && book.open_count() == 0 {
            *book = Book::new(mode);
        }
    }

    pub fn in_flight(&self, strategy_id: &str, symbol: &Symbol) -> bool {
        self.orders.values().any(|(_, o)| {
            !o.status.is_final()
                && o.strategy_id.as_deref() == Some(strategy_id)
                && &o.symbol == symbol
        })
    }

    /// What a strategy holds in a symbol.
    pub fn strategy_net(&self, strategy_id: &str, symbol: &Symbol) -> Decimal {
        self.strategies
            .get(strategy_id)
            .map(|b| b.net(symbol))
            .unwrap_or_default()
    }

    /// The order a strategy's target asks for, with the facts risk judges it by; `None` when the strategy
    /// already holds its target or has an order in flight.
    pub fn plan(
        &mut self,
        strategy_id: &str,
        account: Login,
        symbol: &Symbol,
        target: Decimal,
        now_ms: i64,
    ) -> Option<(u64, Order, OrderFacts)> {
        if self.in_flight(strategy_id, symbol) {
            return None;
        }
        let delta = target - self.strategy_net(strategy_id, symbol);
        if delta.is_zero() {
            return None;
        }
        let side = if delta.is_sign_positive() {
            Side::Buy
        } else {
            Side::Sell
        };
        let volume = delta.abs();
        let book = self.account(account);
        let facts = OrderFacts {
            account,
            symbol: symbol.clone(),
            side,
            volume,
            net_before: book.net(symbol),
            open_positions: book.open_count(),
            reduce_only: false,
            positions: book.nets(),
        };
        let (seq, order) = self.new_order(
            Some(strategy_id),
            account,
            symbol.clone(),
            side,
            volume,
            now_ms,
        );
        Some((seq, order, facts))
    }

    /// A new market order with the next client order id (`<strategy>-<n>`, or `flatten-<n>`).
    pub fn new_order(
        &mut self,
        strategy_id: Option<&str>,
        account: Login,
        symbol: Symbol,
        side: Side,
        volume: Decimal,
        now_ms: i64,
    ) -> (u64, Order) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let prefix = strategy_id.unwrap_or("flatten");
        (
            seq,
            Order {
                client_order_id: format!("{prefix}-{seq}"),
                account,
                strategy_id: strategy_id.map(str::to_owned),
                symbol,
                side,
                kind: OrderKind::Market,
                volume,
                price: None,
                status: OrderStatus::New,
                filled_volume: Decimal::ZERO,
                avg_price: None,
                retcode: None,
                broker_order: None,
                reason: None,
                created_ms: now_ms,
                updated_ms: now_ms,
            },
        )
    }

    /// Keeps (or replaces) an order.
    pub fn remember(&mut self, seq: u64, order: Order) {
        self.next_seq = self.next_seq.max(seq + 1);
        if !self.orders.contains_key(&order.client_order_id) {
            self.order_ids.push(order.client_order_id.clone());
        }
        if let Some(b) = order.broker_order {
            self.by_broker_order
                .insert((order.account, b), order.client_order_id.clone());
        }
        self.orders
            .insert(order.client_order_id.clone(), (seq, order));
    }

    pub fn order(&self, client_order_id: &str) -> Option<&(u64, Order)> {
        self.orders.get(client_order_id)
    }

    /// Applies a trade server result to its order.
    pub fn apply_result(&mut self, account: Login, r: &OrderResult, now_ms: i64) -> ResultOutcome {
        let Some((seq, order)) = self.orders.get_mut(&r.client_order_id) else {
            return ResultOutcome::Unknown;
        };
        let seq = *seq;
        if order.retcode == Some(r.retcode)
            && order.broker_order == Some(r.order).filter(|o| *o != 0)
        {
            return ResultOutcome::Duplicate;
        }
        order.retcode = Some(r.retcode);
        if r.order != 0 {
            order.broker_order = Some(r.order);
        }
        let class = classify(r.retcode);
        let next = match class {
            RetcodeClass::Accepted if r.retcode == retcode::PLACED => Some(OrderStatus::Placed),
            RetcodeClass::Accepted | RetcodeClass::Ambiguous => None, // filled by deals / reconciled later
            RetcodeClass::Rejected | RetcodeClass::Requote => Some(OrderStatus::Rejected),
        };
        order.reason = Some(match class {
            RetcodeClass::Ambiguous => format!(
                "ambiguous result {} ({}): awaiting reconciliation",
                r.retcode, r.comment
            ),
            _ if r.comment.is_empty() => format!("retcode {}", r.retcode),
            _ => format!("retcode {}: {}", r.retcode, r.comment),
        });
        let mut transition_error = None;
        if let Some(next) = next {
            if order.status != next {
                transition_error = order.transition(next, now_ms).err();
            }
        }
        let order = order.clone();
        if let Some(b) = order.broker_order {
            self.by_broker_order
                .insert((account, b), order.client_order_id.clone());
        }
        ResultOutcome::Updated {
            seq,
            order: Box::new(order),
            transition_error,
        }
    }

    /// Applies the trade server's answer to a cancel of a pending order. DONE removes the order (its fills
    /// stay); any other code leaves its status alone and records why the cancel failed. A cancelled order's
    /// answer seen again is a duplicate; a refusal for an order that filled meanwhile changes nothing.
    pub fn apply_cancel(&mut self, r: &OrderResult, now_ms: i64) -> ResultOutcome {
        let Some((seq, order)) = self.orders.get_mut(&r.client_order_id) else {
            return ResultOutcome::Unknown;
        };
        let seq = *seq;
        let reason = if r.retcode == retcode::DONE {
            if order.status == OrderStatus::Cancelled {
                return ResultOutcome::Duplicate;
            }
            if order.status.is_final() {
                // Filled (or rejected) before the cancel reached the server: the server's DONE cannot be
                // right about an order that no longer waits, so the fills stand.
                return ResultOutcome::Duplicate;
            }
            let transition_error = order.transition(OrderStatus::Cancelled, now_ms).err();
            order.reason = Some(match r.comment.as_str() {
                "" => "cancelled".to_owned(),
                c => format!("cancelled: {c}"),
            });
            return ResultOutcome::Updated {
                seq,
                order: Box::new(order.clone()),
                transition_error,
            };
        } else {
            format!("cancel refused, retcode {}: {}", r.retcode, r.comment)
        };
        if order.reason.as_deref() == Some(reason.as_str()) || order.status.is_final() {
            return ResultOutcome::Duplicate;
        }
        order.reason = Some(reason);
        order.updated_ms = now_ms;
        ResultOutcome::Updated {
            seq,
            order: Box::new(order.clone()),
            transition_error: None,
        }
    }

    /// The order a deal belongs to: its `client_order_id` when known, else its broker order ticket.
    pub fn owner_of(
        &self,
        account: Login,
        client_order_id: Option<&str>,
        broker_order: u64,
    ) -> Option<String> {
        client_order_id
            .filter(|c| self.orders.contains_key(*c))
            .map(str::to_owned)
            .or_else(|| self.by_broker_order.get(&(account, broker_order)).cloned())
    }

    /// The strategy behind an order.
    pub fn strategy_of(&self, client_order_id: &str) -> Option<String> {
        self.orders
            .get(client_order_id)
            .and_then(|(_, o)| o.strategy_id.clone())
    }

    /// Books a deal (`contract_size` units per lot); with `fill_order`, also into its order. Returns false
    /// for a ticket already booked.
    pub fn apply_deal(
        &mut self,
        deal: &Deal,
        fill_order: bool,
        contract_size: Decimal,
        now_ms: i64,
    ) -> bool {
        if !self.deals_seen.insert((deal.account, deal.ticket)) {
            return false;
        }
        self.account(deal.account).apply(&deal.fill, contract_size);
        if let Some(sid) = &deal.strategy_id {
            self.strategies
                .entry(sid.clone())
                .or_insert_with(|| Book::new(AccountMode::Netting))
                .apply(
                    &Fill {
                        entry: DealEntry::In,
                        ..deal.fill.clone()
                    },
                    contract_size,
                );
        }
        if fill_order {
            if let Some((_, order)) = deal
                .client_order_id
                .as_ref()
                .and_then(|c| self.orders.get_mut(c))
            {
                order.add_fill(deal.fill.volume, deal.fill.price, now_ms);
            }
        }
        self.deals.push(deal.clone());
        true
    }

    /// Realised, unrealised and commission across accounts.
    pub fn pnl(
        &self,
        quote: impl Fn(&Symbol) -> Option<(Decimal, Decimal)>,
        contract: impl Fn(&Symbol) -> Decimal,
    ) -> (Decimal, Decimal, Decimal) {
        self.accounts.values().fold(
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO),
            |(r, u, c), book| {
                (
                    r + book.realised,
                    u + book.unrealised(&quote, &contract),
                    c + book.commission,
                )
            },
        )
    }

    /// Orders of an account still waiting for the terminal's answer, oldest first.
    pub fn sent_orders(&self, account: Login) -> Vec<Order> {
        let mut orders: Vec<&(u64, Order)> = self
            .orders
            .values()
            .filter(|(_, o)| o.account == account && o.status == OrderStatus::Sent)
            .collect();
        orders.sort_by_key(|(seq, _)| *seq);
        orders.into_iter().map(|(_, o)| o.clone()).collect()
    }

    /// Orders that would close every open position: (account, symbol, side, volume, position ticket for
    /// hedging accounts or 0).
    pub fn closing_orders(&self) -> Vec<(Login, Symbol, Side, Decimal, u64)> {
        let mut out = Vec::new();
        for (login, book) in &self.accounts {
            for p in book.positions() {
                let position = if book.mode() == AccountMode::Hedging {
                    p.position_id
                } else {
                    0
                };
                out.push((
                    *login,
                    p.symbol.clone(),
                    p.side.opposite(),
                    p.volume,
                    position,
                ));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }

    pub fn orders(&self) -> Vec<Order> {
        self.order_ids
            .iter()
            .filter_map(|id| self.orders.get(id))
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn deals(&self) -> &[Deal] {
        &self.deals
    }

    pub fn orders_len(&self) -> usize {
        self.orders.len()
    }

    /// The last trade-server deal booked for an account: (its `time_msc`, the highest ticket), or `None`.
    pub fn last_deal(&self, account: Login) -> Option<(i64, u64)> {
        self.deals
            .iter()
            .filter(|d| d.account == account && !d.is_reconciliation())
            .fold(None, |acc, d| {
                let (t, k) = acc.unwrap_or((i64::MIN, 0));
                Some((t.max(d.fill.time_msc), k.max(d.ticket)))
            })
    }

    /// The symbols whose net position in the account's book differs from the terminal's (`terminal`: symbol
    /// → (signed net volume, average open price, a position id)), in symbol order: (symbol, trellis's net,
    /// the terminal's net).
    pub fn differences(
        &mut self,
        account: Login,
        terminal: &HashMap<Symbol, (Decimal, Decimal, u64)>,
    ) -> Vec<(Symbol, Decimal, Decimal)> {
        let book = self.account(account);
        let mut symbols: Vec<Symbol> = terminal.keys().cloned().collect();
        symbols.extend(book.positions().map(|p| p.symbol.clone()));
        symbols.sort();
        symbols.dedup();
        symbols
            .into_iter()
            .filter_map(|symbol| {
                let ours = book.net(&symbol);
                let theirs = terminal.get(&symbol).map(|t| t.0).unwrap_or_default();
                (ours != theirs).then_some((symbol, ours, theirs))
            })
            .collect()
    }

    /// The deals that bring an account's book to the terminal's net position per symbol (see
    /// [`Ledger::differences`]). Each is priced so that no profit is invented: what is added opens at the
    /// terminal's price, what is removed closes at trellis's own open price.
    pub fn adoption_deals(
        &mut self,
        account: Login,
        terminal: &HashMap<Symbol, (Decimal, Decimal, u64)>,
        now_ms: i64,
    ) -> Vec<Deal> {
        let first_ticket = self
            .deals
            .iter()
            .filter(|d| d.is_reconciliation())
            .map(|d| d.ticket + 1)
            .max()
            .unwrap_or(RECONCILIATION_TICKET_BASE + 1);
        let differences = self.differences(account, terminal);
        let book = self.account(account);
        let mut out = Vec::new();
        for ((symbol, ours, theirs), ticket) in differences.into_iter().zip(first_ticket..) {
            let (their_price, their_id) = terminal
                .get(&symbol)
                .map(|t| (t.1, t.2))
                .unwrap_or_default();
            let diff = theirs - ours;
            let own = book.positions().find(|p| p.symbol == symbol);
            let (own_price, own_id) = own
                .map(|p| (p.price_open, p.position_id))
                .unwrap_or_default();
            let entry = if ours.is_zero() {
                DealEntry::In
            } else if theirs.is_zero() {
                DealEntry::Out
            } else if ours.is_sign_positive() != theirs.is_sign_positive() {
                DealEntry::InOut
            } else if theirs.abs() > ours.abs() {
                DealEntry::In
            } else {
                DealEntry::Out
            };
            let (price, position_id) = match entry {
                DealEntry::Out => (own_price, own_id),
                DealEntry::In if !ours.is_zero() => (their_price, own_id),
                _ => (their_price, their_id),
            };
            out.push(Deal {
                account,
                ticket,
                order: 0,
                client_order_id: None,
                strategy_id: None,
                fill: Fill {
                    symbol,
                    side: if diff.is_sign_positive() {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                    volume: diff.abs(),
                    price,
                    position_id,
                    entry,
                    commission: Decimal::ZERO,
                    time_msc: now_ms,
                },
                swap: Decimal::ZERO,
                profit: Decimal::ZERO,
            });
        }
        out
    }

    /// Open positions by account.
    pub fn positions(&self) -> Vec<(Login, Position)> {
        let mut out: Vec<(Login, Position)> = self
            .accounts
            .iter()
            .flat_map(|(l, b)| b.positions().map(|p| (*l, p.clone())))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1.symbol).cmp(&(b.0, &b.1.symbol)));
        out
    }

    /// A strategy's PnL (realised + unrealised − commission) at the quotes `quote` gives.
    pub fn strategy_pnl(
        &self,
        strategy_id: &str,
        quote: impl Fn(&Symbol) -> Option<(Decimal, Decimal)>,
        contract: impl Fn(&Symbol) -> Decimal,
    ) -> Decimal {
        self.strategies
            .get(strategy_id)
            .map(|b| b.realised + b.unrealised(quote, contract) - b.commission)
            .unwrap_or_default()
    }

    /// One strategy's performance, with its own equity curve.
    pub fn strategy_performance(
        &self,
        strategy_id: &str,
        quote: impl Fn(&Symbol) -> Option<(Decimal, Decimal)>,
        contract: impl Fn(&Symbol) -> Decimal,
        curve: &EquityCurve,
    ) -> Performance {
        match self.strategies.get(strategy_id) {
            Some(book) => performance(book, book.unrealised(quote, contract), curve),
            None => performance(&Book::new(AccountMode::Netting), Decimal::ZERO, curve),
        }
    }

    /// Performance across accounts, with `unrealised` at current quotes.
    pub fn performance(&self, unrealised: Decimal) -> Performance {
        let mut merged = Book::new(AccountMode::Netting);
        for book in self.accounts.values() {
            merged.realised += book.realised;
            merged.commission += book.commission;
            merged
                .closed_trades
                .extend(book.closed_trades.iter().copied());
        }
        performance(&merged, unrealised, &self.curve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn deal(ticket: u64, side: Side, volume: &str, price: &str, time_msc: i64) -> Deal {
        Deal {
            account: Login::new(1),
            ticket,
            order: ticket,
            client_order_id: None,
            strategy_id: None,
            fill: Fill {
                symbol: Symbol::new("EURUSD"),
                side,
                volume: d(volume),
                price: d(price),
                position_id: 7,
                entry: DealEntry::In,
                commission: Decimal::ZERO,
                time_msc,
            },
            swap: Decimal::ZERO,
            profit: Decimal::ZERO,
        }
    }

    #[test]
    fn adoption_brings_each_symbol_to_the_terminals_net_without_inventing_profit() {
        let mut ledger = Ledger::new();
        let contract = Decimal::from(100_000);
        ledger.apply_deal(&deal(10, Side::Buy, "0.3", "1.1000", 5), false, contract, 0);
        // The terminal holds 0.1 long EURUSD (someone closed 0.2 where trellis could not see) and 0.2 short
        // GBPUSD that trellis never heard of.
        let terminal = HashMap::from([
            (Symbol::new("EURUSD"), (d("0.1"), d("1.1000"), 7)),
            (Symbol::new("GBPUSD"), (d("-0.2"), d("1.2500"), 9)),
        ]);
        let adopted = ledger.adoption_deals(Login::new(1), &terminal, 100);
        for a in &adopted {
            assert!(ledger.apply_deal(a, false, contract, 100));
        }
        let summary: Vec<_> = adopted
            .iter()
            .map(|a| {
                (
                    a.fill.symbol.0.as_str(),
                    a.fill.side,
                    a.fill.volume,
                    a.fill.entry,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("EURUSD", Side::Sell, d("0.2"), DealEntry::Out),
                ("GBPUSD", Side::Sell, d("0.2"), DealEntry::In)
            ]
        );
        assert!(adopted.iter().all(Deal::is_reconciliation));
        assert_eq!(adopted[1].ticket, adopted[0].ticket + 1);
        let book = ledger.account(Login::new(1));
        assert_eq!(book.net(&Symbol::new("EURUSD")), d("0.1"));
        assert_eq!(book.net(&Symbol::new("GBPUSD")), d("-0.2"));
        assert_eq!(
            book.realised,
            Decimal::ZERO,
            "closing at trellis's own price invents no profit"
        );
        assert!(ledger
            .adoption_deals(Login::new(1), &terminal, 200)
            .is_empty());
    }

    #[test]
    fn the_reconcile_point_is_the_last_trade_server_deal_not_a_reconciliation_entry() {
        let mut ledger = Ledger::new();
        let contract = Decimal::from(100_000);
        assert_eq!(ledger.last_deal(Login::new(1)), None);
        ledger.apply_deal(&deal(10, Side::Buy, "0.1", "1.1", 500), false, contract, 0);
        ledger.apply_deal(&deal(12, Side::Buy, "0.1", "1.1", 400), false, contract, 0);
        let terminal = HashMap::from([(Symbol::new("EURUSD"), (d("0.5"), d("1.1"), 7))]);
        for a in ledger.adoption_deals(Login::new(1), &terminal, 9_999) {
            ledger.apply_deal(&a, false, contract, 0);
        }
        assert_eq!(ledger.last_deal(Login::new(1)), Some((500, 12)));
    }

    #[test]
    fn a_cancel_done_ends_a_pending_order_and_a_refused_cancel_only_records_why() {
        let mut ledger = Ledger::new();
        let (seq, mut order) = ledger.new_order(
            None,
            Login::new(1),
            Symbol::new("EURUSD"),
            Side::Buy,
            d("0.2"),
            0,
        );
        order.kind = OrderKind::Limit;
        order.price = Some(d("1.0500"));
        order.status = OrderStatus::Sent;
        let id = order.client_order_id.clone();
        ledger.remember(seq, order);
        let answer = |retcode, comment: &str| OrderResult {
            client_order_id: id.clone(),
            retcode,
            order: 77,
            comment: comment.into(),
        };
        ledger.apply_result(Login::new(1), &answer(retcode::PLACED, ""), 1);
        assert_eq!(
            ledger.order(&id).map(|o| o.1.status),
            Some(OrderStatus::Placed)
        );

        // A refusal keeps the order waiting, and says why; the same refusal again changes nothing.
        let refused = answer(retcode::INVALID, "order not found");
        assert!(matches!(
            ledger.apply_cancel(&refused, 2),
            ResultOutcome::Updated { .. }
        ));
        assert!(matches!(
            ledger.apply_cancel(&refused, 3),
            ResultOutcome::Duplicate
        ));
        let (_, o) = ledger.order(&id).cloned().expect("order");
        assert_eq!(o.status, OrderStatus::Placed);
        assert!(o
            .reason
            .unwrap_or_default()
            .contains("cancel refused, retcode 10013"));

        // DONE cancels it, once.
        let done = answer(retcode::DONE, "");
        assert!(matches!(
            ledger.apply_cancel(&done, 4),
            ResultOutcome::Updated { .. }
        ));
        assert!(matches!(
            ledger.apply_cancel(&done, 5),
            ResultOutcome::Duplicate
        ));
        assert_eq!(
            ledger.order(&id).map(|o| o.1.status),
            Some(OrderStatus::Cancelled)
        );

        // The order's own result never reads as a cancel, and an unknown order is unknown.
        let mut other = answer(retcode::DONE, "");
        other.client_order_id = "nope".into();
        assert!(matches!(
            ledger.apply_cancel(&other, 6),
            ResultOutcome::Unknown
        ));
    }

    #[test]
    fn a_cancel_that_arrives_after_the_order_filled_leaves_the_fill_standing() {
        let mut ledger = Ledger::new();
        let (seq, mut order) = ledger.new_order(
            None,
            Login::new(1),
            Symbol::new("EURUSD"),
            Side::Buy,
            d("0.1"),
            0,
        );
        order.kind = OrderKind::Limit;
        let id = order.client_order_id.clone();
        order.add_fill(d("0.1"), d("1.05"), 1);
        ledger.remember(seq, order);
        let done = OrderResult {
            client_order_id: id.clone(),
            retcode: retcode::DONE,
            order: 77,
            comment: String::new(),
        };
        assert!(matches!(
            ledger.apply_cancel(&done, 2),
            ResultOutcome::Duplicate
        ));
        assert_eq!(
            ledger.order(&id).map(|o| o.1.status),
            Some(OrderStatus::Filled)
        );
    }
}
