//! MQTT custody grants: the admins hand a legacy device's keys to its custodian gateways.
//!
//! A device that speaks only MQTT cannot hold its own keys, so `meshward mqtt add` generates
//! them, enrolls the device, and gives each of at least two custodians a copy of the keys sealed
//! to that custodian alone (HPKE base mode, X25519, to [`PublicKey::x25519`] of the custodian's
//! node key), with the argon2id hash of the device's MQTT password. The grant is signed by
//! k-of-n admins, and every custodian checks those signatures against the ledger's admin set
//! before it keeps anything. No plaintext key or password goes on the ledger, into a file or
//! into a log: the keys are opened in memory while the device is connected. The format is in
//! FORMATS.md, "MQTT custody"; the reasons in ADR 0011.

use hpke::{Deserializable as _, OpModeR, OpModeS, Serializable as _};
use meshward_core::codec::Writer;
use meshward_core::ids::{Keypair, PublicKey, SignKey, Signature};
use meshward_core::state::AdminSet;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// The grant format's version.
pub const GRANT_VERSION: u8 = 1;
/// Fewest custodians of a device.
pub const MIN_CUSTODIANS: usize = 2;
/// Most custodians of a device.
pub const MAX_CUSTODIANS: usize = 8;
/// Domain of the admins' signatures and of the HPKE info.
pub const DOMAIN: &[u8] = b"meshward/mqtt-custody/v1\0";

/// One custodian's sealed copy of the device's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCopy {
    /// The custodian's node id (peer id form).
    pub custodian: String,
    /// HPKE encapsulated key, hex (32 bytes).
    pub enc: String,
    /// HPKE ciphertext of the device's key bytes, hex.
    pub ciphertext: String,
}

/// An admin's signature over [`Grant::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSignature {
    /// The admin's key (peer id form).
    pub admin: String,
    /// Ed25519 signature, hex.
    pub sig: String,
}

/// A custody grant, as `POST /v1/mqtt/devices` takes it and a custodian keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// [`GRANT_VERSION`].
    pub version: u8,
    /// The fleet's chain id.
    pub chain_id: String,
    /// The device (peer id form); also its MQTT user name.
    pub device: String,
    /// The custodians' node ids, sorted by key and unique, [`MIN_CUSTODIANS`] to
    /// [`MAX_CUSTODIANS`].
    pub custodians: Vec<String>,
    /// argon2id PHC string of the device's MQTT password.
    pub password_hash: String,
    /// One sealed copy per custodian, in the order of `custodians`.
    pub sealed: Vec<SealedCopy>,
    /// The admins' signatures.
    pub signatures: Vec<AdminSignature>,
}

/// Why a grant is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The grant is not well formed.
    #[error("malformed custody grant: {0}")]
    Malformed(String),
    /// Not signed by enough distinct admins of the ledger's admin set.
    #[error("custody grant needs {need} admin signatures, has {have} valid ones")]
    Unauthorized {
        /// Threshold.
        need: u16,
        /// Valid distinct admin signatures.
        have: usize,
    },
    /// The sealed copy does not open with this custodian's key.
    #[error("the sealed keys do not open with this gateway's key")]
    Seal,
}

fn key(s: &str, what: &str) -> Result<PublicKey, GrantError> {
    PublicKey::from_peer_id(s).map_err(|e| GrantError::Malformed(format!("{what} {s}: {e}")))
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32], GrantError> {
    meshward_core::hex::decode_array::<32>(s)
        .ok_or_else(|| GrantError::Malformed(format!("{what}: not 32 bytes of hex")))
}

fn info(chain_id: &str, device: &PublicKey, custodian: &PublicKey) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(DOMAIN).str(chain_id).put(device).put(custodian);
    w.into_bytes()
}

/// Seals `keys` (the device's) to `custodian`'s node key.
pub fn seal_keys<R: RngCore + CryptoRng>(
    rng: &mut R,
    chain_id: &str,
    device: &PublicKey,
    custodian: &PublicKey,
    keys: &Keypair,
) -> Result<SealedCopy, GrantError> {
    let enc_key = custodian
        .x25519()
        .ok_or_else(|| GrantError::Malformed("custodian key is not a valid point".into()))?;
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&enc_key.0)
        .map_err(|_| GrantError::Malformed("custodian X25519 key".into()))?;
    let secret = keys.to_secret_bytes();
    let mut rng = crate::group::Rng9(rng);
    let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
        &OpModeS::Base,
        &pk,
        &info(chain_id, device, custodian),
        &secret,
        &[],
        &mut rng,
    )
    .map_err(|_| GrantError::Seal)?;
    Ok(SealedCopy {
        custodian: custodian.peer_id(),
        enc: meshward_core::hex::encode(&enc.to_bytes()),
        ciphertext: meshward_core::hex::encode(&ct),
    })
}

impl Grant {
    /// What the admins sign: `DOMAIN || str(chain_id) || device(32) || u32 n || custodian(32)·n
    /// || str(password_hash) || (enc(32) || bytes(ciphertext))·n` (FORMATS.md's encoding:
    /// `str` and `bytes` are u32-length-prefixed).
    pub fn signing_bytes(&self) -> Result<Vec<u8>, GrantError> {
        let device = key(&self.device, "device")?;
        let mut w = Writer::new();
        w.raw(DOMAIN)
            .u8(self.version)
            .str(&self.chain_id)
            .put(&device)
            .u32(self.custodians.len() as u32);
        for c in &self.custodians {
            w.put(&key(c, "custodian")?);
        }
        w.str(&self.password_hash);
        for s in &self.sealed {
            w.raw(&hex32(&s.enc, "sealed enc")?);
            let ct = meshward_core::hex::decode(&s.ciphertext)
                .ok_or_else(|| GrantError::Malformed("sealed ciphertext: not hex".into()))?;
            w.bytes(&ct);
        }
        Ok(w.into_bytes())
    }

    /// Adds each admin's signature.
    pub fn sign(&mut self, admins: &[Keypair]) -> Result<(), GrantError> {
        let msg = self.signing_bytes()?;
        for a in admins {
            self.signatures.push(AdminSignature {
                admin: a.id().peer_id(),
                sig: meshward_core::hex::encode(&a.sign.sign(&msg).0),
            });
        }
        Ok(())
    }

    /// The grant's device and custodians, after checking its shape: version, chain, 2 to 8
    /// sorted unique custodians, one sealed copy each in order, an acceptable argon2id hash
    /// (checked by `check_hash`, the caller's password-hash rule).
    pub fn check_shape(
        &self,
        chain_id: &str,
        check_hash: impl Fn(&str) -> Result<(), String>,
    ) -> Result<(PublicKey, Vec<PublicKey>), GrantError> {
        let bad = |m: &str| Err(GrantError::Malformed(m.to_string()));
        if self.version != GRANT_VERSION {
            return bad(&format!(
                "version {} (this gateway reads {GRANT_VERSION})",
                self.version
            ));
        }
        if self.chain_id != chain_id {
            return bad(&format!("for chain {:?}, not this one", self.chain_id));
        }
        let device = key(&self.device, "device")?;
        let custodians = self
            .custodians
            .iter()
            .map(|c| key(c, "custodian"))
            .collect::<Result<Vec<_>, _>>()?;
        if !(MIN_CUSTODIANS..=MAX_CUSTODIANS).contains(&custodians.len()) {
            return bad(&format!("{MIN_CUSTODIANS} to {MAX_CUSTODIANS} custodians"));
        }
        if !custodians.windows(2).all(|w| w[0] < w[1]) {
            return bad("custodians must be sorted by key and unique");
        }
        if self.sealed.len() != custodians.len()
            || self
                .sealed
                .iter()
                .zip(&self.custodians)
                .any(|(s, c)| &s.custodian != c)
        {
            return bad("one sealed copy per custodian, in the same order");
        }
        check_hash(&self.password_hash).map_err(GrantError::Malformed)?;
        Ok((device, custodians))
    }

    /// Checks the admins' signatures against `admins`: at least `threshold` distinct admins of
    /// the set, each signature valid.
    pub fn check_signatures(&self, admins: &AdminSet) -> Result<(), GrantError> {
        let msg = self.signing_bytes()?;
        let mut seen: Vec<PublicKey> = Vec::new();
        for s in &self.signatures {
            let Ok(k) = PublicKey::from_peer_id(&s.admin) else {
                continue;
            };
            let Some(sig) = meshward_core::hex::decode_array::<64>(&s.sig) else {
                continue;
            };
            if admins.keys.contains(&k)
                && !seen.contains(&k)
                && k.verify(&msg, &Signature(sig)).is_ok()
            {
                seen.push(k);
            }
        }
        if seen.len() < usize::from(admins.threshold) {
            return Err(GrantError::Unauthorized {
                need: admins.threshold,
                have: seen.len(),
            });
        }
        Ok(())
    }

    /// Opens this custodian's copy of the device's keys with its node key.
    pub fn open_keys(&self, node: &SignKey) -> Result<Keypair, GrantError> {
        let me = node.public();
        let device = key(&self.device, "device")?;
        let copy = self
            .sealed
            .iter()
            .find(|s| s.custodian == me.peer_id())
            .ok_or_else(|| GrantError::Malformed("this gateway is not a custodian".into()))?;
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&node.x25519_secret().to_bytes()[..])
            .map_err(|_| GrantError::Seal)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&hex32(&copy.enc, "sealed enc")?)
            .map_err(|_| GrantError::Seal)?;
        let ct = meshward_core::hex::decode(&copy.ciphertext)
            .ok_or_else(|| GrantError::Malformed("sealed ciphertext: not hex".into()))?;
        let pt = zeroize::Zeroizing::new(
            hpke::single_shot_open::<Aead, Kdf, Kem>(
                &OpModeR::Base,
                &sk,
                &enc,
                &info(&self.chain_id, &device, &me),
                &ct,
                &[],
            )
            .map_err(|_| GrantError::Seal)?,
        );
        let keys = Keypair::from_secret_bytes(&pt).map_err(|_| GrantError::Seal)?;
        if keys.id() != device {
            return Err(GrantError::Malformed(
                "the sealed keys are not the device's".into(),
            ));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(admins: &[Keypair], custodians: &mut [Keypair], device: &Keypair) -> Grant {
        custodians.sort_by_key(|k| k.id());
        let mut rng = rand::rngs::OsRng;
        let mut g = Grant {
            version: GRANT_VERSION,
            chain_id: "c".into(),
            device: device.id().peer_id(),
            custodians: custodians.iter().map(|k| k.id().peer_id()).collect(),
            password_hash: "$argon2id$stub".into(),
            sealed: custodians
                .iter()
                .map(|c| seal_keys(&mut rng, "c", &device.id(), &c.id(), device).unwrap())
                .collect(),
            signatures: Vec::new(),
        };
        g.sign(admins).unwrap();
        g
    }

    #[test]
    fn each_custodian_opens_its_copy_and_only_its_own() {
        let mut rng = rand::rngs::OsRng;
        let admin = Keypair::generate(&mut rng);
        let device = Keypair::generate(&mut rng);
        let mut cs = vec![Keypair::generate(&mut rng), Keypair::generate(&mut rng)];
        let g = grant(std::slice::from_ref(&admin), &mut cs, &device);
        let set = AdminSet::new(vec![admin.id()], 1).unwrap();
        g.check_signatures(&set).unwrap();
        g.check_shape("c", |_| Ok(())).unwrap();
        for c in &cs {
            assert_eq!(g.open_keys(&c.sign).unwrap().id(), device.id());
        }
        let stranger = Keypair::generate(&mut rng);
        assert!(g.open_keys(&stranger.sign).is_err());
        // A copy moved to another custodian's slot does not open there.
        let mut swapped = g.clone();
        let (a, b) = (swapped.sealed[0].clone(), swapped.sealed[1].clone());
        swapped.sealed[0] = SealedCopy {
            custodian: a.custodian,
            ..b.clone()
        };
        swapped.sealed[1] = SealedCopy {
            custodian: b.custodian,
            ..a
        };
        assert!(matches!(
            swapped.open_keys(&cs[0].sign),
            Err(GrantError::Seal)
        ));
    }

    #[test]
    fn signatures_must_reach_the_threshold_and_cover_every_field() {
        let mut rng = rand::rngs::OsRng;
        let a1 = Keypair::generate(&mut rng);
        let a2 = Keypair::generate(&mut rng);
        let device = Keypair::generate(&mut rng);
        let mut cs = vec![Keypair::generate(&mut rng), Keypair::generate(&mut rng)];
        let set = AdminSet::new(vec![a1.id(), a2.id()], 2).unwrap();
        let one = grant(std::slice::from_ref(&a1), &mut cs, &device);
        assert!(matches!(
            one.check_signatures(&set),
            Err(GrantError::Unauthorized { need: 2, have: 1 })
        ));
        // The same admin twice counts once.
        let mut twice = one.clone();
        twice.signatures.push(one.signatures[0].clone());
        assert!(twice.check_signatures(&set).is_err());
        let both = grant(&[a1.clone(), a2.clone()], &mut cs, &device);
        both.check_signatures(&set).unwrap();
        let mut changed = both.clone();
        changed.password_hash.push('x');
        assert!(changed.check_signatures(&set).is_err());
        let mut moved = both.clone();
        moved.custodians.reverse();
        assert!(moved.check_signatures(&set).is_err());
        assert!(moved.check_shape("c", |_| Ok(())).is_err());
        assert!(both.check_shape("other", |_| Ok(())).is_err());
        let mut one_custodian = both.clone();
        one_custodian.custodians.pop();
        one_custodian.sealed.pop();
        assert!(one_custodian.check_shape("c", |_| Ok(())).is_err());
    }
}
