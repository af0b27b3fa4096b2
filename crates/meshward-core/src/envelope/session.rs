//! Sessions: one HPKE setup per stream, then one ChaCha20-Poly1305 seal per message. Holds the
//! sending half ([`SendSession`]), the keys both halves export, and the session id derivation.

use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use hpke::{OpModeS, Serializable as _};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::ids::{EncKey, Keypair, PublicKey, SignKey};

use super::{
    check_payload, hpke_info, recipient_public, Envelope, EnvelopeError, EnvelopeKind, HpkeAead,
    HpkeRng, Kdf, Kem, SESSION_EXPORT, SESSION_INFO,
};

/// Hash domain deriving a session id from its encapsulated key.
const SESSION_ID: &[u8] = crate::hash::domain::SESSION_ID;

/// The session id for an encapsulated key. Deriving it (rather than drawing it at random) means
/// one id can only ever name one key, so a re-sent or forged `SessionOpen` cannot rebind it.
pub fn session_id_for(enc: &[u8; 32]) -> [u8; 16] {
    let h = crate::hash::hash(SESSION_ID, enc);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.0[..16]);
    id
}

/// A session's symmetric key and base nonce, exported from its HPKE context.
pub(super) struct SessionKeys {
    key: Zeroizing<[u8; 32]>,
    base_nonce: Zeroizing<[u8; 12]>,
}

impl SessionKeys {
    pub(super) fn from_export(
        export: impl FnOnce(&mut [u8]) -> Result<(), hpke::HpkeError>,
    ) -> Result<Self, EnvelopeError> {
        let mut okm = Zeroizing::new([0u8; 44]);
        export(&mut okm[..]).map_err(|_| EnvelopeError::Hpke("exporting session keys"))?;
        let mut key = Zeroizing::new([0u8; 32]);
        let mut base_nonce = Zeroizing::new([0u8; 12]);
        key.copy_from_slice(&okm[..32]);
        base_nonce.copy_from_slice(&okm[32..]);
        Ok(SessionKeys { key, base_nonce })
    }

    /// `base_nonce XOR seq` (seq as 12 big-endian bytes), as RFC 9180 §5.2 does for its own
    /// sequence numbers. Distinct seqs give distinct nonces, and no state is needed to open out of
    /// order.
    fn nonce(&self, seq: u64) -> chacha20poly1305::Nonce {
        let mut n = *self.base_nonce;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        chacha20poly1305::Nonce::from(n)
    }

    fn cipher(&self) -> chacha20poly1305::ChaCha20Poly1305 {
        chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.key[..]))
    }

    pub(super) fn seal(
        &self,
        seq: u64,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, EnvelopeError> {
        self.cipher()
            .encrypt(&self.nonce(seq), Payload { msg: payload, aad })
            .map_err(|_| EnvelopeError::Hpke("sealing a session payload"))
    }

    pub(super) fn open(
        &self,
        seq: u64,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, EnvelopeError> {
        self.cipher()
            .decrypt(
                &self.nonce(seq),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| EnvelopeError::Decrypt)
    }
}

/// The sending half of a session: one HPKE setup, then one symmetric seal per message.
///
/// The first envelope sealed is a `SessionOpen`; later ones are `Session`. If the recipient
/// answers [`EnvelopeError::UnknownSession`] (it restarted, or evicted the session), call
/// [`SendSession::resend_open`] or start a new session.
pub struct SendSession {
    sign: SignKey,
    sender: PublicKey,
    recipient: PublicKey,
    session: [u8; 16],
    enc: [u8; 32],
    keys: SessionKeys,
    /// Highest seq sealed so far (0 before the first). Seqs must strictly increase within a
    /// session, because a repeated seq would repeat a nonce under the same key.
    last_seq: u64,
    open_sent: bool,
}

impl SendSession {
    /// Runs the HPKE setup to `recipient`'s X25519 key `recipient_enc`.
    pub fn new<R: RngCore + CryptoRng>(
        rng: &mut R,
        sender: &Keypair,
        recipient: PublicKey,
        recipient_enc: &EncKey,
    ) -> Result<Self, EnvelopeError> {
        let pk = recipient_public(recipient_enc)?;
        let sender_id = sender.id();
        let info = hpke_info(SESSION_INFO, &sender_id, &recipient);
        let (enc, ctx) = hpke::setup_sender::<HpkeAead, Kdf, Kem, _>(
            &OpModeS::Base,
            &pk,
            &info,
            &mut HpkeRng(rng),
        )
        .map_err(|_| EnvelopeError::InvalidRecipientKey)?;
        let keys = SessionKeys::from_export(|out| ctx.export(SESSION_EXPORT, out))?;
        let enc: [u8; 32] = enc.to_bytes().into();
        Ok(SendSession {
            sign: sender.sign.clone(),
            sender: sender_id,
            recipient,
            session: session_id_for(&enc),
            enc,
            keys,
            last_seq: 0,
            open_sent: false,
        })
    }

    /// The 16-byte session id, derived from the session's encapsulated key.
    pub fn session_id(&self) -> [u8; 16] {
        self.session
    }

    /// The id of the device this session seals to.
    pub fn recipient(&self) -> PublicKey {
        self.recipient
    }

    /// Makes the next sealed envelope a `SessionOpen` again, for a recipient that lost the session.
    pub fn resend_open(&mut self) {
        self.open_sent = false;
    }

    /// Seals `payload` as the next message of the session. `seq` is the sender's counter for this
    /// recipient and must exceed every seq this session sealed before.
    pub fn seal(
        &mut self,
        seq: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<Envelope, EnvelopeError> {
        check_payload(payload)?;
        if seq <= self.last_seq {
            return Err(EnvelopeError::SeqTooLow {
                seq,
                min: self.last_seq.saturating_add(1),
            });
        }
        let kind = if self.open_sent {
            EnvelopeKind::Session {
                session: self.session,
            }
        } else {
            EnvelopeKind::SessionOpen {
                session: self.session,
                enc: self.enc,
            }
        };
        let mut env = Envelope {
            sender: self.sender,
            recipient: self.recipient,
            seq,
            timestamp_ms,
            kind,
            ciphertext: Vec::new(),
            signature: None,
        };
        env.ciphertext = self.keys.seal(seq, payload, &env.header_bytes())?;
        env.sign(&self.sign);
        // Only a sealed envelope moves the state on, so a failed seal can simply be retried.
        self.last_seq = seq;
        self.open_sent = true;
        Ok(env)
    }
}

impl fmt::Debug for SendSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSession")
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("session", &crate::hex::encode(&self.session))
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}
