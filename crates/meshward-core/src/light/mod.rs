//! Light-client verification of any final transaction, offline, from the genesis alone.
//!
//! A [`TxProof`] (version 2) carries block 1's header and certificate (which bind the whole
//! genesis), the chain of validator-set handoffs from the genesis set to the set that certified
//! the transaction's block (each a `ValidatorSetChange` proven included in a block certified by
//! the set before it), the signer's key changes, and the transaction with its block header,
//! certificate and Merkle inclusion proof. Version 1 proofs (anchors only) are still read.
//! Nothing in a proof is trusted until it is checked against the genesis.
//!
//! [`TxProof::verify`] checks everything the proof carries (see `docs/FORMATS.md`, Proofs):
//! each block's chain id, validator set and certificate, each transaction's inclusion and
//! signature under the key of its time, the admin authorisation of every admin transaction
//! against the genesis admins, and the order of handoffs and key changes. Each refusal is its own
//! [`VerifyError`]. [`Proven::describe`] says what was proven in words.

use alloc::vec::Vec;

use crate::block::{tx_leaves, BlockHeader, CertError, CertifiedBlock, CommitCertificate};
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::ids::{EncKey, PublicKey};
use crate::merkle::{self, ProofError};
use crate::state::AdminSet;
use crate::tx::{
    pop_message, rotate_message, verify_key_possession, Recipient, Tx, TxBody, ValidatorSet,
    MAX_TX_BYTES,
};

mod describe;
mod envelope;
pub use describe::utc;
pub use envelope::{EnvelopeInclusion, ProvenEnvelope, INCLUSION_VERSION};

/// Proof format version that [`TxProof::build`] writes.
pub const PROOF_VERSION: u8 = 2;
/// The earlier proof format (anchors only, no block 1 and no key changes), still read.
pub const PROOF_VERSION_1: u8 = 1;
/// Most validator-set handoffs in one proof.
pub const MAX_HANDOFFS: usize = 256;
/// Most key changes of one signer in one proof.
pub const MAX_KEY_CHANGES: usize = 256;

/// A transaction proven included in a certified block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    /// The header of the block holding the transaction.
    pub header: BlockHeader,
    /// The certificate of that block.
    pub certificate: CommitCertificate,
    /// The proven transaction (carried as `bytes`, at most [`MAX_TX_BYTES`]).
    pub tx: Tx,
    /// Its Merkle inclusion proof under the header's `tx_root` and `tx_count`.
    pub proof: merkle::Proof,
}

impl Inclusion {
    /// Builds the inclusion of `block.txs[index]`.
    pub fn build(block: &CertifiedBlock, index: usize) -> Option<Inclusion> {
        let leaves = tx_leaves(&block.block.txs);
        Some(Inclusion {
            header: block.block.header.clone(),
            certificate: block.certificate.clone(),
            tx: block.block.txs.get(index)?.clone(),
            proof: merkle::prove(&leaves, index)?,
        })
    }

    /// Checks that the block is on the genesis's chain (and, for block 1, follows the genesis),
    /// that `set` certified it, and that the transaction is in it.
    fn verify(&self, genesis: &Genesis, set: &ValidatorSet) -> Result<(), VerifyError> {
        let height = self.header.height;
        if self.header.chain_id != genesis.chain_id {
            return Err(VerifyError::WrongChain);
        }
        // Block 1 names the genesis hash, which covers the whole genesis (admins and time too).
        if height == 1 && self.header.prev_hash != genesis.hash() {
            return Err(VerifyError::GenesisMismatch);
        }
        if self.header.validator_set_hash != set.hash() {
            return Err(VerifyError::UntrustedValidatorSet { height });
        }
        self.certificate
            .verify(&self.header, set)
            .map_err(|source| VerifyError::Certificate { height, source })?;
        let leaf = merkle::leaf_hash(&self.tx.to_bytes());
        self.proof
            .verify(&leaf, &self.header.tx_root, u64::from(self.header.tx_count))
            .map_err(|source| VerifyError::Inclusion { height, source })
    }

    /// Checks the transaction's own signature under its signer key; `refusal` names the
    /// failure. Returns the signed bytes.
    fn verify_signature(
        &self,
        chain_id: &str,
        refusal: fn(u64, PublicKey) -> VerifyError,
    ) -> Result<Vec<u8>, VerifyError> {
        let msg = self.tx.signing_bytes(chain_id);
        self.tx
            .signer
            .verify(&msg, &self.tx.sig)
            .map_err(|_| refusal(self.header.height, self.tx.signer))?;
        Ok(msg)
    }

    /// Checks that admins of `admins`, at least its threshold, signed the transaction: the
    /// rule the ledger applies to every admin transaction.
    fn verify_admins(&self, admins: &AdminSet, msg: &[u8]) -> Result<(), VerifyError> {
        let height = self.header.height;
        let tx = &self.tx;
        if !admins.contains(&tx.signer) {
            return Err(VerifyError::NotAnAdmin {
                height,
                signer: tx.signer,
            });
        }
        for c in &tx.cosigs {
            if c.key == tx.signer {
                return Err(VerifyError::SignerCosigned { height, key: c.key });
            }
            if !admins.contains(&c.key) {
                return Err(VerifyError::CosignerNotAnAdmin { height, key: c.key });
            }
            c.key
                .verify(msg, &c.sig)
                .map_err(|_| VerifyError::BadCosignature { height, key: c.key })?;
        }
        let have = 1 + tx.cosigs.len();
        let need = usize::from(admins.threshold);
        if have < need {
            return Err(VerifyError::AdminThreshold { height, have, need });
        }
        Ok(())
    }
}

impl Inclusion {
    /// Checks a key change of `account`, whose key before it is `key`, and returns the new key:
    /// its own `RotateKeys`, signed by `key`, or the admins' `Reinstate` of it, signed by the
    /// admins. Either way the new keys must prove possession, as the ledger required.
    fn key_change(
        &self,
        chain_id: &str,
        account: &PublicKey,
        key: &PublicKey,
        admins: &AdminSet,
    ) -> Result<PublicKey, VerifyError> {
        let height = self.header.height;
        let tx = &self.tx;
        let msg = tx.signing_bytes(chain_id);
        let possession = |new_sign: &PublicKey, new_enc: &EncKey, m: &[u8], s1, s2| {
            verify_key_possession(new_sign, new_enc, m, s1, s2)
                .map_err(|_| VerifyError::BadKeyPossession { height })
        };
        match &tx.body {
            TxBody::RotateKeys {
                new_sign,
                new_enc,
                new_sig,
                enc_pop,
            } if tx.signer == *account => {
                key.verify(&msg, &tx.sig)
                    .map_err(|_| VerifyError::BadKeyChangeSignature { height })?;
                if !tx.cosigs.is_empty() {
                    return Err(VerifyError::Cosigned { height });
                }
                let m = rotate_message(chain_id, account, tx.seq, new_sign, new_enc);
                possession(new_sign, new_enc, &m, new_sig, enc_pop)?;
                Ok(*new_sign)
            }
            TxBody::Reinstate {
                device,
                new_sign,
                new_enc,
                pop_sign,
                pop_enc,
            } if device == account => {
                let msg = self.verify_signature(chain_id, |height, signer| {
                    VerifyError::BadSignature { height, signer }
                })?;
                self.verify_admins(admins, &msg)?;
                let m = pop_message(chain_id, new_sign, new_enc);
                possession(new_sign, new_enc, &m, pop_sign, pop_enc)?;
                Ok(*new_sign)
            }
            _ => Err(VerifyError::NotAKeyChange { height }),
        }
    }
}

impl Encode for Inclusion {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.header)
            .put(&self.certificate)
            .bytes(&self.tx.to_bytes())
            .put(&self.proof);
    }
}

impl Decode for Inclusion {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Inclusion {
            header: r.get()?,
            certificate: r.get()?,
            tx: Tx::from_bytes(r.bytes(MAX_TX_BYTES, "transaction")?)?,
            proof: r.get()?,
        })
    }
}

/// Block 1's header and certificate. Block 1's `prev_hash` is the hash of the whole genesis
/// (chain id, time, admins and validators), so a version 2 proof binds all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Block 1's header.
    pub header: BlockHeader,
    /// Block 1's certificate, by the genesis validators.
    pub certificate: CommitCertificate,
}

impl Encode for Origin {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.header).put(&self.certificate);
    }
}

impl Decode for Origin {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Origin {
            header: r.get()?,
            certificate: r.get()?,
        })
    }
}

/// Everything needed to check one final transaction offline, from the genesis alone.
///
/// Version 2 (what [`TxProof::build`] makes) carries block 1 (`origin`), the validator-set
/// handoffs, the signer's key changes and the transaction. Version 1 (still read) carried only
/// the handoffs and an anchor: it decodes with `origin: None` and no key changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxProof {
    /// Block 1's header and certificate; `None` only in a version 1 proof.
    pub origin: Option<Origin>,
    /// `ValidatorSetChange` transactions that lead from the genesis set to the set that
    /// certified the transaction's block, in chain order. Empty while the genesis set still rules.
    pub handoffs: Vec<Inclusion>,
    /// The signer's key changes before the transaction, in chain order: its own `RotateKeys`
    /// and the admins' `Reinstate` of it. Empty in a version 1 proof.
    pub keys: Vec<Inclusion>,
    /// The proven transaction and its block.
    pub tx: Inclusion,
}

impl Encode for TxProof {
    fn encode(&self, w: &mut Writer) {
        match &self.origin {
            Some(origin) => {
                w.u8(PROOF_VERSION)
                    .put(origin)
                    .list(&self.handoffs)
                    .list(&self.keys)
                    .put(&self.tx);
            }
            // A version 1 proof has no key changes to write.
            None => {
                w.u8(PROOF_VERSION_1).list(&self.handoffs).put(&self.tx);
            }
        }
    }
}

impl Decode for TxProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("proof version")? {
            PROOF_VERSION => Ok(TxProof {
                origin: Some(r.get()?),
                handoffs: r.list(MAX_HANDOFFS, "validator handoffs")?,
                keys: r.list(MAX_KEY_CHANGES, "key changes")?,
                tx: r.get()?,
            }),
            PROOF_VERSION_1 => Ok(TxProof {
                origin: None,
                handoffs: r.list(MAX_HANDOFFS, "validator handoffs")?,
                keys: Vec::new(),
                tx: r.get()?,
            }),
            found => Err(DecodeError::UnknownVersion {
                what: "proof",
                found,
                supported: PROOF_VERSION,
            }),
        }
    }
}

/// What a valid proof proves: a transaction, final at a height and time on the genesis's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// Height of the block holding the transaction.
    pub height: u64,
    /// Hash of that block's header.
    pub block_hash: Hash,
    /// That block's time, ms since the Unix epoch (certified by the validators).
    pub block_time_ms: u64,
    /// Position of the transaction in the block, from 0.
    pub tx_index: u64,
    /// The transaction's id.
    pub tx_id: Hash,
    /// The transaction itself (signer, sequence number, co-signers and body).
    pub tx: Tx,
    /// Whether the whole genesis (time and admins too) is bound: always for version 2; for
    /// version 1 only when block 1 is in the proof.
    pub genesis_bound: bool,
    /// The envelope proven to be among the anchor's, when the proof file carries one.
    pub envelope: Option<ProvenEnvelope>,
}

impl Proven {
    /// The anchor's fields, when the proven transaction is an anchor.
    pub fn anchor(&self) -> Option<ProvenAnchor> {
        anchor_of(
            &self.tx,
            self.height,
            self.block_hash,
            self.block_time_ms,
            self.tx_index,
        )
    }
}

/// The anchor's fields of `tx` in the block at `height`, if it is an anchor.
fn anchor_of(
    tx: &Tx,
    height: u64,
    block_hash: Hash,
    block_time_ms: u64,
    tx_index: u64,
) -> Option<ProvenAnchor> {
    let TxBody::Anchor(a) = &tx.body else {
        return None;
    };
    Some(ProvenAnchor {
        height,
        block_hash,
        block_time_ms,
        tx_index,
        sender: tx.signer,
        seq: tx.seq,
        recipient: a.recipient.clone(),
        commitment: a.commitment,
        count: a.count,
        size_bytes: a.size_bytes,
        timestamp_ms: a.timestamp_ms,
    })
}

/// What a valid proof of an anchor proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenAnchor {
    /// Height of the block holding the anchor.
    pub height: u64,
    /// Hash of that block's header.
    pub block_hash: Hash,
    /// That block's time, ms since the Unix epoch (certified by the validators).
    pub block_time_ms: u64,
    /// Position of the anchor in the block, from 0.
    pub tx_index: u64,
    /// The account that signed the anchor.
    pub sender: PublicKey,
    /// The anchor's sequence number in its sender's account.
    pub seq: u64,
    /// Who the anchored envelopes are for.
    pub recipient: Recipient,
    /// The envelope commitment, or the batch root over `count` commitments.
    pub commitment: Hash,
    /// How many envelopes the commitment covers (1 for one envelope).
    pub count: u32,
    /// Total ciphertext bytes covered, as the sender declared.
    pub size_bytes: u64,
    /// The sender's own clock at anchoring, ms since the Unix epoch (its claim, not block time).
    pub timestamp_ms: u64,
}

/// Why a proof does not hold. Each check of [`TxProof::verify`] has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A proven block is for another chain than the genesis.
    #[error("proof is for another chain")]
    WrongChain,
    /// Block 1 is in the proof and its `prev_hash` is not the hash of the genesis given: the
    /// chain started from another genesis (other admins, time, validators or chain id).
    #[error("block 1 does not follow this genesis: its prev_hash is not the genesis hash")]
    GenesisMismatch,
    /// A block is certified by a validator set that the genesis and the handoffs before it do not
    /// lead to.
    #[error("block {height} is certified by a validator set the genesis does not lead to")]
    UntrustedValidatorSet {
        /// The block's height.
        height: u64,
    },
    /// A block's certificate does not hold under the trusted set.
    #[error("certificate of block {height} is invalid: {source}")]
    Certificate {
        /// The block's height.
        height: u64,
        /// Why the certificate fails.
        source: CertError,
    },
    /// The Merkle proof does not put the transaction in its block.
    #[error("transaction is not included in block {height}: {source}")]
    Inclusion {
        /// The block's height.
        height: u64,
        /// Why the inclusion proof fails.
        source: ProofError,
    },
    /// The transaction's signature does not verify under its signer's key at that height (the
    /// account id, or the last key a proven key change gave it). A version 1 proof carries no
    /// key changes, so an anchor signed after its device rotated its keys fails so.
    #[error(
        "signature of the transaction in block {height} does not verify under the key of {signer} at that height"
    )]
    BadSignature {
        /// The block's height.
        height: u64,
        /// The transaction's signer (an account id).
        signer: PublicKey,
    },
    /// A handoff's signature does not verify under its signer key.
    #[error(
        "signature of the handoff in block {height} does not verify under its signer key {signer}"
    )]
    BadHandoffSignature {
        /// The handoff block's height.
        height: u64,
        /// The handoff's signer.
        signer: PublicKey,
    },
    /// A transaction that is not an admin transaction carries co-signatures.
    #[error(
        "the transaction in block {height} carries co-signatures (only admin transactions may)"
    )]
    Cosigned {
        /// The block's height.
        height: u64,
    },
    /// An admin transaction (a handoff, or the proven transaction) is signed by a key that is
    /// not a genesis admin.
    #[error("admin transaction in block {height} is signed by {signer}, not an admin")]
    NotAnAdmin {
        /// The handoff block's height.
        height: u64,
        /// The handoff's signer.
        signer: PublicKey,
    },
    /// An admin transaction's co-signer is the signer itself.
    #[error("admin transaction in block {height} is co-signed by its own signer {key}")]
    SignerCosigned {
        /// The handoff block's height.
        height: u64,
        /// The repeated key.
        key: PublicKey,
    },
    /// An admin transaction's co-signer is not a genesis admin.
    #[error("admin transaction in block {height} is co-signed by {key}, not an admin")]
    CosignerNotAnAdmin {
        /// The handoff block's height.
        height: u64,
        /// The co-signer.
        key: PublicKey,
    },
    /// An admin transaction's co-signature does not verify.
    #[error("co-signature of {key} on the admin transaction in block {height} does not verify")]
    BadCosignature {
        /// The handoff block's height.
        height: u64,
        /// The co-signer.
        key: PublicKey,
    },
    /// An admin transaction has fewer admin signatures than the genesis threshold.
    #[error("admin transaction in block {height} has {have} admin signatures, {need} needed")]
    AdminThreshold {
        /// The handoff block's height.
        height: u64,
        /// Signer plus co-signers.
        have: usize,
        /// The genesis admin threshold.
        need: usize,
    },
    /// A handoff is not a `ValidatorSetChange` transaction.
    #[error("handoff at block {height} is not a validator-set change")]
    NotAHandoff {
        /// The handoff block's height.
        height: u64,
    },
    /// Handoffs are not in increasing (height, index) order, or one is not below the anchor's
    /// block.
    #[error("handoffs are not in increasing height order below the anchor's block")]
    HandoffOrder,
    /// The proven transaction is not an `Anchor` (where an anchor was asked for).
    #[error("the proven transaction is not an anchor")]
    NotAnAnchor,
    /// An envelope inclusion's commitment and path do not lead to the anchor's commitment:
    /// the envelope (any byte of it), its position or its path is not the one anchored.
    #[error("the envelope is not among what the anchor commits to (changed, or another batch)")]
    EnvelopeNotAnchored,
    /// The envelope's sender key is not the key that signed its anchor.
    #[error("the envelope's sender key did not sign the anchor")]
    EnvelopeSender,
    /// A signed envelope's own signature does not verify under its sender's key.
    #[error("the envelope's signature does not verify under its sender's key")]
    EnvelopeSignature,
    /// The proof's block 1 is not at height 1.
    #[error("the proof's first block is at height {height}, not 1")]
    OriginNotBlock1 {
        /// The height it names.
        height: u64,
    },
    /// Key changes are not in increasing (height, index) order, or one is not before the
    /// proven transaction.
    #[error("key changes are not in increasing order before the proven transaction")]
    KeyChangeOrder,
    /// A key change is not a `RotateKeys` by the signer or a `Reinstate` of it.
    #[error("the key change in block {height} is not a key change of the transaction's signer")]
    NotAKeyChange {
        /// The key change's block.
        height: u64,
    },
    /// A `RotateKeys` is not signed by the key the account had then.
    #[error("the key rotation in block {height} does not verify under the account's key then")]
    BadKeyChangeSignature {
        /// The key change's block.
        height: u64,
    },
    /// A key change's new keys do not prove possession (the new key's signature fails).
    #[error("the new keys of the key change in block {height} do not prove possession")]
    BadKeyPossession {
        /// The key change's block.
        height: u64,
    },
    /// A ticket enrollment is not signed by the enrolling device itself.
    #[error("the ticket enrollment in block {height} is not signed by the device itself")]
    TicketSigner {
        /// The block's height.
        height: u64,
    },
}

/// The validator sets a proof's handoffs lead to: `(first height ruled, set)`, in height order.
struct SetHistory(Vec<(u64, ValidatorSet)>);

impl SetHistory {
    /// The set that certifies blocks at `height`.
    fn at(&self, height: u64) -> &ValidatorSet {
        let i = self.0.partition_point(|(from, _)| *from <= height);
        &self.0[i.saturating_sub(1)].1
    }
}

impl TxProof {
    /// Builds a version 2 proof of `block.txs[index]`. `origin` is block 1; `handoffs` lead from
    /// the genesis set to the set that certified `block`; `keys` are the signer's key changes
    /// before it, in chain order.
    pub fn build(
        origin: &CertifiedBlock,
        block: &CertifiedBlock,
        index: usize,
        handoffs: Vec<Inclusion>,
        keys: Vec<Inclusion>,
    ) -> Option<TxProof> {
        Some(TxProof {
            origin: Some(Origin {
                header: origin.block.header.clone(),
                certificate: origin.certificate.clone(),
            }),
            handoffs,
            keys,
            tx: Inclusion::build(block, index)?,
        })
    }

    /// Checks the proof against the genesis: every check listed in `docs/FORMATS.md`, Proofs, in
    /// the order given there. A quorum's certificate is trusted for order and time only: every
    /// signature and authorisation the proof carries is checked too.
    pub fn verify(&self, genesis: &Genesis) -> Result<Proven, VerifyError> {
        let genesis_bound = self.check(genesis)?;
        let hdr = &self.tx.header;
        Ok(Proven {
            height: hdr.height,
            block_hash: hdr.hash(),
            block_time_ms: hdr.time_ms,
            tx_index: self.tx.proof.leaf_index,
            tx_id: self.tx.tx.id(),
            tx: self.tx.tx.clone(),
            genesis_bound,
            envelope: None,
        })
    }

    /// Every check of [`TxProof::verify`]; whether the whole genesis is bound.
    fn check(&self, genesis: &Genesis) -> Result<bool, VerifyError> {
        let chain_id = genesis.chain_id.as_str();
        let tx_at = (self.tx.header.height, self.tx.proof.leaf_index);
        // 1. Block 1, certified by the genesis set, names the hash of the whole genesis.
        if let Some(o) = &self.origin {
            let height = o.header.height;
            if height != 1 {
                return Err(VerifyError::OriginNotBlock1 { height });
            }
            if o.header.chain_id != genesis.chain_id {
                return Err(VerifyError::WrongChain);
            }
            if o.header.prev_hash != genesis.hash() {
                return Err(VerifyError::GenesisMismatch);
            }
            if o.header.validator_set_hash != genesis.validators.hash() {
                return Err(VerifyError::UntrustedValidatorSet { height });
            }
            o.certificate
                .verify(&o.header, &genesis.validators)
                .map_err(|source| VerifyError::Certificate { height, source })?;
        }
        // 2. The handoffs, each certified by the set before it and authorised by the admins.
        // A change takes effect at the next height, so several in one block are all certified
        // by the set before that block, and the last one wins.
        let mut sets = SetHistory(alloc::vec![(1, genesis.validators.clone())]);
        let mut last: Option<(u64, u64)> = None;
        for h in &self.handoffs {
            let at = (h.header.height, h.proof.leaf_index);
            if last.is_some_and(|l| at <= l) || at.0 >= tx_at.0 {
                return Err(VerifyError::HandoffOrder);
            }
            last = Some(at);
            h.verify(genesis, sets.at(at.0))?;
            let TxBody::ValidatorSetChange(set) = &h.tx.body else {
                return Err(VerifyError::NotAHandoff { height: at.0 });
            };
            let msg = h.verify_signature(chain_id, |height, signer| {
                VerifyError::BadHandoffSignature { height, signer }
            })?;
            h.verify_admins(&genesis.admins, &msg)?;
            match sets.0.last_mut() {
                Some(l) if l.0 == at.0 + 1 => l.1 = set.clone(),
                _ => sets.0.push((at.0 + 1, set.clone())),
            }
        }
        // 3. The signer's key changes, each authorised by the key (or admins) of its time.
        let account = self.tx.tx.signer;
        let mut key = account;
        let mut last: Option<(u64, u64)> = None;
        for k in &self.keys {
            let at = (k.header.height, k.proof.leaf_index);
            if last.is_some_and(|l| at <= l) || at >= tx_at {
                return Err(VerifyError::KeyChangeOrder);
            }
            last = Some(at);
            k.verify(genesis, sets.at(at.0))?;
            key = k.key_change(chain_id, &account, &key, &genesis.admins)?;
        }
        // 4. The transaction: included, signed by the signer's key of its time, authorised.
        self.tx.verify(genesis, sets.at(tx_at.0))?;
        let tx = &self.tx.tx;
        let msg = tx.signing_bytes(chain_id);
        key.verify(&msg, &tx.sig)
            .map_err(|_| VerifyError::BadSignature {
                height: tx_at.0,
                signer: account,
            })?;
        if tx.body.is_admin_only() {
            self.tx.verify_admins(&genesis.admins, &msg)?;
        } else if !tx.cosigs.is_empty() {
            return Err(VerifyError::Cosigned { height: tx_at.0 });
        }
        if let TxBody::Enroll(e) = &tx.body {
            if e.ticket.is_some() && tx.signer != e.device {
                return Err(VerifyError::TicketSigner { height: tx_at.0 });
            }
        }
        Ok(self.origin.is_some()
            || self.tx.header.height == 1
            || self.handoffs.iter().any(|h| h.header.height == 1))
    }

    /// Like [`TxProof::verify`], for a proof that must be of an anchor (without copying the
    /// whole transaction, which a firmware need not carry the code for).
    pub fn verify_anchor(&self, genesis: &Genesis) -> Result<ProvenAnchor, VerifyError> {
        self.check(genesis)?;
        let hdr = &self.tx.header;
        anchor_of(
            &self.tx.tx,
            hdr.height,
            hdr.hash(),
            hdr.time_ms,
            self.tx.proof.leaf_index,
        )
        .ok_or(VerifyError::NotAnAnchor)
    }
}

#[cfg(feature = "json")]
pub use proof_file::{ProofFile, ProofFileError};

#[cfg(feature = "json")]
mod proof_file {
    use alloc::string::{String, ToString};

    use serde::{Deserialize, Serialize};

    use super::{EnvelopeInclusion, Proven, TxProof, VerifyError, PROOF_VERSION, PROOF_VERSION_1};
    use crate::codec::{Decode, DecodeError, Encode};
    use crate::genesis::Genesis;
    use crate::tx::TxBody;

    /// The proof file: a readable summary plus the canonical proof bytes. The summary is
    /// checked against what the bytes prove, so no field can be edited on its own. Written as
    /// compact JSON, so that every byte of the file matters.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ProofFile {
        /// Proof file version: 2 (1: an anchor's proof from an earlier release).
        pub version: u8,
        /// The chain the proof is for.
        pub chain_id: String,
        /// Height of the block holding the transaction.
        pub height: u64,
        /// The transaction's kind (`enroll`, `revoke`, `anchor`, ...); version 2 only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
        /// Lower-case hex of the transaction's id (32 bytes); version 2 only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tx: Option<String>,
        /// Lower-case hex of the anchored commitment (32 bytes): anchors only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub commitment: Option<String>,
        /// Lower-case hex of the encoded [`TxProof`].
        pub proof: String,
        /// Lower-case hex of one envelope's commitment inside the anchored batch; with
        /// `inclusion` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub envelope: Option<String>,
        /// Lower-case hex of the encoded [`EnvelopeInclusion`]: that envelope and its path to
        /// the anchor's commitment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub inclusion: Option<String>,
    }

    /// Why a proof file does not hold.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum ProofFileError {
        /// The text is not JSON in the proof file's layout (or has unknown fields).
        #[error("not a proof file: {0}")]
        Json(#[from] serde_json::Error),
        /// The `version` field is neither 1 nor 2, or does not match the proof bytes' version.
        #[error("unsupported proof file version {0} (this build reads versions 1 and 2)")]
        Version(u8),
        /// The file is for another chain than the genesis.
        #[error("proof is for chain {found:?}, the genesis is for {expected:?}")]
        WrongChain {
            /// The genesis's chain id.
            expected: String,
            /// The file's chain id.
            found: String,
        },
        /// The `proof` field is not lower-case hex.
        #[error("proof bytes are not lower-case hex")]
        Hex,
        /// The proof bytes are not a canonical [`TxProof`].
        #[error("proof bytes do not decode: {0}")]
        Decode(#[from] DecodeError),
        /// The proof does not verify against the genesis.
        #[error(transparent)]
        Invalid(#[from] VerifyError),
        /// A summary field (`height`, `kind`, `tx`, `commitment`) differs from what the proof
        /// proves, or the text is not in compact layout (`layout`).
        #[error("the file's {0} does not match what the proof proves")]
        SummaryMismatch(&'static str),
    }

    impl ProofFile {
        /// The proof file for `proof`.
        pub fn new(chain_id: &str, proof: &TxProof) -> ProofFile {
            let tx = &proof.tx.tx;
            let v2 = proof.origin.is_some();
            let commitment = match &tx.body {
                TxBody::Anchor(a) => Some(a.commitment.to_hex()),
                _ => None,
            };
            ProofFile {
                version: if v2 { PROOF_VERSION } else { PROOF_VERSION_1 },
                chain_id: chain_id.to_string(),
                height: proof.tx.header.height,
                kind: v2.then(|| tx.body.name().to_string()),
                tx: v2.then(|| tx.id().to_hex()),
                commitment,
                proof: crate::hex::encode(&proof.to_bytes()),
                envelope: None,
                inclusion: None,
            }
        }

        /// The proof file for an anchor's `proof` that also proves one envelope among the
        /// anchor's (`inclusion`).
        pub fn with_envelope(
            chain_id: &str,
            proof: &TxProof,
            inclusion: &EnvelopeInclusion,
        ) -> ProofFile {
            ProofFile {
                envelope: Some(inclusion.envelope.commitment().to_hex()),
                inclusion: Some(crate::hex::encode(&inclusion.to_bytes())),
                ..ProofFile::new(chain_id, proof)
            }
        }

        /// The proof the file carries, decoded (not checked: see [`ProofFile::verify_json`]).
        pub fn tx_proof(&self) -> Result<TxProof, ProofFileError> {
            let bytes = crate::hex::decode(&self.proof).ok_or(ProofFileError::Hex)?;
            Ok(TxProof::from_bytes(&bytes)?)
        }

        /// The file's text: compact JSON, the only layout [`ProofFile::verify_json`] accepts.
        pub fn to_json(&self) -> String {
            serde_json::to_string(self).expect("proof file has only plain fields")
        }

        /// Parses a proof file and checks it against the genesis.
        pub fn verify_json(text: &str, genesis: &Genesis) -> Result<Proven, ProofFileError> {
            let f: ProofFile = serde_json::from_str(text)?;
            if f.version != PROOF_VERSION && f.version != PROOF_VERSION_1 {
                return Err(ProofFileError::Version(f.version));
            }
            if f.chain_id != genesis.chain_id {
                return Err(ProofFileError::WrongChain {
                    expected: genesis.chain_id.clone(),
                    found: f.chain_id,
                });
            }
            let proof = f.tx_proof()?;
            if (f.version == PROOF_VERSION) != proof.origin.is_some() {
                return Err(ProofFileError::Version(f.version));
            }
            let mut proven = proof.verify(genesis)?;
            // Every summary field is rebuilt from the proof; the file must hold exactly that.
            let want = ProofFile::new(&f.chain_id, &proof);
            if want.height != f.height {
                return Err(ProofFileError::SummaryMismatch("height"));
            }
            if want.kind != f.kind {
                return Err(ProofFileError::SummaryMismatch("kind"));
            }
            if want.tx != f.tx {
                return Err(ProofFileError::SummaryMismatch("tx"));
            }
            if want.commitment != f.commitment {
                return Err(ProofFileError::SummaryMismatch("commitment"));
            }
            if f.version == PROOF_VERSION_1 && proven.anchor().is_none() {
                return Err(VerifyError::NotAnAnchor.into());
            }
            match (&f.envelope, &f.inclusion) {
                (None, None) => {}
                (Some(claimed), Some(inc)) => {
                    let bytes = crate::hex::decode(inc).ok_or(ProofFileError::Hex)?;
                    let inclusion = EnvelopeInclusion::from_bytes(&bytes)?;
                    let (_, env) = proof.verify_envelope(genesis, &inclusion)?;
                    if *claimed != env.commitment.to_hex() {
                        return Err(ProofFileError::SummaryMismatch("envelope"));
                    }
                    proven.envelope = Some(env);
                }
                _ => return Err(ProofFileError::SummaryMismatch("envelope")),
            }
            // Compact JSON is the only accepted form: re-serialising must give the same text,
            // so whitespace or escapes cannot be altered either.
            if f.to_json() != text.strip_suffix('\n').unwrap_or(text) {
                return Err(ProofFileError::SummaryMismatch("layout"));
            }
            Ok(proven)
        }
    }
}
