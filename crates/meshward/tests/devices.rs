//! Devices as real processes on a real 4-validator cluster: direct delivery with anchors and
//! offline proofs, replicated mailboxes, gateway failover, revocation and quarantine, typed
//! rejections, key rotation and policy changes.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::fleet::{cli, s, Fleet, MIN};
use meshward_core::clock::now_ms;
use meshward_core::envelope::{seal_oneshot, SendSession};
use meshward_core::rpc::{Request, Response};
use meshward_core::tx::{Anchor, Recipient, Tx, TxBody};
use meshward_testkit::wait_for;
use rand::rngs::OsRng;

#[test]
fn direct_message_is_anchored_and_its_proof_verifies_offline() {
    let f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let b = f.device("b", &["fleet"]);
    let agent = f.agent(&b, &[0, 1, 2, 3]);
    f.wait_online(&b, &[0, 1, 2, 3]);

    // Sent as a session, keeping the envelope to prove it on its own later.
    let kept = f.c.root.path().join("kept");
    let keep = [
        s("--session"),
        s("--keep"),
        kept.to_string_lossy().to_string(),
    ];
    let sent = f
        .send_with(&a, &b.id, "hello b", &[1, 2, 3, 0], &keep)
        .unwrap();
    assert_eq!(sent["delivery"], "direct", "{sent}");
    let commitment = sent["commitment"].as_str().unwrap().to_string();
    assert!(sent["height"].as_u64().unwrap() > 0, "{sent}");
    let line = agent.wait_line("b prints the message", |l| {
        l["commitment"] == commitment.as_str()
    });
    assert_eq!(line["text"], "hello b");
    assert_eq!(line["delivery"], "direct");
    assert_eq!(line["from"], a.id.as_str());

    // The proof, fetched from another gateway, verifies offline against the genesis alone.
    let dir = f.c.root.path();
    let proof = dir.join("proof.json");
    cli(&[
        s("proof"),
        s("--api"),
        f.api(2),
        commitment.clone(),
        s("--out"),
        proof.to_string_lossy().to_string(),
    ])
    .unwrap();
    let genesis = f.c.genesis_path.to_string_lossy().to_string();
    // `meshward verify` of a proof file, offline, against the genesis alone.
    let verify = |file: &std::path::Path| {
        cli(&[
            s("verify"),
            s("--genesis"),
            genesis.clone(),
            file.to_string_lossy().to_string(),
        ])
    };
    let ok = verify(&proof).unwrap();
    assert_eq!(ok["commitment"], commitment.as_str(), "{ok}");

    // The envelope itself, proven to be the one anchored, from what `send --keep` kept.
    let env_file = sent["kept"][0].as_str().unwrap().to_string();
    let batch = kept.join(format!("{commitment}.batch"));
    let env_proof = dir.join("envelope-proof.json");
    cli(&[
        s("proof"),
        s("--api"),
        f.api(1),
        commitment.clone(),
        s("--out"),
        env_proof.to_string_lossy().to_string(),
        s("--envelope"),
        env_file.clone(),
        s("--batch"),
        batch.to_string_lossy().to_string(),
    ])
    .unwrap();
    let ok = verify(&env_proof).unwrap();
    assert_eq!(ok["envelope"]["commitment"], commitment.as_str(), "{ok}");
    assert_eq!(ok["envelope"]["kind"], "session_open", "{ok}");
    assert_eq!(ok["envelope"]["index"], 0, "{ok}");
    // A changed byte fails the proof: the inclusion's path length (its last byte), the
    // envelope's signature (65 bytes from the end: the path is 20 bytes, the signature 64) and
    // its ciphertext (90 bytes from the end, inside the 23 bytes of "hello b" and its tag).
    let text = std::fs::read_to_string(&env_proof).unwrap();
    let at = text.find("\"inclusion\":\"").unwrap() + 13;
    let end = at + text[at..].find('"').unwrap();
    for p in [end - 1, end - 130, end - 180] {
        let mut bytes = text.clone().into_bytes();
        bytes[p] = if bytes[p] == b'0' { b'1' } else { b'0' };
        let bad = dir.join("bad-envelope.json");
        std::fs::write(&bad, &bytes).unwrap();
        let err = verify(&bad).expect_err("a changed envelope must not verify");
        assert!(err.contains("is invalid"), "{err}");
    }

    // Any byte changed in the proof file is rejected with a reason. (Change a hex digit in
    // each field in turn; a change that breaks the JSON is also a rejection.)
    let text = std::fs::read_to_string(&proof).unwrap();
    let positions: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| c.is_ascii_hexdigit())
        .map(|(i, _)| i)
        .step_by(97)
        .collect();
    assert!(positions.len() > 5);
    for p in positions {
        let mut bytes = text.clone().into_bytes();
        bytes[p] = if bytes[p] == b'0' { b'1' } else { b'0' };
        let bad = dir.join("bad.json");
        std::fs::write(&bad, &bytes).unwrap();
        let err = verify(&bad).expect_err("a changed proof must not verify");
        // The CLI names the file and why it failed: "proof … is invalid: <reason>".
        let reason = err.split("is invalid: ").nth(1).unwrap_or("");
        assert!(reason.len() > 3, "no reason given: {err}");
    }
    agent.stop();
}

#[test]
fn offline_recipient_gets_its_message_from_another_gateways_mailbox_exactly_once() {
    let mut f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let b = f.device("b", &["fleet"]);

    // B is offline: the envelope goes to gateway 0's mailbox, which copies it to the others.
    let sent = f.send(&a, &b.id, "while you were away", &[0]).unwrap();
    assert_eq!(sent["delivery"], "mailbox", "{sent}");
    assert!(sent["replicas"].as_u64().unwrap() >= 2, "{sent}");
    let commitment = sent["commitment"].as_str().unwrap().to_string();

    // Gateway 0 dies; B comes online through the gateways it can reach.
    f.c.kill(0);
    let agent = f.agent(&b, &[0, 1, 2, 3]);
    let line = agent.wait_line("b gets the mailbox message", |l| {
        l["commitment"] == commitment.as_str()
    });
    assert_eq!(line["text"], "while you were away");
    assert_eq!(line["delivery"], "mailbox");

    // Gateway failover: A's next send, with the same gateway list (dead gateway 0 first),
    // goes through another gateway.
    f.wait_online(&b, &[1, 2, 3]);
    let again = f.send(&a, &b.id, "second", &[0, 1, 2, 3]).unwrap();
    assert_eq!(again["delivery"], "direct", "{again}");
    agent.wait_line("b gets the second message", |l| l["text"] == "second");

    // Exactly once: wait until every live gateway's mailbox for B is empty (B fetched and
    // acknowledged the copies), then count.
    for i in 1..4 {
        wait_for("b's mailbox copies to be acknowledged", MIN, || {
            (f.mailbox_len(i, &b)? == 0).then_some(())
        });
    }
    let copies = agent
        .lines()
        .iter()
        .filter(|l| l["commitment"] == commitment.as_str())
        .count();
    assert_eq!(copies, 1, "{:?}", agent.lines());
    agent.stop();
}

#[test]
fn revoked_device_is_refused_everywhere_and_its_group_is_rekeyed() {
    let f = Fleet::start();
    let a = f.device("a", &["ops"]);
    let b = f.device("b", &["ops"]);
    let c = f.device("c", &["ops"]);
    let agents: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|d| f.agent(d, &[0, 1, 2, 3]))
        .collect();
    let group = |i: usize| {
        let r = meshward_testkit::http(f.c.nodes[i].api_port, "GET", "/v1/groups/ops", &[], b"")?;
        (r.status == 200).then(|| r.json())
    };
    // The members' agents give the group its first key.
    wait_for("the group's first key", MIN, || {
        let g = group(1)?;
        (g["epoch"].as_u64()? >= 1 && g["needs_rekey"] == false).then_some(())
    });
    let epoch = group(1).unwrap()["epoch"].as_u64().unwrap();

    let r = cli(&[
        s("device"),
        s("revoke"),
        s("--api"),
        f.api(0),
        s("--admin-key"),
        f.admin_key(),
        c.id.clone(),
        s("--reason"),
        s("stolen"),
    ])
    .unwrap();
    let revoked_at = r["height"].as_u64().unwrap();
    for i in 0..4 {
        wait_for("every node to list c as revoked", MIN, || {
            (f.device_json(i, &c.id)?["status"] == "revoked").then_some(())
        });
    }

    // Its sends fail with a clear error.
    let err = f.send(&c, &a.id, "let me in", &[0, 1, 2, 3]).unwrap_err();
    assert!(err.contains("revoked") || err.contains("refused"), "{err}");

    // Every node refuses its connections.
    let client_rt = &f.rt;
    for i in 0..4 {
        let addr: meshward_net::Multiaddr = f.mesh(i).parse().unwrap();
        let cfg =
            meshward_sdk::client::ClientConfig::new(Some(f.c.genesis.chain_id.clone()), vec![]);
        let cl = client_rt
            .block_on(meshward_sdk::client::Client::start(
                meshward_sdk::client::DeviceIdentity::new(c.kp.clone()),
                cfg,
            ))
            .unwrap();
        let res = client_rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), cl.net().dial(addr.clone())).await
        });
        if let Ok(Ok(_)) = res {
            // A connection that opens is closed by the gate before any request is served.
            let peer = meshward_net::peer_id_of(
                &meshward_core::ids::PublicKey::from_peer_id(&f.c.nodes[i].peer_id).unwrap(),
            );
            let answer = client_rt.block_on(cl.request_peer(peer, &Request::Info));
            assert!(
                answer.is_err(),
                "node{i} served a revoked device: {answer:?}"
            );
        }
        client_rt.block_on(cl.shutdown());
    }

    // Its group gets a new key, sealed only to the remaining members.
    wait_for("the group to be rekeyed", MIN, || {
        let g = group(2)?;
        (g["epoch"].as_u64()? > epoch && g["needs_rekey"] == false).then_some(())
    });
    let g = group(2).unwrap();
    let members: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(!members.contains(&c.id.as_str()), "{g}");
    // Find the GroupKey transaction of the new epoch and check c cannot open it.
    let new_epoch = g["epoch"].as_u64().unwrap();
    let tip = f.c.height(2).unwrap();
    let mut found = false;
    for h in revoked_at..=tip {
        let r = meshward_testkit::http(
            f.c.nodes[2].api_port,
            "GET",
            &format!("/v1/blocks/{h}"),
            &[],
            b"",
        )
        .unwrap();
        let v = r.json();
        for t in v["txs"].as_array().into_iter().flatten() {
            let Some(hex) = t["raw"].as_str() else {
                continue;
            };
            let tx = Tx::decode_bytes(&meshward_core::hex::decode(hex).unwrap()).unwrap();
            if let TxBody::GroupKey {
                group,
                epoch,
                sealed,
            } = &tx.body
            {
                if *epoch != new_epoch {
                    continue;
                }
                found = true;
                let err = meshward_sdk::group::open_for_member(group, *epoch, sealed, &c.pk, &c.kp);
                assert!(err.is_err(), "the revoked device opened the new group key");
                for m in [&a, &b] {
                    meshward_sdk::group::open_for_member(group, *epoch, sealed, &m.pk, &m.kp)
                        .expect("a remaining member opens the new key");
                }
            }
        }
    }
    assert!(
        found,
        "no GroupKey transaction for epoch {new_epoch} in blocks {revoked_at}..={tip}"
    );
    for ag in agents {
        ag.stop();
    }
}

#[test]
fn equivocating_device_is_quarantined_without_an_admin() {
    let f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let b = f.device("b", &["fleet"]);
    let client = f.client(Some(a.kp.clone()), &[0]);
    let chain = f.c.genesis.chain_id.clone();
    let anchor = |n: u8| {
        Tx::sign(
            &chain,
            a.pk,
            &a.kp.sign,
            1,
            TxBody::Anchor(Anchor {
                recipient: Recipient::Device(b.pk),
                commitment: meshward_core::hash::Hash([n; 32]),
                count: 1,
                timestamp_ms: now_ms(),
                size_bytes: 64,
            }),
        )
    };
    let start = f.c.height(0).unwrap();
    // Two different anchors, one sequence number.
    f.rt.block_on(client.submit(&anchor(1))).unwrap();
    let second = f.rt.block_on(client.submit(&anchor(2)));
    assert!(second.is_err(), "the conflicting anchor was admitted");
    // Revoked by committed evidence, not by an admin: quarantined.
    let revoked_at = wait_for("a to be revoked by evidence", MIN, || {
        let d = f.device_json(1, &a.id)?;
        (d["status"] == "quarantined").then(|| d["revoked_height"].as_u64())?
    });
    assert!(
        revoked_at <= start + 3 + 1,
        "revoked at {revoked_at}, equivocation seen at about {start}"
    );
    // Another node says why once it has applied that block (it may be a block behind node 1).
    let d = wait_for("node 3 to apply the quarantine", MIN, || {
        let d = f.device_json(3, &a.id)?;
        (d["status"] == "quarantined").then_some(d)
    });
    assert!(
        d["revoked_reason"]
            .as_str()
            .unwrap_or("")
            .contains("equivocation"),
        "{d}"
    );
    f.rt.block_on(client.shutdown());
}

/// Two `meshward send` processes with one key file, through two different gateways at once,
/// never sign two transactions with one sequence number: the device is never convicted of
/// equivocation, and every anchor becomes final.
#[test]
fn two_senders_on_one_key_through_different_gateways_never_convict_the_device() {
    const ROUNDS: u64 = 100;
    let f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let b = f.device("b", &["fleet"]);
    let agent = f.agent(&b, &[0, 1, 2, 3]);
    f.wait_online(&b, &[0, 1, 2, 3]);
    let send = |gateway: usize, msg: String| {
        let mut args = vec![
            s("send"),
            s("--key"),
            a.key.to_string_lossy().to_string(),
            s("--to"),
            b.id.clone(),
            s("--message"),
            msg,
        ];
        args.extend(f.gw(&[gateway]));
        cli(&args)
    };
    for round in 0..ROUNDS {
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| send(1, format!("round {round} via 1")));
            let y = scope.spawn(|| send(2, format!("round {round} via 2")));
            (x.join().unwrap(), y.join().unwrap())
        });
        for sent in [x, y] {
            if let Err(e) = sent {
                let d = f.device_json(0, &a.id);
                panic!("round {round}: a send failed: {e}\ndevice a: {d:?}");
            }
        }
    }
    // Every anchor is final: the committed sequence number counts them all.
    let client = f.client(None, &[0]);
    let seq = wait_for("every anchor of a to be final", MIN, || {
        let info = f.rt.block_on(client.lookup(&a.pk)).ok()??;
        (info.seq >= 2 * ROUNDS || !info.active).then_some(info.seq)
    });
    assert_eq!(seq, 2 * ROUNDS);
    for i in 0..4 {
        let d = f.device_json(i, &a.id).unwrap();
        assert_eq!(d["status"], "active", "node {i}: {d}");
    }
    f.rt.block_on(client.shutdown());
    agent.stop();
}

/// A quarantined device comes back only by a recorded admin transaction, under keys the
/// device made: the same id, its groups, messages flowing again; its old key stays refused.
#[test]
fn a_quarantined_device_is_reinstated_under_new_keys_by_the_admins() {
    let f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let b = f.device("b", &["fleet"]);
    let agent = f.agent(&b, &[0, 1, 2, 3]);
    f.wait_online(&b, &[0, 1, 2, 3]);
    let client = f.client(Some(a.kp.clone()), &[0]);
    let chain = f.c.genesis.chain_id.clone();
    let anchor = |n: u8, seq: u64, kp: &meshward_core::ids::Keypair| {
        Tx::sign(
            &chain,
            a.pk,
            &kp.sign,
            seq,
            TxBody::Anchor(Anchor {
                recipient: Recipient::Device(b.pk),
                commitment: meshward_core::hash::Hash([n; 32]),
                count: 1,
                timestamp_ms: now_ms(),
                size_bytes: 64,
            }),
        )
    };
    f.rt.block_on(client.submit(&anchor(1, 1, &a.kp))).unwrap();
    assert!(f.rt.block_on(client.submit(&anchor(2, 1, &a.kp))).is_err());
    // Every gateway, since the reinstatement below is checked against the state of the one it
    // goes to (which may be a block behind the first to show the quarantine).
    for i in 0..4 {
        wait_for("a to be quarantined on every node", MIN, || {
            (f.device_json(i, &a.id)?["status"] == "quarantined").then_some(())
        });
    }
    f.rt.block_on(client.shutdown());

    // The device makes new keys for its id and exports their public file; an admin reinstates.
    let dir = f.c.root.path();
    let key2 = dir.join("a2.key");
    let pub2 = dir.join("a2.pub.json");
    let made = cli(&[
        s("device"),
        s("keygen"),
        s("--out"),
        key2.to_string_lossy().to_string(),
        s("--account"),
        a.id.clone(),
    ])
    .unwrap();
    assert_eq!(made["device_id"], a.id.as_str(), "{made}");
    let new_key = made["sign_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, a.id);
    cli(&[
        s("device"),
        s("export"),
        s("--key"),
        key2.to_string_lossy().to_string(),
        s("--chain-id"),
        chain.clone(),
        s("--out"),
        pub2.to_string_lossy().to_string(),
    ])
    .unwrap();
    let mut args = vec![
        s("device"),
        s("reinstate"),
        s("--admin-key"),
        f.admin_key(),
        s("--device-pub"),
        pub2.to_string_lossy().to_string(),
        a.id.clone(),
    ];
    args.extend(f.gw(&[2]));
    let done = cli(&args).unwrap();
    assert!(done["height"].as_u64().unwrap() > 0, "{done}");
    for i in 0..4 {
        wait_for("a to be active again under its new key", MIN, || {
            let d = f.device_json(i, &a.id)?;
            (d["status"] == "active" && d["sign_key"] == new_key.as_str()).then_some(())
        });
    }
    let audit = meshward_testkit::http(f.c.nodes[3].api_port, "GET", "/v1/audit", &[], b"")
        .unwrap()
        .json();
    assert!(audit.to_string().contains("reinstated"), "{audit}");

    // Messages flow again, from the same device id.
    let (account, kp2) = meshward_sdk::keyfile::load_device(&key2).unwrap();
    assert_eq!(account, a.pk);
    let a2 = common::fleet::Dev {
        key: key2,
        id: a.id.clone(),
        pk: a.pk,
        kp: kp2,
    };
    let sent = f.send(&a2, &b.id, "back again", &[1, 2]).unwrap();
    let commitment = sent["commitment"].as_str().unwrap().to_string();
    let line = agent.wait_line("b gets a's message", |l| {
        l["commitment"] == commitment.as_str()
    });
    assert_eq!(line["from"], a.id.as_str());

    // The old key stays refused: a transaction it signs does not verify.
    let next =
        f.rt.block_on(f.client(None, &[0]).lookup(&a.pk))
            .unwrap()
            .unwrap()
            .seq
            + 1;
    let old = f.client(None, &[3]);
    let refused = f.rt.block_on(old.submit(&anchor(3, next, &a.kp)));
    assert!(
        refused.is_err(),
        "a transaction signed by the old key was admitted"
    );
    f.rt.block_on(old.shutdown());
    agent.stop();
}

#[test]
fn replay_tamper_and_forbidden_sends_are_refused_with_typed_errors() {
    let f = Fleet::start();
    let a = f.device("a", &["g1"]);
    let b = f.device("b", &["g1"]);
    let d = f.device("d", &["g2"]);
    // A client with its own identity: the envelopes and transactions it carries are signed
    // by a, which keeps its own mesh identity for its CLI sends.
    let client = f.client(None, &[0]);
    let rt = &f.rt;

    // Mailbox: the same envelope twice, then a tampered one.
    let env = seal_oneshot(&mut OsRng, &a.kp, b.pk, &b.kp.enc_key(), 1, now_ms(), b"x").unwrap();
    let gw = client.gateways()[0];
    let first = rt
        .block_on(client.request_peer(gw, &Request::Deposit(env.clone())))
        .unwrap();
    assert!(matches!(first, Response::Stored { .. }), "{first:?}");
    let again = rt
        .block_on(client.request_peer(gw, &Request::Deposit(env.clone())))
        .unwrap();
    assert!(
        matches!(&again, Response::Error { code, .. } if code == "replay"),
        "{again:?}"
    );
    let mut tampered = env.clone();
    tampered.ciphertext[0] ^= 1;
    let t = rt
        .block_on(client.request_peer(gw, &Request::Deposit(tampered.clone())))
        .unwrap();
    assert!(
        matches!(&t, Response::Error { code, .. } if code == "bad_signature"),
        "{t:?}"
    );
    // Only the first copy is in b's mailbox.
    let bclient = f.client(Some(b.kp.clone()), &[0]);
    let list = rt
        .block_on(
            bclient.request_peer(bclient.gateways()[0], &Request::Fetch { after: 0, max: 16 }),
        )
        .unwrap();
    match list {
        Response::Envelopes(l) => {
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].1, env);
        }
        other => panic!("{other:?}"),
    }
    rt.block_on(bclient.shutdown());

    // Direct: b's agent refuses a replay and a tampered envelope with typed errors.
    let agent = f.agent(&b, &[0, 1, 2, 3]);
    f.wait_online(&b, &[0, 1, 2, 3]);
    let info = rt.block_on(client.lookup(&b.pk)).unwrap().unwrap();
    let direct = seal_oneshot(&mut OsRng, &a.kp, b.pk, &b.kp.enc_key(), 2, now_ms(), b"y").unwrap();
    rt.block_on(client.deliver_direct(&b.pk, &info.addrs, &direct))
        .unwrap();
    let replay = rt
        .block_on(client.deliver_direct(&b.pk, &info.addrs, &direct))
        .unwrap_err();
    assert_eq!(replay.code(), "replay", "{replay}");
    let mut bad =
        seal_oneshot(&mut OsRng, &a.kp, b.pk, &b.kp.enc_key(), 3, now_ms(), b"z").unwrap();
    bad.ciphertext[0] ^= 1;
    let e = rt
        .block_on(client.deliver_direct(&b.pk, &info.addrs, &bad))
        .unwrap_err();
    assert_eq!(e.code(), "bad_signature", "{e}");
    // A session stream (one DeliverBatch: a signed SessionOpen, then Session envelopes that
    // only the session's AEAD authenticates) is opened all or nothing.
    let stream = |first: u64, texts: &[&str]| {
        let mut s = SendSession::new(&mut OsRng, &a.kp, b.pk, &b.kp.enc_key()).unwrap();
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| s.seal(first + i as u64, now_ms(), t.as_bytes()).unwrap())
            .collect::<Vec<_>>()
    };
    let deliver = |batch: &[meshward_core::envelope::Envelope]| {
        rt.block_on(client.deliver_direct_batch(&b.pk, &info.addrs, batch))
    };
    let good = stream(4, &["s1", "s2", "s3"]);
    let mut tampered = good.clone();
    tampered[1].ciphertext[0] ^= 1;
    let mut reordered = good.clone();
    reordered.swap(1, 2);
    let truncated = good[1..].to_vec();
    for (batch, code) in [
        (&tampered, "decrypt_failed"),
        (&reordered, "reordered"),
        (&truncated, "unknown_session"),
    ] {
        let (opened, e) = deliver(batch).unwrap_err();
        assert_eq!((opened, e.code()), (0, code), "{e}");
    }
    assert_eq!(deliver(&good).map_err(|(n, e)| (n, e.to_string())), Ok(()));
    let (opened, e) = deliver(&good).unwrap_err();
    assert_eq!((opened, e.code()), (0, "replay"), "{e}");
    for t in ["s1", "s2", "s3"] {
        agent.wait_line("the good stream", |l| l["text"] == t);
    }
    agent.wait_line("the good direct envelope", |l| l["text"] == "y");

    // A mailbox takes a Session envelope only from its sender's own connection: it carries no
    // signature a gateway could check.
    let later = stream(7, &["m1", "m2"]);
    let r = rt
        .block_on(client.request_peer(gw, &Request::Deposit(later[0].clone())))
        .unwrap();
    assert!(matches!(r, Response::Stored { .. }), "{r:?}");
    let r = rt
        .block_on(client.request_peer(gw, &Request::Deposit(later[1].clone())))
        .unwrap();
    assert!(
        matches!(&r, Response::Error { code, .. } if code == "not_sender"),
        "{r:?}"
    );
    let aclient = f.client(Some(a.kp.clone()), &[0]);
    let r = rt
        .block_on(aclient.request_peer(aclient.gateways()[0], &Request::Deposit(later[1].clone())))
        .unwrap();
    assert!(matches!(r, Response::Stored { .. }), "{r:?}");
    rt.block_on(aclient.shutdown());
    agent.wait_line("the Session envelope its sender deposited", |l| {
        l["text"] == "m2"
    });

    // The mailbox copy of "x" arrives too; the replayed "y", the tampered "z" and every
    // refused stream's messages never do, and the good stream's only once.
    let texts: Vec<String> = agent
        .lines()
        .iter()
        .map(|l| l["text"].to_string())
        .collect();
    for (t, n) in [
        ("y", 1),
        ("z", 0),
        ("s1", 1),
        ("s2", 1),
        ("s3", 1),
        ("m2", 1),
    ] {
        assert_eq!(
            texts.iter().filter(|x| **x == format!("{t:?}")).count(),
            n,
            "{t}: {texts:?}"
        );
    }

    // Policy: g1 may not send to g2, so the send fails before anything is stored or anchored.
    let err = f.send(&a, &d.id, "forbidden", &[0]).unwrap_err();
    assert!(err.contains("policy_forbids"), "{err}");
    let dclient = f.client(Some(d.kp.clone()), &[0]);
    let list = rt
        .block_on(
            dclient.request_peer(dclient.gateways()[0], &Request::Fetch { after: 0, max: 16 }),
        )
        .unwrap();
    assert!(
        matches!(list, Response::Envelopes(ref l) if l.is_empty()),
        "{list:?}"
    );
    // The gateway refuses a forbidden envelope too.
    let fenv = seal_oneshot(&mut OsRng, &a.kp, d.pk, &d.kp.enc_key(), 1, now_ms(), b"f").unwrap();
    let r = rt
        .block_on(client.request_peer(gw, &Request::Deposit(fenv)))
        .unwrap();
    assert!(
        matches!(&r, Response::Error { code, .. } if code == "policy_forbids"),
        "{r:?}"
    );

    // A policy change takes effect at the next block, with nothing restarted.
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
    let ok = f.send(&a, &d.id, "now allowed", &[1]).unwrap();
    assert_eq!(ok["delivery"], "mailbox", "{ok}");

    // A key rotation takes effect at the next block: the old key can no longer sign.
    let rot = cli(&[
        s("device"),
        s("rotate"),
        s("--api"),
        f.api(0),
        s("--key"),
        a.key.to_string_lossy().to_string(),
    ])
    .unwrap_or_else(|e| {
        panic!(
            "rotate: {e}\na: {:?}\nlog: {}",
            f.device_json(0, &a.id),
            f.c.log(0)
                .lines()
                .filter(|l| l.contains("denied") || l.contains("evidence") || l.contains("revoked"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(rot["height"].as_u64().unwrap() > 0);
    let seq = rt.block_on(client.next_seq(&a.pk)).unwrap();
    let old_signed = Tx::sign(
        &f.c.genesis.chain_id,
        a.pk,
        &a.kp.sign,
        seq,
        TxBody::Anchor(Anchor {
            recipient: Recipient::Device(b.pk),
            commitment: meshward_core::hash::Hash([9; 32]),
            count: 1,
            timestamp_ms: now_ms(),
            size_bytes: 1,
        }),
    );
    let e = rt.block_on(client.submit(&old_signed)).unwrap_err();
    assert_eq!(e.code(), "bad_signature", "{e}");
    // The rotated key file sends.
    let after = f.send(&a, &b.id, "new keys", &[2, 3]).unwrap();
    assert!(after["height"].as_u64().is_some(), "{after}");
    agent.wait_line("b gets the message signed with a's new key", |l| {
        l["text"] == "new keys"
    });
    rt.block_on(client.shutdown());
    rt.block_on(dclient.shutdown());
    agent.stop();
}

#[test]
fn ticket_enrolls_once_and_inbox_opens_the_mailbox() {
    let f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let t = cli(&[
        s("ticket"),
        s("new"),
        s("--api"),
        f.api(0),
        s("--admin-key"),
        f.admin_key(),
        s("--group"),
        s("fleet"),
        s("--ttl"),
        s("10m"),
    ])
    .unwrap();
    let ticket = t["ticket"].as_str().unwrap().to_string();
    let keygen = |name: &str| {
        let key = f.c.root.path().join(format!("{name}.key"));
        let k = cli(&[
            s("device"),
            s("keygen"),
            s("--out"),
            key.to_string_lossy().to_string(),
        ])
        .unwrap();
        (key, k["device_id"].as_str().unwrap().to_string())
    };
    let (ckey, cid) = keygen("c");
    // The device enrolls itself with the ticket: no admin key involved.
    let j = cli(&[
        s("device"),
        s("join"),
        s("--ticket"),
        ticket.clone(),
        s("--key"),
        ckey.to_string_lossy().to_string(),
        s("--api"),
        f.api(1),
    ])
    .unwrap();
    assert!(j["height"].as_u64().unwrap() > 0, "{j}");
    // Final on node 1; node 2 shows it once it has applied that block.
    wait_for("c to be active on node 2", MIN, || {
        (f.device_json(2, &cid)?["status"] == "active").then_some(())
    });
    // A second device cannot reuse it.
    let (dkey, did) = keygen("d");
    let err = cli(&[
        s("device"),
        s("join"),
        s("--ticket"),
        ticket,
        s("--key"),
        dkey.to_string_lossy().to_string(),
        s("--api"),
        f.api(1),
    ])
    .unwrap_err();
    assert!(err.contains("ticket"), "{err}");
    assert!(f.device_json(0, &did).is_none());

    // c is offline: a's message waits in the mailboxes; `meshward inbox` opens it over HTTP.
    let sent = f.send(&a, &cid, "see you later", &[0, 1]).unwrap();
    assert_eq!(sent["delivery"], "mailbox", "{sent}");
    let inbox = cli(&[
        s("inbox"),
        s("--key"),
        ckey.to_string_lossy().to_string(),
        s("--api"),
        f.api(1),
    ])
    .unwrap();
    let msgs = inbox["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{inbox}");
    assert_eq!(msgs[0]["text"], "see you later");
    assert_eq!(msgs[0]["commitment"], sent["commitment"]);
    // Acknowledged: gateway 1's mailbox for c is empty now.
    let again = cli(&[
        s("inbox"),
        s("--key"),
        ckey.to_string_lossy().to_string(),
        s("--api"),
        f.api(1),
    ])
    .unwrap();
    assert!(again["messages"].as_array().unwrap().is_empty(), "{again}");
}

#[test]
fn device_api_refuses_bad_requests_with_json_errors() {
    let f = Fleet::start();
    let a = f.device("a", &["fleet"]);
    let port = f.c.nodes[0].api_port;
    let json_h = [("Content-Type", "application/json")];
    let call = |method: &str, path: &str, body: &[u8]| {
        meshward_testkit::http(port, method, path, &json_h, body).expect("the node answers")
    };
    let expect = |r: meshward_testkit::HttpResponse, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json()["code"],
            code,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    };
    // Malformed JSON, and a well-formed body without a valid signature.
    expect(
        call("POST", "/v1/mailbox/fetch", b"{not json"),
        400,
        "bad_json",
    );
    let nonce = call("POST", "/v1/challenge", b"{}").json()["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    let unsigned = serde_json::json!({
        "device": a.id, "nonce": nonce, "signature": "00".repeat(64),
    });
    expect(
        call("POST", "/v1/mailbox/fetch", unsigned.to_string().as_bytes()),
        401,
        "bad_signature",
    );
    // The same nonce again is stale, even with a good signature.
    let nonce_bytes: [u8; 32] = meshward_core::hex::decode(&nonce)
        .unwrap()
        .try_into()
        .unwrap();
    let sig = meshward_core::auth::sign_challenge(
        &a.kp.sign,
        &f.c.genesis.chain_id,
        &a.pk,
        &nonce_bytes,
        "mailbox/fetch",
    );
    let signed = serde_json::json!({
        "device": a.id, "nonce": nonce, "signature": meshward_core::hex::encode(&sig.0),
    });
    expect(
        call("POST", "/v1/mailbox/fetch", signed.to_string().as_bytes()),
        401,
        "stale_challenge",
    );
    // Oversized.
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = call("POST", "/v1/mailbox/fetch", &big);
    assert_eq!(r.status, 413);
    assert!(r.json()["code"].is_string());
    // Unknown device, malformed id.
    expect(
        call("GET", "/v1/devices/not-a-peer-id", b""),
        400,
        "bad_device_id",
    );
    // The OpenAPI document parses and lists the device routes.
    let doc = call("GET", "/v1/openapi.json", b"").json();
    for p in [
        "/v1/devices",
        "/v1/devices/{id}",
        "/v1/mailbox/fetch",
        "/v1/anchors/{commitment}/proof",
        "/v1/events",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
}

/// The mesh admits only fleet members: a peer that is neither a validator, an admin nor an
/// enrolled device (a fresh key) is refused by every gateway, so it can neither look up a device
/// nor read the transaction gossip while the fleet is busy; the enrolled device, and a new one
/// joining with a ticket through the API, can.
#[test]
fn a_peer_that_is_not_a_member_cannot_read_gossip_or_look_up_devices() {
    let f = Fleet::start();
    let a = f.device("a", &["g"]);
    let b = f.device("b", &["g"]);
    let stranger = meshward_core::ids::Keypair::generate(&mut OsRng);
    for i in 0..4 {
        // Each node admits the device once its own store holds the enrollment.
        wait_for(
            &format!("node{i} to admit the enrolled device"),
            MIN,
            || (!f.refuses(i, &a.kp)).then_some(()),
        );
        assert!(f.refuses(i, &stranger), "node{i} admitted a stranger");
    }
    // It cannot look a device up (no gateway answers it)...
    let client = f.client(Some(stranger.clone()), &[0, 1, 2, 3]);
    let looked = f.rt.block_on(client.lookup(&b.pk));
    assert!(looked.is_err(), "a stranger looked up a device: {looked:?}");
    f.rt.block_on(client.shutdown());
    // ...nor read the gossip: a bare mesh node subscribed to the transaction topic, dialling
    // gateway 0, receives nothing while a sends to b.
    let mut cfg = meshward_net::NetConfig::new(f.c.genesis.chain_id.clone());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.bootstrap = vec![f.mesh(0).parse().unwrap()];
    cfg.mdns = false;
    cfg.target_peers = 0;
    let listener = meshward_core::ids::Keypair::generate(&mut OsRng);
    let (net, mut events) = f.rt.block_on(meshward_net::spawn(&listener, cfg)).unwrap();
    let sent = f.send(&a, &b.id, "for members only", &[0]);
    assert!(sent.is_ok(), "{sent:?}");
    // The stranger's side may see its connection established before the gateway's check
    // closes it, but never a transaction, and it ends up connected to no one.
    let heard = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(ev) = events.recv().await {
                if let meshward_net::NetEvent::Tx { .. } = ev {
                    return Some(ev);
                }
            }
            None
        })
        .await
    });
    assert!(
        !matches!(heard, Ok(Some(_))),
        "a stranger read gossip: {heard:?}"
    );
    assert!(
        f.rt.block_on(net.peers()).is_empty(),
        "the stranger is still connected"
    );
    f.rt.block_on(net.shutdown());
    // A new device joins with a ticket through the API (it cannot reach the mesh before), and
    // is admitted once enrolled.
    let ticket = cli(&[
        s("ticket"),
        s("new"),
        s("--api"),
        f.api(0),
        s("--admin-key"),
        f.admin_key(),
        s("--group"),
        s("g"),
    ])
    .unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let key = f.c.root.path().join("joiner.key");
    let id = cli(&[
        s("device"),
        s("keygen"),
        s("--out"),
        key.to_string_lossy().to_string(),
    ])
    .unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    let kp = meshward_sdk::keyfile::load(&key, meshward_sdk::keyfile::KeyKind::Device).unwrap();
    assert!(f.refuses(1, &kp), "a device not enrolled yet was admitted");
    let joined = cli(&[
        s("device"),
        s("join"),
        s("--api"),
        f.api(1),
        s("--ticket"),
        s(&ticket),
        s("--key"),
        key.to_string_lossy().to_string(),
    ]);
    assert!(joined.is_ok(), "{joined:?}");
    assert_eq!(joined.unwrap()["device_id"], id.as_str());
    wait_for("the joined device to be admitted", MIN, || {
        (!f.refuses(1, &kp)).then_some(())
    });
}
