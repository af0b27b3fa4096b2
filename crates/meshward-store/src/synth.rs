//! A synthetic fleet: real signed blocks for benchmarks, crash tests and `meshward store synth`.
//!
//! [`Synth::create`] makes a chain (`synth`, one admin, four validators of power 1) and a fleet
//! of devices with fresh keys, writes the keys to `<dir>/synth-keys.bin` and creates the store at
//! `<dir>/meshward.redb`. [`Synth::write_blocks`] then appends blocks through
//! [`Store::build_block`]: the first ones enroll the devices (admin-signed, up to
//! [`ENROLLS_PER_BLOCK`] a block, in groups `fleet-<k>` of at most [`MAX_GROUP_MEMBERS`] devices,
//! the most a group can be rekeyed for), the rest carry anchors from each device to the next one
//! of its group, with the sequence numbers the ledger expects. Every block is certified by three
//! of the four validator keys and carries the previous block's certificate as its last commit. Block times are
//! deterministic: `genesis_time_ms + height * BLOCK_INTERVAL_MS`, since the core reads no clock.
//!
//! [`Synth::open`] resumes after a restart or a crash: everything it needs (sequence numbers,
//! which devices are enrolled, the last certificate) is read back from the store.
//!
//! The keys are test keys: the file is private (mode 0600) but not encrypted.
//!
//! Key file format, version 1 (integers big-endian):
//! ```text
//! magic            8 bytes  "MWSYNKEY"
//! version          u8       1
//! genesis_time_ms  u64
//! admin            32 bytes Ed25519 seed
//! validator count  u32, then that many 32-byte Ed25519 seeds (at most 128)
//! device count     u32, then that many 65-byte device key bodies (at most 2^20):
//!                  version(1) || Ed25519 seed(32) || X25519 secret(32), as Keypair::to_secret_bytes
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use meshward_core::block::{BlockHeader, CommitCertificate};
use meshward_core::codec::{Reader, Writer};
use meshward_core::genesis::Genesis;
use meshward_core::hash::{self, Hash};
use meshward_core::ids::{Keypair, PublicKey, SignKey};
use meshward_core::state::{AdminSet, StateView};
use meshward_core::tx::{
    enroll_body, Anchor, GroupName, Recipient, Tx, TxBody, Validator, ValidatorSet,
    MAX_GROUP_MEMBERS, MAX_VALIDATORS,
};
use rand::rngs::OsRng;
use tracing::info;

use crate::error::{ApplyError, OpenError, ReadError};
use crate::format::FILE_NAME;
use crate::store::Store;

/// The synthetic chain's id.
pub const SYNTH_CHAIN_ID: &str = "synth";
/// Genesis time of a synthetic chain (2023-11-14), so that block times are reproducible.
pub const SYNTH_GENESIS_TIME_MS: u64 = 1_700_000_000_000;
/// Milliseconds between synthetic blocks.
pub const BLOCK_INTERVAL_MS: u64 = 1000;
/// Synthetic devices join groups `fleet-<k>`: device `i` of `n` joins group `i % groups(n)`.
pub const SYNTH_GROUP_PREFIX: &str = "fleet-";

/// How many groups a synthetic fleet of `n` devices has: as few as keep each group within
/// [`MAX_GROUP_MEMBERS`] (a group's record lists every member, and a larger group could not be
/// rekeyed: a `GroupKey` seals to at most that many members).
pub fn synth_groups(n: usize) -> usize {
    n.div_ceil(MAX_GROUP_MEMBERS).max(1)
}

/// The group of synthetic device `i` of `n`.
pub fn synth_group(i: usize, n: usize) -> GroupName {
    GroupName::new(&format!("{SYNTH_GROUP_PREFIX}{}", i % synth_groups(n)))
        .expect("fleet-<k> is a valid group name")
}

/// The device that synthetic device `from` of `n` sends to: the next member of its group.
/// Every group has at least two members when `n >= 2`.
pub fn synth_recipient(from: usize, n: usize) -> usize {
    let g = synth_groups(n);
    if from + g < n {
        from + g
    } else {
        from % g
    }
}
/// Most enrollments in one synthetic block.
pub const ENROLLS_PER_BLOCK: usize = 256;
/// Most devices in a synthetic fleet.
pub const MAX_SYNTH_DEVICES: usize = 1 << 20;
/// The key file's name inside the fleet's dir.
pub const KEYS_FILE_NAME: &str = "synth-keys.bin";
/// Validators of a synthetic chain; blocks are certified by all but one of them.
const VALIDATORS: usize = 4;
/// What a synthetic anchor says the envelope's ciphertext weighs.
const ENVELOPE_BYTES: u64 = 256;

const KEYS_MAGIC: &[u8; 8] = b"MWSYNKEY";
const KEYS_VERSION: u8 = 1;

/// Why a synthetic fleet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// Creating: the dir already holds a key file or a store.
    #[error("cannot create a synthetic fleet in {}: {} already exists (resume it with Synth::open, or use an empty dir)", dir.display(), file.display())]
    Exists {
        /// The fleet's dir.
        dir: PathBuf,
        /// The file already there.
        file: PathBuf,
    },
    /// A file operation on the keys, the store or the dir failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The file or dir concerned.
        path: PathBuf,
        /// What was being done: `create`, `write`, `read`, `sync`, `rename into place`, ….
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not parse (magic, version, counts, key bodies).
    #[error("synthetic key file {} is invalid: {reason} (delete the dir and create the fleet again)", path.display())]
    Keys {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store's genesis is not the one the key file's keys make.
    #[error("store at {} does not belong to the keys in {} (its genesis differs)", store.display(), keys.display())]
    GenesisMismatch {
        /// The store file.
        store: PathBuf,
        /// The key file.
        keys: PathBuf,
    },
    /// The fleet size requested is 0 or over [`MAX_SYNTH_DEVICES`].
    #[error("{devices} devices requested, the synthetic fleet allows 1 to {max}")]
    DeviceCount {
        /// Devices requested.
        devices: usize,
        /// The limit ([`MAX_SYNTH_DEVICES`]).
        max: usize,
    },
    /// Anchors were asked of a fleet with fewer than 2 devices.
    #[error("anchors need at least 2 devices, the fleet has {devices} (create it with more)")]
    TooFewDevices {
        /// Devices in the fleet.
        devices: usize,
    },
    /// Creating or opening the store failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Writing a block failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Reading the store back failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The fleet's secret keys.
struct SynthKeys {
    genesis_time_ms: u64,
    admin: SignKey,
    validators: Vec<SignKey>,
    devices: Vec<Keypair>,
}

impl SynthKeys {
    fn generate(devices: usize) -> SynthKeys {
        SynthKeys {
            genesis_time_ms: SYNTH_GENESIS_TIME_MS,
            admin: SignKey::generate(&mut OsRng),
            validators: (0..VALIDATORS)
                .map(|_| SignKey::generate(&mut OsRng))
                .collect(),
            devices: (0..devices)
                .map(|_| Keypair::generate(&mut OsRng))
                .collect(),
        }
    }

    fn genesis(&self) -> Genesis {
        Genesis {
            chain_id: SYNTH_CHAIN_ID.into(),
            genesis_time_ms: self.genesis_time_ms,
            admins: AdminSet::new(vec![self.admin.public()], 1)
                .expect("one admin with threshold 1 is a well-formed admin set"),
            validators: ValidatorSet::new(
                self.validators
                    .iter()
                    .map(|k| Validator {
                        key: k.public(),
                        power: 1,
                    })
                    .collect(),
            )
            .expect("four distinct fresh keys of power 1 are a well-formed validator set"),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + 32 * VALIDATORS + 65 * self.devices.len());
        w.raw(KEYS_MAGIC).u8(KEYS_VERSION).u64(self.genesis_time_ms);
        w.raw(&self.admin.seed()[..]);
        w.len(self.validators.len());
        for v in &self.validators {
            w.raw(&v.seed()[..]);
        }
        w.len(self.devices.len());
        for d in &self.devices {
            w.raw(&d.to_secret_bytes());
        }
        w.into_bytes()
    }

    fn from_bytes(b: &[u8]) -> Result<SynthKeys, String> {
        let mut r = Reader::new(b);
        let e = |e: meshward_core::codec::DecodeError| e.to_string();
        if r.array::<8>("magic").map_err(e)? != *KEYS_MAGIC {
            return Err("it does not start with MWSYNKEY".into());
        }
        r.version(KEYS_VERSION, "synthetic key file").map_err(e)?;
        let genesis_time_ms = r.u64("genesis time").map_err(e)?;
        let admin = SignKey::from_seed(&r.array::<32>("admin seed").map_err(e)?);
        let n = r.len(MAX_VALIDATORS, "validators").map_err(e)?;
        let mut validators = Vec::with_capacity(n);
        for _ in 0..n {
            validators.push(SignKey::from_seed(
                &r.array::<32>("validator seed").map_err(e)?,
            ));
        }
        let n = r.len(MAX_SYNTH_DEVICES, "devices").map_err(e)?;
        let mut devices = Vec::with_capacity(n.min(r.remaining() / 65));
        for _ in 0..n {
            devices
                .push(Keypair::from_secret_bytes(r.take(65, "device key").map_err(e)?).map_err(e)?);
        }
        r.finish().map_err(e)?;
        if validators.len() != VALIDATORS {
            return Err(format!(
                "it holds {} validator keys, not {VALIDATORS}",
                validators.len()
            ));
        }
        // `create` never writes an empty fleet, and resuming one would divide by its size.
        if devices.is_empty() {
            return Err("it holds no device keys".into());
        }
        Ok(SynthKeys {
            genesis_time_ms,
            admin,
            validators,
            devices,
        })
    }
}

/// What [`Synth::write_blocks`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SynthReport {
    /// Blocks written.
    pub blocks: u64,
    /// Transactions in them.
    pub txs: u64,
    /// Devices enrolled by them.
    pub enrolled: u64,
    /// Anchors in them.
    pub anchors: u64,
    /// The height of the last block written.
    pub tip_height: u64,
}

/// A synthetic fleet writing real signed blocks to its own store.
pub struct Synth {
    dir: PathBuf,
    keys: SynthKeys,
    store: Store,
    last_commit: Option<CommitCertificate>,
    /// Devices `0..enrolled` are enrolled; they are enrolled in order.
    enrolled: usize,
    /// The device that sends the next anchor.
    next_sender: usize,
}

impl std::fmt::Debug for Synth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synth")
            .field("dir", &self.dir)
            .field("devices", &self.keys.devices.len())
            .field("enrolled", &self.enrolled)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> SynthError + 'a {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), readable by the owner
/// only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp, "create"))?;
    f.write_all(bytes).map_err(io(&tmp, "write"))?;
    f.sync_all().map_err(io(&tmp, "sync"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path, "rename into place"))?;
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir, "sync"))?;
    }
    Ok(())
}

impl Synth {
    /// Makes a fleet of `devices` devices with fresh keys in `dir` (created if missing) and its
    /// store, with no blocks yet.
    pub fn create(dir: impl AsRef<Path>, devices: usize) -> Result<Synth, SynthError> {
        let dir = dir.as_ref();
        if devices == 0 || devices > MAX_SYNTH_DEVICES {
            return Err(SynthError::DeviceCount {
                devices,
                max: MAX_SYNTH_DEVICES,
            });
        }
        fs::create_dir_all(dir).map_err(io(dir, "create dir"))?;
        let keys_path = dir.join(KEYS_FILE_NAME);
        let store_path = dir.join(FILE_NAME);
        for file in [&keys_path, &store_path] {
            if file.try_exists().map_err(io(file, "check"))? {
                return Err(SynthError::Exists {
                    dir: dir.to_path_buf(),
                    file: file.clone(),
                });
            }
        }
        let keys = SynthKeys::generate(devices);
        // Keys first: a crash before the store exists is resumed by `open`, which creates the
        // store from the keys' genesis.
        write_private(&keys_path, &keys.to_bytes())?;
        let store = Store::create(&store_path, &keys.genesis())?;
        info!(dir = %dir.display(), devices, "synthetic fleet created");
        Synth::from_parts(dir, keys, store)
    }

    /// Reopens the fleet in `dir`, resuming where the store ends.
    pub fn open(dir: impl AsRef<Path>) -> Result<Synth, SynthError> {
        let dir = dir.as_ref();
        let keys_path = dir.join(KEYS_FILE_NAME);
        let bytes = fs::read(&keys_path).map_err(io(&keys_path, "read"))?;
        let keys = SynthKeys::from_bytes(&bytes).map_err(|reason| SynthError::Keys {
            path: keys_path.clone(),
            reason,
        })?;
        let store_path = dir.join(FILE_NAME);
        let genesis = keys.genesis();
        let store = if store_path.try_exists().map_err(io(&store_path, "check"))? {
            Store::open(&store_path)?
        } else {
            Store::create(&store_path, &genesis)?
        };
        if *store.genesis() != genesis {
            return Err(SynthError::GenesisMismatch {
                store: store_path,
                keys: keys_path,
            });
        }
        Synth::from_parts(dir, keys, store)
    }

    fn from_parts(dir: &Path, keys: SynthKeys, store: Store) -> Result<Synth, SynthError> {
        let last_commit = match store.tip() {
            Some((h, _)) => Some(
                store
                    .block(h)?
                    .expect("the store checked on open that its tip block exists")
                    .certificate,
            ),
            None => None,
        };
        let state = store.state();
        let enrolled = keys
            .devices
            .iter()
            .take_while(|d| state.account(&d.id()).is_some())
            .count();
        // Each anchor bumps its sender's sequence number, so their sum counts the anchors.
        let anchors: u64 = keys.devices[..enrolled]
            .iter()
            .filter_map(|d| state.account(&d.id()))
            .map(|a| a.seq)
            .sum();
        let next_sender = (anchors % keys.devices.len() as u64) as usize;
        Ok(Synth {
            dir: dir.to_path_buf(),
            keys,
            store,
            last_commit,
            enrolled,
            next_sender,
        })
    }

    /// Appends `n_blocks` blocks: enrollments while devices remain to enroll, then
    /// `anchors_per_block` anchors a block. Each block commits before the next is made, so a
    /// crash loses at most the block in progress.
    pub fn write_blocks(
        &mut self,
        n_blocks: u64,
        anchors_per_block: usize,
    ) -> Result<SynthReport, SynthError> {
        let mut report = SynthReport::default();
        for _ in 0..n_blocks {
            let height = self.store.next_height();
            let time_ms = self.block_time_ms(height);
            let (txs, enrolls, anchors) = if self.enrolled < self.keys.devices.len() {
                let txs = self.enroll_txs();
                let n = txs.len();
                (txs, n, 0)
            } else {
                let txs = self.anchor_txs(anchors_per_block, time_ms)?;
                let n = txs.len();
                (txs, 0, n)
            };
            let proposer = self.keys.validators[height as usize % VALIDATORS].public();
            let n_txs = txs.len() as u64;
            let cb =
                self.store
                    .build_block(time_ms, proposer, txs, self.last_commit.clone(), |h| {
                        certify_with(&self.keys.validators, h)
                    })?;
            self.last_commit = Some(cb.certificate);
            self.enrolled += enrolls;
            self.next_sender = (self.next_sender + anchors) % self.keys.devices.len();
            report.blocks += 1;
            report.txs += n_txs;
            report.enrolled += enrolls as u64;
            report.anchors += anchors as u64;
            report.tip_height = height;
        }
        Ok(report)
    }

    fn enroll_txs(&self) -> Vec<Tx> {
        let chain_id = SYNTH_CHAIN_ID;
        let admin = self.keys.admin.public();
        let seq = self.store.state().account(&admin).map_or(0, |a| a.seq);
        let n = self.keys.devices.len();
        let end = (self.enrolled + ENROLLS_PER_BLOCK).min(n);
        (self.enrolled..end)
            .zip(seq + 1..)
            .map(|(i, seq)| {
                let kp = &self.keys.devices[i];
                let body = enroll_body(chain_id, kp, vec![synth_group(i, n)], None);
                Tx::sign(chain_id, admin, &self.keys.admin, seq, body)
            })
            .collect()
    }

    fn anchor_txs(&self, count: usize, time_ms: u64) -> Result<Vec<Tx>, SynthError> {
        let n = self.keys.devices.len();
        if count > 0 && n < 2 {
            return Err(SynthError::TooFewDevices { devices: n });
        }
        let state = self.store.state();
        // Sequence numbers used in this block so far, by device index.
        let mut used: BTreeMap<usize, u64> = BTreeMap::new();
        let mut txs = Vec::with_capacity(count);
        for j in 0..count {
            let from = (self.next_sender + j) % n;
            let to = synth_recipient(from, n);
            let sender = &self.keys.devices[from];
            let id = sender.id();
            let seq = match used.get(&from) {
                Some(s) => s + 1,
                None => state.account(&id).map_or(0, |a| a.seq) + 1,
            };
            used.insert(from, seq);
            let body = TxBody::Anchor(Anchor {
                recipient: Recipient::Device(self.keys.devices[to].id()),
                commitment: synth_commitment(&id, seq),
                count: 1,
                timestamp_ms: time_ms,
                size_bytes: ENVELOPE_BYTES,
            });
            txs.push(Tx::sign(SYNTH_CHAIN_ID, id, &sender.sign, seq, body));
        }
        Ok(txs)
    }

    /// The time of the block at `height`.
    pub fn block_time_ms(&self, height: u64) -> u64 {
        self.keys
            .genesis_time_ms
            .saturating_add(height.saturating_mul(BLOCK_INTERVAL_MS))
    }

    /// A certificate for `header` from three of the four validators.
    pub fn certify(&self, header: &BlockHeader) -> CommitCertificate {
        certify_with(&self.keys.validators, header)
    }

    /// The previous block's certificate, to carry as the next block's last commit.
    pub fn last_commit(&self) -> Option<&CommitCertificate> {
        self.last_commit.as_ref()
    }

    /// The fleet's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for writes of the caller's own (tests build odd blocks this way). Blocks
    /// written here are not seen by [`Synth::last_commit`] until the fleet is reopened.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The fleet's store, the fleet dropped.
    pub fn into_store(self) -> Store {
        self.store
    }

    /// The fleet's dir: the key file and the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin's signing key (the only admin, threshold 1).
    pub fn admin(&self) -> &SignKey {
        &self.keys.admin
    }

    /// The validators' signing keys (four, power 1 each).
    pub fn validators(&self) -> &[SignKey] {
        &self.keys.validators
    }

    /// Every device's keys, enrolled or not yet, in fleet order.
    pub fn devices(&self) -> &[Keypair] {
        &self.keys.devices
    }

    /// Public keys of the devices enrolled so far.
    pub fn enrolled_devices(&self) -> Vec<PublicKey> {
        self.keys.devices[..self.enrolled]
            .iter()
            .map(|d| d.id())
            .collect()
    }
}

/// Signs `header` with every validator but one, chosen by height.
fn certify_with(validators: &[SignKey], header: &BlockHeader) -> CommitCertificate {
    let skip = (header.height as usize + 1) % validators.len();
    let keys: Vec<&SignKey> = validators
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != skip)
        .map(|(_, k)| k)
        .collect();
    CommitCertificate::sign(&header.chain_id, header, 0, &keys)
}

/// A distinct, reproducible commitment for the anchor `seq` of `sender`.
pub fn synth_commitment(sender: &PublicKey, seq: u64) -> Hash {
    let mut h = hash::Hasher::new(b"meshward/synth-envelope/v1");
    h.update(&sender.0).update(&seq.to_be_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_rejects_garbage() {
        let keys = SynthKeys::generate(3);
        let bytes = keys.to_bytes();
        let back = SynthKeys::from_bytes(&bytes).unwrap();
        assert_eq!(back.genesis(), keys.genesis());
        assert_eq!(back.devices.len(), 3);
        assert_eq!(back.devices[2].id(), keys.devices[2].id());
        assert!(SynthKeys::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(SynthKeys::from_bytes(b"garbage").is_err());
        let mut bad = bytes.clone();
        bad[8] = 2;
        let Err(reason) = SynthKeys::from_bytes(&bad) else {
            panic!("version 2 was accepted")
        };
        assert!(reason.contains("version"), "{reason}");
    }

    #[test]
    fn key_file_without_devices_is_refused_not_resumed() {
        let mut keys = SynthKeys::generate(1);
        keys.devices.clear();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEYS_FILE_NAME), keys.to_bytes()).unwrap();
        let Err(SynthError::Keys { reason, .. }) = Synth::open(dir.path()) else {
            panic!("a key file without devices was opened")
        };
        assert!(reason.contains("no device keys"), "{reason}");
    }
}
