//! Validator-set changes on a running chain of real `meshward node run` processes, under load.
//!
//! Four validators from the genesis finalise a steady load of anchors. A fifth gateway, made by
//! `meshward init` and started from the same genesis, follows by sync; `meshward validator add`
//! puts it in the set, and it signs certificates from the height after the change. While five
//! rule, one of the genesis four is killed: the other three hold 3 of 5, no quorum, so the
//! chain goes on only with the fifth's votes; the killed one restarts and catches up. Then
//! `meshward validator remove` takes another of the original four out; it keeps running as a
//! follower, and signs nothing from the height after its removal. Last, `meshward validator
//! set-power` gives the fifth power 2.
//!
//! Asserted: every node holds the same block at every height it has (no fork); every
//! transaction the load saw final is final at the same place on every node; the added
//! validator signed at least one certificate after it joined, the removed one none after it
//! left (read from every node's store: each block's certificate and the last commit the next
//! block carries); each store records the sets at the heights the CLI reported and passes
//! `meshward store verify`; an anchor final after the three changes has a proof that
//! `meshward verify` accepts against the genesis alone (the proof carries the three handoffs).
//! The CLI refuses, before signing, to add a validator already in the set or to remove one
//! that is not.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::load::{enroll_devices, max_height, Load};
use common::{meshward, Cluster, Node};
use meshward_core::codec::Decode;
use meshward_core::ids::PublicKey;
use meshward_testkit::{free_ports, http, wait_until};
use serde_json::Value;

const MIN: Duration = Duration::from_secs(60);

/// Runs `meshward args…` and returns its `--json` output; a non-zero exit fails the test.
fn cli_json(args: &[&str]) -> Value {
    let out = meshward().args(args).arg("--json").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "meshward {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout}: {e}"))
}

/// Runs `meshward args…`, expecting it to fail; returns its error text.
fn cli_fails(args: &[&str]) -> String {
    let out = meshward().args(args).output().unwrap();
    assert!(!out.status.success(), "meshward {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A gateway that is not in the genesis: `meshward init`, then its own ports and no mDNS.
fn init_fifth(c: &mut Cluster) -> usize {
    let dir = c.root.path().join("node4");
    let init = cli_json(&["init", "--dir", dir.to_str().unwrap()]);
    let api_port = free_ports(2);
    let p2p_port = api_port + 1;
    let cfg = dir.join("config.toml");
    let text: String = fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("api =") {
                format!("api = \"127.0.0.1:{api_port}\"")
            } else if l.starts_with("p2p =") {
                format!("p2p = \"/ip4/127.0.0.1/tcp/{p2p_port}\"")
            } else if l.starts_with("mdns =") {
                "mdns = false".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    fs::write(&cfg, text + "idle_block_interval_ms = 200\n").unwrap();
    c.nodes.push(Node {
        name: "node4".into(),
        token: fs::read_to_string(dir.join("api.token"))
            .unwrap()
            .trim()
            .to_string(),
        dir,
        api_port,
        p2p_port,
        peer_id: init["peer_id"].as_str().unwrap().to_string(),
        child: None,
    });
    c.nodes.len() - 1
}

fn api(c: &Cluster, i: usize) -> String {
    format!("http://127.0.0.1:{}", c.nodes[i].api_port)
}

/// Node `i`'s `GET /v1/validators`.
fn validators(c: &Cluster, i: usize) -> Option<Value> {
    let r = http(c.nodes[i].api_port, "GET", "/v1/validators", &[], b"")?;
    (r.status == 200).then(|| r.json())
}

/// Who signed block `h`'s certificate as node `i` stores it.
fn cert_signers(c: &Cluster, i: usize, h: u64) -> Option<Vec<String>> {
    let r = http(
        c.nodes[i].api_port,
        "GET",
        &format!("/v1/blocks/{h}"),
        &[],
        b"",
    )?;
    (r.status == 200).then(|| {
        r.json()["certificate"]["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["validator"].as_str().unwrap().to_string())
            .collect()
    })
}

/// Every (height, signer) of the certificates in node `dir`'s store: each block's own and the
/// last commit the next block carries. Also the validator sets it recorded, by first height.
/// (height, signer) pairs, and (first height, validators) of each recorded set.
type StoreFacts = (Vec<(u64, PublicKey)>, Vec<(u64, usize)>);

fn store_signatures(dir: &Path) -> StoreFacts {
    let store = meshward_store::Store::open(dir.join(meshward_node::STORE_FILE)).unwrap();
    let tip = store.tip().map_or(0, |(h, _)| h);
    let mut out = Vec::new();
    for h in 1..=tip {
        let cb = store.block(h).unwrap().unwrap();
        out.extend(cb.certificate.signers().map(|k| (h, *k)));
        if let Some(lc) = &cb.block.last_commit {
            out.extend(lc.signers().map(|k| (lc.height, *k)));
        }
    }
    let sets = store
        .validator_sets()
        .into_iter()
        .map(|(h, s)| (h, s.validators.len()))
        .collect();
    (out, sets)
}

#[test]
fn validator_set_grows_and_shrinks_under_load() {
    let started = Instant::now();
    let mut c = Cluster::new(4, 200);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 2, MIN);
    let devices = enroll_devices(&c, 16);
    let load = Load::start(&c, devices);
    load.wait_more_finals(50, MIN);
    let admin_key = c.root.path().join("admin.key");
    let admin_key = admin_key.to_str().unwrap().to_string();

    // The set in force, as the API reports it: the genesis four, all signing.
    let v = validators(&c, 0).unwrap();
    assert_eq!(v["validators"].as_array().unwrap().len(), 4);
    assert_eq!(v["since_height"], 1);
    wait_until("all four to sign recent certificates", MIN, || {
        validators(&c, 0).is_some_and(|v| {
            v["validators"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["last_signed_height"].is_u64())
        })
    });

    // A fifth gateway from `meshward init`, peered with the four, follows by sync.
    let fifth = init_fifth(&mut c);
    c.start(fifth);
    let target = max_height(&c, &[0, 1, 2, 3]);
    c.wait_height(&[fifth], target, MIN);
    assert_eq!(c.status(fifth).unwrap()["is_validator"], false);
    let fifth_dir = c.nodes[fifth].dir.to_str().unwrap().to_string();
    let fifth_id = c.nodes[fifth].peer_id.clone();

    // Refused before anything is signed: a validator already in the set, and one not in it.
    let present = c.nodes[1].peer_id.clone();
    let err = cli_fails(&[
        "validator",
        "add",
        "--api",
        &api(&c, 0),
        "--admin-key",
        &admin_key,
        &present,
    ]);
    assert!(err.contains("already a validator"), "{err}");
    let err = cli_fails(&[
        "validator",
        "remove",
        "--api",
        &api(&c, 0),
        "--admin-key",
        &admin_key,
        &fifth_id,
    ]);
    assert!(err.contains("not in the validator set"), "{err}");

    // Grow to five, by the node's data dir.
    let added = cli_json(&[
        "validator",
        "add",
        "--api",
        &api(&c, 0),
        "--admin-key",
        &admin_key,
        &fifth_dir,
    ]);
    assert_eq!(added["validator"], fifth_id.as_str());
    assert_eq!(added["power"], 1);
    assert_eq!(added["action"], "add");
    assert_eq!(added["validators"].as_array().unwrap().len(), 5);
    let joined = added["rules_from"].as_u64().unwrap();
    assert_eq!(joined, added["height"].as_u64().unwrap() + 1);
    println!(
        "validator added in block {}, rules from {joined}",
        added["height"]
    );

    wait_until("the fifth node to count itself a validator", MIN, || {
        c.status(fifth)
            .is_some_and(|s| s["is_validator"] == true && s["validators"] == 5)
    });
    load.wait_more_finals(50, MIN);

    // The fifth's votes count: with one of the genesis four killed, the other three alone hold
    // 3 of 5 (not more than 2/3), so every block from here needs the fifth's signature. (While
    // all five run, a quorum of four can leave the newest, often slowest, out of a certificate
    // for any number of blocks, so only this checks its signature deterministically.) A block
    // two above the height seen at the kill was decided without node 2.
    c.kill(2);
    let h0 = max_height(&c, &[0, 1, 3, fifth]);
    c.wait_height(&[0, 1, 3, fifth], h0 + 10, MIN);
    assert!(h0 + 2 >= joined, "the kill came before the fifth joined");
    for h in h0 + 2..=h0 + 10 {
        let signers = cert_signers(&c, 0, h).expect("node 0 serves the block");
        assert!(
            signers.contains(&fifth_id),
            "block {h}, decided while node 2 was down, lacks the fifth's signature: {signers:?}"
        );
    }
    println!("the fifth validator signed blocks {}..={}", h0 + 2, h0 + 10);
    load.wait_more_finals(20, MIN);
    c.start(2);
    c.wait_height(&[2], max_height(&c, &[0, 1, 3, fifth]), MIN);

    // Shrink back to four: remove one of the genesis validators, by peer id. It keeps running.
    let removed = 3;
    let removed_id = c.nodes[removed].peer_id.clone();
    let gone = cli_json(&[
        "validator",
        "remove",
        "--api",
        &api(&c, 1),
        "--admin-key",
        &admin_key,
        &removed_id,
    ]);
    assert_eq!(gone["validators"].as_array().unwrap().len(), 4);
    assert_eq!(gone["action"], "remove");
    let left = gone["rules_from"].as_u64().unwrap();
    println!(
        "validator removed in block {}, rules from {left}",
        gone["height"]
    );
    let live = [0, 1, 2, fifth];
    c.wait_height(&live, left + 20, MIN);
    load.wait_more_finals(50, MIN);
    // The removed node follows the chain.
    let top = max_height(&c, &live);
    c.wait_height(&[removed], top, MIN);
    wait_until("the removed node to see itself out of the set", MIN, || {
        c.status(removed)
            .is_some_and(|s| s["is_validator"] == false && s["validators"] == 4)
    });
    let v = validators(&c, 0).unwrap();
    assert_eq!(v["since_height"], left);
    let ids: Vec<&str> = v["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&fifth_id.as_str()) && !ids.contains(&removed_id.as_str()));

    // A third handoff: the fifth's power to 2 (the set keeps its members; total 5).
    let repowered = cli_json(&[
        "validator",
        "set-power",
        "--api",
        &api(&c, 0),
        "--admin-key",
        &admin_key,
        &fifth_id,
        "--power",
        "2",
    ]);
    assert_eq!(repowered["action"], "set-power");
    assert_eq!(repowered["total_power"], 5);
    let powered = repowered["rules_from"].as_u64().unwrap();
    println!(
        "the fifth's power set to 2 in block {}, rules from {powered}",
        repowered["height"]
    );
    c.wait_height(&live, powered + 10, MIN);
    load.wait_more_finals(30, MIN);

    // An anchor final after every handoff: its proof verifies against the genesis alone.
    let finals = load.finals();
    let (tx, &(h, idx)) = finals
        .iter()
        .filter(|(_, (h, _))| *h > powered)
        .max_by_key(|(_, (h, _))| *h)
        .expect("an anchor final after the last handoff");
    // Final where the load saw it; nodes 0 and 2, which are read below, may be a block behind.
    c.wait_height(&[0, 2], h, MIN);
    let block = http(
        c.nodes[0].api_port,
        "GET",
        &format!("/v1/blocks/{h}"),
        &[],
        b"",
    )
    .unwrap()
    .json();
    let anchor = &block["txs"][idx as usize];
    assert_eq!(anchor["id"], tx.as_str());
    let commitment = anchor["commitment"].as_str().unwrap().to_string();
    let proof = c.root.path().join("proof.json");
    let proof = proof.to_str().unwrap();
    cli_json(&["proof", "--api", &api(&c, 2), &commitment, "--out", proof]);
    let ok = cli_json(&[
        "verify",
        "--genesis",
        c.genesis_path.to_str().unwrap(),
        proof,
    ]);
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["height"], h);
    // It carries the three handoffs, each in the block before the height its set rules from.
    let file: Value = serde_json::from_str(&fs::read_to_string(proof).unwrap()).unwrap();
    let bytes = hex::decode(file["proof"].as_str().unwrap()).unwrap();
    let decoded = meshward_core::light::TxProof::from_bytes(&bytes).unwrap();
    let handoffs: Vec<u64> = decoded.handoffs.iter().map(|i| i.header.height).collect();
    assert_eq!(handoffs, vec![joined - 1, left - 1, powered - 1]);

    // Stop the load; everything it saw final is final at the same place on every node.
    drop(load);
    let all: Vec<usize> = (0..c.nodes.len()).collect();
    let top = max_height(&c, &live);
    c.wait_height(&all, top, MIN);
    for (tx, loc) in &finals {
        for &i in &all {
            let s = c.tx_status(i, tx).unwrap();
            assert_eq!(s["status"], "final", "node{i} {tx}: {s}");
            assert_eq!(
                (s["height"].as_u64().unwrap(), s["index"].as_u64().unwrap()),
                *loc,
                "node{i} {tx}"
            );
        }
    }
    // No fork: every height on every node (the fifth from its first block, synced).
    for h in 1..=top {
        let hashes: Vec<Option<String>> = all.iter().map(|&i| c.block_hash(i, h)).collect();
        assert!(hashes[0].is_some(), "no block {h} on node0");
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "height {h}: {hashes:?}"
        );
    }

    // Who proposed after the fifth joined, as node0 holds the blocks.
    let (mut by_fifth, mut txs_by_fifth) = (0, 0);
    for h in joined..=top {
        let b = http(
            c.nodes[0].api_port,
            "GET",
            &format!("/v1/blocks/{h}"),
            &[],
            b"",
        )
        .unwrap()
        .json();
        if b["header"]["proposer"] == fifth_id.as_str() {
            by_fifth += 1;
            txs_by_fifth += b["txs"].as_array().unwrap().len();
        }
    }
    println!(
        "the fifth proposed {by_fifth} of blocks {joined}..={top} ({txs_by_fifth} transactions)"
    );

    // Stopped, each store: who signed, the sets it recorded, and a full replay.
    for &i in &all {
        assert!(c.stop(i).success(), "node{i} did not stop cleanly");
    }
    let fifth_key = PublicKey::from_peer_id(&fifth_id).unwrap();
    let removed_key = PublicKey::from_peer_id(&removed_id).unwrap();
    let mut fifth_signed = 0;
    let mut fifth_first = u64::MAX;
    for &i in &all {
        let (sigs, sets) = store_signatures(&c.nodes[i].dir);
        assert_eq!(
            sets,
            vec![(1, 4), (joined, 5), (left, 4), (powered, 4)],
            "node{i}"
        );
        assert!(
            !sigs.iter().any(|(h, k)| *k == fifth_key && *h < joined),
            "node{i}: the fifth signed before it joined"
        );
        let late: Vec<u64> = sigs
            .iter()
            .filter(|(h, k)| *k == removed_key && *h >= left)
            .map(|(h, _)| *h)
            .collect();
        assert!(
            late.is_empty(),
            "node{i}: the removed validator signed {late:?}"
        );
        fifth_first = fifth_first.min(
            sigs.iter()
                .filter(|(_, k)| *k == fifth_key)
                .map(|(h, _)| *h)
                .min()
                .unwrap_or(u64::MAX),
        );
        fifth_signed = fifth_signed.max(
            sigs.iter()
                .filter(|(h, k)| *k == fifth_key && *h >= joined)
                .count(),
        );
        let out = meshward()
            .args(["store", "verify", "--dir"])
            .arg(&c.nodes[i].dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "store verify on node{i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(fifth_signed >= 1);
    println!(
        "handoffs: 5 validators from height {joined}, 4 from {left}, the fifth at power 2 from \
         {powered}; chain at {top}; {} \
         transactions final under load; the fifth first signed {fifth_first} (in a store), and \
         signed {fifth_signed} certificates and last commits in one store; \
         {:.1} s",
        finals.len(),
        started.elapsed().as_secs_f64()
    );
}
