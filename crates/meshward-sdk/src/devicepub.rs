//! A device's public enrollment file: what a device hands an admin so the admin can enroll it
//! without ever holding its secret keys.
//!
//! `meshward device export` writes it and `meshward device enroll --device-pub FILE` reads it.
//! It is JSON (pretty-printed, newline-terminated) and holds no secret:
//! `{"chain_id", "device_id" (peer id), "enc_key" (hex), "pop_sign", "pop_enc"}`, the last two
//! being the device's proofs of possession of both keys over the chain's `pop_message`
//! (hex signatures). The proofs bind the file to one chain, so reading it checks that the
//! gateway runs that chain; the ledger checks the proofs themselves.
//!
//! ```
//! use meshward_sdk::devicepub::{read_enroll, DevicePub};
//! use meshward_sdk::Keypair;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("sensor.pub.json");
//! let device = Keypair::generate(&mut rand::rngs::OsRng);
//! DevicePub::new("fleet", &device).write(&path).unwrap();
//! let groups = meshward_sdk::group::parse_groups(&["sensors"]).unwrap();
//! let enroll = read_enroll(&path, "fleet", groups.clone()).unwrap();
//! assert_eq!(enroll.device, device.id());
//! assert!(read_enroll(&path, "other-fleet", groups).is_err());
//! ```

use std::io;
use std::path::{Path, PathBuf};

use meshward_core::hex;
use meshward_core::ids::{EncKey, KeyError, Keypair, PublicKey, Signature};
use meshward_core::tx::{canonical_groups, enroll_body, pop_message, Enroll, GroupName, TxBody};
use serde::{Deserialize, Serialize};

/// A device's public enrollment data, as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePub {
    /// The chain the proofs of possession were made for.
    pub chain_id: String,
    /// The device's id (its signing key as a peer id).
    pub device_id: String,
    /// Its X25519 encryption key, hex.
    pub enc_key: String,
    /// Its Ed25519 signature over the `pop_message`, hex.
    pub pop_sign: String,
    /// Its X25519 key's XEdDSA-style signature over the same message, hex.
    pub pop_enc: String,
}

/// Why a device public file could not be written or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevicePubError {
    /// The file could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not a device public file.
    #[error("{} is not a device public file", .path.display())]
    NotDevicePub {
        /// The file.
        path: PathBuf,
        /// Where the JSON is wrong.
        source: serde_json::Error,
    },
    /// The file was exported for another chain: the device must export it again for this one.
    #[error(
        "{} was exported for chain {exported:?}, but the gateway runs {gateway:?}",
        .path.display()
    )]
    WrongChain {
        /// The file.
        path: PathBuf,
        /// The chain it was made for.
        exported: String,
        /// The gateway's chain.
        gateway: String,
    },
    /// A field is not lower-case hex.
    #[error("{}: {field} is not hex", .path.display())]
    NotHex {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong length.
    #[error("{}: {field} is not {len} bytes", .path.display())]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// The length it must have.
        len: usize,
    },
    /// `device_id` is not a peer id.
    #[error("{id} is not a device id: {reason}")]
    BadDeviceId {
        /// What the file holds.
        id: String,
        /// Why.
        reason: KeyError,
    },
}

impl DevicePub {
    /// The public file of the device holding `keys`, for `chain_id`: signs the proofs of
    /// possession.
    pub fn new(chain_id: &str, keys: &Keypair) -> DevicePub {
        let msg = pop_message(chain_id, &keys.id(), &keys.enc_key());
        DevicePub {
            chain_id: chain_id.into(),
            device_id: keys.id().peer_id(),
            enc_key: hex::encode(&keys.enc_key().0),
            pop_sign: hex::encode(&keys.sign.sign(&msg).0),
            pop_enc: hex::encode(&keys.enc.sign_possession(&msg).0),
        }
    }

    /// Writes the file (replacing one already there: it holds nothing secret).
    pub fn write(&self, path: &Path) -> Result<(), DevicePubError> {
        let text =
            serde_json::to_string_pretty(self).expect("a struct of strings serialises") + "\n";
        std::fs::write(path, text).map_err(|source| DevicePubError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a file written by [`DevicePub::write`].
    pub fn read(path: &Path) -> Result<DevicePub, DevicePubError> {
        let text = std::fs::read_to_string(path).map_err(|source| DevicePubError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DevicePubError::NotDevicePub {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The admin-authorised enrollment body for this device in `groups`, checking that the
    /// file was made for `chain_id`. `path` names the file in errors.
    fn to_enroll(
        &self,
        path: &Path,
        chain_id: &str,
        groups: Vec<GroupName>,
    ) -> Result<Enroll, DevicePubError> {
        if self.chain_id != chain_id {
            return Err(DevicePubError::WrongChain {
                path: path.to_path_buf(),
                exported: self.chain_id.clone(),
                gateway: chain_id.to_string(),
            });
        }
        let bytes = |s: &str, field: &'static str| -> Result<Vec<u8>, DevicePubError> {
            hex::decode(s).ok_or_else(|| DevicePubError::NotHex {
                path: path.to_path_buf(),
                field,
            })
        };
        fn fixed<const N: usize>(
            v: Vec<u8>,
            path: &Path,
            field: &'static str,
        ) -> Result<[u8; N], DevicePubError> {
            v.try_into().map_err(|_| DevicePubError::WrongLength {
                path: path.to_path_buf(),
                field,
                len: N,
            })
        }
        let sig = |s: &str, field: &'static str| -> Result<Signature, DevicePubError> {
            Ok(Signature(fixed::<64>(bytes(s, field)?, path, field)?))
        };
        let enc = fixed::<32>(bytes(&self.enc_key, "enc_key")?, path, "enc_key")?;
        let device = PublicKey::from_peer_id(&self.device_id).map_err(|reason| {
            DevicePubError::BadDeviceId {
                id: self.device_id.clone(),
                reason,
            }
        })?;
        Ok(Enroll {
            device,
            enc_key: EncKey(enc),
            groups: canonical_groups(groups),
            ticket: None,
            pop_sign: sig(&self.pop_sign, "pop_sign")?,
            pop_enc: sig(&self.pop_enc, "pop_enc")?,
        })
    }
}

/// Reads a device public file into an admin-authorised enrollment body for `groups`, checking
/// that it was made for `chain_id` (the gateway's chain).
pub fn read_enroll(
    path: &Path,
    chain_id: &str,
    groups: Vec<GroupName>,
) -> Result<Enroll, DevicePubError> {
    DevicePub::read(path)?.to_enroll(path, chain_id, groups)
}

/// The admin-authorised enrollment body of a device whose keys the admin holds (`device enroll
/// --device-key`): the same body as from its public file, made from the keys directly.
pub fn enroll_with_keys(chain_id: &str, keys: &Keypair, groups: Vec<GroupName>) -> Enroll {
    match enroll_body(chain_id, keys, groups, None) {
        TxBody::Enroll(e) => e,
        _ => unreachable!("enroll_body builds an Enroll body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::tx::pop_message;
    use rand::rngs::OsRng;

    fn groups(g: &[&str]) -> Vec<GroupName> {
        crate::group::parse_groups(g).unwrap()
    }

    #[test]
    fn the_file_gives_the_same_body_as_the_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev.pub");
        let kp = Keypair::generate(&mut OsRng);
        DevicePub::new("fleet", &kp).write(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        let from_file = read_enroll(&p, "fleet", groups(&["b", "a"])).unwrap();
        let from_keys = enroll_with_keys("fleet", &kp, groups(&["b", "a"]));
        assert_eq!(from_file, from_keys);
        assert_eq!(from_file.groups, groups(&["a", "b"]));
        assert!(from_file.ticket.is_none());
        let msg = pop_message("fleet", &kp.id(), &kp.enc_key());
        assert!(kp.id().verify(&msg, &from_file.pop_sign).is_ok());
    }

    #[test]
    fn another_chain_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev.pub");
        DevicePub::new("fleet-a", &Keypair::generate(&mut OsRng))
            .write(&p)
            .unwrap();
        let e = read_enroll(&p, "fleet-b", Vec::new()).unwrap_err();
        assert!(matches!(e, DevicePubError::WrongChain { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{} was exported for chain \"fleet-a\", but the gateway runs \"fleet-b\"",
                p.display()
            )
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let p = Path::new("dev.pub");
        let good = DevicePub::new("c", &Keypair::generate(&mut OsRng));
        let check = |f: &dyn Fn(&mut DevicePub)| {
            let mut d = good.clone();
            f(&mut d);
            d.to_enroll(p, "c", Vec::new()).unwrap_err().to_string()
        };
        assert_eq!(
            check(&|d| d.enc_key = "zz".into()),
            "dev.pub: enc_key is not hex"
        );
        assert_eq!(
            check(&|d| d.enc_key = "00".into()),
            "dev.pub: enc_key is not 32 bytes"
        );
        assert_eq!(
            check(&|d| d.pop_sign = "00".into()),
            "dev.pub: pop_sign is not 64 bytes"
        );
        assert_eq!(
            check(&|d| d.pop_enc = "x".into()),
            "dev.pub: pop_enc is not hex"
        );
        assert!(check(&|d| d.device_id = "nope".into()).starts_with("nope is not a device id"));
    }

    #[test]
    fn a_missing_or_foreign_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        assert!(matches!(
            read_enroll(&p, "c", Vec::new()).unwrap_err(),
            DevicePubError::Read { .. }
        ));
        std::fs::write(&p, "{}").unwrap();
        let e = read_enroll(&p, "c", Vec::new()).unwrap_err();
        assert!(matches!(e, DevicePubError::NotDevicePub { .. }), "{e}");
        assert!(e.to_string().contains("x.json"), "{e}");
    }
}
