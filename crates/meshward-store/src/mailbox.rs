//! Mailboxes: envelopes waiting in the store for devices that are offline.
//!
//! Each envelope gets a sequence number from one store-wide counter, so a recipient's envelopes
//! come in increasing order and a number is never reused, even after acknowledgement. A device
//! lists what waits after the last number it has seen, then acknowledges up to the last one it
//! keeps. Every mailbox is bounded ([`MailboxLimits`]): what a peer asks us to hold is hostile
//! until the device fetches it.

use meshward_core::ids::PublicKey;
use redb::{ReadableDatabase, ReadableTable};
use tracing::debug;

use crate::error::MailboxError;
use crate::format::{
    read_u64, u64_bytes, MAILBOX, MAILBOX_LOAD, MAILBOX_MAX_ENVELOPE_BYTES,
    MAILBOX_MAX_PER_RECIPIENT, MAILBOX_MAX_TOTAL_BYTES, MAILBOX_MAX_TOTAL_ENVELOPES, META,
    META_MAILBOX_BYTES, META_MAILBOX_ENVELOPES, META_MAILBOX_NEXT_SEQ,
};
use crate::store::Store;

/// How much the mailboxes may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Most bytes in one envelope (default [`MAILBOX_MAX_ENVELOPE_BYTES`], 65 KiB).
    pub max_envelope_bytes: usize,
    /// Most envelopes waiting for one recipient (default [`MAILBOX_MAX_PER_RECIPIENT`], 1024).
    pub max_per_recipient: u32,
    /// Most envelopes waiting in the store (default [`MAILBOX_MAX_TOTAL_ENVELOPES`], 65 536).
    pub max_total_envelopes: u64,
    /// Most envelope bytes waiting in the store (default [`MAILBOX_MAX_TOTAL_BYTES`], 256 MiB).
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
    pub envelopes: u64,
    pub bytes: u64,
}

/// A failure inside a mailbox operation, before the store's path is attached.
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

impl Store {
    fn mailbox_error(&self, f: Fail) -> MailboxError {
        match f {
            Fail::Db(e) => MailboxError::Storage {
                path: self.path.clone(),
                source: Box::new(e),
            },
            Fail::Mailbox(e) => e,
            Fail::Corrupt(what) => MailboxError::Corrupt {
                path: self.path.clone(),
                what,
            },
        }
    }

    /// Replaces the mailbox limits. Lowering them never drops envelopes already stored; it
    /// only refuses new ones until enough are acknowledged.
    pub fn set_mailbox_limits(&mut self, limits: MailboxLimits) {
        self.mailbox_limits = limits;
    }

    pub fn mailbox_limits(&self) -> MailboxLimits {
        self.mailbox_limits
    }

    /// Stores an envelope for `recipient` and returns its sequence number. The caller checks
    /// that the recipient is an enrolled device; the store enforces the [`MailboxLimits`].
    pub fn mailbox_put(&self, recipient: &PublicKey, envelope: &[u8]) -> Result<u64, MailboxError> {
        let seq = self
            .mailbox_put_inner(recipient, envelope)
            .map_err(|f| self.mailbox_error(f))?;
        debug!(recipient = %recipient, seq, bytes = envelope.len(), "mailbox envelope stored");
        Ok(seq)
    }

    fn mailbox_put_inner(&self, recipient: &PublicKey, envelope: &[u8]) -> Result<u64, Fail> {
        let limits = self.mailbox_limits;
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
            let meta_u64 = |key: &'static str| -> Result<u64, Fail> {
                meta.get(key)?
                    .and_then(|v| read_u64(v.value()))
                    .ok_or(Fail::Corrupt(key))
            };
            let total = meta_u64(META_MAILBOX_ENVELOPES)?;
            let total_bytes = meta_u64(META_MAILBOX_BYTES)?;
            let seq = meta_u64(META_MAILBOX_NEXT_SEQ)?;
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
    pub fn mailbox_list(
        &self,
        recipient: &PublicKey,
        after_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, MailboxError> {
        let max = max.min(self.mailbox_limits.max_per_recipient as usize);
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
        .map_err(|f| self.mailbox_error(f))
    }

    /// Removes every envelope for `recipient` with a sequence number up to `up_to_seq`, and
    /// returns how many were removed.
    pub fn mailbox_ack(
        &self,
        recipient: &PublicKey,
        up_to_seq: u64,
    ) -> Result<usize, MailboxError> {
        let removed = self
            .mailbox_ack_inner(recipient, up_to_seq)
            .map_err(|f| self.mailbox_error(f))?;
        if removed > 0 {
            debug!(recipient = %recipient, up_to_seq, removed, "mailbox envelopes acknowledged");
        }
        Ok(removed)
    }

    fn mailbox_ack_inner(&self, recipient: &PublicKey, up_to_seq: u64) -> Result<usize, Fail> {
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
                let v = meta
                    .get(key)?
                    .and_then(|v| read_u64(v.value()))
                    .ok_or(Fail::Corrupt(key))?;
                meta.insert(key, u64_bytes(v.saturating_sub(less)).as_slice())?;
            }
        }
        wtx.commit()?;
        Ok(gone.len())
    }

    /// What waits in the mailboxes, over all recipients.
    pub fn mailbox_stats(&self) -> Result<MailboxStats, MailboxError> {
        (|| -> Result<_, Fail> {
            let rtx = self.db.begin_read()?;
            let meta = rtx.open_table(META)?;
            let get = |key: &'static str| -> Result<u64, Fail> {
                meta.get(key)?
                    .and_then(|v| read_u64(v.value()))
                    .ok_or(Fail::Corrupt(key))
            };
            Ok(MailboxStats {
                envelopes: get(META_MAILBOX_ENVELOPES)?,
                bytes: get(META_MAILBOX_BYTES)?,
            })
        })()
        .map_err(|f| self.mailbox_error(f))
    }
}
