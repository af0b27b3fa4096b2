//! Deciding: `Decided` commits the decided block with its certificate; `Finalized` reports
//! evidence and starts the next height, held back by the cadence rule while the mempool is empty.

use std::sync::atomic::Ordering;
use std::time::Instant;

use malachitebft_app_channel::app::consensus::MisbehaviorEvidence;
use malachitebft_app_channel::app::engine::host::Next;
use malachitebft_app_channel::app::types::core::{CommitCertificate as EngineCertificate, Round};
use malachitebft_app_channel::Reply;
use meshward_core::block::CertifiedBlock;
use meshward_core::state::StateView;
use meshward_core::tx::Tx;
use tracing::{debug, error, warn};

use crate::cert::to_core_certificate;
use crate::context::{BlockHash, Height};
use crate::ConsensusEvent;

use super::{App, Ctx, EquivocationKind, Tip};

/// While the store cannot be written, how long a height waits before it is restarted.
const WRITE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// A `Finalized` reply held back by the cadence rule.
pub(super) struct Held {
    reply: tokio::sync::oneshot::Sender<Next<Ctx>>,
    next: Next<Ctx>,
    height: u64,
    /// When this height's hold first saw a pending transaction (the window's start when the
    /// mempool cannot say when its oldest transaction arrived).
    first_pending: Option<Instant>,
}

impl App {
    /// `Decided`: commits the decided block.
    pub(super) fn on_decided(&mut self, certificate: EngineCertificate<Ctx>, reply: Reply<()>) {
        self.decided(&certificate);
        if reply.send(()).is_err() {
            error!(height = certificate.height.0, "decided reply dropped");
        }
    }

    fn decided(&mut self, certificate: &EngineCertificate<Ctx>) {
        let height = certificate.height.0;
        let hash = certificate.value_id.0;
        let core_cert = to_core_certificate(certificate);
        let tip = self.read().tip();
        {
            if let Some((h, tip_hash)) = tip {
                if h >= height {
                    if h == height && tip_hash == hash {
                        debug!(height, "decided block already committed");
                        self.commit_failed = None;
                    } else {
                        // Two different blocks decided at one height cannot happen with fewer
                        // than 1/3 faulty validators: stop rather than diverge.
                        assert!(
                            h > height,
                            "decided block {hash} at height {height} differs from the stored block {tip_hash}"
                        );
                    }
                    return;
                }
            }
        }
        let Some(c) = self.candidates.find(height, &hash).cloned() else {
            error!(height, block = %BlockHash(hash), "decided block is not held; waiting for sync");
            self.commit_failed = Some(height);
            return;
        };
        let cb = CertifiedBlock {
            block: (*c.block).clone(),
            certificate: core_cert,
        };
        match self.commit(cb, c.delta, &c.dropped, certificate.round) {
            Ok(()) => self.commit_failed = None,
            Err(e) => {
                // A failed write is logged by `commit`.
                if matches!(
                    e,
                    CommitError::Store(meshward_store::ApplyError::Rejected { .. })
                ) {
                    error!(height, block = %BlockHash(hash), error = %e, "cannot commit decided block");
                }
                self.commit_failed = Some(height);
            }
        }
    }

    /// Stores a certified block (with its state changes if already computed, else by full
    /// re-execution), then updates the proposer history, the mempool and subscribers.
    pub(super) fn commit(
        &mut self,
        cb: CertifiedBlock,
        delta: Option<meshward_core::state::Delta>,
        dropped: &[Tx],
        round: Round,
    ) -> Result<(), CommitError> {
        let height = cb.block.header.height;
        let hash = cb.block.hash();
        let validators_before;
        let written = {
            let mut store = self.write();
            validators_before = store.state().validators().clone();
            match delta {
                Some(delta) => store.commit_decided(&cb, delta),
                None => store.apply_block(&cb),
            }
        };
        if let Err(e) = written {
            if !matches!(e, meshward_store::ApplyError::Rejected { .. }) {
                self.shared
                    .store_write_errors
                    .fetch_add(1, Ordering::Relaxed);
                // A full disk fails every height: one line at error says so, the rest are at
                // debug; the metric counts them all.
                if self.writes_failing {
                    debug!(height, error = %e, "decided block not written");
                } else {
                    error!(height, error = %e, "cannot write a decided block: this node stops \
                        committing until its store can be written (free space, then restart it)");
                }
                self.writes_failing = true;
            }
            return Err(e.into());
        }
        self.writes_failing = false;
        self.ctx.record_committed(&cb.block);
        let r = round.as_u32().unwrap_or(0);
        self.sizer.record_decided(r);
        if r > 0 {
            self.shared.late_rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.tip = Tip {
            header: Some(cb.block.header.clone()),
            certificate: Some(cb.certificate.clone()),
            validators: validators_before,
        };
        self.shared.committed.store(height, Ordering::Relaxed);
        self.candidates.prune_through(height);
        self.parts.prune_below(height + 1);
        self.mempool.on_committed(&cb, dropped);
        debug!(height, round = %round, block = %BlockHash(hash), txs = cb.block.txs.len(), "block committed");
        self.emit(ConsensusEvent::Committed {
            height,
            hash,
            round: round.as_u32().unwrap_or(0),
            txs: cb.block.txs.len(),
            time_ms: cb.block.header.time_ms,
            proposer: cb.block.header.proposer,
        });
        Ok(())
    }

    pub(super) fn finalized(
        &mut self,
        certificate: EngineCertificate<Ctx>,
        evidence: MisbehaviorEvidence<Ctx>,
        reply: tokio::sync::oneshot::Sender<Next<Ctx>>,
    ) {
        let height = certificate.height.0;
        self.report_evidence(height, &evidence);
        let committed = self.commit_failed != Some(height)
            && self.read().tip().is_some_and(|(h, _)| h >= height);
        if !committed && self.writes_failing {
            // The store cannot be written (a full disk): restarting at once would decide the
            // same block again and fail again, in a loop. Try again later.
            debug!(
                height,
                "decided block not written; restarting the height later"
            );
            let next = Next::Restart(Height(height), self.height_params());
            tokio::spawn(async move {
                tokio::time::sleep(WRITE_RETRY).await;
                let _ = reply.send(next);
            });
            return;
        }
        if !committed {
            warn!(height, "decided block not committed; restarting the height");
            self.height_started = Instant::now();
            if reply
                .send(Next::Restart(Height(height), self.height_params()))
                .is_err()
            {
                error!(height, "finalized reply dropped");
            }
            return;
        }
        // More precommits may have arrived since `Decided`: carry the fullest certificate as
        // the next block's last commit, which gives proposer skipping the most signers.
        let fuller = to_core_certificate(&certificate);
        if let Some(c) = &self.tip.certificate {
            if c.height == height
                && c.block_hash == fuller.block_hash
                && fuller.signatures.len() > c.signatures.len()
            {
                self.tip.certificate = Some(fuller);
            }
        }
        let next = Next::Start(Height(height + 1), self.height_params());
        let via_sync = self.synced.remove(&height).is_some();
        self.synced = self.synced.split_off(&height);
        let mut held = Held {
            reply,
            next,
            height,
            first_pending: None,
        };
        if via_sync || self.cadence_ready(&mut held) {
            self.start_next(held);
            return;
        }
        // The cadence rule holds the next height (crate::cadence).
        debug!(
            height,
            pending = self.mempool.len(),
            "holding the next height"
        );
        self.held = Some(held);
    }

    /// Whether the cadence rule starts the next height now.
    fn cadence_ready(&self, held: &mut Held) -> bool {
        let now = Instant::now();
        let pending = self.mempool.len();
        if pending > 0 && held.first_pending.is_none() {
            held.first_pending = Some(now);
        }
        let oldest = match (self.mempool.oldest_pending(), held.first_pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        matches!(
            crate::cadence::next_start(&self.cfg, now, self.height_started, pending, oldest),
            crate::cadence::Start::Now
        )
    }

    fn start_next(&mut self, held: Held) {
        debug!(height = held.height + 1, "starting next height");
        self.height_started = Instant::now();
        if held.reply.send(held.next).is_err() {
            error!(
                height = held.height,
                "finalized reply dropped by the engine"
            );
        }
    }

    fn report_evidence(&self, height: u64, evidence: &MisbehaviorEvidence<Ctx>) {
        for (addr, list) in evidence.votes.iter() {
            warn!(height, validator = %addr, count = list.len(), "validator double-voted");
            self.emit(ConsensusEvent::Equivocation {
                height,
                validator: addr.0,
                kind: EquivocationKind::Vote,
                evidence: list
                    .first()
                    .and_then(|(x, y)| validator_evidence(x, y))
                    .map(Box::new),
            });
        }
        for (addr, list) in evidence.proposals.iter() {
            warn!(height, validator = %addr, count = list.len(), "validator double-proposed");
            self.emit(ConsensusEvent::Equivocation {
                height,
                validator: addr.0,
                kind: EquivocationKind::Proposal,
                evidence: None,
            });
        }
    }

    /// Polled while a height is held: starts it once the cadence rule says so.
    pub(super) fn check_held(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        if self.cadence_ready(&mut held) {
            self.start_next(held);
        } else {
            self.held = Some(held);
        }
    }
}

/// Why a block was not committed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CommitError {
    #[error("{0}")]
    Store(#[from] meshward_store::ApplyError),
}

/// The ledger's form of a double vote Malachite saw: two signed votes of one validator, kind,
/// height and round for different values, in canonical order. `None` if they are not that.
fn validator_evidence(
    x: &malachitebft_core_types::SignedVote<Ctx>,
    y: &malachitebft_core_types::SignedVote<Ctx>,
) -> Option<meshward_core::tx::ValidatorEvidence> {
    use malachitebft_core_types::{NilOrVal, VoteType};
    use meshward_core::block::VoteKind;
    use meshward_core::tx::SignedVoteValue;
    let (vx, vy) = (&x.message, &y.message);
    if vx.validator != vy.validator
        || vx.height != vy.height
        || vx.round != vy.round
        || vx.vote_type != vy.vote_type
    {
        return None;
    }
    let value = |v: &NilOrVal<BlockHash>| match v {
        NilOrVal::Nil => None,
        NilOrVal::Val(h) => Some(h.0),
    };
    let mut pair = [
        SignedVoteValue {
            value: value(&vx.value),
            sig: x.signature.0,
        },
        SignedVoteValue {
            value: value(&vy.value),
            sig: y.signature.0,
        },
    ];
    pair.sort_by_key(|v| v.value);
    let [a, b] = pair;
    if a.value == b.value {
        return None;
    }
    Some(meshward_core::tx::ValidatorEvidence {
        validator: vx.validator.0,
        kind: match vx.vote_type {
            VoteType::Prevote => VoteKind::Prevote,
            VoteType::Precommit => VoteKind::Precommit,
        },
        height: vx.height.0,
        round: vx.round.as_u32()?,
        a,
        b,
    })
}
