//! `crypto` part: the machine's own ceiling, measured in this process.
//!
//! - Ed25519 batch verification (`ed25519_dalek::verify_batch`, batches of [`BATCH`]
//!   signatures over anchor-sized messages from distinct keys) on one core, then on every core
//!   at once (one thread per core from `available_parallelism`).
//! - HPKE envelopes of [`PAYLOAD_BYTES`]: one-shot seal and open, session seal and open.
//!
//! Each figure runs for a fixed time per round and is the median of several rounds.
//! `ceiling.anchors_per_s` is the all-core verify rate divided by [`VALIDATORS`]: on one machine
//! every validator verifies every anchor, so that is the most anchors the machine could finalise
//! if verifying signatures were all it did.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ed25519_dalek::{Signature, VerifyingKey};
use meshward_core::envelope::{seal_oneshot, Envelope, Receiver, SendSession};
use meshward_core::ids::{Keypair, SignKey};
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::json;

use crate::{median, Outcome, Progress};

/// Signatures per batch verification.
const BATCH: usize = 64;
/// Bytes of each signed message, about an anchor transaction's signing bytes.
const MSG_BYTES: usize = 160;
/// Envelope payload size, the same as the MQTT comparison.
const PAYLOAD_BYTES: usize = 256;
/// The validators of the consensus benchmark, each verifying every anchor.
pub(crate) const VALIDATORS: usize = 4;

/// How long each rate is measured: `rounds` rounds of `round` each, the median kept.
struct Rounds {
    /// How many rounds.
    rounds: usize,
    /// How long one round lasts.
    round: Duration,
}

/// Calls `f` (which returns how many operations it did) until `round` has passed; returns
/// operations per second.
fn timed(round: Duration, mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < round {
        n += f();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The median rate over the rounds.
fn median_rate(r: &Rounds, mut f: impl FnMut() -> u64) -> f64 {
    let rates: Vec<f64> = (0..r.rounds).map(|_| timed(r.round, &mut f)).collect();
    median(&rates)
}

/// A batch of signed messages from distinct keys.
struct SigBatch {
    /// [`BATCH`] random messages of [`MSG_BYTES`] bytes.
    msgs: Vec<Vec<u8>>,
    /// Each message's signature, at the same index.
    sigs: Vec<Signature>,
    /// Each signer's key, at the same index.
    keys: Vec<VerifyingKey>,
}

impl SigBatch {
    /// [`BATCH`] messages, each signed by a fresh key.
    fn new() -> SigBatch {
        let mut msgs = Vec::with_capacity(BATCH);
        let mut sigs = Vec::with_capacity(BATCH);
        let mut keys = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let k = SignKey::generate(&mut OsRng);
            let mut m = vec![0u8; MSG_BYTES];
            OsRng.fill_bytes(&mut m);
            sigs.push(Signature::from_bytes(&k.sign(&m).0));
            keys.push(k.verifying_key());
            msgs.push(m);
        }
        SigBatch { msgs, sigs, keys }
    }

    /// Verifies the batch once; returns the number of signatures checked.
    fn verify(&self) -> u64 {
        let refs: Vec<&[u8]> = self.msgs.iter().map(|m| m.as_slice()).collect();
        ed25519_dalek::verify_batch(&refs, &self.sigs, &self.keys)
            .expect("the batch was signed correctly a moment ago");
        BATCH as u64
    }
}

/// Signatures per second on `threads` threads at once, each with its own batch; the median over
/// rounds of the summed rate.
fn verify_rate(threads: usize, r: &Rounds) -> Result<f64> {
    let mut totals = Vec::with_capacity(r.rounds);
    for _ in 0..r.rounds {
        let round = r.round;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    let b = SigBatch::new();
                    timed(round, || b.verify())
                })
            })
            .collect();
        let mut sum = 0.0;
        for h in handles {
            sum += h
                .join()
                .map_err(|_| anyhow::anyhow!("a verify thread panicked"))?;
        }
        totals.push(sum);
    }
    Ok(median(&totals))
}

/// HPKE seal/open rates on one core: one-shot and session.
fn hpke_rates(r: &Rounds) -> Result<serde_json::Value> {
    let alice = Keypair::generate(&mut OsRng);
    let bob = Keypair::generate(&mut OsRng);
    let alice_vk = alice.sign.verifying_key();
    let payload = [0x5au8; PAYLOAD_BYTES];

    let mut seq = 0u64;
    let oneshot_seal = median_rate(r, || {
        seq += 1;
        seal_oneshot(
            &mut OsRng,
            &alice,
            bob.id(),
            &bob.enc_key(),
            seq,
            0,
            &payload,
        )
        .expect("sealing to a valid key does not fail");
        1
    });
    let envs: Vec<Envelope> = (1..=BATCH as u64)
        .map(|seq| {
            seal_oneshot(
                &mut OsRng,
                &alice,
                bob.id(),
                &bob.enc_key(),
                seq,
                0,
                &payload,
            )
        })
        .collect::<Result<_, _>>()
        .context("sealing one-shot envelopes")?;
    // A fresh receiver per batch, so the replay guard accepts every envelope.
    let open_batch = |envs: &[Envelope]| {
        let mut rx = Receiver::new(&bob);
        for e in envs {
            rx.open(e, &alice_vk)
                .expect("envelopes sealed to this receiver open");
        }
        envs.len() as u64
    };
    let oneshot_open = median_rate(r, || open_batch(&envs));

    let mut tx = SendSession::new(&mut OsRng, &alice, bob.id(), &bob.enc_key())
        .context("starting a session")?;
    let mut seq = 0u64;
    let session_seal = median_rate(r, || {
        seq += 1;
        tx.seal(seq, 0, &payload)
            .expect("sealing in a live session does not fail");
        1
    });
    let mut tx = SendSession::new(&mut OsRng, &alice, bob.id(), &bob.enc_key())
        .context("starting a session")?;
    let envs: Vec<Envelope> = (1..=BATCH as u64)
        .map(|seq| tx.seal(seq, 0, &payload))
        .collect::<Result<_, _>>()
        .context("sealing session envelopes")?;
    let session_open = median_rate(r, || open_batch(&envs));
    Ok(json!({
        "payload_bytes": PAYLOAD_BYTES,
        "oneshot_seal_per_s": oneshot_seal,
        "oneshot_open_per_s": oneshot_open,
        "session_seal_per_s": session_seal,
        "session_open_per_s": session_open,
        "session_note": format!("session opens are per {BATCH}-envelope session: one HPKE setup, then symmetric opens"),
    }))
}

/// Runs the `crypto` part: batch verification on one core and on all, and HPKE rates. Its
/// `ceiling` (verifications on all cores shared by [`VALIDATORS`]) becomes the top-level
/// `ceiling` of `results.json`.
pub(crate) fn run(quick: bool, p: &Progress) -> Result<Outcome> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = if quick {
        Rounds {
            rounds: 3,
            round: Duration::from_millis(400),
        }
    } else {
        Rounds {
            rounds: 7,
            round: Duration::from_secs(1),
        }
    };
    p.step(format!(
        "Ed25519 batch verify, 1 core ({} rounds)",
        r.rounds
    ));
    let one = verify_rate(1, &r)?;
    p.step(format!("Ed25519 batch verify, {cores} cores"));
    let all = verify_rate(cores, &r)?;
    p.note(format!(
        "verify_batch: {one:.0}/s on 1 core, {all:.0}/s on {cores} cores"
    ));
    p.step("HPKE seal/open");
    let hpke = hpke_rates(&r)?;
    Ok(Outcome::Done(json!({
        "cores": cores,
        "batch_size": BATCH,
        "rounds": r.rounds,
        "round_seconds": r.round.as_secs_f64(),
        "verify_batch_per_s_per_core": one,
        "verify_batch_per_s_all_cores": all,
        "hpke": hpke,
        "ceiling": {
            "cores": cores,
            "validators": VALIDATORS,
            "verify_batch_per_s_per_core": one,
            "verify_batch_per_s_all_cores": all,
            "anchors_per_s": all / VALIDATORS as f64,
        },
    })))
}
