//! The chain store as the gateway's components see it: read-only.
//!
//! Owner and discipline. The [`Store`] lives behind one `RwLock` ([`SharedStore`]), shared with
//! `meshward-consensus`, which is its only writer: it takes the write guard to commit each
//! decided or synced block, and nothing in this crate ever takes it (this type offers no way
//! to). Everyone else takes [`Ledger::read`] for one synchronous read of the chain or the state
//! and drops it before awaiting anything: the guard is not `Send`, so the compiler keeps it out
//! of `.await` points in spawned tasks. A read guard is never held while waiting on another
//! component; where a caller also takes the mempool's lock, it takes the ledger guard first.
//! Mailboxes are not in this store: they have a file and an owner of their own
//! ([`crate::mailboxes`]).
//!
//! A poisoned lock aborts the process ([`meshward_core::sync`]).

use std::sync::{Arc, RwLock, RwLockReadGuard};

use meshward_core::ledger::ApplyCtx;
use meshward_store::Store;

pub use meshward_consensus::SharedStore;

/// A read handle on the chain store. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    store: SharedStore,
}

impl Ledger {
    /// Wraps an opened store; the returned handle and [`Ledger::shared`] share it.
    pub fn new(store: Store) -> Self {
        Ledger {
            store: Arc::new(RwLock::new(store)),
        }
    }

    /// A read guard, for one synchronous read (see the module doc).
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        meshward_core::sync::read(&self.store, "chain store")
    }

    /// The shared store, for handing to consensus: its one writer.
    pub fn shared(&self) -> SharedStore {
        self.store.clone()
    }

    /// The height of the last committed block (0 before block 1).
    pub fn tip_height(&self) -> u64 {
        self.read().tip().map_or(0, |(h, _)| h)
    }
}

/// The context a transaction entering the mempool is checked in: the next height, now.
pub fn next_ctx(store: &Store) -> ApplyCtx {
    ApplyCtx {
        height: store.next_height(),
        time_ms: meshward_core::clock::now_ms(),
    }
}
