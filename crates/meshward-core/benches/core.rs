//! Core benchmarks: verify-and-apply of signed anchors (one core, with and without Ed25519 batch
//! verification), the raw signature ceiling for comparison, and Merkle proofs.
//!
//! Run: `cargo bench -p meshward-core --bench core`.
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failed unwrap is a broken benchmark"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented pub fn"
)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, SignKey};
use meshward_core::ledger::{apply, execute_block, ApplyCtx};
use meshward_core::merkle;
use meshward_core::state::{AdminSet, State, StateView};
use meshward_core::tx::{
    enroll_body, Anchor, GroupName, Recipient, Tx, TxBody, Validator, ValidatorSet,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const CHAIN: &str = "bench";
const DEVICES: usize = 1000;
const BLOCK: usize = 1024;

/// A state with `DEVICES` enrolled devices, and a block of anchors between them.
fn fleet() -> (State, Vec<Tx>) {
    let mut rng = StdRng::seed_from_u64(1);
    let admin = SignKey::generate(&mut rng);
    let val = SignKey::generate(&mut rng);
    let mut state = State::genesis(
        CHAIN,
        AdminSet::new(vec![admin.public()], 1).unwrap(),
        ValidatorSet::new(vec![Validator {
            key: val.public(),
            power: 1,
        }])
        .unwrap(),
    );
    let ctx = ApplyCtx {
        height: 1,
        time_ms: 1,
    };
    let devices: Vec<Keypair> = (0..DEVICES).map(|_| Keypair::generate(&mut rng)).collect();
    for (i, d) in devices.iter().enumerate() {
        let body = enroll_body(CHAIN, d, vec![GroupName::new("fleet").unwrap()], None);
        let tx = Tx::sign(CHAIN, admin.public(), &admin, i as u64 + 1, body);
        let delta = apply(&state, &tx, &ctx).unwrap();
        state.apply_delta(delta);
    }
    state.flush();
    let txs = (0..BLOCK)
        .map(|i| {
            let from = &devices[i % DEVICES];
            let to = &devices[(i + 1) % DEVICES];
            let seq = state.account(&from.id()).unwrap().seq + 1 + (i / DEVICES) as u64;
            let body = TxBody::Anchor(Anchor {
                recipient: Recipient::Device(to.id()),
                commitment: Hash([i as u8; 32]),
                count: 1,
                timestamp_ms: 2,
                size_bytes: 300,
            });
            Tx::sign(CHAIN, from.id(), &from.sign, seq, body)
        })
        .collect();
    (state, txs)
}

fn anchors(c: &mut Criterion) {
    let (state, txs) = fleet();
    let ctx = ApplyCtx {
        height: 2,
        time_ms: 2,
    };
    let mut g = c.benchmark_group("anchors");
    g.throughput(Throughput::Elements(BLOCK as u64));
    for batch in [false, true] {
        let name = if batch { "batch" } else { "single" };
        g.bench_function(BenchmarkId::new("verify_apply_block", name), |b| {
            b.iter_batched(
                || state.clone(),
                |mut s| {
                    execute_block(&mut s, &txs, &ctx, batch).unwrap();
                    s.flush().root
                },
                BatchSize::LargeInput,
            )
        });
    }
    // The machine's own ceiling on this core, for the ratio: batch verification alone.
    let msgs: Vec<Vec<u8>> = txs.iter().map(|t| t.signing_bytes(CHAIN)).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let sigs: Vec<ed25519_dalek::Signature> = txs
        .iter()
        .map(|t| ed25519_dalek::Signature::from_bytes(&t.sig.0))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = txs
        .iter()
        .map(|t| t.signer.verifying_key().unwrap())
        .collect();
    g.bench_function("ed25519_verify_batch_only", |b| {
        b.iter(|| ed25519_dalek::verify_batch(&refs, &sigs, &keys).unwrap())
    });
    g.finish();
}

fn merkle_proofs(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    for n in [1024usize, 65_536] {
        let leaves: Vec<Hash> = (0..n as u64)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        let root = merkle::root_of(&leaves);
        g.bench_function(BenchmarkId::new("root", n), |b| {
            b.iter(|| merkle::root_of(&leaves))
        });
        g.bench_function(BenchmarkId::new("prove", n), |b| {
            b.iter(|| merkle::prove(&leaves, n / 3).unwrap())
        });
        let proof = merkle::prove(&leaves, n / 3).unwrap();
        g.bench_function(BenchmarkId::new("verify", n), |b| {
            b.iter(|| proof.verify(&leaves[n / 3], &root, n as u64).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, anchors, merkle_proofs);
criterion_main!(benches);
