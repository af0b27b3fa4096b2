//! Round trips of the compact row encoding, and garbage that must not panic it.

use super::*;
use meshward_core::block::{CertifiedBlock, CommitSig};
use meshward_core::ids::SignKey;
use meshward_core::state::AdminSet;
use meshward_core::tx::Validator;
use proptest::prelude::*;

#[test]
fn varints_are_minimal_and_round_trip() {
    for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
        let mut w = Writer::new();
        put_varint(&mut w, v);
        let b = w.into_bytes();
        let mut r = Reader::new(&b);
        assert_eq!(get_varint(&mut r, "v").unwrap(), v);
        assert!(r.finish().is_ok());
    }
    // 0 written as two bytes, an eleventh byte, and bits past 64 are refused.
    assert!(get_varint(&mut Reader::new(&[0x80, 0x00]), "v").is_err());
    assert!(get_varint(&mut Reader::new(&[0xff; 11]), "v").is_err());
    let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert!(get_varint(&mut Reader::new(&over), "v").is_err());
}

#[test]
fn zigzag_round_trips() {
    for v in [0i64, 1, -1, 1000, -1000, i64::MAX, i64::MIN] {
        assert_eq!(unzigzag(zigzag(v)), v);
    }
}

/// Four validators, an admin and `accounts` device accounts in a genesis state.
fn fixture(accounts: u8) -> (State, SetHistory, Vec<SignKey>, Vec<PublicKey>) {
    let vkeys: Vec<SignKey> = (1..=4u8).map(|i| SignKey::from_seed(&[i; 32])).collect();
    let set = ValidatorSet::new(
        vkeys
            .iter()
            .map(|k| Validator {
                key: k.public(),
                power: 1,
            })
            .collect(),
    )
    .unwrap();
    let admin = SignKey::from_seed(&[9; 32]).public();
    let mut state = State::genesis("c", AdminSet::new(vec![admin], 1).unwrap(), set.clone());
    // Accounts as records in new slots, the way enrollment adds them.
    let ids: Vec<PublicKey> = (0..accounts)
        .map(|i| SignKey::from_seed(&[100 + i; 32]).public())
        .collect();
    let delta = meshward_core::state::Delta(
        ids.iter()
            .map(|id| {
                meshward_core::state::Record::Account(meshward_core::state::Account {
                    id: *id,
                    sign_key: *id,
                    seq: 0,
                    device: None,
                })
            })
            .collect(),
    );
    state.apply_delta(delta);
    state.flush();
    let mut sets = SetHistory::default();
    sets.push(1, set);
    (state, sets, vkeys, ids)
}

fn key_strategy(ids: Vec<PublicKey>) -> impl Strategy<Value = PublicKey> + Clone {
    prop_oneof![
        proptest::sample::select(ids),
        any::<[u8; 32]>().prop_map(PublicKey),
    ]
}

fn tx_strategy(ids: Vec<PublicKey>) -> impl Strategy<Value = Tx> {
    let k = key_strategy(ids);
    (
        k.clone(),
        any::<u64>(),
        prop_oneof![
            k.clone().prop_map(Recipient::Device),
            "[a-z]{1,8}".prop_map(|g| Recipient::Group(GroupName::new(&g).unwrap())),
        ],
        any::<[u8; 32]>(),
        1..=MAX_BATCH,
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 64]>(),
        0u8..3,
        k,
    )
        .prop_map(
            |(signer, seq, recipient, c, count, timestamp_ms, size_bytes, sig, kind, other)| {
                let body = match kind {
                    0 => TxBody::Anchor(Anchor {
                        recipient,
                        commitment: Hash(c),
                        count,
                        timestamp_ms,
                        size_bytes,
                    }),
                    1 => TxBody::Ack {
                        commitment: Hash(c),
                        sender: other,
                    },
                    _ => TxBody::Revoke {
                        device: other,
                        reason: "r".into(),
                    },
                };
                Tx {
                    signer,
                    seq,
                    body,
                    sig: Signature(sig),
                    cosigs: Vec::new(),
                }
            },
        )
}

proptest! {
    /// Any block, compact where it can be and canonical where not, decodes to itself; its
    /// head decodes alone from any prefix that holds it, and each transaction alone.
    #[test]
    fn every_block_round_trips(
        txs in proptest::collection::vec(tx_strategy(fixture(6).3), 0..12),
        time_ms in any::<u64>(),
        proposer_in_set in any::<bool>(),
        signers in 0u8..16,
        with_last_commit in any::<bool>(),
        round in any::<u32>(),
    ) {
        let (state, sets, vkeys, _) = fixture(6);
        let (set, set_hash) = sets.at(2).unwrap();
        let last_commit = with_last_commit.then(|| CommitCertificate {
            height: 1,
            round,
            block_hash: Hash([7; 32]),
            signatures: vkeys
                .iter()
                .enumerate()
                .filter(|(i, _)| signers & (1 << i) != 0)
                .map(|(_, k)| CommitSig { validator: k.public(), sig: Signature([3; 64]) })
                .collect::<Vec<_>>()
                .into_iter()
                .collect(),
        }).map(|mut c| { c.signatures.sort_by_key(|s| s.validator); c });
        let tx_leaves = meshward_core::block::tx_leaves(&txs);
        let header = BlockHeader {
            chain_id: "c".into(),
            height: 2,
            prev_hash: Hash([7; 32]),
            time_ms,
            proposer: if proposer_in_set { set.validators[1].key } else { PublicKey([1; 32]) },
            tx_root: meshward_core::merkle::root_of(&tx_leaves),
            tx_count: txs.len() as u32,
            state_root: Hash([5; 32]),
            validator_set_hash: set_hash,
            last_commit_hash: last_commit_hash(&last_commit),
        };
        let block = Block { header, txs, last_commit };
        let env = Env { chain_id: "c", accounts: &state, sets: &sets };
        let row = encode_block(&block, &env);
        prop_assert_eq!(&decode_block(&row, 2, &env).unwrap(), &block);
        let head = decode_head(&row, 2, &env).unwrap();
        prop_assert_eq!(&head.header, &block.header);
        for (i, tx) in block.txs.iter().enumerate() {
            let one = decode_tx_at(&row, 2, i, &env).unwrap();
            prop_assert_eq!(one.as_ref(), Some(tx));
        }
        prop_assert!(decode_tx_at(&row, 2, block.txs.len(), &env).unwrap().is_none());
        // A truncated row never decodes (and never panics).
        for cut in [1, row.len() / 2, row.len() - 1] {
            prop_assert!(decode_block(&row[..cut], 2, &env).is_err());
        }
        // The certificate round-trips in its own row too.
        if let Some(c) = &block.last_commit {
            let cert = CertifiedBlock { block: block.clone(), certificate: c.clone() }.certificate;
            let bytes = encode_cert(&cert, Some(set));
            prop_assert_eq!(decode_cert(&bytes, Some(set), 1, Hash([7; 32])).unwrap(), cert);
        }
    }

    /// Random bytes as a row: an error or a block, never a panic.
    #[test]
    fn garbage_rows_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (state, sets, _, _) = fixture(3);
        let env = Env { chain_id: "c", accounts: &state, sets: &sets };
        let mut row = vec![ROW_VERSION];
        row.extend_from_slice(&bytes);
        let _ = decode_block(&row, 2, &env);
        let _ = decode_head(&row, 2, &env);
        let _ = decode_tx_at(&row, 2, 3, &env);
        let _ = decode_cert(&bytes, sets.at(1).map(|(s, _)| s), 1, Hash([0; 32]));
    }
}
