//! `scale` part: how costs grow on this machine.
//!
//! - Validators: peak throughput and finality at 50% of it with 4, 7 and 10 validators, each a
//!   fresh devnet of `meshward node run` processes (see [`crate::consensus`]).
//! - Devices: for 1k, 10k and 100k enrolled devices, `meshward store synth` (a child process)
//!   writes a real signed chain that enrolls them (in groups of at most 1024, the most a group
//!   can be rekeyed for), then a run of anchors; from it come the bytes
//!   on disk per anchor (store growth over the anchors ÷ their number) and the size of an
//!   anchor's proof file. Then four real validators start on copies of that store, with the
//!   synthetic chain's validator keys, finalise new blocks under anchor load and enroll more
//!   devices; their resident memory (VmRSS from `/proc/<pid>/status`) is read after that load.
//!
//! - Ledger costs ([`crate::ledger_cost`]): store bytes per message at a fleet's rate (20 devices,
//!   10 messages/s), bytes an idle validator writes per hour, and the time to open a store of
//!   1M anchors. From the validator curve: peak tx/s at 10 validators ÷ at 4, and the
//!   transactions still unconfirmed after the tail at 4, 7 and 10.
//!
//! `--quick` uses 1k and 10k devices and shorter phases; `quick: true` in the JSON says so, and
//! `rss_mb_100k_devices` and `store_open_ms_1m_anchors` stay null.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshward_core::ids::{EncSecret, Keypair, SignKey};
use meshward_core::light::ProofFile;
use meshward_core::state::StateView;
use meshward_node::{NODE_KEY_FILE, STORE_FILE};
use meshward_sdk::keyfile;
use meshward_store::synth::{synth_commitment, synth_groups, Synth, ENROLLS_PER_BLOCK};
use serde_json::{json, Value};

use meshward_devnet::{DevnetFile, DevnetNode};

use crate::consensus::{self, Cluster, Fleet, Load};
use crate::ledger_cost::{self, allocated_bytes};
use crate::{median, num, Exes, Outcome, Progress};

/// Anchors per synthetic block when measuring disk growth.
const ANCHORS_PER_BLOCK: usize = 256;
/// Devices (of the synthetic fleet) that offer anchor load to the live validators.
const LOAD_DEVICES: usize = 256;
/// Devices enrolled through the live validators, on top of the synthetic fleet.
const EXTRA_ENROLLS: usize = 200;

/// Resident memory of a process in MiB, from `/proc/<pid>/status`.
pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Runs `meshward <args> --json` and returns what it printed.
pub(crate) fn run_cli(exe: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(exe)
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run meshward {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "meshward {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("meshward {} printed no JSON", args.join(" ")))
}

/// The length of file `p`, in bytes.
fn file_len(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p)
        .with_context(|| format!("cannot stat {}", p.display()))?
        .len())
}

/// Writes a node key file holding the synthetic validator key `sign` (with a fresh X25519 key).
fn write_node_key(path: &Path, sign: &SignKey) -> Result<()> {
    let kp = Keypair {
        sign: SignKey::from_seed(&sign.seed()),
        enc: EncSecret::generate(&mut rand::rngs::OsRng),
    };
    if path.exists() {
        fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    Ok(keyfile::write(path, keyfile::KeyKind::Node, &kp, None)?)
}

/// One point of the device curve.
fn devices_point(
    n: usize,
    quick: bool,
    base_port: u16,
    exes: &Exes,
    p: &Progress,
) -> Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("meshward-bench-scale-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let synth_dir = dir.path().join("synth");
    let synth_store = synth_dir.join(STORE_FILE);
    let sd = synth_dir.to_string_lossy().to_string();

    p.step(format!("{n} devices: synthetic chain enrolling them"));
    let enroll_blocks = n.div_ceil(ENROLLS_PER_BLOCK).to_string();
    let v = run_cli(
        &exes.cli,
        &[
            "store",
            "synth",
            "--dir",
            &sd,
            "--devices",
            &n.to_string(),
            "--blocks",
            &enroll_blocks,
            "--anchors-per-block",
            "1",
        ],
    )?;
    let enroll_s = v["seconds"].as_f64().unwrap_or(f64::NAN);
    let size_enrolled = file_len(&synth_store)?;
    let used_enrolled = allocated_bytes(&synth_store)?;

    let anchor_blocks: usize = if quick { 10 } else { 40 };
    let anchors = anchor_blocks * ANCHORS_PER_BLOCK;
    p.step(format!(
        "{n} devices: synthetic chain with {anchors} anchors"
    ));
    let v = run_cli(
        &exes.cli,
        &[
            "store",
            "synth",
            "--dir",
            &sd,
            "--blocks",
            &anchor_blocks.to_string(),
            "--anchors-per-block",
            &ANCHORS_PER_BLOCK.to_string(),
        ],
    )?;
    let anchor_write_s = v["seconds"].as_f64().unwrap_or(f64::NAN);
    let size_anchored = file_len(&synth_store)?;
    let used_anchored = allocated_bytes(&synth_store)?;
    let disk_per_anchor = used_anchored.saturating_sub(used_enrolled) as f64 / anchors as f64;

    // Everything the live network needs from the synthetic fleet.
    let synth = Synth::open(&synth_dir)?;
    let store = synth.store();
    let genesis = store.genesis().clone();
    let tip = store.tip().map_or(0, |(h, _)| h);
    let first = synth.devices()[0].id();
    let proof = store
        .anchor_proof(&synth_commitment(&first, 1))?
        .context("the first synthetic anchor has a proof")?;
    let proof_file = ProofFile::new(&genesis.chain_id, &proof);
    let proof_bytes = proof_file.to_json().len() + 1;
    let state = store.state();
    // Members of one group, so the policy lets them send to each other.
    let load_devices: Vec<Keypair> = synth
        .devices()
        .iter()
        .step_by(synth_groups(synth.devices().len()))
        .take(LOAD_DEVICES)
        .cloned()
        .collect();
    let seqs = load_devices
        .iter()
        .map(|d| state.account(&d.id()).map_or(1, |a| a.seq + 1))
        .collect();
    let admin = SignKey::from_seed(&synth.admin().seed());
    let admin_seq = state.account(&admin.public()).map_or(1, |a| a.seq + 1);
    let validators: Vec<SignKey> = synth
        .validators()
        .iter()
        .map(|v| SignKey::from_seed(&v.seed()))
        .collect();
    drop(synth);

    p.step(format!("{n} devices: starting 4 validators on the chain"));
    let net = dir.path().join("net");
    fs::create_dir_all(&net)?;
    let genesis_path = net.join("genesis.json");
    fs::write(&genesis_path, genesis.to_json() + "\n")?;
    let mut nodes = Vec::new();
    for (i, v) in validators.iter().enumerate() {
        let api = base_port + 10 * i as u16;
        let (api_addr, p2p) = (
            format!("127.0.0.1:{api}"),
            format!("/ip4/127.0.0.1/tcp/{}", api + 1),
        );
        let nd = net.join(format!("node{i}"));
        let r = meshward_node::init_data_dir(&nd, &api_addr, &p2p, false)?;
        write_node_key(&nd.join(NODE_KEY_FILE), v)?;
        fs::copy(&synth_store, nd.join(STORE_FILE))
            .with_context(|| format!("cannot copy the synthetic store to {}", nd.display()))?;
        nodes.push(DevnetNode {
            name: format!("node{i}"),
            dir: nd,
            api: format!("http://{api_addr}"),
            token_file: r.token_file,
            p2p,
            peer_id: v.public().peer_id(),
            pid: None,
            byzantine: None,
            mqtt: None,
        });
    }
    let file = DevnetFile {
        chain_id: genesis.chain_id.clone(),
        genesis: genesis_path,
        admin_keys: Vec::new(),
        nodes,
        devices: Vec::new(),
    };
    let mut c = Cluster::launch(file, &net, exes)?;
    c.wait_height(tip + 2, Duration::from_secs(180))?;
    let rss_idle: Vec<f64> = (0..4).filter_map(|i| c.pid(i).and_then(rss_mb)).collect();

    let secs = if quick { 3.0 } else { 8.0 };
    p.step(format!("{n} devices: anchor load for {secs} s"));
    let mut fleet = Fleet {
        devices: load_devices,
        seqs,
    };
    let phase = consensus::run_phase(
        &mut c,
        &mut fleet,
        &Load {
            secs,
            rate: None,
            clients: 1,
            record: false,
            kill: None,
        },
        p,
    )?;
    c.drain(p);
    p.step(format!("{n} devices: enrolling {EXTRA_ENROLLS} more"));
    let (_, enroll_live_s) = consensus::enroll(&c, &admin, admin_seq, EXTRA_ENROLLS, "extra")?;
    let rss: Vec<f64> = (0..4).filter_map(|i| c.pid(i).and_then(rss_mb)).collect();
    drop(c);
    if std::env::var_os("MESHWARD_BENCH_KEEP").is_some() {
        p.note(format!("kept {}", dir.keep().display()));
    }
    let max_rss = rss.iter().copied().fold(f64::NAN, f64::max);
    p.note(format!(
        "{n} devices: validator RSS {max_rss:.0} MiB (max of 4), {disk_per_anchor:.0} B/anchor on disk, proof {proof_bytes} B, {:.0} anchor tx/s",
        phase.txs_per_s
    ));
    Ok(json!({
        "devices": n,
        "synth_enroll_seconds": num(enroll_s),
        "synth_anchor_seconds": num(anchor_write_s),
        "store_file_bytes_enrolled": size_enrolled,
        "store_file_bytes_anchored": size_anchored,
        "store_used_bytes_enrolled": used_enrolled,
        "store_used_bytes_anchored": used_anchored,
        "anchors_written": anchors,
        "disk_bytes_per_anchor": disk_per_anchor,
        "proof_bytes": proof_bytes,
        "rss_mb_idle": rss_idle,
        "rss_mb": rss,
        "rss_mb_max": num(max_rss),
        "rss_mb_median": num(median(&rss)),
        "anchor_tx_per_s": phase.txs_per_s,
        "live_enroll_tx_per_s": EXTRA_ENROLLS as f64 / enroll_live_s,
    }))
}

/// Runs the `scale` part: the validator curve from `base_port`, then the device curve.
pub(crate) fn run(quick: bool, base_port: u16, exes: &Exes, p: &Progress) -> Result<Outcome> {
    let validator_counts = [4usize, 7, 10];
    let device_counts: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let mut validators = Vec::new();
    let mut errors = Vec::new();
    // Each cluster gets its own port range: 10 ports per node, 120 per cluster.
    for (k, &n) in validator_counts.iter().enumerate() {
        match consensus::validators_point(n, quick, base_port + 120 * k as u16, exes, p) {
            Ok(v) => validators.push(v),
            Err(e) => {
                p.note(format!("{n} validators failed: {e:#}"));
                errors.push(format!("{n} validators: {e:#}"));
            }
        }
    }
    let mut devices = Vec::new();
    for (k, &n) in device_counts.iter().enumerate() {
        match devices_point(n, quick, base_port + 400 + 50 * k as u16, exes, p) {
            Ok(v) => devices.push(v),
            Err(e) => {
                p.note(format!("{n} devices failed: {e:#}"));
                errors.push(format!("{n} devices: {e:#}"));
            }
        }
    }
    let mut point = |name: &str, r: Result<Value>| match r {
        Ok(v) => Some(v),
        Err(e) => {
            p.note(format!("{name} failed: {e:#}"));
            errors.push(format!("{name}: {e:#}"));
            None
        }
    };
    let fleet_rate = point(
        "fleet rate",
        ledger_cost::fleet_rate_point(quick, base_port + 600, exes, p),
    );
    let idle = point(
        "idle chain",
        ledger_cost::idle_point(quick, base_port + 650, exes, p),
    );
    let open = point("store open", ledger_cost::open_point(quick, exes, p));
    if validators.is_empty() && devices.is_empty() {
        bail!("every scale point failed: {}", errors.join("; "));
    }
    let at = |n: usize, key: &str| {
        validators
            .iter()
            .find(|v| v["validators"] == n)
            .map_or(Value::Null, |v| v[key].clone())
    };
    let tx_10_vs_4 = match (
        at(10, "peak_anchor_tx_per_s").as_f64(),
        at(4, "peak_anchor_tx_per_s").as_f64(),
    ) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let field = |v: &Option<Value>, k: &str| v.as_ref().map_or(Value::Null, |v| v[k].clone());
    let at_100k = devices
        .iter()
        .find(|d| d["devices"] == 100_000)
        .map_or(Value::Null, |d| d["rss_mb_max"].clone());
    // Bytes per anchor hardly depend on the fleet's size; the largest fleet's figure is used.
    let disk = devices
        .last()
        .map_or(Value::Null, |d| d["disk_bytes_per_anchor"].clone());
    let proof = devices
        .last()
        .map_or(Value::Null, |d| d["proof_bytes"].clone());
    Ok(Outcome::Done(json!({
        "quick": quick,
        "note": if quick { "quick mode: 1k and 10k devices only, short phases; rss_mb_100k_devices not measured" } else { "" },
        "validators": validators,
        "devices": devices,
        "rss_mb_100k_devices": at_100k,
        "disk_bytes_per_anchor": disk,
        "proof_bytes": proof,
        "validators_10_vs_4": tx_10_vs_4,
        "unconfirmed_after_tail": {
            "4": at(4, "peak_unconfirmed_after_tail"),
            "7": at(7, "peak_unconfirmed_after_tail"),
            "10": at(10, "peak_unconfirmed_after_tail"),
        },
        "disk_bytes_per_message_fleet_rate": field(&fleet_rate, "bytes_per_message"),
        "fleet_rate": fleet_rate,
        "idle_bytes_per_hour": field(&idle, "bytes_per_hour"),
        "idle": idle,
        "store_open_ms_1m_anchors": if quick { Value::Null } else { field(&open, "open_ms_median") },
        "store_open": open,
        "errors": errors,
    })))
}
