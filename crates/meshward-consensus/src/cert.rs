//! Converting between Malachite's commit certificates and Meshward's.
//!
//! Precommits are signed over [`meshward_core::block::vote_signing_bytes`], so the signatures
//! of a certificate Malachite decides are exactly those of a core
//! [`CommitCertificate`], which a light client checks with `meshward-core` alone.

use malachitebft_core_types::{
    CommitCertificate as EngineCertificate, ExtendedCommitCertificate, ExtendedCommitSignature,
    Round,
};
use meshward_core::block::{CommitCertificate, CommitSig};

use crate::context::{Address, BlockHash, Height, MeshwardContext, Sig};

/// The core certificate for a certificate Malachite decided: signatures sorted by validator,
/// one per validator.
pub fn to_core_certificate(c: &EngineCertificate<MeshwardContext>) -> CommitCertificate {
    let mut signatures: Vec<CommitSig> = c
        .commit_signatures
        .iter()
        .map(|s| CommitSig {
            validator: s.address.0,
            sig: s.signature.0,
        })
        .collect();
    signatures.sort_by_key(|s| s.validator);
    signatures.dedup_by(|a, b| a.validator == b.validator);
    CommitCertificate {
        height: c.height.0,
        round: c.round.as_u32().unwrap_or(0),
        block_hash: c.value_id.0,
        signatures,
    }
}

/// Malachite's form of a stored certificate, for sync.
pub fn to_engine_certificate(c: &CommitCertificate) -> ExtendedCommitCertificate<MeshwardContext> {
    ExtendedCommitCertificate {
        height: Height(c.height),
        round: Round::new(c.round),
        value_id: BlockHash(c.block_hash),
        commit_signatures: c
            .signatures
            .iter()
            .map(|s| ExtendedCommitSignature {
                address: Address(s.validator),
                signature: Sig(s.sig),
                extension: None,
            })
            .collect(),
    }
}
