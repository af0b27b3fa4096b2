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
//! assert!(meshward_node::api::ROUTES
//!     .iter()
//!     .any(|r| (r.method, r.path) == ("POST", "/v1/mailbox/fetch")));
//! ```

pub mod auth;
pub mod console;
pub mod device;
pub mod enroll;
pub mod serve;
pub mod stream;
pub mod uri_guard;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use meshward_api::types;
use meshward_core::hash::Hash;
use meshward_core::state::StateView;
use meshward_core::tx::{Recipient, Tx, TxBody};
use meshward_core::{hex, CertifiedBlock};
use serde_json::Value;

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
    /// An error answer: its HTTP status, stable code and message.
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
            Json(types::ErrorBody {
                code: self.code.into(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub use meshward_api::ROUTES;

/// The handler of one [`ROUTES`] entry.
fn handler(method: &str, path: &str) -> Option<MethodRouter<Arc<Gateway>>> {
    Some(match (method, path) {
        ("GET", "/v1/status") => get(status),
        ("GET", "/v1/blocks/{height}") => get(block),
        ("POST", "/v1/tx") => post(submit_tx),
        ("POST", "/v1/txs") => post(submit_txs),
        ("GET", "/v1/tx/{hash}") => get(tx_status),
        ("GET", "/v1/tx/{hash}/proof") => get(device::tx_proof),
        ("GET", "/metrics") => get(metrics),
        ("GET", "/v1/openapi.json") => get(openapi),
        ("GET", "/v1/events") => get(stream::events),
        ("POST", "/v1/challenge") => post(device::challenge),
        ("POST", "/v1/enroll") => post(enroll::enroll),
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
        ("GET", "/v1/policy") => get(console::policy),
        ("GET", "/v1/validators") => get(console::validators),
        ("GET", "/v1/console") => get(console::console),
        ("GET", "/v1/audit") => get(console::audit),
        ("POST", "/v1/admin/revoke") => post(console::admin_revoke),
        ("POST", "/v1/admin/ticket") => post(console::admin_ticket),
        ("POST", "/v1/mqtt/devices") => post(crate::mqtt::api_custody)
            .layer(DefaultBodyLimit::max(meshward_core::rpc::MAX_CUSTODY_BYTES)),
        ("GET", "/") => get(console::index),
        ("GET", "/assets/{file}") => get(console::asset),
        _ => return None,
    })
}

/// Largest device-authenticated request body: a few short fields.
pub const MAX_DEVICE_BODY_BYTES: usize = 16 * 1024;

/// The API's router over `gw`'s components.
pub fn router(gw: Arc<Gateway>) -> Router {
    let mut r = Router::new();
    for route in ROUTES {
        let (method, path) = (route.method, route.path);
        let h = handler(method, path)
            .unwrap_or_else(|| panic!("ROUTES lists {method} {path}, which has no handler"));
        r = r.route(path, h);
    }
    r.route_layer(axum::middleware::from_fn_with_state(
        gw.clone(),
        track_latency,
    ))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .with_state(gw)
}

/// Records each routed request's latency (to its response head) by method and route.
async fn track_latency(
    State(s): State<Arc<Gateway>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .api_latency
        .get_or_create(&crate::metrics::RouteLabel { method, route })
        .observe(start.elapsed().as_secs_f64());
    resp
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

async fn openapi(State(s): State<Arc<Gateway>>) -> Json<Value> {
    Json(meshward_api::openapi::document(&s.identity.api_url))
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

async fn status(State(s): State<Arc<Gateway>>) -> ApiResult<types::Status> {
    let store = s.ledger.read();
    let tip = store.tip();
    let (time, hash) = match tip {
        Some((h, hash)) => {
            let b = store.block(h).map_err(store_error)?;
            (b.map(|b| b.block.header.time_ms), Some(hash.to_hex()))
        }
        None => (None, None),
    };
    let validators = store.state().validators();
    Ok(Json(types::Status {
        chain_id: store.genesis().chain_id.clone(),
        height: tip.map_or(0, |(h, _)| h),
        last_block_hash: hash,
        last_block_time: time,
        peers: s.peers() as u64,
        validators: validators.validators.len() as u64,
        is_validator: validators.power_of(&s.identity.id).is_some(),
        mempool_size: s.pool.len() as u64,
        peer_id: s.identity.id.peer_id(),
        mesh_addrs: s.identity.mesh_addrs.clone(),
        mqtt: s.identity.mqtt.clone(),
        pid: Some(std::process::id()),
    }))
}

async fn block(
    State(s): State<Arc<Gateway>>,
    height: Result<Path<String>, PathRejection>,
) -> ApiResult<types::Block> {
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

/// A certified block as the API shows it.
pub fn block_json(cb: &CertifiedBlock) -> types::Block {
    let h = &cb.block.header;
    types::Block {
        height: h.height,
        hash: h.hash().to_hex(),
        header: types::BlockHeader {
            chain_id: h.chain_id.clone(),
            height: h.height,
            prev_hash: h.prev_hash.to_hex(),
            time_ms: h.time_ms,
            proposer: h.proposer.peer_id(),
            tx_root: h.tx_root.to_hex(),
            tx_count: h.tx_count,
            state_root: h.state_root.to_hex(),
            validator_set_hash: h.validator_set_hash.to_hex(),
            last_commit_hash: h.last_commit_hash.to_hex(),
        },
        txs: cb.block.txs.iter().map(tx_json).collect(),
        certificate: types::Certificate {
            height: cb.certificate.height,
            round: cb.certificate.round,
            block_hash: cb.certificate.block_hash.to_hex(),
            signatures: cb
                .certificate
                .signatures
                .iter()
                .map(|s| types::CertificateSignature {
                    validator: s.validator.peer_id(),
                    signature: hex::encode(&s.sig.0),
                })
                .collect(),
        },
    }
}

/// The kind of a transaction, as the API names it.
fn tx_kind(body: &TxBody) -> types::TxKind {
    use types::TxKind as K;
    match body {
        TxBody::Enroll(_) => K::Enroll,
        TxBody::Revoke { .. } => K::Revoke,
        TxBody::RotateKeys { .. } => K::RotateKeys,
        TxBody::SetPolicy { .. } => K::SetPolicy,
        TxBody::Anchor(_) => K::Anchor,
        TxBody::Ack { .. } => K::Ack,
        TxBody::Evidence(_) => K::Evidence,
        TxBody::ValidatorSetChange { .. } => K::ValidatorSetChange,
        TxBody::GroupKey { .. } => K::GroupKey,
        TxBody::CreateTicket { .. } => K::CreateTicket,
        TxBody::Reinstate { .. } => K::Reinstate,
    }
}

/// A transaction as the API shows it.
pub fn tx_json(tx: &Tx) -> types::Tx {
    let mut t = types::Tx {
        id: tx.id().to_hex(),
        kind: tx_kind(&tx.body),
        signer: tx.signer.peer_id(),
        seq: tx.seq,
        raw: hex::encode(&meshward_core::codec::Encode::to_bytes(tx)),
        recipient: None,
        commitment: None,
        count: None,
        timestamp_ms: None,
        size_bytes: None,
        device: None,
        enc_key: None,
        groups: None,
        ticket: None,
        reason: None,
        sender: None,
    };
    match &tx.body {
        TxBody::Anchor(a) => {
            t.recipient = Some(match &a.recipient {
                Recipient::Device(d) => d.peer_id(),
                Recipient::Group(g) => format!("group:{g}"),
            });
            t.commitment = Some(a.commitment.to_hex());
            t.count = Some(a.count);
            t.timestamp_ms = Some(a.timestamp_ms);
            t.size_bytes = Some(a.size_bytes);
        }
        TxBody::Enroll(e) => {
            t.device = Some(e.device.peer_id());
            t.enc_key = Some(e.enc_key.to_string());
            t.groups = Some(e.groups.iter().map(|g| g.as_str().to_string()).collect());
            t.ticket = Some(e.ticket.is_some());
        }
        TxBody::Revoke { device, reason } => {
            t.device = Some(device.peer_id());
            t.reason = Some(reason.clone());
        }
        TxBody::Reinstate {
            device, new_enc, ..
        } => {
            t.device = Some(device.peer_id());
            t.enc_key = Some(new_enc.to_string());
        }
        TxBody::Ack { commitment, sender } => {
            t.commitment = Some(commitment.to_hex());
            t.sender = Some(sender.peer_id());
        }
        _ => {}
    }
    t
}

/// The credential of an `Authorization: Bearer <token>` value; the scheme's name is
/// case-insensitive (RFC 7235 §2.1), and any whitespace may follow it.
fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn check_auth(s: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credential)
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
) -> ApiResult<types::TxSubmitted> {
    check_auth(&s, &headers)?;
    let body = body.map_err(body_error)?;
    let tx = parse_tx_body(&headers, &body)?;
    let id = s.pool.submit(tx, true).map_err(|e| admit_error(&e))?;
    Ok(Json(types::TxSubmitted {
        hash: id.to_hex(),
        status: "pending".into(),
    }))
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
) -> ApiResult<types::TxBatchResult> {
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
                rejected.push(types::TxRefused {
                    index: i,
                    code: err.code.into(),
                    message: err.message,
                });
            }
        }
    }
    Ok(Json(types::TxBatchResult { accepted, rejected }))
}

/// The API's answer to a transaction the mempool did not admit.
pub fn admit_error(e: &AdmitError) -> ApiError {
    let (status, code) = match e {
        AdmitError::Duplicate => (StatusCode::CONFLICT, "duplicate"),
        AdmitError::Conflict => (StatusCode::CONFLICT, "conflicting_sequence"),
        AdmitError::Stale { .. } => (StatusCode::CONFLICT, "stale_sequence"),
        AdmitError::TooFarAhead { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "sequence_too_far_ahead")
        }
        AdmitError::SenderQuota(_) => (StatusCode::TOO_MANY_REQUESTS, "sender_quota"),
        AdmitError::Full | AdmitError::Backlog { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "mempool_full")
        }
        AdmitError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
    };
    ApiError::new(status, code, e.to_string())
}

/// A transaction id in a path, or a JSON 400 `bad_hash`.
fn parse_tx_id(s: &str) -> Result<Hash, ApiError> {
    Hash::from_hex(s).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_hash",
            format!("{s:?} is not 64 lower-case hex digits"),
        )
    })
}

async fn tx_status(
    State(s): State<Arc<Gateway>>,
    hash: Result<Path<String>, PathRejection>,
) -> ApiResult<types::TxStatus> {
    let hash = path_param(hash)?;
    let h = parse_tx_id(&hash)?;
    let loc = {
        let store = s.ledger.read();
        store.tx_location(&h).map_err(store_error)?
    };
    let status = |status, height, index, reason| {
        Ok(Json(types::TxStatus {
            hash: hash.clone(),
            status,
            height,
            index,
            reason,
        }))
    };
    if let Some((height, index)) = loc {
        return status(types::TxState::Final, Some(height), Some(index), None);
    }
    if s.pool.contains(&h) {
        return status(types::TxState::Pending, None, None, None);
    }
    if let Some(reason) = s.pool.rejection(&h) {
        return status(types::TxState::Rejected, None, None, Some(reason));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_tx",
        format!("transaction {hash} is not known to this node"),
    ))
}

async fn metrics(State(s): State<Arc<Gateway>>) -> impl IntoResponse {
    s.metrics.mempool_txs.set(s.pool.len() as i64);
    s.refresh_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}
