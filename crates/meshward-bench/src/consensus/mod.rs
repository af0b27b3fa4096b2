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
//!
//! The pieces: [`cluster`] (the validators as child processes, enrollment), [`watcher`] (the
//! block watcher), [`phase`] (one phase of load and what it measured); this module runs the
//! phases (peak, the latency curve, the failure run) and writes the part's results.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use meshward_sdk::keyfile::{self, KeyKind};
use serde_json::{json, Value};

use crate::{num, Exes, Outcome, Progress};

mod cluster;
mod phase;
mod watcher;

pub(crate) use cluster::{enroll, Cluster, Fleet};
use phase::BIN_SECS;
pub(crate) use phase::{run_phase, Load, PhaseResult};
pub(crate) use watcher::Watcher;

/// Envelopes each benchmark anchor stands for: the most a device batches into one root.
pub(crate) const ENVELOPES_PER_ANCHOR: u32 = 64;
/// Devices enrolled for the load.
const DEVICES: usize = 512;
/// Load-generating processes at peak load.
const PEAK_CLIENTS: usize = 2;

/// A phase's latency as `{"p50", "p99"}` in ms; null when nothing was measured.
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
pub(crate) fn devnet_with_fleet(
    n: usize,
    base_port: u16,
    devices: usize,
    exes: &Exes,
    p: &Progress,
) -> Result<(tempfile::TempDir, Cluster, Fleet)> {
    let dir = tempfile::Builder::new()
        .prefix("meshward-bench-")
        .tempdir()
        .context("cannot create a temp dir")?;
    p.step(format!("starting {n} validators"));
    let c = Cluster::create(&dir.path().join("net"), n, base_port, exes)?;
    let admin_key = c
        .file
        .admin_keys
        .first()
        .context("a new devnet has an admin key")?;
    let admin = keyfile::load(admin_key, KeyKind::Admin)?;
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

/// Runs the `consensus` part: four validators from `base_port`, peak load, the latency curve,
/// and the failure run.
pub(crate) fn run(quick: bool, base_port: u16, exes: &Exes, p: &Progress) -> Result<Outcome> {
    let secs = if quick { 5.0 } else { 15.0 };
    let fractions: &[f64] = if quick { &[0.5] } else { &[0.25, 0.5, 0.75] };
    let (dir, mut c, mut fleet) = devnet_with_fleet(4, base_port, DEVICES, exes, p)?;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut add_refused = |r: &BTreeMap<String, u64>| {
        for (k, v) in r {
            *refused.entry(k.clone()).or_insert(0) += v;
        }
    };

    p.step(format!(
        "peak load for {secs} s ({PEAK_CLIENTS} client processes)"
    ));
    let probe = rounds_probe(&c);
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
    let peak_rounds = rounds_json(&c, probe, rounds_probe(&c));
    p.note(format!(
        "healthy peak: {:.0} anchor tx/s, {:.0} msgs/s, {:.1} blocks/s; late rounds {}",
        peak.txs_per_s, peak.msgs_per_s, peak.blocks_per_s, peak_rounds["late_round_heights"]
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
                // As many processes as at the peak, each with its share of the rate: one
                // client posting one batch at a time could not offer more than about 2,300 tx/s
                // here, so "50%" offered less than asked.
                clients: PEAK_CLIENTS,
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
        "peak_rounds": peak_rounds,
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

/// Node 0's count of heights decided in a round after 0, and its height: read before and after
/// a phase, they say how often a height needed round 1 or later.
fn rounds_probe(c: &Cluster) -> (f64, f64) {
    (
        c.metric(0, "meshward_consensus_late_round_heights")
            .unwrap_or(f64::NAN),
        c.metric(0, "meshward_chain_height").unwrap_or(f64::NAN),
    )
}

/// The late rounds between two probes, as JSON: heights, late ones, their share, and node 0's
/// proposal size limit at the end.
fn rounds_json(c: &Cluster, before: (f64, f64), after: (f64, f64)) -> Value {
    let (late, heights) = (after.0 - before.0, after.1 - before.1);
    json!({
        "heights": num(heights),
        "late_round_heights": num(late),
        "late_round_fraction": if heights > 0.0 { num(late / heights) } else { Value::Null },
        "proposal_limit_txs": c.metric(0, "meshward_consensus_proposal_limit_txs").map_or(Value::Null, num),
    })
}

/// One point of the validator-count curve: peak throughput and latency at half of it.
pub(crate) fn validators_point(
    n: usize,
    quick: bool,
    base_port: u16,
    exes: &Exes,
    p: &Progress,
) -> Result<Value> {
    let secs = if quick { 4.0 } else { 10.0 };
    let (dir, mut c, mut fleet) = devnet_with_fleet(n, base_port, 256, exes, p)?;
    p.step(format!("{n} validators: peak load for {secs} s"));
    let probe = rounds_probe(&c);
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
    let rounds = rounds_json(&c, probe, rounds_probe(&c));
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
                    clients: PEAK_CLIENTS,
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
        "peak_rounds": rounds,
        "peak_series": peak.series.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
        "finality_ms": half.as_ref().map_or(Value::Null, |h| lat_json(&h.1)),
        "finality_load_tx_per_s": half.as_ref().map_or(Value::Null, |h| json!(h.0)),
        "phase_seconds": secs,
    }))
}
