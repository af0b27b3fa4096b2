//! Malachite's `Context` over Meshward's core types.
//!
//! Addresses are validator public keys (displayed as their libp2p `PeerId`), heights are block
//! heights, and the value consensus agrees on is a block header hash: the block itself travels
//! as proposal parts (see [`crate::parts`]) and is kept by the application, which is what
//! Malachite's `ProposalAndParts` mode expects. Votes are signed over
//! [`meshward_core::block::vote_signing_bytes`], so a decided certificate is a
//! [`meshward_core::block::CommitCertificate`] that `meshward-core` alone verifies.

use std::fmt;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use malachitebft_core_types as mc;
use malachitebft_core_types::{NilOrVal, Round, VoteType};
use meshward_core::hash::Hash;
use meshward_core::ids::{PublicKey, SignKey, Signature};

use crate::proposer::ProposerHistory;

/// A block height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its Ed25519 public key, shown as its libp2p `PeerId`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub PublicKey);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.0)
    }
}

impl mc::Address for Address {}

/// The value consensus decides on: a block header hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash(pub Hash);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form for logs; the full hash is in the stored block.
        let hex = self.0.to_hex();
        f.write_str(&hex[..12])
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.0)
    }
}

impl mc::Value for BlockHash {
    type Id = BlockHash;

    fn id(&self) -> BlockHash {
        *self
    }
}

/// An Ed25519 signature, ordered by its bytes (Malachite needs `Ord`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub Signature);

impl PartialOrd for Sig {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sig {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0 .0.cmp(&other.0 .0)
    }
}

impl fmt::Debug for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Why bytes are not a key or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} bytes for an Ed25519 {what}, got {got}")]
pub struct KeyBytesError {
    what: &'static str,
    expected: usize,
    got: usize,
}

/// Ed25519, with Meshward's key and signature types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl mc::SigningScheme for Ed25519 {
    type DecodingError = KeyBytesError;
    type Signature = Sig;
    type PublicKey = PublicKey;
    type PrivateKey = SignKey;

    fn decode_signature(bytes: &[u8]) -> Result<Sig, KeyBytesError> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| KeyBytesError {
            what: "signature",
            expected: 64,
            got: bytes.len(),
        })?;
        Ok(Sig(Signature(arr)))
    }

    fn encode_signature(signature: &Sig) -> Vec<u8> {
        signature.0 .0.to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, KeyBytesError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyBytesError {
            what: "public key",
            expected: 32,
            got: bytes.len(),
        })?;
        Ok(PublicKey(arr))
    }

    fn encode_public_key(public_key: &PublicKey) -> Vec<u8> {
        public_key.0.to_vec()
    }
}

/// A validator and its voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Its address: the same Ed25519 key, as Malachite identifies validators.
    pub address: Address,
    /// Its Ed25519 consensus key.
    pub public_key: PublicKey,
    /// Its voting power, as in the ledger's set.
    pub power: u64,
}

impl mc::Validator<MeshwardContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn voting_power(&self) -> u64 {
        self.power
    }
}

/// The validator set, in the order of the ledger's set (sorted by key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Arc<Vec<Validator>>,
    total_power: u64,
}

impl ValidatorSet {
    /// The engine's view of the ledger's validator set.
    pub fn from_core(set: &meshward_core::tx::ValidatorSet) -> Self {
        let validators: Vec<Validator> = set
            .validators
            .iter()
            .map(|v| Validator {
                address: Address(v.key),
                public_key: v.key,
                power: v.power,
            })
            .collect();
        ValidatorSet {
            total_power: validators.iter().map(|v| v.power).sum(),
            validators: Arc::new(validators),
        }
    }

    /// The validators, sorted by address.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// The validators' keys, sorted.
    pub fn keys(&self) -> Vec<PublicKey> {
        self.validators.iter().map(|v| v.public_key).collect()
    }
}

impl mc::ValidatorSet<MeshwardContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> u64 {
        self.total_power
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .map(|i| &self.validators[i])
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A signed vote's content.
#[derive(Clone, Debug)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// The height voted at.
    pub height: Height,
    /// The round voted in.
    pub round: Round,
    /// The block hash voted for, or nil.
    pub value: NilOrVal<BlockHash>,
    /// The voting validator.
    pub validator: Address,
    /// Always `None`: Meshward does not use vote extensions.
    pub extension: Option<mc::SignedExtension<MeshwardContext>>,
}

// The extension is excluded from equality, as Malachite requires for WAL replay.
impl PartialEq for Vote {
    fn eq(&self, other: &Self) -> bool {
        self.vote_type == other.vote_type
            && self.height == other.height
            && self.round == other.round
            && self.value == other.value
            && self.validator == other.validator
    }
}

impl Eq for Vote {}

impl mc::Vote<MeshwardContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockHash> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockHash> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.vote_type
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    fn extension(&self) -> Option<&mc::SignedExtension<MeshwardContext>> {
        self.extension.as_ref()
    }

    fn take_extension(&mut self) -> Option<mc::SignedExtension<MeshwardContext>> {
        self.extension.take()
    }

    fn extend(self, extension: mc::SignedExtension<MeshwardContext>) -> Self {
        Vote {
            extension: Some(extension),
            ..self
        }
    }
}

/// A proposal message: the proposed block hash, signed by the round's proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The height of the proposal.
    pub height: Height,
    /// Its round.
    pub round: Round,
    /// The proposed block hash.
    pub value: BlockHash,
    /// The proof-of-lock round the proposer re-proposes from, or nil for a new block.
    pub pol_round: Round,
    /// The round's proposer.
    pub proposer: Address,
}

impl mc::Proposal<MeshwardContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockHash {
        &self.value
    }

    fn take_value(self) -> BlockHash {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// The first part of a proposal stream: which proposal the following parts make up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInit {
    /// The proposal's height.
    pub height: Height,
    /// Its round.
    pub round: Round,
    /// The proof-of-lock round it re-proposes from, or nil.
    pub pol_round: Round,
    /// The proposer, whose signature the `Fin` part carries.
    pub proposer: Address,
}

/// One part of a streamed proposal. The block's canonical encoding is cut into `Data` chunks;
/// `Fin` carries the proposer's signature over [`crate::signing::parts_signing_bytes`], since
/// Malachite does not sign parts (upstream issue #818).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalPart {
    /// The first part: which proposal follows.
    Init(PartInit),
    /// A chunk of the block's canonical encoding, in order.
    Data(Bytes),
    /// The last part: the proposer's Ed25519 signature over
    /// [`crate::signing::parts_signing_bytes`] (the block hash, height and rounds).
    Fin(Sig),
}

impl mc::ProposalPart<MeshwardContext> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init(_))
    }

    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin(_))
    }
}

/// Meshward's Malachite context: the chain id (part of every signed message) and the proposer
/// history that [`mc::Context::select_proposer`] reads.
#[derive(Clone, Debug)]
pub struct MeshwardContext {
    chain_id: Arc<str>,
    history: Arc<RwLock<ProposerHistory>>,
}

impl MeshwardContext {
    /// A context for `chain_id` that selects round-0 proposers from `history`.
    pub fn new(chain_id: &str, history: ProposerHistory) -> Self {
        MeshwardContext {
            chain_id: Arc::from(chain_id),
            history: Arc::new(RwLock::new(history)),
        }
    }

    /// The chain id, part of every signed consensus message.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Records a block just committed: its last-commit signers and whom it convicts (see
    /// [`ProposerHistory`]).
    pub fn record_committed(&self, block: &meshward_core::block::Block) {
        let mut h = meshward_core::sync::write(&self.history, "proposer history");
        h.record_block(block);
    }

    /// The proposer's index for `height` and `round` (round 0 skips inactive validators).
    pub fn proposer_index(&self, set: &ValidatorSet, height: u64, round: u32) -> usize {
        let keys = set.keys();
        let h = meshward_core::sync::read(&self.history, "proposer history");
        h.select_index(&keys, height, round)
    }
}

impl mc::Context for MeshwardContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = mc::LinearTimeouts;
    type Value = BlockHash;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let round = round.as_u32().unwrap_or(0);
        let i = self.proposer_index(validator_set, height.0, round);
        validator_set
            .validators
            .get(i)
            .or_else(|| validator_set.validators.first())
            .expect("a validator set is never empty (ValidatorSet::is_well_formed)")
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockHash,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockHash>,
        address: Address,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockHash>,
        address: Address,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }
}
