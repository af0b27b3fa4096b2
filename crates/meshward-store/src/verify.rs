//! `meshward store verify`: a full offline check of a store by replaying its chain.

use std::path::Path;

use meshward_core::block::CertifiedBlock;
use meshward_core::chain;
use meshward_core::hash::Hash;
use meshward_core::tx::TxBody;
use redb::{DatabaseError, ReadTransaction, ReadableDatabase, ReadableTableMetadata};
use tracing::{debug, info};

use crate::error::{Corruption, OpenError, VerifyError};
use crate::format::{BLOCKS, BLOCK_HASH, COMMITMENTS, HANDOFFS};
use crate::store::{builder, check_chain_end, read_meta, read_state_records, Fault};

/// What [`verify_chain`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Blocks replayed.
    pub blocks: u64,
    /// Transactions executed.
    pub txs: u64,
    /// Anchor transactions among them.
    pub anchors: u64,
    /// The last block's height; 0 for a store with no blocks.
    pub tip_height: u64,
    /// State records compared with the replayed state.
    pub state_records: u64,
}

/// Replays the whole chain of the store at `path` from its genesis and checks everything: each
/// block decodes and sits at its height, links to the one before, carries a valid certificate
/// from the validator set in force, has a body that matches its header, executes (every
/// signature verified) to the state root in its header; the hash, commitment and handoff
/// indexes agree with the blocks; and the stored state records equal the replayed state.
///
/// The file is opened read-only and never repaired; only a file that needs crash recovery is
/// opened for writing, so that redb can recover it first (that changes no block or state row).
/// The error names the first bad height.
pub fn verify_chain(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    let path = path.as_ref();
    if !path.try_exists().map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })? {
        return Err(OpenError::NotFound {
            path: path.to_path_buf(),
        }
        .into());
    }
    // redb trusts the page structure of a file opened read-only, and redb 4.6 can panic on a
    // file damaged outside redb (cberner/redb#1334 is that class of bug; checksums are only
    // verified by a writable open with an integrity check, which this tool must not do). A
    // verifier exists for damaged files, so such a panic is reported as damage.
    let result = std::panic::catch_unwind(|| open_and_run(path)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(OpenError::Damaged {
            path: path.to_path_buf(),
            reason: format!("reading the file panicked, so it is most likely damaged ({reason})"),
        }
        .into())
    });
    let report = result?;
    info!(
        path = %path.display(),
        blocks = report.blocks,
        txs = report.txs,
        height = report.tip_height,
        "store verified"
    );
    Ok(report)
}

fn open_and_run(path: &Path) -> Result<VerifyReport, VerifyError> {
    match builder().open_read_only(path) {
        Ok(db) => run(
            &db.begin_read().map_err(|e| db_error(path, e.into()))?,
            path,
        ),
        Err(DatabaseError::RepairAborted) => {
            info!(path = %path.display(), "store needs crash recovery before verification");
            let db = builder()
                .open(path)
                .map_err(|e| open_error(path, e.into()))?;
            let rtx = db.begin_read().map_err(|e| db_error(path, e.into()))?;
            run(&rtx, path)
        }
        Err(e) => Err(open_error(path, e.into())),
    }
}

fn open_error(path: &Path, e: redb::Error) -> VerifyError {
    match Fault::Db(e).into_open(path) {
        OpenError::Storage { source, .. } => db_error(path, *source),
        other => other.into(),
    }
}

fn db_error(path: &Path, e: redb::Error) -> VerifyError {
    VerifyError::Storage {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

fn run(rtx: &ReadTransaction, path: &Path) -> Result<VerifyReport, VerifyError> {
    replay(rtx, path).map_err(|f| match f {
        Fault::Db(e) => db_error(path, e),
        Fault::Corrupt { height, reason } => VerifyError::Corrupt {
            path: path.to_path_buf(),
            height,
            reason: Box::new(reason),
        },
        Fault::Open(e) => e.into(),
    })
}

fn replay(rtx: &ReadTransaction, path: &Path) -> Result<VerifyReport, Fault> {
    let meta = read_meta(rtx, path)?;
    let tip = meta.tip_height;
    let mut state = meta.genesis.state();
    state.flush();
    let blocks = rtx.open_table(BLOCKS)?;
    let hash_index = rtx.open_table(BLOCK_HASH)?;
    let commitments = rtx.open_table(COMMITMENTS)?;
    let handoffs = rtx.open_table(HANDOFFS)?;
    let mut report = VerifyReport {
        blocks: 0,
        txs: 0,
        anchors: 0,
        tip_height: tip,
        state_records: 0,
    };
    let mut prev = meta.genesis.hash();
    let mut expected = 1u64;
    // Commitments whose index row points at this anchor: the first anchor of each.
    let mut first_anchors = 0u64;
    let mut changes = 0u64;
    for row in blocks.range::<u64>(..)? {
        let (k, v) = row?;
        let height = k.value();
        if height > tip {
            return Err(Fault::corrupt(height, Corruption::BeyondTip { tip }));
        }
        if height != expected {
            return Err(Fault::corrupt(expected, Corruption::Missing));
        }
        let bad = |reason| Fault::corrupt(height, reason);
        let cb = CertifiedBlock::decode_bytes(v.value()).map_err(|e| bad(Corruption::Decode(e)))?;
        chain::apply_certified(&mut state, &prev, height, &cb, true)
            .map_err(|e| bad(Corruption::Replay(e)))?;
        let hash = cb.block.header.hash();
        if hash_index.get(hash.as_bytes())?.map(|g| g.value()) != Some(height) {
            return Err(bad(Corruption::HashIndex));
        }
        for (i, tx) in cb.block.txs.iter().enumerate() {
            let i = u32::try_from(i).expect("a block holds at most MAX_BLOCK_TXS transactions");
            match &tx.body {
                TxBody::Anchor(a) => {
                    report.anchors += 1;
                    let at = commitments.get(a.commitment.as_bytes())?.map(|g| g.value());
                    match at {
                        Some(loc) if loc == (height, i) => first_anchors += 1,
                        Some(loc) if loc < (height, i) => {
                            if !is_anchor_of(rtx, loc, &a.commitment)? {
                                return Err(bad(Corruption::CommitmentIndex { index: i }));
                            }
                        }
                        _ => return Err(bad(Corruption::CommitmentIndex { index: i })),
                    }
                }
                TxBody::ValidatorSetChange(_) => {
                    changes += 1;
                    if handoffs.get((height, i))?.is_none() {
                        return Err(bad(Corruption::HandoffIndex { index: i }));
                    }
                }
                _ => {}
            }
        }
        report.blocks += 1;
        report.txs += cb.block.txs.len() as u64;
        debug!(height, txs = cb.block.txs.len(), "block verified");
        prev = hash;
        expected += 1;
    }
    check_chain_end(expected, tip, hash_index.len()?)?;
    let rows = commitments.len()?;
    if rows != first_anchors {
        return Err(Fault::corrupt(
            tip,
            Corruption::CommitmentRows {
                rows,
                anchors: first_anchors,
            },
        ));
    }
    let rows = handoffs.len()?;
    if rows != changes {
        return Err(Fault::corrupt(
            tip,
            Corruption::HandoffRows { rows, changes },
        ));
    }
    let stored = read_state_records(rtx)?;
    let replayed = state.all_records();
    report.state_records = stored.len() as u64;
    let differs = stored
        .iter()
        .zip(&replayed)
        .find(|(s, r)| s != r)
        .map(|(s, _)| s.0);
    let slot = match differs {
        Some(slot) => Some(slot),
        None if stored.len() != replayed.len() => Some(stored.len().min(replayed.len()) as u64),
        None => None,
    };
    if let Some(slot) = slot {
        return Err(Fault::corrupt(tip, Corruption::StateRecord { slot }));
    }
    Ok(report)
}

/// Whether the transaction at `loc` is an anchor of `commitment`: the check for a commitment
/// anchored more than once, whose index row points at its first anchor.
fn is_anchor_of(rtx: &ReadTransaction, loc: (u64, u32), commitment: &Hash) -> Result<bool, Fault> {
    let blocks = rtx.open_table(BLOCKS)?;
    let Some(bytes) = blocks.get(loc.0)? else {
        return Ok(false);
    };
    let Ok(cb) = CertifiedBlock::decode_bytes(bytes.value()) else {
        return Ok(false);
    };
    Ok(matches!(
        cb.block.txs.get(loc.1 as usize).map(|t| &t.body),
        Some(TxBody::Anchor(a)) if a.commitment == *commitment
    ))
}
