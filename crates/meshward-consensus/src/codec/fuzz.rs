//! One entry point over every message family the codec decodes, for the `consensus` fuzz target
//! (`fuzz/fuzz_targets/consensus.rs`): what a peer can send on the consensus, liveness,
//! proposal-part and sync channels, and what the write-ahead log holds.

use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_core_types::{PolkaCertificate, RoundCertificate, ValidatorProof};
use malachitebft_engine::util::streaming::StreamMessage;
use malachitebft_sync as sync;

use super::{decode_top, encode_top, Wire};
use crate::context::{MeshwardContext, ProposalPart, Vote};

/// How many families [`decode_family`] picks from.
pub const FAMILIES: u8 = 12;

/// Decodes `bytes` as message family `family % FAMILIES`. Never panics; returns whether the bytes
/// decoded, and panics only if a decoded message does not re-encode to exactly `bytes` (the
/// encoding is canonical, so that would be a bug the fuzzer should report).
pub fn decode_family(family: u8, bytes: &[u8]) -> bool {
    fn check<T: Wire>(bytes: &[u8]) -> bool {
        let Ok(v) = decode_top::<T>(bytes) else {
            return false;
        };
        let again = encode_top(&v).expect("a decoded message encodes");
        assert_eq!(again, bytes, "the encoding is not canonical");
        true
    }
    type Ctx = MeshwardContext;
    match family % FAMILIES {
        0 => check::<SignedConsensusMsg<Ctx>>(bytes),
        1 => check::<LivenessMsg<Ctx>>(bytes),
        2 => check::<StreamMessage<ProposalPart>>(bytes),
        3 => check::<ProposalPart>(bytes),
        4 => check::<sync::Status<Ctx>>(bytes),
        5 => check::<sync::Request<Ctx>>(bytes),
        6 => check::<sync::Response<Ctx>>(bytes),
        7 => check::<ProposedValue<Ctx>>(bytes),
        8 => check::<PolkaCertificate<Ctx>>(bytes),
        9 => check::<RoundCertificate<Ctx>>(bytes),
        10 => check::<ValidatorProof<Ctx>>(bytes),
        _ => check::<Vote>(bytes),
    }
}
