//! One message inside an anchored batch: [`EnvelopeInclusion`] carries the envelope and its
//! Merkle path to the batch root an anchor commits to, so that a [`TxProof`] of the anchor
//! proves, offline and from the genesis alone, that this exact envelope was sent and when.
//!
//! This is what makes a `Session` envelope, which carries no signature of its own, undeniable:
//! the sender signed the anchor, the anchor's batch root fixes every envelope under it, and a
//! certified block fixes when. See ADR 0013 and FORMATS.md, "Envelope inclusion".

use alloc::vec::Vec;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::{Envelope, EnvelopeKind, MAX_CIPHERTEXT_BYTES};
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::ids::{verify_with, PublicKey};
use crate::merkle;
use crate::tx::{batch_leaf, batch_root_over, Tx};

use super::{ProvenAnchor, TxProof, VerifyError};

/// Encoding version of [`EnvelopeInclusion`].
pub const INCLUSION_VERSION: u8 = 1;

/// The largest envelope encoding an inclusion carries: a maximal ciphertext and every header
/// field, with room to spare.
const MAX_ENVELOPE_BYTES: usize = MAX_CIPHERTEXT_BYTES + 512;

/// An envelope and its Merkle path to the batch root of the anchor that commits to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeInclusion {
    /// The envelope, exactly as sent.
    pub envelope: Envelope,
    /// Its commitment's path to the anchor's batch root (for an anchor of one envelope: a tree
    /// of one leaf, with an empty path).
    pub path: merkle::Proof,
}

/// What a valid envelope inclusion proves, with the anchor it is under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEnvelope {
    /// The envelope's commitment.
    pub commitment: Hash,
    /// Its position among the anchor's `count` envelopes, from 0.
    pub index: u64,
    /// The sender's signing key when it sent the envelope (it signed the anchor).
    pub sender: PublicKey,
    /// The recipient's key the envelope was sealed to.
    pub recipient: PublicKey,
    /// The envelope's sequence number for this sender and recipient.
    pub seq: u64,
    /// The sender's clock at sealing, ms since the Unix epoch (its claim).
    pub timestamp_ms: u64,
    /// `oneshot`, `session_open` or `session`.
    pub kind: &'static str,
    /// Ciphertext bytes (payload and tag).
    pub ciphertext_bytes: usize,
}

impl EnvelopeInclusion {
    /// The inclusion of `envelope` among `batch`, the commitments an anchor covers in the order
    /// it committed them; `None` if the envelope is not among them.
    pub fn build(envelope: Envelope, batch: &[Hash]) -> Option<EnvelopeInclusion> {
        let c = envelope.commitment();
        let index = batch.iter().position(|b| *b == c)?;
        let leaves: Vec<Hash> = batch.iter().map(batch_leaf).collect();
        let mut path = merkle::prove(&leaves, index)?;
        if batch.len() == 1 {
            // An anchor of one envelope commits to it directly, not to a root over it.
            path.path.clear();
        }
        Some(EnvelopeInclusion { envelope, path })
    }

    /// Checks the inclusion against an anchor already proven final (`anchor`, from the
    /// transaction `anchor_tx` of the chain `chain_id`):
    /// 1. the envelope's commitment, along the path, leads to the anchor's commitment: itself
    ///    for an anchor of one envelope, else the batch root over the anchor's `count` leaves;
    /// 2. the envelope's sender key is the key that signed the anchor;
    /// 3. a signed envelope (one-shot, `SessionOpen`) is signed by that key.
    pub fn verify(
        &self,
        chain_id: &str,
        anchor_tx: &Tx,
        anchor: &ProvenAnchor,
    ) -> Result<ProvenEnvelope, VerifyError> {
        let env = &self.envelope;
        let c = env.commitment();
        let committed = if anchor.count == 1 {
            self.path.tree_size == 1 && self.path.path.is_empty() && c == anchor.commitment
        } else {
            self.path
                .root(&batch_leaf(&c), u64::from(anchor.count))
                .is_ok_and(|r| batch_root_over(&r) == anchor.commitment)
        };
        if !committed {
            return Err(VerifyError::EnvelopeNotAnchored);
        }
        // The anchor proof checked its signature under the signer's key of its time; the
        // envelope's sender must be that key.
        let vk = env
            .sender
            .verifying_key()
            .map_err(|_| VerifyError::EnvelopeSender)?;
        verify_with(&vk, &anchor_tx.signing_bytes(chain_id), &anchor_tx.sig)
            .map_err(|_| VerifyError::EnvelopeSender)?;
        if env.kind.is_signed() {
            env.verify_sender(&vk)
                .map_err(|_| VerifyError::EnvelopeSignature)?;
        }
        Ok(ProvenEnvelope {
            commitment: c,
            index: self.path.leaf_index,
            sender: env.sender,
            recipient: env.recipient,
            seq: env.seq,
            timestamp_ms: env.timestamp_ms,
            kind: match env.kind {
                EnvelopeKind::OneShot { .. } => "oneshot",
                EnvelopeKind::SessionOpen { .. } => "session_open",
                EnvelopeKind::Session { .. } => "session",
            },
            ciphertext_bytes: env.ciphertext.len(),
        })
    }
}

impl TxProof {
    /// Checks the proof (an anchor's, [`TxProof::verify_anchor`]) and that `inclusion`'s
    /// envelope is among what the anchor commits to.
    pub fn verify_envelope(
        &self,
        genesis: &Genesis,
        inclusion: &EnvelopeInclusion,
    ) -> Result<(ProvenAnchor, ProvenEnvelope), VerifyError> {
        let anchor = self.verify_anchor(genesis)?;
        let env = inclusion.verify(&genesis.chain_id, &self.tx.tx, &anchor)?;
        Ok((anchor, env))
    }
}

impl Encode for EnvelopeInclusion {
    fn encode(&self, w: &mut Writer) {
        w.u8(INCLUSION_VERSION)
            .bytes(&self.envelope.to_bytes())
            .put(&self.path);
    }
}

impl Decode for EnvelopeInclusion {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(INCLUSION_VERSION, "envelope inclusion")?;
        let raw = r.byte_vec(MAX_ENVELOPE_BYTES, "included envelope")?;
        Ok(EnvelopeInclusion {
            envelope: Envelope::from_bytes(&raw)?,
            path: r.get()?,
        })
    }
}
