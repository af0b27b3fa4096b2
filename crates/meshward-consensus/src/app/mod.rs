//! The application side of Malachite: one task that owns the consensus state of this node and
//! answers every message the engine sends (`AppMsg`).
//!
//! Every message that carries a reply gets exactly one reply on every path, including errors:
//! a dropped reply stalls consensus without a trace. The only reply held back is the one to
//! `Finalized`, which starts the next height; the cadence rule holds it (in this task's state,
//! never by blocking the loop) until the mempool has a transaction or the idle interval has
//! passed.
//!
//! # Files
//! One file per kind of engine message, as Malachite's `core-consensus/src/handle/` has one per
//! kind of input; `handle` below matches the message and calls that file's function:
//! - `start.rs`: `ConsensusReady` and `StartedRound` (which also checks the proposals kept for
//!   the new height).
//! - `propose.rs`: `GetValue` (this node's proposal) and `RestreamProposal`.
//! - `receive.rs`: `ReceivedProposalPart`: reassembling streamed proposals and checking them.
//! - `decide.rs`: `Decided` (committing the block), `Finalized` (evidence, and the cadence hold
//!   of the next height).
//! - `sync.rs`: `GetDecidedValues`, `GetHistoryMinHeight` and `ProcessSyncedValue`.
//! - `extensions.rs`: `ExtendVote` and `VerifyVoteExtensions` (vote extensions are disabled).
//!
//! This file holds the task itself: its state, set-up, the loop (`run`) and the dispatch.

mod decide;
mod extensions;
mod propose;
mod receive;
mod start;
mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use malachitebft_app_channel::app::engine::host::HeightParams;
use malachitebft_app_channel::app::streaming::StreamMessage;
use malachitebft_app_channel::app::types::ProposedValue;
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use meshward_core::block::{BlockHeader, CommitCertificate};
use meshward_core::state::StateView;
use meshward_core::tx::ValidatorSet as CoreValidatorSet;
use meshward_store::Store;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use crate::candidates::{Candidate, Candidates};
use crate::config::ConsensusConfig;
use crate::context::{Address, BlockHash, MeshwardContext, ValidatorSet};
use crate::parts::{Assembled, PartLimits, Reassembler};
use crate::signing::{MeshwardSigner, MeshwardVerifier};
use crate::{ConsensusEvent, Mempool, SharedStore};

use decide::Held;

type Ctx = MeshwardContext;

/// How often a held `Finalized` reply looks at the mempool.
const CADENCE_POLL: Duration = Duration::from_millis(5);

/// What the handle reads while the task runs.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub height: AtomicU64,
    pub round: AtomicU32,
    pub committed: AtomicU64,
    pub late_rounds: AtomicU64,
    pub proposal_limit: AtomicU64,
    /// Whether this node is in the validator set of the height consensus works on.
    pub is_validator: AtomicBool,
    /// Blocks the store failed to write (disk full, I/O error), not blocks it refused.
    pub store_write_errors: AtomicU64,
}

/// The last committed block: what the next proposal links to and checks against.
#[derive(Debug, Clone)]
struct Tip {
    header: Option<BlockHeader>,
    /// The certificate carried as the next block's `last_commit`.
    certificate: Option<CommitCertificate>,
    /// The validator set that certified the tip block.
    validators: CoreValidatorSet,
}

pub(crate) struct App {
    ctx: Ctx,
    cfg: ConsensusConfig,
    store: SharedStore,
    mempool: Arc<dyn Mempool>,
    signer: Option<MeshwardSigner>,
    verifier: MeshwardVerifier,
    me: Address,
    events: broadcast::Sender<ConsensusEvent>,
    shared: Arc<Shared>,
    parts: Reassembler,
    candidates: Candidates,
    /// Assembled streams for heights above the next one, checked once it is reached.
    pending: Vec<Assembled>,
    tip: Tip,
    /// Heights committed through sync: their `Finalized` reply is not held back.
    synced: BTreeMap<u64, ()>,
    /// A height whose decided block could not be committed.
    commit_failed: Option<u64>,
    /// Whether the last write of a block to the store failed (disk full, I/O error).
    writes_failing: bool,
    height_started: Instant,
    held: Option<Held>,
    /// How large this node's proposals may be (crate::sizing).
    sizer: crate::sizing::BlockSizer,
}

/// Why the application could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A block needed to resume (the tip, or one of the last blocks for proposer history) cannot be
    /// read.
    #[error("cannot read block {height} from the store: {source}")]
    Read {
        /// The height of the block.
        height: u64,
        /// The read error.
        source: meshward_store::ReadError,
    },
    /// A block at or below the store's tip is missing (the height).
    #[error("block {0} is missing from the store")]
    Missing(u64),
    /// The proposals directory ([`crate::ConsensusConfig::proposals_dir`]) cannot be created or
    /// read.
    #[error("cannot open the proposals directory: {0}")]
    Proposals(std::io::Error),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ctx: Ctx,
        cfg: ConsensusConfig,
        store: SharedStore,
        mempool: Arc<dyn Mempool>,
        signer: Option<MeshwardSigner>,
        me: Address,
        events: broadcast::Sender<ConsensusEvent>,
        shared: Arc<Shared>,
    ) -> Result<App, AppError> {
        let verifier = MeshwardVerifier::new(ctx.chain_id());
        let (tip, next_height) = {
            let s = meshward_core::sync::read(&store, "chain store");
            let tip = match s.tip() {
                None => Tip {
                    header: None,
                    certificate: None,
                    validators: s.state().validators().clone(),
                },
                Some((h, _)) => {
                    // The set that certified the tip (the store keeps every set by height).
                    let validators = s
                        .validator_set_at(h)
                        .unwrap_or_else(|| s.state().validators().clone());
                    let cb = s
                        .block(h)
                        .map_err(|source| AppError::Read { height: h, source })?
                        .ok_or(AppError::Missing(h))?;
                    Tip {
                        header: Some(cb.block.header),
                        certificate: Some(cb.certificate),
                        validators,
                    }
                }
            };
            // Proposer history: the last commits carried by the last K blocks.
            let next = s.next_height();
            let from = next.saturating_sub(cfg.proposer_history + 2).max(1);
            for h in from..next {
                let cb = s
                    .block(h)
                    .map_err(|source| AppError::Read { height: h, source })?
                    .ok_or(AppError::Missing(h))?;
                ctx.record_committed(&cb.block);
            }
            (tip, next)
        };
        let candidates =
            Candidates::load(&cfg.proposals_dir(), next_height).map_err(AppError::Proposals)?;
        shared.committed.store(next_height - 1, Ordering::Relaxed);
        let sizer = crate::sizing::BlockSizer::new(cfg.max_block_txs);
        shared
            .proposal_limit
            .store(cfg.max_block_txs as u64, Ordering::Relaxed);
        Ok(App {
            parts: Reassembler::new(PartLimits::for_block_bytes(cfg.max_block_bytes)),
            ctx,
            cfg,
            store,
            mempool,
            signer,
            verifier,
            me,
            events,
            shared,
            candidates,
            pending: Vec::new(),
            tip,
            synced: BTreeMap::new(),
            commit_failed: None,
            writes_failing: false,
            height_started: Instant::now(),
            held: None,
            sizer,
        })
    }

    /// The store's read guard (a poisoned lock aborts: [`meshward_core::sync`]).
    fn read(&self) -> RwLockReadGuard<'_, Store> {
        meshward_core::sync::read(&self.store, "chain store")
    }

    /// The store's write guard: this task is its only writer.
    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        meshward_core::sync::write(&self.store, "chain store")
    }

    fn next_height(&self) -> u64 {
        self.read().next_height()
    }

    /// The parameters of the next height: the validator set in force after the last committed
    /// block (a `ValidatorSetChange` in block `h` rules from `h + 1`), and the timeouts.
    fn height_params(&self) -> HeightParams<Ctx> {
        let core_set = self.read().state().validators().clone();
        let member = core_set.power_of(&self.me.0).is_some();
        if self.shared.is_validator.swap(member, Ordering::Relaxed) != member {
            info!(
                validator = member,
                validators = core_set.validators.len(),
                "this node's place in the validator set changed"
            );
        }
        let set = ValidatorSet::from_core(&core_set);
        HeightParams::new(set, self.cfg.timeouts.to_linear(), None)
    }

    fn emit(&self, e: ConsensusEvent) {
        // No subscriber is fine; a lagging one loses the oldest events.
        let _ = self.events.send(e);
    }

    /// Runs until the engine closes its channel or `stop` fires.
    pub(crate) async fn run(
        mut self,
        mut channels: Channels<Ctx>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                msg = channels.consensus.recv() => match msg {
                    Some(msg) => self.handle(msg, &channels).await,
                    None => {
                        warn!("consensus engine stopped");
                        break;
                    }
                },
                _ = tokio::time::sleep(CADENCE_POLL), if self.held.is_some() => self.check_held(),
            }
        }
        debug!("consensus application stopped");
    }

    async fn publish(
        &self,
        channels: &Channels<Ctx>,
        msgs: Vec<StreamMessage<crate::context::ProposalPart>>,
    ) {
        for m in msgs {
            if channels
                .network
                .send(NetworkMsg::PublishProposalPart(m))
                .await
                .is_err()
            {
                warn!("network closed while publishing a proposal");
                return;
            }
        }
    }

    async fn handle(&mut self, msg: AppMsg<Ctx>, channels: &Channels<Ctx>) {
        match msg {
            AppMsg::ConsensusReady { reply } => self.on_consensus_ready(reply),

            AppMsg::StartedRound {
                height,
                round,
                proposer,
                role,
                reply_value,
            } => self.on_started_round(height, round, proposer, role, reply_value),

            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                self.on_get_value(height, round, timeout, reply, channels)
                    .await
            }

            AppMsg::ExtendVote { reply, .. } => self.on_extend_vote(reply),

            AppMsg::VerifyVoteExtensions {
                extensions, reply, ..
            } => self.on_verify_vote_extensions(extensions, reply),

            AppMsg::ReceivedProposalPart {
                from,
                published_by,
                part,
                reply,
            } => self.on_received_proposal_part(from, published_by, part, reply),

            AppMsg::Decided {
                certificate, reply, ..
            } => self.on_decided(certificate, reply),

            AppMsg::Finalized {
                certificate,
                evidence,
                reply,
                ..
            } => self.finalized(certificate, evidence, reply),

            AppMsg::GetDecidedValues { range, reply } => self.on_get_decided_values(range, reply),

            AppMsg::GetHistoryMinHeight { reply } => self.on_get_history_min_height(reply),

            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => self.on_process_synced_value(height, round, proposer, value_bytes, reply),

            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                address,
                value_id,
            } => {
                self.on_restream_proposal(height, round, valid_round, address, value_id, channels)
                    .await
            }
        }
    }
}

/// The kind of a reported equivocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EquivocationKind {
    /// Two different votes of one type for the same height and round.
    Vote,
    /// Two different proposals for the same height and round.
    Proposal,
}

fn proposed_value(c: &Candidate) -> ProposedValue<Ctx> {
    ProposedValue {
        height: c.init.height,
        round: c.init.round,
        valid_round: c.init.pol_round,
        proposer: c.init.proposer,
        value: BlockHash(c.hash),
        validity: c.validity,
    }
}
