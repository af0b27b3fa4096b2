//! Format 1 to format 2: a format-1 store is refused with a message saying how to migrate, and
//! `migrate_v1` replays it (every block checked again) into format 2, mailboxes included,
//! keeping the old file beside it.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;

use common::{fleet, store_path};
use meshward_core::codec::Encode;
use meshward_core::ids::PublicKey;
use meshward_core::tx::TxBody;
use meshward_store::format::{
    FORMAT_VERSION, KEY_CHANGES, MAILBOX, MAILBOX_FILE_NAME, META, META_MAILBOX_NEXT_SEQ,
};
use meshward_store::{migrate_v1, verify_chain, MailboxStore, MigrateError, OpenError, Store};
use redb::TableDefinition;

const V1_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

/// Writes what a format-1 store holding `store`'s chain looked like to `path`: canonical
/// certified blocks by height, the meta rows, and two envelopes in its mailbox table.
fn write_v1(store: &Store, path: &Path, damage_at: Option<u64>) {
    let tip = store.tip().unwrap().0;
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut blocks = w.open_table(V1_BLOCKS).unwrap();
        for h in 1..=tip {
            let mut bytes = store.block(h).unwrap().unwrap().to_bytes();
            if damage_at == Some(h) {
                let n = bytes.len();
                bytes[n - 1] ^= 1;
            }
            blocks.insert(h, bytes.as_slice()).unwrap();
        }
        let mut meta = w.open_table(META).unwrap();
        meta.insert("format_version", 1u32.to_be_bytes().as_slice())
            .unwrap();
        meta.insert("genesis", store.genesis().to_bytes().as_slice())
            .unwrap();
        meta.insert("tip_height", tip.to_be_bytes().as_slice())
            .unwrap();
        meta.insert(META_MAILBOX_NEXT_SEQ, 7u64.to_be_bytes().as_slice())
            .unwrap();
        let mut mb = w.open_table(MAILBOX).unwrap();
        mb.insert((&[1u8; 32], 3u64), [9u8; 40].as_slice()).unwrap();
        mb.insert((&[2u8; 32], 6u64), [8u8; 50].as_slice()).unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn a_format_1_store_is_refused_then_migrated_with_every_block_checked() {
    let src = tempfile::tempdir().unwrap();
    let synth = fleet(src.path(), 4, 6, 3);
    let (tip, tip_hash) = synth.store().tip().unwrap();
    let commitment = synth
        .store()
        .block(4)
        .unwrap()
        .unwrap()
        .block
        .txs
        .iter()
        .find_map(|t| match &t.body {
            TxBody::Anchor(a) => Some(a.commitment),
            _ => None,
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    write_v1(synth.store(), &path, None);

    // Opening says what it is and what to do.
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::UnsupportedFormat {
                found: 1,
                supported: FORMAT_VERSION,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "meshward store migrate --dir {}",
            dir.path().display()
        )),
        "{err}"
    );

    let report = migrate_v1(dir.path()).unwrap();
    assert_eq!(report.blocks, tip);
    assert_eq!(report.envelopes, 2);
    assert!(report.old_file.exists());
    let store = Store::open(&path).unwrap();
    assert_eq!(store.tip(), Some((tip, tip_hash)));
    assert_eq!(store.check_links(1, tip).unwrap(), tip);
    let proof = store.anchor_proof(&commitment).unwrap().unwrap();
    assert_eq!(proof.verify(store.genesis()).unwrap().height, 4);
    drop(store);
    assert_eq!(verify_chain(&path).unwrap().blocks, tip);
    let mb = MailboxStore::open(dir.path().join(MAILBOX_FILE_NAME)).unwrap();
    assert_eq!(
        mb.list(&PublicKey([2; 32]), 0, 10).unwrap(),
        vec![(6, vec![8; 50])]
    );
    assert_eq!(mb.put(&PublicKey([1; 32]), b"new").unwrap(), 7);
    drop(mb);

    // Once done, there is nothing to migrate (and the backup is not overwritten).
    assert!(matches!(
        migrate_v1(dir.path()).unwrap_err(),
        MigrateError::BackupExists { .. }
    ));
}

#[test]
fn a_damaged_format_1_store_is_not_migrated_and_stays_as_it_was() {
    let src = tempfile::tempdir().unwrap();
    let synth = fleet(src.path(), 4, 5, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    write_v1(synth.store(), &path, Some(3));
    let before = std::fs::read(&path).unwrap();
    let err = migrate_v1(dir.path()).unwrap_err();
    assert!(
        matches!(err, MigrateError::Block { height: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("block 3"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.path().join("meshward.redb.v1").exists());
}

/// Turns a current store back into format 2: no `key_changes` table, version 2.
fn make_v2(path: &Path) {
    let db = redb::Database::open(path).unwrap();
    let w = db.begin_write().unwrap();
    assert!(w.delete_table(KEY_CHANGES).unwrap());
    {
        let mut meta = w.open_table(META).unwrap();
        meta.insert("format_version", 2u32.to_be_bytes().as_slice())
            .unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn a_format_2_store_is_upgraded_in_place_by_a_writable_open_or_migrate() {
    let src = tempfile::tempdir().unwrap();
    let synth = fleet(src.path(), 4, 6, 3);
    let tip = synth.store().tip().unwrap();
    drop(synth);
    let path = store_path(src.path());
    for via_migrate in [false, true] {
        make_v2(&path);
        // A read-only check refuses it and says what to run.
        let err = verify_chain(&path).unwrap_err();
        assert!(err.to_string().contains("meshward store migrate"), "{err}");
        if via_migrate {
            let r = migrate_v1(src.path()).unwrap();
            assert!(r.in_place);
            assert_eq!(r.blocks, tip.0);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.tip(), Some(tip));
        drop(store);
        assert_eq!(verify_chain(&path).unwrap().blocks, tip.0);
    }
}
