//! The connection gate follows committed height, not consensus events: a revocation in a block
//! whose event the node's loop never saw still reaches the gate, on every node.
//!
//! Every node runs with `consensus_event_capacity = 1`, so its event loop loses consensus
//! events whenever it falls behind. Node 3 is stopped while eight devices are revoked, one per
//! block, then restarted under a gossip load: it commits those blocks by sync, in a burst, while
//! its loop is busy admitting gossiped batches, so it misses events (the test checks that it did,
//! or it would prove nothing). Every node must then refuse every revoked device's connections.
//! An event-driven gate (apply the revocations of the block each `Committed` event names) fails
//! this test: the revocations in the blocks whose events were lost never reach node 3's gate.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fleet::{Fleet, MIN};
use common::Cluster;
use meshward_core::hash::Hash;
use meshward_core::ids::Keypair;
use meshward_core::rpc::Request;
use meshward_core::tx::{enroll_body, Anchor, GroupName, Recipient, Tx, TxBody};
use meshward_testkit::{http, wait_for};
use rand::rngs::OsRng;

const VICTIMS: usize = 8;
const LOADERS: usize = 16;

/// A counter or gauge from node `i`'s `/metrics`.
fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let r = http(c.nodes[i].api_port, "GET", "/metrics", &[], b"")?;
    let text = String::from_utf8(r.body).ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Submits `tx` to node 0 and waits until node 0 reports it final; returns its height.
fn submit_final(c: &Cluster, tx: &Tx) -> u64 {
    let hash = c
        .submit(0, tx)
        .unwrap_or_else(|e| panic!("submit refused: {e:?}"));
    wait_for("a transaction to be final", MIN, || {
        let v = c.tx_status(0, &hash)?;
        (v["status"] == "final").then(|| v["height"].as_u64())?
    })
}

/// Whether node `i` refuses a mesh connection from `kp`: either the dial fails, or the
/// connection is closed before a request is answered.
fn refuses(f: &Fleet, i: usize, kp: &Keypair) -> bool {
    let client = f.client(Some(kp.clone()), &[]);
    let addr: meshward_net::Multiaddr = f.mesh(i).parse().unwrap();
    let dialed = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), client.net().dial(addr)).await
    });
    let refused = match dialed {
        Ok(Ok(_)) => {
            let peer = meshward_net::peer_id_of(
                &meshward_core::ids::PublicKey::from_peer_id(&f.c.nodes[i].peer_id).unwrap(),
            );
            f.rt.block_on(client.request_peer(peer, &Request::Info))
                .is_err()
        }
        _ => true,
    };
    f.rt.block_on(client.shutdown());
    refused
}

#[test]
fn revocations_reach_every_gate_even_when_consensus_events_are_lost() {
    let mut c = Cluster::new(4, 100);
    for n in &c.nodes {
        let cfg = n.dir.join("config.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str("consensus_event_capacity = 1\n");
        std::fs::write(&cfg, text).unwrap();
    }
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 1, 2 * MIN);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut f = Fleet { c, rt };
    let chain = f.c.genesis.chain_id.clone();
    let admin = f.c.admin.clone();
    let group = GroupName::new("fleet").unwrap();

    // Enroll the victims and the devices that will load the chain, on every node.
    let victims: Vec<Keypair> = (0..VICTIMS)
        .map(|_| Keypair::generate(&mut OsRng))
        .collect();
    let loaders: Vec<Keypair> = (0..LOADERS)
        .map(|_| Keypair::generate(&mut OsRng))
        .collect();
    let mut seq = 0u64;
    let mut last = String::new();
    for d in victims.iter().chain(&loaders) {
        seq += 1;
        let tx = Tx::sign(
            &chain,
            admin.id(),
            &admin.sign,
            seq,
            enroll_body(&chain, d, vec![group.clone()], None),
        );
        last =
            f.c.submit(0, &tx)
                .unwrap_or_else(|e| panic!("submit refused: {e:?}"));
    }
    wait_for("the last enrollment to be final", MIN, || {
        let v = f.c.tx_status(0, &last)?;
        (v["status"] == "final").then_some(())
    });
    let enrolled_at = f.c.height(0).unwrap();
    f.c.wait_height(&[0, 1, 2, 3], enrolled_at, MIN);

    // Node 3 is away while each victim is revoked in a block of its own.
    f.c.stop(3);
    let mut revoked_at = Vec::new();
    for v in &victims {
        seq += 1;
        let tx = Tx::sign(
            &chain,
            admin.id(),
            &admin.sign,
            seq,
            TxBody::Revoke {
                device: v.id(),
                reason: "lost".into(),
            },
        );
        revoked_at.push(submit_final(&f.c, &tx));
    }
    let top = *revoked_at.iter().max().unwrap();
    assert!(
        revoked_at.windows(2).all(|w| w[0] < w[1]),
        "one revocation per block: {revoked_at:?}"
    );

    // Gossip load while node 3 comes back: its loop admits batches as it syncs.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, chain, port, token) = (
            stop.clone(),
            chain.clone(),
            f.c.nodes[0].api_port,
            f.c.nodes[0].token.clone(),
        );
        let loaders = loaders.clone();
        std::thread::spawn(move || {
            let auth = format!("Bearer {token}");
            let mut next = vec![1u64; loaders.len()];
            // Bounded: at most 60 rounds of one batch per loader round.
            for round in 0..60u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let txs: Vec<Vec<u8>> = loaders
                    .iter()
                    .enumerate()
                    .flat_map(|(i, d)| {
                        let to = loaders[(i + 1) % loaders.len()].id();
                        (0..16)
                            .map(|k| {
                                let s = next[i] + k;
                                let mut commitment = [0u8; 32];
                                commitment[..8].copy_from_slice(&round.to_be_bytes());
                                commitment[8..16].copy_from_slice(&s.to_be_bytes());
                                commitment[16] = i as u8;
                                meshward_core::codec::Encode::to_bytes(&Tx::sign(
                                    &chain,
                                    d.id(),
                                    &d.sign,
                                    s,
                                    TxBody::Anchor(Anchor {
                                        recipient: Recipient::Device(to),
                                        commitment: Hash(commitment),
                                        count: 1,
                                        timestamp_ms: meshward_core::clock::now_ms(),
                                        size_bytes: 256,
                                    }),
                                ))
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for n in next.iter_mut() {
                    *n += 16;
                }
                let body = meshward_core::tx::encode_tx_list(&txs);
                let _ = http(
                    port,
                    "POST",
                    "/v1/txs",
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/octet-stream"),
                    ],
                    &body,
                );
                // Paces the load generator (about 20 posts/s); nothing waits on it.
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    f.c.start(3);
    f.c.wait_height(&[3], top + 1, 2 * MIN);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    // The precondition: node 3's loop did lose consensus events.
    let lagged = metric(&f.c, 3, "meshward_node_consensus_events_lagged_total").unwrap_or(0.0);
    assert!(
        lagged > 0.0,
        "node 3 lost no consensus event, so this run did not exercise the lag"
    );
    println!("node 3 lost {lagged} consensus events while catching up");

    // Every node's gate has applied every revocation, and refuses every victim.
    for i in 0..4 {
        wait_for(&format!("node{i}'s gate to pass height {top}"), MIN, || {
            (metric(&f.c, i, "meshward_gate_applied_height")? >= top as f64).then_some(())
        });
        for (k, v) in victims.iter().enumerate() {
            assert!(
                refuses(&f, i, v),
                "node{i} accepted a connection from victim {k}, revoked at height {}",
                revoked_at[k]
            );
        }
    }
    // A device that was not revoked is still served.
    let client = f.client(Some(loaders[0].clone()), &[3]);
    let info = f.rt.block_on(client.call(&Request::Info));
    assert!(info.is_ok(), "node 3 refused an active device: {info:?}");
    f.rt.block_on(client.shutdown());
}
