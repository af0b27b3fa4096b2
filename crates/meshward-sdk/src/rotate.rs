//! Device key rotation: new signing and encryption keys, the same device id.
//!
//! The device's account (the id it was enrolled with) stays; a `RotateKeys` transaction, signed
//! by the current key and carrying the new keys' signatures over the rotation, makes the new
//! keys current. The key file is replaced so that no key is ever lost:
//!
//! 1. the new keys are written to `<key>.new` (a new secret file, with the account) before
//!    anything is submitted, so a crash after submitting leaves them on disk;
//! 2. the rotation is submitted with the old key and awaited with it; once it commits the
//!    gateways refuse the old key (and admit only the new one), so if the old key is refused
//!    first the wait goes on as the new one;
//! 3. once final, `<key>` becomes `<key>.old` and `<key>.new` becomes `<key>`.
//!
//! A `<key>.new` left by an interrupted rotation blocks the next one (secret files are never
//! overwritten): check which key the ledger holds (`meshward device list`) and keep that file.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use meshward_sdk::client::ClientConfig;
//! let config = ClientConfig::from_api("http://127.0.0.1:7700")?;
//! let done = meshward_sdk::rotate::rotate(std::path::Path::new("sensor.key"), config).await?;
//! println!("{} now signs with {}", done.account, done.new_keys.id());
//! # Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::tx::{rotate_body, Tx};

use crate::admin::FINALITY_TIMEOUT;
use crate::client::{Client, ClientConfig, ClientError, DeviceIdentity};
use crate::keyfile::{self, KeyFileError, KeyKind};

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// The key file could not be read, or `<key>.new` could not be written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The mesh or the ledger refused the rotation.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The rotation is final but the files could not be swapped: the new keys are in
    /// `<key>.new`.
    #[error("rotation is final, but cannot move the new key into {}", .key.display())]
    Move {
        /// The key file.
        key: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// A final rotation.
pub struct Rotated {
    /// The device's account: its id, unchanged.
    pub account: PublicKey,
    /// Its new keys, now in the key file.
    pub new_keys: Keypair,
    /// The height the rotation is final at.
    pub height: u64,
}

/// `<key>` with `suffix` appended to its file name.
fn with_suffix(key: &Path, suffix: &str) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Where the new keys wait until the rotation is final: `<key>.new`.
pub fn pending_path(key: &Path) -> PathBuf {
    with_suffix(key, ".new")
}

/// Where the old keys go once it is: `<key>.old`.
pub fn retired_path(key: &Path) -> PathBuf {
    with_suffix(key, ".old")
}

/// Rotates the keys of the device whose key file is `key`, reaching gateways with `config`,
/// and waits until the rotation is final (at most [`FINALITY_TIMEOUT`]).
pub async fn rotate(key: &Path, config: ClientConfig) -> Result<Rotated, RotateError> {
    let (account, old) = keyfile::load_device(key)?;
    let new = Keypair::generate(&mut rand::rngs::OsRng);
    let pending = pending_path(key);
    // The new key is on disk before the rotation is submitted, so it is never lost.
    keyfile::write(&pending, KeyKind::Device, &new, Some(&account))?;

    let client = Client::start(
        DeviceIdentity {
            account,
            keys: old.clone(),
        },
        config.clone(),
    )
    .await?;
    let submitted = async {
        let seq = client.next_seq(&account).await?;
        let chain = client.chain_id().to_string();
        let body = rotate_body(&chain, &account, seq, &new);
        let tx = Tx::sign(&chain, account, &old.sign, seq, body);
        client.submit(&tx).await
    }
    .await;
    let id = match submitted {
        Ok(id) => id,
        Err(e) => {
            client.shutdown().await;
            return Err(e.into());
        }
    };
    // Wait as the old key while the gateways still admit it; once the rotation commits they
    // refuse it (and admit only the new one), so the wait goes on as the new key.
    let deadline = Instant::now() + FINALITY_TIMEOUT;
    let as_old = client.wait_final(&id, deadline).await;
    client.shutdown().await;
    let height = match as_old {
        Ok(h) => h,
        Err(_) => {
            let client = Client::start(
                DeviceIdentity {
                    account,
                    keys: new.clone(),
                },
                config,
            )
            .await?;
            let h = client.wait_final(&id, deadline).await;
            client.shutdown().await;
            h?
        }
    };

    std::fs::rename(key, retired_path(key))
        .and_then(|_| std::fs::rename(&pending, key))
        .map_err(|source| RotateError::Move {
            key: key.to_path_buf(),
            source,
        })?;
    Ok(Rotated {
        account,
        new_keys: new,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_and_retired_files_sit_beside_the_key() {
        let k = Path::new("/keys/sensor.key");
        assert_eq!(pending_path(k), Path::new("/keys/sensor.key.new"));
        assert_eq!(retired_path(k), Path::new("/keys/sensor.key.old"));
    }

    #[tokio::test]
    async fn a_leftover_pending_key_blocks_the_rotation_before_anything_is_sent() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("d.key");
        keyfile::generate(&key, KeyKind::Device).unwrap();
        std::fs::write(pending_path(&key), "left over").unwrap();
        // No gateway at all: the rotation must fail on the file, not on the mesh.
        let e = rotate(&key, ClientConfig::new(Some("c".into()), Vec::new()))
            .await
            .err()
            .expect("a leftover <key>.new refuses the rotation");
        assert!(
            matches!(e, RotateError::KeyFile(KeyFileError::Create { .. })),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(pending_path(&key)).unwrap(),
            "left over"
        );
        assert!(keyfile::load_device(&key).is_ok());
    }
}
