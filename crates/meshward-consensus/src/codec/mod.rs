//! The wire and WAL encoding of Malachite's messages, in Meshward's canonical binary format
//! (see `meshward_core::codec`): fixed-width big-endian integers, length-prefixed byte strings
//! and lists with enforced maxima, one-byte tags, and a leading format version on every
//! top-level message. One codec serves the network (consensus, liveness, proposal parts,
//! validator proofs), value sync and the write-ahead log (including `PolkaCertificate`).
//!
//! Everything decoded here comes from the network or from disk: every error is a
//! [`CodecError`], never a panic, and no length is trusted before it is checked.
//!
//! The impls are grouped by message family: the framing and the leaf types (heights, rounds,
//! keys, hashes) are here; `consensus.rs` has votes, proposals, their certificates, liveness
//! messages and validator proofs, `proposal_parts.rs` proposal parts and their stream messages,
//! `wal.rs` the proposed values the write-ahead log keeps, `value_sync.rs` value sync.

mod consensus;
pub mod fuzz;
mod proposal_parts;
#[cfg(test)]
mod tests;
mod value_sync;
mod wal;

use bytes::Bytes;
use malachitebft_codec::{Codec, HasEncodedLen};
use malachitebft_core_types::{NilOrVal, Round, VoteType};
use malachitebft_sync as sync;
use meshward_core::codec::{DecodeError, Reader, Writer};
use meshward_core::hash::Hash;
use meshward_core::ids::{PublicKey, Signature};

use crate::context::{Address, BlockHash, Height, MeshwardContext, Sig};

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
    /// The bytes are not a canonical encoding (see `docs/FORMATS.md`, Consensus messages).
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The bytes decode but hold a value Malachite's types refuse (a nil round where one is
    /// required, a bad peer id).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A message is over one of the wire limits (too many signatures, a field too long) or uses a
    /// disabled feature (vote extensions), so it is not sent.
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
