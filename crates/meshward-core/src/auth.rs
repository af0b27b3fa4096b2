//! Device challenge authentication for a gateway's API.
//!
//! A device proves to a gateway that it holds its account's signing key without any password or
//! token: it asks the gateway for a fresh random nonce, then signs [`challenge_message`] over the
//! chain id, its account id, that nonce and the action it asks for (`"mailbox/fetch"`,
//! `"mailbox/ack"`, …). The gateway checks the signature under the account's *current* signing
//! key, which after a `RotateKeys` differs from the account id, and spends the nonce, so a
//! captured request cannot be replayed, sent to another chain, or reused for another action.
//!
//! The message is canonical (see `docs/FORMATS.md`):
//! `"meshward/api-auth/v1" || str(chain_id) || device(32) || nonce(32) || str(action)`, where
//! `str` is a `u32` big-endian length and the UTF-8 bytes.
//!
//! ```
//! use meshward_core::auth::{sign_challenge, verify_challenge};
//! use meshward_core::ids::Keypair;
//! let device = Keypair::generate(&mut rand::rngs::OsRng);
//! let nonce = [7u8; 32];
//! let sig = sign_challenge(&device.sign, "fleet", &device.id(), &nonce, "mailbox/fetch");
//! assert!(verify_challenge(&device.id(), "fleet", &device.id(), &nonce, "mailbox/fetch", &sig).is_ok());
//! assert!(verify_challenge(&device.id(), "fleet", &device.id(), &nonce, "mailbox/ack", &sig).is_err());
//! ```

use alloc::vec::Vec;

use crate::codec::Writer;
use crate::ids::{KeyError, PublicKey, SignKey, Signature};

/// The domain every API challenge signature starts with, so it can never pass for a
/// transaction, a vote, an envelope or a proof of possession.
pub const DOMAIN: &[u8] = b"meshward/api-auth/v1";
/// Bytes in a challenge nonce.
pub const NONCE_BYTES: usize = 32;

/// The bytes a device signs to authenticate `action` with the gateway's `nonce`.
pub fn challenge_message(
    chain_id: &str,
    device: &PublicKey,
    nonce: &[u8; NONCE_BYTES],
    action: &str,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(
        DOMAIN.len() + 4 + chain_id.len() + 32 + NONCE_BYTES + 4 + action.len(),
    );
    w.raw(DOMAIN)
        .str(chain_id)
        .put(device)
        .raw(nonce)
        .str(action);
    w.into_bytes()
}

/// Signs a challenge with `key`, the account's current signing key.
pub fn sign_challenge(
    key: &SignKey,
    chain_id: &str,
    device: &PublicKey,
    nonce: &[u8; NONCE_BYTES],
    action: &str,
) -> Signature {
    key.sign(&challenge_message(chain_id, device, nonce, action))
}

/// Checks a challenge signature under `signer`, the key the ledger says signs for `device` now.
pub fn verify_challenge(
    signer: &PublicKey,
    chain_id: &str,
    device: &PublicKey,
    nonce: &[u8; NONCE_BYTES],
    action: &str,
    sig: &Signature,
) -> Result<(), KeyError> {
    signer.verify(&challenge_message(chain_id, device, nonce, action), sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Keypair;
    use rand::rngs::OsRng;

    const CHAIN: &str = "auth-test";
    const ACTION: &str = "mailbox/fetch";

    #[test]
    fn signed_challenge_verifies() {
        let d = Keypair::generate(&mut OsRng);
        let nonce = [1u8; 32];
        let sig = sign_challenge(&d.sign, CHAIN, &d.id(), &nonce, ACTION);
        assert_eq!(
            verify_challenge(&d.id(), CHAIN, &d.id(), &nonce, ACTION, &sig),
            Ok(())
        );
    }

    #[test]
    fn any_changed_field_fails() {
        let d = Keypair::generate(&mut OsRng);
        let other = Keypair::generate(&mut OsRng);
        let nonce = [1u8; 32];
        let sig = sign_challenge(&d.sign, CHAIN, &d.id(), &nonce, ACTION);
        let bad = Err(KeyError::BadSignature);
        // Wrong action, nonce, chain, device, signer.
        assert_eq!(
            verify_challenge(&d.id(), CHAIN, &d.id(), &nonce, "mailbox/ack", &sig),
            bad
        );
        let mut other_nonce = nonce;
        other_nonce[31] ^= 1;
        assert_eq!(
            verify_challenge(&d.id(), CHAIN, &d.id(), &other_nonce, ACTION, &sig),
            bad
        );
        assert_eq!(
            verify_challenge(&d.id(), "other-chain", &d.id(), &nonce, ACTION, &sig),
            bad
        );
        assert_eq!(
            verify_challenge(&d.id(), CHAIN, &other.id(), &nonce, ACTION, &sig),
            bad
        );
        assert_eq!(
            verify_challenge(&other.id(), CHAIN, &d.id(), &nonce, ACTION, &sig),
            bad
        );
        let mut flipped = sig;
        flipped.0[0] ^= 1;
        assert_eq!(
            verify_challenge(&d.id(), CHAIN, &d.id(), &nonce, ACTION, &flipped),
            bad
        );
    }

    #[test]
    fn rotated_key_signs_for_the_account() {
        // After a rotation the account id stays, the signing key changes.
        let account = Keypair::generate(&mut OsRng);
        let new = Keypair::generate(&mut OsRng);
        let nonce = [9u8; 32];
        let sig = sign_challenge(&new.sign, CHAIN, &account.id(), &nonce, ACTION);
        assert_eq!(
            verify_challenge(&new.id(), CHAIN, &account.id(), &nonce, ACTION, &sig),
            Ok(())
        );
        assert!(
            verify_challenge(&account.id(), CHAIN, &account.id(), &nonce, ACTION, &sig).is_err()
        );
    }

    #[test]
    fn encoding_is_length_prefixed_and_unambiguous() {
        let d = Keypair::generate(&mut OsRng);
        let nonce = [0u8; 32];
        let m = challenge_message("ab", &d.id(), &nonce, "c");
        assert!(m.starts_with(DOMAIN));
        assert_eq!(m.len(), DOMAIN.len() + 4 + 2 + 32 + 32 + 4 + 1);
        assert_eq!(
            &m[DOMAIN.len()..DOMAIN.len() + 6],
            &[0, 0, 0, 2, b'a', b'b']
        );
        // Moving a byte between chain id and action changes the message.
        assert_ne!(
            challenge_message("a", &d.id(), &nonce, "bc"),
            challenge_message("ab", &d.id(), &nonce, "c")
        );
    }
}
