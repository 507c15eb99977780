//! Group commit of orders and deals (`storage::journal`) under a burst: six strategies deciding on the same
//! bars, every order written before it is sent. Checked against the simulated terminal's own deals: every
//! order it executed is stored once, and nothing is lost or repeated when trellis is SIGKILLed in the middle
//! of the burst, again and again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use trellis::domain::positions::RECONCILIATION_TICKET_BASE;
use trellis::domain::tenant::{StrategySettings, TenantSettings};
use trellis::domain::Bar;
use trellis::sim::node::{trading_config, Stop};
use trellis::strategies::{ParamError, Params, Strategy};

use crate::helpers::{p, spawn_app, tenant, tick, wait_for, TestApp, MINUTE, T0};
use crate::restart::{assert_each_order_executed_once, stored_positions, tail, Rig, KEY, SYMBOLS};

const LOGIN: u64 = 7001;

/// Wants the opposite position on every bar (from long): one order per bar.
struct Flip {
    long: bool,
    volume: Decimal,
}

impl Strategy for Flip {
    fn on_bar(&mut self, _bar: &Bar) -> Option<Decimal> {
        self.long = !self.long;
        Some(if self.long { self.volume } else { -self.volume })
    }

    fn warm_up_bars(&self) -> usize {
        0
    }
}

fn flip(_: &Params, volume: Decimal) -> Result<Box<dyn Strategy>, ParamError> {
    Ok(Box::new(Flip {
        long: false,
        volume,
    }))
}

/// Tenant `acme` with two `flip` strategies on each of the three symbols: six orders on every bar.
fn burst_tenant() -> TenantSettings {
    let mut t = tenant("acme", KEY);
    t.symbols = SYMBOLS.iter().map(|s| s.to_string()).collect();
    t.strategies = SYMBOLS
        .iter()
        .flat_map(|s| {
            ["a", "b"].map(|x| StrategySettings {
                id: format!("flip-{x}-{}", s.to_lowercase()),
                kind: "flip".into(),
                symbol: s.to_string(),
                timeframe: "M1".into(),
                volume: p("0.1"),
                account: None,
                params: Default::default(),
                enabled: true,
                on_failure: Default::default(),
                model: None,
            })
        })
        .collect();
    t
}

/// Rows of `sql` from the app's relational store (SQLite, or PostgreSQL as its owner, past row-level security).
async fn rows<T>(app: &TestApp, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    let owner = app
        .store_vars
        .iter()
        .find(|(k, _)| k == "TRELLIS__STORAGE__POSTGRES_MIGRATE_URL")
        .map(|(_, v)| v.clone());
    match owner {
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.expect("rows");
            pool.close().await;
            rows
        }
        None => {
            let path = app.data_dir.path().join("relational.db");
            let url = format!("sqlite://{}?mode=ro", path.display());
            let pool = sqlx::SqlitePool::connect(&url).await.expect("SQLite");
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.expect("rows");
            pool.close().await;
            rows
        }
    }
}

/// The sum of a metric's samples (every label set) in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_rt::test]
async fn a_burst_of_orders_from_six_strategies_is_stored_exactly_once_and_orders_arriving_together_share_a_commit(
) {
    // Arrange: six strategies over three symbols, each wanting the opposite position on every bar.
    let app = spawn_app().await;
    app.runtime.strategies.register("flip", flip);
    app.add_tenant(burst_tenant()).await;
    let sim = app.sim(KEY, LOGIN).await;
    let deals = || sim.broker.lock().map(|b| b.deals().len()).unwrap_or(0);

    // Act: 25 minutes; each minute's ticks close a bar on every symbol, and six orders go out at once.
    const MINUTES: i64 = 25;
    for m in 0..=MINUTES {
        for (i, symbol) in SYMBOLS.iter().enumerate() {
            let (bid, ask) = match *symbol {
                "USDJPY" => (format!("150.{:03}", 100 + m), format!("150.{:03}", 102 + m)),
                _ => (format!("1.1{:03}", 100 + m), format!("1.1{:03}", 102 + m)),
            };
            sim.tick(tick(symbol, T0 + m * MINUTE + i as i64, &bid, &ask));
        }
        if m > 0 {
            let want = 6 * m as usize;
            wait_for("the bar's six orders to be executed", || deals() >= want).await;
        }
    }
    let executed = deals();
    let terminal: Vec<(i64, String)> = {
        let broker = sim.broker.lock().expect("broker");
        broker
            .deals()
            .iter()
            .map(|d| {
                (
                    d.ticket as i64,
                    d.client_order_id.clone().expect("a trellis order"),
                )
            })
            .collect()
    };
    let mut stored: Vec<(i64,)> = Vec::new();
    for _ in 0..200 {
        stored = rows(
            &app,
            "SELECT deal_ticket FROM fills WHERE tenant_id = 'acme' ORDER BY deal_ticket",
        )
        .await;
        if stored.len() >= terminal.len() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let orders: Vec<(String, String)> = rows(
        &app,
        "SELECT client_order_id, status FROM orders WHERE tenant_id = 'acme'",
    )
    .await;
    let (_, text) = app.get_text("/metrics").await;
    sim.stop().await.expect("sim stops");
    app.shutdown().await;

    // Assert: the terminal's deals, ticket for ticket, and each executed order stored once, as filled.
    assert_eq!(
        executed,
        6 * MINUTES as usize,
        "one order per strategy and bar"
    );
    let mut tickets: Vec<i64> = terminal.iter().map(|(t, _)| *t).collect();
    tickets.sort();
    let stored: Vec<i64> = stored.into_iter().map(|(t,)| t).collect();
    assert_eq!(stored, tickets, "stored fills equal the terminal's deals");
    let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, status) in &orders {
        by_id.entry(id).or_default().push(status);
    }
    for (_, id) in &terminal {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(&vec!["filled"]),
            "order {id} stored once, filled"
        );
    }
    let commits = metric(&text, "trellis_journal_commits_total");
    let records = metric(&text, "trellis_journal_records_total");
    let singles = text
        .lines()
        .find(|l| l.starts_with("trellis_journal_batch_records_bucket") && l.contains("le=\"1.0\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    eprintln!(
        "burst: {executed} orders and deals; {records} records in {commits} commits ({:.2} per commit, {} commits of one)",
        records / commits.max(1.0),
        singles
    );
    assert!(
        records >= (2 * executed) as f64,
        "every order (sent, then filled) and deal went through the journal: {records} records"
    );
    assert!(
        commits < records && singles < commits,
        "at least one commit carried more than one record:\n{text}"
    );
}

#[actix_rt::test]
async fn sigkills_in_the_middle_of_a_burst_of_orders_lose_no_deal_and_repeat_none() {
    // Arrange: two ema_cross 2/3 on each symbol, deciding alike: every cross sends two orders at once, and the
    // three symbols' bars close within milliseconds of each other.
    let mut config = trading_config(KEY, &SYMBOLS);
    for s in SYMBOLS {
        config.push_str(&format!(
            "\n[[tenants.strategies]]\nid = \"ema-b-{}\"\nkind = \"ema_cross\"\nsymbol = \"{s}\"\n\
             timeframe = \"M1\"\nvolume = 0.1\nparams = {{ fast = 2, slow = 3 }}\n",
            s.to_lowercase()
        ));
    }
    let (mut rig, mut node) = Rig::start_with(&config).await;
    assert!(
        rig.wait_deals_above(2, Duration::from_secs(20))
            .await
            .is_some(),
        "no trading before the kills:\n{}",
        tail(&rig.spec.log)
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(29_002);
    let client = awc::Client::default();
    let mut batched = Vec::new();

    // Act: eight kills, every other one as a deal comes back (its fill and the next orders in flight).
    const KILLS: usize = 8;
    for k in 0..KILLS {
        if k % 2 == 0 {
            let n = rig.deals();
            rig.wait_deals_above(n, Duration::from_secs(10)).await;
        } else {
            actix_rt::time::sleep(Duration::from_millis(rng.gen_range(50..600))).await;
        }
        if let Ok(mut resp) = client
            .get(format!("{}/metrics", rig.spec.url()))
            .send()
            .await
        {
            let text = resp.body().await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            batched.push((
                metric(&text, "trellis_journal_records_total"),
                metric(&text, "trellis_journal_commits_total"),
            ));
        }
        node.stop(Stop::Kill, Duration::from_secs(10))
            .await
            .expect("killed");
        let before = rig.deals();
        node = rig.spec.start().expect("trellis starts again");
        node.wait_ready(&rig.spec, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&rig.spec.log)));
        rig.wait_deals_above(before, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| {
                panic!("no order executed after kill {k}:\n{}", tail(&rig.spec.log))
            });
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    rig.stop_feed();
    // Ticks already on their way still close bars (later on a loaded machine): compare once the terminal has
    // made no deal for a while, so its positions are read at the same moment as the store.
    wait_quiet(&rig, Duration::from_millis(1_500), Duration::from_secs(20)).await;
    let (stored, terminal) = rig
        .wait_stored_equals_terminal(Duration::from_secs(20))
        .await;
    let positions = rig.terminal_positions();
    node.stop(Stop::Term, Duration::from_secs(15))
        .await
        .expect("trellis stops");

    // Assert
    let trades: Vec<i64> = stored
        .iter()
        .map(|f| f.deal_ticket)
        .filter(|t| (*t as u64) < RECONCILIATION_TICKET_BASE)
        .collect();
    let unique: HashSet<i64> = trades.iter().copied().collect();
    eprintln!(
        "burst kill loop: {KILLS} kills, {} terminal deals, {} stored; (records, commits) before each kill {batched:?}",
        terminal.len(),
        trades.len()
    );
    assert_eq!(unique.len(), trades.len(), "no deal stored twice");
    assert_eq!(
        trades, terminal,
        "every terminal deal stored exactly once, nothing else"
    );
    assert_eq!(
        stored.len(),
        trades.len(),
        "nothing was lost, so nothing had to be adopted"
    );
    assert_eq!(stored_positions(&stored), positions);
    assert_each_order_executed_once(&rig.sim);
}

/// Waits until the terminal has made no deal for `quiet` (at most `timeout`).
async fn wait_quiet(rig: &Rig, quiet: Duration, timeout: Duration) {
    let start = std::time::Instant::now();
    let (mut last, mut since) = (rig.deals(), std::time::Instant::now());
    while since.elapsed() < quiet && start.elapsed() < timeout {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let n = rig.deals();
        if n != last {
            (last, since) = (n, std::time::Instant::now());
        }
    }
}

// ---- the store actors alone -----------------------------------------------------------------------------

use std::sync::Arc;

use actix::Actor;
use trellis::domain::orders::{Order, OrderKind, OrderStatus};
use trellis::domain::positions::{Deal, DealEntry, Fill};
use trellis::domain::{Login, Side, Symbol};
use trellis::metrics::Metrics;
use trellis::runtime::supervisor::ExitNotifier;
use trellis::storage::postgres::PgRelational;
use trellis::storage::relational::{EnsureTenant, Relational, SaveDeal, SaveOrder};
use trellis::storage::{HealthBoard, RelationalStore, StorageError, StoreSlot};

/// The relational store actor of this profile, started alone (no application) with its own metrics; and the
/// PostgreSQL URLs in the real profile.
struct LoneStore {
    store: RelationalStore,
    metrics: Arc<Metrics>,
    /// The PostgreSQL owner's and application role's URLs in the real profile.
    pg: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl LoneStore {
    async fn start(tenants: &[&str]) -> Self {
        let metrics = Arc::new(Metrics::new());
        let board = HealthBoard::new(metrics.clone());
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, pg) = if crate::helpers::real_profile() {
            let admin = std::env::var("TRELLIS_TEST_POSTGRES_URL")
                .expect("TRELLIS_TEST_POSTGRES_URL (scripts/test.sh sets it)");
            let (_, owner, app) = crate::helpers::new_pg_database(&admin, "journal").await;
            trellis::storage::postgres::migrate(&owner)
                .await
                .expect("migrations apply");
            let slot = StoreSlot::<PgRelational>::default();
            slot.set(
                PgRelational::new(app.clone(), board, ExitNotifier::detached("journal")).start(),
            );
            (RelationalStore::Postgres(slot), Some((owner, app)))
        } else {
            let slot = StoreSlot::<Relational>::default();
            slot.set(
                Relational::new(
                    dir.path().to_path_buf(),
                    board,
                    ExitNotifier::detached("journal"),
                )
                .start(),
            );
            (RelationalStore::Embedded(slot), None)
        };
        for t in tenants {
            store
                .ensure_tenant(EnsureTenant {
                    id: t.to_string(),
                    name: t.to_string(),
                    tier: "professional".into(),
                })
                .await
                .expect("tenant stored");
        }
        Self {
            store,
            metrics,
            pg,
            dir,
        }
    }
}

fn sent_order(tenant: &str, n: u64, fence: Option<i64>) -> SaveOrder {
    SaveOrder {
        tenant: tenant.into(),
        seq: n,
        order: Order {
            client_order_id: format!("s-{n}"),
            account: Login::new(LOGIN),
            strategy_id: Some("s".into()),
            symbol: Symbol::new("EURUSD"),
            side: Side::Buy,
            kind: OrderKind::Market,
            volume: p("0.1").get(),
            price: None,
            status: OrderStatus::Sent,
            filled_volume: Decimal::ZERO,
            avg_price: None,
            retcode: None,
            broker_order: None,
            reason: None,
            created_ms: T0 + n as i64,
            updated_ms: T0 + n as i64,
        },
        fence,
    }
}

fn deal(tenant: &str, ticket: u64) -> SaveDeal {
    SaveDeal {
        tenant: tenant.into(),
        deal: Deal {
            account: Login::new(LOGIN),
            ticket,
            order: ticket,
            client_order_id: Some(format!("s-{ticket}")),
            strategy_id: Some("s".into()),
            fill: Fill {
                symbol: Symbol::new("EURUSD"),
                side: Side::Buy,
                volume: p("0.1").get(),
                price: "1.1".parse().expect("price"),
                position_id: ticket,
                entry: DealEntry::In,
                commission: Decimal::ZERO,
                time_msc: T0,
            },
            swap: Decimal::ZERO,
            profit: Decimal::ZERO,
        },
        fence: None,
    }
}

#[actix_rt::test]
async fn orders_and_deals_sent_together_share_commits_and_a_deal_repeated_in_the_burst_is_new_only_once(
) {
    // Arrange
    let lone = LoneStore::start(&["acme"]).await;
    let store = &lone.store;

    // Act: 60 orders and three deals (ticket 7 twice) at once, as 63 writers would send them.
    let orders = (1..=60).map(|n| store.save_order(sent_order("acme", n, None)));
    let orders = futures_util::future::join_all(orders);
    let deals = futures_util::future::join_all([
        store.save_deal(deal("acme", 7)),
        store.save_deal(deal("acme", 8)),
        store.save_deal(deal("acme", 7)),
    ]);
    let (orders, deals) = futures_util::future::join(orders, deals).await;

    // Assert
    assert!(orders.iter().all(Result::is_ok), "{orders:?}");
    let deals: Vec<bool> = deals.into_iter().map(|d| d.expect("deal stored")).collect();
    assert_eq!(deals, [true, true, false], "ticket 7 is new once");
    let book = store
        .load_book(trellis::storage::relational::LoadTenantBook {
            tenant: "acme".into(),
        })
        .await
        .expect("book");
    assert_eq!(book.orders.len(), 60);
    assert_eq!(book.deals.len(), 2);
    let text = lone.metrics.render();
    let (commits, records) = (
        metric(&text, "trellis_journal_commits_total"),
        metric(&text, "trellis_journal_records_total"),
    );
    assert_eq!(records, 63.0, "{text}");
    assert!(
        commits < 63.0,
        "records sent together share commits: {text}"
    );
}

#[actix_rt::test]
async fn in_one_group_commit_a_fenced_tenant_and_a_refused_order_fail_alone_and_every_other_order_is_stored(
) {
    // Arrange: PostgreSQL (fencing and foreign keys are the database's); `other`'s lease was taken over.
    if crate::helpers::service_url("TRELLIS_TEST_POSTGRES_URL").is_none() {
        return;
    }
    let lone = LoneStore::start(&["acme", "other"]).await;
    let (owner, app) = lone.pg.clone().expect("PostgreSQL");
    let leases = trellis::storage::lease::LeaseStore::new(
        sqlx::PgPool::connect(&app)
            .await
            .expect("the application role"),
    );
    let ttl = Duration::from_secs(60);
    let acme = leases
        .acquire("acme", "node-a", ttl)
        .await
        .expect("store")
        .expect("acme's lease");
    let old = leases
        .acquire("other", "node-a", Duration::from_millis(100))
        .await
        .expect("store")
        .expect("other's lease");
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    leases
        .acquire("other", "node-b", ttl)
        .await
        .expect("store")
        .expect("taken over");

    // Act: acme's orders, with one of `other` (old token), one of a tenant that does not exist and one whose
    // text PostgreSQL cannot hold, all at once.
    let mut batch: Vec<(&str, SaveOrder)> = (1..=20)
        .map(|n| ("stored", sent_order("acme", n, Some(acme.token))))
        .collect();
    batch.insert(5, ("fenced", sent_order("other", 100, Some(old.token))));
    batch.insert(10, ("rejected", sent_order("ghost", 101, None)));
    let mut nul = sent_order("acme", 102, Some(acme.token));
    nul.order.reason = Some("a NUL \0 here".into());
    batch.insert(15, ("rejected", nul));
    let expected: Vec<&str> = batch.iter().map(|(e, _)| *e).collect();
    let results = futures_util::future::join_all(
        batch.into_iter().map(|(_, msg)| lone.store.save_order(msg)),
    )
    .await;

    // Assert
    let got: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "stored",
            Err(StorageError::Fenced(_)) => "fenced",
            Err(StorageError::Rejected(_)) => "rejected",
            Err(StorageError::Unavailable(_)) => "unavailable",
        })
        .collect();
    assert_eq!(got, expected, "{results:?}");
    let pool = sqlx::PgPool::connect(&owner).await.expect("owner");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant_id, client_order_id FROM orders ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("orders");
    pool.close().await;
    assert_eq!(
        stored,
        (1..=20)
            .map(|n| ("acme".to_owned(), format!("s-{n}")))
            .collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn the_embedded_store_copies_committed_orders_into_its_database_file_beside_the_commits() {
    // Arrange: the embedded store checkpoints its WAL off the write path (`storage::sqlite::Checkpoint`).
    if crate::helpers::real_profile() {
        eprintln!("skipped in the real-profile pass: the embedded store's WAL");
        return;
    }
    let lone = LoneStore::start(&["acme"]).await;

    // Act
    let orders = (1..=30).map(|n| lone.store.save_order(sent_order("acme", n, None)));
    for stored in futures_util::future::join_all(orders).await {
        stored.expect("stored");
    }

    // Assert: the database file alone (`immutable`: the WAL is not read) comes to hold them.
    let url = format!(
        "sqlite://{}?immutable=true",
        lone.dir.path().join("relational.db").display()
    );
    let mut in_file = 0;
    for _ in 0..50 {
        let pool = sqlx::SqlitePool::connect(&url).await.expect("SQLite");
        // Before the first checkpoint the file does not even have the tables (the migrations are in the WAL).
        (in_file,) = sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap_or((0,));
        pool.close().await;
        if in_file == 30 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        in_file, 30,
        "the WAL was checkpointed into the database file"
    );
}
