//! Process metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! One [`Metrics`] per `Application` (not a global), so tests that start several applications in one process
//! each read their own figures. Families are created once here; hot paths only increment atomics.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabel {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    tenant: String,
    deployment: String,
    version: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelVersionLabel {
    tenant: String,
    deployment: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    method: String,
    route: String,
}

/// The stages of the trading path, in the order a tick goes through them. Each stage's histogram
/// (`trellis_trading_stage_seconds{stage}`) measures from the moment the tick's frame was read off the
/// bridge's socket to the end of that stage, so `send` is the whole tick → order and a stage's own cost is
/// the difference with the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The frame parsed and handed to the account's session.
    Decode,
    /// The bar it closed routed to the strategies (market data).
    Bar,
    /// A strategy decided (its `on_bar` and the signal it gave).
    Strategy,
    /// Risk answered the order's pre-trade check.
    Risk,
    /// The order's write-ahead record committed.
    WriteAhead,
    /// The order frame encoded and handed to the bridge's connection.
    Send,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Bar,
        Stage::Strategy,
        Stage::Risk,
        Stage::WriteAhead,
        Stage::Send,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Bar => "bar",
            Stage::Strategy => "strategy",
            Stage::Risk => "risk",
            Stage::WriteAhead => "write_ahead",
            Stage::Send => "send",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: String,
}

/// Where the count of dropped console lines comes from (installed by `telemetry::init`, which owns the
/// console writer; metrics sits below it and only reads).
static CONSOLE_DROPPED: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Names the function that reads how many console lines were dropped.
pub fn count_console_drops(read: fn() -> u64) {
    let _ = CONSOLE_DROPPED.set(read);
}

/// Every metric trellis exports.
pub struct Metrics {
    registry: Registry,
    supervision_events: Family<KindLabel, Counter>,
    storage_healthy: Family<StoreLabel, Gauge>,
    ticks: Counter,
    ticks_dropped: Family<KindLabel, Counter>,
    bars: Counter,
    orders: Family<OutcomeLabel, Counter>,
    illegal_transitions: Family<TransitionLabel, Counter>,
    fills: Counter,
    protocol_errors: Family<KindLabel, Counter>,
    sessions: Gauge,
    predictions: Family<ModelLabel, Counter>,
    prediction_seconds: Family<ModelVersionLabel, Histogram>,
    ownership: Family<KindLabel, Counter>,
    /// One histogram per [`Stage`], created up front: the trading path observes without a label lookup.
    stages: [Histogram; 6],
    api_seconds: Family<RouteLabel, Histogram>,
    fanout_seconds: Histogram,
    log_lines_dropped: Counter,
    tenants_owned: Gauge,
    log_bytes: Family<TierLabel, Gauge>,
    log_entries: Family<TierLabel, Gauge>,
    log_cost: Family<TierLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    unowned_seconds: Histogram,
    journal_commits: Family<StoreLabel, Counter>,
    journal_records: Family<StoreLabel, Counter>,
    journal_batch: Family<StoreLabel, Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let supervision_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "supervision_events",
            "Supervision events (started, failed, stopped, restarted, escalated, gave_up, disabled)",
            supervision_events.clone(),
        );
        let storage_healthy = Family::<StoreLabel, Gauge>::default();
        registry.register(
            "storage_healthy",
            "1 when the storage actor's last health check passed",
            storage_healthy.clone(),
        );
        let ticks = Counter::default();
        registry.register("ticks", "Ticks accepted from MT5 sessions", ticks.clone());
        let ticks_dropped = Family::<KindLabel, Counter>::default();
        registry.register(
            "ticks_dropped",
            "Ticks not used for bars (out_of_order, conflated)",
            ticks_dropped.clone(),
        );
        let bars = Counter::default();
        registry.register(
            "bars_closed",
            "Bars closed across all timeframes",
            bars.clone(),
        );
        let orders = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "orders",
            "Orders by outcome (sent, rejected_by_risk, filled, rejected_by_terminal)",
            orders.clone(),
        );
        let illegal_transitions = Family::<TransitionLabel, Counter>::default();
        registry.register(
            "order_illegal_transitions",
            "Order state changes the state machine refused (from, to): a bug or a terminal out of sequence",
            illegal_transitions.clone(),
        );
        let fills = Counter::default();
        registry.register("fills", "Deals recorded from MT5 terminals", fills.clone());
        let protocol_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "protocol_errors",
            "Bad frames from MT5 bridges, by kind",
            protocol_errors.clone(),
        );
        let sessions = Gauge::default();
        registry.register("mt5_sessions", "Connected MT5 sessions", sessions.clone());
        let predictions = Family::<ModelLabel, Counter>::default();
        registry.register(
            "model_predictions",
            "Model runs by outcome (served, shadow, not_finite, failed, over_budget)",
            predictions.clone(),
        );
        let prediction_seconds =
            Family::<ModelVersionLabel, Histogram>::new_with_constructor(|| {
                // 10 µs … ~40 ms
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    1e-5, 2.0, 13,
                ))
            });
        registry.register(
            "model_prediction_seconds",
            "Features and inference time per prediction",
            prediction_seconds.clone(),
        );
        let ownership = Family::<KindLabel, Counter>::default();
        registry.register(
            "cluster_ownership_changes",
            "Tenant leases by event (acquired, took_over, released, lost)",
            ownership.clone(),
        );
        let tenants_owned = Gauge::default();
        registry.register(
            "cluster_tenants_owned",
            "Tenants this node holds a lease on",
            tenants_owned.clone(),
        );
        let log_bytes = Family::<TierLabel, Gauge>::default();
        registry.register(
            "log_tier_bytes",
            "Bytes each log tier holds as its store reports them (tier: hot, warm, cold, all_hot = the counterfactual)",
            log_bytes.clone(),
        );
        let log_entries = Family::<TierLabel, Gauge>::default();
        registry.register(
            "log_tier_entries",
            "Entries each log tier holds",
            log_entries.clone(),
        );
        let log_cost = Family::<TierLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "log_tier_cost_usd_per_month",
            "Monthly cost of each log tier at the configured prices (tier all_hot: everything kept hot)",
            log_cost.clone(),
        );
        // 10 ms … ~80 s
        let unowned_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
        );
        registry.register(
            "cluster_unowned_seconds",
            "How long a tenant this node took had no live owner (failover gap after the old lease ran out)",
            unowned_seconds.clone(),
        );
        // 10 µs … ~1.3 s: the trading path's figures are tens of microseconds on a quiet machine.
        let stage_family = Family::<StageLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_01, 2.0, 18,
            ))
        });
        registry.register(
            "trading_stage_seconds",
            "From a tick frame read off the bridge's socket to the end of each stage of the trading path \
             (decode, bar, strategy, risk, write_ahead, send = tick to order frame)",
            stage_family.clone(),
        );
        let stages = Stage::ALL.map(|stage| {
            stage_family
                .get_or_create(&StageLabel {
                    stage: stage.as_str(),
                })
                .clone()
        });
        // 100 µs … ~26 s
        let api_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_1, 2.0, 19,
            ))
        });
        registry.register(
            "api_request_seconds",
            "HTTP API request duration by method and route pattern",
            api_seconds.clone(),
        );
        // 100 µs … ~6.5 s
        let fanout_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.000_1, 2.0, 17),
        );
        registry.register(
            "client_fanout_seconds",
            "From a market update published to its frame handed to a trading client's connection",
            fanout_seconds.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Console log lines dropped because the console writer's queue was full",
            log_lines_dropped.clone(),
        );
        let journal_commits = Family::<StoreLabel, Counter>::default();
        registry.register(
            "journal_commits",
            "Transactions that stored write-ahead records (orders, deals); records per commit = records / commits",
            journal_commits.clone(),
        );
        let journal_records = Family::<StoreLabel, Counter>::default();
        registry.register(
            "journal_records",
            "Write-ahead records (orders, deals) stored by those transactions",
            journal_records.clone(),
        );
        let journal_batch = Family::<StoreLabel, Histogram>::new_with_constructor(|| {
            // 1 … 512 records
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1.0, 2.0, 10,
            ))
        });
        registry.register(
            "journal_batch_records",
            "Write-ahead records per commit (group commit: records that arrive together share one)",
            journal_batch.clone(),
        );
        Self {
            registry,
            stages,
            api_seconds,
            fanout_seconds,
            log_lines_dropped,
            journal_commits,
            journal_records,
            journal_batch,
            log_bytes,
            log_entries,
            log_cost,
            ownership,
            tenants_owned,
            unowned_seconds,
            predictions,
            prediction_seconds,
            supervision_events,
            storage_healthy,
            ticks,
            ticks_dropped,
            bars,
            orders,
            illegal_transitions,
            fills,
            protocol_errors,
            sessions,
        }
    }

    /// One log tier's measured usage and cost (`tier`: hot, warm, cold, or `all_hot` for the counterfactual
    /// of keeping everything hot). Called by `storage::logs::store::CostReport::record`.
    pub fn log_tier(&self, tier: &str, bytes: u64, entries: Option<u64>, usd_per_month: f64) {
        let label = TierLabel { tier: tier.into() };
        self.log_bytes.get_or_create(&label).set(bytes as i64);
        if let Some(entries) = entries {
            self.log_entries.get_or_create(&label).set(entries as i64);
        }
        self.log_cost.get_or_create(&label).set(usd_per_month);
    }

    pub fn supervision_event(&self, kind: &str) {
        self.supervision_events
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn storage_health(&self, store: &str, healthy: bool) {
        self.storage_healthy
            .get_or_create(&StoreLabel {
                store: store.to_owned(),
            })
            .set(i64::from(healthy));
    }

    /// A commit of `records` write-ahead records by `store` (`storage::journal`).
    pub fn journal_commit(&self, store: &str, records: usize) {
        let label = StoreLabel {
            store: store.to_owned(),
        };
        self.journal_commits.get_or_create(&label).inc();
        self.journal_records
            .get_or_create(&label)
            .inc_by(records as u64);
        self.journal_batch
            .get_or_create(&label)
            .observe(records as f64);
    }

    pub fn tick(&self) {
        self.ticks.inc();
    }

    pub fn tick_dropped(&self, kind: &str) {
        self.ticks_dropped
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn bar_closed(&self) {
        self.bars.inc();
    }

    pub fn order(&self, outcome: &str) {
        self.orders
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// An order state change the state machine refused (`from` → `to`).
    pub fn illegal_transition(&self, from: &str, to: &str) {
        self.illegal_transitions
            .get_or_create(&TransitionLabel {
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .inc();
    }

    pub fn fill(&self) {
        self.fills.inc();
    }

    pub fn protocol_error(&self, kind: &str) {
        self.protocol_errors
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// A model run: its outcome and, when it ran, how long features and inference took.
    pub fn prediction(
        &self,
        tenant: &str,
        deployment: &str,
        version: &str,
        outcome: &str,
        seconds: Option<f64>,
    ) {
        self.predictions
            .get_or_create(&ModelLabel {
                tenant: tenant.to_owned(),
                deployment: deployment.to_owned(),
                version: version.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(s) = seconds {
            self.prediction_seconds
                .get_or_create(&ModelVersionLabel {
                    tenant: tenant.to_owned(),
                    deployment: deployment.to_owned(),
                    version: version.to_owned(),
                })
                .observe(s);
        }
    }

    /// A change of tenant ownership on this node (`acquired`, `took_over`, `released`, `lost`).
    pub fn ownership(&self, kind: &str, owned_now: usize) {
        self.ownership
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
        self.tenants_owned.set(owned_now as i64);
    }

    /// A tenant taken over after its previous owner's lease had run out this long ago.
    pub fn unowned_for(&self, seconds: f64) {
        self.unowned_seconds.observe(seconds.max(0.0));
    }

    pub fn session_opened(&self) {
        self.sessions.inc();
    }

    pub fn session_closed(&self) {
        self.sessions.dec();
    }

    /// The trading path reached the end of `stage` for a tick whose frame was read at `since`.
    pub fn stage(&self, stage: Stage, since: std::time::Instant) {
        let index = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
        self.stages[index].observe(since.elapsed().as_secs_f64());
    }

    /// An API request answered after `seconds`; `route` is the matched pattern (never the raw path, so
    /// the label set stays as small as the route table).
    pub fn api_request(&self, method: &str, route: &str, seconds: f64) {
        self.api_seconds
            .get_or_create(&RouteLabel {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// A market update reached a client's connection `seconds` after it was published.
    pub fn fanout(&self, seconds: f64) {
        self.fanout_seconds.observe(seconds);
    }

    /// The exposition text for `GET /metrics`.
    pub fn render(&self) -> String {
        let dropped = CONSOLE_DROPPED.get().map_or(0, |read| read());
        let counted = self.log_lines_dropped.get();
        if dropped > counted {
            self.log_lines_dropped.inc_by(dropped - counted);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
