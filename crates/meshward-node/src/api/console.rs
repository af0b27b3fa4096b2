//! The operator's console: the page itself (`GET /`, `GET /assets/{file}`, embedded in the
//! binary: no CDN, no internet), the summary it polls (`GET /v1/console`), the policy, the
//! audit trail of governance actions (`GET /v1/audit`), and the two actions it offers with the
//! API token (`POST /v1/admin/revoke`, `POST /v1/admin/ticket`), which a node can sign only if
//! its config names an admin key of a fleet whose admin threshold is 1.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshward_api::console::{
    AdminDone, Alert, Audit, AuditAction, Console, DeviceCounts, MailboxDepth, Quantiles,
    RevokeRequest, Severity, TicketIssued, TicketRequest, ValidatorHealth,
};
use meshward_api::types::{self, DeviceState};
use meshward_core::ids::PublicKey;
use meshward_core::state::StateView;
use meshward_core::tx::{Evidence, GroupName, Tx, TxBody};
use serde::Deserialize;

use super::{check_auth, json_body, path_param, query_params, store_error, ApiError, ApiResult};
use crate::Gateway;

/// How many heights after its last conviction a validator's equivocation stays an alert.
const CONVICTION_ALERT_HEIGHTS: u64 = 1_000;
const INDEX_HTML: &str = include_str!("../../assets/index.html");
const CONSOLE_JS: &str = include_str!("../../assets/console.js");
const CONSOLE_CSS: &str = include_str!("../../assets/console.css");

/// Everything the page loads comes from this node, and nothing else may be loaded or framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Heights one `GET /v1/audit` scans at most.
pub const AUDIT_SCAN_HEIGHTS: u64 = 10_000;
/// Actions one `GET /v1/audit` returns at most.
pub const AUDIT_MAX_ACTIONS: usize = 1000;
/// How long an admin action waits for its transaction to be final.
pub const ADMIN_FINAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Mailbox fill (of either limit) above which the console warns.
const MAILBOX_WARN_FRACTION: f64 = 0.8;
/// A chain with pending transactions and no block for this long is stalled.
const STALL_PENDING_MS: u64 = 10_000;
/// Revocations shown as alerts for this long.
const REVOCATION_ALERT_MS: u64 = 10 * 60_000;

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the console page.
pub(super) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/{file}`: the page's script and stylesheet.
pub(super) async fn asset(file: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let file = path_param(file)?;
    match file.as_str() {
        "console.js" => Ok(page("text/javascript; charset=utf-8", CONSOLE_JS)),
        "console.css" => Ok(page("text/css; charset=utf-8", CONSOLE_CSS)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset {file:?}"),
        )),
    }
}

/// How many of the last blocks `GET /v1/validators` reads for who signed lately: the proposer
/// skipping window's default (K = 8).
pub const VALIDATORS_RECENT_BLOCKS: u64 = 8;

/// `GET /v1/validators`: the set in force for the next block, and who signed the certificates
/// of the last [`VALIDATORS_RECENT_BLOCKS`] blocks (each block's own, and the fuller one the
/// next block carries as its last commit).
pub(super) async fn validators(State(s): State<Arc<Gateway>>) -> ApiResult<types::ValidatorList> {
    let (height, since_height, set) = {
        let store = s.ledger.read();
        let height = store.tip().map_or(0, |(h, _)| h);
        let set = store.state().validators().clone();
        let since = store.validator_sets().last().map_or(1, |(from, _)| *from);
        (height, since, set)
    };
    let mut last_signed: std::collections::BTreeMap<PublicKey, u64> = Default::default();
    let from = height
        .saturating_sub(VALIDATORS_RECENT_BLOCKS)
        .saturating_add(1)
        .max(1);
    for h in from..=height {
        // One block per read guard: consensus's writes never wait behind this loop.
        let Some(cb) = s.ledger.read().block(h).map_err(store_error)? else {
            continue;
        };
        let mut note = |c: &meshward_core::block::CommitCertificate| {
            for k in c.signers() {
                let e = last_signed.entry(*k).or_insert(c.height);
                *e = (*e).max(c.height);
            }
        };
        note(&cb.certificate);
        if let Some(lc) = &cb.block.last_commit {
            note(lc);
        }
    }
    Ok(Json(types::ValidatorList {
        height,
        since_height,
        set_hash: set.hash().to_hex(),
        total_power: set.total_power(),
        recent_blocks: VALIDATORS_RECENT_BLOCKS,
        validators: set
            .validators
            .iter()
            .map(|v| types::ValidatorEntry {
                id: v.key.peer_id(),
                power: v.power,
                last_signed_height: last_signed.get(&v.key).copied(),
            })
            .collect(),
    }))
}

/// `GET /v1/policy`.
pub(super) async fn policy(State(s): State<Arc<Gateway>>) -> ApiResult<types::Policy> {
    let store = s.ledger.read();
    Ok(Json(types::Policy {
        allow: store
            .state()
            .policy()
            .allow
            .iter()
            .map(|(a, b)| types::PolicyRule {
                from: a.as_str().to_string(),
                to: b.as_str().to_string(),
            })
            .collect(),
    }))
}

/// `GET /v1/console`.
pub(super) async fn console(State(s): State<Arc<Gateway>>) -> ApiResult<Console> {
    let now = meshward_core::clock::now_ms();
    let snap = s.stats.snapshot(now);
    let store = s.ledger.read();
    let st = store.state();
    let tip = store.tip();
    let last_block_time = match tip {
        Some((h, _)) => store
            .block(h)
            .map_err(store_error)?
            .map(|b| b.block.header.time_ms),
        None => None,
    };
    let height = tip.map_or(0, |(h, _)| h);
    let mut counts = DeviceCounts {
        active: 0,
        revoked: 0,
        quarantined: 0,
    };
    for a in st.accounts() {
        match s.device_view(&store, a).map(|d| d.status) {
            Some(DeviceState::Active) => counts.active += 1,
            Some(DeviceState::Revoked) => counts.revoked += 1,
            Some(DeviceState::Quarantined) => counts.quarantined += 1,
            None => {}
        }
    }
    let validators: Vec<ValidatorHealth> = st
        .validators()
        .validators
        .iter()
        .map(|v| {
            let rec = snap.signing.get(&v.key).copied().unwrap_or_default();
            let active = snap.active.contains(&v.key);
            // Up: it signs. A validator convicted of double-voting signs, yet is not in the
            // round-0 rotation.
            let signs = rec
                .last_signed
                .is_some_and(|s| height.saturating_sub(s) <= crate::stats::SIGNING_WINDOW);
            ValidatorHealth {
                id: v.key.peer_id(),
                power: v.power,
                up: active || signs,
                last_signed_height: rec.last_signed,
                missed: rec.missed,
                // An empty rotation means all validators take turns.
                round0_eligible: active || snap.active.is_empty(),
                is_self: v.key == s.identity.id,
                convictions: st.conviction(&v.key).map_or(0, |c| c.count),
                last_convicted_height: st.conviction(&v.key).map(|c| c.last_height),
            }
        })
        .collect();
    drop(store);
    let limits = s.mailboxes.limits();
    let mb = s.mailboxes.stats().map_err(store_error)?;
    let mailbox = MailboxDepth {
        envelopes: mb.envelopes,
        bytes: mb.bytes,
        max_envelopes: limits.max_total_envelopes,
        max_bytes: limits.max_total_bytes,
    };
    let mut alerts = alerts(
        &s,
        now,
        height,
        last_block_time,
        &validators,
        &mailbox,
        &snap,
    );
    alerts.sort_by_key(|a| a.severity);
    Ok(Json(Console {
        chain_id: s.ledger.read().genesis().chain_id.clone(),
        peer_id: s.identity.id.peer_id(),
        height,
        last_block_time,
        blocks_per_s: snap.blocks_per_s,
        txs_per_s: snap.txs_per_s,
        finality_ms: snap
            .finality
            .map(|(p50, p99, samples)| Quantiles { p50, p99, samples }),
        mempool_size: s.pool.len() as u64,
        validators,
        devices: counts,
        mailbox,
        alerts,
        history: snap.buckets.clone(),
    }))
}

/// What an operator should look at now.
fn alerts(
    s: &Gateway,
    now: u64,
    height: u64,
    last_block_time: Option<u64>,
    validators: &[ValidatorHealth],
    mailbox: &MailboxDepth,
    snap: &crate::stats::Snapshot,
) -> Vec<Alert> {
    let mut out = Vec::new();
    // A stalled chain: pending transactions and no block for a while, or no heartbeat for
    // twice its interval.
    let since = last_block_time.map(|t| now.saturating_sub(t));
    let heartbeat = s.idle_block_interval_ms;
    let stalled = match since {
        Some(age) => {
            (!s.pool.is_empty() && age > STALL_PENDING_MS)
                || (heartbeat > 0 && age > 2 * heartbeat + STALL_PENDING_MS)
        }
        None => false,
    };
    if stalled {
        out.push(Alert {
            severity: Severity::Critical,
            kind: "chain_stalled".into(),
            message: format!(
                "no block for {} s ({} transactions pending): are more than a third of the validators down?",
                since.unwrap_or(0) / 1000,
                s.pool.len()
            ),
            height: Some(height),
            subject: None,
        });
    }
    for v in validators.iter().filter(|v| !v.up) {
        out.push(Alert {
            severity: Severity::Warning,
            kind: "validator_not_signing".into(),
            message: format!(
                "validator {} signed none of the last {} blocks' commits (last signed: {}); it is skipped as round-0 proposer",
                v.id,
                crate::stats::SIGNING_WINDOW,
                v.last_signed_height
                    .map_or("never seen".to_string(), |h| format!("height {h}"))
            ),
            height: v.last_signed_height,
            subject: Some(v.id.clone()),
        });
    }
    // Convicted of double-voting by evidence on the ledger, recently.
    for v in validators.iter().filter(|v| {
        v.last_convicted_height
            .is_some_and(|h| height.saturating_sub(h) <= CONVICTION_ALERT_HEIGHTS)
    }) {
        out.push(Alert {
            severity: Severity::Critical,
            kind: "validator_equivocating".into(),
            message: format!(
                "validator {} signed conflicting votes (convicted at {} height(s), last at {}); round 0 skips it as proposer; remove it from the validator set",
                v.id,
                v.convictions,
                v.last_convicted_height.unwrap_or(0)
            ),
            height: v.last_convicted_height,
            subject: Some(v.id.clone()),
        });
    }
    for r in snap
        .revocations
        .iter()
        .filter(|r| now.saturating_sub(r.at_ms) < REVOCATION_ALERT_MS)
    {
        out.push(Alert {
            severity: if r.by_evidence {
                Severity::Warning
            } else {
                Severity::Info
            },
            kind: if r.by_evidence {
                "device_quarantined".into()
            } else {
                "device_revoked".into()
            },
            message: format!(
                "device {} {} at height {}: {}; every gateway now refuses it",
                r.device.peer_id(),
                if r.by_evidence {
                    "quarantined by evidence"
                } else {
                    "revoked by the admins"
                },
                r.height,
                r.reason
            ),
            height: Some(r.height),
            subject: Some(r.device.peer_id()),
        });
    }
    let fill = (mailbox.envelopes as f64 / mailbox.max_envelopes.max(1) as f64)
        .max(mailbox.bytes as f64 / mailbox.max_bytes.max(1) as f64);
    if fill > MAILBOX_WARN_FRACTION {
        out.push(Alert {
            severity: Severity::Warning,
            kind: "mailbox_filling".into(),
            message: format!(
                "mailboxes are {:.0}% full ({} envelopes, {} bytes): offline devices are not fetching",
                fill * 100.0,
                mailbox.envelopes,
                mailbox.bytes
            ),
            height: None,
            subject: None,
        });
    }
    out
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

/// The peer ids that authorised `tx`: its signer and co-signers.
fn signers(tx: &Tx) -> Vec<String> {
    std::iter::once(tx.signer)
        .chain(tx.cosigs.iter().map(|c| c.key))
        .map(|k| k.peer_id())
        .collect()
}

/// The governance action `tx` is, if it is one: (kind, summary, by evidence).
fn action(tx: &Tx) -> Option<(&'static str, String, bool)> {
    Some(match &tx.body {
        TxBody::Enroll(e) => (
            "enroll",
            format!(
                "enrolled {} in {}{}",
                e.device.peer_id(),
                e.groups
                    .iter()
                    .map(GroupName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                if e.ticket.is_some() {
                    " with a ticket"
                } else {
                    ""
                }
            ),
            false,
        ),
        TxBody::Revoke { device, reason } => (
            "revoke",
            format!("revoked {} ({reason})", device.peer_id()),
            false,
        ),
        TxBody::Reinstate {
            device, new_sign, ..
        } => (
            "reinstate",
            format!(
                "reinstated {} under the new key {}",
                device.peer_id(),
                new_sign.peer_id()
            ),
            false,
        ),
        TxBody::Evidence(Evidence::Validator(e)) => (
            "conviction",
            format!(
                "convicted validator {} of double-voting at height {}",
                e.validator.peer_id(),
                e.height
            ),
            true,
        ),
        TxBody::Evidence(ev) => {
            let (who, what) = match ev {
                Evidence::Equivocation { a, .. } => (a.signer, "equivocation"),
                Evidence::PolicyViolation { anchor } => (anchor.signer, "a policy violation"),
                Evidence::Validator(e) => (e.validator, "double-voting"),
            };
            (
                "quarantine",
                format!("quarantined {} for {what}", who.peer_id()),
                true,
            )
        }
        TxBody::SetPolicy { allow } => (
            "set_policy",
            format!(
                "policy set: {}",
                if allow.is_empty() {
                    "only within groups".to_string()
                } else {
                    allow
                        .iter()
                        .map(|(a, b)| format!("{a}→{b}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            ),
            false,
        ),
        TxBody::RotateKeys { .. } => (
            "rotate_keys",
            format!("{} rotated its keys", tx.signer.peer_id()),
            false,
        ),
        TxBody::GroupKey { group, epoch, .. } => (
            "group_key",
            format!("group {group} rekeyed to epoch {epoch}"),
            false,
        ),
        TxBody::CreateTicket { groups, .. } => (
            "create_ticket",
            format!(
                "enrollment ticket for {}",
                groups
                    .iter()
                    .map(GroupName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            false,
        ),
        TxBody::ValidatorSetChange(set) => (
            "validator_set_change",
            format!(
                "validator set changed to {} validators",
                set.validators.len()
            ),
            false,
        ),
        TxBody::Anchor(_) | TxBody::Ack { .. } => return None,
    })
}

/// `GET /v1/audit?since=&limit=`.
pub(super) async fn audit(
    State(s): State<Arc<Gateway>>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Audit> {
    let q = query_params(q)?;
    let limit = q.limit.unwrap_or(AUDIT_MAX_ACTIONS);
    if limit == 0 || limit > AUDIT_MAX_ACTIONS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            format!("limit is {limit}, it must be 1 to {AUDIT_MAX_ACTIONS}"),
        ));
    }
    let since = q.since.unwrap_or(1).max(1);
    let store = s.ledger.read();
    let tip = store.tip().map_or(0, |(h, _)| h);
    let end = tip.min(since.saturating_add(AUDIT_SCAN_HEIGHTS - 1));
    let mut actions = Vec::new();
    let mut next = since;
    for h in since..=end {
        let Some(b) = store.block(h).map_err(store_error)? else {
            break;
        };
        let mut found = Vec::new();
        for (i, tx) in b.block.txs.iter().enumerate() {
            if let Some((kind, summary, by_evidence)) = action(tx) {
                found.push(AuditAction {
                    height: h,
                    time_ms: b.block.header.time_ms,
                    index: i as u32,
                    tx: tx.id().to_hex(),
                    kind: kind.into(),
                    summary,
                    authorised_by: signers(tx),
                    by_evidence,
                });
            }
        }
        // A block's actions are returned whole, so `next_since` never splits one.
        if !actions.is_empty() && actions.len() + found.len() > limit {
            break;
        }
        actions.extend(found);
        next = h + 1;
    }
    Ok(Json(Audit {
        actions,
        next_since: next,
    }))
}

/// The admin key this node may sign with, for a fleet that needs one admin signature.
fn admin_key(s: &Gateway) -> Result<&meshward_core::ids::Keypair, ApiError> {
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "no_admin_key", m);
    let key = s.admin.as_ref().ok_or_else(|| {
        conflict(
            "this node holds no admin key (set admin_key in its config.toml, or use the CLI: \
             meshward device revoke / ticket new with --admin-key)"
                .into(),
        )
    })?;
    let store = s.ledger.read();
    let admins = store.state().admins();
    if !admins.keys.contains(&key.id()) {
        return Err(conflict(format!(
            "this node's admin_key {} is not an admin of the fleet",
            key.id()
        )));
    }
    if admins.threshold > 1 {
        return Err(conflict(format!(
            "the fleet needs {} admin signatures; use the CLI with every admin key",
            admins.threshold
        )));
    }
    Ok(key)
}

/// Signs `body` with the node's admin key, submits it and waits until it is final.
async fn admin_tx(s: &Arc<Gateway>, body: TxBody) -> Result<AdminDone, ApiError> {
    let key = admin_key(s)?.clone();
    let tx = {
        let seq = s.pool.next_seq(&key.id()).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_admin_key",
                "the admin key has no account on the ledger",
            )
        })?;
        let chain = s.ledger.read().genesis().chain_id.clone();
        Tx::sign(&chain, key.id(), &key.sign, seq, body)
    };
    let id = s
        .pool
        .submit(tx, true)
        .map_err(|e| super::admit_error(&e))?;
    let deadline = tokio::time::Instant::now() + ADMIN_FINAL_TIMEOUT;
    loop {
        let loc = s.ledger.read().tx_location(&id).map_err(store_error)?;
        if let Some((height, _)) = loc {
            return Ok(AdminDone {
                tx: id.to_hex(),
                height,
            });
        }
        if let Some(reason) = s.pool.rejection(&id) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                reason,
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "not_final",
                format!(
                    "transaction {id} is not final after {} s; ask GET /v1/tx/{id}",
                    ADMIN_FINAL_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /v1/admin/revoke`.
pub(super) async fn admin_revoke(
    State(s): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<AdminDone> {
    check_auth(&s, &headers)?;
    let req: RevokeRequest = json_body(body, r#"{"device": "<peer id>", "reason": "<text>"}"#)?;
    let device = PublicKey::from_peer_id(&req.device).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device_id",
            format!("{:?} is not an Ed25519 peer id", req.device),
        )
    })?;
    Ok(Json(
        admin_tx(
            &s,
            TxBody::Revoke {
                device,
                reason: req.reason,
            },
        )
        .await?,
    ))
}

/// `POST /v1/admin/ticket`.
pub(super) async fn admin_ticket(
    State(s): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<TicketIssued> {
    check_auth(&s, &headers)?;
    let req: TicketRequest = json_body(body, r#"{"groups": ["<group>"], "ttl": "1h"}"#)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_ticket", m);
    let ttl_ms = meshward_sdk::ticket::parse_ttl(req.ttl.as_deref().unwrap_or("1h"))
        .map_err(|e| bad(e.to_string()))?;
    let mut groups = Vec::new();
    for g in if req.groups.is_empty() {
        vec!["default".to_string()]
    } else {
        req.groups
    } {
        groups.push(GroupName::new(&g).ok_or_else(|| {
            bad(format!(
                "{g:?} is not a group name (1 to 64 of a-z 0-9 . _ -)"
            ))
        })?);
    }
    let groups = meshward_core::tx::canonical_groups(groups);
    let mut secret = [0u8; 32];
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut secret).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_randomness",
            "the node could not draw a random ticket secret; try again",
        )
    })?;
    let expires_ms = meshward_core::clock::now_ms().saturating_add(ttl_ms);
    let done = admin_tx(
        &s,
        TxBody::CreateTicket {
            ticket_hash: meshward_core::tx::ticket_hash(&secret),
            expires_ms,
            groups: groups.clone(),
        },
    )
    .await?;
    let chain = s.ledger.read().genesis().chain_id.clone();
    Ok(Json(TicketIssued {
        ticket: meshward_sdk::ticket::format_ticket(&chain, &secret, &groups),
        expires_ms,
        height: done.height,
    }))
}
