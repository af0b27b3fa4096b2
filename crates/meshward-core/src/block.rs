//! Blocks, votes and commit certificates.
//!
//! A block's hash commits to its header only; the header commits to the transactions (Merkle
//! root and count), the state after them, the validator set that certifies the block, and the
//! previous block's certificate (its "last commit", which proposer selection reads). A
//! certificate holds precommit signatures over [`vote_signing_bytes`] from more than 2/3 of the
//! voting power, so a light client checks it with this crate alone.

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{self, domain, Hash};
use crate::ids::{KeyError, PublicKey, SignKey, Signature, VerifyingKey};
use crate::merkle;
use crate::tx::{Tx, ValidatorSet, MAX_CHAIN_ID, MAX_TX_BYTES, MAX_VALIDATORS};

/// Block format version.
pub const BLOCK_VERSION: u8 = 1;
/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 65_536;
/// Largest encoded block.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024 * 1024;

/// What a block's hash commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// The chain this block belongs to (at most [`MAX_CHAIN_ID`] bytes).
    pub chain_id: String,
    /// Height, from 1 (the genesis has no block).
    pub height: u64,
    /// Hash of the previous header; the genesis hash for height 1.
    pub prev_hash: Hash,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The validator that proposed the block.
    pub proposer: PublicKey,
    /// Merkle root over the encoded transactions.
    pub tx_root: Hash,
    /// Number of transactions in the block.
    pub tx_count: u32,
    /// State root after applying this block.
    pub state_root: Hash,
    /// Hash of the validator set that certifies this block.
    pub validator_set_hash: Hash,
    /// Hash of the previous block's certificate carried in this block; zero at height 1.
    pub last_commit_hash: Hash,
}

impl BlockHeader {
    /// The block hash: the hash of this header's encoding (the consensus value).
    pub fn hash(&self) -> Hash {
        hash::hash(domain::BLOCK_HEADER, &self.to_bytes())
    }
}

impl Encode for BlockHeader {
    fn encode(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION)
            .str(&self.chain_id)
            .u64(self.height)
            .put(&self.prev_hash)
            .u64(self.time_ms)
            .put(&self.proposer)
            .put(&self.tx_root)
            .u32(self.tx_count)
            .put(&self.state_root)
            .put(&self.validator_set_hash)
            .put(&self.last_commit_hash);
    }
}

impl Decode for BlockHeader {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(BLOCK_VERSION, "block header")?;
        Ok(BlockHeader {
            chain_id: r.string(MAX_CHAIN_ID, "chain id")?,
            height: r.u64("height")?,
            prev_hash: r.get()?,
            time_ms: r.u64("block time")?,
            proposer: r.get()?,
            tx_root: r.get()?,
            tx_count: r.u32("transaction count")?,
            state_root: r.get()?,
            validator_set_hash: r.get()?,
            last_commit_hash: r.get()?,
        })
    }
}

/// One validator's precommit signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSig {
    /// The validator's consensus key.
    pub validator: PublicKey,
    /// Its precommit signature over [`vote_signing_bytes`].
    pub sig: Signature,
}

impl Encode for CommitSig {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.validator).put(&self.sig);
    }
}

impl Decode for CommitSig {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CommitSig {
            validator: r.get()?,
            sig: r.get()?,
        })
    }
}

/// The vote kinds we sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VoteKind {
    /// The first vote of a round.
    Prevote = 1,
    /// The second vote of a round; a certificate is made of precommits.
    Precommit = 2,
}

/// The bytes a validator signs for a vote: domain, chain id, kind, height, round and the block
/// hash (absent for a nil vote).
pub fn vote_signing_bytes(
    chain_id: &str,
    kind: VoteKind,
    height: u64,
    round: u32,
    block_hash: Option<&Hash>,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.raw(domain::VOTE)
        .str(chain_id)
        .u8(kind as u8)
        .u64(height)
        .u32(round);
    match block_hash {
        None => w.u8(0),
        Some(h) => w.u8(1).put(h),
    };
    w.into_bytes()
}

/// Precommits from more than 2/3 of the voting power for one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitCertificate {
    /// Height of the certified block.
    pub height: u64,
    /// Consensus round in which the block was decided.
    pub round: u32,
    /// Hash of the certified block's header.
    pub block_hash: Hash,
    /// Sorted by validator key, one per validator.
    pub signatures: Vec<CommitSig>,
}

/// Why a certificate does not certify a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate is for another height than the block.
    #[error("certificate is for height {cert}, block is at {block}")]
    WrongHeight {
        /// The certificate's height.
        cert: u64,
        /// The block's height.
        block: u64,
    },
    /// The certificate is for another block hash at the same height.
    #[error("certificate is for another block")]
    WrongBlock,
    /// A signer is not in the validator set that certifies the block.
    #[error("signer {0} is not in the validator set")]
    UnknownValidator(PublicKey),
    /// Signatures are not sorted by validator key, or one validator signed twice.
    #[error("signatures are not sorted by validator, or a validator signed twice")]
    NotCanonical,
    /// A validator's precommit signature does not verify.
    #[error("signature of validator {0} does not verify")]
    BadSignature(PublicKey),
    /// The signers hold at most 2/3 of the set's voting power.
    #[error("signers hold {signed} of {total} voting power; more than 2/3 is needed")]
    InsufficientPower {
        /// Voting power of the signers.
        signed: u64,
        /// Voting power of the whole set.
        total: u64,
    },
}

impl CommitCertificate {
    /// Signs a precommit for `header` with each key: what a test or a single-process chain
    /// builder uses; validators sign their own votes through consensus.
    pub fn sign(chain_id: &str, header: &BlockHeader, round: u32, keys: &[&SignKey]) -> Self {
        let block_hash = header.hash();
        let msg = vote_signing_bytes(
            chain_id,
            VoteKind::Precommit,
            header.height,
            round,
            Some(&block_hash),
        );
        let mut signatures: Vec<CommitSig> = keys
            .iter()
            .map(|k| CommitSig {
                validator: k.public(),
                sig: k.sign(&msg),
            })
            .collect();
        signatures.sort_by_key(|s| s.validator);
        signatures.dedup_by(|a, b| a.validator == b.validator);
        CommitCertificate {
            height: header.height,
            round,
            block_hash,
            signatures,
        }
    }

    /// Checks that validators in `set` holding more than 2/3 of its power precommitted to
    /// `header`.
    pub fn verify(&self, header: &BlockHeader, set: &ValidatorSet) -> Result<(), CertError> {
        self.verify_with(header, set, PublicKey::verifying_key)
    }

    /// [`CommitCertificate::verify`] with the validators' keys from `key_of`, so a caller that
    /// keeps decompressed, checked keys (a validator checks a certificate at every height)
    /// skips the decompression and torsion check of each.
    pub fn verify_with(
        &self,
        header: &BlockHeader,
        set: &ValidatorSet,
        key_of: impl Fn(&PublicKey) -> Result<VerifyingKey, KeyError>,
    ) -> Result<(), CertError> {
        if self.height != header.height {
            return Err(CertError::WrongHeight {
                cert: self.height,
                block: header.height,
            });
        }
        if self.block_hash != header.hash() {
            return Err(CertError::WrongBlock);
        }
        if !self
            .signatures
            .windows(2)
            .all(|w| w[0].validator < w[1].validator)
        {
            return Err(CertError::NotCanonical);
        }
        let msg = vote_signing_bytes(
            &header.chain_id,
            VoteKind::Precommit,
            self.height,
            self.round,
            Some(&self.block_hash),
        );
        let mut signed: u64 = 0;
        for s in &self.signatures {
            let power = set
                .power_of(&s.validator)
                .ok_or(CertError::UnknownValidator(s.validator))?;
            key_of(&s.validator)
                .and_then(|vk| crate::ids::verify_with(&vk, &msg, &s.sig))
                .map_err(|_| CertError::BadSignature(s.validator))?;
            signed = signed.saturating_add(power);
        }
        if !set.is_quorum(signed) {
            return Err(CertError::InsufficientPower {
                signed,
                total: set.total_power(),
            });
        }
        Ok(())
    }

    /// The last-commit hash: what the next block's header carries as `last_commit_hash`.
    pub fn hash(&self) -> Hash {
        hash::hash(domain::LAST_COMMIT, &self.to_bytes())
    }

    /// The validators who signed.
    pub fn signers(&self) -> impl Iterator<Item = &PublicKey> {
        self.signatures.iter().map(|s| &s.validator)
    }
}

impl Encode for CommitCertificate {
    fn encode(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION)
            .u64(self.height)
            .u32(self.round)
            .put(&self.block_hash)
            .list(&self.signatures);
    }
}

impl Decode for CommitCertificate {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(BLOCK_VERSION, "commit certificate")?;
        Ok(CommitCertificate {
            height: r.u64("certificate height")?,
            round: r.u32("certificate round")?,
            block_hash: r.get()?,
            signatures: r.list(MAX_VALIDATORS, "certificate signatures")?,
        })
    }
}

/// A block: header, transactions, and the previous block's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header, which the block hash commits to.
    pub header: BlockHeader,
    /// The transactions, in order (at most [`MAX_BLOCK_TXS`]).
    pub txs: Vec<Tx>,
    /// The previous block's certificate; `None` at height 1.
    pub last_commit: Option<CommitCertificate>,
}

/// Why a block's body does not match its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The header's transaction count differs from the body's.
    #[error("header says {header} transactions, body has {body}")]
    TxCount {
        /// The count in the header.
        header: u32,
        /// The number of transactions in the body.
        body: usize,
    },
    /// The Merkle root of the body's transactions differs from the header's `tx_root`.
    #[error("transaction root does not match the header")]
    TxRoot,
    /// The last commit's hash differs from the header's `last_commit_hash`.
    #[error("last commit does not match the header")]
    LastCommit,
}

/// The Merkle leaf hashes of encoded transactions.
pub fn tx_leaves(txs: &[Tx]) -> Vec<Hash> {
    txs.iter()
        .map(|t| merkle::leaf_hash(&t.to_bytes()))
        .collect()
}

/// The header field for a last commit.
pub fn last_commit_hash(c: &Option<CommitCertificate>) -> Hash {
    c.as_ref().map_or(Hash::ZERO, |c| c.hash())
}

impl Block {
    /// The block hash: the hash of its header.
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Checks that the transactions and last commit are the ones the header commits to.
    pub fn check_body(&self) -> Result<(), BodyError> {
        if self.header.tx_count as usize != self.txs.len() {
            return Err(BodyError::TxCount {
                header: self.header.tx_count,
                body: self.txs.len(),
            });
        }
        if merkle::root_of(&tx_leaves(&self.txs)) != self.header.tx_root {
            return Err(BodyError::TxRoot);
        }
        if last_commit_hash(&self.last_commit) != self.header.last_commit_hash {
            return Err(BodyError::LastCommit);
        }
        Ok(())
    }

    /// Decodes a block, rejecting anything over [`MAX_BLOCK_BYTES`].
    pub fn decode_bytes(bytes: &[u8]) -> Result<Block, DecodeError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLong {
                what: "block",
                len: bytes.len(),
                max: MAX_BLOCK_BYTES,
            });
        }
        Block::from_bytes(bytes)
    }
}

impl Encode for Block {
    fn encode(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION).put(&self.header).len(self.txs.len());
        for tx in &self.txs {
            // Each transaction is length-prefixed so a reader can skip or bound it.
            w.bytes(&tx.to_bytes());
        }
        w.option(&self.last_commit);
    }
}

impl Decode for Block {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(BLOCK_VERSION, "block")?;
        let header: BlockHeader = r.get()?;
        let n = r.len(MAX_BLOCK_TXS, "block transactions")?;
        let mut txs = Vec::with_capacity(n.min(r.remaining() / 64));
        for _ in 0..n {
            txs.push(Tx::from_bytes(r.bytes(MAX_TX_BYTES, "transaction")?)?);
        }
        Ok(Block {
            header,
            txs,
            last_commit: r.option("last commit")?,
        })
    }
}

/// A block with the certificate that finalised it: what the store keeps and sync sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedBlock {
    /// The certified block.
    pub block: Block,
    /// Precommits from more than 2/3 of the power of the block's validator set, for this block.
    pub certificate: CommitCertificate,
}

impl Encode for CertifiedBlock {
    fn encode(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION).put(&self.block).put(&self.certificate);
    }
}

impl Decode for CertifiedBlock {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(BLOCK_VERSION, "certified block")?;
        Ok(CertifiedBlock {
            block: r.get()?,
            certificate: r.get()?,
        })
    }
}

impl CertifiedBlock {
    /// Decodes a certified block, rejecting anything over [`MAX_BLOCK_BYTES`].
    pub fn decode_bytes(bytes: &[u8]) -> Result<CertifiedBlock, DecodeError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLong {
                what: "block",
                len: bytes.len(),
                max: MAX_BLOCK_BYTES,
            });
        }
        CertifiedBlock::from_bytes(bytes)
    }
}
