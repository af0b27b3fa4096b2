//! Receiving proposals: `ReceivedProposalPart` reassembles streamed proposals, and each complete
//! one for the next height is checked (proposer, signature, block) before consensus votes on it.

use std::sync::Arc;

use malachitebft_app_channel::app::streaming::StreamMessage;
use malachitebft_app_channel::app::types::core::Validity;
use malachitebft_app_channel::app::types::{PeerId, ProposedValue};
use malachitebft_app_channel::Reply;
use meshward_core::chain;
use meshward_core::state::StateView;
use meshward_store::Store;
use tracing::{debug, error, warn};

use crate::candidates::Candidate;
use crate::context::{BlockHash, Height, PartInit, ValidatorSet};
use crate::parts::Assembled;
use crate::ConsensusEvent;

use super::{now_ms, proposed_value, App, Ctx};

/// How far ahead of the clock a proposed block's time may be.
const MAX_FUTURE_BLOCK_TIME_MS: u64 = 5_000;
/// Assembled proposals kept for heights not reached yet.
const MAX_PENDING: usize = 16;
/// How many heights ahead an assembled proposal is kept.
const MAX_PENDING_AHEAD: u64 = 2;

impl App {
    /// `ReceivedProposalPart`: answers with the proposed value once its stream is complete and
    /// checked.
    pub(super) fn on_received_proposal_part(
        &mut self,
        from: PeerId,
        published_by: Option<PeerId>,
        part: StreamMessage<crate::context::ProposalPart>,
        reply: Reply<Option<ProposedValue<Ctx>>>,
    ) {
        let value = self.received_part(from, published_by, part);
        if reply.send(value).is_err() {
            error!(peer = %from, "proposal part reply dropped");
        }
    }

    fn received_part(
        &mut self,
        from: PeerId,
        published_by: Option<PeerId>,
        part: StreamMessage<crate::context::ProposalPart>,
    ) -> Option<ProposedValue<Ctx>> {
        let publisher = published_by.unwrap_or(from);
        let assembled = match self.parts.insert(publisher, part) {
            Ok(Some(a)) => a,
            Ok(None) => return None,
            Err(e) => {
                debug!(peer = %from, publisher = %publisher, error = %e, "proposal part refused");
                return None;
            }
        };
        let height = assembled.init.height.0;
        let next = self.next_height();
        if height < next {
            debug!(height, peer = %publisher, "proposal for a committed height ignored");
            return None;
        }
        if height > next {
            if height <= next + MAX_PENDING_AHEAD {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.remove(0);
                }
                debug!(height, round = %assembled.init.round, "proposal for a later height kept");
                self.pending.push(assembled);
            }
            return None;
        }
        self.accept(assembled).map(|c| proposed_value(&c))
    }

    /// Checks pending proposals for `height` once it is the next height to commit.
    pub(super) fn check_pending(&mut self, height: u64) {
        if self.pending.is_empty() || self.next_height() != height {
            return;
        }
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|a| a.init.height.0 == height);
        self.pending = later
            .into_iter()
            .filter(|a| a.init.height.0 > height)
            .collect();
        for a in now {
            self.accept(a);
        }
    }

    /// Checks an assembled proposal for the next height. Returns the candidate if the proposer
    /// really proposed it (signature and round proposer), valid or not; `None` for forgeries.
    fn accept(&mut self, a: Assembled) -> Option<Candidate> {
        let height = a.init.height.0;
        let round = a.init.round;
        let r = round.as_u32()?;
        let store = self.read();
        let set = ValidatorSet::from_core(store.state().validators());
        let expected = {
            use malachitebft_app_channel::app::types::core::Context as _;
            self.ctx
                .select_proposer(&set, Height(height), round)
                .address
        };
        if a.init.proposer != expected {
            warn!(height, round = r, proposer = %a.init.proposer, expected = %expected, peer = %a.publisher, "proposal from a validator that is not the round's proposer");
            return None;
        }
        let (block, hash) = match a.open(&self.verifier) {
            Ok(x) => x,
            Err(e) => {
                warn!(height, round = r, proposer = %a.init.proposer, peer = %a.publisher, error = %e, "proposal refused");
                return None;
            }
        };
        let started = std::time::Instant::now();
        let verdict = self.check_block(&store, &block, &a.init);
        drop(store);
        self.sizer.record_check(block.txs.len(), started.elapsed());
        let (validity, delta) = match verdict {
            Ok(delta) => (Validity::Valid, Some(delta)),
            Err(reason) => {
                warn!(height, round = r, proposer = %a.init.proposer, block = %BlockHash(hash), %reason, "invalid proposal");
                self.emit(ConsensusEvent::ProposalRejected {
                    height,
                    round: r,
                    proposer: a.init.proposer.0,
                    reason: reason.clone(),
                });
                (Validity::Invalid, None)
            }
        };
        debug!(height, round = r, block = %BlockHash(hash), txs = block.txs.len(), valid = validity.is_valid(), "proposal received");
        let c = Candidate {
            init: a.init,
            fin: a.fin,
            block: Arc::new(block),
            hash,
            validity,
            delta,
            dropped: Vec::new(),
        };
        self.candidates.insert(c.clone());
        Some(c)
    }

    /// Everything a validator checks before voting for a block at the next height: time, the
    /// last commit it carries, and (through core) links, body, every transaction and the state
    /// root. Returns the state changes on success.
    fn check_block(
        &self,
        store: &Store,
        block: &meshward_core::block::Block,
        init: &PartInit,
    ) -> Result<meshward_core::state::Delta, String> {
        let h = &block.header;
        let height = store.next_height();
        if init.pol_round.is_nil() && h.proposer != init.proposer.0 {
            return Err("header names another proposer".into());
        }
        if let Some(prev) = &self.tip.header {
            if h.time_ms < prev.time_ms {
                return Err(format!(
                    "block time {} is before the previous block's {}",
                    h.time_ms, prev.time_ms
                ));
            }
        }
        if h.time_ms > now_ms().saturating_add(MAX_FUTURE_BLOCK_TIME_MS) {
            return Err(format!("block time {} is in the future", h.time_ms));
        }
        if block.txs.len() > self.cfg.max_block_txs.max(1) {
            return Err(format!("{} transactions, over the limit", block.txs.len()));
        }
        self.check_last_commit(height, block)?;
        // Signatures this node's mempool verified on admission are not verified again.
        let known = self.mempool.verified_keys(&block.txs);
        chain::check_proposal_known(store.state(), &store.tip_hash(), height, block, known)
            .map_err(|e| e.to_string())
    }

    /// The last commit of a block at `height` must certify the block at `height - 1`.
    pub(super) fn check_last_commit(
        &self,
        height: u64,
        block: &meshward_core::block::Block,
    ) -> Result<(), String> {
        match (&block.last_commit, &self.tip.header) {
            (None, None) => Ok(()),
            (Some(_), None) => Err("the first block carries a last commit".into()),
            (None, Some(_)) => Err("block carries no last commit".into()),
            (Some(c), Some(prev)) => {
                if c.height + 1 != height {
                    return Err("last commit is for another height".into());
                }
                if prev.validator_set_hash != self.tip.validators.hash() {
                    // The set that certified the tip is not known here (restart right after a
                    // validator-set change): the core check of the block still runs.
                    warn!(height, "last commit not checked: certifying set unknown");
                    return Ok(());
                }
                c.verify_with(prev, &self.tip.validators, |k| self.verifier.keys().get(k))
                    .map_err(|e| format!("last commit: {e}"))
            }
        }
    }
}
