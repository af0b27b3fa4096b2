//! Helpers shared by the integration tests.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use meshward_core::genesis::Genesis;
use meshward_core::ids::SignKey;
use meshward_core::state::AdminSet;
use meshward_core::tx::{Validator, ValidatorSet};
use meshward_store::format;
use meshward_store::synth::Synth;
use rand::rngs::OsRng;
use redb::Database;

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

/// The stored row of block `height`, read with redb directly.
pub(crate) fn raw_block(path: &Path, height: u64) -> Vec<u8> {
    let db = Database::open(path).unwrap();
    meshward_store::raw::row(&db, height)
        .unwrap()
        .unwrap_or_else(|| panic!("no row for block {height}"))
}

/// Rewrites the row of block `height` in place with redb directly (so redb's checksums stay
/// valid and only the store's own checks can notice), after `edit` changes it; `edit` keeps
/// the length.
pub(crate) fn edit_block_row(path: &Path, height: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = raw_block(path, height);
    edit(&mut bytes);
    let db = Database::open(path).unwrap();
    meshward_store::raw::overwrite(&db, height, &bytes).unwrap();
}

/// Offset of a byte inside the block header's `state_root` in the stored row of block
/// `height`: after the row version, the head form, the time (a varint), the previous hash, the
/// proposer (a one-byte validator index) and the transaction root.
pub(crate) fn header_state_root_offset(path: &Path, height: u64) -> usize {
    let row = raw_block(path, height);
    assert_eq!(row[1], 1, "a compact head");
    let time_len = row[2..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    2 + time_len + 32 + 1 + 32 + 5
}

/// Offset of a byte in the signature of transaction `index` of the stored row at `height`.
pub(crate) fn tx_signature_offset(path: &Path, height: u64, index: usize) -> usize {
    let row = raw_block(path, height);
    let store = meshward_store::Store::open(path).unwrap();
    let cb = store.block(height).unwrap().unwrap();
    let sig = cb.block.txs[index].sig.0;
    row.windows(64)
        .position(|w| w == sig.as_slice())
        .expect("the transaction's signature is inside the row")
        + 10
}
