//! The pieces transactions are made of: group names, recipients, validators and validator
//! sets, enrollments, anchors, evidence and sealed group keys.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{self, domain, Hash};
use crate::ids::{EncKey, PublicKey, Signature};

use super::*;

/// A group name: 1 to 64 bytes of `a-z 0-9 . _ -`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Checks and wraps a name; `None` if it is empty, over [`MAX_GROUP_NAME`] bytes, or has a byte
    /// outside `a-z 0-9 . _ -`.
    pub fn new(s: &str) -> Option<GroupName> {
        let ok = !s.is_empty()
            && s.len() <= MAX_GROUP_NAME
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        ok.then(|| GroupName(String::from(s)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group:{}", self.0)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Encode for GroupName {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.0);
    }
}

impl Decode for GroupName {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let s = r.string(MAX_GROUP_NAME, "group name")?;
        GroupName::new(&s).ok_or(DecodeError::Invalid { what: "group name" })
    }
}

/// Who an anchored message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// One device, by its account id.
    Device(PublicKey),
    /// Every member of a group.
    Group(GroupName),
}

impl Encode for Recipient {
    fn encode(&self, w: &mut Writer) {
        match self {
            Recipient::Device(k) => w.u8(0).put(k),
            Recipient::Group(g) => w.u8(1).put(g),
        };
    }
}

impl Decode for Recipient {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("recipient tag")? {
            0 => Ok(Recipient::Device(r.get()?)),
            1 => Ok(Recipient::Group(r.get()?)),
            tag => Err(DecodeError::UnknownTag {
                what: "recipient",
                tag,
            }),
        }
    }
}

/// One validator and its voting power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    /// The validator's Ed25519 consensus key.
    pub key: PublicKey,
    /// Voting power, greater than 0.
    pub power: u64,
}

impl Encode for Validator {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.key).u64(self.power);
    }
}

impl Decode for Validator {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Validator {
            key: r.get()?,
            power: r.u64("validator power")?,
        })
    }
}

/// The validators, sorted by key, each with power > 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidatorSet {
    /// The validators, sorted by key and unique.
    pub validators: Vec<Validator>,
}

/// Largest total voting power: keeps `3 * power` far from overflow.
pub const MAX_TOTAL_POWER: u64 = 1 << 60;

impl ValidatorSet {
    /// Builds a set, sorting by key. `None` if it is empty, too large, has a duplicate key, a
    /// zero power, or a total power over [`MAX_TOTAL_POWER`].
    pub fn new(mut validators: Vec<Validator>) -> Option<ValidatorSet> {
        validators.sort_by_key(|v| v.key);
        let set = ValidatorSet { validators };
        set.is_well_formed().then_some(set)
    }

    /// Whether the set is non-empty, at most [`MAX_VALIDATORS`], sorted by unique key, with every
    /// power > 0 and a total of at most [`MAX_TOTAL_POWER`].
    pub fn is_well_formed(&self) -> bool {
        let v = &self.validators;
        !v.is_empty()
            && v.len() <= MAX_VALIDATORS
            && v.windows(2).all(|w| w[0].key < w[1].key)
            && v.iter().all(|x| x.power > 0)
            && v.iter()
                .try_fold(0u64, |acc, x| acc.checked_add(x.power))
                .is_some_and(|t| t <= MAX_TOTAL_POWER)
    }

    /// The sum of all voting powers.
    pub fn total_power(&self) -> u64 {
        self.validators.iter().map(|v| v.power).sum()
    }

    /// Whether `power` of this set's voting power certifies a block: more than 2/3 of the total
    /// (`3 × power > 2 × total`). Powers are bounded by [`MAX_TOTAL_POWER`], so the products
    /// cannot overflow.
    pub fn is_quorum(&self, power: u64) -> bool {
        u128::from(power) * 3 > u128::from(self.total_power()) * 2
    }

    /// The voting power of `key`, or `None` if it is not in the set.
    pub fn power_of(&self, key: &PublicKey) -> Option<u64> {
        self.validators
            .binary_search_by(|v| v.key.cmp(key))
            .ok()
            .map(|i| self.validators[i].power)
    }

    /// The validator-set hash named by block headers (`validator_set_hash`).
    pub fn hash(&self) -> Hash {
        hash::hash(domain::VALIDATOR_SET, &self.to_bytes())
    }
}

impl Encode for ValidatorSet {
    fn encode(&self, w: &mut Writer) {
        w.list(&self.validators);
    }
}

impl Decode for ValidatorSet {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let set = ValidatorSet {
            validators: r.list(MAX_VALIDATORS, "validator set")?,
        };
        if !set.is_well_formed() {
            return Err(DecodeError::Invalid {
                what: "validator set",
            });
        }
        Ok(set)
    }
}

/// `Enroll`: a device joins the fleet with keys it generated itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enroll {
    /// The device's Ed25519 key, which becomes its account id.
    pub device: PublicKey,
    /// The device's X25519 key, which envelopes to it are sealed to.
    pub enc_key: EncKey,
    /// The groups the device joins: 1 to [`MAX_GROUPS_PER_DEVICE`], sorted and unique.
    pub groups: Vec<GroupName>,
    /// The one-time ticket secret, for self-enrollment. `None`: authorised by admin signatures.
    pub ticket: Option<[u8; 32]>,
    /// The device's signature over [`pop_message`] with its Ed25519 key.
    pub pop_sign: Signature,
    /// The device's XEdDSA-style signature over [`pop_message`] with its X25519 key.
    pub pop_enc: Signature,
}

/// Checks that both keys signed `msg` (a [`pop_message`] or a rotation's message): the Ed25519
/// key with Ed25519, the X25519 key with its XEdDSA-style proof of possession. The ledger and
/// the offline verifier use this one check.
pub fn verify_key_possession(
    sign_key: &PublicKey,
    enc_key: &EncKey,
    msg: &[u8],
    sign_sig: &Signature,
    enc_sig: &Signature,
) -> Result<(), crate::ids::KeyError> {
    sign_key
        .verify(msg, sign_sig)
        .and_then(|_| enc_key.verify_possession(msg, enc_sig))
}

/// What a device signs to prove it holds both of its keys.
pub fn pop_message(chain_id: &str, device: &PublicKey, enc_key: &EncKey) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.raw(domain::POP_SIGN)
        .str(chain_id)
        .put(device)
        .put(enc_key);
    w.into_bytes()
}

/// The hash of a ticket secret, as put on the ledger by `CreateTicket`.
pub fn ticket_hash(secret: &[u8; 32]) -> Hash {
    hash::hash(domain::TICKET, secret)
}

/// `Anchor`: the commitment to one envelope, or to the batch root over many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Who the anchored envelopes are for.
    pub recipient: Recipient,
    /// An envelope commitment, or a batch root (see [`batch_root`]).
    pub commitment: Hash,
    /// How many envelopes the commitment covers: 1 for a single envelope.
    pub count: u32,
    /// The sender's time of anchoring, ms since the Unix epoch (checked against policy changes).
    pub timestamp_ms: u64,
    /// Total ciphertext bytes covered.
    pub size_bytes: u64,
}

/// Most envelopes under one batch root.
pub const MAX_BATCH: u32 = 4096;

/// The batch root over envelope commitments: a Merkle root, domain-separated from a single
/// commitment so a batch can never pass for one envelope.
pub fn batch_root(commitments: &[Hash]) -> Hash {
    let leaves: Vec<Hash> = commitments.iter().map(batch_leaf).collect();
    batch_root_over(&crate::merkle::root_of(&leaves))
}

/// A batch's Merkle leaf for one envelope commitment.
pub fn batch_leaf(commitment: &Hash) -> Hash {
    crate::merkle::leaf_hash(commitment.as_bytes())
}

/// The batch root for `merkle_root`, the Merkle root over a batch's leaves ([`batch_leaf`]):
/// the domain separation of [`batch_root`], for a verifier that computed the Merkle root from
/// one leaf's audit path.
pub fn batch_root_over(merkle_root: &Hash) -> Hash {
    hash::hash(domain::BATCH, merkle_root.as_bytes())
}

/// Provable misbehaviour by a device or a validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Two different anchors signed by the same sender with the same sequence number.
    Equivocation {
        /// The first anchor transaction.
        a: Box<Tx>,
        /// The second anchor transaction, with the same signer and sequence number.
        b: Box<Tx>,
    },
    /// A signed anchor that the policy forbids.
    PolicyViolation {
        /// The forbidden anchor transaction.
        anchor: Box<Tx>,
    },
    /// A validator's two conflicting votes (see [`ValidatorEvidence`]).
    Validator(Box<ValidatorEvidence>),
}

/// A validator that signed two different votes of one kind for the same height and round: the
/// consensus engine's own evidence of equivocation, as the ledger keeps it. The two votes are in
/// canonical order (`a.value < b.value`, nil first), so every validator that saw them builds
/// the same evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorEvidence {
    /// The validator's consensus key.
    pub validator: PublicKey,
    /// Prevotes or precommits.
    pub kind: crate::block::VoteKind,
    /// The height of both votes.
    pub height: u64,
    /// The round of both votes.
    pub round: u32,
    /// The first vote.
    pub a: SignedVoteValue,
    /// The second vote, for another value.
    pub b: SignedVoteValue,
}

/// What one vote of a [`ValidatorEvidence`] was for, and its signature over
/// [`crate::block::vote_signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoteValue {
    /// The block hash voted for; `None` for nil.
    pub value: Option<Hash>,
    /// The validator's signature.
    pub sig: Signature,
}

/// One member's copy of a group key, sealed to the member's X25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedGroupKey {
    /// The member's account id.
    pub member: PublicKey,
    /// HPKE encapsulated key (X25519) of this member's copy.
    pub enc: [u8; 32],
    /// HPKE ciphertext of the 32-byte group secret (at most [`MAX_SEALED_KEY`] bytes).
    pub ciphertext: Vec<u8>,
}
