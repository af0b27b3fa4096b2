//! Transactions: what changes the ledger.
//!
//! Every transaction names a signer account and that account's next sequence number, and is
//! signed over `domain || chain id || type tag || signer || seq || body` (see
//! [`Tx::signing_bytes`]), so a signature is valid on one chain, for one type, once. Admin
//! transactions add co-signatures from other admin keys to reach the k-of-n threshold; co-signers
//! sign the very same bytes. Co-signatures are sorted by key, so a transaction has exactly one
//! encoding and one id.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{self, domain, Hash};
use crate::ids::{EncKey, Keypair, PublicKey, SignKey, Signature};

/// Transaction format version.
pub const TX_VERSION: u8 = 1;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;
/// Most groups one device can belong to.
pub const MAX_GROUPS_PER_DEVICE: usize = 16;
/// Most co-signatures on one transaction.
pub const MAX_COSIGS: usize = 16;
/// Longest revocation reason, in bytes.
pub const MAX_REASON: usize = 256;
/// Most allow rules in a policy.
pub const MAX_POLICY_RULES: usize = 1024;
/// Most validators in a set.
pub const MAX_VALIDATORS: usize = 128;
/// Most members a group key can be sealed to in one transaction.
pub const MAX_GROUP_MEMBERS: usize = 1024;
/// Longest sealed group key (HPKE ciphertext of a 32-byte key plus tag, with room to spare).
pub const MAX_SEALED_KEY: usize = 128;
/// Longest chain id, in bytes.
pub const MAX_CHAIN_ID: usize = 64;
/// Largest encoded transaction we accept from anyone.
pub const MAX_TX_BYTES: usize = 256 * 1024;

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
    let leaves: Vec<Hash> = commitments
        .iter()
        .map(|c| crate::merkle::leaf_hash(c.as_bytes()))
        .collect();
    let r = crate::merkle::root_of(&leaves);
    hash::hash(domain::BATCH, r.as_bytes())
}

/// Provable misbehaviour by a device.
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

/// The body of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxBody {
    /// A device joins; signed by the admins, or by the device itself with a ticket.
    Enroll(Enroll),
    /// The admins revoke a device: it is marked revoked (for good) and leaves its groups.
    Revoke {
        /// The device's account id.
        device: PublicKey,
        /// Why, for operators (at most [`MAX_REASON`] bytes).
        reason: String,
    },
    /// An account replaces its signing and encryption keys; its id stays the same.
    RotateKeys {
        /// The account's new Ed25519 signing key.
        new_sign: PublicKey,
        /// The account's new X25519 key.
        new_enc: EncKey,
        /// The new Ed25519 key's signature over [`rotate_message`].
        new_sig: Signature,
        /// The new X25519 key's signature over [`rotate_message`].
        enc_pop: Signature,
    },
    /// The admins replace the whole group-to-group send policy.
    SetPolicy {
        /// `(from, to)`: members of `from` may send to members of `to`. Sorted, no duplicates.
        allow: Vec<(GroupName, GroupName)>,
    },
    /// A sender commits to an envelope (or a batch of them) before delivering it.
    Anchor(Anchor),
    /// A recipient acknowledges an envelope it received.
    Ack {
        /// The commitment of the acknowledged envelope (as anchored by its sender).
        commitment: Hash,
        /// The account id of the envelope's sender.
        sender: PublicKey,
    },
    /// Proof of a device's misbehaviour, submitted by anyone.
    Evidence(Evidence),
    /// The admins replace the validator set (a handoff, as light-client proofs follow).
    ValidatorSetChange(ValidatorSet),
    /// A member (or an admin) hands out the next epoch of a group's key, one sealed copy per
    /// member.
    GroupKey {
        /// The group.
        group: GroupName,
        /// The new epoch: the group's current epoch plus one.
        epoch: u64,
        /// One entry per current member, sorted by member key.
        sealed: Vec<SealedGroupKey>,
    },
    /// The admins create a single-use enrollment ticket.
    CreateTicket {
        /// The hash of the ticket secret ([`ticket_hash`]); the secret itself stays off the ledger.
        ticket_hash: Hash,
        /// Expiry, ms since the Unix epoch (block time); the ticket is refused from then on.
        expires_ms: u64,
        /// The groups a device enrolled with the ticket joins (sorted, unique).
        groups: Vec<GroupName>,
    },
}

/// What the new keys sign in `RotateKeys`, proving the account holder has them.
pub fn rotate_message(
    chain_id: &str,
    account: &PublicKey,
    seq: u64,
    new_sign: &PublicKey,
    new_enc: &EncKey,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(160);
    w.raw(b"meshward/rotate/v1")
        .str(chain_id)
        .put(account)
        .u64(seq)
        .put(new_sign)
        .put(new_enc);
    w.into_bytes()
}

/// The one-byte type tags, part of the encoding and of the signed domain.
pub mod tag {
    /// [`TxBody::Enroll`](super::TxBody::Enroll).
    pub const ENROLL: u8 = 1;
    /// [`TxBody::Revoke`](super::TxBody::Revoke).
    pub const REVOKE: u8 = 2;
    /// [`TxBody::RotateKeys`](super::TxBody::RotateKeys).
    pub const ROTATE_KEYS: u8 = 3;
    /// [`TxBody::SetPolicy`](super::TxBody::SetPolicy).
    pub const SET_POLICY: u8 = 4;
    /// [`TxBody::Anchor`](super::TxBody::Anchor).
    pub const ANCHOR: u8 = 5;
    /// [`TxBody::Ack`](super::TxBody::Ack).
    pub const ACK: u8 = 6;
    /// [`TxBody::Evidence`](super::TxBody::Evidence).
    pub const EVIDENCE: u8 = 7;
    /// [`TxBody::ValidatorSetChange`](super::TxBody::ValidatorSetChange).
    pub const VALIDATOR_SET_CHANGE: u8 = 8;
    /// [`TxBody::GroupKey`](super::TxBody::GroupKey).
    pub const GROUP_KEY: u8 = 9;
    /// [`TxBody::CreateTicket`](super::TxBody::CreateTicket).
    pub const CREATE_TICKET: u8 = 10;
}

impl TxBody {
    /// The one-byte type tag of this body ([`tag`]).
    pub fn tag(&self) -> u8 {
        match self {
            TxBody::Enroll(_) => tag::ENROLL,
            TxBody::Revoke { .. } => tag::REVOKE,
            TxBody::RotateKeys { .. } => tag::ROTATE_KEYS,
            TxBody::SetPolicy { .. } => tag::SET_POLICY,
            TxBody::Anchor(_) => tag::ANCHOR,
            TxBody::Ack { .. } => tag::ACK,
            TxBody::Evidence(_) => tag::EVIDENCE,
            TxBody::ValidatorSetChange(_) => tag::VALIDATOR_SET_CHANGE,
            TxBody::GroupKey { .. } => tag::GROUP_KEY,
            TxBody::CreateTicket { .. } => tag::CREATE_TICKET,
        }
    }

    /// A short snake_case name of the type, for logs, metrics and the API.
    pub fn name(&self) -> &'static str {
        match self {
            TxBody::Enroll(_) => "enroll",
            TxBody::Revoke { .. } => "revoke",
            TxBody::RotateKeys { .. } => "rotate_keys",
            TxBody::SetPolicy { .. } => "set_policy",
            TxBody::Anchor(_) => "anchor",
            TxBody::Ack { .. } => "ack",
            TxBody::Evidence(_) => "evidence",
            TxBody::ValidatorSetChange(_) => "validator_set_change",
            TxBody::GroupKey { .. } => "group_key",
            TxBody::CreateTicket { .. } => "create_ticket",
        }
    }

    /// Whether this body needs the admin threshold.
    pub fn is_admin_only(&self) -> bool {
        matches!(
            self,
            TxBody::Revoke { .. }
                | TxBody::SetPolicy { .. }
                | TxBody::ValidatorSetChange(_)
                | TxBody::CreateTicket { .. }
        ) || matches!(self, TxBody::Enroll(e) if e.ticket.is_none())
    }

    /// Encodes the body without its tag.
    fn encode_fields(&self, w: &mut Writer) {
        match self {
            TxBody::Enroll(e) => {
                w.put(&e.device)
                    .put(&e.enc_key)
                    .list(&e.groups)
                    .option(&e.ticket)
                    .put(&e.pop_sign)
                    .put(&e.pop_enc);
            }
            TxBody::Revoke { device, reason } => {
                w.put(device).str(reason);
            }
            TxBody::RotateKeys {
                new_sign,
                new_enc,
                new_sig,
                enc_pop,
            } => {
                w.put(new_sign).put(new_enc).put(new_sig).put(enc_pop);
            }
            TxBody::SetPolicy { allow } => {
                w.len(allow.len());
                for (a, b) in allow {
                    w.put(a).put(b);
                }
            }
            TxBody::Anchor(a) => {
                w.put(&a.recipient)
                    .put(&a.commitment)
                    .u32(a.count)
                    .u64(a.timestamp_ms)
                    .u64(a.size_bytes);
            }
            TxBody::Ack { commitment, sender } => {
                w.put(commitment).put(sender);
            }
            TxBody::Evidence(Evidence::Equivocation { a, b }) => {
                w.u8(0).put(a.as_ref()).put(b.as_ref());
            }
            TxBody::Evidence(Evidence::PolicyViolation { anchor }) => {
                w.u8(1).put(anchor.as_ref());
            }
            TxBody::ValidatorSetChange(set) => {
                w.put(set);
            }
            TxBody::GroupKey {
                group,
                epoch,
                sealed,
            } => {
                w.put(group).u64(*epoch).len(sealed.len());
                for s in sealed {
                    w.put(&s.member).raw(&s.enc).bytes(&s.ciphertext);
                }
            }
            TxBody::CreateTicket {
                ticket_hash,
                expires_ms,
                groups,
            } => {
                w.put(ticket_hash).u64(*expires_ms).list(groups);
            }
        }
    }

    fn decode_fields(tag: u8, r: &mut Reader<'_>, nested: bool) -> Result<TxBody, DecodeError> {
        Ok(match tag {
            tag::ENROLL => {
                let device = r.get()?;
                let enc_key = r.get()?;
                let groups = decode_groups(r)?;
                let ticket = r.option("ticket")?;
                TxBody::Enroll(Enroll {
                    device,
                    enc_key,
                    groups,
                    ticket,
                    pop_sign: r.get()?,
                    pop_enc: r.get()?,
                })
            }
            tag::REVOKE => TxBody::Revoke {
                device: r.get()?,
                reason: r.string(MAX_REASON, "revocation reason")?,
            },
            tag::ROTATE_KEYS => TxBody::RotateKeys {
                new_sign: r.get()?,
                new_enc: r.get()?,
                new_sig: r.get()?,
                enc_pop: r.get()?,
            },
            tag::SET_POLICY => {
                let n = r.len(MAX_POLICY_RULES, "policy rules")?;
                let mut allow = Vec::with_capacity(n.min(r.remaining()));
                for _ in 0..n {
                    let a: GroupName = r.get()?;
                    let b: GroupName = r.get()?;
                    allow.push((a, b));
                }
                if !allow.windows(2).all(|w| w[0] < w[1]) {
                    return Err(DecodeError::Invalid {
                        what: "policy rules (must be sorted and unique)",
                    });
                }
                TxBody::SetPolicy { allow }
            }
            tag::ANCHOR => {
                let a = Anchor {
                    recipient: r.get()?,
                    commitment: r.get()?,
                    count: r.u32("anchor count")?,
                    timestamp_ms: r.u64("anchor timestamp")?,
                    size_bytes: r.u64("anchor size")?,
                };
                if a.count == 0 || a.count > MAX_BATCH {
                    return Err(DecodeError::Invalid {
                        what: "anchor count",
                    });
                }
                TxBody::Anchor(a)
            }
            tag::ACK => TxBody::Ack {
                commitment: r.get()?,
                sender: r.get()?,
            },
            tag::EVIDENCE => {
                // Evidence holds anchors only, never evidence: nesting is one level deep.
                if nested {
                    return Err(DecodeError::Invalid {
                        what: "nested evidence",
                    });
                }
                let ev = match r.u8("evidence tag")? {
                    0 => Evidence::Equivocation {
                        a: Box::new(Tx::decode_nested(r)?),
                        b: Box::new(Tx::decode_nested(r)?),
                    },
                    1 => Evidence::PolicyViolation {
                        anchor: Box::new(Tx::decode_nested(r)?),
                    },
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "evidence",
                            tag,
                        })
                    }
                };
                TxBody::Evidence(ev)
            }
            tag::VALIDATOR_SET_CHANGE => TxBody::ValidatorSetChange(r.get()?),
            tag::GROUP_KEY => {
                let group = r.get()?;
                let epoch = r.u64("group key epoch")?;
                let n = r.len(MAX_GROUP_MEMBERS, "sealed group keys")?;
                let mut sealed = Vec::with_capacity(n.min(r.remaining() / 64));
                for _ in 0..n {
                    sealed.push(SealedGroupKey {
                        member: r.get()?,
                        enc: r.array("sealed key encapsulation")?,
                        ciphertext: r.byte_vec(MAX_SEALED_KEY, "sealed group key")?,
                    });
                }
                if !sealed.windows(2).all(|w| w[0].member < w[1].member) {
                    return Err(DecodeError::Invalid {
                        what: "sealed group keys (must be sorted by member)",
                    });
                }
                TxBody::GroupKey {
                    group,
                    epoch,
                    sealed,
                }
            }
            tag::CREATE_TICKET => TxBody::CreateTicket {
                ticket_hash: r.get()?,
                expires_ms: r.u64("ticket expiry")?,
                groups: decode_groups(r)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "transaction type",
                    tag,
                })
            }
        })
    }
}

/// Groups of a device or ticket: 1 to 16 names, sorted and unique.
fn decode_groups(r: &mut Reader<'_>) -> Result<Vec<GroupName>, DecodeError> {
    let groups: Vec<GroupName> = r.list(MAX_GROUPS_PER_DEVICE, "groups")?;
    if groups.is_empty() || !groups.windows(2).all(|w| w[0] < w[1]) {
        return Err(DecodeError::Invalid {
            what: "groups (1 to 16, sorted and unique)",
        });
    }
    Ok(groups)
}

/// Sorts and deduplicates group names, the canonical order for enrollments and tickets.
pub fn canonical_groups(mut groups: Vec<GroupName>) -> Vec<GroupName> {
    groups.sort();
    groups.dedup();
    groups
}

/// An admin's co-signature on a transaction another admin sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoSig {
    /// The co-signing admin's key.
    pub key: PublicKey,
    /// Its signature over the same [`Tx::signing_bytes`] as the signer's.
    pub sig: Signature,
}

impl Encode for CoSig {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.key).put(&self.sig);
    }
}

impl Decode for CoSig {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CoSig {
            key: r.get()?,
            sig: r.get()?,
        })
    }
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// The account whose sequence number this transaction uses: a device's id, an admin's or a
    /// validator's key.
    pub signer: PublicKey,
    /// Must be the signer's last sequence number plus one.
    pub seq: u64,
    /// What the transaction does.
    pub body: TxBody,
    /// The signer's signature over [`Tx::signing_bytes`], made with the account's current key.
    pub sig: Signature,
    /// Further admin signatures over the same bytes, sorted by key.
    pub cosigs: Vec<CoSig>,
}

impl Tx {
    /// Builds and signs a transaction. `key` is the signer account's current signing key.
    pub fn sign(chain_id: &str, signer: PublicKey, key: &SignKey, seq: u64, body: TxBody) -> Tx {
        let msg = signing_bytes(chain_id, &signer, seq, &body);
        Tx {
            signer,
            seq,
            sig: key.sign(&msg),
            body,
            cosigs: Vec::new(),
        }
    }

    /// Adds a co-signature from another admin key, keeping co-signatures sorted.
    pub fn cosign(&mut self, chain_id: &str, key: &SignKey) {
        let sig = key.sign(&self.signing_bytes(chain_id));
        let k = key.public();
        match self.cosigs.binary_search_by(|c| c.key.cmp(&k)) {
            Ok(i) => self.cosigs[i].sig = sig,
            Err(i) => self.cosigs.insert(i, CoSig { key: k, sig }),
        }
    }

    /// The bytes the signer and every co-signer sign: domain, chain id, type tag, signer, seq,
    /// body.
    pub fn signing_bytes(&self, chain_id: &str) -> Vec<u8> {
        signing_bytes(chain_id, &self.signer, self.seq, &self.body)
    }

    /// The transaction id: a hash over the whole encoding, signatures included.
    pub fn id(&self) -> Hash {
        hash::hash(domain::TX_ID, &self.to_bytes())
    }

    fn decode_inner(r: &mut Reader<'_>, nested: bool) -> Result<Tx, DecodeError> {
        r.version(TX_VERSION, "transaction")?;
        let signer = r.get()?;
        let seq = r.u64("sequence number")?;
        let tag = r.u8("transaction type")?;
        let body = TxBody::decode_fields(tag, r, nested)?;
        let sig = r.get()?;
        let cosigs: Vec<CoSig> = r.list(MAX_COSIGS, "co-signatures")?;
        if !cosigs.windows(2).all(|w| w[0].key < w[1].key) {
            return Err(DecodeError::Invalid {
                what: "co-signatures (must be sorted by key and unique)",
            });
        }
        Ok(Tx {
            signer,
            seq,
            body,
            sig,
            cosigs,
        })
    }

    fn decode_nested(r: &mut Reader<'_>) -> Result<Tx, DecodeError> {
        let tx = Tx::decode_inner(r, true)?;
        if !matches!(tx.body, TxBody::Anchor(_)) {
            return Err(DecodeError::Invalid {
                what: "evidence transaction (must be an anchor)",
            });
        }
        Ok(tx)
    }

    /// Decodes a transaction, rejecting anything larger than [`MAX_TX_BYTES`].
    pub fn decode_bytes(bytes: &[u8]) -> Result<Tx, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLong {
                what: "transaction",
                len: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        Tx::from_bytes(bytes)
    }
}

/// Most transactions in one list ([`encode_tx_list`]).
pub const MAX_TX_LIST: usize = 4096;

/// A list of transactions as one byte string: `u32` count, then each transaction as `u32`
/// length and its canonical bytes. What `POST /v1/txs` takes and what one gossip message
/// carries. `txs` are canonical transaction encodings; at most [`MAX_TX_LIST`] of them.
pub fn encode_tx_list<B: AsRef<[u8]>>(txs: &[B]) -> Vec<u8> {
    let total: usize = txs.iter().map(|t| t.as_ref().len() + 4).sum();
    let mut w = Writer::with_capacity(total + 4);
    w.len(txs.len());
    for t in txs {
        w.bytes(t.as_ref());
    }
    w.into_bytes()
}

/// Decodes a list written by [`encode_tx_list`], refusing more than `max` transactions (and
/// more than [`MAX_TX_LIST`]), any transaction that does not decode canonically, and trailing
/// bytes.
pub fn decode_tx_list(bytes: &[u8], max: usize) -> Result<Vec<Tx>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.len(max.min(MAX_TX_LIST), "transactions")?;
    let mut txs = Vec::with_capacity(n.min(r.remaining() / 64));
    for _ in 0..n {
        txs.push(Tx::decode_bytes(r.bytes(MAX_TX_BYTES, "transaction")?)?);
    }
    r.finish()?;
    Ok(txs)
}

/// `TX_SIGN domain || chain id || tag || signer || seq || body`.
pub fn signing_bytes(chain_id: &str, signer: &PublicKey, seq: u64, body: &TxBody) -> Vec<u8> {
    let mut w = Writer::with_capacity(256);
    w.raw(domain::TX_SIGN)
        .str(chain_id)
        .u8(body.tag())
        .put(signer)
        .u64(seq);
    body.encode_fields(&mut w);
    w.into_bytes()
}

impl Encode for Tx {
    fn encode(&self, w: &mut Writer) {
        w.u8(TX_VERSION)
            .put(&self.signer)
            .u64(self.seq)
            .u8(self.body.tag());
        self.body.encode_fields(w);
        w.put(&self.sig).list(&self.cosigs);
    }
}

impl Decode for Tx {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Tx::decode_inner(r, false)
    }
}

/// Builds a self-signed enrollment body: the device proves it holds both keys.
pub fn enroll_body(
    chain_id: &str,
    keys: &Keypair,
    groups: Vec<GroupName>,
    ticket: Option<[u8; 32]>,
) -> TxBody {
    let msg = pop_message(chain_id, &keys.id(), &keys.enc_key());
    TxBody::Enroll(Enroll {
        device: keys.id(),
        enc_key: keys.enc_key(),
        groups: canonical_groups(groups),
        ticket,
        pop_sign: keys.sign.sign(&msg),
        pop_enc: keys.enc.sign_possession(&msg),
    })
}

/// Builds a `RotateKeys` body: the new keys sign the rotation for `account` at `seq`.
pub fn rotate_body(chain_id: &str, account: &PublicKey, seq: u64, new: &Keypair) -> TxBody {
    let msg = rotate_message(chain_id, account, seq, &new.id(), &new.enc_key());
    TxBody::RotateKeys {
        new_sign: new.id(),
        new_enc: new.enc_key(),
        new_sig: new.sign.sign(&msg),
        enc_pop: new.enc.sign_possession(&msg),
    }
}
