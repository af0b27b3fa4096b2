//! Sync: serving decided blocks to peers that catch up (`GetDecidedValues`,
//! `GetHistoryMinHeight`) and checking and committing the blocks this node gets from them
//! (`ProcessSyncedValue`).

use std::ops::RangeInclusive;

use bytes::Bytes;
use malachitebft_app_channel::app::engine::host::SyncedValueOutcome;
use malachitebft_app_channel::app::types::core::{Round, Validity};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::ProposedValue;
use malachitebft_app_channel::Reply;
use meshward_core::block::CertifiedBlock;
use tracing::{debug, error, warn};

use crate::cert::to_engine_certificate;
use crate::codec::MAX_SYNC_VALUES;
use crate::context::{Address, BlockHash, Height};

use super::decide::CommitError;
use super::{App, Ctx};

/// Most bytes of decided values returned for one sync request (the engine trims further).
const MAX_SYNC_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

impl App {
    /// `GetDecidedValues`: the stored blocks of `range`, within the response limits.
    pub(super) fn on_get_decided_values(
        &self,
        range: RangeInclusive<Height>,
        reply: Reply<Vec<RawDecidedValue<Ctx>>>,
    ) {
        let values = self.decided_values(range.start().0, range.end().0);
        if reply.send(values).is_err() {
            error!("decided values reply dropped");
        }
    }

    /// `GetHistoryMinHeight`: the lowest height this node serves.
    pub(super) fn on_get_history_min_height(&self, reply: Reply<Height>) {
        // Every block since the genesis is kept.
        let min = if self.next_height() > 1 { 1 } else { 0 };
        if reply.send(Height(min)).is_err() {
            error!("history min height reply dropped");
        }
    }

    /// `ProcessSyncedValue`: checks and commits a block a peer sent.
    pub(super) fn on_process_synced_value(
        &mut self,
        height: Height,
        round: Round,
        proposer: Address,
        value_bytes: Bytes,
        reply: Reply<SyncedValueOutcome<Ctx>>,
    ) {
        let outcome = self.synced_value(height.0, round, proposer, value_bytes);
        if reply.send(outcome).is_err() {
            error!(height = height.0, "synced value reply dropped");
        }
    }

    fn decided_values(&self, start: u64, end: u64) -> Vec<RawDecidedValue<Ctx>> {
        let store = self.read();
        let Some((tip, _)) = store.tip() else {
            return Vec::new();
        };
        let start = start.max(1);
        let end = end
            .min(tip)
            .min(start.saturating_add(MAX_SYNC_VALUES as u64 - 1));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for h in start..=end {
            let raw = match store.block_bytes(h) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    warn!(height = h, error = %e, "cannot read block for sync");
                    break;
                }
            };
            let cb = match CertifiedBlock::decode_bytes(&raw) {
                Ok(cb) => cb,
                Err(e) => {
                    error!(height = h, error = %e, "stored block does not decode");
                    break;
                }
            };
            bytes += raw.len();
            if !out.is_empty() && bytes > MAX_SYNC_RESPONSE_BYTES {
                break;
            }
            out.push(RawDecidedValue::new(
                Bytes::from(raw),
                to_engine_certificate(&cb.certificate),
            ));
        }
        debug!(start, end, values = out.len(), "serving decided values");
        out
    }

    fn synced_value(
        &mut self,
        height: u64,
        round: Round,
        proposer: Address,
        value_bytes: Bytes,
    ) -> SyncedValueOutcome<Ctx> {
        let cb = match CertifiedBlock::decode_bytes(&value_bytes) {
            Ok(cb) => cb,
            Err(e) => {
                warn!(height, error = %e, "synced value does not decode");
                return SyncedValueOutcome::PeerFault;
            }
        };
        let hash = cb.block.hash();
        if cb.block.header.height != height
            || cb.certificate.height != height
            || cb.certificate.block_hash != hash
        {
            warn!(height, "synced value is for another height or block");
            return SyncedValueOutcome::PeerFault;
        }
        let verdict = |validity| {
            SyncedValueOutcome::Verdict(ProposedValue {
                height: Height(height),
                round,
                valid_round: Round::Nil,
                proposer,
                value: BlockHash(hash),
                validity,
            })
        };
        let (next, stored) = {
            let s = self.read();
            (s.next_height(), s.tip())
        };
        if height < next {
            let same = match stored {
                Some((h, tip_hash)) if h == height => tip_hash == hash,
                _ => self
                    .read()
                    .block(height)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.block.hash() == hash),
            };
            return if same {
                verdict(Validity::Valid)
            } else {
                SyncedValueOutcome::PeerFault
            };
        }
        if height > next {
            return SyncedValueOutcome::LocalTransientError;
        }
        if let Err(reason) = self.check_last_commit(height, &cb.block) {
            warn!(height, %reason, "synced block refused");
            return SyncedValueOutcome::PeerFault;
        }
        let cert_round = Round::new(cb.certificate.round);
        match self.commit(cb, None, &[], cert_round) {
            Ok(()) => {
                debug!(height, block = %BlockHash(hash), "block synced");
                self.synced.insert(height, ());
                verdict(Validity::Valid)
            }
            Err(CommitError::Store(meshward_store::ApplyError::Rejected { source, .. })) => {
                warn!(height, error = %source, "synced block refused");
                SyncedValueOutcome::PeerFault
            }
            Err(e) => {
                // Logged by `commit`.
                debug!(height, error = %e, "synced block not stored");
                SyncedValueOutcome::LocalTransientError
            }
        }
    }
}
