//! Configuration of the consensus service.

use std::path::PathBuf;
use std::time::Duration;

use malachitebft_core_types::LinearTimeouts;

/// Round timeouts, tuned for validators on one LAN.
///
/// Malachite reads timeouts only from the per-height parameters the application hands it
/// (`HeightParams::timeouts`); the `timeout_*` keys of its own config are ignored, so these are
/// the only timeouts in force.
///
/// Why these defaults:
/// - A healthy height on a LAN takes tens of milliseconds (about 17 ms between blocks for four
///   validators on one machine), so no timeout fires while every validator is up.
/// - `propose_ms = 500`: the wait for the round's proposer. It must cover building and
///   checking a full block (batch signature verification of 10 000 transactions takes a few
///   hundred milliseconds on a two-core gateway) and the skew between validators starting a
///   height, which the idle cadence adds to (they start together within milliseconds once a
///   transaction is gossiped). It is also what a height costs when its round-0 proposer is dead,
///   which proposer skipping makes rare.
/// - `prevote_ms = precommit_ms = 200`: these only start once votes from more than 2/3 of the
///   power have arrived, so they just absorb stragglers; a LAN round trip is well under 1 ms.
/// - `*_delta_ms = 100`: each later round waits longer, so a slow or partitioned network still
///   converges.
/// - `rebroadcast_ms = 1000`: how often a validator stuck in a round re-sends its votes.
/// - `max_ms = 10 000`: no timeout grows beyond this however many rounds pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long round 0 waits for the proposer's block, ms (default 500).
    pub propose_ms: u64,
    /// How much longer each later round waits for its proposal, ms (default 100).
    pub propose_delta_ms: u64,
    /// How long to wait for the remaining prevotes once more than 2/3 arrived, ms (default 200).
    pub prevote_ms: u64,
    /// How much longer each later round waits for prevotes, ms (default 100).
    pub prevote_delta_ms: u64,
    /// How long to wait for the remaining precommits once more than 2/3 arrived, ms (default 200).
    pub precommit_ms: u64,
    /// How much longer each later round waits for precommits, ms (default 100).
    pub precommit_delta_ms: u64,
    /// How often a validator stuck in a round re-sends its votes, ms (default 1000).
    pub rebroadcast_ms: u64,
    /// Cap on any timeout however many rounds pass, ms (default 10 000; at least `propose_ms`).
    pub max_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            propose_ms: 500,
            propose_delta_ms: 100,
            prevote_ms: 200,
            prevote_delta_ms: 100,
            precommit_ms: 200,
            precommit_delta_ms: 100,
            rebroadcast_ms: 1000,
            max_ms: 10_000,
        }
    }
}

impl Timeouts {
    /// The engine's form.
    pub fn to_linear(&self) -> LinearTimeouts {
        let ms = Duration::from_millis;
        LinearTimeouts {
            propose: ms(self.propose_ms),
            propose_delta: ms(self.propose_delta_ms),
            prevote: ms(self.prevote_ms),
            prevote_delta: ms(self.prevote_delta_ms),
            precommit: ms(self.precommit_ms),
            precommit_delta: ms(self.precommit_delta_ms),
            rebroadcast: ms(self.rebroadcast_ms),
            max_timeout: ms(self.max_ms.max(self.propose_ms)),
        }
    }
}

/// Default most transactions in a block.
pub const DEFAULT_MAX_BLOCK_TXS: usize = 10_000;
/// Default most encoded transaction bytes in a block.
pub const DEFAULT_MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Default heartbeat cadence of an idle chain: one empty block every 30 s (about 2,900 a day),
/// which keeps the proposer-skip window and the validators' signing record fresh.
pub const DEFAULT_IDLE_BLOCK_INTERVAL_MS: u64 = 30_000;
/// Default batching window under light load. At a fleet's usual few messages a second it
/// gathers several into one block (a block's header and certificates cost more than a message),
/// while a transaction waits at most this long for its height to start.
pub const DEFAULT_BLOCK_BATCH_MS: u64 = 500;
/// Default number of pending transactions that starts the next height at once. Small enough
/// that under load (hundreds of transactions a second and more) the window never holds a height
/// back, large enough that a block's fixed cost is spread over many transactions.
pub const DEFAULT_BATCH_FILL_TXS: usize = 64;
/// Default K of proposer skipping: recent last commits that decide who proposes at round 0.
pub const DEFAULT_PROPOSER_HISTORY: u64 = 8;
/// Default capacity of the event channel; a subscriber that lags further loses events.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;
/// Default per-IP connection limit of Malachite's network. Malachite's own default is 5 and
/// persistent peers are exempt only from its reconnect throttle, not from this count.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 16;

/// Configuration of [`crate::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// The write-ahead log lives in `data_dir/wal`, proposals seen for the current height in
    /// `data_dir/proposals`.
    pub data_dir: PathBuf,
    /// Multiaddr of Malachite's own libp2p network, e.g. `/ip4/127.0.0.1/tcp/27000`.
    pub listen: String,
    /// Multiaddrs of the other validators. They are kept connected, and exempt from the
    /// reconnect throttle.
    pub persistent_peers: Vec<String>,
    /// Round timeouts ([`Timeouts`]); the only ones the engine uses.
    pub timeouts: Timeouts,
    /// Most transactions in a block this node proposes (default [`DEFAULT_MAX_BLOCK_TXS`]).
    pub max_block_txs: usize,
    /// Most encoded transaction bytes in a block. Every validator should use the same value:
    /// a proposal stream larger than this plus 1 MiB of overhead is refused.
    pub max_block_bytes: usize,
    /// How long an idle chain waits for a transaction before writing an empty heartbeat block
    /// (0: no heartbeat; an idle chain writes nothing). See [`crate::cadence`].
    pub idle_block_interval_ms: u64,
    /// Under light load, how long after the oldest pending transaction arrived the next height
    /// starts, so that what arrives within this window goes into one block.
    pub block_batch_ms: u64,
    /// With this many transactions pending, the next height starts at once (heavy load: heights
    /// back to back).
    pub batch_fill_txs: usize,
    /// K: how many recent committed last-commits decide which validators propose at round 0.
    pub proposer_history: u64,
    /// Most connections Malachite's network accepts from one IP address.
    pub max_connections_per_ip: usize,
    /// Capacity of the [`crate::ConsensusEvent`] broadcast channel.
    pub event_capacity: usize,
    /// A misbehaving validator, for the adversarial tests ([`crate::byzantine`]).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<crate::byzantine::ByzantineMode>,
}

impl ConsensusConfig {
    /// A configuration with the default limits, timeouts and cadence.
    pub fn new(data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> Self {
        ConsensusConfig {
            data_dir: data_dir.into(),
            listen: listen.into(),
            persistent_peers: Vec::new(),
            timeouts: Timeouts::default(),
            max_block_txs: DEFAULT_MAX_BLOCK_TXS,
            max_block_bytes: DEFAULT_MAX_BLOCK_BYTES,
            idle_block_interval_ms: DEFAULT_IDLE_BLOCK_INTERVAL_MS,
            block_batch_ms: DEFAULT_BLOCK_BATCH_MS,
            batch_fill_txs: DEFAULT_BATCH_FILL_TXS,
            proposer_history: DEFAULT_PROPOSER_HISTORY,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            #[cfg(feature = "byzantine")]
            byzantine: None,
        }
    }

    /// The write-ahead log's directory: `data_dir/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// Where proposals seen for the current height are kept: `data_dir/proposals`.
    pub fn proposals_dir(&self) -> PathBuf {
        self.data_dir.join("proposals")
    }
}
