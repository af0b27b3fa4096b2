//! Errors, one enum per operation family.
//!
//! Every message names the store file, what went wrong and what to do. Paths are kept as
//! [`PathBuf`]s so the binary can add its own context without parsing messages.

use std::path::{Path, PathBuf};

use meshward_core::block::BodyError;
use meshward_core::chain::ChainError;
use meshward_core::codec::DecodeError;
use meshward_core::ids::PublicKey;
use meshward_core::state::LoadError;

/// The data dir holding a store file, for `--dir` hints.
pub(crate) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn link_target(prev: u64) -> String {
    if prev == 0 {
        "the genesis".to_string()
    } else {
        format!("height {prev}")
    }
}

/// What is wrong with a stored block, or with the rows that go with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// No block row at a height at or below the tip, or an index points at a height with none.
    #[error("block is missing")]
    Missing,
    /// A block row exists above the recorded tip height.
    #[error("block is stored beyond the recorded tip (height {tip})")]
    BeyondTip {
        /// The recorded tip height.
        tip: u64,
    },
    /// The row is not a canonical certified block.
    #[error("block does not decode: {0}")]
    Decode(DecodeError),
    /// The block decodes but names another height than its row's key.
    #[error("block says it is at height {found}")]
    WrongHeight {
        /// The height in the block's header.
        found: u64,
    },
    /// The block's `prev_hash` is not the hash of the block below (or the genesis).
    #[error("block does not link to {}", link_target(*prev))]
    BrokenLink {
        /// Height of the block it should link to (0: the genesis).
        prev: u64,
    },
    /// The certificate's height or block hash is not the block's.
    #[error("certificate is for another block")]
    CertificateMismatch,
    /// The block's transactions or last commit do not match its header.
    #[error("block body does not match its header: {0}")]
    Body(BodyError),
    /// The `block_hash_idx` index does not map the block's header hash to its height.
    #[error("hash index does not map this block's header hash to its height")]
    HashIndex,
    /// The block's hash is not the tip hash recorded in `meta`.
    #[error("block is not the recorded tip")]
    TipHash,
    /// No certificate for the block: neither a `certs` row nor a last commit in its successor.
    #[error(
        "block has no certificate (no certs row, and its successor carries no last commit for it)"
    )]
    MissingCertificate,
    /// The block log is malformed: a row outside it, rows not one after another, or segments
    /// of the wrong length.
    #[error("block log is malformed (rows not where their index says, or segments cut wrong)")]
    Chunks,
    /// A transaction index row points at no matching transaction, or a transaction has none.
    #[error("transaction index has no correct row for transaction {index}")]
    TxIndex {
        /// Position of the transaction in the block.
        index: u32,
    },
    /// The `tx_idx` index has another number of rows than there are transactions.
    #[error("transaction index has {rows} rows for {txs} transactions")]
    TxIndexRows {
        /// Rows in the index.
        rows: u64,
        /// Transactions in the chain.
        txs: u64,
    },
    /// The `validator_sets` table does not list the validator sets the replayed chain had.
    #[error("validator-set history does not match the chain")]
    ValidatorSets,
    /// The `block_hash` index has another number of rows than there are blocks.
    #[error("hash index has {rows} rows for {blocks} blocks")]
    HashIndexRows {
        /// Rows in the index.
        rows: u64,
        /// Blocks in the store.
        blocks: u64,
    },
    /// The state records on disk do not hash to the tip's `state_root`.
    #[error("stored state records do not match the state root at this height")]
    StateRoot,
    /// Re-executing the block on the replayed state fails (`verify_chain`).
    #[error("block does not replay: {0}")]
    Replay(ChainError),
    /// The `commitment_idx` index has no row, or a wrong one, for an anchor of the block.
    #[error("commitment index has no correct row for the anchor in transaction {index}")]
    CommitmentIndex {
        /// Position of the anchor transaction in the block.
        index: u32,
    },
    /// The `commitment_idx` index has another number of rows than anchors in the chain.
    #[error("commitment index has {rows} rows for {anchors} anchors")]
    CommitmentRows {
        /// Rows in the index.
        rows: u64,
        /// Anchors in the chain.
        anchors: u64,
    },
    /// The `handoffs` index does not list a validator-set change of the block.
    #[error("handoff index does not list the validator-set change in transaction {index}")]
    HandoffIndex {
        /// Position of the transaction in the block.
        index: u32,
    },
    /// The `handoffs` index has another number of rows than validator-set changes.
    #[error("handoff index has {rows} rows for {changes} validator-set changes")]
    HandoffRows {
        /// Rows in the index.
        rows: u64,
        /// `ValidatorSetChange` transactions in the chain.
        changes: u64,
    },
    /// The `key_changes` index does not list a key change of the block, or lists another
    /// transaction.
    #[error("key-change index has no correct row for transaction {index}")]
    KeyChangeIndex {
        /// Position of the transaction in the block.
        index: u32,
    },
    /// The `key_changes` index has another number of rows than key changes.
    #[error("key-change index has {rows} rows for {changes} key changes")]
    KeyChangeRows {
        /// Rows in the index.
        rows: u64,
        /// `RotateKeys` and `Reinstate` transactions in the chain.
        changes: u64,
    },
    /// A state record on disk differs from the one the replayed chain produces (`verify_chain`).
    #[error("state record at slot {slot} differs from the replayed chain")]
    StateRecord {
        /// The record's slot.
        slot: u64,
    },
}

/// Why [`crate::Store::create`] or [`crate::Store::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Creating: a file is already at the path (nothing is overwritten).
    #[error("cannot create store at {}: the file already exists (open it instead, or use another data dir)", path.display())]
    Exists {
        /// The store file.
        path: PathBuf,
    },
    /// Opening: no file at the path.
    #[error("no store at {} (create one first, e.g. with meshward init)", path.display())]
    NotFound {
        /// The store file.
        path: PathBuf,
    },
    /// Another process holds the file open (redb's lock).
    #[error("store at {} is in use by another process (stop the other meshward process first)", path.display())]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file is damaged (redb says so, or reading it panicked), of an old redb format, or not
    /// a redb file at all.
    #[error("{} is damaged or not a meshward store: {reason} (restore it from a backup, or move it away and resync from peers)", path.display())]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What is wrong, as found.
        reason: String,
    },
    /// The file cannot be read or written (redb error other than the above).
    #[error("cannot access store at {}: {source} (check the disk, free space and permissions)", path.display())]
    Storage {
        /// The store file.
        path: PathBuf,
        /// The redb error.
        source: Box<redb::Error>,
    },
    /// A filesystem operation on the path failed (permissions, missing parent, disk).
    #[error("cannot access {}: {source} (check the path and its permissions)", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `format_version` in `meta` is not the one this build reads.
    #[error("store at {} has format version {found}, this build reads version {supported} ({})", path.display(), upgrade_hint(*found, *supported, path))]
    UnsupportedFormat {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads ([`crate::format::FORMAT_VERSION`]).
        supported: u32,
    },
    /// A `meta` row (format version, genesis, tip height) or a table is missing or malformed.
    #[error("store at {} has a missing or invalid {what} (restore it from a backup, or move it away and resync from peers)", path.display())]
    Meta {
        /// The store file.
        path: PathBuf,
        /// Which row or table.
        what: &'static str,
    },
    /// The stored state records do not load into a state (decode, gap in slots, duplicate,
    /// missing).
    #[error("store at {} has invalid state records: {source} (run meshward store verify --dir {} for a full check)", path.display(), dir_of(path).display())]
    State {
        /// The store file.
        path: PathBuf,
        /// What is wrong with them.
        source: LoadError,
    },
    /// A stored block or its index rows fail the structural checks on open.
    #[error("store at {} is corrupt at height {height}: {reason} (run meshward store verify --dir {} for a full check)", path.display(), dir_of(path).display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The first bad height.
        height: u64,
        /// What is wrong there.
        reason: Box<Corruption>,
    },
}

/// What to do about a store of another format: migrate an older one, or use a newer release.
fn upgrade_hint(found: u32, supported: u32, path: &Path) -> String {
    if found < supported {
        format!(
            "run meshward store migrate --dir {} to replay it into format {supported}, keeping \
             the old file beside it; or move the file away and let the node resync from its peers",
            dir_of(path).display()
        )
    } else {
        "it was written by a newer meshward: use that release".into()
    }
}

impl OpenError {
    /// The height a [`OpenError::Corrupt`] names.
    pub fn corrupt_height(&self) -> Option<u64> {
        match self {
            OpenError::Corrupt { height, .. } => Some(*height),
            _ => None,
        }
    }
}

/// Why a block was not stored by [`crate::Store::apply_block`], [`crate::Store::build_block`] or
/// [`crate::Store::commit_decided`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The block does not extend the chain (links, certificate, body, rules, state root).
    #[error("block {height} was not stored: {source} (the store is unchanged)")]
    Rejected {
        /// The block's height.
        height: u64,
        /// Why it was refused.
        source: ChainError,
    },
    /// Writing the block failed. Whether it reached the disk is known only after a reopen: a
    /// sync can fail after the write itself went through (`tests/faults.rs` shows both).
    #[error("cannot write block {height} to {}: {source} (the block may or may not be on disk: reopen the store to find out; check free space and permissions)", path.display())]
    Storage {
        /// The store file.
        path: PathBuf,
        /// The height of the block that was not written.
        height: u64,
        /// The redb error.
        source: Box<redb::Error>,
    },
    /// An earlier write failed and the in-memory state could not be reloaded: reopen the store.
    #[error("store at {} must be reopened: {reason}", path.display())]
    Poisoned {
        /// The store file.
        path: PathBuf,
        /// Why the state could not be reloaded.
        reason: String,
    },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// redb failed while reading.
    #[error("cannot read store at {}: {source} (check the disk and its permissions)", path.display())]
    Storage {
        /// The store file.
        path: PathBuf,
        /// The redb error.
        source: Box<redb::Error>,
    },
    /// A row read is missing or does not decode.
    #[error("store at {} is corrupt at height {height}: {reason} (run meshward store verify --dir {} for a full check)", path.display(), dir_of(path).display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The height of the bad row.
        height: u64,
        /// What is wrong there.
        reason: Box<Corruption>,
    },
    /// An anchor proof would need more validator-set handoffs than a proof may carry.
    #[error("the anchor at height {height} needs {count} validator-set handoffs, over the proof limit of {max}")]
    TooManyHandoffs {
        /// Height of the anchor's block.
        height: u64,
        /// Handoffs below that height.
        count: usize,
        /// The proof limit ([`meshward_core::light::MAX_HANDOFFS`]).
        max: usize,
    },
    /// A proof would need more of its signer's key changes than a proof may carry.
    #[error("the signer has {count} key changes, over the proof limit of {max}")]
    TooManyKeyChanges {
        /// Key changes before the transaction.
        count: usize,
        /// The proof limit ([`meshward_core::light::MAX_KEY_CHANGES`]).
        max: usize,
    },
}

/// Why a mailbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The envelope is over [`crate::MailboxLimits::max_envelope_bytes`].
    #[error("envelope of {len} bytes is over the mailbox limit of {max} bytes (send it directly, or split it)")]
    TooLarge {
        /// The envelope's size, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The recipient already has [`crate::MailboxLimits::max_per_recipient`] envelopes waiting.
    #[error("mailbox of {recipient} is full: {limit} envelopes wait (the device must fetch and acknowledge them first)")]
    RecipientFull {
        /// The recipient's account id.
        recipient: PublicKey,
        /// The per-recipient limit, in envelopes.
        limit: u32,
    },
    /// The whole file is at one of its totals.
    #[error("mailboxes are full: {envelopes} envelopes of {bytes} bytes wait, limits are {max_envelopes} envelopes and {max_bytes} bytes (retry once devices fetch theirs)")]
    StoreFull {
        /// Envelopes in the file now.
        envelopes: u64,
        /// Their total size, in bytes.
        bytes: u64,
        /// The file's limit, in envelopes.
        max_envelopes: u64,
        /// The file's limit, in bytes.
        max_bytes: u64,
    },
    /// The mailbox file could not be opened or created.
    #[error("cannot open the mailbox database {}: {source} (check the data dir's free space and permissions; if the file is damaged, move it aside to start with empty mailboxes)", path.display())]
    Open {
        /// The mailbox file.
        path: PathBuf,
        /// The redb error.
        source: Box<redb::Error>,
    },
    /// The mailbox file has another format version.
    #[error("mailbox database {} has format version {found}, this meshward reads version {supported} (use the meshward release that wrote it)", path.display())]
    Version {
        /// The mailbox file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A counter or load row is missing or malformed.
    #[error("mailbox database {} has a missing or invalid {what} (move the file aside to start with empty mailboxes)", path.display())]
    Corrupt {
        /// The mailbox file.
        path: PathBuf,
        /// Which counter or row.
        what: &'static str,
    },
    /// redb failed (I/O, disk full, damage).
    #[error("mailbox database {} failed: {source} (check free space and permissions, then retry)", path.display())]
    Storage {
        /// The mailbox file.
        path: PathBuf,
        /// The redb error.
        source: Box<redb::Error>,
    },
}

/// Why [`crate::verify_chain`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Opening the store failed, before any block was checked.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// redb failed while reading the chain.
    #[error("cannot read store at {}: {source} (check the disk and its permissions)", path.display())]
    Storage {
        /// The store file.
        path: PathBuf,
        /// The redb error.
        source: Box<redb::Error>,
    },
    /// A block fails verification: structure, signatures, replay, indexes or state records.
    #[error("store at {} fails verification at height {height}: {reason} (restore the data dir from a backup, or move it away and resync from peers)", path.display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The first bad height.
        height: u64,
        /// What is wrong there.
        reason: Box<Corruption>,
    },
}

impl VerifyError {
    /// The first bad height, for [`VerifyError::Corrupt`].
    pub fn corrupt_height(&self) -> Option<u64> {
        match self {
            VerifyError::Corrupt { height, .. } => Some(*height),
            VerifyError::Open(e) => e.corrupt_height(),
            _ => None,
        }
    }
}
