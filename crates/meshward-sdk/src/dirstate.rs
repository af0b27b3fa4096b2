//! What a device remembers between runs, in its state directory: its transaction sequence
//! number, its per-recipient envelope counters, the device records it has looked up (so it can
//! still send directly when no gateway is reachable), and the group secrets it holds.
//!
//! One JSON file, `device-state.json` (mode 0600: it holds group secrets), rewritten through a
//! temporary file and a rename so a crash leaves the old or the new version. Every update holds
//! an exclusive `flock` on `device-state.lock`.
//!
//! Transaction sequence numbers. Two transactions of one device with one sequence number are
//! equivocation, which the ledger punishes by revoking the device, so a number is never signed
//! twice: a [`TxReservation`] holds the lock from choosing the number (above the ledger's
//! committed one and above every number this directory handed out) through signing to saving
//! the signed transaction, across every process that shares the directory (an agent and any
//! number of `send`s, through any gateways). A signed transaction stays in
//! [`DeviceState::outstanding`] until the ledger commits its number; later reservations resubmit
//! it (the same bytes) so a crash between saving and submitting, or a gateway that dropped it,
//! cannot leave a gap. A number goes back only when a gateway refused its transaction outright
//! and no later number was reserved meanwhile ([`StateDir::release_tx`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use meshward_core::codec::{Decode as _, Encode as _};
use meshward_core::hash::Hash;
use meshward_core::hex;
use meshward_core::ids::{EncKey, PublicKey};
use meshward_core::rpc::DeviceInfo;
use meshward_core::tx::{GroupName, Tx};
use serde::{Deserialize, Serialize};

use crate::client::ClientError;

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "device-state.json";
const LOCK_FILE: &str = "device-state.lock";
/// Most device records cached.
pub const MAX_KNOWN: usize = 4096;
/// How far (µs) the clock may run ahead of a recipient's last envelope number before the next
/// number jumps to the clock: 10 s.
pub const ENVELOPE_SEQ_CLOCK_SLACK_US: u64 = 10_000_000;
/// Most signed, not yet committed transactions remembered (the oldest forgotten first; a
/// gateway holds at most this far ahead of the committed number anyway).
pub const MAX_OUTSTANDING: usize = 256;

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
    /// Transactions signed with a number the ledger had not committed when last looked up:
    /// sequence number -> the signed transaction's canonical encoding in hex.
    #[serde(default)]
    pub outstanding: BTreeMap<u64, String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Replaces the state file. `durable` waits for the data to reach the disk (fsync) before
    /// the rename; without it a crash may leave the previous version, which only the record
    /// cache tolerates.
    fn write(&self, s: &DeviceState, durable: bool) -> Result<(), ClientError> {
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
            .and_then(|_| if durable { f.sync_all() } else { Ok(()) })
            .map_err(|e| err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| err("cannot replace", &p, e))
    }

    /// Reads, changes and writes the state under the lock, durably (fsync before the rename).
    pub fn update<T>(&self, f: impl FnOnce(&mut DeviceState) -> T) -> Result<T, ClientError> {
        let _lock = self.lock()?;
        let mut s = self.read()?;
        let out = f(&mut s);
        self.write(&s, true)?;
        Ok(out)
    }

    /// As [`StateDir::update`], but writes only when `f` says it changed something, and
    /// without waiting for the disk.
    fn update_lazily<T>(
        &self,
        f: impl FnOnce(&mut DeviceState) -> (T, bool),
    ) -> Result<T, ClientError> {
        let _lock = self.lock()?;
        let mut s = self.read()?;
        let (out, changed) = f(&mut s);
        if changed {
            self.write(&s, false)?;
        }
        Ok(out)
    }

    /// Reads the state (under the lock, so never half-written).
    pub fn load(&self) -> Result<DeviceState, ClientError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Reserves `n` consecutive envelope sequence numbers towards `recipient` and returns the
    /// first: above every one used before. The first number towards a recipient, and the next
    /// after [`ENVELOPE_SEQ_CLOCK_SLACK_US`] without a send, is at least the current time in
    /// microseconds, so a lost or restored state file never repeats one. Between those, numbers
    /// follow one by one, so envelopes of concurrent senders on one key (a `send` beside an
    /// agent, or two `send` processes) stay within the receiver's out-of-order window of 64
    /// positions. The file is written durably: a number is never handed out twice.
    pub fn reserve_envelope_seqs(
        &self,
        recipient: &PublicKey,
        n: u64,
        now_us: u64,
    ) -> Result<u64, ClientError> {
        self.update(|s| {
            let e = s.envelope_seq.entry(recipient.peer_id()).or_insert(0);
            let first = if *e == 0 || now_us > e.saturating_add(ENVELOPE_SEQ_CLOCK_SLACK_US) {
                (*e + 1).max(now_us)
            } else {
                *e + 1
            };
            *e = first + n.saturating_sub(1);
            first
        })
    }

    /// Caches a device record under its ledger id, replacing an older one; once [`MAX_KNOWN`]
    /// are cached, records of new devices are not kept. The file is rewritten only when the
    /// record changed, and without waiting for the disk (it is a cache).
    pub fn remember(&self, info: &DeviceInfo) -> Result<(), ClientError> {
        let entry = KnownDevice::from_info(info);
        self.update_lazily(|s| {
            let id = info.id.peer_id();
            if s.known.get(&id) == Some(&entry)
                || (s.known.len() >= MAX_KNOWN && !s.known.contains_key(&id))
            {
                return ((), false);
            }
            s.known.insert(id, entry);
            ((), true)
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

    /// Starts a transaction reservation: waits (blocking the thread) until no other process or
    /// task of this device holds one. Hold it only for synchronous work (choose, sign, save),
    /// never across an await: the lock is an `flock`, and other tasks of this process take it
    /// on their runtime threads.
    pub fn reserve_tx(&self) -> Result<TxReservation, ClientError> {
        let lock = self.lock()?;
        let state = self.read()?;
        Ok(TxReservation {
            dir: self.clone(),
            _lock: lock,
            state,
        })
    }

    /// Gives back sequence number `seq`, whose transaction `id` a gateway refused outright (so
    /// it is in no gateway's mempool), if it is still the last one handed out. Returns whether it
    /// went back; when a later number was reserved meanwhile, `seq` stays used (that later
    /// reservation may be resubmitting it).
    pub fn release_tx(&self, seq: u64, id: &Hash) -> Result<bool, ClientError> {
        self.update(|s| {
            let last = s.last_tx_seq == seq && s.last_tx_id.as_deref() == Some(&id.to_hex());
            if last {
                s.outstanding.remove(&seq);
                s.last_tx_seq = seq - 1;
                s.last_tx_id = None;
            }
            last
        })
    }
}

/// The device's transaction sequence, held: the state directory's lock from choosing a number
/// through signing to [`TxReservation::save`]. Dropping it unsaved hands out nothing.
pub struct TxReservation {
    dir: StateDir,
    _lock: Lock,
    state: DeviceState,
}

impl TxReservation {
    /// The number to sign with, given the ledger's committed one: one past it and past every
    /// number this directory handed out. Forgets outstanding transactions the ledger committed.
    pub fn next_seq(&mut self, committed: u64) -> u64 {
        self.state.outstanding.retain(|seq, _| *seq > committed);
        committed.max(self.state.last_tx_seq) + 1
    }

    /// The signed transactions still outstanding, lowest number first, to resubmit before a new
    /// one (entries that no longer decode are skipped).
    pub fn outstanding(&self) -> Vec<Tx> {
        self.state
            .outstanding
            .values()
            .filter_map(|h| Tx::from_bytes(&hex::decode(h)?).ok())
            .collect()
    }

    /// Records `tx` as handed out (its number, id and bytes) and saves the state, ending the
    /// reservation.
    pub fn save(mut self, tx: &Tx) -> Result<(), ClientError> {
        let s = &mut self.state;
        s.last_tx_seq = s.last_tx_seq.max(tx.seq);
        s.last_tx_id = Some(tx.id().to_hex());
        s.outstanding.insert(tx.seq, hex::encode(&tx.to_bytes()));
        while s.outstanding.len() > MAX_OUTSTANDING {
            s.outstanding.pop_first();
        }
        self.dir.write(&self.state, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn remembering_an_unchanged_record_does_not_rewrite_the_file() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let kp = meshward_core::ids::Keypair::generate(&mut rand::rngs::OsRng);
        let mut info = DeviceInfo {
            id: kp.id(),
            sign_key: kp.id(),
            enc_key: kp.enc_key(),
            groups: vec![],
            active: true,
            seq: 4,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        };
        s.remember(&info).unwrap();
        let inode = || std::fs::metadata(d.path().join(STATE_FILE)).unwrap().ino();
        let before = inode();
        // A new sequence number is not part of the cached record.
        info.seq = 5;
        s.remember(&info).unwrap();
        assert_eq!(
            inode(),
            before,
            "an unchanged record rewrote the state file"
        );
        info.active = false;
        s.remember(&info).unwrap();
        assert_ne!(inode(), before, "a changed record was not written");
        assert!(!s.known(&kp.id()).unwrap().unwrap().active);
    }

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
        // Within the slack, numbers follow one by one; past it, they jump to the clock.
        let near = 17 + ENVELOPE_SEQ_CLOCK_SLACK_US;
        assert_eq!(again.reserve_envelope_seqs(&r, 1, near).unwrap(), 18);
        let far = 18 + ENVELOPE_SEQ_CLOCK_SLACK_US + 1;
        assert_eq!(again.reserve_envelope_seqs(&r, 1, far).unwrap(), far);
    }

    fn tx(seq: u64, n: u8) -> Tx {
        let kp = meshward_core::ids::Keypair::generate(&mut rand::rngs::OsRng);
        Tx::sign(
            "c",
            kp.id(),
            &kp.sign,
            seq,
            meshward_core::tx::TxBody::Ack {
                commitment: Hash([n; 32]),
                sender: PublicKey([n; 32]),
            },
        )
    }

    #[test]
    fn a_reserved_number_is_never_handed_out_twice_and_goes_back_only_while_last() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        let mut r = s.reserve_tx().unwrap();
        assert_eq!(r.next_seq(4), 5);
        let t5 = tx(5, 1);
        r.save(&t5).unwrap();
        // The ledger has not committed 5: the next reservation still goes past it, and offers
        // the transaction at 5 for resubmission.
        let mut r = s.reserve_tx().unwrap();
        assert_eq!(r.next_seq(4), 6);
        assert_eq!(r.outstanding(), vec![t5.clone()]);
        let t6 = tx(6, 2);
        r.save(&t6).unwrap();
        // 5 cannot go back once 6 was reserved after it; 6 can, being last.
        assert!(!s.release_tx(5, &t5.id()).unwrap());
        assert!(s.release_tx(6, &t6.id()).unwrap());
        let mut r = s.reserve_tx().unwrap();
        assert_eq!(r.next_seq(4), 6);
        // A committed number is forgotten; a ledger ahead of the file wins.
        assert_eq!(r.next_seq(9), 10);
        assert!(r.outstanding().is_empty());
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
