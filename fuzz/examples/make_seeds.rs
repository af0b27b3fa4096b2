//! Writes one or more valid inputs per fuzz target into `fuzz/corpus/<target>/`, built with the
//! core APIs (see `meshward_fuzz::fixture`): `cargo run --example make_seeds` from `fuzz/`.
//! The corpus directory is git-ignored; rerun this to regenerate the seeds.

use std::fs;
use std::path::{Path, PathBuf};

use meshward_core::codec::Encode;
use meshward_core::light::ProofFile;
use meshward_core::merkle::{leaf_hash, prove};
use meshward_fuzz::{
    fixture, join_records, receiver_keypair, sender_keypair, RECEIVER_SECRET, SENDER_SECRET,
};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn main() {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let f = fixture();

    // tx: every transaction of the chain, and the extra ones.
    let mut n = 0;
    for tx in f
        .blocks
        .iter()
        .flat_map(|b| &b.block.txs)
        .chain(&f.extra_txs)
    {
        write(
            &root,
            "tx",
            &format!("{n:02}-{}", tx.body.name()),
            &tx.to_bytes(),
        );
        n += 1;
    }

    // tx_list: the extra transactions as one list, and each block's transactions.
    let list = |txs: &[meshward_core::tx::Tx]| {
        meshward_core::tx::encode_tx_list(&txs.iter().map(|t| t.to_bytes()).collect::<Vec<_>>())
    };
    write(&root, "tx_list", "extra", &list(&f.extra_txs));
    for (i, cb) in f.blocks.iter().enumerate() {
        write(
            &root,
            "tx_list",
            &format!("block-{}", i + 1),
            &list(&cb.block.txs),
        );
    }

    // block: blocks, certified blocks, headers and certificates.
    for (i, cb) in f.blocks.iter().enumerate() {
        let h = i + 1;
        write(&root, "block", &format!("block-{h}"), &cb.block.to_bytes());
        write(&root, "block", &format!("certified-{h}"), &cb.to_bytes());
        write(
            &root,
            "block",
            &format!("header-{h}"),
            &cb.block.header.to_bytes(),
        );
        write(
            &root,
            "block",
            &format!("certificate-{h}"),
            &cb.certificate.to_bytes(),
        );
    }

    // genesis: binary and JSON.
    write(&root, "genesis", "binary", &f.genesis.to_bytes());
    write(&root, "genesis", "json", f.genesis.to_json().as_bytes());

    // state_record: each record alone, and the whole state in the split format.
    let records = f.state.all_records();
    for (slot, bytes) in &records {
        write(&root, "state_record", &format!("record-{slot:02}"), bytes);
    }
    write(&root, "state_record", "state", &join_records(&records));
    write(
        &root,
        "state_record",
        "genesis-state",
        &join_records(&f.genesis.state().all_records()),
    );

    // anchor_proof: binary proofs and proof files.
    for (i, p) in f.anchor_proofs.iter().enumerate() {
        assert!(p.verify(&f.genesis).is_ok(), "fixture proof {i} verifies");
        write(&root, "anchor_proof", &format!("proof-{i}"), &p.to_bytes());
        let file = ProofFile::new(&f.genesis.chain_id, p);
        write(
            &root,
            "anchor_proof",
            &format!("file-{i}"),
            file.to_json().as_bytes(),
        );
    }
    // anchor_proof: envelope inclusions (the fixture's envelopes as one batch).
    let batch: Vec<_> = f.envelopes.iter().map(|e| e.commitment()).collect();
    for (i, env) in f.envelopes.iter().enumerate() {
        let inc = meshward_core::light::EnvelopeInclusion::build(env.clone(), &batch)
            .expect("the envelope is in its batch");
        write(&root, "anchor_proof", &format!("inclusion-{i}"), &inc.to_bytes());
    }

    // merkle_proof: `tree_size u64 BE || proof` for a few trees of fixed leaves (the target's
    // leaves are `leaf_hash(i as u64 BE)`).
    for (size, index) in [
        (1usize, 0usize),
        (2, 1),
        (7, 3),
        (13, 12),
        (64, 31),
        (299, 150),
    ] {
        let leaves: Vec<_> = (0..size as u64)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let proof = prove(&leaves, index).expect("index in range");
        let mut input = (size as u64 - 1).to_be_bytes().to_vec(); // 1 + (size-1) % 300 == size
        input.extend_from_slice(&proof.to_bytes());
        write(&root, "merkle_proof", &format!("{size}-{index}"), &input);
    }

    // envelope: one-shot, session open, session (sender -> receiver, the target's fixed keys).
    let (rx, tx) = (receiver_keypair(), sender_keypair());
    for (i, env) in f.envelopes.iter().enumerate() {
        assert_eq!(env.recipient, rx.id());
        assert_eq!(env.sender, tx.id());
        write(&root, "envelope", &format!("{i}"), &env.to_bytes());
    }

    // rpc: every request and response kind, prefixed by the byte that picks the decoder.
    {
        use meshward_core::rpc::{DeviceInfo, GroupInfo, Request, Response, TxState};
        let env = f.envelopes[0].clone();
        let g = meshward_core::tx::GroupName::new("sensors").expect("valid group name");
        let reqs = vec![
            Request::Deliver(env.clone()),
            Request::Deposit(env.clone()),
            Request::Replicate(env.clone()),
            Request::Fetch { after: 3, max: 16 },
            Request::AckMailbox { up_to: 7 },
            Request::Lookup(rx.id()),
            Request::Group(g.clone()),
            Request::Policy,
            Request::TxStatus(meshward_core::Hash([5; 32])),
            Request::Info,
            Request::NextSeq(tx.id()),
            Request::Custody(b"{}".to_vec()),
            Request::Release(tx.id()),
            Request::DeliverBatch(vec![env.clone(), f.envelopes[1].clone()]),
        ];
        for (i, r) in reqs.iter().enumerate() {
            let mut b = vec![0u8];
            b.extend_from_slice(&r.to_bytes());
            write(&root, "rpc", &format!("req{i}"), &b);
        }
        let resps = vec![
            Response::DeliveredBatch {
                delivered: 1,
                refused: Some(("replay".into(), "seen".into())),
            },
            Response::Delivered,
            Response::Stored { replicas: 2 },
            Response::Envelopes(vec![(1, env.clone()), (2, env)]),
            Response::Acked { removed: 1 },
            Response::Device(Some(DeviceInfo {
                id: rx.id(),
                sign_key: rx.id(),
                enc_key: rx.enc_key(),
                groups: vec![g.clone()],
                active: true,
                seq: 3,
                addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
            })),
            Response::Group(Some(GroupInfo {
                name: g.clone(),
                members: vec![(rx.id(), rx.enc_key())],
                epoch: 1,
                needs_rekey: false,
            })),
            Response::Policy(vec![(g.clone(), g)]),
            Response::TxStatus(TxState::Rejected {
                reason: "bad".into(),
            }),
            Response::Info {
                chain_id: "fleet".into(),
                height: 4,
            },
            Response::NextSeq(Some(2)),
            Response::error("replay", "already deposited"),
        ];
        for (i, r) in resps.iter().enumerate() {
            let mut b = vec![1u8];
            b.extend_from_slice(&r.to_bytes());
            write(&root, "rpc", &format!("resp{i}"), &b);
        }
    }

    // mqtt: the first byte picks the reader (0 CONNECT, 1 MQTT 3.1.1, 2 MQTT 5, 3 a custody
    // grant's JSON, 4 a sealed request frame or login token, 5 a sealed reply or mail frame).
    {
        use meshward_core::rpc::{Request, Response};
        use meshward_sdk::sealed;
        let env = f.envelopes[0].clone();
        let frames = [
            (4u8, "sealed-deposit", sealed::request_frame(1, &Request::Deposit(env.clone()))),
            (4, "sealed-info", sealed::request_frame(2, &Request::Info)),
            (
                4,
                "sealed-token",
                sealed::LoginToken::sign(
                    &meshward_fuzz::admin_key(),
                    meshward_fuzz::CHAIN_ID,
                    &rx.id(),
                    &meshward_fuzz::validator_keys()[0].public(),
                    1_700_000_000_000,
                    [3; 24],
                )
                .to_text()
                .into_bytes(),
            ),
            (5, "sealed-reply", sealed::reply_frame(1, &Response::Stored { replicas: 4 })),
            (5, "sealed-mail", sealed::mail_frame(9, &env.to_bytes())),
        ];
        for (sel, name, frame) in frames {
            write(&root, "mqtt", name, &[&[sel][..], &frame].concat());
        }
    }
    let connect4: &[u8] = &[
        0x10, 0x13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'd', 0, 1, b'u', 0, 1,
        b'p',
    ];
    let connect5: &[u8] = &[
        0x10, 0x14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2, 0, 60, 0, 0, 1, b'd', 0, 1, b'u', 0, 1,
        b'p',
    ];
    for (name, c) in [("connect4", connect4), ("connect5", connect5)] {
        write(&root, "mqtt", name, &[&[0u8][..], c].concat());
    }
    for (sel, v) in [
        (1u8, meshward_mqtt::codec::Version::V311),
        (2u8, meshward_mqtt::codec::Version::V5),
    ] {
        let mut b = bytes::BytesMut::new();
        b.extend_from_slice(&[sel]);
        // SUBSCRIBE meshward/v1/inbox QoS 1 (MQTT 5 adds an empty property length).
        let props: &[u8] = if sel == 2 { &[0] } else { &[] };
        b.extend_from_slice(&[0x82, 22 + props.len() as u8, 0, 1]);
        b.extend_from_slice(props);
        b.extend_from_slice(&[0, 17]);
        b.extend_from_slice(b"meshward/v1/inbox");
        b.extend_from_slice(&[1]);
        meshward_mqtt::codec::publish(
            v,
            "meshward/v1/to/12D3KooWx",
            meshward_mqtt::codec::Qos::AtLeastOnce,
            7,
            bytes::Bytes::from_static(b"hello"),
            vec![("from".into(), "x".into())],
            &mut b,
        );
        b.extend_from_slice(&[0xC0, 0, 0xE0, 0]);
        write(&root, "mqtt", &format!("stream{sel}"), &b);
    }
    {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let device = sender_keypair();
        let mut custodians = vec![
            receiver_keypair().id(),
            meshward_fuzz::validator_keys()[0].public(),
        ];
        custodians.sort();
        let mut g = meshward_sdk::custody::Grant {
            version: meshward_sdk::custody::GRANT_VERSION,
            chain_id: meshward_fuzz::CHAIN_ID.into(),
            device: device.id().peer_id(),
            custodians: custodians.iter().map(|c| c.peer_id()).collect(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                .into(),
            sealed: custodians
                .iter()
                .map(|c| {
                    meshward_sdk::custody::seal_keys(
                        &mut rng,
                        meshward_fuzz::CHAIN_ID,
                        &device.id(),
                        c,
                        &device,
                    )
                    .expect("seal to a valid key")
                })
                .collect(),
            signatures: Vec::new(),
        };
        let admin = meshward_core::ids::Keypair {
            sign: meshward_fuzz::admin_key(),
            enc: meshward_core::ids::EncSecret::from_bytes(&[9; 32]),
        };
        g.sign(std::slice::from_ref(&admin))
            .expect("sign the grant");
        let json = serde_json::to_vec(&g).expect("a grant serialises");
        write(&root, "mqtt", "grant", &[&[3u8][..], &json].concat());
    }

    // keypair: key files and peer ids.
    write(&root, "keypair", "receiver-key", &RECEIVER_SECRET);
    write(&root, "keypair", "sender-key", &SENDER_SECRET);
    write(
        &root,
        "keypair",
        "receiver-peer-id",
        rx.id().peer_id().as_bytes(),
    );
    write(
        &root,
        "keypair",
        "validator-peer-id",
        f.genesis.validators.validators[0].key.peer_id().as_bytes(),
    );

    // store_file: a fresh store for the fixture genesis (larger than -max_len=4096, so its
    // first 4 KiB is what the fuzzer mutates: the redb header).
    let dir = std::env::temp_dir().join(format!("meshward-fuzz-seed-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("meshward.redb");
    drop(meshward_store::Store::create(&path, &f.genesis).expect("create a store"));
    write(
        &root,
        "store_file",
        "fresh",
        &fs::read(&path).expect("read the store"),
    );
    let _ = fs::remove_dir_all(&dir);

    println!("seeds written under {}", root.display());
}
