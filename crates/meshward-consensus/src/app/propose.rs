//! Proposing: `GetValue` builds (or reuses) this node's proposal and streams it;
//! `RestreamProposal` sends a held proposal's parts again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use malachitebft_app_channel::app::streaming::StreamMessage;
use malachitebft_app_channel::app::types::core::{Round, Validity};
use malachitebft_app_channel::app::types::LocallyProposedValue;
use malachitebft_app_channel::{Channels, Reply};
use meshward_core::chain;
use tracing::{debug, error, info, warn};

use crate::candidates::Candidate;
use crate::context::{Address, BlockHash, Height, PartInit};
use crate::parts::{sign_and_stream, stream_messages};

use super::{now_ms, App, Ctx};

impl App {
    /// `GetValue`: this node proposes for `height` and `round`.
    pub(super) async fn on_get_value(
        &mut self,
        height: Height,
        round: Round,
        timeout: Duration,
        reply: Reply<LocallyProposedValue<Ctx>>,
        channels: &Channels<Ctx>,
    ) {
        let started = Instant::now();
        let Some(c) = self.propose(height.0, round) else {
            // Without a value to send the reply is dropped: consensus times out the
            // round and moves on, which is all it can do without a block.
            error!(height = height.0, round = %round, "cannot build a proposal");
            return;
        };
        let value = LocallyProposedValue::new(height, round, BlockHash(c.hash));
        if reply.send(value).is_err() {
            error!(height = height.0, round = %round, "get value reply dropped");
        }
        if started.elapsed() > timeout {
            warn!(height = height.0, round = %round, elapsed_ms = started.elapsed().as_millis() as u64, "proposal built after the propose timeout");
        }
        #[cfg(feature = "byzantine")]
        if self.cfg.byzantine == Some(crate::byzantine::ByzantineMode::Withhold) {
            warn!(height = height.0, round = %round, "BYZANTINE: withholding the proposal's parts");
            return;
        }
        if let Some(signer) = &self.signer {
            let msgs = sign_and_stream(signer, c.init.clone(), &c.block, &c.hash);
            self.publish(channels, msgs).await;
        }
    }

    /// Builds (or returns the already built) proposal of this node for `height` and `round`.
    fn propose(&mut self, height: u64, round: Round) -> Option<Candidate> {
        if let Some(c) = self
            .candidates
            .for_round(height, round)
            .find(|c| c.init.proposer == self.me && c.init.pol_round.is_nil())
        {
            debug!(height, round = %round, "reusing the proposal built before");
            return Some(c.clone());
        }
        // As many as this node can build and the others check within the propose timeout.
        let max_txs = self
            .sizer
            .max_txs(Duration::from_millis(self.cfg.timeouts.propose_ms));
        self.shared
            .proposal_limit
            .store(max_txs as u64, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let candidates = self.mempool.reap(max_txs, self.cfg.max_block_bytes);
        let reaped = candidates.len();
        // Signatures the mempool verified on admission are not verified again.
        let known = self.mempool.verified_keys(&candidates);
        #[allow(unused_mut, reason = "changed only by a Byzantine test validator")]
        let mut proposal = {
            let store = self.read();
            if store.next_height() != height {
                warn!(
                    height,
                    next = store.next_height(),
                    "asked to propose for another height"
                );
                return None;
            }
            let prev_time = self.tip.header.as_ref().map_or(0, |h| h.time_ms);
            let time_ms = now_ms().max(prev_time);
            let last_commit = self
                .tip
                .certificate
                .clone()
                .filter(|c| c.height + 1 == height);
            chain::build_proposal(
                store.state(),
                store.tip_hash(),
                height,
                time_ms,
                self.me.0,
                candidates,
                known,
                last_commit,
                max_txs,
                self.cfg.max_block_bytes,
            )
        };
        #[cfg(feature = "byzantine")]
        if self.cfg.byzantine == Some(crate::byzantine::ByzantineMode::BadProposal) {
            crate::byzantine::corrupt_block(&mut proposal.block);
            warn!(height, round = %round, "BYZANTINE: proposing a wrong block");
        }
        self.sizer
            .record_build(proposal.block.txs.len(), started.elapsed());
        let hash = proposal.block.hash();
        debug!(height, round = %round, txs = proposal.block.txs.len(), reaped, dropped = proposal.dropped.len(), block = %BlockHash(hash), "proposing");
        let c = Candidate {
            init: PartInit {
                height: Height(height),
                round,
                pol_round: Round::Nil,
                proposer: self.me,
            },
            fin: self
                .signer
                .as_ref()
                .map(|s| s.sign_parts(height, round.as_u32().unwrap_or(0), Round::Nil, &hash))
                .unwrap_or(crate::context::Sig(meshward_core::ids::Signature([0; 64]))),
            block: Arc::new(proposal.block),
            hash,
            validity: Validity::Valid,
            delta: Some(proposal.delta),
            dropped: proposal.dropped.into_iter().map(|(tx, _)| tx).collect(),
        };
        self.candidates.insert(c.clone());
        Some(c)
    }

    /// `RestreamProposal`: streams a held proposal again, for a later round or lagging peers.
    pub(super) async fn on_restream_proposal(
        &self,
        height: Height,
        round: Round,
        valid_round: Round,
        address: Address,
        value_id: BlockHash,
        channels: &Channels<Ctx>,
    ) {
        if let Some(msgs) = self.restream(height.0, round, valid_round, address, value_id) {
            self.publish(channels, msgs).await;
        }
    }

    fn restream(
        &self,
        height: u64,
        round: Round,
        valid_round: Round,
        address: Address,
        value_id: BlockHash,
    ) -> Option<Vec<StreamMessage<crate::context::ProposalPart>>> {
        let Some(c) = self.candidates.find(height, &value_id.0) else {
            debug!(height, round = %round, block = %value_id, "cannot restream: block not held");
            return None;
        };
        let init = PartInit {
            height: Height(height),
            round,
            pol_round: valid_round,
            proposer: address,
        };
        if init == c.init {
            // Someone's proposal as it was streamed: send the same parts again.
            return Some(stream_messages(init, &c.block, c.fin));
        }
        match &self.signer {
            Some(signer) if address == self.me => {
                info!(height, round = %round, valid_round = %valid_round, block = %value_id, "re-proposing locked block");
                Some(sign_and_stream(signer, init, &c.block, &c.hash))
            }
            _ => {
                debug!(height, round = %round, "cannot restream another proposer's parts for this round");
                None
            }
        }
    }
}
