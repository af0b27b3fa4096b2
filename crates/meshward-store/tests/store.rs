//! Blocks, state and indexes: commit, reopen, tamper detection, verification, proofs.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use common::{edit_block_row, fleet, header_state_root_offset, store_path, tx_signature_offset};
use meshward_core::chain;
use meshward_core::codec::{Decode, Encode};
use meshward_core::hash::Hash;
use meshward_core::ids::SignKey;
use meshward_core::light::TxProof;
use meshward_core::state::StateView;
use meshward_core::tx::{Anchor, Recipient, Tx, TxBody, Validator, ValidatorSet};
use meshward_core::CertifiedBlock;
use meshward_store::synth::{synth_commitment, Synth, SYNTH_CHAIN_ID};
use meshward_store::{verify_chain, ApplyError, Corruption, OpenError, Store, VerifyError};
use rand::rngs::OsRng;

fn root_of(store: &Store) -> Hash {
    store.state().clone().root()
}

/// The certified blocks of a store, from 1 to its tip.
fn chain_of(store: &Store) -> Vec<CertifiedBlock> {
    let tip = store.tip().map_or(0, |t| t.0);
    (1..=tip)
        .map(|h| store.block(h).unwrap().unwrap())
        .collect()
}

#[test]
fn block_and_state_commit_atomically() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = fleet(src_dir.path(), 6, 5, 4);
    let blocks = chain_of(src.store());
    let genesis = src.store().genesis().clone();

    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    drop(Store::create(&path, &genesis).unwrap());
    for cb in &blocks {
        let mut store = Store::open(&path).unwrap();
        store.apply_block(cb).unwrap();
        drop(store);
        // After a reopen both halves of the commit are there: the block is the tip, and the
        // state records give exactly the root its header names.
        let store = Store::open(&path).unwrap();
        let h = cb.block.header.height;
        assert_eq!(store.tip(), Some((h, cb.block.header.hash())));
        assert_eq!(root_of(&store), cb.block.header.state_root);
        assert_eq!(store.block(h).unwrap().as_ref(), Some(cb));
        assert_eq!(store.height_of(&cb.block.header.hash()).unwrap(), Some(h));
    }
    let report = verify_chain(&path).unwrap();
    assert_eq!((report.blocks, report.tip_height), (5, 5));
    assert_eq!(report.anchors, 16);
}

#[test]
fn reopen_restores_state_root() {
    let dir = tempfile::tempdir().unwrap();
    let synth = fleet(dir.path(), 5, 4, 3);
    let root = root_of(synth.store());
    let tip = synth.store().tip();
    let device = synth.devices()[1].id();
    let seq = synth.store().state().account(&device).unwrap().seq;
    drop(synth);

    let store = Store::open(store_path(dir.path())).unwrap();
    assert_eq!(root_of(&store), root);
    assert_eq!(store.tip(), tip);
    assert_eq!(store.state().account(&device).unwrap().seq, seq);
    drop(store);

    // The fleet resumes from what the store holds: sequence numbers continue.
    let mut synth = Synth::open(dir.path()).unwrap();
    synth.write_blocks(2, 3).unwrap();
    assert_eq!(synth.store().tip().unwrap().0, 6);
    drop(synth);
    assert_eq!(verify_chain(store_path(dir.path())).unwrap().tip_height, 6);
}

fn assert_corrupt_at(err: OpenError, height: u64) {
    assert_eq!(err.corrupt_height(), Some(height), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("corrupt at height {height}")),
        "{msg}"
    );
    assert!(msg.contains("meshward store verify --dir"), "{msg}");
}

fn assert_read_corrupt_at(err: meshward_store::ReadError, height: u64) {
    assert!(
        matches!(&err, meshward_store::ReadError::Corrupt { height: h, .. } if *h == height),
        "{err}"
    );
    assert!(
        err.to_string().contains("meshward store verify --dir"),
        "{err}"
    );
}

#[test]
fn tampered_block_is_found_naming_its_height() {
    // A header byte below the tip: opening checks only the tip, so it opens; reading the block
    // finds that no certificate is for it, the link walk finds that the next block does not
    // link to it, and verify names it.
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 5, 2));
    let path = store_path(dir.path());
    let at = header_state_root_offset(&path, 3);
    edit_block_row(&path, 3, |b| b[at] ^= 1);
    let store = Store::open(&path).expect("open checks the tip, in constant time");
    let err = store.block(3).unwrap_err();
    assert!(
        matches!(&err, meshward_store::ReadError::Corrupt { reason, .. } if **reason == Corruption::MissingCertificate),
        "{err}"
    );
    assert_read_corrupt_at(err, 3);
    let err = store.check_links(1, 5).unwrap_err();
    assert!(
        matches!(&err, meshward_store::ReadError::Corrupt { reason, .. } if **reason == Corruption::BrokenLink { prev: 3 }),
        "{err}"
    );
    assert_read_corrupt_at(err, 4);
    assert_eq!(store.check_links(1, 3).unwrap(), 3);
    drop(store);
    assert_eq!(verify_chain(&path).unwrap_err().corrupt_height(), Some(3));

    // The same at the tip: opening refuses it, naming the height.
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 5, 2));
    let path = store_path(dir.path());
    let at = header_state_root_offset(&path, 5);
    edit_block_row(&path, 5, |b| b[at] ^= 1);
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, OpenError::Corrupt { reason, .. } if **reason == Corruption::TipHash),
        "{err}"
    );
    assert_corrupt_at(err, 5);

    // A transaction byte: the body no longer matches the header's transaction root.
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 5, 2));
    let path = store_path(dir.path());
    for h in [4, 5] {
        let at = tx_signature_offset(&path, h, 1);
        edit_block_row(&path, h, |b| b[at] ^= 0x40);
    }
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, OpenError::Corrupt { reason, .. } if matches!(**reason, Corruption::Body(_))),
        "{err}"
    );
    assert_corrupt_at(err, 5);
    assert_eq!(verify_chain(&path).unwrap_err().corrupt_height(), Some(4));

    // A truncated row does not decode, and that is an error too.
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 3, 2));
    let path = store_path(dir.path());
    let half = (common::raw_block(&path, 3).len() / 2) as u32;
    meshward_store::raw::truncate_last(&redb::Database::open(&path).unwrap(), half).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, OpenError::Corrupt { reason, .. } if matches!(**reason, Corruption::Decode(_))),
        "{err}"
    );
    assert_corrupt_at(err, 3);
}

#[test]
fn missing_block_is_found() {
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 4, 1));
    let path = store_path(dir.path());
    let remove = |h: u64| {
        let db = redb::Database::open(&path).unwrap();
        meshward_store::raw::forget(&db, h).unwrap();
    };
    remove(2);
    let store = Store::open(&path).unwrap();
    assert_read_corrupt_at(store.check_links(1, 4).unwrap_err(), 2);
    assert!(store.block(2).unwrap().is_none());
    drop(store);
    assert_eq!(verify_chain(&path).unwrap_err().corrupt_height(), Some(2));
    remove(4);
    assert_corrupt_at(Store::open(&path).unwrap_err(), 4);
}

#[test]
fn verify_chain_names_first_bad_height() {
    let dir = tempfile::tempdir().unwrap();
    drop(fleet(dir.path(), 4, 7, 2));
    let path = store_path(dir.path());
    assert_eq!(verify_chain(&path).unwrap().blocks, 7);

    // A broken signature in the tip's certificate (its own row, not inside a block): structure,
    // links and bodies are intact, so opening (which does not check signatures) succeeds; only
    // the replay finds it.
    {
        let db = redb::Database::open(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(meshward_store::format::CERTS).unwrap();
            let mut row = redb::ReadableTable::get(&t, 7u64)
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let n = row.len();
            row[n - 1] ^= 1;
            t.insert(7u64, row.as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    Store::open(&path).expect("open checks structure, not signatures");
    let err = verify_chain(&path).unwrap_err();
    assert_eq!(err.corrupt_height(), Some(7), "{err}");
    assert!(
        matches!(&err, VerifyError::Corrupt { reason, .. } if matches!(**reason, Corruption::Replay(chain::ChainError::Certificate(_)))),
        "{err}"
    );
    assert!(
        err.to_string().contains("fails verification at height 7"),
        "{err}"
    );
    // Two bad bodies further down: verify names the first.
    for h in [6, 4] {
        let at = tx_signature_offset(&path, h, 0);
        edit_block_row(&path, h, |b| b[at] ^= 2);
    }
    assert_eq!(verify_chain(&path).unwrap_err().corrupt_height(), Some(4));
}

#[test]
fn verify_chain_compares_state_records() {
    let dir = tempfile::tempdir().unwrap();
    let synth = fleet(dir.path(), 4, 3, 2);
    // Rewrite one state record to an older version of itself: the root check on open catches
    // it too, but verify names the slot.
    let device = synth.devices()[0].id();
    drop(synth);
    let path = store_path(dir.path());
    let db = redb::Database::open(&path).unwrap();
    let wtx = db.begin_write().unwrap();
    {
        let mut t = wtx.open_table(meshward_store::format::STATE).unwrap();
        let rows: Vec<(u64, Vec<u8>)> = redb::ReadableTable::range::<u64>(&t, ..)
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect();
        let (slot, bytes) = rows
            .iter()
            .find(|(_, b)| b.windows(32).any(|w| w == device.0))
            .unwrap();
        let mut bytes = bytes.clone();
        // The sequence number follows the id and the signing key.
        let seq_at = bytes.windows(32).position(|w| w == device.0).unwrap() + 64;
        bytes[seq_at + 7] ^= 1;
        t.insert(*slot, bytes.as_slice()).unwrap();
    }
    wtx.commit().unwrap();
    drop(db);
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, OpenError::Corrupt { height: 3, reason, .. } if **reason == Corruption::StateRoot),
        "{err}"
    );
    let err = verify_chain(&path).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Corrupt { height: 3, reason, .. } if matches!(**reason, Corruption::StateRecord { .. })),
        "{err}"
    );
}

/// Applies `cb` to `store`, expects an error, and checks that nothing changed, in memory and
/// after a reopen. Returns the reopened store and the error.
fn rejected_changes_nothing(mut store: Store, cb: &CertifiedBlock) -> (Store, ApplyError) {
    let tip = store.tip();
    let root = root_of(&store);
    let err = store.apply_block(cb).unwrap_err();
    assert_eq!(store.tip(), tip);
    assert_eq!(root_of(&store), root);
    let path = store.path().to_path_buf();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.tip(), tip);
    assert_eq!(root_of(&store), root);
    (store, err)
}

#[test]
fn bad_block_changes_nothing() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = fleet(src_dir.path(), 4, 3, 3);
    let blocks = chain_of(src.store());

    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let mut store = Store::create(&path, src.store().genesis()).unwrap();
    store.apply_block(&blocks[0]).unwrap();
    store.apply_block(&blocks[1]).unwrap();

    // A certificate with too few signatures.
    let mut weak = blocks[2].clone();
    weak.certificate.signatures.truncate(2);
    let (store, err) = rejected_changes_nothing(store, &weak);
    assert!(
        matches!(
            &err,
            ApplyError::Rejected {
                height: 3,
                source: chain::ChainError::Certificate(_)
            }
        ),
        "{err}"
    );
    // A forged signature.
    let mut forged = blocks[2].clone();
    forged.certificate.signatures[0].sig.0[5] ^= 1;
    let (store, _) = rejected_changes_nothing(store, &forged);
    // The wrong previous hash.
    let mut unlinked = blocks[2].clone();
    unlinked.block.header.prev_hash = Hash([9; 32]);
    let (store, err) = rejected_changes_nothing(store, &unlinked);
    assert!(
        matches!(
            &err,
            ApplyError::Rejected {
                source: chain::ChainError::BrokenLink,
                ..
            }
        ),
        "{err}"
    );
    // A block that is already stored.
    let (store, _) = rejected_changes_nothing(store, &blocks[1]);
    // A block certified by the validators whose header names a state root the transactions do
    // not give: the transactions run before the mismatch shows, and the store must drop what
    // they did to its state.
    let mut lying = blocks[2].clone();
    lying.block.header.state_root = Hash([7; 32]);
    lying.certificate = src.certify(&lying.block.header);
    let (store, err) = rejected_changes_nothing(store, &lying);
    assert!(
        matches!(
            &err,
            ApplyError::Rejected {
                source: chain::ChainError::StateRoot,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the store is unchanged"), "{err}");

    // The store still takes the real block 3: sequence numbers were not bumped by the lie.
    let mut store = store;
    store.apply_block(&blocks[2]).unwrap();
    assert_eq!(store.tip(), src.store().tip());
    assert_eq!(root_of(&store), root_of(src.store()));
}

#[test]
fn decided_block_commits_without_reexecution() {
    let dir = tempfile::tempdir().unwrap();
    let mut synth = fleet(dir.path(), 3, 2, 1);
    let (tip, prev) = synth.store().tip().unwrap();
    let height = tip + 1;
    let time_ms = synth.block_time_ms(height);
    let sender = synth.devices()[0].clone();
    let to = synth.devices()[1].id();
    let seq = synth.store().state().account(&sender.id()).unwrap().seq + 1;
    let tx = Tx::sign(
        SYNTH_CHAIN_ID,
        sender.id(),
        &sender.sign,
        seq,
        TxBody::Anchor(Anchor {
            recipient: Recipient::Device(to),
            commitment: Hash([3; 32]),
            count: 1,
            timestamp_ms: time_ms,
            size_bytes: 10,
        }),
    );
    // What consensus does: a proposal built on the store's state without changing it, then
    // certified, then committed with the delta computed while proposing.
    let proposal = chain::build_proposal(
        synth.store().state(),
        prev,
        height,
        time_ms,
        synth.validators()[0].public(),
        vec![tx],
        Vec::new(),
        synth.last_commit().cloned(),
        1000,
        1 << 20,
    );
    assert!(proposal.dropped.is_empty());
    let cb = CertifiedBlock {
        certificate: synth.certify(&proposal.block.header),
        block: proposal.block.clone(),
    };

    // A delta that does not belong to the block is refused, and changes nothing.
    let root = root_of(synth.store());
    let err = synth
        .store_mut()
        .commit_decided(&cb, meshward_core::state::Delta(vec![]))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ApplyError::Rejected {
                source: chain::ChainError::StateRoot,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(synth.store().tip().unwrap().0, tip);
    assert_eq!(root_of(synth.store()), root);
    // So is a block without a valid certificate.
    let mut uncertified = cb.clone();
    uncertified.certificate.signatures.truncate(1);
    assert!(synth
        .store_mut()
        .commit_decided(&uncertified, proposal.delta.clone())
        .is_err());

    synth
        .store_mut()
        .commit_decided(&cb, proposal.delta)
        .unwrap();
    assert_eq!(synth.store().tip(), Some((height, cb.block.header.hash())));
    assert_eq!(root_of(synth.store()), cb.block.header.state_root);
    assert_eq!(
        synth.store().anchor_location(&Hash([3; 32])).unwrap(),
        Some((height, 0))
    );
    drop(synth);
    assert_eq!(
        verify_chain(store_path(dir.path())).unwrap().tip_height,
        height
    );
}

#[test]
fn anchor_proof_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let synth = fleet(dir.path(), 5, 4, 3);
    let store = synth.store();
    let genesis = store.genesis().clone();

    // Device 2's first anchor.
    let sender = synth.devices()[2].id();
    let commitment = synth_commitment(&sender, 1);
    let (height, index) = store.anchor_location(&commitment).unwrap().unwrap();
    let proof = store.anchor_proof(&commitment).unwrap().unwrap();
    assert!(proof.handoffs.is_empty());

    // Checked from its bytes with the genesis alone, as an auditor would.
    let bytes = proof.to_bytes();
    let proven = TxProof::from_bytes(&bytes)
        .unwrap()
        .verify_anchor(&genesis)
        .unwrap();
    assert_eq!(proven.commitment, commitment);
    assert_eq!((proven.height, proven.tx_index), (height, u64::from(index)));
    assert_eq!((proven.sender, proven.seq), (sender, 1));
    assert_eq!(proven.recipient, Recipient::Device(synth.devices()[3].id()));
    assert_eq!(
        proven.block_hash,
        store.block(height).unwrap().unwrap().block.header.hash()
    );

    // Any change to the proof breaks it.
    let mut forged = proof.clone();
    forged.tx.header.time_ms += 1;
    assert!(forged.verify(&genesis).is_err());

    // Every anchor of the chain has a proof.
    for h in 2..=4 {
        for tx in store.block(h).unwrap().unwrap().block.txs {
            let TxBody::Anchor(a) = tx.body else {
                panic!("blocks 2-4 are anchors")
            };
            let p = store.anchor_proof(&a.commitment).unwrap().unwrap();
            assert_eq!(p.verify(&genesis).unwrap().height, h);
        }
    }
    assert_eq!(store.anchor_proof(&Hash([1; 32])).unwrap(), None);
}

/// An admin-signed validator-set change to `keys`, power 1 each.
fn set_change(synth: &Synth, seq: u64, keys: &[SignKey]) -> Tx {
    let set = ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                key: k.public(),
                power: 1,
            })
            .collect(),
    )
    .unwrap();
    let admin = synth.admin();
    Tx::sign(
        SYNTH_CHAIN_ID,
        admin.public(),
        admin,
        seq,
        TxBody::ValidatorSetChange(set),
    )
}

#[test]
fn anchor_proof_spans_validator_handoffs() {
    let dir = tempfile::tempdir().unwrap();
    let mut synth = fleet(dir.path(), 3, 2, 2);
    let genesis = synth.store().genesis().clone();
    let before = synth_commitment(&synth.devices()[0].id(), 1);

    // Block 3 changes the validator set twice: only the second change decides who certifies
    // block 4.
    let interim: Vec<SignKey> = (0..2).map(|_| SignKey::generate(&mut OsRng)).collect();
    let next: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut OsRng)).collect();
    let admin_seq = synth
        .store()
        .state()
        .account(&synth.admin().public())
        .unwrap()
        .seq;
    let txs = vec![
        set_change(&synth, admin_seq + 1, &interim),
        set_change(&synth, admin_seq + 2, &next),
    ];
    let h3 = synth.store().next_height();
    let proposer = synth.validators()[0].public();
    let last = synth.last_commit().cloned();
    let time = synth.block_time_ms(h3);
    let cert_keys = synth.validators().to_vec();
    let b3 = synth
        .store_mut()
        .build_block(time, proposer, txs, last, |h| {
            let keys: Vec<&SignKey> = cert_keys.iter().take(3).collect();
            meshward_core::CommitCertificate::sign(SYNTH_CHAIN_ID, h, 0, &keys)
        })
        .unwrap();

    // Block 4: an anchor, certified by the new set.
    let sender = synth.devices()[1].clone();
    let seq = synth.store().state().account(&sender.id()).unwrap().seq + 1;
    let commitment = Hash([42; 32]);
    let anchor = Tx::sign(
        SYNTH_CHAIN_ID,
        sender.id(),
        &sender.sign,
        seq,
        TxBody::Anchor(Anchor {
            recipient: Recipient::Device(synth.devices()[2].id()),
            commitment,
            count: 1,
            timestamp_ms: 5,
            size_bytes: 5,
        }),
    );
    let time = synth.block_time_ms(h3 + 1);
    synth
        .store_mut()
        .build_block(
            time,
            next[0].public(),
            vec![anchor],
            Some(b3.certificate.clone()),
            |h| {
                let keys: Vec<&SignKey> = next.iter().skip(1).collect();
                meshward_core::CommitCertificate::sign(SYNTH_CHAIN_ID, h, 0, &keys)
            },
        )
        .unwrap();

    let proof = synth.store().anchor_proof(&commitment).unwrap().unwrap();
    assert_eq!(proof.handoffs.len(), 1);
    assert_eq!(proof.verify(&genesis).unwrap().height, h3 + 1);
    // An anchor from before the change needs no handoff.
    let early = synth.store().anchor_proof(&before).unwrap().unwrap();
    assert!(early.handoffs.is_empty());
    assert!(early.verify(&genesis).is_ok());

    drop(synth);
    let report = verify_chain(store_path(dir.path())).unwrap();
    assert_eq!(report.tip_height, h3 + 1);
}

#[test]
fn create_refuses_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let genesis = common::genesis();
    drop(Store::create(&path, &genesis).unwrap());
    let err = Store::create(&path, &common::genesis()).unwrap_err();
    assert!(matches!(err, OpenError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    // The existing store is untouched.
    assert_eq!(Store::open(&path).unwrap().genesis(), &genesis);

    // Any file counts, store or not.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"keep me").unwrap();
    assert!(matches!(
        Store::create(&other, &genesis),
        Err(OpenError::Exists { .. })
    ));
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
}

#[test]
fn open_missing_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path().join("nope.redb")).unwrap_err();
    assert!(matches!(err, OpenError::NotFound { .. }), "{err}");
    assert!(verify_chain(dir.path().join("nope.redb")).is_err());
}

#[test]
fn second_open_reports_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let _store = Store::create(&path, &common::genesis()).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::InUse { .. }), "{err}");
}

#[test]
fn interrupted_create_leaves_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    // What a create killed before its rename leaves behind.
    let leftover = dir.path().join("meshward.redb.creating");
    std::fs::write(&leftover, b"half a database").unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(OpenError::NotFound { .. })
    ));
    let genesis = common::genesis();
    drop(Store::create(&path, &genesis).unwrap());
    assert!(!leftover.exists());
    assert_eq!(Store::open(&path).unwrap().genesis(), &genesis);
}

#[test]
fn repeated_commitment_keeps_first_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let mut synth = fleet(dir.path(), 3, 1, 0);
    let commitment = Hash([5; 32]);
    let mut first = None;
    // The same commitment anchored twice in block 2 and once more in block 3.
    for anchors in [2u64, 1] {
        let sender = synth.devices()[0].clone();
        let to = synth.devices()[1].id();
        let seq = synth.store().state().account(&sender.id()).unwrap().seq;
        let txs: Vec<Tx> = (1..=anchors)
            .map(|k| {
                Tx::sign(
                    SYNTH_CHAIN_ID,
                    sender.id(),
                    &sender.sign,
                    seq + k,
                    TxBody::Anchor(Anchor {
                        recipient: Recipient::Device(to),
                        commitment,
                        count: 1,
                        timestamp_ms: 1,
                        size_bytes: 1,
                    }),
                )
            })
            .collect();
        let h = synth.store().next_height();
        let time = synth.block_time_ms(h);
        let proposer = synth.validators()[0].public();
        let keys = synth.validators().to_vec();
        let last = synth.store().block(h - 1).unwrap().map(|b| b.certificate);
        synth
            .store_mut()
            .build_block(time, proposer, txs, last, |hdr| {
                let k: Vec<&SignKey> = keys.iter().take(3).collect();
                meshward_core::CommitCertificate::sign(SYNTH_CHAIN_ID, hdr, 0, &k)
            })
            .unwrap();
        first.get_or_insert(h);
    }
    assert_eq!(
        synth.store().anchor_location(&commitment).unwrap(),
        Some((first.unwrap(), 0))
    );
    drop(synth);
    let report = verify_chain(store_path(dir.path())).unwrap();
    assert_eq!(report.anchors, 3);
}
