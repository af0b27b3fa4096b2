//! Key files and other secret files on disk (feature `keyfile`: file I/O only, no libp2p, no
//! tokio, so a gateway can use it without the device transport).
//!
//! A key file is JSON (see `docs/FORMATS.md`, "Key files"):
//! `{"version":1,"kind":"device","id":"12D3KooW…","enc_key":"<hex>","secret":"<hex>"}` where
//! `secret` is [`Keypair::to_secret_bytes`]. The public fields are there for people and scripts;
//! on load they must match the secret. A device that rotated its keys also carries `account`,
//! its ledger id (the key it was enrolled with). Secret files are created with mode 0600 and
//! never overwritten.
//!
//! ```
//! use meshward_sdk::keyfile::{self, KeyKind};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("sensor.key");
//! let kp = keyfile::generate(&path, KeyKind::Device).unwrap();
//! let (account, loaded) = keyfile::load_device(&path).unwrap();
//! assert_eq!((account, loaded.id()), (kp.id(), kp.id()));
//! // Never overwritten, and never read as another kind of key.
//! assert!(keyfile::generate(&path, KeyKind::Device).is_err());
//! assert!(keyfile::load(&path, KeyKind::Admin).is_err());
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use meshward_core::codec::DecodeError;
use meshward_core::hex;
use meshward_core::ids::{KeyError, Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The key file format version this build writes and reads.
pub const KEYFILE_VERSION: u8 = 1;

/// What a key is for. A key file of one kind is refused where another is expected, so an
/// admin key is never used as a device key by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A fleet admin's key: signs enrollments, revocations, policy and tickets.
    Admin,
    /// A device's signing and encryption keys.
    Device,
    /// A gateway's key: its mesh identity and, for a validator, its consensus key.
    Node,
}

impl KeyKind {
    /// The kind's name, as in the file's `kind` field.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::Device => "device",
            KeyKind::Node => "node",
        }
    }

    /// The command that creates a key file of this kind, for error messages. A node key is
    /// made with its data directory, and its callers name the directory (`meshward init`).
    fn create_hint(self) -> &'static str {
        match self {
            KeyKind::Admin => " (create it with meshward admin keygen)",
            KeyKind::Device => " (create it with meshward device keygen)",
            KeyKind::Node => "",
        }
    }
}

/// What to do about an unreadable key file: a missing one is created by a command.
fn read_hint(kind: KeyKind, e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::NotFound {
        kind.create_hint()
    } else {
        ""
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key file or secret file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be created: it exists already, or its directory is missing.
    #[error(
        "cannot create {} (it must not exist yet; secrets are never overwritten)",
        .path.display()
    )]
    Create {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file was created but could not be written in full.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file could not be read.
    #[error("cannot read key file {}{}", .path.display(), read_hint(*.kind, .source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The kind of key that was wanted.
        kind: KeyKind,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not key file JSON.
    #[error("key file {} is not a meshward key file", .path.display())]
    NotAKeyFile {
        /// The file.
        path: PathBuf,
        /// Where the JSON is wrong.
        source: serde_json::Error,
    },
    /// The file is of another format version.
    #[error(
        "key file {} has version {version}; this build reads version {KEYFILE_VERSION}",
        .path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it has.
        version: u8,
    },
    /// The file holds another kind of key.
    #[error(
        "key file {} holds a {found} key, but this command needs a {wanted} key file",
        .path.display()
    )]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The kind it holds.
        found: KeyKind,
        /// The kind that was wanted.
        wanted: KeyKind,
    },
    /// The `secret` field is not lower-case hex.
    #[error("key file {}: secret is not hex", .path.display())]
    SecretNotHex {
        /// The file.
        path: PathBuf,
    },
    /// The secret bytes are not a key pair.
    #[error("key file {}: secret is malformed", .path.display())]
    SecretMalformed {
        /// The file.
        path: PathBuf,
        /// Why.
        source: DecodeError,
    },
    /// `id` or `enc_key` is not the secret's.
    #[error(
        "key file {}: id or enc_key does not match the secret (the file was edited)",
        .path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
    },
    /// `account` is not a peer id.
    #[error("key file {}: account is not a peer id: {reason}", .path.display())]
    BadAccount {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: KeyError,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    version: u8,
    kind: KeyKind,
    id: String,
    enc_key: String,
    secret: String,
    /// A device's ledger id when it differs from `id` (after a key rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
}

/// Writes `bytes` to a new file with mode 0600 and syncs it; refuses to overwrite.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| KeyFileError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Generates a key pair and writes it as a new key file of `kind`.
pub fn generate(path: &Path, kind: KeyKind) -> Result<Keypair, KeyFileError> {
    let kp = Keypair::generate(&mut rand::rngs::OsRng);
    write(path, kind, &kp, None)?;
    Ok(kp)
}

/// Writes `kp` as a new key file of `kind`; `account` is a rotated device's ledger id (left
/// out of the file when it is `kp`'s own id).
pub fn write(
    path: &Path,
    kind: KeyKind,
    kp: &Keypair,
    account: Option<&PublicKey>,
) -> Result<(), KeyFileError> {
    let secret = kp.to_secret_bytes();
    let json = KeyFileJson {
        version: KEYFILE_VERSION,
        kind,
        id: kp.id().peer_id(),
        enc_key: kp.enc_key().to_string(),
        secret: hex::encode(&secret),
        account: account.filter(|a| **a != kp.id()).map(|a| a.peer_id()),
    };
    let text = Zeroizing::new(
        serde_json::to_string_pretty(&json).expect("a struct of strings serialises to JSON") + "\n",
    );
    write_secret_file(path, text.as_bytes())
}

/// Reads a device key file: the device's ledger id (its enrolled key, even after a rotation)
/// and its current keys.
pub fn load_device(path: &Path) -> Result<(PublicKey, Keypair), KeyFileError> {
    let (kp, account) = load_with_account(path, KeyKind::Device)?;
    Ok((account.unwrap_or_else(|| kp.id()), kp))
}

/// Reads a key file, checking its kind and that its public fields match its secret.
pub fn load(path: &Path, kind: KeyKind) -> Result<Keypair, KeyFileError> {
    Ok(load_with_account(path, kind)?.0)
}

fn load_with_account(
    path: &Path,
    kind: KeyKind,
) -> Result<(Keypair, Option<PublicKey>), KeyFileError> {
    let at = || path.to_path_buf();
    let text = Zeroizing::new(
        fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: at(),
            kind,
            source,
        })?,
    );
    let j: KeyFileJson = serde_json::from_str(&text)
        .map_err(|source| KeyFileError::NotAKeyFile { path: at(), source })?;
    if j.version != KEYFILE_VERSION {
        return Err(KeyFileError::Version {
            path: at(),
            version: j.version,
        });
    }
    if j.kind != kind {
        return Err(KeyFileError::WrongKind {
            path: at(),
            found: j.kind,
            wanted: kind,
        });
    }
    let secret = Zeroizing::new(
        hex::decode(&j.secret).ok_or_else(|| KeyFileError::SecretNotHex { path: at() })?,
    );
    let kp = Keypair::from_secret_bytes(&secret)
        .map_err(|source| KeyFileError::SecretMalformed { path: at(), source })?;
    if kp.id().peer_id() != j.id || kp.enc_key().to_string() != j.enc_key {
        return Err(KeyFileError::Mismatch { path: at() });
    }
    let account = match &j.account {
        Some(a) => Some(
            PublicKey::from_peer_id(a)
                .map_err(|reason| KeyFileError::BadAccount { path: at(), reason })?,
        ),
        None => None,
    };
    warn_if_readable_by_others(path);
    Ok((kp, account))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_generated_key_loads_back() {
        let d = tmp();
        let p = d.path().join("a.key");
        let kp = generate(&p, KeyKind::Admin).unwrap();
        let back = load(&p, KeyKind::Admin).unwrap();
        assert_eq!(back.id(), kp.id());
        assert_eq!(back.enc_key(), kp.enc_key());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp();
        let p = d.path().join("n.key");
        generate(&p, KeyKind::Node).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn secret_files_are_never_overwritten() {
        let d = tmp();
        let p = d.path().join("token");
        write_secret_file(&p, b"first").unwrap();
        let e = write_secret_file(&p, b"second").unwrap_err();
        assert!(matches!(e, KeyFileError::Create { .. }), "{e}");
        assert!(e.to_string().contains("never overwritten"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert!(generate(&p, KeyKind::Device).is_err());
    }

    #[test]
    fn a_key_of_another_kind_is_refused() {
        let d = tmp();
        let p = d.path().join("a.key");
        generate(&p, KeyKind::Admin).unwrap();
        let e = load(&p, KeyKind::Device).unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::WrongKind {
                    found: KeyKind::Admin,
                    wanted: KeyKind::Device,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("holds a admin key") && e.to_string().contains("a.key"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_key_file_says_how_to_create_one() {
        let d = tmp();
        let p = d.path().join("missing.key");
        let e = load_device(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }), "{e}");
        assert!(
            e.to_string().contains("missing.key")
                && e.to_string().contains("meshward device keygen"),
            "{e}"
        );
        let e = load(&p, KeyKind::Admin).unwrap_err();
        assert!(e.to_string().contains("meshward admin keygen"), "{e}");
    }

    fn edit(p: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
        f(&mut v);
        fs::remove_file(p).unwrap();
        write_secret_file(p, v.to_string().as_bytes()).unwrap();
    }

    #[test]
    fn an_edited_key_file_is_refused() {
        let d = tmp();
        let p = d.path().join("d.key");
        generate(&p, KeyKind::Device).unwrap();
        let other = Keypair::generate(&mut rand::rngs::OsRng);
        edit(&p, |v| v["id"] = other.id().peer_id().into());
        let e = load_device(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let d = tmp();
        let p = d.path().join("d.key");
        generate(&p, KeyKind::Device).unwrap();
        edit(&p, |v| v["version"] = 2.into());
        assert!(matches!(
            load_device(&p).unwrap_err(),
            KeyFileError::Version { version: 2, .. }
        ));
        edit(&p, |v| {
            v["version"] = 1.into();
            v["secret"] = "zz".into();
        });
        assert!(matches!(
            load_device(&p).unwrap_err(),
            KeyFileError::SecretNotHex { .. }
        ));
        edit(&p, |v| v["secret"] = "00".into());
        assert!(matches!(
            load_device(&p).unwrap_err(),
            KeyFileError::SecretMalformed { .. }
        ));
        edit(&p, |v| v["extra"] = 1.into());
        assert!(matches!(
            load_device(&p).unwrap_err(),
            KeyFileError::NotAKeyFile { .. }
        ));
    }

    #[test]
    fn a_rotated_device_keeps_its_account() {
        let d = tmp();
        let enrolled = Keypair::generate(&mut rand::rngs::OsRng);
        let new = Keypair::generate(&mut rand::rngs::OsRng);
        let p = d.path().join("rotated.key");
        write(&p, KeyKind::Device, &new, Some(&enrolled.id())).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(&enrolled.id().peer_id()), "{text}");
        let (account, kp) = load_device(&p).unwrap();
        assert_eq!(account, enrolled.id());
        assert_eq!(kp.id(), new.id());

        // A device's own id is not written as an account.
        let q = d.path().join("plain.key");
        write(&q, KeyKind::Device, &new, Some(&new.id())).unwrap();
        assert!(!fs::read_to_string(&q).unwrap().contains("account"));
        assert_eq!(load_device(&q).unwrap().0, new.id());

        edit(&p, |v| v["account"] = "not-a-peer-id".into());
        assert!(matches!(
            load_device(&p).unwrap_err(),
            KeyFileError::BadAccount { .. }
        ));
    }

    #[test]
    fn the_file_is_the_documented_json() {
        let d = tmp();
        let p = d.path().join("d.key");
        let kp = generate(&p, KeyKind::Device).unwrap();
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["kind"], "device");
        assert_eq!(v["id"], kp.id().peer_id().as_str());
        assert_eq!(v["enc_key"], kp.enc_key().to_string().as_str());
        assert_eq!(
            v["secret"].as_str().unwrap(),
            hex::encode(&kp.to_secret_bytes())
        );
        assert!(v.get("account").is_none());
    }
}
