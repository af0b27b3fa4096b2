//! The on-disk formats: the chain store (`meshward.redb`) and the mailbox file
//! (`mailbox.redb`), their tables, meta keys and limits.
//!
//! This module is the reference for `docs/FORMATS.md` ("Store"). Everything here is part of the
//! format: changing a table's name or types, or the encoding of a meta value, needs a new
//! [`FORMAT_VERSION`].
//!
//! | table          | key                              | value                                   |
//! |----------------|----------------------------------|-----------------------------------------|
//! | `blocks`       | `u64` height (1, 2, …)           | canonical `CertifiedBlock` encoding     |
//! | `block_hash`   | `[u8; 32]` header hash           | `u64` height                            |
//! | `commitments`  | `[u8; 32]` anchor commitment     | `(u64 height, u32 tx index)`            |
//! | `handoffs`     | `(u64 height, u32 tx index)`     | `()`: a `ValidatorSetChange` is there   |
//! | `txs`          | `[u8; 32]` transaction id        | `(u64 height, u32 tx index)`            |
//! | `state`        | `u64` slot (0, 1, …)             | canonical state `Record` encoding       |
//! | `meta`         | `&str` name                      | bytes, see the `META_*` constants       |
//! | `mailbox`      | `([u8; 32] recipient, u64 seq)`  | envelope bytes                          |
//! | `mailbox_load` | `[u8; 32]` recipient             | `(u32 envelopes, u64 bytes)` waiting    |
//!
//! Rows are keyed by sequence (height, slot, mailbox seq) wherever possible: sequential keys append
//! to the right edge of a B-tree, while random 32-byte keys are several times slower to insert,
//! so hash lookups live in the separate index tables `block_hash` and `commitments`.
//!
//! A block commits in one write transaction together with its index rows, the state records it
//! changed and the new tip, so the file always holds a chain prefix and the state after exactly
//! that prefix. Commits use redb's default durability (fsync before `commit` returns).
//!
//! `commitments` keeps the first anchor of a commitment: a later anchor of the same commitment
//! does not move the row. `handoffs` lists every `ValidatorSetChange`, for light-client proofs.
//!
//! The chain store still creates `mailbox`, `mailbox_load` and the `mailbox_*` meta keys, as
//! format version 1 always did, but nothing writes them any more: a store written before
//! mailboxes moved out may hold envelopes there, and
//! [`MailboxStore::adopt_legacy`](crate::MailboxStore::adopt_legacy) moves them into the mailbox
//! file on the node's next start.
//!
//! # The mailbox file (`mailbox.redb`), format version [`MAILBOX_FORMAT_VERSION`]
//!
//! | table          | key                              | value                                   |
//! |----------------|----------------------------------|-----------------------------------------|
//! | `mailbox`      | `([u8; 32] recipient, u64 seq)`  | envelope bytes                          |
//! | `mailbox_load` | `[u8; 32] recipient`             | `(u32 envelopes, u64 bytes)` waiting    |
//! | `meta`         | `&str` name                      | `format_version` (`u32` BE), `mailbox_next_seq`, `mailbox_envelopes`, `mailbox_bytes` (`u64` BE) |
//!
//! Mailbox sequence numbers come from one file-wide counter (`META_MAILBOX_NEXT_SEQ`), so they
//! increase for every recipient and are never reused, even after a recipient's mailbox empties and
//! its `mailbox_load` row is deleted. Every put and ack is one durable write transaction.

use redb::TableDefinition;

/// Version of this format, stored under [`META_FORMAT_VERSION`].
pub const FORMAT_VERSION: u32 = 1;

/// The store's file name inside a data dir.
pub const FILE_NAME: &str = "meshward.redb";

/// Version of the mailbox file's format, stored under [`META_FORMAT_VERSION`] in its `meta`.
pub const MAILBOX_FORMAT_VERSION: u32 = 1;

/// The mailbox file's name inside a data dir.
pub const MAILBOX_FILE_NAME: &str = "mailbox.redb";

/// Encoded certified blocks by height.
pub const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// Block header hash -> height.
pub const BLOCK_HASH: TableDefinition<&[u8; 32], u64> = TableDefinition::new("block_hash");
/// Anchor commitment -> (height, transaction index) of its first anchor.
pub const COMMITMENTS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("commitments");
/// Transaction id -> (height, transaction index), so a client can ask whether its
/// transaction is final.
pub const TXS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("txs");
/// (height, transaction index) of every `ValidatorSetChange`.
pub const HANDOFFS: TableDefinition<(u64, u32), ()> = TableDefinition::new("handoffs");
/// Encoded state records by slot.
pub const STATE: TableDefinition<u64, &[u8]> = TableDefinition::new("state");
/// Store-wide values, see the `META_*` keys.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Envelopes waiting for offline devices, by (recipient, seq) (in the mailbox file).
pub const MAILBOX: TableDefinition<(&[u8; 32], u64), &[u8]> = TableDefinition::new("mailbox");
/// What each recipient has waiting: (envelopes, bytes). No row means nothing waits.
pub const MAILBOX_LOAD: TableDefinition<&[u8; 32], (u32, u64)> =
    TableDefinition::new("mailbox_load");

/// `u32` big-endian: [`FORMAT_VERSION`].
pub const META_FORMAT_VERSION: &str = "format_version";
/// The canonical genesis encoding.
pub const META_GENESIS: &str = "genesis";
/// `u64` big-endian: the height of the last block, 0 before block 1.
pub const META_TIP_HEIGHT: &str = "tip_height";
/// `u64` big-endian: the next mailbox sequence number (starts at 1).
pub const META_MAILBOX_NEXT_SEQ: &str = "mailbox_next_seq";
/// `u64` big-endian: envelopes waiting, over all recipients.
pub const META_MAILBOX_ENVELOPES: &str = "mailbox_envelopes";
/// `u64` big-endian: envelope bytes waiting, over all recipients.
pub const META_MAILBOX_BYTES: &str = "mailbox_bytes";

/// Most bytes in one mailbox envelope, by default: the largest encoded envelope (a 64 KiB
/// payload, its 16-byte tag and a header of about 200 bytes) with room to spare.
pub const MAILBOX_MAX_ENVELOPE_BYTES: usize = meshward_core::envelope::MAX_CIPHERTEXT_BYTES + 1024;
/// Most envelopes waiting for one recipient, by default.
pub const MAILBOX_MAX_PER_RECIPIENT: u32 = 1024;
/// Most envelopes waiting in the whole mailbox file, by default.
pub const MAILBOX_MAX_TOTAL_ENVELOPES: u64 = 65_536;
/// Most envelope bytes waiting in the whole mailbox file, by default (256 MiB).
pub const MAILBOX_MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// redb's page cache, in bytes. The cache only holds pages that were read or written, so this is
/// an upper bound on the store's memory beyond the in-memory ledger state. The ledger state is
/// held in memory and only written on commit, so the cache mostly serves block and proof reads;
/// 16 MiB keeps a gateway small (at 100k devices, loading the state fills a larger cache).
pub const CACHE_SIZE_BYTES: usize = 16 * 1024 * 1024;

pub(crate) fn u64_bytes(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}
