//! `meshward store verify`: a full offline check of a store by replaying its chain.

use std::path::Path;

use meshward_core::chain;
use meshward_core::hash::Hash;
use meshward_core::state::{State, StateView};
use meshward_core::tx::TxBody;
use redb::{
    DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
};
use tracing::{debug, info};

use crate::compact::{Env, SetHistory};
use crate::error::{Corruption, OpenError, VerifyError};
use crate::format::{
    location, prefix, BLOCK_AT, BLOCK_HASH_IDX, BLOCK_LOG, BLOCK_SEGMENT_BYTES, CERTS,
    COMMITMENT_IDX, HANDOFFS, KEY_CHANGES, TX_IDX,
};
use crate::rows::key_change_of;
use crate::store::{builder, read_block, read_meta, read_sets, read_state_records, Fault};

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
    // Rows name accounts by slot: the stored final state resolves every slot ever given, and
    // rows name validators by index into the recorded set history. Both are untrusted here:
    // a wrong slot or set changes a rebuilt block, which then fails its hash link, certificate
    // or replay, and both are compared with the replayed chain at the end.
    let stored = read_state_records(rtx)?;
    let accounts = State::from_records(stored.clone()).map_err(|source| {
        Fault::Open(OpenError::State {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let recorded_sets = read_sets(rtx, path)?;
    let env = Env {
        chain_id: &meta.genesis.chain_id,
        accounts: &accounts,
        sets: &recorded_sets,
    };
    let mut state = meta.genesis.state();
    state.flush();
    let mut replayed_sets = SetHistory::default();
    replayed_sets.push(1, state.validators().clone());
    let hash_index = rtx.open_table(BLOCK_HASH_IDX)?;
    let tx_index = rtx.open_table(TX_IDX)?;
    let commitments = rtx.open_table(COMMITMENT_IDX)?;
    let handoffs = rtx.open_table(HANDOFFS)?;
    let key_changes = rtx.open_table(KEY_CHANGES)?;
    let mut rekeys = 0u64;
    let certs = rtx.open_table(CERTS)?;
    let mut report = VerifyReport {
        blocks: 0,
        txs: 0,
        anchors: 0,
        tip_height: tip,
        state_records: 0,
    };
    if let Some((k, _)) = rtx.open_table(BLOCK_AT)?.last()? {
        let h = k.value();
        if h > tip {
            return Err(Fault::corrupt(h, Corruption::BeyondTip { tip }));
        }
    }
    // Rows follow one another in the log with no gap or overlap.
    let mut log_end = 0u64;
    let mut prev = meta.genesis.hash();
    let mut changes = 0u64;
    // Heights whose certificate must have a `certs` row: the tip, and any block whose successor
    // carries no last commit for it.
    let mut cert_rows = 0u64;
    for height in 1..=tip {
        let bad = |reason| Fault::corrupt(height, reason);
        match crate::rows::locate(rtx, height)? {
            Some((offset, len)) if offset == log_end => log_end += u64::from(len),
            Some(_) => return Err(bad(Corruption::Chunks)),
            None => return Err(bad(Corruption::Missing)),
        }
        let cb = read_block(rtx, height, &env)?.ok_or(bad(Corruption::Missing))?;
        if cb.block.header.height != height {
            return Err(bad(Corruption::WrongHeight {
                found: cb.block.header.height,
            }));
        }
        chain::apply_certified(&mut state, &prev, height, &cb, true)
            .map_err(|e| bad(Corruption::Replay(e)))?;
        replayed_sets.push(height + 1, state.validators().clone());
        let hash = cb.block.header.hash();
        if hash_index.get((prefix(&hash), height))?.is_none() {
            return Err(bad(Corruption::HashIndex));
        }
        let carried =
            cb.block.last_commit.as_ref().is_some_and(|c| {
                c.height + 1 == height && c.block_hash == cb.block.header.prev_hash
            });
        if height > 1 && !carried {
            cert_rows += 1;
        }
        for (i, tx) in cb.block.txs.iter().enumerate() {
            let i = u32::try_from(i).expect("a block holds at most MAX_BLOCK_TXS transactions");
            let loc = location(height, i);
            if tx_index.get((prefix(&tx.id()), loc))?.is_none() {
                return Err(bad(Corruption::TxIndex { index: i }));
            }
            match &tx.body {
                TxBody::Anchor(a) => {
                    report.anchors += 1;
                    if commitments.get((prefix(&a.commitment), loc))?.is_none() {
                        return Err(bad(Corruption::CommitmentIndex { index: i }));
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
            if let Some(account) = key_change_of(tx) {
                rekeys += 1;
                if key_changes.get((prefix(&Hash(account.0)), loc))?.is_none() {
                    return Err(bad(Corruption::KeyChangeIndex { index: i }));
                }
            }
        }
        report.blocks += 1;
        report.txs += cb.block.txs.len() as u64;
        debug!(height, txs = cb.block.txs.len(), "block verified");
        prev = hash;
    }
    // Every segment but the last is full, and the last ends with the tip's row.
    let seg_bytes = BLOCK_SEGMENT_BYTES as u64;
    let log = rtx.open_table(BLOCK_LOG)?;
    let segments = log.len()?;
    for (i, row) in log.range::<u64>(..)?.enumerate() {
        let (k, v) = row?;
        let full = k.value() + 1 < segments;
        let want = if full {
            seg_bytes
        } else {
            log_end - k.value() * seg_bytes
        };
        if k.value() != i as u64 || v.value().len() as u64 != want {
            return Err(Fault::corrupt(tip, Corruption::Chunks));
        }
    }
    if segments != log_end.div_ceil(seg_bytes) {
        return Err(Fault::corrupt(tip, Corruption::Chunks));
    }
    if tip > 0 {
        cert_rows += 1;
        if certs.get(tip)?.is_none() {
            return Err(Fault::corrupt(tip, Corruption::MissingCertificate));
        }
    }
    let rows = hash_index.len()?;
    if rows != tip {
        return Err(Fault::corrupt(
            tip,
            Corruption::HashIndexRows { rows, blocks: tip },
        ));
    }
    let rows = tx_index.len()?;
    if rows != report.txs {
        return Err(Fault::corrupt(
            tip,
            Corruption::TxIndexRows {
                rows,
                txs: report.txs,
            },
        ));
    }
    let rows = commitments.len()?;
    if rows != report.anchors {
        return Err(Fault::corrupt(
            tip,
            Corruption::CommitmentRows {
                rows,
                anchors: report.anchors,
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
    let rows = key_changes.len()?;
    if rows != rekeys {
        return Err(Fault::corrupt(
            tip,
            Corruption::KeyChangeRows {
                rows,
                changes: rekeys,
            },
        ));
    }
    if certs.len()? != cert_rows {
        return Err(Fault::corrupt(tip, Corruption::MissingCertificate));
    }
    let recorded: Vec<_> = recorded_sets.entries().collect();
    let replayed: Vec<_> = replayed_sets.entries().collect();
    if recorded != replayed {
        return Err(Fault::corrupt(tip, Corruption::ValidatorSets));
    }
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
