//! The records the state is made of (admins, validators, policy, accounts, tickets, groups) and
//! their canonical encoding, which the state root hashes and the store persists.

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::Hash;
use crate::ids::{EncKey, PublicKey};
use crate::tx::{GroupName, ValidatorSet, MAX_CHAIN_ID, MAX_GROUPS_PER_DEVICE, MAX_REASON};

/// Record format version.
pub const RECORD_VERSION: u8 = 1;
/// Most admin keys.
pub const MAX_ADMINS: usize = 16;
/// Most members one group record may hold.
pub const MAX_GROUP_SIZE: usize = 1 << 20;
/// Most allow rules in a policy record (the transaction limit).
const MAX_POLICY_RECORD_RULES: usize = crate::tx::MAX_POLICY_RULES;

/// The fleet's admin keys and how many of them must sign an admin transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSet {
    /// Sorted, unique.
    pub keys: Vec<PublicKey>,
    /// How many admins (the sender plus co-signers) must sign an admin transaction: 1 to
    /// `keys.len()`.
    pub threshold: u16,
}

impl AdminSet {
    /// Builds a set, sorting the keys; `None` unless it is well formed
    /// ([`AdminSet::is_well_formed`]).
    pub fn new(mut keys: Vec<PublicKey>, threshold: u16) -> Option<AdminSet> {
        keys.sort();
        let set = AdminSet { keys, threshold };
        set.is_well_formed().then_some(set)
    }

    /// Whether there are 1 to [`MAX_ADMINS`] unique sorted keys and a threshold between 1 and their
    /// number.
    pub fn is_well_formed(&self) -> bool {
        !self.keys.is_empty()
            && self.keys.len() <= MAX_ADMINS
            && self.keys.windows(2).all(|w| w[0] < w[1])
            && self.threshold >= 1
            && usize::from(self.threshold) <= self.keys.len()
    }

    /// Whether `k` is an admin key.
    pub fn contains(&self, k: &PublicKey) -> bool {
        self.keys.binary_search(k).is_ok()
    }
}

impl Encode for AdminSet {
    fn encode(&self, w: &mut Writer) {
        w.list(&self.keys).u16(self.threshold);
    }
}

impl Decode for AdminSet {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let set = AdminSet {
            keys: r.list(MAX_ADMINS, "admin keys")?,
            threshold: r.u16("admin threshold")?,
        };
        if !set.is_well_formed() {
            return Err(DecodeError::Invalid { what: "admin set" });
        }
        Ok(set)
    }
}

/// Whether a device may take part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Enrolled and in good standing: may send, receive and sign.
    Active,
    /// Revoked for good, by the admins or on evidence.
    Revoked {
        /// Why (at most [`MAX_REASON`] bytes): the admins' reason, or the evidence.
        reason: String,
        /// Height of the block that revoked it.
        height: u64,
    },
}

/// What the ledger knows of an enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The X25519 key envelopes to the device are sealed to (replaced by `RotateKeys`).
    pub enc_key: EncKey,
    /// Sorted, unique, 1 to 16.
    pub groups: Vec<GroupName>,
    /// Active, or revoked with a reason.
    pub status: DeviceStatus,
    /// Height of the block that enrolled the device.
    pub enrolled_height: u64,
}

impl Device {
    /// Whether the device is not revoked.
    pub fn is_active(&self) -> bool {
        self.status == DeviceStatus::Active
    }
}

/// An account: anyone who signs transactions. Admins and validators have one from genesis;
/// devices get one when enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The original Ed25519 key: the account's id for ever, even after a key rotation.
    pub id: PublicKey,
    /// The key that signs for the account now.
    pub sign_key: PublicKey,
    /// The last sequence number used.
    pub seq: u64,
    /// What the ledger knows of the device; `None` for admin and validator accounts.
    pub device: Option<Device>,
}

/// A one-time enrollment ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Expiry, ms since the Unix epoch (block time).
    pub expires_ms: u64,
    /// The groups a device enrolled with this ticket joins (sorted, unique).
    pub groups: Vec<GroupName>,
    /// Whether a device has redeemed it (a ticket is single use).
    pub used: bool,
}

/// A group: its members and the epoch of its current key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// Active members, sorted.
    pub members: Vec<PublicKey>,
    /// Epoch of the last `GroupKey`; 0 before the first.
    pub epoch: u64,
    /// Membership changed since the last `GroupKey`: the group must be rekeyed.
    pub needs_rekey: bool,
}

/// Which groups may send to which. Within a group is always allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Sorted, unique `(from, to)` pairs.
    pub allow: Vec<(GroupName, GroupName)>,
    /// Block time of the last `SetPolicy`, so old anchors are never judged by a newer policy.
    pub changed_ms: u64,
}

impl Policy {
    /// Whether a device in one of `from` may send to a device (or group) in one of `to`.
    pub fn allows(&self, from: &[GroupName], to: &[GroupName]) -> bool {
        from.iter().any(|f| {
            to.iter().any(|t| {
                f == t
                    || self
                        .allow
                        .binary_search_by(|(a, b)| (a, b).cmp(&(f, t)))
                        .is_ok()
            })
        })
    }
}

/// Where a record lives in the state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordKey {
    /// The chain's metadata (one record).
    Meta,
    /// The admin set (one record).
    Admins,
    /// The validator set (one record).
    Validators,
    /// The send policy (one record).
    Policy,
    /// An account, by its id.
    Account(PublicKey),
    /// A ticket, by the hash of its secret.
    Ticket(Hash),
    /// A group, by name.
    Group(GroupName),
    /// A validator's convictions, by its key.
    Conviction(PublicKey),
}

/// One unit of state, as committed and stored: a version byte, a tag and the fields (see
/// `docs/FORMATS.md`, State records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Tag 0: the chain id.
    Meta {
        /// The chain id.
        chain_id: String,
    },
    /// Tag 1: the admin keys and threshold.
    Admins(AdminSet),
    /// Tag 2: the validator set in force.
    Validators(ValidatorSet),
    /// Tag 3: the send policy and when it last changed.
    Policy(Policy),
    /// Tag 4: an account and its device, if it is one.
    Account(Account),
    /// Tag 5: an enrollment ticket, keyed by the hash of its secret.
    Ticket(Hash, Ticket),
    /// Tag 6: a group's members and key epoch.
    Group(GroupName, Group),
    /// Tag 7: a validator convicted of equivocation by evidence on the ledger.
    Conviction(PublicKey, Conviction),
}

/// How often evidence on the ledger convicted a validator of equivocation: at most once per
/// height, so the honest validators that all saw the same double vote convict it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conviction {
    /// Heights at which it was convicted.
    pub count: u64,
    /// The last of them.
    pub last_height: u64,
}

impl Record {
    /// Where this record lives in the state.
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Meta { .. } => RecordKey::Meta,
            Record::Admins(_) => RecordKey::Admins,
            Record::Validators(_) => RecordKey::Validators,
            Record::Policy(_) => RecordKey::Policy,
            Record::Account(a) => RecordKey::Account(a.id),
            Record::Ticket(h, _) => RecordKey::Ticket(*h),
            Record::Group(g, _) => RecordKey::Group(g.clone()),
            Record::Conviction(k, _) => RecordKey::Conviction(*k),
        }
    }
}

impl Encode for Record {
    fn encode(&self, w: &mut Writer) {
        w.u8(RECORD_VERSION);
        match self {
            Record::Meta { chain_id } => {
                w.u8(0).str(chain_id);
            }
            Record::Admins(a) => {
                w.u8(1).put(a);
            }
            Record::Validators(v) => {
                w.u8(2).put(v);
            }
            Record::Policy(p) => {
                w.u8(3).len(p.allow.len());
                for (a, b) in &p.allow {
                    w.put(a).put(b);
                }
                w.u64(p.changed_ms);
            }
            Record::Account(a) => {
                w.u8(4).put(&a.id).put(&a.sign_key).u64(a.seq);
                match &a.device {
                    None => {
                        w.u8(0);
                    }
                    Some(d) => {
                        w.u8(1)
                            .put(&d.enc_key)
                            .list(&d.groups)
                            .u64(d.enrolled_height);
                        match &d.status {
                            DeviceStatus::Active => w.u8(0),
                            DeviceStatus::Revoked { reason, height } => {
                                w.u8(1).str(reason).u64(*height)
                            }
                        };
                    }
                }
            }
            Record::Ticket(h, t) => {
                w.u8(5)
                    .put(h)
                    .u64(t.expires_ms)
                    .list(&t.groups)
                    .bool(t.used);
            }
            Record::Group(name, g) => {
                w.u8(6)
                    .put(name)
                    .list(&g.members)
                    .u64(g.epoch)
                    .bool(g.needs_rekey);
            }
            Record::Conviction(k, c) => {
                w.u8(7).put(k).u64(c.count).u64(c.last_height);
            }
        }
    }
}

impl Decode for Record {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(RECORD_VERSION, "state record")?;
        Ok(match r.u8("record tag")? {
            0 => Record::Meta {
                chain_id: r.string(MAX_CHAIN_ID, "chain id")?,
            },
            1 => Record::Admins(r.get()?),
            2 => Record::Validators(r.get()?),
            3 => {
                let n = r.len(MAX_POLICY_RECORD_RULES, "policy rules")?;
                let mut allow = Vec::with_capacity(n.min(r.remaining()));
                for _ in 0..n {
                    allow.push((r.get()?, r.get()?));
                }
                Record::Policy(Policy {
                    allow,
                    changed_ms: r.u64("policy time")?,
                })
            }
            4 => {
                let id = r.get()?;
                let sign_key = r.get()?;
                let seq = r.u64("account seq")?;
                let device = match r.u8("device flag")? {
                    0 => None,
                    1 => {
                        let enc_key = r.get()?;
                        let groups = r.list(MAX_GROUPS_PER_DEVICE, "device groups")?;
                        let enrolled_height = r.u64("enrolled height")?;
                        let status = match r.u8("device status")? {
                            0 => DeviceStatus::Active,
                            1 => DeviceStatus::Revoked {
                                reason: r.string(MAX_REASON, "revocation reason")?,
                                height: r.u64("revocation height")?,
                            },
                            tag => {
                                return Err(DecodeError::UnknownTag {
                                    what: "device status",
                                    tag,
                                })
                            }
                        };
                        Some(Device {
                            enc_key,
                            groups,
                            status,
                            enrolled_height,
                        })
                    }
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "device flag",
                            tag,
                        })
                    }
                };
                Record::Account(Account {
                    id,
                    sign_key,
                    seq,
                    device,
                })
            }
            5 => Record::Ticket(
                r.get()?,
                Ticket {
                    expires_ms: r.u64("ticket expiry")?,
                    groups: r.list(MAX_GROUPS_PER_DEVICE, "ticket groups")?,
                    used: r.bool("ticket used")?,
                },
            ),
            6 => Record::Group(
                r.get()?,
                Group {
                    members: r.list(MAX_GROUP_SIZE, "group members")?,
                    epoch: r.u64("group epoch")?,
                    needs_rekey: r.bool("group rekey flag")?,
                },
            ),
            7 => Record::Conviction(
                r.get()?,
                Conviction {
                    count: r.u64("conviction count")?,
                    last_height: r.u64("conviction height")?,
                },
            ),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "state record",
                    tag,
                })
            }
        })
    }
}
