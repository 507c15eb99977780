//! The WebSocket client the simulator and the benchmarks connect with: awc, with `TCP_NODELAY` set.
//!
//! A bridge sends many small frames (ticks) and waits for small answers (orders). With Nagle's algorithm
//! on, the kernel holds a small write until the previous one is acknowledged, and the peer delays that
//! acknowledgement by up to 40 ms: every order would arrive tens of milliseconds late. awc's default
//! connector does not disable Nagle, so this one does.

use std::time::Duration;

use actix_service::fn_service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use awc::http::Uri;

/// An awc client whose connections have `TCP_NODELAY`.
pub fn ws_client() -> awc::Client {
    let connector =
        awc::Connector::new().connector(fn_service(|req: ConnectInfo<Uri>| async move {
            let addr = format!("{}:{}", req.hostname(), req.port());
            let stream = actix_web::rt::net::TcpStream::connect(addr)
                .await
                .map_err(ConnectError::Io)?;
            stream.set_nodelay(true).map_err(ConnectError::Io)?;
            Ok::<_, ConnectError>(Connection::new(req.request().clone(), stream))
        }));
    awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(5))
        .finish()
}
