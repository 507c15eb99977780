//! Starting the real application for a test, and small typed request helpers.

use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use trellis::actors::tree::Runtime;
use trellis::config::{Profile, Settings};
use trellis::startup::{Application, StopHandle};

/// A running trellis on a free port with a fresh data directory.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub runtime: Runtime,
    pub stop: StopHandle,
    pub serving: actix_rt::task::JoinHandle<anyhow::Result<()>>,
    pub data_dir: TempDir,
}

/// Test settings (`config/test.toml`) with a fresh data directory and the given `TRELLIS__…` overrides.
pub fn test_settings(data_dir: &TempDir, overrides: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![(
        "TRELLIS__STORAGE__DATA_DIR".into(),
        data_dir.path().display().to_string(),
    )];
    vars.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Settings::load(Profile::Test, None, vars).expect("test settings are valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(&data_dir, overrides);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let port = app.port();
    let runtime = app.runtime().clone();
    let stop = app.stop_handle();
    let serving = actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        runtime,
        stop,
        serving,
        data_dir,
    }
}

impl TestApp {
    /// GET `path`, returning the status and the body parsed as JSON (or as a JSON string when it is not).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get_text(path).await;
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let mut resp = awc::Client::default()
            .get(format!("{}{}", self.address, path))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("request sent");
        let body = resp
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .expect("body read");
        (
            resp.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Polls `/ready` until it answers 200 (storage open) or the time runs out.
    pub async fn wait_ready(&self) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (status, body) = self.get("/ready").await;
            if status == 200 {
                return body;
            }
            last = body;
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("trellis never became ready: {last}");
    }

    /// Fires the shutdown and waits for `run_until_stopped` to return.
    pub async fn shutdown(self) {
        self.stop.stop();
        let result = tokio::time::timeout(Duration::from_secs(20), self.serving)
            .await
            .expect("shutdown completes in time")
            .expect("serve task did not panic");
        result.expect("run_until_stopped returns Ok");
    }
}
