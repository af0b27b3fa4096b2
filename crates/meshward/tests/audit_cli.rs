//! What an auditor does with no node running, through the real `meshward` binary: make a
//! synthetic chain (its genesis.json beside the store), list its anchors, extract the proof of
//! one, and verify it offline against that genesis.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use meshward_core::codec::Decode;
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::tx::TxBody;
use meshward_store::Store;

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("meshward runs")
}

fn json(args: &[&str], cwd: &Path) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = run(&a, cwd);
    assert!(
        out.status.success(),
        "meshward {args:?} failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    assert!(
        !out.status.success(),
        "meshward {args:?} should have failed"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "error output: {err}");
    err
}

fn synth(dir: &str, blocks: &str, cwd: &Path) -> serde_json::Value {
    json(
        &[
            "store",
            "synth",
            "--dir",
            dir,
            "--blocks",
            blocks,
            "--devices",
            "6",
            "--anchors-per-block",
            "4",
        ],
        cwd,
    )
}

#[test]
fn synth_chain_anchors_list_proof_and_offline_verify() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let made = synth("chain", "5", p);

    // The genesis is written beside the store, in the JSON a node and `verify` read.
    let genesis_path = p.join("chain/genesis.json");
    let text = fs::read_to_string(&genesis_path).unwrap();
    assert!(text.ends_with("}\n"), "{text:?}");
    let genesis = Genesis::from_json(&text).unwrap();
    let store = Store::open(p.join("chain/meshward.redb")).unwrap();
    assert_eq!(&genesis, store.genesis());
    assert_eq!(made["genesis_hash"], store.genesis().hash().to_hex());
    let mut expected = Vec::new();
    for h in 1..=5 {
        let b = store.block(h).unwrap().unwrap();
        for (i, tx) in b.block.txs.iter().enumerate() {
            if let TxBody::Anchor(a) = &tx.body {
                expected.push((h, i as u64, a.commitment.to_hex(), tx.signer.peer_id()));
            }
        }
    }
    // The store is one process's at a time.
    drop(store);

    // Every anchor of the store is listed, in chain order, with its height and place.
    let listed = json(&["store", "anchors", "--dir", "chain"], p);
    assert_eq!(listed["chain_id"], genesis.chain_id.as_str());
    assert_eq!(listed["tip_height"], 5);
    let rows = listed["anchors"].as_array().unwrap();
    assert!(expected.len() >= 4, "the synthetic chain holds anchors");
    let got: Vec<(u64, u64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["height"].as_u64().unwrap(),
                r["index"].as_u64().unwrap(),
                r["commitment"].as_str().unwrap().to_string(),
                r["sender"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);

    let limited = json(&["store", "anchors", "--dir", "chain", "--limit", "2"], p);
    assert_eq!(limited["anchors"].as_array().unwrap().len(), 2);
    assert_eq!(limited["anchors"][0], rows[0]);

    // The proof of the last listed anchor, extracted offline, verifies against the genesis file.
    let last = rows.last().unwrap();
    let commitment = last["commitment"].as_str().unwrap();
    assert!(Hash::from_hex(commitment).is_some());
    json(
        &[
            "store",
            "proof",
            "--dir",
            "chain",
            "--commitment",
            commitment,
            "--out",
            "proof.json",
        ],
        p,
    );
    assert!(fs::read_to_string(p.join("proof.json"))
        .unwrap()
        .ends_with("}\n"));
    let v = json(
        &["verify", "--genesis", "chain/genesis.json", "proof.json"],
        p,
    );
    assert_eq!(v["valid"], true);
    assert_eq!(v["commitment"], commitment);
    assert_eq!(v["height"], last["height"]);
    assert_eq!(v["tx_index"], last["index"]);
    assert_eq!(v["sender"], last["sender"]);

    // The file ends with one newline; without it the text still verifies, any other ending or
    // layout does not.
    let file = fs::read_to_string(p.join("proof.json")).unwrap();
    let compact = file.strip_suffix('\n').unwrap();
    assert!(!compact.contains('\n'));
    fs::write(p.join("bare.json"), compact).unwrap();
    json(
        &["verify", "--genesis", "chain/genesis.json", "bare.json"],
        p,
    );
    for (name, text) in [
        ("two-newlines.json", format!("{compact}\n\n")),
        ("crlf.json", format!("{compact}\r\n")),
        ("space.json", format!(" {compact}\n")),
        ("pretty.json", compact.replace(",\"", ", \"")),
    ] {
        fs::write(p.join(name), text).unwrap();
        let err = fails(&["verify", "--genesis", "chain/genesis.json", name], p);
        assert!(err.contains("layout"), "{name}: {err}");
    }

    // Resuming keeps the genesis file; a genesis file of another chain is refused, not replaced.
    synth("chain", "1", p);
    assert_eq!(fs::read_to_string(&genesis_path).unwrap(), text);
    synth("other", "1", p);
    fs::copy(p.join("other/genesis.json"), &genesis_path).unwrap();
    let err = fails(
        &[
            "store",
            "synth",
            "--dir",
            "chain",
            "--blocks",
            "1",
            "--devices",
            "6",
        ],
        p,
    );
    assert!(err.contains("genesis.json"), "{err}");
    // And the proof does not verify against the other chain's genesis.
    let err = fails(
        &["verify", "--genesis", "other/genesis.json", "proof.json"],
        p,
    );
    assert!(err.contains("proof.json"), "{err}");
}

#[test]
fn store_proof_by_tx_id_and_firmware_data_for_a_no_std_device() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    synth("chain", "3", p);
    let store = Store::open(p.join("chain/meshward.redb")).unwrap();
    // Block 1 enrolls the devices: prove the first enrollment by its transaction id.
    let enroll = store.block(1).unwrap().unwrap().block.txs[0].clone();
    let genesis = store.genesis().clone();
    drop(store);
    let id = enroll.id().to_hex();
    json(
        &[
            "store",
            "proof",
            "--dir",
            "chain",
            "--tx",
            &id,
            "--out",
            "enroll.json",
        ],
        p,
    );
    let v = json(
        &["verify", "--genesis", "chain/genesis.json", "enroll.json"],
        p,
    );
    assert_eq!(v["kind"], "enroll");
    assert_eq!(v["tx"], id.as_str());
    assert!(
        v["proven"]
            .as_str()
            .unwrap()
            .contains("enrolled into groups"),
        "{v}"
    );

    // What a firmware loads: the binary genesis and proof, the proof checked first.
    let out = json(
        &[
            "firmware-data",
            "--genesis",
            "chain/genesis.json",
            "--proof",
            "enroll.json",
            "--out-dir",
            "device",
        ],
        p,
    );
    assert_eq!(out["files"].as_array().unwrap().len(), 2);
    let g = fs::read(p.join("device/genesis.bin")).unwrap();
    assert_eq!(Genesis::from_bytes(&g).unwrap(), genesis);
    let proof = fs::read(p.join("device/enroll.bin")).unwrap();
    let proven = meshward_core::light::TxProof::from_bytes(&proof)
        .unwrap()
        .verify(&genesis)
        .unwrap();
    assert_eq!(proven.tx_id, enroll.id());
    // Nothing is overwritten, and a proof that does not verify writes nothing.
    let err = fails(
        &[
            "firmware-data",
            "--genesis",
            "chain/genesis.json",
            "--out-dir",
            "device",
        ],
        p,
    );
    assert!(err.contains("refusing to overwrite"), "{err}");
    let text = fs::read_to_string(p.join("enroll.json")).unwrap();
    fs::write(
        p.join("bad.json"),
        text.replace("\"height\":1", "\"height\":2"),
    )
    .unwrap();
    let err = fails(
        &[
            "firmware-data",
            "--genesis",
            "chain/genesis.json",
            "--proof",
            "bad.json",
            "--out-dir",
            "other",
        ],
        p,
    );
    assert!(err.contains("bad.json"), "{err}");
    assert!(!p.join("other").exists());
}

#[test]
fn store_anchors_without_a_store_says_so() {
    let t = tempfile::tempdir().unwrap();
    let err = fails(&["store", "anchors", "--dir", "nowhere"], t.path());
    assert!(err.contains("no store at"), "{err}");
}
