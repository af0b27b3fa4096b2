//! Mailboxes for offline devices: order, acknowledgement, limits, a model check, and moving the
//! mailboxes of a format-1 chain store into the mailbox file.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;

use meshward_core::codec::Encode;
use meshward_core::envelope::{SendSession, MAX_PAYLOAD_BYTES};
use meshward_core::ids::{Keypair, PublicKey};
use meshward_store::format::{MAILBOX_MAX_ENVELOPE_BYTES, MAILBOX_MAX_PER_RECIPIENT};
use meshward_store::{MailboxError, MailboxLimits, MailboxStats, MailboxStore};
use proptest::prelude::*;
use rand::rngs::OsRng;

fn mailbox_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(meshward_store::format::MAILBOX_FILE_NAME)
}

fn new_store(dir: &tempfile::TempDir) -> MailboxStore {
    MailboxStore::open(mailbox_path(dir.path())).unwrap()
}

fn pk(i: u8) -> PublicKey {
    PublicKey([i; 32])
}

#[test]
fn mailbox_put_list_ack() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (a, b) = (pk(1), pk(2));
    let sa: Vec<u64> = (0..3u8).map(|i| store.put(&a, &[i; 10]).unwrap()).collect();
    let sb: Vec<u64> = (0..2u8)
        .map(|i| store.put(&b, &[100 + i; 20]).unwrap())
        .collect();
    assert!(sa.windows(2).all(|w| w[0] < w[1]));
    assert!(sb.iter().all(|s| !sa.contains(s)));

    let all = store.list(&a, 0, 100).unwrap();
    assert_eq!(
        all,
        vec![
            (sa[0], vec![0; 10]),
            (sa[1], vec![1; 10]),
            (sa[2], vec![2; 10])
        ]
    );
    assert_eq!(store.list(&a, sa[0], 100).unwrap(), all[1..].to_vec());
    assert_eq!(store.list(&a, 0, 1).unwrap(), all[..1].to_vec());
    assert_eq!(store.list(&a, sa[2], 100).unwrap(), vec![]);
    assert_eq!(store.list(&pk(3), 0, 100).unwrap(), vec![]);
    assert_eq!(
        store.stats().unwrap(),
        MailboxStats {
            envelopes: 5,
            bytes: 70
        }
    );

    assert_eq!(store.ack(&a, sa[1]).unwrap(), 2);
    assert_eq!(store.list(&a, 0, 100).unwrap(), all[2..].to_vec());
    assert_eq!(store.ack(&a, sa[1]).unwrap(), 0);
    assert_eq!(store.list(&b, 0, 100).unwrap().len(), 2);

    // Mailboxes survive a restart, and numbers are never reused after an acknowledgement.
    drop(store);
    let store = MailboxStore::open(mailbox_path(dir.path())).unwrap();
    assert_eq!(store.list(&a, 0, 100).unwrap(), all[2..].to_vec());
    assert_eq!(store.ack(&a, u64::MAX).unwrap(), 1);
    let next = store.put(&a, b"again").unwrap();
    assert!(next > *sb.iter().max().unwrap());
    assert_eq!(
        store.stats().unwrap(),
        MailboxStats {
            envelopes: 3,
            bytes: 45
        }
    );
}

#[test]
fn mailbox_limits_enforced() {
    let defaults = MailboxLimits::default();
    assert_eq!(defaults.max_envelope_bytes, MAILBOX_MAX_ENVELOPE_BYTES);
    const { assert!(MAILBOX_MAX_ENVELOPE_BYTES < 70 * 1024) };
    assert_eq!(defaults.max_per_recipient, MAILBOX_MAX_PER_RECIPIENT);
    assert_eq!(MAILBOX_MAX_PER_RECIPIENT, 1024);

    let dir = tempfile::tempdir().unwrap();
    let mut store = new_store(&dir);
    let too_big = vec![0u8; defaults.max_envelope_bytes + 1];
    assert!(matches!(
        store.put(&pk(1), &too_big),
        Err(MailboxError::TooLarge { .. })
    ));
    store
        .put(&pk(1), &too_big[..defaults.max_envelope_bytes])
        .unwrap();
    store.ack(&pk(1), u64::MAX).unwrap();

    // The largest envelope the core makes (a session opening with a full payload) fits.
    let sender = Keypair::generate(&mut OsRng);
    let recipient = Keypair::generate(&mut OsRng);
    let mut session =
        SendSession::new(&mut OsRng, &sender, recipient.id(), &recipient.enc_key()).unwrap();
    let biggest = session
        .seal(1, 1, &vec![7u8; MAX_PAYLOAD_BYTES])
        .unwrap()
        .to_bytes();
    assert!(biggest.len() > MAX_PAYLOAD_BYTES);
    store.put(&recipient.id(), &biggest).unwrap();
    store.ack(&recipient.id(), u64::MAX).unwrap();

    store.set_limits(MailboxLimits {
        max_envelope_bytes: 100,
        max_per_recipient: 3,
        max_total_envelopes: 5,
        max_total_bytes: 300,
    });
    let a = pk(1);
    for _ in 0..3 {
        store.put(&a, &[1; 10]).unwrap();
    }
    let err = store.put(&a, &[1; 10]).unwrap_err();
    assert!(
        matches!(err, MailboxError::RecipientFull { limit: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("acknowledge"), "{err}");
    // Another recipient still has room, up to the store-wide count.
    store.put(&pk(2), &[2; 10]).unwrap();
    store.put(&pk(3), &[3; 10]).unwrap();
    let err = store.put(&pk(4), &[4; 10]).unwrap_err();
    assert!(
        matches!(err, MailboxError::StoreFull { envelopes: 5, .. }),
        "{err}"
    );
    // Acknowledging makes room again.
    let first = store.list(&a, 0, 1).unwrap()[0].0;
    assert_eq!(store.ack(&a, first).unwrap(), 1);
    store.put(&a, &[1; 10]).unwrap();
    assert_eq!(store.list(&a, 0, 10).unwrap().len(), 3);

    // The store-wide byte limit.
    store.ack(&a, u64::MAX).unwrap();
    store.put(&a, &[1; 100]).unwrap();
    store.put(&a, &[1; 100]).unwrap();
    assert_eq!(store.stats().unwrap().bytes, 220);
    let err = store.put(&pk(5), &[5; 100]).unwrap_err();
    assert!(
        matches!(err, MailboxError::StoreFull { bytes: 220, .. }),
        "{err}"
    );
    store.put(&pk(5), &[5; 80]).unwrap(); // exactly at the byte limit
    assert_eq!(
        store.stats().unwrap(),
        MailboxStats {
            envelopes: 5,
            bytes: 300
        }
    );

    // A listing is capped at the per-recipient limit, whatever the caller asks.
    assert_eq!(store.list(&a, 0, usize::MAX).unwrap().len(), 2);
}

/// A chain store written before mailboxes had their own file holds its envelopes in its own
/// `mailbox` tables. Migration copies them into the mailbox file, keeping their sequence
/// numbers; doing it again (a migration interrupted and run again) copies nothing twice.
#[test]
fn legacy_mailboxes_move_out_of_the_chain_store_once() {
    use meshward_store::format::{MAILBOX, MAILBOX_LOAD, META, META_MAILBOX_NEXT_SEQ};
    let dir = tempfile::tempdir().unwrap();
    let chain_path = dir.path().join("old.redb");
    // What a format-1 store with waiting envelopes looks like: rows, a load row, a counter.
    let db = redb::Database::create(&chain_path).unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(MAILBOX).unwrap();
        t.insert((&pk(1).0, 3u64), [1u8; 10].as_slice()).unwrap();
        t.insert((&pk(1).0, 5u64), [2u8; 20].as_slice()).unwrap();
        t.insert((&pk(2).0, 4u64), [3u8; 30].as_slice()).unwrap();
        let mut l = w.open_table(MAILBOX_LOAD).unwrap();
        l.insert(&pk(1).0, (2u32, 30u64)).unwrap();
        l.insert(&pk(2).0, (1u32, 30u64)).unwrap();
        let mut m = w.open_table(META).unwrap();
        m.insert(META_MAILBOX_NEXT_SEQ, 9u64.to_be_bytes().as_slice())
            .unwrap();
    }
    w.commit().unwrap();
    let mb = new_store(&dir);
    assert_eq!(mb.adopt_legacy(&db, &chain_path).unwrap(), 3);
    assert_eq!(
        mb.list(&pk(1), 0, 10).unwrap(),
        vec![(3, vec![1; 10]), (5, vec![2; 20])]
    );
    assert_eq!(mb.list(&pk(2), 0, 10).unwrap(), vec![(4, vec![3; 30])]);
    assert_eq!(
        mb.stats().unwrap(),
        MailboxStats {
            envelopes: 3,
            bytes: 60
        }
    );
    // Numbers continue after the chain store's counter: none is reused.
    assert_eq!(mb.put(&pk(1), b"new").unwrap(), 9);
    // Copying again changes nothing: the same rows, recounted.
    assert_eq!(mb.adopt_legacy(&db, &chain_path).unwrap(), 3);
    assert_eq!(mb.stats().unwrap().envelopes, 4);
    // Acknowledging an adopted envelope works like any other.
    assert_eq!(mb.ack(&pk(1), 5).unwrap(), 2);
    assert_eq!(mb.list(&pk(1), 0, 10).unwrap(), vec![(9, b"new".to_vec())]);
    // A file without mailbox tables has nothing to copy.
    let empty = redb::Database::create(dir.path().join("empty.redb")).unwrap();
    assert_eq!(mb.adopt_legacy(&empty, &chain_path).unwrap(), 0);
}

/// A mailbox file of a format this build does not know is refused with a clear error, and
/// nothing in it changes.
#[test]
fn mailbox_file_of_another_version_is_refused() {
    use meshward_store::format::{META, META_FORMAT_VERSION};
    let dir = tempfile::tempdir().unwrap();
    drop(new_store(&dir));
    {
        let db = redb::Database::open(mailbox_path(dir.path())).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(META)
            .unwrap()
            .insert(META_FORMAT_VERSION, 99u32.to_be_bytes().as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let err = MailboxStore::open(mailbox_path(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            MailboxError::Version {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[derive(Debug, Clone)]
enum Op {
    Put { to: u8, len: usize },
    List { to: u8, after: u64, max: usize },
    Ack { to: u8, up_to: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0usize..40).prop_map(|(to, len)| Op::Put { to, len }),
        1 => (0u8..3, 0u64..30, 0usize..6).prop_map(|(to, after, max)| Op::List { to, after, max }),
        1 => (0u8..3, 0u64..30).prop_map(|(to, up_to)| Op::Ack { to, up_to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The mailboxes behave like a `BTreeMap` of (recipient, seq) -> envelope with the same
    /// limits, over any sequence of operations.
    #[test]
    fn mailbox_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let limits = MailboxLimits {
            max_envelope_bytes: 32,
            max_per_recipient: 4,
            max_total_envelopes: 8,
            max_total_bytes: 150,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store = new_store(&dir);
        store.set_limits(limits);
        let mut model: BTreeMap<(u8, u64), Vec<u8>> = BTreeMap::new();
        let mut next_seq = 1u64;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put { to, len } => {
                    let env = vec![i as u8; len];
                    let count = model.keys().filter(|(r, _)| *r == to).count() as u32;
                    let total = model.len() as u64;
                    let bytes: u64 = model.values().map(|v| v.len() as u64).sum();
                    let got = store.put(&pk(to), &env);
                    if len > limits.max_envelope_bytes {
                        prop_assert!(matches!(got, Err(MailboxError::TooLarge { .. })), "{:?}", got);
                    } else if count >= limits.max_per_recipient {
                        prop_assert!(matches!(got, Err(MailboxError::RecipientFull { .. })), "{:?}", got);
                    } else if total >= limits.max_total_envelopes
                        || bytes + len as u64 > limits.max_total_bytes
                    {
                        prop_assert!(matches!(got, Err(MailboxError::StoreFull { .. })), "{:?}", got);
                    } else {
                        prop_assert_eq!(got.unwrap(), next_seq);
                        model.insert((to, next_seq), env);
                        next_seq += 1;
                    }
                }
                Op::List { to, after, max } => {
                    let want: Vec<(u64, Vec<u8>)> = model
                        .range((to, after + 1)..=(to, u64::MAX))
                        .take(max)
                        .map(|((_, s), v)| (*s, v.clone()))
                        .collect();
                    prop_assert_eq!(store.list(&pk(to), after, max).unwrap(), want);
                }
                Op::Ack { to, up_to } => {
                    let gone: Vec<(u8, u64)> =
                        model.range((to, 0)..=(to, up_to)).map(|(k, _)| *k).collect();
                    for k in &gone {
                        model.remove(k);
                    }
                    prop_assert_eq!(store.ack(&pk(to), up_to).unwrap(), gone.len());
                }
            }
            let stats = store.stats().unwrap();
            prop_assert_eq!(stats.envelopes, model.len() as u64);
            prop_assert_eq!(stats.bytes, model.values().map(|v| v.len() as u64).sum::<u64>());
        }
    }
}
