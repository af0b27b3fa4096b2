//! `meshward node run`: open the store, start the mesh, consensus and the API, and connect them
//! until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshward_consensus::{ConsensusConfig, ConsensusEvent, ConsensusHandle};
use meshward_core::codec::Encode;
use meshward_core::genesis::Genesis;
use meshward_core::ids::PublicKey;
use meshward_core::rpc::Response;
use meshward_core::state::StateView;
use meshward_core::tx::{Evidence, Tx, TxBody};
use meshward_core::CertifiedBlock;
use meshward_net::{Multiaddr, Net, NetConfig, NetEvent, TxVerdict};
use meshward_store::Store;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::keyfile::{self, KeyKind};
use crate::mempool::{AdmitError, Mempool, MempoolLimits};
use crate::metrics::Metrics;
use crate::rpc::RpcHandler;
use crate::Shared;

pub const STORE_FILE: &str = "meshward.redb";
pub const NODE_KEY_FILE: &str = "node.key";
pub const TOKEN_FILE: &str = "api.token";
pub const CONFIG_FILE: &str = "config.toml";

/// Default API address: loopback only.
pub const DEFAULT_API: &str = "127.0.0.1:7700";
/// Default mesh address.
pub const DEFAULT_P2P: &str = "/ip4/0.0.0.0/tcp/7800";

/// Most mesh requests answered at once.
const MAX_RPC_TASKS: usize = 64;

/// Most API transactions waiting to be gossiped.
const GOSSIP_QUEUE: usize = 16_384;
/// Most transactions in one gossip message. Transactions waiting to be gossiped go out together,
/// so a busy node sends (and its peers check) one signed message per batch, not per transaction.
const GOSSIP_BATCH_TXS: usize = 512;
/// Gossip messages being admitted at once; the node reads no further mesh events until one
/// finishes, and the mesh's bounded event queue takes the overflow.
const GOSSIP_ADMIT_TASKS: usize = 2;

/// How a node runs. [`NodeConfig::for_dir`] reads `config.toml`; command-line flags override.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub dir: PathBuf,
    pub genesis: PathBuf,
    /// HTTP API address.
    pub api: SocketAddr,
    /// Mesh listen address (TCP). Consensus listens on the next port of the same address
    /// unless `consensus` says otherwise.
    pub p2p: Multiaddr,
    pub consensus: Option<Multiaddr>,
    /// Mesh addresses of other nodes. Their consensus address is taken to be the next port.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN by mDNS.
    pub mdns: bool,
    pub idle_block_interval_ms: u64,
    pub propose_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    api: Option<String>,
    p2p: Option<String>,
    consensus: Option<String>,
    mdns: Option<bool>,
    idle_block_interval_ms: Option<u64>,
    propose_timeout_ms: Option<u64>,
}

impl NodeConfig {
    /// Defaults, without reading any file.
    pub fn for_dir(dir: PathBuf, genesis: PathBuf) -> Self {
        NodeConfig {
            dir,
            genesis,
            api: DEFAULT_API.parse().expect("the default API address parses"),
            p2p: DEFAULT_P2P
                .parse()
                .expect("the default mesh address parses"),
            consensus: None,
            bootstrap: Vec::new(),
            mdns: true,
            idle_block_interval_ms: meshward_consensus::config::DEFAULT_IDLE_BLOCK_INTERVAL_MS,
            propose_timeout_ms: None,
        }
    }

    /// Defaults overridden by the data dir's `config.toml`, if there is one.
    pub fn load(dir: PathBuf, genesis: PathBuf) -> Result<Self> {
        let mut c = NodeConfig::for_dir(dir, genesis);
        let path = c.dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(c),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let f: ConfigFile =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        if let Some(a) = f.api {
            c.api = a
                .parse()
                .with_context(|| format!("{}: api {a:?} is not an ip:port", path.display()))?;
        }
        if let Some(p) = f.p2p {
            c.p2p = p
                .parse()
                .with_context(|| format!("{}: p2p {p:?} is not a multiaddr", path.display()))?;
        }
        if let Some(p) = f.consensus {
            c.consensus = Some(p.parse().with_context(|| {
                format!("{}: consensus {p:?} is not a multiaddr", path.display())
            })?);
        }
        if let Some(m) = f.mdns {
            c.mdns = m;
        }
        if let Some(i) = f.idle_block_interval_ms {
            c.idle_block_interval_ms = i;
        }
        c.propose_timeout_ms = f.propose_timeout_ms.or(c.propose_timeout_ms);
        Ok(c)
    }
}

/// The consensus address that goes with a mesh address: same host, next TCP port, no `/p2p`.
pub fn consensus_addr_for(mesh: &Multiaddr) -> Option<Multiaddr> {
    use multiaddr::Protocol;
    let mut out = Multiaddr::empty();
    let mut saw_tcp = false;
    for p in mesh.iter() {
        match p {
            Protocol::Tcp(port) => {
                out.push(Protocol::Tcp(port.checked_add(1)?));
                saw_tcp = true;
            }
            Protocol::P2p(_) => {}
            other => out.push(other),
        }
    }
    saw_tcp.then_some(out)
}

fn load_genesis(path: &Path) -> Result<Genesis> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read genesis file {} (create one with meshward genesis new)",
            path.display()
        )
    })?;
    Genesis::from_json(&text).with_context(|| format!("genesis file {}", path.display()))
}

/// Opens the node's store, creating it from the genesis on first start. A store for another
/// genesis, or one that fails its checks, is refused.
fn open_store(dir: &Path, genesis: &Genesis) -> Result<Store> {
    let path = dir.join(STORE_FILE);
    if path.exists() {
        let store = Store::open(&path).with_context(|| {
            format!(
                "refusing to start: the store in {} is not usable",
                dir.display()
            )
        })?;
        if store.genesis_hash() != genesis.hash() {
            bail!(
                "refusing to start: the store in {} belongs to chain {:?} with another genesis",
                dir.display(),
                store.genesis().chain_id
            );
        }
        Ok(store)
    } else {
        Store::create(&path, genesis)
            .with_context(|| format!("cannot create the store in {}", dir.display()))
    }
}

/// The mempool as consensus sees it.
struct PoolAdapter(Arc<Shared>);

impl meshward_consensus::Mempool for PoolAdapter {
    fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Tx> {
        self.0.mempool.reap(max_txs, max_bytes)
    }

    fn len(&self) -> usize {
        self.0.mempool.len()
    }

    fn verified_keys(&self, txs: &[Tx]) -> Vec<Option<PublicKey>> {
        self.0.mempool.verified_keys(txs)
    }

    fn on_committed(&self, block: &CertifiedBlock, dropped: &[Tx]) {
        // Consensus has released the store's write lock before it calls this.
        let ev = {
            let store = self.0.store.read().unwrap_or_else(|e| e.into_inner());
            self.0.mempool.on_committed(block, dropped, store.state())
        };
        self.0.finalised(ev.included);
        self.0.metrics.mempool_txs.set(self.0.mempool.len() as i64);
    }
}

/// Runs a node until `shutdown` completes, then stops every part cleanly.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let genesis = load_genesis(&config.genesis)?;
    let key = keyfile::load(&config.dir.join(NODE_KEY_FILE), KeyKind::Node).with_context(|| {
        format!(
            "data dir {} (create it with meshward init)",
            config.dir.display()
        )
    })?;
    let token_path = config.dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("cannot read the API token {}", token_path.display()))?
        .trim()
        .to_string();
    if token.len() < 32 {
        bail!(
            "API token in {} is too short; it must be the random token meshward init wrote",
            token_path.display()
        );
    }
    let store = open_store(&config.dir, &genesis)?;
    info!(
        chain_id = %genesis.chain_id,
        height = store.tip().map_or(0, |(h, _)| h),
        node = %key.id(),
        "store opened"
    );
    let store = Arc::new(RwLock::new(store));
    let metrics = Arc::new(Metrics::new());
    let mempool = Arc::new(Mempool::new(MempoolLimits::default()));
    let (gossip_tx, mut gossip_rx) = mpsc::channel::<Vec<u8>>(GOSSIP_QUEUE);
    let shared = Arc::new(Shared::new(
        store.clone(),
        mempool,
        metrics.clone(),
        key.id(),
        token,
        gossip_tx,
    ));

    // Mesh.
    let mut net_config = NetConfig::new(genesis.chain_id.clone());
    net_config.listen = vec![config.p2p.clone()];
    net_config.bootstrap = config.bootstrap.clone();
    net_config.mdns = config.mdns;
    // A device may hold a few connections at once (its agent and a CLI send, say); gateways
    // still dial each other once.
    net_config.max_connections_per_peer = 4;
    let gossip_max_bytes = net_config.gossip_max_transmit_size;
    let (net, mut net_events) = meshward_net::spawn(&key, net_config)
        .await
        .context("cannot start the mesh")?;
    let mesh_addrs = net.listen_addrs().await;
    info!(addrs = ?mesh_addrs, "mesh listening");
    *shared.mesh_addrs.write().unwrap_or_else(|e| e.into_inner()) = mesh_addrs
        .iter()
        .map(|a| format!("{a}/p2p/{}", net.local_peer_id()))
        .collect();
    shared.set_evidence_key(key.clone());
    // Devices revoked before this start are refused from the first connection.
    enforce_revocations(&shared, &net, None).await;
    let rpc = RpcHandler::new(shared.clone(), net.clone());
    let rpc_slots = Arc::new(tokio::sync::Semaphore::new(MAX_RPC_TASKS));
    let gossip_slots = Arc::new(tokio::sync::Semaphore::new(GOSSIP_ADMIT_TASKS));

    // Consensus.
    let consensus_listen = match &config.consensus {
        Some(a) => a.clone(),
        None => consensus_addr_for(&config.p2p).context("--p2p must be a TCP address")?,
    };
    let mut cc = ConsensusConfig::new(config.dir.clone(), consensus_listen.to_string());
    cc.persistent_peers = config
        .bootstrap
        .iter()
        .filter_map(consensus_addr_for)
        .map(|a| a.to_string())
        .collect();
    cc.idle_block_interval_ms = config.idle_block_interval_ms;
    if let Some(p) = config.propose_timeout_ms {
        cc.timeouts.propose_ms = p;
    }
    let consensus = meshward_consensus::start(
        cc,
        key.clone(),
        store.clone(),
        Arc::new(PoolAdapter(shared.clone())),
    )
    .await
    .context("cannot start consensus")?;
    let mut consensus_events = consensus.events();

    // API.
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api))?;
    info!(addr = %config.api, "api listening");
    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let router = crate::api::router(shared.clone());
    let api = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_api_rx.await;
            })
            .await
    });

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ev = net_events.recv() => match ev {
                Some(NetEvent::Request { from, id, bytes }) => {
                    // Each request runs as its own task (a deposit waits on other gateways),
                    // at most MAX_RPC_TASKS at once; beyond that the request is refused.
                    match rpc_slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (rpc, net) = (rpc.clone(), net.clone());
                            tokio::spawn(async move {
                                let resp = rpc.handle(from, &bytes).await;
                                crate::rpc::log_refusal(&from, &resp);
                                net.respond(id, resp.to_bytes()).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            let resp = Response::error("busy", "too many requests in progress; retry");
                            net.respond(id, resp.to_bytes()).await;
                        }
                    }
                }
                Some(NetEvent::Tx { id, bytes, .. }) => {
                    // Admission verifies signatures: it runs off this loop, a few at a time.
                    let Ok(permit) = gossip_slots.clone().acquire_owned().await else { break };
                    let (shared, net) = (shared.clone(), net.clone());
                    tokio::spawn(async move {
                        let verdict = tokio::task::spawn_blocking(move || admit_gossip(&shared, &bytes))
                            .await
                            .unwrap_or(TxVerdict::Ignore);
                        net.report_tx(id, verdict).await;
                        drop(permit);
                    });
                }
                Some(ev) => on_net_event(&consensus, ev).await,
                None => { warn!("mesh stopped"); break; }
            },
            ev = consensus_events.recv() => match ev {
                Ok(ev) => {
                    if let ConsensusEvent::Committed { height, .. } = &ev {
                        on_committed(&shared, &net, *height).await;
                    }
                    on_consensus_event(&shared, ev)
                }
                Err(broadcast::error::RecvError::Lagged(n)) => debug!(missed = n, "consensus events lagged"),
                Err(broadcast::error::RecvError::Closed) => { warn!("consensus stopped"); break; }
            },
            Some(first) = gossip_rx.recv() => {
                let batch = gossip_batch(first, &mut gossip_rx, gossip_max_bytes);
                let n = batch.len();
                if let Err(e) = net.publish_tx(meshward_core::tx::encode_tx_list(&batch)).await {
                    debug!(error = %e, txs = n, "transactions not gossiped");
                }
            }
            _ = tick.tick() => {
                shared.set_peers(net.peers().await.len());
            }
        }
    }
    info!("shutting down");
    let _ = stop_api_tx.send(());
    if let Ok(Err(e)) = api.await {
        warn!(error = %e, "api server ended with an error");
    }
    consensus.shutdown().await;
    net.shutdown().await;
    info!("stopped");
    Ok(())
}

/// Takes `first` and what else waits in `queue` (without waiting for more), up to
/// [`GOSSIP_BATCH_TXS`] transactions whose list encoding fits in `max_bytes`: a transaction is
/// added only while the batch leaves room for the largest one.
fn gossip_batch(
    first: Vec<u8>,
    queue: &mut mpsc::Receiver<Vec<u8>>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    // Count and length prefixes are 4 bytes each.
    let budget = max_bytes.saturating_sub(meshward_core::tx::MAX_TX_BYTES + 8);
    let mut bytes = 8 + first.len();
    let mut batch = vec![first];
    while batch.len() < GOSSIP_BATCH_TXS && bytes <= budget {
        let Ok(next) = queue.try_recv() else { break };
        bytes += 4 + next.len();
        batch.push(next);
    }
    batch
}

/// Admits a gossip message (a list of transactions) and gives the verdict the mesh acts on:
/// `Reject` (the relayer is penalised) for a message that does not decode or carries a bad
/// signature; `Accept` (forwarded) when every transaction in it is now pending here; `Ignore`
/// otherwise (stale, or no room: not the relayer's fault).
fn admit_gossip(shared: &Shared, bytes: &[u8]) -> TxVerdict {
    let Ok(txs) = meshward_core::tx::decode_tx_list(bytes, GOSSIP_BATCH_TXS) else {
        return TxVerdict::Reject;
    };
    let results = shared.submit_batch(txs, false);
    let bad_signature = results.iter().any(|r| {
        matches!(
            r,
            Err(AdmitError::Rejected(meshward_core::Reject::BadSignature))
        )
    });
    if bad_signature {
        TxVerdict::Reject
    } else if results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(AdmitError::Duplicate)))
    {
        TxVerdict::Accept
    } else {
        TxVerdict::Ignore
    }
}

/// A gateway found on the LAN or through Kademlia: tell consensus where it listens.
async fn on_net_event(consensus: &ConsensusHandle, ev: NetEvent) {
    if let NetEvent::Discovered(peer, addrs) = ev {
        for a in addrs.iter().filter_map(consensus_addr_for) {
            debug!(%peer, addr = %a, "adding consensus peer");
            if let Err(e) = consensus.add_peer(&a.to_string()).await {
                debug!(%peer, error = %e, "consensus peer not added");
            }
        }
    }
}

/// Publishes a committed block's events and applies its revocations to the mesh: a revoked
/// device's peer ids (its enrolled key and its current key) are refused by the gate and
/// disconnected, at the height the `Revoke` or `Evidence` commits.
async fn on_committed(shared: &Shared, net: &Net, height: u64) {
    let block = {
        let store = shared.store.read().unwrap_or_else(|e| e.into_inner());
        match store.block(height) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                warn!(height, error = %e, "committed block unreadable");
                return;
            }
        }
    };
    shared.publish_block(&block);
    let touched: Vec<PublicKey> = block
        .block
        .txs
        .iter()
        .filter_map(|tx| match &tx.body {
            TxBody::Revoke { device, .. } => Some(*device),
            TxBody::Evidence(Evidence::Equivocation { a, .. }) => Some(a.signer),
            TxBody::Evidence(Evidence::PolicyViolation { anchor }) => Some(anchor.signer),
            TxBody::RotateKeys { .. } => Some(tx.signer),
            _ => None,
        })
        .collect();
    if !touched.is_empty() {
        enforce_revocations(shared, net, Some(&touched)).await;
    }
}

/// Denies the peer ids of revoked devices (all of them, or those among `only`), and the
/// enrolled key of a device that rotated to another, so an old key cannot connect.
async fn enforce_revocations(shared: &Shared, net: &Net, only: Option<&[PublicKey]>) {
    let deny: Vec<(PublicKey, bool)> = {
        let store = shared.store.read().unwrap_or_else(|e| e.into_inner());
        let st = store.state();
        let pick = |a: &meshward_core::state::Account| -> Vec<(PublicKey, bool)> {
            let Some(d) = &a.device else {
                return Vec::new();
            };
            if !d.is_active() {
                vec![(a.id, true), (a.sign_key, true)]
            } else if a.sign_key != a.id {
                vec![(a.id, false)]
            } else {
                Vec::new()
            }
        };
        match only {
            Some(ids) => ids
                .iter()
                .filter_map(|id| st.account(id))
                .flat_map(pick)
                .collect(),
            None => st.accounts().flat_map(pick).collect(),
        }
    };
    for (key, revoked) in deny {
        let peer = meshward_net::peer_id_of(&key);
        if revoked {
            info!(device = %key, %peer, "device revoked: refusing its connections");
        }
        net.deny(peer).await;
    }
}

fn on_consensus_event(shared: &Shared, ev: ConsensusEvent) {
    match ev {
        ConsensusEvent::Committed { height, txs, .. } => {
            shared.metrics.height.set(height as i64);
            shared.metrics.finalized_txs.inc_by(txs as u64);
        }
        ConsensusEvent::RoundTimeout { height, round } => {
            shared.metrics.round_timeouts.inc();
            debug!(height, round, "round timed out");
        }
        ConsensusEvent::ProposalRejected {
            height,
            round,
            proposer,
            reason,
        } => {
            warn!(height, round, %proposer, %reason, "proposal rejected");
        }
        other => debug!(event = ?other, "consensus event"),
    }
}

/// What [`init_data_dir`] created.
#[derive(Debug)]
pub struct InitReport {
    pub peer_id: String,
    pub node_key: PathBuf,
    pub token_file: PathBuf,
    pub config: PathBuf,
}

/// Creates a node's data directory (mode 0700): a fresh node key and API token (both 0600) and
/// `config.toml` with the given addresses. Refuses a directory that exists and is not empty.
pub fn init_data_dir(dir: &Path, api: &str, p2p: &str, mdns: bool) -> Result<InitReport> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty; init never overwrites a data directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions on {}", dir.display()))?;
    }
    let node_key = dir.join(NODE_KEY_FILE);
    let kp = keyfile::generate(&node_key, KeyKind::Node)?;
    let mut token = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
    let token_file = dir.join(TOKEN_FILE);
    keyfile::write_secret_file(
        &token_file,
        format!("{}\n", meshward_core::hex::encode(&token)).as_bytes(),
    )?;
    let config = dir.join(CONFIG_FILE);
    std::fs::write(
        &config,
        format!(
            "# Meshward node configuration, written by `meshward init`.\n\
             # The HTTP API listens on loopback only unless changed here or with --api.\n\
             api = \"{api}\"\n\
             # libp2p mesh address; consensus listens on the next TCP port.\n\
             p2p = \"{p2p}\"\n\
             # Find other gateways on the LAN by multicast DNS.\n\
             mdns = {mdns}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    Ok(InitReport {
        peer_id: kp.id().peer_id(),
        node_key,
        token_file,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gossip_batch_takes_what_waits_up_to_its_limits() {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2 * GOSSIP_BATCH_TXS);
        for i in 0..GOSSIP_BATCH_TXS + 10 {
            tx.try_send(vec![i as u8; 100]).unwrap();
        }
        let first = rx.recv().await.unwrap();
        let big = 4 * meshward_core::tx::MAX_TX_BYTES;
        assert_eq!(gossip_batch(first, &mut rx, big).len(), GOSSIP_BATCH_TXS);
        // The rest, without waiting for more.
        let first = rx.recv().await.unwrap();
        assert_eq!(gossip_batch(first, &mut rx, big).len(), 10);
        // No room beside the largest transaction: one at a time.
        tx.try_send(vec![1; 100]).unwrap();
        tx.try_send(vec![2; 100]).unwrap();
        let first = rx.recv().await.unwrap();
        let small = meshward_core::tx::MAX_TX_BYTES + 8;
        assert_eq!(gossip_batch(first, &mut rx, small), vec![vec![1; 100]]);
        // Every batch stays within the limit it was given.
        let limit = meshward_core::tx::MAX_TX_BYTES + 8 + 1000;
        for _ in 0..20 {
            tx.try_send(vec![3; meshward_core::tx::MAX_TX_BYTES])
                .unwrap();
        }
        while let Ok(first) = rx.try_recv() {
            let batch = gossip_batch(first, &mut rx, limit);
            assert!(meshward_core::tx::encode_tx_list(&batch).len() <= limit);
        }
    }
}
