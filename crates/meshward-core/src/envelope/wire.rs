//! The envelope on the wire: [`Envelope`] and [`EnvelopeKind`], their canonical encoding, the
//! digest the sender signs and the commitment mailboxes and the ledger refer to an envelope by.

use alloc::vec::Vec;

use ed25519_dalek::VerifyingKey;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{domain, Hash, Hasher};
use crate::ids::{self, PublicKey, SignKey, Signature};

use super::{EnvelopeError, ENVELOPE_VERSION, MAX_CIPHERTEXT_BYTES, TAG_BYTES};

const KIND_ONESHOT: u8 = 1;
const KIND_SESSION_OPEN: u8 = 2;
const KIND_SESSION: u8 = 3;

/// How an envelope's payload key was agreed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EnvelopeKind {
    /// A fresh HPKE encapsulation for this message alone.
    OneShot {
        /// HPKE encapsulated key (X25519), 32 bytes.
        enc: [u8; 32],
    },
    /// The first message of a session; carries the encapsulation every later message reuses.
    SessionOpen {
        /// Session id, 16 bytes: derived from `enc` ([`super::session_id_for`]).
        session: [u8; 16],
        /// HPKE encapsulated key (X25519) of the session, 32 bytes.
        enc: [u8; 32],
    },
    /// A later message of a session: no key agreement.
    Session {
        /// Session id, 16 bytes, of an earlier `SessionOpen`.
        session: [u8; 16],
    },
}

impl EnvelopeKind {
    /// Whether envelopes of this kind carry the sender's signature: `OneShot` and `SessionOpen`
    /// do; `Session` does not, its sender being authenticated by the session's AEAD key.
    pub fn is_signed(&self) -> bool {
        !matches!(self, EnvelopeKind::Session { .. })
    }

    /// The session this envelope belongs to, if any.
    pub fn session(&self) -> Option<[u8; 16]> {
        match self {
            EnvelopeKind::OneShot { .. } => None,
            EnvelopeKind::SessionOpen { session, .. } | EnvelopeKind::Session { session } => {
                Some(*session)
            }
        }
    }
}

impl Encode for EnvelopeKind {
    fn encode(&self, w: &mut Writer) {
        match self {
            EnvelopeKind::OneShot { enc } => w.u8(KIND_ONESHOT).raw(enc),
            EnvelopeKind::SessionOpen { session, enc } => {
                w.u8(KIND_SESSION_OPEN).raw(session).raw(enc)
            }
            EnvelopeKind::Session { session } => w.u8(KIND_SESSION).raw(session),
        };
    }
}

impl Decode for EnvelopeKind {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("envelope kind")? {
            KIND_ONESHOT => Ok(EnvelopeKind::OneShot {
                enc: r.array("envelope enc")?,
            }),
            KIND_SESSION_OPEN => Ok(EnvelopeKind::SessionOpen {
                session: r.array("envelope session id")?,
                enc: r.array("envelope enc")?,
            }),
            KIND_SESSION => Ok(EnvelopeKind::Session {
                session: r.array("envelope session id")?,
            }),
            tag => Err(DecodeError::UnknownTag {
                what: "envelope kind",
                tag,
            }),
        }
    }
}

/// An encrypted message from one device to another, signed unless it is a later message of a
/// session. See the module docs for the format.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    /// Sender device id.
    pub sender: PublicKey,
    /// Recipient device id.
    pub recipient: PublicKey,
    /// Per (sender -> recipient) counter: starts at 1, strictly increases. Replay protection.
    pub seq: u64,
    /// The sender's clock when sealing; informational, never trusted for ordering.
    pub timestamp_ms: u64,
    /// How the payload key was agreed: one-shot, session open, or a later session message.
    pub kind: EnvelopeKind,
    /// AEAD output: payload and 16-byte tag, at most [`MAX_CIPHERTEXT_BYTES`].
    pub ciphertext: Vec<u8>,
    /// The sender's Ed25519 signature over [`Envelope::signing_bytes`]: present exactly when
    /// [`EnvelopeKind::is_signed`]. The encoding writes it only for signed kinds, and the
    /// decoder reads it only for them.
    pub signature: Option<Signature>,
}

impl Envelope {
    fn write_header(&self, w: &mut Writer) {
        w.u8(ENVELOPE_VERSION)
            .put(&self.sender)
            .put(&self.recipient)
            .u64(self.seq)
            .u64(self.timestamp_ms)
            .put(&self.kind);
    }

    /// The header bytes (version through kind): the AEAD associated data.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + 32 + 32 + 8 + 8 + 1 + 16 + 32);
        self.write_header(&mut w);
        w.into_bytes()
    }

    /// Hashes the encoding up to, but excluding, the signature, streaming the ciphertext rather
    /// than copying it.
    fn unsigned_hasher(&self, domain: &[u8]) -> Hasher {
        let mut w = Writer::with_capacity(1 + 32 + 32 + 8 + 8 + 1 + 16 + 32 + 4);
        self.write_header(&mut w);
        w.len(self.ciphertext.len());
        let mut h = Hasher::new(domain);
        h.update(w.as_slice()).update(&self.ciphertext);
        h
    }

    /// What the sender signs: `SHA-256(ENVELOPE_SIGN || 0x00 || encoding without the signature)`.
    ///
    /// Signing a digest keeps the signed message 32 bytes whatever the payload size, so a device
    /// can sign and verify without holding a second copy of a large envelope.
    pub fn signing_bytes(&self) -> [u8; 32] {
        self.unsigned_hasher(domain::ENVELOPE_SIGN).finish().0
    }

    /// `hash(ENVELOPE, encoding)`: the id mailboxes and the ledger use for this envelope.
    pub fn commitment(&self) -> Hash {
        let mut h = self.unsigned_hasher(domain::ENVELOPE);
        if let Some(sig) = self.wire_signature() {
            h.update(&sig.0);
        }
        h.finish()
    }

    /// The signature as encoded: only a signed kind's. A signed kind built without its
    /// signature encodes as unsigned, which the decoder refuses, so it can never pass for a
    /// valid envelope.
    fn wire_signature(&self) -> Option<&Signature> {
        self.signature.as_ref().filter(|_| self.kind.is_signed())
    }

    /// Checks the signature against the sender's current signing key, as listed in the ledger.
    /// Stateless and without decryption: what a gateway runs before storing or forwarding.
    /// A `Session` envelope carries no signature ([`EnvelopeError::Unsigned`]): a gateway
    /// authenticates its sender by the connection it arrives on, the recipient by the session key.
    pub fn verify_sender(&self, sender_key: &VerifyingKey) -> Result<(), EnvelopeError> {
        if !self.kind.is_signed() {
            return Err(EnvelopeError::Unsigned);
        }
        let sig = self.signature.as_ref().ok_or(EnvelopeError::BadSignature)?;
        ids::verify_with(sender_key, &self.signing_bytes(), sig)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// Signs a signed kind; leaves a `Session` envelope unsigned.
    pub(super) fn sign(&mut self, key: &SignKey) {
        self.signature = self
            .kind
            .is_signed()
            .then(|| key.sign(&self.signing_bytes()));
    }
}

impl Encode for Envelope {
    fn encode(&self, w: &mut Writer) {
        self.write_header(w);
        w.bytes(&self.ciphertext);
        if let Some(sig) = self.wire_signature() {
            w.put(sig);
        }
    }
}

impl Decode for Envelope {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(ENVELOPE_VERSION, "envelope")?;
        let sender = r.get()?;
        let recipient = r.get()?;
        let seq = r.u64("envelope seq")?;
        let timestamp_ms = r.u64("envelope timestamp")?;
        let kind: EnvelopeKind = r.get()?;
        let ciphertext = r.byte_vec(MAX_CIPHERTEXT_BYTES, "envelope ciphertext")?;
        // Every AEAD output carries its tag; anything shorter cannot be a ciphertext.
        if ciphertext.len() < TAG_BYTES {
            return Err(DecodeError::Invalid {
                what: "envelope ciphertext (shorter than its tag)",
            });
        }
        let signature = if kind.is_signed() {
            Some(r.get()?)
        } else {
            None
        };
        Ok(Envelope {
            sender,
            recipient,
            seq,
            timestamp_ms,
            kind,
            ciphertext,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash;
    use proptest::prelude::*;

    fn arb_kind() -> impl Strategy<Value = EnvelopeKind> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(|enc| EnvelopeKind::OneShot { enc }),
            (any::<[u8; 16]>(), any::<[u8; 32]>())
                .prop_map(|(session, enc)| EnvelopeKind::SessionOpen { session, enc }),
            any::<[u8; 16]>().prop_map(|session| EnvelopeKind::Session { session }),
        ]
    }

    prop_compose! {
        fn arb_envelope()(
            sender in any::<[u8; 32]>(),
            recipient in any::<[u8; 32]>(),
            seq in any::<u64>(),
            timestamp_ms in any::<u64>(),
            kind in arb_kind(),
            ciphertext in proptest::collection::vec(any::<u8>(), TAG_BYTES..300),
            signature in proptest::array::uniform::<_, 64>(any::<u8>()),
        ) -> Envelope {
            let signature = kind.is_signed().then_some(Signature(signature));
            Envelope {
                sender: PublicKey(sender),
                recipient: PublicKey(recipient),
                seq,
                timestamp_ms,
                kind,
                ciphertext,
                signature,
            }
        }
    }

    proptest! {
        #[test]
        fn envelope_encoding_round_trips(env in arb_envelope()) {
            let bytes = env.to_bytes();
            prop_assert_eq!(Envelope::from_bytes(&bytes), Ok(env.clone()));
            prop_assert_eq!(env.commitment(), hash(domain::ENVELOPE, &bytes));
            prop_assert_eq!(&env.header_bytes()[..], &bytes[..env.header_bytes().len()]);
        }

        #[test]
        fn arbitrary_bytes_never_panic_decoder(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..400),
                (arb_envelope(), any::<usize>(), any::<u8>(), any::<usize>()).prop_map(
                    |(env, at, xor, cut)| {
                        let mut b = env.to_bytes();
                        let i = at % b.len();
                        b[i] ^= xor;
                        b.truncate(b.len() - cut % 8);
                        b
                    }
                ),
            ]
        ) {
            if let Ok(env) = Envelope::from_bytes(&bytes) {
                prop_assert_eq!(env.to_bytes(), bytes);
            }
        }
    }
}
