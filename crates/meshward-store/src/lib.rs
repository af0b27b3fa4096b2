//! Meshward's embedded storage: the certified chain, the ledger state after it and the hash and
//! anchor indexes in one redb file per node ([`Store`]), and mailboxes for offline devices in a
//! second one ([`MailboxStore`]), so that the chain file has one writer.
//!
//! Blocks arrive three ways: [`Store::apply_block`] checks and executes a block certified by
//! others (sync, replay); [`Store::commit_decided`] stores a decided block with the state delta
//! consensus already computed for it; [`Store::build_block`] makes, certifies and stores a block
//! in one process (the synthetic fleet, tests). All three share one commit: the block, its index
//! rows, the state records it changed and the new tip go in one write transaction, so a node
//! killed at any moment reopens to a consistent chain prefix. Blocks are stored compactly
//! (format 2: accounts by slot, validators by index, one certificate per height, 8-byte hash
//! index keys) and rebuilt into their canonical encoding on read.
//! [`Store::open`] checks the tip block, its hash and the state root, in constant time;
//! [`Store::check_links`] walks the hash links below it, and [`verify_chain`] replays the whole
//! chain from the genesis. [`migrate_v1`] replays a format-1 store into format 2. [`synth`]
//! writes a synthetic fleet's real signed blocks, for benchmarks and crash tests. The format is
//! described in [`format`](mod@format).
//!
//! ```
//! use meshward_core::TxBody;
//! use meshward_store::{synth::Synth, verify_chain, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let mut fleet = Synth::create(dir.path(), 4)?;
//! fleet.write_blocks(3, 2)?; // block 1 enrolls the 4 devices, blocks 2 and 3 carry 2 anchors each
//! let store = fleet.store();
//! assert_eq!(store.tip().map(|(height, _)| height), Some(3));
//!
//! // Any anchor can be proven to anyone who holds the genesis.
//! let block = store.block(3)?.expect("block 3 is stored");
//! let TxBody::Anchor(anchor) = &block.block.txs[0].body else { unreachable!() };
//! let proof = store.anchor_proof(&anchor.commitment)?.expect("anchors are indexed");
//! assert_eq!(proof.verify(store.genesis())?.height, 3);
//!
//! // Reopening checks the tip; verify_chain replays the chain.
//! drop(fleet);
//! let store = Store::open(dir.path().join("meshward.redb"))?;
//! assert_eq!(store.tip().map(|(height, _)| height), Some(3));
//! drop(store);
//! assert_eq!(verify_chain(dir.path().join("meshward.redb"))?.anchors, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

/// `From` impls from every redb error type into an internal failure type, through `redb::Error`.
macro_rules! from_redb_errors {
    ($target:ty, $variant:path) => {
        from_redb_errors!(@each $target, $variant, redb::Error, redb::StorageError,
            redb::TableError, redb::TransactionError, redb::CommitError, redb::DatabaseError);
    };
    (@each $target:ty, $variant:path, $($t:ty),*) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> $target {
                $variant(e.into())
            }
        }
    )*};
}

mod compact;
mod error;
pub mod format;
mod mailbox;
mod migrate;
mod query;
pub mod raw;
mod rows;
mod store;
pub mod synth;
mod upgrade;
mod verify;

pub use error::{ApplyError, Corruption, MailboxError, OpenError, ReadError, VerifyError};
pub use mailbox::{MailboxLimits, MailboxStats, MailboxStore};
pub use migrate::{migrate_v1, MigrateError, MigrateReport};
pub use store::Store;
pub use verify::{verify_chain, VerifyReport};
