//! Consensus messages: votes and proposals (signed), polka and round certificates, liveness
//! messages and validator proofs.

use malachitebft_app_channel::app::consensus::{LivenessMsg, SignedConsensusMsg};
use malachitebft_core_types::{
    PolkaCertificate, PolkaSignature, RoundCertificate, RoundCertificateType, RoundSignature,
    SignedMessage, ValidatorProof,
};
use meshward_core::codec::{DecodeError, Reader, Writer};
use meshward_core::tx::MAX_VALIDATORS;

use crate::context::{Address, BlockHash, Height, MeshwardContext, Proposal, Sig, Vote};

use super::{
    count, get_defined_round, get_nil_or, get_round, get_vote_type, put_bytes, put_nil_or,
    put_round, put_vote_type, CodecError, Result, Wire, MAX_PEER_ID_BYTES, MAX_PROOF_KEY_BYTES,
};

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
                // A Byzantine test validator's marker: noise instead of a vote.
                #[cfg(feature = "byzantine")]
                if let Some(g) = crate::byzantine::garbage_frame(&v.message, &v.signature) {
                    w.raw(&g);
                    return Ok(());
                }
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
