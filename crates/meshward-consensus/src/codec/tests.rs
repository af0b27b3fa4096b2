//! Round trips of every message family, and hostile input.

use super::*;
use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_core_types::CommitSignature;
use malachitebft_core_types::{
    ExtendedCommitCertificate, ExtendedCommitSignature, PolkaCertificate, PolkaSignature,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, Validity,
};
use malachitebft_engine::util::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_sync::{RawDecidedValue, ValueRequest, ValueResponse};

use crate::context::{PartInit, Proposal, ProposalPart, Vote};

fn addr(i: u8) -> Address {
    Address(PublicKey([i; 32]))
}

fn sig(i: u8) -> Sig {
    Sig(Signature([i; 64]))
}

fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(v: &T) {
    let bytes = encode_top(v).expect("encodes");
    let back: T = decode_top(&bytes).expect("decodes");
    assert_eq!(&back, v);
    // Every strict prefix is rejected, never a panic.
    for cut in 0..bytes.len() {
        assert!(decode_top::<T>(&bytes[..cut]).is_err());
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(decode_top::<T>(&long).is_err());
}

#[test]
fn consensus_messages_round_trip() {
    let vote = Vote {
        vote_type: VoteType::Precommit,
        height: Height(7),
        round: Round::new(2),
        value: NilOrVal::Val(BlockHash(Hash([3; 32]))),
        validator: addr(1),
        extension: None,
    };
    round_trip(&SignedConsensusMsg::<MeshwardContext>::Vote(
        SignedMessage::new(vote.clone(), sig(9)),
    ));
    let nil_vote = Vote {
        value: NilOrVal::Nil,
        vote_type: VoteType::Prevote,
        ..vote.clone()
    };
    round_trip(&LivenessMsg::<MeshwardContext>::Vote(SignedMessage::new(
        nil_vote,
        sig(8),
    )));
    let proposal = Proposal {
        height: Height(7),
        round: Round::new(0),
        value: BlockHash(Hash([4; 32])),
        pol_round: Round::Nil,
        proposer: addr(2),
    };
    round_trip(&SignedConsensusMsg::<MeshwardContext>::Proposal(
        SignedMessage::new(proposal, sig(7)),
    ));
    let polka = PolkaCertificate::<MeshwardContext> {
        height: Height(3),
        round: Round::new(1),
        value_id: BlockHash(Hash([5; 32])),
        polka_signatures: vec![PolkaSignature::new(addr(1), sig(1))],
    };
    round_trip(&polka);
    round_trip(&LivenessMsg::<MeshwardContext>::PolkaCertificate(polka));
    round_trip(&LivenessMsg::<MeshwardContext>::SkipRoundCertificate(
        RoundCertificate {
            height: Height(3),
            round: Round::new(4),
            cert_type: RoundCertificateType::Skip,
            round_signatures: vec![RoundSignature::new(
                VoteType::Prevote,
                NilOrVal::Nil,
                addr(3),
                sig(3),
            )],
        },
    ));
}

#[test]
fn parts_and_wal_values_round_trip() {
    for part in [
        ProposalPart::Init(PartInit {
            height: Height(9),
            round: Round::new(1),
            pol_round: Round::new(0),
            proposer: addr(4),
        }),
        ProposalPart::Data(Bytes::from_static(b"block bytes")),
        ProposalPart::Fin(sig(5)),
    ] {
        round_trip(&part);
        round_trip(&StreamMessage::new(
            StreamId::new(Bytes::from_static(b"id")),
            3,
            StreamContent::Data(part),
        ));
    }
    round_trip(&StreamMessage::<ProposalPart>::new(
        StreamId::new(Bytes::from_static(b"id")),
        4,
        StreamContent::Fin,
    ));
    round_trip(&ProposedValue::<MeshwardContext> {
        height: Height(2),
        round: Round::new(0),
        valid_round: Round::Nil,
        proposer: addr(1),
        value: BlockHash(Hash([6; 32])),
        validity: Validity::Invalid,
    });
}

#[test]
fn sync_messages_round_trip() {
    let cert = ExtendedCommitCertificate::<MeshwardContext> {
        height: Height(5),
        round: Round::new(0),
        value_id: BlockHash(Hash([1; 32])),
        commit_signatures: vec![ExtendedCommitSignature {
            address: addr(1),
            signature: sig(1),
            extension: None,
        }],
    };
    round_trip(&sync::Response::<MeshwardContext>::ValueResponse(
        ValueResponse::new(
            Height(5),
            vec![RawDecidedValue::new(Bytes::from_static(b"v"), cert)],
        ),
    ));
    round_trip(&sync::Request::<MeshwardContext>::ValueRequest(
        ValueRequest::new(Height(1)..=Height(4)),
    ));
    let _ = CommitSignature::<MeshwardContext>::new(addr(1), sig(1));
}

#[test]
fn hostile_input_is_rejected() {
    assert!(decode_top::<SignedConsensusMsg<MeshwardContext>>(&[]).is_err());
    assert!(decode_top::<SignedConsensusMsg<MeshwardContext>>(&[1, 9]).is_err());
    // A huge signature count is refused before allocating.
    let mut w = Writer::new();
    w.u8(WIRE_VERSION)
        .u64(1)
        .u8(1)
        .u32(0)
        .put(&Hash::ZERO)
        .u32(u32::MAX);
    assert!(decode_top::<PolkaCertificate<MeshwardContext>>(w.as_slice()).is_err());
}

#[test]
fn the_fuzz_entry_decodes_each_family_and_refuses_garbage() {
    let vote = Vote {
        vote_type: VoteType::Precommit,
        height: Height(7),
        round: Round::new(2),
        value: NilOrVal::Val(BlockHash(Hash([3; 32]))),
        validator: addr(1),
        extension: None,
    };
    let signed =
        SignedConsensusMsg::<MeshwardContext>::Vote(SignedMessage::new(vote.clone(), sig(9)));
    assert!(fuzz::decode_family(0, &encode_top(&signed).unwrap()));
    assert!(fuzz::decode_family(11, &encode_top(&vote).unwrap()));
    // The same bytes as another family do not decode as a vote, and garbage decodes as nothing.
    assert!(!fuzz::decode_family(3, &encode_top(&vote).unwrap()));
    for f in 0..fuzz::FAMILIES {
        assert!(!fuzz::decode_family(f, &[]));
        assert!(!fuzz::decode_family(f, &[WIRE_VERSION, 0xff, 0xff, 0xff]));
        assert!(!fuzz::decode_family(f, &[WIRE_VERSION + 1]));
    }
}
