//! `trellis serve` on port 0: liveness, readiness, metrics, ordered shutdown.

use crate::helpers::spawn_app;

#[actix_rt::test]
async fn serve_on_port_zero_answers_health_ready_and_metrics_then_shuts_down() {
    // Arrange
    let app = spawn_app().await;
    assert_ne!(app.port, 0, "port 0 must be replaced by the bound port");

    // Act
    let (health_status, health) = app.get("/health").await;
    let ready = app.wait_ready().await;
    let (metrics_status, metrics) = app.get_text("/metrics").await;

    // Assert
    assert_eq!(health_status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["relational"]["status"], "healthy");
    assert_eq!(ready["checks"]["timeseries"]["status"], "healthy");
    assert_eq!(metrics_status, 200);
    // The two stores and four supervised tasks (security refresh, audit writer, log writer, log mover); the
    // real profile adds the Redis cache and the event bus's publisher and subscriber.
    let started = if crate::helpers::real_profile() { 9 } else { 6 };
    assert!(
        metrics.contains(&format!(
            "trellis_supervision_events_total{{kind=\"started\"}} {started}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("trellis_storage_healthy{store=\"relational\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    if !crate::helpers::real_profile() {
        assert!(
            app.data_dir.path().join("relational.db").exists(),
            "the embedded store was created"
        );
    }
    let events = app.runtime.events.clone();
    app.shutdown().await;
    let stopped: Vec<_> = events
        .snapshot(None)
        .into_iter()
        .filter(|e| e.kind == trellis::runtime::events::EventKind::Stopped)
        .map(|e| e.child)
        .collect();
    assert_eq!(
        stopped
            .into_iter()
            .filter(|c| c != "storage.cache")
            .collect::<Vec<_>>(),
        vec![
            "storage.timeseries".to_owned(),
            "storage.relational".to_owned()
        ],
        "shutdown drains children in reverse start order"
    );
}

#[actix_rt::test]
async fn ready_answers_503_naming_the_store_that_cannot_open() {
    // Arrange: a directory where the relational database file should be, so SQLite cannot open it (the
    // rest of the data directory — secrets, the security store — is usable).
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("relational.db")).expect("blocking directory");
    let path = dir.path().display().to_string();
    // In the real profile the relational store is PostgreSQL (checked before start-up): point the
    // time-series store at a port where nothing listens instead.
    let real = crate::helpers::real_profile();
    let overrides: Vec<(&str, &str)> = if real {
        vec![("TRELLIS__STORAGE__CLICKHOUSE_URL", "http://127.0.0.1:9")]
    } else {
        vec![("TRELLIS__STORAGE__DATA_DIR", &path)]
    };
    let app = crate::helpers::spawn_app_with(&overrides).await;

    // Act: give the storage actors time to try (and be restarted) a few times.
    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = app.get("/ready").await;
    let (health_status, _) = app.get("/health").await;

    // Assert
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    let failing: Vec<&str> = body["failing"]
        .as_array()
        .expect("failing is a list")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    if real {
        assert!(failing.contains(&"timeseries"), "{body}");
    } else {
        assert!(failing.contains(&"relational"), "{body}");
    }
    assert_eq!(health_status, 200, "the process itself is alive");
    app.shutdown().await;
}
