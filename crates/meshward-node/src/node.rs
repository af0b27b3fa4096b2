//! `meshward node run`: open the stores, start the components, the mesh, consensus and the API,
//! and connect them in one event loop until shutdown.
//!
//! The event loop owns the [`Follower`] and reacts to:
//! - mesh events: requests from devices and gateways (each answered in its own task, at most
//!   [`MAX_RPC_TASKS`] at once; beyond that a request gets `busy`), gossiped transaction
//!   batches (admitted off the loop, [`GOSSIP_ADMIT_TASKS`] at a time), discovered gateways
//!   (handed to consensus);
//! - consensus events: every one, and every lag notice, wakes the follower, which applies the
//!   committed blocks the store holds beyond what it has applied; round timeouts and rejected
//!   proposals go to metrics and the log;
//! - the gossip queue: what waits is sent as one batch;
//! - a tick every [`TICK`]: the follower again (so even a loop that missed every event catches
//!   up), and the peer count.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshward_consensus::{ConsensusConfig, ConsensusEvent, ConsensusHandle};
use meshward_core::codec::Encode;
use meshward_core::genesis::Genesis;
use meshward_core::rpc::Response;
use meshward_core::state::StateView;
use meshward_net::{NetConfig, NetEvent, TxVerdict};
use meshward_store::{MailboxLimits, MailboxStore, Store};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, info, warn};

use crate::config::{consensus_addr_for, NodeConfig};
use crate::follower::Follower;
use crate::gossip::{admit_gossip, gossip_batch, GOSSIP_ADMIT_TASKS, GOSSIP_BATCH_TXS};
use crate::init::{NODE_KEY_FILE, TOKEN_FILE};
use crate::ledger::Ledger;
use crate::mailboxes::Mailboxes;
use crate::mempool::{Mempool, MempoolLimits};
use crate::metrics::{EquivocationLabel, Metrics};
use crate::rpc::RpcHandler;
use crate::stats::ChainStats;
use crate::txpool::{TxPool, GOSSIP_QUEUE};
use crate::{ApiToken, Gateway, NodeIdentity, MAILBOX_FILE_NAME, STORE_FILE};
use meshward_sdk::keyfile::{self, KeyKind};

/// Most mesh requests answered at once.
pub const MAX_RPC_TASKS: usize = 64;
/// How often the event loop wakes the follower and counts peers without being asked.
pub const TICK: Duration = Duration::from_millis(250);

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

/// Opens the mailbox file with the default limits.
fn open_mailboxes(dir: &Path) -> Result<MailboxStore> {
    let path = dir.join(MAILBOX_FILE_NAME);
    let mut mb = MailboxStore::open(&path)?;
    mb.set_limits(MailboxLimits::default());
    Ok(mb)
}

fn read_token(dir: &Path) -> Result<ApiToken> {
    let path = dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the API token {}", path.display()))?;
    ApiToken::new(token.trim()).with_context(|| {
        format!(
            "API token in {} is too short; it must be the random token meshward init wrote",
            path.display()
        )
    })
}

/// Runs a node until `shutdown` completes, then stops every part cleanly.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let genesis = load_genesis(&config.genesis)?;
    if let Some(n) = crate::api::serve::raise_open_files_limit() {
        debug!(open_files = n, "open-files limit");
    }
    let key = keyfile::load(&config.dir.join(NODE_KEY_FILE), KeyKind::Node).with_context(|| {
        format!(
            "data dir {} (create it with meshward init)",
            config.dir.display()
        )
    })?;
    let token = read_token(&config.dir)?;
    let store = open_store(&config.dir, &genesis)?;
    let mailbox_store = open_mailboxes(&config.dir)?;
    info!(
        chain_id = %genesis.chain_id,
        height = store.tip().map_or(0, |(h, _)| h),
        node = %key.id(),
        "store opened"
    );
    let ledger = Ledger::new(store);
    let metrics = Arc::new(Metrics::new());
    let stats = Arc::new(ChainStats::new());
    let admin = match &config.admin_key {
        Some(path) => Some(keyfile::load(path, KeyKind::Admin).with_context(|| {
            format!(
                "admin_key in {}",
                config.dir.join(crate::CONFIG_FILE).display()
            )
        })?),
        None => None,
    };
    let (gossip_tx, mut gossip_rx) = mpsc::channel::<Vec<u8>>(GOSSIP_QUEUE);
    let pool = Arc::new(TxPool::new(
        ledger.clone(),
        Mempool::new(MempoolLimits::default()),
        gossip_tx,
        Some(key.clone()),
        metrics.clone(),
        stats.clone(),
    ));
    let (mailboxes, mailbox_writer) = Mailboxes::start(mailbox_store);

    // Mesh.
    let mut net_config = NetConfig::new(genesis.chain_id.clone());
    net_config.listen = vec![config.p2p.clone()];
    net_config.bootstrap = config.bootstrap.clone();
    net_config.mdns = config.mdns;
    // Only the fleet: validators, admins, active devices and the configured observers (the
    // rule is set right after the mesh starts; until then nobody is admitted).
    net_config.members_only = true;
    // A device may hold a few connections at once (its agent and a CLI send, say); gateways
    // still dial each other once.
    net_config.max_connections_per_peer = 4;
    let gossip_max_bytes = net_config.gossip_max_transmit_size;
    let (net, mut net_events) = meshward_net::spawn(&key, net_config)
        .await
        .context("cannot start the mesh")?;
    net.set_admission(admission(&ledger, &config.observers))
        .await;
    let listen = net.listen_addrs().await;
    info!(addrs = ?listen, "mesh listening");
    let identity = NodeIdentity {
        id: key.id(),
        mesh_addrs: listen
            .iter()
            .map(|a| format!("{a}/p2p/{}", net.local_peer_id()))
            .collect(),
        api_url: format!("http://{}", config.api),
        mqtt: config.mqtt.map(|a| a.to_string()),
    };
    let mut gw = Gateway::new(
        ledger.clone(),
        pool.clone(),
        mailboxes,
        metrics.clone(),
        stats,
        identity,
        token,
    );
    gw.admin = admin;
    gw.idle_block_interval_ms = config.idle_block_interval_ms;
    let custody = Arc::new(
        crate::mqtt::Custody::open(&config.dir, key.clone())
            .with_context(|| format!("cannot open {}/custody", config.dir.display()))?,
    );
    gw.custody = Some(custody.clone());
    gw.net = Some(net.clone());
    let gw = Arc::new(gw);
    // Devices revoked before this start are refused from the first connection.
    let mut follower = Follower::start(&gw, &net).await;
    let rpc = RpcHandler::new(gw.clone(), net.clone());
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
    cc.block_batch_ms = config.block_batch_ms;
    cc.event_capacity = config.consensus_event_capacity;
    #[cfg(feature = "byzantine")]
    {
        cc.byzantine = config.byzantine;
    }
    if let Some(p) = config.propose_timeout_ms {
        cc.timeouts.propose_ms = p;
    }
    // Consensus peers already known, so a gateway discovered again is not added twice.
    let mut consensus_peers: std::collections::HashSet<String> =
        cc.persistent_peers.iter().cloned().collect();
    let consensus = meshward_consensus::start(cc, key.clone(), ledger.shared(), pool.clone())
        .await
        .context("cannot start consensus")?;
    let mut consensus_events = consensus.events();

    // API.
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api))?;
    info!(addr = %config.api, "api listening");
    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let router = crate::api::router(gw.clone());
    let api = tokio::spawn(crate::api::serve::serve(
        listener,
        router,
        config.api_limits,
        gw.metrics.clone(),
        stop_api_rx,
    ));

    // MQTT front door.
    let (stop_mqtt_tx, stop_mqtt_rx) = tokio::sync::watch::channel(false);
    let mqtt = match config.mqtt {
        Some(addr) => {
            let tls = match (&config.mqtt_tls_cert, &config.mqtt_tls_key) {
                (Some(c), Some(k)) => Some(
                    meshward_mqtt::server::tls_config(c, k)
                        .map_err(anyhow::Error::msg)
                        .context("cannot load the MQTT TLS certificate and key")?,
                ),
                (None, None) => None,
                _ => bail!("give both mqtt_tls_cert and mqtt_tls_key, or neither"),
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for MQTT on {addr}"))?;
            info!(%addr, tls = tls.is_some(), "mqtt listening");
            let mut gateways: Vec<meshward_net::Multiaddr> = gw
                .identity
                .mesh_addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            gateways.extend(config.bootstrap.iter().cloned());
            let bridge = crate::mqtt::Bridge::new(
                gw.clone(),
                rpc.clone(),
                custody.clone(),
                gateways,
                genesis.chain_id.clone(),
                &config.dir,
            );
            // Set once, here: `run` starts one bridge.
            let _ = gw.mqtt.set(Arc::downgrade(&bridge));
            Some(tokio::spawn(meshward_mqtt::serve(
                listener,
                bridge,
                meshward_mqtt::Limits::default(),
                tls,
                stop_mqtt_rx,
            )))
        }
        None => None,
    };

    // Opening checked the tip; the links below it are walked in the background.
    let mut link_check = tokio::task::spawn_blocking({
        let ledger = ledger.clone();
        let tip = ledger.tip_height();
        move || check_links(&ledger, tip)
    });
    let mut links_checked = false;
    let mut fatal: Option<anyhow::Error> = None;

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(TICK);
    let stall = Duration::from_millis(config.fault_slow_event_loop_ms);
    if !stall.is_zero() {
        warn!(
            stall_ms = config.fault_slow_event_loop_ms,
            "fault injection: the event loop pauses after each consensus event"
        );
    }
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = &mut link_check, if !links_checked => {
                links_checked = true;
                match r {
                    Ok(Ok(h)) => info!(height = h, "store hash links checked"),
                    Ok(Err(e)) => {
                        error!(error = %e, "store is damaged; stopping");
                        fatal = Some(anyhow::Error::new(e));
                        break;
                    }
                    Err(e) => warn!(error = %e, "store link check did not finish"),
                }
            }
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
                            gw.metrics.rpc_busy.inc();
                            let resp = Response::error("busy", "too many requests in progress; retry");
                            net.respond(id, resp.to_bytes()).await;
                        }
                    }
                }
                Some(NetEvent::Tx { id, bytes, .. }) => {
                    // Admission verifies signatures: it runs off this loop, a few at a time.
                    let Ok(permit) = gossip_slots.clone().acquire_owned().await else { break };
                    let (pool, net) = (pool.clone(), net.clone());
                    tokio::spawn(async move {
                        let verdict = tokio::task::spawn_blocking(move || admit_gossip(&pool, &bytes))
                            .await
                            .unwrap_or(TxVerdict::Ignore);
                        net.report_tx(id, verdict).await;
                        drop(permit);
                    });
                }
                Some(ev) => on_net_event(&gw, &net, &consensus, &mut consensus_peers, ev).await,
                None => { warn!("mesh stopped"); break; }
            },
            ev = consensus_events.recv() => match ev {
                Ok(ev) => {
                    on_consensus_event(&gw, ev);
                    follower.catch_up(&gw, &net).await;
                    if !stall.is_zero() {
                        // Fault injection (tests only): a loop too slow for consensus.
                        tokio::time::sleep(stall).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Harmless: the follower reads committed blocks from the store.
                    gw.metrics.consensus_events_lagged.inc_by(n);
                    debug!(missed = n, "consensus events lagged");
                    follower.catch_up(&gw, &net).await;
                }
                Err(broadcast::error::RecvError::Closed) => { warn!("consensus stopped"); break; }
            },
            Some(first) = gossip_rx.recv() => {
                let batch = gossip_batch(first, &mut gossip_rx, gossip_max_bytes);
                debug_assert!(batch.len() <= GOSSIP_BATCH_TXS);
                let n = batch.len();
                // With no subscriber yet, gateways get them when they subscribe (below).
                if let Err(e) = net.publish_tx(meshward_core::tx::encode_tx_list(&batch)).await {
                    debug!(error = %e, txs = n, "transactions not gossiped");
                }
            }
            _ = tick.tick() => {
                follower.catch_up(&gw, &net).await;
                let cs = consensus.status();
                gw.metrics.late_round_heights.set(i64::try_from(cs.late_round_heights).unwrap_or(i64::MAX));
                gw.metrics.proposal_limit_txs.set(i64::try_from(cs.proposal_limit_txs).unwrap_or(i64::MAX));
                gw.metrics.set_store_write_errors("chain", cs.store_write_errors);
                gw.metrics.set_store_write_errors("mailbox", gw.mailboxes.write_errors());
                gw.count_connections(&net.peers().await);
            }
        }
    }
    info!("shutting down");
    let _ = stop_api_tx.send(());
    let _ = stop_mqtt_tx.send(true);
    if let Some(m) = mqtt {
        let _ = m.await;
    }
    if let Err(e) = api.await {
        warn!(error = %e, "api server task failed");
    }
    consensus.shutdown().await;
    net.shutdown().await;
    // The writer ends once the last mailbox handle is gone; request tasks still running hold
    // some, so wait a bounded time for them.
    drop(rpc);
    drop(gw);
    let writer = tokio::task::spawn_blocking(move || mailbox_writer.join());
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        warn!("mailbox writer still busy at shutdown; its last write is crash-safe");
    }
    info!("stopped");
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Most pending transactions handed to a gateway that subscribes to the transaction topic.
const HANDOVER_TXS: usize = 256;

/// Hands `txs` (pending here) to `peer`, a gateway that just subscribed to the transaction
/// topic, one `SubmitTx` request each, in a task of its own. Gossipsub sends a new subscriber
/// only what is published after it joined (a peer grafted into the mesh gets no IHAVE for older
/// messages, and publishing the same batch again is refused as a duplicate), so without this a
/// transaction only this node holds (accepted while no gateway listened, or sent before this
/// one subscribed) waits for this node's turn to propose: minutes on an idle chain. The peer
/// drops what it already holds.
fn hand_pending_over(
    txs: Vec<meshward_core::Tx>,
    net: meshward_net::Net,
    peer: meshward_net::PeerId,
) {
    if txs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let n = txs.len();
        for tx in txs {
            let req = meshward_core::rpc::Request::SubmitTx(tx).to_bytes();
            if let Err(e) = net.request(peer, req).await {
                debug!(%peer, error = %e, "pending transactions not handed over");
                return;
            }
        }
        debug!(%peer, txs = n, "pending transactions handed to a new subscriber");
    });
}

/// Who may connect to this gateway's mesh: the validators and admins in force, devices that are
/// active under their current key, and `observers`. Read from the ledger at each connection, so
/// it is never behind the committed state; a device's connections are closed when it is
/// revoked (the follower's denials) or rotates away from a key.
fn admission(ledger: &Ledger, observers: &[meshward_core::PublicKey]) -> meshward_net::Admission {
    let ledger = ledger.clone();
    let observers: std::collections::HashSet<meshward_core::PublicKey> =
        observers.iter().copied().collect();
    Arc::new(move |peer: &meshward_net::PeerId| {
        let Some(k) = meshward_net::public_key_of(peer) else {
            return false;
        };
        if observers.contains(&k) {
            return true;
        }
        let store = ledger.read();
        let st = store.state();
        if st.validators().power_of(&k).is_some() || st.admins().contains(&k) {
            return true;
        }
        st.key_owner(&k)
            .and_then(|id| st.account(&id))
            .is_some_and(|a| a.sign_key == k && a.device.as_ref().is_some_and(|d| d.is_active()))
    })
}

/// How many blocks the background link check reads under one read guard.
const LINK_CHECK_STEP: u64 = 4096;

/// Walks the hash links of blocks 1..=`tip` (what `Store::open` left unchecked), a step at a
/// time so that consensus's writes never wait long.
fn check_links(ledger: &Ledger, tip: u64) -> Result<u64, meshward_store::ReadError> {
    let mut from = 1;
    while from <= tip {
        let to = tip.min(from + LINK_CHECK_STEP - 1);
        ledger.read().check_links(from, to)?;
        from = to + 1;
    }
    Ok(tip)
}

/// A validator found on the LAN or through Kademlia: tell consensus where it listens. Gateways
/// joining and leaving the mesh are logged at info, devices at debug.
async fn on_net_event(
    gw: &Gateway,
    net: &meshward_net::Net,
    consensus: &ConsensusHandle,
    known: &mut std::collections::HashSet<String>,
    ev: NetEvent,
) {
    let is_gateway = |peer: &meshward_net::PeerId| {
        meshward_net::public_key_of(peer)
            .is_some_and(|k| gw.ledger.read().state().validators().power_of(&k).is_some())
    };
    match ev {
        // Only validators run consensus: a device's addresses (discovered like any peer's)
        // would have consensus dial ports nothing listens on.
        NetEvent::Discovered(peer, addrs) if is_gateway(&peer) => {
            for a in addrs.iter().filter_map(consensus_addr_for) {
                if !known.insert(a.to_string()) {
                    continue;
                }
                debug!(%peer, addr = %a, "adding consensus peer");
                if let Err(e) = consensus.add_peer(&a.to_string()).await {
                    debug!(%peer, error = %e, "consensus peer not added");
                }
            }
        }
        NetEvent::PeerConnected(peer) if is_gateway(&peer) => info!(%peer, "gateway connected"),
        NetEvent::PeerDisconnected(peer) if is_gateway(&peer) => {
            info!(%peer, "gateway disconnected")
        }
        NetEvent::TxSubscriber(peer) if is_gateway(&peer) => {
            hand_pending_over(gw.pool.pending(HANDOVER_TXS), net.clone(), peer)
        }
        NetEvent::PeerConnected(peer) => debug!(%peer, "peer connected"),
        NetEvent::PeerDisconnected(peer) => debug!(%peer, "peer disconnected"),
        _ => {}
    }
}

fn on_consensus_event(gw: &Gateway, ev: ConsensusEvent) {
    match ev {
        // Applied by the follower, from the store.
        ConsensusEvent::Committed { .. } => {}
        ConsensusEvent::RoundTimeout { height, round } => {
            gw.metrics.round_timeouts.inc();
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
        ConsensusEvent::Equivocation {
            height,
            validator,
            kind,
            evidence,
        } => {
            if let Some(e) = evidence {
                gw.pool.report_validator_evidence(e);
            }
            let kind = match kind {
                meshward_consensus::EquivocationKind::Vote => "vote",
                meshward_consensus::EquivocationKind::Proposal => "proposal",
            };
            gw.metrics
                .equivocations
                .get_or_create(&EquivocationLabel {
                    validator: validator.peer_id(),
                    kind: kind.into(),
                })
                .inc();
            debug!(height, validator = %validator.peer_id(), kind, "equivocation counted");
        }
        other => debug!(event = ?other, "consensus event"),
    }
}
