//! Property tests: every type round-trips through the canonical encoding, arbitrary bytes never
//! make a decoder panic, and `apply` never panics and never changes state when it rejects.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use meshward_core::block::{Block, BlockHeader, CertifiedBlock, CommitCertificate, CommitSig};
use meshward_core::codec::{Decode, Encode};
use meshward_core::envelope::Envelope;
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::ids::{EncKey, Keypair, PublicKey, SignKey, Signature};
use meshward_core::ledger::{apply, ApplyCtx};
use meshward_core::light::{Inclusion, Origin, TxProof};
use meshward_core::merkle;
use meshward_core::state::{AdminSet, Record, State, StateView};
use meshward_core::tx::{
    enroll_body, rotate_body, ticket_hash, Anchor, CoSig, Enroll, Evidence, GroupName, Recipient,
    SealedGroupKey, Tx, TxBody, Validator, ValidatorSet,
};
use proptest::prelude::*;

const CHAIN: &str = "prop-chain";

fn arb_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}

fn arb_sig() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}

fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn arb_group() -> impl Strategy<Value = GroupName> {
    "[a-z0-9._-]{1,64}".prop_map(|s| GroupName::new(&s).unwrap())
}

fn arb_groups() -> impl Strategy<Value = Vec<GroupName>> {
    prop::collection::btree_set(arb_group(), 1..4).prop_map(|s| s.into_iter().collect())
}

fn arb_recipient() -> impl Strategy<Value = Recipient> {
    prop_oneof![
        arb_key().prop_map(Recipient::Device),
        arb_group().prop_map(Recipient::Group)
    ]
}

fn arb_anchor() -> impl Strategy<Value = Anchor> {
    (
        arb_recipient(),
        arb_hash(),
        1u32..=4096,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(recipient, commitment, count, timestamp_ms, size_bytes)| Anchor {
                recipient,
                commitment,
                count,
                timestamp_ms,
                size_bytes,
            },
        )
}

fn arb_validator_set() -> impl Strategy<Value = ValidatorSet> {
    prop::collection::btree_map(arb_key(), 1u64..1000, 1..6).prop_map(|m| {
        ValidatorSet::new(
            m.into_iter()
                .map(|(key, power)| Validator { key, power })
                .collect(),
        )
        .unwrap()
    })
}

fn arb_anchor_tx() -> impl Strategy<Value = Tx> {
    (arb_key(), any::<u64>(), arb_anchor(), arb_sig()).prop_map(|(signer, seq, a, sig)| Tx {
        signer,
        seq,
        body: TxBody::Anchor(a),
        sig,
        cosigs: vec![],
    })
}

fn arb_body() -> impl Strategy<Value = TxBody> {
    prop_oneof![
        (
            arb_key(),
            any::<[u8; 32]>(),
            arb_groups(),
            any::<Option<[u8; 32]>>(),
            arb_sig(),
            arb_sig()
        )
            .prop_map(|(device, enc, groups, ticket, pop_sign, pop_enc)| {
                TxBody::Enroll(Enroll {
                    device,
                    enc_key: EncKey(enc),
                    groups,
                    ticket,
                    pop_sign,
                    pop_enc,
                })
            }),
        (arb_key(), "[ -~]{0,40}").prop_map(|(device, reason)| TxBody::Revoke { device, reason }),
        (
            arb_key(),
            arb_key(),
            any::<[u8; 32]>(),
            arb_sig(),
            arb_sig()
        )
            .prop_map(
                |(device, new_sign, e, pop_sign, pop_enc)| TxBody::Reinstate {
                    device,
                    new_sign,
                    new_enc: EncKey(e),
                    pop_sign,
                    pop_enc,
                }
            ),
        (arb_key(), any::<[u8; 32]>(), arb_sig(), arb_sig()).prop_map(|(k, e, s1, s2)| {
            TxBody::RotateKeys {
                new_sign: k,
                new_enc: EncKey(e),
                new_sig: s1,
                enc_pop: s2,
            }
        }),
        prop::collection::btree_set((arb_group(), arb_group()), 0..4).prop_map(|s| {
            TxBody::SetPolicy {
                allow: s.into_iter().collect(),
            }
        }),
        arb_anchor().prop_map(TxBody::Anchor),
        (arb_hash(), arb_key()).prop_map(|(commitment, sender)| TxBody::Ack { commitment, sender }),
        (arb_anchor_tx(), arb_anchor_tx()).prop_map(|(a, b)| TxBody::Evidence(
            Evidence::Equivocation {
                a: Box::new(a),
                b: Box::new(b)
            }
        )),
        arb_anchor_tx().prop_map(|a| TxBody::Evidence(Evidence::PolicyViolation {
            anchor: Box::new(a)
        })),
        arb_validator_set().prop_map(TxBody::ValidatorSetChange),
        (
            arb_group(),
            any::<u64>(),
            prop::collection::btree_map(
                arb_key(),
                (
                    any::<[u8; 32]>(),
                    prop::collection::vec(any::<u8>(), 0..128)
                ),
                0..4
            )
        )
            .prop_map(|(group, epoch, m)| TxBody::GroupKey {
                group,
                epoch,
                sealed: m
                    .into_iter()
                    .map(|(member, (enc, ciphertext))| SealedGroupKey {
                        member,
                        enc,
                        ciphertext
                    })
                    .collect(),
            }),
        (arb_hash(), any::<u64>(), arb_groups()).prop_map(|(ticket_hash, expires_ms, groups)| {
            TxBody::CreateTicket {
                ticket_hash,
                expires_ms,
                groups,
            }
        }),
    ]
}

fn arb_tx() -> impl Strategy<Value = Tx> {
    (
        arb_key(),
        any::<u64>(),
        arb_body(),
        arb_sig(),
        prop::collection::btree_map(arb_key(), arb_sig(), 0..3),
    )
        .prop_map(|(signer, seq, body, sig, cosigs)| Tx {
            signer,
            seq,
            body,
            sig,
            cosigs: cosigs
                .into_iter()
                .map(|(key, sig)| CoSig { key, sig })
                .collect(),
        })
}

fn arb_header() -> impl Strategy<Value = BlockHeader> {
    (
        "[a-z0-9-]{1,20}",
        any::<u64>(),
        arb_hash(),
        any::<u64>(),
        arb_key(),
        arb_hash(),
        any::<u32>(),
        (arb_hash(), arb_hash(), arb_hash()),
    )
        .prop_map(
            |(chain_id, height, prev_hash, time_ms, proposer, tx_root, tx_count, (s, v, l))| {
                BlockHeader {
                    chain_id,
                    height,
                    prev_hash,
                    time_ms,
                    proposer,
                    tx_root,
                    tx_count,
                    state_root: s,
                    validator_set_hash: v,
                    last_commit_hash: l,
                }
            },
        )
}

fn arb_cert() -> impl Strategy<Value = CommitCertificate> {
    (
        any::<u64>(),
        any::<u32>(),
        arb_hash(),
        prop::collection::btree_map(arb_key(), arb_sig(), 0..5),
    )
        .prop_map(|(height, round, block_hash, sigs)| CommitCertificate {
            height,
            round,
            block_hash,
            signatures: sigs
                .into_iter()
                .map(|(validator, sig)| CommitSig { validator, sig })
                .collect(),
        })
}

fn arb_block() -> impl Strategy<Value = Block> {
    (
        arb_header(),
        prop::collection::vec(arb_tx(), 0..4),
        prop::option::of(arb_cert()),
    )
        .prop_map(|(header, txs, last_commit)| Block {
            header,
            txs,
            last_commit,
        })
}

fn arb_inclusion() -> impl Strategy<Value = Inclusion> {
    (
        arb_header(),
        arb_cert(),
        arb_tx(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(arb_hash(), 0..8),
    )
        .prop_map(|(header, certificate, tx, i, n, path)| Inclusion {
            header,
            certificate,
            tx,
            proof: merkle::Proof {
                leaf_index: i,
                tree_size: n,
                path,
            },
        })
}

fn round_trip<T: Encode + Decode + PartialEq + std::fmt::Debug>(v: &T) {
    let bytes = v.to_bytes();
    assert_eq!(&T::from_bytes(&bytes).unwrap(), v);
    // One value, one byte string: re-encoding the decoded value gives the same bytes.
    assert_eq!(T::from_bytes(&bytes).unwrap().to_bytes(), bytes);
    if !bytes.is_empty() {
        assert!(T::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(T::from_bytes(&longer).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn tx_round_trips(tx in arb_tx()) {
        round_trip(&tx);
    }

    #[test]
    fn block_round_trips(b in arb_block(), cert in arb_cert()) {
        round_trip(&b);
        round_trip(&b.header);
        round_trip(&cert);
        round_trip(&CertifiedBlock { block: b, certificate: cert });
    }

    #[test]
    fn genesis_and_records_round_trip(vals in arb_validator_set(), admins in prop::collection::btree_set(arb_key(), 1..5), t in 1u16..5, time in any::<u64>()) {
        let n = admins.len() as u16;
        let admins = AdminSet::new(admins.into_iter().collect(), t.min(n)).unwrap();
        let g = Genesis { chain_id: CHAIN.into(), genesis_time_ms: time, admins: admins.clone(), validators: vals.clone() };
        round_trip(&g);
        round_trip(&admins);
        round_trip(&vals);
        for (_, bytes) in g.state().all_records() {
            round_trip(&Record::from_bytes(&bytes).unwrap());
        }
    }

    #[test]
    fn proofs_round_trip(handoffs in prop::collection::vec(arb_inclusion(), 0..2), keys in prop::collection::vec(arb_inclusion(), 0..2), tx in arb_inclusion(), origin in arb_inclusion()) {
        // Version 1 (no origin, no key changes) and version 2.
        round_trip(&TxProof { origin: None, handoffs: handoffs.clone(), keys: vec![], tx: tx.clone() });
        let origin = Some(Origin { header: origin.header, certificate: origin.certificate });
        round_trip(&TxProof { origin, handoffs, keys, tx });
    }

    #[test]
    fn arbitrary_bytes_never_panic_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Tx::decode_bytes(&bytes);
        let _ = Block::decode_bytes(&bytes);
        let _ = CertifiedBlock::decode_bytes(&bytes);
        let _ = BlockHeader::from_bytes(&bytes);
        let _ = CommitCertificate::from_bytes(&bytes);
        let _ = Genesis::from_bytes(&bytes);
        let _ = Record::from_bytes(&bytes);
        let _ = TxProof::from_bytes(&bytes);
        let _ = merkle::Proof::from_bytes(&bytes);
        let _ = Envelope::from_bytes(&bytes);
        let _ = Keypair::from_secret_bytes(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic_decoders(tx in arb_tx(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = tx.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = Tx::decode_bytes(&bytes);
        bytes.truncate(i);
        let _ = Tx::decode_bytes(&bytes);
    }
}

/// A small fleet whose keys the transaction generator draws from, so that generated
/// transactions get past the first checks and reach the deeper rules.
struct Pool {
    admins: Vec<SignKey>,
    devices: Vec<Keypair>,
    strangers: Vec<Keypair>,
    state: State,
}

/// The pool is built once: key generation and enrollment dominate otherwise.
fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(build_pool)
}

fn build_pool() -> Pool {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let admins: Vec<SignKey> = (0..2).map(|_| SignKey::generate(&mut rng)).collect();
    let vals: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut rng)).collect();
    let mut state = State::genesis(
        CHAIN,
        AdminSet::new(admins.iter().map(|a| a.public()).collect(), 1).unwrap(),
        ValidatorSet::new(
            vals.iter()
                .map(|v| Validator {
                    key: v.public(),
                    power: 1,
                })
                .collect(),
        )
        .unwrap(),
    );
    let devices: Vec<Keypair> = (0..4).map(|_| Keypair::generate(&mut rng)).collect();
    let ctx = ApplyCtx {
        height: 1,
        time_ms: 1000,
    };
    for (i, d) in devices.iter().enumerate() {
        let group = if i % 2 == 0 { "even" } else { "odd" };
        let body = enroll_body(CHAIN, d, vec![GroupName::new(group).unwrap()], None);
        let seq = state.account(&admins[0].public()).unwrap().seq + 1;
        let tx = Tx::sign(CHAIN, admins[0].public(), &admins[0], seq, body);
        let delta = apply(&state, &tx, &ctx).unwrap();
        state.apply_delta(delta);
    }
    let strangers = (0..2).map(|_| Keypair::generate(&mut rng)).collect();
    Pool {
        admins,
        devices,
        strangers,
        state,
    }
}

/// Builds a transaction from pool members with a chosen body shape, signed correctly, by the
/// wrong key, or not at all.
fn pool_tx(p: &Pool, choice: (u8, u8, u8, u64, u8, u8)) -> Tx {
    let (who, target, kind, seq_off, sign_mode, extra) = choice;
    let signer_kp: (PublicKey, SignKey) = match who % 3 {
        0 => {
            let a = &p.admins[(who / 3) as usize % 2];
            (a.public(), a.clone())
        }
        1 => {
            let d = &p.devices[(who / 3) as usize % 4];
            (d.id(), d.sign.clone())
        }
        _ => {
            let s = &p.strangers[(who / 3) as usize % 2];
            (s.id(), s.sign.clone())
        }
    };
    let tgt = &p.devices[target as usize % 4];
    let stranger = &p.strangers[target as usize % 2];
    let g = |s: &str| GroupName::new(s).unwrap();
    let anchor = |to: PublicKey, c: u8| {
        TxBody::Anchor(Anchor {
            recipient: Recipient::Device(to),
            commitment: Hash([c; 32]),
            count: 1,
            timestamp_ms: 5000,
            size_bytes: 10,
        })
    };
    let seq = p.state.account(&signer_kp.0).map_or(1, |a| a.seq + 1) + seq_off % 3;
    let body = match kind % 13 {
        0 => enroll_body(CHAIN, stranger, vec![g("even")], None),
        1 => enroll_body(CHAIN, stranger, vec![g("odd")], Some([extra; 32])),
        2 => TxBody::Revoke {
            device: tgt.id(),
            reason: "x".into(),
        },
        3 => rotate_body(CHAIN, &signer_kp.0, seq, stranger),
        4 => TxBody::SetPolicy {
            allow: vec![(g("even"), g("odd"))],
        },
        5 => anchor(tgt.id(), extra),
        6 => TxBody::Ack {
            commitment: Hash([extra; 32]),
            sender: tgt.id(),
        },
        7 => {
            let a = Tx::sign(CHAIN, tgt.id(), &tgt.sign, 1, anchor(p.devices[0].id(), 1));
            let b = Tx::sign(
                CHAIN,
                tgt.id(),
                &tgt.sign,
                1,
                anchor(p.devices[0].id(), extra),
            );
            TxBody::Evidence(Evidence::Equivocation {
                a: Box::new(a),
                b: Box::new(b),
            })
        }
        8 => {
            let a = Tx::sign(
                CHAIN,
                tgt.id(),
                &tgt.sign,
                1,
                anchor(p.devices[1].id(), extra),
            );
            TxBody::Evidence(Evidence::PolicyViolation {
                anchor: Box::new(a),
            })
        }
        9 => TxBody::ValidatorSetChange(
            ValidatorSet::new(vec![Validator {
                key: stranger.id(),
                power: u64::from(extra) + 1,
            }])
            .unwrap(),
        ),
        10 => TxBody::GroupKey {
            group: g(if extra % 2 == 0 { "even" } else { "odd" }),
            epoch: u64::from(extra % 3),
            sealed: vec![SealedGroupKey {
                member: tgt.id(),
                enc: [0; 32],
                ciphertext: vec![1; 48],
            }],
        },
        11 => match enroll_body(CHAIN, stranger, vec![g("odd")], None) {
            TxBody::Enroll(e) => TxBody::Reinstate {
                device: tgt.id(),
                new_sign: e.device,
                new_enc: e.enc_key,
                pop_sign: e.pop_sign,
                pop_enc: e.pop_enc,
            },
            other => other,
        },
        _ => TxBody::CreateTicket {
            ticket_hash: ticket_hash(&[extra; 32]),
            expires_ms: u64::from(extra) * 100,
            groups: vec![g("odd")],
        },
    };
    let mut tx = match sign_mode % 3 {
        0 => Tx::sign(CHAIN, signer_kp.0, &signer_kp.1, seq, body),
        1 => Tx::sign(CHAIN, signer_kp.0, &stranger.sign, seq, body),
        _ => Tx {
            signer: signer_kp.0,
            seq,
            body,
            sig: Signature([extra; 64]),
            cosigs: vec![],
        },
    };
    if extra % 7 == 0 {
        tx.cosign(CHAIN, &p.admins[1]);
    }
    tx
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn apply_never_panics_and_rejection_changes_nothing(
        choices in prop::collection::vec(any::<(u8, u8, u8, u64, u8, u8)>(), 1..6),
        arbitrary in prop::collection::vec(arb_tx(), 0..2),
    ) {
        let p = pool();
        let mut state = p.state.clone();
        let mut ctx = ApplyCtx { height: 2, time_ms: 2000 };
        let txs: Vec<Tx> = choices.into_iter().map(|c| pool_tx(p, c)).chain(arbitrary).collect();
        for tx in &txs {
            let before_root = state.root();
            let before = state.all_records();
            match apply(&state, tx, &ctx) {
                Ok(delta) => state.apply_delta(delta),
                Err(_) => {
                    prop_assert_eq!(state.root(), before_root);
                    prop_assert_eq!(state.all_records(), before);
                }
            }
            ctx.height += 1;
            ctx.time_ms += 1000;
        }
        // Whatever happened, the incrementally maintained root equals a rebuild from records.
        let rebuilt = State::from_records(state.all_records()).unwrap().root();
        prop_assert_eq!(state.root(), rebuilt);
    }
}
