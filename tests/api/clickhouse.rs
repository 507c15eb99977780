//! The ClickHouse time-series store: trading writes ticks, bars and fills there; when ClickHouse goes away
//! trading continues, `/ready` says so, rows wait (spilling to disk past the buffer) and are stored exactly
//! once when it is back. Needs `clickhouse-server` (installed and started by scripts/test.sh).

use std::time::Duration;

use clickhouse::Client;

use crate::helpers::{spawn_app_with, tenant, tick, wait_for, MINUTE, T0};

const KEY: &str = "trk_acme0001_clickhouse-secret";

async fn count(client: &Client, sql: &str) -> u64 {
    client.query(sql).fetch_one::<u64>().await.unwrap_or(0)
}

fn database() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

#[actix_rt::test]
async fn trading_on_clickhouse_stores_ticks_bars_and_fills() {
    let Some(url) = crate::helpers::service_url("TRELLIS_TEST_CLICKHOUSE_URL") else {
        return;
    };
    let db = database();
    let app = spawn_app_with(&[
        ("TRELLIS__STORAGE__CLICKHOUSE_URL", &url),
        ("TRELLIS__STORAGE__CLICKHOUSE_DATABASE", &db),
    ])
    .await;
    let ready = app.wait_ready().await;
    assert_eq!(ready["checks"]["timeseries"]["status"], "healthy");
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;

    crate::helpers::rising(&sim, 4);
    app.wait_portfolio("acme", "the fill", |p| p.deals.len() == 1)
        .await;
    let ch = Client::default()
        .with_url(&url)
        .with_database(&db)
        .with_validation(false);
    let mut stored = (0, 0, 0);
    for _ in 0..100 {
        stored = (
            count(
                &ch,
                "SELECT count() FROM ticks FINAL WHERE tenant_id = 'acme'",
            )
            .await,
            count(
                &ch,
                "SELECT count() FROM bars FINAL WHERE tenant_id = 'acme' AND timeframe = 'M1'",
            )
            .await,
            count(
                &ch,
                "SELECT count() FROM fills FINAL WHERE tenant_id = 'acme'",
            )
            .await,
        );
        if stored == (4, 3, 1) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(stored, (4, 3, 1), "(ticks, M1 bars, fills) in ClickHouse");
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
}

fn instance(action: &str, dir: &std::path::Path, ports: Option<(u16, u16)>) {
    let mut cmd = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/clickhouse-instance.sh"
    ));
    cmd.arg(action).arg(dir);
    if let Some((http, tcp)) = ports {
        cmd.arg(http.to_string()).arg(tcp.to_string());
    }
    let status = cmd.status().expect("clickhouse-instance.sh runs");
    assert!(status.success(), "clickhouse-instance.sh {action} failed");
}

#[actix_rt::test]
async fn ticks_and_fills_accepted_while_clickhouse_is_down_are_stored_exactly_once_when_it_is_back()
{
    if crate::helpers::service_url("TRELLIS_TEST_CLICKHOUSE_URL").is_none() {
        return;
    }
    // Arrange: a ClickHouse of this test's own, so stopping it disturbs nobody else.
    let dir = tempfile::tempdir().expect("dir");
    let ch_dir = dir.path().join("clickhouse");
    let (http, tcp) = (crate::helpers::free_port(), crate::helpers::free_port());
    instance("start", &ch_dir, Some((http, tcp)));
    let url = format!("http://127.0.0.1:{http}");
    let app = spawn_app_with(&[
        ("TRELLIS__STORAGE__CLICKHOUSE_URL", &url),
        ("TRELLIS__STORAGE__CLICKHOUSE_DATABASE", "trellis"),
        ("TRELLIS__STORAGE__CLICKHOUSE_BUFFER_ROWS", "1000"),
    ])
    .await;
    app.wait_ready().await;
    app.add_tenant(tenant("acme", KEY)).await;
    let sim = app.sim(KEY, 7001).await;
    crate::helpers::rising(&sim, 4);
    app.wait_portfolio("acme", "the first fill", |p| p.deals.len() == 1)
        .await;

    // Act: ClickHouse goes away; trading goes on (a reversal fills) and 3 000 more ticks arrive.
    instance("stop", &ch_dir, None);
    sim.tick(tick("EURUSD", T0 + 4 * MINUTE, "1.0990", "1.0992"));
    sim.tick(tick("EURUSD", T0 + 5 * MINUTE, "1.0950", "1.0952"));
    app.wait_portfolio("acme", "the fill while ClickHouse is down", |p| {
        p.deals.len() == 2
    })
    .await;
    for k in 0..3_000 {
        sim.tick(tick("EURUSD", T0 + 5 * MINUTE + 1 + k, "1.0950", "1.0952"));
    }
    wait_for("the ticks to be streamed", || {
        sim.stats().ticks_sent == 3_006
    })
    .await;
    let mut not_ready = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = app.get("/ready").await;
        if status == 503 {
            not_ready = body;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let spill_dir = app.data_dir.path().join("spill");
    let mut spilled = 0;
    for _ in 0..200 {
        spilled = std::fs::read_dir(&spill_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        if spilled > 0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(25)).await;
    }
    instance("start", &ch_dir, Some((http, tcp)));

    // Assert: everything arrives once.
    let ch = Client::default()
        .with_url(&url)
        .with_database("trellis")
        .with_validation(false);
    let mut stored = (0, 0, 0);
    for _ in 0..300 {
        stored = (
            count(
                &ch,
                "SELECT count() FROM ticks FINAL WHERE tenant_id = 'acme'",
            )
            .await,
            count(&ch, "SELECT count() FROM ticks WHERE tenant_id = 'acme'").await,
            count(
                &ch,
                "SELECT count() FROM fills FINAL WHERE tenant_id = 'acme'",
            )
            .await,
        );
        if stored.0 >= 3_006 && stored.2 >= 2 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = app.get_text("/metrics").await;
    let fills_raw = count(&ch, "SELECT count() FROM fills WHERE tenant_id = 'acme'").await;
    assert!(
        metrics.contains("trellis_ticks_total 3006"),
        "trellis accepted every tick: {metrics}"
    );
    assert_eq!(
        not_ready["status"], "not_ready",
        "ready must say ClickHouse is away"
    );
    assert!(
        not_ready["failing"].to_string().contains("timeseries"),
        "{not_ready}"
    );
    assert!(spilled >= 1, "rows past the buffer were spilled to disk");
    assert_eq!(
        stored,
        (3_006, 3_006, 2),
        "(ticks distinct, ticks raw, fills) — each stored once"
    );
    assert_eq!(fills_raw, 2);
    let (status, _) = app.get("/ready").await;
    assert_eq!(status, 200, "ready again once ClickHouse is back");
    eprintln!(
        "fault test: ticks stored {} (raw rows {}), fills {} (raw {}), spill files {}",
        stored.0, stored.1, stored.2, fills_raw, spilled
    );
    sim.stop().await.expect("sim stops");
    app.shutdown().await;
    instance("stop", &ch_dir, None);
}
