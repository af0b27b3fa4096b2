//! The workspace's one lock-poisoning policy (std only).
//!
//! A lock is poisoned when a thread panicked while holding it, so the data behind it may be
//! half-changed and break the invariants its owner documents. Meshward treats that as a broken
//! invariant, not an operating error: the process says which lock it was and aborts, and the node
//! restarts from its store (a block commit never leaves the store half-written, and in-memory
//! state such as the mempool is rebuilt from peers). Recovering the guard silently would keep
//! serving from data nobody can vouch for; refusing one caller and serving the next would do the
//! same more slowly.
//!
//! Every `Mutex` and `RwLock` in the workspace is taken through [`lock`], [`read`] or [`write`].
//!
//! ```
//! use std::sync::Mutex;
//! let m = Mutex::new(1);
//! *meshward_core::sync::lock(&m, "counter") += 1;
//! assert_eq!(*meshward_core::sync::lock(&m, "counter"), 2);
//! ```

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`; aborts the process if it is poisoned. `what` names the lock in the message.
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    m.lock().unwrap_or_else(|_| poisoned(what))
}

/// Takes a read guard of `l`; aborts the process if it is poisoned.
pub fn read<'a, T>(l: &'a RwLock<T>, what: &str) -> RwLockReadGuard<'a, T> {
    l.read().unwrap_or_else(|_| poisoned(what))
}

/// Takes the write guard of `l`; aborts the process if it is poisoned.
pub fn write<'a, T>(l: &'a RwLock<T>, what: &str) -> RwLockWriteGuard<'a, T> {
    l.write().unwrap_or_else(|_| poisoned(what))
}

#[cold]
fn poisoned(what: &str) -> ! {
    // stderr, not tracing: core has no logger, and the process is about to end.
    eprintln!(
        "fatal: the {what} lock is poisoned (a thread panicked while changing it); \
         aborting so the node restarts from its store"
    );
    std::process::abort()
}
