//! A Meshward gateway node: the store, the mempool, consensus and the mesh wired together,
//! with the HTTP API and Prometheus metrics.
//!
//! The long-lived parts each run as one task: consensus (which alone writes the store), the
//! mesh swarm, the API server, and the event loop that connects them. They share the store
//! behind a read-write lock (the API only reads), the mempool behind its own lock, and talk
//! over bounded channels.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = meshward_node::NodeConfig::for_dir("node1".into(), "genesis.json".into());
//! meshward_node::run(config, std::future::pending()).await
//! # }
//! ```

pub mod api;
pub mod events;
pub mod evidence;
pub mod keyfile;
pub mod mempool;
pub mod metrics;
pub mod node;
pub mod rpc;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::state::StateView;
use meshward_core::tx::Tx;
use meshward_store::Store;
use tokio::sync::mpsc;

use mempool::{AdmitError, Mempool};
use metrics::Metrics;

pub use node::{
    consensus_addr_for, init_data_dir, run, InitReport, NodeConfig, CONFIG_FILE, NODE_KEY_FILE,
    STORE_FILE, TOKEN_FILE,
};

/// The store, shared: consensus writes, everything else reads.
pub type SharedStore = Arc<RwLock<Store>>;

/// Most recent rejections remembered for `GET /v1/tx/{hash}`.
const MAX_REMEMBERED_REJECTIONS: usize = 65_536;

/// State the API and the event loop share.
pub struct Shared {
    pub store: SharedStore,
    pub mempool: Arc<Mempool>,
    pub metrics: Arc<Metrics>,
    pub node_id: PublicKey,
    token: String,
    peers: AtomicUsize,
    /// Accepted API transactions, to be gossiped by the mesh task.
    gossip: mpsc::Sender<Vec<u8>>,
    rejections: Mutex<Rejections>,
    /// Live ledger events for `GET /v1/events`, bounded at [`events::EVENT_QUEUE`] per
    /// subscriber; see [`Shared::publish_block`].
    pub events: tokio::sync::broadcast::Sender<events::Event>,
    /// The mesh's listen addresses, shown by `/v1/status`; set by the node once the mesh
    /// listens (empty until then).
    pub mesh_addrs: RwLock<Vec<String>>,
    /// Outstanding device-auth nonces (`POST /v1/challenge`), bounded and single-use.
    pub challenges: api::auth::Challenges,
    /// The node's key, once set: it signs the evidence this node submits.
    evidence_key: std::sync::OnceLock<meshward_core::ids::Keypair>,
}

#[derive(Default)]
struct Rejections {
    reasons: HashMap<Hash, String>,
    order: VecDeque<Hash>,
}

impl Shared {
    pub fn new(
        store: SharedStore,
        mempool: Arc<Mempool>,
        metrics: Arc<Metrics>,
        node_id: PublicKey,
        token: String,
        gossip: mpsc::Sender<Vec<u8>>,
    ) -> Self {
        Shared {
            store,
            mempool,
            metrics,
            node_id,
            token,
            peers: AtomicUsize::new(0),
            gossip,
            rejections: Mutex::new(Rejections::default()),
            events: tokio::sync::broadcast::channel(events::EVENT_QUEUE).0,
            mesh_addrs: RwLock::new(Vec::new()),
            challenges: api::auth::Challenges::new(),
            evidence_key: std::sync::OnceLock::new(),
        }
    }

    pub fn peers(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    pub fn set_peers(&self, n: usize) {
        self.peers.store(n, Ordering::Relaxed);
        self.metrics.peers.set(n as i64);
    }

    /// Admits a transaction to the mempool; `gossip` sends it on to the mesh (for
    /// transactions that arrived through the API, not ones the mesh brought).
    pub fn submit(&self, tx: Tx, gossip: bool) -> Result<Hash, AdmitError> {
        let result = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let ctx = api::next_ctx(&store);
            self.mempool.insert(tx.clone(), store.state(), &ctx)
        };
        self.admitted(&tx, &result, gossip);
        self.metrics.mempool_txs.set(self.mempool.len() as i64);
        result
    }

    /// Admits many transactions, as [`Shared::submit`] does each, with their signatures
    /// verified in one batch (see [`Mempool::insert_batch`]). Results are in the order of `txs`.
    pub fn submit_batch(&self, txs: Vec<Tx>, gossip: bool) -> Vec<Result<Hash, AdmitError>> {
        let results = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let ctx = api::next_ctx(&store);
            self.mempool.insert_batch(&txs, store.state(), &ctx)
        };
        for (tx, result) in txs.iter().zip(&results) {
            self.admitted(tx, result, gossip);
        }
        self.metrics.mempool_txs.set(self.mempool.len() as i64);
        results
    }

    /// What follows an admission decision: gossip for an admitted transaction, evidence for a
    /// conflicting or forbidden one, and the reason remembered for a refused one.
    fn admitted(&self, tx: &Tx, result: &Result<Hash, AdmitError>, gossip: bool) {
        match result {
            Ok(id) => {
                if gossip {
                    let bytes = meshward_core::codec::Encode::to_bytes(tx);
                    if self.gossip.try_send(bytes).is_err() {
                        tracing::warn!(tx = %id, "gossip queue full; transaction stays local");
                    }
                }
            }
            Err(AdmitError::Duplicate) => {}
            Err(AdmitError::Conflict) => {
                if let Some(existing) = self.mempool.pending_at(&tx.signer, tx.seq) {
                    self.report(evidence::equivocation(&existing, tx));
                }
            }
            Err(AdmitError::Rejected(meshward_core::Reject::PolicyForbids { .. })) => {
                self.report(evidence::policy_violation(tx));
            }
            Err(e) => {
                self.metrics.rejected_txs.inc();
                self.remember_rejection(tx.id(), e.to_string());
            }
        }
    }

    /// Lets this node sign and submit evidence of misbehaviour it sees.
    pub fn set_evidence_key(&self, key: meshward_core::ids::Keypair) {
        let _ = self.evidence_key.set(key);
    }

    /// Submits `evidence`, signed by this node: once it commits, the device is revoked. The
    /// mempool's admission check (the ledger's evidence rules) refuses evidence that does not
    /// hold.
    fn report(&self, evidence: Option<meshward_core::tx::Evidence>) {
        let (Some(key), Some(ev)) = (self.evidence_key.get(), evidence) else {
            return;
        };
        let tx = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let st = store.state();
            let Some(seq) = self.mempool.next_seq(st, &key.id()) else {
                return;
            };
            Tx::sign(
                st.chain_id(),
                key.id(),
                &key.sign,
                seq,
                meshward_core::tx::TxBody::Evidence(ev),
            )
        };
        match self.submit(tx, true) {
            Ok(id) => tracing::warn!(evidence = %id, "misbehaving device seen; evidence submitted"),
            Err(e) => tracing::debug!(error = %e, "evidence not admitted"),
        }
    }

    fn remember_rejection(&self, id: Hash, reason: String) {
        let mut r = self.rejections.lock().unwrap_or_else(|e| e.into_inner());
        if r.reasons.insert(id, reason).is_none() {
            r.order.push_back(id);
            while r.order.len() > MAX_REMEMBERED_REJECTIONS {
                if let Some(old) = r.order.pop_front() {
                    r.reasons.remove(&old);
                }
            }
        }
    }

    pub fn rejection(&self, id: &Hash) -> Option<String> {
        self.rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reasons
            .get(id)
            .cloned()
    }

    /// Records the finality latency of transactions that were in this node's mempool (with the
    /// time each arrived there) and are now final.
    pub fn finalised(&self, included: impl IntoIterator<Item = (Hash, Instant)>) {
        for (_, received) in included {
            self.metrics
                .finality_latency
                .observe(received.elapsed().as_secs_f64());
        }
    }
}
