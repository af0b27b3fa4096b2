//! The HTTP API (axum): JSON endpoints, Prometheus metrics, live events (SSE), an OpenAPI
//! document, and JSON errors with a stable `code` for every failure, including malformed paths,
//! oversized bodies and unknown routes.
//!
//! Two kinds of caller authenticate:
//! - the operator, with the bearer token `meshward init` wrote, for calls that submit
//!   transactions;
//! - a device, by signing a single-use nonce from `POST /v1/challenge` with its account's
//!   current key ([`auth`], [`meshward_core::auth`]), for its own mailbox.
//!
//! Everything else only reads the ledger and needs no credential. [`ROUTES`] lists every route;
//! the router is built from it, and `GET /v1/openapi.json` documents each one.
//!
//! ```
//! assert!(meshward_node::api::ROUTES.contains(&("POST", "/v1/mailbox/fetch")));
//! ```

pub mod auth;
mod device;
mod stream;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use meshward_core::hash::Hash;
use meshward_core::state::StateView;
use meshward_core::tx::{Recipient, Tx, TxBody};
use meshward_core::{hex, CertifiedBlock};
use serde_json::{json, Value};

use crate::mempool::AdmitError;
use crate::Gateway;

/// Largest request body: a transaction is at most 256 KiB, as hex about twice that.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An API error: HTTP status, stable machine-readable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Every route the API serves, as (method, path template). The router is built from this
/// list, and the OpenAPI document must describe each entry (a test checks both).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/status"),
    ("GET", "/v1/blocks/{height}"),
    ("POST", "/v1/tx"),
    ("POST", "/v1/txs"),
    ("GET", "/v1/tx/{hash}"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/events"),
    ("POST", "/v1/challenge"),
    ("POST", "/v1/mailbox/fetch"),
    ("POST", "/v1/mailbox/ack"),
    ("GET", "/v1/devices"),
    ("GET", "/v1/devices/{id}"),
    ("GET", "/v1/groups/{name}"),
    ("GET", "/v1/anchors/{commitment}"),
    ("GET", "/v1/anchors/{commitment}/proof"),
];

/// The OpenAPI 3.0 document served at `GET /v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The handler of one [`ROUTES`] entry.
fn handler(method: &str, path: &str) -> Option<MethodRouter<Arc<Gateway>>> {
    Some(match (method, path) {
        ("GET", "/v1/status") => get(status),
        ("GET", "/v1/blocks/{height}") => get(block),
        ("POST", "/v1/tx") => post(submit_tx),
        ("POST", "/v1/txs") => post(submit_txs),
        ("GET", "/v1/tx/{hash}") => get(tx_status),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/openapi.json") => get(openapi),
        ("GET", "/v1/events") => get(stream::events),
        ("POST", "/v1/challenge") => post(device::challenge),
        ("POST", "/v1/mailbox/fetch") => {
            post(device::mailbox_fetch).layer(DefaultBodyLimit::max(MAX_DEVICE_BODY_BYTES))
        }
        ("POST", "/v1/mailbox/ack") => {
            post(device::mailbox_ack).layer(DefaultBodyLimit::max(MAX_DEVICE_BODY_BYTES))
        }
        ("GET", "/v1/devices") => get(device::list_devices),
        ("GET", "/v1/devices/{id}") => get(device::get_device),
        ("GET", "/v1/groups/{name}") => get(device::get_group),
        ("GET", "/v1/anchors/{commitment}") => get(device::anchor_location),
        ("GET", "/v1/anchors/{commitment}/proof") => get(device::anchor_proof),
        _ => return None,
    })
}

/// Largest device-authenticated request body: a few short fields.
pub const MAX_DEVICE_BODY_BYTES: usize = 16 * 1024;

/// The API's router over `gw`'s components.
pub fn router(gw: Arc<Gateway>) -> Router {
    let mut r = Router::new();
    for &(method, path) in ROUTES {
        let h = handler(method, path)
            .unwrap_or_else(|| panic!("ROUTES lists {method} {path}, which has no handler"));
        r = r.route(path, h);
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gw)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "store read failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        "the node could not read its store",
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

/// A path parameter, or a JSON 400 when it is not valid percent-encoded UTF-8.
fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))
}

/// Query parameters, or a JSON 400 when they do not parse.
fn query_params<T>(q: Result<axum::extract::Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
}

/// Parses a JSON request body into `T`; any failure is a 4xx JSON error.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(body_error)?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("body is not {shape}: {e}"),
        )
    })
}

async fn status(State(s): State<Arc<Gateway>>) -> ApiResult {
    let store = s.ledger.read();
    let tip = store.tip();
    let (time, hash) = match tip {
        Some((h, hash)) => {
            let b = store.block(h).map_err(store_error)?;
            (b.map(|b| b.block.header.time_ms), Some(hash.to_hex()))
        }
        None => (None, None),
    };
    Ok(Json(json!({
        "chain_id": store.genesis().chain_id,
        "height": tip.map_or(0, |(h, _)| h),
        "last_block_hash": hash,
        "last_block_time": time,
        "peers": s.peers(),
        "validators": store.state().validators().validators.len(),
        "is_validator": store.state().validators().power_of(&s.identity.id).is_some(),
        "mempool_size": s.pool.len(),
        "peer_id": s.identity.id.peer_id(),
        "mesh_addrs": s.identity.mesh_addrs,
    })))
}

async fn block(
    State(s): State<Arc<Gateway>>,
    height: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let height = path_param(height)?;
    let height: u64 = height.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_height",
            format!("height {height:?} is not a non-negative integer"),
        )
    })?;
    let cb = {
        let store = s.ledger.read();
        store.block(height).map_err(store_error)?
    };
    let cb = cb.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_block",
            format!("no block at height {height}"),
        )
    })?;
    Ok(Json(block_json(&cb)))
}

pub fn block_json(cb: &CertifiedBlock) -> Value {
    let h = &cb.block.header;
    json!({
        "height": h.height,
        "hash": h.hash().to_hex(),
        "header": {
            "chain_id": h.chain_id,
            "height": h.height,
            "prev_hash": h.prev_hash.to_hex(),
            "time_ms": h.time_ms,
            "proposer": h.proposer.peer_id(),
            "tx_root": h.tx_root.to_hex(),
            "tx_count": h.tx_count,
            "state_root": h.state_root.to_hex(),
            "validator_set_hash": h.validator_set_hash.to_hex(),
            "last_commit_hash": h.last_commit_hash.to_hex(),
        },
        "txs": cb.block.txs.iter().map(tx_json).collect::<Vec<_>>(),
        "certificate": {
            "height": cb.certificate.height,
            "round": cb.certificate.round,
            "block_hash": cb.certificate.block_hash.to_hex(),
            "signatures": cb.certificate.signatures.iter().map(|s| json!({
                "validator": s.validator.peer_id(),
                "signature": hex::encode(&s.sig.0),
            })).collect::<Vec<_>>(),
        },
    })
}

pub fn tx_json(tx: &Tx) -> Value {
    let mut v = json!({
        "id": tx.id().to_hex(),
        "type": tx.body.name(),
        "signer": tx.signer.peer_id(),
        "seq": tx.seq,
        // The canonical encoding, so a client can check signatures itself.
        "raw": hex::encode(&meshward_core::codec::Encode::to_bytes(tx)),
    });
    let extra = match &tx.body {
        TxBody::Anchor(a) => json!({
            "recipient": match &a.recipient {
                Recipient::Device(d) => d.peer_id(),
                Recipient::Group(g) => format!("group:{g}"),
            },
            "commitment": a.commitment.to_hex(),
            "count": a.count,
            "timestamp_ms": a.timestamp_ms,
            "size_bytes": a.size_bytes,
        }),
        TxBody::Enroll(e) => json!({
            "device": e.device.peer_id(),
            "enc_key": e.enc_key.to_string(),
            "groups": e.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
            "ticket": e.ticket.is_some(),
        }),
        TxBody::Revoke { device, reason } => {
            json!({ "device": device.peer_id(), "reason": reason })
        }
        TxBody::Ack { commitment, sender } => {
            json!({ "commitment": commitment.to_hex(), "sender": sender.peer_id() })
        }
        _ => json!({}),
    };
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

fn check_auth(s: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization: Bearer <token> (the token is in the node's api.token)",
            )
        })?;
    if !s.token().matches(given.trim().as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong API token",
        ));
    }
    Ok(())
}

/// Reads a submitted transaction: raw canonical bytes, or JSON `{"tx": "<hex>"}`.
fn parse_tx_body(headers: &HeaderMap, body: &[u8]) -> Result<Tx, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let raw = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TxJson {
            tx: String,
        }
        let j: TxJson = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("body is not {{\"tx\": \"<hex>\"}}: {e}"),
            )
        })?;
        hex::decode(&j.tx).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_hex",
                "tx is not lower-case hex",
            )
        })?
    } else {
        body.to_vec()
    };
    Tx::decode_bytes(&raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            format!("not a canonical transaction: {e}"),
        )
    })
}

async fn submit_tx(
    State(s): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    check_auth(&s, &headers)?;
    let body = body.map_err(body_error)?;
    let tx = parse_tx_body(&headers, &body)?;
    let id = s.pool.submit(tx, true).map_err(|e| admit_error(&e))?;
    Ok(Json(json!({ "hash": id.to_hex(), "status": "pending" })))
}

/// Most transactions in one `POST /v1/txs`.
pub const MAX_BATCH_TXS: usize = meshward_core::tx::MAX_TX_LIST;

fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_body"
    };
    ApiError::new(status, code, e.body_text())
}

/// Submits many transactions in one request: the body is a canonical list (`u32` count, then
/// each transaction as `u32` length and bytes). Each is admitted or refused on its own.
async fn submit_txs(
    State(s): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    check_auth(&s, &headers)?;
    let body = body.map_err(body_error)?;
    let txs = meshward_core::tx::decode_tx_list(&body, MAX_BATCH_TXS).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            format!("not a canonical list of transactions: {e}"),
        )
    })?;
    // Signatures are checked in one batch, on a blocking thread: thousands of them take
    // milliseconds.
    let results = tokio::task::spawn_blocking(move || s.pool.submit_batch(txs, true))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(id) => accepted.push(id.to_hex()),
            Err(e) => {
                let err = admit_error(&e);
                rejected.push(json!({ "index": i, "code": err.code, "message": err.message }));
            }
        }
    }
    Ok(Json(json!({ "accepted": accepted, "rejected": rejected })))
}

pub fn admit_error(e: &AdmitError) -> ApiError {
    let (status, code) = match e {
        AdmitError::Duplicate => (StatusCode::CONFLICT, "duplicate"),
        AdmitError::Conflict => (StatusCode::CONFLICT, "conflicting_sequence"),
        AdmitError::Stale { .. } => (StatusCode::CONFLICT, "stale_sequence"),
        AdmitError::TooFarAhead { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "sequence_too_far_ahead")
        }
        AdmitError::SenderQuota(_) => (StatusCode::TOO_MANY_REQUESTS, "sender_quota"),
        AdmitError::Full => (StatusCode::SERVICE_UNAVAILABLE, "mempool_full"),
        AdmitError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
    };
    ApiError::new(status, code, e.to_string())
}

async fn tx_status(
    State(s): State<Arc<Gateway>>,
    hash: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let hash = path_param(hash)?;
    let h = Hash::from_hex(&hash).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_hash",
            format!("{hash:?} is not 64 lower-case hex digits"),
        )
    })?;
    let loc = {
        let store = s.ledger.read();
        store.tx_location(&h).map_err(store_error)?
    };
    if let Some((height, index)) = loc {
        return Ok(Json(
            json!({ "hash": hash, "status": "final", "height": height, "index": index }),
        ));
    }
    if s.pool.contains(&h) {
        return Ok(Json(json!({ "hash": hash, "status": "pending" })));
    }
    if let Some(reason) = s.pool.rejection(&h) {
        return Ok(Json(
            json!({ "hash": hash, "status": "rejected", "reason": reason }),
        ));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_tx",
        format!("transaction {hash} is not known to this node"),
    ))
}

async fn metrics(State(s): State<Arc<Gateway>>) -> impl IntoResponse {
    s.metrics.mempool_txs.set(s.pool.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}
