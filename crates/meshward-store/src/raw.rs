//! A block's stored row, read and rewritten directly in a store file: for tests that damage a
//! store on purpose and for forensics. Nothing here checks anything; a node never calls it.
//!
//! ```
//! use meshward_store::{raw, synth::Synth};
//! let dir = tempfile::tempdir()?;
//! drop(Synth::create(dir.path(), 2)?);
//! # let mut s = Synth::open(dir.path())?; s.write_blocks(1, 0)?; drop(s);
//! let db = redb::Database::open(dir.path().join("meshward.redb"))?;
//! let row = raw::row(&db, 1)?.expect("block 1 is stored");
//! assert_eq!(row[0], 2, "a format-2 row starts with its version");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::format::{BLOCK_AT, BLOCK_LOG, BLOCK_SEGMENT_BYTES};

/// The stored row of block `height`, as the block log holds it.
pub fn row(db: &Database, height: u64) -> Result<Option<Vec<u8>>, redb::Error> {
    let rtx = db.begin_read()?;
    let Some((offset, len)) = rtx.open_table(BLOCK_AT)?.get(height)?.map(|g| g.value()) else {
        return Ok(None);
    };
    let log = rtx.open_table(BLOCK_LOG)?;
    let seg = BLOCK_SEGMENT_BYTES as u64;
    let mut out = Vec::new();
    let end = offset + u64::from(len);
    let mut pos = offset;
    while pos < end {
        let s = pos / seg;
        let v = log
            .get(s)?
            .ok_or_else(|| redb::Error::Corrupted(format!("segment {s} missing")))?;
        let from = (pos - s * seg) as usize;
        let to = (end.min((s + 1) * seg) - s * seg) as usize;
        out.extend_from_slice(&v.value()[from..to]);
        pos = (s + 1) * seg;
    }
    Ok(Some(out))
}

/// Overwrites the row of block `height` with `bytes` of the same length, in place.
pub fn overwrite(db: &Database, height: u64, bytes: &[u8]) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    {
        let (offset, len) = wtx
            .open_table(BLOCK_AT)?
            .get(height)?
            .map(|g| g.value())
            .ok_or_else(|| redb::Error::Corrupted(format!("no block {height}")))?;
        if bytes.len() != len as usize {
            return Err(redb::Error::Corrupted(
                "overwrite keeps the row's length".into(),
            ));
        }
        let mut log = wtx.open_table(BLOCK_LOG)?;
        let seg = BLOCK_SEGMENT_BYTES as u64;
        for (i, b) in bytes.iter().enumerate() {
            let pos = offset + i as u64;
            let s = pos / seg;
            let mut v = log
                .get(s)?
                .map(|g| g.value().to_vec())
                .ok_or_else(|| redb::Error::Corrupted(format!("segment {s} missing")))?;
            v[(pos - s * seg) as usize] = *b;
            log.insert(s, v.as_slice())?;
        }
    }
    wtx.commit()?;
    Ok(())
}

/// Forgets where block `height` is: the block is then missing from the store.
pub fn forget(db: &Database, height: u64) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    wtx.open_table(BLOCK_AT)?.remove(height)?;
    wtx.commit()?;
    Ok(())
}

/// Cuts the row of the last stored block to its first `len` bytes (the log ends with it).
pub fn truncate_last(db: &Database, len: u32) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    {
        let mut at = wtx.open_table(BLOCK_AT)?;
        let last = at.last()?.map(|(k, v)| (k.value(), v.value()));
        let (height, (offset, old)) =
            last.ok_or_else(|| redb::Error::Corrupted("no block".into()))?;
        let len = len.min(old);
        at.insert(height, (offset, len))?;
        let end = offset + u64::from(len);
        let seg = BLOCK_SEGMENT_BYTES as u64;
        let mut log = wtx.open_table(BLOCK_LOG)?;
        let last_seg = end.saturating_sub(1) / seg;
        log.retain(|k, _| k <= last_seg)?;
        let tail = log.get(last_seg)?.map(|g| g.value().to_vec());
        if let Some(v) = tail {
            let keep = (end - last_seg * seg) as usize;
            log.insert(last_seg, &v[..keep.min(v.len())])?;
        }
    }
    wtx.commit()?;
    Ok(())
}
