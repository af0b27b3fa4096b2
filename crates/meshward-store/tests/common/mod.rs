//! Helpers shared by the integration tests.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use meshward_core::codec::Encode;
use meshward_core::genesis::Genesis;
use meshward_core::ids::SignKey;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_store::format;
use meshward_store::synth::Synth;
use rand::rngs::OsRng;
use redb::{Database, ReadableDatabase};

/// The store file of a fleet dir.
pub(crate) fn store_path(dir: &Path) -> PathBuf {
    dir.join(format::FILE_NAME)
}

/// A fleet of `devices` with `blocks` blocks of `anchors` anchors each (the first block enrolls).
pub(crate) fn fleet(dir: &Path, devices: usize, blocks: u64, anchors: usize) -> Synth {
    let mut s = Synth::create(dir, devices).unwrap();
    s.write_blocks(blocks, anchors).unwrap();
    s
}

/// A genesis with fresh keys, for tests that need a store and no chain.
pub(crate) fn genesis() -> Genesis {
    let admin = SignKey::generate(&mut OsRng);
    let vals = (0..4)
        .map(|_| Validator {
            key: SignKey::generate(&mut OsRng).public(),
            power: 1,
        })
        .collect();
    Genesis {
        chain_id: "test".into(),
        genesis_time_ms: 1,
        admins: AdminSet::new(vec![admin.public()], 1).unwrap(),
        validators: ValidatorSet::new(vals).unwrap(),
    }
}

/// The stored bytes of block `height`, read with redb directly.
pub(crate) fn raw_block(path: &Path, height: u64) -> Vec<u8> {
    let db = Database::open(path).unwrap();
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(format::BLOCKS).unwrap();
    let v = t.get(height).unwrap().unwrap().value().to_vec();
    v
}

/// Rewrites the row of block `height` with redb directly (so redb's checksums stay valid and
/// only the store's own checks can notice), after `edit` changes it.
pub(crate) fn edit_block_row(path: &Path, height: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = raw_block(path, height);
    edit(&mut bytes);
    let db = Database::open(path).unwrap();
    let wtx = db.begin_write().unwrap();
    {
        let mut t = wtx.open_table(format::BLOCKS).unwrap();
        t.insert(height, bytes.as_slice()).unwrap();
    }
    wtx.commit().unwrap();
}

/// Offset of a byte inside the block header's `time_ms` field of a stored row:
/// certified-block version, block version, header version, chain id (u32 length + bytes),
/// height, previous hash, then the time.
pub(crate) fn header_time_offset(chain_id: &str) -> usize {
    3 + 4 + chain_id.len() + 8 + 32 + 4
}

/// Offset of a byte in the signature of transaction `index` of the stored row at `height`.
pub(crate) fn tx_signature_offset(path: &Path, height: u64, index: usize) -> usize {
    let row = raw_block(path, height);
    let cb = meshward_core::CertifiedBlock::decode_bytes(&row).unwrap();
    let tx = cb.block.txs[index].to_bytes();
    let at = row
        .windows(tx.len())
        .position(|w| w == tx.as_slice())
        .expect("the transaction's encoding is inside the row");
    // A transaction ends with its 64-byte signature and a u32 co-signature count.
    at + tx.len() - 4 - 10
}
