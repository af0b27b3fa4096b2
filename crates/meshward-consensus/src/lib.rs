//! Meshward's consensus: the Malachite BFT engine (Tendermint, `arc-malachitebft-*` 0.8.2)
//! behind a small interface of proposals, decided blocks and sync.
//!
//! [`start`] runs the engine on its own libp2p network and one application task that answers
//! it: the task builds proposals from the node's [`Mempool`] with
//! `meshward_core::chain::build_proposal`, checks every proposal it receives (the proposer's
//! signature over the streamed block, then every transaction with
//! `meshward_core::chain::check_proposal`), commits each decided block with its certificate and
//! state in one store transaction, serves and checks blocks for peers that catch up, and
//! publishes a [`ConsensusEvent`] for each. The rest of Meshward never sees a Malachite type.
//! Every node runs the engine with its key; at each height the set in force (the ledger's, after
//! the previous block: a `ValidatorSetChange` in block `h` rules from `h + 1`) decides whether it
//! votes. A node outside the set follows by sync, and starts voting at the first height whose
//! set holds it; a removed validator stops at the first height whose set does not.
//!
//! ```no_run
//! # async fn run(key: meshward_core::ids::Keypair, store: meshward_consensus::SharedStore,
//! #              mempool: std::sync::Arc<dyn meshward_consensus::Mempool>) -> Result<(), meshward_consensus::StartError> {
//! use meshward_consensus::{start, ConsensusConfig, ConsensusEvent};
//!
//! let mut config = ConsensusConfig::new("/var/lib/meshward", "/ip4/0.0.0.0/tcp/27000");
//! config.persistent_peers = vec!["/ip4/10.0.0.2/tcp/27000".into()];
//! let consensus = start(config, key, store, mempool).await?;
//! let mut events = consensus.events();
//! while let Ok(ConsensusEvent::Committed { height, txs, .. }) = events.recv().await {
//!     println!("block {height}: {txs} transactions");
//! }
//! consensus.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Proposer skipping
//! A dead validator must not cost a propose timeout at every height it would propose. Proposer
//! selection ([`proposer::ProposerHistory`]) reads only committed data every validator agrees
//! on: each block carries the previous block's commit certificate (its `last_commit`). At round
//! 0 of height `h` the proposer is chosen round-robin by height among the validators that
//! signed at least one last commit carried by blocks `h - K ..= h - 1` (K =
//! [`ConsensusConfig::proposer_history`]); if none did, among all validators. Later rounds use
//! plain round-robin over all validators, so liveness never depends on the rule. A validator
//! that stops signing drops out of round 0 after K blocks; once a block carries its signature
//! again, it is back.
//!
//! # Cadence
//! The reply to Malachite's `Finalized` message, which starts the next height, is held by the
//! rule in [`cadence`]: at once under load ([`ConsensusConfig::batch_fill_txs`] pending);
//! [`ConsensusConfig::block_batch_ms`] after the oldest pending transaction under light load, so
//! a few arrivals share a block; and while idle only for a heartbeat every
//! [`ConsensusConfig::idle_block_interval_ms`] (30 s by default; 0: none). Every validator runs
//! the same rule and gossip fills every mempool within milliseconds, so they start a height
//! nearly together; the propose timeout (500 ms by default) is well above that skew. Blocks
//! committed through sync are never held.
//!
//! # Wire formats
//! Malachite's messages are encoded with Meshward's canonical encoding ([`codec`]). Consensus
//! decides on block hashes; a block travels as proposal parts ([`parts`]) and is kept by the
//! application until its height is committed ([`candidates`]). Votes are signed over
//! `meshward_core::block::vote_signing_bytes`, so a decided certificate converts
//! ([`cert::to_core_certificate`]) to a `meshward_core::block::CommitCertificate` that the
//! core verifies alone.
#![forbid(unsafe_code)]

mod app;
#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod cadence;
pub mod candidates;
pub mod cert;
pub mod codec;
pub mod config;
pub mod context;
pub mod parts;
pub mod proposer;
pub mod signing;
pub mod sizing;

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use malachitebft_app_channel::app::config::{
    ConsensusConfig as EngineConsensusConfig, DiscoveryConfig, NodeConfig, P2pConfig,
    PubSubProtocol, ValuePayload, ValueSyncConfig,
};
use malachitebft_app_channel::app::types::codec::Codec as _;
use malachitebft_app_channel::{
    ConsensusContext, EngineBuilder, EngineHandle, NetworkContext, NetworkIdentity, NetworkRequest,
    RequestContext, Signer as _, SyncContext, WalContext,
};
use malachitebft_network::{Keypair as NetKeypair, Multiaddr};
use meshward_core::block::CertifiedBlock;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::state::StateView;
use meshward_core::tx::Tx;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

pub use app::{AppError, EquivocationKind};
pub use config::{ConsensusConfig, Timeouts};

use crate::codec::MeshwardCodec;
use crate::context::{Address, MeshwardContext};
use crate::proposer::ProposerHistory;
use crate::signing::{MeshwardSigner, MeshwardVerifier};

/// The node's chain store. Consensus is its only writer (it takes the write guard to commit
/// each block); the rest of the node only reads it. A poisoned lock aborts the process
/// ([`meshward_core::sync`]).
pub type SharedStore = Arc<RwLock<meshward_store::Store>>;

/// The node's pool of pending transactions, as consensus uses it.
pub trait Mempool: Send + Sync + 'static {
    /// Candidates for the next block, oldest first; may include transactions that are no
    /// longer valid (the proposer drops those).
    fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Tx>;

    /// How many pending transactions a block could include now (the cadence starts the next
    /// height early on these). A pool may leave out those that wait for a missing predecessor.
    fn len(&self) -> usize;

    /// Whether no transaction is pending.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For each of `txs`, the key its signature was verified under when this pool admitted it,
    /// if it is pending here byte for byte; consensus skips verifying those again. The default
    /// knows none.
    fn verified_keys(&self, txs: &[Tx]) -> Vec<Option<meshward_core::ids::PublicKey>> {
        vec![None; txs.len()]
    }

    /// When the oldest pending transaction arrived, if the pool knows: the start of the
    /// cadence's batching window ([`cadence`]). The default knows nothing (the window then
    /// starts when consensus first sees a transaction pending).
    fn oldest_pending(&self) -> Option<std::time::Instant> {
        None
    }

    /// A block was committed: evict its transactions, and those this node's proposal dropped as
    /// invalid (`dropped` is empty unless this node proposed the block).
    fn on_committed(&self, block: &CertifiedBlock, dropped: &[Tx]);
}

/// What consensus reports, on a bounded broadcast channel ([`ConsensusHandle::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsensusEvent {
    /// A block was committed to the store.
    Committed {
        /// Height of the committed block.
        height: u64,
        /// Its block hash (the consensus value).
        hash: Hash,
        /// The round its certificate is for.
        round: u32,
        /// How many transactions it holds.
        txs: usize,
        /// Its block time, ms since the Unix epoch.
        time_ms: u64,
        /// The validator that proposed it.
        proposer: PublicKey,
    },
    /// `round` of `height` ended without a decision; consensus moved to the next round.
    RoundTimeout {
        /// The height.
        height: u64,
        /// The round that timed out.
        round: u32,
    },
    /// A proposal signed by the round's proposer failed the ledger checks.
    ProposalRejected {
        /// The height of the proposal.
        height: u64,
        /// Its round.
        round: u32,
        /// The round's proposer, whose signature the proposal carried.
        proposer: PublicKey,
        /// Why the ledger checks refused it.
        reason: String,
    },
    /// A validator signed two conflicting votes or proposals.
    Equivocation {
        /// The height at which it happened.
        height: u64,
        /// The validator that signed twice.
        validator: PublicKey,
        /// Whether two votes or two proposals conflict.
        kind: EquivocationKind,
        /// For two votes, the evidence the ledger takes (`TxBody::Evidence`).
        evidence: Option<Box<meshward_core::tx::ValidatorEvidence>>,
    },
}

/// Why consensus did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listen or peer address is not a valid multiaddr.
    #[error("invalid multiaddr {addr:?} in the consensus config: {reason} (use e.g. /ip4/127.0.0.1/tcp/27000)")]
    Multiaddr {
        /// The address as given.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The WAL or proposals directory cannot be created under the data dir.
    #[error("cannot create {}: {source} (check the data dir and its permissions)", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading the store or the saved proposals to resume failed.
    #[error("cannot prepare the consensus application: {0}")]
    App(#[from] AppError),
    /// This validator's proof of its key, for the consensus network, cannot be signed or encoded.
    #[error("cannot sign the validator proof: {0}")]
    Proof(String),
    /// The Malachite engine (or its network) refused to start, or to take a peer.
    #[error("cannot start the consensus engine: {0}")]
    Engine(String),
}

/// A snapshot of where consensus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusStatus {
    /// The height consensus works on.
    pub height: u64,
    /// The round consensus is in at that height.
    pub round: u32,
    /// The last committed height (0 before block 1).
    pub committed_height: u64,
    /// Whether this node's key is in the validator set of the height consensus works on
    /// (otherwise it follows by sync).
    pub is_validator: bool,
    /// Heights committed here that were decided in a round after 0 (see [`sizing`]).
    pub late_round_heights: u64,
    /// How many transactions this node's next proposal may hold ([`sizing`]).
    pub proposal_limit_txs: u64,
    /// Decided blocks the store failed to write (disk full, I/O error) since the start. Each
    /// such height is retried (through sync once the others have moved on); the store refuses
    /// every write after the first failure until the node restarts and reopens it.
    pub store_write_errors: u64,
}

/// The running consensus service.
pub struct ConsensusHandle {
    events: broadcast::Sender<ConsensusEvent>,
    shared: Arc<app::Shared>,
    stop: watch::Sender<bool>,
    app: JoinHandle<()>,
    engine: EngineHandle,
    net_requests: mpsc::Sender<NetworkRequest>,
    address: PublicKey,
}

impl std::fmt::Debug for ConsensusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsensusHandle")
            .field("address", &self.address)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Malachite's node configuration.
#[derive(Clone, Debug)]
struct EngineConfig {
    moniker: String,
    consensus: EngineConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl NodeConfig for EngineConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }

    fn consensus(&self) -> &EngineConsensusConfig {
        &self.consensus
    }

    fn consensus_mut(&mut self) -> &mut EngineConsensusConfig {
        &mut self.consensus
    }

    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }

    fn value_sync_mut(&mut self) -> &mut ValueSyncConfig {
        &mut self.value_sync
    }
}

fn multiaddr(s: &str) -> Result<Multiaddr, StartError> {
    s.parse::<Multiaddr>().map_err(|e| StartError::Multiaddr {
        addr: s.to_owned(),
        reason: e.to_string(),
    })
}

fn engine_config(config: &ConsensusConfig, moniker: &str) -> Result<EngineConfig, StartError> {
    let persistent_peers = config
        .persistent_peers
        .iter()
        .map(|p| multiaddr(p))
        .collect::<Result<Vec<_>, _>>()?;
    let p2p = P2pConfig {
        listen_addr: multiaddr(&config.listen)?,
        persistent_peers,
        discovery: DiscoveryConfig {
            enabled: false,
            max_connections_per_ip: config.max_connections_per_ip,
            ..DiscoveryConfig::default()
        },
        protocol: PubSubProtocol::default(),
        ..P2pConfig::default()
    };
    let consensus = EngineConsensusConfig {
        p2p,
        value_payload: ValuePayload::ProposalAndParts,
        ..EngineConsensusConfig::default()
    };
    let value_sync = ValueSyncConfig {
        enabled: true,
        // A late node learns within a second that it is behind.
        status_update_interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        ..ValueSyncConfig::default()
    };
    Ok(EngineConfig {
        moniker: moniker.to_owned(),
        consensus,
        value_sync,
    })
}

/// Starts consensus for the node holding `key` (whose `PeerId` is its validator address) on
/// `store`, taking transactions from `mempool`.
pub async fn start(
    config: ConsensusConfig,
    key: Keypair,
    store: SharedStore,
    mempool: Arc<dyn Mempool>,
) -> Result<ConsensusHandle, StartError> {
    let me = key.id();
    let (chain_id, is_validator) = {
        let s = meshward_core::sync::read(&store, "chain store");
        (
            s.genesis().chain_id.clone(),
            s.state().validators().power_of(&me).is_some(),
        )
    };
    // Every node runs the engine with its signer, validator or not: the set changes by
    // transaction (`ValidatorSetChange`), and the engine decides at each height from that
    // height's set (`HeightParams`) whether this node votes and proposes. A node started
    // without a signer would never sign once added to the set (Malachite 0.8.2 even panics when
    // a node it counts as a validator has no signer); one removed stops voting at the next
    // height. `is_validator` here only says what this node is at start.
    let moniker = me.peer_id();
    let span = tracing::info_span!("consensus", node = %moniker);
    let engine_cfg = engine_config(&config, &moniker)?;
    let wal_dir = config.wal_dir();
    std::fs::create_dir_all(&wal_dir).map_err(|source| StartError::DataDir {
        path: wal_dir.clone(),
        source,
    })?;

    let ctx = MeshwardContext::new(&chain_id, ProposerHistory::new(config.proposer_history));
    let (events, _) = broadcast::channel(config.event_capacity.max(1));
    let shared = Arc::new(app::Shared::default());
    shared.is_validator.store(is_validator, Ordering::Relaxed);
    let signer = Some(MeshwardSigner::new(key.sign.clone(), &chain_id));
    // The application is prepared first: it reads the store and the proposals directory.
    let app = app::App::new(
        ctx.clone(),
        config.clone(),
        store,
        mempool,
        signer,
        Address(me),
        events.clone(),
        shared.clone(),
    )?;

    let mut seed = *key.sign.seed();
    let net_key = NetKeypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| StartError::Engine(format!("node key: {e}")))?;
    let address = Address(me);
    let identity = {
        let proof_signer = MeshwardSigner::new(key.sign.clone(), &chain_id);
        let proof = proof_signer
            .sign_validator_proof(me.0.to_vec(), me.peer_id_bytes().to_vec())
            .await
            .map_err(|e| StartError::Proof(e.to_string()))?;
        let proof_bytes = MeshwardCodec
            .encode(&proof)
            .map_err(|e| StartError::Proof(e.to_string()))?;
        NetworkIdentity::new_validator(moniker.clone(), net_key, moniker.clone(), proof_bytes)
    };
    let verifier = Box::new(MeshwardVerifier::new(&chain_id));
    let consensus_ctx = ConsensusContext::new_validator(
        address,
        verifier,
        Box::new(MeshwardSigner::new(key.sign.clone(), &chain_id)),
    );
    // The rest of the engine, after the network (which a Byzantine test validator replaces).
    macro_rules! finish {
        ($builder:expr) => {
            $builder
                .with_default_sync(SyncContext::new(MeshwardCodec))
                .with_default_consensus(consensus_ctx)
                .with_default_request(RequestContext::new(64))
                .build()
                .instrument(span.clone())
                .await
                .map_err(|e| StartError::Engine(format!("{e:#}")))?
        };
    }
    #[cfg(feature = "byzantine")]
    let byzantine_cfg = engine_cfg.clone();
    let builder = EngineBuilder::new(ctx, engine_cfg).with_default_wal(WalContext::new(
        wal_dir.join("consensus.wal"),
        MeshwardCodec,
    ));
    #[cfg(feature = "byzantine")]
    if let Some(mode) = config.byzantine {
        warn!(%mode, validator = is_validator, "BYZANTINE: this validator misbehaves");
    }
    #[cfg(feature = "byzantine")]
    let (channels, engine) = match (config.byzantine, is_validator) {
        (Some(byzantine::ByzantineMode::Equivocate), true) => {
            let b = builder
                .with_byzantine_network(byzantine::equivocation(
                    identity,
                    MeshwardSigner::new(key.sign.clone(), &chain_id),
                    address,
                ))
                .await
                .map_err(|e| StartError::Engine(format!("{e:#}")))?;
            finish!(b)
        }
        (
            Some(mode @ (byzantine::ByzantineMode::StaleVotes | byzantine::ByzantineMode::Garbage)),
            true,
        ) => {
            let registry = malachitebft_app_channel::app::metrics::SharedRegistry::global()
                .with_moniker(&moniker);
            let (real, tx) = malachitebft_app_channel::spawn::spawn_network_actor(
                identity,
                byzantine_cfg.consensus(),
                byzantine_cfg.value_sync(),
                &registry,
                MeshwardCodec,
            )
            .await
            .map_err(|e| StartError::Engine(format!("{e:#}")))?;
            let proxy = byzantine::Misbehave::spawn(
                mode,
                real,
                MeshwardSigner::new(key.sign.clone(), &chain_id),
            )
            .await
            .map_err(StartError::Engine)?;
            finish!(builder.with_custom_network(proxy, tx))
        }
        _ => finish!(builder.with_default_network(NetworkContext::new(identity, MeshwardCodec))),
    };
    #[cfg(not(feature = "byzantine"))]
    let (channels, engine) =
        finish!(builder.with_default_network(NetworkContext::new(identity, MeshwardCodec)));
    let net_requests = channels.net_requests.clone();
    let (stop, stop_rx) = watch::channel(false);
    let app = tokio::spawn(app.run(channels, stop_rx).instrument(span));
    info!(node = %moniker, validator = is_validator, listen = %config.listen, "consensus started");
    Ok(ConsensusHandle {
        events,
        shared,
        stop,
        app,
        engine,
        net_requests,
        address: me,
    })
}

impl ConsensusHandle {
    /// A new subscription to consensus events. A subscriber that falls more than
    /// [`ConsensusConfig::event_capacity`] events behind loses the oldest ones.
    pub fn events(&self) -> broadcast::Receiver<ConsensusEvent> {
        self.events.subscribe()
    }

    /// This node's validator address.
    pub fn address(&self) -> PublicKey {
        self.address
    }

    /// Where consensus is now: height, round, committed height (read without waiting).
    pub fn status(&self) -> ConsensusStatus {
        ConsensusStatus {
            height: self.shared.height.load(Ordering::Relaxed),
            round: self.shared.round.load(Ordering::Relaxed),
            committed_height: self.shared.committed.load(Ordering::Relaxed),
            is_validator: self.shared.is_validator.load(Ordering::Relaxed),
            late_round_heights: self.shared.late_rounds.load(Ordering::Relaxed),
            proposal_limit_txs: self.shared.proposal_limit.load(Ordering::Relaxed),
            store_write_errors: self.shared.store_write_errors.load(Ordering::Relaxed),
        }
    }

    /// Peers connected to Malachite's network (0 if the network does not answer).
    pub async fn peer_count(&self) -> usize {
        match NetworkRequest::dump_state(&self.net_requests).await {
            Ok(Some(dump)) => dump.peers.len(),
            _ => 0,
        }
    }

    /// Adds a persistent peer at run time (for example one found by mDNS).
    pub async fn add_peer(&self, addr: &str) -> Result<(), StartError> {
        let addr = multiaddr(addr)?;
        match NetworkRequest::add_persistent_peer(&self.net_requests, addr).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StartError::Engine(format!("{e:?}"))),
            Err(e) => Err(StartError::Engine(e.to_string())),
        }
    }

    /// Stops the application task and the engine (network, WAL, sync), and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self
            .engine
            .actor
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
            .await
        {
            warn!(error = %e, "consensus engine did not stop in time; killing it");
            let _ = self
                .engine
                .actor
                .kill_and_wait(Some(Duration::from_secs(2)))
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.engine.handle).await;
        let _ = self.app.await;
        info!("consensus stopped");
    }
}
