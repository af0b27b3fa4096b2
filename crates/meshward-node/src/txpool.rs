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
/// How much backlog a client's transaction may join: new transactions from the API and from
/// devices are refused (`mempool_full`, `busy`) while more is pending than the chain finalised
/// in this many seconds lately, so that under overload what is accepted is final within about
/// that long instead of queueing for many seconds; the client retries. Gossip from other
/// gateways is not refused (they admitted it).
pub const BACKLOG_SECS: f64 = 1.0;
/// The backlog is never held below this many transactions (a few full proposals), so a chain
/// just starting or briefly slow still fills its blocks.
pub const MIN_BACKLOG: usize = 4_096;
/// The window over which the finalised rate is measured, in seconds.
const RATE_WINDOW_SECS: f64 = 3.0;

/// Transactions finalised lately: (when, how many), oldest first, within [`RATE_WINDOW_SECS`].
#[derive(Default)]
struct Finalised {
    blocks: VecDeque<(Instant, usize)>,
}

impl Finalised {
    fn record(&mut self, now: Instant, txs: usize) {
        self.blocks.push_back((now, txs));
        while self
            .blocks
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t).as_secs_f64() > RATE_WINDOW_SECS)
        {
            self.blocks.pop_front();
        }
    }

    /// Transactions finalised per second over the window (0 with nothing recorded).
    fn rate(&self, now: Instant) -> f64 {
        let total: usize = self
            .blocks
            .iter()
            .filter(|(t, _)| now.duration_since(*t).as_secs_f64() <= RATE_WINDOW_SECS)
            .map(|(_, n)| n)
            .sum();
        total as f64 / RATE_WINDOW_SECS
    }
}

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
    /// The finalised rate, for the backlog limit (one mutex, one short step).
    finalised: Mutex<Finalised>,
    /// The least backlog accepted ([`MIN_BACKLOG`] unless set).
    min_backlog: usize,
    /// Per validator, the height of the last double vote this node reported (one mutex, one
    /// short step; at most one entry per validator of the set).
    reported: Mutex<std::collections::HashMap<meshward_core::PublicKey, u64>>,
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
            reported: Mutex::default(),
            metrics,
            stats,
            finalised: Mutex::new(Finalised::default()),
            min_backlog: MIN_BACKLOG,
        }
    }

    /// The same pool with another least backlog (tests; a gateway keeps [`MIN_BACKLOG`]).
    pub fn with_min_backlog(mut self, n: usize) -> Self {
        self.min_backlog = n;
        self
    }

    /// How many pending transactions a client's new transaction may still join: the
    /// finalised rate × [`BACKLOG_SECS`], at least [`MIN_BACKLOG`].
    pub fn backlog_limit(&self) -> usize {
        let rate =
            meshward_core::sync::lock(&self.finalised, "finalised rate").rate(Instant::now());
        self.min_backlog.max((rate * BACKLOG_SECS) as usize)
    }

    /// Room left under [`TxPool::backlog_limit`] for client transactions.
    fn backlog_room(&self) -> Result<usize, AdmitError> {
        let (pending, limit) = (self.mempool.len(), self.backlog_limit());
        if pending >= limit {
            return Err(AdmitError::Backlog { pending, limit });
        }
        Ok(limit - pending)
    }

    /// The mempool, for reading.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Admits a transaction; `gossip` sends it on to the mesh (for transactions that arrived
    /// through the API or a device, not ones the mesh brought).
    pub fn submit(&self, tx: Tx, gossip: bool) -> Result<Hash, AdmitError> {
        if gossip {
            self.backlog_room()?;
        }
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
    /// Client batches (`gossip`) are cut to the backlog's room; the rest is refused with
    /// [`AdmitError::Backlog`].
    pub fn submit_batch(&self, txs: Vec<Tx>, gossip: bool) -> Vec<Result<Hash, AdmitError>> {
        let room = if gossip {
            self.backlog_room().unwrap_or(0)
        } else {
            txs.len()
        };
        let take = room.min(txs.len());
        let mut results = {
            let store = self.ledger.read();
            let ctx = next_ctx(&store);
            self.mempool.insert_batch(&txs[..take], store.state(), &ctx)
        };
        if take < txs.len() {
            let (pending, limit) = (self.mempool.len(), self.backlog_limit());
            results.extend((take..txs.len()).map(|_| Err(AdmitError::Backlog { pending, limit })));
        }
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

    /// Submits a validator's double vote that consensus found, signed by this node, unless the
    /// ledger would refuse it for coming less than `CONVICTION_SPACING` heights after the
    /// validator's last conviction, or after the last one this node reported: a validator that
    /// double-votes at every height would otherwise get a chain of evidence transactions of
    /// which all but the first are refused in blocks, each holding up this node's next ones.
    pub fn report_validator_evidence(&self, e: Box<meshward_core::tx::ValidatorEvidence>) {
        use meshward_core::ledger::CONVICTION_SPACING;
        let last_convicted = {
            let store = self.ledger.read();
            store
                .state()
                .conviction(&e.validator)
                .map(|c| c.last_height)
        };
        {
            let mut reported = meshward_core::sync::lock(&self.reported, "evidence reports");
            let last = reported.get(&e.validator).copied().max(last_convicted);
            if last.is_some_and(|h| e.height < h.saturating_add(CONVICTION_SPACING)) {
                return;
            }
            reported.insert(e.validator, e.height);
        }
        self.report(Some(meshward_core::tx::Evidence::Validator(e)));
    }

    /// Submits `evidence`, signed by this node: once it commits, the device is revoked (or the
    /// validator convicted). The mempool's admission check (the ledger's evidence rules) refuses
    /// evidence that does not hold.
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
            Ok(id) => tracing::warn!(evidence = %id, "misbehaviour seen; evidence submitted"),
            Err(e) => tracing::debug!(error = %e, "evidence not admitted"),
        }
    }

    /// Why `id` was refused, if this node remembers.
    pub fn rejection(&self, id: &Hash) -> Option<String> {
        self.rejections.reason(id)
    }

    /// Up to `max` pending transactions, in the order a block would take them (for handing to
    /// a gateway that joined after they were gossiped).
    pub fn pending(&self, max: usize) -> Vec<Tx> {
        self.mempool.reap(max, usize::MAX)
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
        self.mempool.ready_len()
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
        meshward_core::sync::lock(&self.finalised, "finalised rate")
            .record(Instant::now(), block.block.txs.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Client transactions beyond the backlog are refused (whole or the tail of a batch),
    /// gossip is not, and the refusal says why.
    #[test]
    fn client_transactions_beyond_the_backlog_are_refused() {
        use meshward_core::hash::Hash;
        use meshward_core::tx::{Anchor, Recipient};
        use meshward_store::synth::{Synth, SYNTH_CHAIN_ID};
        let dir = tempfile::tempdir().unwrap();
        let mut synth = Synth::create(dir.path(), 2).unwrap();
        synth.write_blocks(1, 0).unwrap();
        let devices = synth.devices().to_vec();
        let ledger = Ledger::new(synth.into_store());
        let (gossip, _rx) = mpsc::channel(16);
        let pool = TxPool::new(
            ledger,
            Mempool::new(crate::mempool::MempoolLimits::default()),
            gossip,
            None,
            Arc::new(Metrics::new()),
            Arc::new(ChainStats::new()),
        )
        .with_min_backlog(2);
        let anchor = |seq: u64| {
            let d = &devices[0];
            Tx::sign(
                SYNTH_CHAIN_ID,
                d.id(),
                &d.sign,
                seq,
                TxBody::Anchor(Anchor {
                    recipient: Recipient::Device(devices[1].id()),
                    commitment: Hash([seq as u8; 32]),
                    count: 1,
                    timestamp_ms: 1,
                    size_bytes: 1,
                }),
            )
        };
        let results = pool.submit_batch(vec![anchor(1), anchor(2), anchor(3)], true);
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        assert!(
            matches!(
                results[2],
                Err(AdmitError::Backlog {
                    pending: 2,
                    limit: 2
                })
            ),
            "{results:?}"
        );
        assert!(matches!(
            pool.submit(anchor(3), true),
            Err(AdmitError::Backlog { .. })
        ));
        assert_eq!(pool.len(), 2);
        // What another gateway gossiped was admitted there: it is not refused here.
        assert!(pool.submit(anchor(3), false).is_ok());
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn the_finalised_rate_covers_the_last_window_only() {
        let t = Instant::now();
        let mut f = Finalised::default();
        assert_eq!(f.rate(t), 0.0);
        f.record(t, 3_000);
        f.record(t + Duration::from_secs(1), 3_000);
        let later = t + Duration::from_secs(2);
        assert_eq!(f.rate(later), 6_000.0 / RATE_WINDOW_SECS);
        // Four seconds on, the first block left the window.
        f.record(t + Duration::from_secs(4), 0);
        assert_eq!(
            f.rate(t + Duration::from_secs(4)),
            3_000.0 / RATE_WINDOW_SECS
        );
        assert_eq!(f.blocks.len(), 2);
    }
}
