//! Proposer selection with skipping of validators that stopped signing.
//!
//! The rule must give the same answer on every validator, so it reads only committed data that
//! all of them agree on: the `last_commit` certificates carried inside committed blocks (block
//! `b` carries the certificate of block `b - 1`). The decided round, or the precommits one node
//! happened to see, differ between nodes and are never used.
//!
//! - Round 0 of height `h`: round-robin by height over the *active* validators, those that
//!   signed at least one `last_commit` carried in blocks `h - K ..= h - 1` (K =
//!   [`ProposerHistory::window`]). If no validator qualifies (the first heights, or history
//!   lost), every validator is active.
//! - Rounds above 0: plain round-robin over all validators, `(h + round) mod n`. Liveness never
//!   depends on the skip rule: a validator wrongly skipped at round 0 is still reached by later
//!   rounds, and a dead one wrongly chosen at round 0 costs one propose timeout.
//!
//! A validator that comes back signs precommits again; once a block carries a certificate with
//! its signature, it is active again at round 0.
//!
//! A validator that a block convicts of equivocation (a `ValidatorEvidence` transaction in it) is
//! not active at round 0 for the next [`CONVICTION_SKIP_HEIGHTS`] heights, whatever it signs.

use std::collections::{BTreeMap, BTreeSet};

use meshward_core::block::Block;
use meshward_core::ids::PublicKey;
use meshward_core::tx::{Evidence, TxBody};

/// Heights after a block that convicts a validator of equivocation during which round 0 skips
/// that validator. Evidence convicts a validator at most once per
/// `meshward_core::ledger::CONVICTION_SPACING` heights, fewer than this, so one that keeps
/// double-voting stays skipped.
pub const CONVICTION_SKIP_HEIGHTS: u64 = 64;

/// The validators that signed the `last_commit` a block carries.
pub fn last_commit_signers(block: &Block) -> Vec<PublicKey> {
    block
        .last_commit
        .as_ref()
        .map(|c| c.signers().copied().collect())
        .unwrap_or_default()
}

/// The validators a block convicts of equivocation (its `ValidatorEvidence` transactions).
pub fn convicted_in(block: &Block) -> Vec<PublicKey> {
    block
        .txs
        .iter()
        .filter_map(|t| match &t.body {
            TxBody::Evidence(Evidence::Validator(e)) => Some(e.validator),
            _ => None,
        })
        .collect()
}

/// Entries kept beyond the window, so that queries for heights slightly behind the newest
/// recorded block (late messages of the height just decided) still see their own window.
const KEEP_EXTRA_HEIGHTS: u64 = 16;

/// The signers of the `last_commit` of recent committed blocks, by block height.
#[derive(Debug, Clone)]
pub struct ProposerHistory {
    window: u64,
    /// Block height -> validators that signed the `last_commit` that block carries.
    signers: BTreeMap<u64, BTreeSet<PublicKey>>,
    /// Block height -> validators that block convicted of equivocation (only non-empty sets).
    convicted: BTreeMap<u64, BTreeSet<PublicKey>>,
}

impl ProposerHistory {
    /// A history over the last `window` blocks (at least 1).
    pub fn new(window: u64) -> Self {
        ProposerHistory {
            window: window.max(1),
            signers: BTreeMap::new(),
            convicted: BTreeMap::new(),
        }
    }

    /// K: how many recent blocks' last commits decide who is active.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Records the signers of the `last_commit` carried by the committed block at
    /// `block_height` (an empty iterator for a block without one). Idempotent.
    pub fn record<'a>(
        &mut self,
        block_height: u64,
        signers: impl IntoIterator<Item = &'a PublicKey>,
    ) {
        self.signers
            .insert(block_height, signers.into_iter().copied().collect());
        let keep_from = block_height.saturating_sub(self.window + KEEP_EXTRA_HEIGHTS);
        self.signers = self.signers.split_off(&keep_from);
    }

    /// Records a committed block: the signers of its `last_commit` and whom it convicts.
    pub fn record_block(&mut self, block: &Block) {
        let h = block.header.height;
        self.record(h, &last_commit_signers(block));
        self.record_convictions(h, convicted_in(block));
    }

    /// Records the validators the committed block at `h` convicts of equivocation. Idempotent.
    pub fn record_convictions(&mut self, h: u64, convicted: Vec<PublicKey>) {
        if convicted.is_empty() {
            self.convicted.remove(&h);
        } else {
            self.convicted.insert(h, convicted.into_iter().collect());
        }
        let keep_from = h.saturating_sub(CONVICTION_SKIP_HEIGHTS + KEEP_EXTRA_HEIGHTS);
        self.convicted = self.convicted.split_off(&keep_from);
    }

    /// The validators that signed a last commit carried by blocks `height - K ..= height - 1`.
    pub fn active_signers(&self, height: u64) -> BTreeSet<PublicKey> {
        let from = height.saturating_sub(self.window).max(1);
        let mut out = BTreeSet::new();
        if height <= from {
            return out;
        }
        for (_, s) in self.signers.range(from..height) {
            out.extend(s.iter().copied());
        }
        let convicted_from = height.saturating_sub(CONVICTION_SKIP_HEIGHTS).max(1);
        for (_, c) in self.convicted.range(convicted_from..height) {
            for v in c {
                out.remove(v);
            }
        }
        out
    }

    /// The index into `validators` (in validator-set order) of the proposer for `height` and
    /// `round`. `validators` must not be empty.
    pub fn select_index(&self, validators: &[PublicKey], height: u64, round: u32) -> usize {
        let n = validators.len().max(1) as u64;
        if round > 0 {
            return ((height.wrapping_add(u64::from(round))) % n) as usize;
        }
        let active = self.active_signers(height);
        let eligible: Vec<usize> = validators
            .iter()
            .enumerate()
            .filter(|(_, v)| active.contains(v))
            .map(|(i, _)| i)
            .collect();
        if eligible.is_empty() {
            return (height % n) as usize;
        }
        eligible[(height % eligible.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> Vec<PublicKey> {
        (0..n).map(|i| PublicKey([i; 32])).collect()
    }

    /// Records blocks `from..=to`, each carrying a last commit signed by `signers`.
    fn fill(h: &mut ProposerHistory, from: u64, to: u64, signers: &[PublicKey]) {
        for b in from..=to {
            h.record(b, signers);
        }
    }

    #[test]
    fn without_history_round_zero_is_round_robin_over_all() {
        let vals = keys(4);
        let h = ProposerHistory::new(8);
        let picks: Vec<usize> = (1..=8)
            .map(|height| h.select_index(&vals, height, 0))
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 0, 1, 2, 3, 0]);
    }

    #[test]
    fn selection_is_deterministic() {
        let vals = keys(4);
        let mut a = ProposerHistory::new(8);
        let mut b = ProposerHistory::new(8);
        fill(&mut a, 2, 30, &vals[..3]);
        fill(&mut b, 2, 30, &vals[..3]);
        for height in 1..40 {
            for round in 0..3 {
                assert_eq!(
                    a.select_index(&vals, height, round),
                    b.select_index(&vals, height, round)
                );
            }
        }
    }

    #[test]
    fn skips_validator_absent_from_last_k_certificates() {
        let vals = keys(4);
        let mut h = ProposerHistory::new(8);
        // Everyone signed up to block 10; validator 3 is gone from block 11 on.
        fill(&mut h, 2, 10, &vals);
        fill(&mut h, 11, 30, &vals[..3]);
        // Height 31 reads blocks 23..=30: validator 3 signed none of them.
        for height in 31..60 {
            h.record(height - 1, &vals[..3]);
            assert_ne!(h.select_index(&vals, height, 0), 3, "height {height}");
        }
        // While validator 3 is still inside the window it may be picked.
        let mut early = ProposerHistory::new(8);
        fill(&mut early, 2, 10, &vals);
        fill(&mut early, 11, 12, &vals[..3]);
        assert!((11..20).any(|height| early.select_index(&vals, height, 0) == 3));
    }

    #[test]
    fn returns_when_it_signs_again() {
        let vals = keys(4);
        let mut h = ProposerHistory::new(8);
        fill(&mut h, 2, 30, &vals[..3]);
        for height in 31..40 {
            assert_ne!(h.select_index(&vals, height, 0), 3);
            h.record(height, &vals[..3]);
        }
        // Block 40 carries a certificate signed by validator 3 again, and so do later ones.
        let mut picks = Vec::new();
        for height in 41..50 {
            h.record(height - 1, &vals);
            picks.push(h.select_index(&vals, height, 0));
        }
        assert!(picks.contains(&3), "{picks:?}");
    }

    #[test]
    fn a_convicted_validator_is_skipped_for_the_conviction_window_though_it_signs() {
        let vals = keys(4);
        let mut h = ProposerHistory::new(8);
        fill(&mut h, 2, 30, &vals);
        // Block 30 convicts validator 3, which goes on signing every certificate.
        h.record_convictions(30, vec![vals[3]]);
        for height in 31..=(30 + CONVICTION_SKIP_HEIGHTS) {
            assert_ne!(h.select_index(&vals, height, 0), 3, "height {height}");
            h.record(height, &vals);
        }
        let mut picks = Vec::new();
        for height in (31 + CONVICTION_SKIP_HEIGHTS)..(40 + CONVICTION_SKIP_HEIGHTS) {
            picks.push(h.select_index(&vals, height, 0));
            h.record(height, &vals);
        }
        assert!(
            picks.contains(&3),
            "back in rotation after the window: {picks:?}"
        );
    }

    #[test]
    fn later_rounds_are_plain_round_robin() {
        let vals = keys(4);
        let mut h = ProposerHistory::new(8);
        fill(&mut h, 2, 30, &vals[..1]);
        for height in 20..30u64 {
            for round in 1..6u32 {
                assert_eq!(
                    h.select_index(&vals, height, round),
                    ((height + u64::from(round)) % 4) as usize
                );
            }
        }
        // Round 0 only ever picks the one active validator.
        assert!((20..30).all(|height| h.select_index(&vals, height, 0) == 0));
    }

    #[test]
    fn answers_for_a_height_do_not_change_when_newer_blocks_are_recorded() {
        let vals = keys(4);
        let mut h = ProposerHistory::new(4);
        fill(&mut h, 2, 20, &vals[..3]);
        let before: Vec<usize> = (15..=21)
            .map(|height| h.select_index(&vals, height, 0))
            .collect();
        fill(&mut h, 21, 25, &vals);
        let after: Vec<usize> = (15..=21)
            .map(|height| h.select_index(&vals, height, 0))
            .collect();
        assert_eq!(before, after);
    }
}
