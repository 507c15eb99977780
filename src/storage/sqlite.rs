//! Opening the embedded SQLite databases: WAL journal (readers never block the writer), `NORMAL` sync (durable
//! at each checkpoint, the usual choice with WAL), foreign keys on, and the backend's migrations applied.
//!
//! Checkpoints (copying the WAL back into the database file) run where [`Checkpoint`] says: SQLite's default
//! is inside the commit that takes the WAL past 1 000 pages. The relational store moves them off its write
//! path: its orders and deals are group-committed one commit at a time (`storage::journal`), so a checkpoint
//! inside that commit held every waiting writer (`trellis bench journal`: p99 10–12 ms against 1–1.5 ms with
//! the checkpoint beside it).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::StorageError;

/// When the WAL is checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// SQLite's default: by the commit that takes the WAL past 1 000 pages, inside that commit.
    OnCommit,
    /// Off the write path: a passive checkpoint (it waits for no reader or writer) every
    /// [`CHECKPOINT_INTERVAL`], on a connection of its own; commits never checkpoint.
    Background,
}

/// How often a [`Checkpoint::Background`] store checkpoints its WAL: bounds the WAL to what is written in
/// that time.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Opens (creating if needed) `dir/file` and runs `migrator` on it.
pub async fn open(dir: &Path, file: &str, migrator: &Migrator) -> Result<SqlitePool, StorageError> {
    open_with(dir, file, migrator, Checkpoint::OnCommit).await
}

/// [`open`], with checkpoints where `checkpoint` says.
pub async fn open_with(
    dir: &Path,
    file: &str,
    migrator: &Migrator,
    checkpoint: Checkpoint,
) -> Result<SqlitePool, StorageError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StorageError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(file);
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let options = match checkpoint {
        Checkpoint::OnCommit => options,
        Checkpoint::Background => options.pragma("wal_autocheckpoint", "0"),
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each use: a file connection does not go stale as a network one does, and the
        // ping was a round trip to the connection's thread in front of every statement on the trading
        // path. A broken connection still fails its statement, which the callers retry.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    migrator
        .run(&pool)
        .await
        .map_err(|e| StorageError::Unavailable(format!("migrating {}: {e}", path.display())))?;
    Ok(pool)
}

use actix::prelude::*;
use std::path::PathBuf;

use super::{Health, HealthBoard};
use crate::runtime::supervisor::ExitNotifier;

/// How often a storage actor checks its database with a trivial query.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// What every SQLite-backed storage actor holds: the pool once open, and its place in the tree.
pub struct SqliteCore {
    pub name: &'static str,
    pub dir: PathBuf,
    pub file: &'static str,
    pub migrator: &'static Migrator,
    pub checkpoint: Checkpoint,
    pub pool: Option<SqlitePool>,
    pub board: HealthBoard,
    pub notifier: ExitNotifier,
}

impl SqliteCore {
    /// The open pool, or `Unavailable` (only possible before `started` finished, which the mailbox prevents).
    pub fn pool(&self) -> Result<SqlitePool, super::StorageError> {
        self.pool.clone().ok_or_else(|| {
            super::StorageError::Unavailable(format!("{} is not open yet", self.name))
        })
    }
}

/// A storage actor built on [`SqliteCore`].
pub trait SqliteActor: Actor<Context = Context<Self>> {
    fn core(&mut self) -> &mut SqliteCore;
}

/// Opens the database before the actor handles any message (`ctx.wait`), then checks it periodically. A
/// database that cannot be opened fails the actor, so its supervisor retries with back-off.
pub fn boot<A: SqliteActor>(act: &mut A, ctx: &mut Context<A>) {
    let core = act.core();
    let (dir, file, migrator, board, name, checkpoint) = (
        core.dir.clone(),
        core.file,
        core.migrator,
        core.board.clone(),
        core.name,
        core.checkpoint,
    );
    board.set(name, Health::Starting);
    ctx.wait(
        async move { open_with(&dir, file, migrator, checkpoint).await }
            .into_actor(act)
            .map(move |res, act, ctx| match res {
                Ok(pool) => {
                    let core = act.core();
                    core.pool = Some(pool);
                    core.board.set(core.name, Health::Healthy);
                }
                Err(e) => {
                    let core = act.core();
                    core.board.set(
                        core.name,
                        Health::Unhealthy {
                            reason: e.to_string(),
                        },
                    );
                    core.notifier.fail(e.to_string());
                    ctx.stop();
                }
            }),
    );
    if checkpoint == Checkpoint::Background {
        checkpoint_in_background(ctx);
    }
    ctx.run_interval(HEALTH_INTERVAL, |act, ctx| {
        let core = act.core();
        let (Some(pool), board, name) = (core.pool.clone(), core.board.clone(), core.name) else {
            return;
        };
        ctx.spawn(
            async move {
                match sqlx::query("SELECT 1").execute(&pool).await {
                    Ok(_) => board.set(name, Health::Healthy),
                    Err(e) => board.set(
                        name,
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

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] (a [`Checkpoint::Background`] store).
fn checkpoint_in_background<A: SqliteActor>(ctx: &mut Context<A>) {
    ctx.run_interval(CHECKPOINT_INTERVAL, |act, ctx| {
        let core = act.core();
        let (Some(pool), name) = (core.pool.clone(), core.name) else {
            return;
        };
        ctx.spawn(
            async move {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(store = name, error = %e, "WAL checkpoint failed; retried in a second");
                }
            }
            .into_actor(act),
        );
    });
}

/// Marks the store down and closes the pool; call from `Actor::stopped`.
pub fn halt<A: SqliteActor>(act: &mut A) {
    let core = act.core();
    core.notifier.mark_stopped();
    core.board.set(
        core.name,
        Health::Unhealthy {
            reason: "stopped".into(),
        },
    );
    if let Some(pool) = core.pool.take() {
        actix::spawn(async move { pool.close().await });
    }
}
