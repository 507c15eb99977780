//! `Application`: binds the listeners, starts the supervision tree and the HTTP servers, and shuts all of it
//! down in one explicit order. `trellis serve`, the demo and every integration test go through here.
//!
//! Threads (docs/architecture.md, "Threads"): the tenants' trading actors run on `threads.trading_threads`
//! arbiters; the bridges' listener (`http.bridge_listener`) is a server of its own with
//! `threads.bridge_threads` workers that serves `/ws/mt5` only; everything else (REST, dashboard, trading
//! clients' fan-out) is served by `threads.api_threads` workers, reniced to `threads.api_nice` when the
//! bridges have their own listener, so that a busy API yields the cores to trading. Background jobs run on
//! threads of their own at nice 19 in the idle scheduling class (`models::training::run_low_priority`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio::sync::watch;

use crate::actors::tree::Runtime;
use crate::config::Settings;
use crate::domain::now_ms;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::security::service::Security;
use crate::storage::security::{SecurityStore, TenantRow};

/// Fires the shutdown of an [`Application`] from anywhere (a test, the demo, a signal).
#[derive(Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A built, not yet serving, trellis.
pub struct Application {
    port: u16,
    server: Server,
    /// The bridges' own listener and its port, when `http.bridge_listener` is on.
    bridge: Option<(u16, Server)>,
    runtime: Runtime,
    security: Arc<Security>,
    settings: Arc<Settings>,
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
    cluster: Option<actix::Addr<crate::cluster::node::Cluster>>,
}

impl Application {
    /// Starts the tree and binds `http.host:http.port` (0 = any free port). Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        prepare_postgres(&settings.storage).await?;
        let metrics = Arc::new(Metrics::new());
        let mut runtime = Runtime::start(&settings, metrics);
        let store = SecurityStore::for_settings(&settings.storage)
            .await
            .context("opening the security store")?;
        let security = Security::start(&settings, store)
            .await
            .context("loading the security service")?;
        Security::refresh_periodically(&security, Some(runtime.events.clone()));
        if let Some(logs) = &runtime.logs {
            security.set_log_writer(logs.clone());
        }
        connect_audit(&runtime, &security);
        runtime
            .model_files
            .connect(Arc::new(crate::security::service::RegistryFiles(
                security.clone(),
            )));
        start_tenants(&settings, &runtime, &security).await?;
        if let Some((email, password)) = security
            .bootstrap(&settings)
            .await
            .map_err(|e| anyhow::anyhow!("creating the first administrator: {e}"))?
        {
            // Printed once, on the start that created it; never logged.
            println!(
                "\n  platform administrator created: {email} / {password}\n  (shown once; sign in at POST /api/v1/auth/login)\n"
            );
        }
        let listener =
            TcpListener::bind((settings.http.host, settings.http.port)).with_context(|| {
                format!("binding http {}:{}", settings.http.host, settings.http.port)
            })?;
        let port = listener
            .local_addr()
            .context("reading the bound port")?
            .port();
        // The platform-scope pool of the cluster's leases and the log mover's batches (PostgreSQL only).
        let platform_pool = match settings.storage.postgres_url.trim() {
            "" => None,
            _ if !settings.cluster.enabled && runtime.logs.is_none() => None,
            url => Some(
                crate::storage::postgres::connect(url)
                    .await
                    .context("connecting the platform's PostgreSQL pool")?,
            ),
        };
        // In cluster mode tenants start once this node holds their lease (the Cluster actor's rounds).
        let cluster = if settings.cluster.enabled {
            let pool = platform_pool
                .clone()
                .context("cluster mode needs storage.postgres_url")?;
            let (handle, addr) = crate::cluster::node::Cluster::start(
                settings.clone(),
                port,
                pool,
                runtime.clone(),
                security.clone(),
            );
            runtime.placement = Some(Arc::new(handle.clone()));
            Some((handle, addr))
        } else {
            None
        };
        if let Some(logs) = runtime.logs.clone() {
            let postgres = platform_pool;
            let leases = match (&postgres, settings.cluster.enabled) {
                (Some(pool), true) => Some((
                    crate::storage::lease::LeaseStore::new(pool.clone()),
                    crate::cluster::node::identity(&settings.cluster, port).0,
                )),
                _ => None,
            };
            // On the system thread: the mover shares the platform's PostgreSQL pool with the cluster's leases,
            // whose I/O must never wait for a thread of low priority.
            runtime.log_tiers = Some(crate::storage::logs::mover::LogTiersHandle::start(
                logs,
                postgres,
                leases,
                Some(runtime.events.clone()),
                runtime.metrics.clone(),
            ));
        }
        let redis = Some(settings.storage.redis_url.trim()).filter(|u| !u.is_empty());
        let state = AppState {
            runtime: runtime.clone(),
            settings: settings.clone(),
            rate_limiter: Arc::new(crate::security::rate_limit::RateLimiter::new(redis)),
            security: security.clone(),
            jobs: Default::default(),
            optimisations: Default::default(),
            cluster: cluster.as_ref().map(|(handle, _)| handle.clone()),
            tickets: Arc::new(crate::app::tickets::Tickets::new(redis)),
        };
        {
            use actix::Actor as _;
            let jobs = crate::app::jobs::training::TrainingJobs::new(state.clone()).start();
            state.jobs.set(jobs);
            let optimisations =
                crate::app::jobs::optimisations::Optimisations::new(state.clone()).start();
            state.optimisations.set(optimisations);
        }
        let max_body = settings.http.max_body_bytes;
        let bridge = if settings.http.bridge_listener {
            Some(bridge_server(&settings, state.clone())?)
        } else {
            None
        };
        // The API's workers yield to trading only when bridges do not share them.
        let api_nice = bridge.as_ref().map_or(0, |_| settings.threads.api_nice);
        let mut server = HttpServer::new(move || {
            // Called once on each worker thread as it starts.
            if api_nice > 0 && !crate::runtime::priority::set_this_threads_nice(api_nice) {
                tracing::warn!(
                    api_nice,
                    "could not renice an API thread; it competes with trading"
                );
            }
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    http::forward::forward_remote_tenants,
                ))
                .wrap(actix_web::middleware::from_fn(http::health::time_requests))
                .app_data(web::Data::new(state.clone()))
                .app_data(web::JsonConfig::default().limit(max_body))
                .app_data(web::PayloadConfig::default().limit(max_body))
                .configure(http::api::configure_uploads)
                .configure(http::routes)
        })
        .disable_signals()
        // Bridges exchange small frames both ways: Nagle's algorithm would hold each one for an ACK.
        .tcp_nodelay(true)
        .shutdown_timeout(settings.shutdown.grace_secs);
        if settings.threads.api_threads > 0 {
            server = server.workers(settings.threads.api_threads);
        }
        let server = server
            .listen(listener)
            .context("starting the HTTP server")?
            .run();
        match &bridge {
            // `port` last: scripts that read the port from this line take the last `port=`.
            Some((bridge_port, _)) => {
                tracing::info!(host = %settings.http.host, bridge_port, port, "listening")
            }
            None => tracing::info!(host = %settings.http.host, port, "listening"),
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        Ok(Self {
            port,
            server,
            bridge,
            runtime,
            security,
            settings,
            stop_tx: Arc::new(stop_tx),
            stop_rx,
            cluster: cluster.map(|(_, addr)| addr),
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the bridges' own listener when `http.bridge_listener` is on; else [`Self::port`] (bridges
    /// share the API's listener).
    pub fn bridge_port(&self) -> u16 {
        self.bridge.as_ref().map_or(self.port, |(port, _)| *port)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Authentication, keys, secrets and the audit log of this application.
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop_tx.clone())
    }

    /// Serves until the stop handle fires, Ctrl-C or SIGTERM arrives, or the server dies; then shuts down:
    /// stop accepting and finish in-flight requests, drain the tree (tenants before storage), done.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            bridge,
            runtime,
            settings,
            mut stop_rx,
            cluster,
            ..
        } = self;
        let handle = server.handle();
        let mut serving = actix_rt::spawn(server);
        let bridge = bridge.map(|(_, server)| {
            let handle = server.handle();
            (handle, actix_rt::spawn(server))
        });
        let reason = tokio::select! {
            _ = stop_rx.wait_for(|stop| *stop) => "stop requested",
            _ = tokio::signal::ctrl_c() => "interrupt (Ctrl-C)",
            _ = terminate() => "SIGTERM",
            res = &mut serving => {
                tracing::error!(result = ?res, "HTTP server ended on its own");
                "HTTP server ended"
            }
        };
        tracing::info!(reason, "shutting down: 1/4 stop accepting connections");
        let stopping = actix_rt::spawn(handle.stop(true));
        let bridge_stopping = bridge.map(|(handle, serving)| {
            actix_rt::spawn(async move {
                handle.stop(true).await;
                let _ = serving.await;
            })
        });
        if let Some(cluster) = &cluster {
            let _ = cluster.send(crate::cluster::node::Leave).await;
        }
        tracing::info!("shutting down: 2/4 close MT5 sessions");
        runtime.close_sessions().await;
        let _ = stopping.await;
        if let Some(stopping) = bridge_stopping {
            let _ = stopping.await;
        }
        tracing::info!("shutting down: 3/4 drain tenants, then storage");
        let grace = Duration::from_secs(settings.shutdown.grace_secs.max(1) * 2);
        let drained = runtime.shutdown(grace).await;
        if !drained {
            tracing::warn!(?grace, "the supervision tree did not drain in time");
        }
        // Tenants drained (their writes landed): other nodes may take them at once.
        if let Some(cluster) = cluster {
            match cluster.send(crate::cluster::node::ReleaseAll).await {
                Ok(n) => tracing::info!(released = n, "tenant leases handed back"),
                Err(e) => tracing::warn!(error = %e, "tenant leases not handed back; they run out"),
            }
        }
        tracing::info!("shutting down: 4/4 stopped");
        Ok(())
    }
}

/// The bridges' own server: `/ws/mt5` (and `/health`, for a load balancer's check) on
/// `http.bridge_port`, with `threads.bridge_threads` workers at normal priority that nothing else uses.
fn bridge_server(settings: &Settings, state: AppState) -> anyhow::Result<(u16, Server)> {
    let listener = TcpListener::bind((settings.http.host, settings.http.bridge_port))
        .with_context(|| {
            format!(
                "binding the bridges' listener {}:{}",
                settings.http.host, settings.http.bridge_port
            )
        })?;
    let port = listener
        .local_addr()
        .context("reading the bridges' bound port")?
        .port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(http::bridge_routes)
    })
    .disable_signals()
    // Bridges exchange small frames both ways: Nagle's algorithm would hold each one for an ACK.
    .tcp_nodelay(true)
    .shutdown_timeout(settings.shutdown.grace_secs)
    .workers(settings.threads.bridge_threads)
    .listen(listener)
    .context("starting the bridges' server")?
    .run();
    Ok((port, server))
}

/// Appends the audit events of tenants' actors to their chains, in the order they were sent.
fn connect_audit(runtime: &Runtime, security: &Arc<Security>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<crate::actors::tenant::AuditEvent>();
    runtime.audit.connect(tx);
    // A supervised task (`audit.writer`): the event being written stays in its state until it is, so a
    // restart after a panic writes it then.
    let state = (
        rx,
        security.clone(),
        None::<crate::actors::tenant::AuditEvent>,
    );
    crate::runtime::task::spawn_supervised(
        "audit.writer",
        Some(runtime.events.clone()),
        state,
        |state| async move {
            let mut s = state.lock().await;
            let (rx, security, pending) = &mut *s;
            loop {
                let e = match pending.take() {
                    Some(e) => e,
                    None => match rx.recv().await {
                        Some(e) => e,
                        None => return,
                    },
                };
                *pending = Some(e.clone());
                crate::runtime::task::fault_point("audit.writer");
                let mut attempt = 0u32;
                // A database that is away is retried (the event is kept); a refused one is logged.
                while let Err(err) = security
                    .audit(&e.tenant, e.action, &e.actor, e.detail.clone())
                    .await
                {
                    if !err.is_retryable() || attempt >= 50 {
                        tracing::error!(tenant = %e.tenant, action = e.action, error = %err, "audit event not recorded");
                        break;
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                *pending = None;
            }
        },
    );
}

/// Starts every tenant: those of the configuration are stored on the first start (after that the stored
/// document — changed through the admin API — is what runs), then those created through the API.
async fn start_tenants(
    settings: &Settings,
    runtime: &Runtime,
    security: &Security,
) -> anyhow::Result<()> {
    let now = now_ms();
    for tenant in &settings.tenants {
        let seed = TenantRow {
            id: tenant.id.clone(),
            settings: serde_json::to_string(tenant)?,
            tier: tenant.tier.clone(),
            suspended: 0,
            created_ms: now,
            updated_ms: now,
        };
        security
            .store
            .seed_tenant(&seed)
            .await
            .with_context(|| format!("storing tenant `{}`", tenant.id))?;
    }
    if settings.cluster.enabled {
        // Placement starts them, each on one node.
        return Ok(());
    }
    for row in security.store.tenants().await? {
        // API keys of the configuration are its own: they stay valid as configured.
        let doc =
            crate::cluster::node::tenant_document(settings, &row).map_err(anyhow::Error::msg)?;
        security.set_suspended(&row.id, row.suspended != 0);
        runtime
            .start_tenant(doc)
            .await
            .with_context(|| format!("starting tenant `{}`", row.id))?;
    }
    Ok(())
}

/// With PostgreSQL configured: migrate when the owner's URL is given, then refuse to start unless the
/// application role is isolated by row-level security (one clear line naming the problem).
async fn prepare_postgres(storage: &crate::config::StorageSettings) -> anyhow::Result<()> {
    let url = storage.postgres_url.trim();
    if url.is_empty() {
        return Ok(());
    }
    let owner = storage.postgres_migrate_url.trim();
    if !owner.is_empty() {
        crate::storage::postgres::migrate(owner)
            .await
            .context("migrating PostgreSQL")?;
    }
    let pool = crate::storage::postgres::connect(url).await?;
    pool.close().await;
    Ok(())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await
}
