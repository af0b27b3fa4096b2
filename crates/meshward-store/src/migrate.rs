//! `meshward store migrate`: replays a format-1 chain store into a new file of the current
//! format, or upgrades a format-2 store in place (see [`crate::format`]).
//!
//! Format 1 kept every block in its canonical encoding (table `blocks`, `u64` height -> bytes)
//! and mailboxes in the chain file. Migrating reads those blocks in order and stores each with
//! [`Store::apply_block`] into a new store built beside the old one (`meshward.redb.migrating`),
//! so every block is checked again on the way (links, certificates, signatures, state roots);
//! copies any mailbox envelopes into `mailbox.redb`; then keeps the old file as
//! `meshward.redb.v1` and renames the new one into place. A crash before the last rename
//! leaves the old file where it was and a `.migrating` file that the next run replaces.

use std::fs;
use std::path::{Path, PathBuf};

use meshward_core::block::CertifiedBlock;
use meshward_core::codec::{Decode, DecodeError};
use meshward_core::genesis::Genesis;
use redb::{ReadableDatabase, TableDefinition};
use tracing::info;

use crate::error::{ApplyError, MailboxError, OpenError};
use crate::format::{
    read_u32, read_u64, FILE_NAME, MAILBOX_FILE_NAME, META, META_FORMAT_VERSION, META_GENESIS,
    META_TIP_HEIGHT,
};
use crate::{MailboxStore, Store};

/// Format 1's block table: canonical certified blocks by height.
const V1_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Blocks replayed into the new store.
    pub blocks: u64,
    /// Mailbox envelopes copied into the mailbox file.
    pub envelopes: u64,
    /// Where the format-1 file now is (the store file itself after an in-place upgrade).
    pub old_file: PathBuf,
    /// A format-2 store upgraded in place (its `key_changes` index built) rather than replayed.
    pub in_place: bool,
}

/// Why a migration failed. The old file is never changed; a failed migration leaves it in
/// place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The data dir has no store, or it cannot be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The store is already of the current format: nothing to do.
    #[error("store at {} already has format version {found}: nothing to migrate", path.display())]
    NotOld {
        /// The store file.
        path: PathBuf,
        /// Its format version.
        found: u32,
    },
    /// The old file cannot be read as a format-1 store.
    #[error("cannot read the format-1 store at {}: {reason}", path.display())]
    Read {
        /// The store file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A stored block does not decode or does not replay: the old file is damaged.
    #[error("block {height} of {} cannot be migrated: {reason} (the old file is unchanged; run meshward store verify with the release that wrote it)", path.display())]
    Block {
        /// The store file.
        path: PathBuf,
        /// The height of the block.
        height: u64,
        /// Why.
        reason: String,
    },
    /// Copying the mailboxes failed.
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    /// A backup from an earlier migration is in the way.
    #[error("{} already exists: an earlier migration's backup; move it away first", path.display())]
    BackupExists {
        /// The backup file.
        path: PathBuf,
    },
    /// A rename or sync of the data dir failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Migrates the format-1 store in `dir` (see the module doc).
pub fn migrate_v1(dir: &Path) -> Result<MigrateReport, MigrateError> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Err(OpenError::NotFound { path }.into());
    }
    // Format 2 differs only by an index: a writable open builds it in place.
    if read_version(&path) == Some(crate::format::FORMAT_VERSION_2) {
        let store = Store::open(&path)?;
        return Ok(MigrateReport {
            blocks: store.tip().map_or(0, |t| t.0),
            envelopes: 0,
            old_file: path,
            in_place: true,
        });
    }
    let mut backup_name = FILE_NAME.to_string();
    backup_name.push_str(".v1");
    let backup = dir.join(backup_name);
    if backup.exists() {
        return Err(MigrateError::BackupExists { path: backup });
    }
    // Read-only, so the old file stays byte for byte as it was; only a file that needs crash
    // recovery is opened for writing, so that redb can recover it first.
    let report = match crate::store::builder().open_read_only(&path) {
        Ok(old) => migrate_from(&old, dir, &path, &backup)?,
        Err(redb::DatabaseError::RepairAborted) => {
            let old = crate::store::builder()
                .open(&path)
                .map_err(|e| read_err(&path, e))?;
            migrate_from(&old, dir, &path, &backup)?
        }
        Err(e) => return Err(read_err(&path, e)),
    };
    Ok(report)
}

/// The format version in the store at `path`, if it can be read.
fn read_version(path: &Path) -> Option<u32> {
    let db = crate::store::builder().open_read_only(path).ok()?;
    let rtx = db.begin_read().ok()?;
    let meta = rtx.open_table(META).ok()?;
    let v = meta.get(META_FORMAT_VERSION).ok()??;
    read_u32(v.value())
}

fn migrate_from(
    old: &impl ReadableDatabase,
    dir: &Path,
    path: &Path,
    backup: &Path,
) -> Result<MigrateReport, MigrateError> {
    let path = path.to_path_buf();
    let rtx = old.begin_read().map_err(|e| read_err(&path, e))?;
    let meta = rtx.open_table(META).map_err(|e| read_err(&path, e))?;
    let get = |key: &str| -> Result<Option<Vec<u8>>, MigrateError> {
        Ok(meta
            .get(key)
            .map_err(|e| read_err(&path, e))?
            .map(|v| v.value().to_vec()))
    };
    let version = get(META_FORMAT_VERSION)?
        .and_then(|v| read_u32(&v))
        .ok_or_else(|| read_err(&path, "no format version"))?;
    if version != 1 {
        return Err(MigrateError::NotOld {
            path,
            found: version,
        });
    }
    let genesis = get(META_GENESIS)?
        .and_then(|v| Genesis::from_bytes(&v).ok())
        .ok_or_else(|| read_err(&path, "no genesis"))?;
    let tip = get(META_TIP_HEIGHT)?
        .and_then(|v| read_u64(&v))
        .ok_or_else(|| read_err(&path, "no tip height"))?;
    let blocks = rtx.open_table(V1_BLOCKS).map_err(|e| read_err(&path, e))?;

    let mut new_name = FILE_NAME.to_string();
    new_name.push_str(".migrating");
    let new_path = dir.join(new_name);
    if new_path.exists() {
        fs::remove_file(&new_path).map_err(|source| MigrateError::Io {
            what: "remove the leftover",
            path: new_path.clone(),
            source,
        })?;
    }
    let mut store = Store::create(&new_path, &genesis)?;
    for height in 1..=tip {
        let bad = |reason: String| MigrateError::Block {
            path: path.clone(),
            height,
            reason,
        };
        let row = blocks
            .get(height)
            .map_err(|e| read_err(&path, e))?
            .ok_or_else(|| bad("the block is missing".into()))?;
        let cb = CertifiedBlock::decode_bytes(row.value())
            .map_err(|e: DecodeError| bad(e.to_string()))?;
        store
            .apply_block(&cb)
            .map_err(|e: ApplyError| bad(e.to_string()))?;
    }
    drop(store);
    let mailbox_path = dir.join(MAILBOX_FILE_NAME);
    let envelopes = MailboxStore::open(&mailbox_path)?.adopt_legacy(old, &path)?;
    drop(blocks);
    drop(meta);
    drop(rtx);
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|source| MigrateError::Io {
            what: "rename",
            path: from.to_path_buf(),
            source,
        })
    };
    // The old database must be closed before its file moves: the caller drops it after this
    // returns, and renaming an open file is fine on Unix (the handle follows the inode).
    rename(&path, backup)?;
    rename(&new_path, &path)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| MigrateError::Io {
            what: "sync",
            path: dir.to_path_buf(),
            source,
        })?;
    info!(blocks = tip, envelopes, path = %path.display(), "store migrated to the current format");
    Ok(MigrateReport {
        blocks: tip,
        envelopes,
        old_file: backup.to_path_buf(),
        in_place: false,
    })
}
