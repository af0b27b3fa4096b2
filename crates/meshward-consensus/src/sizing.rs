//! Blocks sized to the time they take: how many transactions this node puts in its proposal.
//!
//! A proposal must be built, streamed and checked by the other validators within the propose
//! timeout, or they prevote nil and the height falls into round 1 (about a second lost). What a
//! block costs depends on the machine and its load, so the size comes from measurement: the
//! node keeps a moving average of the time per transaction it spends building its own proposals
//! and checking others' ([`BlockSizer::record_build`], [`BlockSizer::record_check`]), and
//! proposes at most as many transactions as fit [`BUDGET_FRACTION`] of the propose timeout at
//! their sum (`ConsensusConfig::max_block_txs` stays the ceiling). A height decided in a later
//! round than 0 halves the size, which then grows back by a tenth a height, so a node that
//! measured too optimistically backs off at once. Only this node's proposals change: the limit
//! a received block is checked against stays `max_block_txs`, so validators with different
//! measurements still agree on validity.
//!
//! ```
//! use std::time::Duration;
//! use meshward_consensus::sizing::BlockSizer;
//! let mut s = BlockSizer::new(10_000);
//! // 2,000 transactions took 100 ms to build and 100 ms to check here: 100 µs each.
//! s.record_build(2_000, Duration::from_millis(100));
//! s.record_check(2_000, Duration::from_millis(100));
//! // Half of a 500 ms propose timeout fits 2,500 of them.
//! assert_eq!(s.max_txs(Duration::from_millis(500)), 2_500);
//! ```

use std::time::Duration;

/// The share of the propose timeout a proposal may spend on building and checking; the rest is
/// for streaming it and for the validators' skew in starting the height.
pub const BUDGET_FRACTION: f64 = 0.5;
/// Never propose fewer than this many transactions because of sizing (below it a block's fixed
/// costs dominate, and the measurements come from blocks at least this large).
pub const MIN_SIZED_TXS: usize = 256;
/// Blocks smaller than this do not update the measurement: their time is mostly fixed costs.
const MIN_SAMPLE_TXS: usize = 64;
/// Weight of a new sample in the moving averages.
const ALPHA: f64 = 0.3;

/// The measured cost of a transaction on this node, and the size it allows.
#[derive(Debug, Clone)]
pub struct BlockSizer {
    ceiling: usize,
    build_us_per_tx: Option<f64>,
    check_us_per_tx: Option<f64>,
    /// Multiplicative back-off after a late round, recovering towards 1.
    backoff: f64,
    late_rounds: u64,
}

impl BlockSizer {
    /// A sizer that never proposes more than `ceiling` transactions.
    pub fn new(ceiling: usize) -> BlockSizer {
        BlockSizer {
            ceiling: ceiling.max(1),
            build_us_per_tx: None,
            check_us_per_tx: None,
            backoff: 1.0,
            late_rounds: 0,
        }
    }

    fn update(avg: &mut Option<f64>, n: usize, took: Duration) {
        if n < MIN_SAMPLE_TXS {
            return;
        }
        let sample = took.as_secs_f64() * 1e6 / n as f64;
        *avg = Some(match *avg {
            None => sample,
            Some(a) => a + ALPHA * (sample - a),
        });
    }

    /// This node built a proposal of `n` transactions in `took`.
    pub fn record_build(&mut self, n: usize, took: Duration) {
        Self::update(&mut self.build_us_per_tx, n, took);
    }

    /// This node checked a proposal of `n` transactions in `took`.
    pub fn record_check(&mut self, n: usize, took: Duration) {
        Self::update(&mut self.check_us_per_tx, n, took);
    }

    /// A height was decided in `round`: a late round halves the size; round 0 lets it grow
    /// back.
    pub fn record_decided(&mut self, round: u32) {
        if round > 0 {
            self.late_rounds += 1;
            self.backoff = (self.backoff * 0.5).max(0.01);
        } else {
            self.backoff = (self.backoff * 1.1).min(1.0);
        }
    }

    /// Heights decided in a round after 0, as seen by [`BlockSizer::record_decided`].
    pub fn late_rounds(&self) -> u64 {
        self.late_rounds
    }

    /// The measured build plus check time of one transaction, in µs (None until measured).
    pub fn us_per_tx(&self) -> Option<f64> {
        match (self.build_us_per_tx, self.check_us_per_tx) {
            (None, None) => None,
            (b, c) => Some(b.or(c).unwrap_or(0.0) + c.or(b).unwrap_or(0.0)),
        }
    }

    /// How many transactions this node's next proposal may hold under `propose_timeout`.
    pub fn max_txs(&self, propose_timeout: Duration) -> usize {
        let by_time = match self.us_per_tx() {
            Some(us) if us > 0.0 => {
                let budget_us = propose_timeout.as_secs_f64() * 1e6 * BUDGET_FRACTION;
                (budget_us / us) as usize
            }
            _ => self.ceiling,
        };
        let sized = (by_time as f64 * self.backoff) as usize;
        sized.clamp(MIN_SIZED_TXS.min(self.ceiling), self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn unmeasured_proposes_the_ceiling_and_small_blocks_do_not_count() {
        let mut s = BlockSizer::new(10_000);
        assert_eq!(s.max_txs(MS(500)), 10_000);
        s.record_build(10, MS(400));
        assert_eq!(s.max_txs(MS(500)), 10_000);
    }

    #[test]
    fn a_slow_machine_gets_smaller_blocks_but_never_below_the_floor() {
        let mut s = BlockSizer::new(10_000);
        // 1 ms a transaction: 250 ms fits 250, floored at 256.
        s.record_build(1_000, MS(500));
        s.record_check(1_000, MS(500));
        assert_eq!(s.max_txs(MS(500)), MIN_SIZED_TXS);
        // Faster again: the average follows.
        for _ in 0..30 {
            s.record_build(1_000, MS(10));
            s.record_check(1_000, MS(10));
        }
        assert!(s.max_txs(MS(500)) > 5_000, "{}", s.max_txs(MS(500)));
    }

    #[test]
    fn a_late_round_halves_and_round_zero_recovers() {
        let mut s = BlockSizer::new(10_000);
        s.record_build(1_000, MS(20));
        s.record_check(1_000, MS(20));
        let full = s.max_txs(MS(500));
        assert_eq!(full, 6_250);
        s.record_decided(1);
        assert_eq!(s.max_txs(MS(500)), full / 2);
        assert_eq!(s.late_rounds(), 1);
        for _ in 0..20 {
            s.record_decided(0);
        }
        assert_eq!(s.max_txs(MS(500)), full);
    }
}
