//! Group keys: one X25519 secret per group epoch, distributed in `GroupKey` transactions sealed
//! to each member, and the group identity derived from it that group messages are sealed to.
//!
//! A group message is an ordinary [`Envelope`](meshward_core::envelope::Envelope) whose
//! recipient is the group's identity for the epoch: an Ed25519/X25519 key pair derived from the
//! group secret. Every member holding the secret derives the same identity and opens it with a
//! [`Receiver`](meshward_core::envelope::Receiver); anyone without it (a revoked member, after
//! the rekey) cannot.
//!
//! The secret is sealed to each member with HPKE base mode (the suite of the envelopes), with
//! `info = "meshward/group-key/v1" || group || epoch || member`, so a sealed copy cannot be
//! replayed for another group, epoch or member.

use alloc::string::String;
use alloc::vec::Vec;

use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use meshward_core::codec::Writer;
use meshward_core::hash::hash;
use meshward_core::ids::{EncKey, EncSecret, Keypair, PublicKey, SignKey};
use meshward_core::tx::{GroupName, SealedGroupKey};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

const GROUP_KEY_INFO: &[u8] = b"meshward/group-key/v1";
const GROUP_SIGN_SEED: &[u8] = b"meshward/group-sign-seed/v1";

/// Why a sealed group key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKeyError {
    /// No copy in the `GroupKey` is sealed to this member: it is not (or no longer) a member.
    NotAMember,
    /// The copy does not open with this member's key.
    Decrypt,
}

impl core::fmt::Display for GroupKeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GroupKeyError::NotAMember => f.write_str("no copy of the group key is sealed to us"),
            GroupKeyError::Decrypt => f.write_str("the sealed group key does not open"),
        }
    }
}

/// A group name that is not valid: 1 to 64 bytes of `a-z`, `0-9`, `-`, `_` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group {0:?} is not a valid name (1-64 of a-z, 0-9, '-', '_', '.')")]
pub struct InvalidGroupName(pub String);

/// Parses one group name.
pub fn parse_group(name: &str) -> Result<GroupName, InvalidGroupName> {
    GroupName::new(name).ok_or_else(|| InvalidGroupName(String::from(name)))
}

/// Parses group names, in order; the first invalid one is the error.
pub fn parse_groups<S: AsRef<str>>(names: &[S]) -> Result<Vec<GroupName>, InvalidGroupName> {
    names.iter().map(|n| parse_group(n.as_ref())).collect()
}

/// One epoch's group secret.
#[derive(Clone)]
pub struct GroupSecret(Zeroizing<[u8; 32]>);

impl GroupSecret {
    /// A fresh random secret.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> GroupSecret {
        let mut s = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut s[..]);
        GroupSecret(s)
    }

    /// The secret with these 32 bytes (e.g. as read back from a device's state file).
    pub fn from_bytes(b: [u8; 32]) -> GroupSecret {
        GroupSecret(Zeroizing::new(b))
    }

    /// The secret's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The group's identity for this epoch: the recipient of its messages.
    pub fn identity(&self) -> Keypair {
        let seed = hash(GROUP_SIGN_SEED, &self.0[..]);
        Keypair {
            sign: SignKey::from_seed(&seed.0),
            enc: EncSecret::from_bytes(&self.0),
        }
    }
}

fn info(group: &GroupName, epoch: u64, member: &PublicKey) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.raw(GROUP_KEY_INFO)
        .str(group.as_str())
        .u64(epoch)
        .put(member);
    w.into_bytes()
}

/// Adapts a `rand_core` 0.6 RNG to the 0.9 traits `hpke` takes.
pub(crate) struct Rng9<'a, R>(pub(crate) &'a mut R);

impl<R: RngCore + CryptoRng> hpke::rand_core::RngCore for Rng9<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

impl<R: RngCore + CryptoRng> hpke::rand_core::CryptoRng for Rng9<'_, R> {}

/// Seals `secret` to every member, in member order, for the body of a `GroupKey` transaction.
/// Returns `None` if a member's encryption key is not a usable X25519 key.
pub fn seal_for_members<R: RngCore + CryptoRng>(
    rng: &mut R,
    group: &GroupName,
    epoch: u64,
    secret: &GroupSecret,
    members: &[(PublicKey, EncKey)],
) -> Option<Vec<SealedGroupKey>> {
    members
        .iter()
        .map(|(member, enc_key)| {
            let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&enc_key.0).ok()?;
            let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
                &OpModeS::Base,
                &pk,
                &info(group, epoch, member),
                &secret.0[..],
                &[],
                &mut Rng9(rng),
            )
            .ok()?;
            Some(SealedGroupKey {
                member: *member,
                enc: enc.to_bytes().into(),
                ciphertext,
            })
        })
        .collect()
}

/// Opens this member's copy of the group secret from a `GroupKey`'s sealed list. `member` is
/// the member's ledger id; `keys` holds its current encryption key.
pub fn open_for_member(
    group: &GroupName,
    epoch: u64,
    sealed: &[SealedGroupKey],
    member: &PublicKey,
    keys: &Keypair,
) -> Result<GroupSecret, GroupKeyError> {
    let copy = sealed
        .iter()
        .find(|s| s.member == *member)
        .ok_or(GroupKeyError::NotAMember)?;
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&keys.enc.to_bytes()[..])
        .map_err(|_| GroupKeyError::Decrypt)?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&copy.enc)
        .map_err(|_| GroupKeyError::Decrypt)?;
    let plain = Zeroizing::new(
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            &info(group, epoch, member),
            &copy.ciphertext,
            &[],
        )
        .map_err(|_| GroupKeyError::Decrypt)?,
    );
    let bytes: [u8; 32] = plain[..].try_into().map_err(|_| GroupKeyError::Decrypt)?;
    Ok(GroupSecret::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::envelope::{seal_oneshot, Receiver};
    use rand::rngs::OsRng;

    #[test]
    fn group_names_are_checked() {
        let g = parse_groups(&["ops", "a.b_c-1"]).unwrap();
        assert_eq!(g[1].as_str(), "a.b_c-1");
        let e = parse_groups(&["ops", "Bad", "x y"]).unwrap_err();
        assert_eq!(e, InvalidGroupName("Bad".into()));
        assert_eq!(
            alloc::format!("{e}"),
            "group \"Bad\" is not a valid name (1-64 of a-z, 0-9, '-', '_', '.')"
        );
        assert!(parse_group("").is_err());
    }

    #[test]
    fn members_open_their_copy_and_others_cannot() {
        let g = GroupName::new("ops").unwrap();
        let m1 = Keypair::generate(&mut OsRng);
        let m2 = Keypair::generate(&mut OsRng);
        let outsider = Keypair::generate(&mut OsRng);
        let mut members = alloc::vec![(m1.id(), m1.enc_key()), (m2.id(), m2.enc_key())];
        members.sort_by_key(|m| m.0);
        let secret = GroupSecret::generate(&mut OsRng);
        let sealed = seal_for_members(&mut OsRng, &g, 2, &secret, &members).unwrap();
        for m in [&m1, &m2] {
            let got = open_for_member(&g, 2, &sealed, &m.id(), m).unwrap();
            assert_eq!(got.as_bytes(), secret.as_bytes());
        }
        assert_eq!(
            open_for_member(&g, 2, &sealed, &outsider.id(), &outsider).err(),
            Some(GroupKeyError::NotAMember)
        );
        // Claiming a member's copy without its key fails, and so does another epoch.
        assert_eq!(
            open_for_member(&g, 2, &sealed, &m1.id(), &outsider).err(),
            Some(GroupKeyError::Decrypt)
        );
        assert_eq!(
            open_for_member(&g, 3, &sealed, &m1.id(), &m1).err(),
            Some(GroupKeyError::Decrypt)
        );

        // A group message opens with the identity derived from the secret.
        let ident = secret.identity();
        let env = seal_oneshot(
            &mut OsRng,
            &m1,
            ident.id(),
            &ident.enc_key(),
            1,
            0,
            b"to all",
        )
        .unwrap();
        let mut rx = Receiver::new(&ident);
        let opened = rx.open(&env, &m1.sign.verifying_key()).unwrap();
        assert_eq!(opened.payload, b"to all");
    }
}
