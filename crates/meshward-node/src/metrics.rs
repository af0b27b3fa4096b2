//! Prometheus metrics, named `meshward_<area>_<what>_<unit>`, served at `/metrics`. Counters
//! get the `_total` suffix in the exposition. `docs/ops/alerts.yml` holds alerting rules over
//! them.
//!
//! Most series are updated where things happen (atomics, no lock); a few that summarise state
//! (devices by status, mailbox depth, bytes on disk) are refreshed when `/metrics` is scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A validator label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidatorLabel {
    /// The validator's peer id.
    pub validator: String,
}

/// An equivocation label: the validator, and whether it signed two `vote`s or two `proposal`s.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EquivocationLabel {
    /// The validator's peer id.
    pub validator: String,
    /// `vote` or `proposal`.
    pub kind: String,
}

/// A device status label: `active`, `revoked`, `quarantined`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status.
    pub status: String,
}

/// A mesh connection kind: `gateway` (a validator), `device` (an enrolled device), `other`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// A file label: `chain` (`meshward.redb`) or `mailbox` (`mailbox.redb`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    /// The file.
    pub file: String,
}

/// An API route label (the route template, e.g. `/v1/blocks/{height}`) and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The HTTP method.
    pub method: String,
    /// The route template.
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 1.6 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The node's metrics. Cheap to update from any task (atomics inside).
pub struct Metrics {
    registry: Registry,
    /// Height of the last committed block.
    pub height: Gauge,
    /// Transactions in committed blocks.
    pub finalized_txs: Counter,
    /// Consensus rounds that ended in a timeout.
    pub round_timeouts: Counter,
    /// Heights this node committed that were decided in a round after 0 (a gauge of a count
    /// kept by consensus, so it cannot drift).
    pub late_round_heights: Gauge,
    /// How many transactions this node's next proposal may hold (sized to the propose timeout).
    pub proposal_limit_txs: Gauge,
    /// Connected mesh peers.
    pub peers: Gauge,
    /// Mesh connections by kind.
    pub connections: Family<KindLabel, Gauge>,
    /// Transactions waiting in the mempool.
    pub mempool_txs: Gauge,
    /// Arrival at this node to finality, seconds.
    pub finality_latency: Histogram,
    /// Transactions refused on entry to the mempool.
    pub rejected_txs: Counter,
    /// The height up to which committed blocks were applied to the connection gate.
    pub gate_applied_height: Gauge,
    /// Consensus events the event loop missed because it fell behind (harmless: the follower
    /// reads the store).
    pub consensus_events_lagged: Counter,
    /// Devices revoked by committed evidence.
    pub quarantines: Counter,
    /// Per validator: the last height whose certificate it signed.
    pub validator_last_signed: Family<ValidatorLabel, Gauge>,
    /// Per validator: heights whose last commit lacks its signature.
    pub validator_missed: Family<ValidatorLabel, Counter>,
    /// Heights at which this node's consensus saw a validator sign two conflicting votes or
    /// proposals.
    pub equivocations: Family<EquivocationLabel, Counter>,
    /// Heights at which evidence on the ledger convicted each validator of equivocation
    /// (refreshed on scrape).
    pub validator_convictions: Family<ValidatorLabel, Gauge>,
    /// Enrolled devices by status (refreshed on scrape).
    pub devices: Family<StatusLabel, Gauge>,
    /// Envelopes waiting in the mailboxes (refreshed on scrape).
    pub mailbox_envelopes: Gauge,
    /// Their bytes (refreshed on scrape).
    pub mailbox_bytes: Gauge,
    /// The most envelopes the mailboxes hold.
    pub mailbox_max_envelopes: Gauge,
    /// The most bytes they hold.
    pub mailbox_max_bytes: Gauge,
    /// Bytes of each store file on disk (refreshed on scrape).
    pub store_bytes: Family<FileLabel, Gauge>,
    /// Writes of each store file that failed (disk full, I/O error): `chain` counts decided
    /// blocks not written, `mailbox` deposits and acks not written.
    pub store_write_errors: Family<FileLabel, Counter>,
    /// Free bytes on the data dir's filesystem, for unprivileged writers (refreshed on scrape).
    pub disk_free_bytes: Gauge,
    /// Size of the data dir's filesystem (refreshed on scrape).
    pub disk_size_bytes: Gauge,
    /// API request latency by route, seconds.
    pub api_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Mesh requests refused as busy (too many in progress, or the mailbox queue full).
    pub rpc_busy: Counter,
    /// API connections closed on accept: over the total or the per-address limit.
    pub api_connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series, registered.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            height: Gauge::default(),
            finalized_txs: Counter::default(),
            round_timeouts: Counter::default(),
            late_round_heights: Gauge::default(),
            proposal_limit_txs: Gauge::default(),
            peers: Gauge::default(),
            connections: Family::default(),
            mempool_txs: Gauge::default(),
            // 1 ms to about 16 s.
            finality_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            rejected_txs: Counter::default(),
            gate_applied_height: Gauge::default(),
            consensus_events_lagged: Counter::default(),
            quarantines: Counter::default(),
            validator_last_signed: Family::default(),
            validator_missed: Family::default(),
            equivocations: Family::default(),
            validator_convictions: Family::default(),
            devices: Family::default(),
            mailbox_envelopes: Gauge::default(),
            mailbox_bytes: Gauge::default(),
            mailbox_max_envelopes: Gauge::default(),
            mailbox_max_bytes: Gauge::default(),
            store_bytes: Family::default(),
            store_write_errors: Family::default(),
            disk_free_bytes: Gauge::default(),
            disk_size_bytes: Gauge::default(),
            api_latency: Family::new_with_constructor(latency_histogram),
            rpc_busy: Counter::default(),
            api_connections_refused: Counter::default(),
            registry: Registry::default(),
        };
        r.register(
            "meshward_chain_height",
            "Height of the last finalised block",
            m.height.clone(),
        );
        r.register(
            "meshward_chain_finalized_txs",
            "Transactions finalised in blocks",
            m.finalized_txs.clone(),
        );
        r.register(
            "meshward_chain_finality_latency_seconds",
            "Time from a transaction's arrival at this node to its block's finalisation",
            m.finality_latency.clone(),
        );
        r.register(
            "meshward_consensus_round_timeouts",
            "Consensus rounds that ended in a timeout",
            m.round_timeouts.clone(),
        );
        r.register(
            "meshward_consensus_late_round_heights",
            "Heights committed here that were decided in a round after 0",
            m.late_round_heights.clone(),
        );
        r.register(
            "meshward_consensus_proposal_limit_txs",
            "Most transactions this node's next proposal may hold, sized to the propose timeout",
            m.proposal_limit_txs.clone(),
        );
        r.register(
            "meshward_consensus_validator_last_signed_height",
            "The last height whose certificate each validator signed, as this node committed it",
            m.validator_last_signed.clone(),
        );
        r.register(
            "meshward_consensus_validator_missed",
            "Heights whose last commit lacks the validator's signature, since this node started",
            m.validator_missed.clone(),
        );
        r.register(
            "meshward_consensus_equivocations",
            "Heights at which a validator was seen signing two conflicting votes or proposals",
            m.equivocations.clone(),
        );
        r.register(
            "meshward_consensus_validator_convictions",
            "Heights at which evidence on the ledger convicted the validator of equivocation",
            m.validator_convictions.clone(),
        );
        r.register(
            "meshward_net_peers",
            "Connected mesh peers",
            m.peers.clone(),
        );
        r.register(
            "meshward_net_connections",
            "Connected mesh peers by kind: gateway, device, other",
            m.connections.clone(),
        );
        r.register(
            "meshward_mempool_txs",
            "Transactions waiting in the mempool",
            m.mempool_txs.clone(),
        );
        r.register(
            "meshward_mempool_rejected_txs",
            "Transactions refused on entry to the mempool",
            m.rejected_txs.clone(),
        );
        r.register(
            "meshward_gate_applied_height",
            "Height up to which committed revocations were applied to the connection gate",
            m.gate_applied_height.clone(),
        );
        r.register(
            "meshward_node_consensus_events_lagged",
            "Consensus events the node's event loop missed because it fell behind",
            m.consensus_events_lagged.clone(),
        );
        r.register(
            "meshward_quarantines",
            "Devices revoked automatically by committed evidence",
            m.quarantines.clone(),
        );
        r.register(
            "meshward_devices",
            "Enrolled devices by status: active, revoked, quarantined",
            m.devices.clone(),
        );
        r.register(
            "meshward_mailbox_envelopes",
            "Envelopes waiting in this gateway's mailboxes",
            m.mailbox_envelopes.clone(),
        );
        r.register(
            "meshward_mailbox_bytes",
            "Bytes of the envelopes waiting in this gateway's mailboxes",
            m.mailbox_bytes.clone(),
        );
        r.register(
            "meshward_mailbox_max_envelopes",
            "The most envelopes this gateway's mailboxes hold",
            m.mailbox_max_envelopes.clone(),
        );
        r.register(
            "meshward_mailbox_max_bytes",
            "The most bytes this gateway's mailboxes hold",
            m.mailbox_max_bytes.clone(),
        );
        r.register(
            "meshward_store_bytes",
            "Bytes on disk of each store file: chain, mailbox",
            m.store_bytes.clone(),
        );
        r.register(
            "meshward_store_write_errors",
            "Writes of each store file that failed (disk full, I/O error): chain, mailbox",
            m.store_write_errors.clone(),
        );
        r.register(
            "meshward_disk_free_bytes",
            "Free bytes on the data dir's filesystem",
            m.disk_free_bytes.clone(),
        );
        r.register(
            "meshward_disk_size_bytes",
            "Size of the data dir's filesystem",
            m.disk_size_bytes.clone(),
        );
        r.register(
            "meshward_api_request_duration_seconds",
            "API request latency by method and route",
            m.api_latency.clone(),
        );
        r.register(
            "meshward_rpc_busy",
            "Mesh requests refused as busy",
            m.rpc_busy.clone(),
        );
        r.register(
            "meshward_api_connections_refused",
            "API connections closed on accept, over the total or per-address limit",
            m.api_connections_refused.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Raises `meshward_store_write_errors_total{file}` to `total` (a running count kept by
    /// the store's writer).
    pub fn set_store_write_errors(&self, file: &str, total: u64) {
        let c = self
            .store_write_errors
            .get_or_create(&FileLabel { file: file.into() });
        c.inc_by(total.saturating_sub(c.get()));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
