//! Helpers for multi-node tests: real swarms on 127.0.0.1, mDNS off. Tests poll conditions
//! with `meshward_testkit`'s waits and [`DEADLINE`].
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshward_core::ids::Keypair;
use meshward_net::{Multiaddr, Net, NetConfig, NetError, NetEvent, PeerId, RequestId, TxVerdict};
use meshward_testkit::wait_until_future;

/// How long a test waits for a condition. Generous: two cores, unoptimised code, several tests
/// at once.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
/// How often [`TestNode::publish_until`] looks for its condition. It publishes again every
/// fourth look: this paces the publishing, so a peer whose subscription is late is not flooded.
const PUBLISH_POLL: Duration = Duration::from_millis(50);

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Loopback only, TCP and QUIC on ephemeral ports, mDNS off, no discovery dials.
pub(crate) fn config() -> NetConfig {
    let mut c = NetConfig::new("test-chain");
    c.listen = vec![
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
    ];
    c.mdns = false;
    c.target_peers = 0;
    c
}

pub(crate) struct TestNode {
    pub key: Keypair,
    pub net: Net,
    pub peer: PeerId,
    /// Every event the node received, in order.
    pub seen: Arc<Mutex<Vec<NetEvent>>>,
}

/// A node that accepts every transaction.
pub(crate) async fn node(config: NetConfig) -> TestNode {
    node_with(config, |_| TxVerdict::Accept).await
}

/// A node whose "ledger" judges transactions with `verdict`. It never answers rpc requests.
pub(crate) async fn node_with(config: NetConfig, verdict: fn(&[u8]) -> TxVerdict) -> TestNode {
    start(config, verdict, |_| None).await
}

/// A node that accepts every transaction and answers rpc requests with `respond` (`None`: no
/// answer, the request is left pending).
pub(crate) async fn serving_node(
    config: NetConfig,
    respond: fn(&[u8]) -> Option<Vec<u8>>,
) -> TestNode {
    start(config, |_| TxVerdict::Accept, respond).await
}

async fn start(
    config: NetConfig,
    verdict: fn(&[u8]) -> TxVerdict,
    respond: fn(&[u8]) -> Option<Vec<u8>>,
) -> TestNode {
    assert!(!config.mdns, "tests never start mDNS in the root namespace");
    let key = Keypair::generate(&mut rand::rngs::OsRng);
    let (net, mut events) = meshward_net::spawn(&key, config).await.expect("spawn");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (pump_net, pump_seen) = (net.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match &event {
                NetEvent::Tx { id, bytes, .. } => {
                    pump_net.report_tx(id.clone(), verdict(bytes)).await;
                }
                NetEvent::Request { id, bytes, .. } => {
                    if let Some(response) = respond(bytes) {
                        pump_net.respond(*id, response).await;
                    }
                }
                _ => {}
            }
            pump_seen.lock().unwrap().push(event);
        }
    });
    let peer = net.local_peer_id();
    TestNode {
        key,
        net,
        peer,
        seen,
    }
}

impl TestNode {
    fn addr(&self, addrs: Vec<Multiaddr>, quic: bool) -> Option<Multiaddr> {
        addrs
            .into_iter()
            .find(|a| a.to_string().contains("/quic-v1") == quic)
            .map(|a| a.with_p2p(self.peer).unwrap())
    }

    pub(crate) async fn tcp_addr(&self) -> Multiaddr {
        self.addr(self.net.listen_addrs().await, false)
            .expect("node listens on tcp")
    }

    pub(crate) async fn quic_addr(&self) -> Multiaddr {
        self.addr(self.net.listen_addrs().await, true)
            .expect("node listens on quic")
    }

    pub(crate) async fn is_connected_to(&self, other: &TestNode) -> bool {
        self.net.peers().await.contains(&other.peer)
    }

    /// How many times the transaction `bytes` was handed to the node, and by whom.
    pub(crate) fn txs(&self, bytes: &[u8]) -> Vec<PeerId> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                NetEvent::Tx { from, bytes: b, .. } if b == bytes => Some(*from),
                _ => None,
            })
            .collect()
    }

    /// The rpc requests the node was handed: who sent them, their ids and bytes.
    pub(crate) fn requests(&self) -> Vec<(PeerId, RequestId, Vec<u8>)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                NetEvent::Request { from, id, bytes } => Some((*from, *id, bytes.clone())),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn events_len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn events_since(&self, index: usize) -> Vec<NetEvent> {
        self.seen.lock().unwrap()[index..].to_vec()
    }

    /// How many transactions starting with `prefix` the node was handed.
    pub(crate) fn txs_with_prefix(&self, prefix: &[u8]) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, NetEvent::Tx { bytes, .. } if bytes.starts_with(prefix)))
            .count()
    }

    /// Publishes `prefix #0`, `prefix #1`, … until `cond` holds. For a publisher whose peers are
    /// connected but may not have announced their subscription yet: a publish reaches only the
    /// peers known to subscribe at that moment.
    pub(crate) async fn publish_until<F>(&self, prefix: &[u8], mut cond: F)
    where
        F: FnMut() -> bool,
    {
        let start = Instant::now();
        for n in 0.. {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(format!(" #{n}").as_bytes());
            match self.net.publish_tx(bytes).await {
                Ok(()) | Err(NetError::NoPeers) => {}
                Err(e) => panic!("publish failed: {e}"),
            }
            for _ in 0..4 {
                if cond() {
                    return;
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "timed out publishing until delivered"
                );
                tokio::time::sleep(PUBLISH_POLL).await;
            }
        }
    }

    /// Publishes once a peer subscribed to the topic is connected.
    pub(crate) async fn publish(&self, bytes: &[u8]) {
        wait_until_future("a subscribed peer to publish to", DEADLINE, || async {
            match self.net.publish_tx(bytes.to_vec()).await {
                Ok(()) => true,
                Err(NetError::NoPeers) => false,
                Err(e) => panic!("publish failed: {e}"),
            }
        })
        .await;
    }
}
