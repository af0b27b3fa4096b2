//! `direct` part: device-to-device delivery of 256-byte payloads over the mesh's
//! request-response protocol, with everything a real delivery does on both sides.
//!
//! Two device SDK clients (two libp2p nodes, TCP + Noise + Yamux on 127.0.0.1) run in this
//! process. For each message the sender seals (one-shot HPKE, or a message of an HPKE session)
//! and signs, sends a `Deliver` request and waits for the answer; the receiver decodes, verifies
//! the sender's signature, checks replay, decrypts, and answers `Delivered`. Latency is measured
//! with one message in flight, one way: from before the sender seals until the recipient has
//! opened the message, as the `mqtt` part measures publish to receipt (`round_trip_us` adds the
//! answer's way back). Throughput is measured with a window of messages in flight. For the
//! breakdown, `crypto_us` is seal plus open on one thread, and `transport_rtt_us` a round trip
//! with nothing sealed or opened. `session_batch` is session throughput as `Device::send`
//! delivers a batch: 32 envelopes per `DeliverBatch` request, two requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshward_core::envelope::{seal_oneshot, Envelope, Receiver, SendSession};
use meshward_core::ids::Keypair;
use meshward_core::rpc::{refusal, Request, Response};
use meshward_sdk::client::{Client, ClientConfig, DeviceIdentity};
use serde_json::{json, Value};

use crate::percentile;

/// Payload size of every message, the same as the MQTT comparison.
const PAYLOAD_BYTES: usize = 256;
/// Messages in flight in the throughput phase.
const WINDOW: usize = 32;
/// Envelopes per `DeliverBatch` in the batched phase, as the fleet bench sends them.
const BATCH: usize = 32;
/// `DeliverBatch` requests in flight in the batched phase.
const BATCH_WINDOW: usize = 2;

/// Runs the direct-delivery benchmark and returns the `direct` object of results.json:
/// `{"session": {"msgs_per_s", "latency_us": {"p50","p99"}}, "oneshot": {...}}`.
pub(crate) fn run(quick: bool, _base_port: u16) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(bench(quick))
}

/// (envelope seq, when the recipient opened it).
type OpenedLog = Vec<(u64, Instant)>;

/// How the sender seals.
enum Sealer {
    /// Each envelope with its own HPKE setup.
    OneShot,
    /// Every envelope under one HPKE session.
    Session(Box<SendSession>),
}

/// The sending end and what it needs to reach the receiver.
struct Ends {
    /// The sending device's mesh client.
    sender: Client,
    /// The sender's keys.
    a: Keypair,
    /// The receiver's keys (their public halves are what the sender seals to).
    b: Keypair,
    /// The receiver's peer id.
    b_peer: meshward_net::PeerId,
}

impl Ends {
    /// A sealer for `mode`: `session` for an HPKE session, anything else one-shot.
    fn sealer(&self, mode: &str) -> Result<Sealer> {
        Ok(match mode {
            "session" => Sealer::Session(Box::new(SendSession::new(
                &mut rand::rngs::OsRng,
                &self.a,
                self.b.id(),
                &self.b.enc_key(),
            )?)),
            _ => Sealer::OneShot,
        })
    }

    /// Seals `payload` to the receiver as envelope `seq`.
    fn seal(&self, sealer: &mut Sealer, seq: u64, payload: &[u8]) -> Result<Envelope> {
        Ok(match sealer {
            Sealer::OneShot => seal_oneshot(
                &mut rand::rngs::OsRng,
                &self.a,
                self.b.id(),
                &self.b.enc_key(),
                seq,
                0,
                payload,
            )?,
            Sealer::Session(s) => s.seal(seq, 0, payload)?,
        })
    }

    /// Sends one `Deliver` request and waits for the receiver's `Delivered`.
    async fn deliver(&self, env: Envelope) -> Result<()> {
        match self
            .sender
            .request_peer(self.b_peer, &Request::Deliver(env))
            .await?
        {
            Response::Delivered => Ok(()),
            other => bail!("the receiver refused a message: {other:?}"),
        }
    }

    /// Sends one `DeliverBatch` and checks the receiver opened all of it.
    async fn deliver_batch(&self, envs: Vec<Envelope>) -> Result<u64> {
        let n = envs.len() as u32;
        match self
            .sender
            .request_peer(self.b_peer, &Request::DeliverBatch(envs))
            .await?
        {
            Response::DeliveredBatch {
                delivered,
                refused: None,
            } if delivered == n => Ok(u64::from(n)),
            other => bail!("the receiver refused a batch: {other:?}"),
        }
    }
}

/// A client on a fixed chain id with no gateways: the two ends talk directly.
fn client_config() -> ClientConfig {
    ClientConfig::new(Some("bench-direct".into()), Vec::new())
}

/// Starts both ends and measures latency and throughput for one-shot and session envelopes.
async fn bench(quick: bool) -> Result<Value> {
    let a = Keypair::generate(&mut rand::rngs::OsRng);
    let b = Keypair::generate(&mut rand::rngs::OsRng);
    let sender = Client::start(DeviceIdentity::new(a.clone()), client_config()).await?;
    let receiver = Client::start(DeviceIdentity::new(b.clone()), client_config()).await?;
    let b_addrs = receiver.net().listen_addrs().await;
    let b_peer = meshward_net::peer_id_of(&b.id());
    sender.net().dial_peer(b_peer, b_addrs).await?;

    // The receiving device: verify, replay-check, open, answer.
    let mut requests = receiver
        .take_requests()
        .context("the receiver's request queue")?;
    let a_vk = a.sign.verifying_key();
    let receiver_keys = b.clone();
    // When the receiver opened each message, while the latency loops run.
    let opened: Arc<Mutex<Option<OpenedLog>>> = Arc::new(Mutex::new(None));
    let opened_log = opened.clone();
    let recv_task = tokio::spawn(async move {
        let mut inbox = Receiver::new(&receiver_keys);
        while let Some(inc) = requests.recv().await {
            let resp = match &inc.request {
                // All or nothing, as a device opens a batch.
                Request::DeliverBatch(envs) => match inbox.open_batch(envs, &a_vk) {
                    Ok(opened) if opened.iter().all(|o| o.payload.len() == PAYLOAD_BYTES) => {
                        Response::DeliveredBatch {
                            delivered: opened.len() as u32,
                            refused: None,
                        }
                    }
                    Ok(_) => Response::DeliveredBatch {
                        delivered: 0,
                        refused: Some(refusal("bad_payload", "unexpected payload size")),
                    },
                    Err((_, e)) => Response::DeliveredBatch {
                        delivered: 0,
                        refused: Some(refusal("refused", &e.to_string())),
                    },
                },
                Request::Deliver(env) => match inbox.open(env, &a_vk) {
                    Ok(o) if o.payload.len() == PAYLOAD_BYTES => {
                        let at = Instant::now();
                        if let Some(log) =
                            meshward_core::sync::lock(&opened_log, "opened log").as_mut()
                        {
                            log.push((o.seq, at));
                        }
                        Response::Delivered
                    }
                    Ok(_) => Response::error("bad_payload", "unexpected payload size"),
                    Err(e) => Response::error("refused", &e.to_string()),
                },
                _ => Response::error("unsupported", "deliveries only"),
            };
            receiver.respond(inc.id, &resp).await;
        }
    });

    let ends = Arc::new(Ends {
        sender,
        a,
        b,
        b_peer,
    });
    let (lat_n, phase) = if quick {
        (300, Duration::from_secs(2))
    } else {
        (2000, Duration::from_secs(8))
    };
    let mut out = json!({
        "payload_bytes": PAYLOAD_BYTES,
        "window": WINDOW,
        "topology": "two device SDK clients in one process, libp2p TCP+Noise+Yamux over 127.0.0.1",
    });
    // The transport alone: a request the receiver answers at once, nothing sealed or opened.
    let mut rtt_us = Vec::with_capacity(lat_n);
    for _ in 0..lat_n {
        let t = Instant::now();
        ends.sender
            .request_peer(ends.b_peer, &Request::Info)
            .await?;
        rtt_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtt_us.sort_by(|x, y| x.total_cmp(y));
    out["transport_rtt_us"] = json!({
        "p50": percentile(&rtt_us, 0.5),
        "p99": percentile(&rtt_us, 0.99),
        "what": "an Info request the receiver refuses at once: the round trip without sealing, signing, verifying or opening",
    });
    let mut seq = 0u64;
    for mode in ["oneshot", "session"] {
        let mut sealer = ends.sealer(mode)?;
        // Latency: one message in flight. One way, from before the sender seals until the
        // recipient has opened it (as the mqtt part measures publish to receipt); the round
        // trip adds the `Delivered` answer travelling back.
        *meshward_core::sync::lock(&opened, "opened log") = Some(Vec::with_capacity(lat_n));
        let mut sent = Vec::with_capacity(lat_n);
        let mut rtt_us = Vec::with_capacity(lat_n);
        for _ in 0..lat_n {
            seq += 1;
            let t = Instant::now();
            let env = ends.seal(&mut sealer, seq, &[0x5a; PAYLOAD_BYTES])?;
            ends.deliver(env).await?;
            rtt_us.push(t.elapsed().as_secs_f64() * 1e6);
            sent.push((seq, t));
        }
        let log = meshward_core::sync::lock(&opened, "opened log")
            .take()
            .unwrap_or_default();
        let at: HashMap<u64, Instant> = log.into_iter().collect();
        let mut lat_us: Vec<f64> = sent
            .iter()
            .filter_map(|(s, t)| Some(at.get(s)?.duration_since(*t).as_secs_f64() * 1e6))
            .collect();
        if lat_us.len() != sent.len() {
            bail!(
                "the receiver logged {} of {} delivered messages",
                lat_us.len(),
                sent.len()
            );
        }
        lat_us.sort_by(|x, y| x.total_cmp(y));
        rtt_us.sort_by(|x, y| x.total_cmp(y));
        // The cryptography alone, on this thread: seal and sign, then verify, replay-check and
        // open, with no network in between.
        // A sealer and receiver of their own, so the delivered session is left as it was.
        let mut local = ends.sealer(mode)?;
        let mut inbox = Receiver::new(&ends.b);
        let a_vk = ends.a.sign.verifying_key();
        let mut crypto_us = Vec::with_capacity(lat_n);
        for local_seq in 1..=lat_n as u64 {
            let t = Instant::now();
            let env = ends.seal(&mut local, local_seq, &[0x5a; PAYLOAD_BYTES])?;
            inbox.open(&env, &a_vk)?;
            crypto_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        crypto_us.sort_by(|x, y| x.total_cmp(y));
        // Throughput: WINDOW messages in flight, sealed in order. The window slides in order
        // (the oldest answer is awaited first), so the messages in flight are always WINDOW
        // consecutive seqs and arrive at most that far out of order, inside the recipient's
        // replay window, as over a stream with WINDOW credits.
        let start = Instant::now();
        let mut inflight = std::collections::VecDeque::with_capacity(WINDOW);
        let mut done = 0u64;
        while start.elapsed() < phase {
            while inflight.len() < WINDOW {
                seq += 1;
                let env = ends.seal(&mut sealer, seq, &[0x5a; PAYLOAD_BYTES])?;
                let e2 = ends.clone();
                inflight.push_back(tokio::spawn(async move { e2.deliver(env).await }));
            }
            if let Some(oldest) = inflight.pop_front() {
                oldest.await.context("delivery task")??;
                done += 1;
            }
        }
        for oldest in inflight {
            oldest.await.context("delivery task")??;
            done += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        out[mode] = json!({
            "msgs_per_s": done as f64 / secs,
            "latency_us": { "p50": percentile(&lat_us, 0.5), "p99": percentile(&lat_us, 0.99) },
            "latency_samples": lat_n,
            "round_trip_us": { "p50": percentile(&rtt_us, 0.5), "p99": percentile(&rtt_us, 0.99) },
            "crypto_us": { "p50": percentile(&crypto_us, 0.5), "p99": percentile(&crypto_us, 0.99) },
            "delivered": done,
        });
    }
    // Session envelopes as `Device::send` delivers a batch: BATCH a request, BATCH_WINDOW
    // requests in flight.
    // The window slides in order, as above: BATCH_WINDOW × BATCH consecutive seqs in flight.
    // The first batch, which opens the session, goes alone: a later one overtaking it would
    // name a session the receiver does not know yet.
    let mut sealer = ends.sealer("session")?;
    let start = Instant::now();
    let mut inflight = std::collections::VecDeque::with_capacity(BATCH_WINDOW);
    let mut done = 0u64;
    let mut first = Vec::with_capacity(BATCH);
    for _ in 0..BATCH {
        seq += 1;
        first.push(ends.seal(&mut sealer, seq, &[0x5a; PAYLOAD_BYTES])?);
    }
    done += ends.deliver_batch(first).await?;
    while start.elapsed() < phase {
        while inflight.len() < BATCH_WINDOW {
            let mut envs = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                seq += 1;
                envs.push(ends.seal(&mut sealer, seq, &[0x5a; PAYLOAD_BYTES])?);
            }
            let e2 = ends.clone();
            inflight.push_back(tokio::spawn(async move { e2.deliver_batch(envs).await }));
        }
        if let Some(oldest) = inflight.pop_front() {
            done += oldest.await.context("delivery task")??;
        }
    }
    for oldest in inflight {
        done += oldest.await.context("delivery task")??;
    }
    out["session_batch"] = json!({
        "msgs_per_s": done as f64 / start.elapsed().as_secs_f64(),
        "batch": BATCH,
        "batches_in_flight": BATCH_WINDOW,
        "delivered": done,
    });
    recv_task.abort();
    if let Ok(e) = Arc::try_unwrap(ends) {
        e.sender.shutdown().await;
    }
    Ok(out)
}
