//! The wire and WAL encoding of Malachite's messages, in Meshward's canonical binary format
//! (see `meshward_core::codec`): fixed-width big-endian integers, length-prefixed byte strings
//! and lists with enforced maxima, one-byte tags, and a leading format version on every
//! top-level message. One codec serves the network (consensus, liveness, proposal parts,
//! validator proofs), value sync and the write-ahead log (including `PolkaCertificate`).
//!
//! Everything decoded here comes from the network or from disk: every error is a
//! [`CodecError`], never a panic, and no length is trusted before it is checked.

use bytes::Bytes;
use malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_codec::{Codec, HasEncodedLen};
use malachitebft_core_types::{
    ExtendedCommitCertificate, ExtendedCommitSignature, NilOrVal, PolkaCertificate, PolkaSignature,
    Round, RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, ValidatorProof,
    Validity, VoteType,
};
use malachitebft_engine::util::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_sync::{self as sync, RawDecidedValue, ValueRequest, ValueResponse};
use meshward_core::block::MAX_BLOCK_BYTES;
use meshward_core::codec::{DecodeError, Reader, Writer};
use meshward_core::hash::Hash;
use meshward_core::ids::{PublicKey, Signature};
use meshward_core::tx::MAX_VALIDATORS;

use crate::context::{
    Address, BlockHash, Height, MeshwardContext, PartInit, Proposal, ProposalPart, Sig, Vote,
};

/// Version byte of every top-level consensus message.
pub const WIRE_VERSION: u8 = 1;
/// Largest `Data` proposal part accepted.
pub const MAX_PART_BYTES: usize = 1024 * 1024;
/// Largest stream id accepted.
pub const MAX_STREAM_ID_BYTES: usize = 64;
/// Most decided values in one sync response.
pub const MAX_SYNC_VALUES: usize = 256;
const MAX_PEER_ID_BYTES: usize = 128;
const MAX_PROOF_KEY_BYTES: usize = 64;

/// Why bytes are not a valid consensus message, or a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

type Result<T> = std::result::Result<T, CodecError>;

/// Meshward's codec for every message Malachite exchanges or logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeshwardCodec;

/// A type with a canonical encoding in this module.
pub(crate) trait Wire: Sized {
    fn put(&self, w: &mut Writer) -> Result<()>;
    fn get(r: &mut Reader<'_>) -> Result<Self>;
}

impl<T: Wire + Send + Sync + 'static> Codec<T> for MeshwardCodec {
    type Error = CodecError;

    fn decode(&self, bytes: Bytes) -> Result<T> {
        decode_top(&bytes)
    }

    fn encode(&self, msg: &T) -> Result<Bytes> {
        encode_top(msg).map(Bytes::from)
    }
}

impl HasEncodedLen<sync::Response<MeshwardContext>> for MeshwardCodec {
    fn encoded_len(&self, msg: &sync::Response<MeshwardContext>) -> Result<usize> {
        encode_top(msg).map(|b| b.len())
    }
}

pub(crate) fn encode_top<T: Wire>(msg: &T) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION);
    msg.put(&mut w)?;
    Ok(w.into_bytes())
}

pub(crate) fn decode_top<T: Wire>(bytes: &[u8]) -> Result<T> {
    let mut r = Reader::new(bytes);
    r.version(WIRE_VERSION, "consensus message")?;
    let v = T::get(&mut r)?;
    r.finish()?;
    Ok(v)
}

fn count(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<usize> {
    Ok(r.len(max, what)?)
}

// --- Leaves ---------------------------------------------------------------------------------

fn put_round(w: &mut Writer, r: Round) {
    match r.as_u32() {
        None => w.u8(0),
        Some(r) => w.u8(1).u32(r),
    };
}

fn get_round(r: &mut Reader<'_>) -> Result<Round> {
    match r.u8("round")? {
        0 => Ok(Round::Nil),
        1 => Ok(Round::new(r.u32("round")?)),
        tag => Err(DecodeError::UnknownTag { what: "round", tag }.into()),
    }
}

fn get_defined_round(r: &mut Reader<'_>) -> Result<Round> {
    let round = get_round(r)?;
    if round.is_nil() {
        return Err(CodecError::Invalid("round (nil where a round is required)"));
    }
    Ok(round)
}

impl Wire for Height {
    fn put(&self, w: &mut Writer) -> Result<()> {
        w.u64(self.0);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Height(r.u64("height")?))
    }
}

impl Wire for Address {
    fn put(&self, w: &mut Writer) -> Result<()> {
        w.put(&self.0);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Address(r.get::<PublicKey>()?))
    }
}

impl Wire for BlockHash {
    fn put(&self, w: &mut Writer) -> Result<()> {
        w.put(&self.0);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(BlockHash(r.get::<Hash>()?))
    }
}

impl Wire for Sig {
    fn put(&self, w: &mut Writer) -> Result<()> {
        w.put(&self.0);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Sig(r.get::<Signature>()?))
    }
}

fn put_nil_or(w: &mut Writer, v: &NilOrVal<BlockHash>) -> Result<()> {
    match v {
        NilOrVal::Nil => {
            w.u8(0);
        }
        NilOrVal::Val(h) => {
            w.u8(1);
            h.put(w)?;
        }
    }
    Ok(())
}

fn get_nil_or(r: &mut Reader<'_>) -> Result<NilOrVal<BlockHash>> {
    match r.u8("vote value")? {
        0 => Ok(NilOrVal::Nil),
        1 => Ok(NilOrVal::Val(BlockHash::get(r)?)),
        tag => Err(DecodeError::UnknownTag {
            what: "vote value",
            tag,
        }
        .into()),
    }
}

fn put_vote_type(w: &mut Writer, t: VoteType) {
    w.u8(match t {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    });
}

fn get_vote_type(r: &mut Reader<'_>) -> Result<VoteType> {
    match r.u8("vote type")? {
        1 => Ok(VoteType::Prevote),
        2 => Ok(VoteType::Precommit),
        tag => Err(DecodeError::UnknownTag {
            what: "vote type",
            tag,
        }
        .into()),
    }
}

fn put_bytes(w: &mut Writer, b: &[u8], max: usize, what: &'static str) -> Result<()> {
    if b.len() > max {
        return Err(CodecError::Unencodable(what));
    }
    w.bytes(b);
    Ok(())
}

// --- Consensus messages ---------------------------------------------------------------------

impl Wire for Vote {
    fn put(&self, w: &mut Writer) -> Result<()> {
        if self.extension.is_some() {
            return Err(CodecError::Unencodable(
                "vote extension (extensions are disabled)",
            ));
        }
        put_vote_type(w, self.vote_type);
        self.height.put(w)?;
        put_round(w, self.round);
        put_nil_or(w, &self.value)?;
        self.validator.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Vote {
            vote_type: get_vote_type(r)?,
            height: Height::get(r)?,
            round: get_defined_round(r)?,
            value: get_nil_or(r)?,
            validator: Address::get(r)?,
            extension: None,
        })
    }
}

impl Wire for Proposal {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.height.put(w)?;
        put_round(w, self.round);
        self.value.put(w)?;
        put_round(w, self.pol_round);
        self.proposer.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Proposal {
            height: Height::get(r)?,
            round: get_defined_round(r)?,
            value: BlockHash::get(r)?,
            pol_round: get_round(r)?,
            proposer: Address::get(r)?,
        })
    }
}

impl<M: Wire> Wire for SignedMessage<MeshwardContext, M> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.message.put(w)?;
        self.signature.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let message = M::get(r)?;
        let signature = Sig::get(r)?;
        Ok(SignedMessage::new(message, signature))
    }
}

impl Wire for SignedConsensusMsg<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        match self {
            SignedConsensusMsg::Vote(v) => {
                w.u8(1);
                v.put(w)
            }
            SignedConsensusMsg::Proposal(p) => {
                w.u8(2);
                p.put(w)
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8("consensus message")? {
            1 => Ok(SignedConsensusMsg::Vote(Wire::get(r)?)),
            2 => Ok(SignedConsensusMsg::Proposal(Wire::get(r)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "consensus message",
                tag,
            }
            .into()),
        }
    }
}

impl Wire for PolkaCertificate<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.height.put(w)?;
        put_round(w, self.round);
        self.value_id.put(w)?;
        if self.polka_signatures.len() > MAX_VALIDATORS {
            return Err(CodecError::Unencodable("polka certificate signatures"));
        }
        w.len(self.polka_signatures.len());
        for s in &self.polka_signatures {
            s.address.put(w)?;
            s.signature.put(w)?;
        }
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let height = Height::get(r)?;
        let round = get_defined_round(r)?;
        let value_id = BlockHash::get(r)?;
        let n = count(r, MAX_VALIDATORS, "polka certificate signatures")?;
        let mut sigs = Vec::with_capacity(n);
        for _ in 0..n {
            sigs.push(PolkaSignature::new(Address::get(r)?, Sig::get(r)?));
        }
        Ok(PolkaCertificate {
            height,
            round,
            value_id,
            polka_signatures: sigs,
        })
    }
}

impl Wire for RoundCertificate<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.height.put(w)?;
        put_round(w, self.round);
        w.u8(match self.cert_type {
            RoundCertificateType::Skip => 1,
            RoundCertificateType::Precommit => 2,
        });
        // Each validator may contribute a prevote and a precommit.
        if self.round_signatures.len() > 2 * MAX_VALIDATORS {
            return Err(CodecError::Unencodable("round certificate signatures"));
        }
        w.len(self.round_signatures.len());
        for s in &self.round_signatures {
            put_vote_type(w, s.vote_type);
            put_nil_or(w, &s.value_id)?;
            s.address.put(w)?;
            s.signature.put(w)?;
        }
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let height = Height::get(r)?;
        let round = get_defined_round(r)?;
        let cert_type = match r.u8("round certificate type")? {
            1 => RoundCertificateType::Skip,
            2 => RoundCertificateType::Precommit,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "round certificate type",
                    tag,
                }
                .into())
            }
        };
        let n = count(r, 2 * MAX_VALIDATORS, "round certificate signatures")?;
        let mut sigs = Vec::with_capacity(n);
        for _ in 0..n {
            let vote_type = get_vote_type(r)?;
            let value_id = get_nil_or(r)?;
            sigs.push(RoundSignature::new(
                vote_type,
                value_id,
                Address::get(r)?,
                Sig::get(r)?,
            ));
        }
        Ok(RoundCertificate {
            height,
            round,
            cert_type,
            round_signatures: sigs,
        })
    }
}

impl Wire for LivenessMsg<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        match self {
            LivenessMsg::Vote(v) => {
                w.u8(1);
                v.put(w)
            }
            LivenessMsg::PolkaCertificate(c) => {
                w.u8(2);
                c.put(w)
            }
            LivenessMsg::SkipRoundCertificate(c) => {
                w.u8(3);
                c.put(w)
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8("liveness message")? {
            1 => Ok(LivenessMsg::Vote(Wire::get(r)?)),
            2 => Ok(LivenessMsg::PolkaCertificate(Wire::get(r)?)),
            3 => Ok(LivenessMsg::SkipRoundCertificate(Wire::get(r)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "liveness message",
                tag,
            }
            .into()),
        }
    }
}

impl Wire for ValidatorProof<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        put_bytes(w, &self.public_key, MAX_PROOF_KEY_BYTES, "proof public key")?;
        put_bytes(w, &self.peer_id, MAX_PEER_ID_BYTES, "proof peer id")?;
        self.signature.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let public_key = r.byte_vec(MAX_PROOF_KEY_BYTES, "proof public key")?;
        let peer_id = r.byte_vec(MAX_PEER_ID_BYTES, "proof peer id")?;
        Ok(ValidatorProof::new(public_key, peer_id, Sig::get(r)?))
    }
}

// --- Proposal parts -------------------------------------------------------------------------

impl Wire for ProposalPart {
    fn put(&self, w: &mut Writer) -> Result<()> {
        match self {
            ProposalPart::Init(i) => {
                w.u8(1);
                i.height.put(w)?;
                put_round(w, i.round);
                put_round(w, i.pol_round);
                i.proposer.put(w)
            }
            ProposalPart::Data(b) => {
                w.u8(2);
                put_bytes(w, b, MAX_PART_BYTES, "proposal part data")
            }
            ProposalPart::Fin(s) => {
                w.u8(3);
                s.put(w)
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8("proposal part")? {
            1 => Ok(ProposalPart::Init(PartInit {
                height: Height::get(r)?,
                round: get_defined_round(r)?,
                pol_round: get_round(r)?,
                proposer: Address::get(r)?,
            })),
            2 => Ok(ProposalPart::Data(Bytes::copy_from_slice(
                r.bytes(MAX_PART_BYTES, "proposal part data")?,
            ))),
            3 => Ok(ProposalPart::Fin(Sig::get(r)?)),
            tag => Err(DecodeError::UnknownTag {
                what: "proposal part",
                tag,
            }
            .into()),
        }
    }
}

impl Wire for StreamMessage<ProposalPart> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        put_bytes(
            w,
            &self.stream_id.to_bytes(),
            MAX_STREAM_ID_BYTES,
            "stream id",
        )?;
        w.u64(self.sequence);
        match &self.content {
            StreamContent::Fin => {
                w.u8(0);
                Ok(())
            }
            StreamContent::Data(p) => {
                w.u8(1);
                p.put(w)
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let id = Bytes::copy_from_slice(r.bytes(MAX_STREAM_ID_BYTES, "stream id")?);
        let sequence = r.u64("stream sequence")?;
        let content = match r.u8("stream content")? {
            0 => StreamContent::Fin,
            1 => StreamContent::Data(ProposalPart::get(r)?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "stream content",
                    tag,
                }
                .into())
            }
        };
        Ok(StreamMessage::new(StreamId::new(id), sequence, content))
    }
}

// --- WAL ------------------------------------------------------------------------------------

impl Wire for ProposedValue<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.height.put(w)?;
        put_round(w, self.round);
        put_round(w, self.valid_round);
        self.proposer.put(w)?;
        self.value.put(w)?;
        w.bool(self.validity.is_valid());
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ProposedValue {
            height: Height::get(r)?,
            round: get_round(r)?,
            valid_round: get_round(r)?,
            proposer: Address::get(r)?,
            value: BlockHash::get(r)?,
            validity: Validity::from_bool(r.bool("validity")?),
        })
    }
}

// --- Sync -----------------------------------------------------------------------------------

fn put_peer_id(w: &mut Writer, p: &malachitebft_sync::PeerId) -> Result<()> {
    put_bytes(w, &p.to_bytes(), MAX_PEER_ID_BYTES, "peer id")
}

fn get_peer_id(r: &mut Reader<'_>) -> Result<malachitebft_sync::PeerId> {
    let b = r.bytes(MAX_PEER_ID_BYTES, "peer id")?;
    malachitebft_sync::PeerId::from_bytes(b).map_err(|_| CodecError::Invalid("peer id"))
}

impl Wire for sync::Status<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        put_peer_id(w, &self.peer_id)?;
        self.tip_height.put(w)?;
        self.history_min_height.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(sync::Status {
            peer_id: get_peer_id(r)?,
            tip_height: Height::get(r)?,
            history_min_height: Height::get(r)?,
        })
    }
}

impl Wire for sync::Request<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        match self {
            sync::Request::ValueRequest(v) => {
                w.u8(1);
                v.range.start().put(w)?;
                v.range.end().put(w)
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8("sync request")? {
            1 => {
                let start = Height::get(r)?;
                let end = Height::get(r)?;
                Ok(sync::Request::ValueRequest(ValueRequest::new(start..=end)))
            }
            tag => Err(DecodeError::UnknownTag {
                what: "sync request",
                tag,
            }
            .into()),
        }
    }
}

impl Wire for ExtendedCommitCertificate<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        self.height.put(w)?;
        put_round(w, self.round);
        self.value_id.put(w)?;
        if self.commit_signatures.len() > MAX_VALIDATORS {
            return Err(CodecError::Unencodable("commit signatures"));
        }
        w.len(self.commit_signatures.len());
        for s in &self.commit_signatures {
            if s.extension.is_some() {
                return Err(CodecError::Unencodable(
                    "vote extension (extensions are disabled)",
                ));
            }
            s.address.put(w)?;
            s.signature.put(w)?;
        }
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let height = Height::get(r)?;
        let round = get_defined_round(r)?;
        let value_id = BlockHash::get(r)?;
        let n = count(r, MAX_VALIDATORS, "commit signatures")?;
        let mut sigs = Vec::with_capacity(n);
        for _ in 0..n {
            sigs.push(ExtendedCommitSignature {
                address: Address::get(r)?,
                signature: Sig::get(r)?,
                extension: None,
            });
        }
        Ok(ExtendedCommitCertificate {
            height,
            round,
            value_id,
            commit_signatures: sigs,
        })
    }
}

impl Wire for sync::Response<MeshwardContext> {
    fn put(&self, w: &mut Writer) -> Result<()> {
        match self {
            sync::Response::ValueResponse(v) => {
                w.u8(1);
                v.start_height.put(w)?;
                if v.values.len() > MAX_SYNC_VALUES {
                    return Err(CodecError::Unencodable("sync response values"));
                }
                w.len(v.values.len());
                for value in &v.values {
                    put_bytes(w, &value.value_bytes, MAX_BLOCK_BYTES, "decided value")?;
                    value.certificate.put(w)?;
                }
                Ok(())
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8("sync response")? {
            1 => {
                let start_height = Height::get(r)?;
                let n = count(r, MAX_SYNC_VALUES, "sync response values")?;
                let mut values = Vec::with_capacity(n.min(r.remaining()));
                for _ in 0..n {
                    let bytes = Bytes::copy_from_slice(r.bytes(MAX_BLOCK_BYTES, "decided value")?);
                    let certificate = ExtendedCommitCertificate::get(r)?;
                    values.push(RawDecidedValue::new(bytes, certificate));
                }
                Ok(sync::Response::ValueResponse(ValueResponse::new(
                    start_height,
                    values,
                )))
            }
            tag => Err(DecodeError::UnknownTag {
                what: "sync response",
                tag,
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use malachitebft_core_types::CommitSignature;

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
}
