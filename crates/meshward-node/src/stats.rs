//! What the operator's console and the metrics show of the chain over time: committed blocks
//! and transactions in 10-second buckets, finality latency samples, each validator's signing
//! record, and recent revocations.
//!
//! Owner and discipline: [`ChainStats`], a small type with one mutex. The follower records each
//! committed block ([`ChainStats::on_block`]), admission records finality samples
//! ([`ChainStats::on_final`]), the API reads snapshots. Every call holds the lock for one
//! in-memory step. Bounded: [`BUCKETS`] buckets of [`BUCKET_MS`], at most
//! [`SAMPLES_PER_BUCKET`] finality samples per bucket (later ones in a full bucket are dropped:
//! the quantiles then describe the first ones), [`RECENT_REVOCATIONS`] revocations.
//!
//! The signing record reads only committed certificates: a block's own certificate (who signed
//! it, as far as this node collected) and the `last_commit` the next block carries (the fullest
//! certificate, which the proposer-skip rule also reads). "Up" is the same rule as round-0
//! proposer selection: signed at least one of the last K last commits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use meshward_api::console::HistoryBucket;
use meshward_consensus::proposer::ProposerHistory;
use meshward_core::ids::PublicKey;
use meshward_core::CertifiedBlock;

/// Length of one history bucket.
pub const BUCKET_MS: u64 = 10_000;
/// Buckets kept: ten minutes.
pub const BUCKETS: usize = 60;
/// Finality samples kept per bucket.
pub const SAMPLES_PER_BUCKET: usize = 4096;
/// Revocations remembered for alerts.
pub const RECENT_REVOCATIONS: usize = 32;
/// K of the "up" rule: the proposer-skip window.
pub const SIGNING_WINDOW: u64 = meshward_consensus::config::DEFAULT_PROPOSER_HISTORY;

#[derive(Debug, Clone, Default)]
struct Bucket {
    start_ms: u64,
    blocks: u64,
    txs: u64,
    finality_ms: Vec<u32>,
}

/// One validator's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signing {
    /// The last height whose certificate it signed.
    pub last_signed: Option<u64>,
    /// Heights whose last commit lacks its signature, since this node started.
    pub missed: u64,
}

/// What one block changed in the signing record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigningUpdate {
    /// Every validator's last signed height, where known.
    pub last_signed: Vec<(PublicKey, u64)>,
    /// Validators missing from the last commit this block carries.
    pub missed: Vec<PublicKey>,
}

/// A revocation this node committed recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The device.
    pub device: PublicKey,
    /// The reason on the ledger.
    pub reason: String,
    /// Where.
    pub height: u64,
    /// By committed evidence (a quarantine) rather than by the admins.
    pub by_evidence: bool,
    /// When this node committed it, ms since the Unix epoch.
    pub at_ms: u64,
}

#[derive(Debug)]
struct Inner {
    buckets: VecDeque<Bucket>,
    signing: BTreeMap<PublicKey, Signing>,
    history: ProposerHistory,
    /// The height after the last recorded block.
    next_height: u64,
    revocations: VecDeque<Revocation>,
}

/// See the module doc.
#[derive(Debug)]
pub struct ChainStats {
    inner: Mutex<Inner>,
}

impl Default for ChainStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A snapshot for the console.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// One per bucket, oldest first, ending with the bucket that holds `now`.
    pub buckets: Vec<HistoryBucket>,
    /// Blocks and transactions per second over the last minute.
    pub blocks_per_s: f64,
    /// Transactions per second over the last minute.
    pub txs_per_s: f64,
    /// Finality (p50, p99, samples) over all buckets.
    pub finality: Option<(f64, f64, u64)>,
    /// Each validator's record.
    pub signing: BTreeMap<PublicKey, Signing>,
    /// Validators in the round-0 rotation for the next height (empty: all are).
    pub active: Vec<PublicKey>,
    /// Recent revocations, newest last.
    pub revocations: Vec<Revocation>,
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(f64::from(sorted[rank - 1]))
}

impl ChainStats {
    /// Empty stats.
    pub fn new() -> Self {
        ChainStats {
            inner: Mutex::new(Inner {
                buckets: VecDeque::with_capacity(BUCKETS),
                signing: BTreeMap::new(),
                history: ProposerHistory::new(SIGNING_WINDOW),
                next_height: 1,
                revocations: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        meshward_core::sync::lock(&self.inner, "chain stats")
    }

    /// The bucket for `now_ms`, created (and old ones dropped) as needed.
    fn bucket(inner: &mut Inner, now_ms: u64) -> &mut Bucket {
        let start = now_ms - now_ms % BUCKET_MS;
        if inner.buckets.back().is_none_or(|b| b.start_ms < start) {
            inner.buckets.push_back(Bucket {
                start_ms: start,
                ..Bucket::default()
            });
            while inner.buckets.len() > BUCKETS {
                inner.buckets.pop_front();
            }
        }
        inner
            .buckets
            .back_mut()
            .expect("a bucket was just pushed if there was none")
    }

    /// Records a committed block, with the validator set it was certified by. `count` says
    /// whether it counts towards throughput and missed signatures (false for the blocks
    /// replayed at start to warm up the signing record). Returns what changed in the signing
    /// record, for the metrics.
    pub fn on_block(
        &self,
        block: &CertifiedBlock,
        validators: &[PublicKey],
        now_ms: u64,
        count: bool,
    ) -> SigningUpdate {
        let mut update = SigningUpdate::default();
        let h = block.block.header.height;
        let mut g = self.lock();
        let inner = &mut *g;
        if count {
            let b = Self::bucket(inner, now_ms);
            b.blocks += 1;
            b.txs += block.block.txs.len() as u64;
        }
        for v in validators {
            inner.signing.entry(*v).or_default();
        }
        inner.signing.retain(|k, _| validators.contains(k));
        for s in block.certificate.signers() {
            if let Some(r) = inner.signing.get_mut(s) {
                r.last_signed = Some(r.last_signed.map_or(h, |x| x.max(h)));
            }
        }
        if let Some(lc) = &block.block.last_commit {
            let signed: Vec<&PublicKey> = lc.signers().collect();
            for (k, r) in inner.signing.iter_mut() {
                if signed.contains(&k) {
                    r.last_signed = Some(r.last_signed.map_or(lc.height, |x| x.max(lc.height)));
                } else if count {
                    r.missed += 1;
                    update.missed.push(*k);
                }
            }
        }
        // The same record the proposer-skipping rule keeps: signers, and convictions.
        inner.history.record_block(&block.block);
        inner.next_height = inner.next_height.max(h + 1);
        update.last_signed = inner
            .signing
            .iter()
            .filter_map(|(k, r)| Some((*k, r.last_signed?)))
            .collect();
        update
    }

    /// The validators in the round-0 rotation for the next height: those that signed one of
    /// the last K last commits (empty: none did, so all take turns).
    pub fn active(&self) -> std::collections::BTreeSet<PublicKey> {
        let g = self.lock();
        g.history.active_signers(g.next_height)
    }

    /// Records that a transaction this node saw arrive became final `latency_ms` later.
    pub fn on_final(&self, latency_ms: u64, now_ms: u64) {
        let mut g = self.lock();
        let b = Self::bucket(&mut g, now_ms);
        if b.finality_ms.len() < SAMPLES_PER_BUCKET {
            b.finality_ms
                .push(u32::try_from(latency_ms).unwrap_or(u32::MAX));
        }
    }

    /// Records a revocation committed now.
    pub fn on_revocation(&self, r: Revocation) {
        let mut g = self.lock();
        g.revocations.push_back(r);
        while g.revocations.len() > RECENT_REVOCATIONS {
            g.revocations.pop_front();
        }
    }

    /// A snapshot at `now_ms`.
    pub fn snapshot(&self, now_ms: u64) -> Snapshot {
        let g = self.lock();
        let now_start = now_ms - now_ms % BUCKET_MS;
        let first = now_start.saturating_sub(BUCKET_MS * (BUCKETS as u64 - 1));
        let mut buckets = Vec::with_capacity(BUCKETS);
        let mut all: Vec<u32> = Vec::new();
        let (mut recent_blocks, mut recent_txs) = (0u64, 0u64);
        let minute_from = now_ms.saturating_sub(60_000);
        for i in 0..BUCKETS as u64 {
            let start = first + i * BUCKET_MS;
            let b = g.buckets.iter().find(|b| b.start_ms == start);
            let span = if start == now_start {
                (now_ms - start).max(1)
            } else {
                BUCKET_MS
            };
            let (blocks, txs, mut f) = b.map_or((0, 0, Vec::new()), |b| {
                (b.blocks, b.txs, b.finality_ms.clone())
            });
            f.sort_unstable();
            if start + BUCKET_MS > minute_from {
                recent_blocks += blocks;
                recent_txs += txs;
            }
            buckets.push(HistoryBucket {
                start_ms: start,
                span_ms: span,
                blocks,
                txs,
                p50_ms: quantile(&f, 0.5),
                p99_ms: quantile(&f, 0.99),
            });
            all.extend_from_slice(&f);
        }
        all.sort_unstable();
        let window_s = ((now_ms - minute_from.max(first)) as f64 / 1000.0).max(1.0);
        let finality = quantile(&all, 0.5)
            .zip(quantile(&all, 0.99))
            .map(|(a, b)| (a, b, all.len() as u64));
        Snapshot {
            buckets,
            blocks_per_s: recent_blocks as f64 / window_s,
            txs_per_s: recent_txs as f64 / window_s,
            finality,
            signing: g.signing.clone(),
            active: g
                .history
                .active_signers(g.next_height)
                .into_iter()
                .collect(),
            revocations: g.revocations.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::block::{Block, BlockHeader, CommitCertificate, CommitSig};
    use meshward_core::hash::Hash;
    use meshward_core::ids::Signature;

    fn cert(height: u64, signers: &[PublicKey]) -> CommitCertificate {
        CommitCertificate {
            height,
            round: 0,
            block_hash: Hash::ZERO,
            signatures: signers
                .iter()
                .map(|v| CommitSig {
                    validator: *v,
                    sig: Signature([0; 64]),
                })
                .collect(),
        }
    }

    fn block(
        h: u64,
        txs: usize,
        signed: &[PublicKey],
        last: Option<&[PublicKey]>,
    ) -> CertifiedBlock {
        let header = BlockHeader {
            chain_id: "t".into(),
            height: h,
            prev_hash: Hash::ZERO,
            time_ms: 0,
            proposer: signed[0],
            tx_root: Hash::ZERO,
            tx_count: txs as u32,
            state_root: Hash::ZERO,
            validator_set_hash: Hash::ZERO,
            last_commit_hash: Hash::ZERO,
        };
        let _ = txs;
        CertifiedBlock {
            block: Block {
                header,
                txs: Vec::new(),
                last_commit: last.map(|s| cert(h - 1, s)),
            },
            certificate: cert(h, signed),
        }
    }

    #[test]
    fn a_validator_that_stops_signing_is_counted_missing_and_leaves_the_rotation() {
        let v: Vec<PublicKey> = (0..4).map(|i| PublicKey([i; 32])).collect();
        let s = ChainStats::new();
        s.on_block(&block(1, 0, &v, None), &v, 1_000, true);
        for h in 2..=20 {
            // From height 5 on, v[3] signs nothing.
            let signers: &[PublicKey] = if h <= 5 { &v } else { &v[..3] };
            s.on_block(
                &block(h, 0, &v[..3], Some(signers)),
                &v,
                1_000 + h * 100,
                true,
            );
        }
        let snap = s.snapshot(4_000);
        let r = snap.signing[&v[3]];
        assert_eq!(r.last_signed, Some(4), "{r:?}");
        assert_eq!(r.missed, 15);
        assert_eq!(snap.signing[&v[0]].missed, 0);
        assert_eq!(snap.signing[&v[0]].last_signed, Some(20));
        assert!(!snap.active.contains(&v[3]));
        assert!(snap.active.contains(&v[0]));
    }

    #[test]
    fn buckets_count_blocks_and_quantiles_come_from_samples() {
        let v = vec![PublicKey([1; 32])];
        let s = ChainStats::new();
        let t0 = 1_000_000;
        for i in 0..10 {
            s.on_block(&block(i + 1, 3, &v, None), &v, t0 + i * 1000, true);
        }
        for ms in 1..=100 {
            s.on_final(ms, t0 + 500);
        }
        let snap = s.snapshot(t0 + 9_500);
        assert_eq!(snap.buckets.len(), BUCKETS);
        let blocks: u64 = snap.buckets.iter().map(|b| b.blocks).sum();
        assert_eq!(blocks, 10);
        let (p50, p99, n) = snap.finality.unwrap();
        assert_eq!((p50, p99, n), (50.0, 99.0, 100));
        // Ten minutes later everything has aged out.
        let later = s.snapshot(t0 + 11 * 60_000);
        assert_eq!(later.buckets.iter().map(|b| b.blocks).sum::<u64>(), 0);
        assert!(later.finality.is_none());
    }
}
