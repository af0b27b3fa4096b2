//! Value sync: status, requests for a range of heights, and responses carrying decided blocks
//! with their commit certificates.

use bytes::Bytes;
use malachitebft_core_types::{ExtendedCommitCertificate, ExtendedCommitSignature};
use malachitebft_sync::{self as sync, RawDecidedValue, ValueRequest, ValueResponse};
use meshward_core::block::MAX_BLOCK_BYTES;
use meshward_core::codec::{DecodeError, Reader, Writer};
use meshward_core::tx::MAX_VALIDATORS;

use crate::context::{Address, BlockHash, Height, MeshwardContext, Sig};

use super::{
    count, get_defined_round, put_bytes, put_round, CodecError, Result, Wire, MAX_PEER_ID_BYTES,
    MAX_SYNC_VALUES,
};

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
