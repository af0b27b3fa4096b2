//! A Meshward gateway node: the store, the mempool, consensus and the mesh wired together,
//! with the HTTP API and Prometheus metrics.
//!
//! # Runtime shape
//! Each long-lived part of a gateway is one component that owns its state:
//!
//! | component | owns | kind | module |
//! |---|---|---|---|
//! | consensus | the chain store's writes, Malachite | task (in `meshward-consensus`) | [`ledger`] (read side) |
//! | mesh | the libp2p swarm | task behind bounded channels (in `meshward-net`) | |
//! | admission | mempool, recent rejections, gossip queue | small types, one lock each | [`txpool`], [`mempool`] |
//! | mailboxes | `mailbox.redb`, the replay set | writer thread on a bounded channel | [`mailboxes`] |
//! | challenges | outstanding device-auth nonces | small type, one lock | [`api::auth`] |
//! | event hub | live events for SSE subscribers | bounded broadcast channel | [`events`] |
//! | follower | the height up to which committed blocks were applied to the connection gate, the event hub, the stats and the metrics | owned by the event loop | [`follower`] |
//! | chain stats | 10-minute history, finality samples, validators' signing record, recent revocations | small type, one lock | [`stats`] |
//! | presence | when each device was last heard from | small type, one lock | [`presence`] |
//! | event loop | wires mesh events, consensus events and gossip batching | task | [`node`] |
//!
//! [`Gateway`] holds a handle on each component; it has no lock of its own. Locks are never
//! held across `.await`, and a poisoned lock aborts the process ([`meshward_core::sync`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = meshward_node::NodeConfig::for_dir("node1".into(), "genesis.json".into());
//! meshward_node::run(config, std::future::pending()).await
//! # }
//! ```

pub mod api;
pub mod config;
pub mod events;
pub mod evidence;
pub mod follower;
mod gossip;
pub mod init;
pub mod ledger;
pub mod mailboxes;
pub mod mempool;
pub mod metrics;
pub mod mqtt;
pub mod node;
pub mod presence;
pub mod rpc;
pub mod stats;
pub mod txpool;

use std::sync::Arc;

use meshward_core::ids::PublicKey;
use meshward_core::state::StateView;

pub use config::{consensus_addr_for, NodeConfig, CONFIG_FILE, DEFAULT_API, DEFAULT_P2P};
pub use init::{init_data_dir, InitReport, NODE_KEY_FILE, TOKEN_FILE};
/// How a test validator misbehaves (`--byzantine MODE`).
#[cfg(feature = "byzantine")]
pub use meshward_consensus::byzantine::ByzantineMode;
pub use meshward_store::format::{FILE_NAME as STORE_FILE, MAILBOX_FILE_NAME};
pub use node::run;

use api::auth::Challenges;
use events::EventHub;
use ledger::Ledger;
use mailboxes::Mailboxes;
use metrics::Metrics;
use presence::Presence;
use stats::ChainStats;
use txpool::TxPool;

/// The operator's API token: bearer credential for mutating API calls.
pub struct ApiToken(String);

impl ApiToken {
    /// A token as `meshward init` writes it (at least 32 characters); `None` if too short.
    pub fn new(token: impl Into<String>) -> Option<ApiToken> {
        let t = token.into();
        (t.len() >= 32).then_some(ApiToken(t))
    }

    /// Whether `given` is the token, compared in constant time so the token cannot be guessed
    /// byte by byte from timing.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        given.len() == want.len()
            && given
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<secret>)")
    }
}

/// Who this node is, as the API reports it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The node's key (its validator address if it validates).
    pub id: PublicKey,
    /// The mesh's listen addresses with `/p2p/<peer id>`, for devices and tools.
    pub mesh_addrs: Vec<String>,
    /// Where the MQTT front door listens, if it does.
    pub mqtt: Option<String>,
    /// Where the API listens, as `http://ip:port` (the OpenAPI document's server).
    pub api_url: String,
}

/// The handles of a running gateway's components (see the crate doc), shared by the API, the
/// RPC handler and the event loop.
pub struct Gateway {
    /// The chain store, read side.
    pub ledger: Ledger,
    /// Admission and the mempool.
    pub pool: Arc<TxPool>,
    /// Mailboxes of offline devices.
    pub mailboxes: Mailboxes,
    /// Device-auth nonces.
    pub challenges: Challenges,
    /// Live events.
    pub events: EventHub,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// This node.
    pub identity: NodeIdentity,
    /// The chain over the last minutes, for the console.
    pub stats: Arc<ChainStats>,
    /// When devices were last heard from.
    pub presence: Presence,
    /// How revoked devices were revoked.
    pub revocation_kinds: presence::RevocationKinds,
    /// An admin key this node may sign admin transactions with, for the console's
    /// token-authenticated actions (`admin_key` in config.toml); `None` for most gateways.
    pub admin: Option<meshward_core::ids::Keypair>,
    /// The chain's heartbeat interval (0: no heartbeat), for the stalled-chain alert.
    pub idle_block_interval_ms: u64,
    /// The rate limit of `POST /v1/enroll`.
    pub enroll_limiter: api::enroll::EnrollLimiter,
    /// MQTT custody grants this gateway holds (set by `run`).
    pub custody: Option<Arc<mqtt::Custody>>,
    /// The mesh, for handlers that ask other gateways (set by `run`).
    pub net: Option<meshward_net::Net>,
    /// The MQTT front door's bridge, once `run` has started it: the mesh handler asks it to
    /// release a custodial device another custodian is starting.
    pub mqtt: std::sync::OnceLock<std::sync::Weak<mqtt::Bridge>>,
    token: ApiToken,
}

impl Gateway {
    /// Assembles a gateway from its components.
    /// `stats` is the one `pool` records finality into. The console's admin key is off and
    /// the heartbeat assumed to be consensus's default until set.
    pub fn new(
        ledger: Ledger,
        pool: Arc<TxPool>,
        mailboxes: Mailboxes,
        metrics: Arc<Metrics>,
        stats: Arc<ChainStats>,
        identity: NodeIdentity,
        token: ApiToken,
    ) -> Self {
        Gateway {
            ledger,
            pool,
            mailboxes,
            challenges: Challenges::new(),
            events: EventHub::new(),
            metrics,
            identity,
            stats,
            presence: Presence::default(),
            revocation_kinds: presence::RevocationKinds::default(),
            admin: None,
            idle_block_interval_ms: meshward_consensus::config::DEFAULT_IDLE_BLOCK_INTERVAL_MS,
            enroll_limiter: api::enroll::EnrollLimiter::default(),
            custody: None,
            net: None,
            mqtt: std::sync::OnceLock::new(),
            token,
        }
    }

    /// The operator's API token.
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// The API's view of a device account (`None` for an account that is not a device):
    /// quarantined or revoked, and when this gateway last heard from it.
    pub fn device_view(
        &self,
        store: &meshward_store::Store,
        a: &meshward_core::state::Account,
    ) -> Option<meshward_api::types::Device> {
        use meshward_api::types::{Device, DeviceState};
        use meshward_core::state::DeviceStatus;
        let d = a.device.as_ref()?;
        let (status, revoked_reason, revoked_height) = match &d.status {
            DeviceStatus::Active => (DeviceState::Active, None, None),
            DeviceStatus::Revoked { reason, height } => {
                let by_evidence = self.revocation_kinds.by_evidence(&a.id, || {
                    follower::revoked_by_evidence(store, &a.id, *height)
                });
                let s = if by_evidence {
                    DeviceState::Quarantined
                } else {
                    DeviceState::Revoked
                };
                (s, Some(reason.clone()), Some(*height))
            }
        };
        Some(Device {
            id: a.id.peer_id(),
            enc_key: d.enc_key.to_string(),
            sign_key: a.sign_key.peer_id(),
            groups: d.groups.iter().map(|g| g.as_str().to_string()).collect(),
            enrolled_height: d.enrolled_height,
            seq: a.seq,
            status,
            revoked_reason,
            revoked_height,
            last_seen_ms: self.presence.last_seen(&a.id),
            custodians: self
                .custody
                .as_ref()
                .and_then(|c| c.grant(&a.id))
                .map(|g| g.custodians)
                .unwrap_or_default(),
        })
    }

    /// Refreshes the metrics that summarise state rather than count events: devices by
    /// status, mailbox depth, store files and free disk. Called when `/metrics` is scraped.
    pub fn refresh_metrics(&self) {
        use metrics::{FileLabel, StatusLabel, ValidatorLabel};
        let m = &self.metrics;
        let (mut active, mut revoked, mut quarantined) = (0i64, 0i64, 0i64);
        let (chain_path, dir) = {
            let store = self.ledger.read();
            for v in &store.state().validators().validators {
                let n = store.state().conviction(&v.key).map_or(0, |c| c.count);
                m.validator_convictions
                    .get_or_create(&ValidatorLabel {
                        validator: v.key.peer_id(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            for a in store.state().accounts() {
                match self.device_view(&store, a).map(|d| d.status) {
                    Some(meshward_api::types::DeviceState::Active) => active += 1,
                    Some(meshward_api::types::DeviceState::Revoked) => revoked += 1,
                    Some(meshward_api::types::DeviceState::Quarantined) => quarantined += 1,
                    None => {}
                }
            }
            let p = store.path().to_path_buf();
            let dir = p.parent().map(std::path::Path::to_path_buf);
            (p, dir)
        };
        for (status, n) in [
            ("active", active),
            ("revoked", revoked),
            ("quarantined", quarantined),
        ] {
            m.devices
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n);
        }
        if let Ok(st) = self.mailboxes.stats() {
            m.mailbox_envelopes.set(st.envelopes as i64);
            m.mailbox_bytes.set(st.bytes as i64);
        }
        let limits = self.mailboxes.limits();
        m.mailbox_max_envelopes
            .set(i64::try_from(limits.max_total_envelopes).unwrap_or(i64::MAX));
        m.mailbox_max_bytes
            .set(i64::try_from(limits.max_total_bytes).unwrap_or(i64::MAX));
        for (file, path) in [("chain", chain_path), ("mailbox", self.mailboxes.path())] {
            if let Ok(md) = std::fs::metadata(&path) {
                m.store_bytes
                    .get_or_create(&FileLabel { file: file.into() })
                    .set(i64::try_from(md.len()).unwrap_or(i64::MAX));
            }
        }
        if let Some(dir) = dir {
            if let Ok(fs) = rustix::fs::statvfs(&dir) {
                let frag = fs.f_frsize;
                m.disk_free_bytes
                    .set(i64::try_from(fs.f_bavail.saturating_mul(frag)).unwrap_or(i64::MAX));
                m.disk_size_bytes
                    .set(i64::try_from(fs.f_blocks.saturating_mul(frag)).unwrap_or(i64::MAX));
            }
        }
    }

    /// Counts the connected mesh peers by kind (a validator is a gateway, an enrolled device a
    /// device, anyone else other) into the metrics.
    pub fn count_connections(&self, peers: &[meshward_net::PeerId]) {
        let (mut gateways, mut devices, mut other) = (0i64, 0i64, 0i64);
        {
            let store = self.ledger.read();
            let st = store.state();
            for p in peers {
                let Some(k) = meshward_net::public_key_of(p) else {
                    other += 1;
                    continue;
                };
                if st.validators().power_of(&k).is_some() {
                    gateways += 1;
                } else if rpc::account_of(st, &k).is_some_and(|a| a.device.is_some()) {
                    devices += 1;
                } else {
                    other += 1;
                }
            }
        }
        self.metrics.peers.set(peers.len() as i64);
        for (kind, n) in [("gateway", gateways), ("device", devices), ("other", other)] {
            self.metrics
                .connections
                .get_or_create(&metrics::KindLabel { kind: kind.into() })
                .set(n);
        }
    }

    /// Connected mesh peers, as last counted by the event loop.
    pub fn peers(&self) -> usize {
        usize::try_from(self.metrics.peers.get()).unwrap_or(0)
    }
}
