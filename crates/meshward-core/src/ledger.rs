//! The ledger rules: `apply(&state, &tx, &ctx) -> Result<Delta, Reject>`.
//!
//! [`apply`] reads the state through [`StateView`] and returns the records the transaction
//! changes; it never mutates anything, so a rejected transaction changes nothing. It is
//! deterministic, reads no clock (block time and height come in [`ApplyCtx`]) and never panics.
//! Every rule has its own [`Reject`] reason.
//!
//! [`execute_block`] applies a block's transactions in order, verifying their signatures in one
//! Ed25519 batch first. The batch's randomness is derived from its inputs, so every validator
//! that checks the same block reaches the same verdict.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::borrow::Borrow;

use ed25519_dalek::VerifyingKey;

use crate::ids::{verify_with, PublicKey, Signature};
use crate::state::{
    Account, Delta, Device, DeviceStatus, Group, Overlay, Policy, Record, State, StateView, Ticket,
};
use crate::tx::{
    pop_message, rotate_message, ticket_hash, verify_key_possession, Anchor, Enroll, Evidence,
    GroupName, Recipient, Tx, TxBody,
};

/// What the block supplies to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyCtx {
    /// Height of the block being applied (recorded as enrollment and revocation heights).
    pub height: u64,
    /// Block time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// Why a transaction was rejected. One variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The signer has no account (and the transaction is not a ticket enrollment by the device
    /// itself).
    #[error("signer {0} has no account")]
    UnknownSigner(PublicKey),
    /// The signer's signature does not verify under the account's current key.
    #[error("signature does not verify")]
    BadSignature,
    /// The sequence number is not the signer's last one plus one: a replay or a gap.
    #[error("sequence number {got}, expected {expected} (replay or gap)")]
    BadSequence {
        /// The signer's last sequence number plus one.
        expected: u64,
        /// The transaction's sequence number.
        got: u64,
    },
    /// An admin-only transaction is signed by a key that is not an admin.
    #[error("signer is not an admin")]
    NotAdmin,
    /// A co-signature is by the signer itself, by a non-admin, or does not verify.
    #[error("co-signature from {0} is not a valid admin signature")]
    BadCosignature(PublicKey),
    /// A transaction that is not admin-only carries co-signatures.
    #[error("co-signatures are only allowed on admin transactions")]
    UnexpectedCosignatures,
    /// An admin transaction has fewer signatures (signer plus co-signers) than the admin threshold.
    #[error("{have} admin signatures, {need} needed")]
    AdminThreshold {
        /// Signatures present: the signer's plus its co-signatures.
        have: usize,
        /// The admin threshold.
        need: usize,
    },
    /// The device key already has an account or is some account's current key.
    #[error("device {0} is already enrolled")]
    AlreadyEnrolled(PublicKey),
    /// A new signing key is not a valid point or is weak (enrollment or key rotation).
    #[error("key is weak or not a valid point")]
    WeakKey,
    /// A proof of possession (of the enrolled keys or of rotated keys) does not verify.
    #[error("proof of possession of the device keys does not verify")]
    BadProofOfPossession,
    /// A key rotation's new signing key already belongs to an account.
    #[error("key is already used by another account")]
    KeyInUse,
    /// No ticket with the hash of the enrollment's ticket secret.
    #[error("no such enrollment ticket")]
    UnknownTicket,
    /// The enrollment ticket was already redeemed.
    #[error("enrollment ticket was already used")]
    TicketUsed,
    /// The ticket expired (block time at or past its expiry), or a new ticket's expiry has passed.
    #[error("enrollment ticket has expired")]
    TicketExpired,
    /// A ticket with this hash already exists.
    #[error("enrollment ticket already exists")]
    TicketExists,
    /// A ticket enrollment is not signed by the device itself, or asks for other groups than the
    /// ticket's.
    #[error("enrollment does not match its ticket: {0}")]
    TicketMismatch(&'static str),
    /// The signer's account is not a device (key rotation, anchor, ack and the like are device
    /// operations).
    #[error("signer is not an enrolled device")]
    NotADevice,
    /// The signer is a revoked device.
    #[error("device {0} is revoked")]
    DeviceRevoked(PublicKey),
    /// The device named (a revocation target, an ack's sender) is not an enrolled device.
    #[error("device {0} is not enrolled")]
    NotEnrolled(PublicKey),
    /// An anchor's recipient is not an enrolled device.
    #[error("recipient {0} is not an enrolled device")]
    UnknownRecipient(PublicKey),
    /// An anchor's recipient device is revoked.
    #[error("recipient {0} is revoked")]
    RecipientRevoked(PublicKey),
    /// The group named does not exist.
    #[error("no group {0}")]
    UnknownGroup(GroupName),
    /// The policy allows none of the sender's groups to send to the recipient.
    #[error("policy forbids sending from these groups to {to}")]
    PolicyForbids {
        /// The recipient: a peer id, or `group:NAME`.
        to: String,
    },
    /// A group key's epoch is not the group's current epoch plus one.
    #[error("group key epoch {got}, expected {expected}")]
    StaleGroupEpoch {
        /// The group's current epoch plus one.
        expected: u64,
        /// The epoch the transaction carries.
        got: u64,
    },
    /// A group key does not hold exactly one sealed copy per current member, in member order.
    #[error("invalid group key: {0}")]
    BadGroupKey(&'static str),
    /// The signer of a group key is neither an active member of the group nor an admin.
    #[error("signer may not distribute this group's key")]
    NotAuthorized,
    /// The evidence does not prove misbehaviour (the reason says why).
    #[error("invalid evidence: {0}")]
    InvalidEvidence(&'static str),
    /// The device to revoke is already revoked.
    #[error("device {0} is already revoked")]
    AlreadyRevoked(PublicKey),
    /// A reinstatement names a device that is active, not revoked.
    #[error("device {0} is not revoked")]
    NotRevoked(PublicKey),
    /// A validator-set change is not well formed (see [`crate::tx::ValidatorSet::is_well_formed`]).
    #[error("invalid validator set")]
    InvalidValidatorSet,
}

/// Checks and applies one transaction, verifying every signature.
pub fn apply<V: StateView>(v: &V, tx: &Tx, ctx: &ApplyCtx) -> Result<Delta, Reject> {
    apply_with(v, tx, ctx, None)
}

/// Like [`apply`], but skips the signer's signature check when `preverified` is the key that
/// check would use (from [`preverify_batch`]).
pub fn apply_with<V: StateView>(
    v: &V,
    tx: &Tx,
    ctx: &ApplyCtx,
    preverified: Option<&PublicKey>,
) -> Result<Delta, Reject> {
    let chain_id = v.chain_id();
    let (account, key) = resolve_signer(v, tx)?;
    let expected = account.as_ref().map_or(1, |a| a.seq.saturating_add(1));
    if tx.seq != expected {
        return Err(Reject::BadSequence {
            expected,
            got: tx.seq,
        });
    }
    if let Some(Account {
        device: Some(d), ..
    }) = &account
    {
        if !d.is_active() {
            return Err(Reject::DeviceRevoked(tx.signer));
        }
    }
    // The signed bytes are only needed when some signature is still to be checked here.
    let admin_only = tx.body.is_admin_only();
    let checked = preverified == Some(&key);
    if !checked || admin_only {
        let msg = tx.signing_bytes(chain_id);
        if !checked {
            verify_cached(v, &key, &msg, &tx.sig)?;
        }
        if admin_only {
            check_admin_threshold(v, tx, &msg)?;
        }
    }
    if !admin_only && !tx.cosigs.is_empty() {
        return Err(Reject::UnexpectedCosignatures);
    }

    // The signer's account after this transaction: its sequence number moves on.
    let bumped = account.map(|mut a| {
        a.seq = tx.seq;
        a
    });
    let mut out = Vec::with_capacity(2);
    match &tx.body {
        TxBody::Enroll(e) => enroll(v, tx, e, bumped, ctx, &mut out)?,
        TxBody::Revoke { device, reason } => {
            let target = enrolled_device(v, device)?;
            out.push(Record::Account(signer(bumped)?));
            revoke(v, target, reason.clone(), ctx.height, &mut out);
        }
        TxBody::Reinstate {
            device,
            new_sign,
            new_enc,
            pop_sign,
            pop_enc,
        } => {
            let mut target = match v.account(device) {
                Some(
                    a @ Account {
                        device: Some(d), ..
                    },
                ) if !d.is_active() => a.clone(),
                Some(Account {
                    device: Some(_), ..
                }) => return Err(Reject::NotRevoked(*device)),
                _ => return Err(Reject::NotEnrolled(*device)),
            };
            if v.key_owner(new_sign).is_some() || v.account(new_sign).is_some() {
                return Err(Reject::KeyInUse);
            }
            new_sign.verifying_key().map_err(|_| Reject::WeakKey)?;
            let m = pop_message(chain_id, new_sign, new_enc);
            verify_key_possession(new_sign, new_enc, &m, pop_sign, pop_enc)
                .map_err(|_| Reject::BadProofOfPossession)?;
            out.push(Record::Account(signer(bumped)?));
            target.sign_key = *new_sign;
            let groups = match target.device.as_mut() {
                Some(d) => {
                    d.enc_key = *new_enc;
                    d.status = DeviceStatus::Active;
                    d.groups.clone()
                }
                None => Vec::new(),
            };
            for g in &groups {
                let mut grp = v.group(g).cloned().unwrap_or_default();
                if let Err(i) = grp.members.binary_search(device) {
                    grp.members.insert(i, *device);
                }
                // The returning member needs the group key: the next `GroupKey` includes it.
                grp.needs_rekey = true;
                out.push(Record::Group(g.clone(), grp));
            }
            out.push(Record::Account(target));
        }
        TxBody::RotateKeys {
            new_sign,
            new_enc,
            new_sig,
            enc_pop,
        } => {
            let mut acc = signer(bumped)?;
            let dev = acc.device.as_mut().ok_or(Reject::NotADevice)?;
            if v.key_owner(new_sign).is_some() || v.account(new_sign).is_some() {
                return Err(Reject::KeyInUse);
            }
            new_sign.verifying_key().map_err(|_| Reject::WeakKey)?;
            let m = rotate_message(chain_id, &tx.signer, tx.seq, new_sign, new_enc);
            verify_key_possession(new_sign, new_enc, &m, new_sig, enc_pop)
                .map_err(|_| Reject::BadProofOfPossession)?;
            dev.enc_key = *new_enc;
            acc.sign_key = *new_sign;
            out.push(Record::Account(acc));
        }
        TxBody::SetPolicy { allow } => {
            out.push(Record::Account(signer(bumped)?));
            out.push(Record::Policy(Policy {
                allow: allow.clone(),
                changed_ms: ctx.time_ms,
            }));
        }
        TxBody::Anchor(a) => {
            let acc = signer(bumped)?;
            let dev = acc.device.as_ref().ok_or(Reject::NotADevice)?;
            anchor_allowed(v, dev, a)?;
            out.push(Record::Account(acc));
        }
        TxBody::Ack { sender, .. } => {
            let acc = signer(bumped)?;
            acc.device.as_ref().ok_or(Reject::NotADevice)?;
            match v.account(sender) {
                Some(Account {
                    device: Some(_), ..
                }) => {}
                _ => return Err(Reject::NotEnrolled(*sender)),
            }
            out.push(Record::Account(acc));
        }
        TxBody::Evidence(Evidence::Validator(e)) => {
            let acc = signer(bumped)?;
            let convicted = check_validator_evidence(v, e, ctx.height)?;
            if acc.id == e.validator {
                return Err(Reject::InvalidEvidence("a validator cannot report itself"));
            }
            out.push(Record::Account(acc));
            out.push(Record::Conviction(e.validator, convicted));
        }
        TxBody::Evidence(ev) => {
            let acc = signer(bumped)?;
            let accused = check_evidence(v, ev)?;
            if accused.id == acc.id {
                return Err(Reject::InvalidEvidence("a device cannot report itself"));
            }
            out.push(Record::Account(acc));
            let reason = match ev {
                Evidence::Equivocation { a, .. } => format!("equivocation at seq {}", a.seq),
                Evidence::PolicyViolation { anchor } => {
                    format!("policy violation at seq {}", anchor.seq)
                }
                // Handled above; a device is never revoked for a validator's votes.
                Evidence::Validator(_) => return Err(Reject::InvalidEvidence("not a device")),
            };
            revoke(v, accused, reason, ctx.height, &mut out);
        }
        TxBody::ValidatorSetChange(set) => {
            if !set.is_well_formed() {
                return Err(Reject::InvalidValidatorSet);
            }
            out.push(Record::Account(signer(bumped)?));
            for val in &set.validators {
                if v.account(&val.key).is_none() {
                    out.push(Record::Account(Account {
                        id: val.key,
                        sign_key: val.key,
                        seq: 0,
                        device: None,
                    }));
                }
            }
            out.push(Record::Validators(set.clone()));
        }
        TxBody::GroupKey {
            group,
            epoch,
            sealed,
        } => {
            let acc = signer(bumped)?;
            let g = v
                .group(group)
                .ok_or_else(|| Reject::UnknownGroup(group.clone()))?;
            let is_member = acc.device.as_ref().is_some_and(|d| d.is_active())
                && g.members.binary_search(&acc.id).is_ok();
            if !is_member && !v.admins().contains(&tx.signer) {
                return Err(Reject::NotAuthorized);
            }
            let expected = g.epoch.saturating_add(1);
            if *epoch != expected {
                return Err(Reject::StaleGroupEpoch {
                    expected,
                    got: *epoch,
                });
            }
            if sealed.len() != g.members.len()
                || sealed.iter().zip(&g.members).any(|(s, m)| s.member != *m)
            {
                return Err(Reject::BadGroupKey(
                    "sealed keys must cover exactly the current members",
                ));
            }
            let updated = Group {
                members: g.members.clone(),
                epoch: *epoch,
                needs_rekey: false,
            };
            out.push(Record::Account(acc));
            out.push(Record::Group(group.clone(), updated));
        }
        TxBody::CreateTicket {
            ticket_hash,
            expires_ms,
            groups,
        } => {
            if v.ticket(ticket_hash).is_some() {
                return Err(Reject::TicketExists);
            }
            if *expires_ms <= ctx.time_ms {
                return Err(Reject::TicketExpired);
            }
            out.push(Record::Account(signer(bumped)?));
            out.push(Record::Ticket(
                *ticket_hash,
                Ticket {
                    expires_ms: *expires_ms,
                    groups: groups.clone(),
                    used: false,
                },
            ));
        }
    }
    Ok(Delta(out))
}

/// The signer's account (if it exists) and the key its signature must verify under. Only a
/// ticket enrollment may come from an account that does not exist yet: the device's own.
fn resolve_signer<V: StateView>(v: &V, tx: &Tx) -> Result<(Option<Account>, PublicKey), Reject> {
    match v.account(&tx.signer) {
        Some(a) => Ok((Some(a.clone()), a.sign_key)),
        None => match &tx.body {
            TxBody::Enroll(Enroll {
                ticket: Some(_),
                device,
                ..
            }) if *device == tx.signer => Ok((None, tx.signer)),
            _ => Err(Reject::UnknownSigner(tx.signer)),
        },
    }
}

fn signer(bumped: Option<Account>) -> Result<Account, Reject> {
    // Only a ticket enrollment has no signer account, and it never calls this.
    bumped.ok_or(Reject::NotADevice)
}

/// Checks `tx`'s signature alone, under its signer's current key (the signer itself for an
/// account not yet on the ledger), with the state's cached decompressed key where it has one.
pub fn verify_signature<V: StateView>(v: &V, tx: &Tx) -> Result<(), Reject> {
    let key = v.account(&tx.signer).map_or(tx.signer, |a| a.sign_key);
    verify_cached(v, &key, &tx.signing_bytes(v.chain_id()), &tx.sig)
}

fn verify_cached<V: StateView>(
    v: &V,
    key: &PublicKey,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), Reject> {
    match v.cached_key(key) {
        Some(vk) => verify_with(vk, msg, sig),
        None => key.verify(msg, sig),
    }
    .map_err(|_| Reject::BadSignature)
}

fn check_admin_threshold<V: StateView>(v: &V, tx: &Tx, msg: &[u8]) -> Result<(), Reject> {
    let admins = v.admins();
    if !admins.contains(&tx.signer) {
        return Err(Reject::NotAdmin);
    }
    for c in &tx.cosigs {
        if c.key == tx.signer || !admins.contains(&c.key) {
            return Err(Reject::BadCosignature(c.key));
        }
        verify_cached(v, &c.key, msg, &c.sig).map_err(|_| Reject::BadCosignature(c.key))?;
    }
    let have = 1 + tx.cosigs.len();
    let need = usize::from(admins.threshold);
    if have < need {
        return Err(Reject::AdminThreshold { have, need });
    }
    Ok(())
}

fn enroll<V: StateView>(
    v: &V,
    tx: &Tx,
    e: &Enroll,
    bumped: Option<Account>,
    ctx: &ApplyCtx,
    out: &mut Vec<Record>,
) -> Result<(), Reject> {
    if v.account(&e.device).is_some() || v.key_owner(&e.device).is_some() {
        return Err(Reject::AlreadyEnrolled(e.device));
    }
    e.device.verifying_key().map_err(|_| Reject::WeakKey)?;
    let msg = pop_message(v.chain_id(), &e.device, &e.enc_key);
    verify_key_possession(&e.device, &e.enc_key, &msg, &e.pop_sign, &e.pop_enc)
        .map_err(|_| Reject::BadProofOfPossession)?;
    let device_seq = match &e.ticket {
        Some(secret) => {
            if tx.signer != e.device {
                return Err(Reject::TicketMismatch(
                    "a ticket is redeemed by the device itself",
                ));
            }
            let th = ticket_hash(secret);
            let t = v.ticket(&th).ok_or(Reject::UnknownTicket)?;
            if t.used {
                return Err(Reject::TicketUsed);
            }
            if t.expires_ms <= ctx.time_ms {
                return Err(Reject::TicketExpired);
            }
            if t.groups != e.groups {
                return Err(Reject::TicketMismatch("groups differ from the ticket's"));
            }
            let mut used = t.clone();
            used.used = true;
            out.push(Record::Ticket(th, used));
            tx.seq
        }
        None => {
            out.push(Record::Account(signer(bumped)?));
            0
        }
    };
    out.push(Record::Account(Account {
        id: e.device,
        sign_key: e.device,
        seq: device_seq,
        device: Some(Device {
            enc_key: e.enc_key,
            groups: e.groups.clone(),
            status: DeviceStatus::Active,
            enrolled_height: ctx.height,
        }),
    }));
    for g in &e.groups {
        let mut grp = v.group(g).cloned().unwrap_or_default();
        if let Err(i) = grp.members.binary_search(&e.device) {
            grp.members.insert(i, e.device);
        }
        // A new member needs the group key: the next `GroupKey` includes it.
        grp.needs_rekey = true;
        out.push(Record::Group(g.clone(), grp));
    }
    Ok(())
}

/// The enrolled device `id`, which must still be active.
fn enrolled_device<V: StateView>(v: &V, id: &PublicKey) -> Result<Account, Reject> {
    match v.account(id) {
        Some(
            a @ Account {
                device: Some(d), ..
            },
        ) => {
            if d.is_active() {
                Ok(a.clone())
            } else {
                Err(Reject::AlreadyRevoked(*id))
            }
        }
        _ => Err(Reject::NotEnrolled(*id)),
    }
}

/// Marks a device revoked and takes it out of its groups, which then need a new key.
fn revoke<V: StateView>(
    v: &V,
    mut target: Account,
    reason: String,
    height: u64,
    out: &mut Vec<Record>,
) {
    let groups = match target.device.as_mut() {
        Some(d) => {
            d.status = DeviceStatus::Revoked { reason, height };
            d.groups.clone()
        }
        None => Vec::new(),
    };
    for g in groups {
        if let Some(grp) = v.group(&g) {
            let mut grp = grp.clone();
            if let Ok(i) = grp.members.binary_search(&target.id) {
                grp.members.remove(i);
            }
            grp.needs_rekey = true;
            out.push(Record::Group(g, grp));
        }
    }
    out.push(Record::Account(target));
}

/// Whether the policy lets `from` anchor a message to `a.recipient`.
pub fn anchor_allowed<V: StateView>(v: &V, from: &Device, a: &Anchor) -> Result<(), Reject> {
    let policy = v.policy();
    match &a.recipient {
        Recipient::Device(r) => {
            let dev = match v.account(r) {
                Some(Account {
                    device: Some(d), ..
                }) => d,
                _ => return Err(Reject::UnknownRecipient(*r)),
            };
            if !dev.is_active() {
                return Err(Reject::RecipientRevoked(*r));
            }
            if !policy.allows(&from.groups, &dev.groups) {
                return Err(Reject::PolicyForbids { to: r.peer_id() });
            }
        }
        Recipient::Group(g) => {
            if v.group(g).is_none() {
                return Err(Reject::UnknownGroup(g.clone()));
            }
            if !policy.allows(&from.groups, core::slice::from_ref(g)) {
                return Err(Reject::PolicyForbids {
                    to: format!("group:{g}"),
                });
            }
        }
    }
    Ok(())
}

/// Checks evidence and returns the account it convicts.
/// Heights between two convictions of one validator: a validator that double-votes at every
/// height is convicted once per this many, so its evidence (and the blocks it would prompt)
/// cannot fill the chain. Consensus skips a convicted validator as round-0 proposer for longer
/// than this (`meshward_consensus::proposer::CONVICTION_SKIP_HEIGHTS`).
pub const CONVICTION_SPACING: u64 = 32;

/// Checks a validator's double vote, as the block at `height` would record it, and returns its
/// convictions with this one counted. It must name a validator of the set in force, two
/// different values in canonical order (nil first), two signatures that verify under its key,
/// a height no later than `height`, and, after a first conviction, a height at least
/// [`CONVICTION_SPACING`] above the last one.
fn check_validator_evidence<V: StateView>(
    v: &V,
    e: &crate::tx::ValidatorEvidence,
    height: u64,
) -> Result<crate::state::Conviction, Reject> {
    if v.validators().power_of(&e.validator).is_none() {
        return Err(Reject::InvalidEvidence(
            "not a validator of the set in force",
        ));
    }
    if e.a.value >= e.b.value {
        return Err(Reject::InvalidEvidence(
            "the two votes are the same or not in canonical order",
        ));
    }
    if e.height == 0 || e.height > height {
        return Err(Reject::InvalidEvidence(
            "votes for a height not yet reached",
        ));
    }
    let prev = v.conviction(&e.validator).copied().unwrap_or_default();
    if prev.count > 0 && e.height < prev.last_height.saturating_add(CONVICTION_SPACING) {
        return Err(Reject::InvalidEvidence(
            "the validator was convicted less than CONVICTION_SPACING heights before",
        ));
    }
    for vote in [&e.a, &e.b] {
        let msg = crate::block::vote_signing_bytes(
            v.chain_id(),
            e.kind,
            e.height,
            e.round,
            vote.value.as_ref(),
        );
        e.validator
            .verify(&msg, &vote.sig)
            .map_err(|_| Reject::InvalidEvidence("vote signature does not verify"))?;
    }
    Ok(crate::state::Conviction {
        count: prev.count + 1,
        last_height: e.height,
    })
}

fn check_evidence<V: StateView>(v: &V, ev: &Evidence) -> Result<Account, Reject> {
    let chain_id = v.chain_id();
    let anchor_of = |tx: &Tx| match &tx.body {
        TxBody::Anchor(a) => Ok(a.clone()),
        _ => Err(Reject::InvalidEvidence("evidence must hold anchors")),
    };
    match ev {
        Evidence::Equivocation { a, b } => {
            anchor_of(a)?;
            anchor_of(b)?;
            if a.signer != b.signer || a.seq != b.seq {
                return Err(Reject::InvalidEvidence(
                    "anchors have different senders or sequence numbers",
                ));
            }
            if a.body == b.body {
                return Err(Reject::InvalidEvidence("the two anchors are the same"));
            }
            let acc = enrolled_device(v, &a.signer)?;
            for t in [a, b] {
                verify_cached(v, &acc.sign_key, &t.signing_bytes(chain_id), &t.sig)
                    .map_err(|_| Reject::InvalidEvidence("anchor signature does not verify"))?;
            }
            Ok(acc)
        }
        Evidence::Validator(_) => Err(Reject::InvalidEvidence(
            "validator evidence accuses no device",
        )),
        Evidence::PolicyViolation { anchor } => {
            let a = anchor_of(anchor)?;
            let acc = enrolled_device(v, &anchor.signer)?;
            verify_cached(
                v,
                &acc.sign_key,
                &anchor.signing_bytes(chain_id),
                &anchor.sig,
            )
            .map_err(|_| Reject::InvalidEvidence("anchor signature does not verify"))?;
            // An anchor made before the current policy was set is not judged by it.
            if a.timestamp_ms <= v.policy().changed_ms {
                return Err(Reject::InvalidEvidence(
                    "anchor predates the current policy",
                ));
            }
            let dev = acc
                .device
                .as_ref()
                .ok_or(Reject::InvalidEvidence("sender is not a device"))?;
            match anchor_allowed(v, dev, &a) {
                Err(Reject::PolicyForbids { .. }) => Ok(acc),
                Ok(()) => Err(Reject::InvalidEvidence("the policy allows this anchor")),
                Err(_) => Err(Reject::InvalidEvidence("anchor is not a policy violation")),
            }
        }
    }
}

/// Verifies the signers' signatures of `txs` in one batch, against the keys in `v`. Returns,
/// per transaction, the key its signature was verified under, or `None` where it was not (the
/// batch failed, or the key was unknown): [`apply_with`] then checks that one on its own.
pub fn preverify_batch<V: StateView, T: Borrow<Tx>>(v: &V, txs: &[T]) -> Vec<Option<PublicKey>> {
    preverify_rest(v, txs, Vec::new())
}

/// Like [`preverify_batch`], but a transaction whose entry in `known` is already `Some(key)`
/// (its exact bytes, signature included, were verified under `key` before, say when the
/// mempool admitted it) is not verified again; the rest are verified in one batch. `known`
/// shorter than `txs` counts as `None` for the rest. [`apply_with`] still compares each key
/// with the signer's current one, so a key rotated since is checked afresh.
pub fn preverify_rest<V: StateView, T: Borrow<Tx>>(
    v: &V,
    txs: &[T],
    mut known: Vec<Option<PublicKey>>,
) -> Vec<Option<PublicKey>> {
    known.resize(txs.len(), None);
    let chain_id = v.chain_id();
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let mut sigs = Vec::new();
    let mut keys: Vec<VerifyingKey> = Vec::new();
    let mut which = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        let tx: &Tx = tx.borrow();
        let Some(acc) = v.account(&tx.signer) else {
            continue;
        };
        if known[i] == Some(acc.sign_key) {
            continue;
        }
        known[i] = None;
        // A signer not in the key cache costs a decompression here; a key that does not
        // decompress is left to the transaction's own check, which rejects it.
        let vk = match v.cached_key(&acc.sign_key) {
            Some(vk) => *vk,
            None => match VerifyingKey::from_bytes(&acc.sign_key.0) {
                Ok(vk) => vk,
                Err(_) => continue,
            },
        };
        msgs.push(tx.signing_bytes(chain_id));
        sigs.push(ed25519_dalek::Signature::from_bytes(&tx.sig.0));
        keys.push(vk);
        which.push((i, acc.sign_key));
    }
    if which.is_empty() {
        return known;
    }
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    if ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok() {
        for (i, k) in which {
            known[i] = Some(k);
        }
    }
    known
}

/// Why a block's transactions do not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index} rejected: {reason}")]
pub struct BlockReject {
    /// Position of the rejected transaction in the block, from 0.
    pub index: usize,
    /// Why it was rejected.
    pub reason: Reject,
}

/// Applies a block's transactions in order on top of `state` without changing it, returning
/// all their changes. With `batch`, signatures are first verified in one Ed25519 batch.
pub fn execute_txs(
    state: &State,
    txs: &[Tx],
    ctx: &ApplyCtx,
    batch: bool,
) -> Result<Delta, BlockReject> {
    let pre = if batch {
        preverify_batch(state, txs)
    } else {
        alloc::vec![None; txs.len()]
    };
    execute_preverified(state, txs, ctx, &pre)
}

/// Like [`execute_txs`], with each transaction's signature already verified under the key in
/// `pre` where that is `Some` (see [`preverify_rest`]).
pub fn execute_preverified(
    state: &State,
    txs: &[Tx],
    ctx: &ApplyCtx,
    pre: &[Option<PublicKey>],
) -> Result<Delta, BlockReject> {
    let mut overlay = Overlay::new(state);
    for (index, tx) in txs.iter().enumerate() {
        let k = pre.get(index).and_then(|k| k.as_ref());
        let delta =
            apply_with(&overlay, tx, ctx, k).map_err(|reason| BlockReject { index, reason })?;
        overlay.push(delta);
    }
    Ok(overlay.into_delta())
}

/// Applies every transaction of a block to `state`, or none of them. Returns the number of
/// transactions applied.
pub fn execute_block(
    state: &mut State,
    txs: &[Tx],
    ctx: &ApplyCtx,
    batch: bool,
) -> Result<usize, BlockReject> {
    let delta = execute_txs(state, txs, ctx, batch)?;
    state.apply_delta(delta);
    Ok(txs.len())
}
