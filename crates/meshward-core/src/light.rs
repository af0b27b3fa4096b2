//! Light-client verification of anchors, offline, from the genesis alone.
//!
//! An [`AnchorProof`] carries a block header, its commit certificate, the validator set that
//! signed it, the anchor transaction and its Merkle inclusion proof. If the validator set is not
//! the genesis set, the proof also carries the chain of validator-set handoffs: each one a
//! `ValidatorSetChange` transaction proven included in a block certified by the set before it.
//! Nothing in the proof is trusted until it is checked against the genesis.
//!
//! [`AnchorProof::verify`] checks everything the proof carries (see `docs/FORMATS.md`, Anchor
//! proofs): each block's chain id, validator set and certificate, each transaction's inclusion
//! and signature, each handoff's admin authorisation against the genesis admins, the handoffs'
//! order, and block 1's link to the genesis hash when block 1 is in the proof. Each refusal is
//! its own [`VerifyError`].

use alloc::vec::Vec;

use crate::block::{tx_leaves, BlockHeader, CertError, CertifiedBlock, CommitCertificate};
use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::ids::PublicKey;
use crate::merkle::{self, ProofError};
use crate::state::AdminSet;
use crate::tx::{Recipient, Tx, TxBody, ValidatorSet, MAX_TX_BYTES};

/// Proof format version.
pub const PROOF_VERSION: u8 = 1;
/// Most validator-set handoffs in one proof.
pub const MAX_HANDOFFS: usize = 256;

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

/// Everything needed to check an anchor offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorProof {
    /// `ValidatorSetChange` transactions that lead from the genesis set to the set that
    /// certified the anchor's block, in chain order. Empty while the genesis set still rules.
    pub handoffs: Vec<Inclusion>,
    /// The anchor transaction and its block.
    pub anchor: Inclusion,
}

impl Encode for AnchorProof {
    fn encode(&self, w: &mut Writer) {
        w.u8(PROOF_VERSION).list(&self.handoffs).put(&self.anchor);
    }
}

impl Decode for AnchorProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(PROOF_VERSION, "anchor proof")?;
        Ok(AnchorProof {
            handoffs: r.list(MAX_HANDOFFS, "validator handoffs")?,
            anchor: r.get()?,
        })
    }
}

/// What a valid proof proves.
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

/// Why a proof does not hold. Each check of [`AnchorProof::verify`] has its own variant.
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
    /// The anchor's signature does not verify under its signer key. This is also what an
    /// anchor signed after its device rotated its keys gives: a version 1 proof does not carry
    /// the rotation, so such an anchor cannot be checked offline.
    #[error(
        "signature of the anchor in block {height} does not verify under its signer key {signer}"
    )]
    BadAnchorSignature {
        /// The block's height.
        height: u64,
        /// The anchor's signer (the device's account id).
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
    /// An anchor carries co-signatures; only admin transactions may.
    #[error("the anchor in block {height} carries co-signatures (only admin transactions may)")]
    AnchorCosigned {
        /// The block's height.
        height: u64,
    },
    /// A handoff is signed by a key that is not a genesis admin.
    #[error("handoff in block {height} is signed by {signer}, not an admin")]
    NotAnAdmin {
        /// The handoff block's height.
        height: u64,
        /// The handoff's signer.
        signer: PublicKey,
    },
    /// A handoff's co-signer is the signer itself.
    #[error("handoff in block {height} is co-signed by its own signer {key}")]
    SignerCosigned {
        /// The handoff block's height.
        height: u64,
        /// The repeated key.
        key: PublicKey,
    },
    /// A handoff's co-signer is not a genesis admin.
    #[error("handoff in block {height} is co-signed by {key}, not an admin")]
    CosignerNotAnAdmin {
        /// The handoff block's height.
        height: u64,
        /// The co-signer.
        key: PublicKey,
    },
    /// A handoff's co-signature does not verify.
    #[error("co-signature of {key} on the handoff in block {height} does not verify")]
    BadCosignature {
        /// The handoff block's height.
        height: u64,
        /// The co-signer.
        key: PublicKey,
    },
    /// A handoff has fewer admin signatures than the genesis threshold.
    #[error("handoff in block {height} has {have} admin signatures, {need} needed")]
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
    /// The proven transaction is not an `Anchor`.
    #[error("the proven transaction is not an anchor")]
    NotAnAnchor,
}

impl AnchorProof {
    /// Builds a proof for `block.txs[index]`; `handoffs` lead from the genesis set to the
    /// set that certified `block`.
    pub fn build(
        block: &CertifiedBlock,
        index: usize,
        handoffs: Vec<Inclusion>,
    ) -> Option<AnchorProof> {
        Some(AnchorProof {
            handoffs,
            anchor: Inclusion::build(block, index)?,
        })
    }

    /// Checks the proof against the genesis: every check listed in `docs/FORMATS.md`, Anchor
    /// proofs, in the order given there.
    pub fn verify(&self, genesis: &Genesis) -> Result<ProvenAnchor, VerifyError> {
        let chain_id = genesis.chain_id.as_str();
        let mut trusted = genesis.validators.clone();
        // A change takes effect at the next height, so several changes in one block are all
        // certified by the set in force before that block, and the last one wins.
        let mut last: Option<(u64, u64)> = None;
        let mut block_set = trusted.clone();
        for h in &self.handoffs {
            let at = (h.header.height, h.proof.leaf_index);
            if last.is_some_and(|l| at <= l) || at.0 >= self.anchor.header.height {
                return Err(VerifyError::HandoffOrder);
            }
            if last.map(|l| l.0) != Some(at.0) {
                block_set = trusted.clone();
            }
            last = Some(at);
            h.verify(genesis, &block_set)?;
            let TxBody::ValidatorSetChange(set) = &h.tx.body else {
                return Err(VerifyError::NotAHandoff {
                    height: h.header.height,
                });
            };
            let msg = h.verify_signature(chain_id, |height, signer| {
                VerifyError::BadHandoffSignature { height, signer }
            })?;
            h.verify_admins(&genesis.admins, &msg)?;
            trusted = set.clone();
        }
        self.anchor.verify(genesis, &trusted)?;
        let hdr = &self.anchor.header;
        let TxBody::Anchor(a) = &self.anchor.tx.body else {
            return Err(VerifyError::NotAnAnchor);
        };
        if !self.anchor.tx.cosigs.is_empty() {
            return Err(VerifyError::AnchorCosigned { height: hdr.height });
        }
        self.anchor.verify_signature(chain_id, |height, signer| {
            VerifyError::BadAnchorSignature { height, signer }
        })?;
        Ok(ProvenAnchor {
            height: hdr.height,
            block_hash: hdr.hash(),
            block_time_ms: hdr.time_ms,
            tx_index: self.anchor.proof.leaf_index,
            sender: self.anchor.tx.signer,
            seq: self.anchor.tx.seq,
            recipient: a.recipient.clone(),
            commitment: a.commitment,
            count: a.count,
            size_bytes: a.size_bytes,
            timestamp_ms: a.timestamp_ms,
        })
    }
}

#[cfg(feature = "json")]
pub use proof_file::{ProofFile, ProofFileError};

#[cfg(feature = "json")]
mod proof_file {
    use alloc::string::{String, ToString};

    use serde::{Deserialize, Serialize};

    use super::{AnchorProof, ProvenAnchor, VerifyError, PROOF_VERSION};
    use crate::codec::{Decode, DecodeError, Encode};
    use crate::genesis::Genesis;
    use crate::hash::Hash;

    /// The proof file: a readable summary plus the canonical proof bytes. The summary is
    /// checked against what the bytes prove, so no field can be edited on its own. Written as
    /// compact JSON, so that every byte of the file matters.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ProofFile {
        /// Proof file version: 1.
        pub version: u8,
        /// The chain the proof is for.
        pub chain_id: String,
        /// Height of the block holding the anchor.
        pub height: u64,
        /// Lower-case hex of the anchored commitment (32 bytes).
        pub commitment: String,
        /// Lower-case hex of the encoded [`AnchorProof`].
        pub proof: String,
    }

    /// Why a proof file does not hold.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum ProofFileError {
        /// The text is not JSON in the proof file's layout (or has unknown fields).
        #[error("not a proof file: {0}")]
        Json(#[from] serde_json::Error),
        /// The `version` field is not 1.
        #[error("unsupported proof file version {0} (this build reads version 1)")]
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
        /// The proof bytes are not a canonical [`AnchorProof`].
        #[error("proof bytes do not decode: {0}")]
        Decode(#[from] DecodeError),
        /// The proof does not verify against the genesis.
        #[error("{0}")]
        Invalid(#[from] VerifyError),
        /// A summary field (`height`, `commitment`) differs from what the proof proves, or the text
        /// is not in compact layout (`layout`).
        #[error("the file's {0} does not match what the proof proves")]
        SummaryMismatch(&'static str),
    }

    impl ProofFile {
        /// The proof file for `proof`; `None` if the proven transaction is not an anchor.
        pub fn new(chain_id: &str, proof: &AnchorProof) -> Option<ProofFile> {
            let crate::tx::TxBody::Anchor(a) = &proof.anchor.tx.body else {
                return None;
            };
            Some(ProofFile {
                version: PROOF_VERSION,
                chain_id: chain_id.to_string(),
                height: proof.anchor.header.height,
                commitment: a.commitment.to_hex(),
                proof: crate::hex::encode(&proof.to_bytes()),
            })
        }

        /// The file's text: compact JSON, the only layout [`ProofFile::verify_json`] accepts.
        pub fn to_json(&self) -> String {
            serde_json::to_string(self).expect("proof file has only plain fields")
        }

        /// Parses a proof file and checks it against the genesis.
        pub fn verify_json(text: &str, genesis: &Genesis) -> Result<ProvenAnchor, ProofFileError> {
            let f: ProofFile = serde_json::from_str(text)?;
            if f.version != PROOF_VERSION {
                return Err(ProofFileError::Version(f.version));
            }
            if f.chain_id != genesis.chain_id {
                return Err(ProofFileError::WrongChain {
                    expected: genesis.chain_id.clone(),
                    found: f.chain_id,
                });
            }
            let bytes = crate::hex::decode(&f.proof).ok_or(ProofFileError::Hex)?;
            let proof = AnchorProof::from_bytes(&bytes)?;
            let proven = proof.verify(genesis)?;
            if proven.height != f.height {
                return Err(ProofFileError::SummaryMismatch("height"));
            }
            if Hash::from_hex(&f.commitment) != Some(proven.commitment) {
                return Err(ProofFileError::SummaryMismatch("commitment"));
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
