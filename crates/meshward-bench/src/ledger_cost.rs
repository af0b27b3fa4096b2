//! What the ledger costs a gateway's disk at a fleet's real rate, on an idle chain, and at start:
//! three points of the `scale` part.
//!
//! - `disk_bytes_per_message_fleet_rate`: a 4-validator devnet with `FLEET_DEVICES` simulated SDK
//!   devices (the devnet's own fleet: seal, anchor, deliver, open, acknowledge) sending
//!   `FLEET_RATE` messages/s in total for `FLEET_SECS` (20 s in quick mode). Once the nodes are
//!   stopped, node0's store is measured (allocated pages × page size) against a store holding
//!   only the chain up to the first message (the same blocks, replayed into a fresh file): the
//!   difference (blocks, certificates, index rows, state records, everything) divided by the
//!   messages anchored in between. Acknowledgements are in the bytes, not in the count.
//! - `idle_bytes_per_hour`: the same, for a 4-validator chain with nothing to do, over
//!   `IDLE_SECS`, plus what node0's WAL directory and log grew by, scaled to an hour.
//! - `store_open_ms_1m_anchors`: `Store::open` of a synthetic store holding 1,000,000 anchors
//!   (100,000 in quick mode) in blocks of 256, median of five opens (the file in the page
//!   cache, as after a restart).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meshward_core::tx::TxBody;
use meshward_node::STORE_FILE;
use meshward_store::Store;
use serde_json::{json, Value};

use crate::consensus::Cluster;
use crate::{median, num, Exes, Progress};

/// Simulated devices of the fleet-rate point.
const FLEET_DEVICES: usize = 20;
/// Their messages per second, in total.
const FLEET_RATE: f64 = 10.0;
/// How long they send (full run).
const FLEET_SECS: u64 = 60;
/// How long the idle chain is watched (full run): past four 30 s heartbeats.
const IDLE_SECS: u64 = 125;
/// Anchors in the store that is opened (full run).
const OPEN_ANCHORS: u64 = 1_000_000;
/// Anchors per block of that store.
const OPEN_ANCHORS_PER_BLOCK: u64 = 256;

/// Bytes of the store's pages in use (allocated pages × page size). The file's own length
/// moves in large steps as redb grows it, and freed pages are reused, so a file-size delta
/// over a few thousand anchors can read 0 or several times the real cost.
pub(crate) fn allocated_bytes(p: &Path) -> Result<u64> {
    let db = redb::Database::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let tx = db.begin_write()?;
    let s = tx.stats()?;
    let bytes = s.allocated_pages() * s.page_size() as u64;
    tx.abort()?;
    Ok(bytes)
}

/// The allocated bytes of a store holding blocks 1..=`height` of `src` only: they are replayed
/// (checked, as sync would) into a fresh file under `scratch`.
fn prefix_bytes(src: &Store, height: u64, scratch: &Path) -> Result<u64> {
    let path = scratch.join("prefix.redb");
    let _ = fs::remove_file(&path);
    let mut s = Store::create(&path, src.genesis())?;
    for h in 1..=height {
        let cb = src
            .block(h)?
            .with_context(|| format!("block {h} missing"))?;
        s.apply_block(&cb)?;
    }
    drop(s);
    let bytes = allocated_bytes(&path)?;
    let _ = fs::remove_file(&path);
    Ok(bytes)
}

/// Bytes of the files directly under `dir` but the chain store (0 if it does not exist): the
/// store is measured by its pages in use, not by its file's length.
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name() != STORE_FILE)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Anchors and all transactions in blocks `from..=to` of `store`.
fn count_txs(store: &Store, from: u64, to: u64) -> Result<(u64, u64)> {
    let (mut anchors, mut txs) = (0, 0);
    for h in from..=to {
        let cb = store
            .block(h)?
            .with_context(|| format!("block {h} missing"))?;
        txs += cb.block.txs.len() as u64;
        anchors += cb
            .block
            .txs
            .iter()
            .filter(|t| matches!(t.body, TxBody::Anchor(_)))
            .count() as u64;
    }
    Ok((anchors, txs))
}

/// The fleet-rate point (see the module doc).
pub(crate) fn fleet_rate_point(
    quick: bool,
    base_port: u16,
    exes: &Exes,
    p: &Progress,
) -> Result<Value> {
    let secs = if quick { 20 } else { FLEET_SECS };
    let dir = tempfile::tempdir()?;
    let net = dir.path().join("net");
    p.step(format!(
        "fleet rate: 4 validators, {FLEET_DEVICES} devices at {FLEET_RATE} messages/s"
    ));
    let mut c = Cluster::create(&net, 4, base_port, exes)?;
    let devices = meshward_devnet::fleetsim::ensure_keys(&net, FLEET_DEVICES)?;
    c.file.devices = devices.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(meshward_devnet::fleetsim::FleetStats::default());
    let fleet = {
        let (file, stop, stats) = (c.file.clone(), stop.clone(), stats.clone());
        std::thread::spawn(move || {
            meshward_devnet::fleetsim::run(file, devices, FLEET_RATE, stop, stats)
        })
    };
    let started = Instant::now();
    while stats.sent.load(Ordering::Relaxed) == 0 {
        if started.elapsed() > Duration::from_secs(180) || fleet.is_finished() {
            stop.store(true, Ordering::Relaxed);
            anyhow::bail!("the simulated fleet sent nothing within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let h0 = c.tip();
    let sent0 = stats.sent.load(Ordering::Relaxed);
    p.step(format!("fleet rate: {secs} s of messages from height {h0}"));
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let sent = stats.sent.load(Ordering::Relaxed) - sent0;
    let until = Instant::now() + Duration::from_secs(20);
    while !fleet.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    c.drain(p);
    let h1 = c.tip();
    drop(c);
    let path = net.join("node0").join(STORE_FILE);
    let (h1, anchors, txs, base) = {
        let store = Store::open(&path)?;
        let h1 = h1.min(store.tip().map_or(0, |t| t.0));
        let (anchors, txs) = count_txs(&store, h0 + 1, h1)?;
        (h1, anchors, txs, prefix_bytes(&store, h0, dir.path())?)
    };
    let total = allocated_bytes(&path)?;
    let per_message = total.saturating_sub(base) as f64 / anchors.max(1) as f64;
    p.note(format!(
        "fleet rate: {anchors} messages anchored in blocks {}..={h1} ({txs} transactions); {per_message:.0} B of store per message",
        h0 + 1
    ));
    Ok(json!({
        "devices": FLEET_DEVICES,
        "rate_per_s": FLEET_RATE,
        "seconds": secs,
        "messages_sent": sent,
        "messages_anchored": anchors,
        "txs": txs,
        "blocks": h1 - h0,
        "store_bytes": total.saturating_sub(base),
        "bytes_per_message": num(per_message),
    }))
}

/// The idle point (see the module doc).
pub(crate) fn idle_point(quick: bool, base_port: u16, exes: &Exes, p: &Progress) -> Result<Value> {
    let secs = if quick { 65 } else { IDLE_SECS };
    let dir = tempfile::tempdir()?;
    let net = dir.path().join("net");
    p.step("idle chain: starting 4 validators");
    let c = Cluster::create(&net, 4, base_port, exes)?;
    let node0 = net.join("node0");
    let h0 = c.tip();
    let (wal0, log0) = (dir_bytes(&node0.join("wal")), dir_bytes(&node0));
    p.step(format!(
        "idle chain: watching for {secs} s from height {h0}"
    ));
    std::thread::sleep(Duration::from_secs(secs));
    let h1 = c.tip();
    let (wal1, log1) = (dir_bytes(&node0.join("wal")), dir_bytes(&node0));
    drop(c);
    let path = node0.join(STORE_FILE);
    let base = prefix_bytes(&Store::open(&path)?, h0, dir.path())?;
    let total = allocated_bytes(&path)?;
    // node0's other files (log, mailbox file, config, keys); the WAL apart.
    let other = log1.saturating_sub(log0);
    let wal = wal1.saturating_sub(wal0);
    let store_bytes = total.saturating_sub(base);
    let per_hour = (store_bytes + wal + other) as f64 * 3600.0 / secs as f64;
    p.note(format!(
        "idle chain: {} blocks in {secs} s; store +{store_bytes} B, WAL +{wal} B, other files +{other} B; {per_hour:.0} B/hour",
        h1 - h0
    ));
    Ok(json!({
        "seconds": secs,
        "blocks": h1 - h0,
        "store_bytes": store_bytes,
        "wal_bytes": wal,
        "other_bytes": other,
        "bytes_per_hour": num(per_hour),
    }))
}

/// The open-time point (see the module doc).
pub(crate) fn open_point(quick: bool, exes: &Exes, p: &Progress) -> Result<Value> {
    let anchors = if quick { 100_000 } else { OPEN_ANCHORS };
    let blocks = anchors / OPEN_ANCHORS_PER_BLOCK;
    let dir = tempfile::tempdir()?;
    let sd = dir.path().join("synth");
    let sd_s = sd.to_str().context("temp dir path is UTF-8")?;
    p.step(format!(
        "store open: writing a synthetic store of {} anchors",
        blocks * OPEN_ANCHORS_PER_BLOCK
    ));
    let t = Instant::now();
    crate::scale::run_cli(
        &exes.cli,
        &[
            "store",
            "synth",
            "--dir",
            sd_s,
            "--devices",
            "1000",
            "--blocks",
            &blocks.to_string(),
            "--anchors-per-block",
            &OPEN_ANCHORS_PER_BLOCK.to_string(),
        ],
    )?;
    let synth_s = t.elapsed().as_secs_f64();
    let path = sd.join(STORE_FILE);
    let file_bytes = fs::metadata(&path)?.len();
    let mut ms = Vec::new();
    let mut tip = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let s = Store::open(&path)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        tip = s.tip().map_or(0, |t| t.0);
    }
    let med = median(&ms);
    p.note(format!(
        "store open: {med:.1} ms median of 5 for {} anchors ({} blocks, {:.0} MiB)",
        blocks * OPEN_ANCHORS_PER_BLOCK,
        tip,
        file_bytes as f64 / (1024.0 * 1024.0)
    ));
    Ok(json!({
        "anchors": blocks * OPEN_ANCHORS_PER_BLOCK,
        "blocks": tip,
        "file_bytes": file_bytes,
        "synth_seconds": num(synth_s),
        "open_ms": ms,
        "open_ms_median": num(med),
    }))
}
