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
    /// The sender's id, authenticated by the envelope's signature, or for a `Session` envelope by
    /// the session key its signed `SessionOpen` set up.
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
/// recently used. The least recently used is found by a scan when the cache is full, rather than
/// kept in a second map: one map type less is ~2 KB less flash on a device, and the scan (at most
/// [`MAX_SESSIONS`] entries) costs far less than the HPKE setup of the session that triggers it.
struct SessionCache {
    max_total: usize,
    max_per_sender: usize,
    /// Session -> (tick of last use, keys).
    entries: BTreeMap<SessionKey, (u64, SessionKeys)>,
    tick: u64,
}

impl SessionCache {
    fn new(max_total: usize, max_per_sender: usize) -> Self {
        SessionCache {
            max_total: max_total.max(1),
            max_per_sender: max_per_sender.max(1),
            entries: BTreeMap::new(),
            tick: 0,
        }
    }

    fn get(&self, key: &SessionKey) -> Option<&SessionKeys> {
        self.entries.get(key).map(|(_, keys)| keys)
    }

    /// Marks `key` as just used, inserting `keys` if it is not cached yet.
    fn touch_or_insert(&mut self, key: SessionKey, keys: Option<SessionKeys>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((used, _)) = self.entries.get_mut(&key) {
            *used = tick;
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
        let evict = if own >= self.max_per_sender {
            own_oldest.map(|(_, k)| k)
        } else if self.entries.len() >= self.max_total {
            self.entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k)
        } else {
            None
        };
        if let Some(k) = evict {
            self.entries.remove(&k);
        }
        self.entries.insert(key, (tick, keys));
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
    /// signing key, looked up from the ledger by `env.sender`; an envelope whose sender field is
    /// another key is refused ([`EnvelopeError::BadSignature`]).
    ///
    /// Checks run cheapest and least stateful first: recipient, sender key, signature (one-shot
    /// and `SessionOpen`; a `Session` envelope is authenticated by its session's AEAD), replay
    /// window (read only), decryption. Only then is the seq recorded and the session cached, so
    /// an envelope that fails any check leaves the receiver unchanged.
    pub fn open(
        &mut self,
        env: &Envelope,
        sender_key: &VerifyingKey,
    ) -> Result<Opened, EnvelopeError> {
        let (payload, new_session) = self.check(env, sender_key, |_| None)?;
        Ok(self.commit(env, payload, new_session))
    }

    /// Opens envelopes delivered together (one `DeliverBatch`, a stretch of a stream) all or
    /// nothing: they must come from one sender in strictly increasing `seq`, and every one must
    /// open. A later envelope may belong to a session opened earlier in the same batch. On any
    /// failure the receiver is unchanged and the error names the position of the first refused
    /// envelope.
    pub fn open_batch(
        &mut self,
        envs: &[Envelope],
        sender_key: &VerifyingKey,
    ) -> Result<Vec<Opened>, (usize, EnvelopeError)> {
        // Each envelope's payload and, for a session it opened, the session's keys.
        let mut checked: Vec<(Vec<u8>, Option<SessionKeys>)> = Vec::with_capacity(envs.len());
        for (i, env) in envs.iter().enumerate() {
            if let Some(prev) = i.checked_sub(1).map(|j| &envs[j]) {
                if env.sender != prev.sender {
                    return Err((i, EnvelopeError::MixedBatch));
                }
                if env.seq <= prev.seq {
                    return Err((
                        i,
                        EnvelopeError::Reordered {
                            seq: env.seq,
                            after: prev.seq,
                        },
                    ));
                }
            }
            // A session opened earlier in this batch (one sender: the id alone names it).
            let staged = |k: &SessionKey| {
                envs.iter().zip(&checked).find_map(|(e, (_, keys))| {
                    keys.as_ref().filter(|_| e.kind.session() == Some(k.1))
                })
            };
            let one = self.check(env, sender_key, staged).map_err(|e| (i, e))?;
            checked.push(one);
        }
        Ok(envs
            .iter()
            .zip(checked)
            .map(|(env, (payload, new_session))| self.commit(env, payload, new_session))
            .collect())
    }

    /// Every check of [`Receiver::open`], changing nothing. `staged` finds sessions opened
    /// earlier in the same batch (a closure, so that a single open compiles without it).
    /// Returns the payload and, for a new session, its keys.
    fn check<'a>(
        &'a self,
        env: &Envelope,
        sender_key: &VerifyingKey,
        staged: impl Fn(&SessionKey) -> Option<&'a SessionKeys>,
    ) -> Result<(Vec<u8>, Option<SessionKeys>), EnvelopeError> {
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
        // The sender field is the sender's signing key. Sessions are cached by it, so a session
        // lives only while the ledger lists the key that opened it: after a rotation the caller
        // passes the new key, and the old key's envelopes and sessions are refused here.
        if env.sender.0 != sender_key.to_bytes() {
            return Err(EnvelopeError::BadSignature);
        }
        if env.kind.is_signed() {
            env.verify_sender(sender_key)?;
        }
        self.replay.check(&env.sender, env.seq)?;

        let aad = env.header_bytes();
        let cached = |session: [u8; 16]| {
            let key = (env.sender, session);
            staged(&key).or_else(|| self.sessions.get(&key))
        };
        match env.kind {
            EnvelopeKind::OneShot { enc } => {
                let info = hpke_info(ONESHOT_INFO, &env.sender, &self.id);
                let enc = HpkeEnc::from_bytes(&enc).map_err(|_| EnvelopeError::Decrypt)?;
                let payload = hpke::single_shot_open::<HpkeAead, Kdf, Kem>(
                    &OpModeR::Base,
                    &self.secret,
                    &enc,
                    &info,
                    &env.ciphertext,
                    &aad,
                )
                // A small-order `enc` (decap failure) is as undecryptable as a bad tag.
                .map_err(|_| EnvelopeError::Decrypt)?;
                Ok((payload, None))
            }
            EnvelopeKind::SessionOpen { session, enc } => {
                if session != session_id_for(&enc) {
                    return Err(EnvelopeError::SessionMismatch);
                }
                match cached(session) {
                    // A re-sent SessionOpen: the id pins the key, so the cached keys are the
                    // ones its encapsulation would give.
                    Some(keys) => Ok((keys.open(env.seq, &env.ciphertext, &aad)?, None)),
                    None => {
                        let keys = self.session_keys(&env.sender, &enc)?;
                        let payload = keys.open(env.seq, &env.ciphertext, &aad)?;
                        Ok((payload, Some(keys)))
                    }
                }
            }
            // No signature: the AEAD tag under a key only the sender (whose signed SessionOpen
            // set it up) and this receiver hold authenticates the sender and the whole header.
            EnvelopeKind::Session { session } => Ok((
                cached(session).ok_or(EnvelopeError::UnknownSession)?.open(
                    env.seq,
                    &env.ciphertext,
                    &aad,
                )?,
                None,
            )),
        }
    }

    /// Records an envelope that passed [`Receiver::check`]: its seq, and its session's use.
    fn commit(
        &mut self,
        env: &Envelope,
        payload: Vec<u8>,
        new_session: Option<SessionKeys>,
    ) -> Opened {
        if let Some(session) = env.kind.session() {
            self.sessions
                .touch_or_insert((env.sender, session), new_session);
        }
        self.replay.record(env.sender, env.seq);
        Opened {
            sender: env.sender,
            seq: env.seq,
            timestamp_ms: env.timestamp_ms,
            payload,
            commitment: env.commitment(),
        }
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
