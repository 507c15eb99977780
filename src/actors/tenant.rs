//! A tenant's subtree and the handles its actors use to reach each other.
//!
//! ```text
//! tenant:<id> (supervisor, temporary)
//! ├── market_data   (permanent)
//! ├── risk          (permanent)
//! ├── portfolio     (permanent)   reloads orders and fills from storage when it starts
//! ├── strategies    (permanent supervisor with per-child budgets)
//! │   └── strategy:<id> (permanent) one per configured instance, warmed up from recent bars; over its own
//! │                     restart budget it is disabled (state `failed`), its siblings and the tenant untouched
//! └── session:<login> (permanent) added when a terminal first connects
//! ```
//!
//! Every actor of the subtree runs on the tenant's arbiter (thread), so one tenant's work never waits
//! behind another's on the same thread unless they share it. Actors find each other through [`Slot`]s that
//! each factory refills, so a restarted actor is reachable at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use rust_decimal::Decimal;

use super::market_data::MarketData;
use super::mt5_session::Mt5Session;
use super::portfolio::Portfolio;
use super::risk::Risk;
use super::slot::Slot;
use super::strategy::StrategyHost;
use super::supervisor::{
    ChildContext, ChildSpec, RestartPolicy, StartChild, SupervisionError, Supervisor,
    SupervisorConfig,
};
use crate::config::{Mt5Settings, StrategySettings, TenantSettings};
use crate::domain::{Login, Symbol, TenantId, Timeframe};
use crate::metrics::Metrics;
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

/// Shared by the actors of one tenant.
pub struct TenantContext {
    pub id: TenantId,
    pub settings: TenantSettings,
    pub symbols: HashSet<String>,
    contract_sizes: HashMap<String, Decimal>,
    /// The strategy instances by id; the admin API adds, changes and removes them while the tenant runs.
    pub strategies: DashMap<String, StrategyRoute>,
    pub registry: StrategyRegistry,
    tier: std::sync::RwLock<String>,
    risk_limits: std::sync::RwLock<crate::config::RiskSettings>,
    /// Serialises changes to the tenant's stored document (admin API).
    pub admin: tokio::sync::Mutex<()>,
    pub mt5: Mt5Settings,
    pub metrics: Arc<Metrics>,
    pub relational: RelationalStore,
    pub timeseries: TimeSeriesStore,
    pub cache: Option<StoreSlot<RedisCache>>,
    pub bus: super::bus::EventBus,
    pub supervisor: Slot<Supervisor>,
    /// The tenant's `strategies` supervisor (per-child budgets): strategies are started, stopped and
    /// re-enabled there.
    pub strategy_supervisor: Slot<Supervisor>,
    /// Why the tenant's subtree failed for good (its core actors over their restart budget), if it did:
    /// written once by the root's hook, read by the API. A failed tenant trades no more until restarted.
    failure: std::sync::Mutex<Option<String>>,
    pub market_data: Slot<MarketData>,
    pub risk: Slot<Risk>,
    pub portfolio: Slot<Portfolio>,
    pub sessions: DashMap<Login, Addr<Mt5Session>>,
    pub strategy_hosts: DashMap<String, Addr<StrategyHost>>,
    pub quotes: DashMap<Symbol, Quote>,
    pub supervision: SupervisorConfig,
    pub audit: AuditSink,
}

/// Everything the runtime hands a new tenant.
pub struct TenantDeps {
    pub registry: StrategyRegistry,
    pub mt5: Mt5Settings,
    pub metrics: Arc<Metrics>,
    pub relational: RelationalStore,
    pub timeseries: TimeSeriesStore,
    pub cache: Option<StoreSlot<RedisCache>>,
    pub bus: super::bus::EventBus,
    pub supervision: SupervisorConfig,
    pub audit: AuditSink,
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
    /// Validates the settings (every strategy is built once to check its parameters).
    pub fn new(settings: TenantSettings, deps: TenantDeps) -> Result<Arc<Self>, TenantError> {
        let invalid = |message: String| TenantError::Invalid {
            tenant: settings.id.clone(),
            message,
        };
        let strategies = DashMap::new();
        for s in &settings.strategies {
            let route = Self::route(&deps.registry, s).map_err(invalid)?;
            strategies.insert(s.id.clone(), route);
        }
        Ok(Arc::new(Self {
            id: TenantId(settings.id.clone()),
            symbols: settings.symbols.iter().cloned().collect(),
            contract_sizes: settings
                .contract_sizes
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            strategies,
            tier: std::sync::RwLock::new(settings.tier.clone()),
            risk_limits: std::sync::RwLock::new(settings.risk.clone()),
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
            failure: std::sync::Mutex::new(None),
            market_data: Slot::default(),
            risk: Slot::default(),
            portfolio: Slot::default(),
            sessions: DashMap::new(),
            strategy_hosts: DashMap::new(),
            quotes: DashMap::new(),
            supervision: deps.supervision,
            audit: deps.audit,
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
            .build(&s.kind, &s.params, s.volume)
            .map_err(|e| format!("strategy `{}`: {e}", s.id))?;
        Ok(StrategyRoute {
            settings: s.clone(),
            symbol: Symbol(s.symbol.clone()),
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
                        route.settings.volume,
                    )
                    .map_err(|e| e.to_string())?;
                let id = route.settings.id.clone();
                let addr =
                    StrategyHost::new(t.clone(), route.clone(), strategy, cx.notifier).start();
                t.strategy_hosts.insert(id, addr.clone());
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
        self.publish("strategy", detail);
        if s.on_failure == crate::config::OnFailure::Flatten {
            if let Some(portfolio) = self.portfolio.get() {
                portfolio.do_send(super::messages::Signal {
                    strategy_id: s.id.clone(),
                    account: s.account.map(Login),
                    symbol: route.symbol.clone(),
                    target: Decimal::ZERO,
                    at_ms: crate::domain::now_ms(),
                });
            }
        }
    }

    /// Why the tenant failed, if it did (see `POST /api/v1/tenants/{t}/restart`).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The root stopped restarting this tenant's subtree: record it, tell the audit log and the clients.
    fn tenant_failed(&self, reason: &str) {
        tracing::error!(tenant = %self.id, %reason, "tenant failed: its trading is stopped until it is restarted");
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(reason.to_owned());
        }
        let detail = serde_json::json!({ "state": "failed", "reason": reason });
        self.audit("tenant.failed", "supervisor", detail.clone());
        self.publish("tenant", detail);
    }

    pub fn tier(&self) -> String {
        self.tier.read().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn set_tier(&self, tier: &str) {
        if let Ok(mut t) = self.tier.write() {
            *t = tier.to_owned();
        }
    }

    /// The risk limits in force (a restarted `Risk` starts from these).
    pub fn risk_limits(&self) -> crate::config::RiskSettings {
        self.risk_limits
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn set_risk_limits(&self, limits: crate::config::RiskSettings) {
        if let Ok(mut r) = self.risk_limits.write() {
            *r = limits;
        }
    }

    /// The tenant as it runs now, as stored in the tenant registry.
    pub fn document(&self) -> TenantSettings {
        let mut doc = self.settings.clone();
        doc.tier = self.tier();
        doc.risk = self.risk_limits();
        let mut strategies: Vec<StrategySettings> =
            self.strategies.iter().map(|r| r.settings.clone()).collect();
        strategies.sort_by(|a, b| a.id.cmp(&b.id));
        doc.strategies = strategies;
        doc
    }

    /// Publishes an event of this tenant to its clients (`/ws/events`), on every node.
    pub fn publish(&self, kind: &str, data: serde_json::Value) {
        self.bus.publish(super::bus::TenantEvent {
            tenant: self.id.0.clone(),
            kind: kind.to_owned(),
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
                        let addr = MarketData::new(t.clone(), cx.notifier).start();
                        t.market_data.set(addr.clone());
                        Ok(addr.recipient())
                    },
                )
            },
            {
                let t = self.clone();
                ChildSpec::new("risk", RestartPolicy::Permanent, move |cx: ChildContext| {
                    let addr = Risk::new(t.clone(), cx.notifier).start();
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
        let mut routes: Vec<StrategyRoute> = self
            .strategies
            .iter()
            .filter(|r| r.settings.enabled)
            .map(|r| r.clone())
            .collect();
        routes.sort_by(|a, b| a.settings.id.cmp(&b.settings.id));
        let strategies: Vec<ChildSpec> = routes
            .into_iter()
            .map(|route| self.strategy_spec(route))
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
        if let Some(addr) = self.sessions.get(&login).map(|a| a.clone()) {
            if addr.connected() {
                return Ok(addr);
            }
        }
        let sup = self.supervisor.get().ok_or(TenantError::Unavailable)?;
        let t = self.clone();
        let spec = ChildSpec::new(
            format!("session:{login}"),
            RestartPolicy::Permanent,
            move |cx: ChildContext| {
                let addr = Mt5Session::new(t.clone(), login, cx.notifier).start();
                t.sessions.insert(login, addr.clone());
                Ok(addr.recipient())
            },
        );
        match sup.send(StartChild(spec)).await {
            Ok(Ok(())) | Ok(Err(SupervisionError::DuplicateChild(_))) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(TenantError::Unavailable),
        }
        self.sessions
            .get(&login)
            .map(|a| a.clone())
            .filter(Addr::connected)
            .ok_or(TenantError::Unavailable)
    }
}
