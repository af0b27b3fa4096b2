//! `fleet` part: the whole message path end to end, as a fleet runs it.
//!
//! Four validators (`meshward node run` processes) and [`DEVICES`] SDK devices in this process,
//! each a real [`Device`] with its own libp2p node, state directory and agent. Every device
//! sends to the next one (ring order) in batches of [`BATCH`] session messages of 256 bytes:
//! each batch is sealed, anchored under one batch root, and delivered (directly, or into the
//! mailboxes when the recipient does not answer). Each recipient's agent opens every message
//! and acknowledges it on the ledger, as a real device does. A block watcher records when each
//! anchor was first seen final.
//!
//! A message counts once it is both opened by its recipient and its anchor is final:
//! - `msgs_per_s`: messages whose later of the two events fell inside the sending phase,
//!   divided by the phase's length;
//! - `final_ms`: per message, from just before its batch was sealed to its anchor first seen
//!   final, over every message sealed in the phase whose anchor became final by the end of the
//!   drain that follows it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_core::ids::{Keypair, PublicKey};
use meshward_devnet::fleetsim::{gateway_addrs, gateways_of};
use meshward_sdk::client::{ClientConfig, DeviceIdentity};
use meshward_sdk::device::{Delivery, Device, Received};
use meshward_sdk::dirstate::StateDir;
use serde_json::{json, Value};

use crate::consensus::{devnet_with_fleet, Cluster, Watcher};
use crate::{now_us, num, percentile, Exes, Outcome, Progress};

/// Devices in a full run.
const DEVICES: usize = 100;
/// Devices in a quick run (CI's smoke test, on a debug build).
const QUICK_DEVICES: usize = 12;
/// Messages per send: one anchor's batch root covers them all.
const BATCH: usize = 32;
/// Payload bytes of every message, the same as the `direct` and `mqtt` parts.
const PAYLOAD_BYTES: usize = 256;
/// How long after the sending phase anchors and deliveries may still complete.
const DRAIN: Duration = Duration::from_secs(20);

/// One message's identity inside its payload: the sending device's index and its counter.
type MsgId = (u32, u64);

/// What a sender recorded for one batch it sent.
struct SentBatch {
    /// The sender's index.
    device: u32,
    /// The counter of the first message; the batch holds `BATCH` consecutive ones.
    first: u64,
    /// Just before sealing, µs since the Unix epoch.
    sealed_us: u64,
    /// The anchor transaction's id, hex.
    anchor_tx: String,
    /// How the batch was delivered.
    delivery: Delivery,
}

/// The payload of message `id`: its id, then filler to [`PAYLOAD_BYTES`].
fn payload(id: MsgId) -> Vec<u8> {
    let mut p = Vec::with_capacity(PAYLOAD_BYTES);
    p.extend_from_slice(&id.0.to_be_bytes());
    p.extend_from_slice(&id.1.to_be_bytes());
    p.resize(PAYLOAD_BYTES, 0x5a);
    p
}

/// The id a payload carries; `None` if it is not one of ours.
fn id_of(payload: &[u8]) -> Option<MsgId> {
    let d = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    let k = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    Some((d, k))
}

/// Runs the part: a devnet, an enrolled fleet, a sending phase, and the figures.
pub(crate) fn run(quick: bool, base_port: u16, exes: &Exes, p: &Progress) -> Result<Outcome> {
    let devices = if quick { QUICK_DEVICES } else { DEVICES };
    let secs = if quick { 8.0 } else { 30.0 };
    let (dir, c, fleet) = devnet_with_fleet(4, base_port, devices, exes, p)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let out = rt.block_on(measure(
        &c,
        fleet.devices,
        &dir.path().join("devices"),
        Duration::from_secs_f64(secs),
        p,
    ));
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(c);
    out.map(Outcome::Done)
}

/// Starts the devices, runs the sending phase and a drain, and computes the figures.
async fn measure(
    c: &Cluster,
    keys: Vec<Keypair>,
    state_root: &std::path::Path,
    phase: Duration,
    p: &Progress,
) -> Result<Value> {
    let n = keys.len();
    let gws = gateway_addrs(&c.file)?;
    let ids: Vec<PublicKey> = keys.iter().map(Keypair::id).collect();
    p.step(format!("starting {n} SDK devices"));
    let mut devs = Vec::with_capacity(n);
    for (i, kp) in keys.into_iter().enumerate() {
        // Two gateways each, as the devnet's fleet has.
        let cfg = ClientConfig::new(Some(c.file.chain_id.clone()), gateways_of(&gws, i));
        let state = StateDir::open(state_root.join(format!("device{i}")))?;
        devs.push(Arc::new(
            Device::start(DeviceIdentity::new(kp), cfg, state).await?,
        ));
    }

    // Every agent reports what it opened, with when.
    let opened: Arc<Mutex<HashMap<MsgId, u64>>> = Arc::default();
    let stop_agents = Arc::new(AtomicBool::new(false));
    let mut agents = tokio::task::JoinSet::new();
    for dev in &devs {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Received>(1024);
        let (dev, stop) = (dev.clone(), stop_agents.clone());
        agents.spawn(async move {
            let stopped = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let _ = dev.run_agent(Duration::from_millis(500), tx, stopped).await;
        });
        let opened = opened.clone();
        agents.spawn(async move {
            while let Some(r) = rx.recv().await {
                if let Some(id) = id_of(&r.payload) {
                    meshward_core::sync::lock(&opened, "opened messages")
                        .entry(id)
                        .or_insert_with(now_us);
                }
            }
        });
    }

    // Warm-up: one message each, to the next device, waited until final. It connects every
    // pair that will talk and fills the caches a steady fleet has.
    p.step("warm-up: one message per device, until final");
    let mut warm = tokio::task::JoinSet::new();
    for (i, dev) in devs.iter().enumerate() {
        let (dev, to) = (dev.clone(), ids[(i + 1) % n]);
        warm.spawn(async move {
            let m = payload((u32::MAX, i as u64));
            dev.send(&to, &[&m], true, Some(Duration::from_secs(60)))
                .await
        });
    }
    let mut warm_failed = Vec::new();
    while let Some(r) = warm.join_next().await {
        if let Err(e) = r.context("a warm-up task panicked")? {
            warm_failed.push(e.to_string());
        }
    }
    if warm_failed.len() > n / 10 {
        bail!(
            "{} of {n} warm-up sends failed; first: {}",
            warm_failed.len(),
            warm_failed[0]
        );
    }

    let apis: Vec<String> = (0..c.file.nodes.len())
        .map(|i| c.api(i).to_string())
        .collect();
    let watcher = Watcher::start(&apis, c.tip(), true)?;
    p.step(format!(
        "{n} devices send batches of {BATCH} for {} s",
        phase.as_secs()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let sent: Arc<Mutex<Vec<SentBatch>>> = Arc::default();
    let start_us = now_us();
    let mut senders = tokio::task::JoinSet::new();
    for (i, dev) in devs.iter().enumerate() {
        let (dev, to) = (dev.clone(), ids[(i + 1) % n]);
        let (stop, failed, first_error, sent) = (
            stop.clone(),
            failed.clone(),
            first_error.clone(),
            sent.clone(),
        );
        senders.spawn(async move {
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let first = next;
                next += BATCH as u64;
                let msgs: Vec<Vec<u8>> = (first..next).map(|k| payload((i as u32, k))).collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                let sealed_us = now_us();
                match dev.send(&to, &refs, true, None).await {
                    Ok(r) => meshward_core::sync::lock(&sent, "sent batches").push(SentBatch {
                        device: i as u32,
                        first,
                        sealed_us,
                        anchor_tx: r.anchor_tx.to_hex(),
                        delivery: r.delivery,
                    }),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        meshward_core::sync::lock(&first_error, "first error")
                            .get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let end_us = now_us();
    while senders.join_next().await.is_some() {}

    // Drain: until every sent batch is final and opened, or the drain's deadline.
    p.step("draining: waiting for the last anchors and deliveries");
    let expected: Vec<(MsgId, usize)> = {
        let s = meshward_core::sync::lock(&sent, "sent batches");
        s.iter()
            .enumerate()
            .flat_map(|(b, sb)| {
                (sb.first..sb.first + BATCH as u64).map(move |k| ((sb.device, k), b))
            })
            .collect()
    };
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline {
        let done = {
            let o = meshward_core::sync::lock(&opened, "opened messages");
            expected.iter().all(|(id, _)| o.contains_key(id))
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anchors are final a block or two after delivery; give the watcher a moment more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_agents.store(true, Ordering::Relaxed);
    let (final_at, _) = watcher.finish();
    while agents.join_next().await.is_some() {}
    for dev in devs {
        if let Ok(d) = Arc::try_unwrap(dev) {
            d.shutdown().await;
        }
    }

    let sent = std::mem::take(&mut *meshward_core::sync::lock(&sent, "sent batches"));
    let opened = std::mem::take(&mut *meshward_core::sync::lock(&opened, "opened messages"));
    let figures = Figures::of(&sent, &opened, &final_at, start_us, end_us);
    let failed = failed.load(Ordering::Relaxed);
    if figures.done_in_phase == 0 {
        bail!(
            "no message was both opened and final during the phase ({} batches sent, {failed} sends failed{})",
            sent.len(),
            meshward_core::sync::lock(&first_error, "first error")
                .as_deref()
                .map_or(String::new(), |e| format!("; first: {e}"))
        );
    }
    p.note(format!(
        "{:.0} msgs/s delivered and final; seal to final p50/p99 {:.0}/{:.0} ms",
        figures.msgs_per_s, figures.final_p50, figures.final_p99
    ));
    Ok(json!({
        "devices": n,
        "validators": c.file.nodes.len(),
        "batch": BATCH,
        "payload_bytes": PAYLOAD_BYTES,
        "phase_s": phase.as_secs_f64(),
        "msgs_per_s": num(figures.msgs_per_s),
        "opened_per_s": num(figures.opened_per_s),
        "final_ms": {"p50": num(figures.final_p50), "p99": num(figures.final_p99)},
        "sent_messages": sent.len() * BATCH,
        "failed_sends": failed,
        "first_error": *meshward_core::sync::lock(&first_error, "first error"),
        "direct_batches": sent.iter().filter(|b| b.delivery == Delivery::Direct).count(),
        "mailbox_batches": sent.iter().filter(|b| b.delivery == Delivery::Mailbox).count(),
        "not_opened_after_drain": figures.not_opened,
        "not_final_after_drain": figures.not_final,
        "warm_up_failures": warm_failed.len(),
    }))
}

/// The figures of one run.
struct Figures {
    /// Messages opened and final inside the phase, per second.
    msgs_per_s: f64,
    /// Messages opened inside the phase, per second (final or not).
    opened_per_s: f64,
    /// Seal to final, ms.
    final_p50: f64,
    /// Seal to final, ms.
    final_p99: f64,
    /// Messages counted in `msgs_per_s`.
    done_in_phase: usize,
    /// Messages sent in the phase that were never opened.
    not_opened: usize,
    /// Messages sent in the phase whose anchor was never seen final.
    not_final: usize,
}

impl Figures {
    fn of(
        sent: &[SentBatch],
        opened: &HashMap<MsgId, u64>,
        final_at: &HashMap<String, u64>,
        start_us: u64,
        end_us: u64,
    ) -> Figures {
        let secs = end_us.saturating_sub(start_us) as f64 / 1e6;
        let inside = |t: u64| t >= start_us && t <= end_us;
        let (mut done_in_phase, mut not_opened, mut not_final) = (0, 0, 0);
        let mut latencies = Vec::new();
        for b in sent {
            let fin = final_at.get(&b.anchor_tx).copied();
            match fin {
                Some(f) => {
                    let ms = f.saturating_sub(b.sealed_us) as f64 / 1e3;
                    latencies.extend(std::iter::repeat_n(ms, BATCH));
                }
                None => not_final += BATCH,
            }
            for k in b.first..b.first + BATCH as u64 {
                match (opened.get(&(b.device, k)), fin) {
                    (Some(&o), Some(f)) if inside(o.max(f)) => done_in_phase += 1,
                    (None, _) => not_opened += 1,
                    _ => {}
                }
            }
        }
        let opened_in_phase = opened
            .iter()
            .filter(|((d, _), t)| *d != u32::MAX && inside(**t))
            .count();
        latencies.sort_by(|a, b| a.total_cmp(b));
        Figures {
            msgs_per_s: done_in_phase as f64 / secs,
            opened_per_s: opened_in_phase as f64 / secs,
            final_p50: percentile(&latencies, 0.5),
            final_p99: percentile(&latencies, 0.99),
            done_in_phase,
            not_opened,
            not_final,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_id() {
        let p = payload((7, 1 << 40));
        assert_eq!(p.len(), PAYLOAD_BYTES);
        assert_eq!(id_of(&p), Some((7, 1 << 40)));
        assert_eq!(id_of(&p[..5]), None);
    }

    #[test]
    fn a_message_counts_once_opened_and_final_inside_the_phase() {
        let sent = vec![
            SentBatch {
                device: 0,
                first: 0,
                sealed_us: 1_000,
                anchor_tx: "a".into(),
                delivery: Delivery::Direct,
            },
            SentBatch {
                device: 1,
                first: 0,
                sealed_us: 2_000,
                anchor_tx: "b".into(),
                delivery: Delivery::Direct,
            },
        ];
        // Batch a: final at 11 ms, every message opened at 5 ms. Batch b: never final, and
        // only its first message opened.
        let final_at = HashMap::from([("a".to_string(), 11_000u64)]);
        let mut opened: HashMap<MsgId, u64> = (0..BATCH as u64).map(|k| ((0, k), 5_000)).collect();
        opened.insert((1, 0), 6_000);
        let f = Figures::of(&sent, &opened, &final_at, 0, 1_000_000);
        assert_eq!(f.done_in_phase, BATCH);
        assert_eq!(f.not_final, BATCH);
        assert_eq!(f.not_opened, BATCH - 1);
        assert_eq!(f.final_p50, 10.0);
        assert!((f.msgs_per_s - BATCH as f64).abs() < 1e-9);
        // A phase that ended before the anchor was final counts nothing.
        assert_eq!(
            Figures::of(&sent, &opened, &final_at, 0, 10_000).done_in_phase,
            0
        );
    }
}
