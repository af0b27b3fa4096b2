//! `mqtt` part: the baseline that direct delivery is compared with. Debian's Mosquitto broker,
//! started by the bench on 127.0.0.1 on a free port with a minimal config, one rumqttc
//! publisher and one rumqttc subscriber (each its own connection), [`PAYLOAD_BYTES`]-byte
//! payloads at QoS 1.
//!
//! - Latency: one message in flight; publish, wait until the subscriber has it, repeat.
//! - Throughput: the publisher sends as fast as the client lets it for a fixed time; only
//!   messages the subscriber actually received within that time are counted.
//!
//! The broker is stopped by its PID: SIGTERM, then SIGKILL after a deadline.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::{percentile, Outcome, Progress};

/// Payload size of every message, the same as the `direct` part's.
pub(crate) const PAYLOAD_BYTES: usize = 256;
/// The one topic published and subscribed to.
const TOPIC: &str = "meshward/bench";
/// How to get the broker when it is missing.
pub(crate) const INSTALL_HINT: &str = "mosquitto is not installed; install it with `apt-get install -y mosquitto` (Debian/Ubuntu), then run `meshward bench mqtt` again";

/// Finds the `mosquitto` binary: on PATH, or where Debian puts it (`/usr/sbin`, often not on a
/// user's PATH).
pub(crate) fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// A running broker; stopped (SIGTERM, then SIGKILL) on drop.
struct Broker {
    /// The broker process; `None` once it exited or was stopped.
    child: Option<Child>,
    /// The port it listens on, on 127.0.0.1.
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            meshward_devnet::stop_children(&mut [c], Duration::from_secs(3));
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// Starts Mosquitto from `bin` with its config and log in `dir`, and waits (up to 10 s) until
/// it accepts connections.
fn start_broker(bin: &Path, dir: &Path) -> Result<Broker> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    let mut f =
        std::fs::File::create(&conf).with_context(|| format!("cannot write {}", conf.display()))?;
    write!(
        f,
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )?;
    drop(f);
    let log_path = dir.join("mosquitto.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut b = Broker {
        child: Some(child),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(b);
        }
        if let Some(Ok(Some(status))) = b.child.as_mut().map(|c| c.try_wait()) {
            b.child = None;
            bail!(
                "mosquitto exited at start ({status}): {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        if Instant::now() > deadline {
            bail!("mosquitto did not listen on 127.0.0.1:{port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Client options for client id `id` on 127.0.0.1's `port`, with a 30 s keep-alive.
pub(crate) fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Sequence numbers from here on are throughput messages: the subscriber counts them rather
/// than reporting each.
const THROUGHPUT_BASE: u64 = 1 << 40;

/// What the subscriber thread reports: each latency-phase arrival on a bounded channel (one
/// message is in flight then), and a count of the throughput messages that arrived before the
/// window's end.
pub(crate) struct Arrivals {
    /// Latency-phase arrivals: when, and the message's sequence number.
    latency: mpsc::Receiver<(Instant, u64)>,
    /// The end of the throughput window, set when the window starts.
    window_end: Arc<OnceLock<Instant>>,
    /// Throughput messages received before `window_end`.
    in_window: Arc<AtomicU64>,
}

/// Starts the subscriber on `topic`; returns its client and what it reports.
pub(crate) fn subscriber(opts: MqttOptions, topic: &str) -> Result<(Client, Arrivals)> {
    let (client, mut conn) = Client::new(opts, 1000);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .context("subscribing")?;
    // One message is in flight during the latency phase; the bound only absorbs stragglers.
    let (tx, rx) = mpsc::sync_channel(1024);
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let window_end: Arc<OnceLock<Instant>> = Arc::default();
    let in_window: Arc<AtomicU64> = Arc::default();
    let (end, count) = (window_end.clone(), in_window.clone());
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    let seq = p
                        .payload
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(u64::MAX, u64::from_be_bytes);
                    if seq >= THROUGHPUT_BASE {
                        if end.get().is_some_and(|e| now < *e) {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if tx.try_send((now, seq)).is_err() {
                        // Full (a straggler nobody waits for) or closed: drop it.
                        continue;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(_) => {}
                // The broker stopped or the client disconnected.
                Err(_) => break,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the subscriber got no SUBACK within 10 s")?;
    Ok((
        client,
        Arrivals {
            latency: rx,
            window_end,
            in_window,
        },
    ))
}

/// Starts the publisher and the thread that drives its connection.
pub(crate) fn publisher(opts: MqttOptions) -> Client {
    let (client, mut conn) = Client::new(opts, 100);
    std::thread::spawn(move || {
        for ev in conn.iter() {
            if ev.is_err() {
                break;
            }
        }
    });
    client
}

/// A [`PAYLOAD_BYTES`]-byte payload whose first 8 bytes are `seq`, big-endian.
fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD_BYTES];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Runs the `mqtt` part, or skips it with [`INSTALL_HINT`] when Mosquitto is missing.
pub(crate) fn run(quick: bool, p: &Progress) -> Result<Outcome> {
    let Some(bin) = find_mosquitto() else {
        p.note(INSTALL_HINT);
        return Ok(Outcome::Skipped(INSTALL_HINT.into()));
    };
    let dir = tempfile::Builder::new()
        .prefix("meshward-bench-mqtt-")
        .tempdir()
        .context("cannot create a temp dir")?;
    p.step(format!("starting {}", bin.display()));
    let broker = start_broker(&bin, dir.path())?;
    let (sub, arrivals) = subscriber(options("meshward-bench-sub", broker.port), TOPIC)?;
    let publ = publisher(options("meshward-bench-pub", broker.port));

    let qos1 = measure(&publ, &arrivals, TOPIC, quick, "mosquitto", p)?;
    let _ = publ.disconnect();
    let _ = sub.disconnect();
    drop(broker);
    Ok(Outcome::Done(json!({
        "broker": bin,
        "payload_bytes": PAYLOAD_BYTES,
        "qos1": qos1,
    })))
}

/// Latency (one message in flight, publish to arrival at the subscriber) then throughput
/// (publishing as fast as the client lets it for a fixed time, counting what arrived within
/// it) of QoS 1 messages published on `topic`. `what` names the broker in progress lines.
pub(crate) fn measure(
    publ: &Client,
    arrivals: &Arrivals,
    topic: &str,
    quick: bool,
    what: &str,
    p: &Progress,
) -> Result<serde_json::Value> {
    let (warmup, rounds, secs) = if quick {
        (50, 500, 2.0)
    } else {
        (200, 3000, 5.0)
    };
    p.step(format!(
        "latency: {rounds} round trips, one message in flight"
    ));
    let mut lat_us = Vec::with_capacity(rounds);
    for i in 0..(warmup + rounds) as u64 {
        let t = Instant::now();
        publ.publish(topic, QoS::AtLeastOnce, false, payload(i))
            .context("publishing")?;
        loop {
            let (at, seq) = arrivals
                .latency
                .recv_timeout(Duration::from_secs(5))
                .context("the subscriber did not receive a message within 5 s")?;
            if seq == i {
                if i >= warmup as u64 {
                    lat_us.push(at.duration_since(t).as_secs_f64() * 1e6);
                }
                break;
            }
        }
    }
    lat_us.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&lat_us, 0.5), percentile(&lat_us, 0.99));
    p.note(format!(
        "{what}: QoS 1 latency p50/p99: {p50:.0}/{p99:.0} µs"
    ));

    p.step(format!("throughput: publishing for {secs} s"));
    let base = THROUGHPUT_BASE;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let _ = arrivals.window_end.set(end);
    let mut published = 0u64;
    while Instant::now() < end {
        publ.publish(topic, QoS::AtLeastOnce, false, payload(base + published))
            .context("publishing")?;
        published += 1;
    }
    // Only what arrived before `end` counts; the subscriber thread counted it. Pausing here
    // lets it handle messages that arrived in time but were still queued.
    std::thread::sleep(Duration::from_millis(500));
    let received = arrivals.in_window.load(Ordering::Relaxed);
    let msgs_per_s = received as f64 / secs;
    p.note(format!(
        "{what}: QoS 1 throughput: {msgs_per_s:.0} msgs/s received ({published} published)"
    ));
    Ok(json!({
        "msgs_per_s": msgs_per_s,
        "published": published,
        "received": received,
        "seconds": secs,
        "latency_us": {"p50": p50, "p99": p99},
        "latency_round_trips": rounds,
    }))
}
