//! `tg-ceiling`: the machine's ceiling for bench/. The least an HTTP intake
//! can do: read the body, parse it as JSON, answer 202. Same routes as the
//! gate, so the same load runs against both.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;

/// Largest body accepted (the gate's default `server.body_bytes_max`).
const BODY_BYTES_MAX: usize = 1024 * 1024;

async fn accept(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8790".to_owned())
        .parse()
        .context("usage: tg-ceiling [ADDR:PORT]")?;
    let app = Router::new()
        .route("/v1/events/{source}", post(accept))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("tg-ceiling on http://{listen}");
    axum::serve(listener, app).await?;
    Ok(())
}
