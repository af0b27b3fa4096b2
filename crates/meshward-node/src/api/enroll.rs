//! `POST /v1/enroll`: the way in for a device joining with a ticket.
//!
//! A gateway's mesh admits only fleet members (validators, admins, active devices, configured
//! observers), so a device that is not enrolled yet cannot reach it there. Its enrollment comes
//! through the API instead: no bearer token (the ticket authorises it), and only a transaction
//! that is an `Enroll` carrying a ticket and signed by the device it enrolls (the ledger checks
//! the ticket, the proofs of possession and the signature). Everything else is refused before
//! admission. Requests are limited per client address ([`ENROLLS_PER_ADDRESS`] a minute) and in
//! total ([`ENROLLS_TOTAL`] a minute), so the route cannot be used to flood the mempool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use meshward_api::types;
use meshward_core::tx::{Tx, TxBody};

use super::{admit_error, ApiError, ApiResult};
use crate::Gateway;

/// Enrollments one client address may submit in a [`WINDOW`].
pub const ENROLLS_PER_ADDRESS: u32 = 10;
/// Enrollments all clients together may submit in a [`WINDOW`].
pub const ENROLLS_TOTAL: u32 = 600;
/// The rate window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most client addresses remembered (older windows are dropped first).
const MAX_ADDRESSES: usize = 4096;

/// Per-address and total counts over the current window. One mutex, one short step.
#[derive(Default)]
pub struct EnrollLimiter {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    started: Option<Instant>,
    total: u32,
    per_address: HashMap<IpAddr, u32>,
}

impl EnrollLimiter {
    /// Counts one request from `addr` at `now`; `false` when it is over a limit.
    pub fn allow(&self, addr: Option<IpAddr>, now: Instant) -> bool {
        let mut g = meshward_core::sync::lock(&self.inner, "enroll limiter");
        if g.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            g.started = Some(now);
            g.total = 0;
            g.per_address.clear();
        }
        if g.total >= ENROLLS_TOTAL {
            return false;
        }
        if let Some(a) = addr {
            if !g.per_address.contains_key(&a) && g.per_address.len() >= MAX_ADDRESSES {
                return false;
            }
            let n = g.per_address.entry(a).or_insert(0);
            if *n >= ENROLLS_PER_ADDRESS {
                return false;
            }
            *n += 1;
        }
        g.total += 1;
        true
    }
}

/// `POST /v1/enroll` (see the module doc).
pub(super) async fn enroll(
    State(s): State<Arc<Gateway>>,
    req: axum::extract::Request,
) -> ApiResult<types::TxSubmitted> {
    let addr = super::serve::client_addr(&req).map(|a| a.ip());
    if !s.enroll_limiter.allow(addr, Instant::now()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many enrollments: at most {ENROLLS_PER_ADDRESS} a minute from one address; retry later"
            ),
        ));
    }
    let body = axum::body::to_bytes(req.into_body(), super::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {} bytes", super::MAX_BODY_BYTES),
            )
        })?;
    let submit: types::TxSubmit = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("body is not {{\"tx\": \"<hex>\"}}: {e}"),
        )
    })?;
    let bytes = meshward_core::hex::decode(&submit.tx).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_hex",
            "tx is not lower-case hex",
        )
    })?;
    let tx = Tx::decode_bytes(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            format!("tx does not decode: {e}"),
        )
    })?;
    match &tx.body {
        TxBody::Enroll(e) if e.ticket.is_some() && tx.signer == e.device => {}
        _ => return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_ticket_enrollment",
            "this route takes only an enrollment with a ticket, signed by the device it enrolls",
        )),
    }
    let id = s.pool.submit(tx, true).map_err(|e| admit_error(&e))?;
    Ok(Json(types::TxSubmitted {
        hash: id.to_hex(),
        status: "pending".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_and_everyone_together_are_limited_per_window() {
        let l = EnrollLimiter::default();
        let t = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..ENROLLS_PER_ADDRESS {
            assert!(l.allow(Some(a), t));
        }
        assert!(!l.allow(Some(a), t), "over the per-address limit");
        assert!(l.allow(Some(b), t), "another address still may");
        // A new window starts the counts again.
        assert!(l.allow(Some(a), t + WINDOW));
    }
}
