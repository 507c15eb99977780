//! `GET /ws/v1/client`: the trading clients' WebSocket — subscriptions with snapshots and sequenced updates,
//! and commands to trade by hand. The protocol is specified in `docs/client-protocol.md`.
//!
//! Each connection is two tasks around a bounded outbox:
//! - the *reader* handles the client's frames (commands run here, one at a time, in order) and turns the
//!   tenant's events into outbox entries: reliable updates (orders, fills, positions, risk, strategies,
//!   supervision, predictions) from the event bus and the supervision log, and conflated ones (ticks, bars,
//!   PnL) read from the tenant's [`ClientFeed`](crate::actors::feed::ClientFeed) when it rings;
//! - the *writer* sends the outbox to the socket, numbering each channel's frames as it sends them, so a
//!   conflated value replaced in the outbox leaves no gap.
//!
//! Nothing on the trading path waits for a connection: events reach the reader through broadcast channels
//! and the feed's bell, and a reader that cannot keep up is closed (4008) rather than buffered without end.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use crate::actors::messages::{
    CancelManualOrder, Flatten, GetModelState, GetPortfolio, GetRecentBars, GetRiskState,
    PlaceManualOrder,
};
use crate::actors::tenant::TenantContext;
use crate::domain::events::EventKind;
use crate::domain::orders::OrderKind;
use crate::domain::{Side, Symbol, Timeframe};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::security::rbac::Access;
use crate::security::service::{Credential, Principal};

pub const PROTOCOL_VERSION: u32 = 1;
/// Largest client frame.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Unsent reliable updates a connection may hold before it is closed as too far behind.
pub const MAX_RELIABLE_QUEUE: usize = 4_096;
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Items in the orders and fills snapshots.
const SNAPSHOT_ITEMS: usize = 200;
const SNAPSHOT_BARS: usize = 100;
const SNAPSHOT_EVENTS: usize = 100;
/// How often an open connection checks that its credential still holds (revocation, suspension).
const CREDENTIAL_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

pub const CLOSE_TOO_FAR_BEHIND: u16 = 4008;

/// The channel patterns, as the welcome frame lists them.
pub const CHANNELS: [&str; 10] = [
    "ticks:{symbol}",
    "bars:{symbol}:{timeframe}",
    "positions",
    "orders",
    "fills",
    "pnl",
    "strategies",
    "risk",
    "supervision",
    "predictions:{deployment}",
];

// ---- client frames ---------------------------------------------------------------------------------------

/// A client frame without its `id` (every frame carries one, read before this).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientOp {
    Subscribe(ChannelsOp),
    Unsubscribe(ChannelsOp),
    PlaceOrder(PlaceOrderOp),
    CancelOrder(CancelOrderOp),
    Flatten(FlattenOp),
    KillSwitch(KillSwitchOp),
    StrategyStart(StrategyOp),
    StrategyStop(StrategyOp),
    Ping(PingOp),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsOp {
    #[schemars(length(min = 1, max = 64))]
    pub channels: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderOp {
    /// 1–48 of `A-Z a-z 0-9 _ -`; the order is recorded as `manual:<client_order_id>`.
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub client_order_id: String,
    pub symbol: String,
    pub side: Side,
    /// Lots, greater than 0.
    pub volume: Decimal,
    #[serde(default = "market")]
    pub kind: OrderKind,
    /// Required for limit and stop orders, absent for market orders.
    #[serde(default)]
    pub price: Option<Decimal>,
    /// The MT5 login; optional when one account is connected.
    #[serde(default)]
    pub account: Option<u64>,
}

fn market() -> OrderKind {
    OrderKind::Market
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderOp {
    #[schemars(length(min = 1, max = 48))]
    pub client_order_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlattenOp {
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchOp {
    pub on: bool,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub reason: Option<String>,
    #[serde(default)]
    pub flatten: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyOp {
    pub strategy: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PingOp {}

/// A command's refusal: one of the protocol's codes and a reason naming what is wrong.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
}

fn refuse(code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::NotFound => "unknown_strategy",
            ApiError::Unavailable(_) | ApiError::Internal(_) => "unavailable",
            ApiError::Forbidden(_) | ApiError::Unauthorized(_) => "forbidden",
            _ => "bad_request",
        };
        let reason = match &e {
            ApiError::NotFound => "no such strategy".to_owned(),
            other => other.to_string(),
        };
        Refusal { code, reason }
    }
}

/// Reads a client frame: its `id` and operation, or why it is not one (`error` frame, with the id when read).
pub fn parse_frame(text: &str) -> Result<(String, ClientOp), (Option<String>, String)> {
    let mut value: Value = serde_json::from_str(text).map_err(|e| (None, e.to_string()))?;
    let Some(obj) = value.as_object_mut() else {
        return Err((None, "a frame is a JSON object".into()));
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if (1..=64).contains(&s.chars().count()) => s,
        Some(_) => return Err((None, "id: a string of 1 to 64 characters".into())),
        None => return Err((None, "id: missing".into())),
    };
    let op = match obj.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err((Some(id), "op: a string".into())),
        None => return Err((Some(id), "op: missing".into())),
    };
    let op = match op.as_str() {
        "subscribe" => fields(value).map(ClientOp::Subscribe),
        "unsubscribe" => fields(value).map(ClientOp::Unsubscribe),
        "place_order" => fields(value).map(ClientOp::PlaceOrder),
        "cancel_order" => fields(value).map(ClientOp::CancelOrder),
        "flatten" => fields(value).map(ClientOp::Flatten),
        "kill_switch" => fields(value).map(ClientOp::KillSwitch),
        "strategy_start" => fields(value).map(ClientOp::StrategyStart),
        "strategy_stop" => fields(value).map(ClientOp::StrategyStop),
        "ping" => fields(value).map(ClientOp::Ping),
        other => Err(format!(
            "op: unknown `{other}`; one of subscribe, unsubscribe, place_order, cancel_order, flatten, \
             kill_switch, strategy_start, strategy_stop, ping"
        )),
    };
    match op {
        Ok(op) => Ok((id, op)),
        Err(why) => Err((Some(id), why)),
    }
}

/// An operation's fields; an error names the field (`volume: invalid type …`).
fn fields<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

// ---- channels --------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    Ticks(Symbol),
    Bars(Symbol, Timeframe),
    Positions,
    Orders,
    Fills,
    Pnl,
    Strategies,
    Risk,
    Supervision,
    Predictions(String),
}

impl Channel {
    fn parse(name: &str, t: &TenantContext) -> Result<Self, Refusal> {
        let unknown = || refuse("unknown_channel", format!("`{name}` is not a channel"));
        let symbol = |s: &str| {
            if t.symbols.contains(s) {
                Ok(Symbol::new(s.to_owned()))
            } else {
                Err(refuse(
                    "unknown_symbol",
                    format!("`{s}` is not one of the tenant's symbols"),
                ))
            }
        };
        let mut parts = name.split(':');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        Ok(match (head, rest.as_slice()) {
            ("ticks", [s]) => Self::Ticks(symbol(s)?),
            ("bars", [s, tf]) => {
                let symbol = symbol(s)?;
                let tf = Timeframe::parse(tf).ok_or_else(|| {
                    refuse("unknown_channel", format!("`{tf}` is not a timeframe"))
                })?;
                Self::Bars(symbol, tf)
            }
            ("positions", []) => Self::Positions,
            ("orders", []) => Self::Orders,
            ("fills", []) => Self::Fills,
            ("pnl", []) => Self::Pnl,
            ("strategies", []) => Self::Strategies,
            ("risk", []) => Self::Risk,
            ("supervision", []) => Self::Supervision,
            ("predictions", [d]) if t.deployments.read().contains_key(*d) => {
                Self::Predictions((*d).to_owned())
            }
            ("predictions", [d]) => {
                return Err(refuse(
                    "unknown_channel",
                    format!("`{d}` is not a model deployment of the tenant"),
                ))
            }
            _ => return Err(unknown()),
        })
    }

    fn conflated(&self) -> bool {
        matches!(self, Self::Ticks(_) | Self::Bars(..) | Self::Pnl)
    }
}

/// A subscription and what was last queued of a conflated channel (to send only changes).
struct Sub {
    channel: Channel,
    last_quote: Option<(Decimal, Decimal, i64)>,
    last_count: u64,
}

// ---- the outbox ------------------------------------------------------------------------------------------

enum Out {
    /// A frame with no sequence (acks, refusals, errors, pongs, welcome).
    Control(String),
    Snapshot {
        channel: String,
        data: Arc<str>,
    },
    /// `data` is shared: a market update is rendered once for every connection that sends it.
    Update {
        channel: String,
        data: Arc<str>,
    },
}

#[derive(Default)]
struct Outbox {
    reliable: VecDeque<Out>,
    /// Latest update per conflated channel.
    conflated: Vec<(String, Out)>,
    close: Option<(u16, String)>,
}

#[derive(Default)]
struct Shared {
    outbox: Mutex<Outbox>,
    ready: Notify,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        let mut o = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut o);
        drop(o);
        self.ready.notify_one();
        r
    }

    fn control(&self, frame: Value) {
        self.with(|o| o.reliable.push_back(Out::Control(frame.to_string())));
    }

    /// Queues a reliable frame; false (and the connection closing) when the client is too far behind.
    fn reliable(&self, out: Out) -> bool {
        self.with(|o| {
            if o.close.is_some() {
                return false;
            }
            if o.reliable.len() >= MAX_RELIABLE_QUEUE {
                o.close = Some((
                    CLOSE_TOO_FAR_BEHIND,
                    "too far behind: reconnect and resubscribe".into(),
                ));
                return false;
            }
            o.reliable.push_back(out);
            true
        })
    }

    fn snapshot(&self, channel: &str, data: &Value) -> bool {
        let channel = channel.to_owned();
        self.with(|o| o.conflated.retain(|(c, _)| *c != channel));
        self.reliable(Out::Snapshot {
            channel,
            data: data.to_string().into(),
        })
    }

    fn conflate(&self, channel: &str, data: Arc<str>) {
        let out = Out::Update {
            channel: channel.to_owned(),
            data,
        };
        self.with(
            |o| match o.conflated.iter_mut().find(|(c, _)| c == channel) {
                Some(slot) => slot.1 = out,
                None => o.conflated.push((channel.to_owned(), out)),
            },
        );
    }

    fn close(&self, code: u16, reason: &str) {
        self.with(|o| {
            if o.close.is_none() {
                o.close = Some((code, reason.to_owned()));
            }
        });
    }

    fn closing(&self) -> bool {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close
            .is_some()
    }
}

/// Sends the outbox: a close first (a connection too far behind is not made to drain), then reliable
/// frames in order, then the latest of each conflated channel.
async fn write(shared: Arc<Shared>, mut session: actix_ws::Session) {
    let mut seqs: HashMap<String, u64> = HashMap::new();
    loop {
        enum Next {
            Close(u16, String),
            Send(Out),
            Wait,
        }
        let next = {
            let mut o = shared.outbox.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((code, reason)) = o.close.take() {
                Next::Close(code, reason)
            } else if let Some(out) = o.reliable.pop_front() {
                Next::Send(out)
            } else if !o.conflated.is_empty() {
                Next::Send(o.conflated.remove(0).1)
            } else {
                Next::Wait
            }
        };
        let out = match next {
            Next::Close(code, reason) => {
                let _ = session
                    .close(Some(actix_ws::CloseReason {
                        code: actix_ws::CloseCode::from(code),
                        description: Some(reason),
                    }))
                    .await;
                return;
            }
            Next::Send(out) => out,
            Next::Wait => {
                shared.ready.notified().await;
                continue;
            }
        };
        let text = match out {
            Out::Control(text) => text,
            Out::Snapshot { channel, data } => {
                seqs.insert(channel.clone(), 0);
                frame("snapshot", &channel, 0, &data)
            }
            Out::Update { channel, data } => {
                let seq = seqs.entry(channel.clone()).or_insert(0);
                *seq += 1;
                frame("update", &channel, *seq, &data)
            }
        };
        if session.text(text).await.is_err() {
            shared.close(1000, "");
            return;
        }
    }
}

fn frame(kind: &str, channel: &str, seq: u64, data: &str) -> String {
    let channel = Value::String(channel.to_owned());
    format!(r#"{{"type":"{kind}","channel":{channel},"seq":{seq},"data":{data}}}"#)
}

// ---- connecting ------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ConnectQuery {
    ticket: Option<String>,
    tenant: Option<String>,
}

/// Where a client's stream is served.
enum Route {
    /// The tenant runs on this node.
    Here(Principal, Arc<TenantContext>),
    /// Several nodes: the tenant runs on the node at this WebSocket URL.
    Owner(String),
}

/// Who connects, for which tenant, with which rights (see the protocol's table of credentials).
async fn authenticate(
    req: &HttpRequest,
    query: &ConnectQuery,
    state: &AppState,
) -> Result<Route, ApiError> {
    let unknown_ticket =
        || ApiError::Unauthorized("ticket: unknown, already used or expired".into());
    let (principal, tenant) = match &query.ticket {
        Some(ticket) => {
            // Looked at first, used only where its tenant runs: another node redeems it itself.
            let (t, shared) = state
                .tickets
                .peek(ticket)
                .await
                .ok_or_else(unknown_ticket)?;
            if state.runtime.tenant(&t.tenant).is_none() {
                if !shared {
                    return match remote_owner(req, state, &t.tenant) {
                        Some(_) => Err(ApiError::Unavailable(
                            "the tenant runs on another node and this ticket is only this node's (Redis is not \
                             configured or was away when it was issued): connect with a bearer token or an API key, \
                             or ask the tenant's node for a ticket"
                                .into(),
                        )),
                        None => Err(moving_or_gone(state, &t.tenant)),
                    };
                }
                return match remote_owner(req, state, &t.tenant) {
                    Some(url) => Ok(Route::Owner(url)),
                    None => Err(moving_or_gone(state, &t.tenant)),
                };
            }
            let t = state
                .tickets
                .redeem(ticket)
                .await
                .ok_or_else(unknown_ticket)?;
            (t.principal, t.tenant)
        }
        None => {
            let credential = crate::http::api::credential(req).ok_or_else(|| {
                ApiError::Unauthorized(
                    "a credential is required: Authorization: Bearer, X-API-Key or ?ticket= from POST /api/v1/ws-tickets"
                        .into(),
                )
            })?;
            let principal = crate::http::api::authenticate(state, &credential)?;
            let tenant = match (&principal.tenant, &query.tenant) {
                (Some(own), None) => own.clone(),
                (Some(own), Some(t)) if own == t => t.clone(),
                (Some(_), Some(_)) => return Err(ApiError::NotFound),
                (None, Some(t)) => t.clone(),
                (None, None) => {
                    return Err(ApiError::BadRequest(
                        "tenant: a platform administrator names the tenant with ?tenant=".into(),
                    ))
                }
            };
            (principal, tenant)
        }
    };
    if !principal.may(Access::Read) {
        return Err(ApiError::Forbidden(
            "the client stream needs the viewer role or the read scope".into(),
        ));
    }
    if let Some(t) = state.runtime.tenant(&tenant) {
        return Ok(Route::Here(principal, t));
    }
    // Several nodes: relayed to the owner with the client's own credential.
    match remote_owner(req, state, &tenant) {
        Some(url) => Ok(Route::Owner(url)),
        None => Err(moving_or_gone(state, &tenant)),
    }
}

/// Several nodes: the client endpoint (with this request's query) of the node that runs `tenant`, when that is
/// another node and this request was not already relayed.
fn remote_owner(req: &HttpRequest, state: &AppState, tenant: &str) -> Option<String> {
    let cluster = state.cluster.as_ref()?;
    if req.headers().contains_key(crate::http::forward::FORWARDED) {
        return None;
    }
    let crate::cluster::node::Location::Remote { url, .. } = cluster.locate(tenant) else {
        return None;
    };
    let base = crate::cluster::node::ws_url(&url, "/ws/v1/client");
    Some(match req.query_string() {
        "" => base,
        query => format!("{base}?{query}"),
    })
}

/// A tenant that runs nowhere reachable: moving between nodes (retry), or unknown.
fn moving_or_gone(state: &AppState, tenant: &str) -> ApiError {
    let moving = state
        .cluster
        .as_ref()
        .is_some_and(|c| c.locate(tenant) != crate::cluster::node::Location::Unknown);
    if moving {
        ApiError::Unavailable(format!(
            "tenant `{tenant}` is moving between nodes; retry shortly"
        ))
    } else {
        ApiError::NotFound
    }
}

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<ConnectQuery>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let (principal, tenant) = match authenticate(&req, &query, &state).await? {
        Route::Here(principal, tenant) => (principal, tenant),
        Route::Owner(url) => {
            let node = state
                .cluster
                .as_ref()
                .map(|c| c.node.clone())
                .unwrap_or_default();
            return super::relay::relay(&req, body, url, &node, MAX_FRAME_BYTES).await;
        }
    };
    let (response, session, incoming) = actix_ws::handle(&req, body)?;
    let incoming = incoming.max_frame_size(MAX_FRAME_BYTES);
    let shared = Arc::new(Shared::default());
    let writer = actix_web::rt::spawn(write(shared.clone(), session.clone()));
    let conn = Connection {
        state: state.into_inner(),
        can_trade: principal.may(Access::Trade),
        principal,
        tenant,
        shared,
        subs: BTreeMap::new(),
        session,
    };
    actix_web::rt::spawn(conn.run(incoming, writer));
    Ok(response)
}

struct Connection {
    state: Arc<AppState>,
    principal: Principal,
    tenant: Arc<TenantContext>,
    can_trade: bool,
    shared: Arc<Shared>,
    subs: BTreeMap<String, Sub>,
    session: actix_ws::Session,
}

impl Connection {
    async fn run(
        mut self,
        mut incoming: actix_ws::MessageStream,
        mut writer: tokio::task::JoinHandle<()>,
    ) {
        let expires_ms = match self.principal.credential {
            Credential::User { exp, .. } => Some(exp as i64 * 1000),
            _ => None,
        };
        let expiry = async move {
            match expires_ms {
                Some(at) => {
                    let left = (at - crate::domain::now_ms()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(left)).await
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(expiry);
        let mut symbols: Vec<&String> = self.tenant.symbols.iter().collect();
        symbols.sort();
        self.shared.control(json!({
            "type": "welcome",
            "tenant": self.tenant.id.0,
            "actor": self.principal.actor,
            "can_trade": self.can_trade,
            "channels": CHANNELS,
            "symbols": symbols,
            "expires_ms": expires_ms,
            "protocol_version": PROTOCOL_VERSION,
        }));
        let mut events = self.tenant.bus.subscribe(&self.tenant.id.0);
        let mut supervision = self.state.runtime.events.subscribe();
        let mut watch: Option<crate::actors::feed::Watch> = None;
        // A revoked key or session, a disabled user or a suspended tenant ends the stream too.
        let mut recheck = tokio::time::interval(CREDENTIAL_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.shared.closing() {
                break;
            }
            let market_changed = async {
                match watch.as_mut() {
                    Some(w) => w.changed.changed().await.is_ok(),
                    None => std::future::pending::<bool>().await,
                }
            };
            tokio::select! {
                msg = incoming.next() => match msg {
                    Some(Ok(actix_ws::Message::Text(text))) => self.on_text(&text).await,
                    Some(Ok(actix_ws::Message::Binary(_))) => self.shared.control(json!({
                        "type": "error", "id": null, "code": "bad_frame",
                        "reason": "frames are JSON text, not binary",
                    })),
                    Some(Ok(actix_ws::Message::Ping(p))) => {
                        let _ = self.session.pong(&p).await;
                    }
                    Some(Ok(actix_ws::Message::Close(_))) | None => {
                        self.shared.close(1000, "");
                        break;
                    }
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        self.shared.close(1009, "frame larger than 64 KiB");
                        break;
                    }
                    Some(Err(_)) => {
                        self.shared.close(1002, "protocol error");
                        break;
                    }
                    Some(Ok(_)) => {}
                },
                event = events.recv() => match event {
                    Ok(e) => self.on_event(e.kind, &e.data).await,
                    Err(RecvError::Lagged(_)) => {
                        if self.subs.values().any(|s| !s.channel.conflated()) {
                            self.shared.close(CLOSE_TOO_FAR_BEHIND, "too far behind: reconnect and resubscribe");
                            break;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                event = supervision.recv() => match event {
                    Ok(e) if e.tenant.as_deref() == Some(&self.tenant.id.0) => self.on_supervision(e).await,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if self.subscribed(&Channel::Supervision) {
                            self.shared.close(CLOSE_TOO_FAR_BEHIND, "too far behind: reconnect and resubscribe");
                            break;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                alive = market_changed => {
                    if alive {
                        self.on_market();
                    } else {
                        watch = None;
                    }
                },
                _ = &mut expiry => {
                    self.shared.close(1008, "access token expired");
                    break;
                }
                _ = recheck.tick() => {
                    if let Err(e) = self.state.security.still_valid(&self.principal) {
                        self.shared.close(1008, &e.to_string());
                        break;
                    }
                }
                _ = &mut writer => return,
            }
            let wants_market = self.subs.values().any(|s| s.channel.conflated());
            if wants_market && watch.is_none() {
                watch = Some(self.tenant.feed.watch());
                self.on_market();
            } else if !wants_market {
                watch = None;
            }
        }
        // Let the writer send the close frame (or see the socket gone).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    }

    fn subscribed(&self, channel: &Channel) -> bool {
        self.subs.values().any(|s| s.channel == *channel)
    }

    async fn on_text(&mut self, text: &str) {
        let (id, op) = match parse_frame(text) {
            Ok(x) => x,
            Err((id, reason)) => {
                return self.shared.control(json!({
                    "type": "error", "id": id, "code": "bad_frame", "reason": reason,
                }))
            }
        };
        let name = op_name(&op);
        if let ClientOp::Ping(_) = op {
            return self.shared.control(json!({"type": "pong", "id": id}));
        }
        let answer = match op {
            ClientOp::Subscribe(c) => match self.subscribe(c.channels).await {
                Ok((result, snapshots)) => {
                    self.shared.control(json!({
                        "type": "ack", "id": id, "op": name, "result": result,
                    }));
                    for (channel, data) in snapshots {
                        self.shared.snapshot(&channel, &data);
                    }
                    Ok(None)
                }
                Err(r) => Err(r),
            },
            ClientOp::Unsubscribe(c) => self.unsubscribe(c.channels),
            command => self.command(command).await,
        };
        match answer {
            Ok(Some(result)) => self.shared.control(json!({
                "type": "ack", "id": id, "op": name, "result": result,
            })),
            Ok(None) => {}
            Err(r) => self.shared.control(json!({
                "type": "refused", "id": id, "op": name, "code": r.code, "reason": r.reason,
            })),
        }
    }

    /// Registers the channels: the ack's result and the snapshots to send after it. Events that arrive
    /// while the snapshots are taken are sent after them (updates are idempotent, see the protocol).
    async fn subscribe(
        &mut self,
        names: Vec<String>,
    ) -> Result<(Value, Vec<(String, Value)>), Refusal> {
        if names.is_empty() || names.len() > MAX_SUBSCRIPTIONS {
            return Err(refuse("bad_request", "channels: 1 to 64 channel names"));
        }
        let mut parsed = Vec::with_capacity(names.len());
        for name in &names {
            parsed.push((name.clone(), Channel::parse(name, &self.tenant)?));
        }
        let after = self
            .subs
            .keys()
            .chain(names.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if after > MAX_SUBSCRIPTIONS {
            return Err(refuse(
                "too_many_subscriptions",
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
            ));
        }
        let mut snapshots = Vec::with_capacity(parsed.len());
        for (name, channel) in parsed {
            let (data, sub) = self.snapshot(channel).await;
            self.subs.insert(name.clone(), sub);
            snapshots.push((name, data));
        }
        Ok((json!({ "channels": names }), snapshots))
    }

    fn unsubscribe(&mut self, names: Vec<String>) -> Result<Option<Value>, Refusal> {
        if names.is_empty() || names.len() > MAX_SUBSCRIPTIONS {
            return Err(refuse("bad_request", "channels: 1 to 64 channel names"));
        }
        for name in &names {
            self.subs.remove(name);
        }
        self.shared.with(|o| {
            o.conflated.retain(|(c, _)| !names.contains(c));
            o.reliable.retain(|out| match out {
                Out::Update { channel, .. } | Out::Snapshot { channel, .. } => {
                    !names.contains(channel)
                }
                Out::Control(_) => true,
            });
        });
        Ok(Some(json!({ "channels": names })))
    }

    async fn snapshot(&self, channel: Channel) -> (Value, Sub) {
        let t = &self.tenant;
        let mut sub = Sub {
            channel: channel.clone(),
            last_quote: None,
            last_count: 0,
        };
        let data = match &channel {
            Channel::Ticks(symbol) => {
                let q = t.quotes.read().get(symbol).copied();
                sub.last_quote = q.map(|q| (q.bid, q.ask, q.time_msc));
                q.map_or(Value::Null, |q| quote(symbol, &q))
            }
            Channel::Bars(symbol, tf) => {
                sub.last_count = t
                    .feed
                    .read()
                    .bars
                    .get(&(symbol.clone(), *tf))
                    .map_or(0, |b| b.0);
                let bars = match t.market_data.get() {
                    Some(md) => md
                        .send(GetRecentBars {
                            symbol: symbol.clone(),
                            timeframe: *tf,
                            limit: SNAPSHOT_BARS,
                        })
                        .await
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                json!({ "bars": bars })
            }
            Channel::Pnl => {
                let feed = t.feed.read();
                sub.last_count = feed.pnl.0;
                let mut v = serde_json::to_value(&feed.pnl.1).unwrap_or(Value::Null);
                v["curve"] = json!(feed
                    .curve
                    .iter()
                    .map(|(at, e)| json!([at, e]))
                    .collect::<Vec<_>>());
                v
            }
            Channel::Positions | Channel::Orders | Channel::Fills => {
                let snap = match t.portfolio.get() {
                    Some(p) => p.send(GetPortfolio).await.ok(),
                    None => None,
                };
                match (&channel, snap) {
                    (Channel::Positions, Some(s)) => json!({ "positions": s.positions }),
                    (Channel::Orders, Some(s)) => {
                        let mut orders = s.orders;
                        orders.sort_by_key(|o| o.created_ms);
                        let from = orders.len().saturating_sub(SNAPSHOT_ITEMS);
                        json!({ "orders": &orders[from..] })
                    }
                    (Channel::Fills, Some(s)) => {
                        let from = s.deals.len().saturating_sub(SNAPSHOT_ITEMS);
                        json!({ "fills": &s.deals[from..] })
                    }
                    (Channel::Positions, None) => json!({ "positions": [] }),
                    (Channel::Orders, None) => json!({ "orders": [] }),
                    _ => json!({ "fills": [] }),
                }
            }
            Channel::Strategies => {
                json!({ "strategies": crate::app::strategies::client_views(t, None).await })
            }
            Channel::Risk => self.risk_view().await,
            Channel::Supervision => {
                let mut events = self.state.runtime.events.snapshot(Some(&t.id.0));
                let from = events.len().saturating_sub(SNAPSHOT_EVENTS);
                events.drain(..from);
                json!({ "events": events })
            }
            Channel::Predictions(d) => {
                let host = t.model_hosts.read().get(d).cloned();
                let recent = match host {
                    Some(h) => h
                        .send(GetModelState)
                        .await
                        .map(|m| m.recent)
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                json!({ "deployment": d, "predictions": recent })
            }
        };
        (data, sub)
    }

    async fn risk_view(&self) -> Value {
        let state = match self.tenant.risk.get() {
            Some(r) => r.send(GetRiskState).await.ok(),
            None => None,
        };
        json!({ "limits": self.tenant.risk_limits(), "state": state })
    }

    /// Queues an update on every subscription to `channel`; false when the connection is closing.
    fn update(&self, channel: &Channel, data: &Value) -> bool {
        for (name, sub) in &self.subs {
            if sub.channel == *channel {
                let out = Out::Update {
                    channel: name.clone(),
                    data: data.to_string().into(),
                };
                if !self.shared.reliable(out) {
                    return false;
                }
            }
        }
        true
    }

    async fn on_event(&mut self, kind: EventKind, data: &Value) {
        let channel = match kind {
            EventKind::Order => Channel::Orders,
            EventKind::Fill => Channel::Fills,
            EventKind::Position => Channel::Positions,
            EventKind::Risk => Channel::Risk,
            EventKind::Prediction => match data.get("deployment").and_then(Value::as_str) {
                Some(d) => Channel::Predictions(d.to_owned()),
                None => return,
            },
            EventKind::Strategy => return self.refresh_strategies(None).await,
            EventKind::Correlation
            | EventKind::Model
            | EventKind::Reconciliation
            | EventKind::Tenant => return,
        };
        self.update(&channel, data);
    }

    async fn on_supervision(&mut self, e: crate::runtime::events::SupervisionEvent) {
        if let Some(id) = e.child.strip_prefix("strategy:") {
            let id = id.to_owned();
            self.refresh_strategies(Some(&id)).await;
        }
        if let Ok(data) = serde_json::to_value(&e) {
            self.update(&Channel::Supervision, &data);
        }
    }

    async fn refresh_strategies(&mut self, only: Option<&str>) {
        if !self.subscribed(&Channel::Strategies) {
            return;
        }
        for view in crate::app::strategies::client_views(&self.tenant, only).await {
            if !self.update(&Channel::Strategies, &view) {
                return;
            }
        }
    }

    /// The feed rang: queue what changed of each conflated subscription.
    /// Queues what changed of the market channels this connection follows. Each update's JSON is rendered
    /// once per change for all connections (`ClientFeed::rendered_*`), so a thousand connections cost one
    /// serialisation and a thousand reference counts, not a thousand serialisations.
    fn on_market(&mut self) {
        let t = self.tenant.clone();
        let quotes = t.quotes.read();
        let feed = t.feed.read();
        let mut queued = false;
        for (name, sub) in self.subs.iter_mut() {
            match &sub.channel {
                Channel::Ticks(symbol) => {
                    if let Some(q) = quotes.get(symbol) {
                        let now = (q.bid, q.ask, q.time_msc);
                        if sub.last_quote != Some(now) {
                            sub.last_quote = Some(now);
                            let json = t
                                .feed
                                .rendered_quote(symbol, now, || quote(symbol, q).to_string());
                            self.shared.conflate(name, json);
                            queued = true;
                        }
                    }
                }
                Channel::Bars(symbol, tf) => {
                    let key = (symbol.clone(), *tf);
                    if let Some((count, bar)) = feed.bars.get(&key) {
                        if *count != sub.last_count {
                            sub.last_count = *count;
                            let json = t.feed.rendered_bar(&key, *count, || {
                                serde_json::to_string(bar).unwrap_or_default()
                            });
                            self.shared.conflate(name, json);
                            queued = true;
                        }
                    }
                }
                Channel::Pnl if feed.pnl.0 != sub.last_count => {
                    sub.last_count = feed.pnl.0;
                    let json = t.feed.rendered_pnl(feed.pnl.0, || {
                        serde_json::to_string(&feed.pnl.1).unwrap_or_default()
                    });
                    self.shared.conflate(name, json);
                    queued = true;
                }
                _ => {}
            }
        }
        if queued {
            self.state
                .runtime
                .metrics
                .fanout(t.feed.since_rung().as_secs_f64());
        }
    }

    // ---- commands ----------------------------------------------------------------------------------------

    async fn command(&mut self, op: ClientOp) -> Result<Option<Value>, Refusal> {
        if !self.can_trade {
            return Err(refuse(
                "forbidden",
                "commands need the trader role or the trade scope",
            ));
        }
        let t = self.tenant.clone();
        if !self.principal.is_platform() {
            let limit = self
                .state
                .rate_limiter
                .check(
                    &t.id.0,
                    self.state.settings.rate_limits.per_minute(&t.tier()),
                )
                .await;
            if !limit.allowed {
                return Err(refuse(
                    "rate_limited",
                    format!(
                        "over the tier's {} requests per minute; retry in {} s",
                        limit.limit,
                        limit.retry_after.as_secs_f64().ceil().max(1.0)
                    ),
                ));
            }
        }
        let actor = self.principal.actor.clone();
        let name = op_name(&op);
        match op {
            // A change through the API: the caller's next REST read shows it (`PortfolioReads`).
            ClientOp::PlaceOrder(o) => {
                let placed = self.place_order(o).await.map(Some);
                t.portfolio_reads.invalidate();
                placed
            }
            ClientOp::CancelOrder(c) => {
                let cancelled = self.cancel_order(c).await.map(Some);
                t.portfolio_reads.invalidate();
                cancelled
            }
            ClientOp::Flatten(f) => {
                let reason = f.reason.unwrap_or_else(|| format!("flatten by {actor}"));
                if reason.chars().count() > 500 {
                    return Err(refuse("bad_request", "reason: at most 500 characters"));
                }
                let portfolio = t
                    .portfolio
                    .get()
                    .ok_or_else(|| refuse("unavailable", "portfolio restarting; retry"))?;
                let sent = portfolio
                    .send(Flatten {
                        reason: reason.clone(),
                    })
                    .await
                    .map_err(|e| refuse("unavailable", format!("portfolio: {e}; retry")))?;
                t.portfolio_reads.invalidate();
                t.audit(
                    "portfolio.flattened",
                    &actor,
                    json!({"reason": reason, "orders": sent}),
                );
                Ok(Some(json!({ "orders": sent })))
            }
            ClientOp::KillSwitch(k) => {
                let body = crate::app::trading::KillSwitchRequest {
                    on: k.on,
                    reason: k.reason,
                    flatten: k.flatten,
                };
                let state = crate::app::trading::set_kill_switch(&self.state, &t, &actor, body)
                    .await
                    .map_err(Refusal::from)?;
                Ok(Some(json!({ "risk": state })))
            }
            ClientOp::StrategyStart(s) | ClientOp::StrategyStop(s)
                if !t.strategies.read().contains_key(&s.strategy) =>
            {
                Err(refuse(
                    "unknown_strategy",
                    format!("no strategy `{}`", s.strategy),
                ))
            }
            ClientOp::StrategyStart(s) | ClientOp::StrategyStop(s) => {
                let start = name == "strategy_start";
                crate::app::strategies::set_enabled_as(&self.state, &t, &actor, &s.strategy, start)
                    .await
                    .map_err(Refusal::from)?;
                Ok(Some(
                    json!({ "strategy": self.strategy_view(&s.strategy).await }),
                ))
            }
            ClientOp::Subscribe(_) | ClientOp::Unsubscribe(_) | ClientOp::Ping(_) => Ok(None),
        }
    }

    async fn strategy_view(&self, id: &str) -> Value {
        crate::app::strategies::client_views(&self.tenant, Some(id))
            .await
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    }

    async fn place_order(&self, o: PlaceOrderOp) -> Result<Value, Refusal> {
        let t = &self.tenant;
        if !valid_client_order_id(&o.client_order_id) {
            return Err(refuse(
                "bad_request",
                "client_order_id: 1 to 48 of A-Z a-z 0-9 _ -",
            ));
        }
        if !t.symbols.contains(&o.symbol) {
            return Err(refuse(
                "unknown_symbol",
                format!("`{}` is not one of the tenant's symbols", o.symbol),
            ));
        }
        if o.volume <= Decimal::ZERO {
            return Err(refuse("bad_request", "volume: must be greater than 0"));
        }
        match (o.kind, o.price) {
            (OrderKind::Market, Some(_)) => {
                return Err(refuse(
                    "bad_request",
                    "price: a market order has no price (the terminal uses the current one)",
                ))
            }
            (OrderKind::Limit | OrderKind::Stop, None) => {
                return Err(refuse(
                    "bad_request",
                    "price: required for limit and stop orders",
                ))
            }
            (_, Some(p)) if p <= Decimal::ZERO => {
                return Err(refuse("bad_request", "price: must be greater than 0"))
            }
            _ => {}
        }
        let portfolio = t.portfolio.get().ok_or_else(|| {
            refuse(
                "unavailable",
                "portfolio restarting; retry with the same client_order_id",
            )
        })?;
        let placed = portfolio
            .send(PlaceManualOrder {
                client_order_id: format!("manual:{}", o.client_order_id),
                account: o.account.map(crate::domain::Login::new),
                symbol: Symbol::new(o.symbol),
                side: o.side,
                kind: o.kind,
                volume: o.volume,
                price: o.price,
                actor: self.principal.actor.clone(),
            })
            .await
            .map_err(|e| {
                refuse(
                    "unavailable",
                    format!("portfolio: {e}; retry with the same client_order_id"),
                )
            })?
            .map_err(|r| refuse(r.code, r.reason))?;
        Ok(json!({ "order": placed.order, "duplicate": placed.duplicate }))
    }

    async fn cancel_order(&self, c: CancelOrderOp) -> Result<Value, Refusal> {
        let portfolio = self
            .tenant
            .portfolio
            .get()
            .ok_or_else(|| refuse("unavailable", "portfolio restarting; retry"))?;
        let order = portfolio
            .send(CancelManualOrder {
                client_order_id: format!("manual:{}", c.client_order_id),
                actor: self.principal.actor.clone(),
            })
            .await
            .map_err(|e| refuse("unavailable", format!("portfolio: {e}; retry")))?
            .map_err(|r| match r.code {
                "unknown_order" => refuse(
                    "unknown_order",
                    format!("no manual order `{}`", c.client_order_id),
                ),
                code => refuse(code, r.reason),
            })?;
        Ok(json!({ "order": order, "cancel": "sent" }))
    }
}

fn valid_client_order_id(id: &str) -> bool {
    (1..=48).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn quote(symbol: &Symbol, q: &crate::actors::tenant::Quote) -> Value {
    json!({"symbol": symbol, "bid": q.bid, "ask": q.ask, "time_msc": q.time_msc})
}

fn op_name(op: &ClientOp) -> &'static str {
    match op {
        ClientOp::Subscribe(_) => "subscribe",
        ClientOp::Unsubscribe(_) => "unsubscribe",
        ClientOp::PlaceOrder(_) => "place_order",
        ClientOp::CancelOrder(_) => "cancel_order",
        ClientOp::Flatten(_) => "flatten",
        ClientOp::KillSwitch(_) => "kill_switch",
        ClientOp::StrategyStart(_) => "strategy_start",
        ClientOp::StrategyStop(_) => "strategy_stop",
        ClientOp::Ping(_) => "ping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_with_their_id_and_refused_with_the_field_named() {
        let (id, op) = parse_frame(r#"{"op":"subscribe","id":"s1","channels":["fills"]}"#)
            .expect("a subscribe frame");
        assert_eq!(id, "s1");
        assert!(matches!(op, ClientOp::Subscribe(c) if c.channels == ["fills"]));
        let (id, op) = parse_frame(
            r#"{"op":"place_order","id":"o1","client_order_id":"a-1","symbol":"EURUSD","side":"buy","volume":"0.1"}"#,
        )
        .expect("an order");
        assert_eq!(id, "o1");
        assert!(
            matches!(op, ClientOp::PlaceOrder(o) if o.kind == OrderKind::Market && o.price.is_none())
        );
        assert!(matches!(
            parse_frame(r#"{"op":"ping","id":"p"}"#),
            Ok((_, ClientOp::Ping(_)))
        ));

        let err = |text: &str| parse_frame(text).expect_err(text);
        assert_eq!(err("[1]").0, None);
        assert_eq!(err(r#"{"op":"ping"}"#).1, "id: missing");
        assert_eq!(
            err(r#"{"op":"ping","id":""}"#).1,
            "id: a string of 1 to 64 characters"
        );
        let (id, why) = err(r#"{"op":"warp","id":"w"}"#);
        assert_eq!(id.as_deref(), Some("w"));
        assert!(why.starts_with("op: unknown `warp`"), "{why}");
        let (_, why) = err(r#"{"op":"kill_switch","id":"k","on":"yes"}"#);
        assert!(why.starts_with("on:"), "{why}");
        let (_, why) = err(r#"{"op":"ping","id":"p","extra":1}"#);
        assert!(why.contains("unknown field `extra`"), "{why}");
    }

    #[test]
    fn client_order_ids_are_short_and_plain() {
        assert!(valid_client_order_id("abc_1-X"));
        assert!(!valid_client_order_id(""));
        assert!(!valid_client_order_id("has:colon"));
        assert!(!valid_client_order_id(&"x".repeat(49)));
    }

    #[test]
    fn the_writer_numbers_each_channel_from_its_snapshot() {
        assert_eq!(
            frame("update", "ticks:EURUSD", 7, r#"{"bid":"1.1"}"#),
            r#"{"type":"update","channel":"ticks:EURUSD","seq":7,"data":{"bid":"1.1"}}"#
        );
        let shared = Shared::default();
        shared.conflate("ticks:EURUSD", "1".into());
        shared.conflate("ticks:EURUSD", "2".into());
        assert_eq!(shared.with(|o| o.conflated.len()), 1, "latest per channel");
        assert!(shared.snapshot("ticks:EURUSD", &json!(3)));
        assert_eq!(
            shared.with(|o| o.conflated.len()),
            0,
            "a snapshot supersedes queued updates"
        );
        for i in 0..MAX_RELIABLE_QUEUE - 1 {
            assert!(shared.reliable(Out::Control(i.to_string())));
        }
        assert!(!shared.reliable(Out::Control("one too many".into())));
        assert!(shared.closing());
    }
}
