//! One phase of load: client processes (`meshward bench client`) offer it, the block watcher
//! measures what the chain finalised: throughput (over the whole phase and in bins over time),
//! latency from submit to final, and throughput before and after a validator is killed.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::cluster::{Cluster, Fleet};
use super::watcher::{rate_in, Watcher};
use super::ENVELOPES_PER_ANCHOR;
use crate::client::{ClientDevice, ClientReport, ClientSpec};
use crate::{now_us, percentile, Progress};

/// Seconds the watcher keeps looking after the load stops, for latency tails.
const TAIL_SECS: f64 = 2.0;
/// Width of one bar of the throughput-over-time series.
pub(crate) const BIN_SECS: f64 = 0.5;

/// The load one phase offers.
pub(crate) struct Load {
    /// How long the clients send, in seconds.
    pub secs: f64,
    /// Total transactions per second over all clients; `None`: as fast as the nodes take them.
    pub rate: Option<f64>,
    /// Client processes (at most one per two devices).
    pub clients: usize,
    /// Record ids for latency.
    pub record: bool,
    /// SIGKILL this validator this many seconds into the phase.
    pub kill: Option<(usize, f64)>,
}

/// What one phase measured.
pub(crate) struct PhaseResult {
    /// Finalised anchors per second (after the warm-up).
    pub txs_per_s: f64,
    /// Finalised envelopes per second (the anchors' `count`s).
    pub msgs_per_s: f64,
    /// Blocks per second.
    pub blocks_per_s: f64,
    /// p50, p99 in ms.
    pub latency_ms: Option<(f64, f64)>,
    /// Transactions the clients delivered.
    pub sent: u64,
    /// Transactions the nodes admitted.
    pub accepted: u64,
    /// Accepted but not seen final before the watcher stopped.
    pub unconfirmed: u64,
    /// Refusals by error code, summed over the clients (see [`ClientReport::refused`]).
    pub refused: BTreeMap<String, u64>,
    /// (seconds since the load started, finalised tx/s in that bin).
    pub series: Vec<(f64, f64)>,
    /// Throughput before the kill, when there was one.
    pub before_kill_txs_per_s: Option<f64>,
    /// Throughput after the kill, when there was one.
    pub after_kill_txs_per_s: Option<f64>,
}

/// Runs one phase of load from client processes and measures what the chain finalised.
pub(crate) fn run_phase(
    c: &mut Cluster,
    fleet: &mut Fleet,
    load: &Load,
    p: &Progress,
) -> Result<PhaseResult> {
    let exe = c.cli.clone();
    let alive = c.alive();
    let apis: Vec<String> = alive.iter().map(|&i| c.api(i).to_string()).collect();
    let tokens: Vec<String> = alive.iter().map(|&i| c.token(i).to_string()).collect();
    let watcher = Watcher::start(&apis, c.tip(), load.record)?;
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
