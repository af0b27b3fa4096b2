//! Four real `meshward node run` processes on 127.0.0.1 finalising blocks by BFT consensus,
//! under load, through kills and restarts.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::load::{assert_same_hashes, enroll_devices, max_height, Load};
use common::Cluster;
use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::ids::Keypair;
use meshward_core::tx::Tx;
use meshward_testkit::{http, wait_for};
use rand::rngs::OsRng;
use rand::Rng;

const MIN: Duration = Duration::from_secs(60);

#[test]
fn four_validators_finalise_blocks_with_identical_hashes() {
    let mut c = Cluster::new(4, 50);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 50, 2 * MIN);
    for h in 1..=50 {
        let hashes: Vec<String> = (0..4)
            .map(|i| {
                c.block_hash(i, h)
                    .unwrap_or_else(|| panic!("node{i} has no block {h}"))
            })
            .collect();
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "height {h}: {hashes:?}"
        );
    }
    // Every node is connected to the other three.
    for i in 0..4 {
        wait_for("peers", MIN, || {
            (c.status(i)?["peers"].as_u64()? >= 3).then_some(())
        });
    }
}

#[test]
fn chain_survives_kills_and_restarts_under_load() {
    let mut c = Cluster::new(4, 200);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 2, MIN);
    let devices = enroll_devices(&c, 24);
    let load = Load::start(&c, devices);
    load.wait_more_finals(50, MIN);

    // One validator SIGKILLed: the other three keep finalising transactions.
    c.kill(3);
    let h0 = max_height(&c, &[0, 1, 2]);
    c.wait_height(&[0, 1, 2], h0 + 10, MIN);
    load.wait_more_finals(50, MIN);

    // Restarted, it catches up to the same hashes.
    c.start(3);
    let target = max_height(&c, &[0, 1, 2]);
    c.wait_height(&[3], target, 2 * MIN);
    assert_same_hashes(&c, &[0, 1, 2, 3], target);
    load.wait_more_finals(20, MIN);

    // All four SIGKILLed and restarted: the chain goes on, and nothing reported final is lost.
    let before = load.finals();
    assert!(before.len() >= 120, "only {} final", before.len());
    for i in 0..4 {
        c.kill(i);
    }
    let top = c.nodes.len();
    c.start_all();
    c.wait_height(&(0..top).collect::<Vec<_>>(), target + 5, 2 * MIN);
    load.wait_more_finals(20, MIN);
    drop(load);
    for (k, (hash, loc)) in before.iter().enumerate() {
        let i = k % 4;
        let v = c.tx_status(i, hash).expect("status answers");
        assert_eq!(v["status"], "final", "{hash} on node{i}: {v}");
        assert_eq!(
            (v["height"].as_u64().unwrap(), v["index"].as_u64().unwrap()),
            *loc
        );
    }
    // Every node reaches node 0's height (a restarted node may still be a block or two behind),
    // then all four hold the same chain up to it.
    let h = c.height(0).expect("node 0 answers");
    c.wait_height(&[0, 1, 2, 3], h, MIN);
    assert_same_hashes(&c, &[0, 1, 2, 3], h);
}

#[test]
fn tampered_store_stops_the_node_naming_the_height() {
    let mut c = Cluster::new(4, 50);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 8, MIN);
    let status = c.stop(0);
    assert!(status.success(), "clean shutdown on SIGTERM: {status}");
    {
        let db = redb::Database::open(c.nodes[0].dir.join("meshward.redb")).unwrap();
        let mut bytes = meshward_store::raw::row(&db, 5).unwrap().unwrap();
        // A byte of the header's state root in the compact row: after the row version, the
        // head form, the time (a varint), the previous hash, the proposer (one byte) and the
        // transaction root. The row still decodes; the header hashes differently.
        assert_eq!(bytes[..2], [2, 1], "a compact row");
        let time_len = bytes[2..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        bytes[2 + time_len + 32 + 1 + 32 + 3] ^= 0x10;
        meshward_store::raw::overwrite(&db, 5, &bytes).unwrap();
    }
    c.start(0);
    let mut child = c.nodes[0].child.take().unwrap();
    let exit = wait_for("node0 to refuse to go on", MIN, || {
        child.try_wait().unwrap()
    });
    assert!(!exit.success());
    let log = c.log(0);
    assert!(log.contains("height"), "log: {log}");
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        last.contains("height 5") || last.contains("height 6"),
        "error line: {last}"
    );
}

#[test]
fn bad_input_gets_json_errors_and_node_keeps_finalising() {
    let mut c = Cluster::new(4, 50);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 3, MIN);
    let port = c.nodes[0].api_port;
    let good = format!("Bearer {}", c.nodes[0].token);
    let wrong = format!("Bearer {}", "0".repeat(64));
    let huge = vec![7u8; 2 * 1024 * 1024];
    let mut garbage = vec![0u8; 300];
    OsRng.fill(&mut garbage[..]);
    // A well-formed transaction with a bad signature.
    let kp = Keypair::generate(&mut OsRng);
    let mut bad_sig = c.enroll_tx(&kp, 1);
    bad_sig.sig.0[3] ^= 1;
    let bad_sig = bad_sig.to_bytes();
    // (method, path, headers, body, expected status, expected code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a [u8],
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/v1/tx", vec![], &bad_sig, 401, "unauthorized"),
        (
            "POST",
            "/v1/tx",
            vec![("Authorization", &wrong)],
            &bad_sig,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/tx",
            vec![("Authorization", "Basic abc")],
            &bad_sig,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/tx",
            vec![("Authorization", &good)],
            &garbage,
            400,
            "bad_encoding",
        ),
        (
            "POST",
            "/v1/tx",
            vec![("Authorization", &good)],
            b"",
            400,
            "bad_encoding",
        ),
        (
            "POST",
            "/v1/tx",
            vec![
                ("Authorization", &good),
                ("Content-Type", "application/json"),
            ],
            b"{not json",
            400,
            "bad_json",
        ),
        (
            "POST",
            "/v1/tx",
            vec![
                ("Authorization", &good),
                ("Content-Type", "application/json"),
            ],
            b"{\"tx\":\"ZZ\"}",
            400,
            "bad_hex",
        ),
        (
            "POST",
            "/v1/tx",
            vec![("Authorization", &good)],
            &huge,
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/v1/tx",
            vec![("Authorization", &good)],
            &bad_sig,
            422,
            "rejected",
        ),
        ("POST", "/v1/txs", vec![], &garbage, 401, "unauthorized"),
        (
            "POST",
            "/v1/txs",
            vec![("Authorization", &good)],
            &garbage,
            400,
            "bad_encoding",
        ),
        (
            "POST",
            "/v1/txs",
            vec![("Authorization", &good)],
            &huge,
            413,
            "body_too_large",
        ),
        ("GET", "/v1/blocks/abc", vec![], b"", 400, "bad_height"),
        ("GET", "/v1/blocks/-1", vec![], b"", 400, "bad_height"),
        (
            "GET",
            "/v1/blocks/99999999",
            vec![],
            b"",
            404,
            "no_such_block",
        ),
        ("GET", "/v1/tx/xyz", vec![], b"", 400, "bad_hash"),
        ("GET", "/v1/tx/", vec![], b"", 404, "not_found"),
        ("GET", "/v1/nothing", vec![], b"", 404, "not_found"),
        (
            "DELETE",
            "/v1/status",
            vec![],
            b"",
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/v1/status",
            vec![("Authorization", &good)],
            &garbage,
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, headers, body, status, code) in &cases {
        let r = http(port, method, path, headers, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert_eq!(
            r.status,
            *status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["code"], *code, "{method} {path}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
    let unknown = Hash(OsRng.gen()).to_hex();
    let r = http(port, "GET", &format!("/v1/tx/{unknown}"), &[], b"").unwrap();
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, "unknown_tx".into())
    );
    // The rejected transaction is reported as such.
    let id = Tx::decode_bytes(&bad_sig).unwrap().id().to_hex();
    let v = c.tx_status(0, &id).unwrap();
    assert_eq!(v["status"], "rejected", "{v}");

    // Garbage on the mesh and consensus ports.
    for p in [c.nodes[0].p2p_port, c.nodes[0].p2p_port + 1] {
        for _ in 0..20 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", p)) {
                let mut junk = vec![0u8; OsRng.gen_range(1..4096)];
                OsRng.fill(&mut junk[..]);
                let _ = std::io::Write::write_all(&mut s, &junk);
            }
        }
    }
    // Still running and still finalising.
    let h = c.height(0).unwrap();
    c.wait_height(&[0, 1, 2, 3], h + 5, MIN);
    assert!(c.nodes[0]
        .child
        .as_mut()
        .unwrap()
        .try_wait()
        .unwrap()
        .is_none());
}

#[test]
fn devnet_ctrl_c_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let base = meshward_testkit::free_ports(40);
    let mut devnet = common::meshward()
        .args(["devnet", "--dir"])
        .arg(dir.path().join("net"))
        .args(["--base-port", &base.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let file = dir.path().join("net/devnet.json");
    let pids: Vec<u32> = wait_for("devnet.json with pids", MIN, || {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).ok()?).ok()?;
        let pids: Vec<u32> = v["nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| n["pid"].as_u64().map(|p| p as u32))
            .collect();
        (pids.len() == 4).then_some(pids)
    });
    wait_for("devnet to finalise blocks", MIN, || {
        let r = http(base, "GET", "/v1/status", &[], b"")?;
        (r.json()["height"].as_u64()? >= 1).then_some(())
    });
    meshward_testkit::int(devnet.id());
    let status = wait_for("devnet to exit", MIN, || devnet.try_wait().unwrap());
    assert!(status.success(), "devnet exit: {status}");
    for p in pids {
        assert!(
            !meshward_testkit::alive(p),
            "node process {p} is still running"
        );
    }
}

#[test]
fn devnet_with_devices_shows_a_living_fleet() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let base = meshward_testkit::free_ports(40);
    let mut devnet = common::meshward()
        .args(["--json", "devnet", "--dir"])
        .arg(dir.path().join("net"))
        .args(["--base-port", &base.to_string()])
        .args(["--devices", "4", "--device-rate", "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let l2 = lines.clone();
    let out = devnet.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                l2.lock().unwrap().push(v);
            }
        }
    });
    // devnet.json lists the devices' key files and ids.
    let file = dir.path().join("net/devnet.json");
    let devices = wait_for("devnet.json with devices", MIN, || {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).ok()?).ok()?;
        let d = v["devices"].as_array()?.clone();
        (d.len() == 4).then_some(d)
    });
    for d in &devices {
        assert!(std::path::Path::new(d["key"].as_str().unwrap()).exists());
    }
    // The devices are enrolled and messages flow: sent, received and anchored.
    let last = wait_for("simulated messages to be received", 2 * MIN, || {
        let l = lines.lock().unwrap().last().cloned()?;
        (l["messages_received"].as_u64()? >= 8).then_some(l)
    });
    assert_eq!(last["devices"], 4);
    for d in &devices {
        let id = d["id"].as_str().unwrap();
        let r = http(base, "GET", &format!("/v1/devices/{id}"), &[], b"").unwrap();
        assert_eq!(r.status, 200, "{id} is not enrolled");
    }
    meshward_testkit::int(devnet.id());
    let status = wait_for("devnet to exit", MIN, || devnet.try_wait().unwrap());
    assert!(status.success(), "devnet exit: {status}");
}

/// A devnet's JSON summary lines, collected from its stdout.
fn devnet_lines(devnet: &mut std::process::Child) -> Arc<Mutex<Vec<serde_json::Value>>> {
    use std::io::BufRead;
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let l2 = lines.clone();
    let out = devnet.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                l2.lock().unwrap().push(v);
            }
        }
    });
    lines
}

fn devnet_pids(dir: &std::path::Path) -> Option<Vec<Option<u32>>> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).ok()?).ok()?;
    Some(
        v["nodes"]
            .as_array()?
            .iter()
            .map(|n| n["pid"].as_u64().map(|p| p as u32))
            .collect(),
    )
}

fn devnet_cmd(args: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let out = common::meshward()
        .arg("--json")
        .args(["devnet"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "meshward devnet {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `meshward devnet --devices 20`: SIGKILL one validator and the devnet rides it out (the other
/// three and the devnet keep running, the live line says which node is down, with its exit
/// status and log, and devnet.json drops its pid); `meshward devnet start 3` brings it back
/// with its data dir and ports, and it catches up to identical hashes.
#[test]
fn devnet_rides_out_a_killed_validator_and_takes_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = meshward_testkit::free_ports(40);
    let mut devnet = common::meshward()
        .args(["--json", "devnet", "--dir"])
        .arg(&dir)
        .args(["--base-port", &base.to_string()])
        .args(["--devices", "20", "--device-rate", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = devnet_lines(&mut devnet);
    wait_for("the devices to exchange messages", 3 * MIN, || {
        let l = lines.lock().unwrap().last().cloned()?;
        (l["messages_received"].as_u64()? >= 20 && l["nodes_up"] == 4).then_some(())
    });
    let before = devnet_pids(&dir).unwrap();
    let killed = devnet_cmd(&["kill", "3"], &dir);
    assert_eq!(killed["node"], "node3");
    assert_eq!(killed["pid"].as_u64().map(|p| p as u32), before[3]);
    // The live line reports node3 down, with its exit status and log; the devnet goes on.
    let down = wait_for("the live line to show node3 down", MIN, || {
        let l = lines.lock().unwrap().last().cloned()?;
        (l["nodes_up"] == 3).then_some(l)
    });
    assert_eq!(down["nodes_down"][0]["name"], "node3", "{down}");
    assert!(
        down["nodes_down"][0]["status"]
            .as_str()
            .unwrap()
            .contains("signal 9"),
        "{down}"
    );
    assert!(down["nodes_down"][0]["log"]
        .as_str()
        .unwrap()
        .ends_with("node3/node.log"));
    assert!(
        devnet.try_wait().unwrap().is_none(),
        "the devnet exited with its node"
    );
    let pids = devnet_pids(&dir).unwrap();
    assert_eq!(pids[3], None);
    assert!(pids[..3]
        .iter()
        .all(|p| p.is_some_and(meshward_testkit::alive)));
    // The other three go on finalising, and the devices keep talking.
    let h = http(base, "GET", "/v1/status", &[], b"").unwrap().json()["height"]
        .as_u64()
        .unwrap();
    let received = down["messages_received"].as_u64().unwrap();
    wait_for("the three to finalise and deliver more", MIN, || {
        let l = lines.lock().unwrap().last().cloned()?;
        (l["height"].as_u64()? > h + 10 && l["messages_received"].as_u64()? > received + 10)
            .then_some(())
    });

    // The operator's series: node3's missed signatures grow while it is down.
    let node3 = {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).unwrap())
                .unwrap();
        v["nodes"][3]["peer_id"].as_str().unwrap().to_string()
    };
    let metrics = || -> String {
        String::from_utf8(http(base, "GET", "/metrics", &[], b"").unwrap().body).unwrap()
    };
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let missed = format!("meshward_consensus_validator_missed_total{{validator=\"{node3}\"}}");
    let m0 = value(&metrics(), &missed).unwrap_or(0.0);
    wait_for("node3's missed signatures to grow", MIN, || {
        (value(&metrics(), &missed)? > m0 + 5.0).then_some(())
    });
    let text = metrics();
    assert!(
        value(
            &text,
            &format!("meshward_consensus_validator_last_signed_height{{validator=\"{node3}\"}}")
        )
        .is_some_and(|h| h > 0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "meshward_devices{status=\"active\"}"),
        Some(20.0),
        "{text}"
    );
    for series in [
        "meshward_devices{status=\"revoked\"}",
        "meshward_devices{status=\"quarantined\"}",
        "meshward_quarantines_total",
        "meshward_mailbox_envelopes",
        "meshward_mailbox_bytes",
        "meshward_rpc_busy_total",
        "meshward_disk_free_bytes",
    ] {
        assert!(value(&text, series).is_some(), "{series} missing:\n{text}");
    }
    assert!(value(&text, "meshward_store_bytes{file=\"chain\"}").is_some_and(|b| b > 0.0));
    assert!(
        value(&text, "meshward_net_connections{kind=\"gateway\"}").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        value(&text, "meshward_net_connections{kind=\"device\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "meshward_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/status\"}"
        )),
        "{text}"
    );

    // Back: same data dir and ports; it catches up.
    let started = devnet_cmd(&["start", "3"], &dir);
    let pid = started["pid"].as_u64().unwrap() as u32;
    wait_for("the live line to show 4/4 again", MIN, || {
        let l = lines.lock().unwrap().last().cloned()?;
        (l["nodes_up"] == 4).then_some(())
    });
    assert_eq!(devnet_pids(&dir).unwrap()[3], Some(pid));
    let api = |i: u16| base + 10 * i;
    let height = |i: u16| -> Option<u64> {
        http(api(i), "GET", "/v1/status", &[], b"")?.json()["height"].as_u64()
    };
    let target = height(0).unwrap();
    wait_for("node3 to catch up", 2 * MIN, || {
        (height(3)? >= target).then_some(())
    });
    for hgt in 1..=target {
        let hash = |i: u16| -> Option<String> {
            let r = http(api(i), "GET", &format!("/v1/blocks/{hgt}"), &[], b"")?;
            r.json()["hash"].as_str().map(str::to_string)
        };
        let h0 = hash(0).unwrap();
        for i in 1..4 {
            assert_eq!(
                hash(i).as_deref(),
                Some(h0.as_str()),
                "height {hgt}, node{i}"
            );
        }
    }
    // Ctrl-C stops every node, the restarted one too.
    meshward_testkit::int(devnet.id());
    let status = wait_for("devnet to exit", MIN, || devnet.try_wait().unwrap());
    assert!(status.success(), "devnet exit: {status}");
    assert!(
        !meshward_testkit::alive(pid),
        "the restarted node3 still runs"
    );
    assert!(devnet_pids(&dir).unwrap().iter().all(Option::is_none));
}

/// `--restart-on-exit`: a node that is killed comes back by itself, with a new pid.
#[test]
fn devnet_restarts_an_exited_node_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = meshward_testkit::free_ports(40);
    let mut devnet = common::meshward()
        .args(["--json", "devnet", "--restart-on-exit", "--dir"])
        .arg(&dir)
        .args(["--base-port", &base.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = devnet_lines(&mut devnet);
    let before = wait_for("the four nodes up", MIN, || {
        let l = lines.lock().unwrap().last().cloned()?;
        (l["nodes_up"] == 4).then_some(())?;
        devnet_pids(&dir)
    });
    devnet_cmd(&["kill", "1"], &dir);
    let after = wait_for("node1 restarted", MIN, || {
        let p = devnet_pids(&dir)?;
        p[1].filter(|p| Some(*p) != before[1] && meshward_testkit::alive(*p))?;
        Some(p)
    });
    assert_eq!(after[0], before[0]);
    meshward_testkit::int(devnet.id());
    let status = wait_for("devnet to exit", MIN, || devnet.try_wait().unwrap());
    assert!(status.success(), "devnet exit: {status}");
}

/// Block `h` on node 0, as `GET /v1/blocks/{h}` serves it.
fn block_json(c: &Cluster, h: u64) -> Option<serde_json::Value> {
    let r = http(
        c.nodes[0].api_port,
        "GET",
        &format!("/v1/blocks/{h}"),
        &[],
        b"",
    )?;
    (r.status == 200).then(|| r.json())
}

/// The header time of block `h` on node 0.
fn block_time(c: &Cluster, h: u64) -> Option<u64> {
    block_json(c, h)?["header"]["time_ms"].as_u64()
}

/// The round block `h` on node 0 was decided in, from its certificate.
fn block_round(c: &Cluster, h: u64) -> Option<u64> {
    block_json(c, h)?["certificate"]["round"].as_u64()
}

/// An idle chain writes nothing but a heartbeat every `idle_block_interval_ms`: over a window
/// of heartbeats, every block is empty and at least the interval after the one before.
#[test]
fn an_idle_chain_writes_no_block_between_heartbeats() {
    const IDLE_MS: u64 = 1500;
    let mut c = Cluster::new(4, IDLE_MS);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 2, MIN);
    let from = c.height(0).unwrap();
    c.wait_height(&[0], from + 4, MIN);
    let to = c.height(0).unwrap();
    let mut checked = 0;
    for h in from + 1..=to {
        assert_eq!(
            block_json(&c, h).unwrap()["txs"],
            serde_json::json!([]),
            "block {h} is not empty"
        );
        // A height starts IDLE_MS after the one before started; its block is stamped as it
        // starts. A block decided in a later round (a slow start on a loaded machine) is
        // stamped later, which shortens the gap after it: only a round-0 block is a baseline.
        if block_round(&c, h - 1).unwrap() > 0 {
            continue;
        }
        let gap = block_time(&c, h).unwrap() - block_time(&c, h - 1).unwrap();
        assert!(
            gap >= IDLE_MS * 9 / 10,
            "blocks {} and {h} of an idle chain are {gap} ms apart, the heartbeat is {IDLE_MS} ms",
            h - 1
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} gaps after a round-0 block");
}

/// With no heartbeat (`idle_block_interval_ms = 0`) an idle chain writes nothing at all; a
/// transaction still gets its block within the batching window, and one that waits for a
/// missing predecessor makes no blocks until it arrives.
#[test]
fn without_a_heartbeat_only_transactions_make_blocks() {
    let mut c = Cluster::new(4, 0);
    c.start_all();
    // Height 1 starts at once after genesis; then nothing is pending.
    c.wait_height(&[0, 1, 2, 3], 1, MIN);
    let h = c.height(0).unwrap();
    meshward_testkit::never(
        "an idle chain without a heartbeat to write a block",
        Duration::from_secs(4),
        || c.height(0).is_some_and(|x| x > h),
    );
    let d = Keypair::generate(&mut OsRng);
    let tx = c.enroll_tx(&d, 1);
    let hash = c.submit(0, &tx).unwrap();
    let at = wait_for("the transaction to be final", MIN, || {
        let v = c.tx_status(0, &hash)?;
        (v["status"] == "final").then(|| v["height"].as_u64())?
    });
    assert_eq!(at, h + 1, "the transaction's block is the next one");

    // A transaction past a gap (seq 3 while seq 2 is missing) cannot go into a block. It is
    // held, but it must not make the chain write empty blocks back to back waiting for it (a
    // device could run every gateway's disk and CPU hot that way): at most the block whose
    // proposer finds it unusable, then nothing until the gap is filled.
    let gap = c.enroll_tx(&Keypair::generate(&mut OsRng), 3);
    let gap_hash = c.submit(1, &gap).unwrap();
    meshward_testkit::never(
        "a transaction past a gap to make the chain write blocks back to back",
        Duration::from_secs(4),
        || c.height(0).is_some_and(|x| x > at + 2),
    );
    let fill = c.enroll_tx(&Keypair::generate(&mut OsRng), 2);
    let fill_hash = c.submit(2, &fill).unwrap();
    for hash in [fill_hash, gap_hash] {
        wait_for(
            "both transactions to be final once the gap is filled",
            MIN,
            || (c.tx_status(0, &hash)?["status"] == "final").then_some(()),
        );
    }
}

/// A clean shutdown (SIGTERM) exits 0 and logs no error from "shutting down" on: the node's last
/// lines are its own "stopped", not the consensus network's complaints about its stopped actors
/// (`ERROR … Actor has died, stopping network` before this was fixed).
#[test]
fn a_clean_shutdown_logs_no_error() {
    let mut c = Cluster::new(4, 50);
    c.start_all();
    c.wait_height(&[0, 1, 2, 3], 3, MIN);
    for i in 0..4 {
        let status = c.stop(i);
        assert!(status.success(), "node{i}: {status}");
        let log = c.log(i);
        assert!(log.contains("stopped"), "node{i} log: {log}");
        let errors: Vec<&str> = log
            .lines()
            .skip_while(|l| !l.contains("shutting down"))
            .filter(|l| l.contains("ERROR"))
            .collect();
        assert!(errors.is_empty(), "node{i} logged errors: {errors:#?}");
    }
}

/// A transaction a node accepts while no peer listens yet (it has just started, alone) is
/// gossiped once its peers connect, so every validator holds it and whoever proposes next
/// includes it. Before, that gossip batch was dropped and the transaction waited for its own
/// node's turn to propose; on a chain without a heartbeat it was never final unless that node
/// happened to propose the next block (then this test would still pass, by luck).
#[test]
fn a_transaction_accepted_before_any_peer_listens_is_gossiped_once_they_do() {
    let mut c = Cluster::new(4, 0);
    c.start(1);
    wait_for("node1's API", MIN, || c.status(1));
    let d = Keypair::generate(&mut OsRng);
    let tx = c.enroll_tx(&d, 1);
    let hash = c.submit(1, &tx).expect("accepted by a node alone");
    for i in [0, 2, 3] {
        c.start(i);
    }
    for i in 0..4 {
        wait_for(&format!("node{i} to hold the transaction"), MIN, || {
            let v = c.tx_status(i, &hash)?;
            (v["status"] == "pending" || v["status"] == "final").then_some(())
        });
    }
    for i in 0..4 {
        wait_for(
            &format!("the transaction to be final on node{i}"),
            MIN,
            || (c.tx_status(i, &hash)?["status"] == "final").then_some(()),
        );
    }
}
