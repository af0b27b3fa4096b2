//! Device challenge authentication: the gateway's side of [`meshward_core::auth`].
//!
//! `POST /v1/challenge` hands out a random 32-byte nonce that lives [`CHALLENGE_TTL_MS`]. A
//! device-authenticated request carries `device` (its account id), `nonce` and `signature`
//! (hex of the Ed25519 signature over [`challenge_message`]) and is checked in this order:
//! 1. the fields are well formed (else 400);
//! 2. the device is enrolled (else 403 `unknown_device`) and active (else 403 `device_revoked`);
//! 3. the nonce is outstanding and unexpired (else 401 `stale_challenge`). It is spent here,
//!    whatever comes next, so one nonce never allows two tries;
//! 4. the signature verifies under the account's current signing key (else 401
//!    `bad_signature`).
//!
//! At most [`MAX_CHALLENGES`] nonces are outstanding; issuing one more forgets the oldest, so a
//! flood of challenge requests costs bounded memory. At most [`MAX_CHALLENGES_PER_ADDRESS`] are
//! outstanding for one client IP address: beyond that, that address is refused (429
//! `too_many_challenges`) until its nonces are spent or expire, so one flooding address cannot
//! evict the nonces other devices are about to use.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use meshward_core::auth::{verify_challenge, NONCE_BYTES};
use meshward_core::hex;
use meshward_core::ids::{PublicKey, Signature};
use meshward_core::state::{DeviceStatus, StateView};
use meshward_store::Store;
use rand::RngCore;

use super::ApiError;

/// How long a challenge nonce stays usable.
pub const CHALLENGE_TTL_MS: u64 = 60_000;
/// Most outstanding challenge nonces; the oldest is forgotten past this.
pub const MAX_CHALLENGES: usize = 16_384;
/// Most outstanding challenge nonces issued to one client IP address.
pub const MAX_CHALLENGES_PER_ADDRESS: usize = 1024;

/// Why no nonce was issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The operating system's random source failed.
    #[error("no randomness: {0}")]
    NoRandomness(#[from] rand::Error),
    /// The address already holds [`MAX_CHALLENGES_PER_ADDRESS`] outstanding nonces.
    #[error("{0} has {MAX_CHALLENGES_PER_ADDRESS} challenges outstanding")]
    AddressQuota(IpAddr),
}

pub use meshward_core::auth::challenge_message;

/// Outstanding challenge nonces: bounded, single-use, expiring.
pub struct Challenges {
    inner: Mutex<Inner>,
    ttl_ms: AtomicU64,
    max: usize,
}

#[derive(Default)]
struct Inner {
    /// Nonce -> (issue number, expiry, the address it was issued to).
    by_nonce: HashMap<[u8; NONCE_BYTES], (u64, Instant, Option<IpAddr>)>,
    /// Issue number -> nonce, oldest first, for eviction.
    order: BTreeMap<u64, [u8; NONCE_BYTES]>,
    /// Outstanding nonces per address.
    per_address: HashMap<IpAddr, usize>,
    next: u64,
}

impl Inner {
    /// Forgets `nonce`; returns its issue number and expiry if it was outstanding.
    fn forget(&mut self, nonce: &[u8; NONCE_BYTES]) -> Option<(u64, Instant)> {
        let (n, exp, addr) = self.by_nonce.remove(nonce)?;
        self.order.remove(&n);
        if let Some(a) = addr {
            if let Some(c) = self.per_address.get_mut(&a) {
                *c -= 1;
                if *c == 0 {
                    self.per_address.remove(&a);
                }
            }
        }
        Some((n, exp))
    }
}

impl Default for Challenges {
    fn default() -> Self {
        Self::new()
    }
}

impl Challenges {
    /// The defaults: [`CHALLENGE_TTL_MS`], [`MAX_CHALLENGES`].
    pub fn new() -> Self {
        Self::with_limits(Duration::from_millis(CHALLENGE_TTL_MS), MAX_CHALLENGES)
    }

    /// Nonces that live `ttl`, at most `max` outstanding (at least 1).
    pub fn with_limits(ttl: Duration, max: usize) -> Self {
        Challenges {
            inner: Mutex::new(Inner::default()),
            ttl_ms: AtomicU64::new(ttl.as_millis().try_into().unwrap_or(u64::MAX)),
            max: max.max(1),
        }
    }

    /// Changes how long nonces issued from now on live (tests use 0: already expired).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(
            ttl.as_millis().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// How long nonces issued now live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// Outstanding nonces (some may have expired and not yet been dropped).
    pub fn len(&self) -> usize {
        self.lock().by_nonce.len()
    }

    /// Whether no nonce is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        meshward_core::sync::lock(&self.inner, "challenges")
    }

    /// Issues a fresh random nonce to a client at `addr` (if known) and returns it with its
    /// lifetime.
    pub fn issue(&self, addr: Option<IpAddr>) -> Result<([u8; NONCE_BYTES], Duration), IssueError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.try_fill_bytes(&mut nonce)?;
        let ttl = self.ttl();
        self.insert(nonce, ttl, addr)?;
        Ok((nonce, ttl))
    }

    fn insert(
        &self,
        nonce: [u8; NONCE_BYTES],
        ttl: Duration,
        addr: Option<IpAddr>,
    ) -> Result<(), IssueError> {
        let now = Instant::now();
        let mut inner = self.lock();
        // Drop expired nonces from the old end, then make room.
        while let Some((_, oldest)) = inner.order.first_key_value() {
            let oldest = *oldest;
            let expired = inner
                .by_nonce
                .get(&oldest)
                .is_none_or(|(_, exp, _)| *exp <= now);
            if !expired && inner.by_nonce.len() < self.max {
                break;
            }
            inner.forget(&oldest);
        }
        if let Some(a) = addr {
            let held = inner.per_address.get(&a).copied().unwrap_or(0);
            if held >= MAX_CHALLENGES_PER_ADDRESS {
                return Err(IssueError::AddressQuota(a));
            }
        }
        let n = inner.next;
        inner.next += 1;
        // Instant + 60 s cannot overflow; a huge test TTL saturates to "never expires".
        let exp = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(1 << 30));
        inner.forget(&nonce);
        inner.by_nonce.insert(nonce, (n, exp, addr));
        inner.order.insert(n, nonce);
        if let Some(a) = addr {
            *inner.per_address.entry(a).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Spends `nonce`: true if it was outstanding and unexpired. It is forgotten either way.
    pub fn take(&self, nonce: &[u8; NONCE_BYTES]) -> bool {
        self.lock()
            .forget(nonce)
            .is_some_and(|(_, exp)| Instant::now() < exp)
    }
}

/// The credential fields of a device-authenticated request, as sent.
pub(super) struct DeviceCredential<'a> {
    pub device: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

/// Checks a device credential for `action` (see the module doc for the order and the errors)
/// and returns the device's account id. A caller that reads for the device (a mailbox fetch)
/// does so under the same `store` guard, so a revocation or key rotation cannot slip in
/// between; a write (an acknowledgement) goes to the mailbox writer once the guard is dropped.
pub(super) fn authenticate(
    challenges: &Challenges,
    store: &Store,
    cred: &DeviceCredential<'_>,
    action: &str,
) -> Result<PublicKey, ApiError> {
    let bad = |code, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    let device = PublicKey::from_peer_id(cred.device).map_err(|_| {
        bad(
            "bad_device_id",
            format!("device {:?} is not an Ed25519 peer id", cred.device),
        )
    })?;
    let nonce: [u8; NONCE_BYTES] = hex::decode_array(cred.nonce).ok_or_else(|| {
        bad(
            "bad_nonce",
            "nonce is not 64 lower-case hex digits (get one from POST /v1/challenge)".into(),
        )
    })?;
    let sig = hex::decode_array::<64>(cred.signature)
        .map(Signature)
        .ok_or_else(|| {
            bad(
                "bad_signature_encoding",
                "signature is not 128 lower-case hex digits".into(),
            )
        })?;
    let state = store.state();
    let account = state
        .account(&device)
        .filter(|a| a.device.is_some())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "unknown_device",
                format!("{} is not an enrolled device", cred.device),
            )
        })?;
    if let Some(DeviceStatus::Revoked { reason, height }) =
        account.device.as_ref().map(|d| &d.status)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_revoked",
            format!(
                "device {} was revoked at height {height}: {reason}",
                cred.device
            ),
        ));
    }
    if !challenges.take(&nonce) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_challenge",
            "nonce is unknown, already used or expired (get a new one from POST /v1/challenge)",
        ));
    }
    verify_challenge(
        &account.sign_key,
        state.chain_id(),
        &device,
        &nonce,
        action,
        &sig,
    )
    .map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!(
                "signature does not verify under the device's current key for action {action:?} \
                 (sign meshward_core::auth::challenge_message; the nonce is now spent)"
            ),
        )
    })?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_single_use() {
        let c = Challenges::new();
        let (n, ttl) = c.issue(None).unwrap();
        assert_eq!(ttl, Duration::from_millis(CHALLENGE_TTL_MS));
        assert!(c.take(&n));
        assert!(!c.take(&n));
        assert!(!c.take(&[0u8; 32]));
        assert!(c.is_empty());
    }

    #[test]
    fn expired_nonce_is_refused() {
        let c = Challenges::new();
        c.set_ttl(Duration::ZERO);
        let (n, _) = c.issue(None).unwrap();
        assert!(!c.take(&n));
    }

    #[test]
    fn bounded_evicting_the_oldest() {
        let c = Challenges::with_limits(Duration::from_secs(60), 3);
        let nonces: Vec<_> = (0..5).map(|_| c.issue(None).unwrap().0).collect();
        assert_eq!(c.len(), 3);
        assert!(!c.take(&nonces[0]));
        assert!(!c.take(&nonces[1]));
        for n in &nonces[2..] {
            assert!(c.take(n));
        }
        assert_eq!(c.lock().order.len(), 0);
    }

    #[test]
    fn one_address_cannot_hold_more_than_its_quota_or_evict_others() {
        let c = Challenges::with_limits(Duration::from_secs(60), MAX_CHALLENGES_PER_ADDRESS + 10);
        let other = c.issue(Some([10, 0, 0, 2].into())).unwrap().0;
        let flood: IpAddr = [10, 0, 0, 1].into();
        let mut first = None;
        for _ in 0..MAX_CHALLENGES_PER_ADDRESS {
            first.get_or_insert(c.issue(Some(flood)).unwrap().0);
        }
        assert!(matches!(
            c.issue(Some(flood)),
            Err(IssueError::AddressQuota(a)) if a == flood
        ));
        // Spending one of its nonces makes room for one more.
        assert!(c.take(&first.unwrap()));
        c.issue(Some(flood)).unwrap();
        assert!(c.take(&other), "another address's nonce was evicted");
        assert_eq!(c.lock().per_address[&flood], MAX_CHALLENGES_PER_ADDRESS);
    }

    #[test]
    fn expired_nonces_are_dropped_when_issuing() {
        let c = Challenges::with_limits(Duration::ZERO, 100);
        for _ in 0..10 {
            c.issue(None).unwrap();
        }
        // Each issue drops the expired ones before it.
        assert_eq!(c.len(), 1);
    }
}
