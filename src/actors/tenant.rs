//! A tenant's subtree and the handles its actors use to reach each other.
//!
//! ```text
//! tenant:<id> (supervisor, temporary)
//! ├── market_data   (permanent)
//! ├── risk          (permanent)
//! ├── portfolio     (permanent)   reloads orders and fills from storage when it starts
//! ├── strategies    (permanent supervisor with per-child budgets)
//! │   ├── strategy:<id> (permanent) one per configured instance, warmed up from recent bars; over its own
//! │   │                 restart budget it is disabled (state `failed`), its siblings and the tenant untouched
//! │   └── model:<id>    (permanent) one per model deployment, the same way
//! └── session:<login> (permanent) added when a terminal first connects
//! ```
//!
//! Every actor of the subtree runs on the tenant's arbiter (thread), so one tenant's work never waits
//! behind another's on the same thread unless they share it. Actors find each other through [`Slot`]s that
//! each factory refills, so a restarted actor is reachable at once.
//!
//! ## Who owns what
//!
//! Every piece of a tenant's mutable state has one owner. Others ask the owner by message, or read the
//! snapshot it publishes ([`Published`]); nobody else can write it, because the write handle
//! ([`Publisher`]) is a private field handed only to the owner's factory.
//!
//! | state | owner | others |
//! |---|---|---|
//! | strategy routes (the configured instances) | `MarketData`, which routes bars by them | admin API sends `SetRoute`/`DropRoute`; document and listings read the snapshot |
//! | latest quote per symbol | `MarketData` (updated in place per tick) | `Portfolio` marks positions from the snapshot |
//! | tier and risk limits | `Risk` | admin API sends `SetRiskLimits`/`SetTier`; rate limits and quotas read the snapshot |
//! | sessions by login | the tenant supervisor (session factories run in it) | portfolio, risk, API read the snapshot |
//! | strategy hosts by id | the `strategies` supervisor (strategy factories run in it) | market data and portfolio read the snapshot |
//! | model deployments (versions, weights, budget) | `MarketData`, which routes bars by them | admin API sends `SetDeployment`/`DropDeployment`, then `Redeploy` to the host; hosts and listings read the snapshot |
//! | model hosts by deployment | the `strategies` supervisor (model factories run in it) | market data reads the snapshot |
//! | predictions made this minute (the tier's quota) | [`PredictionQuota`], a counter the model hosts share | hosts take from it |
//! | a deployment's features, recent predictions, version counts and rollbacks | its `ModelHost` | `GetModelState`, events |
//! | failure of the tenant | the root supervisor (its hook) | API reads the snapshot |
//! | orders, fills, positions, P&L | `Portfolio` | `GetPortfolio` (the API through `portfolio_reads`), events |
//! | kill switch, blind accounts, daily loss | `Risk` | `GetRiskState` |
//! | a connection's sequence numbers, outbox | its `Mt5Session` | `GetSessionState` |
//!
//! A restarted owner starts from what its predecessor published (the publisher outlives incarnations). The
//! admin API makes one change at a time (`admin`): it tells the owner, waits for its answer, then stores the
//! tenant's document made from the snapshots. An owner that is restarting answers nothing: the change is
//! refused as unavailable (503) and can be retried.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use rust_decimal::Decimal;

use super::market_data::{Deployments, MarketData};
use super::model::ModelHost;
use super::mt5_session::Mt5Session;
use super::portfolio::Portfolio;
use super::risk::Risk;
use super::strategy::StrategyHost;
use crate::config::Mt5Settings;
use crate::domain::events::EventKind;
use crate::domain::tenant::{StrategySettings, TenantSettings};
use crate::domain::{Login, Symbol, TenantId, Timeframe};
use crate::metrics::Metrics;
use crate::models::deployment::Deployment;
use crate::models::registry::Resolved;
use crate::runtime::published::{publish, Published, Publisher};
use crate::runtime::slot::Slot;
use crate::runtime::supervisor::{
    ChildContext, ChildSpec, RestartPolicy, StartChild, SupervisionError, Supervisor,
    SupervisorConfig,
};
use crate::storage::cache::RedisCache;
use crate::storage::{RelationalStore, StoreSlot, TimeSeriesStore};
use crate::strategies::StrategyRegistry;

/// Contract size when a symbol has none configured (FX: 100 000 units per lot).
pub const DEFAULT_CONTRACT_SIZE: i64 = 100_000;

/// The latest quote of a symbol.
#[derive(Debug, Clone, Copy)]
pub struct Quote {
    pub bid: Decimal,
    pub ask: Decimal,
    pub time_msc: i64,
}

/// A strategy instance as the tenant runs it.
#[derive(Debug, Clone)]
pub struct StrategyRoute {
    pub settings: StrategySettings,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
}

/// An event for the tenant's audit chain, from an actor (which has no database of its own).
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub tenant: String,
    pub action: &'static str,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// Where actors send audit events: the security service appends them, in order, to the tenant's hash chain.
/// Set once the service runs; unbounded because audit events are never dropped (and are rare next to
/// ticks: one per refused order or tripped switch).
#[derive(Clone, Default)]
pub struct AuditSink(Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<AuditEvent>>>);

impl AuditSink {
    pub fn connect(&self, tx: tokio::sync::mpsc::UnboundedSender<AuditEvent>) {
        let _ = self.0.set(tx);
    }

    pub fn record(&self, e: AuditEvent) {
        match self.0.get() {
            Some(tx) => {
                if tx.send(e).is_err() {
                    tracing::error!("audit sink closed: an audit event was not recorded");
                }
            }
            None => tracing::warn!(action = e.action, tenant = %e.tenant, "no audit sink yet"),
        }
    }
}

/// The tenant's tier and risk limits, as one snapshot: both are owned by the tenant's `Risk` actor.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    pub tier: String,
    pub risk: crate::domain::tenant::RiskSettings,
}

/// What a tenant's actors and the HTTP handlers share: immutable settings, handles to the actors, and read-only
/// views of the state each actor owns (see the module docs for who owns what).
pub struct TenantContext {
    pub id: TenantId,
    pub settings: TenantSettings,
    pub symbols: HashSet<String>,
    contract_sizes: HashMap<String, Decimal>,
    /// The strategy instances by id, as `MarketData` (their owner) last published them. The admin API changes
    /// them with [`SetRoute`](super::messages::SetRoute) and [`DropRoute`](super::messages::DropRoute).
    pub strategies: Published<BTreeMap<String, StrategyRoute>>,
    routes: Publisher<BTreeMap<String, StrategyRoute>>,
    pub registry: StrategyRegistry,
    /// Tier and risk limits, owned by `Risk` (changed with `SetRiskLimits` and `SetTier`).
    pub limits: Published<TenantLimits>,
    limits_owner: Publisher<TenantLimits>,
    /// Serialises changes to the tenant's stored document (admin API): a handler computes the new document
    /// from the snapshots, stores it, and tells the owners, one change at a time.
    pub admin: tokio::sync::Mutex<()>,
    pub mt5: Mt5Settings,
    pub metrics: Arc<Metrics>,
    pub relational: RelationalStore,
    pub timeseries: TimeSeriesStore,
    pub cache: Option<StoreSlot<RedisCache>>,
    pub bus: crate::runtime::bus::EventBus,
    pub supervisor: Slot<Supervisor>,
    /// The tenant's `strategies` supervisor (per-child budgets): strategies are started, stopped and
    /// re-enabled there.
    pub strategy_supervisor: Slot<Supervisor>,
    /// Why the tenant's subtree failed for good (its core actors over their restart budget), if it did:
    /// published once by the root supervisor's hook, read by the API. A failed tenant trades no more until
    /// restarted.
    failure: Published<Option<String>>,
    failure_owner: Publisher<Option<String>>,
    pub market_data: Slot<MarketData>,
    pub risk: Slot<Risk>,
    pub portfolio: Slot<Portfolio>,
    /// The MT5 sessions by login, published by the tenant supervisor (their factories run there).
    pub sessions: Published<HashMap<Login, Addr<Mt5Session>>>,
    sessions_owner: Publisher<HashMap<Login, Addr<Mt5Session>>>,
    /// The running strategy hosts by strategy id, published by the `strategies` supervisor (their factories
    /// run there). A stopped strategy's address stays until it starts again, disconnected.
    pub strategy_hosts: Published<HashMap<String, Addr<StrategyHost>>>,
    hosts_owner: Publisher<HashMap<String, Addr<StrategyHost>>>,
    /// The model deployments by id (their versions loaded and validated), owned by `MarketData`.
    pub deployments: Published<Deployments>,
    deployments_owner: Publisher<Deployments>,
    /// Predictions made this minute against the tier's quota.
    pub prediction_quota: PredictionQuota,
    /// The running model hosts by deployment id, published by the `strategies` supervisor.
    pub model_hosts: Published<HashMap<String, Addr<ModelHost>>>,
    model_hosts_owner: Publisher<HashMap<String, Addr<ModelHost>>>,
    /// The latest quote per symbol, owned by `MarketData` (updated in place on every tick).
    pub quotes: Published<HashMap<Symbol, Quote>>,
    quotes_owner: Publisher<HashMap<Symbol, Quote>>,
    /// What trading clients watch of the market data and PnL (see [`super::feed`]).
    pub feed: Arc<super::feed::ClientFeed>,
    /// What the API reads of the portfolio, at a bounded rate (see [`super::portfolio::PortfolioReads`]).
    pub portfolio_reads: super::portfolio::PortfolioReads,
    pub supervision: SupervisorConfig,
    pub audit: AuditSink,
    /// The fencing token of this node's lease on the tenant (cluster mode): every relational write carries
    /// it and PostgreSQL refuses it once another node took the tenant. `None` on a single node.
    pub fence: Option<i64>,
    /// The thread the tenant's WebAssembly strategies run on, apart from its trading thread (a module that
    /// spins to its limit delays other modules, never the native strategies, risk or the portfolio).
    pub module_arbiter: actix::ArbiterHandle,
}

/// Everything the runtime hands a new tenant.
pub struct TenantDeps {
    pub registry: StrategyRegistry,
    pub mt5: Mt5Settings,
    pub metrics: Arc<Metrics>,
    pub relational: RelationalStore,
    pub timeseries: TimeSeriesStore,
    pub cache: Option<StoreSlot<RedisCache>>,
    pub bus: crate::runtime::bus::EventBus,
    pub supervision: SupervisorConfig,
    pub audit: AuditSink,
    /// Predictions per minute by tier.
    pub prediction_limits: crate::domain::tier::TierLimits,
    /// The lease's fencing token in cluster mode.
    pub fence: Option<i64>,
    /// The thread this tenant's WebAssembly strategies run on.
    pub module_arbiter: actix::ArbiterHandle,
}

/// A tenant's predictions per minute against its tier's quota, all deployments and versions together.
///
/// The one piece of tenant state several actors write: each model host takes one unit per prediction.
/// Like the API's rate limiter it is a limiter, not data, so it is a counter behind a mutex (held for an
/// addition) rather than an actor the hot path would have to message.
pub struct PredictionQuota {
    limits: crate::domain::tier::TierLimits,
    window: std::sync::Mutex<(i64, u32)>,
}

impl PredictionQuota {
    pub fn new(limits: crate::domain::tier::TierLimits) -> Self {
        Self {
            limits,
            window: std::sync::Mutex::new((i64::MIN, 0)),
        }
    }

    /// Takes one prediction from the quota of `tier` in the minute of `now_ms`: `Err(quota)` when the
    /// minute's quota is spent.
    pub fn take(&self, tier: &str, now_ms: i64) -> Result<(), u32> {
        let quota = self.limits.per_minute(tier);
        let minute = now_ms.div_euclid(60_000);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0 != minute {
            *w = (minute, 0);
        }
        if w.1 >= quota {
            return Err(quota);
        }
        w.1 += 1;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant `{tenant}`: {message}")]
    Invalid { tenant: String, message: String },
    #[error("tenant `{0}` already runs")]
    Duplicate(String),
    #[error(transparent)]
    Supervision(#[from] SupervisionError),
    #[error("tenant supervisor unreachable, retry later")]
    Unavailable,
}

impl TenantContext {
    /// Validates the settings (every strategy is built once to check its parameters; every model version
    /// loaded, registry versions from `resolved`).
    pub fn new(
        settings: TenantSettings,
        deps: TenantDeps,
        resolved: &Resolved,
    ) -> Result<Arc<Self>, TenantError> {
        let invalid = |message: String| TenantError::Invalid {
            tenant: settings.id.clone(),
            message,
        };
        let mut deployments = BTreeMap::new();
        for m in &settings.models {
            if !settings.symbols.contains(&m.symbol) {
                return Err(invalid(format!(
                    "model deployment `{}`: `{}` is not one of the tenant's symbols",
                    m.id, m.symbol
                )));
            }
            // Registry versions were admitted within the tier's limits at upload; files from the
            // configuration are the operator's, held to the ceiling.
            let d = Deployment::load(m, resolved, &crate::models::cost::ModelLimits::CEILING)
                .map_err(invalid)?;
            if deployments.insert(m.id.clone(), Arc::new(d)).is_some() {
                return Err(invalid(format!("model deployment `{}` twice", m.id)));
            }
        }
        let mut strategies = BTreeMap::new();
        for s in &settings.strategies {
            let route = Self::route(&deps.registry, s).map_err(invalid)?;
            if let Some(m) = s.model.as_ref().filter(|m| !deployments.contains_key(*m)) {
                return Err(invalid(format!(
                    "strategy `{}`: no model deployment `{m}`",
                    s.id
                )));
            }
            strategies.insert(s.id.clone(), route);
        }
        let (routes, strategies) = publish(strategies);
        let (limits_owner, limits) = publish(TenantLimits {
            tier: settings.tier.clone(),
            risk: settings.risk.clone(),
        });
        let (failure_owner, failure) = publish(None);
        let (sessions_owner, sessions) = publish(HashMap::new());
        let (hosts_owner, strategy_hosts) = publish(HashMap::new());
        let (quotes_owner, quotes) = publish(HashMap::new());
        let (model_hosts_owner, model_hosts) = publish(HashMap::new());
        let (deployments_owner, deployments) = publish(deployments);
        Ok(Arc::new(Self {
            id: TenantId(settings.id.clone()),
            symbols: settings.symbols.iter().cloned().collect(),
            contract_sizes: settings
                .contract_sizes
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            strategies,
            routes,
            limits,
            limits_owner,
            admin: tokio::sync::Mutex::new(()),
            settings,
            registry: deps.registry,
            mt5: deps.mt5,
            metrics: deps.metrics,
            relational: deps.relational,
            timeseries: deps.timeseries,
            cache: deps.cache,
            bus: deps.bus,
            supervisor: Slot::default(),
            strategy_supervisor: Slot::default(),
            failure,
            failure_owner,
            market_data: Slot::default(),
            risk: Slot::default(),
            portfolio: Slot::default(),
            sessions,
            sessions_owner,
            strategy_hosts,
            hosts_owner,
            deployments,
            deployments_owner,
            prediction_quota: PredictionQuota::new(deps.prediction_limits),
            model_hosts,
            model_hosts_owner,
            quotes,
            quotes_owner,
            feed: Arc::default(),
            portfolio_reads: Default::default(),
            supervision: deps.supervision,
            audit: deps.audit,
            fence: deps.fence,
            module_arbiter: deps.module_arbiter,
        }))
    }

    /// Checks a strategy's settings (timeframe, parameters) by building it once.
    pub fn route(
        registry: &StrategyRegistry,
        s: &StrategySettings,
    ) -> Result<StrategyRoute, String> {
        let timeframe = Timeframe::parse(&s.timeframe)
            .ok_or_else(|| format!("strategy `{}`: unknown timeframe `{}`", s.id, s.timeframe))?;
        registry
            .build(&s.kind, &s.params, s.volume.get())
            .map_err(|e| format!("strategy `{}`: {e}", s.id))?;
        Ok(StrategyRoute {
            settings: s.clone(),
            symbol: Symbol::new(s.symbol.clone()),
            timeframe,
        })
    }

    /// The supervisor child that hosts one strategy instance. Disabled for failing too often, it is
    /// audited, announced to the tenant's clients, and its position follows its `on_failure` policy.
    pub fn strategy_spec(self: &Arc<Self>, route: StrategyRoute) -> ChildSpec {
        let t = self.clone();
        let hook = {
            let t = self.clone();
            let route = route.clone();
            move |reason: &str| t.strategy_disabled(&route, reason)
        };
        ChildSpec::new(
            format!("strategy:{}", route.settings.id),
            RestartPolicy::Permanent,
            move |cx: ChildContext| {
                let strategy = t
                    .registry
                    .build(
                        &route.settings.kind,
                        &route.settings.params,
                        route.settings.volume.get(),
                    )
                    .map_err(|e| e.to_string())?;
                let id = route.settings.id.clone();
                let host = StrategyHost::new(t.clone(), route.clone(), strategy, cx.notifier);
                let addr = if crate::strategies::wasm::parse_kind(&route.settings.kind).is_some() {
                    StrategyHost::start_in_arbiter(&t.module_arbiter, move |_| host)
                } else {
                    host.start()
                };
                t.hosts_owner.modify(|hosts| {
                    hosts.insert(id, addr.clone());
                });
                Ok(addr.recipient())
            },
        )
        .on_disabled(hook)
    }

    /// The supervisor child that hosts model deployment `id` (as `MarketData` publishes it when the child
    /// starts or restarts). Disabled for failing too often, it is audited and announced; the strategies
    /// that trade its predictions keep their positions and get no more.
    pub fn model_spec(self: &Arc<Self>, id: &str) -> ChildSpec {
        let t = self.clone();
        let hook = {
            let t = self.clone();
            let id = id.to_owned();
            move |reason: &str| {
                tracing::error!(tenant = %t.id, deployment = %id, %reason, "model deployment disabled");
                let detail =
                    serde_json::json!({ "deployment": id, "state": "failed", "reason": reason });
                t.audit("model.disabled", "supervisor", detail.clone());
                t.publish(EventKind::Model, detail);
            }
        };
        let id = id.to_owned();
        ChildSpec::new(
            format!("model:{id}"),
            RestartPolicy::Permanent,
            move |cx: ChildContext| {
                let deployment = t
                    .deployments
                    .read()
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| format!("model deployment `{id}` is no longer deployed"))?;
                let host = ModelHost::new(t.clone(), deployment, cx.notifier)?;
                let addr = host.start();
                let id = id.clone();
                t.model_hosts_owner.modify(|hosts| {
                    hosts.insert(id, addr.clone());
                });
                Ok(addr.recipient())
            },
        )
        .on_disabled(hook)
    }

    fn strategy_disabled(&self, route: &StrategyRoute, reason: &str) {
        let s = &route.settings;
        tracing::error!(tenant = %self.id, strategy = %s.id, on_failure = ?s.on_failure, %reason, "strategy disabled");
        // Counted in trellis_supervision_events_total{kind="disabled"} by the supervisor's event log.
        let detail = serde_json::json!({
            "strategy": s.id,
            "state": "failed",
            "reason": reason,
            "on_failure": s.on_failure,
        });
        self.audit("strategy.disabled", "supervisor", detail.clone());
        self.publish(EventKind::Strategy, detail);
        if s.on_failure == crate::domain::tenant::OnFailure::Flatten {
            if let Some(portfolio) = self.portfolio.get() {
                portfolio.do_send(super::messages::Signal {
                    origin: None,
                    strategy_id: s.id.clone(),
                    account: s.account.map(Login::new),
                    symbol: route.symbol.clone(),
                    target: Decimal::ZERO,
                    at_ms: crate::domain::now_ms(),
                    cause: None,
                });
            }
        }
    }

    /// Why the tenant failed, if it did (see `POST /api/v1/tenants/{t}/restart`).
    pub fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// The root stopped restarting this tenant's subtree: record it, tell the audit log and the clients.
    fn tenant_failed(&self, reason: &str) {
        tracing::error!(tenant = %self.id, %reason, "tenant failed: its trading is stopped until it is restarted");
        self.failure_owner.set(Some(reason.to_owned()));
        let detail = serde_json::json!({ "state": "failed", "reason": reason });
        self.audit("tenant.failed", "supervisor", detail.clone());
        self.publish(EventKind::Tenant, detail);
    }

    pub fn tier(&self) -> String {
        self.limits.read().tier.clone()
    }

    /// The risk limits in force.
    pub fn risk_limits(&self) -> crate::domain::tenant::RiskSettings {
        self.limits.read().risk.clone()
    }

    /// The tenant as it runs now, as stored in the tenant registry.
    pub fn document(&self) -> TenantSettings {
        let mut doc = self.settings.clone();
        let limits = self.limits.get();
        doc.tier = limits.tier;
        doc.risk = limits.risk;
        doc.strategies = self
            .strategies
            .read()
            .values()
            .map(|r| r.settings.clone())
            .collect();
        doc.models = self
            .deployments
            .read()
            .values()
            .map(|d| d.settings.clone())
            .collect();
        doc
    }

    /// Publishes an event of this tenant to its clients (`/ws/events`), on every node.
    pub fn publish(&self, kind: crate::domain::events::EventKind, data: serde_json::Value) {
        self.bus.publish(crate::runtime::bus::TenantEvent {
            tenant: self.id.0.clone(),
            kind,
            data,
            local: true,
        });
    }

    /// Appends to this tenant's audit chain (asynchronously, in order).
    pub fn audit(&self, action: &'static str, actor: &str, detail: serde_json::Value) {
        self.audit.record(AuditEvent {
            tenant: self.id.0.clone(),
            action,
            actor: actor.to_owned(),
            detail,
        });
    }

    pub fn contract_size(&self, symbol: &str) -> Decimal {
        self.contract_sizes
            .get(symbol)
            .copied()
            .unwrap_or(Decimal::from(DEFAULT_CONTRACT_SIZE))
    }

    /// The tenant supervisor's spec, to start under the root in `arbiter`.
    pub fn spec(self: &Arc<Self>, arbiter: ArbiterHandle) -> ChildSpec {
        let mut children = vec![
            {
                let t = self.clone();
                ChildSpec::new(
                    "market_data",
                    RestartPolicy::Permanent,
                    move |cx: ChildContext| {
                        let addr = MarketData::new(
                            t.clone(),
                            t.routes.clone(),
                            t.deployments_owner.clone(),
                            t.quotes_owner.clone(),
                            cx.notifier,
                        )
                        .start();
                        t.market_data.set(addr.clone());
                        Ok(addr.recipient())
                    },
                )
            },
            {
                let t = self.clone();
                ChildSpec::new("risk", RestartPolicy::Permanent, move |cx: ChildContext| {
                    let addr = Risk::new(t.clone(), t.limits_owner.clone(), cx.notifier).start();
                    t.risk.set(addr.clone());
                    Ok(addr.recipient())
                })
            },
            {
                let t = self.clone();
                ChildSpec::new(
                    "portfolio",
                    RestartPolicy::Permanent,
                    move |cx: ChildContext| {
                        let addr = Portfolio::new(t.clone(), cx.notifier).start();
                        t.portfolio.set(addr.clone());
                        Ok(addr.recipient())
                    },
                )
            },
        ];
        let routes: Vec<StrategyRoute> = self
            .strategies
            .read()
            .values()
            .filter(|r| r.settings.enabled)
            .cloned()
            .collect();
        let deployments: Vec<String> = self.deployments.read().keys().cloned().collect();
        let strategies: Vec<ChildSpec> = routes
            .into_iter()
            .map(|route| self.strategy_spec(route))
            .chain(deployments.iter().map(|id| self.model_spec(id)))
            .collect();
        let t = self.clone();
        children.push(
            ChildSpec::new(
                "strategies",
                RestartPolicy::Permanent,
                move |cx: ChildContext| {
                    let sup = Supervisor::child(
                        "strategies".into(),
                        cx,
                        t.supervision,
                        strategies.clone(),
                    )
                    .with_per_child_budgets();
                    let addr = sup.start();
                    t.strategy_supervisor.set(addr.clone());
                    Ok(addr.recipient())
                },
            )
            .tenant(self.id.0.clone()),
        );
        let t = self.clone();
        let name = format!("tenant:{}", self.id);
        let own = name.clone();
        let failed = {
            let t = self.clone();
            move |reason: &str| t.tenant_failed(reason)
        };
        ChildSpec::new(name, RestartPolicy::Temporary, move |cx: ChildContext| {
            let sup = Supervisor::child(own.clone(), cx, t.supervision, children.clone());
            let addr = Supervisor::start_in_arbiter(&arbiter, move |_| sup);
            t.supervisor.set(addr.clone());
            Ok(addr.recipient())
        })
        .tenant(self.id.0.clone())
        .on_disabled(failed)
    }

    /// The session of `login`, started under the tenant supervisor on first use.
    pub async fn session(self: &Arc<Self>, login: Login) -> Result<Addr<Mt5Session>, TenantError> {
        if let Some(addr) = self.session_of(login) {
            return Ok(addr);
        }
        let sup = self.supervisor.get().ok_or(TenantError::Unavailable)?;
        let t = self.clone();
        let spec = ChildSpec::new(
            format!("session:{login}"),
            RestartPolicy::Permanent,
            move |cx: ChildContext| {
                let addr = Mt5Session::new(t.clone(), login, cx.notifier).start();
                t.sessions_owner.modify(|sessions| {
                    sessions.insert(login, addr.clone());
                });
                Ok(addr.recipient())
            },
        );
        match sup.send(StartChild(spec)).await {
            Ok(Ok(())) | Ok(Err(SupervisionError::DuplicateChild(_))) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(TenantError::Unavailable),
        }
        self.session_of(login).ok_or(TenantError::Unavailable)
    }

    /// The live session of `login`, if it has one.
    pub fn session_of(&self, login: Login) -> Option<Addr<Mt5Session>> {
        self.sessions
            .read()
            .get(&login)
            .filter(|a| a.connected())
            .cloned()
    }

    /// Every session's address (live or stopping), for messages to all of them.
    pub fn all_sessions(&self) -> Vec<Addr<Mt5Session>> {
        self.sessions.read().values().cloned().collect()
    }

    /// The running host of strategy `id`, if it runs.
    pub fn strategy_host(&self, id: &str) -> Option<Addr<StrategyHost>> {
        self.strategy_hosts
            .read()
            .get(id)
            .filter(|a| a.connected())
            .cloned()
    }
}
