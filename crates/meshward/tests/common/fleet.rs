//! Devices on top of a [`Cluster`]: key files, enrollment through the CLI, device agents as
//! real processes whose JSON lines are collected, and an SDK client for low-level checks.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshward_core::ids::{Keypair, PublicKey};
use meshward_sdk::client::{Client, ClientConfig, DeviceIdentity};
use serde_json::Value;

use meshward_testkit::wait_for;

use super::{meshward, Cluster};

pub const MIN: Duration = Duration::from_secs(60);

pub struct Fleet {
    pub c: Cluster,
    pub rt: tokio::runtime::Runtime,
}

pub struct Dev {
    pub key: PathBuf,
    pub id: String,
    pub pk: PublicKey,
    pub kp: Keypair,
}

pub struct Agent {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<Value>>>,
    pub log: PathBuf,
}

impl Agent {
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    pub fn wait_line(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, MIN, || self.lines().into_iter().find(|l| f(l)))
    }

    pub fn stop(mut self) {
        meshward_testkit::term(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI; Ok(stdout JSON) on success, Err(stdout + stderr) on failure.
pub fn cli(args: &[String]) -> Result<Value, String> {
    let out = meshward()
        .arg("--json")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(serde_json::from_str(stdout.trim()).unwrap_or(Value::Null))
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

pub fn s(x: impl AsRef<str>) -> String {
    x.as_ref().to_string()
}

impl Fleet {
    /// Four validators, started, past height 1.
    pub fn start() -> Fleet {
        let mut c = Cluster::new(4, 100);
        c.start_all();
        Fleet::running(c)
    }

    /// `c`, once all four validators are past height 1, with a runtime for SDK clients.
    fn running(c: Cluster) -> Fleet {
        c.wait_height(&[0, 1, 2, 3], 1, 2 * MIN);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Fleet { c, rt }
    }

    /// Four validators, each with its MQTT front door on its API port + 3, past height 1. Idle
    /// blocks every 400 ms, so "within one block" is a margin a loaded machine keeps.
    pub fn start_mqtt() -> Fleet {
        let mut c = Cluster::new(4, 400);
        for i in 0..4 {
            let addr = format!("127.0.0.1:{}", c.nodes[i].api_port + 3);
            c.start_with(i, &["--mqtt", &addr]);
        }
        Fleet::running(c)
    }

    /// Node `i`'s MQTT port (with [`Fleet::start_mqtt`]).
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.c.nodes[i].api_port + 3
    }

    pub fn api(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.c.nodes[i].api_port)
    }

    pub fn mesh(&self, i: usize) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            self.c.nodes[i].p2p_port, self.c.nodes[i].peer_id
        )
    }

    /// `--bootstrap` arguments for the given gateways, in order.
    pub fn gw(&self, nodes: &[usize]) -> Vec<String> {
        nodes
            .iter()
            .flat_map(|&i| [s("--bootstrap"), self.mesh(i)])
            .collect()
    }

    pub fn admin_key(&self) -> String {
        self.c
            .root
            .path()
            .join("admin.key")
            .to_string_lossy()
            .to_string()
    }

    /// Generates a device key and enrolls it through gateway 0 with the admin key.
    pub fn device(&self, name: &str, groups: &[&str]) -> Dev {
        let key = self.c.root.path().join(format!("{name}.key"));
        let out = cli(&[
            s("device"),
            s("keygen"),
            s("--out"),
            key.to_string_lossy().to_string(),
        ])
        .unwrap();
        let id = out["device_id"].as_str().unwrap().to_string();
        let mut args = vec![
            s("device"),
            s("enroll"),
            s("--api"),
            self.api(0),
            s("--admin-key"),
            self.admin_key(),
            s("--device-key"),
            key.to_string_lossy().to_string(),
        ];
        for g in groups {
            args.push(s("--group"));
            args.push(s(g));
        }
        let r = cli(&args).unwrap_or_else(|e| panic!("enroll {name}: {e}"));
        assert!(r["height"].as_u64().unwrap() > 0);
        let kp = meshward_sdk::keyfile::load(&key, meshward_sdk::keyfile::KeyKind::Device).unwrap();
        Dev {
            key,
            pk: PublicKey::from_peer_id(&id).unwrap(),
            id,
            kp,
        }
    }

    /// Starts `meshward device run` for `dev` with the given gateways.
    pub fn agent(&self, dev: &Dev, nodes: &[usize]) -> Agent {
        let log = self.c.root.path().join(format!("{}.agent.log", dev.id));
        let mut cmd = meshward();
        cmd.args(["device", "run", "--key"])
            .arg(&dev.key)
            .args(self.gw(nodes))
            .args(["--poll-ms", "200"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l2.lock().unwrap().push(v);
                }
            }
        });
        Agent { child, lines, log }
    }

    /// An SDK client with `kp`'s identity, or the fleet admin's (a member of the mesh, which
    /// admits only members, and not a device of the test), connected to the given gateways.
    pub fn client(&self, kp: Option<Keypair>, nodes: &[usize]) -> Client {
        let kp = kp.unwrap_or_else(|| self.c.admin.clone());
        let addrs = nodes
            .iter()
            .map(|&i| self.mesh(i).parse().unwrap())
            .collect();
        let cfg = ClientConfig::new(Some(self.c.genesis.chain_id.clone()), addrs);
        self.rt
            .block_on(Client::start(DeviceIdentity::new(kp), cfg))
            .unwrap()
    }

    /// Whether node `i` refuses a mesh connection from `kp`: either the dial fails, or the
    /// connection is closed before a request is answered.
    pub fn refuses(&self, i: usize, kp: &Keypair) -> bool {
        let client = self.client(Some(kp.clone()), &[]);
        let addr: meshward_net::Multiaddr = self.mesh(i).parse().unwrap();
        let dialed = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), client.net().dial(addr)).await
        });
        let refused = match dialed {
            Ok(Ok(_)) => {
                let peer = meshward_net::peer_id_of(
                    &PublicKey::from_peer_id(&self.c.nodes[i].peer_id).unwrap(),
                );
                self.rt
                    .block_on(client.request_peer(peer, &meshward_core::rpc::Request::Info))
                    .is_err()
            }
            _ => true,
        };
        self.rt.block_on(client.shutdown());
        refused
    }

    /// Waits until some gateway knows where `dev` listens (its agent is connected).
    pub fn wait_online(&self, dev: &Dev, nodes: &[usize]) {
        let client = self.client(None, nodes);
        let deadline = std::time::Instant::now() + MIN;
        wait_for(
            "the device to be reachable",
            MIN + Duration::from_secs(1),
            || {
                if std::time::Instant::now() > deadline {
                    let log = self.c.root.path().join(format!("{}.agent.log", dev.id));
                    eprintln!(
                        "agent log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                    eprintln!("node0 log:\n{}", self.c.log(0));
                    panic!("device {} never became reachable", dev.id);
                }
                let info = self.rt.block_on(client.lookup(&dev.pk)).ok()??;
                (!info.addrs.is_empty()).then_some(())
            },
        );
        self.rt.block_on(client.shutdown());
    }

    /// `meshward send` from `from` to `to` through `nodes`.
    pub fn send(&self, from: &Dev, to: &str, msg: &str, nodes: &[usize]) -> Result<Value, String> {
        self.send_with(from, to, msg, nodes, &[])
    }

    /// [`Fleet::send`] with more `meshward send` options (`--session`, `--keep DIR`).
    pub fn send_with(
        &self,
        from: &Dev,
        to: &str,
        msg: &str,
        nodes: &[usize],
        extra: &[String],
    ) -> Result<Value, String> {
        let mut args = vec![
            s("send"),
            s("--key"),
            from.key.to_string_lossy().to_string(),
            s("--to"),
            s(to),
            s("--message"),
            s(msg),
            s("--wait-final"),
            s("--timeout"),
            s("60"),
        ];
        args.extend_from_slice(extra);
        args.extend(self.gw(nodes));
        cli(&args)
    }

    pub fn device_json(&self, i: usize, id: &str) -> Option<Value> {
        let r = meshward_testkit::http(
            self.c.nodes[i].api_port,
            "GET",
            &format!("/v1/devices/{id}"),
            &[],
            b"",
        )?;
        (r.status == 200).then(|| r.json())
    }
}

impl Fleet {
    /// How many envelopes wait for `dev` in gateway `i`'s mailbox, read over the HTTP API with
    /// a signed challenge (so the device's own agent keeps its mesh identity to itself).
    pub fn mailbox_len(&self, i: usize, dev: &Dev) -> Option<usize> {
        let port = self.c.nodes[i].api_port;
        let ch = meshward_testkit::http(
            port,
            "POST",
            "/v1/challenge",
            &[("Content-Type", "application/json")],
            b"{}",
        )?;
        let nonce_hex = ch.json()["nonce"].as_str()?.to_string();
        let nonce: [u8; 32] = meshward_core::hex::decode(&nonce_hex)?.try_into().ok()?;
        let sig = meshward_core::auth::sign_challenge(
            &dev.kp.sign,
            &self.c.genesis.chain_id,
            &dev.pk,
            &nonce,
            "mailbox/fetch",
        );
        let body = serde_json::json!({
            "device": dev.id,
            "nonce": nonce_hex,
            "signature": meshward_core::hex::encode(&sig.0),
        })
        .to_string();
        let r = meshward_testkit::http(
            port,
            "POST",
            "/v1/mailbox/fetch",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )?;
        (r.status == 200).then(|| r.json()["envelopes"].as_array().map(|a| a.len()))?
    }
}

impl Fleet {
    /// `meshward proof` of `commitment` through node `i`, then `meshward verify` against the
    /// genesis: the verifier's JSON.
    pub fn proof_verifies(&self, i: usize, commitment: &str) -> Value {
        let out = self.c.root.path().join(format!("{commitment}.proof.json"));
        cli(&[
            s("proof"),
            s("--api"),
            self.api(i),
            s(commitment),
            s("--out"),
            out.to_string_lossy().to_string(),
        ])
        .unwrap();
        cli(&[
            s("verify"),
            s("--genesis"),
            self.c.genesis_path.to_string_lossy().to_string(),
            out.to_string_lossy().to_string(),
        ])
        .unwrap()
    }

    /// The first file under any gateway's data dir that holds `needle`.
    pub fn on_disk(&self, needle: &[u8]) -> Option<PathBuf> {
        fn walk(dir: &std::path::Path, needle: &[u8]) -> Option<PathBuf> {
            for e in std::fs::read_dir(dir).ok()? {
                let p = e.ok()?.path();
                if p.is_dir() {
                    if let Some(hit) = walk(&p, needle) {
                        return Some(hit);
                    }
                } else if std::fs::read(&p)
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
                {
                    return Some(p);
                }
            }
            None
        }
        self.c.nodes.iter().find_map(|n| walk(&n.dir, needle))
    }
}

impl Fleet {
    /// `meshward device revoke` of `id` through node `i` with the admin key: the CLI's JSON.
    pub fn revoke(&self, i: usize, id: &str) -> Value {
        cli(&[
            s("device"),
            s("revoke"),
            s("--api"),
            self.api(i),
            s("--admin-key"),
            self.admin_key(),
            s(id),
        ])
        .unwrap()
    }
}
