//! Key files and other secret files on disk.
//!
//! A key file is JSON (see `docs/FORMATS.md`):
//! `{"version":1,"kind":"device","id":"12D3KooW…","enc_key":"<hex>","secret":"<hex>"}` where
//! `secret` is [`Keypair::to_secret_bytes`]. The public fields are there for people and scripts;
//! on load they must match the secret. Secret files are created with mode 0600 and never
//! overwritten.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use meshward_core::hex;
use meshward_core::ids::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const KEYFILE_VERSION: u8 = 1;

/// What a key is for. A key file of one kind is refused where another is expected, so an
/// admin key is never used as a device key by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Admin,
    Device,
    Node,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::Device => "device",
            KeyKind::Node => "node",
        }
    }
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

/// Writes `bytes` to a new file with mode 0600; refuses to overwrite.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (it must not exist yet; secrets are never overwritten)",
            path.display()
        )
    })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Generates a key pair and writes it as a key file of `kind`.
pub fn generate(path: &Path, kind: KeyKind) -> Result<Keypair> {
    let kp = Keypair::generate(&mut rand::rngs::OsRng);
    write(path, kind, &kp, None)?;
    Ok(kp)
}

/// Writes `kp` as a new key file of `kind`; `account` is a rotated device's ledger id.
pub fn write(path: &Path, kind: KeyKind, kp: &Keypair, account: Option<&PublicKey>) -> Result<()> {
    let secret = kp.to_secret_bytes();
    let json = KeyFileJson {
        version: KEYFILE_VERSION,
        kind,
        id: kp.id().peer_id(),
        enc_key: kp.enc_key().to_string(),
        secret: hex::encode(&secret),
        account: account.filter(|a| **a != kp.id()).map(|a| a.peer_id()),
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&json)? + "\n");
    write_secret_file(path, text.as_bytes())
}

/// Reads a device key file: the device's ledger id (its enrolled key, even after a rotation)
/// and its current keys.
pub fn load_device(path: &Path) -> Result<(PublicKey, Keypair)> {
    let (kp, account) = load_with_account(path, KeyKind::Device)?;
    Ok((account.unwrap_or_else(|| kp.id()), kp))
}

/// Reads a key file, checking its kind and that its public fields match its secret.
pub fn load(path: &Path, kind: KeyKind) -> Result<Keypair> {
    Ok(load_with_account(path, kind)?.0)
}

fn load_with_account(path: &Path, kind: KeyKind) -> Result<(Keypair, Option<PublicKey>)> {
    let text = Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?,
    );
    let j: KeyFileJson = serde_json::from_str(&text)
        .with_context(|| format!("key file {} is not a meshward key file", path.display()))?;
    if j.version != KEYFILE_VERSION {
        bail!(
            "key file {} has version {}; this build reads version {KEYFILE_VERSION}",
            path.display(),
            j.version
        );
    }
    if j.kind != kind {
        bail!(
            "key file {} holds a {} key, but this command needs a {} key file",
            path.display(),
            j.kind.name(),
            kind.name()
        );
    }
    let secret = Zeroizing::new(
        hex::decode(&j.secret)
            .with_context(|| format!("key file {}: secret is not hex", path.display()))?,
    );
    let kp = Keypair::from_secret_bytes(&secret)
        .with_context(|| format!("key file {}: secret is malformed", path.display()))?;
    if kp.id().peer_id() != j.id || kp.enc_key().to_string() != j.enc_key {
        bail!(
            "key file {}: id or enc_key does not match the secret (the file was edited)",
            path.display()
        );
    }
    let account = match &j.account {
        Some(a) => Some(PublicKey::from_peer_id(a).map_err(|e| {
            anyhow::anyhow!("key file {}: account is not a peer id: {e}", path.display())
        })?),
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
