//! A cluster of real `meshward node run` processes on 127.0.0.1 for integration tests.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshward_core::codec::Encode;
use meshward_core::genesis::Genesis;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_core::Tx;
use meshward_node::keyfile::{self, KeyKind};
use serde_json::Value;

pub fn meshward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free block of `n` consecutive TCP ports on 127.0.0.1 (checked by binding them).
pub fn free_ports(n: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    loop {
        let base: u16 = rng.gen_range(20_000..60_000);
        let ok = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One raw HTTP/1.1 exchange with `Connection: close`.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpResponse> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some(HttpResponse { status, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        b = &b[i + 2..];
        if n == 0 || b.len() < n {
            break;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[(n + 2).min(b.len())..];
    }
    out
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub api_port: u16,
    pub p2p_port: u16,
    pub peer_id: String,
    pub token: String,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub genesis_path: PathBuf,
    pub genesis: Genesis,
    pub admin: Keypair,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Creates `n` validators' data dirs and a genesis; starts none. Blocks come every
    /// `idle_ms` when idle, so tests do not wait a second per block.
    pub fn new(n: usize, idle_ms: u64) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let base = free_ports(10 * n as u16);
        let admin_path = root.path().join("admin.key");
        let admin = keyfile::generate(&admin_path, KeyKind::Admin).unwrap();
        let mut nodes = Vec::new();
        let mut vals = Vec::new();
        for i in 0..n {
            let api_port = base + 10 * i as u16;
            let p2p_port = api_port + 1;
            let dir = root.path().join(format!("node{i}"));
            let r = meshward_node::init_data_dir(
                &dir,
                &format!("127.0.0.1:{api_port}"),
                &format!("/ip4/127.0.0.1/tcp/{p2p_port}"),
                false,
            )
            .unwrap();
            let mut cfg = fs::read_to_string(&r.config).unwrap();
            cfg.push_str(&format!("idle_block_interval_ms = {idle_ms}\n"));
            fs::write(&r.config, cfg).unwrap();
            let kp = keyfile::load(&r.node_key, KeyKind::Node).unwrap();
            vals.push(Validator {
                key: kp.id(),
                power: 1,
            });
            nodes.push(Node {
                name: format!("node{i}"),
                token: fs::read_to_string(&r.token_file)
                    .unwrap()
                    .trim()
                    .to_string(),
                dir,
                api_port,
                p2p_port,
                peer_id: r.peer_id,
                child: None,
            });
        }
        let genesis = Genesis {
            chain_id: "test".into(),
            genesis_time_ms: 1_700_000_000_000,
            admins: AdminSet::new(vec![admin.id()], 1).unwrap(),
            validators: ValidatorSet::new(vals).unwrap(),
        };
        let genesis_path = root.path().join("genesis.json");
        fs::write(&genesis_path, genesis.to_json()).unwrap();
        Cluster {
            root,
            genesis_path,
            genesis,
            admin,
            nodes,
        }
    }

    pub fn start(&mut self, i: usize) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.nodes[i].dir.join("node.log"))
            .unwrap();
        let mut cmd = meshward();
        cmd.args(["node", "run", "--dir"])
            .arg(&self.nodes[i].dir)
            .arg("--genesis")
            .arg(&self.genesis_path);
        for (j, other) in self.nodes.iter().enumerate() {
            if j != i {
                cmd.arg("--bootstrap").arg(format!(
                    "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                    other.p2p_port, other.peer_id
                ));
            }
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        self.nodes[i].child = Some(cmd.spawn().unwrap());
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.nodes[i].child.take().expect("node is running");
        unsafe_free::term(c.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.nodes[i].dir.join("node.log")).unwrap_or_default()
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let r = http(self.nodes[i].api_port, "GET", "/v1/status", &[], b"")?;
        (r.status == 200).then(|| r.json())
    }

    pub fn height(&self, i: usize) -> Option<u64> {
        self.status(i)?["height"].as_u64()
    }

    pub fn block_hash(&self, i: usize, h: u64) -> Option<String> {
        let r = http(
            self.nodes[i].api_port,
            "GET",
            &format!("/v1/blocks/{h}"),
            &[],
            b"",
        )?;
        (r.status == 200).then(|| r.json()["hash"].as_str().map(String::from))?
    }

    /// Waits until every listed node reports at least `h`.
    pub fn wait_height(&self, nodes: &[usize], h: u64, timeout: Duration) {
        wait_for(
            &format!("nodes {nodes:?} to reach height {h}"),
            timeout,
            || {
                nodes
                    .iter()
                    .all(|&i| self.height(i).is_some_and(|x| x >= h))
                    .then_some(())
            },
        );
    }

    pub fn submit(&self, i: usize, tx: &Tx) -> Result<String, (u16, Value)> {
        let auth = format!("Bearer {}", self.nodes[i].token);
        let r = http(
            self.nodes[i].api_port,
            "POST",
            "/v1/tx",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/octet-stream"),
            ],
            &tx.to_bytes(),
        )
        .ok_or((0, Value::Null))?;
        let v = r.json();
        if r.status == 200 {
            Ok(v["hash"].as_str().unwrap_or_default().to_string())
        } else {
            Err((r.status, v))
        }
    }

    pub fn tx_status(&self, i: usize, hash: &str) -> Option<Value> {
        let r = http(
            self.nodes[i].api_port,
            "GET",
            &format!("/v1/tx/{hash}"),
            &[],
            b"",
        )?;
        Some(r.json())
    }

    pub fn admin_id(&self) -> PublicKey {
        self.admin.id()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

pub mod unsafe_free {
    /// Sends SIGTERM to a child we spawned.
    pub fn term(pid: u32) {
        signal(pid, libc::SIGTERM);
    }

    pub fn int(pid: u32) {
        signal(pid, libc::SIGINT);
    }

    fn signal(pid: u32, sig: i32) {
        // SAFETY: kill(2) takes no pointers; the pid is a child of this test not yet reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }

    /// Whether a process with this pid still exists (and is not a zombie of ours).
    pub fn alive(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 3 is the state; Z is a zombie, which no longer runs.
        !stat.is_empty() && stat.split_whitespace().nth(2) != Some("Z")
    }
}

/// Whether this process runs as root (network namespaces and iptables need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
pub mod fleet;
