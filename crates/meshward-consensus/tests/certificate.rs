//! A certificate Malachite decides is a Meshward certificate that `meshward-core` checks alone.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use malachitebft_core_types::{
    CommitCertificate, CommitSignature, Context, NilOrVal, Round, SignedMessage,
};
use malachitebft_signing::Signer;
use meshward_consensus::cert::{to_core_certificate, to_engine_certificate};
use meshward_consensus::context::{Address, BlockHash, Height, MeshwardContext};
use meshward_consensus::proposer::ProposerHistory;
use meshward_consensus::signing::MeshwardSigner;
use meshward_core::block::{BlockHeader, CertError};
use meshward_core::hash::Hash;
use meshward_core::ids::{PublicKey, SignKey};
use meshward_core::tx::{Validator, ValidatorSet};

fn header(height: u64) -> BlockHeader {
    BlockHeader {
        chain_id: "cert-chain".into(),
        height,
        prev_hash: Hash([1; 32]),
        time_ms: 1_700_000_000_000,
        proposer: PublicKey([2; 32]),
        tx_root: Hash([3; 32]),
        tx_count: 0,
        state_root: Hash([4; 32]),
        validator_set_hash: Hash([5; 32]),
        last_commit_hash: Hash::ZERO,
    }
}

/// Precommits signed through the engine's `Signer`, gathered as Malachite gathers them.
async fn engine_certificate(
    keys: &[SignKey],
    header: &BlockHeader,
    round: u32,
) -> CommitCertificate<MeshwardContext> {
    let ctx = MeshwardContext::new("cert-chain", ProposerHistory::new(8));
    let value = BlockHash(header.hash());
    let mut sigs = Vec::new();
    for k in keys {
        let signer = MeshwardSigner::new(k.clone(), "cert-chain");
        let vote = ctx.new_precommit(
            Height(header.height),
            Round::new(round),
            NilOrVal::Val(value),
            Address(k.public()),
        );
        let signed: SignedMessage<MeshwardContext, _> = signer.sign_vote(vote).await.unwrap();
        sigs.push(signed);
    }
    CommitCertificate::new(Height(header.height), Round::new(round), value, sigs)
}

#[tokio::test]
async fn certificate_verifies_with_core_alone() {
    let keys: Vec<SignKey> = (1..=4u8).map(|i| SignKey::from_seed(&[i; 32])).collect();
    let set = ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                key: k.public(),
                power: 1,
            })
            .collect(),
    )
    .unwrap();
    let h = header(12);

    // Three of four precommits, in the order they arrived: more than 2/3.
    let engine =
        engine_certificate(&[keys[2].clone(), keys[0].clone(), keys[3].clone()], &h, 1).await;
    let core = to_core_certificate(&engine);
    assert_eq!(core.round, 1);
    assert!(core
        .signatures
        .windows(2)
        .all(|w| w[0].validator < w[1].validator));
    core.verify(&h, &set).unwrap();
    // The same signatures come back for sync.
    let back = to_engine_certificate(&core);
    assert_eq!(back.commit_signatures.len(), 3);
    let again = CommitCertificate {
        height: back.height,
        round: back.round,
        value_id: back.value_id,
        commit_signatures: back
            .commit_signatures
            .iter()
            .map(|s| CommitSignature::new(s.address, s.signature))
            .collect(),
    };
    assert_eq!(to_core_certificate(&again), core);

    // Two of four is not enough.
    let weak = to_core_certificate(&engine_certificate(&keys[..2], &h, 0).await);
    assert!(matches!(
        weak.verify(&h, &set),
        Err(CertError::InsufficientPower { .. })
    ));
    // A certificate for another block or round does not verify.
    let mut other = core.clone();
    other.round = 0;
    assert!(matches!(
        other.verify(&h, &set),
        Err(CertError::BadSignature(_))
    ));
    assert!(core.verify(&header(13), &set).is_err());
}
