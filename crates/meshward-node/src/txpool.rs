//! Admission: how a transaction from the API, a device or gossip enters this gateway, and what
//! follows each decision.
//!
//! Owner and discipline. [`TxPool`] has no lock of its own: it composes the [`Mempool`] (one
//! mutex, held for one step at a time) and [`Rejections`] (one mutex, the reasons of recent
//! refusals), reads the ledger through [`Ledger::read`] (taken before the mempool's lock, never
//! after), and hands admitted API transactions to the mesh on a bounded gossip queue
//! ([`GOSSIP_QUEUE`]). It is shared by the API, the RPC handler, gossip admission and consensus
//! (which reaps it through [`meshward_consensus::Mempool`]).
//!
//! What follows a decision: an admitted transaction that arrived through the API or a device
//! is gossiped; a transaction that conflicts with a pending one of the same signer and sequence
//! number, or an anchor the policy forbids, becomes evidence that this node signs and submits
//! (the ledger's evidence rules judge it on admission); any other refusal is remembered for
//! `GET /v1/tx/{hash}`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::state::StateView;
use meshward_core::tx::{Tx, TxBody};
use meshward_core::{CertifiedBlock, Reject};
use tokio::sync::mpsc;

use crate::evidence;
use crate::ledger::{next_ctx, Ledger};
use crate::mempool::{AdmitError, Mempool};
use crate::metrics::Metrics;
use crate::stats::ChainStats;

/// Most API transactions waiting to be gossiped.
pub const GOSSIP_QUEUE: usize = 16_384;
/// Most recent rejections remembered for `GET /v1/tx/{hash}`.
pub const MAX_REMEMBERED_REJECTIONS: usize = 65_536;

/// The reasons of the last [`MAX_REMEMBERED_REJECTIONS`] refused transactions, oldest
/// forgotten first. One mutex, held for one map operation.
#[derive(Default)]
pub struct Rejections {
    inner: Mutex<RejectionsInner>,
}

#[derive(Default)]
struct RejectionsInner {
    reasons: HashMap<Hash, String>,
    order: VecDeque<Hash>,
}

impl Rejections {
    /// Remembers why `id` was refused.
    pub fn remember(&self, id: Hash, reason: String) {
        let mut r = meshward_core::sync::lock(&self.inner, "rejections");
        if r.reasons.insert(id, reason).is_none() {
            r.order.push_back(id);
            while r.order.len() > MAX_REMEMBERED_REJECTIONS {
                if let Some(old) = r.order.pop_front() {
                    r.reasons.remove(&old);
                }
            }
        }
    }

    /// Why `id` was refused, if this node still remembers.
    pub fn reason(&self, id: &Hash) -> Option<String> {
        meshward_core::sync::lock(&self.inner, "rejections")
            .reasons
            .get(id)
            .cloned()
    }
}

/// Admission into this gateway's mempool (see the module doc).
pub struct TxPool {
    ledger: Ledger,
    mempool: Mempool,
    rejections: Rejections,
    gossip: mpsc::Sender<Vec<u8>>,
    /// Signs the evidence this node submits; `None` submits none.
    evidence_key: Option<Keypair>,
    metrics: Arc<Metrics>,
    stats: Arc<ChainStats>,
}

impl TxPool {
    /// A pool over `ledger` whose admitted API transactions go to `gossip`.
    pub fn new(
        ledger: Ledger,
        mempool: Mempool,
        gossip: mpsc::Sender<Vec<u8>>,
        evidence_key: Option<Keypair>,
        metrics: Arc<Metrics>,
        stats: Arc<ChainStats>,
    ) -> Self {
        TxPool {
            ledger,
            mempool,
            rejections: Rejections::default(),
            gossip,
            evidence_key,
            metrics,
            stats,
        }
    }

    /// The mempool, for reading.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Admits a transaction; `gossip` sends it on to the mesh (for transactions that arrived
    /// through the API or a device, not ones the mesh brought).
    pub fn submit(&self, tx: Tx, gossip: bool) -> Result<Hash, AdmitError> {
        let result = {
            let store = self.ledger.read();
            let ctx = next_ctx(&store);
            self.mempool.insert(tx.clone(), store.state(), &ctx)
        };
        self.admitted(&tx, &result, gossip);
        self.metrics.mempool_txs.set(self.mempool.len() as i64);
        result
    }

    /// Admits many transactions, as [`TxPool::submit`] does each, with their signatures
    /// verified in one batch (see [`Mempool::insert_batch`]). Results are in the order of `txs`.
    pub fn submit_batch(&self, txs: Vec<Tx>, gossip: bool) -> Vec<Result<Hash, AdmitError>> {
        let results = {
            let store = self.ledger.read();
            let ctx = next_ctx(&store);
            self.mempool.insert_batch(&txs, store.state(), &ctx)
        };
        for (tx, result) in txs.iter().zip(&results) {
            self.admitted(tx, result, gossip);
        }
        self.metrics.mempool_txs.set(self.mempool.len() as i64);
        results
    }

    /// What follows an admission decision (see the module doc).
    fn admitted(&self, tx: &Tx, result: &Result<Hash, AdmitError>, gossip: bool) {
        match result {
            Ok(id) => {
                if gossip && self.gossip.try_send(tx.to_bytes()).is_err() {
                    tracing::warn!(tx = %id, "gossip queue full; transaction stays local");
                }
            }
            Err(AdmitError::Duplicate) => {}
            Err(AdmitError::Conflict) => {
                if let Some(existing) = self.mempool.pending_at(&tx.signer, tx.seq) {
                    self.report(evidence::equivocation(&existing, tx));
                }
            }
            Err(AdmitError::Rejected(Reject::PolicyForbids { .. })) => {
                self.report(evidence::policy_violation(tx));
            }
            Err(e) => {
                self.metrics.rejected_txs.inc();
                self.rejections.remember(tx.id(), e.to_string());
            }
        }
    }

    /// Submits `evidence`, signed by this node: once it commits, the device is revoked. The
    /// mempool's admission check (the ledger's evidence rules) refuses evidence that does not
    /// hold.
    fn report(&self, evidence: Option<meshward_core::tx::Evidence>) {
        let (Some(key), Some(ev)) = (&self.evidence_key, evidence) else {
            return;
        };
        let tx = {
            let store = self.ledger.read();
            let st = store.state();
            let Some(seq) = self.mempool.next_seq(st, &key.id()) else {
                return;
            };
            Tx::sign(
                st.chain_id(),
                key.id(),
                &key.sign,
                seq,
                TxBody::Evidence(ev),
            )
        };
        match self.submit(tx, true) {
            Ok(id) => tracing::warn!(evidence = %id, "misbehaving device seen; evidence submitted"),
            Err(e) => tracing::debug!(error = %e, "evidence not admitted"),
        }
    }

    /// Why `id` was refused, if this node remembers.
    pub fn rejection(&self, id: &Hash) -> Option<String> {
        self.rejections.reason(id)
    }

    /// Whether `id` is pending here.
    pub fn contains(&self, id: &Hash) -> bool {
        self.mempool.contains(id)
    }

    /// How many transactions are pending.
    pub fn len(&self) -> usize {
        self.mempool.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.mempool.is_empty()
    }

    /// The sequence number `signer`'s next transaction should carry, counting what is pending
    /// here; `None` for an unknown account.
    pub fn next_seq(&self, signer: &PublicKey) -> Option<u64> {
        let store = self.ledger.read();
        self.mempool.next_seq(store.state(), signer)
    }
}

/// The pool as consensus uses it: reaping for proposals, and eviction after each commit.
impl meshward_consensus::Mempool for TxPool {
    fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Tx> {
        self.mempool.reap(max_txs, max_bytes)
    }

    fn len(&self) -> usize {
        self.mempool.len()
    }

    fn verified_keys(&self, txs: &[Tx]) -> Vec<Option<PublicKey>> {
        self.mempool.verified_keys(txs)
    }

    fn oldest_pending(&self) -> Option<Instant> {
        self.mempool.oldest_received()
    }

    fn on_committed(&self, block: &CertifiedBlock, dropped: &[Tx]) {
        // Consensus has released the store's write guard before it calls this.
        let evicted = {
            let store = self.ledger.read();
            self.mempool.on_committed(block, dropped, store.state())
        };
        record_finality(&self.metrics, &self.stats, evicted.included);
        self.metrics.mempool_txs.set(self.mempool.len() as i64);
    }
}

/// Records the finality latency of transactions that were pending here (with the time each
/// arrived) and are now final.
fn record_finality(
    metrics: &Metrics,
    stats: &ChainStats,
    included: impl IntoIterator<Item = (Hash, Instant)>,
) {
    let now = meshward_core::clock::now_ms();
    for (_, received) in included {
        let latency = received.elapsed();
        metrics.finality_latency.observe(latency.as_secs_f64());
        stats.on_final(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX), now);
    }
}
