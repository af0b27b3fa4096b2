//! Prometheus metrics, named `meshward_<area>_<what>_<unit>`, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The node's metrics. Cheap to update from any task (atomics inside).
pub struct Metrics {
    registry: Registry,
    pub height: Gauge,
    pub finalized_txs: Counter,
    pub round_timeouts: Counter,
    pub peers: Gauge,
    pub mempool_txs: Gauge,
    pub finality_latency: Histogram,
    pub rejected_txs: Counter,
    /// The height up to which committed blocks were applied to the connection gate.
    pub gate_applied_height: Gauge,
    /// Consensus events the event loop missed because it fell behind (harmless: see
    /// `follower`).
    pub consensus_events_lagged: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let height = Gauge::default();
        let finalized_txs = Counter::default();
        let round_timeouts = Counter::default();
        let peers = Gauge::default();
        let mempool_txs = Gauge::default();
        let rejected_txs = Counter::default();
        let gate_applied_height = Gauge::default();
        let consensus_events_lagged = Counter::default();
        // 1 ms to about 16 s.
        let finality_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "meshward_chain_height",
            "Height of the last finalised block",
            height.clone(),
        );
        registry.register(
            "meshward_chain_finalized_txs",
            "Transactions finalised in blocks",
            finalized_txs.clone(),
        );
        registry.register(
            "meshward_consensus_round_timeouts",
            "Consensus rounds that ended in a timeout",
            round_timeouts.clone(),
        );
        registry.register("meshward_net_peers", "Connected mesh peers", peers.clone());
        registry.register(
            "meshward_mempool_txs",
            "Transactions waiting in the mempool",
            mempool_txs.clone(),
        );
        registry.register(
            "meshward_mempool_rejected_txs",
            "Transactions refused on entry to the mempool",
            rejected_txs.clone(),
        );
        registry.register(
            "meshward_chain_finality_latency_seconds",
            "Time from a transaction's arrival at this node to its block's finalisation",
            finality_latency.clone(),
        );
        registry.register(
            "meshward_gate_applied_height",
            "Height up to which committed revocations were applied to the connection gate",
            gate_applied_height.clone(),
        );
        registry.register(
            "meshward_node_consensus_events_lagged",
            "Consensus events the node's event loop missed because it fell behind",
            consensus_events_lagged.clone(),
        );
        Metrics {
            registry,
            gate_applied_height,
            consensus_events_lagged,
            height,
            finalized_txs,
            round_timeouts,
            peers,
            mempool_txs,
            finality_latency,
            rejected_txs,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
