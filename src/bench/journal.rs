//! `trellis bench journal`: the write-ahead records' group commit (`storage::journal`) under a burst.
//!
//! 20 writers (one tenant each, like 20 portfolios) each write 100 orders one after another, as
//! `Portfolio::write_ahead` does — the next only once the store answered the last — so up to 20 orders wait
//! at any moment. Against the embedded SQLite store, and PostgreSQL too when `TRELLIS_TEST_POSTGRES_URL` (a
//! superuser URL; a database is created per run) is set. Prints commits per second, records per commit and
//! each order's latency (send → stored).
//!
//! `TRELLIS_JOURNAL_MAX_BATCH=1` (read by this benchmark only) commits one record per transaction: the
//! figure before group commit. `TRELLIS_JOURNAL_ORDERS_PER_WRITER` (default 100) makes the burst longer: past
//! a second, the embedded store's WAL checkpoints run during it (`storage::sqlite::CHECKPOINT_INTERVAL`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use rust_decimal::Decimal;

use super::{metric, tempfile_dir, Latencies};
use crate::domain::orders::{Order, OrderKind, OrderStatus};
use crate::domain::{Login, Side, Symbol};
use crate::metrics::Metrics;
use crate::runtime::supervisor::ExitNotifier;
use crate::storage::journal::MAX_BATCH;
use crate::storage::postgres::PgRelational;
use crate::storage::relational::{EnsureTenant, Relational, SaveOrder};
use crate::storage::{HealthBoard, RelationalStore, StoreSlot};

const WRITERS: usize = 20;

/// A number from the environment, or `default`.
fn setting(var: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(var) {
        Ok(v) => v
            .parse::<usize>()
            .map_err(|_| anyhow::anyhow!("{var}: a number, not `{v}`")),
        Err(_) => Ok(default),
    }
}

pub async fn run() -> anyhow::Result<()> {
    let max_batch = setting("TRELLIS_JOURNAL_MAX_BATCH", MAX_BATCH)?;
    let per_writer = setting("TRELLIS_JOURNAL_ORDERS_PER_WRITER", 100)?;
    println!(
        "journal: {WRITERS} writers × {per_writer} orders, each writer waiting for its last order to be \
         stored; at most {max_batch} records per commit"
    );
    let dir = tempfile_dir()?;
    let result = embedded(&dir, max_batch, per_writer).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    match std::env::var("TRELLIS_TEST_POSTGRES_URL") {
        Ok(admin) if !admin.is_empty() => postgres(&admin, max_batch, per_writer).await,
        _ => {
            println!("  postgres: skipped (TRELLIS_TEST_POSTGRES_URL is not set)");
            Ok(())
        }
    }
}

async fn embedded(
    dir: &std::path::Path,
    max_batch: usize,
    per_writer: usize,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let slot = StoreSlot::<Relational>::default();
    slot.set(
        Relational::new(
            dir.to_path_buf(),
            HealthBoard::new(metrics.clone()),
            ExitNotifier::detached("bench.journal"),
        )
        .with_max_batch(max_batch)
        .start(),
    );
    burst(
        "sqlite",
        &RelationalStore::Embedded(slot),
        &metrics,
        per_writer,
    )
    .await
}

async fn postgres(admin: &str, max_batch: usize, per_writer: usize) -> anyhow::Result<()> {
    let (owner, app) = super::failover::database(admin).await?;
    crate::storage::postgres::migrate(&owner).await?;
    let metrics = Arc::new(Metrics::new());
    let slot = StoreSlot::<PgRelational>::default();
    slot.set(
        PgRelational::new(
            app,
            HealthBoard::new(metrics.clone()),
            ExitNotifier::detached("bench.journal"),
        )
        .with_max_batch(max_batch)
        .start(),
    );
    burst(
        "postgres",
        &RelationalStore::Postgres(slot),
        &metrics,
        per_writer,
    )
    .await
}

fn order(writer: usize, n: usize) -> Order {
    let now = crate::domain::now_ms();
    Order {
        client_order_id: format!("bench-{writer}-{n}"),
        account: Login::new(1),
        strategy_id: Some("bench".into()),
        symbol: Symbol::new("EURUSD"),
        side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
        kind: OrderKind::Market,
        volume: Decimal::new(1, 1),
        price: None,
        status: OrderStatus::Sent,
        filled_volume: Decimal::ZERO,
        avg_price: None,
        retcode: None,
        broker_order: None,
        reason: None,
        created_ms: now,
        updated_ms: now,
    }
}

async fn burst(
    label: &str,
    store: &RelationalStore,
    metrics: &Metrics,
    per_writer: usize,
) -> anyhow::Result<()> {
    for w in 0..WRITERS {
        store
            .ensure_tenant(EnsureTenant {
                id: format!("bench{w:02}"),
                name: format!("bench{w:02}"),
                tier: "enterprise".into(),
            })
            .await?;
    }
    let before = metrics.render();
    let (commits_before, records_before) = (
        metric(&before, "trellis_journal_commits_total"),
        metric(&before, "trellis_journal_records_total"),
    );
    let started = Instant::now();
    let writers = (0..WRITERS).map(|w| {
        let store = store.clone();
        actix::spawn(async move {
            let mut samples = Vec::with_capacity(per_writer);
            for n in 0..per_writer {
                let sent = Instant::now();
                store
                    .save_order(SaveOrder {
                        tenant: format!("bench{w:02}"),
                        seq: n as u64,
                        order: order(w, n),
                        fence: None,
                    })
                    .await?;
                samples.push(sent.elapsed());
            }
            Ok::<Vec<Duration>, crate::storage::StorageError>(samples)
        })
    });
    let mut latencies = Latencies::new();
    for writer in futures_util::future::join_all(writers).await {
        for sample in writer?? {
            latencies.record(sample);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = metrics.render();
    let commits = metric(&after, "trellis_journal_commits_total") - commits_before;
    let records = metric(&after, "trellis_journal_records_total") - records_before;
    println!(
        "  {label}: {} orders in {elapsed:.2} s = {:.0} orders/s; {commits} commits = {:.0} commits/s, \
         {:.2} records/commit; latency {}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        commits / elapsed,
        records / commits.max(1.0),
        latencies.summary(&[50.0, 99.0, 99.9])
    );
    Ok(())
}
