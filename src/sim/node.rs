//! A trellis node as a child process (`trellis serve`), for the fault tests and the recovery benchmark.
//!
//! A restart is the most common fault in production, and only a real process shows what a restart does: a
//! SIGKILL leaves no destructor, no flush and no goodbye frame. This starts `trellis serve` on a data
//! directory and a fixed port (so a bridge finds it again after a restart), waits until it answers, and stops
//! it with SIGTERM (graceful) or SIGKILL (a crash).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start a node; the same spec starts it again on the same data.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `trellis` binary.
    pub binary: PathBuf,
    /// A TOML layered over the profile (`--config`).
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    /// Extra `TRELLIS__…` settings (the real stores' URLs, heartbeat timings).
    pub env: Vec<(String, String)>,
    /// stdout and stderr of every start are appended here.
    pub log: PathBuf,
}

/// A running node.
pub struct Node {
    child: Child,
    /// When the process was started.
    pub started: Instant,
}

/// How a node is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: trellis stops gracefully (sessions say `shutting_down`, queued writes are flushed).
    Term,
    /// SIGKILL: nothing runs after it.
    Kill,
}

impl NodeSpec {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/mt5", self.port)
    }

    /// Starts the node (the test profile on this spec's data directory and port).
    pub fn start(&self) -> std::io::Result<Node> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("TRELLIS_ENV", "test")
            .env("TRELLIS__HTTP__PORT", self.port.to_string())
            .env("TRELLIS__STORAGE__DATA_DIR", &self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Ok(Node {
            child: cmd.spawn()?,
            started: Instant::now(),
        })
    }
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `GET /health` answers 200; returns how long after the start that was.
    pub async fn wait_ready(
        &mut self,
        spec: &NodeSpec,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let client = awc::Client::builder()
            .timeout(Duration::from_millis(500))
            .finish();
        let url = format!("{}/health", spec.url());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("trellis exited during start-up: {status}"));
            }
            if let Ok(resp) = client.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(self.started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("trellis did not answer {url} within {timeout:?}"))
    }

    /// Sends the signal and waits for the process to end (SIGKILL after `timeout` if it has not).
    pub async fn stop(&mut self, how: Stop, timeout: Duration) -> std::io::Result<ExitStatus> {
        match how {
            Stop::Kill => self.child.kill()?,
            Stop::Term => {
                let status = Command::new("kill")
                    .args(["-s", "TERM", &self.child.id().to_string()])
                    .status()?;
                if !status.success() {
                    return Err(std::io::Error::other("kill -s TERM failed"));
                }
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                return self.child.wait();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Node {
    /// Waits up to `timeout` for the process to end on its own; `None` if it is still running.
    pub async fn exited(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A test that fails half-way must not leave a server behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The configuration of the restart tests and benchmark: tenant `acme` with the bridge key `api_key`, trading
/// `symbols`, one `ema_cross` 2/3 strategy (M1, 0.1 lots) per symbol — fast enough on a quick random walk to
/// keep orders in flight at every instant.
pub fn trading_config(api_key: &str, symbols: &[&str]) -> String {
    let quoted: Vec<String> = symbols.iter().map(|s| format!("\"{s}\"")).collect();
    let mut toml = format!(
        "[[tenants]]\nid = \"acme\"\nname = \"Acme\"\ntier = \"professional\"\napi_keys = [\"{api_key}\"]\n\
         symbols = [{}]\n",
        quoted.join(", ")
    );
    for s in symbols {
        toml.push_str(&format!(
            "\n[[tenants.strategies]]\nid = \"ema-{}\"\nkind = \"ema_cross\"\nsymbol = \"{s}\"\n\
             timeframe = \"M1\"\nvolume = 0.1\nparams = {{ fast = 2, slow = 3 }}\n",
            s.to_lowercase()
        ));
    }
    toml
}

/// The configuration of the multi-node tests and benchmark: each `(id, api_key)` tenant trades EURUSD with one
/// `ema_cross` 2/3 strategy (M1, 0.1 lots).
pub fn eurusd_tenants_config(tenants: &[(String, String)]) -> String {
    tenants
        .iter()
        .map(|(id, key)| {
            format!(
                "[[tenants]]\nid = \"{id}\"\nname = \"{id}\"\ntier = \"professional\"\napi_keys = [\"{key}\"]\n\
                 symbols = [\"EURUSD\"]\n\n[[tenants.strategies]]\nid = \"ema\"\nkind = \"ema_cross\"\n\
                 symbol = \"EURUSD\"\ntimeframe = \"M1\"\nvolume = 0.1\nparams = {{ fast = 2, slow = 3 }}\n\n"
            )
        })
        .collect()
}

/// What every node of a test or benchmark cluster shares besides its stores: cluster mode with these lease
/// timings, fast bridge heartbeats, and the same secrets — a token signed by one node is verified by the others,
/// a field encrypted by one is read by the others (fixed values: for tests and benchmarks only).
pub fn cluster_env(lease_ms: u64, renew_ms: u64) -> Vec<(String, String)> {
    use base64::Engine as _;
    let b64 = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    [
        ("TRELLIS__MT5__HEARTBEAT_INTERVAL_MS", "500".to_owned()),
        ("TRELLIS__MT5__HEARTBEAT_TIMEOUT_MS", "5000".to_owned()),
        ("TRELLIS__CLUSTER__ENABLED", "true".to_owned()),
        ("TRELLIS__CLUSTER__LEASE_MS", lease_ms.to_string()),
        ("TRELLIS__CLUSTER__RENEW_MS", renew_ms.to_string()),
        ("TRELLIS__CLUSTER__NODE_TIMEOUT_MS", lease_ms.to_string()),
        ("TRELLIS__SECURITY__JWT_SECRETS", format!("k1:{}", b64(5))),
        ("TRELLIS__SECURITY__API_KEY_PEPPER", b64(7)),
        ("TRELLIS__SECURITY__AUDIT_KEY", b64(9)),
        ("TRELLIS__SECURITY__DATA_KEYS", format!("1:{}", b64(11))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Follows a process's peak resident memory (VmHWM of its /proc status, which only grows) until it exits;
/// the handle answers the peak in KiB. (A parent's `wait4` maxrss would not do: it carries the forking
/// process's own peak over exec.)
pub fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    let status = format!("/proc/{pid}/status");
    std::thread::spawn(move || {
        let mut peak_kb = 0u64;
        while let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak_kb
    })
}
