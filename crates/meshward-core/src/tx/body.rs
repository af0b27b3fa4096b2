//! [`TxBody`]: what a transaction does, its type tags and its canonical encoding.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{DecodeError, Reader, Writer};
use crate::hash::Hash;
use crate::ids::{EncKey, PublicKey, Signature};

use super::*;

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
    /// The admins reinstate a revoked (or quarantined) device under new keys: its account id,
    /// groups and sequence number stay; its old keys stay refused everywhere.
    Reinstate {
        /// The revoked device's account id.
        device: PublicKey,
        /// Its new Ed25519 signing key (never a key already in use).
        new_sign: PublicKey,
        /// Its new X25519 key.
        new_enc: EncKey,
        /// The new signing key's signature over [`pop_message`](crate::tx::pop_message)
        /// `(new_sign, new_enc)`, as in an enrollment.
        pop_sign: Signature,
        /// The new X25519 key's proof of possession over the same message.
        pop_enc: Signature,
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
    /// [`TxBody::Reinstate`](super::TxBody::Reinstate).
    pub const REINSTATE: u8 = 11;
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
            TxBody::Reinstate { .. } => tag::REINSTATE,
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
            TxBody::Reinstate { .. } => "reinstate",
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
                | TxBody::Reinstate { .. }
        ) || matches!(self, TxBody::Enroll(e) if e.ticket.is_none())
    }

    /// Encodes the body without its tag.
    pub(super) fn encode_fields(&self, w: &mut Writer) {
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
            TxBody::Evidence(Evidence::Validator(e)) => {
                w.u8(2)
                    .put(&e.validator)
                    .u8(e.kind as u8)
                    .u64(e.height)
                    .u32(e.round);
                for v in [&e.a, &e.b] {
                    w.option(&v.value).put(&v.sig);
                }
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
            TxBody::Reinstate {
                device,
                new_sign,
                new_enc,
                pop_sign,
                pop_enc,
            } => {
                w.put(device)
                    .put(new_sign)
                    .put(new_enc)
                    .put(pop_sign)
                    .put(pop_enc);
            }
        }
    }

    pub(super) fn decode_fields(
        tag: u8,
        r: &mut Reader<'_>,
        nested: bool,
    ) -> Result<TxBody, DecodeError> {
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
                    2 => {
                        let validator = r.get()?;
                        let kind = match r.u8("vote kind")? {
                            1 => crate::block::VoteKind::Prevote,
                            2 => crate::block::VoteKind::Precommit,
                            tag => {
                                return Err(DecodeError::UnknownTag {
                                    what: "vote kind",
                                    tag,
                                })
                            }
                        };
                        let height = r.u64("evidence height")?;
                        let round = r.u32("evidence round")?;
                        let mut vote = || -> Result<SignedVoteValue, DecodeError> {
                            Ok(SignedVoteValue {
                                value: r.option("vote value")?,
                                sig: r.get()?,
                            })
                        };
                        let a = vote()?;
                        let b = vote()?;
                        Evidence::Validator(Box::new(ValidatorEvidence {
                            validator,
                            kind,
                            height,
                            round,
                            a,
                            b,
                        }))
                    }
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
            tag::REINSTATE => TxBody::Reinstate {
                device: r.get()?,
                new_sign: r.get()?,
                new_enc: r.get()?,
                pop_sign: r.get()?,
                pop_enc: r.get()?,
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
