//! A failing disk under the chain store and the mailbox file: a redb storage backend over the
//! real file that fails the Nth write, fails the Nth sync, or reports the disk full from the Nth
//! write on. At each injection point the store refuses with an error and stops (nothing more is
//! accepted until it is reopened), never panics, and after a reopen on a healthy disk it
//! verifies, holds every block it had accepted (the same blocks as the chain it copies, with at
//! most the refused one on top: a sync can fail after its write went through) and every
//! envelope whose deposit it had confirmed.
//!
//! The points are spread evenly over the operations a fault-free run makes, counted first,
//! so they cover the whole commit path: block rows, indexes, state records, tip, and the
//! commit's own header writes and syncs.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use meshward_core::block::CertifiedBlock;
use meshward_core::ids::Keypair;
use meshward_store::MailboxStore;
use meshward_store::{verify_chain, Store};
use rand::rngs::OsRng;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The Nth write fails (once).
    Write,
    /// The Nth sync fails (once).
    Sync,
    /// Every write from the Nth on fails with "no space left on device".
    Full,
}

/// Counts a backend's writes and syncs, shared with the test after the backend moves into redb.
#[derive(Debug, Default)]
struct Counts {
    writes: AtomicU64,
    syncs: AtomicU64,
    injected: AtomicU64,
}

/// A file backend that fails as told (see [`Fault`]); `at` counts from 1, 0 = never.
struct Faulty {
    inner: FileBackend,
    fault: Fault,
    at: u64,
    counts: Arc<Counts>,
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("fault", &self.fault)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Faulty {
    fn open(path: &Path, fault: Fault, at: u64) -> (Faulty, Arc<Counts>) {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        let counts = Arc::new(Counts::default());
        let b = Faulty {
            inner: FileBackend::new(file).unwrap(),
            fault,
            at,
            counts: counts.clone(),
        };
        (b, counts)
    }

    fn injected(&self, err: io::Error) -> io::Error {
        self.counts.injected.fetch_add(1, Ordering::Relaxed);
        err
    }
}

impl StorageBackend for Faulty {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let n = self.counts.writes.load(Ordering::Relaxed);
        if self.fault == Fault::Full && self.at != 0 && n + 1 >= self.at {
            return Err(self.injected(io::Error::from(io::ErrorKind::StorageFull)));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let n = self.counts.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fault == Fault::Sync && n == self.at {
            return Err(self.injected(io::Error::other("injected fsync failure")));
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let n = self.counts.writes.fetch_add(1, Ordering::Relaxed) + 1;
        match self.fault {
            Fault::Write if n == self.at => {
                return Err(self.injected(io::Error::other("injected write failure")))
            }
            Fault::Full if self.at != 0 && n >= self.at => {
                return Err(self.injected(io::Error::from(io::ErrorKind::StorageFull)))
            }
            _ => {}
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// `k` points spread evenly over `1..=total`.
fn points(total: u64, k: u64) -> Vec<u64> {
    assert!(total >= k, "only {total} operations for {k} points");
    let mut p: Vec<u64> = (1..=k).map(|i| (i * total).div_ceil(k)).collect();
    p.dedup();
    p
}

/// What one run under a fault did.
struct Run {
    /// The last height the store accepted.
    accepted: u64,
    /// The first refusal's message, if any.
    error: Option<String>,
    writes: u64,
    syncs: u64,
}

/// Applies `blocks` to a copy of the empty store `base` under `fault` at `at`. After the first
/// refusal the same block is tried once more: the store must refuse it too (it stops until
/// reopened) and keep its tip; then the run ends.
fn run_chain(base: &Path, path: &Path, blocks: &[CertifiedBlock], fault: Fault, at: u64) -> Run {
    fs::copy(base, path).unwrap();
    let (backend, counts) = Faulty::open(path, fault, at);
    let mut accepted = 0;
    let mut error = None;
    let ops = |c: &Counts| {
        (
            c.writes.load(Ordering::Relaxed),
            c.syncs.load(Ordering::Relaxed),
        )
    };
    // Counted before the store closes: the points fall where an error can be reported.
    let (writes, syncs) = match Store::open_with_backend(path, backend) {
        Err(e) => {
            error = Some(format!("open: {e}"));
            ops(&counts)
        }
        Ok(mut store) => {
            for (i, b) in blocks.iter().enumerate() {
                match store.apply_block(b) {
                    Ok(()) => accepted = i as u64 + 1,
                    Err(e) => {
                        error = Some(e.to_string());
                        // The store stops: after a failed write nothing more is accepted
                        // until it is reopened (redb refuses with PreviousIo), and its tip
                        // stays the last accepted block's.
                        let again = store.apply_block(b);
                        assert!(again.is_err(), "{fault:?} at {at}: accepted after a fault");
                        assert_eq!(store.tip().map_or(0, |t| t.0), accepted);
                        break;
                    }
                }
            }
            let n = ops(&counts);
            drop(store);
            n
        }
    };
    Run {
        accepted,
        error,
        writes,
        syncs,
    }
}

#[test]
fn a_failing_disk_under_the_chain_store_loses_no_accepted_block() {
    let t = tempfile::tempdir().unwrap();
    // The chain to copy: an enrollment block and anchors, real signatures and certificates.
    let src = common::fleet(&t.path().join("src"), 32, 8, 40);
    let tip = src.store().tip().unwrap().0;
    let blocks: Vec<CertifiedBlock> = (1..=tip)
        .map(|h| src.store().block(h).unwrap().unwrap())
        .collect();
    let base = t.path().join("base.redb");
    drop(Store::create(&base, src.store().genesis()).unwrap());
    let path = t.path().join("faulty.redb");

    // A fault-free run counts the operations (and shows the backend itself changes nothing).
    let clean = run_chain(&base, &path, &blocks, Fault::Write, 0);
    assert_eq!(clean.accepted, tip, "{:?}", clean.error);
    assert!(clean.error.is_none());

    eprintln!(
        "{tip} blocks: {} writes, {} syncs without a fault",
        clean.writes, clean.syncs
    );
    let mut cases = Vec::new();
    cases.extend(
        points(clean.writes, 12)
            .into_iter()
            .map(|n| (Fault::Write, n)),
    );
    cases.extend(points(clean.syncs, 6).into_iter().map(|n| (Fault::Sync, n)));
    cases.extend(
        points(clean.writes, 6)
            .into_iter()
            .map(|n| (Fault::Full, n)),
    );
    assert!(cases.len() >= 20, "{} injection points", cases.len());

    for (fault, at) in cases {
        let run = run_chain(&base, &path, &blocks, fault, at);
        let what = format!("{fault:?} at operation {at}");
        let err = run
            .error
            .unwrap_or_else(|| panic!("{what}: the store never noticed the fault"));
        assert!(!err.is_empty(), "{what}: an empty error");
        if fault == Fault::Full {
            assert!(
                err.to_lowercase().contains("space") || err.to_lowercase().contains("full"),
                "{what}: a full disk is not named as such: {err}"
            );
        }
        // On a healthy disk the file opens, verifies, and holds every accepted block: the
        // copied chain's own blocks, with at most the refused one on top.
        let store = Store::open(&path).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let h = store.tip().map_or(0, |t| t.0);
        assert!(
            h >= run.accepted && h <= run.accepted + 1,
            "{what}: accepted up to {}, reopened at {h}",
            run.accepted
        );
        for height in 1..=h {
            assert_eq!(
                store.block(height).unwrap().unwrap().block.hash(),
                blocks[height as usize - 1].block.hash(),
                "{what}: block {height}"
            );
        }
        drop(store);
        let report = verify_chain(&path).unwrap_or_else(|e| panic!("{what}: verify: {e}"));
        assert_eq!(report.tip_height, h, "{what}");
        eprintln!("{what}: accepted {}, reopened at {h}: {err}", run.accepted);
    }
}

/// A confirmed deposit: recipient index, sequence number, envelope.
type Deposit = (usize, u64, Vec<u8>);

/// Deposits into the mailbox file under `fault` at `at`; returns the confirmed deposits, the
/// writes made and the first error.
fn run_mailbox(
    path: &Path,
    who: &[Keypair],
    fault: Fault,
    at: u64,
) -> (Vec<Deposit>, u64, Option<String>) {
    let _ = fs::remove_file(path);
    let (backend, counts) = Faulty::open(path, fault, at);
    let mut kept = Vec::new();
    let mut error = None;
    let writes = match MailboxStore::open_with_backend(path, backend) {
        Err(e) => {
            error = Some(format!("open: {e}"));
            counts.writes.load(Ordering::Relaxed)
        }
        Ok(mb) => {
            for i in 0..60usize {
                let r = i % who.len();
                let envelope = vec![i as u8; 300 + i * 7];
                match mb.put(&who[r].id(), &envelope) {
                    Ok(seq) => kept.push((r, seq, envelope)),
                    Err(e) => {
                        error.get_or_insert(e.to_string());
                    }
                }
            }
            // Counted before the file closes, as for the chain store.
            let n = counts.writes.load(Ordering::Relaxed);
            drop(mb);
            n
        }
    };
    (kept, writes, error)
}

#[test]
fn a_failing_disk_under_the_mailbox_file_loses_no_confirmed_deposit() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("mailbox.redb");
    let who: Vec<Keypair> = (0..3).map(|_| Keypair::generate(&mut OsRng)).collect();
    let (all, writes, err) = run_mailbox(&path, &who, Fault::Write, 0);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(all.len(), 60);

    let mut cases = Vec::new();
    cases.extend(points(writes, 8).into_iter().map(|n| (Fault::Write, n)));
    cases.extend(points(writes, 4).into_iter().map(|n| (Fault::Full, n)));
    for (fault, at) in cases {
        let what = format!("mailbox: {fault:?} at write {at}");
        let (kept, _, err) = run_mailbox(&path, &who, fault, at);
        assert!(err.is_some(), "{what}: the fault went unnoticed");
        let mb = match MailboxStore::open(&path) {
            Ok(mb) => mb,
            // A fault while the file was being initialised: nothing was confirmed.
            Err(e) => {
                assert!(
                    kept.is_empty(),
                    "{what}: reopen failed ({e}) after deposits"
                );
                continue;
            }
        };
        for (r, seq, envelope) in &kept {
            let listed = mb.list(&who[*r].id(), seq - 1, 1).unwrap();
            assert_eq!(
                listed.first().map(|(s, e)| (*s, e.as_slice())),
                Some((*seq, envelope.as_slice())),
                "{what}: deposit {seq} for recipient {r} lost"
            );
        }
    }
}
