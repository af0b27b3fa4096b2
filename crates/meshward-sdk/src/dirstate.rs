//! What a device remembers between runs, in its state directory: its transaction sequence
//! number, its per-recipient envelope counters, the device records it has looked up (so it can
//! still send directly when no gateway is reachable), and the group secrets it holds.
//!
//! One JSON file, `device-state.json` (mode 0600: it holds group secrets), rewritten through a
//! temporary file and a rename so a crash leaves the old or the new version. Every update holds
//! an exclusive `flock` on `device-state.lock`, so two processes of one device (an agent and a
//! `send`) never hand out the same sequence number.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use meshward_core::hash::Hash;
use meshward_core::hex;
use meshward_core::ids::{EncKey, PublicKey};
use meshward_core::rpc::DeviceInfo;
use meshward_core::tx::GroupName;
use serde::{Deserialize, Serialize};

use crate::client::ClientError;

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "device-state.json";
const LOCK_FILE: &str = "device-state.lock";
/// Most device records cached.
pub const MAX_KNOWN: usize = 4096;

/// The contents of the state file. Every field defaults when absent, so older files still load.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DeviceState {
    /// The fleet's chain id, once learned from a gateway.
    #[serde(default)]
    pub chain_id: Option<String>,
    /// The last transaction sequence number handed out (0: none yet).
    #[serde(default)]
    pub last_tx_seq: u64,
    /// That transaction's id, in hex.
    #[serde(default)]
    pub last_tx_id: Option<String>,
    /// Last envelope sequence number per recipient (peer id string).
    #[serde(default)]
    pub envelope_seq: BTreeMap<String, u64>,
    /// Device records looked up, by ledger id (peer id string).
    #[serde(default)]
    pub known: BTreeMap<String, KnownDevice>,
    /// Group secrets held: group name -> (epoch, hex secret).
    #[serde(default)]
    pub groups: BTreeMap<String, (u64, String)>,
}

/// A cached device record, as the state file stores a [`DeviceInfo`] (without its sequence
/// number).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnownDevice {
    /// Its current signing key, as peer id text.
    pub sign_key: String,
    /// Its X25519 encryption key, 32 bytes in hex.
    pub enc_key: String,
    /// The names of the groups it belongs to.
    pub groups: Vec<String>,
    /// Whether it was active (not revoked) when looked up.
    pub active: bool,
    /// Its listen addresses, as multiaddr text.
    pub addrs: Vec<String>,
}

impl KnownDevice {
    /// The cache entry for a device record.
    pub fn from_info(d: &DeviceInfo) -> Self {
        KnownDevice {
            sign_key: d.sign_key.peer_id(),
            enc_key: hex::encode(&d.enc_key.0),
            groups: d.groups.iter().map(|g| g.as_str().to_string()).collect(),
            active: d.active,
            addrs: d.addrs.clone(),
        }
    }

    /// Back to a `DeviceInfo`; `None` if the cached entry is malformed.
    pub fn to_info(&self, id: &PublicKey) -> Option<DeviceInfo> {
        let enc: [u8; 32] = hex::decode(&self.enc_key)?.try_into().ok()?;
        Some(DeviceInfo {
            id: *id,
            sign_key: PublicKey::from_peer_id(&self.sign_key).ok()?,
            enc_key: EncKey(enc),
            groups: self
                .groups
                .iter()
                .map(|g| GroupName::new(g))
                .collect::<Option<Vec<_>>>()?,
            active: self.active,
            seq: 0,
            addrs: self.addrs.clone(),
        })
    }
}

/// A device's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::State(format!("{what} {}: {e}", path.display()))
}

/// The state directory's lock: an exclusive advisory lock on its lock file, released when the
/// file is closed (dropped).
struct Lock(#[allow(dead_code, reason = "held for its lock, released on drop")] File);

impl StateDir {
    /// Opens (creating, mode 0700) a device state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, ClientError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| err("cannot create", &dir, e))?;
        Ok(StateDir { dir })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Lock, ClientError> {
        let p = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| err("cannot open", &p, e))?;
        // Blocks until the lock is ours (flock(2) on Unix).
        f.lock().map_err(|e| err("cannot lock", &p, e))?;
        Ok(Lock(f))
    }

    fn read(&self) -> Result<DeviceState, ClientError> {
        let p = self.dir.join(STATE_FILE);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                err(
                    "state file is damaged (move it away to start afresh):",
                    &p,
                    e,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeviceState::default()),
            Err(e) => Err(err("cannot read", &p, e)),
        }
    }

    fn write(&self, s: &DeviceState) -> Result<(), ClientError> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(s).map_err(|e| err("cannot encode", &p, e))?;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err("cannot write", &tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| err("cannot replace", &p, e))
    }

    /// Reads, changes and writes the state under the lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut DeviceState) -> T) -> Result<T, ClientError> {
        let _lock = self.lock()?;
        let mut s = self.read()?;
        let out = f(&mut s);
        self.write(&s)?;
        Ok(out)
    }

    /// Reads the state (under the lock, so never half-written).
    pub fn load(&self) -> Result<DeviceState, ClientError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Reserves `n` consecutive envelope sequence numbers towards `recipient` and returns the
    /// first: above every one used before, and at least the current time in microseconds, so a
    /// lost state file never repeats one.
    pub fn reserve_envelope_seqs(
        &self,
        recipient: &PublicKey,
        n: u64,
        now_us: u64,
    ) -> Result<u64, ClientError> {
        self.update(|s| {
            let e = s.envelope_seq.entry(recipient.peer_id()).or_insert(0);
            let first = (*e + 1).max(now_us);
            *e = first + n.saturating_sub(1);
            first
        })
    }

    /// Caches a device record under its ledger id, replacing an older one; once [`MAX_KNOWN`]
    /// are cached, records of new devices are not kept.
    pub fn remember(&self, info: &DeviceInfo) -> Result<(), ClientError> {
        self.update(|s| {
            if s.known.len() < MAX_KNOWN || s.known.contains_key(&info.id.peer_id()) {
                s.known
                    .insert(info.id.peer_id(), KnownDevice::from_info(info));
            }
        })
    }

    /// The cached record of device `id` (by ledger id); `None` if none is cached or the cached
    /// entry is malformed.
    pub fn known(&self, id: &PublicKey) -> Result<Option<DeviceInfo>, ClientError> {
        Ok(self
            .load()?
            .known
            .get(&id.peer_id())
            .and_then(|k| k.to_info(id)))
    }

    /// Records the transaction sequence number just used and the transaction's id.
    pub fn set_last_tx(&self, seq: u64, id: &Hash) -> Result<(), ClientError> {
        self.update(|s| {
            if seq >= s.last_tx_seq {
                s.last_tx_seq = seq;
                s.last_tx_id = Some(id.to_hex());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_seqs_only_grow_and_survive_reopening() {
        let d = tempfile::tempdir().unwrap();
        let r = PublicKey([3; 32]);
        let s = StateDir::open(d.path()).unwrap();
        let a = s.reserve_envelope_seqs(&r, 1, 10).unwrap();
        let b = s.reserve_envelope_seqs(&r, 1, 5).unwrap();
        assert_eq!((a, b), (10, 11));
        let first = s.reserve_envelope_seqs(&r, 5, 0).unwrap();
        assert_eq!(first, 12);
        let again = StateDir::open(d.path()).unwrap();
        assert_eq!(again.reserve_envelope_seqs(&r, 1, 0).unwrap(), 17);
    }

    #[test]
    fn a_damaged_state_file_is_an_error_not_a_reset() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), "{not json").unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let e = s
            .reserve_envelope_seqs(&PublicKey([1; 32]), 1, 0)
            .unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        // Nothing was overwritten.
        assert_eq!(
            std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap(),
            "{not json"
        );
    }
}
