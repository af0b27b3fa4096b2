//! The [`Store`]: one redb file holding the chain, the state after it, and the indexes.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use meshward_core::block::{BlockHeader, CertifiedBlock, CommitCertificate};
use meshward_core::chain::{self, ChainError};
use meshward_core::codec::{Decode, Encode};
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::state::{Delta, State, StateView};
use meshward_core::tx::{Tx, ValidatorSet};
use redb::{
    Builder, Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
};
use tracing::{debug, info, warn};

use crate::compact::{self, Env, SetHistory};
use crate::error::{ApplyError, Corruption, OpenError, ReadError};
use crate::format::{
    self, read_u32, read_u64, u64_bytes, BLOCK_AT, BLOCK_HASH_IDX, BLOCK_LOG, BLOCK_SEGMENT_BYTES,
    CERTS, COMMITMENT_IDX, FORMAT_VERSION, HANDOFFS, KEY_CHANGES, META, META_FORMAT_VERSION,
    META_GENESIS, META_TIP_HASH, META_TIP_HEIGHT, STATE, TX_IDX, VALIDATOR_SETS,
};
pub(crate) use crate::rows::{read_block, read_cert, read_head, read_plain_block, read_row};
use crate::rows::{write_block, BlockWrite};

/// A failure inside a helper: the database failed, or what it holds is wrong.
#[derive(Debug)]
pub(crate) enum Fault {
    Db(redb::Error),
    Corrupt { height: u64, reason: Corruption },
    Open(OpenError),
}

from_redb_errors!(Fault, Fault::Db);

impl Fault {
    pub(crate) fn corrupt(height: u64, reason: Corruption) -> Fault {
        Fault::Corrupt { height, reason }
    }

    pub(crate) fn into_open(self, path: &Path) -> OpenError {
        match self {
            Fault::Db(e) => storage_open_error(path, e),
            Fault::Corrupt { height, reason } => OpenError::Corrupt {
                path: path.to_path_buf(),
                height,
                reason: Box::new(reason),
            },
            Fault::Open(e) => e,
        }
    }

    pub(crate) fn into_read(self, path: &Path) -> ReadError {
        match self {
            Fault::Db(e) => ReadError::Storage {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
            Fault::Corrupt { height, reason } => ReadError::Corrupt {
                path: path.to_path_buf(),
                height,
                reason: Box::new(reason),
            },
            Fault::Open(e) => ReadError::Storage {
                path: path.to_path_buf(),
                source: Box::new(redb::Error::Corrupted(e.to_string())),
            },
        }
    }
}

/// A redb error met while opening, as an [`OpenError`].
fn storage_open_error(path: &Path, e: redb::Error) -> OpenError {
    let path = path.to_path_buf();
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            OpenError::InUse { path }
        }
        redb::Error::Corrupted(reason) => OpenError::Damaged { path, reason },
        redb::Error::UpgradeRequired(v) => OpenError::Damaged {
            path,
            reason: format!("the file uses the old redb file format {v}"),
        },
        redb::Error::RepairAborted => OpenError::Damaged {
            path,
            reason: "the file needs crash recovery, which was not allowed".into(),
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            OpenError::NotFound { path }
        }
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => OpenError::Damaged {
            path,
            reason: io.to_string(),
        },
        redb::Error::Io(source) => OpenError::Io { path, source },
        redb::Error::TableDoesNotExist(_) => OpenError::Meta {
            path,
            what: "table set (the file is a redb database but not a meshward store)",
        },
        other => OpenError::Storage {
            path,
            source: Box::new(other),
        },
    }
}

/// A redb `Builder` with the store's settings.
pub(crate) fn builder() -> Builder {
    let mut b = Database::builder();
    b.set_cache_size(format::CACHE_SIZE_BYTES);
    b
}

/// What [`read_meta`] finds.
pub(crate) struct Meta {
    pub genesis: Genesis,
    pub tip_height: u64,
    /// The tip's header hash; `None` before block 1.
    pub tip_hash: Option<Hash>,
}

/// Reads and checks the `meta` table.
pub(crate) fn read_meta(rtx: &ReadTransaction, path: &Path) -> Result<Meta, Fault> {
    let meta_err = |what| {
        Fault::Open(OpenError::Meta {
            path: path.to_path_buf(),
            what,
        })
    };
    let meta = rtx.open_table(META)?;
    let version = meta
        .get(META_FORMAT_VERSION)?
        .and_then(|v| read_u32(v.value()))
        .ok_or_else(|| meta_err("format version"))?;
    if version != FORMAT_VERSION {
        return Err(Fault::Open(OpenError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        }));
    }
    let genesis = meta
        .get(META_GENESIS)?
        .and_then(|v| Genesis::from_bytes(v.value()).ok())
        .ok_or_else(|| meta_err("genesis"))?;
    let tip_height = meta
        .get(META_TIP_HEIGHT)?
        .and_then(|v| read_u64(v.value()))
        .ok_or_else(|| meta_err("tip height"))?;
    let tip_hash = match meta.get(META_TIP_HASH)? {
        Some(v) => Some(
            <[u8; 32]>::try_from(v.value())
                .map(Hash)
                .map_err(|_| meta_err("tip hash"))?,
        ),
        None if tip_height == 0 => None,
        None => return Err(meta_err("tip hash")),
    };
    Ok(Meta {
        genesis,
        tip_height,
        tip_hash,
    })
}

/// The validator sets the chain has had, as recorded.
pub(crate) fn read_sets(rtx: &ReadTransaction, path: &Path) -> Result<SetHistory, Fault> {
    let table = rtx.open_table(VALIDATOR_SETS)?;
    let mut sets = SetHistory::default();
    for row in table.range::<u64>(..)? {
        let (k, v) = row?;
        let set = ValidatorSet::from_bytes(v.value()).map_err(|_| {
            Fault::Open(OpenError::Meta {
                path: path.to_path_buf(),
                what: "validator set history",
            })
        })?;
        sets.push(k.value(), set);
    }
    if sets.at(1).is_none() {
        return Err(Fault::Open(OpenError::Meta {
            path: path.to_path_buf(),
            what: "validator set history (no set for height 1)",
        }));
    }
    Ok(sets)
}

/// Every stored state record, by slot.
pub(crate) fn read_state_records(rtx: &ReadTransaction) -> Result<Vec<(u64, Vec<u8>)>, Fault> {
    let table = rtx.open_table(STATE)?;
    let mut out = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
    for row in table.range::<u64>(..)? {
        let (k, v) = row?;
        out.push((k.value(), v.value().to_vec()));
    }
    Ok(out)
}

/// Meshward's embedded store: the certified chain, the ledger state after it, and the hash and
/// anchor indexes, in one redb file. (Mailboxes live in their own file: [`crate::MailboxStore`].)
///
/// The store owns the in-memory [`State`] and keeps it equal to the state on disk: a block
/// changes memory only once its rows are committed, and a failed write reloads the state from
/// disk. Every write takes `&mut self`: one owner writes a `Store` (in a node, consensus).
pub struct Store {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    genesis: Genesis,
    genesis_hash: Hash,
    state: State,
    /// The validator sets in force, by height (a copy of the `validator_sets` table).
    sets: SetHistory,
    /// Where the block log ends: the next row starts here.
    log_end: u64,
    tip: Option<(u64, Hash)>,
    /// Set when the state could not be reloaded after a failed write: memory may be ahead of
    /// disk, so block writes are refused until the store is reopened.
    poisoned: Option<String>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("chain_id", &self.genesis.chain_id)
            .field("tip", &self.tip)
            .finish_non_exhaustive()
    }
}

/// The log's last segment must end exactly at `log_end` (the tip row's end): a segment past it,
/// or a last segment of another length, is damage.
fn check_log_end(rtx: &ReadTransaction, tip: u64, log_end: u64) -> Result<(), Fault> {
    let seg_bytes = BLOCK_SEGMENT_BYTES as u64;
    let last = rtx
        .open_table(BLOCK_LOG)?
        .last()?
        .map(|(k, v)| (k.value(), v.value().len()));
    let fine = match last {
        None => log_end == 0,
        Some((seg, len)) => {
            log_end > 0
                && seg == (log_end - 1) / seg_bytes
                && seg * seg_bytes + len as u64 == log_end
        }
    };
    if fine {
        Ok(())
    } else {
        Err(Fault::corrupt(tip, Corruption::Chunks))
    }
}

/// What a reload after a failed write reads back: the state, the set history and the tip.
type Reloaded = (State, SetHistory, Option<(u64, Hash)>, u64);

/// What [`Store::open`] reads and checks.
struct Loaded {
    genesis: Genesis,
    state: State,
    sets: SetHistory,
    tip: Option<(u64, Hash)>,
    log_end: u64,
}

/// Where a store file is written while it is being created, so that a crash never leaves a
/// half-created store at the real path.
fn creating_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    path.with_file_name(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Creates a store at `path` (by convention `<data dir>/meshward.redb`) for the chain of
    /// `genesis`, and opens it. Refuses if the file exists.
    ///
    /// The file is built under `<path>.creating` and renamed into place once the genesis and the
    /// genesis state records are committed, so a crash leaves either no store or a whole one.
    pub fn create(path: impl AsRef<Path>, genesis: &Genesis) -> Result<Store, OpenError> {
        let path = path.as_ref();
        if path.try_exists().map_err(io_err(path))? {
            return Err(OpenError::Exists {
                path: path.to_path_buf(),
            });
        }
        let dir = crate::error::dir_of(path);
        fs::metadata(dir).map_err(io_err(dir))?;
        let tmp = creating_path(path);
        // A leftover from a create that was interrupted: it was never a store.
        if tmp.try_exists().map_err(io_err(&tmp))? {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        {
            let db = builder()
                .create(&tmp)
                .map_err(|e| storage_open_error(&tmp, e.into()))?;
            let mut state = genesis.state();
            let flushed = state.flush();
            let write = || -> Result<(), redb::Error> {
                let wtx = db.begin_write()?;
                {
                    let mut meta = wtx.open_table(META)?;
                    meta.insert(META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes().as_slice())?;
                    meta.insert(META_GENESIS, genesis.to_bytes().as_slice())?;
                    meta.insert(META_TIP_HEIGHT, u64_bytes(0).as_slice())?;
                    let mut st = wtx.open_table(STATE)?;
                    for (slot, bytes) in &flushed.records {
                        st.insert(*slot, bytes.as_slice())?;
                    }
                    let mut sets = wtx.open_table(VALIDATOR_SETS)?;
                    sets.insert(1u64, genesis.validators.to_bytes().as_slice())?;
                    // Create every table now, so that readers never meet a missing one.
                    wtx.open_table(BLOCK_LOG)?;
                    wtx.open_table(BLOCK_AT)?;
                    wtx.open_table(CERTS)?;
                    wtx.open_table(BLOCK_HASH_IDX)?;
                    wtx.open_table(COMMITMENT_IDX)?;
                    wtx.open_table(HANDOFFS)?;
                    wtx.open_table(KEY_CHANGES)?;
                    wtx.open_table(TX_IDX)?;
                }
                wtx.commit()?;
                Ok(())
            };
            write().map_err(|e| storage_open_error(&tmp, e))?;
            db.close().map_err(|e| storage_open_error(&tmp, e.into()))?;
        }
        // Checked again just before the rename: two creators racing is a usage error, and this
        // narrows it to a window of microseconds.
        if path.try_exists().map_err(io_err(path))? {
            let _ = fs::remove_file(&tmp);
            return Err(OpenError::Exists {
                path: path.to_path_buf(),
            });
        }
        fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_dir(dir).map_err(io_err(dir))?;
        info!(path = %path.display(), chain_id = %genesis.chain_id, "store created");
        Store::open(path)
    }

    /// Opens the store at `path` and checks it, in time that does not grow with the chain: the
    /// meta rows, the state records (they give the tip's state root), the validator-set
    /// history, and the tip block (it decodes, is at the recorded height, hashes to the
    /// recorded tip hash, carries a certificate and has the state's root). Any failure is an
    /// [`OpenError`], never a panic.
    ///
    /// redb's own page checksums are verified too, so a file damaged outside redb is reported
    /// as [`OpenError::Damaged`]. The hash links below the tip are left to
    /// [`Store::check_links`] (a node runs it in the background) and everything else to
    /// [`crate::verify_chain`], which replays the chain.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        if !path.try_exists().map_err(io_err(&path))? {
            return Err(OpenError::NotFound { path });
        }
        let mut b = builder();
        b.set_check_integrity_on_open(true);
        let db = b
            .open(&path)
            .map_err(|e| storage_open_error(&path, e.into()))?;
        Self::from_db(db, path)
    }

    /// Opens the store in the file `backend` reads and writes, with the checks of
    /// [`Store::open`]; `path` names it in errors. For fault injection: a backend that fails a
    /// write or a sync, or reports the disk full, shows what a failing disk does to the store
    /// (`tests/faults.rs`).
    pub fn open_with_backend(
        path: impl AsRef<Path>,
        backend: impl redb::StorageBackend,
    ) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let mut b = builder();
        b.set_check_integrity_on_open(true);
        let db = b
            .create_with_backend(backend)
            .map_err(|e| storage_open_error(&path, e.into()))?;
        Self::from_db(db, path)
    }

    fn from_db(db: Database, path: PathBuf) -> Result<Store, OpenError> {
        crate::upgrade::v2_to_v3(&db, &path).map_err(|f| f.into_open(&path))?;
        let Loaded {
            genesis,
            state,
            sets,
            tip,
            log_end,
        } = Self::load(&db, &path).map_err(|f| f.into_open(&path))?;
        let genesis_hash = genesis.hash();
        debug!(
            path = %path.display(),
            chain_id = %genesis.chain_id,
            height = tip.map_or(0, |t| t.0),
            "store opened"
        );
        Ok(Store {
            db,
            path,
            genesis,
            genesis_hash,
            state,
            sets,
            tip,
            log_end,
            poisoned: None,
        })
    }

    fn load(db: &Database, path: &Path) -> Result<Loaded, Fault> {
        let rtx = db.begin_read()?;
        let meta = read_meta(&rtx, path)?;
        let records = read_state_records(&rtx)?;
        let mut state = State::from_records(records).map_err(|source| {
            Fault::Open(OpenError::State {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let sets = read_sets(&rtx, path)?;
        let tip = meta.tip_height;
        // Nothing stored above the tip, and the log ends where the tip's row does.
        let last = rtx.open_table(BLOCK_AT)?.last()?.map(|(k, _)| k.value());
        if let Some(h) = last.filter(|h| *h > tip) {
            return Err(Fault::corrupt(h, Corruption::BeyondTip { tip }));
        }
        let log_end = match crate::rows::locate(&rtx, tip)? {
            Some((offset, len)) => offset + u64::from(len),
            None if tip == 0 => 0,
            None => return Err(Fault::corrupt(tip, Corruption::Missing)),
        };
        check_log_end(&rtx, tip, log_end)?;
        let want_root = if tip == 0 {
            meta.genesis.state().root()
        } else {
            let env = Env {
                chain_id: &meta.genesis.chain_id,
                accounts: &state,
                sets: &sets,
            };
            let Some(block) = read_plain_block(&rtx, tip, &env)? else {
                return Err(Fault::corrupt(tip, Corruption::Missing));
            };
            if block.header.height != tip {
                return Err(Fault::corrupt(
                    tip,
                    Corruption::WrongHeight {
                        found: block.header.height,
                    },
                ));
            }
            let hash = block.header.hash();
            if Some(hash) != meta.tip_hash {
                return Err(Fault::corrupt(tip, Corruption::TipHash));
            }
            if tip == 1 && block.header.prev_hash != meta.genesis.hash() {
                return Err(Fault::corrupt(1, Corruption::BrokenLink { prev: 0 }));
            }
            read_cert(&rtx, tip, hash, &env)?;
            block.header.state_root
        };
        if state.root() != want_root {
            return Err(Fault::corrupt(tip, Corruption::StateRoot));
        }
        Ok(Loaded {
            genesis: meta.genesis,
            state,
            sets,
            tip: meta.tip_hash.map(|h| (tip, h)),
            log_end,
        })
    }

    /// Checks the hash links of blocks `from..=to` (clamped to the chain): each block's row
    /// decodes far enough to hash its header, sits at its height, and links to the block
    /// below it (block 1 to the genesis). Reads only each row's head, so a node can walk a
    /// long chain in the background after [`Store::open`], which checks the tip only. Returns
    /// the last height checked.
    pub fn check_links(&self, from: u64, to: u64) -> Result<u64, ReadError> {
        let to = to.min(self.tip.map_or(0, |t| t.0));
        let from = from.max(1);
        if from > to {
            return Ok(to);
        }
        (|| -> Result<u64, Fault> {
            let rtx = self.db.begin_read()?;
            let env = self.env();
            let mut prev = if from == 1 {
                self.genesis_hash
            } else {
                read_head(&rtx, from - 1, &env)?
                    .ok_or(Fault::corrupt(from - 1, Corruption::Missing))?
                    .header
                    .hash()
            };
            for h in from..=to {
                let head =
                    read_head(&rtx, h, &env)?.ok_or(Fault::corrupt(h, Corruption::Missing))?;
                if head.header.height != h {
                    return Err(Fault::corrupt(
                        h,
                        Corruption::WrongHeight {
                            found: head.header.height,
                        },
                    ));
                }
                if head.header.prev_hash != prev {
                    return Err(Fault::corrupt(h, Corruption::BrokenLink { prev: h - 1 }));
                }
                prev = head.header.hash();
            }
            Ok(to)
        })()
        .map_err(|f| f.into_read(&self.path))
    }

    /// What decoding this store's rows needs.
    pub(crate) fn env(&self) -> Env<'_> {
        Env {
            chain_id: &self.genesis.chain_id,
            accounts: &self.state,
            sets: &self.sets,
        }
    }

    /// Reloads the tip and state from disk, so memory never runs ahead of disk after a failed
    /// write. If even that fails, the store refuses further block writes.
    fn reload(&mut self) -> Result<(), ApplyError> {
        let result = (|| -> Result<Reloaded, Fault> {
            let rtx = self.db.begin_read()?;
            let meta = read_meta(&rtx, &self.path)?;
            let records = read_state_records(&rtx)?;
            let state = State::from_records(records).map_err(|source| {
                Fault::Open(OpenError::State {
                    path: self.path.clone(),
                    source,
                })
            })?;
            let sets = read_sets(&rtx, &self.path)?;
            let log_end =
                crate::rows::locate(&rtx, meta.tip_height)?.map_or(0, |(o, l)| o + u64::from(l));
            Ok((
                state,
                sets,
                meta.tip_hash.map(|h| (meta.tip_height, h)),
                log_end,
            ))
        })();
        match result {
            Ok((state, sets, tip, log_end)) => {
                self.state = state;
                self.sets = sets;
                self.tip = tip;
                self.log_end = log_end;
                Ok(())
            }
            Err(f) => {
                let reason = format!(
                    "the ledger state could not be reloaded after a failed write: {}",
                    f.into_open(&self.path)
                );
                warn!(path = %self.path.display(), %reason, "store poisoned");
                self.poisoned = Some(reason.clone());
                Err(ApplyError::Poisoned {
                    path: self.path.clone(),
                    reason,
                })
            }
        }
    }

    fn check_usable(&self) -> Result<(), ApplyError> {
        match &self.poisoned {
            None => Ok(()),
            Some(reason) => Err(ApplyError::Poisoned {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// The height the next block must have.
    pub fn next_height(&self) -> u64 {
        self.tip.map_or(1, |(h, _)| h + 1)
    }

    /// The hash the next block must link to: the tip's, or the genesis hash before block 1.
    pub fn tip_hash(&self) -> Hash {
        self.tip.map_or(self.genesis_hash, |(_, h)| h)
    }

    /// Checks a block certified by others (sync, replay) and stores it: links, certificate
    /// (against the current validator set), body, every transaction (signatures verified in a
    /// batch) and the resulting state root. The block, its index rows, the changed state
    /// records and the new tip commit in one write transaction.
    ///
    /// On any error nothing changes, on disk or in memory.
    pub fn apply_block(&mut self, cb: &CertifiedBlock) -> Result<(), ApplyError> {
        self.check_usable()?;
        let height = self.next_height();
        let prev = self.tip_hash();
        match chain::apply_certified(&mut self.state, &prev, height, cb, true) {
            Ok(flushed) => self.commit(cb, &flushed.records),
            Err(source) => {
                // Only a state-root mismatch comes after the transactions ran (see
                // `apply_certified`): the state in memory is then the block's, not the chain's.
                if source == ChainError::StateRoot {
                    self.reload()?;
                }
                debug!(height, error = %source, "block rejected");
                Err(ApplyError::Rejected { height, source })
            }
        }
    }

    /// Makes the next block from `txs` on the store's own state and stores it: what a
    /// single-process chain builder (the synthetic fleet, tests, a one-validator devnet) does.
    ///
    /// `certify` signs the header: it returns the commit certificate, which is checked against
    /// the validator set before the block. Returns the stored block. On any error (a rejected
    /// transaction, a bad certificate, a failed write) nothing changes, on disk or in memory.
    pub fn build_block(
        &mut self,
        time_ms: u64,
        proposer: PublicKey,
        txs: Vec<Tx>,
        last_commit: Option<CommitCertificate>,
        certify: impl FnOnce(&BlockHeader) -> CommitCertificate,
    ) -> Result<CertifiedBlock, ApplyError> {
        self.check_usable()?;
        let height = self.next_height();
        let prev = self.tip_hash();
        let validators = self.state.validators().clone();
        let (block, flushed) = chain::make_block(
            &mut self.state,
            prev,
            height,
            time_ms,
            proposer,
            txs,
            last_commit,
            true,
        )
        .map_err(|e| ApplyError::Rejected {
            height,
            source: ChainError::Rejected(e),
        })?;
        let certificate = certify(&block.header);
        if let Err(e) = certificate.verify(&block.header, &validators) {
            self.reload()?;
            return Err(ApplyError::Rejected {
                height,
                source: ChainError::Certificate(e),
            });
        }
        let cb = CertifiedBlock { block, certificate };
        self.commit(&cb, &flushed.records)?;
        Ok(cb)
    }

    /// Stores a decided block whose transactions the caller already executed with
    /// [`chain::build_proposal`], [`chain::check_proposal`] or [`chain::check_proposal_known`] on
    /// [`Store::state`]: what a validator does when consensus decides a block it has checked,
    /// without running the transactions again.
    ///
    /// The store checks the block as [`Store::apply_block`] does (link, height, validator set,
    /// certificate, body), applies `delta`, and checks that the result has the header's state
    /// root, so a delta computed on another state or for another block is refused. On any error
    /// nothing changes, on disk or in memory.
    pub fn commit_decided(&mut self, cb: &CertifiedBlock, delta: Delta) -> Result<(), ApplyError> {
        self.check_usable()?;
        let height = self.next_height();
        let prev = self.tip_hash();
        let h = &cb.block.header;
        let reject = |source| ApplyError::Rejected { height, source };
        if h.chain_id != self.genesis.chain_id {
            return Err(reject(ChainError::WrongChain {
                expected: self.genesis.chain_id.clone(),
                found: h.chain_id.clone(),
            }));
        }
        if h.height != height {
            return Err(reject(ChainError::WrongHeight {
                expected: height,
                found: h.height,
            }));
        }
        if h.prev_hash != prev {
            return Err(reject(ChainError::BrokenLink));
        }
        if h.validator_set_hash != self.state.validators().hash() {
            return Err(reject(ChainError::WrongValidatorSet));
        }
        cb.certificate
            .verify_with(h, self.state.validators(), |k| self.sets.key(k))
            .map_err(|e| reject(ChainError::Certificate(e)))?;
        cb.block
            .check_body()
            .map_err(|e| reject(ChainError::Body(e)))?;
        self.state.apply_delta(delta);
        let flushed = self.state.flush();
        if flushed.root != h.state_root {
            self.reload()?;
            debug!(
                height,
                "decided block rejected: delta does not give its state root"
            );
            return Err(reject(ChainError::StateRoot));
        }
        self.commit(cb, &flushed.records)
    }

    /// The commit shared by every write path; `self.state` already holds the block's state, and
    /// `records` are the state records the block changed (from [`State::flush`]).
    fn commit(
        &mut self,
        cb: &CertifiedBlock,
        records: &[(u64, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        let block = &cb.block;
        let height = block.header.height;
        let hash = block.header.hash();
        // A block that changed the validator set hands off to the new set at the next height.
        let new_set = (self.sets.current() != Some(self.state.validators()))
            .then(|| (height + 1, self.state.validators().clone()));
        let (row, cert) = {
            let env = self.env();
            let set = env.sets.at(height).map(|(s, _)| s);
            (
                compact::encode_block(block, &env),
                compact::encode_cert(&cb.certificate, set),
            )
        };
        debug_assert_eq!(
            compact::decode_block(&row, height, &self.env()).as_ref(),
            Ok(block),
            "a block row decodes to its block"
        );
        let row_len = row.len() as u64;
        let write = BlockWrite {
            height,
            hash,
            block,
            log_start: self.log_end,
            row,
            cert,
            records,
            new_set: new_set.as_ref().map(|(h, s)| (*h, s)),
        };
        match write_block(&self.db, &write) {
            Ok(()) => {
                if let Some((from, set)) = new_set {
                    self.sets.push(from, set);
                }
                self.tip = Some((height, hash));
                self.log_end += row_len;
                debug!(height, txs = block.txs.len(), "block stored");
                Ok(())
            }
            Err(e) => {
                // The caller reports it (once per run of failures: a full disk fails every try).
                debug!(height, error = %e, path = %self.path.display(), "block write failed");
                self.reload()?;
                Err(ApplyError::Storage {
                    path: self.path.clone(),
                    height,
                    source: Box::new(e),
                })
            }
        }
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chain's genesis, as stored in `meta`.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The genesis hash: block 1's `prev_hash`.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The ledger state after the last stored block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The validator set that certifies block `height` (the genesis set from height 1, each
    /// later set from the height after the block that changed it).
    pub fn validator_set_at(&self, height: u64) -> Option<ValidatorSet> {
        self.sets.at(height).map(|(s, _)| s.clone())
    }

    /// Every validator set the chain has had, in order: (first height it certifies, set). The
    /// first is the genesis set, from height 1.
    pub fn validator_sets(&self) -> Vec<(u64, ValidatorSet)> {
        self.sets.entries().map(|(h, s)| (h, s.clone())).collect()
    }

    /// The last stored block's height and header hash; `None` before block 1.
    pub fn tip(&self) -> Option<(u64, Hash)> {
        self.tip
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
