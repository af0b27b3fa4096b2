//! Mailboxes: envelopes waiting for devices that are offline, in a redb file of their own
//! (`mailbox.redb` in the data dir), apart from the chain.
//!
//! Why a file of its own: the chain store has one writer, consensus, and its file holds only
//! what consensus decided. Mailboxes are node-local and written by the gateway as devices
//! deposit and acknowledge; in one file, every mailbox write (an fsynced redb commit) would
//! queue with block commits behind redb's single writer, and a mailbox fault would sit beside
//! the chain. Format version 1 chain stores created their own (now unused) mailbox tables;
//! [`MailboxStore::adopt_legacy`] copies whatever such a store still holds into the mailbox
//! file when `meshward store migrate` replays it into format 2.
//!
//! Each envelope gets a sequence number from one file-wide counter, so a recipient's envelopes
//! come in increasing order and a number is never reused, even after acknowledgement. A device
//! lists what waits after the last number it has seen, then acknowledges up to the last one it
//! keeps. Every mailbox is bounded ([`MailboxLimits`]): what a peer asks us to hold is hostile
//! until the device fetches it.
//!
//! A [`MailboxStore`] may be shared between threads: reads are redb read transactions and run
//! concurrently; writes are serialised by redb. The node gives all writes to one thread.
//!
//! ```
//! use meshward_store::MailboxStore;
//! let dir = tempfile::tempdir()?;
//! let mb = MailboxStore::open(dir.path().join("mailbox.redb"))?;
//! let device = meshward_core::PublicKey([7; 32]);
//! let seq = mb.put(&device, b"sealed envelope")?;
//! assert_eq!(mb.list(&device, 0, 10)?, vec![(seq, b"sealed envelope".to_vec())]);
//! assert_eq!(mb.ack(&device, seq)?, 1);
//! assert_eq!(mb.stats()?.envelopes, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshward_core::ids::PublicKey;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use tracing::{debug, info};

use crate::error::MailboxError;
use crate::format::{
    read_u32, read_u64, u64_bytes, MAILBOX, MAILBOX_FORMAT_VERSION, MAILBOX_LOAD,
    MAILBOX_MAX_ENVELOPE_BYTES, MAILBOX_MAX_PER_RECIPIENT, MAILBOX_MAX_TOTAL_BYTES,
    MAILBOX_MAX_TOTAL_ENVELOPES, META, META_FORMAT_VERSION, META_MAILBOX_BYTES,
    META_MAILBOX_ENVELOPES, META_MAILBOX_NEXT_SEQ,
};

/// How much the mailboxes may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Most bytes in one envelope (default [`MAILBOX_MAX_ENVELOPE_BYTES`], 65 KiB).
    pub max_envelope_bytes: usize,
    /// Most envelopes waiting for one recipient (default [`MAILBOX_MAX_PER_RECIPIENT`], 1024).
    pub max_per_recipient: u32,
    /// Most envelopes waiting in the file (default [`MAILBOX_MAX_TOTAL_ENVELOPES`], 65 536).
    pub max_total_envelopes: u64,
    /// Most envelope bytes waiting in the file (default [`MAILBOX_MAX_TOTAL_BYTES`], 256 MiB).
    pub max_total_bytes: u64,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        MailboxLimits {
            max_envelope_bytes: MAILBOX_MAX_ENVELOPE_BYTES,
            max_per_recipient: MAILBOX_MAX_PER_RECIPIENT,
            max_total_envelopes: MAILBOX_MAX_TOTAL_ENVELOPES,
            max_total_bytes: MAILBOX_MAX_TOTAL_BYTES,
        }
    }
}

/// What waits in the mailboxes, over all recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStats {
    /// Envelopes waiting.
    pub envelopes: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A failure inside a mailbox operation, before the file's path is attached.
enum Fail {
    Db(redb::Error),
    Mailbox(MailboxError),
    /// A meta value or load row is missing or malformed.
    Corrupt(&'static str),
}

from_redb_errors!(Fail, Fail::Db);

impl From<MailboxError> for Fail {
    fn from(e: MailboxError) -> Fail {
        Fail::Mailbox(e)
    }
}

fn fail_to_error(path: &Path, f: Fail) -> MailboxError {
    match f {
        Fail::Db(e) => MailboxError::Storage {
            path: path.to_path_buf(),
            source: Box::new(e),
        },
        Fail::Mailbox(e) => e,
        Fail::Corrupt(what) => MailboxError::Corrupt {
            path: path.to_path_buf(),
            what,
        },
    }
}

/// The node's mailbox database: one redb file, see the module doc.
pub struct MailboxStore {
    db: Database,
    path: PathBuf,
    limits: MailboxLimits,
}

impl std::fmt::Debug for MailboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxStore")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<u64, Fail> {
    meta.get(key)?
        .and_then(|v| read_u64(v.value()))
        .ok_or(Fail::Corrupt(key))
}

impl MailboxStore {
    /// Opens the mailbox file at `path` (by convention `<data dir>/mailbox.redb`), creating it
    /// if it does not exist. A file of another format version is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<MailboxStore, MailboxError> {
        let path = path.as_ref().to_path_buf();
        let db = crate::store::builder()
            .create(&path)
            .map_err(|e| MailboxError::Open {
                path: path.clone(),
                source: Box::new(e.into()),
            })?;
        Self::from_db(db, path)
    }

    /// Opens the mailbox file `backend` reads and writes, as [`MailboxStore::open`] does;
    /// `path` names it in errors. For fault injection (`tests/faults.rs`).
    pub fn open_with_backend(
        path: impl AsRef<Path>,
        backend: impl redb::StorageBackend,
    ) -> Result<MailboxStore, MailboxError> {
        let path = path.as_ref().to_path_buf();
        let db = crate::store::builder()
            .create_with_backend(backend)
            .map_err(|e| MailboxError::Open {
                path: path.clone(),
                source: Box::new(e.into()),
            })?;
        Self::from_db(db, path)
    }

    fn from_db(db: redb::Database, path: PathBuf) -> Result<MailboxStore, MailboxError> {
        let mb = MailboxStore {
            db,
            path,
            limits: MailboxLimits::default(),
        };
        mb.init().map_err(|f| fail_to_error(&mb.path, f))?;
        Ok(mb)
    }

    /// Writes the format version and counters into a new file; checks them in an old one. One
    /// write transaction, so a crash leaves a file that is either new or initialised.
    fn init(&self) -> Result<(), Fail> {
        let wtx = self.db.begin_write()?;
        let fresh = {
            let mut meta = wtx.open_table(META)?;
            let version = meta.get(META_FORMAT_VERSION)?.map(|v| read_u32(v.value()));
            match version {
                None => {
                    meta.insert(
                        META_FORMAT_VERSION,
                        MAILBOX_FORMAT_VERSION.to_be_bytes().as_slice(),
                    )?;
                    meta.insert(META_MAILBOX_NEXT_SEQ, u64_bytes(1).as_slice())?;
                    meta.insert(META_MAILBOX_ENVELOPES, u64_bytes(0).as_slice())?;
                    meta.insert(META_MAILBOX_BYTES, u64_bytes(0).as_slice())?;
                    // Create both tables now, so that readers never meet a missing one.
                    wtx.open_table(MAILBOX)?;
                    wtx.open_table(MAILBOX_LOAD)?;
                    true
                }
                Some(Some(MAILBOX_FORMAT_VERSION)) => false,
                Some(Some(v)) => {
                    return Err(MailboxError::Version {
                        path: self.path.clone(),
                        found: v,
                        supported: MAILBOX_FORMAT_VERSION,
                    }
                    .into())
                }
                Some(None) => return Err(Fail::Corrupt(META_FORMAT_VERSION)),
            }
        };
        if fresh {
            wtx.commit()?;
            info!(path = %self.path.display(), "mailbox database created");
        } else {
            wtx.abort()?;
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the limits. Lowering them never drops envelopes already stored; it only refuses
    /// new ones until enough are acknowledged.
    pub fn set_limits(&mut self, limits: MailboxLimits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> MailboxLimits {
        self.limits
    }

    /// Stores an envelope for `recipient` and returns its sequence number. The caller checks
    /// that the recipient is an enrolled device; the store enforces the [`MailboxLimits`].
    pub fn put(&self, recipient: &PublicKey, envelope: &[u8]) -> Result<u64, MailboxError> {
        let seq = self
            .put_inner(recipient, envelope)
            .map_err(|f| fail_to_error(&self.path, f))?;
        debug!(recipient = %recipient, seq, bytes = envelope.len(), "mailbox envelope stored");
        Ok(seq)
    }

    fn put_inner(&self, recipient: &PublicKey, envelope: &[u8]) -> Result<u64, Fail> {
        let limits = self.limits;
        if envelope.len() > limits.max_envelope_bytes {
            return Err(MailboxError::TooLarge {
                len: envelope.len(),
                max: limits.max_envelope_bytes,
            }
            .into());
        }
        let len = envelope.len() as u64;
        let wtx = self.db.begin_write()?;
        let seq = {
            let mut load = wtx.open_table(MAILBOX_LOAD)?;
            let (count, bytes) = load.get(&recipient.0)?.map_or((0, 0), |g| g.value());
            if count >= limits.max_per_recipient {
                return Err(MailboxError::RecipientFull {
                    recipient: *recipient,
                    limit: limits.max_per_recipient,
                }
                .into());
            }
            let mut meta = wtx.open_table(META)?;
            let total = meta_u64(&meta, META_MAILBOX_ENVELOPES)?;
            let total_bytes = meta_u64(&meta, META_MAILBOX_BYTES)?;
            let seq = meta_u64(&meta, META_MAILBOX_NEXT_SEQ)?;
            if total >= limits.max_total_envelopes
                || total_bytes.saturating_add(len) > limits.max_total_bytes
            {
                return Err(MailboxError::StoreFull {
                    envelopes: total,
                    bytes: total_bytes,
                    max_envelopes: limits.max_total_envelopes,
                    max_bytes: limits.max_total_bytes,
                }
                .into());
            }
            wtx.open_table(MAILBOX)?
                .insert((&recipient.0, seq), envelope)?;
            load.insert(&recipient.0, (count + 1, bytes + len))?;
            for (key, v) in [
                (META_MAILBOX_NEXT_SEQ, seq + 1),
                (META_MAILBOX_ENVELOPES, total + 1),
                (META_MAILBOX_BYTES, total_bytes + len),
            ] {
                meta.insert(key, u64_bytes(v).as_slice())?;
            }
            seq
        };
        wtx.commit()?;
        Ok(seq)
    }

    /// Up to `max` envelopes waiting for `recipient` with a sequence number above `after_seq`,
    /// in order. `max` is capped at the per-recipient limit.
    pub fn list(
        &self,
        recipient: &PublicKey,
        after_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, MailboxError> {
        let max = max.min(self.limits.max_per_recipient as usize);
        if max == 0 || after_seq == u64::MAX {
            return Ok(Vec::new());
        }
        (|| -> Result<_, Fail> {
            let rtx = self.db.begin_read()?;
            let mailbox = rtx.open_table(MAILBOX)?;
            let mut out = Vec::new();
            for row in mailbox
                .range((&recipient.0, after_seq + 1)..=(&recipient.0, u64::MAX))?
                .take(max)
            {
                let (k, v) = row?;
                out.push((k.value().1, v.value().to_vec()));
            }
            Ok(out)
        })()
        .map_err(|f| fail_to_error(&self.path, f))
    }

    /// Removes every envelope for `recipient` with a sequence number up to `up_to_seq`, and
    /// returns how many were removed.
    pub fn ack(&self, recipient: &PublicKey, up_to_seq: u64) -> Result<usize, MailboxError> {
        let removed = self
            .ack_inner(recipient, up_to_seq)
            .map_err(|f| fail_to_error(&self.path, f))?;
        if removed > 0 {
            debug!(recipient = %recipient, up_to_seq, removed, "mailbox envelopes acknowledged");
        }
        Ok(removed)
    }

    fn ack_inner(&self, recipient: &PublicKey, up_to_seq: u64) -> Result<usize, Fail> {
        if up_to_seq == 0 {
            return Ok(0);
        }
        let wtx = self.db.begin_write()?;
        let mut mailbox = wtx.open_table(MAILBOX)?;
        // (seq, envelope length) of everything acknowledged.
        let mut gone: Vec<(u64, u64)> = Vec::new();
        for row in mailbox.range((&recipient.0, 0u64)..=(&recipient.0, up_to_seq))? {
            let (k, v) = row?;
            gone.push((k.value().1, v.value().len() as u64));
        }
        if gone.is_empty() {
            drop(mailbox);
            wtx.abort()?;
            return Ok(0);
        }
        for (seq, _) in &gone {
            mailbox.remove((&recipient.0, *seq))?;
        }
        drop(mailbox);
        let n = gone.len() as u64;
        let freed: u64 = gone.iter().map(|(_, len)| len).sum();
        {
            let mut load = wtx.open_table(MAILBOX_LOAD)?;
            let (count, bytes) = load
                .get(&recipient.0)?
                .map(|g| g.value())
                .ok_or(Fail::Corrupt("mailbox load row"))?;
            if u64::from(count) <= n {
                load.remove(&recipient.0)?;
            } else {
                // count > n, so n fits in a u32.
                load.insert(
                    &recipient.0,
                    (count - n as u32, bytes.saturating_sub(freed)),
                )?;
            }
            let mut meta = wtx.open_table(META)?;
            for (key, less) in [(META_MAILBOX_ENVELOPES, n), (META_MAILBOX_BYTES, freed)] {
                let v = meta_u64(&meta, key)?;
                meta.insert(key, u64_bytes(v.saturating_sub(less)).as_slice())?;
            }
        }
        wtx.commit()?;
        Ok(gone.len())
    }

    /// What waits in the mailboxes, over all recipients.
    pub fn stats(&self) -> Result<MailboxStats, MailboxError> {
        (|| -> Result<_, Fail> {
            let rtx = self.db.begin_read()?;
            let meta = rtx.open_table(META)?;
            Ok(MailboxStats {
                envelopes: meta_u64(&meta, META_MAILBOX_ENVELOPES)?,
                bytes: meta_u64(&meta, META_MAILBOX_BYTES)?,
            })
        })()
        .map_err(|f| fail_to_error(&self.path, f))
    }

    /// Copies the envelopes a format-1 chain store (`chain`, opened from `from`) still holds in
    /// its own mailbox tables (stores written before mailboxes had a file of their own) into
    /// this file, keeping their sequence numbers: part of `meshward store migrate`, which keeps
    /// the old file aside. Returns how many envelopes were copied (0, quickly, when there is
    /// nothing to copy). Copying twice changes nothing: rows keep their keys, and the counters
    /// are recounted from the rows. Limits are not applied to adopted envelopes: they were
    /// accepted once already.
    pub fn adopt_legacy(
        &self,
        chain: &impl ReadableDatabase,
        from: &Path,
    ) -> Result<u64, MailboxError> {
        let moved = self
            .adopt_inner(chain)
            .map_err(|f| fail_to_error(&self.path, f))?;
        if moved > 0 {
            info!(
                envelopes = moved,
                from = %from.display(),
                to = %self.path.display(),
                "mailboxes moved out of the format-1 chain store"
            );
        }
        Ok(moved)
    }

    fn adopt_inner(&self, chain: &impl ReadableDatabase) -> Result<u64, Fail> {
        let rtx = chain.begin_read()?;
        let legacy = match rtx.open_table(MAILBOX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        if legacy.is_empty()? {
            return Ok(0);
        }
        let legacy_next = rtx
            .open_table(META)?
            .get(META_MAILBOX_NEXT_SEQ)?
            .and_then(|v| read_u64(v.value()))
            .unwrap_or(1);
        let wtx = self.db.begin_write()?;
        let mut moved = 0u64;
        let mut max_seq = 0u64;
        {
            let mut mailbox = wtx.open_table(MAILBOX)?;
            for row in legacy.iter()? {
                let (k, v) = row?;
                let (recipient, seq) = k.value();
                mailbox.insert((recipient, seq), v.value())?;
                max_seq = max_seq.max(seq);
                moved += 1;
            }
        }
        recount(&wtx, legacy_next.max(max_seq.saturating_add(1)))?;
        wtx.commit()?;
        Ok(moved)
    }
}

/// Recomputes every load row and the totals from the envelopes themselves, and raises the next
/// sequence number to at least `next_at_least`.
fn recount(wtx: &WriteTransaction, next_at_least: u64) -> Result<(), Fail> {
    let mut per: BTreeMap<[u8; 32], (u32, u64)> = BTreeMap::new();
    let (mut total, mut total_bytes) = (0u64, 0u64);
    {
        let mailbox = wtx.open_table(MAILBOX)?;
        for row in mailbox.iter()? {
            let (k, v) = row?;
            let len = v.value().len() as u64;
            let e = per.entry(*k.value().0).or_default();
            e.0 = e.0.saturating_add(1);
            e.1 += len;
            total += 1;
            total_bytes += len;
        }
    }
    let mut load = wtx.open_table(MAILBOX_LOAD)?;
    load.retain(|_, _| false)?;
    for (recipient, v) in &per {
        load.insert(recipient, *v)?;
    }
    let mut meta = wtx.open_table(META)?;
    let next = meta_u64(&meta, META_MAILBOX_NEXT_SEQ)?.max(next_at_least);
    for (key, v) in [
        (META_MAILBOX_NEXT_SEQ, next),
        (META_MAILBOX_ENVELOPES, total),
        (META_MAILBOX_BYTES, total_bytes),
    ] {
        meta.insert(key, u64_bytes(v).as_slice())?;
    }
    Ok(())
}
