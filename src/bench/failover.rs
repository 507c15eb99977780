//! `trellis bench failover`: how long a dead node's tenants stop trading, and what a node costs per tenant.
//!
//! Three `trellis serve` children (this binary) in cluster mode share a fresh PostgreSQL database; six
//! tenants trade through simulated terminals that know every node's URL. Ten times, the node holding the
//! most tenants is SIGKILLed; each of its tenants' failover time is the time from the kill to its terminal
//! executing the next order (lease expiry, takeover, start from the store, the bridge failing over and being
//! admitted, reconciliation, the strategy's next signal). The killed node is started again and takes its
//! share back by graceful hand-off before the next kill. Needs PostgreSQL: `eval "$(scripts/services.sh)"`
//! sets `TRELLIS_TEST_POSTGRES_URL` (a superuser URL; a database is created per run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::{percentile, rss_of};
use crate::sim::feed::{pace, RandomWalk};
use crate::sim::node::{Node, NodeSpec, Stop};
use crate::sim::{SimConfig, SimHandle};

const NODES: usize = 3;
const TENANTS: usize = 6;
const KILLS: usize = 10;
const LEASE_MS: u64 = 3_000;
const RENEW_MS: u64 = 500;

pub async fn run() -> anyhow::Result<()> {
    let admin = std::env::var("TRELLIS_TEST_POSTGRES_URL").context(
        "TRELLIS_TEST_POSTGRES_URL: a PostgreSQL superuser URL (run `eval \"$(scripts/services.sh)\"` first)",
    )?;
    let dir = std::env::temp_dir().join(format!(
        "trellis-bench-failover-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&admin, &dir).await;
    if result.is_err() {
        eprintln!("node logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// A fresh database; answers (owner URL, application role URL).
pub(super) async fn database(admin: &str) -> anyhow::Result<(String, String)> {
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    let (base, _) = admin
        .rsplit_once('/')
        .context("a PostgreSQL URL with a database")?;
    let host = base
        .rsplit_once('@')
        .map(|(_, h)| h)
        .context("a PostgreSQL URL with a user")?;
    Ok((
        format!("{base}/{name}"),
        format!("postgres://trellis_app@{host}/{name}"),
    ))
}

async fn bench(admin: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let (owner_url, app_url) = database(admin).await?;
    let keys: Vec<(String, String)> = (0..TENANTS)
        .map(|i| {
            let id = format!("bench-{i}");
            let key = format!("trk_{id}_failover-secret-key");
            (id, key)
        })
        .collect();
    let toml = crate::sim::node::eurusd_tenants_config(&keys);
    let config = dir.join("trellis.toml");
    std::fs::write(&config, toml)?;
    let mut env: Vec<(String, String)> = [
        ("TRELLIS__LOG__LEVEL", "warn".to_owned()),
        ("TRELLIS__STORAGE__POSTGRES_MIGRATE_URL", owner_url.clone()),
        ("TRELLIS__STORAGE__POSTGRES_URL", app_url.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(crate::sim::node::cluster_env(LEASE_MS, RENEW_MS));
    let binary = std::env::current_exe().context("the trellis binary")?;
    let mut specs = Vec::new();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for i in 0..NODES {
        let mut env = env.clone();
        env.push(("TRELLIS__CLUSTER__NODE_ID".into(), format!("node-{i}")));
        let spec = NodeSpec {
            binary: binary.clone(),
            config: config.clone(),
            data_dir: dir.join(format!("data-{i}")),
            port: std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            env,
            log: dir.join(format!("node-{i}.log")),
        };
        let mut node = spec.start()?;
        node.wait_ready(&spec, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
        specs.push(spec);
        nodes.push(Some(node));
    }
    let pool = sqlx::PgPool::connect(&owner_url).await?;
    balanced(&pool, NODES).await?;
    let urls: Vec<String> = specs.iter().map(|s| s.ws_url()).collect();
    let mut sims: Vec<SimHandle> = Vec::new();
    let mut feeds = Vec::new();
    for (i, (_, key)) in keys.iter().enumerate() {
        let mut cfg = SimConfig::new(urls[i % NODES].clone(), key.clone(), 9_100 + i as u64);
        cfg.fallback_urls = urls.clone();
        cfg.heartbeat_ms = 200;
        cfg.silence_ms = 1_500;
        let sim = crate::sim::spawn(cfg);
        let feeder = sim.feeder();
        let walk = RandomWalk::new(
            RandomWalk::default_symbols(&["EURUSD".to_owned()]),
            1_700_000_040_000,
            15_000,
            40 + i as u64,
        )
        .with_steps(8, 2);
        feeds.push(actix_rt::spawn(
            async move { pace(&feeder, walk, 40).await },
        ));
        sims.push(sim);
    }
    let deals =
        |sims: &[SimHandle], i: usize| sims[i].broker.lock().map(|b| b.deals().len()).unwrap_or(0);
    let start = Instant::now();
    while (0..TENANTS).any(|i| deals(&sims, i) == 0) {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("not every tenant traded within a minute");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = Vec::new();
    let mut per_kill = Vec::new();
    for round in 0..KILLS {
        let leases = owners(&pool).await?;
        let mut held: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (tenant, node) in &leases {
            if let Some(i) = keys.iter().position(|(id, _)| id == tenant) {
                held.entry(node.clone()).or_default().push(i);
            }
        }
        let (victim, tenants) = held
            .into_iter()
            .max_by_key(|(_, t)| t.len())
            .context("no node owns a tenant")?;
        let index: usize = victim.trim_start_matches("node-").parse()?;
        let floors: Vec<usize> = tenants.iter().map(|i| deals(&sims, *i)).collect();
        let killed = Instant::now();
        if let Some(mut node) = nodes[index].take() {
            node.stop(Stop::Kill, Duration::from_secs(5)).await?;
        }
        let mut worst = Duration::ZERO;
        for (i, floor) in tenants.iter().zip(floors) {
            while deals(&sims, *i) <= floor {
                if killed.elapsed() > Duration::from_secs(60) {
                    bail!("kill {round}: tenant bench-{i} did not trade again within a minute");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let took = killed.elapsed();
            samples.push(took);
            worst = worst.max(took);
        }
        per_kill.push(worst);
        // The node comes back and takes its share again (graceful hand-off) before the next kill.
        let mut node = specs[index].start()?;
        node.wait_ready(&specs[index], Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
        nodes[index] = Some(node);
        balanced(&pool, NODES).await?;
    }
    let rss: Vec<(usize, f64)> = {
        let leases = owners(&pool).await?;
        nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.as_ref()?;
                let held = leases
                    .values()
                    .filter(|node| **node == format!("node-{i}"))
                    .count();
                Some((held, rss_of(n.pid())?))
            })
            .collect()
    };
    for f in feeds {
        f.abort();
    }
    for sim in sims {
        let _ = sim.stop().await;
    }
    for node in nodes.iter_mut().flatten() {
        let _ = node.stop(Stop::Term, Duration::from_secs(15)).await;
    }
    let (plain, fenced) = fence_cost(&pool, &app_url).await?;
    pool.close().await;
    samples.sort();
    per_kill.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    println!(
        "failover: {KILLS} SIGKILLs of the busiest of {NODES} nodes ({TENANTS} tenants, lease {LEASE_MS} ms, renew {RENEW_MS} ms); \
         kill → first order executed on the new owner, per tenant: p50 {} max {} ({} samples); per kill (its slowest tenant): p50 {} max {}",
        ms(percentile(&samples, 0.5)),
        ms(samples.last().copied().unwrap_or_default()),
        samples.len(),
        ms(percentile(&per_kill, 0.5)),
        ms(per_kill.last().copied().unwrap_or_default()),
    );
    for (held, mb) in rss {
        println!("failover: a node holding {held} tenants: RSS {mb:.0} MB");
    }
    println!(
        "failover: a tenant's write transaction on PostgreSQL (kill switch upsert), {FENCE_WRITES} sequential: \
         {plain:.0} µs without the fence, {fenced:.0} µs with it ({:+.0} µs: the lease row locked FOR SHARE); \
         ticks never touch the lease",
        fenced - plain
    );
    Ok(())
}

const FENCE_WRITES: usize = 2_000;

/// Mean time of one tenant write transaction without and with the lease fence (µs), on the bench database.
async fn fence_cost(owner: &sqlx::PgPool, app_url: &str) -> anyhow::Result<(f64, f64)> {
    let (token,): (i64,) =
        sqlx::query_as("SELECT token FROM tenant_leases WHERE tenant_id = 'bench-0'")
            .fetch_one(owner)
            .await?;
    let pool = crate::storage::postgres::connect(app_url).await?;
    let mut means = [0.0; 2];
    // A warm-up round (not counted), then alternating rounds, so neither side gets a warmer cache.
    for round in 0..5 {
        let fence = round % 2 == 0;
        let start = Instant::now();
        for i in 0..FENCE_WRITES / 2 {
            let mut tx = crate::storage::postgres::tenant_tx(&pool, "bench-0").await?;
            if fence {
                crate::storage::lease::fence(&mut tx, "bench-0", token)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            sqlx::query(
                "INSERT INTO kill_switches (tenant_id, reason, automatic, at_ms) VALUES ($1, $2, false, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET reason = excluded.reason, at_ms = excluded.at_ms",
            )
            .bind("bench-0")
            .bind("fence cost")
            .bind(i as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        if round > 0 {
            means[usize::from(fence)] += start.elapsed().as_secs_f64() * 1e6 / FENCE_WRITES as f64;
        }
    }
    pool.close().await;
    Ok((means[0], means[1]))
}

/// Live leases: tenant → node.
async fn owners(pool: &sqlx::PgPool) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(sqlx::query_as::<_, (String, String)>(
        "SELECT tenant_id, node_id FROM tenant_leases WHERE expires_at > clock_timestamp() AND tenant_id NOT LIKE '@%'",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// Waits until every tenant is owned and every node holds its fair share.
async fn balanced(pool: &sqlx::PgPool, nodes: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let share = TENANTS.div_ceil(nodes);
    loop {
        let leases = owners(pool).await?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for node in leases.values() {
            *counts.entry(node.as_str()).or_default() += 1;
        }
        if leases.len() == TENANTS
            && counts.len() == nodes
            && counts.values().all(|c| *c + 1 >= share && *c <= share)
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("placement did not balance within a minute: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
