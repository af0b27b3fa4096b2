//! A cluster of real `meshward node run` processes on 127.0.0.1 for integration tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshward_core::codec::Encode;
use meshward_core::genesis::Genesis;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_core::Tx;
use meshward_sdk::keyfile::{self, KeyKind};
use meshward_testkit::{free_ports, http, wait_for, wait_until};
use serde_json::Value;

pub fn meshward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
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
        self.start_with(i, &[]);
    }

    /// Starts node `i` with `extra` arguments after `node run`'s own.
    pub fn start_with(&mut self, i: usize, extra: &[&str]) {
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
        cmd.args(extra);
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
        meshward_testkit::term(c.id());
        let what = format!("{} to stop on SIGTERM", self.nodes[i].name);
        wait_for(&what, Duration::from_secs(20), || c.try_wait().unwrap())
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
        wait_until(
            &format!("nodes {nodes:?} to reach height {h}"),
            timeout,
            || {
                nodes
                    .iter()
                    .all(|&i| self.height(i).is_some_and(|x| x >= h))
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

    /// The admin's enrollment of `device` in group `fleet`, signed with sequence number `seq`.
    pub fn enroll_tx(&self, device: &Keypair, seq: u64) -> Tx {
        let chain = &self.genesis.chain_id;
        let group = meshward_core::tx::GroupName::new("fleet").unwrap();
        let body = meshward_core::tx::enroll_body(chain, device, vec![group], None);
        Tx::sign(chain, self.admin.id(), &self.admin.sign, seq, body)
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

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
pub mod fleet;
pub mod load;
