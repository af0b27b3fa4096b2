//! A steady load of anchors on a [`Cluster`], and the checks the crash tests share.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::ids::Keypair;
use meshward_core::tx::{Anchor, Recipient, Tx, TxBody};
use meshward_testkit::{http, wait_for};
use rand::rngs::OsRng;
use rand::Rng;

use super::Cluster;

const MIN: Duration = Duration::from_secs(60);

/// A steady load of anchors from enrolled devices, each device's next transaction sent once
/// the previous one is final (and re-sent if a node died with it).
pub struct Load {
    stop: Arc<AtomicBool>,
    finals: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Enrolls `n` new devices with the cluster's admin and waits until the enrollments are final.
pub fn enroll_devices(c: &Cluster, n: usize) -> Vec<Keypair> {
    let devices: Vec<Keypair> = (0..n).map(|_| Keypair::generate(&mut OsRng)).collect();
    let mut hashes = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let tx = c.enroll_tx(d, i as u64 + 1);
        hashes.push(c.submit(0, &tx).expect("enrollment accepted"));
    }
    for h in &hashes {
        wait_for("enrollments to be final", MIN, || {
            (c.tx_status(0, h)?["status"] == "final").then_some(())
        });
    }
    devices
}

impl Load {
    /// Starts the load: every device sends its next anchor once the previous one is final.
    pub fn start(c: &Cluster, devices: Vec<Keypair>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let finals = Arc::new(Mutex::new(HashMap::new()));
        let ports: Vec<(u16, String)> = c
            .nodes
            .iter()
            .map(|n| (n.api_port, n.token.clone()))
            .collect();
        let chain = c.genesis.chain_id.clone();
        let (s, f) = (stop.clone(), finals.clone());
        let handle = std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let n = devices.len();
            // Per device: next sequence number and the transaction in flight.
            let mut seq = vec![1u64; n];
            let mut inflight: Vec<Option<(Tx, String, Instant)>> = vec![None; n];
            let submit = |tx: &Tx, rng: &mut rand::rngs::ThreadRng| {
                let start = rng.gen_range(0..ports.len());
                for k in 0..ports.len() {
                    let (port, token) = &ports[(start + k) % ports.len()];
                    let auth = format!("Bearer {token}");
                    if let Some(r) = http(
                        *port,
                        "POST",
                        "/v1/tx",
                        &[("Authorization", &auth)],
                        &tx.to_bytes(),
                    ) {
                        if r.status == 200 || r.status == 409 {
                            return;
                        }
                    }
                }
            };
            let status = |hash: &str| -> Option<serde_json::Value> {
                ports.iter().find_map(|(port, _)| {
                    let r = http(*port, "GET", &format!("/v1/tx/{hash}"), &[], b"")?;
                    (r.status == 200).then(|| r.json())
                })
            };
            let mut d = 0;
            while !s.load(Ordering::Relaxed) {
                d = (d + 1) % n;
                if let Some((tx, hash, sent)) = &inflight[d] {
                    match status(hash) {
                        Some(v) if v["status"] == "final" => {
                            let loc = (v["height"].as_u64().unwrap(), v["index"].as_u64().unwrap());
                            f.lock().unwrap().insert(hash.clone(), loc);
                            inflight[d] = None;
                            seq[d] += 1;
                        }
                        _ if sent.elapsed() > Duration::from_secs(3) => {
                            let tx = tx.clone();
                            submit(&tx, &mut rng);
                            inflight[d] = Some((tx, hash.clone(), Instant::now()));
                        }
                        _ => {}
                    }
                    // Not a wait: this paces the load generator's status polls.
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let to = &devices[(d + 1) % n];
                let body = TxBody::Anchor(Anchor {
                    recipient: Recipient::Device(to.id()),
                    commitment: Hash(rng.gen()),
                    count: 1,
                    timestamp_ms: 0,
                    size_bytes: 256,
                });
                let tx = Tx::sign(&chain, devices[d].id(), &devices[d].sign, seq[d], body);
                let hash = tx.id().to_hex();
                submit(&tx, &mut rng);
                inflight[d] = Some((tx, hash, Instant::now()));
            }
        });
        Load {
            stop,
            finals,
            handle: Some(handle),
        }
    }

    /// What the load saw final: transaction id → (height, index).
    pub fn finals(&self) -> HashMap<String, (u64, u64)> {
        self.finals.lock().unwrap().clone()
    }

    /// Waits until `more` further transactions are final.
    pub fn wait_more_finals(&self, more: usize, timeout: Duration) {
        let start = self.finals.lock().unwrap().len();
        wait_for(&format!("{more} more final transactions"), timeout, || {
            (self.finals.lock().unwrap().len() >= start + more).then_some(())
        });
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The highest height the `nodes` report.
pub fn max_height(c: &Cluster, nodes: &[usize]) -> u64 {
    nodes.iter().filter_map(|&i| c.height(i)).max().unwrap_or(0)
}

/// Asserts that the `nodes` hold the same block hashes at heights 1..=`upto`.
pub fn assert_same_hashes(c: &Cluster, nodes: &[usize], upto: u64) {
    for h in 1..=upto {
        let hashes: Vec<Option<String>> = nodes.iter().map(|&i| c.block_hash(i, h)).collect();
        assert!(hashes[0].is_some(), "no block {h}");
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "height {h}: {hashes:?}"
        );
    }
}
