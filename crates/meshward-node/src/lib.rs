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
//! | follower | the height up to which committed blocks were applied to the connection gate, the event hub and the metrics | owned by the event loop | [`follower`] |
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
// temporary: bench/devnet imports, removed at merge
/// Key files live in [`meshward_sdk::keyfile`]. This re-exports them for the devnet and bench
/// code still importing `meshward_node::keyfile`; `bench/scale.rs` returns
/// `write_secret_file`'s result as an `anyhow::Result`, so that one function keeps its old
/// signature here.
pub mod keyfile {
    pub use meshward_sdk::keyfile::*;

    /// [`meshward_sdk::keyfile::write_secret_file`] with an `anyhow` error.
    pub fn write_secret_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(meshward_sdk::keyfile::write_secret_file(path, bytes)?)
    }
}
pub mod ledger;
pub mod mailboxes;
pub mod mempool;
pub mod metrics;
pub mod node;
pub mod rpc;
pub mod txpool;

use std::sync::Arc;

use meshward_core::ids::PublicKey;

pub use config::{consensus_addr_for, NodeConfig, CONFIG_FILE, DEFAULT_API, DEFAULT_P2P};
pub use init::{init_data_dir, InitReport, NODE_KEY_FILE, TOKEN_FILE};
pub use meshward_store::format::{FILE_NAME as STORE_FILE, MAILBOX_FILE_NAME};
pub use node::run;

use api::auth::Challenges;
use events::EventHub;
use ledger::Ledger;
use mailboxes::Mailboxes;
use metrics::Metrics;
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
    token: ApiToken,
}

impl Gateway {
    /// Assembles a gateway from its components.
    pub fn new(
        ledger: Ledger,
        pool: Arc<TxPool>,
        mailboxes: Mailboxes,
        metrics: Arc<Metrics>,
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
            token,
        }
    }

    /// The operator's API token.
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// Connected mesh peers, as last counted by the event loop.
    pub fn peers(&self) -> usize {
        usize::try_from(self.metrics.peers.get()).unwrap_or(0)
    }
}
