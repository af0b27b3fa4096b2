//! What validators sign, and Malachite's signer and verifier over it.
//!
//! - Votes: [`meshward_core::block::vote_signing_bytes`], so precommits form a core
//!   [`meshward_core::block::CommitCertificate`].
//! - Proposal messages: [`proposal_signing_bytes`] (domain `meshward/proposal/v1`).
//! - Proposal parts: [`parts_signing_bytes`] (domain `meshward/proposal-parts/v1`), carried in
//!   the `Fin` part: Malachite does not sign parts, so this is what binds a streamed block to
//!   the round's proposer.
//! - The validator proof that binds a consensus key to a libp2p peer: Malachite's preimage
//!   behind the domain `meshward/validator-proof/v1`.
//!
//! Every message starts with its own domain and the chain id, so no signature can be replayed
//! as another kind of message or on another chain.

use async_trait::async_trait;
use malachitebft_core_types::{Round, SignedMessage, ValidatorProof, VoteExtensionScope, VoteType};
use malachitebft_signing::{Error as SigningError, Signer, VerificationResult, Verifier};
use meshward_core::block::{vote_signing_bytes, VoteKind};
use meshward_core::codec::Writer;
use meshward_core::hash::Hash;
use meshward_core::ids::{KeyError, PublicKey, SignKey, VerifyingKey};
use std::collections::HashMap;

use crate::context::{Address, MeshwardContext, Proposal, Sig, Vote};

/// Domain of proposal message signatures.
pub const PROPOSAL_DOMAIN: &[u8] = meshward_core::hash::domain::PROPOSAL;
/// Domain of the proposer's signature in the `Fin` proposal part.
pub const PARTS_DOMAIN: &[u8] = meshward_core::hash::domain::PROPOSAL_PARTS;
/// Domain of the validator proof (consensus key to libp2p peer id).
pub const VALIDATOR_PROOF_DOMAIN: &[u8] = meshward_core::hash::domain::VALIDATOR_PROOF;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(&'static str);

fn round_u32(r: Round) -> Option<u32> {
    r.as_u32()
}

fn put_round(w: &mut Writer, r: Round) {
    match r.as_u32() {
        None => w.u8(0),
        Some(r) => w.u8(1).u32(r),
    };
}

/// The bytes a proposer signs for a proposal message.
pub fn proposal_signing_bytes(
    chain_id: &str,
    height: u64,
    round: u32,
    pol_round: Round,
    block_hash: &Hash,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.raw(PROPOSAL_DOMAIN).str(chain_id).u64(height).u32(round);
    put_round(&mut w, pol_round);
    w.put(block_hash);
    w.into_bytes()
}

/// The bytes a proposer signs in the `Fin` part of a streamed block.
pub fn parts_signing_bytes(
    chain_id: &str,
    height: u64,
    round: u32,
    pol_round: Round,
    block_hash: &Hash,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.raw(PARTS_DOMAIN).str(chain_id).u64(height).u32(round);
    put_round(&mut w, pol_round);
    w.put(block_hash);
    w.into_bytes()
}

fn validator_proof_bytes(public_key: &[u8], peer_id: &[u8]) -> Vec<u8> {
    let mut v = VALIDATOR_PROOF_DOMAIN.to_vec();
    v.extend_from_slice(&ValidatorProof::<MeshwardContext>::signing_bytes(
        public_key, peer_id,
    ));
    v
}

/// The canonical bytes of a vote, or `None` for a vote without a defined round.
pub fn vote_bytes(chain_id: &str, vote: &Vote) -> Option<Vec<u8>> {
    let kind = match vote.vote_type {
        VoteType::Prevote => VoteKind::Prevote,
        VoteType::Precommit => VoteKind::Precommit,
    };
    let value = match &vote.value {
        malachitebft_core_types::NilOrVal::Nil => None,
        malachitebft_core_types::NilOrVal::Val(h) => Some(&h.0),
    };
    Some(vote_signing_bytes(
        chain_id,
        kind,
        vote.height.0,
        round_u32(vote.round)?,
        value,
    ))
}

fn proposal_bytes(chain_id: &str, p: &Proposal) -> Option<Vec<u8>> {
    Some(proposal_signing_bytes(
        chain_id,
        p.height.0,
        round_u32(p.round)?,
        p.pol_round,
        &p.value.0,
    ))
}

fn check(keys: &ValidatorKeys, key: &PublicKey, msg: &[u8], sig: &Sig) -> VerificationResult {
    let ok = keys
        .get(key)
        .and_then(|vk| meshward_core::ids::verify_with(&vk, msg, &sig.0))
        .is_ok();
    VerificationResult::from_bool(ok)
}

/// Most keys [`ValidatorKeys`] keeps before it starts over (a few validator sets' worth).
const MAX_CACHED_KEYS: usize = 512;

/// Validator keys decompressed and checked (not weak, torsion-free) once, for the votes,
/// proposal signatures and certificates this node checks at every height: each check would
/// otherwise decompress the key and multiply it by the group order again. Shared by clones;
/// bounded ([`MAX_CACHED_KEYS`]; when full it is emptied and refilled).
#[derive(Clone, Default)]
pub struct ValidatorKeys(std::sync::Arc<std::sync::Mutex<HashMap<PublicKey, VerifyingKey>>>);

impl ValidatorKeys {
    /// The checked key of `key`, from the cache or decompressed now.
    pub fn get(&self, key: &PublicKey) -> Result<VerifyingKey, KeyError> {
        if let Some(vk) = meshward_core::sync::lock(&self.0, "validator keys").get(key) {
            return Ok(*vk);
        }
        let vk = key.verifying_key()?;
        let mut m = meshward_core::sync::lock(&self.0, "validator keys");
        if m.len() >= MAX_CACHED_KEYS {
            m.clear();
        }
        m.insert(*key, vk);
        Ok(vk)
    }
}

/// Signs consensus messages with the validator's node key.
pub struct MeshwardSigner {
    key: SignKey,
    chain_id: String,
}

impl MeshwardSigner {
    /// A signer with the validator's node key, for messages of `chain_id`.
    pub fn new(key: SignKey, chain_id: &str) -> Self {
        MeshwardSigner {
            key,
            chain_id: chain_id.to_owned(),
        }
    }

    /// The validator's address: its public key.
    pub fn address(&self) -> Address {
        Address(self.key.public())
    }

    /// The `Fin` part signature for a streamed block.
    pub fn sign_parts(&self, height: u64, round: u32, pol_round: Round, block_hash: &Hash) -> Sig {
        Sig(self.key.sign(&parts_signing_bytes(
            &self.chain_id,
            height,
            round,
            pol_round,
            block_hash,
        )))
    }
}

#[async_trait]
impl Signer<MeshwardContext> for MeshwardSigner {
    async fn sign_vote(
        &self,
        vote: Vote,
    ) -> Result<SignedMessage<MeshwardContext, Vote>, SigningError> {
        let msg = vote_bytes(&self.chain_id, &vote)
            .ok_or_else(|| SigningError::from_source(Refused("vote without a round")))?;
        let sig = Sig(self.key.sign(&msg));
        Ok(SignedMessage::new(vote, sig))
    }

    async fn sign_proposal(
        &self,
        proposal: Proposal,
    ) -> Result<SignedMessage<MeshwardContext, Proposal>, SigningError> {
        let msg = proposal_bytes(&self.chain_id, &proposal)
            .ok_or_else(|| SigningError::from_source(Refused("proposal without a round")))?;
        let sig = Sig(self.key.sign(&msg));
        Ok(SignedMessage::new(proposal, sig))
    }

    async fn sign_vote_extension(
        &self,
        _scope: VoteExtensionScope<MeshwardContext>,
        _extension: (),
    ) -> Result<SignedMessage<MeshwardContext, ()>, SigningError> {
        Err(SigningError::from_source(Refused(
            "vote extensions are not used",
        )))
    }

    async fn sign_validator_proof(
        &self,
        public_key: Vec<u8>,
        peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<MeshwardContext>, SigningError> {
        let sig = Sig(self.key.sign(&validator_proof_bytes(&public_key, &peer_id)));
        Ok(ValidatorProof::new(public_key, peer_id, sig))
    }
}

/// Verifies consensus messages against validator keys.
#[derive(Clone)]
pub struct MeshwardVerifier {
    chain_id: String,
    keys: ValidatorKeys,
}

impl MeshwardVerifier {
    /// A verifier for messages of `chain_id` (bound into every signed message).
    pub fn new(chain_id: &str) -> Self {
        MeshwardVerifier {
            chain_id: chain_id.to_owned(),
            keys: ValidatorKeys::default(),
        }
    }

    /// The verifier's cache of checked validator keys.
    pub fn keys(&self) -> &ValidatorKeys {
        &self.keys
    }

    /// Checks a `Fin` part signature.
    pub fn verify_parts(
        &self,
        key: &PublicKey,
        height: u64,
        round: u32,
        pol_round: Round,
        block_hash: &Hash,
        sig: &Sig,
    ) -> bool {
        let msg = parts_signing_bytes(&self.chain_id, height, round, pol_round, block_hash);
        check(&self.keys, key, &msg, sig).is_valid()
    }
}

#[async_trait]
impl Verifier<MeshwardContext> for MeshwardVerifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &Sig,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        Ok(match vote_bytes(&self.chain_id, vote) {
            Some(msg) => check(&self.keys, public_key, &msg, signature),
            None => VerificationResult::Invalid,
        })
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &Sig,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        Ok(match proposal_bytes(&self.chain_id, proposal) {
            Some(msg) => check(&self.keys, public_key, &msg, signature),
            None => VerificationResult::Invalid,
        })
    }

    async fn verify_signed_vote_extension(
        &self,
        _scope: &VoteExtensionScope<MeshwardContext>,
        _extension: &(),
        _signature: &Sig,
        _public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        // Vote extensions are disabled: none is ever valid.
        Ok(VerificationResult::Invalid)
    }

    async fn verify_validator_proof(
        &self,
        proof: &ValidatorProof<MeshwardContext>,
    ) -> Result<VerificationResult, SigningError> {
        let Ok(key) = <[u8; 32]>::try_from(proof.public_key.as_slice()) else {
            return Ok(VerificationResult::Invalid);
        };
        let key = PublicKey(key);
        // Meshward validators use their node key for consensus, so the proof's peer id must be
        // the one of the key itself.
        if proof.peer_id != key.peer_id_bytes() {
            return Ok(VerificationResult::Invalid);
        }
        // Any peer can send a proof: its key is not cached, so a stream of proofs under fresh
        // keys cannot evict the validators'.
        let msg = validator_proof_bytes(&proof.public_key, &proof.peer_id);
        let ok = key.verify(&msg, &proof.signature.0).is_ok();
        Ok(VerificationResult::from_bool(ok))
    }
}
