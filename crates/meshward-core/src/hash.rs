//! SHA-256 hashes with domain separation.
//!
//! Every hash Meshward computes is `SHA-256(domain || 0x00 || data)` with a distinct ASCII domain
//! per use (see `docs/FORMATS.md`), so a value hashed for one purpose can never be passed off
//! as another.

use core::fmt;

use sha2::{Digest, Sha256};

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};

/// A 32-byte SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// All zeros: stands for "none", e.g. the `last_commit_hash` of a block without a last commit.
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, the form used in JSON and on the command line.
    pub fn to_hex(&self) -> alloc::string::String {
        crate::hex::encode(&self.0)
    }

    /// Parses the lower-case hex of [`Hash::to_hex`]; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Hash> {
        crate::hex::decode_array(s).map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Encode for Hash {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0);
    }
}

impl Decode for Hash {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Hash(r.array("hash")?))
    }
}

/// Incremental domain-separated hasher.
pub struct Hasher(Sha256);

impl Hasher {
    /// Starts a hash of `SHA-256(domain || 0x00 || …)`.
    pub fn new(domain: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(domain);
        h.update([0u8]);
        Hasher(h)
    }

    /// Appends `data` to the hashed input.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    /// The digest of everything appended.
    pub fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

/// `SHA-256(domain || 0x00 || data)`.
pub fn hash(domain: &[u8], data: &[u8]) -> Hash {
    let mut h = Hasher::new(domain);
    h.update(data);
    h.finish()
}

/// The domain strings, in one place so that no two uses share one.
pub mod domain {
    /// Transaction id: the hash of the whole encoded transaction, signatures included.
    pub const TX_ID: &[u8] = b"meshward/tx-id/v1";
    /// Transaction signing: starts the bytes a signer and its co-signers sign ([`crate::tx`]).
    pub const TX_SIGN: &[u8] = b"meshward/tx/v1";
    /// Block hash: the hash of the encoded block header.
    pub const BLOCK_HEADER: &[u8] = b"meshward/block-header/v1";
    /// Consensus vote bytes, signed by validators ([`crate::block::vote_signing_bytes`]).
    pub const VOTE: &[u8] = b"meshward/vote/v1";
    /// Validator-set hash, named in every block header.
    pub const VALIDATOR_SET: &[u8] = b"meshward/validator-set/v1";
    /// Genesis hash, the `prev_hash` of block 1.
    pub const GENESIS: &[u8] = b"meshward/genesis/v1";
    /// A state record's leaf in the state-root tree.
    pub const STATE_RECORD: &[u8] = b"meshward/state-record/v1";
    /// The state root over the count of records and the top of the slot tree.
    pub const STATE_ROOT: &[u8] = b"meshward/state-root/v1";
    /// Envelope commitment: the hash of the whole signed envelope, as anchored on the ledger.
    pub const ENVELOPE: &[u8] = b"meshward/envelope/v1";
    /// What an envelope's sender signs: the hash of everything before the signature.
    pub const ENVELOPE_SIGN: &[u8] = b"meshward/envelope-sig/v1";
    /// Batch root: a Merkle root over many envelope commitments, anchored as one.
    pub const BATCH: &[u8] = b"meshward/batch/v1";
    /// Proof of possession: starts the message a device's two keys sign at enrollment.
    pub const POP_SIGN: &[u8] = b"meshward/pop-sign/v1";
    /// Proof of possession of an X25519 key: the nonce prefix of its XEdDSA-style signature.
    pub const POP_ENC: &[u8] = b"meshward/pop-enc/v1";
    /// Ticket hash: what the ledger keeps of an enrollment ticket's secret.
    pub const TICKET: &[u8] = b"meshward/ticket/v1";
    /// Last-commit hash: a certificate carried in a block, named in the next header.
    pub const LAST_COMMIT: &[u8] = b"meshward/last-commit/v1";
    /// Session id: the first 16 bytes of this hash over a session's encapsulated key.
    pub const SESSION_ID: &[u8] = b"meshward/session-id/v1";
    /// A proposer's signature over a proposal (consensus).
    pub const PROPOSAL: &[u8] = b"meshward/proposal/v1";
    /// A proposer's signature over a streamed block, carried in its last part (consensus).
    pub const PROPOSAL_PARTS: &[u8] = b"meshward/proposal-parts/v1";
    /// A validator's proof that it holds its key, for the consensus network (consensus).
    pub const VALIDATOR_PROOF: &[u8] = b"meshward/validator-proof/v1";
}
