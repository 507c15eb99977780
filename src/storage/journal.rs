//! Group commit for the write-ahead records — orders ([`SaveOrder`]) and deals ([`SaveDeal`]) — of the
//! relational stores (SQLite [`super::relational::Relational`], PostgreSQL [`super::postgres::PgRelational`]).
//!
//! # Why
//! An order is stored before it goes to the terminal, and a bridge frame is acknowledged only once what it
//! caused is stored, so a record's write sits on the trading path. One transaction per record paid one commit
//! per record (a WAL append and the write lock on SQLite, a flush to disk on PostgreSQL), and records that
//! arrive together — every strategy of a symbol deciding on the same bar, a frame of several deals, many
//! tenants at the top of a minute — queued behind each other's commits. Group commit lets them share one.
//!
//! # Design
//! The store actor owns a [`Journal`]: the records waiting, each with the channel its writer awaits. A
//! record that arrives while no commit is in flight starts one at once with everything waiting (up to
//! [`MAX_BATCH`]); records that arrive during that commit wait for it and ride the next one, which starts the
//! moment it ends. There is no timer: idle, a record costs one commit as before and never waits for company;
//! under load a batch holds what arrived during one commit, so commits per second stay bounded by the
//! database and records per commit grow with the load.
//!
//! SQLite runs one commit at a time (it has one writer: a second would wait for the first's lock).
//! PostgreSQL runs up to [`super::postgres::COMMITS_IN_FLIGHT`] at once, each taking everything waiting when
//! it starts: there a commit is mostly round trips, which parallel connections overlap, and the database
//! flushes concurrent commits together. With a single commit in flight, `trellis bench journal` measured
//! PostgreSQL below the per-record transactions it replaced (those ran on up to 8 connections at once).
//!
//! A batch is one transaction, and each writer is answered only after its commit: an answer still means
//! stored. The commit runs in a task of its own, not in the actor: if the actor stops, a commit in flight
//! still ends and answers its writers with the truth.
//!
//! # Failure isolation
//! A batch mixes tenants and records that have nothing to do with each other, and one must not fail the
//! others. When a batch fails on a record (a constraint, a bad value, a tenant whose lease was overtaken —
//! [`StorageError::Fenced`]) or at its commit, the transaction is rolled back and every record of it is
//! committed again in its own transaction, as before group commit, each writer getting its own result. When
//! the store cannot even open a transaction (the database is gone, the pool is closed), every record of the
//! batch gets that error — retryable, so the portfolio keeps the records queued and writes them again —
//! without trying each one (which would wait out the pool's acquire timeout once per record).
//!
//! # Shutdown
//! `Shutdown` is answered once nothing waits and nothing is in flight (bounded by [`DRAIN_TIMEOUT`]). A
//! record still waiting when the actor stops is answered `Unavailable`: never reported stored when it was not.
//!
//! # Metrics
//! The store actors reach the application's [`Metrics`] through their [`super::HealthBoard`] (one per
//! `Application`, no global): each commit adds one to `trellis_journal_commits_total{store}` and its records
//! to `trellis_journal_records_total{store}` (records per commit is their ratio) and observes
//! `trellis_journal_batch_records{store}`. A batch that failed and was committed one by one counts one
//! commit per record.
//!
//! # Invariants
//! - At most `max_in_flight` commits run at once (1 on SQLite); within a commit, records are written in the
//!   order they arrived. Records waiting together are independent — a portfolio writes its queue one record
//!   at a time, and only new orders (each its own row) are written beside it — so concurrent commits need no
//!   order between them, as the concurrent per-record transactions before them did not.
//! - Every record gets exactly one answer: its own result, the batch's store error, or `Unavailable` when the
//!   actor stopped first. A writer that went away (its caller gave up) is skipped, never a panic.
//!
//! Checked by the unit tests below, and end to end by `tests/api/journal.rs`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::relational::{SaveDeal, SaveOrder};
use super::StorageError;
use crate::metrics::Metrics;

/// The most records one commit takes; more wait for the next.
pub const MAX_BATCH: usize = 512;

/// How long `Shutdown` waits for the records in hand to be committed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A write-ahead record.
pub enum Record {
    Order(SaveOrder),
    Deal(SaveDeal),
}

impl Record {
    /// The tenant whose row-level-security scope the record is written in.
    pub fn tenant(&self) -> &str {
        match self {
            Self::Order(o) => &o.tenant,
            Self::Deal(d) => &d.tenant,
        }
    }

    /// The writer's lease token (cluster mode), checked before the record is written.
    pub fn fence(&self) -> Option<i64> {
        match self {
            Self::Order(o) => o.fence,
            Self::Deal(d) => d.fence,
        }
    }
}

/// Why a commit failed.
#[derive(Debug)]
pub enum Failure {
    /// No transaction could be opened: the store's fault, the same for every record.
    Store(StorageError),
    /// A record, or the commit, failed: the transaction was rolled back.
    Record(StorageError),
}

/// How one database writes records; implemented by each relational store.
pub trait Backend: Send + Sync + 'static {
    /// Writes every record in one transaction; whether each was new (a deal not stored before).
    fn commit_batch(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<Vec<bool>, Failure>> + Send;

    /// Writes one record in its own transaction; whether it was new.
    fn commit_one(&self, record: &Record) -> impl Future<Output = Result<bool, Failure>> + Send;
}

type Reply = oneshot::Sender<Result<bool, StorageError>>;

/// The records waiting for a commit, owned by a store actor.
pub struct Journal {
    store: &'static str,
    max_batch: usize,
    waiting: VecDeque<(Record, Reply)>,
    /// Commits running now, and how many may run at once.
    in_flight: usize,
    max_in_flight: usize,
    /// `Shutdown`s waiting for the journal to be empty.
    drained: Vec<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl Journal {
    /// An empty journal of store `store` (the metrics' label), committing up to [`MAX_BATCH`] records at once
    /// and running up to `max_in_flight` commits at a time (at least 1).
    pub fn new(store: &'static str, metrics: Arc<Metrics>, max_in_flight: usize) -> Self {
        Self {
            store,
            max_batch: MAX_BATCH,
            waiting: VecDeque::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            drained: Vec::new(),
            metrics,
        }
    }

    /// At most `max` records per commit (at least 1; 1 turns group commit off, for comparison).
    pub fn set_max_batch(&mut self, max: usize) {
        self.max_batch = max.clamp(1, MAX_BATCH);
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.waiting.is_empty()
    }

    /// Answers every record still waiting `Unavailable`; call from `Actor::stopped`.
    pub fn abandon(&mut self) {
        if !self.waiting.is_empty() {
            tracing::warn!(
                store = self.store,
                records = self.waiting.len(),
                "store stopped with records not committed: their writers are told to retry"
            );
        }
        for (_, reply) in self.waiting.drain(..) {
            // A writer that went away needs no answer.
            let _ = reply.send(Err(stopped()));
        }
    }
}

fn stopped() -> StorageError {
    StorageError::Unavailable("the store stopped before the record was committed".into())
}

/// A store actor with a [`Journal`].
pub trait Journaled: Actor<Context = Context<Self>> {
    type Backend: Backend;

    fn journal(&mut self) -> &mut Journal;

    /// What the next commit writes with, or why the store cannot write now.
    fn backend(&self) -> Result<Self::Backend, StorageError>;
}

/// Queues `record` and answers once it is committed (whether it was new), or why not.
pub fn submit<A: Journaled>(
    act: &mut A,
    ctx: &mut Context<A>,
    record: Record,
) -> impl Future<Output = Result<bool, StorageError>> + 'static {
    let (reply, answer) = oneshot::channel();
    act.journal().waiting.push_back((record, reply));
    next_commit(act, ctx);
    async move { answer.await.unwrap_or_else(|_| Err(stopped())) }
}

/// Resolves once nothing waits and nothing is in flight, or after [`DRAIN_TIMEOUT`].
pub fn drained<A: Journaled>(act: &mut A) -> impl Future<Output = ()> + 'static {
    let journal = act.journal();
    let store = journal.store;
    let done = if journal.idle() {
        None
    } else {
        let (tx, rx) = oneshot::channel();
        journal.drained.push(tx);
        Some(rx)
    };
    async move {
        let Some(done) = done else { return };
        if tokio::time::timeout(DRAIN_TIMEOUT, done).await.is_err() {
            tracing::error!(store, timeout = ?DRAIN_TIMEOUT, "records still uncommitted at shutdown");
        }
    }
}

/// Starts commits of what is waiting while fewer than `max_in_flight` run.
fn next_commit<A: Journaled>(act: &mut A, ctx: &mut Context<A>) {
    let journal = act.journal();
    if journal.idle() {
        for done in journal.drained.drain(..) {
            // A shutdown that gave up waiting needs no answer.
            let _ = done.send(());
        }
    }
    while act.journal().in_flight < act.journal().max_in_flight && !act.journal().waiting.is_empty()
    {
        start_commit(act, ctx);
    }
}

/// Starts one commit of everything waiting (up to `max_batch` records).
fn start_commit<A: Journaled>(act: &mut A, ctx: &mut Context<A>) {
    let backend = act.backend();
    let journal = act.journal();
    let n = journal.waiting.len().min(journal.max_batch);
    let (records, replies): (Vec<Record>, Vec<Reply>) = journal.waiting.drain(..n).unzip();
    journal.in_flight += 1;
    let (metrics, store) = (journal.metrics.clone(), journal.store);
    // A task of its own, so that a commit in flight ends (and answers) even if the actor stops meanwhile.
    let task = actix::spawn(async move {
        let results = match backend {
            Ok(backend) => commit(&backend, &records, &metrics, store).await,
            Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A writer that went away (its caller gave up) needs no answer.
            let _ = reply.send(result);
        }
    });
    ctx.spawn(task.into_actor(act).map(move |joined, act, ctx| {
        if let Err(e) = joined {
            // Its writers' channels were dropped with it: they are answered `Unavailable` and retry.
            tracing::error!(store, error = %e, "a group commit task failed");
        }
        let journal = act.journal();
        journal.in_flight = journal.in_flight.saturating_sub(1);
        next_commit(act, ctx);
    }));
}

/// Commits `records` in one transaction, or one by one when that fails on a record; one result per record.
pub async fn commit<B: Backend>(
    backend: &B,
    records: &[Record],
    metrics: &Metrics,
    store: &str,
) -> Vec<Result<bool, StorageError>> {
    if records.len() > 1 {
        match backend.commit_batch(records).await {
            Ok(new) if new.len() == records.len() => {
                metrics.journal_commit(store, records.len());
                return new.into_iter().map(Ok).collect();
            }
            Ok(new) => {
                // Cannot happen (a backend answers for each record); never answer a record wrongly.
                tracing::error!(
                    store,
                    records = records.len(),
                    answers = new.len(),
                    "group commit answered for the wrong number of records"
                );
                return records
                    .iter()
                    .map(|_| {
                        Err(StorageError::Unavailable(
                            "group commit lost track of its records".into(),
                        ))
                    })
                    .collect();
            }
            Err(Failure::Store(e)) => return records.iter().map(|_| Err(e.clone())).collect(),
            Err(Failure::Record(e)) => {
                tracing::warn!(store, records = records.len(), error = %e,
                    "group commit failed: committing its records one by one");
            }
        }
    }
    let mut results = Vec::with_capacity(records.len());
    let mut gone: Option<StorageError> = None;
    for record in records {
        if let Some(e) = &gone {
            results.push(Err(e.clone()));
            continue;
        }
        match backend.commit_one(record).await {
            Ok(new) => {
                metrics.journal_commit(store, 1);
                results.push(Ok(new));
            }
            Err(Failure::Store(e)) => {
                results.push(Err(e.clone()));
                gone = Some(e);
            }
            Err(Failure::Record(e)) => results.push(Err(e)),
        }
    }
    results
}

#[cfg(test)]
mod tests {
    //! The journal against a stub database that records what it was asked (no SQL here: the stores' own
    //! statements are tested end to end in `tests/api/journal.rs`).

    use std::sync::Mutex;

    use super::*;
    use crate::domain::orders::{Order, OrderKind, OrderStatus};

    /// What a stub commit does with a record of this tenant.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Fate {
        Stored,
        Refused,
        Fenced,
    }

    /// A call of the stub: `true` for a batch, with the tenants it carried.
    type Call = (bool, Vec<String>);

    #[derive(Clone, Default)]
    struct Stub {
        /// Tenants whose records fail, and how.
        fates: Arc<Mutex<Vec<(String, Fate)>>>,
        /// The store cannot open a transaction.
        gone: bool,
        /// Each call: `true` for a batch, with the tenants it carried.
        calls: Arc<Mutex<Vec<Call>>>,
        /// Holds each commit until released (to let records pile up behind it).
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl Stub {
        fn fate(&self, record: &Record) -> Fate {
            self.fates
                .lock()
                .map(|f| {
                    f.iter()
                        .find(|(t, _)| t == record.tenant())
                        .map(|(_, fate)| *fate)
                        .unwrap_or(Fate::Stored)
                })
                .unwrap_or(Fate::Stored)
        }

        fn error(fate: Fate) -> Result<bool, Failure> {
            match fate {
                Fate::Stored => Ok(true),
                Fate::Refused => Err(Failure::Record(StorageError::Rejected("bad".into()))),
                Fate::Fenced => Err(Failure::Record(StorageError::Fenced("overtaken".into()))),
            }
        }

        async fn wait(&self) {
            if let Some(gate) = &self.gate {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
            }
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
    }

    impl Backend for Stub {
        async fn commit_batch(&self, records: &[Record]) -> Result<Vec<bool>, Failure> {
            self.wait().await;
            self.calls.lock().expect("calls").push((
                true,
                records.iter().map(|r| r.tenant().to_owned()).collect(),
            ));
            if self.gone {
                return Err(Failure::Store(StorageError::Unavailable("gone".into())));
            }
            records.iter().map(|r| Self::error(self.fate(r))).collect()
        }

        async fn commit_one(&self, record: &Record) -> Result<bool, Failure> {
            self.wait().await;
            self.calls
                .lock()
                .expect("calls")
                .push((false, vec![record.tenant().to_owned()]));
            if self.gone {
                return Err(Failure::Store(StorageError::Unavailable("gone".into())));
            }
            Self::error(self.fate(record))
        }
    }

    fn order(tenant: &str, n: u64) -> Record {
        Record::Order(SaveOrder {
            tenant: tenant.into(),
            seq: n,
            order: Order {
                client_order_id: format!("c-{n}"),
                account: crate::domain::Login::new(1),
                strategy_id: None,
                symbol: crate::domain::Symbol::new("EURUSD"),
                side: crate::domain::Side::Buy,
                kind: OrderKind::Market,
                volume: rust_decimal::Decimal::ONE,
                price: None,
                status: OrderStatus::Sent,
                filled_volume: rust_decimal::Decimal::ZERO,
                avg_price: None,
                retcode: None,
                broker_order: None,
                reason: None,
                created_ms: 0,
                updated_ms: 0,
            },
            fence: Some(1),
        })
    }

    fn kind(r: &Result<bool, StorageError>) -> &'static str {
        match r {
            Ok(_) => "stored",
            Err(StorageError::Unavailable(_)) => "unavailable",
            Err(StorageError::Rejected(_)) => "rejected",
            Err(StorageError::Fenced(_)) => "fenced",
        }
    }

    #[actix_rt::test]
    async fn one_refused_record_fails_only_itself_and_a_store_that_is_gone_fails_every_record() {
        struct Case {
            name: &'static str,
            fates: Vec<(&'static str, Fate)>,
            gone: bool,
            expected: [&'static str; 3],
            commits: u64,
        }
        let cases = [
            Case {
                name: "all good: one commit",
                fates: vec![],
                gone: false,
                expected: ["stored", "stored", "stored"],
                commits: 1,
            },
            Case {
                name: "b's lease was overtaken",
                fates: vec![("b", Fate::Fenced)],
                gone: false,
                expected: ["stored", "fenced", "stored"],
                commits: 2,
            },
            Case {
                name: "c's record breaks a constraint",
                fates: vec![("c", Fate::Refused)],
                gone: false,
                expected: ["stored", "stored", "rejected"],
                commits: 2,
            },
            Case {
                name: "the database is gone",
                fates: vec![],
                gone: true,
                expected: ["unavailable", "unavailable", "unavailable"],
                commits: 0,
            },
        ];
        for case in cases {
            let stub = Stub {
                fates: Arc::new(Mutex::new(
                    case.fates
                        .iter()
                        .map(|(t, f)| (t.to_string(), *f))
                        .collect(),
                )),
                gone: case.gone,
                ..Stub::default()
            };
            let metrics = Metrics::new();
            let records = [order("a", 1), order("b", 2), order("c", 3)];
            let results = commit(&stub, &records, &metrics, "test").await;
            let kinds: Vec<&str> = results.iter().map(kind).collect();
            assert_eq!(kinds, case.expected, "{}", case.name);
            let text = metrics.render();
            let commits = text
                .lines()
                .find(|l| l.starts_with("trellis_journal_commits_total"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0);
            assert_eq!(commits, case.commits, "{}: {text}", case.name);
            if case.gone {
                assert_eq!(
                    stub.calls().len(),
                    1,
                    "no record tried alone when the store is gone"
                );
            }
        }
    }

    /// A store actor over the stub.
    struct Store {
        journal: Journal,
        stub: Stub,
    }

    impl Actor for Store {
        type Context = Context<Self>;

        fn stopped(&mut self, _ctx: &mut Self::Context) {
            self.journal.abandon();
        }
    }

    impl Journaled for Store {
        type Backend = Stub;

        fn journal(&mut self) -> &mut Journal {
            &mut self.journal
        }

        fn backend(&self) -> Result<Stub, StorageError> {
            Ok(self.stub.clone())
        }
    }

    #[derive(Message)]
    #[rtype(result = "Result<bool, StorageError>")]
    struct Put(String);

    impl Handler<Put> for Store {
        type Result = ResponseFuture<Result<bool, StorageError>>;

        fn handle(&mut self, msg: Put, ctx: &mut Self::Context) -> Self::Result {
            Box::pin(submit(self, ctx, order(&msg.0, 0)))
        }
    }

    #[actix_rt::test]
    async fn the_first_record_commits_alone_at_once_and_those_arriving_meanwhile_share_the_next_commit(
    ) {
        // Arrange: commits wait for the gate.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let stub = Stub {
            gate: Some(gate.clone()),
            ..Stub::default()
        };
        let store = Store {
            journal: Journal::new("test", Arc::new(Metrics::new()), 1),
            stub: stub.clone(),
        }
        .start();

        // Act: one record, then five while its commit is held.
        let first = store.send(Put("t0".into()));
        let first = actix_rt::spawn(first);
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        let rest: Vec<_> = (1..=5)
            .map(|i| actix_rt::spawn(store.send(Put(format!("t{i}")))))
            .collect();
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(2);
        let first = first.await.expect("joined").expect("delivered");
        let mut others = Vec::new();
        for r in rest {
            others.push(r.await.expect("joined").expect("delivered"));
        }

        // Assert
        assert!(matches!(first, Ok(true)));
        assert!(others.iter().all(|r| matches!(r, Ok(true))), "{others:?}");
        assert_eq!(
            stub.calls(),
            vec![
                (false, vec!["t0".to_owned()]),
                (true, (1..=5).map(|i| format!("t{i}")).collect()),
            ]
        );
    }

    #[actix_rt::test]
    async fn with_two_commits_allowed_the_second_record_does_not_wait_for_the_first() {
        // Arrange: commits wait for the gate; two may run at once.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let stub = Stub {
            gate: Some(gate.clone()),
            ..Stub::default()
        };
        let store = Store {
            journal: Journal::new("test", Arc::new(Metrics::new()), 2),
            stub: stub.clone(),
        }
        .start();

        // Act: two records start a commit each; three more wait for a free one.
        let sent: Vec<_> = (0..5)
            .map(|i| actix_rt::spawn(store.send(Put(format!("t{i}")))))
            .collect();
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(1);
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(2);
        for s in sent {
            assert!(matches!(s.await.expect("joined"), Ok(Ok(true))));
        }

        // Assert: the first two alone, the other three together in the slot freed first.
        let calls = stub.calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(
            calls[..2].iter().filter(|(batch, _)| !batch).count(),
            2,
            "{calls:?}"
        );
        assert_eq!(
            calls[2],
            (
                true,
                vec!["t2".to_owned(), "t3".to_owned(), "t4".to_owned()]
            )
        );
    }

    #[actix_rt::test]
    async fn a_writer_that_went_away_does_not_stop_the_journal_and_shutdown_waits_for_the_commit() {
        // Arrange
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let stub = Stub {
            gate: Some(gate.clone()),
            ..Stub::default()
        };
        let store = Store {
            journal: Journal::new("test", Arc::new(Metrics::new()), 1),
            stub: stub.clone(),
        }
        .start();

        // Act: a writer drops its answer while its record is being committed; another writes after it.
        store.send(Forget("gone".into())).await.expect("delivered");
        let later = actix_rt::spawn(store.send(Put("later".into())));
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        let drained = {
            let store = store.clone();
            actix_rt::spawn(async move {
                store.send(Drain).await.expect("delivered");
            })
        };
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !drained.is_finished(),
            "shutdown waits for the records in hand"
        );
        gate.add_permits(2);

        // Assert
        assert!(matches!(later.await.expect("joined"), Ok(Ok(true))));
        drained.await.expect("drained");
        assert_eq!(stub.calls().len(), 2);
    }

    /// Submits a record and drops the answer at once: a writer that went away.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Forget(String);

    impl Handler<Forget> for Store {
        type Result = ();

        fn handle(&mut self, msg: Forget, ctx: &mut Self::Context) {
            drop(submit(self, ctx, order(&msg.0, 0)));
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Drain;

    impl Handler<Drain> for Store {
        type Result = ResponseFuture<()>;

        fn handle(&mut self, _msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
            Box::pin(drained(self))
        }
    }
}
