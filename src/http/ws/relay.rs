//! Several nodes: a trading client's WebSocket for a tenant that runs on another node is relayed there.
//!
//! The client connects to any node. When the tenant's owner is another node, this node opens the same
//! WebSocket to the owner with the client's own credential (the owner authenticates and authorises it as if
//! the client had come straight to it) and copies frames both ways until either side closes. Subscriptions,
//! sequence numbers and commands are the owner's, so the protocol is unchanged; when the tenant moves, the
//! owner closes the stream (its tenant stopped) and the client reconnects, to be relayed to the new owner.

use actix_web::{web, HttpRequest, HttpResponse};
use awc::ws;
use futures_util::{SinkExt, StreamExt};

use crate::http::error::ApiError;
use crate::http::forward::FORWARDED;

/// Headers that carry the client's credential.
const CREDENTIALS: [&str; 2] = ["authorization", "x-api-key"];

/// Upgrades the client's request and relays it to `url` (the owner's `ws://…/ws/v1/client?…`).
pub async fn relay(
    req: &HttpRequest,
    body: web::Payload,
    url: String,
    node: &str,
    max_frame: usize,
) -> actix_web::Result<HttpResponse> {
    let mut upstream = crate::sim::client::ws_client()
        .ws(&url)
        .max_frame_size(max_frame)
        .set_header(FORWARDED, node);
    for name in CREDENTIALS {
        if let Some(value) = req.headers().get(name) {
            upstream = upstream.set_header(name, value.clone());
        }
    }
    let (_answer, framed) = upstream.connect().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "the tenant's node did not take the stream ({e}); retry shortly"
        ))
    })?;
    let (response, mut session, incoming) = actix_ws::handle(req, body)?;
    let mut incoming = incoming.max_frame_size(max_frame);
    let (mut sink, mut stream) = framed.split();
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                from_client = incoming.next() => match from_client {
                    Some(Ok(actix_ws::Message::Text(text))) => {
                        if sink.send(ws::Message::Text(text)).await.is_err() { break; }
                    }
                    Some(Ok(actix_ws::Message::Binary(bytes))) => {
                        if sink.send(ws::Message::Binary(bytes)).await.is_err() { break; }
                    }
                    Some(Ok(actix_ws::Message::Ping(p))) => {
                        if session.pong(&p).await.is_err() { break; }
                    }
                    Some(Ok(actix_ws::Message::Close(reason))) => {
                        let _ = sink.send(ws::Message::Close(reason)).await;
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        let _ = sink.send(ws::Message::Close(None)).await;
                        return;
                    }
                },
                from_owner = stream.next() => match from_owner {
                    Some(Ok(ws::Frame::Text(bytes))) => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        if session.text(text).await.is_err() { break; }
                    }
                    Some(Ok(ws::Frame::Binary(bytes))) => {
                        if session.binary(bytes).await.is_err() { break; }
                    }
                    Some(Ok(ws::Frame::Ping(p))) => {
                        if sink.send(ws::Message::Pong(p)).await.is_err() { break; }
                    }
                    Some(Ok(ws::Frame::Close(reason))) => {
                        let _ = session.close(reason).await;
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
        // One side went away without a close: the other is told the stream ended.
        let _ = sink.send(ws::Message::Close(None)).await;
        let _ = session
            .close(Some(actix_ws::CloseReason {
                code: actix_ws::CloseCode::Away,
                description: Some("the tenant's node went away; reconnect".into()),
            }))
            .await;
    });
    Ok(response)
}
