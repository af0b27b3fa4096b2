//! The block watcher: a thread that polls the chain on the live nodes and records when each
//! block, and each transaction in it, was first seen (wall clock, µs), for throughput over time
//! and submit-to-final latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use meshward_api::client::ApiClient;

use crate::now_us;

/// How long one block request may take.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause when no node has the next block yet: latency overstates finality by up to this.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A block the watcher saw: when (µs), transactions, envelopes.
#[derive(Clone, Copy)]
pub(crate) struct SeenBlock {
    /// When it was first seen: wall clock, µs since the Unix epoch.
    pub(crate) at_us: u64,
    /// Transactions in it.
    pub(crate) txs: u64,
    /// Envelopes its anchors stand for (the sum of their `count`s).
    pub(crate) msgs: u64,
}

/// Polls the chain on live nodes and records when each block and transaction was first seen.
pub(crate) struct Watcher {
    /// Set to stop the polling thread.
    stop: Arc<AtomicBool>,
    /// Transaction id (hex) -> when it was first seen in a block (µs), when recording.
    seen: Arc<Mutex<HashMap<String, u64>>>,
    /// Every block seen, in height order.
    blocks: Arc<Mutex<Vec<SeenBlock>>>,
    /// The polling thread, until it is joined.
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching for blocks after `from` on `apis`; `record` also keeps each
    /// transaction's first sighting.
    pub(crate) fn start(apis: &[String], from: u64, record: bool) -> Result<Watcher> {
        // One client per node for the whole watch: ureq keeps the connections alive between
        // polls every few milliseconds.
        let nodes = apis
            .iter()
            .map(|a| Ok(ApiClient::new(a)?.with_timeout(BLOCK_TIMEOUT)))
            .collect::<Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let (s, se, bl) = (stop.clone(), seen.clone(), blocks.clone());
        let handle = std::thread::spawn(move || {
            let mut next = from + 1;
            while !s.load(Ordering::Relaxed) {
                let mut progressed = false;
                for node in &nodes {
                    let Ok(block) = node.block(next) else {
                        continue;
                    };
                    let now = now_us();
                    let msgs = block
                        .txs
                        .iter()
                        .filter_map(|t| t.count)
                        .map(u64::from)
                        .sum();
                    if record {
                        let mut m = meshward_core::sync::lock(&se, "seen transactions");
                        for t in &block.txs {
                            m.entry(t.id.clone()).or_insert(now);
                        }
                    }
                    meshward_core::sync::lock(&bl, "seen blocks").push(SeenBlock {
                        at_us: now,
                        txs: block.txs.len() as u64,
                        msgs,
                    });
                    next += 1;
                    progressed = true;
                    break;
                }
                if !progressed {
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
        });
        Ok(Watcher {
            stop,
            seen,
            blocks,
            handle: Some(handle),
        })
    }

    /// Stops watching; returns each transaction's first sighting and every block seen.
    pub(crate) fn finish(mut self) -> (HashMap<String, u64>, Vec<SeenBlock>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let seen = std::mem::take(&mut *meshward_core::sync::lock(
            &self.seen,
            "seen transactions",
        ));
        let blocks = std::mem::take(&mut *meshward_core::sync::lock(&self.blocks, "seen blocks"));
        (seen, blocks)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Finalised transactions and envelopes per second among blocks seen in `[from, to)` µs.
pub(crate) fn rate_in(blocks: &[SeenBlock], from: u64, to: u64) -> (f64, f64, f64) {
    let secs = (to.saturating_sub(from)) as f64 / 1e6;
    if secs <= 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let inside = blocks.iter().filter(|b| b.at_us >= from && b.at_us < to);
    let (mut n, mut txs, mut msgs) = (0u64, 0u64, 0u64);
    for b in inside {
        n += 1;
        txs += b.txs;
        msgs += b.msgs;
    }
    (txs as f64 / secs, msgs as f64 / secs, n as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_only_blocks_inside_the_window() {
        let b = |at_us, txs| SeenBlock {
            at_us,
            txs,
            msgs: txs * 64,
        };
        let blocks = [
            b(500_000, 10),
            b(1_000_000, 100),
            b(1_500_000, 100),
            b(2_000_000, 7),
        ];
        let (tx, msgs, bps) = rate_in(&blocks, 1_000_000, 2_000_000);
        assert_eq!(tx, 200.0);
        assert_eq!(msgs, 200.0 * 64.0);
        assert_eq!(bps, 2.0);
        assert_eq!(rate_in(&blocks, 5, 5), (0.0, 0.0, 0.0));
    }
}
