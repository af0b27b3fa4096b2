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
    #[error("block is missing")]
    Missing,
    #[error("block is stored beyond the recorded tip (height {tip})")]
    BeyondTip { tip: u64 },
    #[error("block does not decode: {0}")]
    Decode(DecodeError),
    #[error("block says it is at height {found}")]
    WrongHeight { found: u64 },
    #[error("block does not link to {}", link_target(*prev))]
    BrokenLink { prev: u64 },
    #[error("certificate is for another block")]
    CertificateMismatch,
    #[error("block body does not match its header: {0}")]
    Body(BodyError),
    #[error("hash index does not map this block's header hash to its height")]
    HashIndex,
    #[error("hash index has {rows} rows for {blocks} blocks")]
    HashIndexRows { rows: u64, blocks: u64 },
    #[error("stored state records do not match the state root at this height")]
    StateRoot,
    #[error("block does not replay: {0}")]
    Replay(ChainError),
    #[error("commitment index has no correct row for the anchor in transaction {index}")]
    CommitmentIndex { index: u32 },
    #[error("commitment index has {rows} rows for {anchors} distinct anchored commitments")]
    CommitmentRows { rows: u64, anchors: u64 },
    #[error("handoff index does not list the validator-set change in transaction {index}")]
    HandoffIndex { index: u32 },
    #[error("handoff index has {rows} rows for {changes} validator-set changes")]
    HandoffRows { rows: u64, changes: u64 },
    #[error("state record at slot {slot} differs from the replayed chain")]
    StateRecord { slot: u64 },
}

/// Why [`crate::Store::create`] or [`crate::Store::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot create store at {}: the file already exists (open it instead, or use another data dir)", path.display())]
    Exists { path: PathBuf },
    #[error("no store at {} (create one first, e.g. with meshward init)", path.display())]
    NotFound { path: PathBuf },
    #[error("store at {} is in use by another process (stop the other meshward process first)", path.display())]
    InUse { path: PathBuf },
    #[error("{} is damaged or not a meshward store: {reason} (restore it from a backup, or move it away and resync from peers)", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot access store at {}: {source} (check the disk, free space and permissions)", path.display())]
    Storage {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("cannot access {}: {source} (check the path and its permissions)", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store at {} has format version {found}, this build reads version {supported} (use a matching meshward release)", path.display())]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store at {} has a missing or invalid {what} (restore it from a backup, or move it away and resync from peers)", path.display())]
    Meta { path: PathBuf, what: &'static str },
    #[error("store at {} has invalid state records: {source} (run meshward store verify --dir {} for a full check)", path.display(), dir_of(path).display())]
    State { path: PathBuf, source: LoadError },
    #[error("store at {} is corrupt at height {height}: {reason} (run meshward store verify --dir {} for a full check)", path.display(), dir_of(path).display())]
    Corrupt {
        path: PathBuf,
        height: u64,
        reason: Box<Corruption>,
    },
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
    #[error("block {height} was not stored: {source} (the store is unchanged)")]
    Rejected { height: u64, source: ChainError },
    #[error("cannot write block {height} to {}: {source} (nothing was stored; check free space and permissions, then retry)", path.display())]
    Storage {
        path: PathBuf,
        height: u64,
        source: Box<redb::Error>,
    },
    #[error("store at {} must be reopened: {reason}", path.display())]
    Poisoned { path: PathBuf, reason: String },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("cannot read store at {}: {source} (check the disk and its permissions)", path.display())]
    Storage {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("store at {} is corrupt at height {height}: {reason} (run meshward store verify --dir {} for a full check)", path.display(), dir_of(path).display())]
    Corrupt {
        path: PathBuf,
        height: u64,
        reason: Box<Corruption>,
    },
    #[error("the anchor at height {height} needs {count} validator-set handoffs, over the proof limit of {max}")]
    TooManyHandoffs {
        height: u64,
        count: usize,
        max: usize,
    },
}

/// Why a mailbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The envelope is over [`crate::MailboxLimits::max_envelope_bytes`].
    #[error("envelope of {len} bytes is over the mailbox limit of {max} bytes (send it directly, or split it)")]
    TooLarge { len: usize, max: usize },
    /// The recipient already has [`crate::MailboxLimits::max_per_recipient`] envelopes waiting.
    #[error("mailbox of {recipient} is full: {limit} envelopes wait (the device must fetch and acknowledge them first)")]
    RecipientFull { recipient: PublicKey, limit: u32 },
    /// The whole file is at one of its totals.
    #[error("mailboxes are full: {envelopes} envelopes of {bytes} bytes wait, limits are {max_envelopes} envelopes and {max_bytes} bytes (retry once devices fetch theirs)")]
    StoreFull {
        envelopes: u64,
        bytes: u64,
        max_envelopes: u64,
        max_bytes: u64,
    },
    /// The mailbox file could not be opened or created.
    #[error("cannot open the mailbox database {}: {source} (check the data dir's free space and permissions; if the file is damaged, move it aside to start with empty mailboxes)", path.display())]
    Open {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    /// The mailbox file has another format version.
    #[error("mailbox database {} has format version {found}, this meshward reads version {supported} (use the meshward release that wrote it)", path.display())]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A counter or load row is missing or malformed.
    #[error("mailbox database {} has a missing or invalid {what} (move the file aside to start with empty mailboxes)", path.display())]
    Corrupt { path: PathBuf, what: &'static str },
    /// redb failed (I/O, disk full, damage).
    #[error("mailbox database {} failed: {source} (check free space and permissions, then retry)", path.display())]
    Storage {
        path: PathBuf,
        source: Box<redb::Error>,
    },
}

/// Why [`crate::verify_chain`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read store at {}: {source} (check the disk and its permissions)", path.display())]
    Storage {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("store at {} fails verification at height {height}: {reason} (restore the data dir from a backup, or move it away and resync from peers)", path.display())]
    Corrupt {
        path: PathBuf,
        height: u64,
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
