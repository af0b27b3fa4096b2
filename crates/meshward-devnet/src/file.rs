//! The devnet file (`devnet.json`) and the creation of a new devnet: admin key, node data dirs,
//! genesis.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use meshward_core::genesis::Genesis;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_sdk::keyfile::{self, KeyKind};
use serde::{Deserialize, Serialize};

use crate::fleetsim::DevnetDevice;

/// The devnet file's name inside the devnet directory.
pub const DEVNET_FILE: &str = "devnet.json";
/// The chain id of every devnet.
const CHAIN_ID: &str = "devnet";

/// `devnet.json`: everything needed to resume a devnet (and for tools to find its nodes).
#[derive(Serialize, Deserialize, Clone)]
pub struct DevnetFile {
    /// The chain id (`devnet`).
    pub chain_id: String,
    /// The genesis file.
    pub genesis: PathBuf,
    /// The admin key files; the first one signs the simulated fleet's enrollments.
    pub admin_keys: Vec<PathBuf>,
    /// The validators, in order: node `i` uses the ports of [`create`]'s layout.
    pub nodes: Vec<DevnetNode>,
    /// The simulated devices of `--devices N`: key files and ids.
    #[serde(default)]
    pub devices: Vec<DevnetDevice>,
}

/// One validator of a devnet.
#[derive(Serialize, Deserialize, Clone)]
pub struct DevnetNode {
    /// `node0`, `node1`, …
    pub name: String,
    /// Its data directory (node key, token, config, store, `node.log`).
    pub dir: PathBuf,
    /// Its HTTP API, e.g. `http://127.0.0.1:27000`.
    pub api: String,
    /// The file holding its API bearer token.
    pub token_file: PathBuf,
    /// Its mesh listen address, e.g. `/ip4/127.0.0.1/tcp/27001`.
    pub p2p: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The node's process id while it runs; `None` while it is down or the devnet stopped.
    pub pid: Option<u32>,
    /// How this node misbehaves (`devnet --byzantine N:MODE`, a build with the `byzantine`
    /// feature): passed on as `node run --byzantine MODE` each time it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<String>,
    /// Its MQTT front door, e.g. `127.0.0.1:27003` (port P + 10i + 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
}

impl DevnetNode {
    /// The node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }
}

impl DevnetFile {
    /// Reads `<dir>/devnet.json`.
    pub fn load(dir: &Path) -> Result<DevnetFile> {
        let path = dir.join(DEVNET_FILE);
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a devnet file", path.display()))
    }

    /// Reads `<dir>/devnet.json`, changes it with `f` and writes it back, holding an exclusive
    /// lock (`devnet.json.lock`) throughout, so the running devnet and `meshward devnet
    /// kill|stop|start` never lose each other's changes. Returns what `f` returned.
    pub fn update<T>(dir: &Path, f: impl FnOnce(&mut DevnetFile) -> T) -> Result<T> {
        let lock_path = dir.join(format!("{DEVNET_FILE}.lock"));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let mut file = DevnetFile::load(dir)?;
        let out = f(&mut file);
        file.save(dir)?;
        // The lock goes with the file handle.
        drop(lock);
        Ok(out)
    }

    /// Writes `<dir>/devnet.json` atomically (a temp file, then a rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(DEVNET_FILE);
        let tmp = dir.join(format!("{DEVNET_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Ports of node `i`: API, mesh, consensus (mesh + 1) and MQTT (mesh + 2).
fn ports(base: u16, i: usize) -> Result<(u16, u16)> {
    let off = u16::try_from(i * 10).context("too many validators")?;
    let api = base.checked_add(off).context("--base-port too high")?;
    let p2p = api.checked_add(1).context("--base-port too high")?;
    p2p.checked_add(2).context("--base-port too high")?;
    Ok((api, p2p))
}

/// Creates a devnet of `validators` nodes in `dir`: an admin key (`admin.key`), one data dir
/// per node (`node<i>`, API on `base_port + 10i`, mesh on the next port, consensus on the one
/// after, MQTT on the one after that, mDNS off) and `genesis.json`. Returns the devnet file; it
/// is not written (the caller adds the process ids first).
pub fn create(dir: &Path, validators: usize, base_port: u16) -> Result<DevnetFile> {
    if !(1..=64).contains(&validators) {
        bail!("--validators must be between 1 and 64, not {validators}");
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let admin_path = dir.join("admin.key");
    let admin = keyfile::generate(&admin_path, KeyKind::Admin)?;
    let mut nodes = Vec::new();
    let mut vals = Vec::new();
    for i in 0..validators {
        let (api, p2p) = ports(base_port, i)?;
        let name = format!("node{i}");
        let nd = dir.join(&name);
        let api_addr = format!("127.0.0.1:{api}");
        let p2p_addr = format!("/ip4/127.0.0.1/tcp/{p2p}");
        // mDNS stays off: a devnet lives on the loopback interface.
        let r = meshward_node::init_data_dir(&nd, &api_addr, &p2p_addr, false)?;
        // The console's actions (revoke, tickets) sign with the devnet's one admin key.
        let mut cfg = fs::read_to_string(&r.config)
            .with_context(|| format!("cannot read {}", r.config.display()))?;
        let admin_abs = fs::canonicalize(&admin_path)
            .with_context(|| format!("cannot resolve {}", admin_path.display()))?;
        cfg.push_str(&format!(
            "# The devnet's admin key, for the console's token-authenticated actions.\nadmin_key = {:?}\n",
            admin_abs.display().to_string()
        ));
        // The MQTT front door, on the loopback interface like everything else.
        let mqtt_addr = format!("127.0.0.1:{}", p2p + 2);
        cfg.push_str(&format!("mqtt = {mqtt_addr:?}\n"));
        fs::write(&r.config, cfg)
            .with_context(|| format!("cannot write {}", r.config.display()))?;
        let kp = keyfile::load(&r.node_key, KeyKind::Node)?;
        vals.push(Validator {
            key: kp.id(),
            power: 1,
        });
        nodes.push(DevnetNode {
            name,
            dir: nd,
            api: format!("http://{api_addr}"),
            token_file: r.token_file,
            p2p: p2p_addr,
            peer_id: r.peer_id,
            pid: None,
            byzantine: None,
            mqtt: Some(mqtt_addr),
        });
    }
    let genesis = Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: meshward_core::clock::now_ms(),
        admins: AdminSet::new(vec![admin.id()], 1).context("one admin key is a valid set")?,
        validators: ValidatorSet::new(vals).context("fresh node keys are distinct")?,
    };
    let genesis_path = dir.join("genesis.json");
    fs::write(&genesis_path, genesis.to_json() + "\n")
        .with_context(|| format!("cannot write {}", genesis_path.display()))?;
    Ok(DevnetFile {
        chain_id: CHAIN_ID.into(),
        genesis: genesis_path,
        admin_keys: vec![admin_path],
        nodes,
        devices: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_step_by_ten_and_refuse_to_overflow() {
        assert_eq!(ports(27000, 0).unwrap(), (27000, 27001));
        assert_eq!(ports(27000, 3).unwrap(), (27030, 27031));
        assert!(ports(u16::MAX - 1, 0).is_err());
        assert!(ports(65000, 60).is_err());
    }

    #[test]
    fn a_created_devnet_round_trips_through_its_file() {
        let t = tempfile::tempdir().unwrap();
        let f = create(t.path(), 2, 27000).unwrap();
        assert_eq!(f.chain_id, "devnet");
        assert_eq!(f.nodes.len(), 2);
        assert_eq!(f.nodes[1].api, "http://127.0.0.1:27010");
        assert_eq!(f.nodes[1].p2p, "/ip4/127.0.0.1/tcp/27011");
        let genesis = fs::read_to_string(&f.genesis).unwrap();
        assert_eq!(
            Genesis::from_json(&genesis)
                .unwrap()
                .validators
                .validators
                .len(),
            2
        );
        f.save(t.path()).unwrap();
        let back = DevnetFile::load(t.path()).unwrap();
        assert_eq!(back.nodes[0].peer_id, f.nodes[0].peer_id);
        assert!(back.devices.is_empty());
        assert!(create(t.path(), 0, 27000).is_err());
    }
}
