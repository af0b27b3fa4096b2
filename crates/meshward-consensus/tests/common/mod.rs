//! A local network of validators, each in this process with its own data dir, redb store,
//! mempool and Malachite network on 127.0.0.1.

#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use meshward_consensus::{start, ConsensusConfig, ConsensusHandle, Mempool, SharedStore};
use meshward_core::block::CertifiedBlock;
use meshward_core::codec::Encode;
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, SignKey};
use meshward_core::state::AdminSet;
use meshward_core::tx::{
    enroll_body, Anchor, GroupName, Recipient, Tx, TxBody, Validator, ValidatorSet,
};
use meshward_store::Store;
use tempfile::TempDir;

/// Network tests share two cores: run them one at a time.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A mempool for tests: a FIFO of transactions, with their ids and sizes computed once.
#[derive(Default)]
pub(crate) struct TestMempool {
    txs: Mutex<VecDeque<(Hash, usize, Tx)>>,
}

impl TestMempool {
    pub(crate) fn push(&self, txs: impl IntoIterator<Item = Tx>) {
        let entries: Vec<(Hash, usize, Tx)> = txs
            .into_iter()
            .map(|t| (t.id(), t.to_bytes().len(), t))
            .collect();
        self.txs.lock().unwrap().extend(entries);
    }
}

impl Mempool for TestMempool {
    fn reap(&self, max_txs: usize, max_bytes: usize) -> Vec<Tx> {
        let q = self.txs.lock().unwrap();
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, n, tx) in q.iter() {
            if out.len() >= max_txs || bytes + n > max_bytes {
                break;
            }
            bytes += n;
            out.push(tx.clone());
        }
        out
    }

    fn len(&self) -> usize {
        self.txs.lock().unwrap().len()
    }

    fn on_committed(&self, block: &CertifiedBlock, dropped: &[Tx]) {
        let gone: HashSet<Hash> = block
            .block
            .txs
            .iter()
            .chain(dropped)
            .map(|t| t.id())
            .collect();
        self.txs
            .lock()
            .unwrap()
            .retain(|(id, _, _)| !gone.contains(id));
    }
}

pub(crate) struct Node {
    pub handle: ConsensusHandle,
    pub store: SharedStore,
    pub mempool: Arc<TestMempool>,
}

pub(crate) struct Net {
    pub genesis: Genesis,
    pub admin: SignKey,
    pub keys: Vec<Keypair>,
    pub dirs: Vec<TempDir>,
    pub ports: Vec<u16>,
    pub nodes: Vec<Option<Node>>,
    pub idle_block_interval_ms: u64,
    pub max_block_txs: usize,
}

impl Net {
    /// `n` validators with equal power, not started.
    pub(crate) fn new(n: usize) -> Net {
        let admin = SignKey::from_seed(&[200; 32]);
        let keys: Vec<Keypair> = (0..n)
            .map(|i| {
                let mut seed = [0u8; 65];
                seed[0] = 1;
                seed[1] = i as u8 + 1;
                seed[33] = i as u8 + 100;
                Keypair::from_secret_bytes(&seed).unwrap()
            })
            .collect();
        let genesis = Genesis {
            chain_id: "consensus-test".into(),
            genesis_time_ms: 1_700_000_000_000,
            admins: AdminSet::new(vec![admin.public()], 1).unwrap(),
            validators: ValidatorSet::new(
                keys.iter()
                    .map(|k| Validator {
                        key: k.id(),
                        power: 1,
                    })
                    .collect(),
            )
            .unwrap(),
        };
        let base = meshward_testkit::free_ports(n as u16);
        let ports = (0..n as u16).map(|i| base + i).collect();
        let dirs = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        Net {
            genesis,
            admin,
            keys,
            dirs,
            ports,
            nodes: (0..n).map(|_| None).collect(),
            idle_block_interval_ms: 1000,
            max_block_txs: 10_000,
        }
    }

    pub(crate) fn config(&self, i: usize) -> ConsensusConfig {
        let mut c = ConsensusConfig::new(
            self.dirs[i].path(),
            format!("/ip4/127.0.0.1/tcp/{}", self.ports[i]),
        );
        c.persistent_peers = (0..self.ports.len())
            .filter(|j| *j != i)
            .map(|j| format!("/ip4/127.0.0.1/tcp/{}", self.ports[j]))
            .collect();
        c.idle_block_interval_ms = self.idle_block_interval_ms;
        // A tenth of the test heartbeat: a transaction's block is then told apart from a
        // heartbeat by its time alone.
        c.block_batch_ms = self.idle_block_interval_ms / 10;
        c.max_block_txs = self.max_block_txs;
        c
    }

    /// Starts validator `i`, creating its store on first start and reopening it after.
    pub(crate) async fn start(&mut self, i: usize) {
        let path = self.dirs[i].path().join("meshward.redb");
        let store = if path.exists() {
            Store::open(&path).unwrap()
        } else {
            Store::create(&path, &self.genesis).unwrap()
        };
        let store: SharedStore = Arc::new(RwLock::new(store));
        let mempool = Arc::new(TestMempool::default());
        let handle = start(
            self.config(i),
            self.keys[i].clone(),
            store.clone(),
            mempool.clone(),
        )
        .await
        .unwrap();
        self.nodes[i] = Some(Node {
            handle,
            store,
            mempool,
        });
    }

    pub(crate) async fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i).await;
        }
    }

    /// Stops validator `i` and releases its store.
    pub(crate) async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.handle.shutdown().await;
            drop(node.store);
        }
    }

    pub(crate) async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }

    pub(crate) fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap()
    }

    pub(crate) fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    pub(crate) fn tip(&self, i: usize) -> u64 {
        self.node(i)
            .store
            .read()
            .unwrap()
            .tip()
            .map_or(0, |(h, _)| h)
    }

    /// The lowest tip among running validators.
    pub(crate) fn min_tip(&self) -> u64 {
        self.running()
            .map(|n| n.store.read().unwrap().tip().map_or(0, |(h, _)| h))
            .min()
            .unwrap_or(0)
    }

    pub(crate) fn max_tip(&self) -> u64 {
        self.running()
            .map(|n| n.store.read().unwrap().tip().map_or(0, |(h, _)| h))
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn block(&self, i: usize, h: u64) -> CertifiedBlock {
        self.node(i)
            .store
            .read()
            .unwrap()
            .block(h)
            .unwrap()
            .unwrap()
    }

    /// Checks that every running validator stores the same block at every height up to `upto`.
    pub(crate) fn assert_same_chain(&self, upto: u64) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        for h in 1..=upto {
            let first = self.block(running[0], h).block.hash();
            for &i in &running[1..] {
                assert_eq!(
                    self.block(i, h).block.hash(),
                    first,
                    "validator {i} differs at height {h}"
                );
            }
        }
    }

    /// Puts `txs` into every running validator's mempool, as gossip would.
    pub(crate) fn submit(&self, txs: &[Tx]) {
        for n in self.running() {
            n.mempool.push(txs.iter().cloned());
        }
    }

    /// Admin transactions enrolling `n` new devices (admin seq from `first_seq`).
    pub(crate) fn enroll_txs(&self, devices: &[Keypair], first_seq: u64) -> Vec<Tx> {
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let body = enroll_body(
                    &self.genesis.chain_id,
                    d,
                    vec![GroupName::new("fleet").unwrap()],
                    None,
                );
                Tx::sign(
                    &self.genesis.chain_id,
                    self.admin.public(),
                    &self.admin,
                    first_seq + i as u64,
                    body,
                )
            })
            .collect()
    }

    /// An anchor from `from` (its `seq`-th transaction) to `to`.
    pub(crate) fn anchor_tx(&self, from: &Keypair, to: &Keypair, seq: u64, tag: u64) -> Tx {
        let mut c = [0u8; 32];
        c[..8].copy_from_slice(&tag.to_be_bytes());
        c[8..16].copy_from_slice(&seq.to_be_bytes());
        c[16..].copy_from_slice(&from.id().0[..16]);
        let body = TxBody::Anchor(Anchor {
            recipient: Recipient::Device(to.id()),
            commitment: Hash(c),
            count: 1,
            timestamp_ms: 1,
            size_bytes: 256,
        });
        Tx::sign(&self.genesis.chain_id, from.id(), &from.sign, seq, body)
    }
}

/// Devices with deterministic keys.
pub(crate) fn devices(n: usize, salt: u8) -> Vec<Keypair> {
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 65];
            seed[0] = 1;
            // Marker byte: device keys never collide with validator keys.
            seed[1] = 0xd0;
            seed[2] = salt;
            seed[3..11].copy_from_slice(&(i as u64).to_be_bytes());
            seed[33] = salt;
            seed[34..42].copy_from_slice(&(i as u64).to_be_bytes());
            Keypair::from_secret_bytes(&seed).unwrap()
        })
        .collect()
}

/// Runs `f` with the network-test lock held.
pub(crate) async fn serial<F: Future<Output = ()>>(f: F) {
    let _guard = SERIAL.lock().await;
    init_tracing();
    f.await;
}
