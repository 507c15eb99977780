//! `Application`: binds the listeners, starts the supervision tree and the HTTP servers, and shuts all of it
//! down in one explicit order. `trellis serve`, the demo and every integration test go through here.
//!
//! Threads (docs/architecture.md, "Threads"): the tenants' trading actors run on `threads.trading_threads`
//! arbiters; the bridges' listener (`http.bridge_listener`) is a server of its own with
//! `threads.bridge_threads` workers that serves `/ws/mt5` only; everything else (REST, dashboard, trading
//! clients' fan-out) is served by `threads.api_threads` workers, reniced to `threads.api_nice` when the
//! bridges have their own listener, so that a busy API yields the cores to trading. Background jobs run on
//! threads of their own at nice 19 in the idle scheduling class (`models::training::run_low_priority`).
//!
//! Headless (`Application::build_headless`): the same tree, stores, security service and background jobs,
//! with no HTTP front door: no REST API, dashboard, `/ready`, `/metrics`, trading clients' WebSocket or
//! cluster forwarding. Bridges still need a way in, so the bridges' listener (`/ws/mt5` and `/health` on
//! `http.bridge_port`) is served when `http.bridge_listener` is on; with it off nothing is bound at all and
//! the embedding program reaches trellis through `runtime()` alone. It is a constructor, not a setting,
//! because it is the embedding program's decision, never a deployment's: a `trellis serve` without its API
//! could be neither administered nor probed, so no configuration file should be able to produce one (and the
//! one choice left, whether the bridges get a listener, is the existing `http.bridge_listener`). A headless
//! start also skips the bootstrap administrator (nobody could sign in here; the first start that serves the
//! API creates it, as it does whenever none exists) and refuses cluster mode (nodes forward API requests and
//! redirect bridges to each other's `http.port`). Shutdown is the same ordered one, over the servers that run.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use futures_util::future::{FusedFuture as _, FutureExt as _};
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
    /// The HTTP front door and its port; `None` when headless.
    api: Option<(u16, Server)>,
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
        Self::start(settings, true).await
    }

    /// Starts the tree without the HTTP front door (module doc, "Headless"): only the bridges' listener on
    /// `http.host:http.bridge_port` when `http.bridge_listener` is on, else nothing bound. `http.port` is not
    /// bound. Refuses cluster mode. Must run inside an actix system.
    pub async fn build_headless(settings: Settings) -> anyhow::Result<Self> {
        Self::start(settings, false).await
    }

    async fn start(settings: Settings, with_api: bool) -> anyhow::Result<Self> {
        if !with_api && settings.cluster.enabled {
            anyhow::bail!(
                "cluster.enabled: cluster mode needs the HTTP front door (nodes forward requests and redirect \
                 bridges to each other's http.port); start with Application::build"
            );
        }
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
        // Headless, nobody could sign in: the first start that serves the API creates the administrator.
        if with_api {
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
        }
        let listener = if with_api {
            let listener = TcpListener::bind((settings.http.host, settings.http.port))
                .with_context(|| {
                    format!("binding http {}:{}", settings.http.host, settings.http.port)
                })?;
            let port = listener
                .local_addr()
                .context("reading the bound port")?
                .port();
            Some((port, listener))
        } else {
            None
        };
        // Only cluster mode and its leases use it, and they need the API (refused above when headless).
        let port = listener.as_ref().map_or(0, |(port, _)| *port);
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
        let bridge = if settings.http.bridge_listener {
            Some(bridge_server(&settings, state.clone())?)
        } else {
            None
        };
        let api = match listener {
            Some((port, listener)) => Some((
                port,
                api_server(&settings, state, listener, bridge.is_some())?,
            )),
            None => None,
        };
        let host = settings.http.host;
        match (&api, &bridge) {
            // `port` last: scripts that read the port from this line take the last `port=`.
            (Some((port, _)), Some((bridge_port, _))) => {
                tracing::info!(%host, bridge_port, port, "listening")
            }
            (Some((port, _)), None) => tracing::info!(%host, port, "listening"),
            (None, Some((bridge_port, _))) => {
                tracing::info!(%host, bridge_port, "headless: listening for bridges only")
            }
            (None, None) => tracing::info!("headless: nothing listens"),
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        Ok(Self {
            api,
            bridge,
            runtime,
            security,
            settings,
            stop_tx: Arc::new(stop_tx),
            stop_rx,
            cluster: cluster.map(|(_, addr)| addr),
        })
    }

    /// The API's bound port (useful with port 0); 0 when headless, which binds none ([`Self::api_port`]).
    pub fn port(&self) -> u16 {
        self.api_port().unwrap_or(0)
    }

    /// The API's bound port; `None` when headless ([`Self::build_headless`]).
    pub fn api_port(&self) -> Option<u16> {
        self.api.as_ref().map(|(port, _)| *port)
    }

    /// The port of the bridges' own listener when `http.bridge_listener` is on; else [`Self::port`] (bridges
    /// share the API's listener). 0 when nothing serves bridges (headless with `http.bridge_listener` off).
    pub fn bridge_port(&self) -> u16 {
        self.bridge.as_ref().map_or(self.port(), |(port, _)| *port)
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

    /// Serves until the stop handle fires, Ctrl-C or SIGTERM arrives, or a server dies; then shuts down:
    /// stop accepting and finish in-flight requests, drain the tree (tenants before storage), done. Headless
    /// without a listener, only the first three can end it.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            api,
            bridge,
            runtime,
            settings,
            mut stop_rx,
            cluster,
            ..
        } = self;
        let mut servers: Vec<Serving> = api
            .map(|(_, server)| Serving::spawn("HTTP server", server))
            .into_iter()
            .chain(bridge.map(|(_, server)| Serving::spawn("bridges' server", server)))
            .collect();
        let reason = tokio::select! {
            _ = stop_rx.wait_for(|stop| *stop) => "stop requested",
            _ = tokio::signal::ctrl_c() => "interrupt (Ctrl-C)",
            _ = terminate() => "SIGTERM",
            name = any_ended(&mut servers) => {
                tracing::error!(server = name, "a server ended on its own");
                "a server ended"
            }
        };
        tracing::info!(reason, "shutting down: 1/4 stop accepting connections");
        let stopping: Vec<_> = servers
            .into_iter()
            .map(|s| actix_rt::spawn(s.stop()))
            .collect();
        if let Some(cluster) = &cluster {
            let _ = cluster.send(crate::cluster::node::Leave).await;
        }
        tracing::info!("shutting down: 2/4 close MT5 sessions");
        runtime.close_sessions().await;
        for stopping in stopping {
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

/// A server running on its own task.
struct Serving {
    name: &'static str,
    handle: ServerHandle,
    task: futures_util::future::Fuse<actix_rt::task::JoinHandle<std::io::Result<()>>>,
}

impl Serving {
    fn spawn(name: &'static str, server: Server) -> Self {
        Self {
            name,
            handle: server.handle(),
            task: actix_rt::spawn(server).fuse(),
        }
    }

    /// Stops accepting, lets in-flight requests finish (`shutdown.grace_secs`), and waits for the server.
    async fn stop(self) {
        self.handle.stop(true).await;
        if !self.task.is_terminated() {
            let _ = self.task.await;
        }
    }
}

/// The name of the first of `servers` to end; never, when there are none.
async fn any_ended(servers: &mut [Serving]) -> &'static str {
    if servers.is_empty() {
        return std::future::pending().await;
    }
    let (_, i, _) = futures_util::future::select_all(servers.iter_mut().map(|s| &mut s.task)).await;
    servers[i].name
}

/// The HTTP front door on `listener`: the API, the dashboard, `/ws/mt5` and every other WebSocket, with
/// `threads.api_threads` workers, reniced to `threads.api_nice` when the bridges have a listener of their own.
fn api_server(
    settings: &Settings,
    state: AppState,
    listener: TcpListener,
    bridges_apart: bool,
) -> anyhow::Result<Server> {
    let max_body = settings.http.max_body_bytes;
    // The API's workers yield to trading only when bridges do not share them.
    let api_nice = if bridges_apart {
        settings.threads.api_nice
    } else {
        0
    };
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
    Ok(server
        .listen(listener)
        .context("starting the HTTP server")?
        .run())
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
