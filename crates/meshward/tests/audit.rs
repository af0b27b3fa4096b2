//! The auditor's path with real processes: a 4-validator cluster sees enrollments, a policy
//! change, a key rotation, an anchor signed with the rotated key and a revocation; `meshward
//! audit --prove` lists every governance action in order and writes a proof of each, and
//! `meshward verify` checks every proof against the genesis alone and says what it proves.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use common::fleet::{cli, s, Fleet, MIN};

#[test]
fn audit_lists_every_governance_action_and_each_proof_verifies_offline() {
    let f = Fleet::start();
    // Each step goes through another gateway than the one before: let every node apply what
    // the last step made final first.
    let settle = |f: &Fleet| {
        let h = (0..4).filter_map(|i| f.c.height(i)).max().unwrap();
        f.c.wait_height(&[0, 1, 2, 3], h, MIN);
    };
    let a = f.device("a", &["g1"]);
    let b = f.device("b", &["g2"]);
    settle(&f);
    cli(&[
        s("policy"),
        s("set"),
        s("--api"),
        f.api(0),
        s("--admin-key"),
        f.admin_key(),
        s("--allow"),
        s("g1:g2"),
    ])
    .unwrap();
    settle(&f);
    cli(&[
        s("device"),
        s("rotate"),
        s("--api"),
        f.api(1),
        s("--key"),
        a.key.to_string_lossy().to_string(),
    ])
    .unwrap();
    settle(&f);
    // Signed with the rotated key: its proof must carry the rotation to verify.
    let sent = f.send(&a, &b.id, "after rotation", &[2]).unwrap();
    let commitment = sent["commitment"].as_str().unwrap().to_string();
    settle(&f);
    cli(&[
        s("device"),
        s("revoke"),
        s("--api"),
        f.api(3),
        s("--admin-key"),
        f.admin_key(),
        b.id.clone(),
        s("--reason"),
        s("stolen"),
    ])
    .unwrap();
    settle(&f);

    let dir = f.c.root.path().join("audit");
    let out = cli(&[
        s("audit"),
        s("--api"),
        f.api(2),
        s("--prove"),
        dir.to_string_lossy().to_string(),
    ])
    .unwrap();
    let actions = out["actions"].as_array().unwrap();
    let kinds: Vec<&str> = actions
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["enroll", "enroll", "set_policy", "rotate_keys", "revoke"],
        "{out}"
    );
    let heights: Vec<u64> = actions
        .iter()
        .map(|x| x["height"].as_u64().unwrap())
        .collect();
    assert!(heights.windows(2).all(|w| w[0] <= w[1]), "{heights:?}");
    let proofs = out["proofs"].as_array().unwrap();
    assert_eq!(proofs.len(), actions.len());

    let genesis = f.c.genesis_path.to_string_lossy().to_string();
    let verify = |path: &str| cli(&[s("verify"), s("--genesis"), genesis.clone(), s(path)]);
    let mut said = Vec::new();
    for (p, action) in proofs.iter().zip(actions) {
        let v = verify(p.as_str().unwrap()).unwrap();
        assert_eq!(v["tx"], action["tx"], "{v}");
        assert_eq!(v["kind"], action["kind"], "{v}");
        assert_eq!(v["height"], action["height"], "{v}");
        assert_eq!(v["genesis_bound"], true, "{v}");
        said.push(v["proven"].as_str().unwrap().to_string());
    }
    assert!(
        said[4].starts_with(&format!("device {} revoked (\"stolen\") at height", b.id)),
        "{said:?}"
    );
    assert!(said[4].contains("by admins "), "{said:?}");
    assert!(
        said[3].starts_with(&format!("device {} rotated its keys", a.id)),
        "{said:?}"
    );
    assert!(
        said[2].starts_with("send policy replaced by [g1->g2]"),
        "{said:?}"
    );

    // The anchor signed with the rotated key, by commitment and by transaction id.
    let anchor_proof = f.c.root.path().join("anchor.json");
    cli(&[
        s("proof"),
        s("--api"),
        f.api(0),
        commitment.clone(),
        s("--out"),
        anchor_proof.to_string_lossy().to_string(),
    ])
    .unwrap();
    let v = verify(&anchor_proof.to_string_lossy()).unwrap();
    assert_eq!(v["commitment"], commitment.as_str(), "{v}");
    assert_eq!(v["sender"], a.id.as_str(), "{v}");
    let by_id = f.c.root.path().join("anchor-by-id.json");
    cli(&[
        s("proof"),
        s("--api"),
        f.api(1),
        s("--tx"),
        v["tx"].as_str().unwrap().to_string(),
        s("--out"),
        by_id.to_string_lossy().to_string(),
    ])
    .unwrap();
    // Another gateway's proof of the same transaction (its certificates may hold another quorum
    // of signatures) proves the same thing.
    let v2 = verify(&by_id.to_string_lossy()).unwrap();
    for k in [
        "tx",
        "height",
        "block_hash",
        "commitment",
        "sender",
        "proven",
    ] {
        assert_eq!(v2[k], v[k], "{k}");
    }

    // A proof checked against another genesis (same chain id, another time) is refused, with
    // the reason.
    let mut g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f.c.genesis_path).unwrap()).unwrap();
    let t = g["genesis_time_ms"].as_u64().unwrap();
    g["genesis_time_ms"] = (t + 1).into();
    let other = f.c.root.path().join("other-genesis.json");
    std::fs::write(&other, g.to_string()).unwrap();
    let err = cli(&[
        s("verify"),
        s("--genesis"),
        other.to_string_lossy().to_string(),
        proofs[0].as_str().unwrap().to_string(),
    ])
    .unwrap_err();
    assert!(err.contains("genesis"), "{err}");

    // Running it again, against another gateway, keeps the proofs already written (each still
    // proves its transaction) and agrees on the actions.
    let again = cli(&[
        s("audit"),
        s("--api"),
        f.api(0),
        s("--since"),
        action_height(&actions[2]).to_string(),
        s("--prove"),
        dir.to_string_lossy().to_string(),
    ])
    .unwrap();
    assert_eq!(again["actions"].as_array().unwrap().len(), 3, "{again}");
    for p in again["proofs"].as_array().unwrap() {
        verify(p.as_str().unwrap()).unwrap();
    }
    // A file in the way that proves something else is not overwritten.
    let victim = proofs[4].as_str().unwrap();
    std::fs::copy(proofs[0].as_str().unwrap(), victim).unwrap();
    let err = cli(&[
        s("audit"),
        s("--api"),
        f.api(1),
        s("--prove"),
        dir.to_string_lossy().to_string(),
    ])
    .unwrap_err();
    assert!(err.contains("refusing to overwrite"), "{err}");
}

fn action_height(a: &serde_json::Value) -> u64 {
    a["height"].as_u64().unwrap()
}
