//! The cadence rule: when the next height may start, from what waits in the mempool.
//!
//! Under load, heights follow back to back: a mempool holding [`ConsensusConfig::batch_fill_txs`]
//! or more starts the next height at once. Under light load, what arrives within a short window
//! goes into one block: with fewer pending, the next height starts
//! [`ConsensusConfig::block_batch_ms`] after the oldest of them arrived, or at the heartbeat if
//! that comes first (so no transaction waits longer than either for its height to start). An idle chain writes no block except a heartbeat
//! [`ConsensusConfig::idle_block_interval_ms`] after its last height started (0: none at all).
//! Blocks committed through sync never wait.
//!
//! Every validator runs the same rule on its own mempool; gossip fills every mempool within
//! milliseconds, so they start a height nearly together, well within the propose timeout.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshward_consensus::cadence::{next_start, Start};
//! use meshward_consensus::ConsensusConfig;
//! let cfg = ConsensusConfig::new("/tmp/x", "/ip4/127.0.0.1/tcp/1");
//! let now = Instant::now();
//! // Idle: the heartbeat is due `idle_block_interval_ms` after the height started.
//! assert_eq!(next_start(&cfg, now, now, 0, None),
//!            Start::At(now + Duration::from_millis(cfg.idle_block_interval_ms)));
//! // Busy: at once.
//! assert_eq!(next_start(&cfg, now, now, cfg.batch_fill_txs, Some(now)), Start::Now);
//! ```

use std::time::{Duration, Instant};

use crate::ConsensusConfig;

/// When the next height starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Now.
    Now,
    /// At this instant, unless something changes before.
    At(Instant),
    /// Not until a transaction arrives (idle, with no heartbeat).
    WhenPending,
}

/// The cadence rule (see the module doc). `height_started`: when the height just finalised
/// started; `pending`: transactions in the mempool; `oldest_pending`: when the oldest of them
/// arrived (`None` if unknown: then it counts from `now`).
pub fn next_start(
    cfg: &ConsensusConfig,
    now: Instant,
    height_started: Instant,
    pending: usize,
    oldest_pending: Option<Instant>,
) -> Start {
    if pending >= cfg.batch_fill_txs.max(1) {
        return Start::Now;
    }
    let heartbeat = (cfg.idle_block_interval_ms > 0)
        .then(|| height_started + Duration::from_millis(cfg.idle_block_interval_ms));
    let at = if pending > 0 {
        // The window, but never later than the heartbeat would have come.
        let window = oldest_pending.unwrap_or(now) + Duration::from_millis(cfg.block_batch_ms);
        heartbeat.map_or(window, |h| h.min(window))
    } else {
        match heartbeat {
            Some(h) => h,
            None => return Start::WhenPending,
        }
    };
    if now >= at {
        Start::Now
    } else {
        Start::At(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(idle: u64, batch: u64, fill: usize) -> ConsensusConfig {
        let mut c = ConsensusConfig::new("/tmp/x", "/ip4/127.0.0.1/tcp/1");
        c.idle_block_interval_ms = idle;
        c.block_batch_ms = batch;
        c.batch_fill_txs = fill;
        c
    }

    #[test]
    fn an_idle_chain_waits_for_its_heartbeat_or_forever() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            next_start(&cfg(30_000, 250, 512), t, t, 0, None),
            Start::At(t + ms(30_000))
        );
        assert_eq!(
            next_start(&cfg(30_000, 250, 512), t + ms(30_000), t, 0, None),
            Start::Now
        );
        assert_eq!(
            next_start(&cfg(0, 250, 512), t + ms(99_999), t, 0, None),
            Start::WhenPending
        );
    }

    #[test]
    fn light_load_gathers_a_window_from_the_oldest_pending() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let c = cfg(30_000, 250, 512);
        // One transaction arrived 100 ms ago: 150 ms more.
        assert_eq!(
            next_start(&c, t + ms(100), t, 1, Some(t)),
            Start::At(t + ms(250))
        );
        assert_eq!(next_start(&c, t + ms(250), t, 3, Some(t)), Start::Now);
        // The window does not need a heartbeat, and never outlasts one.
        assert_eq!(
            next_start(&cfg(0, 250, 512), t, t, 1, Some(t)),
            Start::At(t + ms(250))
        );
        assert_eq!(
            next_start(&cfg(20, 250, 512), t, t, 1, Some(t)),
            Start::At(t + ms(20))
        );
    }

    #[test]
    fn heavy_load_starts_at_once() {
        let t = Instant::now();
        assert_eq!(
            next_start(&cfg(30_000, 250, 512), t, t, 512, Some(t)),
            Start::Now
        );
        assert_eq!(
            next_start(&cfg(30_000, 250, 512), t, t, 9_999, None),
            Start::Now
        );
    }
}
