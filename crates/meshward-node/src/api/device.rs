//! Endpoints for devices and for anyone reading the fleet: challenges, mailboxes, the device
//! list, groups and anchor proofs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshward_api::types;
use meshward_core::hash::Hash;
use meshward_core::hex;
use meshward_core::ids::PublicKey;
use meshward_core::light::ProofFile;
use meshward_core::state::StateView;
use meshward_core::tx::GroupName;
use serde::Deserialize;

use super::auth::{authenticate, DeviceCredential};
use super::{json_body, path_param, query_params, store_error, ApiError, ApiResult};
use crate::Gateway;
use meshward_core::clock::now_ms;

/// Most envelopes one `POST /v1/mailbox/fetch` returns.
pub const MAX_FETCH_ENVELOPES: u64 = 256;
/// Envelope bytes after which a fetch stops adding envelopes (it always returns at least one
/// waiting envelope); the device fetches again after the last `seq` it got.
pub const MAX_FETCH_BYTES: usize = 4 * 1024 * 1024;
/// Devices one `GET /v1/devices` returns by default, and at most.
pub const DEFAULT_DEVICE_PAGE: usize = 1000;
/// The most devices one `GET /v1/devices` returns.
pub const MAX_DEVICE_PAGE: usize = 10_000;

/// The action a device signs for `POST /v1/mailbox/fetch` (see `meshward_core::auth`).
pub const ACTION_MAILBOX_FETCH: &str = "mailbox/fetch";
/// The action a device signs for `POST /v1/mailbox/ack`.
pub const ACTION_MAILBOX_ACK: &str = "mailbox/ack";

fn lock_store(s: &Gateway) -> std::sync::RwLockReadGuard<'_, meshward_store::Store> {
    s.ledger.read()
}

fn mailbox_error(e: meshward_store::MailboxError) -> ApiError {
    tracing::error!(error = %e, "mailbox operation failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        "the node could not read or write its mailboxes",
    )
}

fn mailbox_refusal(e: crate::mailboxes::MailboxRefusal) -> ApiError {
    use crate::mailboxes::MailboxRefusal;
    match e {
        MailboxRefusal::Store(e) => mailbox_error(e),
        MailboxRefusal::Busy | MailboxRefusal::Stopped | MailboxRefusal::Replay => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", format!("{e}"))
        }
    }
}

/// `POST /v1/challenge`: a fresh single-use nonce. No credential, no body needed.
pub(super) async fn challenge(
    State(s): State<Arc<Gateway>>,
    req: axum::extract::Request,
) -> ApiResult<types::Challenge> {
    use super::auth::IssueError;
    let peer = super::serve::client_addr(&req).map(|a| a.ip());
    let (nonce, ttl) = s.challenges.issue(peer).map_err(|e| match e {
        IssueError::NoRandomness(e) => {
            tracing::error!(error = %e, "no randomness for a challenge nonce");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_randomness",
                "the node could not draw a random nonce; try again",
            )
        }
        e @ IssueError::AddressQuota(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_challenges",
            format!("{e}; spend them or wait until they expire"),
        ),
    })?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(Json(types::Challenge {
        nonce: hex::encode(&nonce),
        expires_ms: now_ms().saturating_add(ttl_ms),
    }))
}

/// `POST /v1/mailbox/fetch`: envelopes waiting for the device, after `after`, in order.
pub(super) async fn mailbox_fetch(
    State(s): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<types::MailboxFetchResponse> {
    let req: types::MailboxFetchRequest = json_body(
        body,
        r#"{"device": "<peer id>", "nonce": "<hex>", "signature": "<hex>", "after": u64, "max": u64}"#,
    )?;
    let max = req.max.unwrap_or(MAX_FETCH_ENVELOPES);
    if max > MAX_FETCH_ENVELOPES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_max",
            format!("max is {max}, at most {MAX_FETCH_ENVELOPES}"),
        ));
    }
    let store = lock_store(&s);
    let device = authenticate(
        &s.challenges,
        &store,
        &DeviceCredential {
            device: &req.device,
            nonce: &req.nonce,
            signature: &req.signature,
        },
        ACTION_MAILBOX_FETCH,
    )?;
    // Listed while the ledger guard is held, so a revocation cannot slip in between the check
    // and the read.
    let rows = s
        .mailboxes
        .list(&device, req.after, max as usize)
        .map_err(mailbox_error)?;
    drop(store);
    let mut bytes = 0usize;
    let mut envelopes = Vec::with_capacity(rows.len());
    for (seq, env) in rows {
        if !envelopes.is_empty() && bytes + env.len() > MAX_FETCH_BYTES {
            break;
        }
        bytes += env.len();
        envelopes.push(types::MailboxEnvelope {
            seq,
            envelope: hex::encode(&env),
        });
    }
    Ok(Json(types::MailboxFetchResponse { envelopes }))
}

/// `POST /v1/mailbox/ack`: removes the device's envelopes up to `up_to`.
pub(super) async fn mailbox_ack(
    State(s): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<types::MailboxAckResponse> {
    let req: types::MailboxAckRequest = json_body(
        body,
        r#"{"device": "<peer id>", "nonce": "<hex>", "signature": "<hex>", "up_to": u64}"#,
    )?;
    // The write goes to the mailbox writer after the guard is dropped (it is not held across
    // an await): a device revoked in between can at most delete its own envelopes.
    let device = authenticate(
        &s.challenges,
        &lock_store(&s),
        &DeviceCredential {
            device: &req.device,
            nonce: &req.nonce,
            signature: &req.signature,
        },
        ACTION_MAILBOX_ACK,
    )?;
    let removed = s
        .mailboxes
        .ack(device, req.up_to)
        .await
        .map_err(mailbox_refusal)?;
    Ok(Json(types::MailboxAckResponse {
        removed: removed as u64,
    }))
}

fn parse_device_id(s: &str) -> Result<PublicKey, ApiError> {
    PublicKey::from_peer_id(s).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device_id",
            format!("{s:?} is not an Ed25519 peer id"),
        )
    })
}

#[derive(Deserialize)]
pub(super) struct DevicesQuery {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/devices?limit=&after=`: enrolled devices (active and revoked), ordered by account
/// key; `next_after` is set when more follow.
pub(super) async fn list_devices(
    State(s): State<Arc<Gateway>>,
    q: Result<Query<DevicesQuery>, QueryRejection>,
) -> ApiResult<types::DeviceList> {
    let q = query_params(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_DEVICE_PAGE);
    if limit == 0 || limit > MAX_DEVICE_PAGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit is {limit}, it must be 1 to {MAX_DEVICE_PAGE}"),
        ));
    }
    let after = q.after.as_deref().map(parse_device_id).transpose()?;
    let store = lock_store(&s);
    let state = store.state();
    let mut page = state
        .accounts()
        .filter(|a| a.device.is_some())
        .filter(|a| after.is_none_or(|k| a.id > k));
    let devices: Vec<types::Device> = page
        .by_ref()
        .take(limit)
        .filter_map(|a| s.device_view(&store, a))
        .collect();
    let more = page.next().is_some();
    let next_after = if more {
        devices.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok(Json(types::DeviceList {
        devices,
        next_after,
    }))
}

/// `GET /v1/devices/{id}`.
pub(super) async fn get_device(
    State(s): State<Arc<Gateway>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<types::Device> {
    let id = path_param(id)?;
    let key = parse_device_id(&id)?;
    let store = lock_store(&s);
    let state = store.state();
    state
        .account(&key)
        .and_then(|a| s.device_view(&store, a))
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_device",
                format!("{id} is not an enrolled device"),
            )
        })
}

/// `GET /v1/groups/{name}`: members with their encryption keys, for rekeying.
pub(super) async fn get_group(
    State(s): State<Arc<Gateway>>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<types::Group> {
    let name = path_param(name)?;
    let group = GroupName::new(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_group_name",
            format!("{name:?} is not a group name (1 to 64 of a-z 0-9 . _ -)"),
        )
    })?;
    let store = lock_store(&s);
    let state = store.state();
    let g = state.group(&group).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_group",
            format!("no group {name:?} on the ledger"),
        )
    })?;
    let members = crate::rpc::member_keys(state, g)
        .iter()
        .map(|(id, enc)| types::GroupMember {
            id: id.peer_id(),
            enc_key: enc.to_string(),
        })
        .collect();
    Ok(Json(types::Group {
        name: group.as_str().to_string(),
        members,
        epoch: g.epoch,
        needs_rekey: g.needs_rekey,
    }))
}

fn parse_commitment(s: &str) -> Result<Hash, ApiError> {
    Hash::from_hex(s).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_commitment",
            format!("{s:?} is not 64 lower-case hex digits"),
        )
    })
}

fn unknown_anchor(c: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_anchor",
        format!("commitment {c} is not anchored in a final block on this node (yet)"),
    )
}

/// `GET /v1/anchors/{commitment}`: where it was anchored.
pub(super) async fn anchor_location(
    State(s): State<Arc<Gateway>>,
    c: Result<Path<String>, PathRejection>,
) -> ApiResult<types::AnchorLocation> {
    let c = path_param(c)?;
    let h = parse_commitment(&c)?;
    let loc = lock_store(&s).anchor_location(&h).map_err(store_error)?;
    let (height, index) = loc.ok_or_else(|| unknown_anchor(&c))?;
    Ok(Json(types::AnchorLocation {
        commitment: c,
        height,
        index,
    }))
}

/// `GET /v1/anchors/{commitment}/proof`: the proof file (the same bytes `meshward store
/// proof` writes, without the final newline), which `meshward verify` checks offline.
pub(super) async fn anchor_proof(
    State(s): State<Arc<Gateway>>,
    c: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let c = path_param(c)?;
    let h = parse_commitment(&c)?;
    let file = {
        let store = lock_store(&s);
        let proof = store
            .anchor_proof(&h)
            .map_err(store_error)?
            .ok_or_else(|| unknown_anchor(&c))?;
        ProofFile::new(&store.genesis().chain_id, &proof)
    };
    // The file's own compact JSON: re-serialising it would change bytes the verifier checks.
    Ok(([(header::CONTENT_TYPE, "application/json")], file.to_json()).into_response())
}

/// `GET /v1/tx/{hash}/proof`: the proof file of a final transaction of any kind.
pub(super) async fn tx_proof(
    State(s): State<Arc<Gateway>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    let h = super::parse_tx_id(&id)?;
    let file = {
        let store = lock_store(&s);
        let proof = store.tx_proof(&h).map_err(store_error)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_tx",
                format!("transaction {id} is not in a final block on this node (yet)"),
            )
        })?;
        ProofFile::new(&store.genesis().chain_id, &proof)
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], file.to_json()).into_response())
}
