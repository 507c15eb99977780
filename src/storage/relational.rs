//! The relational store: tenants, orders, fills and positions. Embedded SQLite (`relational.db`); PostgreSQL
//! (`storage::postgres`) answers the same messages.
//!
//! Orders and deals — the write-ahead records — are group-committed ([`super::journal`]): those that arrive
//! together share one transaction, and each writer is answered once its record is stored.

use std::path::PathBuf;

use actix::prelude::*;
use sqlx::migrate::Migrator;

use super::sqlite::{boot, halt, Checkpoint, SqliteActor, SqliteCore};
use super::HealthBoard;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite/relational");

/// The migrations of this store.
pub fn migrator() -> &'static Migrator {
    &MIGRATOR
}

/// Name of this store on the health board and in `/ready`.
pub const NAME: &str = "relational";

/// The relational storage actor. Owns the pool and the journal of orders and deals waiting for a commit.
pub struct Relational {
    core: SqliteCore,
    journal: Journal,
}

impl Relational {
    pub fn new(data_dir: PathBuf, board: HealthBoard, notifier: ExitNotifier) -> Self {
        Self {
            // SQLite has one writer at a time: a second commit in flight would only wait for the first's lock.
            journal: Journal::new(NAME, board.metrics(), 1),
            core: SqliteCore {
                name: NAME,
                dir: data_dir,
                file: "relational.db",
                migrator: &MIGRATOR,
                // Off the journal's path: see `storage::sqlite`.
                checkpoint: Checkpoint::Background,
                pool: None,
                board,
                notifier,
            },
        }
    }

    /// At most `max` records per group commit (1: one transaction per record, for comparison in
    /// `trellis bench journal`).
    pub fn with_max_batch(mut self, max: usize) -> Self {
        self.journal.set_max_batch(max);
        self
    }
}

impl SqliteActor for Relational {
    fn core(&mut self) -> &mut SqliteCore {
        &mut self.core
    }
}

impl Actor for Relational {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        boot(self, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.journal.abandon();
        halt(self);
    }
}

impl Handler<Shutdown> for Relational {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops once the orders and deals in hand are committed (`journal::drained`).
    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        Box::pin(
            journal::drained(self)
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Orders and fills

use rust_decimal::Decimal;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

use super::journal::{self, Backend, Failure, Journal, Journaled, Record};
use super::StorageError;
use crate::domain::orders::{Order, OrderKind, OrderStatus};
use crate::domain::positions::{Deal, DealEntry, Fill};
use crate::domain::{Login, Side, Symbol};

/// Inserts or updates an order (keyed by tenant and client order id).
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SaveOrder {
    pub tenant: String,
    pub seq: u64,
    pub order: Order,
    /// The writer's lease token in cluster mode (PostgreSQL refuses a token that was overtaken).
    pub fence: Option<i64>,
}

/// Records a deal once; a repeat of the same ticket is ignored. Answers whether it was new.
#[derive(Message)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct SaveDeal {
    pub tenant: String,
    pub deal: Deal,
    /// As [`SaveOrder::fence`].
    pub fence: Option<i64>,
}

/// Everything a tenant's portfolio needs to rebuild itself after a restart.
#[derive(Message)]
#[rtype(result = "Result<TenantBook, StorageError>")]
pub struct LoadTenantBook {
    pub tenant: String,
}

/// Stores the kill switch of a tenant (`None` = off).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SaveKillSwitch {
    pub tenant: String,
    pub kill: Option<crate::domain::risk::KillSwitch>,
    /// As [`SaveOrder::fence`].
    pub fence: Option<i64>,
}

/// The stored kill switch of a tenant.
#[derive(Message, Clone)]
#[rtype(result = "Result<Option<crate::domain::risk::KillSwitch>, StorageError>")]
pub struct LoadKillSwitch {
    pub tenant: String,
}

/// Stores a strategy's state after a bar, replacing the one before.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SaveStrategySnapshot {
    pub tenant: String,
    pub snapshot: StrategySnapshot,
    /// As [`SaveOrder::fence`].
    pub fence: Option<i64>,
}

/// A strategy's stored state: what it was after the bar opened at `bar_open_ms`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StrategySnapshot {
    pub strategy_id: String,
    /// The kind, parameters, symbol and timeframe the state belongs to.
    pub fingerprint: String,
    pub bar_open_ms: i64,
    /// JSON, as the strategy wrote it.
    pub state: String,
}

/// The stored state of a strategy, if any.
#[derive(Message, Clone)]
#[rtype(result = "Result<Option<StrategySnapshot>, StorageError>")]
pub struct LoadStrategySnapshot {
    pub tenant: String,
    pub strategy_id: String,
}

/// Makes sure a tenant's row exists (before its orders, which reference it).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), StorageError>")]
pub struct EnsureTenant {
    pub id: String,
    pub name: String,
    pub tier: String,
}

#[derive(Debug, Default)]
pub struct TenantBook {
    /// Orders with the counter they were made from, oldest first.
    pub orders: Vec<(u64, Order)>,
    /// Deals in the order they were recorded.
    pub deals: Vec<Deal>,
}

#[derive(FromRow)]
pub(crate) struct OrderRow {
    seq: i64,
    client_order_id: String,
    account: i64,
    strategy_id: Option<String>,
    symbol: String,
    side: String,
    kind: String,
    volume: String,
    price: Option<String>,
    status: String,
    filled_volume: String,
    avg_price: Option<String>,
    retcode: Option<i64>,
    broker_order: Option<i64>,
    reason: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(FromRow)]
pub(crate) struct DealRow {
    account: i64,
    deal_ticket: i64,
    order_ticket: i64,
    client_order_id: Option<String>,
    strategy_id: Option<String>,
    symbol: String,
    side: String,
    volume: String,
    price: String,
    position_id: i64,
    entry: String,
    commission: String,
    swap: String,
    profit: String,
    time_msc: i64,
}

fn dec(field: &str, s: &str) -> Result<Decimal, StorageError> {
    s.parse()
        .map_err(|_| StorageError::Rejected(format!("stored {field} `{s}` is not a decimal")))
}

fn side(s: &str) -> Result<Side, StorageError> {
    match s {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(StorageError::Rejected(format!("stored side `{other}`"))),
    }
}

fn entry_str(e: DealEntry) -> &'static str {
    match e {
        DealEntry::In => "in",
        DealEntry::Out => "out",
        DealEntry::InOut => "inout",
        DealEntry::OutBy => "out_by",
    }
}

impl TryFrom<OrderRow> for (u64, Order) {
    type Error = StorageError;

    fn try_from(r: OrderRow) -> Result<Self, StorageError> {
        let kind = match r.kind.as_str() {
            "market" => OrderKind::Market,
            "limit" => OrderKind::Limit,
            "stop" => OrderKind::Stop,
            other => {
                return Err(StorageError::Rejected(format!(
                    "stored order kind `{other}`"
                )))
            }
        };
        let status = OrderStatus::parse(&r.status)
            .ok_or_else(|| StorageError::Rejected(format!("stored order status `{}`", r.status)))?;
        Ok((
            r.seq as u64,
            Order {
                client_order_id: r.client_order_id,
                account: Login::new(r.account as u64),
                strategy_id: r.strategy_id,
                symbol: Symbol::new(r.symbol),
                side: side(&r.side)?,
                kind,
                volume: dec("volume", &r.volume)?,
                price: r.price.as_deref().map(|p| dec("price", p)).transpose()?,
                status,
                filled_volume: dec("filled_volume", &r.filled_volume)?,
                avg_price: r
                    .avg_price
                    .as_deref()
                    .map(|p| dec("avg_price", p))
                    .transpose()?,
                retcode: r.retcode.map(|c| c as u32),
                broker_order: r.broker_order.map(|o| o as u64),
                reason: r.reason,
                created_ms: r.created_ms,
                updated_ms: r.updated_ms,
            },
        ))
    }
}

impl TryFrom<DealRow> for Deal {
    type Error = StorageError;

    fn try_from(r: DealRow) -> Result<Self, StorageError> {
        let entry = match r.entry.as_str() {
            "in" => DealEntry::In,
            "out" => DealEntry::Out,
            "inout" => DealEntry::InOut,
            "out_by" => DealEntry::OutBy,
            other => {
                return Err(StorageError::Rejected(format!(
                    "stored deal entry `{other}`"
                )))
            }
        };
        Ok(Deal {
            account: Login::new(r.account as u64),
            ticket: r.deal_ticket as u64,
            order: r.order_ticket as u64,
            client_order_id: r.client_order_id,
            strategy_id: r.strategy_id,
            fill: Fill {
                symbol: Symbol::new(r.symbol),
                side: side(&r.side)?,
                volume: dec("volume", &r.volume)?,
                price: dec("price", &r.price)?,
                position_id: r.position_id as u64,
                entry,
                commission: dec("commission", &r.commission)?,
                time_msc: r.time_msc,
            },
            swap: dec("swap", &r.swap)?,
            profit: dec("profit", &r.profit)?,
        })
    }
}

/// The order statement, shared by a record written alone and a group commit (`storage::journal`).
async fn insert_order(conn: &mut SqliteConnection, msg: &SaveOrder) -> Result<(), StorageError> {
    let o = &msg.order;
    let kind = match o.kind {
        OrderKind::Market => "market",
        OrderKind::Limit => "limit",
        OrderKind::Stop => "stop",
    };
    sqlx::query(
        "INSERT INTO orders (tenant_id, client_order_id, seq, account, strategy_id, symbol, side, kind, \
         volume, price, status, filled_volume, avg_price, retcode, broker_order, reason, created_ms, updated_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, client_order_id) DO UPDATE SET status = excluded.status, \
         filled_volume = excluded.filled_volume, avg_price = excluded.avg_price, retcode = excluded.retcode, \
         broker_order = excluded.broker_order, reason = excluded.reason, updated_ms = excluded.updated_ms \
         WHERE orders.updated_ms <= excluded.updated_ms",
    )
    .bind(&msg.tenant)
    .bind(&o.client_order_id)
    .bind(msg.seq as i64)
    .bind(o.account.get() as i64)
    .bind(&o.strategy_id)
    .bind(o.symbol.as_str())
    .bind(o.side.as_str())
    .bind(kind)
    .bind(o.volume.to_string())
    .bind(o.price.map(|p| p.to_string()))
    .bind(o.status.as_str())
    .bind(o.filled_volume.to_string())
    .bind(o.avg_price.map(|p| p.to_string()))
    .bind(o.retcode.map(i64::from))
    .bind(o.broker_order.map(|b| b as i64))
    .bind(&o.reason)
    .bind(o.created_ms)
    .bind(o.updated_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The deal statement (shared as [`insert_order`]); whether the deal was new.
async fn insert_deal(conn: &mut SqliteConnection, msg: &SaveDeal) -> Result<bool, StorageError> {
    let d = &msg.deal;
    let done = sqlx::query(
        "INSERT INTO fills (tenant_id, account, deal_ticket, order_ticket, client_order_id, strategy_id, \
         symbol, side, volume, price, position_id, entry, commission, swap, profit, time_msc, recorded_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, account, deal_ticket) DO NOTHING",
    )
    .bind(&msg.tenant)
    .bind(d.account.get() as i64)
    .bind(d.ticket as i64)
    .bind(d.order as i64)
    .bind(&d.client_order_id)
    .bind(&d.strategy_id)
    .bind(d.fill.symbol.as_str())
    .bind(d.fill.side.as_str())
    .bind(d.fill.volume.to_string())
    .bind(d.fill.price.to_string())
    .bind(d.fill.position_id as i64)
    .bind(entry_str(d.fill.entry))
    .bind(d.fill.commission.to_string())
    .bind(d.swap.to_string())
    .bind(d.profit.to_string())
    .bind(d.fill.time_msc)
    .bind(crate::domain::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn insert(conn: &mut SqliteConnection, record: &Record) -> Result<bool, StorageError> {
    match record {
        Record::Order(msg) => insert_order(conn, msg).await.map(|()| true),
        Record::Deal(msg) => insert_deal(conn, msg).await,
    }
}

/// How the SQLite store writes a group commit: one `BEGIN` … `COMMIT` around the records' statements, and
/// a record alone as one statement in SQLite's autocommit mode — a transaction of its own all the same, at
/// one round trip to the connection's thread instead of three (`BEGIN`, the statement, `COMMIT`). That is
/// the common case on the trading path (an order decided while no other record waits), and the round
/// trips were most of its write-ahead time (`trellis bench latency`, stage `write_ahead`).
#[derive(Clone)]
pub struct SqliteJournal(SqlitePool);

impl SqliteJournal {
    async fn alone(&self, record: &Record) -> Result<bool, Failure> {
        let mut conn = self
            .0
            .acquire()
            .await
            .map_err(|e| Failure::Store(e.into()))?;
        insert(&mut conn, record).await.map_err(Failure::Record)
    }
}

impl Backend for SqliteJournal {
    async fn commit_batch(&self, records: &[Record]) -> Result<Vec<bool>, Failure> {
        if let [record] = records {
            return self.alone(record).await.map(|new| vec![new]);
        }
        let mut tx = self.0.begin().await.map_err(|e| Failure::Store(e.into()))?;
        let mut new = Vec::with_capacity(records.len());
        for record in records {
            // On an error the transaction is dropped, which rolls it back.
            new.push(insert(&mut tx, record).await.map_err(Failure::Record)?);
        }
        tx.commit().await.map_err(|e| Failure::Record(e.into()))?;
        Ok(new)
    }

    async fn commit_one(&self, record: &Record) -> Result<bool, Failure> {
        self.alone(record).await
    }
}

impl Journaled for Relational {
    type Backend = SqliteJournal;

    fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    fn backend(&self) -> Result<SqliteJournal, StorageError> {
        self.core.pool().map(SqliteJournal)
    }
}

impl Handler<SaveOrder> for Relational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    /// Joins the next group commit (`storage::journal`); answers once it is stored.
    fn handle(&mut self, msg: SaveOrder, ctx: &mut Self::Context) -> Self::Result {
        let stored = journal::submit(self, ctx, Record::Order(msg));
        Box::pin(async move { stored.await.map(|_| ()) })
    }
}

impl Handler<SaveDeal> for Relational {
    type Result = ResponseFuture<Result<bool, StorageError>>;

    /// Joins the next group commit (`storage::journal`); answers once it is stored, whether it was new.
    fn handle(&mut self, msg: SaveDeal, ctx: &mut Self::Context) -> Self::Result {
        Box::pin(journal::submit(self, ctx, Record::Deal(msg)))
    }
}

impl Handler<LoadTenantBook> for Relational {
    type Result = ResponseFuture<Result<TenantBook, StorageError>>;

    fn handle(&mut self, msg: LoadTenantBook, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let pool = pool?;
            let orders: Vec<OrderRow> = sqlx::query_as(
                "SELECT seq, client_order_id, account, strategy_id, symbol, side, kind, volume, price, status, \
                 filled_volume, avg_price, retcode, broker_order, reason, created_ms, updated_ms \
                 FROM orders WHERE tenant_id = ? ORDER BY seq",
            )
            .bind(&msg.tenant)
            .fetch_all(&pool)
            .await?;
            let deals: Vec<DealRow> = sqlx::query_as(
                "SELECT account, deal_ticket, order_ticket, client_order_id, strategy_id, symbol, side, volume, \
                 price, position_id, entry, commission, swap, profit, time_msc \
                 FROM fills WHERE tenant_id = ? ORDER BY rowid",
            )
            .bind(&msg.tenant)
            .fetch_all(&pool)
            .await?;
            Ok(TenantBook {
                orders: orders
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_, _>>()?,
                deals: deals
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_, _>>()?,
            })
        })
    }
}

impl Handler<EnsureTenant> for Relational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: EnsureTenant, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO tenants (id, name, tier, created_ms) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, tier = excluded.tier",
            )
            .bind(&msg.id)
            .bind(&msg.name)
            .bind(&msg.tier)
            .bind(crate::domain::now_ms())
            .execute(&pool?)
            .await?;
            Ok(())
        })
    }
}

impl Handler<SaveKillSwitch> for Relational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: SaveKillSwitch, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let pool = pool?;
            match msg.kill {
                Some(k) => {
                    sqlx::query(
                        "INSERT INTO kill_switches (tenant_id, reason, automatic, at_ms) VALUES (?, ?, ?, ?) \
                         ON CONFLICT (tenant_id) DO UPDATE SET reason = excluded.reason, automatic = excluded.automatic, \
                         at_ms = excluded.at_ms",
                    )
                    .bind(&msg.tenant)
                    .bind(&k.reason)
                    .bind(k.automatic)
                    .bind(k.at_ms)
                    .execute(&pool)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM kill_switches WHERE tenant_id = ?")
                        .bind(&msg.tenant)
                        .execute(&pool)
                        .await?;
                }
            }
            Ok(())
        })
    }
}

impl Handler<LoadKillSwitch> for Relational {
    type Result = ResponseFuture<Result<Option<crate::domain::risk::KillSwitch>, StorageError>>;

    fn handle(&mut self, msg: LoadKillSwitch, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let row: Option<(String, bool, i64)> = sqlx::query_as(
                "SELECT reason, automatic, at_ms FROM kill_switches WHERE tenant_id = ?",
            )
            .bind(&msg.tenant)
            .fetch_optional(&pool?)
            .await?;
            Ok(row.map(
                |(reason, automatic, at_ms)| crate::domain::risk::KillSwitch {
                    reason,
                    automatic,
                    at_ms,
                },
            ))
        })
    }
}

impl Handler<SaveStrategySnapshot> for Relational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: SaveStrategySnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            let s = msg.snapshot;
            sqlx::query(
                "INSERT INTO strategy_snapshots (tenant_id, strategy_id, fingerprint, bar_open_ms, state) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, strategy_id) DO UPDATE SET \
                 fingerprint = excluded.fingerprint, bar_open_ms = excluded.bar_open_ms, state = excluded.state",
            )
            .bind(&msg.tenant)
            .bind(&s.strategy_id)
            .bind(&s.fingerprint)
            .bind(s.bar_open_ms)
            .bind(&s.state)
            .execute(&pool?)
            .await?;
            Ok(())
        })
    }
}

impl Handler<LoadStrategySnapshot> for Relational {
    type Result = ResponseFuture<Result<Option<StrategySnapshot>, StorageError>>;

    fn handle(&mut self, msg: LoadStrategySnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.core.pool();
        Box::pin(async move {
            Ok(sqlx::query_as::<_, StrategySnapshot>(
                "SELECT strategy_id, fingerprint, bar_open_ms, state FROM strategy_snapshots \
                 WHERE tenant_id = ? AND strategy_id = ?",
            )
            .bind(&msg.tenant)
            .bind(&msg.strategy_id)
            .fetch_optional(&pool?)
            .await?)
        })
    }
}
