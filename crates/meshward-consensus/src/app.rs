//! The application side of Malachite: one task that owns the consensus state of this node and
//! answers every message the engine sends (`AppMsg`).
//!
//! Every message that carries a reply gets exactly one reply on every path, including errors:
//! a dropped reply stalls consensus without a trace. The only reply held back is the one to
//! `Finalized`, which starts the next height; the cadence rule holds it (in this task's state,
//! never by blocking the loop) until the mempool has a transaction or the idle interval has
//! passed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use malachitebft_app_channel::app::consensus::MisbehaviorEvidence;
use malachitebft_app_channel::app::engine::host::{HeightParams, Next, SyncedValueOutcome};
use malachitebft_app_channel::app::streaming::StreamMessage;
use malachitebft_app_channel::app::types::core::{
    CommitCertificate as EngineCertificate, Round, Validity,
};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::{LocallyProposedValue, PeerId, ProposedValue};
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use meshward_core::block::{BlockHeader, CertifiedBlock, CommitCertificate};
use meshward_core::chain;
use meshward_core::ids::PublicKey;
use meshward_core::state::StateView;
use meshward_core::tx::{Tx, ValidatorSet as CoreValidatorSet};
use meshward_store::Store;
use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, warn};

use crate::candidates::{Candidate, Candidates};
use crate::cert::{to_core_certificate, to_engine_certificate};
use crate::codec::MAX_SYNC_VALUES;
use crate::config::ConsensusConfig;
use crate::context::{Address, BlockHash, Height, MeshwardContext, PartInit, ValidatorSet};
use crate::parts::{sign_and_stream, stream_messages, Assembled, PartLimits, Reassembler};
use crate::signing::{MeshwardSigner, MeshwardVerifier};
use crate::{ConsensusEvent, Mempool, SharedStore};

type Ctx = MeshwardContext;

/// How far ahead of the clock a proposed block's time may be.
const MAX_FUTURE_BLOCK_TIME_MS: u64 = 5_000;
/// Assembled proposals kept for heights not reached yet.
const MAX_PENDING: usize = 16;
/// How many heights ahead an assembled proposal is kept.
const MAX_PENDING_AHEAD: u64 = 2;
/// How often a held `Finalized` reply looks at the mempool.
const CADENCE_POLL: Duration = Duration::from_millis(5);
/// Most bytes of decided values returned for one sync request (the engine trims further).
const MAX_SYNC_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// What the handle reads while the task runs.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub height: AtomicU64,
    pub round: AtomicU32,
    pub committed: AtomicU64,
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

/// A `Finalized` reply held back by the cadence rule.
struct Held {
    reply: tokio::sync::oneshot::Sender<Next<Ctx>>,
    next: Next<Ctx>,
    deadline: Instant,
    height: u64,
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
    height_started: Instant,
    held: Option<Held>,
}

/// Why the application could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    #[error("store lock poisoned (a thread panicked while writing it)")]
    Poisoned,
    #[error("cannot read block {height} from the store: {source}")]
    Read {
        height: u64,
        source: meshward_store::ReadError,
    },
    #[error("block {0} is missing from the store")]
    Missing(u64),
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
            let s = store.read().map_err(|_| AppError::Poisoned)?;
            let validators = s.state().validators().clone();
            let tip = match s.tip() {
                None => Tip {
                    header: None,
                    certificate: None,
                    validators,
                },
                Some((h, _)) => {
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
                ctx.record_committed(h, &last_commit_signers(&cb));
            }
            (tip, next)
        };
        let candidates =
            Candidates::load(&cfg.proposals_dir(), next_height).map_err(AppError::Proposals)?;
        shared.committed.store(next_height - 1, Ordering::Relaxed);
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
            height_started: Instant::now(),
            held: None,
        })
    }

    fn read(&self) -> Option<RwLockReadGuard<'_, Store>> {
        match self.store.read() {
            Ok(g) => Some(g),
            Err(_) => {
                error!("store lock poisoned");
                None
            }
        }
    }

    fn write(&self) -> Option<RwLockWriteGuard<'_, Store>> {
        match self.store.write() {
            Ok(g) => Some(g),
            Err(_) => {
                error!("store lock poisoned");
                None
            }
        }
    }

    fn next_height(&self) -> u64 {
        self.read().map_or(0, |s| s.next_height())
    }

    fn height_params(&self) -> HeightParams<Ctx> {
        let set = self
            .read()
            .map(|s| ValidatorSet::from_core(s.state().validators()))
            .unwrap_or_else(|| ValidatorSet::from_core(&self.tip.validators));
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

    fn check_held(&mut self) {
        let ready = match &self.held {
            None => return,
            Some(h) => Instant::now() >= h.deadline || !self.mempool.is_empty(),
        };
        if ready {
            if let Some(h) = self.held.take() {
                debug!(height = h.height + 1, "starting next height");
                self.height_started = Instant::now();
                if h.reply.send(h.next).is_err() {
                    error!(height = h.height, "finalized reply dropped by the engine");
                }
            }
        }
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
            AppMsg::ConsensusReady { reply } => {
                let h = self.next_height();
                info!(height = h, "consensus ready");
                self.height_started = Instant::now();
                self.shared.height.store(h, Ordering::Relaxed);
                if reply.send((Height(h), self.height_params())).is_err() {
                    error!("consensus ready reply dropped");
                }
            }

            AppMsg::StartedRound {
                height,
                round,
                proposer,
                role,
                reply_value,
            } => {
                debug!(height = height.0, round = %round, proposer = %proposer, ?role, "round started");
                self.shared.height.store(height.0, Ordering::Relaxed);
                self.shared
                    .round
                    .store(round.as_u32().unwrap_or(0), Ordering::Relaxed);
                if let Some(r) = round.as_u32().filter(|r| *r > 0) {
                    info!(height = height.0, round = r, proposer = %proposer, "round timed out, next round");
                    self.emit(ConsensusEvent::RoundTimeout {
                        height: height.0,
                        round: r - 1,
                    });
                }
                self.check_pending(height.0);
                let values: Vec<ProposedValue<Ctx>> = self
                    .candidates
                    .for_round(height.0, round)
                    .map(proposed_value)
                    .collect();
                if reply_value.send(values).is_err() {
                    error!(height = height.0, round = %round, "started round reply dropped");
                }
            }

            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
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
                if let Some(signer) = &self.signer {
                    let msgs = sign_and_stream(signer, c.init.clone(), &c.block, &c.hash);
                    self.publish(channels, msgs).await;
                }
            }

            AppMsg::ExtendVote { reply, .. } => {
                if reply.send(None).is_err() {
                    error!("extend vote reply dropped");
                }
            }

            AppMsg::VerifyVoteExtensions {
                extensions, reply, ..
            } => {
                // Extensions are disabled (the engine never asks); accept, as the engine expects.
                let verdicts = extensions.into_iter().map(|(a, _)| (a, Ok(()))).collect();
                if reply.send(verdicts).is_err() {
                    error!("verify vote extensions reply dropped");
                }
            }

            AppMsg::ReceivedProposalPart {
                from,
                published_by,
                part,
                reply,
            } => {
                let value = self.received_part(from, published_by, part);
                if reply.send(value).is_err() {
                    error!(peer = %from, "proposal part reply dropped");
                }
            }

            AppMsg::Decided {
                certificate, reply, ..
            } => {
                self.decided(&certificate);
                if reply.send(()).is_err() {
                    error!(height = certificate.height.0, "decided reply dropped");
                }
            }

            AppMsg::Finalized {
                certificate,
                evidence,
                reply,
                ..
            } => self.finalized(certificate, evidence, reply),

            AppMsg::GetDecidedValues { range, reply } => {
                let values = self.decided_values(range.start().0, range.end().0);
                if reply.send(values).is_err() {
                    error!("decided values reply dropped");
                }
            }

            AppMsg::GetHistoryMinHeight { reply } => {
                // Every block since the genesis is kept.
                let min = if self.next_height() > 1 { 1 } else { 0 };
                if reply.send(Height(min)).is_err() {
                    error!("history min height reply dropped");
                }
            }

            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let outcome = self.synced_value(height.0, round, proposer, value_bytes);
                if reply.send(outcome).is_err() {
                    error!(height = height.0, "synced value reply dropped");
                }
            }

            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                address,
                value_id,
            } => {
                if let Some(msgs) = self.restream(height.0, round, valid_round, address, value_id) {
                    self.publish(channels, msgs).await;
                }
            }
        }
    }

    // --- Proposing ------------------------------------------------------------------------------

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
        let candidates = self
            .mempool
            .reap(self.cfg.max_block_txs, self.cfg.max_block_bytes);
        let reaped = candidates.len();
        // Signatures the mempool verified on admission are not verified again.
        let known = self.mempool.verified_keys(&candidates);
        let proposal = {
            let store = self.read()?;
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
                self.cfg.max_block_txs,
                self.cfg.max_block_bytes,
            )
        };
        let hash = proposal.block.hash();
        info!(height, round = %round, txs = proposal.block.txs.len(), reaped, dropped = proposal.dropped.len(), block = %BlockHash(hash), "proposing");
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

    // --- Receiving proposals --------------------------------------------------------------------

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
    fn check_pending(&mut self, height: u64) {
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
        let store = self.read()?;
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
        let verdict = self.check_block(&store, &block, &a.init);
        drop(store);
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
    fn check_last_commit(
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
                c.verify(prev, &self.tip.validators)
                    .map_err(|e| format!("last commit: {e}"))
            }
        }
    }

    // --- Committing -------------------------------------------------------------------------------

    fn decided(&mut self, certificate: &EngineCertificate<Ctx>) {
        let height = certificate.height.0;
        let hash = certificate.value_id.0;
        let core_cert = to_core_certificate(certificate);
        let tip = self.read().and_then(|s| s.tip());
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
                error!(height, block = %BlockHash(hash), error = %e, "cannot commit decided block");
                self.commit_failed = Some(height);
            }
        }
    }

    /// Stores a certified block (with its state changes if already computed, else by full
    /// re-execution), then updates the proposer history, the mempool and subscribers.
    fn commit(
        &mut self,
        cb: CertifiedBlock,
        delta: Option<meshward_core::state::Delta>,
        dropped: &[Tx],
        round: Round,
    ) -> Result<(), CommitError> {
        let height = cb.block.header.height;
        let hash = cb.block.hash();
        let validators_before;
        {
            let Some(mut store) = self.write() else {
                return Err(CommitError::Poisoned);
            };
            validators_before = store.state().validators().clone();
            match delta {
                Some(delta) => store.commit_decided(&cb, delta)?,
                None => store.apply_block(&cb)?,
            }
        }
        self.ctx.record_committed(height, &last_commit_signers(&cb));
        self.tip = Tip {
            header: Some(cb.block.header.clone()),
            certificate: Some(cb.certificate.clone()),
            validators: validators_before,
        };
        self.shared.committed.store(height, Ordering::Relaxed);
        self.candidates.prune_through(height);
        self.parts.prune_below(height + 1);
        self.mempool.on_committed(&cb, dropped);
        info!(height, round = %round, block = %BlockHash(hash), txs = cb.block.txs.len(), "block committed");
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

    fn finalized(
        &mut self,
        certificate: EngineCertificate<Ctx>,
        evidence: MisbehaviorEvidence<Ctx>,
        reply: tokio::sync::oneshot::Sender<Next<Ctx>>,
    ) {
        let height = certificate.height.0;
        self.report_evidence(height, &evidence);
        let committed = self.commit_failed != Some(height)
            && self
                .read()
                .and_then(|s| s.tip())
                .is_some_and(|(h, _)| h >= height);
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
        let deadline = self.height_started + Duration::from_millis(self.cfg.idle_block_interval_ms);
        if via_sync || !self.mempool.is_empty() || Instant::now() >= deadline {
            self.height_started = Instant::now();
            if reply.send(next).is_err() {
                error!(height, "finalized reply dropped");
            }
            return;
        }
        // Cadence: an idle chain waits for a transaction, or writes a heartbeat block once the
        // idle interval since this height started has passed.
        debug!(height, "mempool empty; holding the next height");
        self.held = Some(Held {
            reply,
            next,
            deadline,
            height,
        });
    }

    fn report_evidence(&self, height: u64, evidence: &MisbehaviorEvidence<Ctx>) {
        for (addr, list) in evidence.votes.iter() {
            warn!(height, validator = %addr, count = list.len(), "validator double-voted");
            self.emit(ConsensusEvent::Equivocation {
                height,
                validator: addr.0,
                kind: EquivocationKind::Vote,
            });
        }
        for (addr, list) in evidence.proposals.iter() {
            warn!(height, validator = %addr, count = list.len(), "validator double-proposed");
            self.emit(ConsensusEvent::Equivocation {
                height,
                validator: addr.0,
                kind: EquivocationKind::Proposal,
            });
        }
    }

    // --- Sync --------------------------------------------------------------------------------------

    fn decided_values(&self, start: u64, end: u64) -> Vec<RawDecidedValue<Ctx>> {
        let Some(store) = self.read() else {
            return Vec::new();
        };
        let Some((tip, _)) = store.tip() else {
            return Vec::new();
        };
        let start = start.max(1);
        let end = end
            .min(tip)
            .min(start.saturating_add(MAX_SYNC_VALUES as u64 - 1));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for h in start..=end {
            let raw = match store.block_bytes(h) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    warn!(height = h, error = %e, "cannot read block for sync");
                    break;
                }
            };
            let cb = match CertifiedBlock::decode_bytes(&raw) {
                Ok(cb) => cb,
                Err(e) => {
                    error!(height = h, error = %e, "stored block does not decode");
                    break;
                }
            };
            bytes += raw.len();
            if !out.is_empty() && bytes > MAX_SYNC_RESPONSE_BYTES {
                break;
            }
            out.push(RawDecidedValue::new(
                Bytes::from(raw),
                to_engine_certificate(&cb.certificate),
            ));
        }
        debug!(start, end, values = out.len(), "serving decided values");
        out
    }

    fn synced_value(
        &mut self,
        height: u64,
        round: Round,
        proposer: Address,
        value_bytes: Bytes,
    ) -> SyncedValueOutcome<Ctx> {
        let cb = match CertifiedBlock::decode_bytes(&value_bytes) {
            Ok(cb) => cb,
            Err(e) => {
                warn!(height, error = %e, "synced value does not decode");
                return SyncedValueOutcome::PeerFault;
            }
        };
        let hash = cb.block.hash();
        if cb.block.header.height != height
            || cb.certificate.height != height
            || cb.certificate.block_hash != hash
        {
            warn!(height, "synced value is for another height or block");
            return SyncedValueOutcome::PeerFault;
        }
        let verdict = |validity| {
            SyncedValueOutcome::Verdict(ProposedValue {
                height: Height(height),
                round,
                valid_round: Round::Nil,
                proposer,
                value: BlockHash(hash),
                validity,
            })
        };
        let (next, stored) = match self.read() {
            Some(s) => (s.next_height(), s.tip()),
            None => return SyncedValueOutcome::LocalTransientError,
        };
        if height < next {
            let same = match stored {
                Some((h, tip_hash)) if h == height => tip_hash == hash,
                _ => self
                    .read()
                    .and_then(|s| s.block(height).ok().flatten())
                    .is_some_and(|b| b.block.hash() == hash),
            };
            return if same {
                verdict(Validity::Valid)
            } else {
                SyncedValueOutcome::PeerFault
            };
        }
        if height > next {
            return SyncedValueOutcome::LocalTransientError;
        }
        if let Err(reason) = self.check_last_commit(height, &cb.block) {
            warn!(height, %reason, "synced block refused");
            return SyncedValueOutcome::PeerFault;
        }
        let cert_round = Round::new(cb.certificate.round);
        match self.commit(cb, None, &[], cert_round) {
            Ok(()) => {
                info!(height, block = %BlockHash(hash), "block synced");
                self.synced.insert(height, ());
                verdict(Validity::Valid)
            }
            Err(CommitError::Store(meshward_store::ApplyError::Rejected { source, .. })) => {
                warn!(height, error = %source, "synced block refused");
                SyncedValueOutcome::PeerFault
            }
            Err(e) => {
                error!(height, error = %e, "cannot store synced block");
                SyncedValueOutcome::LocalTransientError
            }
        }
    }
}

/// Why a block was not committed.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error("{0}")]
    Store(#[from] meshward_store::ApplyError),
    #[error("the store lock is poisoned")]
    Poisoned,
}

/// The kind of a reported equivocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EquivocationKind {
    Vote,
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

/// The validators that signed the last commit a block carries.
fn last_commit_signers(cb: &CertifiedBlock) -> Vec<PublicKey> {
    cb.block
        .last_commit
        .as_ref()
        .map(|c| c.signers().copied().collect())
        .unwrap_or_default()
}
