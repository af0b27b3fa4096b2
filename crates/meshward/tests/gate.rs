//! The connection gate follows committed height, not consensus events: a revocation in a block
//! whose event a node's loop never saw still reaches that node's gate.
//!
//! Every node runs with `consensus_event_capacity = 1`, so its event loop loses consensus
//! events whenever it falls behind, and with the fault `fault_slow_event_loop_ms = 300` it does
//! fall behind, as a starved or stuck gateway's loop would: it pauses after each event while
//! heights follow every few milliseconds (`idle_block_interval_ms = 20`). Eight devices are revoked, one
//! per block. The test checks that every node lost events (or it would prove nothing), then that
//! every node refuses every revoked device's connections. An event-driven gate (apply the
//! revocations of the block each `Committed` event names) fails it: the revocations in the
//! blocks whose events were lost never reach the gate. (A real load did not make the loops lag
//! on this machine: one event per height is easy to keep up with.)
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use common::fleet::{Fleet, MIN};
use common::Cluster;
use meshward_core::ids::Keypair;
use meshward_core::rpc::Request;
use meshward_core::tx::{enroll_body, GroupName, Tx, TxBody};
use meshward_testkit::{http, wait_for};
use rand::rngs::OsRng;

const VICTIMS: usize = 8;
/// How long each node's event loop pauses after every consensus event.
const STALL_MS: u64 = 300;

/// A counter or gauge from node `i`'s `/metrics`.
fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let r = http(c.nodes[i].api_port, "GET", "/metrics", &[], b"")?;
    let text = String::from_utf8(r.body).ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Submits `tx` to node 0; returns its hash.
fn submit(c: &Cluster, tx: &Tx) -> String {
    c.submit(0, tx)
        .unwrap_or_else(|e| panic!("submit refused: {e:?}"))
}

/// Waits until node 0 reports the transaction `hash` final; returns its height.
fn final_height(c: &Cluster, hash: &str) -> u64 {
    wait_for("a transaction to be final", MIN, || {
        let v = c.tx_status(0, hash)?;
        (v["status"] == "final").then(|| v["height"].as_u64())?
    })
}

#[test]
fn revocations_reach_every_gate_even_when_consensus_events_are_lost() {
    let mut c = Cluster::new(4, 20);
    for n in &c.nodes {
        let cfg = n.dir.join("config.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!(
            "consensus_event_capacity = 1\nfault_slow_event_loop_ms = {STALL_MS}\n"
        ));
        std::fs::write(&cfg, text).unwrap();
    }
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 1, 2 * MIN);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = Fleet { c, rt };
    let chain = f.c.genesis.chain_id.clone();
    let admin = f.c.admin.clone();
    let group = GroupName::new("fleet").unwrap();

    // Enroll the victims and one device that stays active.
    let victims: Vec<Keypair> = (0..VICTIMS)
        .map(|_| Keypair::generate(&mut OsRng))
        .collect();
    let active = Keypair::generate(&mut OsRng);
    let mut seq = 0u64;
    let mut last = String::new();
    for d in victims.iter().chain([&active]) {
        seq += 1;
        let tx = Tx::sign(
            &chain,
            admin.id(),
            &admin.sign,
            seq,
            enroll_body(&chain, d, vec![group.clone()], None),
        );
        last = submit(&f.c, &tx);
    }
    let enrolled_at = final_height(&f.c, &last);
    f.c.wait_height(&[0, 1, 2, 3], enrolled_at, MIN);

    // Each victim revoked in a block of its own.
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
        revoked_at.push(final_height(&f.c, &submit(&f.c, &tx)));
    }
    let top = *revoked_at.iter().max().unwrap();
    assert!(
        revoked_at.windows(2).all(|w| w[0] < w[1]),
        "one revocation per block: {revoked_at:?}"
    );
    f.c.wait_height(&[0, 1, 2, 3], top, MIN);

    for i in 0..4 {
        // The precondition: this node's loop did lose consensus events.
        let lagged = metric(&f.c, i, "meshward_node_consensus_events_lagged_total")
            .expect("the node exports how many consensus events its loop lost");
        println!("node{i} lost {lagged} consensus events");
        assert!(
            lagged > 0.0,
            "node{i} lost no consensus event, so this run did not exercise the lag"
        );
        // Its gate has applied every revocation, and refuses every victim.
        wait_for(&format!("node{i}'s gate to pass height {top}"), MIN, || {
            (metric(&f.c, i, "meshward_gate_applied_height")? >= top as f64).then_some(())
        });
        for (k, v) in victims.iter().enumerate() {
            assert!(
                f.refuses(i, v),
                "node{i} accepted a connection from victim {k}, revoked at height {}",
                revoked_at[k]
            );
        }
    }
    // A device that was not revoked is still served.
    let client = f.client(Some(active), &[3]);
    let info = f.rt.block_on(client.call(&Request::Info));
    assert!(info.is_ok(), "node 3 refused an active device: {info:?}");
    f.rt.block_on(client.shutdown());
}
