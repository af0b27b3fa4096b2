//! Admin transactions, signed k-of-n: enrolling, revoking and reinstating devices, setting the
//! policy and creating enrollment tickets.
//!
//! The fleet's genesis fixes its admin keys and how many of them must sign an admin
//! transaction. The first admin key signs (its account's sequence number orders the admin's
//! transactions); every other key given co-signs. The transaction goes to a gateway over the
//! mesh ([`Client`]), which needs no API token: the signatures authorise it. Each function
//! waits until the transaction is final (at most [`FINALITY_TIMEOUT`]).
//!
//! ```no_run
//! # async fn f(client: &meshward_sdk::client::Client, device: meshward_sdk::PublicKey) -> Result<(), meshward_sdk::admin::AdminError> {
//! use meshward_sdk::admin;
//! let admins = admin::load_admins(&["admin1.key", "admin2.key"])?;
//! let done = admin::revoke(client, &admins, device, "lost in the field").await?;
//! println!("revoked at height {}", done.height);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::tx::{canonical_groups, ticket_hash, Enroll, GroupName, Tx, TxBody};

use crate::client::{Client, ClientError};
use crate::keyfile::{self, KeyFileError, KeyKind};
use crate::ticket::Ticket;

/// How long an admin transaction (or a join, or a rotation) may take to become final.
pub const FINALITY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an admin transaction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No admin key was given.
    #[error("no admin key given: an admin transaction needs at least one admin key file")]
    NoAdmins,
    /// An admin key file could not be read.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The ledger has no account for the first admin key, so it cannot sign for the fleet.
    #[error("the first admin key is not an admin of this fleet (no account on the ledger)")]
    NotAnAdmin {
        /// What the gateway answered.
        source: ClientError,
    },
    /// The mesh or the ledger refused (too few admin signatures is a ledger rejection).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A final admin transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The transaction's id.
    pub tx: Hash,
    /// The height of the block it is in.
    pub height: u64,
}

/// A ticket created on the ledger.
#[derive(Debug, Clone)]
pub struct CreatedTicket {
    /// The ticket to hand to the device (its text form is its `Display`).
    pub ticket: Ticket,
    /// When the ledger stops accepting it, in ms since the Unix epoch.
    pub expires_ms: u64,
    /// The height the ticket is final at.
    pub height: u64,
}

/// Reads admin key files, in order (the first one signs, the others co-sign).
pub fn load_admins<P: AsRef<Path>>(files: &[P]) -> Result<Vec<Keypair>, AdminError> {
    if files.is_empty() {
        return Err(AdminError::NoAdmins);
    }
    files
        .iter()
        .map(|f| Ok(keyfile::load(f.as_ref(), KeyKind::Admin)?))
        .collect()
}

/// Builds an admin transaction: the first admin signs it at `seq`, the others co-sign.
pub fn sign(chain_id: &str, admins: &[Keypair], seq: u64, body: TxBody) -> Result<Tx, AdminError> {
    let (first, others) = admins.split_first().ok_or(AdminError::NoAdmins)?;
    let mut tx = Tx::sign(chain_id, first.id(), &first.sign, seq, body);
    for a in others {
        tx.cosign(chain_id, &a.sign);
    }
    Ok(tx)
}

/// Signs an admin transaction (first admin signs, the others co-sign), submits it and waits
/// until it is final.
pub async fn admin_tx(
    client: &Client,
    admins: &[Keypair],
    body: TxBody,
) -> Result<Committed, AdminError> {
    let signer = admins.first().ok_or(AdminError::NoAdmins)?.id();
    let seq = client
        .next_seq(&signer)
        .await
        .map_err(|source| AdminError::NotAnAdmin { source })?;
    let tx = sign(client.chain_id(), admins, seq, body)?;
    let id = client.submit(&tx).await?;
    let height = client
        .wait_final(&id, Instant::now() + FINALITY_TIMEOUT)
        .await?;
    Ok(Committed { tx: id, height })
}

/// Enrolls a device with admin signatures (the body from [`crate::devicepub`]).
pub async fn enroll(
    client: &Client,
    admins: &[Keypair],
    enroll: Enroll,
) -> Result<Committed, AdminError> {
    admin_tx(client, admins, TxBody::Enroll(enroll)).await
}

/// Revokes a device: every node refuses it from the next block.
pub async fn revoke(
    client: &Client,
    admins: &[Keypair],
    device: PublicKey,
    reason: &str,
) -> Result<Committed, AdminError> {
    let body = TxBody::Revoke {
        device,
        reason: reason.to_string(),
    };
    admin_tx(client, admins, body).await
}

/// Reinstates a revoked (or quarantined) device under the new keys in `new` (an enrollment
/// body from the device's public file of its new key, [`crate::devicepub`]): it keeps its id,
/// groups and sequence number; its old keys stay refused.
pub async fn reinstate(
    client: &Client,
    admins: &[Keypair],
    device: PublicKey,
    new: &Enroll,
) -> Result<Committed, AdminError> {
    let body = TxBody::Reinstate {
        device,
        new_sign: new.device,
        new_enc: new.enc_key,
        pop_sign: new.pop_sign,
        pop_enc: new.pop_enc,
    };
    admin_tx(client, admins, body).await
}

/// Replaces the policy: members of the first group of each pair may send to members of the
/// second. Returns the pairs as the ledger holds them (sorted, without duplicates).
pub async fn set_policy(
    client: &Client,
    admins: &[Keypair],
    mut allow: Vec<(GroupName, GroupName)>,
) -> Result<(Vec<(GroupName, GroupName)>, Committed), AdminError> {
    allow.sort();
    allow.dedup();
    let body = TxBody::SetPolicy {
        allow: allow.clone(),
    };
    let done = admin_tx(client, admins, body).await?;
    Ok((allow, done))
}

/// Creates a one-time enrollment ticket for `groups`, valid for `ttl_ms` from now: a random
/// secret whose hash goes on the ledger.
pub async fn create_ticket(
    client: &Client,
    admins: &[Keypair],
    groups: Vec<GroupName>,
    ttl_ms: u64,
) -> Result<CreatedTicket, AdminError> {
    let groups = canonical_groups(groups);
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let expires_ms = meshward_core::clock::now_ms().saturating_add(ttl_ms);
    let body = TxBody::CreateTicket {
        ticket_hash: ticket_hash(&secret),
        expires_ms,
        groups: groups.clone(),
    };
    let done = admin_tx(client, admins, body).await?;
    Ok(CreatedTicket {
        ticket: Ticket {
            chain_id: client.chain_id().to_string(),
            secret,
            groups,
        },
        expires_ms,
        height: done.height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn the_first_admin_signs_and_the_others_cosign() {
        let admins: Vec<Keypair> = (0..3).map(|_| Keypair::generate(&mut OsRng)).collect();
        let body = TxBody::SetPolicy { allow: Vec::new() };
        let tx = sign("fleet", &admins, 4, body).unwrap();
        assert_eq!(tx.signer, admins[0].id());
        assert_eq!(tx.seq, 4);
        let mut others = vec![admins[1].id(), admins[2].id()];
        others.sort();
        let cosigners: Vec<PublicKey> = tx.cosigs.iter().map(|c| c.key).collect();
        assert_eq!(cosigners, others);
        let msg = tx.signing_bytes("fleet");
        assert!(admins[0].id().verify(&msg, &tx.sig).is_ok());
        for c in &tx.cosigs {
            assert!(c.key.verify(&msg, &c.sig).is_ok());
        }
    }

    #[test]
    fn no_admin_is_an_error_not_a_panic() {
        let body = TxBody::SetPolicy { allow: Vec::new() };
        assert!(matches!(
            sign("fleet", &[], 1, body),
            Err(AdminError::NoAdmins)
        ));
        assert!(matches!(
            load_admins::<&str>(&[]),
            Err(AdminError::NoAdmins)
        ));
    }

    #[test]
    fn admin_key_files_must_hold_admin_keys() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.key");
        let dev = d.path().join("d.key");
        let kp = keyfile::generate(&a, KeyKind::Admin).unwrap();
        keyfile::generate(&dev, KeyKind::Device).unwrap();
        assert_eq!(load_admins(&[&a]).unwrap()[0].id(), kp.id());
        let e = load_admins(&[&a, &dev]).unwrap_err();
        assert!(
            matches!(e, AdminError::KeyFile(KeyFileError::WrongKind { .. })),
            "{e}"
        );
    }
}
