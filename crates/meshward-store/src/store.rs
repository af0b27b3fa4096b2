//! The [`Store`]: one redb file holding the chain, the state after it, and the indexes.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use meshward_core::block::{Block, BlockHeader, CertifiedBlock, CommitCertificate};
use meshward_core::chain::{self, ChainError};
use meshward_core::codec::{Decode, Encode};
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::state::{Delta, State, StateView};
use meshward_core::tx::{Tx, TxBody};
use redb::{Builder, Database, ReadTransaction, ReadableDatabase, ReadableTableMetadata};
use tracing::{debug, info, warn};

use crate::error::{ApplyError, Corruption, OpenError, ReadError};
use crate::format::{
    self, read_u32, read_u64, u64_bytes, BLOCKS, BLOCK_HASH, COMMITMENTS, FORMAT_VERSION, HANDOFFS,
    MAILBOX, MAILBOX_LOAD, META, META_FORMAT_VERSION, META_GENESIS, META_MAILBOX_BYTES,
    META_MAILBOX_ENVELOPES, META_MAILBOX_NEXT_SEQ, META_TIP_HEIGHT, STATE, TXS,
};

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
    Ok(Meta {
        genesis,
        tip_height,
    })
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

/// The structural checks of one stored block at `height` whose predecessor hashes to `prev`:
/// it decodes, says its height, links, carries a certificate for itself, and its body matches its
/// header. Signatures and transactions are left to [`crate::verify_chain`].
pub(crate) fn check_stored_block(
    height: u64,
    bytes: &[u8],
    prev: &Hash,
) -> Result<(CertifiedBlock, Hash), Corruption> {
    let cb = CertifiedBlock::decode_bytes(bytes).map_err(Corruption::Decode)?;
    let header = &cb.block.header;
    if header.height != height {
        return Err(Corruption::WrongHeight {
            found: header.height,
        });
    }
    if header.prev_hash != *prev {
        return Err(Corruption::BrokenLink { prev: height - 1 });
    }
    let hash = header.hash();
    if cb.certificate.height != height || cb.certificate.block_hash != hash {
        return Err(Corruption::CertificateMismatch);
    }
    cb.block.check_body().map_err(Corruption::Body)?;
    Ok((cb, hash))
}

/// The tip as recorded on disk: its height and header hash, and the header's state root.
struct Tip {
    height: u64,
    hash: Hash,
    state_root: Hash,
}

/// Checks every stored block against its neighbours and the hash index.
fn check_chain(rtx: &ReadTransaction, genesis_hash: Hash, tip: u64) -> Result<Option<Tip>, Fault> {
    let blocks = rtx.open_table(BLOCKS)?;
    let index = rtx.open_table(BLOCK_HASH)?;
    let mut prev = genesis_hash;
    let mut last = None;
    let mut expected = 1u64;
    for row in blocks.range::<u64>(..)? {
        let (k, v) = row?;
        let height = k.value();
        if height > tip {
            return Err(Fault::corrupt(height, Corruption::BeyondTip { tip }));
        }
        if height != expected {
            return Err(Fault::corrupt(expected, Corruption::Missing));
        }
        let (cb, hash) =
            check_stored_block(height, v.value(), &prev).map_err(|r| Fault::corrupt(height, r))?;
        if index.get(hash.as_bytes())?.map(|g| g.value()) != Some(height) {
            return Err(Fault::corrupt(height, Corruption::HashIndex));
        }
        prev = hash;
        last = Some(Tip {
            height,
            hash,
            state_root: cb.block.header.state_root,
        });
        expected += 1;
    }
    check_chain_end(expected, tip, index.len()?)?;
    Ok(last)
}

/// After walking the blocks: the walk reached the tip (`expected` is the height after the last
/// block seen), and the hash index has exactly one row per block.
pub(crate) fn check_chain_end(expected: u64, tip: u64, hash_index_rows: u64) -> Result<(), Fault> {
    if expected - 1 != tip {
        return Err(Fault::corrupt(expected, Corruption::Missing));
    }
    if hash_index_rows != tip {
        return Err(Fault::corrupt(
            tip,
            Corruption::HashIndexRows {
                rows: hash_index_rows,
                blocks: tip,
            },
        ));
    }
    Ok(())
}

/// The tip recorded on disk, without checking the chain (for reloads after a failed write).
fn read_tip(rtx: &ReadTransaction, tip_height: u64) -> Result<Option<(u64, Hash)>, Fault> {
    if tip_height == 0 {
        return Ok(None);
    }
    let blocks = rtx.open_table(BLOCKS)?;
    let bytes = blocks
        .get(tip_height)?
        .ok_or_else(|| Fault::corrupt(tip_height, Corruption::Missing))?;
    let cb = CertifiedBlock::decode_bytes(bytes.value())
        .map_err(|e| Fault::corrupt(tip_height, Corruption::Decode(e)))?;
    Ok(Some((tip_height, cb.block.header.hash())))
}

/// Writes one block and everything that goes with it in one write transaction: the block row,
/// its hash index row, its commitment and handoff index rows, the state records it changed and
/// the new tip. A crash at any point leaves either all of it or none of it on disk.
fn write_block(
    db: &Database,
    height: u64,
    hash: &Hash,
    block: &Block,
    encoded: &[u8],
    records: &[(u64, Vec<u8>)],
) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    {
        let mut blocks = wtx.open_table(BLOCKS)?;
        blocks.insert(height, encoded)?;
        let mut index = wtx.open_table(BLOCK_HASH)?;
        index.insert(hash.as_bytes(), height)?;
        let mut commitments = wtx.open_table(COMMITMENTS)?;
        let mut handoffs = wtx.open_table(HANDOFFS)?;
        let mut txs = wtx.open_table(TXS)?;
        for (i, tx) in block.txs.iter().enumerate() {
            let i = u32::try_from(i).expect("a block holds at most MAX_BLOCK_TXS transactions");
            txs.insert(tx.id().as_bytes(), (height, i))?;
            match &tx.body {
                TxBody::Anchor(a) => {
                    // The first anchor of a commitment keeps the row: put it back if there was one.
                    let old = commitments
                        .insert(a.commitment.as_bytes(), (height, i))?
                        .map(|g| g.value());
                    if let Some(old) = old {
                        commitments.insert(a.commitment.as_bytes(), old)?;
                    }
                }
                TxBody::ValidatorSetChange(_) => {
                    handoffs.insert((height, i), ())?;
                }
                _ => {}
            }
        }
        let mut state = wtx.open_table(STATE)?;
        for (slot, bytes) in records {
            state.insert(*slot, bytes.as_slice())?;
        }
        let mut meta = wtx.open_table(META)?;
        meta.insert(META_TIP_HEIGHT, u64_bytes(height).as_slice())?;
    }
    wtx.commit()?;
    Ok(())
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

/// What [`Store::open`] reads and checks.
struct Loaded {
    genesis: Genesis,
    state: State,
    tip: Option<(u64, Hash)>,
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
                    meta.insert(META_MAILBOX_NEXT_SEQ, u64_bytes(1).as_slice())?;
                    meta.insert(META_MAILBOX_ENVELOPES, u64_bytes(0).as_slice())?;
                    meta.insert(META_MAILBOX_BYTES, u64_bytes(0).as_slice())?;
                    let mut st = wtx.open_table(STATE)?;
                    for (slot, bytes) in &flushed.records {
                        st.insert(*slot, bytes.as_slice())?;
                    }
                    // Create every table now, so that readers never meet a missing one.
                    wtx.open_table(BLOCKS)?;
                    wtx.open_table(BLOCK_HASH)?;
                    wtx.open_table(COMMITMENTS)?;
                    wtx.open_table(HANDOFFS)?;
                    wtx.open_table(TXS)?;
                    wtx.open_table(MAILBOX)?;
                    wtx.open_table(MAILBOX_LOAD)?;
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

    /// Opens the store at `path` and checks it: every block decodes, sits at its height, links to
    /// the one before it (block 1 to the genesis), carries a certificate for its own header hash
    /// and a body that matches its header; the hash index agrees; and the stored state records
    /// give the tip header's state root. Any failure is an [`OpenError`], never a panic.
    ///
    /// redb's own page checksums are verified too, so a file damaged outside redb is reported
    /// as [`OpenError::Damaged`]. Signatures and transaction replay are left to
    /// [`crate::verify_chain`], which takes much longer.
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
        let Loaded {
            genesis,
            state,
            tip,
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
            tip,
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
        let genesis_hash = meta.genesis.hash();
        let tip = check_chain(&rtx, genesis_hash, meta.tip_height)?;
        let want_root = match &tip {
            Some(t) => t.state_root,
            None => meta.genesis.state().root(),
        };
        if state.root() != want_root {
            return Err(Fault::corrupt(meta.tip_height, Corruption::StateRoot));
        }
        Ok(Loaded {
            genesis: meta.genesis,
            state,
            tip: tip.map(|t| (t.height, t.hash)),
        })
    }

    /// Reloads the tip and state from disk, so memory never runs ahead of disk after a failed
    /// write. If even that fails, the store refuses further block writes.
    fn reload(&mut self) -> Result<(), ApplyError> {
        let result = (|| -> Result<(State, Option<(u64, Hash)>), Fault> {
            let rtx = self.db.begin_read()?;
            let meta = read_meta(&rtx, &self.path)?;
            let records = read_state_records(&rtx)?;
            let state = State::from_records(records).map_err(|source| {
                Fault::Open(OpenError::State {
                    path: self.path.clone(),
                    source,
                })
            })?;
            Ok((state, read_tip(&rtx, meta.tip_height)?))
        })();
        match result {
            Ok((state, tip)) => {
                self.state = state;
                self.tip = tip;
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
            Ok(flushed) => {
                let encoded = cb.to_bytes();
                self.commit(height, &cb.block, &encoded, &flushed.records)
            }
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
        let encoded = cb.to_bytes();
        self.commit(height, &cb.block, &encoded, &flushed.records)?;
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
            .verify(h, self.state.validators())
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
        let encoded = cb.to_bytes();
        self.commit(height, &cb.block, &encoded, &flushed.records)
    }

    /// The commit shared by every write path; `self.state` already holds the block's state, and
    /// `records` are the state records the block changed (from [`State::flush`]).
    fn commit(
        &mut self,
        height: u64,
        block: &Block,
        encoded: &[u8],
        records: &[(u64, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        let hash = block.header.hash();
        match write_block(&self.db, height, &hash, block, encoded, records) {
            Ok(()) => {
                self.tip = Some((height, hash));
                debug!(height, txs = block.txs.len(), "block stored");
                Ok(())
            }
            Err(e) => {
                warn!(height, error = %e, path = %self.path.display(), "block write failed");
                self.reload()?;
                Err(ApplyError::Storage {
                    path: self.path.clone(),
                    height,
                    source: Box::new(e),
                })
            }
        }
    }

    /// The redb database, for this crate's own maintenance (moving legacy mailboxes out).
    pub(crate) fn database(&self) -> &Database {
        &self.db
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
