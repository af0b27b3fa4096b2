//! The recipient side: [`Receiver`] authenticates, decrypts and records the envelopes addressed
//! to one device, with a bounded cache of session keys; [`Opened`] is what it hands back.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::VerifyingKey;
use hpke::{Deserializable as _, OpModeR};

use crate::hash::Hash;
use crate::ids::{Keypair, PublicKey};

use super::session::SessionKeys;
use super::{
    hpke_info, session_id_for, Envelope, EnvelopeError, EnvelopeKind, HpkeAead, HpkeEnc,
    HpkeSecret, Kdf, Kem, ReplayGuard, MAX_CIPHERTEXT_BYTES, MAX_SESSIONS, MAX_SESSIONS_PER_SENDER,
    MAX_TRACKED_SENDERS, ONESHOT_INFO, SESSION_EXPORT, SESSION_INFO,
};

/// A decrypted, authenticated envelope.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Opened {
    /// The sender's id, authenticated by the envelope's signature.
    pub sender: PublicKey,
    /// The envelope's sequence number, accepted by the replay guard.
    pub seq: u64,
    /// The sender's clock when sealing, ms since the Unix epoch; informational only.
    pub timestamp_ms: u64,
    /// The decrypted payload (at most [`super::MAX_PAYLOAD_BYTES`]).
    pub payload: Vec<u8>,
    /// The envelope's [`commitment`](Envelope::commitment), e.g. for acknowledging it.
    pub commitment: Hash,
}

type SessionKey = (PublicKey, [u8; 16]);

/// Session keys by (sender, session id), bounded in total and per sender, evicting the least
/// recently used.
struct SessionCache {
    max_total: usize,
    max_per_sender: usize,
    /// Session -> (tick of last use, keys).
    entries: BTreeMap<SessionKey, (u64, SessionKeys)>,
    /// Tick of last use -> session, to find the least recently used.
    lru: BTreeMap<u64, SessionKey>,
    tick: u64,
}

impl SessionCache {
    fn new(max_total: usize, max_per_sender: usize) -> Self {
        SessionCache {
            max_total: max_total.max(1),
            max_per_sender: max_per_sender.max(1),
            entries: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
        }
    }

    fn get(&self, key: &SessionKey) -> Option<&SessionKeys> {
        self.entries.get(key).map(|(_, keys)| keys)
    }

    fn remove(&mut self, key: &SessionKey) {
        if let Some((used, _)) = self.entries.remove(key) {
            self.lru.remove(&used);
        }
    }

    /// Marks `key` as just used, inserting `keys` if it is not cached yet.
    fn touch_or_insert(&mut self, key: SessionKey, keys: Option<SessionKeys>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((used, _)) = self.entries.get_mut(&key) {
            self.lru.remove(used);
            *used = tick;
            self.lru.insert(tick, key);
            return;
        }
        let Some(keys) = keys else { return };
        let sender = key.0;
        let mut own = 0usize;
        let mut own_oldest: Option<(u64, SessionKey)> = None;
        for (k, (used, _)) in self
            .entries
            .range((sender, [0u8; 16])..=(sender, [0xffu8; 16]))
        {
            own += 1;
            if own_oldest.is_none_or(|(t, _)| *used < t) {
                own_oldest = Some((*used, *k));
            }
        }
        if own >= self.max_per_sender {
            if let Some((_, k)) = own_oldest {
                self.remove(&k);
            }
        } else if self.entries.len() >= self.max_total {
            if let Some((_, k)) = self.lru.pop_first() {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (tick, keys));
        self.lru.insert(tick, key);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The recipient side: opens envelopes addressed to one device, keeping its session keys and
/// replay windows (both bounded, see [`MAX_SESSIONS`] and [`ReplayGuard`]).
pub struct Receiver {
    id: PublicKey,
    secret: HpkeSecret,
    sessions: SessionCache,
    replay: ReplayGuard,
}

impl Receiver {
    /// A receiver for `keypair` with the default limits.
    pub fn new(keypair: &Keypair) -> Self {
        Self::with_limits(
            keypair,
            MAX_SESSIONS,
            MAX_SESSIONS_PER_SENDER,
            MAX_TRACKED_SENDERS,
        )
    }

    /// A receiver with explicit limits (each at least 1), e.g. smaller ones on a device.
    pub fn with_limits(
        keypair: &Keypair,
        max_sessions: usize,
        max_sessions_per_sender: usize,
        max_senders: usize,
    ) -> Self {
        let secret = HpkeSecret::from_bytes(keypair.enc.inner().as_bytes())
            .expect("an X25519 secret is 32 bytes, all of which hpke accepts");
        Receiver {
            id: keypair.id(),
            secret,
            sessions: SessionCache::new(max_sessions, max_sessions_per_sender),
            replay: ReplayGuard::new(max_senders),
        }
    }

    /// The id of the device this receiver opens envelopes for.
    pub fn id(&self) -> PublicKey {
        self.id
    }

    /// The replay guard: per-sender windows of accepted sequence numbers.
    pub fn replay_guard(&self) -> &ReplayGuard {
        &self.replay
    }

    /// Sessions cached now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Authenticates, decrypts and records an envelope. `sender_key` is the sender's current
    /// signing key, looked up from the ledger by `env.sender`.
    ///
    /// Checks run cheapest and least stateful first: recipient, signature, replay window (read
    /// only), decryption. Only then is the seq recorded and the session cached, so an envelope that
    /// fails any check leaves the receiver unchanged.
    pub fn open(
        &mut self,
        env: &Envelope,
        sender_key: &VerifyingKey,
    ) -> Result<Opened, EnvelopeError> {
        if env.recipient != self.id {
            return Err(EnvelopeError::WrongRecipient {
                expected: self.id,
                found: env.recipient,
            });
        }
        // The decoder enforces this too; an envelope built in code must not bypass it.
        if env.ciphertext.len() > MAX_CIPHERTEXT_BYTES {
            return Err(EnvelopeError::PayloadTooLarge {
                what: "ciphertext",
                len: env.ciphertext.len(),
                max: MAX_CIPHERTEXT_BYTES,
            });
        }
        env.verify_sender(sender_key)?;
        self.replay.check(&env.sender, env.seq)?;

        let aad = env.header_bytes();
        let mut new_session = None;
        let payload = match env.kind {
            EnvelopeKind::OneShot { enc } => {
                let info = hpke_info(ONESHOT_INFO, &env.sender, &self.id);
                let enc = HpkeEnc::from_bytes(&enc).map_err(|_| EnvelopeError::Decrypt)?;
                hpke::single_shot_open::<HpkeAead, Kdf, Kem>(
                    &OpModeR::Base,
                    &self.secret,
                    &enc,
                    &info,
                    &env.ciphertext,
                    &aad,
                )
                // A small-order `enc` (decap failure) is as undecryptable as a bad tag.
                .map_err(|_| EnvelopeError::Decrypt)?
            }
            EnvelopeKind::SessionOpen { session, enc } => {
                if session != session_id_for(&enc) {
                    return Err(EnvelopeError::SessionMismatch);
                }
                match self.sessions.get(&(env.sender, session)) {
                    // A re-sent SessionOpen: the id pins the key, so the cached keys are the
                    // ones its encapsulation would give.
                    Some(keys) => keys.open(env.seq, &env.ciphertext, &aad)?,
                    None => {
                        let keys = self.session_keys(&env.sender, &enc)?;
                        let payload = keys.open(env.seq, &env.ciphertext, &aad)?;
                        new_session = Some(keys);
                        payload
                    }
                }
            }
            EnvelopeKind::Session { session } => self
                .sessions
                .get(&(env.sender, session))
                .ok_or(EnvelopeError::UnknownSession)?
                .open(env.seq, &env.ciphertext, &aad)?,
        };

        // Authenticated and decrypted: now, and only now, change state.
        if let Some(session) = env.kind.session() {
            self.sessions
                .touch_or_insert((env.sender, session), new_session);
        }
        self.replay.record(env.sender, env.seq);
        Ok(Opened {
            sender: env.sender,
            seq: env.seq,
            timestamp_ms: env.timestamp_ms,
            payload,
            commitment: env.commitment(),
        })
    }

    fn session_keys(
        &self,
        sender: &PublicKey,
        enc: &[u8; 32],
    ) -> Result<SessionKeys, EnvelopeError> {
        let info = hpke_info(SESSION_INFO, sender, &self.id);
        let enc = HpkeEnc::from_bytes(enc).map_err(|_| EnvelopeError::Decrypt)?;
        let ctx =
            hpke::setup_receiver::<HpkeAead, Kdf, Kem>(&OpModeR::Base, &self.secret, &enc, &info)
                .map_err(|_| EnvelopeError::Decrypt)?;
        SessionKeys::from_export(|out| ctx.export(SESSION_EXPORT, out))
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("id", &self.id)
            .field("sessions", &self.sessions.len())
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}
