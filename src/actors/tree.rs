//! The root of the supervision tree.
//!
//! ```text
//! System (root)
//! ├── storage.relational  (permanent)  SQLite, or PostgreSQL when `storage.postgres_url` is set
//! ├── storage.timeseries  (permanent)  SQLite, or ClickHouse when `storage.clickhouse_url` is set
//! └── tenant:<id>         (temporary: a tenant that escalates is stopped and reported, not retried)
//! ```
//!
//! Storage starts first and stops last: shutdown drains children in reverse start order, so tenants flush
//! their orders and fills into storage actors that are still alive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use dashmap::DashMap;

use super::tenant::{TenantContext, TenantDeps, TenantError};
use crate::config::{Mt5Settings, Settings};
use crate::domain::tenant::TenantSettings;
use crate::domain::TenantId;
use crate::metrics::Metrics;
use crate::runtime::bus::EventBus;
use crate::runtime::events::EventLog;
use crate::runtime::supervisor::{
    ChildContext, ChildSpec, GetChildren, RestartPolicy, Shutdown, StartChild, SupervisionError,
    Supervisor, SupervisorConfig,
};
use crate::storage::cache::RedisCache;
use crate::storage::clickhouse::ClickHouseSeries;
use crate::storage::postgres::PgRelational;
use crate::storage::relational::{self, Relational};
use crate::storage::timeseries::{self, TimeSeries};
use crate::storage::{HealthBoard, RelationalStore, StoreSlot, TimeSeriesStore};
use crate::strategies::wasm::{WasmLimits, WasmModule};
use crate::strategies::StrategyRegistry;

/// Where a tenant may start in cluster mode: only under this node's lease, which the cluster takes (when the
/// tenant is free) or refuses (while another node owns it). Implemented by `cluster::ClusterHandle`.
///
/// A trait so the tree does not import the cluster: the cluster drives the tree (it starts and stops the
/// tenants whose leases it holds), and the tree only asks it before starting a tenant.
pub trait Placement: Send + Sync {
    /// Starts `settings` under this node's lease on it.
    fn adopt(
        &self,
        settings: TenantSettings,
    ) -> futures_util::future::BoxFuture<'static, Result<Arc<TenantContext>, TenantError>>;
}

/// Handles to the running tree, cheap to clone into HTTP handlers and actors.
#[derive(Clone)]
pub struct Runtime {
    pub root: Addr<Supervisor>,
    pub events: EventLog,
    pub health: HealthBoard,
    pub metrics: Arc<Metrics>,
    pub relational: RelationalStore,
    pub timeseries: TimeSeriesStore,
    /// The hot cache, when Redis is configured.
    pub cache: Option<StoreSlot<RedisCache>>,
    /// Trading events for clients, shared across nodes through Redis when configured.
    pub bus: EventBus,
    /// The hot log tier, when Redis is configured.
    /// The log tiers' writer (`log_tiers.enabled`).
    pub logs: Option<crate::storage::logs::writer::LogWriter>,
    pub supervision: SupervisorConfig,
    pub strategies: StrategyRegistry,
    pub tenants: Arc<DashMap<TenantId, Arc<TenantContext>>>,
    /// Where tenants' actors send audit events (connected to the security service at start-up).
    pub audit: super::tenant::AuditSink,
    /// Where registry model versions come from (connected to the security service at start-up).
    pub model_files: crate::models::registry::ModelFilesSlot,
    prediction_limits: crate::domain::tier::TierLimits,
    /// Per-tier limits of tenants' WebAssembly modules: (memory bytes, fuel per call).
    wasm_quotas: (
        crate::domain::tier::TierLimits<u64>,
        crate::domain::tier::TierLimits<u64>,
    ),
    api_keys: Arc<DashMap<String, TenantId>>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    /// The threads of tenants' WebAssembly strategies (`threads.module_threads`), each with the live
    /// deadline of one call set.
    module_arbiters: Arc<Vec<ArbiterHandle>>,
    mt5: Mt5Settings,
    /// Set in cluster mode (`cluster.enabled`): tenants run only under this node's lease.
    pub placement: Option<Arc<dyn Placement>>,
    /// The log mover, once started (`Application::build`).
    pub log_tiers: Option<crate::storage::logs::mover::LogTiersHandle>,
}

impl Runtime {
    /// Starts the root supervisor and its storage children in the current arbiter.
    pub fn start(settings: &Settings, metrics: Arc<Metrics>) -> Self {
        let events = EventLog::new(settings.supervision.history, metrics.clone());
        let health = HealthBoard::new(metrics.clone());
        let supervision = SupervisorConfig::from(&settings.supervision);
        let data_dir = settings.storage.data_dir.clone();
        health.expect(relational::NAME);
        health.expect(timeseries::NAME);
        let mut children = Vec::new();
        let relational = match settings.storage.postgres_url.trim() {
            "" => {
                let slot = StoreSlot::<Relational>::default();
                children.push(storage_spec(
                    relational::NAME,
                    data_dir.clone(),
                    health.clone(),
                    slot.clone(),
                    Relational::new,
                ));
                RelationalStore::Embedded(slot)
            }
            url => {
                let slot = StoreSlot::<PgRelational>::default();
                let (url, board, published) = (url.to_owned(), health.clone(), slot.clone());
                children.push(ChildSpec::new(
                    format!("storage.{}", relational::NAME),
                    RestartPolicy::Permanent,
                    move |cx: ChildContext| {
                        let addr =
                            PgRelational::new(url.clone(), board.clone(), cx.notifier).start();
                        published.set(addr.clone());
                        Ok(addr.recipient())
                    },
                ));
                RelationalStore::Postgres(slot)
            }
        };
        let timeseries = match settings.storage.clickhouse() {
            Some(cfg) => {
                let slot = StoreSlot::<ClickHouseSeries>::default();
                let (board, published) = (health.clone(), slot.clone());
                children.push(ChildSpec::new(
                    format!("storage.{}", timeseries::NAME),
                    RestartPolicy::Permanent,
                    move |cx: ChildContext| {
                        let addr =
                            ClickHouseSeries::new(cfg.clone(), board.clone(), cx.notifier).start();
                        published.set(addr.clone());
                        Ok(addr.recipient())
                    },
                ));
                TimeSeriesStore::ClickHouse(slot)
            }
            None => {
                let slot = StoreSlot::<TimeSeries>::default();
                children.push(storage_spec(
                    timeseries::NAME,
                    data_dir,
                    health.clone(),
                    slot.clone(),
                    TimeSeries::new,
                ));
                TimeSeriesStore::Embedded(slot)
            }
        };
        let cache = match settings.storage.redis_url.trim() {
            "" => None,
            url => {
                let slot = StoreSlot::<RedisCache>::default();
                let (url, board, published) = (url.to_owned(), health.clone(), slot.clone());
                health.expect(crate::storage::cache::NAME);
                children.push(ChildSpec::new(
                    format!("storage.{}", crate::storage::cache::NAME),
                    RestartPolicy::Permanent,
                    move |cx: ChildContext| {
                        let addr = RedisCache::new(url.clone(), board.clone(), cx.notifier).start();
                        published.set(addr.clone());
                        Ok(addr.recipient())
                    },
                ));
                Some(slot)
            }
        };
        let root = Supervisor::root("system", supervision, events.clone(), children).start();
        // Tenants are spread over the trading threads (arbiters) so one tenant's work cannot starve
        // another's, and nothing but trading runs on them (`threads.trading_threads`).
        let threads = settings.threads.trading();
        let arbiters = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let deadline = match settings.threads.module_call_deadline_us {
            0 => None,
            us => Some(Duration::from_micros(us)),
        };
        let module_arbiters = (0..settings.threads.module_threads.max(1))
            .map(|_| {
                let handle = Arbiter::new().handle();
                handle.spawn_fn(move || crate::strategies::wasm::set_call_deadline(deadline));
                handle
            })
            .collect();
        Self {
            root,
            events: events.clone(),
            health,
            metrics,
            relational,
            timeseries,
            cache,
            logs: settings.log_tiers.enabled.then(|| {
                crate::storage::logs::writer::LogWriter::start(settings, Some(events.clone()))
            }),
            bus: match settings.storage.redis_url.trim() {
                "" => EventBus::local(),
                url => EventBus::with_redis(url, &settings.namespace(), Some(events.clone())),
            },
            supervision,
            strategies: StrategyRegistry::default(),
            tenants: Arc::new(DashMap::new()),
            audit: super::tenant::AuditSink::default(),
            model_files: Default::default(),
            prediction_limits: settings.quotas.predictions.clone(),
            wasm_quotas: (
                settings.quotas.wasm_memory_bytes.clone(),
                settings.quotas.wasm_fuel_per_call.clone(),
            ),
            api_keys: Arc::new(DashMap::new()),
            arbiters: Arc::new(arbiters),
            module_arbiters: Arc::new(module_arbiters),
            mt5: settings.mt5.clone(),
            placement: None,
            log_tiers: None,
        }
    }

    /// Starts a tenant's subtree under the root, on one of the worker arbiters. In cluster mode the tenant
    /// starts under this node's lease on it (taken now if free; refused while another node owns it).
    pub async fn start_tenant(
        &self,
        settings: TenantSettings,
    ) -> Result<Arc<TenantContext>, TenantError> {
        match &self.placement {
            Some(placement) => placement.adopt(settings).await,
            None => self.start_tenant_fenced(settings, None).await,
        }
    }

    /// Starts a tenant whose lease this node holds: every relational write of its actors carries `token`.
    pub async fn start_tenant_fenced(
        &self,
        settings: TenantSettings,
        fence: Option<i64>,
    ) -> Result<Arc<TenantContext>, TenantError> {
        let id = TenantId(settings.id.clone());
        if self.tenants.contains_key(&id) {
            return Err(TenantError::Duplicate(id.0));
        }
        let keys = settings.api_keys.clone();
        let resolved = self
            .model_files
            .resolve(&settings.id, &settings.models)
            .await
            .map_err(|e| TenantError::Invalid {
                tenant: settings.id.clone(),
                message: e.to_string(),
            })?;
        // The tenant's own strategy kinds: the process's, and the module versions its strategies name.
        let registry = self.strategies.layer();
        for s in &settings.strategies {
            self.load_module(&settings.id, &settings.tier, &registry, &s.kind)
                .await
                .map_err(|e| TenantError::Invalid {
                    tenant: settings.id.clone(),
                    message: format!("strategy `{}`: {e}", s.id),
                })?;
        }
        let tenant = TenantContext::new(
            settings,
            TenantDeps {
                registry,
                mt5: self.mt5.clone(),
                metrics: self.metrics.clone(),
                relational: self.relational.clone(),
                timeseries: self.timeseries.clone(),
                cache: self.cache.clone(),
                bus: self.bus.clone(),
                supervision: self.supervision,
                audit: self.audit.clone(),
                prediction_limits: self.prediction_limits.clone(),
                fence,
                module_arbiter: self.module_arbiters
                    [self.tenants.len() % self.module_arbiters.len()]
                .clone(),
            },
            &resolved,
        )?;
        if let Some(logs) = &self.logs {
            logs.follow(&self.bus, &tenant.id.0);
        }
        // The tenant's row first: its orders and fills reference it.
        let ensure = crate::storage::relational::EnsureTenant {
            id: tenant.id.0.clone(),
            name: tenant.settings.name.clone(),
            tier: tenant.tier(),
        };
        let mut stored = Err(crate::storage::StorageError::Unavailable(
            "storage never became ready".into(),
        ));
        for _ in 0..100 {
            stored = self.relational.ensure_tenant(ensure.clone()).await;
            if stored.as_ref().map_or_else(|e| !e.is_retryable(), |_| true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stored.map_err(|e| TenantError::Invalid {
            tenant: tenant.id.0.clone(),
            message: format!("storing the tenant: {e}"),
        })?;
        let arbiter = self.arbiters[self.tenants.len() % self.arbiters.len()].clone();
        self.tenants.insert(id.clone(), tenant.clone());
        for key in keys {
            self.api_keys.insert(key, id.clone());
        }
        if let Err(e) = self.start_child(tenant.spec(arbiter)).await {
            self.forget(&id);
            return Err(e.into());
        }
        // The tenant supervisor starts its children in `started`, before it answers any message: once it
        // answers, every actor of the tenant is reachable.
        if let Some(sup) = tenant.supervisor.get() {
            let _ = sup.send(GetChildren).await;
        }
        Ok(tenant)
    }

    /// The limits of a module of a tenant of `tier` (`[quotas] wasm_memory_bytes`, `wasm_fuel_per_call`).
    pub fn wasm_limits(&self, tier: &str) -> WasmLimits {
        WasmLimits::within(self.wasm_quotas.0.of(tier), self.wasm_quotas.1.of(tier))
    }

    /// Makes strategy kind `kind` buildable in `registry` when it names a pinned version of one of
    /// `tenant`'s modules (`wasm:<name>@<version>`): read from the store, decrypted, loaded within the
    /// tier's limits, registered. Nothing to do for other kinds or a module already registered.
    pub async fn load_module(
        &self,
        tenant: &str,
        tier: &str,
        registry: &StrategyRegistry,
        kind: &str,
    ) -> Result<(), ModuleLoadError> {
        let Some((name, Some(version))) = crate::strategies::wasm::parse_kind(kind) else {
            return Ok(());
        };
        if registry.module(kind).is_some() {
            return Ok(());
        }
        let file = self
            .model_files
            .module(tenant, name, version)
            .await
            .map_err(|e| {
                if e.is_retryable() {
                    ModuleLoadError::Unavailable(e.to_string())
                } else {
                    ModuleLoadError::Invalid(e.to_string())
                }
            })?
            .ok_or_else(|| {
                ModuleLoadError::Missing(format!("module `{name}` has no version `{version}`"))
            })?;
        let manifest = serde_json::from_str(&file.manifest).map_err(|e| {
            ModuleLoadError::Invalid(format!("the stored manifest of module `{name}`: {e}"))
        })?;
        let module = WasmModule::load(&file.bytes, manifest, self.wasm_limits(tier))
            .map_err(|e| ModuleLoadError::Invalid(format!("module `{name}`: {e}")))?;
        registry.register_wasm(&format!("{name}@{version}"), module);
        Ok(())
    }

    /// Starts a failed tenant again from its stored state (its document; the portfolio reloads orders and
    /// fills, risk its kill switch). Refused while the tenant runs.
    pub async fn restart_tenant(&self, id: &str) -> Result<Arc<TenantContext>, TenantError> {
        let key = TenantId(id.to_owned());
        let old =
            self.tenants
                .get(&key)
                .map(|t| t.clone())
                .ok_or_else(|| TenantError::Invalid {
                    tenant: id.to_owned(),
                    message: "no such tenant".into(),
                })?;
        if old.failure().is_none() {
            return Err(TenantError::Duplicate(id.to_owned()));
        }
        let settings = old.document();
        self.forget(&key);
        self.start_tenant(settings).await
    }

    /// Stops a running tenant on this node and forgets it: its actors drain (the portfolio writes what it
    /// holds, sessions close so bridges reconnect to the new owner), waiting at most `timeout`. False when
    /// the tenant did not run here.
    /// Its configured API keys stay known (`tenant_of_key`): a bridge that reconnects meanwhile is told to
    /// retry (or where the tenant went), not that its key is unknown.
    pub async fn stop_tenant(&self, id: &str, timeout: Duration) -> bool {
        let Some((_, tenant)) = self.tenants.remove(&TenantId(id.to_owned())) else {
            return false;
        };
        for session in tenant.all_sessions() {
            let _ = session
                .send(Shutdown {
                    reason: "the tenant moves to another node: reconnect".into(),
                })
                .await;
        }
        if let Some(sup) = tenant.supervisor.get() {
            let drained = sup.send(Shutdown {
                reason: "the tenant moves to another node".into(),
            });
            if tokio::time::timeout(timeout, drained).await.is_err() {
                tracing::warn!(tenant = id, ?timeout, "the tenant did not drain in time");
            }
        }
        // Its slot under the root goes too (already stopped: nothing more is sent to it).
        let _ = self
            .root
            .send(crate::runtime::supervisor::StopChild {
                name: format!("tenant:{id}"),
            })
            .await;
        true
    }

    /// Takes a tenant out of this node's tables (its context and its API keys); answers what was there.
    fn forget(&self, id: &TenantId) -> Option<Arc<TenantContext>> {
        self.api_keys.retain(|_, t| t != id);
        self.tenants.remove(id).map(|(_, t)| t)
    }

    /// The tenant a configured API key belongs to, whether or not the tenant runs this moment.
    pub fn tenant_of_key(&self, key: &str) -> Option<TenantId> {
        self.api_keys.get(key).map(|id| id.clone())
    }

    pub fn tenant(&self, id: &str) -> Option<Arc<TenantContext>> {
        self.tenants
            .get(&TenantId(id.to_owned()))
            .map(|t| t.clone())
    }

    /// Adds a child under the root (tenant supervisors).
    pub async fn start_child(&self, spec: ChildSpec) -> Result<(), SupervisionError> {
        self.root
            .send(StartChild(spec))
            .await
            .map_err(|_| SupervisionError::ShuttingDown)?
    }

    /// Whether the root and every storage actor are up; the failing ones otherwise.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        let mut failing: Vec<(String, String)> = self
            .health
            .snapshot()
            .into_iter()
            .filter_map(|(name, h)| match h {
                crate::storage::Health::Healthy => None,
                crate::storage::Health::Starting => Some((name, "starting".to_owned())),
                crate::storage::Health::Unhealthy { reason } => Some((name, reason)),
            })
            .collect();
        if !self.root.connected() {
            failing.push(("system".into(), "root supervisor stopped".into()));
        }
        failing
    }

    /// The root's children, for the admin API and tests.
    pub async fn children(&self) -> Vec<crate::runtime::supervisor::ChildInfo> {
        self.root.send(GetChildren).await.unwrap_or_default()
    }

    /// Closes every MT5 bridge connection with a reason (their sessions stop; outboxes are rebuilt from the
    /// portfolio on the next start).
    pub async fn close_sessions(&self) {
        let sessions: Vec<_> = self.tenants.iter().flat_map(|t| t.all_sessions()).collect();
        for s in sessions {
            let _ = s
                .send(Shutdown {
                    reason: "trellis is shutting down".into(),
                })
                .await;
        }
    }

    /// Drains the whole tree in order; gives up waiting after `timeout`.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let drained = self.root.send(Shutdown {
            reason: "trellis is shutting down".into(),
        });
        let done = matches!(tokio::time::timeout(timeout, drained).await, Ok(Ok(())));
        for arbiter in self.arbiters.iter().chain(self.module_arbiters.iter()) {
            arbiter.stop();
        }
        done
    }
}

/// A permanent storage child: each incarnation gets a fresh actor and is published in `slot`.
fn storage_spec<A>(
    name: &'static str,
    data_dir: PathBuf,
    health: HealthBoard,
    slot: StoreSlot<A>,
    new: fn(PathBuf, HealthBoard, crate::runtime::supervisor::ExitNotifier) -> A,
) -> ChildSpec
where
    A: Actor<Context = Context<A>> + Handler<Shutdown>,
{
    ChildSpec::new(
        format!("storage.{name}"),
        RestartPolicy::Permanent,
        move |cx: ChildContext| {
            let addr = new(data_dir.clone(), health.clone(), cx.notifier).start();
            slot.set(addr.clone());
            Ok(addr.recipient())
        },
    )
}

/// Why a tenant's strategy module could not be made a strategy kind.
#[derive(Debug, thiserror::Error)]
pub enum ModuleLoadError {
    /// The tenant has no such module version (rejected).
    #[error("{0}")]
    Missing(String),
    /// The stored module or its manifest cannot be used (rejected).
    #[error("{0}")]
    Invalid(String),
    /// The store is not reachable now (retry).
    #[error("the module store is unavailable: {0}")]
    Unavailable(String),
}
