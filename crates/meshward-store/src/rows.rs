//! Block rows on disk: the block log (rows one after another, cut in page-sized segments) and
//! where each row is in it; reading a row back, its head alone, its certificate and the whole
//! certified block; and the one write transaction that stores a block with everything that goes
//! with it. The row encoding itself is in [`crate::compact`].

use meshward_core::block::{Block, CertifiedBlock, CommitCertificate};
use meshward_core::codec::{DecodeError, Encode};
use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::tx::{Tx, TxBody, ValidatorSet};
use redb::{Database, ReadTransaction, ReadableTable, WriteTransaction};

use crate::compact::{self, Env};
use crate::error::Corruption;
use crate::format::{
    location, prefix, u64_bytes, BLOCK_AT, BLOCK_HASH_IDX, BLOCK_LOG, BLOCK_SEGMENT_BYTES, CERTS,
    COMMITMENT_IDX, HANDOFFS, KEY_CHANGES, META, META_TIP_HASH, META_TIP_HEIGHT, STATE, TX_IDX,
    VALIDATOR_SETS,
};
use crate::store::Fault;

/// Where the row of block `height` is in the log: (offset, length); `None` if there is no
/// such block.
pub(crate) fn locate(rtx: &ReadTransaction, height: u64) -> Result<Option<(u64, u32)>, Fault> {
    Ok(rtx.open_table(BLOCK_AT)?.get(height)?.map(|g| g.value()))
}

/// Bytes `offset .. offset + len` of the block log, from the segments that hold them.
fn read_span(
    log: &impl ReadableTable<u64, &'static [u8]>,
    height: u64,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, Fault> {
    let seg_bytes = BLOCK_SEGMENT_BYTES as u64;
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    if len == 0 {
        return Ok(out);
    }
    let end = offset
        .checked_add(len)
        .ok_or(Fault::corrupt(height, Corruption::Chunks))?;
    for seg in offset / seg_bytes..=(end - 1) / seg_bytes {
        let g = log
            .get(seg)?
            .ok_or(Fault::corrupt(height, Corruption::Chunks))?;
        let v = g.value();
        let start = seg * seg_bytes;
        let from = (offset.max(start) - start) as usize;
        let to = (end.min(start + seg_bytes) - start) as usize;
        let part = v
            .get(from..to)
            .ok_or(Fault::corrupt(height, Corruption::Chunks))?;
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// The row of block `height`, read from the log; `None` if there is none.
pub(crate) fn read_row(rtx: &ReadTransaction, height: u64) -> Result<Option<Vec<u8>>, Fault> {
    let Some((offset, len)) = locate(rtx, height)? else {
        return Ok(None);
    };
    let log = rtx.open_table(BLOCK_LOG)?;
    read_span(&log, height, offset, u64::from(len)).map(Some)
}

/// Decodes the head of block `height` (header and last commit), reading only as many log
/// segments as it needs. `None` if there is no such block.
pub(crate) fn read_head(
    rtx: &ReadTransaction,
    height: u64,
    env: &Env<'_>,
) -> Result<Option<compact::Head>, Fault> {
    let Some((offset, len)) = locate(rtx, height)? else {
        return Ok(None);
    };
    let log = rtx.open_table(BLOCK_LOG)?;
    let seg_bytes = BLOCK_SEGMENT_BYTES as u64;
    let len = u64::from(len);
    // Up to the end of the first segment, then a segment more at a time.
    let mut have = (seg_bytes - offset % seg_bytes).min(len);
    loop {
        let row = read_span(&log, height, offset, have)?;
        match compact::decode_head(&row, height, env) {
            Ok(head) => return Ok(Some(head)),
            Err(DecodeError::UnexpectedEnd { .. }) if have < len => {
                have = (have + seg_bytes).min(len);
            }
            Err(e) => return Err(Fault::corrupt(height, Corruption::Decode(e))),
        }
    }
}

/// The certificate of block `height` (hashing to `hash`): its `certs` row, or else the last
/// commit its successor carries.
pub(crate) fn read_cert(
    rtx: &ReadTransaction,
    height: u64,
    hash: Hash,
    env: &Env<'_>,
) -> Result<CommitCertificate, Fault> {
    let certs = rtx.open_table(CERTS)?;
    if let Some(row) = certs.get(height)? {
        let set = env.sets.at(height).map(|(s, _)| s);
        return compact::decode_cert(row.value(), set, height, hash)
            .map_err(|e| Fault::corrupt(height, Corruption::Decode(e)));
    }
    // Without a `certs` row, the successor must be stored: its last commit is the certificate.
    let Some(next) = read_head(rtx, height + 1, env)? else {
        return Err(Fault::corrupt(height + 1, Corruption::Missing));
    };
    match next.last_commit {
        Some(c) if c.height == height && c.block_hash == hash => Ok(c),
        _ => Err(Fault::corrupt(height, Corruption::MissingCertificate)),
    }
}

/// The block at `height`, decoded and checked as reading needs (at its height, its body
/// matches its header); `None` if there is none.
pub(crate) fn read_plain_block(
    rtx: &ReadTransaction,
    height: u64,
    env: &Env<'_>,
) -> Result<Option<Block>, Fault> {
    let Some(row) = read_row(rtx, height)? else {
        return Ok(None);
    };
    let block = compact::decode_block(&row, height, env)
        .map_err(|e| Fault::corrupt(height, Corruption::Decode(e)))?;
    block
        .check_body()
        .map_err(|e| Fault::corrupt(height, Corruption::Body(e)))?;
    Ok(Some(block))
}

/// The certified block at `height`: [`read_plain_block`] with its certificate.
pub(crate) fn read_block(
    rtx: &ReadTransaction,
    height: u64,
    env: &Env<'_>,
) -> Result<Option<CertifiedBlock>, Fault> {
    let Some(block) = read_plain_block(rtx, height, env)? else {
        return Ok(None);
    };
    let certificate = read_cert(rtx, height, block.header.hash(), env)?;
    Ok(Some(CertifiedBlock { block, certificate }))
}

/// What one block writes besides itself.
pub(crate) struct BlockWrite<'a> {
    pub(crate) height: u64,
    pub(crate) hash: Hash,
    pub(crate) block: &'a Block,
    pub(crate) row: Vec<u8>,
    /// Where the row starts in the block log: the end of the previous block's row.
    pub(crate) log_start: u64,
    pub(crate) cert: Vec<u8>,
    pub(crate) records: &'a [(u64, Vec<u8>)],
    /// A validator set that certifies blocks from the given height on (this block changed it).
    pub(crate) new_set: Option<(u64, &'a ValidatorSet)>,
}

/// Appends a row to the block log at `start` (the log's end) and records where it is. The last
/// segment is rewritten with the new bytes after the old ones; further segments follow.
fn append_row(
    wtx: &WriteTransaction,
    height: u64,
    start: u64,
    row: &[u8],
) -> Result<(), redb::Error> {
    let seg_bytes = BLOCK_SEGMENT_BYTES as u64;
    let mut log = wtx.open_table(BLOCK_LOG)?;
    let (mut pos, mut rest) = (start, row);
    while !rest.is_empty() {
        let seg = pos / seg_bytes;
        let in_seg = (pos % seg_bytes) as usize;
        let take = (BLOCK_SEGMENT_BYTES - in_seg).min(rest.len());
        let mut bytes = match in_seg {
            0 => Vec::with_capacity(take),
            _ => log
                .get(seg)?
                .map(|g| g.value().to_vec())
                .unwrap_or_default(),
        };
        if bytes.len() != in_seg {
            return Err(redb::Error::Corrupted(format!(
                "block log segment {seg} holds {} bytes where block {height} starts at byte {in_seg}",
                bytes.len()
            )));
        }
        bytes.extend_from_slice(&rest[..take]);
        log.insert(seg, bytes.as_slice())?;
        pos += take as u64;
        rest = &rest[take..];
    }
    let len = u32::try_from(row.len()).expect("a block row is under 4 GiB");
    wtx.open_table(BLOCK_AT)?.insert(height, (start, len))?;
    Ok(())
}

/// Writes one block and everything that goes with it in one write transaction: the row
/// (appended to the block log), its certificate (dropping the predecessor's, which this block's last commit now
/// carries), its index rows, a new validator set, the state records it changed and the new
/// tip. A crash at any point leaves either all of it or none of it on disk.
pub(crate) fn write_block(db: &Database, w: &BlockWrite<'_>) -> Result<(), redb::Error> {
    let height = w.height;
    let wtx = db.begin_write()?;
    {
        append_row(&wtx, height, w.log_start, &w.row)?;
        let mut certs = wtx.open_table(CERTS)?;
        certs.insert(height, w.cert.as_slice())?;
        if w.block
            .last_commit
            .as_ref()
            .is_some_and(|c| c.height + 1 == height && c.block_hash == w.block.header.prev_hash)
        {
            certs.remove(height - 1)?;
        }
        let mut index = wtx.open_table(BLOCK_HASH_IDX)?;
        index.insert((prefix(&w.hash), height), ())?;
        let mut commitments = wtx.open_table(COMMITMENT_IDX)?;
        let mut handoffs = wtx.open_table(HANDOFFS)?;
        let mut key_changes = wtx.open_table(KEY_CHANGES)?;
        let mut txs = wtx.open_table(TX_IDX)?;
        for (i, tx) in w.block.txs.iter().enumerate() {
            let i = u32::try_from(i).expect("a block holds at most MAX_BLOCK_TXS transactions");
            let loc = location(height, i);
            txs.insert((prefix(&tx.id()), loc), ())?;
            match &tx.body {
                TxBody::Anchor(a) => {
                    commitments.insert((prefix(&a.commitment), loc), ())?;
                }
                TxBody::ValidatorSetChange(_) => {
                    handoffs.insert((height, i), ())?;
                }
                _ => {}
            }
            if let Some(account) = key_change_of(tx) {
                key_changes.insert((prefix(&Hash(account.0)), loc), ())?;
            }
        }
        if let Some((from, set)) = w.new_set {
            let mut sets = wtx.open_table(VALIDATOR_SETS)?;
            sets.insert(from, set.to_bytes().as_slice())?;
        }
        let mut state = wtx.open_table(STATE)?;
        for (slot, bytes) in w.records {
            state.insert(*slot, bytes.as_slice())?;
        }
        let mut meta = wtx.open_table(META)?;
        meta.insert(META_TIP_HEIGHT, u64_bytes(height).as_slice())?;
        meta.insert(META_TIP_HASH, w.hash.as_bytes().as_slice())?;
    }
    wtx.commit()?;
    Ok(())
}

/// The account whose key `tx` changes: the signer of a `RotateKeys`, the device of a
/// `Reinstate`.
pub(crate) fn key_change_of(tx: &Tx) -> Option<PublicKey> {
    match &tx.body {
        TxBody::RotateKeys { .. } => Some(tx.signer),
        TxBody::Reinstate { device, .. } => Some(*device),
        _ => None,
    }
}
