//! The gateway's mailboxes: envelopes held for devices that are offline, in their own redb file
//! ([`meshward_store::MailboxStore`], `mailbox.redb` in the data dir).
//!
//! Owner and discipline. One writer thread (`mailbox-writer`) owns every write: deposits,
//! replicas from other gateways and acknowledgements reach it on a bounded channel of
//! [`MAILBOX_QUEUE`] requests and get their answer on a oneshot. The thread also owns the
//! replay set (the commitments of the last [`SEEN_ENVELOPES`] envelopes stored here), so the
//! replay check and the write it guards are one step. A write is an fsynced redb commit, which
//! must not run on the async runtime's workers; a dedicated thread keeps it off them and keeps
//! mailbox writes in arrival order. When the queue is full a request is refused at once
//! ([`MailboxRefusal::Busy`]) rather than queued without bound: the device tries another
//! gateway. Reads ([`Mailboxes::list`], [`Mailboxes::stats`]) are redb read transactions and run
//! on the caller's thread, concurrently with the writer.
//!
//! The ledger checks (is the sender active, may it send to the recipient) happen before a
//! request reaches this component, in the RPC and API handlers; this component enforces only
//! the storage limits and the replay rule.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_store::{MailboxError, MailboxLimits, MailboxStats, MailboxStore};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, warn};

/// Envelope commitments remembered to refuse a replayed deposit.
pub const SEEN_ENVELOPES: usize = 65_536;
/// Most write requests waiting for the writer thread; beyond that a request is refused as busy.
pub const MAILBOX_QUEUE: usize = 256;

/// Why a mailbox write was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxRefusal {
    /// This gateway already stored an envelope with this commitment.
    #[error("this envelope was already deposited here")]
    Replay,
    /// The write queue is full.
    #[error("the mailboxes are busy; retry, or use another gateway")]
    Busy,
    /// The writer thread has stopped (the node is shutting down).
    #[error("the mailboxes are stopped")]
    Stopped,
    /// The store refused or failed the write (limits, disk).
    #[error(transparent)]
    Store(#[from] MailboxError),
}

enum Write {
    Put {
        recipient: PublicKey,
        commitment: Hash,
        envelope: Vec<u8>,
        reply: oneshot::Sender<Result<u64, MailboxRefusal>>,
    },
    Ack {
        recipient: PublicKey,
        up_to: u64,
        reply: oneshot::Sender<Result<usize, MailboxRefusal>>,
    },
}

/// A handle on the mailboxes. Cheap to clone; the writer thread ends when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Mailboxes {
    store: Arc<MailboxStore>,
    writes: mpsc::Sender<Write>,
    write_errors: Arc<AtomicU64>,
    /// Counts the envelopes stored since the start, for readers that wait for new mail.
    stored: Arc<watch::Sender<u64>>,
}

/// The writer thread, for waiting on it at shutdown.
pub struct MailboxWriter(JoinHandle<()>);

impl MailboxWriter {
    /// Waits until the writer has finished its queue; it does once every [`Mailboxes`] handle
    /// is gone.
    pub fn join(self) {
        if self.0.join().is_err() {
            warn!("the mailbox writer thread panicked");
        }
    }
}

impl Mailboxes {
    /// Opens (or creates) the mailbox file at `path` and starts its writer thread.
    pub fn open(
        path: &Path,
        limits: MailboxLimits,
    ) -> Result<(Mailboxes, MailboxWriter), MailboxError> {
        let mut store = MailboxStore::open(path)?;
        store.set_limits(limits);
        Ok(Self::start(store))
    }

    /// Starts the writer thread over an opened mailbox store.
    pub fn start(store: MailboxStore) -> (Mailboxes, MailboxWriter) {
        let store = Arc::new(store);
        let (writes, rx) = mpsc::channel(MAILBOX_QUEUE);
        let writer_store = store.clone();
        let write_errors = Arc::new(AtomicU64::new(0));
        let errors = write_errors.clone();
        let thread = std::thread::Builder::new()
            .name("mailbox-writer".into())
            .spawn(move || writer(&writer_store, rx, &errors))
            .expect("the OS can start one more thread at node start");
        (
            Mailboxes {
                store,
                writes,
                write_errors,
                stored: Arc::new(watch::channel(0).0),
            },
            MailboxWriter(thread),
        )
    }

    /// Writes the mailbox file failed (disk full, I/O error) since the start; refusals by the
    /// limits are not counted.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Stores `envelope` (whose commitment is `commitment`) for `recipient`, once: the same
    /// commitment is refused as a replay while this gateway remembers it. Returns the
    /// envelope's mailbox sequence number.
    pub async fn deposit(
        &self,
        recipient: PublicKey,
        commitment: Hash,
        envelope: Vec<u8>,
    ) -> Result<u64, MailboxRefusal> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Put {
            recipient,
            commitment,
            envelope,
            reply,
        })?;
        let n = answer.await.map_err(|_| MailboxRefusal::Stopped)??;
        self.stored.send_modify(|c| *c += 1);
        Ok(n)
    }

    /// Changes each time an envelope is stored, for any recipient: a reader that pushes one
    /// device's mail waits on it, then lists that mailbox again.
    pub fn watch_stored(&self) -> watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// Removes `recipient`'s envelopes up to `up_to`; returns how many went.
    pub async fn ack(&self, recipient: PublicKey, up_to: u64) -> Result<usize, MailboxRefusal> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Ack {
            recipient,
            up_to,
            reply,
        })?;
        answer.await.map_err(|_| MailboxRefusal::Stopped)?
    }

    fn send(&self, w: Write) -> Result<(), MailboxRefusal> {
        self.writes.try_send(w).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => MailboxRefusal::Busy,
            mpsc::error::TrySendError::Closed(_) => MailboxRefusal::Stopped,
        })
    }

    /// Up to `max` envelopes waiting for `recipient` after sequence number `after`, in order.
    pub fn list(
        &self,
        recipient: &PublicKey,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, MailboxError> {
        self.store.list(recipient, after, max)
    }

    /// The mailbox file's path.
    pub fn path(&self) -> std::path::PathBuf {
        self.store.path().to_path_buf()
    }

    /// The limits in force.
    pub fn limits(&self) -> MailboxLimits {
        self.store.limits()
    }

    /// What waits, over all recipients.
    pub fn stats(&self) -> Result<MailboxStats, MailboxError> {
        self.store.stats()
    }
}

/// The replay set: the last [`SEEN_ENVELOPES`] commitments stored.
#[derive(Default)]
struct Seen {
    set: HashSet<Hash>,
    order: VecDeque<Hash>,
}

impl Seen {
    /// Records `h`; false if it was already there.
    fn insert(&mut self, h: Hash) -> bool {
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        while self.order.len() > SEEN_ENVELOPES {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn forget(&mut self, h: &Hash) {
        self.set.remove(h);
    }
}

/// Counts a failed write, and logs the first of a run of them at error (a full disk fails every
/// write: one line says so, the rest are at debug).
fn note_failure(errors: &AtomicU64, failing: &mut bool, e: &MailboxError) {
    if matches!(e, MailboxError::Storage { .. }) {
        errors.fetch_add(1, Ordering::Relaxed);
        if !*failing {
            error!(error = %e, "cannot write the mailbox file; deposits and acks fail until it can");
        }
        *failing = true;
    }
}

fn writer(store: &MailboxStore, mut rx: mpsc::Receiver<Write>, errors: &AtomicU64) {
    let mut seen = Seen::default();
    // Whether the last write failed on storage.
    let mut failing = false;
    while let Some(w) = rx.blocking_recv() {
        match w {
            Write::Put {
                recipient,
                commitment,
                envelope,
                reply,
            } => {
                let result = if !seen.insert(commitment) {
                    Err(MailboxRefusal::Replay)
                } else {
                    match store.put(&recipient, &envelope) {
                        Ok(n) => {
                            failing = false;
                            Ok(n)
                        }
                        Err(e) => {
                            note_failure(errors, &mut failing, &e);
                            // Not stored: the same envelope may come again.
                            seen.forget(&commitment);
                            Err(MailboxRefusal::Store(e))
                        }
                    }
                };
                if let Err(e) = &result {
                    debug!(recipient = %recipient, commitment = %commitment, error = %e, "envelope not stored");
                }
                let _ = reply.send(result);
            }
            Write::Ack {
                recipient,
                up_to,
                reply,
            } => {
                let r = store.ack(&recipient, up_to);
                match &r {
                    Ok(_) => failing = false,
                    Err(e) => note_failure(errors, &mut failing, e),
                }
                let _ = reply.send(r.map_err(MailboxRefusal::Store));
            }
        }
    }
    debug!("mailbox writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> (Mailboxes, MailboxWriter) {
        Mailboxes::open(&dir.path().join("mailbox.redb"), MailboxLimits::default()).unwrap()
    }

    #[tokio::test]
    async fn a_deposit_is_stored_once_and_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mb, writer) = open(&dir);
        let d = PublicKey([1; 32]);
        let n = mb.deposit(d, Hash([9; 32]), b"env".to_vec()).await.unwrap();
        assert!(matches!(
            mb.deposit(d, Hash([9; 32]), b"env".to_vec()).await,
            Err(MailboxRefusal::Replay)
        ));
        assert_eq!(mb.list(&d, 0, 10).unwrap(), vec![(n, b"env".to_vec())]);
        assert_eq!(mb.ack(d, n).await.unwrap(), 1);
        assert_eq!(mb.stats().unwrap().envelopes, 0);
        drop(mb);
        writer.join();
    }

    #[tokio::test]
    async fn a_refused_write_is_not_remembered_as_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MailboxStore::open(dir.path().join("mailbox.redb")).unwrap();
        store.set_limits(MailboxLimits {
            max_envelope_bytes: 4,
            ..MailboxLimits::default()
        });
        let (mb, _writer) = Mailboxes::start(store);
        let d = PublicKey([1; 32]);
        assert!(matches!(
            mb.deposit(d, Hash([3; 32]), vec![0; 5]).await,
            Err(MailboxRefusal::Store(MailboxError::TooLarge { .. }))
        ));
        // Not a replay: nothing was stored the first time.
        mb.deposit(d, Hash([3; 32]), vec![0; 4]).await.unwrap();
    }

    #[test]
    fn the_replay_set_is_bounded() {
        let mut s = Seen::default();
        for i in 0..(SEEN_ENVELOPES as u64 + 10) {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_be_bytes());
            assert!(s.insert(Hash(h)));
        }
        assert_eq!(s.set.len(), SEEN_ENVELOPES);
        assert_eq!(s.order.len(), SEEN_ENVELOPES);
        // The oldest were forgotten, the newest remembered.
        assert!(s.insert(Hash([0; 32])));
        let mut last = [0u8; 32];
        last[..8].copy_from_slice(&(SEEN_ENVELOPES as u64 + 9).to_be_bytes());
        assert!(!s.insert(Hash(last)));
    }
}
