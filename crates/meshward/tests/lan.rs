//! LAN tests: gateways in their own network namespaces, joined by veth pairs to a bridge that
//! lives in a namespace of its own, so nothing touches the host's interfaces. mDNS runs only
//! inside these namespaces. They need root and iproute2 (and iptables for the partitions), so
//! they are `#[ignore]`d: a plain `cargo test` reports them as ignored, never as passed.
//! `cargo test -p meshward --test lan -- --include-ignored` runs them; without root or a tool
//! each fails, naming what is missing. `.ci/run` installs the tools and runs them as root.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meshward_core::genesis::Genesis;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_sdk::keyfile::{self, KeyKind};
use meshward_testkit::{have_tool, is_root, wait_for};

const MIN: Duration = Duration::from_secs(60);
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails the test, naming everything missing, unless it runs as root with `tools` (commands on
/// the `PATH`) installed. The tests are ignored by default, so only a run that asked for them
/// (`--include-ignored`) gets here, and it must not pass without running.
fn require(tools: &[&str]) {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces need it)".to_string());
    }
    for t in tools {
        if !have_tool(t) {
            let package = if *t == "ip" { "iproute2" } else { t };
            missing.push(format!("the {t} command (apt-get install {package})"));
        }
    }
    assert!(
        missing.is_empty(),
        "this LAN test cannot run: missing {}; .ci/run installs the tools and runs it as root",
        missing.join(", ")
    );
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Four namespaces on one bridge, each with a node; everything is removed on drop.
struct Lan {
    tag: String,
    root: tempfile::TempDir,
    subnet: u8,
    genesis: PathBuf,
    nodes: Vec<Child>,
    dirs: Vec<PathBuf>,
    peer_ids: Vec<String>,
    /// Namespaces on the bridge beyond the nodes', for devices.
    extra: usize,
}

impl Lan {
    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn bridge_ns(&self) -> String {
        format!("{}br", self.tag)
    }

    fn new(n: usize) -> Lan {
        Lan::with_devices(n, 0)
    }

    /// `n` node namespaces plus `extra` namespaces (numbered after them) for devices.
    fn with_devices(n: usize, extra: usize) -> Lan {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("mw{}x{k}", std::process::id() % 100_000);
        let subnet = 100 + (std::process::id() % 100) as u8 + k as u8;
        let root = tempfile::tempdir().unwrap();
        let mut lan = Lan {
            tag,
            root,
            subnet,
            genesis: PathBuf::new(),
            nodes: Vec::new(),
            dirs: Vec::new(),
            peer_ids: Vec::new(),
            extra,
        };
        let br = lan.bridge_ns();
        sh(&["ip", "netns", "add", &br]);
        sh(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for i in 0..n + extra {
            let ns = lan.ns(i);
            let (a, b) = (format!("{}a{i}", lan.tag), format!("{}b{i}", lan.tag));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &a, "netns", &ns, "type", "veth", "peer", "name", &b, "netns",
                &br,
            ]);
            sh(&["ip", "-n", &ns, "link", "set", &a, "name", "eth0"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.213.{}.{}/24", lan.subnet, 10 + i),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            // mDNS sends to 224.0.0.251: route multicast out of eth0.
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", &br, "link", "set", &b, "master", "br0"]);
            sh(&["ip", "-n", &br, "link", "set", &b, "up"]);
        }
        // Validators: data dirs with mDNS on and no bootstrap peers.
        let admin = keyfile::generate(&lan.root.path().join("admin.key"), KeyKind::Admin).unwrap();
        let mut vals = Vec::new();
        for i in 0..n {
            let dir = lan.root.path().join(format!("node{i}"));
            let r =
                meshward_node::init_data_dir(&dir, "127.0.0.1:7700", "/ip4/0.0.0.0/tcp/7801", true)
                    .unwrap();
            let mut cfg = std::fs::read_to_string(&r.config).unwrap();
            cfg.push_str("idle_block_interval_ms = 100\n");
            std::fs::write(&r.config, cfg).unwrap();
            vals.push(Validator {
                key: keyfile::load(&r.node_key, KeyKind::Node).unwrap().id(),
                power: 1,
            });
            lan.peer_ids.push(r.peer_id);
            lan.dirs.push(dir);
        }
        let genesis = Genesis {
            chain_id: "lan".into(),
            genesis_time_ms: 1_700_000_000_000,
            admins: AdminSet::new(vec![admin.id()], 1).unwrap(),
            validators: ValidatorSet::new(vals).unwrap(),
        };
        lan.genesis = lan.root.path().join("genesis.json");
        std::fs::write(&lan.genesis, genesis.to_json()).unwrap();
        lan
    }

    fn start(&mut self) {
        for i in 0..self.dirs.len() {
            let log = std::fs::File::create(self.dirs[i].join("node.log")).unwrap();
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns(i),
                    env!("CARGO_BIN_EXE_meshward"),
                    "node",
                    "run",
                    "--dir",
                ])
                .arg(&self.dirs[i])
                .arg("--genesis")
                .arg(&self.genesis)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.nodes.push(child);
        }
    }

    fn height(&self, i: usize) -> Option<u64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(i),
                env!("CARGO_BIN_EXE_meshward"),
                "status",
                "--api",
                "http://127.0.0.1:7700",
                "--json",
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["height"].as_u64()
    }

    fn wait_height(&self, nodes: &[usize], h: u64) {
        wait_for(&format!("nodes {nodes:?} at height {h}"), 2 * MIN, || {
            nodes
                .iter()
                .all(|&i| self.height(i).is_some_and(|x| x >= h))
                .then_some(())
        });
    }

    fn iptables(&self, i: usize, args: &[&str]) {
        let mut a = vec!["ip", "netns", "exec"];
        let ns = self.ns(i);
        a.push(&ns);
        a.push("iptables");
        a.extend_from_slice(args);
        sh(&a);
    }

    fn logs(&self) -> String {
        (0..self.dirs.len())
            .map(|i| {
                let l = std::fs::read_to_string(self.dirs[i].join("node.log")).unwrap_or_default();
                let tail: Vec<&str> = l.lines().rev().take(15).collect();
                format!(
                    "--- node{i}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.dirs.len() + self.extra {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns()])
            .status();
    }
}

#[test]
#[ignore = "needs root and ip: run with --include-ignored"]
fn lan_nodes_discover_each_other_by_mdns_and_finalise() {
    require(&["ip"]);
    let mut lan = Lan::new(4);
    lan.start();
    // No --bootstrap anywhere: a quorum can only form if mDNS found the peers.
    lan.wait_height(&[0, 1, 2, 3], 10);
}

#[test]
#[ignore = "needs root, ip and iptables: run with --include-ignored"]
fn partitioned_validator_catches_up_after_heal() {
    require(&["ip", "iptables"]);
    let mut lan = Lan::new(4);
    lan.start();
    lan.wait_height(&[0, 1, 2, 3], 5);
    // Cut node 3 off: everything but loopback is dropped, both ways.
    lan.iptables(3, &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
    lan.iptables(3, &["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
    lan.iptables(3, &["-A", "INPUT", "-j", "DROP"]);
    lan.iptables(3, &["-A", "OUTPUT", "-j", "DROP"]);
    let cut_at = lan.height(3).unwrap();
    let h = (0..3).filter_map(|i| lan.height(i)).max().unwrap();
    lan.wait_height(&[0, 1, 2], h + 20);
    let stalled = lan.height(3).unwrap();
    assert!(
        stalled <= cut_at + 1,
        "node3 advanced while cut off: {cut_at} -> {stalled}"
    );
    // Heal: node 3 catches up.
    lan.iptables(3, &["-F"]);
    let target = (0..3).filter_map(|i| lan.height(i)).max().unwrap();
    lan.wait_height(&[3], target);
}

impl Lan {
    /// Gateway `i`'s mesh address on the bridge.
    fn mesh(&self, i: usize) -> String {
        format!(
            "/ip4/10.213.{}.{}/tcp/7801/p2p/{}",
            self.subnet,
            10 + i,
            self.peer_ids[i]
        )
    }

    /// Runs `meshward --json ARGS` in namespace `ns`.
    fn cli_in(&self, ns: usize, args: &[String]) -> Result<serde_json::Value, String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(ns),
                env!("CARGO_BIN_EXE_meshward"),
                "--json",
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(serde_json::from_str(stdout.trim()).unwrap_or_default())
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn gateways(&self) -> Vec<String> {
        (0..self.dirs.len())
            .flat_map(|i| ["--bootstrap".to_string(), self.mesh(i)])
            .collect()
    }

    /// Cuts gateway `i` off the bridge (loopback still works), or heals it.
    fn cut(&self, i: usize, cut: bool) {
        if cut {
            self.iptables(i, &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
            self.iptables(i, &["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
            self.iptables(i, &["-A", "INPUT", "-j", "DROP"]);
            self.iptables(i, &["-A", "OUTPUT", "-j", "DROP"]);
        } else {
            self.iptables(i, &["-F"]);
        }
    }
}

#[test]
#[ignore = "needs root, ip and iptables: run with --include-ignored"]
fn lan_devices_talk_directly_while_every_gateway_is_cut_off() {
    require(&["ip", "iptables"]);
    use std::io::BufRead;
    let mut lan = Lan::with_devices(4, 2);
    lan.start();
    lan.wait_height(&[0, 1, 2, 3], 2);
    let (ns_a, ns_b) = (4, 5);
    let s = |x: &str| x.to_string();
    let root = lan.root.path().to_path_buf();
    let admin = root.join("admin.key").to_string_lossy().to_string();
    let mut ids = Vec::new();
    for (name, ns) in [("a", ns_a), ("b", ns_b)] {
        let key = root
            .join(format!("{name}.key"))
            .to_string_lossy()
            .to_string();
        let k = lan
            .cli_in(ns, &[s("device"), s("keygen"), s("--out"), key.clone()])
            .unwrap();
        let mut args = vec![s("device"), s("enroll"), s("--admin-key"), admin.clone()];
        args.extend([s("--device-key"), key.clone()]);
        args.extend(lan.gateways());
        lan.cli_in(ns, &args)
            .unwrap_or_else(|e| panic!("enroll {name}: {e}"));
        ids.push((key, k["device_id"].as_str().unwrap().to_string()));
    }
    let (key_a, _) = ids[0].clone();
    let (key_b, id_b) = ids[1].clone();

    // B's agent, listening on the bridge and finding peers by mDNS.
    let mut agent = KillOnDrop(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.ns(ns_b),
                env!("CARGO_BIN_EXE_meshward"),
            ])
            .args([
                "device",
                "run",
                "--key",
                &key_b,
                "--mdns",
                "--listen",
                "/ip4/0.0.0.0/tcp/0",
            ])
            .args(lan.gateways())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let l2 = lines.clone();
    let out = agent.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                l2.lock().unwrap().push(v);
            }
        }
    });
    let send = |msg: &str| {
        let mut args = vec![
            s("send"),
            s("--key"),
            key_a.clone(),
            s("--to"),
            id_b.clone(),
        ];
        args.extend([
            s("--message"),
            s(msg),
            s("--wait-final"),
            s("--timeout"),
            s("180"),
        ]);
        args.push(s("--mdns"));
        args.extend(lan.gateways());
        args
    };
    // With the gateways reachable: A learns B's record (kept in its state directory).
    wait_for("a first direct message", 2 * MIN, || {
        let r = lan.cli_in(ns_a, &send("hello over the lan")).ok()?;
        (r["delivery"] == "direct").then_some(())
    });

    // Every gateway is cut off. A's send still reaches B directly; its anchor waits.
    for i in 0..4 {
        lan.cut(i, true);
    }
    let mut pending = KillOnDrop(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.ns(ns_a),
                env!("CARGO_BIN_EXE_meshward"),
                "--json",
            ])
            .args(send("gateways are down"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pending = &mut pending.0;
    wait_for(
        "b to get the message with every gateway cut off",
        2 * MIN,
        || {
            lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l["text"] == "gateways are down" && l["delivery"] == "direct")
                .cloned()
        },
    );
    if pending.try_wait().unwrap().is_some() {
        let mut out = String::new();
        std::io::Read::read_to_string(pending.stdout.as_mut().unwrap(), &mut out).unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(pending.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("the send finished while no gateway could anchor it: {out}{err}");
    }

    // A gateway comes back: the anchor finalises.
    for i in 0..4 {
        lan.cut(i, false);
    }
    let status = wait_for("the send to finish once gateways are back", 3 * MIN, || {
        pending.try_wait().unwrap()
    });
    let mut out = String::new();
    std::io::Read::read_to_string(pending.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(pending.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["delivery"], "direct", "{v}");
    assert!(v["height"].as_u64().unwrap() > 0, "{v}");
    drop(agent);
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
