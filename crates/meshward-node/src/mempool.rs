//! The mempool: transactions waiting for a block.
//!
//! Bounded in count and bytes, deduplicated by transaction id and by `(signer, seq)`, checked
//! on entry (signature against the signer's current key, sequence number, and the ledger rules
//! for the signer's next transaction), with a per-sender quota so one flooding sender cannot
//! crowd out the rest. Transactions included in a decided block, or made stale by it, are
//! evicted on commit.
//!
//! It is shared between the API and gossip (which insert) and consensus (which reaps), so it
//! is a small type with one `Mutex` inside. Discipline: every operation takes the lock for one
//! step over in-memory maps and does no I/O under it. Signature checks, the costly part of
//! admission, run between `precheck`'s lock and `admit`'s, without it, so
//! a batch verification never stalls consensus reaping. Callers that read the ledger take its
//! read guard first and the mempool lock second, never the other way round.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::ledger::{apply_with, preverify_batch, verify_signature, ApplyCtx, Reject};
use meshward_core::state::{State, StateView};
use meshward_core::tx::{Enroll, Tx, TxBody};
use meshward_core::CertifiedBlock;

/// Limits of the mempool.
#[derive(Debug, Clone, Copy)]
pub struct MempoolLimits {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most encoded bytes held.
    pub max_bytes: usize,
    /// Most transactions held for one signer.
    pub max_per_sender: usize,
    /// How far past the signer's next sequence number a transaction may be.
    pub max_seq_ahead: u64,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits {
            // About three full blocks: enough to keep consensus busy under peak load, small
            // enough for a gateway on a small box (a pending anchor costs about 0.5 KiB here).
            max_txs: 32_768,
            max_bytes: 16 * 1024 * 1024,
            max_per_sender: 256,
            max_seq_ahead: 256,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The same transaction (same id) is already pending.
    #[error("transaction is already pending")]
    Duplicate,
    /// A different transaction of the same signer and sequence number is pending (for
    /// anchors, evidence of equivocation).
    #[error("another transaction with the same signer and sequence number is pending")]
    Conflict,
    /// The signer's sequence number is already committed.
    #[error("sequence number {seq} was already used (next is {next})")]
    Stale {
        /// The transaction's sequence number.
        seq: u64,
        /// The signer's next one.
        next: u64,
    },
    /// Further past the signer's next sequence number than [`MempoolLimits::max_seq_ahead`].
    #[error("sequence number {seq} is too far ahead (next is {next})")]
    TooFarAhead {
        /// The transaction's sequence number.
        seq: u64,
        /// The signer's next one.
        next: u64,
    },
    /// The signer already has [`MempoolLimits::max_per_sender`] transactions pending.
    #[error("sender has {0} transactions pending, the most allowed")]
    SenderQuota(usize),
    /// The mempool is at its count or byte limit.
    #[error("mempool is full")]
    Full,
    /// More is pending than the chain finalises in [`crate::txpool::BACKLOG_SECS`]: a client's
    /// transaction would wait for seconds, so it is refused now and the client retries.
    #[error("{pending} transactions are pending, more than the chain finalises in about a second ({limit}); retry shortly")]
    Backlog {
        /// Transactions pending here.
        pending: usize,
        /// The backlog this node accepts new client transactions up to.
        limit: usize,
    },
    /// The ledger's rules refuse it (bad signature, revoked device, forbidden pair, …).
    #[error("rejected by the ledger: {0}")]
    Rejected(Reject),
}

struct Entry {
    tx: Tx,
    id: Hash,
    bytes: usize,
    received: Instant,
    /// The key the signature was verified under on admission.
    verified: PublicKey,
}

/// What [`Mempool::precheck`] found.
struct Pre {
    id: Hash,
    bytes: usize,
    /// The signer's next sequence number in the committed state.
    next: u64,
}

/// The signature and ledger checks: the signer's next transaction is checked against every
/// ledger rule; later ones depend on the ones before them, so they get the signature check here
/// and the full check when a proposer builds a block. `pre` is a key the signature was already
/// verified under, if any. Returns the key the signature is valid under.
fn check_rules(
    tx: &Tx,
    next: u64,
    state: &State,
    ctx: &ApplyCtx,
    pre: Option<&PublicKey>,
) -> Result<PublicKey, AdmitError> {
    let key = state.account(&tx.signer).map_or(tx.signer, |a| a.sign_key);
    if tx.seq == next {
        apply_with(state, tx, ctx, pre).map_err(AdmitError::Rejected)?;
    } else if pre != Some(&key) {
        verify_signature(state, tx).map_err(AdmitError::Rejected)?;
    }
    Ok(key)
}

#[derive(Default)]
struct Inner {
    /// Per signer, by sequence number.
    by_sender: HashMap<PublicKey, BTreeMap<u64, Entry>>,
    /// Ids of everything held.
    ids: HashMap<Hash, (PublicKey, u64)>,
    /// Arrival order, for fair reaping; may hold entries already removed (skipped lazily).
    arrivals: VecDeque<(PublicKey, u64, Hash)>,
    bytes: usize,
    count: usize,
    /// Signers whose lowest pending sequence number is not their next one: nothing of theirs
    /// can go into a block until the missing one arrives. Set when a block commits, cleared
    /// when the signer sends another transaction.
    parked: HashSet<PublicKey>,
    /// Transactions of parked signers.
    parked_count: usize,
    /// Signers admitted since the last commit: the next commit checks whether to park them.
    arrived: HashSet<PublicKey>,
}

impl Inner {
    /// Parks each of `signers` whose lowest pending sequence number is not the next one after
    /// `state` (the committed state), and unparks the others. Only signers a commit or an
    /// admission touched can change, so a commit looks at those, not at every pending sender.
    fn repark(&mut self, signers: impl IntoIterator<Item = PublicKey>, state: &State) {
        for s in signers {
            if self.parked.remove(&s) {
                self.parked_count -= self.by_sender.get(&s).map_or(0, BTreeMap::len);
            }
            let Some(q) = self.by_sender.get(&s) else {
                continue;
            };
            let next = state.account(&s).map_or(1, |a| a.seq + 1);
            if q.keys().next() != Some(&next) {
                self.parked.insert(s);
                self.parked_count += q.len();
            }
        }
    }
}

/// The mempool.
pub struct Mempool {
    limits: MempoolLimits,
    inner: Mutex<Inner>,
}

/// What eviction removed, for the caller's bookkeeping.
#[derive(Debug, Default)]
pub struct Evicted {
    /// Included in the block, with the time each was first received here.
    pub included: Vec<(Hash, Instant)>,
    /// Stale or dropped as invalid.
    pub dropped: Vec<Hash>,
}

impl Mempool {
    /// An empty mempool with `limits`.
    pub fn new(limits: MempoolLimits) -> Self {
        Mempool {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        meshward_core::sync::lock(&self.inner, "mempool")
    }

    /// How many transactions are pending.
    pub fn len(&self) -> usize {
        self.lock().count
    }

    /// How many pending transactions a block could include now: those of parked signers
    /// (waiting for a missing sequence number) do not count, so a gap left by a client cannot
    /// make the cadence start heights back to back.
    pub fn ready_len(&self) -> usize {
        let inner = self.lock();
        inner.count - inner.parked_count
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the oldest pending transaction of a signer that is not parked arrived here.
    pub fn oldest_received(&self) -> Option<Instant> {
        let inner = self.lock();
        // `arrivals` may lead with entries already removed; the first live one is the oldest.
        inner.arrivals.iter().find_map(|(signer, seq, id)| {
            if inner.parked.contains(signer) {
                return None;
            }
            let e = inner.by_sender.get(signer)?.get(seq)?;
            (e.id == *id).then_some(e.received)
        })
    }

    /// Whether the transaction `id` is pending.
    pub fn contains(&self, id: &Hash) -> bool {
        self.lock().ids.contains_key(id)
    }

    /// The pending transaction of `signer` with sequence number `seq`, if any.
    pub fn pending_at(&self, signer: &PublicKey, seq: u64) -> Option<Tx> {
        self.lock()
            .by_sender
            .get(signer)
            .and_then(|q| q.get(&seq))
            .map(|e| e.tx.clone())
    }

    /// The sequence number `signer`'s next transaction should carry: one past the committed
    /// one in `state`, plus what of theirs is pending here. `None`: no such account.
    pub fn next_seq(&self, state: &State, signer: &PublicKey) -> Option<u64> {
        let committed = state.account(signer)?.seq;
        let pending = self.lock().by_sender.get(signer).map_or(0, |q| q.len());
        Some(committed + 1 + pending as u64)
    }

    /// Checks a transaction against `state` (the committed state) and admits it.
    pub fn insert(&self, tx: Tx, state: &State, ctx: &ApplyCtx) -> Result<Hash, AdmitError> {
        let pre = self.precheck(&tx, state)?;
        let key = check_rules(&tx, pre.next, state, ctx, None)?;
        self.admit(tx, pre, key)
    }

    /// Checks and admits many transactions at once, as [`Mempool::insert`] does each, but with
    /// the signatures of those that pass the cheap checks verified in one batch. The results
    /// are in the order of `txs`; only admitted transactions are copied into the pool.
    pub fn insert_batch(
        &self,
        txs: &[Tx],
        state: &State,
        ctx: &ApplyCtx,
    ) -> Vec<Result<Hash, AdmitError>> {
        let checked: Vec<Result<Pre, AdmitError>> =
            txs.iter().map(|tx| self.precheck(tx, state)).collect();
        // Verify in one batch the signatures of the transactions that passed; a failed batch
        // leaves each to be verified on its own below.
        let survivors: Vec<usize> = (0..txs.len()).filter(|&i| checked[i].is_ok()).collect();
        let to_verify: Vec<&Tx> = survivors.iter().map(|&i| &txs[i]).collect();
        let verified = preverify_batch(state, &to_verify);
        let mut known: Vec<Option<PublicKey>> = vec![None; txs.len()];
        for (&i, k) in survivors.iter().zip(verified) {
            known[i] = k;
        }
        txs.iter()
            .zip(checked)
            .zip(known)
            .map(|((tx, pre), k)| {
                let pre = pre?;
                let key = check_rules(tx, pre.next, state, ctx, k.as_ref())?;
                self.admit(tx.clone(), pre, key)
            })
            .collect()
    }

    /// For each of `txs`, the key its signature was verified under when this pool admitted it,
    /// if it is pending here (byte for byte: the id covers the signature).
    pub fn verified_keys(&self, txs: &[Tx]) -> Vec<Option<PublicKey>> {
        let inner = self.lock();
        txs.iter()
            .map(|tx| {
                let id = tx.id();
                let (signer, seq) = inner.ids.get(&id)?;
                let e = inner.by_sender.get(signer)?.get(seq)?;
                (e.id == id).then_some(e.verified)
            })
            .collect()
    }

    /// The checks that need neither a signature nor the ledger rules: sequence number,
    /// duplicates, quotas and room.
    fn precheck(&self, tx: &Tx, state: &State) -> Result<Pre, AdmitError> {
        let id = tx.id();
        let bytes = tx.to_bytes().len();
        let next = match state.account(&tx.signer) {
            Some(a) => a.seq + 1,
            None => match &tx.body {
                // A ticket enrollment is the device's own first transaction.
                TxBody::Enroll(Enroll {
                    ticket: Some(_), ..
                }) => 1,
                _ => return Err(AdmitError::Rejected(Reject::UnknownSigner(tx.signer))),
            },
        };
        if tx.seq < next {
            return Err(AdmitError::Stale { seq: tx.seq, next });
        }
        if tx.seq > next + self.limits.max_seq_ahead {
            return Err(AdmitError::TooFarAhead { seq: tx.seq, next });
        }
        let inner = self.lock();
        if inner.ids.contains_key(&id) {
            return Err(AdmitError::Duplicate);
        }
        if let Some(q) = inner.by_sender.get(&tx.signer) {
            if q.contains_key(&tx.seq) {
                return Err(AdmitError::Conflict);
            }
            if q.len() >= self.limits.max_per_sender {
                return Err(AdmitError::SenderQuota(q.len()));
            }
        }
        if inner.count >= self.limits.max_txs || inner.bytes + bytes > self.limits.max_bytes {
            return Err(AdmitError::Full);
        }
        Ok(Pre { id, bytes, next })
    }

    /// Holds a checked transaction, unless what the checks saw changed while the lock was
    /// released for them.
    fn admit(&self, tx: Tx, pre: Pre, verified: PublicKey) -> Result<Hash, AdmitError> {
        let Pre { id, bytes, .. } = pre;
        let mut inner = self.lock();
        if inner.ids.contains_key(&id) {
            return Err(AdmitError::Duplicate);
        }
        let q = inner.by_sender.entry(tx.signer).or_default();
        if q.contains_key(&tx.seq) {
            return Err(AdmitError::Conflict);
        }
        if q.len() >= self.limits.max_per_sender {
            return Err(AdmitError::SenderQuota(q.len()));
        }
        let signer = tx.signer;
        let seq = tx.seq;
        // It may fill the gap its signer was parked on; the next commit checks again.
        let held = q.len();
        if inner.parked.remove(&signer) {
            inner.parked_count -= held;
        }
        inner.arrived.insert(signer);
        let q = inner.by_sender.entry(signer).or_default();
        q.insert(
            seq,
            Entry {
                tx,
                id,
                bytes,
                received: Instant::now(),
                verified,
            },
        );
        inner.ids.insert(id, (signer, seq));
        inner.arrivals.push_back((signer, seq, id));
        inner.bytes += bytes;
        inner.count += 1;
        Ok(id)
    }

    /// Candidates for the next block, at most `max_txs` and `max_bytes`: senders take turns,
    /// one transaction each per turn, in order of their earliest arrival, each sender's
    /// transactions in sequence order. A flooding sender therefore gets one slot per turn like
    /// everyone else.
    pub fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Tx> {
        let inner = self.lock();
        let mut order: Vec<PublicKey> = Vec::with_capacity(inner.by_sender.len());
        let mut seen: HashMap<PublicKey, ()> = HashMap::with_capacity(inner.by_sender.len());
        for (signer, _, id) in &inner.arrivals {
            if inner.parked.contains(signer) {
                continue;
            }
            if inner.ids.contains_key(id) && seen.insert(*signer, ()).is_none() {
                order.push(*signer);
            }
        }
        // Each sender's transactions, in sequence order.
        let mut queues: Vec<_> = order
            .iter()
            .filter_map(|s| inner.by_sender.get(s).map(|q| q.values().peekable()))
            .collect();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut progress = true;
        while progress && out.len() < max_txs {
            progress = false;
            for q in queues.iter_mut() {
                if out.len() >= max_txs {
                    break;
                }
                let Some(e) = q.next_if(|e| bytes + e.bytes <= max_bytes) else {
                    continue;
                };
                bytes += e.bytes;
                out.push(e.tx.clone());
                progress = true;
            }
        }
        out
    }

    /// Removes what `block` included and everything its commit made stale (at or below a
    /// signer's committed sequence number in `state`, the state after the block). Of the
    /// transactions the proposer `dropped`, only those that can never apply are removed: one
    /// whose predecessor has not arrived here yet stays, or a gap in gossip would lose it.
    pub fn on_committed(&self, block: &CertifiedBlock, dropped: &[Tx], state: &State) -> Evicted {
        let mut inner = self.lock();
        let mut ev = Evicted::default();
        for tx in &block.block.txs {
            if let Some(e) = remove(&mut inner, &tx.signer, tx.seq) {
                if e.id == tx.id() {
                    ev.included.push((e.id, e.received));
                } else {
                    ev.dropped.push(e.id);
                }
            }
        }
        let committed = |s: &PublicKey| state.account(s).map_or(0, |a| a.seq);
        for tx in dropped {
            // The next transaction of its signer, and still refused: invalid by the rules.
            if tx.seq <= committed(&tx.signer) + 1 {
                if let Some(e) = remove(&mut inner, &tx.signer, tx.seq) {
                    ev.dropped.push(e.id);
                }
            }
        }
        let signers: HashSet<PublicKey> = block.block.txs.iter().map(|t| t.signer).collect();
        for s in signers {
            let c = committed(&s);
            let stale: Vec<u64> = inner
                .by_sender
                .get(&s)
                .map(|q| q.range(..=c).map(|(k, _)| *k).collect())
                .unwrap_or_default();
            for seq in stale {
                if let Some(e) = remove(&mut inner, &s, seq) {
                    ev.dropped.push(e.id);
                }
            }
        }
        let mut touched = std::mem::take(&mut inner.arrived);
        touched.extend(block.block.txs.iter().map(|t| t.signer));
        touched.extend(dropped.iter().map(|t| t.signer));
        inner.repark(touched, state);
        // Keep the arrival queue from growing with removed entries.
        if inner.arrivals.len() > 2 * inner.count + 1024 {
            let Inner { arrivals, ids, .. } = &mut *inner;
            arrivals.retain(|(_, _, id)| ids.contains_key(id));
        }
        ev
    }
}

fn remove(inner: &mut Inner, signer: &PublicKey, seq: u64) -> Option<Entry> {
    let q = inner.by_sender.get_mut(signer)?;
    let e = q.remove(&seq)?;
    let emptied = q.is_empty();
    if emptied {
        inner.by_sender.remove(signer);
    }
    if inner.parked.contains(signer) {
        inner.parked_count -= 1;
        if emptied {
            inner.parked.remove(signer);
        }
    }
    inner.ids.remove(&e.id);
    inner.bytes -= e.bytes;
    inner.count -= 1;
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::chain::make_block;
    use meshward_core::ids::{Keypair, SignKey};
    use meshward_core::ledger::apply;
    use meshward_core::state::AdminSet;
    use meshward_core::tx::{enroll_body, Anchor, GroupName, Recipient, Validator, ValidatorSet};
    use meshward_core::CommitCertificate;
    use rand::rngs::OsRng;

    const CHAIN: &str = "mp";

    struct Fx {
        state: State,
        val: SignKey,
        devs: Vec<Keypair>,
        ctx: ApplyCtx,
    }

    fn fixture(n: usize) -> Fx {
        let admin = SignKey::generate(&mut OsRng);
        let val = SignKey::generate(&mut OsRng);
        let mut state = State::genesis(
            CHAIN,
            AdminSet::new(vec![admin.public()], 1).unwrap(),
            ValidatorSet::new(vec![Validator {
                key: val.public(),
                power: 1,
            }])
            .unwrap(),
        );
        let ctx = ApplyCtx {
            height: 1,
            time_ms: 1,
        };
        let devs: Vec<Keypair> = (0..n).map(|_| Keypair::generate(&mut OsRng)).collect();
        for (i, d) in devs.iter().enumerate() {
            let body = enroll_body(CHAIN, d, vec![GroupName::new("g").unwrap()], None);
            let tx = Tx::sign(CHAIN, admin.public(), &admin, i as u64 + 1, body);
            let delta = apply(&state, &tx, &ctx).unwrap();
            state.apply_delta(delta);
        }
        state.flush();
        Fx {
            state,
            val,
            devs,
            ctx,
        }
    }

    /// Block `height` over `txs`, applied to `f.state` and certified by the validator.
    fn commit(f: &mut Fx, height: u64, txs: Vec<Tx>) -> CertifiedBlock {
        let (block, _) = make_block(
            &mut f.state,
            Hash::ZERO,
            height,
            height,
            f.val.public(),
            txs,
            None,
            true,
        )
        .unwrap();
        let certificate = CommitCertificate::sign(CHAIN, &block.header, 0, &[&f.val]);
        CertifiedBlock { block, certificate }
    }

    fn anchor(f: &Fx, from: usize, seq: u64, c: u8) -> Tx {
        let d = &f.devs[from];
        let body = TxBody::Anchor(Anchor {
            recipient: Recipient::Device(f.devs[(from + 1) % f.devs.len()].id()),
            commitment: Hash([c; 32]),
            count: 1,
            timestamp_ms: 1,
            size_bytes: 1,
        });
        Tx::sign(CHAIN, d.id(), &d.sign, seq, body)
    }

    #[test]
    fn a_batch_is_admitted_tx_by_tx_with_one_bad_signature_refused() {
        let f = fixture(3);
        let mp = Mempool::new(MempoolLimits::default());
        let mut bad = anchor(&f, 1, 1, 1);
        bad.sig.0[0] ^= 1;
        let good = [
            anchor(&f, 0, 1, 1),
            anchor(&f, 0, 2, 2),
            anchor(&f, 2, 1, 3),
        ];
        let batch = vec![
            good[0].clone(),
            good[1].clone(),
            bad,
            good[2].clone(),
            good[0].clone(),
        ];
        let results = mp.insert_batch(&batch, &f.state, &f.ctx);
        assert_eq!(results[0], Ok(good[0].id()));
        assert_eq!(results[1], Ok(good[1].id()));
        assert_eq!(results[2], Err(AdmitError::Rejected(Reject::BadSignature)));
        assert_eq!(results[3], Ok(good[2].id()));
        assert_eq!(results[4], Err(AdmitError::Duplicate));
        assert_eq!(mp.len(), 3);
    }

    #[test]
    fn a_batch_with_a_later_bad_signature_refuses_only_it() {
        // A transaction past the signer's next one gets only its signature checked on entry:
        // a failed batch must still find the bad one.
        let f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        let mut later_bad = anchor(&f, 0, 2, 2);
        later_bad.sig.0[5] ^= 1;
        let results = mp.insert_batch(
            &[anchor(&f, 0, 1, 1), later_bad, anchor(&f, 1, 1, 1)],
            &f.state,
            &f.ctx,
        );
        assert!(results[0].is_ok() && results[2].is_ok());
        assert_eq!(results[1], Err(AdmitError::Rejected(Reject::BadSignature)));
    }

    #[test]
    fn verified_keys_names_the_key_of_each_pending_tx_and_nothing_else() {
        let f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        let held = anchor(&f, 0, 1, 1);
        mp.insert(held.clone(), &f.state, &f.ctx).unwrap();
        let mut altered = held.clone();
        altered.sig.0[0] ^= 1;
        let keys = mp.verified_keys(&[held, altered, anchor(&f, 1, 1, 1)]);
        assert_eq!(keys, vec![Some(f.devs[0].id()), None, None]);
    }

    #[test]
    fn duplicates_and_conflicts_rejected() {
        let f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        let tx = anchor(&f, 0, 1, 1);
        mp.insert(tx.clone(), &f.state, &f.ctx).unwrap();
        assert_eq!(mp.insert(tx, &f.state, &f.ctx), Err(AdmitError::Duplicate));
        assert_eq!(
            mp.insert(anchor(&f, 0, 1, 2), &f.state, &f.ctx),
            Err(AdmitError::Conflict)
        );
        assert_eq!(mp.len(), 1);
    }

    #[test]
    fn invalid_transactions_rejected_on_entry() {
        let f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        let mut bad = anchor(&f, 0, 1, 1);
        bad.sig.0[0] ^= 1;
        assert_eq!(
            mp.insert(bad, &f.state, &f.ctx),
            Err(AdmitError::Rejected(Reject::BadSignature))
        );
        let mut later_bad = anchor(&f, 0, 3, 1);
        later_bad.sig.0[0] ^= 1;
        assert_eq!(
            mp.insert(later_bad, &f.state, &f.ctx),
            Err(AdmitError::Rejected(Reject::BadSignature))
        );
        assert_eq!(
            mp.insert(anchor(&f, 0, 0, 1), &f.state, &f.ctx),
            Err(AdmitError::Stale { seq: 0, next: 1 })
        );
        assert!(matches!(
            mp.insert(anchor(&f, 0, 10_000, 1), &f.state, &f.ctx),
            Err(AdmitError::TooFarAhead { .. })
        ));
        let stranger = Keypair::generate(&mut OsRng);
        let tx = Tx::sign(
            CHAIN,
            stranger.id(),
            &stranger.sign,
            1,
            anchor(&f, 0, 1, 1).body,
        );
        assert_eq!(
            mp.insert(tx, &f.state, &f.ctx),
            Err(AdmitError::Rejected(Reject::UnknownSigner(stranger.id())))
        );
        assert!(mp.is_empty());
    }

    #[test]
    fn per_sender_quota_protects_other_senders() {
        let f = fixture(2);
        let mp = Mempool::new(MempoolLimits {
            max_txs: 10,
            max_per_sender: 4,
            ..MempoolLimits::default()
        });
        for seq in 1..=4 {
            mp.insert(anchor(&f, 0, seq, seq as u8), &f.state, &f.ctx)
                .unwrap();
        }
        assert_eq!(
            mp.insert(anchor(&f, 0, 5, 5), &f.state, &f.ctx),
            Err(AdmitError::SenderQuota(4))
        );
        mp.insert(anchor(&f, 1, 1, 1), &f.state, &f.ctx).unwrap();
        // The second sender's transaction is reaped early, not after the flood.
        let reaped = mp.reap(2, usize::MAX);
        assert!(reaped.iter().any(|t| t.signer == f.devs[1].id()));
    }

    #[test]
    fn bounded_in_count_and_bytes() {
        let f = fixture(3);
        let mp = Mempool::new(MempoolLimits {
            max_txs: 2,
            ..MempoolLimits::default()
        });
        mp.insert(anchor(&f, 0, 1, 1), &f.state, &f.ctx).unwrap();
        mp.insert(anchor(&f, 1, 1, 1), &f.state, &f.ctx).unwrap();
        assert_eq!(
            mp.insert(anchor(&f, 2, 1, 1), &f.state, &f.ctx),
            Err(AdmitError::Full)
        );
        let small = Mempool::new(MempoolLimits {
            max_bytes: 300,
            ..MempoolLimits::default()
        });
        small.insert(anchor(&f, 0, 1, 1), &f.state, &f.ctx).unwrap();
        assert_eq!(
            small.insert(anchor(&f, 1, 1, 1), &f.state, &f.ctx),
            Err(AdmitError::Full)
        );
    }

    #[test]
    fn reap_respects_sequence_order_and_limits() {
        let f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        // Arrive out of order.
        mp.insert(anchor(&f, 0, 2, 2), &f.state, &f.ctx).unwrap();
        mp.insert(anchor(&f, 0, 1, 1), &f.state, &f.ctx).unwrap();
        mp.insert(anchor(&f, 1, 1, 1), &f.state, &f.ctx).unwrap();
        let all = mp.reap(10, usize::MAX);
        let seqs: Vec<(PublicKey, u64)> = all.iter().map(|t| (t.signer, t.seq)).collect();
        let pos = |s: (PublicKey, u64)| seqs.iter().position(|x| *x == s).unwrap();
        assert_eq!(all.len(), 3);
        assert!(pos((f.devs[0].id(), 1)) < pos((f.devs[0].id(), 2)));
        assert_eq!(mp.reap(1, usize::MAX).len(), 1);
        let one_bytes = all[0].to_bytes().len();
        assert_eq!(mp.reap(10, one_bytes).len(), 1);
    }

    #[test]
    fn dropped_future_transaction_waits_for_its_predecessor() {
        let mut f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        // Seq 2 arrived here before seq 1: a proposer dropped it, but it must stay.
        let later = anchor(&f, 0, 2, 2);
        mp.insert(later.clone(), &f.state, &f.ctx).unwrap();
        let (block, _) = make_block(
            &mut f.state,
            Hash::ZERO,
            2,
            2,
            f.val.public(),
            vec![],
            None,
            true,
        )
        .unwrap();
        let cert = CommitCertificate::sign(CHAIN, &block.header, 0, &[&f.val]);
        let cb = CertifiedBlock {
            block,
            certificate: cert,
        };
        mp.on_committed(&cb, std::slice::from_ref(&later), &f.state);
        assert_eq!(mp.len(), 1);
        // Once seq 1 is committed elsewhere, seq 2 is the next one and is reaped.
        let first = anchor(&f, 0, 1, 1);
        let (block, _) = make_block(
            &mut f.state,
            Hash::ZERO,
            3,
            3,
            f.val.public(),
            vec![first],
            None,
            true,
        )
        .unwrap();
        let cert = CommitCertificate::sign(CHAIN, &block.header, 0, &[&f.val]);
        mp.on_committed(
            &CertifiedBlock {
                block,
                certificate: cert,
            },
            &[],
            &f.state,
        );
        assert_eq!(mp.reap(10, usize::MAX), vec![later]);
    }

    #[test]
    fn committed_block_evicts_included_and_stale() {
        let mut f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        let a1 = anchor(&f, 0, 1, 1);
        mp.insert(a1.clone(), &f.state, &f.ctx).unwrap();
        mp.insert(anchor(&f, 1, 1, 1), &f.state, &f.ctx).unwrap();
        // Another node's block includes a different tx with dev 1's seq 1, and a1.
        let other = anchor(&f, 1, 1, 9);
        let (block, _) = make_block(
            &mut f.state,
            Hash::ZERO,
            2,
            2,
            f.val.public(),
            vec![a1, other],
            None,
            true,
        )
        .unwrap();
        let cert = CommitCertificate::sign(CHAIN, &block.header, 0, &[&f.val]);
        let ev = mp.on_committed(
            &CertifiedBlock {
                block,
                certificate: cert,
            },
            &[],
            &f.state,
        );
        assert_eq!(ev.included.len(), 1);
        assert_eq!(ev.dropped.len(), 1);
        assert!(mp.is_empty());
    }

    #[test]
    fn a_signer_with_a_gap_is_parked_until_it_sends_again() {
        let mut f = fixture(2);
        let mp = Mempool::new(MempoolLimits::default());
        // Seq 2 with seq 1 missing, and another signer's ready transaction.
        let later = anchor(&f, 0, 2, 2);
        mp.insert(later.clone(), &f.state, &f.ctx).unwrap();
        let ready = anchor(&f, 1, 1, 1);
        mp.insert(ready.clone(), &f.state, &f.ctx).unwrap();
        assert_eq!(mp.ready_len(), 2, "nothing is parked before a commit looks");
        let cb = commit(&mut f, 2, vec![]);
        mp.on_committed(&cb, std::slice::from_ref(&later), &f.state);
        // Held (a gap in gossip must not lose it), but neither counted nor reaped.
        assert_eq!((mp.len(), mp.ready_len()), (2, 1));
        assert_eq!(mp.reap(10, usize::MAX), vec![ready.clone()]);
        assert!(mp.oldest_received().is_some());
        mp.on_committed(&cb, &[], &f.state);
        assert_eq!(mp.ready_len(), 1);
        // The missing seq 1 arrives: the signer is unparked and both are reaped in order.
        let first = anchor(&f, 0, 1, 1);
        mp.insert(first.clone(), &f.state, &f.ctx).unwrap();
        assert_eq!(mp.ready_len(), 3);
        let reaped = mp.reap(10, usize::MAX);
        assert_eq!(reaped.len(), 3);
        assert!(reaped.contains(&first) && reaped.contains(&later));
        // A parked signer's transactions leave the parked count as they are removed.
        mp.on_committed(&cb, std::slice::from_ref(&later), &f.state);
        assert_eq!(
            mp.ready_len(),
            3,
            "seq 1 is pending, so seq 2 is not parked"
        );
    }
}
