//! HPKE envelopes: end-to-end encrypted, sender-signed messages between devices.
//!
//! An envelope carries one payload from a sender device to a recipient device through any number
//! of gateways and mailboxes. Only the recipient can read it; anyone holding the sender's public
//! key (gateways look it up in the ledger) can check who sent it, and that nothing was changed,
//! without decrypting, so a gateway never stores or forwards traffic a registered device did not
//! sign.
//!
//! # Cryptography
//! RFC 9180 HPKE, base mode, with the suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305. Base mode does not authenticate the sender, so every envelope is also
//! signed with the sender's Ed25519 key. The HPKE `info` binds the sender and recipient ids, and
//! the AEAD's associated data is the envelope header (every field but the ciphertext and the
//! signature), so no header field can be swapped even by someone who can re-sign.
//!
//! # Wire format (version 1, canonical encoding of [`crate::codec`])
//! ```text
//! version      u8   = 1
//! sender       [32] Ed25519 public key (device id)
//! recipient    [32] Ed25519 public key (device id)
//! seq          u64  per (sender -> recipient) counter, starts at 1
//! timestamp_ms u64  sender's clock, informational only
//! kind         u8   tag, then its fields:
//!                     1 OneShot     enc[32]
//!                     2 SessionOpen session[16] enc[32]
//!                     3 Session     session[16]
//! ciphertext   u32 length || bytes, 16..=MAX_PAYLOAD_BYTES + 16 (payload + Poly1305 tag)
//! signature    [64] Ed25519 over SHA-256("meshward/envelope-sig/v1" || 0x00 || all bytes above)
//! ```
//! The header (AEAD associated data) is everything from `version` to the end of `kind`. An
//! envelope's [`commitment`](Envelope::commitment) hashes the whole encoding, signature included,
//! under the `meshward/envelope/v1` domain; mailboxes and the ledger refer to envelopes by it.
//!
//! # Modes
//! - **One-shot** ([`seal_oneshot`]): a fresh HPKE encapsulation per message. Costs one X25519
//!   key agreement on each side; use it for sporadic messages.
//! - **Session** ([`SendSession`]): one HPKE setup per stream. Both sides export a ChaCha20-Poly1305
//!   key and a 12-byte base nonce from the HPKE context; the nonce of each message is the base
//!   nonce XOR its `seq` (big-endian, right-aligned), so messages open in any order. The first
//!   envelope of a session is a `SessionOpen` carrying the encapsulated key; later ones are
//!   `Session` and carry only the 16-byte session id, which is derived from the encapsulated key so
//!   that one id always names one key.
//!
//! # Replay rule
//! `seq` is one counter per (sender -> recipient) pair, shared by one-shot envelopes and every
//! session between them: it starts at 1 and strictly increases. The recipient's [`Receiver`]
//! accepts a `seq` it has not accepted before that is above the sender's highest accepted `seq`
//! minus [`REPLAY_WINDOW`], so envelopes may arrive out of order by up to 64 positions. A `seq`
//! is recorded only once the envelope has been authenticated and decrypted, so a forged or
//! damaged envelope never uses up a sequence number. See [`ReplayGuard`] for what happens when
//! more senders are tracked than its limit.
//!
//! ```
//! use meshward_core::envelope::{seal_oneshot, Receiver};
//! use meshward_core::ids::Keypair;
//! use rand::rngs::OsRng;
//!
//! let alice = Keypair::generate(&mut OsRng);
//! let bob = Keypair::generate(&mut OsRng);
//! let env = seal_oneshot(&mut OsRng, &alice, bob.id(), &bob.enc_key(), 1, 0, b"hi bob").unwrap();
//!
//! // A gateway checks the sender without decrypting.
//! env.verify_sender(&alice.sign.verifying_key()).unwrap();
//!
//! let mut inbox = Receiver::new(&bob);
//! let opened = inbox.open(&env, &alice.sign.verifying_key()).unwrap();
//! assert_eq!(opened.payload, b"hi bob");
//! assert!(inbox.open(&env, &alice.sign.verifying_key()).is_err()); // replay
//! ```

mod oneshot;
mod receiver;
mod replay;
mod session;
#[cfg(test)]
mod tests;
mod wire;

pub use oneshot::seal_oneshot;
pub use receiver::{Opened, Receiver};
pub use replay::ReplayGuard;
pub use session::{session_id_for, SendSession};
pub use wire::{Envelope, EnvelopeKind};

use alloc::vec::Vec;

use hpke::Deserializable as _;
use rand_core::{CryptoRng, RngCore};

use crate::codec::DecodeError;
use crate::ids::{EncKey, PublicKey};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;
type HpkeSecret = <Kem as hpke::Kem>::PrivateKey;
type HpkePublic = <Kem as hpke::Kem>::PublicKey;
type HpkeEnc = <Kem as hpke::Kem>::EncappedKey;

/// Envelope format version, the first byte of every encoded envelope. Version 2: `Session`
/// envelopes carry no signature (ADR 0013); version 1 envelopes no longer decode.
pub const ENVELOPE_VERSION: u8 = 2;

/// The largest payload one envelope carries: 64 KiB.
///
/// It bounds what a device must buffer to open one envelope and what a gateway holds per stored
/// envelope, and it keeps an envelope inside one network frame. Larger data is split over several
/// envelopes, usually in one session.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The Poly1305 tag appended to every ciphertext.
pub const TAG_BYTES: usize = 16;

/// The largest ciphertext the decoder accepts: a maximal payload and its tag.
pub const MAX_CIPHERTEXT_BYTES: usize = MAX_PAYLOAD_BYTES + TAG_BYTES;

/// Sessions a [`Receiver`] keeps keys for by default (each about 150 bytes). The least recently
/// used is evicted; its sender gets [`EnvelopeError::UnknownSession`] and opens a new session.
pub const MAX_SESSIONS: usize = 1024;

/// Sessions one sender may hold in a [`Receiver`] by default. A sender opening more evicts its own
/// least recently used session, so one busy or hostile sender cannot push everybody else's
/// sessions out of the cache.
pub const MAX_SESSIONS_PER_SENDER: usize = 8;

/// Senders a [`ReplayGuard`] tracks by default. Size it above the number of peers a node talks
/// to: eviction is the overload path (see [`ReplayGuard`]).
pub const MAX_TRACKED_SENDERS: usize = 4096;

/// How far below a sender's highest accepted `seq` an envelope may still be accepted.
pub const REPLAY_WINDOW: u64 = 64;

/// Most buckets that remember the highest `seq` of evicted senders (8 bytes each). A guard has
/// four per tracked sender, from 16 up to this: 8 KiB at the default [`MAX_TRACKED_SENDERS`], 256
/// bytes on a device that tracks 8 senders.
pub const EVICTED_FLOOR_BUCKETS: usize = 1024;

/// HPKE `info` prefix for one-shot envelopes; followed by the sender and recipient ids.
const ONESHOT_INFO: &[u8] = b"meshward/oneshot/v1";
/// HPKE `info` prefix for sessions; followed by the sender and recipient ids.
const SESSION_INFO: &[u8] = b"meshward/session/v1";
/// HPKE exporter context for the session key and base nonce.
const SESSION_EXPORT: &[u8] = b"meshward/session-keys/v1";

/// Why an envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes are not a canonical envelope.
    #[error("malformed envelope: {0}")]
    Decode(#[from] DecodeError),
    /// The sender's signature does not verify under the key given for the sender.
    #[error(
        "envelope signature does not verify against the sender's key (tampered in transit, or \
         signed with a key the ledger no longer lists for the sender); drop it"
    )]
    BadSignature,
    /// The envelope is addressed to another device than this receiver.
    #[error(
        "envelope is addressed to {found}, not to this device ({expected}); do not open it here"
    )]
    WrongRecipient {
        /// This receiver's id.
        expected: PublicKey,
        /// The envelope's recipient.
        found: PublicKey,
    },
    /// The sender's `seq` was already accepted, or is below its replay window.
    #[error(
        "envelope seq {seq} was already accepted or is below the replay window; drop it (a sender \
         that restarted must continue its seq counter, not reset it)"
    )]
    Replay {
        /// The refused sequence number.
        seq: u64,
    },
    /// The ciphertext does not open with this receiver's key (or the session's key).
    #[error(
        "envelope does not decrypt with this device's key (tampered by the signer, or sealed to \
         another encryption key); drop it"
    )]
    Decrypt,
    /// A `Session` envelope carries no signature to check: its sender is authenticated by the
    /// session key (recipient) or by the connection it arrives on (gateway).
    #[error(
        "a Session envelope carries no signature; only its recipient (by the session key) or a \
         gateway it comes from its sender's own connection can authenticate it"
    )]
    Unsigned,
    /// Envelopes opened together (a batch, one stream) are not in strictly increasing `seq`
    /// order, or come from more than one sender.
    #[error(
        "envelope seq {seq} follows seq {after} in one batch; a batch carries one sender's \
         envelopes in strictly increasing seq order (reordered or spliced in transit); nothing \
         of it was opened"
    )]
    Reordered {
        /// The out-of-order sequence number.
        seq: u64,
        /// The sequence number before it in the batch.
        after: u64,
    },
    /// A batch's envelopes come from more than one sender.
    #[error("a batch mixes envelopes of several senders; nothing of it was opened")]
    MixedBatch,
    /// A `Session` envelope names a session this receiver holds no key for.
    #[error(
        "envelope belongs to a session this device does not know (its SessionOpen has not arrived \
         yet or was evicted); keep it for later or ask the sender to reopen the session"
    )]
    UnknownSession,
    /// A `SessionOpen` envelope's session id is not the one derived from its encapsulated key.
    #[error("SessionOpen envelope's session id does not match its encapsulated key; drop it")]
    SessionMismatch,
    /// A payload (sealing) or ciphertext (opening) is over its limit.
    #[error(
        "{what} is {len} bytes, over the limit of {max}; split the data over several envelopes"
    )]
    PayloadTooLarge {
        /// What is too large: `payload` or `ciphertext`.
        what: &'static str,
        /// Its length, in bytes.
        len: usize,
        /// The limit, in bytes ([`MAX_PAYLOAD_BYTES`] or [`MAX_CIPHERTEXT_BYTES`]).
        max: usize,
    },
    /// Sealing with a `seq` of 0, or not above the last one this session sealed.
    #[error(
        "seq {seq} is too low, the next envelope to this recipient needs seq >= {min} (seq starts \
         at 1 and strictly increases)"
    )]
    SeqTooLow {
        /// The refused sequence number.
        seq: u64,
        /// The lowest sequence number that would be accepted.
        min: u64,
    },
    /// The recipient's encryption key is not a usable X25519 public key (sealing).
    #[error("recipient encryption key is not a usable X25519 key; check the key the ledger lists")]
    InvalidRecipientKey,
    /// The HPKE library failed at the step named (sealing or exporting keys); not caused by input.
    #[error("internal HPKE failure while {0}")]
    Hpke(&'static str),
}

/// Adapts our `rand_core` 0.6 RNG to the `rand_core` 0.9 traits the `hpke` crate takes.
struct HpkeRng<'a, R>(&'a mut R);

impl<R: RngCore + CryptoRng> hpke::rand_core::RngCore for HpkeRng<'_, R> {
    fn next_u32(&mut self) -> u32 {
        RngCore::next_u32(self.0)
    }

    fn next_u64(&mut self) -> u64 {
        RngCore::next_u64(self.0)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        RngCore::fill_bytes(self.0, dst)
    }
}

// Sound because `R` itself is a `CryptoRng`; the adapter only forwards its output.
impl<R: RngCore + CryptoRng> hpke::rand_core::CryptoRng for HpkeRng<'_, R> {}

/// `label || sender || recipient`: both ids are fixed width, so the concatenation is unambiguous.
fn hpke_info(label: &[u8], sender: &PublicKey, recipient: &PublicKey) -> Vec<u8> {
    let mut info = Vec::with_capacity(label.len() + 64);
    info.extend_from_slice(label);
    info.extend_from_slice(&sender.0);
    info.extend_from_slice(&recipient.0);
    info
}

fn check_payload(payload: &[u8]) -> Result<(), EnvelopeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(EnvelopeError::PayloadTooLarge {
            what: "payload",
            len: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

fn recipient_public(recipient_enc: &EncKey) -> Result<HpkePublic, EnvelopeError> {
    HpkePublic::from_bytes(&recipient_enc.0).map_err(|_| EnvelopeError::InvalidRecipientKey)
}
