//! The API's HTTP server: the accept loop, with the limits that keep a flood of clients from
//! taking the node's file descriptors or its memory.
//!
//! - At most [`ServeLimits::max_connections`] connections at once, and at most
//!   [`ServeLimits::max_per_address`] from one IP address; a connection beyond either is closed
//!   as soon as it is accepted (the client sees a reset), and counted in
//!   `meshward_api_connections_refused_total`.
//! - A request's headers must arrive within [`ServeLimits::header_read_timeout`] of the
//!   connection's first byte (or, on a kept-alive connection, of the previous response): a
//!   client that sends part of a request and stops, or holds an idle connection open, is
//!   dropped then.
//! - A request's body must arrive within [`ServeLimits::body_read_timeout`]; otherwise the
//!   answer is `408 request_timeout` and the connection closes.
//! - When the accept call fails (out of file descriptors, for one), the loop waits
//!   [`ACCEPT_BACKOFF`] instead of spinning, and says so once per burst.
//!
//! The node also raises its open-files limit to the hard limit at start
//! ([`raise_open_files_limit`]), so the store, the WAL, proposal files and the mesh keep their
//! descriptors whatever the API is asked for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use super::ApiError;
use crate::metrics::Metrics;

/// How long the accept loop pauses after a failed accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a clean stop waits for open connections to finish their responses.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The API server's limits; see the module documentation for what each does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_per_address: usize,
    /// Time allowed for a request's headers.
    pub header_read_timeout: Duration,
    /// Time allowed for a request's body.
    pub body_read_timeout: Duration,
}

impl Default for ServeLimits {
    /// 512 connections, 128 from one address, 10 s for headers and 10 s for a body.
    fn default() -> Self {
        ServeLimits {
            max_connections: 512,
            max_per_address: 128,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections per address. One mutex, held for one map operation.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`], given back on drop.
struct AddressSlot(Arc<PerAddress>, IpAddr);

impl PerAddress {
    fn enter(this: &Arc<PerAddress>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut m = meshward_core::sync::lock(&this.0, "api connections per address");
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(this.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = meshward_core::sync::lock(&(self.0).0, "api connections per address");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves `router` on `listener` within `limits` until `stop` fires, then lets open
/// connections finish their responses for up to a few seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let router = router.layer(axum::middleware::from_fn(move |req, next| {
        read_body_within(limits.body_read_timeout, req, next)
    }));
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut accept_failing = false;
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    accept_failing = false;
                    a
                }
                Err(e) => {
                    if !accept_failing {
                        warn!(error = %e, "api cannot accept connections; retrying");
                        accept_failing = true;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            metrics.api_connections_refused.inc();
            debug!(%peer, "api connection refused: too many connections");
            continue;
        };
        let Some(slot) = PerAddress::enter(&per_address, peer.ip(), limits.max_per_address) else {
            metrics.api_connections_refused.inc();
            debug!(%peer, "api connection refused: too many from this address");
            continue;
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(
                TokioIo::new(super::uri_guard::UriGuard::new(stream)),
                service,
            );
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                debug!(%peer, error = %e, "api connection ended");
            }
            drop((permit, slot));
        });
    }
    let _ = closing_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, total.acquire_many(all))
        .await
        .is_err()
    {
        info!("api stopped with connections still open");
    }
}

/// Reads the request's body within `limit`, so a client that trickles or stalls its body
/// cannot hold a handler; the body is then handed on in full (size limits still apply).
async fn read_body_within(
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limit, axum::body::to_bytes(body, super::MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {} bytes", super::MAX_BODY_BYTES),
            )
            .into_response()
        }
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("request body not received within {} s", limit.as_secs()),
            )
            .into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// Raises this process's soft open-files limit to its hard limit, so the API's connection
/// cap, the mesh and the store's files fit together. Returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            warn!(error = %e, "cannot raise the open-files limit");
            return getrlimit(Resource::Nofile).current;
        }
    }
    l.current
}

/// The client address of a request served by [`serve`].
pub fn client_addr(req: &axum::extract::Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
