//! Proposal parts (`Init`, `Data`, `Fin`) and the stream messages that carry them.

use bytes::Bytes;
use malachitebft_engine::util::streaming::{StreamContent, StreamId, StreamMessage};
use meshward_core::codec::{DecodeError, Reader, Writer};

use crate::context::{Address, Height, PartInit, ProposalPart, Sig};

use super::{
    get_defined_round, get_round, put_bytes, put_round, Result, Wire, MAX_PART_BYTES,
    MAX_STREAM_ID_BYTES,
};

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
