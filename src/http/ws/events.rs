//! `GET /ws/events?api_key=trk_…`: a tenant's trading events (orders and fills) as JSON text frames, for
//! dashboards and bots. Events produced on any trellis node sharing the Redis reach every node's clients.
//! A client too slow to keep up is told how many events it missed rather than slowing trellis down.

use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::broadcast::error::RecvError;

use crate::http::error::ApiError;
use crate::http::AppState;

#[derive(serde::Deserialize)]
pub struct Query {
    api_key: Option<String>,
}

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<Query>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let key = query
        .api_key
        .clone()
        .or_else(|| {
            req.headers()
                .get("X-API-Key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| crate::http::api::credential(&req))
        .ok_or_else(|| {
            ApiError::Unauthorized("an API key is required (?api_key= or X-API-Key)".into())
        })?;
    let principal = crate::http::api::authenticate(&state, &key)?;
    if !principal.may(crate::security::rbac::Access::Read) {
        return Err(ApiError::Forbidden("reading events needs the read scope".into()).into());
    }
    let tenant = principal
        .tenant
        .as_deref()
        .and_then(|t| state.runtime.tenant(t))
        .ok_or_else(|| {
            ApiError::Forbidden("events are per tenant: use a tenant's credentials".into())
        })?;
    // An access token's stream ends when the token does; the client reconnects with a fresh one.
    let expires = match principal.credential {
        crate::security::service::Credential::User { exp, .. } => {
            let left = (exp as i64 * 1000 - crate::domain::now_ms()).max(0) as u64;
            Some(tokio::time::Instant::now() + std::time::Duration::from_millis(left))
        }
        _ => None,
    };
    let mut events = state.runtime.bus.subscribe(&tenant.id.0);
    let (response, mut session, mut incoming) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(async move {
        use futures_util::StreamExt;
        // A revoked credential or a suspended tenant ends the stream too.
        let mut recheck = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => {
                        let frame = serde_json::json!({"type": e.kind, "tenant": e.tenant, "data": e.data});
                        if session.text(frame.to_string()).await.is_err() { break; }
                    }
                    Err(RecvError::Lagged(n)) => {
                        let frame = serde_json::json!({"type": "lagged", "missed": n});
                        if session.text(frame.to_string()).await.is_err() { break; }
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = async {
                    match expires {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let _ = session
                        .close(Some(actix_ws::CloseReason {
                            code: actix_ws::CloseCode::Policy,
                            description: Some("access token expired".into()),
                        }))
                        .await;
                    return;
                }
                _ = recheck.tick() => {
                    if let Err(e) = state.security.still_valid(&principal) {
                        let _ = session
                            .close(Some(actix_ws::CloseReason {
                                code: actix_ws::CloseCode::Policy,
                                description: Some(e.to_string()),
                            }))
                            .await;
                        return;
                    }
                }
                msg = incoming.next() => match msg {
                    Some(Ok(actix_ws::Message::Ping(p))) if session.pong(&p).await.is_err() => break,
                    Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => break,
                    _ => {}
                },
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}
