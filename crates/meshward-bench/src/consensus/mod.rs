//! `consensus` part: validators as separate `meshward node run` processes on 127.0.0.1, loaded
//! by separate `meshward bench client` processes that submit signed anchors in batches over the
//! HTTP API.
//!
//! One run measures:
//! - peak finalised throughput with every validator up (clients send back to back);
//! - submit-to-final latency at fractions of that peak (paced clients), 50% being the headline;
//! - a failure run: peak load, validator 3 SIGKILLed a third of the way in, throughput over
//!   time; `one_down_ratio` is throughput after the kill divided by the healthy peak.
//!
//! Each anchor stands for a batch of [`ENVELOPES_PER_ANCHOR`] envelopes (its `count`), so the
//! finalised message rate is the sum of `count` over finalised anchors per second.
//!
//! Latency runs from just before a client sends the batch holding a transaction to the moment a
//! watcher, polling the chain every 5 ms, sees the block that includes it (both on the wall
//! clock), so it overstates finality by up to one poll interval.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_core::codec::{Encode, Writer};
use meshward_core::ids::{Keypair, PublicKey, SignKey};
use meshward_core::tx::{enroll_body, GroupName, Tx};
use meshward_node::keyfile::{self, KeyKind};
use serde_json::{json, Value};

use super::client::{ClientDevice, ClientReport, ClientSpec};
use super::{now_us, num, percentile, Outcome, Progress};
use crate::devnet::{self, DevnetFile};
use crate::http;

/// Envelopes each benchmark anchor stands for: the most a device batches into one root.
pub const ENVELOPES_PER_ANCHOR: u32 = 64;
/// Devices enrolled for the load.
const DEVICES: usize = 512;
/// Load-generating processes at peak load.
const PEAK_CLIENTS: usize = 2;
/// Seconds the watcher keeps looking after the load stops, for latency tails.
const TAIL_SECS: f64 = 2.0;
/// Width of one bar of the throughput-over-time series.
const BIN_SECS: f64 = 0.5;

/// Validators running as child processes; every one still running is stopped on drop.
pub struct Cluster {
    pub file: DevnetFile,
    children: Vec<Option<Child>>,
    tokens: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut live: Vec<Child> = self.children.iter_mut().filter_map(|c| c.take()).collect();
        devnet::stop_children(&mut live, Duration::from_secs(5));
    }
}

impl Cluster {
    /// Creates a devnet of `n` validators in `dir` and starts it.
    pub fn create(dir: &Path, n: usize, base_port: u16) -> Result<Cluster> {
        let file = devnet::create(dir, n, base_port)?;
        let mut c = Cluster::launch(file, dir)?;
        c.wait_height(2, Duration::from_secs(90))?;
        Ok(c)
    }

    /// Starts every node of `file` (their data dirs must exist).
    pub fn launch(file: DevnetFile, dir: &Path) -> Result<Cluster> {
        let mut tokens = Vec::new();
        for n in &file.nodes {
            tokens.push(
                fs::read_to_string(&n.token_file)
                    .with_context(|| format!("cannot read {}", n.token_file.display()))?
                    .trim()
                    .to_string(),
            );
        }
        let mut c = Cluster {
            children: Vec::new(),
            tokens,
            dir: dir.to_path_buf(),
            file,
        };
        for i in 0..c.file.nodes.len() {
            let child = devnet::spawn_node(&c.file, i)?;
            c.children.push(Some(child));
        }
        Ok(c)
    }

    /// Waits until every node reports at least `height`.
    pub fn wait_height(&mut self, height: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !(0..self.file.nodes.len()).all(|i| self.height(i).is_some_and(|h| h >= height)) {
            if Instant::now() > deadline {
                bail!(
                    "the {} bench validators did not reach height {height} within {} s (node logs: {}/node*/node.log)",
                    self.file.nodes.len(),
                    timeout.as_secs(),
                    self.dir.display()
                );
            }
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = c.as_mut().map(|c| c.try_wait()) {
                    let log = self.file.nodes[i].dir.join("node.log");
                    bail!(
                        "bench validator {i} exited ({status}); see {}",
                        log.display()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn alive(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| self.children[i].is_some())
            .collect()
    }

    pub fn api(&self, i: usize) -> &str {
        &self.file.nodes[i].api
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(|c| c.id())
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn height(&self, i: usize) -> Option<u64> {
        http::get_json(self.api(i), "/v1/status", Duration::from_secs(1)).ok()?["height"].as_u64()
    }

    fn tip(&self) -> u64 {
        self.alive()
            .iter()
            .filter_map(|&i| self.height(i))
            .max()
            .unwrap_or(0)
    }

    fn post_batch(&self, node: usize, txs: &[Tx]) -> Result<Value> {
        let mut w = Writer::new();
        w.len(txs.len());
        for t in txs {
            w.bytes(&t.to_bytes());
        }
        http::request(
            "POST",
            self.api(node),
            "/v1/txs",
            Some(&self.tokens[node]),
            Some(("application/octet-stream", &w.into_bytes())),
            Duration::from_secs(10),
        )?
        .json()
    }

    /// Waits (up to a minute) until every live node's mempool is empty, so that a phase
    /// measures its own load and not the backlog of the one before.
    pub fn drain(&self, p: &Progress) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let pending: u64 = self
                .alive()
                .iter()
                .filter_map(|&i| {
                    http::get_json(self.api(i), "/v1/status", Duration::from_secs(1)).ok()?
                        ["mempool_size"]
                        .as_u64()
                })
                .sum();
            if pending == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        p.note("mempools did not drain within 60 s");
    }
}

/// The devices that offer load, with each one's next sequence number.
pub struct Fleet {
    pub devices: Vec<Keypair>,
    pub seqs: Vec<u64>,
}

/// Enrolls `n` new devices, signed by `admin` from sequence number `first_seq`, and waits
/// until they are final. Returns the fleet and the seconds it took.
pub fn enroll(
    c: &Cluster,
    admin: &SignKey,
    first_seq: u64,
    n: usize,
    group: &str,
) -> Result<(Fleet, f64)> {
    let chain = &c.file.chain_id;
    let admin_id: PublicKey = admin.public();
    let devices: Vec<Keypair> = (0..n)
        .map(|_| Keypair::generate(&mut rand::rngs::OsRng))
        .collect();
    let group = GroupName::new(group).context("valid group name")?;
    let txs: Vec<Tx> = devices
        .iter()
        .zip(first_seq..)
        .map(|(d, seq)| {
            let body = enroll_body(chain, d, vec![group.clone()], None);
            Tx::sign(chain, admin_id, admin, seq, body)
        })
        .collect();
    let start = Instant::now();
    // The mempool holds at most 256 transactions per sender: enroll in chunks.
    for chunk in txs.chunks(200) {
        let node = c.alive()[0];
        let v = c.post_batch(node, chunk)?;
        if let Some(r) = v["rejected"].as_array().and_then(|r| r.first()) {
            bail!("an enrollment was refused: {r}");
        }
        let last = chunk.last().context("chunks are not empty")?.id().to_hex();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = http::get_json(
                c.api(node),
                &format!("/v1/tx/{last}"),
                Duration::from_secs(2),
            );
            if v.as_ref().is_ok_and(|v| v["status"] == "final") {
                break;
            }
            if Instant::now() > deadline {
                bail!("enrollments were not final within 60 s (last one: {v:?})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let seqs = vec![1u64; n];
    Ok((Fleet { devices, seqs }, secs))
}

/// A block the watcher saw: when (µs), transactions, envelopes.
#[derive(Clone, Copy)]
struct SeenBlock {
    at_us: u64,
    txs: u64,
    msgs: u64,
}

/// Polls the chain on live nodes and records when each block and transaction was first seen.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
    blocks: Arc<Mutex<Vec<SeenBlock>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(apis: Vec<String>, from: u64, record: bool) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let (s, se, bl) = (stop.clone(), seen.clone(), blocks.clone());
        let handle = std::thread::spawn(move || {
            let mut next = from + 1;
            while !s.load(Ordering::Relaxed) {
                let mut progressed = false;
                for api in &apis {
                    let Ok(v) =
                        http::get_json(api, &format!("/v1/blocks/{next}"), Duration::from_secs(2))
                    else {
                        continue;
                    };
                    let now = now_us();
                    let txs = v["txs"].as_array().cloned().unwrap_or_default();
                    let msgs = txs.iter().filter_map(|t| t["count"].as_u64()).sum();
                    if record {
                        let mut m = meshward_core::sync::lock(&se, "seen transactions");
                        for t in &txs {
                            if let Some(h) = t["id"].as_str() {
                                m.entry(h.to_string()).or_insert(now);
                            }
                        }
                    }
                    meshward_core::sync::lock(&bl, "seen blocks").push(SeenBlock {
                        at_us: now,
                        txs: txs.len() as u64,
                        msgs,
                    });
                    next += 1;
                    progressed = true;
                    break;
                }
                if !progressed {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Watcher {
            stop,
            seen,
            blocks,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (HashMap<String, u64>, Vec<SeenBlock>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let seen = std::mem::take(&mut *meshward_core::sync::lock(
            &self.seen,
            "seen transactions",
        ));
        let blocks = std::mem::take(&mut *meshward_core::sync::lock(&self.blocks, "seen blocks"));
        (seen, blocks)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The load one phase offers.
pub struct Load {
    pub secs: f64,
    /// Total transactions per second over all clients; `None`: as fast as the nodes take them.
    pub rate: Option<f64>,
    pub clients: usize,
    /// Record ids for latency.
    pub record: bool,
    /// SIGKILL this validator this many seconds into the phase.
    pub kill: Option<(usize, f64)>,
}

pub struct PhaseResult {
    pub txs_per_s: f64,
    pub msgs_per_s: f64,
    pub blocks_per_s: f64,
    /// p50, p99 in ms.
    pub latency_ms: Option<(f64, f64)>,
    pub sent: u64,
    pub accepted: u64,
    /// Accepted but not seen final before the watcher stopped.
    pub unconfirmed: u64,
    pub refused: BTreeMap<String, u64>,
    /// (seconds since the load started, finalised tx/s in that bin).
    pub series: Vec<(f64, f64)>,
    /// Throughput before and after the kill, when there was one.
    pub before_kill_txs_per_s: Option<f64>,
    pub after_kill_txs_per_s: Option<f64>,
}

/// Finalised transactions and envelopes per second among blocks seen in `[from, to)` µs.
fn rate_in(blocks: &[SeenBlock], from: u64, to: u64) -> (f64, f64, f64) {
    let secs = (to.saturating_sub(from)) as f64 / 1e6;
    if secs <= 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let inside = blocks.iter().filter(|b| b.at_us >= from && b.at_us < to);
    let (mut n, mut txs, mut msgs) = (0u64, 0u64, 0u64);
    for b in inside {
        n += 1;
        txs += b.txs;
        msgs += b.msgs;
    }
    (txs as f64 / secs, msgs as f64 / secs, n as f64 / secs)
}

/// Runs one phase of load from client processes and measures what the chain finalised.
pub fn run_phase(
    c: &mut Cluster,
    fleet: &mut Fleet,
    load: &Load,
    p: &Progress,
) -> Result<PhaseResult> {
    let exe = super::self_exe()?;
    let alive = c.alive();
    let apis: Vec<String> = alive.iter().map(|&i| c.api(i).to_string()).collect();
    let tokens: Vec<String> = alive.iter().map(|&i| c.tokens[i].clone()).collect();
    let watcher = Watcher::start(apis.clone(), c.tip(), load.record);
    let n_clients = load.clients.clamp(1, fleet.devices.len() / 2);
    let per = fleet.devices.len() / n_clients;
    // At a set rate, about 50 posts a second per client: each post waits for its answer, so
    // small batches at a high rate would cap the load below what was asked.
    let batch = match load.rate {
        Some(r) => ((r / n_clients as f64 / 50.0) as usize).clamp(20, 500),
        None => 500,
    };
    let mut children = Vec::new();
    let t0 = now_us();
    for k in 0..n_clients {
        let range = k * per..(k + 1) * per;
        // Each client starts on a different node.
        let mut a = apis.clone();
        let mut t = tokens.clone();
        a.rotate_left(k % apis.len());
        t.rotate_left(k % apis.len());
        let spec = ClientSpec {
            chain_id: c.file.chain_id.clone(),
            apis: a,
            tokens: t,
            devices: range
                .clone()
                .map(|i| ClientDevice::new(&fleet.devices[i], fleet.seqs[i]))
                .collect(),
            secs: load.secs,
            rate: load.rate.map(|r| r / n_clients as f64),
            batch,
            count: ENVELOPES_PER_ANCHOR,
            record: load.record,
        };
        let spec_path = c.dir.join(format!("client-{k}.json"));
        fs::write(&spec_path, serde_json::to_vec(&spec)?)
            .with_context(|| format!("cannot write {}", spec_path.display()))?;
        let child = Command::new(&exe)
            .args(["bench", "client", "--spec"])
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start a bench client process")?;
        // Reading the output in a thread keeps a full pipe from blocking the client.
        children.push((range, std::thread::spawn(move || child.wait_with_output())));
    }
    let mut kill_at_us = None;
    if let Some((node, at)) = load.kill {
        let due = t0 + (at * 1e6) as u64;
        while now_us() < due {
            std::thread::sleep(Duration::from_millis(5));
        }
        c.kill(node);
        kill_at_us = Some(now_us());
        p.note(format!(
            "validator {node} SIGKILLed {:.1} s into the run",
            at
        ));
    }
    let mut reports: Vec<ClientReport> = Vec::new();
    for (range, h) in children {
        let out = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client reader thread panicked"))?
            .context("waiting for a bench client")?;
        if !out.status.success() {
            bail!(
                "a bench client failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let r: ClientReport = serde_json::from_slice(&out.stdout)
            .context("a bench client printed something other than its report")?;
        for (i, s) in range.zip(&r.next_seqs) {
            fleet.seqs[i] = *s;
        }
        reports.push(r);
    }
    let t_end = t0 + (load.secs * 1e6) as u64;
    std::thread::sleep(Duration::from_secs_f64(TAIL_SECS));
    let (seen, blocks) = watcher.finish();

    // Skip the first second (or fifth) while clients start and the pipeline fills.
    let warm = (load.secs * 0.2).min(1.0);
    let (txs_per_s, msgs_per_s, blocks_per_s) = rate_in(&blocks, t0 + (warm * 1e6) as u64, t_end);
    let (before, after) = match kill_at_us {
        Some(k) => (
            Some(rate_in(&blocks, t0 + (warm * 1e6) as u64, k).0),
            Some(rate_in(&blocks, k, t_end).0),
        ),
        None => (None, None),
    };
    let bins = ((load.secs + TAIL_SECS) / BIN_SECS).ceil() as usize;
    let mut counts = vec![0u64; bins];
    for b in &blocks {
        if b.at_us >= t0 {
            let i = ((b.at_us - t0) as f64 / 1e6 / BIN_SECS) as usize;
            if i < bins {
                counts[i] += b.txs;
            }
        }
    }
    let series = counts
        .iter()
        .enumerate()
        .map(|(i, &n)| (i as f64 * BIN_SECS, n as f64 / BIN_SECS))
        .collect();

    let mut lat = Vec::new();
    let mut unconfirmed = 0u64;
    let mut refused = BTreeMap::new();
    let (mut sent, mut accepted) = (0, 0);
    for r in &reports {
        sent += r.sent;
        accepted += r.accepted;
        for (k, v) in &r.refused {
            *refused.entry(k.clone()).or_insert(0) += v;
        }
        for (id, at) in &r.ids {
            match seen.get(id) {
                Some(s) => lat.push(s.saturating_sub(*at) as f64 / 1000.0),
                None => unconfirmed += 1,
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(PhaseResult {
        txs_per_s,
        msgs_per_s,
        blocks_per_s,
        latency_ms: (!lat.is_empty()).then(|| (percentile(&lat, 0.5), percentile(&lat, 0.99))),
        sent,
        accepted,
        unconfirmed,
        refused,
        series,
        before_kill_txs_per_s: before,
        after_kill_txs_per_s: after,
    })
}

fn lat_json(p: &PhaseResult) -> Value {
    match p.latency_ms {
        Some((a, b)) => json!({"p50": a, "p99": b}),
        None => Value::Null,
    }
}

/// One point of the throughput/latency curve.
fn curve_point(label: &str, offered: Option<f64>, p: &PhaseResult) -> Value {
    json!({
        "label": label,
        "offered_tx_per_s": offered.map_or(Value::Null, num),
        "tx_per_s": p.txs_per_s,
        "msgs_per_s": p.msgs_per_s,
        "p50_ms": p.latency_ms.map_or(Value::Null, |l| num(l.0)),
        "p99_ms": p.latency_ms.map_or(Value::Null, |l| num(l.1)),
        "unconfirmed": p.unconfirmed,
    })
}

/// A fresh devnet of `n` validators in a temp dir, with `devices` enrolled.
fn devnet_with_fleet(
    n: usize,
    base_port: u16,
    devices: usize,
    p: &Progress,
) -> Result<(tempfile::TempDir, Cluster, Fleet)> {
    let dir = tempfile::Builder::new()
        .prefix("meshward-bench-")
        .tempdir()
        .context("cannot create a temp dir")?;
    p.step(format!("starting {n} validators"));
    let c = Cluster::create(&dir.path().join("net"), n, base_port)?;
    let admin = keyfile::load(&c.file.admin_keys[0], KeyKind::Admin)?;
    p.step(format!("enrolling {devices} devices"));
    let (fleet, _) = enroll(&c, &admin.sign, 1, devices, "bench")?;
    Ok((dir, c, fleet))
}

/// MESHWARD_BENCH_KEEP=1 keeps the nodes' data dirs and logs for inspection.
fn keep(dir: tempfile::TempDir, p: &Progress) {
    if std::env::var_os("MESHWARD_BENCH_KEEP").is_some() {
        p.note(format!("kept {}", dir.keep().display()));
    }
}

pub fn run(quick: bool, base_port: u16, p: &Progress) -> Result<Outcome> {
    let secs = if quick { 5.0 } else { 15.0 };
    let fractions: &[f64] = if quick { &[0.5] } else { &[0.25, 0.5, 0.75] };
    let (dir, mut c, mut fleet) = devnet_with_fleet(4, base_port, DEVICES, p)?;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut add_refused = |r: &BTreeMap<String, u64>| {
        for (k, v) in r {
            *refused.entry(k.clone()).or_insert(0) += v;
        }
    };

    p.step(format!(
        "peak load for {secs} s ({PEAK_CLIENTS} client processes)"
    ));
    let peak = run_phase(
        &mut c,
        &mut fleet,
        &Load {
            secs,
            rate: None,
            clients: PEAK_CLIENTS,
            record: true,
            kill: None,
        },
        p,
    )?;
    add_refused(&peak.refused);
    p.note(format!(
        "healthy peak: {:.0} anchor tx/s, {:.0} msgs/s, {:.1} blocks/s",
        peak.txs_per_s, peak.msgs_per_s, peak.blocks_per_s
    ));
    if peak.txs_per_s <= 0.0 {
        bail!("nothing was finalised under peak load (node logs: keep them with MESHWARD_BENCH_KEEP=1)");
    }
    let mut curve = Vec::new();
    let mut half = None;
    for &f in fractions {
        c.drain(p);
        let rate = peak.txs_per_s * f;
        p.step(format!(
            "{:.0}% load ({rate:.0} tx/s) for {secs} s",
            f * 100.0
        ));
        let r = run_phase(
            &mut c,
            &mut fleet,
            &Load {
                secs,
                rate: Some(rate),
                clients: 1,
                record: true,
                kill: None,
            },
            p,
        )?;
        add_refused(&r.refused);
        p.note(format!(
            "{:.0}% load: {:.0} tx/s final, latency p50/p99 {}",
            f * 100.0,
            r.txs_per_s,
            r.latency_ms
                .map_or("n/a".into(), |(a, b)| format!("{a:.0}/{b:.0} ms"))
        ));
        curve.push(curve_point(&format!("{:.0}%", f * 100.0), Some(rate), &r));
        if (f - 0.5).abs() < 1e-9 {
            half = Some((rate, r));
        }
    }
    curve.push(curve_point("peak", None, &peak));
    c.drain(p);

    let fail_secs = secs * 1.5;
    let kill_at = fail_secs / 3.0;
    p.step(format!(
        "failure run: {fail_secs} s at peak load, validator 3 SIGKILLed at {kill_at} s"
    ));
    let fail = run_phase(
        &mut c,
        &mut fleet,
        &Load {
            secs: fail_secs,
            rate: None,
            clients: PEAK_CLIENTS,
            record: false,
            kill: Some((3, kill_at)),
        },
        p,
    )?;
    add_refused(&fail.refused);
    let after = fail.after_kill_txs_per_s.unwrap_or(0.0);
    p.note(format!(
        "one down: {after:.0} tx/s after the kill ({:.2} of healthy)",
        after / peak.txs_per_s
    ));
    drop(c);
    keep(dir, p);

    let (half_rate, half) = half.context("the 50% load point always runs")?;
    Ok(Outcome::Done(json!({
        "validators": 4,
        "devices": DEVICES,
        "envelopes_per_anchor": ENVELOPES_PER_ANCHOR,
        "phase_seconds": secs,
        "peak_anchor_tx_per_s": peak.txs_per_s,
        "peak_messages_per_s": peak.msgs_per_s,
        "peak_blocks_per_s": peak.blocks_per_s,
        "peak_finality_ms": lat_json(&peak),
        "finality_ms": lat_json(&half),
        "finality_load_tx_per_s": half_rate,
        "finality_achieved_tx_per_s": half.txs_per_s,
        "one_down_ratio": after / peak.txs_per_s,
        "one_down_tx_per_s": after,
        "load_curve": curve,
        "failure_run": {
            "seconds": fail_secs,
            "killed_validator": 3,
            "kill_at_s": kill_at,
            "before_kill_tx_per_s": fail.before_kill_txs_per_s.map_or(Value::Null, num),
            "after_kill_tx_per_s": after,
            "bin_seconds": BIN_SECS,
            "series": fail.series.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
        },
        "sent": peak.sent + half.sent + fail.sent,
        "accepted": peak.accepted + half.accepted + fail.accepted,
        "refused": refused,
        "latency_note": "submit (client, before the POST) to first seen in a finalised block (watcher polling every 5 ms)",
    })))
}

/// One point of the validator-count curve: peak throughput and latency at half of it.
pub fn validators_point(n: usize, quick: bool, base_port: u16, p: &Progress) -> Result<Value> {
    let secs = if quick { 4.0 } else { 10.0 };
    let (dir, mut c, mut fleet) = devnet_with_fleet(n, base_port, 256, p)?;
    p.step(format!("{n} validators: peak load for {secs} s"));
    let peak = run_phase(
        &mut c,
        &mut fleet,
        &Load {
            secs,
            rate: None,
            clients: PEAK_CLIENTS,
            record: true,
            kill: None,
        },
        p,
    )?;
    c.drain(p);
    // Nothing final during the peak window: there is no 50% to offer.
    let half = if peak.txs_per_s > 0.0 {
        let rate = peak.txs_per_s * 0.5;
        p.step(format!("{n} validators: 50% load ({rate:.0} tx/s)"));
        Some((
            rate,
            run_phase(
                &mut c,
                &mut fleet,
                &Load {
                    secs,
                    rate: Some(rate),
                    clients: 1,
                    record: true,
                    kill: None,
                },
                p,
            )?,
        ))
    } else {
        p.note(format!(
            "{n} validators: no block was final within the {secs} s peak window"
        ));
        None
    };
    drop(c);
    keep(dir, p);
    p.note(format!(
        "{n} validators: {:.0} tx/s peak, p50/p99 {} at 50%",
        peak.txs_per_s,
        half.as_ref()
            .and_then(|h| h.1.latency_ms)
            .map_or("n/a".into(), |(a, b)| format!("{a:.0}/{b:.0} ms"))
    ));
    Ok(json!({
        "validators": n,
        "peak_anchor_tx_per_s": peak.txs_per_s,
        "peak_blocks_per_s": peak.blocks_per_s,
        "peak_accepted": peak.accepted,
        "peak_unconfirmed_after_tail": peak.unconfirmed,
        "peak_series": peak.series.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
        "finality_ms": half.as_ref().map_or(Value::Null, |h| lat_json(&h.1)),
        "finality_load_tx_per_s": half.as_ref().map_or(Value::Null, |h| json!(h.0)),
        "phase_seconds": secs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_only_blocks_inside_the_window() {
        let b = |at_us, txs| SeenBlock {
            at_us,
            txs,
            msgs: txs * 64,
        };
        let blocks = [
            b(500_000, 10),
            b(1_000_000, 100),
            b(1_500_000, 100),
            b(2_000_000, 7),
        ];
        let (tx, msgs, bps) = rate_in(&blocks, 1_000_000, 2_000_000);
        assert_eq!(tx, 200.0);
        assert_eq!(msgs, 200.0 * 64.0);
        assert_eq!(bps, 2.0);
        assert_eq!(rate_in(&blocks, 5, 5), (0.0, 0.0, 0.0));
    }
}
