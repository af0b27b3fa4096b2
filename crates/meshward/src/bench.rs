//! `meshward bench consensus`: four validators as separate processes on 127.0.0.1, loaded by a
//! client that submits signed anchors in batches over the HTTP API.
//!
//! It measures, in one run: peak finalised throughput (blocks/s, transactions/s) with every
//! validator up; submit-to-final latency at half that load; and the same two with one validator
//! SIGKILLed. Latency is measured from just before the batch holding a transaction is sent to
//! the moment a watcher polling the chain every 5 ms sees the block that includes it, so it
//! overstates finality by up to one poll interval.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_core::codec::{Encode, Writer};
use meshward_core::hash::Hash;
use meshward_core::ids::Keypair;
use meshward_core::tx::{enroll_body, Anchor, GroupName, Recipient, Tx, TxBody};
use meshward_node::keyfile::{self, KeyKind};
use serde_json::{json, Value};

use crate::devnet::{self, DevnetFile};
use crate::http;

pub struct Options {
    pub out: Option<PathBuf>,
    pub quick: bool,
    pub base_port: u16,
}

struct Cluster {
    file: DevnetFile,
    children: Vec<Option<Child>>,
    tokens: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut live: Vec<Child> = self.children.iter_mut().filter_map(|c| c.take()).collect();
        devnet::stop_children(&mut live, Duration::from_secs(5));
    }
}

impl Cluster {
    fn alive(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| self.children[i].is_some())
            .collect()
    }

    fn api(&self, i: usize) -> &str {
        &self.file.nodes[i].api
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn height(&self, i: usize) -> Option<u64> {
        http::get_json(self.api(i), "/v1/status", Duration::from_secs(1)).ok()?["height"].as_u64()
    }
}

fn start_cluster(dir: &std::path::Path, base_port: u16) -> Result<Cluster> {
    let file = devnet::create(dir, 4, base_port)?;
    let mut children = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..file.nodes.len() {
        children.push(Some(devnet::spawn_node(&file, i)?));
        tokens.push(
            fs::read_to_string(&file.nodes[i].token_file)?
                .trim()
                .to_string(),
        );
    }
    let c = Cluster {
        file,
        children,
        tokens,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..4).all(|i| c.height(i).is_some_and(|h| h >= 2)) {
        if Instant::now() > deadline {
            bail!(
                "the bench cluster did not start finalising within 60 s (see the node logs in {})",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(c)
}

fn batch_body(txs: &[Tx]) -> Vec<u8> {
    let mut w = Writer::new();
    w.len(txs.len());
    for t in txs {
        w.bytes(&t.to_bytes());
    }
    w.into_bytes()
}

fn post_batch(c: &Cluster, node: usize, txs: &[Tx]) -> Result<Value> {
    let r = http::request(
        "POST",
        c.api(node),
        "/v1/txs",
        Some(&c.tokens[node]),
        Some(("application/octet-stream", &batch_body(txs))),
        Duration::from_secs(10),
    )?;
    r.json()
}

/// Enrolls `n` devices and waits until they are on the chain.
fn enroll(c: &Cluster, n: usize) -> Result<Vec<Keypair>> {
    let admin = keyfile::load(&c.file.admin_keys[0], KeyKind::Admin)?;
    let chain = &c.file.chain_id;
    let devices: Vec<Keypair> = (0..n)
        .map(|_| Keypair::generate(&mut rand::rngs::OsRng))
        .collect();
    let group = GroupName::new("bench").context("valid group name")?;
    let txs: Vec<Tx> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let body = enroll_body(chain, d, vec![group.clone()], None);
            Tx::sign(chain, admin.id(), &admin.sign, i as u64 + 1, body)
        })
        .collect();
    // The mempool holds at most 256 transactions per sender: enroll in chunks.
    for chunk in txs.chunks(200) {
        let v = post_batch(c, 0, chunk)?;
        if let Some(r) = v["rejected"].as_array().and_then(|r| r.first()) {
            bail!("an enrollment was refused: {r}");
        }
        let last = chunk.last().context("chunks are not empty")?.id().to_hex();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = http::get_json(c.api(0), &format!("/v1/tx/{last}"), Duration::from_secs(2));
            if v.as_ref().is_ok_and(|v| v["status"] == "final") {
                break;
            }
            if Instant::now() > deadline {
                bail!("enrollments were not final within 60 s (last one: {v:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(devices)
}

/// A block the watcher saw: height, when, how many transactions.
type SeenBlock = (u64, Instant, usize);

/// Watches blocks on a live node and records when each transaction id was first seen final.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<Hash, Instant>>>,
    blocks: Arc<Mutex<Vec<SeenBlock>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(apis: Vec<String>, from: u64) -> Watcher {
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
                    let now = Instant::now();
                    let txs = v["txs"].as_array().cloned().unwrap_or_default();
                    {
                        let mut m = se.lock().unwrap_or_else(|e| e.into_inner());
                        for t in &txs {
                            if let Some(h) = t["id"].as_str().and_then(Hash::from_hex) {
                                m.entry(h).or_insert(now);
                            }
                        }
                    }
                    bl.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((next, now, txs.len()));
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

    fn finish(mut self) -> (HashMap<Hash, Instant>, Vec<SeenBlock>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        let blocks = std::mem::take(&mut *self.blocks.lock().unwrap_or_else(|e| e.into_inner()));
        (seen, blocks)
    }
}

struct Phase {
    blocks_per_s: f64,
    txs_per_s: f64,
    latency_ms: Option<(f64, f64)>,
}

/// Waits (up to a minute) until every live node's mempool is empty, so that a phase measures
/// its own load and not the backlog of the phase before it.
fn drain(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let pending: u64 = c
            .alive()
            .iter()
            .filter_map(|&i| {
                http::get_json(c.api(i), "/v1/status", Duration::from_secs(1)).ok()?["mempool_size"]
                    .as_u64()
            })
            .sum();
        if pending == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("  (mempools did not drain within 60 s)");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Offers load for `secs`: unlimited (`rate = None`, batches as fast as the nodes take them)
/// or paced at `rate` transactions per second. Devices take turns, each with its own
/// sequence numbers.
fn run_phase(
    c: &Cluster,
    devices: &[Keypair],
    seqs: &mut [u64],
    secs: f64,
    rate: Option<f64>,
) -> Result<Phase> {
    let start_h = c
        .alive()
        .iter()
        .filter_map(|&i| c.height(i))
        .max()
        .unwrap_or(0);
    let apis: Vec<String> = c.alive().iter().map(|&i| c.api(i).to_string()).collect();
    let watcher = Watcher::start(apis, start_h);
    let chain = &c.file.chain_id;
    let mut sent: HashMap<Hash, Instant> = HashMap::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let alive = c.alive();
    let batch = if rate.is_some() { 20 } else { 500 };
    let mut d = 0usize;
    let mut n_sent = 0u64;
    let mut k = 0usize;
    let mut refused: HashMap<String, u64> = HashMap::new();
    while Instant::now() < end {
        if let Some(r) = rate {
            // Pace: send the next batch when it is due.
            let due = start + Duration::from_secs_f64(n_sent as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut txs = Vec::with_capacity(batch);
        for _ in 0..batch {
            d = (d + 1) % devices.len();
            let to = &devices[(d + 1) % devices.len()];
            let body = TxBody::Anchor(Anchor {
                recipient: Recipient::Device(to.id()),
                commitment: Hash(rand::random()),
                count: 1,
                timestamp_ms: crate::now_ms(),
                size_bytes: 256,
            });
            txs.push(Tx::sign(
                chain,
                devices[d].id(),
                &devices[d].sign,
                seqs[d],
                body,
            ));
            seqs[d] += 1;
        }
        let node = alive[k % alive.len()];
        k += 1;
        let t0 = Instant::now();
        let v = post_batch(c, node, &txs)?;
        let accepted: Vec<Hash> = v["accepted"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().and_then(Hash::from_hex))
                    .collect()
            })
            .unwrap_or_default();
        // Refused transactions (a full mempool) leave gaps in their senders' sequences; roll
        // those senders back so later transactions stay valid.
        if let Some(rej) = v["rejected"].as_array() {
            for r in rej {
                *refused
                    .entry(r["code"].as_str().unwrap_or("?").to_string())
                    .or_insert(0u64) += 1;
            }
            if !rej.is_empty() {
                let mut first_bad: HashMap<usize, u64> = HashMap::new();
                for r in rej {
                    if let Some(i) = r["index"].as_u64() {
                        let tx = &txs[i as usize];
                        let di = devices
                            .iter()
                            .position(|k| k.id() == tx.signer)
                            .unwrap_or(0);
                        let e = first_bad.entry(di).or_insert(tx.seq);
                        *e = (*e).min(tx.seq);
                    }
                }
                for (di, seq) in first_bad {
                    seqs[di] = seq;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for h in accepted {
            sent.insert(h, t0);
        }
        n_sent += batch as u64;
    }
    if !refused.is_empty() {
        eprintln!("  refused by the nodes: {refused:?}");
    }
    // Let what was accepted drain, then stop watching.
    std::thread::sleep(Duration::from_secs(2));
    let elapsed = start.elapsed().as_secs_f64();
    let (seen, blocks) = watcher.finish();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(h, t)| {
            seen.get(h)
                .map(|s| s.duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let final_txs = blocks.iter().map(|b| b.2).sum::<usize>() as f64;
    Ok(Phase {
        blocks_per_s: blocks.len() as f64 / elapsed,
        txs_per_s: final_txs / elapsed,
        latency_ms: (!lat.is_empty()).then(|| (percentile(&lat, 0.5), percentile(&lat, 0.99))),
    })
}

pub fn consensus(opts: Options) -> Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("meshward-bench-")
        .tempdir()
        .context("cannot create a temp dir")?;
    // MESHWARD_BENCH_KEEP=1 keeps the nodes' data dirs and logs for inspection.
    let kept = std::env::var_os("MESHWARD_BENCH_KEEP").map(|_| dir.path().to_path_buf());
    let secs = if opts.quick { 5.0 } else { 15.0 };
    eprintln!(
        "bench consensus: starting 4 validators in {}",
        dir.path().display()
    );
    let mut c = start_cluster(&dir.path().join("net"), opts.base_port)?;
    let n_devices = 512;
    let devices = enroll(&c, n_devices)?;
    let mut seqs = vec![1u64; n_devices];
    eprintln!("bench consensus: {n_devices} devices enrolled; peak load for {secs} s");
    let peak = run_phase(&c, &devices, &mut seqs, secs, None)?;
    eprintln!(
        "  healthy peak: {:.1} blocks/s, {:.0} tx/s",
        peak.blocks_per_s, peak.txs_per_s
    );
    drain(&c);
    let half = (peak.txs_per_s * 0.5).max(1.0);
    let lat = run_phase(&c, &devices, &mut seqs, secs, Some(half))?;
    eprintln!(
        "  healthy at {half:.0} tx/s: latency p50/p99 {:?} ms",
        lat.latency_ms
    );
    drain(&c);
    c.kill(3);
    eprintln!("bench consensus: validator 3 SIGKILLed");
    let down = run_phase(&c, &devices, &mut seqs, secs, None)?;
    eprintln!(
        "  one down peak: {:.1} blocks/s, {:.0} tx/s",
        down.blocks_per_s, down.txs_per_s
    );
    drain(&c);
    let down_half = (down.txs_per_s * 0.5).max(1.0);
    let down_lat = run_phase(&c, &devices, &mut seqs, secs, Some(down_half))?;
    drop(c);
    if let Some(k) = kept {
        let _ = dir.keep();
        eprintln!("bench consensus: kept {}", k.display());
    }
    let fmt_lat = |p: &Phase| match p.latency_ms {
        Some((a, b)) => json!({"p50": a, "p99": b}),
        None => Value::Null,
    };
    let result = json!({
        "consensus": {
            "validators": 4,
            "healthy": {"blocks_per_s": peak.blocks_per_s, "txs_per_s": peak.txs_per_s},
            "finality_ms": fmt_lat(&lat),
            "latency_load_txs_per_s": half,
            "one_down": {
                "blocks_per_s": down.blocks_per_s,
                "txs_per_s": down.txs_per_s,
                "finality_ms": fmt_lat(&down_lat),
                "latency_load_txs_per_s": down_half,
            },
            "one_down_ratio": if peak.txs_per_s > 0.0 { down.txs_per_s / peak.txs_per_s } else { 0.0 },
            "phase_seconds": secs,
        }
    });
    if let Some(out) = &opts.out {
        fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let p = out.join("results.json");
        fs::write(&p, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(result)
}
