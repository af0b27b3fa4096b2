//! In-place upgrade of a format-2 chain store to format 3: builds the `key_changes` index from
//! the stored blocks and sets the format version, in one write transaction (a crash leaves the
//! file at format 2, and the next open upgrades it again).

use std::path::Path;

use meshward_core::codec::Decode;
use meshward_core::hash::Hash;
use meshward_core::state::State;
use redb::{Database, ReadableDatabase};
use tracing::info;

use crate::compact::Env;
use crate::error::{Corruption, OpenError};
use crate::format::{
    location, prefix, read_u32, read_u64, FORMAT_VERSION, FORMAT_VERSION_2, KEY_CHANGES, META,
    META_FORMAT_VERSION, META_GENESIS, META_TIP_HEIGHT,
};
use crate::rows::key_change_of;
use crate::store::{read_block, read_sets, read_state_records, Fault};

/// Upgrades `db` if it is a format-2 store; any other version is left to the open's checks.
pub(crate) fn v2_to_v3(db: &Database, path: &Path) -> Result<(), Fault> {
    let meta_err = |what| {
        Fault::Open(OpenError::Meta {
            path: path.to_path_buf(),
            what,
        })
    };
    let mut rows = Vec::new();
    let tip = {
        let rtx = db.begin_read()?;
        let Ok(meta) = rtx.open_table(META) else {
            return Ok(());
        };
        let version = meta
            .get(META_FORMAT_VERSION)?
            .and_then(|v| read_u32(v.value()));
        if version != Some(FORMAT_VERSION_2) {
            return Ok(());
        }
        let genesis = meta
            .get(META_GENESIS)?
            .and_then(|v| meshward_core::genesis::Genesis::from_bytes(v.value()).ok())
            .ok_or_else(|| meta_err("genesis"))?;
        let tip = meta
            .get(META_TIP_HEIGHT)?
            .and_then(|v| read_u64(v.value()))
            .ok_or_else(|| meta_err("tip height"))?;
        let accounts = State::from_records(read_state_records(&rtx)?).map_err(|source| {
            Fault::Open(OpenError::State {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let sets = read_sets(&rtx, path)?;
        let env = Env {
            chain_id: &genesis.chain_id,
            accounts: &accounts,
            sets: &sets,
        };
        for height in 1..=tip {
            let cb = read_block(&rtx, height, &env)?
                .ok_or(Fault::corrupt(height, Corruption::Missing))?;
            for (i, tx) in cb.block.txs.iter().enumerate() {
                if let Some(account) = key_change_of(tx) {
                    let i = u32::try_from(i).expect("a block holds at most MAX_BLOCK_TXS txs");
                    rows.push((prefix(&Hash(account.0)), location(height, i)));
                }
            }
        }
        tip
    };
    let wtx = db.begin_write()?;
    {
        let mut table = wtx.open_table(KEY_CHANGES)?;
        for row in &rows {
            table.insert(*row, ())?;
        }
        let mut meta = wtx.open_table(META)?;
        meta.insert(META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes().as_slice())?;
    }
    wtx.commit()?;
    info!(
        path = %path.display(),
        blocks = tip,
        key_changes = rows.len(),
        "store upgraded from format 2 to format 3 (key-change index built)"
    );
    Ok(())
}
