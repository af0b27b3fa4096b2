//! Identities and keys.
//!
//! A device, gateway or admin is identified by its Ed25519 public key. Its text form is the
//! libp2p `PeerId` of that key (base58, `12D3KooW…`), so one key binds network identity and
//! ledger identity. Every device also holds an X25519 key that envelopes are sealed to.
//!
//! Proof of possession: the Ed25519 key proves itself with an ordinary signature. The X25519 key
//! cannot sign, so it proves itself with an XEdDSA-style signature: the clamped X25519 scalar is
//! used as an Ed25519 scalar whose Edwards point maps to the same Montgomery `u` (sign bit forced
//! to 0), and anyone can verify it from the X25519 public key alone.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use curve25519_dalek::{montgomery::MontgomeryPoint, scalar::clamp_integer, EdwardsPoint, Scalar};
/// A decompressed Ed25519 public key (ed25519-dalek's), as [`PublicKey::verifying_key`] makes it.
pub use ed25519_dalek::VerifyingKey;
use ed25519_dalek::{hazmat::ExpandedSecretKey, Signer, SigningKey};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};

/// An Ed25519 public key: the identity of a device, gateway, validator or admin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// An X25519 public key that envelopes are sealed to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EncKey(pub [u8; 32]);

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// Why a key or signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The 32 bytes are not a compressed Edwards point.
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The key is a point, but of small order or with a torsion component, so its signatures prove
    /// nothing.
    #[error("weak Ed25519 public key (small order or torsion)")]
    WeakPublicKey,
    /// The 32 bytes do not map to a usable X25519 key (no Edwards point, small order or torsion).
    #[error("not a valid X25519 public key")]
    InvalidEncKey,
    /// The signature does not verify under the key (strict RFC 8032 verification).
    #[error("signature does not verify")]
    BadSignature,
    /// The text is not the base58 `PeerId` of an Ed25519 key.
    #[error("not a valid peer id")]
    InvalidPeerId,
}

/// libp2p's protobuf `PublicKey { Type = Ed25519 (1), Data = 32 bytes }`, wrapped in an identity
/// multihash (code 0x00, length 36).
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

impl PublicKey {
    /// The libp2p `PeerId` bytes of this key.
    pub fn peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&PEER_ID_PREFIX);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// The libp2p `PeerId` in its usual base58 text form.
    pub fn peer_id(&self) -> String {
        bs58::encode(self.peer_id_bytes()).into_string()
    }

    /// Parses a base58 `PeerId` of an Ed25519 key.
    pub fn from_peer_id(s: &str) -> Result<PublicKey, KeyError> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| KeyError::InvalidPeerId)?;
        if bytes.len() != 38 || bytes[..6] != PEER_ID_PREFIX {
            return Err(KeyError::InvalidPeerId);
        }
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&bytes[6..]);
        Ok(PublicKey(pk))
    }

    /// The X25519 public key of this Ed25519 key (the birational map to Montgomery form), which
    /// [`SignKey::x25519_secret`] opens; `None` for a key [`PublicKey::verifying_key`] refuses.
    pub fn x25519(&self) -> Option<EncKey> {
        let vk = self.verifying_key().ok()?;
        Some(EncKey(vk.to_montgomery().to_bytes()))
    }

    /// Decompresses the key for verification. Rejects keys that are not points, and weak keys,
    /// whose signatures prove nothing.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidPublicKey)?;
        if vk.is_weak() || !vk.to_edwards().is_torsion_free() {
            return Err(KeyError::WeakPublicKey);
        }
        Ok(vk)
    }

    /// Verifies a signature over `msg` (strict RFC 8032 verification).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        verify_with(&self.verifying_key()?, msg, sig)
    }
}

/// Verifies with an already decompressed key.
pub fn verify_with(vk: &VerifyingKey, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    vk.verify_strict(msg, &sig)
        .map_err(|_| KeyError::BadSignature)
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer_id())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.peer_id())
    }
}

impl fmt::Debug for EncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncKey({})", crate::hex::encode(&self.0))
    }
}

impl fmt::Display for EncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", crate::hex::encode(&self.0))
    }
}

impl EncKey {
    /// Verifies an XEdDSA-style proof that the holder of this X25519 key signed `msg`.
    pub fn verify_possession(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let point = MontgomeryPoint(self.0)
            .to_edwards(0)
            .ok_or(KeyError::InvalidEncKey)?;
        if point.is_small_order() || !point.is_torsion_free() {
            return Err(KeyError::InvalidEncKey);
        }
        verify_with(&VerifyingKey::from(point), msg, sig)
    }
}

macro_rules! fixed_codec {
    ($t:ty, $n:literal, $what:literal) => {
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) {
                w.raw(&self.0);
            }
        }
        impl Decode for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self(r.array::<$n>($what)?))
            }
        }
    };
}
fixed_codec!(PublicKey, 32, "public key");
fixed_codec!(EncKey, 32, "encryption key");
fixed_codec!(Signature, 64, "signature");

/// An Ed25519 signing key.
#[derive(Clone)]
pub struct SignKey(SigningKey);

impl SignKey {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        SignKey(SigningKey::generate(rng))
    }

    /// The key of a 32-byte RFC 8032 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SignKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte RFC 8032 seed, zeroised when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key: the holder's identity.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The public key, decompressed, for verification.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// Signs `msg` (Ed25519, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }

    /// The X25519 secret of this Ed25519 key (its secret scalar, as libsodium's
    /// `crypto_sign_ed25519_sk_to_curve25519`): what a gateway opens MQTT custody grants with,
    /// sealed to [`PublicKey::x25519`] of its node key (ADR 0011).
    pub fn x25519_secret(&self) -> EncSecret {
        EncSecret::from_bytes(&self.0.to_scalar_bytes())
    }
}

impl fmt::Debug for SignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignKey({})", self.public())
    }
}

/// An X25519 secret key.
#[derive(Clone)]
pub struct EncSecret(x25519_dalek::StaticSecret);

impl EncSecret {
    /// A fresh random X25519 secret.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut b = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut b[..]);
        EncSecret(x25519_dalek::StaticSecret::from(*b))
    }

    /// The secret of these 32 bytes (clamped when used, as X25519 does).
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        EncSecret(x25519_dalek::StaticSecret::from(*b))
    }

    /// The 32 secret bytes, zeroised when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The X25519 public key that envelopes to this holder are sealed to.
    pub fn public(&self) -> EncKey {
        EncKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Signs `msg` with this X25519 key, XEdDSA style, to prove possession of it.
    pub fn sign_possession(&self, msg: &[u8]) -> Signature {
        let bytes = self.to_bytes();
        let mut a = Scalar::from_bytes_mod_order(clamp_integer(*bytes));
        let mut point = EdwardsPoint::mul_base(&a);
        // Force the Edwards sign bit to 0, as the verifier assumes: -A maps to the same `u`.
        if point.compress().as_bytes()[31] & 0x80 != 0 {
            a = -a;
            point = -point;
        }
        let prefix: [u8; 64] = Sha512::new()
            .chain_update(crate::hash::domain::POP_ENC)
            .chain_update(&bytes[..])
            .finalize()
            .into();
        let mut hash_prefix = [0u8; 32];
        hash_prefix.copy_from_slice(&prefix[..32]);
        let esk = ExpandedSecretKey {
            scalar: a,
            hash_prefix,
        };
        let vk = VerifyingKey::from(point);
        Signature(ed25519_dalek::hazmat::raw_sign::<Sha512>(&esk, msg, &vk).to_bytes())
    }

    /// The raw x25519 secret, for HPKE.
    pub(crate) fn inner(&self) -> &x25519_dalek::StaticSecret {
        &self.0
    }
}

/// A device's (or gateway's) two keys.
#[derive(Clone)]
pub struct Keypair {
    /// Ed25519 signing key; its public key is the holder's identity.
    pub sign: SignKey,
    /// X25519 secret that envelopes to the holder are opened with.
    pub enc: EncSecret,
}

/// Key file body version (see `docs/FORMATS.md`).
pub const KEYPAIR_VERSION: u8 = 1;

impl Keypair {
    /// Two fresh random keys.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Keypair {
            sign: SignKey::generate(rng),
            enc: EncSecret::generate(rng),
        }
    }

    /// The holder's identity: the Ed25519 public key.
    pub fn id(&self) -> PublicKey {
        self.sign.public()
    }

    /// The X25519 public key envelopes to the holder are sealed to.
    pub fn enc_key(&self) -> EncKey {
        self.enc.public()
    }

    /// `version(1) || ed25519 seed(32) || x25519 secret(32)`; zeroised when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(65));
        v.push(KEYPAIR_VERSION);
        v.extend_from_slice(&self.sign.seed()[..]);
        v.extend_from_slice(&self.enc.to_bytes()[..]);
        v
    }

    /// Parses the bytes of [`Keypair::to_secret_bytes`]; refuses another version or any other
    /// length.
    pub fn from_secret_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.version(KEYPAIR_VERSION, "key file")?;
        let seed = Zeroizing::new(r.array::<32>("ed25519 seed")?);
        let enc = Zeroizing::new(r.array::<32>("x25519 secret")?);
        r.finish()?;
        Ok(Keypair {
            sign: SignKey::from_seed(&seed),
            enc: EncSecret::from_bytes(&enc),
        })
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn peer_id_matches_libp2p_identity() {
        for _ in 0..20 {
            let k = SignKey::generate(&mut OsRng);
            let mut seed = *k.seed();
            let lk = libp2p_identity::Keypair::ed25519_from_bytes(&mut seed).unwrap();
            let libp2p_id = lk.public().to_peer_id();
            assert_eq!(k.public().peer_id(), libp2p_id.to_base58());
            assert_eq!(k.public().peer_id_bytes().to_vec(), libp2p_id.to_bytes());
            assert_eq!(
                PublicKey::from_peer_id(&libp2p_id.to_base58()),
                Ok(k.public())
            );
        }
    }

    #[test]
    fn peer_id_rejects_other_key_types_and_garbage() {
        assert_eq!(
            PublicKey::from_peer_id("hello"),
            Err(KeyError::InvalidPeerId)
        );
        // A sha2-256 multihash PeerId (the form used for large keys such as RSA).
        let mut mh = vec![0x12, 32];
        mh.extend_from_slice(&[7u8; 32]);
        let hashed = libp2p_identity::PeerId::from_bytes(&mh).unwrap();
        assert_eq!(
            PublicKey::from_peer_id(&hashed.to_base58()),
            Err(KeyError::InvalidPeerId)
        );
    }

    #[test]
    fn rfc8032_test_vectors() {
        // RFC 8032 §7.1: TEST 1, TEST 2, TEST 3 and TEST SHA(abc).
        let cases: [(&str, &str, &str, &str); 4] = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
            (
                // TEST SHA(abc): the message is SHA-512("abc").
                "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
                "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
            ),
        ];
        for (sk, pk, msg, sig) in cases {
            let key = SignKey::from_seed(&hex::decode(sk).unwrap().try_into().unwrap());
            assert_eq!(hex::encode(key.public().0), pk);
            let msg = hex::decode(msg.trim()).unwrap();
            let s = key.sign(&msg);
            assert_eq!(hex::encode(s.0), sig);
            assert_eq!(key.public().verify(&msg, &s), Ok(()));
            let mut bad = s;
            bad.0[0] ^= 1;
            assert_eq!(key.public().verify(&msg, &bad), Err(KeyError::BadSignature));
        }
    }

    #[test]
    fn enc_key_possession_proof_verifies_and_binds_key() {
        for _ in 0..50 {
            let k = EncSecret::generate(&mut OsRng);
            let sig = k.sign_possession(b"hello");
            assert_eq!(k.public().verify_possession(b"hello", &sig), Ok(()));
            assert_eq!(
                k.public().verify_possession(b"hellO", &sig),
                Err(KeyError::BadSignature)
            );
            let other = EncSecret::generate(&mut OsRng);
            assert!(other.public().verify_possession(b"hello", &sig).is_err());
        }
    }

    #[test]
    fn keypair_secret_bytes_round_trip() {
        let k = Keypair::generate(&mut OsRng);
        let b = k.to_secret_bytes();
        let k2 = Keypair::from_secret_bytes(&b).unwrap();
        assert_eq!(k.id(), k2.id());
        assert_eq!(k.enc_key(), k2.enc_key());
        let mut bad = b.to_vec();
        bad[0] = 9;
        assert!(matches!(
            Keypair::from_secret_bytes(&bad),
            Err(DecodeError::UnknownVersion { found: 9, .. })
        ));
    }
}
