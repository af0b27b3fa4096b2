//! The CLI as a user runs it: real `meshward` processes, real files.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshward_core::tx::TxBody;
use meshward_store::Store;
use rand::Rng;

fn meshward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
}

fn run(args: &[&str], cwd: &Path) -> Output {
    meshward()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("meshward runs")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    assert!(
        out.status.success(),
        "meshward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail, and returns its one-line error.
fn fails(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    assert!(
        !out.status.success(),
        "meshward {args:?} should have failed"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "error output: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn json(args: &[&str], cwd: &Path) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(&a, cwd)).expect("--json prints JSON")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
#[cfg(unix)]
fn init_writes_secrets_with_mode_0600_and_refuses_to_overwrite() {
    let t = tempfile::tempdir().unwrap();
    let v = json(&["init", "--dir", "node"], t.path());
    let peer = v["peer_id"].as_str().unwrap();
    assert!(peer.starts_with("12D3KooW"), "peer id {peer}");
    assert_eq!(mode(&t.path().join("node/node.key")), 0o600);
    assert_eq!(mode(&t.path().join("node/api.token")), 0o600);
    let token = fs::read_to_string(t.path().join("node/api.token")).unwrap();
    assert_eq!(token.trim().len(), 64);
    // A second node gets a different key and token: nothing is defaulted.
    json(&["init", "--dir", "node2"], t.path());
    assert_ne!(
        token,
        fs::read_to_string(t.path().join("node2/api.token")).unwrap()
    );
    let before = fs::read(t.path().join("node/node.key")).unwrap();
    let err = fails(&["init", "--dir", "node"], t.path());
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(t.path().join("node/node.key")).unwrap(), before);
}

#[test]
fn device_keygen_prints_id_and_enc_key() {
    let t = tempfile::tempdir().unwrap();
    let v = json(&["device", "keygen", "--out", "d.key"], t.path());
    let id = v["device_id"].as_str().unwrap();
    assert!(meshward_core::PublicKey::from_peer_id(id).is_ok());
    assert_eq!(v["enc_key"].as_str().unwrap().len(), 64);
    #[cfg(unix)]
    assert_eq!(mode(&t.path().join("d.key")), 0o600);
    let err = fails(&["device", "keygen", "--out", "d.key"], t.path());
    assert!(err.contains("d.key"), "{err}");
}

#[test]
fn genesis_new_builds_a_genesis_and_names_bad_inputs() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    ok(&["init", "--dir", "v1"], p);
    ok(&["init", "--dir", "v2"], p);
    ok(&["admin", "keygen", "--out", "a1.key"], p);
    ok(&["admin", "keygen", "--out", "a2.key"], p);
    ok(&["device", "keygen", "--out", "dev.key"], p);
    let v = json(
        &[
            "genesis",
            "new",
            "--chain-id",
            "fleet-1",
            "--admin",
            "a1.key",
            "--admin",
            "a2.key",
            "--admin-threshold",
            "2",
            "--validator",
            "v1",
            "--validator",
            "v2",
            "--out",
            "g.json",
        ],
        p,
    );
    assert_eq!(v["validators"], 2);
    assert_eq!(v["admin_threshold"], 2);
    let g =
        meshward_core::Genesis::from_json(&fs::read_to_string(p.join("g.json")).unwrap()).unwrap();
    assert_eq!(g.hash().to_hex(), v["genesis_hash"].as_str().unwrap());

    let base = ["genesis", "new", "--chain-id", "x", "--validator", "v1"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let err = |extra: &[&str]| {
        let args = with(extra);
        fails(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>(), p)
    };
    assert!(err(&["--admin", "dev.key", "--out", "g2.json"]).contains("dev.key"));
    assert!(err(&["--admin", "missing.key", "--out", "g2.json"]).contains("missing.key"));
    assert!(err(&[
        "--admin",
        "a1.key",
        "--admin-threshold",
        "3",
        "--out",
        "g2.json"
    ])
    .contains("--admin-threshold 3"));
    assert!(err(&["--admin", "a1.key", "--out", "g.json"]).contains("g.json"));
    let bad_chain = fails(
        &[
            "genesis",
            "new",
            "--chain-id",
            "no spaces",
            "--admin",
            "a1.key",
            "--validator",
            "v1",
            "--out",
            "g3.json",
        ],
        p,
    );
    assert!(bad_chain.contains("--chain-id"), "{bad_chain}");
    assert!(!p.join("g2.json").exists() && !p.join("g3.json").exists());
}

#[test]
fn key_file_edited_by_hand_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let v = json(&["admin", "keygen", "--out", "a.key"], p);
    let text = fs::read_to_string(p.join("a.key")).unwrap();
    let other = json(&["admin", "keygen", "--out", "b.key"], p);
    let edited = text.replace(
        v["admin_id"].as_str().unwrap(),
        other["admin_id"].as_str().unwrap(),
    );
    fs::write(p.join("c.key"), edited).unwrap();
    ok(&["init", "--dir", "v"], p);
    let err = fails(
        &[
            "genesis",
            "new",
            "--chain-id",
            "x",
            "--admin",
            "c.key",
            "--validator",
            "v",
            "--out",
            "g.json",
        ],
        p,
    );
    assert!(
        err.contains("c.key") && err.contains("does not match"),
        "{err}"
    );
}

/// Writes a synthetic chain and returns the commitment of an anchor in `height`.
fn synth_chain(dir: &Path, blocks: u64) -> String {
    ok(
        &[
            "store",
            "synth",
            "--dir",
            dir.to_str().unwrap(),
            "--blocks",
            &blocks.to_string(),
            "--devices",
            "8",
            "--anchors-per-block",
            "10",
        ],
        Path::new("."),
    );
    let store = Store::open(dir.join("meshward.redb")).unwrap();
    let block = store.block(blocks - 1).unwrap().unwrap();
    match &block.block.txs[3].body {
        TxBody::Anchor(a) => a.commitment.to_hex(),
        other => panic!("expected an anchor, found {other:?}"),
    }
}

fn write_genesis_of(dir: &Path, out: &Path) {
    let store = Store::open(dir.join("meshward.redb")).unwrap();
    fs::write(out, store.genesis().to_json()).unwrap();
}

#[test]
fn verify_accepts_a_proof_offline_and_rejects_any_changed_byte() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let chain = p.join("chain");
    let commitment = synth_chain(&chain, 6);
    write_genesis_of(&chain, &p.join("genesis.json"));
    ok(
        &[
            "store",
            "proof",
            "--dir",
            "chain",
            "--commitment",
            &commitment,
            "--out",
            "proof.json",
        ],
        p,
    );
    let v = json(&["verify", "--genesis", "genesis.json", "proof.json"], p);
    assert_eq!(v["valid"], true);
    assert_eq!(v["commitment"], commitment.as_str());
    assert_eq!(v["height"], 5);

    // Every single byte of the proof file, changed, is rejected with a reason.
    let original = fs::read(p.join("proof.json")).unwrap();
    let mut rng = rand::thread_rng();
    let positions: Vec<usize> = (0..original.len()).step_by(7).collect();
    for i in positions {
        let mut bad = original.clone();
        let mut b = rng.gen::<u8>();
        while b == bad[i] {
            b = rng.gen();
        }
        bad[i] = b;
        fs::write(p.join("bad.json"), &bad).unwrap();
        let out = run(&["verify", "--genesis", "genesis.json", "bad.json"], p);
        assert!(
            !out.status.success(),
            "byte {i} changed to {b:#x} still verified"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.json"), "reason names the file: {err}");
    }

    // A proof checked against another chain's genesis is rejected.
    let other = p.join("other");
    synth_chain(&other, 3);
    write_genesis_of(&other, &p.join("other-genesis.json"));
    let err = fails(
        &["verify", "--genesis", "other-genesis.json", "proof.json"],
        p,
    );
    assert!(err.contains("invalid"), "{err}");
}

#[test]
fn store_verify_names_the_tampered_height() {
    let t = tempfile::tempdir().unwrap();
    let chain = t.path().join("chain");
    synth_chain(&chain, 12);
    let v = json(
        &["store", "verify", "--dir", chain.to_str().unwrap()],
        t.path(),
    );
    assert_eq!(v["tip_height"], 12);
    // Flip one byte inside block 7's stored transactions, through redb so the file stays a
    // valid database.
    {
        let db = redb::Database::open(chain.join("meshward.redb")).unwrap();
        // The last byte of the row: inside the last transaction's signature.
        let mut bytes = meshward_store::raw::row(&db, 7).unwrap().unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x01;
        meshward_store::raw::overwrite(&db, 7, &bytes).unwrap();
    }
    let err = fails(
        &["store", "verify", "--dir", chain.to_str().unwrap()],
        t.path(),
    );
    assert!(err.contains("height 7"), "{err}");
}

#[test]
fn crashed_writer_always_reopens_consistent() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let mut rng = rand::thread_rng();
    let mut tips = Vec::new();
    for kill in 0..20 {
        let mut child = meshward()
            .args([
                "store",
                "synth",
                "--dir",
                dir.to_str().unwrap(),
                "--blocks",
                "1000000",
                "--devices",
                "32",
                "--anchors-per-block",
                "40",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random moment, once the writer has had a chance to start. Not a wait for a
        // condition: the sleep picks the moment of the kill (the loop checks the writer lives).
        let wait = Duration::from_millis(rng.gen_range(30..400));
        let started = Instant::now();
        while started.elapsed() < wait {
            assert!(child.try_wait().unwrap().is_none(), "writer exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Reopening checks links and that the state matches the tip's state root: no
        // half-applied block survives.
        let path = dir.join("meshward.redb");
        if !path.exists() {
            // Killed before the store was created: the next run resumes from the keys.
            tips.push(0);
            continue;
        }
        let store = Store::open(&path).unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        let tip = store.tip().map_or(0, |(h, _)| h);
        tips.push(tip);
        drop(store);
        let report =
            meshward_store::verify_chain(&path).unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        assert_eq!(report.tip_height, tip);
    }
    assert!(
        tips.windows(2).all(|w| w[0] <= w[1]),
        "tips went back: {tips:?}"
    );
    assert!(
        *tips.last().unwrap() > 0,
        "writer never committed a block: {tips:?}"
    );
    eprintln!("tips after each kill: {tips:?}");
}

#[test]
fn unknown_and_bad_arguments_fail_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let out = run(&["store", "verify", "--dir", "nowhere"], t.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere"), "{err}");
    let err = fails(
        &[
            "store",
            "proof",
            "--dir",
            "nowhere",
            "--commitment",
            "XYZ",
            "--out",
            "p.json",
        ],
        t.path(),
    );
    assert!(err.contains("XYZ"), "{err}");
    let err = fails(&["verify", "--genesis", "missing.json", "p.json"], t.path());
    assert!(
        err.contains("missing.json") && err.contains("genesis new"),
        "{err}"
    );
    let v = {
        let out = run(
            &["verify", "--genesis", "missing.json", "p.json", "--json"],
            t.path(),
        );
        assert!(!out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(v["error"].as_str().unwrap().contains("missing.json"));
}
