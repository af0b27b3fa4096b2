//! Making and checking blocks against the state.
//!
//! [`make_block`] is what a proposer (or a single-process chain builder) does: apply
//! transactions, then fill in the header. [`apply_certified`] is what a node does with a block it
//! did not make (sync, replay, `store verify`): check the header links, the certificate and the
//! body, apply the transactions, and compare the state root.

use alloc::vec::Vec;

use crate::block::{
    last_commit_hash, tx_leaves, Block, BlockHeader, BodyError, CertError, CertifiedBlock,
    CommitCertificate,
};
use crate::codec::Encode;
use crate::hash::Hash;
use crate::ids::PublicKey;
use crate::ledger::{
    apply_with, execute_block, execute_preverified, preverify_rest, ApplyCtx, BlockReject,
};
use crate::merkle;
use crate::state::{Delta, Flushed, Overlay, State, StateView};
use crate::tx::Tx;

/// Applies `txs` to `state` and returns the block that commits to the result, with the changed
/// state records. On rejection the state is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn make_block(
    state: &mut State,
    prev_hash: Hash,
    height: u64,
    time_ms: u64,
    proposer: PublicKey,
    txs: Vec<Tx>,
    last_commit: Option<CommitCertificate>,
    batch: bool,
) -> Result<(Block, Flushed), BlockReject> {
    let validator_set_hash = state.validators().hash();
    execute_block(state, &txs, &ApplyCtx { height, time_ms }, batch)?;
    let flushed = state.flush();
    let header = BlockHeader {
        chain_id: state.chain_id().into(),
        height,
        prev_hash,
        time_ms,
        proposer,
        tx_root: merkle::root_of(&tx_leaves(&txs)),
        tx_count: txs.len() as u32,
        state_root: flushed.root,
        validator_set_hash,
        last_commit_hash: last_commit_hash(&last_commit),
    };
    Ok((
        Block {
            header,
            txs,
            last_commit,
        },
        flushed,
    ))
}

/// Why a certified block does not extend the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The block is for another chain.
    #[error("block is for chain {found:?}, expected {expected:?}")]
    WrongChain {
        /// This chain's id.
        expected: alloc::string::String,
        /// The block's chain id.
        found: alloc::string::String,
    },
    /// The block is not at the next height.
    #[error("block height {found}, expected {expected}")]
    WrongHeight {
        /// The next height of this chain.
        expected: u64,
        /// The block's height.
        found: u64,
    },
    /// The block's `prev_hash` is not the hash of the chain's last block (or the genesis).
    #[error("block does not link to the previous block hash")]
    BrokenLink,
    /// The block's `validator_set_hash` is not the hash of the validator set in force.
    #[error("block names a validator set other than the current one")]
    WrongValidatorSet,
    /// The certificate does not certify the block under the set in force.
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    /// The body does not match the header (count, transaction root, last commit).
    #[error("body: {0}")]
    Body(#[from] BodyError),
    /// A transaction of the block is rejected by the ledger rules.
    #[error("{0}")]
    Rejected(#[from] BlockReject),
    /// The state root after the transactions differs from the header's `state_root`.
    #[error("state root after the block differs from the header's")]
    StateRoot,
}

/// Checks that a header extends the chain in `state`: chain id, height, link to the previous
/// block, and the validator set in force.
fn check_header(
    state: &State,
    prev_hash: &Hash,
    height: u64,
    h: &BlockHeader,
) -> Result<(), ChainError> {
    if h.chain_id != state.chain_id() {
        return Err(ChainError::WrongChain {
            expected: state.chain_id().into(),
            found: h.chain_id.clone(),
        });
    }
    if h.height != height {
        return Err(ChainError::WrongHeight {
            expected: height,
            found: h.height,
        });
    }
    if h.prev_hash != *prev_hash {
        return Err(ChainError::BrokenLink);
    }
    if h.validator_set_hash != state.validators().hash() {
        return Err(ChainError::WrongValidatorSet);
    }
    Ok(())
}

/// Checks a certified block against the chain so far and applies it to `state`.
///
/// On any error before the transactions run, the state is unchanged. A state-root mismatch is
/// reported after the transactions were applied: the caller must discard `state` (a store
/// reopens from disk), since validators certified a block that this node computes differently.
pub fn apply_certified(
    state: &mut State,
    prev_hash: &Hash,
    height: u64,
    cb: &CertifiedBlock,
    batch: bool,
) -> Result<Flushed, ChainError> {
    let h = &cb.block.header;
    check_header(state, prev_hash, height, h)?;
    cb.certificate.verify(h, state.validators())?;
    cb.block.check_body()?;
    execute_block(
        state,
        &cb.block.txs,
        &ApplyCtx {
            height,
            time_ms: h.time_ms,
        },
        batch,
    )?;
    let flushed = state.flush();
    if flushed.root != h.state_root {
        return Err(ChainError::StateRoot);
    }
    Ok(flushed)
}

/// Checks a proposed block against the chain (everything but its own certificate, which does
/// not exist yet): chain id, height, link, validator set, body, and the state root after
/// executing its transactions. `state` is not changed. The previous block's certificate, if
/// the block carries one, is for the caller to verify against the set that signed it.
pub fn check_proposal(
    state: &State,
    prev_hash: &Hash,
    height: u64,
    block: &Block,
    batch: bool,
) -> Result<Delta, ChainError> {
    check_proposal_with(state, prev_hash, height, block, batch.then(Vec::new))
}

/// Like [`check_proposal`] with batch verification, skipping the signatures already verified
/// under the key given in `known` (see [`preverify_rest`]): a validator passes what its
/// mempool checked on admission.
pub fn check_proposal_known(
    state: &State,
    prev_hash: &Hash,
    height: u64,
    block: &Block,
    known: Vec<Option<PublicKey>>,
) -> Result<Delta, ChainError> {
    check_proposal_with(state, prev_hash, height, block, Some(known))
}

/// [`check_proposal`]: with `known`, signatures are batch-verified except those it vouches for;
/// without, each is verified on its own as its transaction is applied.
fn check_proposal_with(
    state: &State,
    prev_hash: &Hash,
    height: u64,
    block: &Block,
    known: Option<Vec<Option<PublicKey>>>,
) -> Result<Delta, ChainError> {
    let h = &block.header;
    // The cheap header and body checks come before any signature is verified.
    check_header(state, prev_hash, height, h)?;
    block.check_body()?;
    let pre = known.map_or_else(Vec::new, |k| preverify_rest(state, &block.txs, k));
    let ctx = ApplyCtx {
        height,
        time_ms: h.time_ms,
    };
    let delta = execute_preverified(state, &block.txs, &ctx, &pre)?;
    if state.root_after(&delta) != h.state_root {
        return Err(ChainError::StateRoot);
    }
    Ok(delta)
}

/// A block a proposer built, with what executing it changes and what it left out.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The proposed block, its header filled in (state root included).
    pub block: Block,
    /// The state changes to apply once the block is decided.
    pub delta: Delta,
    /// Candidates dropped because the ledger rejected them (stale sequence numbers, revoked
    /// senders, …), with the reason: the mempool should forget them.
    pub dropped: Vec<(Tx, crate::ledger::Reject)>,
}

/// Builds a block from candidate transactions without changing `state`: each candidate is
/// applied on top of the ones kept before it, and dropped if the ledger rejects it. At most
/// `max_txs` transactions and `max_tx_bytes` encoded bytes are kept. `known` gives, per
/// candidate, the key its signature was already verified under, if any (see
/// [`preverify_rest`]); the others are verified in one batch.
#[allow(clippy::too_many_arguments)]
pub fn build_proposal(
    state: &State,
    prev_hash: Hash,
    height: u64,
    time_ms: u64,
    proposer: PublicKey,
    candidates: Vec<Tx>,
    known: Vec<Option<PublicKey>>,
    last_commit: Option<CommitCertificate>,
    max_txs: usize,
    max_tx_bytes: usize,
) -> Proposal {
    let ctx = ApplyCtx { height, time_ms };
    let validator_set_hash = state.validators().hash();
    let pre = preverify_rest(state, &candidates, known);
    let mut overlay = Overlay::new(state);
    let mut txs = Vec::new();
    let mut leaves = Vec::new();
    let mut dropped = Vec::new();
    let mut bytes = 0usize;
    for (tx, k) in candidates.into_iter().zip(pre) {
        if txs.len() >= max_txs {
            break;
        }
        let encoded = tx.to_bytes();
        if bytes + encoded.len() > max_tx_bytes {
            // A smaller transaction further on may still fit.
            continue;
        }
        match apply_with(&overlay, &tx, &ctx, k.as_ref()) {
            Ok(delta) => {
                overlay.push(delta);
                bytes += encoded.len();
                leaves.push(merkle::leaf_hash(&encoded));
                txs.push(tx);
            }
            Err(reason) => dropped.push((tx, reason)),
        }
    }
    let delta = overlay.into_delta();
    let state_root = state.root_after(&delta);
    let header = BlockHeader {
        chain_id: state.chain_id().into(),
        height,
        prev_hash,
        time_ms,
        proposer,
        tx_root: merkle::root_of(&leaves),
        tx_count: txs.len() as u32,
        state_root,
        validator_set_hash,
        last_commit_hash: last_commit_hash(&last_commit),
    };
    Proposal {
        block: Block {
            header,
            txs,
            last_commit,
        },
        delta,
        dropped,
    }
}
