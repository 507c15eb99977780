//! `GET /ws/mt5`: one task per bridge connection.
//!
//! The task authenticates the `hello`, attaches the connection to the account's `Mt5Session` and then
//! pumps frames both ways. It parses every text frame itself, so a bad frame is answered right here with an
//! `error` naming the problem and never reaches the actors; frames that parsed go to the session in order.
//! Frames over `mt5.max_frame_bytes` close the connection with 1009, a sender beyond its frame budget or
//! with too many bad frames with 1008. Everything accepted before a bad frame stays accepted.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use futures_util::{FutureExt, StreamExt};
use governor::{Quota, RateLimiter};
use tokio::sync::mpsc;

use crate::actors::messages::{Attach, Detach, FrameReceived, Outgoing, RejectFrame};
use crate::actors::mt5_session::Mt5Session;
use crate::actors::tenant::TenantContext;
use crate::bridge::protocol::{
    decode, encode, ErrorCode, ErrorFrame, Hello, Inbound, Outbound, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION, UPGRADE_HINT,
};
use crate::domain::Login;
use crate::http::AppState;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let max = state.settings.mt5.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    actix_web::rt::spawn(async move {
        let mut conn = Conn {
            session,
            state: state.into_inner(),
            errors: 0,
            peer,
            attached: None,
        };
        // The connection belongs to its session: a panic in this task is recorded and the session is told
        // the connection is gone (the bridge reconnects and resumes), instead of dying silently.
        let outcome = std::panic::AssertUnwindSafe(conn.run(stream))
            .catch_unwind()
            .await;
        if let Err(payload) = outcome {
            let why = crate::runtime::supervisor::panic_message(payload.as_ref());
            tracing::error!(peer = %conn.peer, reason = %why, "bridge connection task panicked");
            conn.state
                .runtime
                .events
                .record(crate::runtime::events::NewEvent {
                    kind: crate::runtime::events::EventKind::Failed,
                    supervisor: "connections",
                    child: "ws.mt5",
                    tenant: None,
                    reason: &why,
                    generation: 0,
                });
            if let Some((session, conn_id)) = conn.attached.take() {
                session.do_send(Detach { conn_id });
            }
            let _ = conn
                .session
                .clone()
                .close(Some(CloseCode::Error.into()))
                .await;
        }
    });
    Ok(response)
}

/// The connection's own frames (errors before a session exists, fatal errors while closing) carry `seq` 0:
/// they are outside the session's sequence. Everything else is sent by the session.
struct Conn {
    session: Session,
    state: Arc<AppState>,
    errors: u32,
    peer: String,
    /// The session this connection is attached to, once it is.
    attached: Option<(Addr<Mt5Session>, u64)>,
}

type Stream = actix_ws::AggregatedMessageStream;

impl Conn {
    async fn run(&mut self, mut stream: Stream) {
        let Some((tenant, hello)) = self.handshake(&mut stream).await else {
            return;
        };
        let login = Login::new(hello.login);
        let session = match tenant.session(login).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, account = %login, error = %e, "no session for the bridge");
                return self
                    .fail(
                        ErrorCode::ShuttingDown,
                        format!("session unavailable, retry: {e}"),
                        None,
                    )
                    .await;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let conn_id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        self.attached = Some((session.clone(), conn_id));
        if session.send(Attach { conn_id, tx, hello }).await.is_err() {
            return self
                .fail(
                    ErrorCode::ShuttingDown,
                    "session unavailable, retry".into(),
                    None,
                )
                .await;
        }
        let mt5 = &self.state.settings.mt5;
        let per_sec = NonZeroU32::new(mt5.max_frames_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(mt5.frame_burst).unwrap_or(per_sec);
        let budget = RateLimiter::direct(Quota::per_second(per_sec).allow_burst(burst));
        loop {
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(Outgoing::Text(text)) => {
                        if self.session.text(text).await.is_err() { break; }
                    }
                    Some(Outgoing::Close(code, reason)) => {
                        let _ = self.session.clone().close(Some(CloseReason { code: CloseCode::from(code), description: Some(reason) })).await;
                        break;
                    }
                    None => {
                        let _ = self.session.clone().close(Some(CloseCode::Away.into())).await;
                        break;
                    }
                },
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    if budget.check().is_err() {
                        self.fail(ErrorCode::RateLimited, format!(
                            "more than {} frames per second (burst {}): connection closed", per_sec, burst), None).await;
                        break;
                    }
                    if crate::runtime::task::faults_armed() {
                        // Fault injection, per account so a drill hits only the connection meant.
                        crate::runtime::task::fault_point(&format!("ws.mt5:{login}"));
                    }
                    if !self.on_message(msg, &session, conn_id).await { break; }
                }
            }
        }
        self.attached = None;
        session.do_send(Detach { conn_id });
    }

    /// Reads frames until a valid `hello` with a known key and a version from `MIN_PROTOCOL_VERSION` to
    /// `PROTOCOL_VERSION` arrives (the session learns the version from the hello and speaks it).
    async fn handshake(&mut self, stream: &mut Stream) -> Option<(Arc<TenantContext>, Hello)> {
        let timeout = Duration::from_millis(self.state.settings.mt5.hello_timeout_ms);
        let first = match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(AggregatedMessage::Text(text)))) => text,
            Ok(Some(Ok(AggregatedMessage::Binary(_)))) => {
                self.fail(
                    ErrorCode::BinaryNotSupported,
                    "frames are JSON text".into(),
                    None,
                )
                .await;
                return None;
            }
            Ok(Some(Ok(_))) => {
                self.fail(
                    ErrorCode::HelloRequired,
                    "the first frame must be a hello".into(),
                    None,
                )
                .await;
                return None;
            }
            Ok(Some(Err(e))) => {
                self.protocol_failure(e).await;
                return None;
            }
            Ok(None) => return None,
            Err(_) => {
                self.fail(
                    ErrorCode::HelloRequired,
                    format!("no hello within {} ms", timeout.as_millis()),
                    None,
                )
                .await;
                return None;
            }
        };
        let hello = match decode(&first) {
            Ok(Inbound::Hello(h)) => h,
            Ok(other) => {
                self.fail(
                    ErrorCode::HelloRequired,
                    format!("the first frame must be a hello, not {}", other.kind()),
                    Some(other.seq()),
                )
                .await;
                return None;
            }
            Err(e) => {
                self.fail(e.code, e.message, e.ref_seq).await;
                return None;
            }
        };
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
            self.fail(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported; this trellis speaks {MIN_PROTOCOL_VERSION} to \
                     {PROTOCOL_VERSION}: {}",
                    hello.protocol_version,
                    if hello.protocol_version < MIN_PROTOCOL_VERSION {
                        UPGRADE_HINT
                    } else {
                        "use a bridge of this trellis's protocol version"
                    }
                ),
                Some(hello.seq),
            )
            .await;
            return None;
        }
        let verdict = crate::http::api::authenticate(&self.state, &hello.api_key).and_then(|p| {
            if p.role.is_some()
                || !p
                    .scopes
                    .contains(&crate::security::rbac::Scope::MarketWrite)
            {
                return Err(crate::http::error::ApiError::Forbidden(
                    "bridges need an API key with the market:write scope".into(),
                ));
            }
            p.tenant.ok_or_else(|| {
                crate::http::error::ApiError::Unauthorized("unknown or revoked API key".into())
            })
        });
        // Several nodes: a tenant that runs elsewhere is answered with where.
        let verdict = match verdict {
            Ok(t) => match self.state.runtime.tenant(&t) {
                Some(running) => Ok(running),
                None => {
                    if let Some(cluster) = self.state.cluster.clone() {
                        self.redirect(&cluster, &t, &hello).await;
                        return None;
                    }
                    // A valid key whose tenant is not running this moment (restarting through the API, or
                    // starting): the bridge retries; `bad_api_key` would stop it for good.
                    self.fail(
                        ErrorCode::TenantUnavailable,
                        format!("tenant `{t}` is not running this moment (it is starting or restarting); retry shortly"),
                        Some(hello.seq),
                    )
                    .await;
                    return None;
                }
            },
            Err(e) => Err(e),
        };
        let verdict = match verdict {
            Ok(t) => self.admit(&t, &hello).await.map(|()| t),
            Err(e) => Err(e.to_string()),
        };
        let tenant = match verdict {
            Ok(t) => t,
            Err(why) => {
                tracing::warn!(peer = %self.peer, login = hello.login, reason = %why, "bridge refused");
                self.fail(ErrorCode::BadApiKey, why, Some(hello.seq)).await;
                return None;
            }
        };
        Some((tenant, hello))
    }

    /// The key's tenant does not run on this node: name its owner (`redirect`), or say that none owns it
    /// this moment (`tenant_unavailable`: it is moving, retry shortly). Either way the connection closes.
    async fn redirect(
        &mut self,
        cluster: &crate::cluster::ClusterHandle,
        tenant: &str,
        hello: &Hello,
    ) {
        let crate::cluster::node::Location::Remote { node, url } = cluster.locate(tenant) else {
            self.fail(
                ErrorCode::TenantUnavailable,
                format!("tenant `{tenant}` has no owner this moment (it is moving between nodes); retry shortly"),
                Some(hello.seq),
            )
            .await;
            return;
        };
        let url = crate::cluster::node::bridge_url(&url);
        tracing::info!(peer = %self.peer, tenant, owner = %node, %url, "bridge redirected to the tenant's node");
        let frame = crate::bridge::protocol::Redirect {
            seq: 0,
            url,
            reason: format!("tenant `{tenant}` is owned by node {node}"),
            node,
            tenant: tenant.to_owned(),
        };
        let _ = self.session.text(encode(&Outbound::Redirect(frame))).await;
        let _ = self
            .session
            .clone()
            .close(Some(CloseReason {
                code: CloseCode::Normal,
                description: Some("redirect".into()),
            }))
            .await;
    }

    /// Whether this tenant may connect this account now: once a tenant has registered MT5 accounts, only
    /// those logins (on their server) may connect; and no more terminals at once than its tier allows.
    async fn admit(&self, tenant: &Arc<TenantContext>, hello: &Hello) -> Result<(), String> {
        let registered = self
            .state
            .security
            .store
            .accounts_of(&tenant.id.0)
            .await
            .map_err(|e| e.to_string())?;
        if !registered.is_empty()
            && !registered
                .iter()
                .any(|a| a.login as u64 == hello.login && a.server == hello.server)
        {
            return Err(format!(
                "account {} on {} is not registered for this tenant",
                hello.login, hello.server
            ));
        }
        let tier = tenant.tier();
        let quota = self.state.settings.quotas.mt5_accounts.per_minute(&tier);
        let others = tenant
            .sessions
            .read()
            .iter()
            .filter(|(login, s)| **login != Login::new(hello.login) && s.connected())
            .count();
        if others as u32 >= quota {
            return Err(format!(
                "the {tier} tier allows {quota} MT5 connections at once"
            ));
        }
        Ok(())
    }

    /// Handles one message after the handshake; false ends the connection.
    async fn on_message(
        &mut self,
        msg: Result<AggregatedMessage, ProtocolError>,
        session: &Addr<Mt5Session>,
        conn_id: u64,
    ) -> bool {
        let read_at = std::time::Instant::now();
        match msg {
            Ok(AggregatedMessage::Text(text)) => match decode(&text) {
                Ok(frame) => {
                    let msg = FrameReceived {
                        conn_id,
                        frame,
                        read_at,
                    };
                    match session.try_send(msg) {
                        Ok(()) => true,
                        // A full mailbox: wait for room rather than drop what the terminal sent.
                        Err(actix::prelude::SendError::Full(msg)) => {
                            session.send(msg).await.is_ok()
                        }
                        Err(actix::prelude::SendError::Closed(_)) => {
                            self.fail(
                                ErrorCode::ShuttingDown,
                                "session restarted; reconnect".into(),
                                None,
                            )
                            .await;
                            false
                        }
                    }
                }
                Err(e) => {
                    self.bad_frame(session, conn_id, e.code, e.message, e.ref_seq)
                        .await
                }
            },
            Ok(AggregatedMessage::Binary(_)) => {
                self.bad_frame(
                    session,
                    conn_id,
                    ErrorCode::BinaryNotSupported,
                    "frames are JSON text".into(),
                    None,
                )
                .await
            }
            Ok(AggregatedMessage::Ping(bytes)) => self.session.pong(&bytes).await.is_ok(),
            Ok(AggregatedMessage::Pong(_)) => true,
            Ok(AggregatedMessage::Close(_)) => false,
            Err(e) => {
                self.protocol_failure(e).await;
                false
            }
        }
    }

    /// A frame that could not be used: tell the bridge, keep the connection unless it keeps happening.
    async fn bad_frame(
        &mut self,
        session: &Addr<Mt5Session>,
        conn_id: u64,
        code: ErrorCode,
        message: String,
        ref_seq: Option<u64>,
    ) -> bool {
        self.errors += 1;
        let limit = self.state.settings.mt5.max_bad_frames;
        if self.errors >= limit {
            self.fail(
                ErrorCode::TooManyErrors,
                format!("{limit} bad frames; last: {message}"),
                ref_seq,
            )
            .await;
            return false;
        }
        session
            .send(RejectFrame {
                conn_id,
                code,
                message,
                ref_seq,
            })
            .await
            .is_ok()
    }

    async fn protocol_failure(&mut self, e: ProtocolError) {
        match e {
            ProtocolError::Overflow => {
                let max = self.state.settings.mt5.max_frame_bytes;
                self.send_error(
                    ErrorCode::FrameTooLarge,
                    format!("frame larger than {max} bytes"),
                    None,
                    true,
                )
                .await;
                let _ = self
                    .session
                    .clone()
                    .close(Some(CloseReason {
                        code: CloseCode::Size,
                        description: Some("frame too large".into()),
                    }))
                    .await;
            }
            other => {
                self.send_error(
                    ErrorCode::MalformedJson,
                    format!("websocket protocol error: {other}"),
                    None,
                    true,
                )
                .await;
                let _ = self
                    .session
                    .clone()
                    .close(Some(CloseCode::Protocol.into()))
                    .await;
            }
        }
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        message: String,
        ref_seq: Option<u64>,
        fatal: bool,
    ) {
        self.state.runtime.metrics.protocol_error(code.as_str());
        let frame = ErrorFrame {
            seq: 0,
            code: code.as_str().into(),
            message,
            ref_seq,
            fatal,
        };
        let _ = self.session.text(encode(&Outbound::Error(frame))).await;
    }

    /// A fatal error: tell the bridge why, close with 1008.
    async fn fail(&mut self, code: ErrorCode, message: String, ref_seq: Option<u64>) {
        tracing::info!(peer = %self.peer, code = code.as_str(), %message, "closing bridge connection");
        self.send_error(code, message.clone(), ref_seq, true).await;
        // A close reason is at most 123 bytes; cut on a character boundary.
        let mut reason = message;
        let mut cut = reason.len().min(120);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        let _ = self
            .session
            .clone()
            .close(Some(CloseReason {
                code: CloseCode::Policy,
                description: Some(reason),
            }))
            .await;
    }
}
