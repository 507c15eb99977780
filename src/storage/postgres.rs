//! The relational store on PostgreSQL (`storage.postgres_url`): tenants, orders and fills, with the
//! database enforcing tenant isolation as well as the code.
//!
//! Every statement runs in a transaction that first sets `app.tenant_id` with `set_config(…, true)` (local to
//! the transaction, so a pooled connection carries nothing over to the next tenant); the row-level security
//! policies of `migrations/postgres` admit only that tenant's rows. trellis connects as a role that is
//! neither superuser nor BYPASSRLS — [`check_isolation`] refuses to start otherwise, or when a tenant table
//! lacks forced row-level security or a policy.
//!
//! Orders and deals are group-committed ([`super::journal`]): one transaction carries the records of several
//! tenants, setting `app.tenant_id` again before each record whose tenant differs from the one before, and
//! checking each tenant's lease token once (its lease row stays locked until the commit).

use std::time::Duration;

use actix::prelude::*;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::journal::{self, Backend, Failure, Journal, Journaled, Record};
use super::relational::{
    DealRow, EnsureTenant, LoadKillSwitch, LoadStrategySnapshot, LoadTenantBook, OrderRow,
    SaveDeal, SaveKillSwitch, SaveOrder, SaveStrategySnapshot, StrategySnapshot, TenantBook, NAME,
};
use super::{Health, HealthBoard, StorageError};
use crate::domain::orders::OrderKind;
use crate::runtime::supervisor::{ExitNotifier, Shutdown};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Tables that hold tenant data and must be isolated.
pub const TENANT_TABLES: [&str; 19] = [
    "tenants",
    "strategy_snapshots",
    "orders",
    "fills",
    "kill_switches",
    "tenant_registry",
    "users",
    "auth_sessions",
    "refresh_tokens",
    "revoked_tokens",
    "api_keys",
    "mt5_accounts",
    "audit_log",
    "model_registry",
    "model_versions",
    "model_aliases",
    "strategy_modules",
    "cluster_nodes",
    "tenant_leases",
];

/// Applies `migrations/postgres` with the owner's connection (`trellis migrate`).
pub async fn migrate(owner_url: &str) -> Result<(), StorageError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(owner_url)
        .await?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| StorageError::Unavailable(format!("migrating PostgreSQL: {e}")))?;
    pool.close().await;
    Ok(())
}

/// Why trellis will not use a PostgreSQL connection.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("storage.postgres_url: role `{0}` is a superuser, which bypasses row-level security; connect as trellis_app (see README, Production set-up)")]
    Superuser(String),
    #[error("storage.postgres_url: role `{0}` has BYPASSRLS; connect as a role without it (see README, Production set-up)")]
    BypassRls(String),
    #[error("storage.postgres_url: table `{0}` lacks row-level security (ENABLE and FORCE) or a policy; run `trellis migrate`")]
    Unprotected(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks the connection's role and every tenant table before trellis uses them.
pub async fn check_isolation(pool: &PgPool) -> Result<(), IsolationError> {
    let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .map_err(StorageError::from)?;
    if superuser {
        return Err(IsolationError::Superuser(role));
    }
    if bypass {
        return Err(IsolationError::BypassRls(role));
    }
    for table in TENANT_TABLES {
        let protected: Option<(bool, bool, i64)> = sqlx::query_as(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, \
             (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname = current_schema()",
        )
        .bind(table)
        .fetch_optional(pool)
        .await
        .map_err(StorageError::from)?;
        if !matches!(protected, Some((true, true, n)) if n > 0) {
            return Err(IsolationError::Unprotected(table.to_owned()));
        }
    }
    Ok(())
}

/// Connects as the application role and checks isolation.
pub async fn connect(url: &str) -> Result<PgPool, IsolationError> {
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(StorageError::from)?;
    check_isolation(&pool).await?;
    Ok(pool)
}

/// A transaction scoped to one tenant.
pub async fn tenant_tx(
    pool: &PgPool,
    tenant: &str,
) -> Result<Transaction<'static, Postgres>, StorageError> {
    let mut tx = pool.begin().await?;
    set_tenant(&mut tx, tenant).await?;
    Ok(tx)
}

/// Scopes the rest of `tx` to `tenant` (until the next call: a group commit moves from tenant to tenant).
async fn set_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
) -> Result<(), StorageError> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A transaction in the platform scope (what only the platform may read or write: leases, nodes, the log
/// mover's batches).
pub async fn platform_tx(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StorageError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Group commits that may run at once, each on its own connection of the pool (8): PostgreSQL writes
/// concurrent transactions in parallel and flushes their commits together, so a few commits in flight beat
/// one when a commit is mostly round trips; half the pool stays free for reads and the other writes.
pub const COMMITS_IN_FLIGHT: usize = 4;

/// The PostgreSQL relational actor. Owns the pool and the journal of orders and deals waiting for a commit.
pub struct PgRelational {
    url: String,
    pool: Option<PgPool>,
    journal: Journal,
    board: HealthBoard,
    notifier: ExitNotifier,
}

impl PgRelational {
    pub fn new(url: String, board: HealthBoard, notifier: ExitNotifier) -> Self {
        Self {
            url,
            pool: None,
            journal: Journal::new(NAME, board.metrics(), COMMITS_IN_FLIGHT),
            board,
            notifier,
        }
    }

    /// At most `max` records per group commit (1: one transaction per record, for comparison in
    /// `trellis bench journal`).
    pub fn with_max_batch(mut self, max: usize) -> Self {
        self.journal.set_max_batch(max);
        self
    }

    fn pool(&self) -> Result<PgPool, StorageError> {
        self.pool
            .clone()
            .ok_or_else(|| StorageError::Unavailable("PostgreSQL is not connected yet".into()))
    }
}

impl Actor for PgRelational {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.board.set(NAME, Health::Starting);
        let url = self.url.clone();
        ctx.wait(async move { connect(&url).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(pool) => {
                    act.pool = Some(pool);
                    act.board.set(NAME, Health::Healthy);
                }
                Err(e) => {
                    act.board.set(
                        NAME,
                        Health::Unhealthy {
                            reason: e.to_string(),
                        },
                    );
                    act.notifier.fail(e.to_string());
                    ctx.stop();
                }
            },
        ));
        ctx.run_interval(super::sqlite::HEALTH_INTERVAL, |act, ctx| {
            let (Some(pool), board) = (act.pool.clone(), act.board.clone()) else {
                return;
            };
            ctx.spawn(
                async move {
                    match sqlx::query("SELECT 1").execute(&pool).await {
                        Ok(_) => board.set(NAME, Health::Healthy),
                        Err(e) => board.set(
                            NAME,
                            Health::Unhealthy {
                                reason: e.to_string(),
                            },
                        ),
                    }
                }
                .into_actor(act),
            );
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.journal.abandon();
        self.notifier.mark_stopped();
        self.board.set(
            NAME,
            Health::Unhealthy {
                reason: "stopped".into(),
            },
        );
        if let Some(pool) = self.pool.take() {
            actix::spawn(async move { pool.close().await });
        }
    }
}

/// In cluster mode, first in a tenant's write transaction: holds the tenant's lease row and refuses the write
/// when `token` was overtaken by another node ([`crate::storage::lease::fence`]).
async fn fenced(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    token: Option<i64>,
) -> Result<(), StorageError> {
    match token {
        Some(token) => Ok(crate::storage::lease::fence(tx, tenant, token).await?),
        None => Ok(()),
    }
}

impl Handler<Shutdown> for PgRelational {
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

impl Handler<EnsureTenant> for PgRelational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: EnsureTenant, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool();
        Box::pin(async move {
            let mut tx = tenant_tx(&pool?, &msg.id).await?;
            sqlx::query(
                "INSERT INTO tenants (id, name, tier, created_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, tier = excluded.tier",
            )
            .bind(&msg.id)
            .bind(&msg.name)
            .bind(&msg.tier)
            .bind(crate::domain::now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// The order statement, shared by a record's own transaction and a group commit (`storage::journal`). `tx`
/// must be scoped to the record's tenant and fenced.
async fn insert_order(
    tx: &mut Transaction<'static, Postgres>,
    msg: &SaveOrder,
) -> Result<(), StorageError> {
    let o = &msg.order;
    let kind = match o.kind {
        OrderKind::Market => "market",
        OrderKind::Limit => "limit",
        OrderKind::Stop => "stop",
    };
    sqlx::query(
        "INSERT INTO orders (tenant_id, client_order_id, seq, account, strategy_id, symbol, side, kind, \
         volume, price, status, filled_volume, avg_price, retcode, broker_order, reason, created_ms, updated_ms, \
         lease_token) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10::numeric, $11, $12::numeric, $13::numeric, \
         $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (tenant_id, client_order_id) DO UPDATE SET status = excluded.status, \
         filled_volume = excluded.filled_volume, avg_price = excluded.avg_price, retcode = excluded.retcode, \
         broker_order = excluded.broker_order, reason = excluded.reason, updated_ms = excluded.updated_ms, \
         lease_token = excluded.lease_token \
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
    .bind(o.retcode.map(|c| c as i32))
    .bind(o.broker_order.map(|b| b as i64))
    .bind(&o.reason)
    .bind(o.created_ms)
    .bind(o.updated_ms)
    .bind(msg.fence)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The deal statement (shared as [`insert_order`]); whether the deal was new.
async fn insert_deal(
    tx: &mut Transaction<'static, Postgres>,
    msg: &SaveDeal,
) -> Result<bool, StorageError> {
    let d = &msg.deal;
    let entry = match d.fill.entry {
        crate::domain::positions::DealEntry::In => "in",
        crate::domain::positions::DealEntry::Out => "out",
        crate::domain::positions::DealEntry::InOut => "inout",
        crate::domain::positions::DealEntry::OutBy => "out_by",
    };
    let done = sqlx::query(
        "INSERT INTO fills (tenant_id, account, deal_ticket, order_ticket, client_order_id, strategy_id, \
         symbol, side, volume, price, position_id, entry, commission, swap, profit, time_msc, recorded_ms, \
         lease_token) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10::numeric, $11, $12, $13::numeric, \
         $14::numeric, $15::numeric, $16, $17, $18) \
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
    .bind(entry)
    .bind(d.fill.commission.to_string())
    .bind(d.swap.to_string())
    .bind(d.profit.to_string())
    .bind(d.fill.time_msc)
    .bind(crate::domain::now_ms())
    .bind(msg.fence)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    record: &Record,
) -> Result<bool, StorageError> {
    match record {
        Record::Order(msg) => insert_order(tx, msg).await.map(|()| true),
        Record::Deal(msg) => insert_deal(tx, msg).await,
    }
}

/// How the PostgreSQL store writes a group commit: one transaction whose row-level-security tenant is set
/// again whenever the next record's tenant differs, each tenant's lease checked once.
#[derive(Clone)]
pub struct PgJournal(PgPool);

impl Backend for PgJournal {
    async fn commit_batch(&self, records: &[Record]) -> Result<Vec<bool>, Failure> {
        let mut tx = self.0.begin().await.map_err(|e| Failure::Store(e.into()))?;
        let mut scope: Option<&str> = None;
        // The (tenant, token) pairs already fenced: the lease row stays locked until the commit.
        let mut fenced_in_batch: Vec<(&str, i64)> = Vec::new();
        let mut new = Vec::with_capacity(records.len());
        // On an error the transaction is dropped, which rolls it back.
        for record in records {
            let tenant = record.tenant();
            if scope != Some(tenant) {
                set_tenant(&mut tx, tenant).await.map_err(Failure::Record)?;
                scope = Some(tenant);
            }
            if let Some(token) = record.fence() {
                if !fenced_in_batch.contains(&(tenant, token)) {
                    fenced(&mut tx, tenant, Some(token))
                        .await
                        .map_err(Failure::Record)?;
                    fenced_in_batch.push((tenant, token));
                }
            }
            new.push(insert(&mut tx, record).await.map_err(Failure::Record)?);
        }
        tx.commit().await.map_err(|e| Failure::Record(e.into()))?;
        Ok(new)
    }

    async fn commit_one(&self, record: &Record) -> Result<bool, Failure> {
        let mut tx = self.0.begin().await.map_err(|e| Failure::Store(e.into()))?;
        set_tenant(&mut tx, record.tenant())
            .await
            .map_err(Failure::Record)?;
        fenced(&mut tx, record.tenant(), record.fence())
            .await
            .map_err(Failure::Record)?;
        let new = insert(&mut tx, record).await.map_err(Failure::Record)?;
        tx.commit().await.map_err(|e| Failure::Record(e.into()))?;
        Ok(new)
    }
}

impl Journaled for PgRelational {
    type Backend = PgJournal;

    fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    fn backend(&self) -> Result<PgJournal, StorageError> {
        self.pool().map(PgJournal)
    }
}

impl Handler<SaveOrder> for PgRelational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    /// Joins the next group commit (`storage::journal`); answers once it is stored.
    fn handle(&mut self, msg: SaveOrder, ctx: &mut Self::Context) -> Self::Result {
        let stored = journal::submit(self, ctx, Record::Order(msg));
        Box::pin(async move { stored.await.map(|_| ()) })
    }
}

impl Handler<SaveDeal> for PgRelational {
    type Result = ResponseFuture<Result<bool, StorageError>>;

    /// Joins the next group commit (`storage::journal`); answers once it is stored, whether it was new.
    fn handle(&mut self, msg: SaveDeal, ctx: &mut Self::Context) -> Self::Result {
        Box::pin(journal::submit(self, ctx, Record::Deal(msg)))
    }
}

impl Handler<LoadTenantBook> for PgRelational {
    type Result = ResponseFuture<Result<TenantBook, StorageError>>;

    fn handle(&mut self, msg: LoadTenantBook, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool();
        Box::pin(async move {
            let mut tx = tenant_tx(&pool?, &msg.tenant).await?;
            let orders: Vec<OrderRow> = sqlx::query_as(
                "SELECT seq, client_order_id, account, strategy_id, symbol, side, kind, volume::text AS volume, \
                 price::text AS price, status, filled_volume::text AS filled_volume, avg_price::text AS avg_price, \
                 retcode::bigint AS retcode, broker_order, reason, created_ms, updated_ms \
                 FROM orders WHERE tenant_id = $1 ORDER BY seq",
            )
            .bind(&msg.tenant)
            .fetch_all(&mut *tx)
            .await?;
            let deals: Vec<DealRow> = sqlx::query_as(
                "SELECT account, deal_ticket, order_ticket, client_order_id, strategy_id, symbol, side, \
                 volume::text AS volume, price::text AS price, position_id, entry, commission::text AS commission, \
                 swap::text AS swap, profit::text AS profit, time_msc \
                 FROM fills WHERE tenant_id = $1 ORDER BY recorded_seq",
            )
            .bind(&msg.tenant)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
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

impl Handler<SaveKillSwitch> for PgRelational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: SaveKillSwitch, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool();
        Box::pin(async move {
            let mut tx = tenant_tx(&pool?, &msg.tenant).await?;
            fenced(&mut tx, &msg.tenant, msg.fence).await?;
            match msg.kill {
                Some(k) => {
                    sqlx::query(
                        "INSERT INTO kill_switches (tenant_id, reason, automatic, at_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (tenant_id) DO UPDATE SET reason = excluded.reason, automatic = excluded.automatic, \
                         at_ms = excluded.at_ms",
                    )
                    .bind(&msg.tenant)
                    .bind(&k.reason)
                    .bind(k.automatic)
                    .bind(k.at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM kill_switches WHERE tenant_id = $1")
                        .bind(&msg.tenant)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Handler<LoadKillSwitch> for PgRelational {
    type Result = ResponseFuture<Result<Option<crate::domain::risk::KillSwitch>, StorageError>>;

    fn handle(&mut self, msg: LoadKillSwitch, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool();
        Box::pin(async move {
            let mut tx = tenant_tx(&pool?, &msg.tenant).await?;
            let row: Option<(String, bool, i64)> = sqlx::query_as(
                "SELECT reason, automatic, at_ms FROM kill_switches WHERE tenant_id = $1",
            )
            .bind(&msg.tenant)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
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

impl Handler<SaveStrategySnapshot> for PgRelational {
    type Result = ResponseFuture<Result<(), StorageError>>;

    fn handle(&mut self, msg: SaveStrategySnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool();
        Box::pin(async move {
            let mut tx = tenant_tx(&pool?, &msg.tenant).await?;
            fenced(&mut tx, &msg.tenant, msg.fence).await?;
            let s = msg.snapshot;
            sqlx::query(
                "INSERT INTO strategy_snapshots (tenant_id, strategy_id, fingerprint, bar_open_ms, state) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, strategy_id) DO UPDATE SET \
                 fingerprint = excluded.fingerprint, bar_open_ms = excluded.bar_open_ms, state = excluded.state",
            )
            .bind(&msg.tenant)
            .bind(&s.strategy_id)
            .bind(&s.fingerprint)
            .bind(s.bar_open_ms)
            .bind(&s.state)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Handler<LoadStrategySnapshot> for PgRelational {
    type Result = ResponseFuture<Result<Option<StrategySnapshot>, StorageError>>;

    fn handle(&mut self, msg: LoadStrategySnapshot, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool();
        Box::pin(async move {
            let mut tx = tenant_tx(&pool?, &msg.tenant).await?;
            let row = sqlx::query_as::<_, StrategySnapshot>(
                "SELECT strategy_id, fingerprint, bar_open_ms, state FROM strategy_snapshots \
                 WHERE tenant_id = $1 AND strategy_id = $2",
            )
            .bind(&msg.tenant)
            .bind(&msg.strategy_id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row)
        })
    }
}
