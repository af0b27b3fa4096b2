//! Transactions: what changes the ledger.
//!
//! Every transaction names a signer account and that account's next sequence number, and is
//! signed over `domain || chain id || type tag || signer || seq || body` (see
//! [`Tx::signing_bytes`]), so a signature is valid on one chain, for one type, once. Admin
//! transactions add co-signatures from other admin keys to reach the k-of-n threshold; co-signers
//! sign the very same bytes. Co-signatures are sorted by key, so a transaction has exactly one
//! encoding and one id.

use alloc::vec::Vec;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{self, domain, Hash};
use crate::ids::{Keypair, PublicKey, SignKey, Signature};

/// Transaction format version.
pub const TX_VERSION: u8 = 1;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;
/// Most groups one device can belong to.
pub const MAX_GROUPS_PER_DEVICE: usize = 16;
/// Most co-signatures on one transaction.
pub const MAX_COSIGS: usize = 16;
/// Longest revocation reason, in bytes.
pub const MAX_REASON: usize = 256;
/// Most allow rules in a policy.
pub const MAX_POLICY_RULES: usize = 1024;
/// Most validators in a set.
pub const MAX_VALIDATORS: usize = 128;
/// Most members a group key can be sealed to in one transaction.
pub const MAX_GROUP_MEMBERS: usize = 1024;
/// Longest sealed group key (HPKE ciphertext of a 32-byte key plus tag, with room to spare).
pub const MAX_SEALED_KEY: usize = 128;
/// Longest chain id, in bytes.
pub const MAX_CHAIN_ID: usize = 64;
/// Largest encoded transaction we accept from anyone.
pub const MAX_TX_BYTES: usize = 256 * 1024;

mod body;
mod types;

pub use body::*;
pub use types::*;

/// An admin's co-signature on a transaction another admin sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoSig {
    /// The co-signing admin's key.
    pub key: PublicKey,
    /// Its signature over the same [`Tx::signing_bytes`] as the signer's.
    pub sig: Signature,
}

impl Encode for CoSig {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.key).put(&self.sig);
    }
}

impl Decode for CoSig {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CoSig {
            key: r.get()?,
            sig: r.get()?,
        })
    }
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// The account whose sequence number this transaction uses: a device's id, an admin's or a
    /// validator's key.
    pub signer: PublicKey,
    /// Must be the signer's last sequence number plus one.
    pub seq: u64,
    /// What the transaction does.
    pub body: TxBody,
    /// The signer's signature over [`Tx::signing_bytes`], made with the account's current key.
    pub sig: Signature,
    /// Further admin signatures over the same bytes, sorted by key.
    pub cosigs: Vec<CoSig>,
}

impl Tx {
    /// Builds and signs a transaction. `key` is the signer account's current signing key.
    pub fn sign(chain_id: &str, signer: PublicKey, key: &SignKey, seq: u64, body: TxBody) -> Tx {
        let msg = signing_bytes(chain_id, &signer, seq, &body);
        Tx {
            signer,
            seq,
            sig: key.sign(&msg),
            body,
            cosigs: Vec::new(),
        }
    }

    /// Adds a co-signature from another admin key, keeping co-signatures sorted.
    pub fn cosign(&mut self, chain_id: &str, key: &SignKey) {
        let sig = key.sign(&self.signing_bytes(chain_id));
        let k = key.public();
        match self.cosigs.binary_search_by(|c| c.key.cmp(&k)) {
            Ok(i) => self.cosigs[i].sig = sig,
            Err(i) => self.cosigs.insert(i, CoSig { key: k, sig }),
        }
    }

    /// The bytes the signer and every co-signer sign: domain, chain id, type tag, signer, seq,
    /// body.
    pub fn signing_bytes(&self, chain_id: &str) -> Vec<u8> {
        signing_bytes(chain_id, &self.signer, self.seq, &self.body)
    }

    /// The transaction id: a hash over the whole encoding, signatures included.
    pub fn id(&self) -> Hash {
        hash::hash(domain::TX_ID, &self.to_bytes())
    }

    fn decode_inner(r: &mut Reader<'_>, nested: bool) -> Result<Tx, DecodeError> {
        r.version(TX_VERSION, "transaction")?;
        let signer = r.get()?;
        let seq = r.u64("sequence number")?;
        let tag = r.u8("transaction type")?;
        let body = TxBody::decode_fields(tag, r, nested)?;
        let sig = r.get()?;
        let cosigs: Vec<CoSig> = r.list(MAX_COSIGS, "co-signatures")?;
        if !cosigs.windows(2).all(|w| w[0].key < w[1].key) {
            return Err(DecodeError::Invalid {
                what: "co-signatures (must be sorted by key and unique)",
            });
        }
        Ok(Tx {
            signer,
            seq,
            body,
            sig,
            cosigs,
        })
    }

    fn decode_nested(r: &mut Reader<'_>) -> Result<Tx, DecodeError> {
        let tx = Tx::decode_inner(r, true)?;
        if !matches!(tx.body, TxBody::Anchor(_)) {
            return Err(DecodeError::Invalid {
                what: "evidence transaction (must be an anchor)",
            });
        }
        Ok(tx)
    }

    /// Decodes a transaction, rejecting anything larger than [`MAX_TX_BYTES`].
    pub fn decode_bytes(bytes: &[u8]) -> Result<Tx, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLong {
                what: "transaction",
                len: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        Tx::from_bytes(bytes)
    }
}

/// Most transactions in one list ([`encode_tx_list`]).
pub const MAX_TX_LIST: usize = 4096;

/// A list of transactions as one byte string: `u32` count, then each transaction as `u32`
/// length and its canonical bytes. What `POST /v1/txs` takes and what one gossip message
/// carries. `txs` are canonical transaction encodings; at most [`MAX_TX_LIST`] of them.
pub fn encode_tx_list<B: AsRef<[u8]>>(txs: &[B]) -> Vec<u8> {
    let total: usize = txs.iter().map(|t| t.as_ref().len() + 4).sum();
    let mut w = Writer::with_capacity(total + 4);
    w.len(txs.len());
    for t in txs {
        w.bytes(t.as_ref());
    }
    w.into_bytes()
}

/// Decodes a list written by [`encode_tx_list`], refusing more than `max` transactions (and
/// more than [`MAX_TX_LIST`]), any transaction that does not decode canonically, and trailing
/// bytes.
pub fn decode_tx_list(bytes: &[u8], max: usize) -> Result<Vec<Tx>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.len(max.min(MAX_TX_LIST), "transactions")?;
    let mut txs = Vec::with_capacity(n.min(r.remaining() / 64));
    for _ in 0..n {
        txs.push(Tx::decode_bytes(r.bytes(MAX_TX_BYTES, "transaction")?)?);
    }
    r.finish()?;
    Ok(txs)
}

/// `TX_SIGN domain || chain id || tag || signer || seq || body`.
pub fn signing_bytes(chain_id: &str, signer: &PublicKey, seq: u64, body: &TxBody) -> Vec<u8> {
    let mut w = Writer::with_capacity(256);
    w.raw(domain::TX_SIGN)
        .str(chain_id)
        .u8(body.tag())
        .put(signer)
        .u64(seq);
    body.encode_fields(&mut w);
    w.into_bytes()
}

impl Encode for Tx {
    fn encode(&self, w: &mut Writer) {
        w.u8(TX_VERSION)
            .put(&self.signer)
            .u64(self.seq)
            .u8(self.body.tag());
        self.body.encode_fields(w);
        w.put(&self.sig).list(&self.cosigs);
    }
}

impl Decode for Tx {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Tx::decode_inner(r, false)
    }
}

/// Builds a self-signed enrollment body: the device proves it holds both keys.
pub fn enroll_body(
    chain_id: &str,
    keys: &Keypair,
    groups: Vec<GroupName>,
    ticket: Option<[u8; 32]>,
) -> TxBody {
    let msg = pop_message(chain_id, &keys.id(), &keys.enc_key());
    TxBody::Enroll(Enroll {
        device: keys.id(),
        enc_key: keys.enc_key(),
        groups: canonical_groups(groups),
        ticket,
        pop_sign: keys.sign.sign(&msg),
        pop_enc: keys.enc.sign_possession(&msg),
    })
}

/// Builds a `Reinstate` body for `device` under the new keys `new`, which prove possession as
/// in an enrollment. The admins sign the transaction.
pub fn reinstate_body(chain_id: &str, device: &PublicKey, new: &Keypair) -> TxBody {
    let msg = pop_message(chain_id, &new.id(), &new.enc_key());
    TxBody::Reinstate {
        device: *device,
        new_sign: new.id(),
        new_enc: new.enc_key(),
        pop_sign: new.sign.sign(&msg),
        pop_enc: new.enc.sign_possession(&msg),
    }
}

/// Builds a `RotateKeys` body: the new keys sign the rotation for `account` at `seq`.
pub fn rotate_body(chain_id: &str, account: &PublicKey, seq: u64, new: &Keypair) -> TxBody {
    let msg = rotate_message(chain_id, account, seq, &new.id(), &new.enc_key());
    TxBody::RotateKeys {
        new_sign: new.id(),
        new_enc: new.enc_key(),
        new_sig: new.sign.sign(&msg),
        enc_pop: new.enc.sign_possession(&msg),
    }
}
