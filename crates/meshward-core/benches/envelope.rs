//! Envelope seal/open throughput for 256-byte payloads, one-shot and session mode.
//!
//! Run: `cargo bench -p meshward-core --bench envelope`. Open benches pre-seal envelopes with
//! increasing seqs and open them with a fresh `Receiver` per batch, so the replay guard accepts
//! every one and the measured time is signature check + decryption + bookkeeping.
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failed unwrap is a broken benchmark"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented pub fn"
)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meshward_core::envelope::{seal_oneshot, Envelope, Receiver, SendSession};
use meshward_core::ids::Keypair;
use rand::rngs::OsRng;

const PAYLOAD_BYTES: usize = 256;
/// Envelopes opened per batch (each batch gets a fresh receiver).
const BATCH: u64 = 64;

fn oneshot(c: &mut Criterion) {
    let alice = Keypair::generate(&mut OsRng);
    let bob = Keypair::generate(&mut OsRng);
    let payload = [0x5au8; PAYLOAD_BYTES];
    let alice_vk = alice.sign.verifying_key();

    let mut g = c.benchmark_group("oneshot");
    g.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    g.bench_function("seal", |b| {
        b.iter(|| {
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
            .unwrap()
        })
    });
    let envs: Vec<Envelope> = (1..=BATCH)
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
            .unwrap()
        })
        .collect();
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("open", |b| {
        b.iter_batched_ref(
            || Receiver::new(&bob),
            |rx| {
                for env in &envs {
                    rx.open(env, &alice_vk).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn session(c: &mut Criterion) {
    let alice = Keypair::generate(&mut OsRng);
    let bob = Keypair::generate(&mut OsRng);
    let payload = [0x5au8; PAYLOAD_BYTES];
    let alice_vk = alice.sign.verifying_key();

    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    let mut tx = SendSession::new(&mut OsRng, &alice, bob.id(), &bob.enc_key()).unwrap();
    let mut seq = 0u64;
    g.bench_function("seal", |b| {
        b.iter(|| {
            seq += 1;
            tx.seal(seq, 0, &payload).unwrap()
        })
    });
    // The first envelope is the SessionOpen (one key agreement); the rest are plain Session
    // messages, so per-batch cost is one HPKE setup plus BATCH - 1 symmetric opens.
    let mut tx = SendSession::new(&mut OsRng, &alice, bob.id(), &bob.enc_key()).unwrap();
    let envs: Vec<Envelope> = (1..=BATCH)
        .map(|seq| tx.seal(seq, 0, &payload).unwrap())
        .collect();
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("open", |b| {
        b.iter_batched_ref(
            || Receiver::new(&bob),
            |rx| {
                for env in &envs {
                    rx.open(env, &alice_vk).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, oneshot, session);
criterion_main!(benches);
