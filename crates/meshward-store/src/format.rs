//! The on-disk formats: the chain store (`meshward.redb`) and the mailbox file
//! (`mailbox.redb`), their tables, meta keys and limits.
//!
//! This module is the reference for `docs/FORMATS.md` ("Store"). Everything here is part of the
//! format: changing a table's name or types, or the encoding of a meta value, needs a new
//! [`FORMAT_VERSION`].
//!
//! # The chain store, format version 3
//!
//! | table            | key                               | value                                   |
//! |------------------|-----------------------------------|-----------------------------------------|
//! | `block_log`      | `u64` segment (0, 1, …)           | the rows of blocks 1, 2, … ([`crate::compact`]) one after another, cut in segments of [`BLOCK_SEGMENT_BYTES`] (every one full but the last) |
//! | `block_at`       | `u64` height                      | `(u64 offset, u32 length)` of the block's row in the log |
//! | `certs`          | `u64` height                      | a certificate not carried by the next block (the tip's) |
//! | `block_hash_idx` | `(u64 hash prefix, u64 height)`   | `()`                                    |
//! | `tx_idx`         | `(u64 id prefix, u64 location)`   | `()`: location = height << 16 \| index |
//! | `commitment_idx` | `(u64 commitment prefix, u64 location)` | `()`: every anchor                |
//! | `handoffs`       | `(u64 height, u32 tx index)`      | `()`: a `ValidatorSetChange` is there   |
//! | `key_changes`    | `(u64 account prefix, u64 location)` | `()`: a `RotateKeys` by the account or a `Reinstate` of it (format 3) |
//! | `validator_sets` | `u64` first height it certifies   | canonical `ValidatorSet` encoding       |
//! | `state`          | `u64` slot (0, 1, …)              | canonical state `Record` encoding       |
//! | `meta`           | `&str` name                       | bytes, see the `META_*` constants       |
//!
//! A block's certificate is the last commit its successor carries (a certificate for it by
//! definition); only a block whose successor carries none (the tip, always) keeps a row in
//! `certs`, and it is deleted once a successor carries one. So each height stores one
//! certificate, not two.
//!
//! Hash indexes hold the first 8 bytes of the hash (big-endian `u64`) and where to look: a
//! lookup reads every row with that prefix and confirms each candidate against the block, so a
//! prefix shared by two hashes costs a second look, never a wrong answer. An index row is 16
//! bytes instead of 44, and small keys keep the B-trees shallow. `commitment_idx` lists every
//! anchor; the first anchor of a commitment is the candidate with the lowest location.
//!
//! Rows go into one log cut in segments of [`BLOCK_SEGMENT_BYTES`], one segment to a 4 KiB
//! page: a row stored whole goes into a page run of a power of two (~20% wasted on blocks of
//! tens of KiB), and rows or chunks of a few hundred bytes to a few KiB leave 12–30% of each
//! leaf page empty (measured on redb 4.6); a full page per segment wastes ~3%. The last segment
//! is rewritten as rows are appended.
//!
//! A block commits in one write transaction together with its row (appended to the log), its
//! `block_at` entry, index rows, certificate
//! rows, any new validator set, the state records it changed and the new tip, so the file
//! always holds a chain prefix and the state after exactly that prefix. Commits use redb's
//! default durability (fsync before `commit` returns).
//!
//! Opening reads the meta, the state records and the validator sets, and checks the tip block
//! against the recorded tip hash and state root: constant time in the chain's length. The
//! links below the tip are checked by [`crate::Store::check_links`] (a node runs it in the
//! background after start) and by `verify_chain` (everything).
//!
//! A format-1 file is refused with [`crate::OpenError::UnsupportedFormat`];
//! `meshward store migrate` replays it into a new file of the current format. Format 3 only
//! adds `key_changes` (for proofs of transactions signed after a key change): a writable open
//! of a format-2 file builds it from the blocks in one write transaction and sets the version
//! to 3 ([`crate::Store::open`]); a read-only check (`verify_chain`) refuses a format-2 file
//! until then.
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
pub const FORMAT_VERSION: u32 = 3;
/// The previous format, which a writable open upgrades in place (it lacks `key_changes`).
pub const FORMAT_VERSION_2: u32 = 2;

/// The store's file name inside a data dir.
pub const FILE_NAME: &str = "meshward.redb";

/// Version of the mailbox file's format, stored under [`META_FORMAT_VERSION`] in its `meta`.
pub const MAILBOX_FORMAT_VERSION: u32 = 1;

/// The mailbox file's name inside a data dir.
pub const MAILBOX_FILE_NAME: &str = "mailbox.redb";

/// Bytes in one segment of the block log: with its key and redb's leaf header it fills one
/// 4 KiB page.
pub const BLOCK_SEGMENT_BYTES: usize = 4064;

/// The block log: rows one after another, by segment.
pub const BLOCK_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("block_log");
/// Where each block's row is in the log: height → (offset, length).
pub const BLOCK_AT: TableDefinition<u64, (u64, u32)> = TableDefinition::new("block_at");
/// Certificates that no stored successor carries, by height (see the module doc).
pub const CERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("certs");
/// (Block hash prefix, height).
pub const BLOCK_HASH_IDX: TableDefinition<(u64, u64), ()> = TableDefinition::new("block_hash_idx");
/// (Transaction id prefix, location), so a client can ask whether its transaction is final.
pub const TX_IDX: TableDefinition<(u64, u64), ()> = TableDefinition::new("tx_idx");
/// (Anchor commitment prefix, location) of every anchor.
pub const COMMITMENT_IDX: TableDefinition<(u64, u64), ()> = TableDefinition::new("commitment_idx");
/// (height, transaction index) of every `ValidatorSetChange`.
pub const HANDOFFS: TableDefinition<(u64, u32), ()> = TableDefinition::new("handoffs");
/// (Account id prefix, location) of every key change: the account's `RotateKeys` and the
/// admins' `Reinstate` of it.
pub const KEY_CHANGES: TableDefinition<(u64, u64), ()> = TableDefinition::new("key_changes");
/// Each validator set by the first height it certifies (height 1: the genesis set).
pub const VALIDATOR_SETS: TableDefinition<u64, &[u8]> = TableDefinition::new("validator_sets");
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
/// 32 bytes: the header hash of the last block (absent before block 1).
pub const META_TIP_HASH: &str = "tip_hash";
/// `u64` big-endian: the next mailbox sequence number (starts at 1; mailbox file only).
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

/// The index key of a hash: its first 8 bytes, big-endian.
pub(crate) fn prefix(h: &meshward_core::hash::Hash) -> u64 {
    let b = h.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A transaction's location as an index value: height << 16 | index (a block holds at most
/// 65,536 transactions).
pub(crate) fn location(height: u64, index: u32) -> u64 {
    (height << 16) | u64::from(index)
}

/// The (height, index) of a location.
pub(crate) fn split_location(loc: u64) -> (u64, u32) {
    (loc >> 16, (loc & 0xffff) as u32)
}
