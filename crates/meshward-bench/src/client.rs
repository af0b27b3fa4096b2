//! `meshward bench client --spec FILE`: the load generator, run as its own process so that
//! signing and sending are not charged to the process that measures.
//!
//! The spec (JSON, written by the bench) names the nodes' APIs and tokens, the devices with
//! their next sequence numbers, how long to run and at what rate. The client signs `Anchor`
//! transactions (each one the root of a batch of `count` envelopes), posts them in batches to
//! `POST /v1/txs`, taking the nodes in turn, and prints a [`ClientReport`] as one JSON line on
//! stdout: what was accepted and when it was sent (wall-clock microseconds, the clock the bench
//! shares), what was refused, and each device's next sequence number.
//!
//! The process is one thread with one [`ApiClient`] per node for the whole run: ureq keeps each
//! connection alive, so the hot loop does not pay a TCP handshake per batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meshward_api::client::{ApiClient, ApiClientError};
use meshward_api::types::TxBatchResult;
use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::hex;
use meshward_core::ids::Keypair;
use meshward_core::tx::{Anchor, Recipient, Tx, TxBody};
use serde::{Deserialize, Serialize};

/// How long one `POST /v1/txs` may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one client process does, written by the bench as JSON.
#[derive(Serialize, Deserialize)]
pub struct ClientSpec {
    /// The chain the transactions are signed for.
    pub chain_id: String,
    /// Node API URLs, with the bearer token of each at the same index.
    pub apis: Vec<String>,
    /// The nodes' bearer tokens.
    pub tokens: Vec<String>,
    /// The devices that sign the load.
    pub devices: Vec<ClientDevice>,
    /// How long to send, in seconds.
    pub secs: f64,
    /// Transactions per second; `None` sends batches back to back.
    pub rate: Option<f64>,
    /// Transactions per POST.
    pub batch: usize,
    /// Envelopes each anchor stands for.
    pub count: u32,
    /// Report each accepted transaction's id and send time (for latency).
    pub record: bool,
}

/// One device of a [`ClientSpec`].
#[derive(Serialize, Deserialize, Clone)]
pub struct ClientDevice {
    /// `Keypair::to_secret_bytes`, hex.
    pub secret: String,
    /// Its next sequence number.
    pub seq: u64,
}

impl ClientDevice {
    /// The spec entry of `kp`, whose next sequence number is `seq`.
    pub fn new(kp: &Keypair, seq: u64) -> ClientDevice {
        ClientDevice {
            secret: hex::encode(&kp.to_secret_bytes()),
            seq,
        }
    }
}

/// What a client process did, printed as one JSON line.
#[derive(Serialize, Deserialize, Default)]
pub struct ClientReport {
    /// Transactions delivered to a node (admitted or refused by it).
    pub sent: u64,
    /// Transactions the nodes admitted.
    pub accepted: u64,
    /// Refusals by the node's error code; `http_error` counts transactions whose request got
    /// no answer (they are resent); a whole batch refused by the node counts under its code.
    pub refused: BTreeMap<String, u64>,
    /// Each device's next sequence number, in spec order.
    pub next_seqs: Vec<u64>,
    /// `(transaction id hex, send time in µs since the epoch)` when `record` was set.
    pub ids: Vec<(String, u64)>,
}

/// Posts `txs` to `node` as one `POST /v1/txs`.
fn post(node: &ApiClient, txs: &[Tx]) -> Result<TxBatchResult, ApiClientError> {
    let encoded: Vec<Vec<u8>> = txs.iter().map(|t| t.to_bytes()).collect();
    node.submit_txs(&encoded)
}

/// Codes after which the refused transaction left a gap: its sender must resend from there.
fn leaves_gap(code: &str) -> bool {
    matches!(
        code,
        "mempool_full" | "sender_quota" | "sequence_too_far_ahead"
    )
}

/// Runs the load described in `spec_path` and returns the report.
pub fn run(spec_path: &Path) -> Result<ClientReport> {
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read the client spec {}", spec_path.display()))?;
    let spec: ClientSpec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a bench client spec", spec_path.display()))?;
    let devices: Vec<Keypair> = spec
        .devices
        .iter()
        .map(|d| {
            let b = hex::decode(&d.secret).context("device secret is not hex")?;
            Keypair::from_secret_bytes(&b).context("device secret is malformed")
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(devices.len() >= 2, "the client needs at least 2 devices");
    anyhow::ensure!(!spec.apis.is_empty(), "the client needs at least one API");
    anyhow::ensure!(
        spec.tokens.len() == spec.apis.len(),
        "the client needs one token per API"
    );
    // One client per node for the whole run, so each keeps its connection alive.
    let nodes: Vec<ApiClient> = spec
        .apis
        .iter()
        .zip(&spec.tokens)
        .map(|(api, token)| {
            Ok(ApiClient::new(api)?
                .with_timeout(POST_TIMEOUT)
                .with_token(token.clone()))
        })
        .collect::<Result<_>>()?;
    let ids: Vec<_> = devices.iter().map(|d| d.id()).collect();
    let mut seqs: Vec<u64> = spec.devices.iter().map(|d| d.seq).collect();
    // Nodes still answering; one that refuses a connection is dropped (a killed validator).
    let mut live: Vec<usize> = (0..spec.apis.len()).collect();
    let mut report = ClientReport::default();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(spec.secs);
    let batch = spec.batch.max(1);
    let mut d = 0usize;
    let mut k = 0usize;
    // A batch whose request failed is resent unchanged to the next node: the node may have
    // admitted and gossiped it before failing, and a different anchor with a sequence number
    // already used would be equivocation, which gateways report and the ledger punishes.
    let mut resend: Option<(Vec<Tx>, Vec<usize>)> = None;
    while Instant::now() < end && !live.is_empty() {
        if let Some(r) = spec.rate {
            let due = start + Duration::from_secs_f64(report.sent as f64 / r.max(0.001));
            if due >= end {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let (txs, who) = match resend.take() {
            Some(again) => again,
            None => next_batch(&spec, &devices, &ids, &mut seqs, &mut d, batch),
        };
        let node = live[k % live.len()];
        k += 1;
        let sent_us = super::now_us();
        let r = post(&nodes[node], &txs);
        report.sent += txs.len() as u64;
        let v = match r {
            Ok(v) => v,
            Err(ApiClientError::Api { code, .. }) => {
                // The node refused the whole request (bad token, bad encoding): nothing was
                // admitted, and resending the same bytes would be refused again.
                *report.refused.entry(code).or_insert(0) += txs.len() as u64;
                continue;
            }
            Err(e) => {
                *report.refused.entry("http_error".into()).or_insert(0) += txs.len() as u64;
                report.sent -= txs.len() as u64;
                if e.is_connect_failure() {
                    live.retain(|&n| n != node);
                }
                resend = Some((txs, who));
                continue;
            }
        };
        report.accepted += v.accepted.len() as u64;
        if spec.record {
            report
                .ids
                .extend(v.accepted.into_iter().map(|h| (h, sent_us)));
        }
        if !v.rejected.is_empty() {
            // Refused for lack of room: resend exactly those transactions (later ones of the
            // same senders may be admitted and wait for them; re-signing would equivocate).
            let mut again: Vec<(Tx, usize)> = Vec::new();
            for r in &v.rejected {
                *report.refused.entry(r.code.clone()).or_insert(0) += 1;
                if leaves_gap(&r.code) && r.index < txs.len() {
                    again.push((txs[r.index].clone(), who[r.index]));
                }
            }
            if !again.is_empty() {
                report.sent -= again.len() as u64;
                resend = Some(again.into_iter().unzip());
            }
            // The nodes are full: give them a moment rather than spinning on refusals.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A batch still to resend gets a few more tries after the phase ends, so the senders'
    // later transactions do not wait on a gap.
    for attempt in 0..3 {
        let Some((txs, _)) = &resend else { break };
        if live.is_empty() {
            break;
        }
        let node = live[(k + attempt) % live.len()];
        let ok = post(&nodes[node], txs).is_ok_and(|v| v.rejected.is_empty());
        if ok {
            resend = None;
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some((txs, who)) = resend {
        // Never delivered: the senders continue from there next time.
        let mut first: BTreeMap<usize, u64> = BTreeMap::new();
        for (tx, &di) in txs.iter().zip(&who) {
            first.entry(di).or_insert(tx.seq);
        }
        for (di, s) in first {
            seqs[di] = s;
        }
    }
    report.next_seqs = seqs;
    Ok(report)
}

/// Signs the next `batch` anchors, round-robin over the devices.
fn next_batch(
    spec: &ClientSpec,
    devices: &[Keypair],
    ids: &[meshward_core::PublicKey],
    seqs: &mut [u64],
    d: &mut usize,
    batch: usize,
) -> (Vec<Tx>, Vec<usize>) {
    let mut txs = Vec::with_capacity(batch);
    let mut who = Vec::with_capacity(batch);
    for _ in 0..batch {
        *d = (*d + 1) % devices.len();
        let to = (*d + 1) % devices.len();
        let body = TxBody::Anchor(Anchor {
            recipient: Recipient::Device(ids[to]),
            commitment: Hash(rand::random()),
            count: spec.count,
            timestamp_ms: meshward_core::clock::now_ms(),
            size_bytes: 256 * u64::from(spec.count),
        });
        txs.push(Tx::sign(
            &spec.chain_id,
            ids[*d],
            &devices[*d].sign,
            seqs[*d],
            body,
        ));
        who.push(*d);
        seqs[*d] += 1;
    }
    (txs, who)
}
