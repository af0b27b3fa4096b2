//! `meshward devnet`: a whole fleet on one machine. Creates (or resumes) admin keys, node data
//! dirs and a genesis, starts every validator as its own `meshward node run` process on
//! 127.0.0.1, prints a live summary, and stops every child on Ctrl-C or SIGTERM.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_core::genesis::Genesis;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_node::keyfile::{self, KeyKind};
use serde::{Deserialize, Serialize};

use crate::http;

pub const DEVNET_FILE: &str = "devnet.json";
const CHAIN_ID: &str = "devnet";

#[derive(Serialize, Deserialize, Clone)]
pub struct DevnetFile {
    pub chain_id: String,
    pub genesis: PathBuf,
    pub admin_keys: Vec<PathBuf>,
    pub nodes: Vec<DevnetNode>,
    /// The simulated devices of `--devices N`: key files and ids.
    #[serde(default)]
    pub devices: Vec<crate::fleetsim::DevnetDevice>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct DevnetNode {
    pub name: String,
    pub dir: PathBuf,
    pub api: String,
    pub token_file: PathBuf,
    pub p2p: String,
    pub peer_id: String,
    pub pid: Option<u32>,
}

pub struct Options {
    pub dir: Option<PathBuf>,
    pub validators: usize,
    pub base_port: u16,
    /// Simulated devices exchanging messages (0: none).
    pub devices: usize,
    /// Their messages per second, in total (0: as fast as they can).
    pub device_rate: f64,
}

/// Ports of node `i`: API, mesh, and consensus (mesh + 1).
fn ports(base: u16, i: usize) -> Result<(u16, u16)> {
    let off = u16::try_from(i * 10).context("too many validators")?;
    let api = base.checked_add(off).context("--base-port too high")?;
    let p2p = api.checked_add(1).context("--base-port too high")?;
    p2p.checked_add(1).context("--base-port too high")?;
    Ok((api, p2p))
}

pub(crate) fn create(dir: &Path, validators: usize, base_port: u16) -> Result<DevnetFile> {
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
        });
    }
    let genesis = Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: crate::now_ms(),
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

fn write_file(dir: &Path, f: &DevnetFile) -> Result<()> {
    let path = dir.join(DEVNET_FILE);
    let tmp = dir.join(format!("{DEVNET_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_string_pretty(f)? + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn spawn_node(f: &DevnetFile, i: usize) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the meshward binary")?;
    let n = &f.nodes[i];
    let log_path = n.dir.join("node.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node")
        .arg("run")
        .arg("--dir")
        .arg(&n.dir)
        .arg("--genesis")
        .arg(&f.genesis);
    for (j, other) in f.nodes.iter().enumerate() {
        if j != i {
            cmd.arg("--bootstrap")
                .arg(format!("{}/p2p/{}", other.p2p, other.peer_id));
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", n.name))
}

/// Sends SIGTERM, waits up to `grace` for every child, then SIGKILLs what is left.
pub fn stop_children(children: &mut [Child], grace: Duration) {
    for c in children.iter() {
        send_signal(c.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}

/// Sends `sig` to a child process. std only offers SIGKILL; a node needs SIGTERM to shut down
/// cleanly.
fn send_signal(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes no pointers; `pid` is a child we spawned and have not reaped,
        // so it cannot name an unrelated process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

struct Sample {
    at: Instant,
    height: u64,
    txs: f64,
}

fn finalized_txs(api: &str) -> Option<f64> {
    let r = http::request(
        "GET",
        api,
        "/metrics",
        None,
        None,
        Duration::from_millis(500),
    )
    .ok()?;
    let text = String::from_utf8(r.body).ok()?;
    text.lines()
        .find(|l| l.starts_with("meshward_chain_finalized_txs_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn run(opts: Options, json: bool) -> Result<()> {
    let dir = match opts.dir {
        Some(d) => d,
        None => {
            let d = tempfile::Builder::new()
                .prefix("meshward-devnet-")
                .tempdir()
                .context("cannot create a temp dir")?
                .keep();
            eprintln!("devnet directory: {} (not deleted on exit)", d.display());
            d
        }
    };
    let mut file = if dir.join(DEVNET_FILE).exists() {
        let text = fs::read_to_string(dir.join(DEVNET_FILE))?;
        let f: DevnetFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a devnet file", dir.join(DEVNET_FILE).display()))?;
        eprintln!("resuming the devnet in {}", dir.display());
        f
    } else {
        if dir.exists() && fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} is not empty and holds no {DEVNET_FILE}; use an empty or new directory",
                dir.display()
            );
        }
        create(&dir, opts.validators, opts.base_port)?
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle signals")?;
    }

    let mut children = Vec::new();
    for i in 0..file.nodes.len() {
        match spawn_node(&file, i) {
            Ok(c) => {
                file.nodes[i].pid = Some(c.id());
                children.push(c);
            }
            Err(e) => {
                stop_children(&mut children, Duration::from_secs(5));
                return Err(e);
            }
        }
    }
    let stats = Arc::new(crate::fleetsim::FleetStats::default());
    let mut fleet = None;
    if opts.devices > 0 {
        file.devices = crate::fleetsim::ensure_keys(&dir, opts.devices)?;
        let (f, d, r, st, sx) = (
            file.clone(),
            file.devices.clone(),
            opts.device_rate,
            stop.clone(),
            stats.clone(),
        );
        fleet = Some(std::thread::spawn(move || {
            crate::fleetsim::run(f, d, r, st, sx)
        }));
        eprintln!(
            "{} simulated devices (keys in {}), {} messages/s in total",
            opts.devices,
            dir.join("devices").display(),
            opts.device_rate
        );
    }
    write_file(&dir, &file)?;
    eprintln!(
        "devnet {}: {} validators; APIs {}; logs in <node dir>/node.log; Ctrl-C stops it",
        file.chain_id,
        file.nodes.len(),
        file.nodes
            .iter()
            .map(|n| n.api.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let tty = std::io::stdout().is_terminal() && !json;
    let mut first: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                result = Err(anyhow::anyhow!(
                    "{} exited with {status}; see {}",
                    file.nodes[i].name,
                    file.nodes[i].dir.join("node.log").display()
                ));
            }
        }
        if result.is_err() {
            break;
        }
        let statuses: Vec<Option<serde_json::Value>> = file
            .nodes
            .iter()
            .map(|n| http::get_json(&n.api, "/v1/status", Duration::from_millis(500)).ok())
            .collect();
        let up = statuses.iter().flatten().count();
        let height = statuses
            .iter()
            .flatten()
            .filter_map(|s| s["height"].as_u64())
            .max()
            .unwrap_or(0);
        let peers = statuses
            .iter()
            .flatten()
            .filter_map(|s| s["peers"].as_u64())
            .min()
            .unwrap_or(0);
        let txs = file
            .nodes
            .iter()
            .find_map(|n| finalized_txs(&n.api))
            .unwrap_or(0.0);
        let now = Sample {
            at: Instant::now(),
            height,
            txs,
        };
        let (bps, tps) = match &last {
            Some(p) if now.at > p.at => {
                let dt = now.at.duration_since(p.at).as_secs_f64();
                (
                    (now.height.saturating_sub(p.height)) as f64 / dt,
                    (now.txs - p.txs).max(0.0) / dt,
                )
            }
            _ => (0.0, 0.0),
        };
        let (sent, received, failed) = (
            stats.sent.load(Ordering::Relaxed),
            stats.received.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
        );
        if fleet.as_ref().is_some_and(|h| h.is_finished()) {
            let outcome = fleet.take().map(|h| h.join());
            result = match outcome {
                Some(Ok(Err(e))) => Err(e.context("the simulated fleet stopped")),
                Some(Err(_)) => Err(anyhow::anyhow!("the simulated fleet panicked")),
                _ => Ok(()),
            };
            if result.is_err() {
                break;
            }
        }
        if json {
            println!(
                "{}",
                serde_json::json!({"height": height, "blocks_per_s": bps, "txs_per_s": tps, "peers": peers, "nodes_up": up,
                    "devices": file.devices.len(), "messages_sent": sent, "messages_received": received, "send_failures": failed})
            );
        } else {
            let fleet_part = if file.devices.is_empty() {
                String::new()
            } else {
                format!(
                    "  devices {}  msgs sent {sent} received {received} failed {failed}",
                    file.devices.len()
                )
            };
            let line = format!(
                "height {height:>7}  blocks/s {bps:>6.1}  tx/s {tps:>8.1}  peers {peers}  nodes up {up}/{}{fleet_part}",
                file.nodes.len()
            );
            if tty {
                print!("\r{line}  ");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
        if first.is_none() {
            first = Some(Sample {
                at: now.at,
                height: now.height,
                txs: now.txs,
            });
        }
        last = Some(now);
        // Sleep in small steps so Ctrl-C is honoured quickly.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if tty {
        println!();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = fleet {
        match h.join() {
            Ok(Err(e)) => eprintln!("simulated fleet: {e:#}"),
            Err(_) => eprintln!("simulated fleet: panicked"),
            Ok(Ok(())) => {}
        }
    }
    eprintln!("stopping {} nodes", children.len());
    stop_children(&mut children, Duration::from_secs(10));
    for n in &mut file.nodes {
        n.pid = None;
    }
    write_file(&dir, &file)?;
    if let (Some(f), Some(l)) = (first, last) {
        eprintln!(
            "devnet stopped at height {} ({} blocks this run); resume with meshward devnet --dir {}",
            l.height,
            l.height.saturating_sub(f.height),
            dir.display()
        );
    }
    result
}
