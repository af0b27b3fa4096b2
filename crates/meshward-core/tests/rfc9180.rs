//! RFC 9180 (HPKE) test vectors for the one suite envelopes use: DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305, in base mode (what envelopes use) and auth mode.
//!
//! The vectors come from the file the `hpke` crate ships (`test-vectors-5f503c5.json`), cut down
//! to this suite and to the first 16 encryptions of each; see the `source` field of the JSON.
//! Both sides are checked: the receiver decrypts every ciphertext and reproduces every export, and
//! the sender, fed the vector's ephemeral input keying material, reproduces `enc`, every
//! ciphertext and every export byte for byte.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use hpke::{
    aead::ChaCha20Poly1305, kdf::HkdfSha256, kem::X25519HkdfSha256, Deserializable, Kem, OpModeR,
    OpModeS, Serializable,
};
use meshward_core::ids::{EncKey, EncSecret};
use serde::Deserialize;

type PrivateKey = <X25519HkdfSha256 as Kem>::PrivateKey;
type PublicKey = <X25519HkdfSha256 as Kem>::PublicKey;
type EncappedKey = <X25519HkdfSha256 as Kem>::EncappedKey;

const VECTORS: &str = include_str!("vectors/rfc9180_x25519_sha256_chacha20poly1305.json");

const MODE_BASE: u8 = 0;
const MODE_AUTH: u8 = 2;

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    mode: u8,
    info: String,
    #[serde(rename = "ikmE")]
    ikm_e: String,
    #[serde(rename = "ikmR")]
    ikm_r: String,
    #[serde(rename = "skRm")]
    sk_rm: String,
    #[serde(rename = "pkRm")]
    pk_rm: String,
    #[serde(rename = "pkEm")]
    pk_em: String,
    enc: String,
    #[serde(rename = "ikmS", default)]
    ikm_s: Option<String>,
    #[serde(rename = "skSm", default)]
    sk_sm: Option<String>,
    #[serde(rename = "pkSm", default)]
    pk_sm: Option<String>,
    encryptions: Vec<Encryption>,
    exports: Vec<Export>,
}

#[derive(Deserialize)]
struct Encryption {
    aad: String,
    pt: String,
    ct: String,
}

#[derive(Deserialize)]
struct Export {
    exporter_context: String,
    #[serde(rename = "L")]
    len: usize,
    exported_value: String,
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("vector fields are hex")
}

fn vectors() -> Vec<Vector> {
    let file: File = serde_json::from_str(VECTORS).expect("vector file parses");
    assert!(
        file.vectors.iter().any(|v| v.mode == MODE_BASE),
        "the base-mode vector envelopes rely on is present"
    );
    file.vectors
}

/// Hands the sender the vector's `ikmE` as its "randomness": `hpke` draws exactly one private key
/// worth of bytes and runs `DeriveKeyPair` on them, as RFC 9180 §4.1 `GenerateKeyPair` does, so the
/// ephemeral key, and with it the whole sender side, is reproduced exactly.
struct IkmRng {
    ikm: Vec<u8>,
    used: usize,
}

impl hpke::rand_core::RngCore for IkmRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        let end = self.used + dst.len();
        assert!(end <= self.ikm.len(), "sender asked for more than ikmE");
        dst.copy_from_slice(&self.ikm[self.used..end]);
        self.used = end;
    }
}

impl hpke::rand_core::CryptoRng for IkmRng {}

fn sender_identity(v: &Vector) -> Option<(PrivateKey, PublicKey)> {
    if v.mode != MODE_AUTH {
        return None;
    }
    let ikm_s = unhex(v.ikm_s.as_deref().expect("auth vectors carry ikmS"));
    let (sk, pk) = X25519HkdfSha256::derive_keypair(&ikm_s);
    assert_eq!(sk.to_bytes().to_vec(), unhex(v.sk_sm.as_deref().unwrap()));
    assert_eq!(pk.to_bytes().to_vec(), unhex(v.pk_sm.as_deref().unwrap()));
    Some((sk, pk))
}

#[test]
fn rfc9180_key_derivation_matches() {
    for v in vectors() {
        let (sk_r, pk_r) = X25519HkdfSha256::derive_keypair(&unhex(&v.ikm_r));
        assert_eq!(
            sk_r.to_bytes().to_vec(),
            unhex(&v.sk_rm),
            "skRm, mode {}",
            v.mode
        );
        assert_eq!(
            pk_r.to_bytes().to_vec(),
            unhex(&v.pk_rm),
            "pkRm, mode {}",
            v.mode
        );
        let (_, pk_e) = X25519HkdfSha256::derive_keypair(&unhex(&v.ikm_e));
        assert_eq!(
            pk_e.to_bytes().to_vec(),
            unhex(&v.pk_em),
            "pkEm, mode {}",
            v.mode
        );
        // Our own X25519 key type agrees with the RFC's serialisation of the same secret.
        let ours = EncSecret::from_bytes(&unhex(&v.sk_rm).try_into().unwrap());
        assert_eq!(ours.public(), EncKey(unhex(&v.pk_rm).try_into().unwrap()));
    }
}

#[test]
fn rfc9180_receiver_decrypts_and_exports() {
    for v in vectors() {
        let sk_r = PrivateKey::from_bytes(&unhex(&v.sk_rm)).unwrap();
        let enc = EncappedKey::from_bytes(&unhex(&v.enc)).unwrap();
        let pk_s = sender_identity(&v).map(|(_, pk)| pk);
        let mode = match &pk_s {
            None => OpModeR::Base,
            Some(pk) => OpModeR::Auth(pk.clone()),
        };
        let mut ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &mode,
            &sk_r,
            &enc,
            &unhex(&v.info),
        )
        .unwrap();
        for (seq, e) in v.encryptions.iter().enumerate() {
            let pt = ctx
                .open(&unhex(&e.ct), &unhex(&e.aad))
                .unwrap_or_else(|err| panic!("mode {} seq {seq}: {err}", v.mode));
            assert_eq!(pt, unhex(&e.pt), "mode {} seq {seq}", v.mode);
        }
        for x in &v.exports {
            let mut out = vec![0u8; x.len];
            ctx.export(&unhex(&x.exporter_context), &mut out).unwrap();
            assert_eq!(out, unhex(&x.exported_value), "mode {} export", v.mode);
        }

        // A flipped ciphertext bit, or the wrong associated data, does not open.
        let first = &v.encryptions[0];
        let mut fresh = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &mode,
            &sk_r,
            &enc,
            &unhex(&v.info),
        )
        .unwrap();
        let mut ct = unhex(&first.ct);
        ct[0] ^= 1;
        assert!(fresh.open(&ct, &unhex(&first.aad)).is_err());
        let mut fresh = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &mode,
            &sk_r,
            &enc,
            &unhex(&v.info),
        )
        .unwrap();
        assert!(fresh.open(&unhex(&first.ct), b"other aad").is_err());
    }
}

#[test]
fn rfc9180_sender_is_reproduced_from_ikm_e() {
    for v in vectors() {
        let pk_r = PublicKey::from_bytes(&unhex(&v.pk_rm)).unwrap();
        let identity = sender_identity(&v);
        let mode = match &identity {
            None => OpModeS::Base,
            Some((sk, pk)) => OpModeS::Auth((sk.clone(), pk.clone())),
        };
        let mut rng = IkmRng {
            ikm: unhex(&v.ikm_e),
            used: 0,
        };
        let (enc, mut ctx) =
            hpke::setup_sender::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
                &mode,
                &pk_r,
                &unhex(&v.info),
                &mut rng,
            )
            .unwrap();
        assert_eq!(rng.used, rng.ikm.len(), "the sender consumed exactly ikmE");
        assert_eq!(
            enc.to_bytes().to_vec(),
            unhex(&v.enc),
            "mode {} enc",
            v.mode
        );
        for (seq, e) in v.encryptions.iter().enumerate() {
            let ct = ctx.seal(&unhex(&e.pt), &unhex(&e.aad)).unwrap();
            assert_eq!(ct, unhex(&e.ct), "mode {} seq {seq}", v.mode);
        }
        for x in &v.exports {
            let mut out = vec![0u8; x.len];
            ctx.export(&unhex(&x.exporter_context), &mut out).unwrap();
            assert_eq!(out, unhex(&x.exported_value), "mode {} export", v.mode);
        }
    }
}
