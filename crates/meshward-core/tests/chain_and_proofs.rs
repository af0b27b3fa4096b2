//! Blocks made, checked and proven: a proposal checks out on another node's copy of the state,
//! certificates need more than 2/3 of the power, and anchor proofs verify offline from the
//! genesis alone and fail for any change.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use meshward_core::block::{CertError, CertifiedBlock, CommitCertificate};
use meshward_core::chain::{apply_certified, check_proposal, make_block, ChainError};
use meshward_core::codec::{Decode, Encode};
use meshward_core::envelope::{Envelope, SendSession};
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, SignKey};
use meshward_core::light::{EnvelopeInclusion, Inclusion, TxProof, VerifyError};
use meshward_core::state::{AdminSet, State, StateView};
use meshward_core::tx::{
    batch_root, enroll_body, Anchor, GroupName, Recipient, Tx, TxBody, Validator, ValidatorSet,
};
use rand::rngs::OsRng;

struct Chain {
    genesis: Genesis,
    admin: SignKey,
    vals: Vec<SignKey>,
    state: State,
    blocks: Vec<CertifiedBlock>,
}

impl Chain {
    fn new() -> Chain {
        let admin = SignKey::generate(&mut OsRng);
        let vals: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut OsRng)).collect();
        let genesis = Genesis {
            chain_id: "proof-chain".into(),
            genesis_time_ms: 1_700_000_000_000,
            admins: AdminSet::new(vec![admin.public()], 1).unwrap(),
            validators: set_of(&vals),
        };
        let state = genesis.state();
        Chain {
            genesis,
            admin,
            vals,
            state,
            blocks: vec![],
        }
    }

    fn prev_hash(&self) -> Hash {
        self.blocks
            .last()
            .map_or(self.genesis.hash(), |b| b.block.hash())
    }

    fn push(&mut self, txs: Vec<Tx>) -> &CertifiedBlock {
        let height = self.blocks.len() as u64 + 1;
        let signers: Vec<&SignKey> = self.vals.iter().take(3).collect();
        let prev = self.prev_hash();
        let (block, _) = make_block(
            &mut self.state,
            prev,
            height,
            self.genesis.genesis_time_ms + height * 1000,
            self.vals[0].public(),
            txs,
            self.blocks.last().map(|b| b.certificate.clone()),
            true,
        )
        .unwrap();
        let certificate =
            CommitCertificate::sign(&self.genesis.chain_id, &block.header, 0, &signers);
        self.blocks.push(CertifiedBlock { block, certificate });
        self.blocks.last().unwrap()
    }

    fn admin_tx(&self, body: TxBody) -> Tx {
        let seq = self.state.account(&self.admin.public()).unwrap().seq + 1;
        Tx::sign(
            &self.genesis.chain_id,
            self.admin.public(),
            &self.admin,
            seq,
            body,
        )
    }

    fn enroll(&mut self, n: usize) -> Vec<Keypair> {
        let devs: Vec<Keypair> = (0..n).map(|_| Keypair::generate(&mut OsRng)).collect();
        let mut txs = vec![];
        let mut seq = self.state.account(&self.admin.public()).unwrap().seq;
        for d in &devs {
            seq += 1;
            let body = enroll_body(
                &self.genesis.chain_id,
                d,
                vec![GroupName::new("fleet").unwrap()],
                None,
            );
            txs.push(Tx::sign(
                &self.genesis.chain_id,
                self.admin.public(),
                &self.admin,
                seq,
                body,
            ));
        }
        self.push(txs);
        devs
    }

    fn anchor(&self, from: &Keypair, to: &Keypair, c: u8) -> Tx {
        let seq = self.state.account(&from.id()).unwrap().seq + 1;
        let body = TxBody::Anchor(Anchor {
            recipient: Recipient::Device(to.id()),
            commitment: Hash([c; 32]),
            count: 1,
            timestamp_ms: 5,
            size_bytes: 256,
        });
        Tx::sign(&self.genesis.chain_id, from.id(), &from.sign, seq, body)
    }
}

fn set_of(keys: &[SignKey]) -> ValidatorSet {
    ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                key: k.public(),
                power: 1,
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn proposal_checks_out_on_another_copy_of_the_state() {
    let mut c = Chain::new();
    let devs = c.enroll(3);
    let replica = c.state.clone();
    let prev = c.prev_hash();
    let txs = vec![
        c.anchor(&devs[0], &devs[1], 1),
        c.anchor(&devs[1], &devs[2], 2),
    ];
    let cb = c.push(txs).clone();
    let delta = check_proposal(&replica, &prev, 2, &cb.block, true).unwrap();
    let mut replica = replica;
    replica.apply_delta(delta);
    assert_eq!(replica.root(), cb.block.header.state_root);
}

#[test]
fn proposal_with_wrong_state_root_rejected() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let replica = c.state.clone();
    let prev = c.prev_hash();
    let mut cb = c.push(vec![c.anchor(&devs[0], &devs[1], 1)]).clone();
    cb.block.header.state_root = Hash([9; 32]);
    assert_eq!(
        check_proposal(&replica, &prev, 2, &cb.block, true),
        Err(ChainError::StateRoot)
    );
}

#[test]
fn replaying_certified_blocks_reaches_the_same_state() {
    let mut c = Chain::new();
    let devs = c.enroll(4);
    for i in 0..5u8 {
        let txs = (0..4)
            .map(|j| c.anchor(&devs[j], &devs[(j + 1) % 4], i * 4 + j as u8))
            .collect();
        c.push(txs);
    }
    let mut replica = c.genesis.state();
    let mut prev = c.genesis.hash();
    for (i, cb) in c.blocks.iter().enumerate() {
        let decoded = CertifiedBlock::decode_bytes(&cb.to_bytes()).unwrap();
        apply_certified(&mut replica, &prev, i as u64 + 1, &decoded, true).unwrap();
        prev = cb.block.hash();
    }
    assert_eq!(replica.root(), c.state.root());
}

#[test]
fn certificate_needs_more_than_two_thirds() {
    let mut c = Chain::new();
    c.enroll(1);
    let header = c.blocks[0].block.header.clone();
    let set = set_of(&c.vals);
    let two: Vec<&SignKey> = c.vals.iter().take(2).collect();
    let cert = CommitCertificate::sign(&c.genesis.chain_id, &header, 0, &two);
    assert_eq!(
        cert.verify(&header, &set),
        Err(CertError::InsufficientPower {
            signed: 2,
            total: 4
        })
    );
    let outsider = SignKey::generate(&mut OsRng);
    let mut three: Vec<&SignKey> = c.vals.iter().take(2).collect();
    three.push(&outsider);
    let cert = CommitCertificate::sign(&c.genesis.chain_id, &header, 0, &three);
    assert_eq!(
        cert.verify(&header, &set),
        Err(CertError::UnknownValidator(outsider.public()))
    );
}

#[test]
fn anchor_proof_verifies_from_genesis_alone() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let tx = c.anchor(&devs[0], &devs[1], 7);
    let cb = c
        .push(vec![c.anchor(&devs[1], &devs[0], 6), tx.clone()])
        .clone();
    let proof = TxProof::build(&c.blocks[0], &cb, 1, vec![], vec![]).unwrap();
    let proven = TxProof::from_bytes(&proof.to_bytes())
        .unwrap()
        .verify_anchor(&c.genesis)
        .unwrap();
    assert_eq!(proven.height, 2);
    assert_eq!(proven.commitment, Hash([7; 32]));
    assert_eq!(proven.sender, devs[0].id());
    assert_eq!(proven.tx_index, 1);
}

#[test]
fn anchor_proof_with_any_byte_changed_is_rejected() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let cb = c.push(vec![c.anchor(&devs[0], &devs[1], 7)]).clone();
    let bytes = TxProof::build(&c.blocks[0], &cb, 0, vec![], vec![])
        .unwrap()
        .to_bytes();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            let res = TxProof::from_bytes(&bad).map(|p| p.verify(&c.genesis));
            assert!(
                !matches!(res, Ok(Ok(_))),
                "byte {i} flipped with {bit:#x} still verified"
            );
        }
    }
}

#[test]
fn anchor_proof_for_other_genesis_rejected() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let cb = c.push(vec![c.anchor(&devs[0], &devs[1], 7)]).clone();
    let proof = TxProof::build(&c.blocks[0], &cb, 0, vec![], vec![]).unwrap();
    let other = Chain::new();
    let mut g = other.genesis.clone();
    g.chain_id = c.genesis.chain_id.clone();
    assert!(matches!(
        proof.verify(&g),
        Err(VerifyError::GenesisMismatch)
    ));
}

#[test]
fn anchor_proof_follows_validator_handoffs() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let new_vals: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut OsRng)).collect();
    let change = c.admin_tx(TxBody::ValidatorSetChange(set_of(&new_vals)));
    let handoff_block = c.push(vec![change]).clone();
    c.vals = new_vals;
    let cb = c.push(vec![c.anchor(&devs[0], &devs[1], 3)]).clone();
    // Without the handoff, the new set is not trusted.
    let bare = TxProof::build(&c.blocks[0], &cb, 0, vec![], vec![]).unwrap();
    assert!(matches!(
        bare.verify(&c.genesis),
        Err(VerifyError::UntrustedValidatorSet { height: 3 })
    ));
    let handoff = Inclusion::build(&handoff_block, 0).unwrap();
    let proof = TxProof::build(&c.blocks[0], &cb, 0, vec![handoff], vec![]).unwrap();
    assert_eq!(proof.verify(&c.genesis).unwrap().height, 3);
}

#[test]
fn built_proposal_drops_invalid_candidates_and_checks_out() {
    use meshward_core::chain::build_proposal;
    let mut c = Chain::new();
    let devs = c.enroll(3);
    let good = c.anchor(&devs[0], &devs[1], 1);
    let replay = good.clone();
    let next = {
        // devs[0]'s next anchor after `good`.
        let body = TxBody::Anchor(Anchor {
            recipient: Recipient::Device(devs[2].id()),
            commitment: Hash([2; 32]),
            count: 1,
            timestamp_ms: 6,
            size_bytes: 256,
        });
        Tx::sign(&c.genesis.chain_id, devs[0].id(), &devs[0].sign, 2, body)
    };
    let prev = c.prev_hash();
    let p = build_proposal(
        &c.state,
        prev,
        2,
        c.genesis.genesis_time_ms + 2000,
        c.vals[0].public(),
        vec![good, replay, next],
        Vec::new(),
        c.blocks.last().map(|b| b.certificate.clone()),
        100,
        1 << 20,
    );
    assert_eq!(p.block.txs.len(), 2);
    assert_eq!(p.dropped.len(), 1);
    let delta = check_proposal(&c.state, &prev, 2, &p.block, true).unwrap();
    assert_eq!(delta, p.delta);
}

#[test]
fn two_handoffs_in_one_block_are_both_certified_by_the_old_set() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let mid: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut OsRng)).collect();
    let last: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut OsRng)).collect();
    let first = c.admin_tx(TxBody::ValidatorSetChange(set_of(&mid)));
    let seq = first.seq + 1;
    let second = Tx::sign(
        &c.genesis.chain_id,
        c.admin.public(),
        &c.admin,
        seq,
        TxBody::ValidatorSetChange(set_of(&last)),
    );
    let handoff_block = c.push(vec![first, second]).clone();
    c.vals = last;
    let cb = c.push(vec![c.anchor(&devs[0], &devs[1], 3)]).clone();
    let handoffs = vec![
        Inclusion::build(&handoff_block, 0).unwrap(),
        Inclusion::build(&handoff_block, 1).unwrap(),
    ];
    let proof = TxProof::build(&c.blocks[0], &cb, 0, handoffs, vec![]).unwrap();
    assert_eq!(proof.verify(&c.genesis).unwrap().height, 3);
}

#[test]
fn a_known_signature_is_skipped_only_under_the_signers_current_key() {
    use meshward_core::chain::{build_proposal, check_proposal_known};
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let mut forged = c.anchor(&devs[0], &devs[1], 1);
    forged.sig.0[0] ^= 1;
    let prev = c.prev_hash();
    let build = |known: Vec<Option<meshward_core::ids::PublicKey>>| {
        build_proposal(
            &c.state,
            prev,
            2,
            c.genesis.genesis_time_ms + 2000,
            c.vals[0].public(),
            vec![forged.clone()],
            known,
            c.blocks.last().map(|b| b.certificate.clone()),
            100,
            1 << 20,
        )
    };
    // Unknown, or known under another key: verified, and dropped.
    assert_eq!(build(vec![None]).block.txs.len(), 0);
    assert_eq!(build(vec![Some(devs[1].id())]).block.txs.len(), 0);
    // Known under the signer's key (a mempool vouches for it): not verified again.
    let vouched = build(vec![Some(devs[0].id())]);
    assert_eq!(vouched.block.txs.len(), 1);
    let block = &vouched.block;
    let known = |k| check_proposal_known(&c.state, &prev, 2, block, vec![k]);
    assert_eq!(known(Some(devs[0].id())), Ok(vouched.delta.clone()));
    for k in [None, Some(devs[1].id())] {
        assert!(matches!(
            known(k),
            Err(ChainError::Rejected(meshward_core::ledger::BlockReject {
                index: 0,
                reason: meshward_core::Reject::BadSignature
            }))
        ));
    }
    assert!(check_proposal(&c.state, &prev, 2, block, true).is_err());
}

#[test]
fn a_tx_list_round_trips_and_refuses_what_is_not_canonical() {
    use meshward_core::tx::{decode_tx_list, encode_tx_list};
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let txs = vec![
        c.anchor(&devs[0], &devs[1], 1),
        c.anchor(&devs[1], &devs[0], 2),
    ];
    let bytes = encode_tx_list(&txs.iter().map(|t| t.to_bytes()).collect::<Vec<_>>());
    assert_eq!(decode_tx_list(&bytes, 2).unwrap(), txs);
    assert!(
        decode_tx_list(&bytes, 1).is_err(),
        "over the caller's limit"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(decode_tx_list(&trailing, 2).is_err());
    assert!(decode_tx_list(&bytes[..bytes.len() - 1], 2).is_err());
    assert_eq!(
        decode_tx_list(&encode_tx_list::<Vec<u8>>(&[]), 2),
        Ok(vec![])
    );
}

/// `n` envelopes of one session from `from` to `to`, anchored by `from` under one batch root
/// (one envelope: its commitment) in a new block; returns them and the anchor's proof.
fn anchored_batch(c: &mut Chain, from: &Keypair, to: &Keypair, n: u64) -> (Vec<Envelope>, TxProof) {
    let mut s = SendSession::new(&mut OsRng, from, to.id(), &to.enc_key()).unwrap();
    let envs: Vec<Envelope> = (1..=n)
        .map(|seq| s.seal(seq, 1_000 + seq, &[seq as u8; 48]).unwrap())
        .collect();
    let commitments: Vec<Hash> = envs.iter().map(Envelope::commitment).collect();
    let proof = anchor_commitments(c, from, to, &commitments);
    (envs, proof)
}

/// `from`'s anchor to `to` over `commitments` (one: itself; more: their batch root), in a new
/// block; its proof.
fn anchor_commitments(
    c: &mut Chain,
    from: &Keypair,
    to: &Keypair,
    commitments: &[Hash],
) -> TxProof {
    let seq = c.state.account(&from.id()).unwrap().seq + 1;
    let body = TxBody::Anchor(Anchor {
        recipient: Recipient::Device(to.id()),
        commitment: match commitments {
            [one] => *one,
            many => batch_root(many),
        },
        count: commitments.len() as u32,
        timestamp_ms: 5,
        size_bytes: 48 * commitments.len() as u64,
    });
    let tx = Tx::sign(&c.genesis.chain_id, from.id(), &from.sign, seq, body);
    let cb = c.push(vec![tx]).clone();
    TxProof::build(&c.blocks[0], &cb, 0, vec![], vec![]).unwrap()
}

#[test]
fn a_session_message_inside_a_batch_proves_offline() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let (envs, proof) = anchored_batch(&mut c, &devs[0], &devs[1], 5);
    let commitments: Vec<Hash> = envs.iter().map(Envelope::commitment).collect();
    for (i, env) in envs.iter().enumerate() {
        let inc = EnvelopeInclusion::build(env.clone(), &commitments).unwrap();
        let inc = EnvelopeInclusion::from_bytes(&inc.to_bytes()).unwrap();
        let (anchor, proven) = proof.verify_envelope(&c.genesis, &inc).unwrap();
        assert_eq!(anchor.count, 5);
        assert_eq!(proven.index, i as u64);
        assert_eq!(proven.commitment, env.commitment());
        assert_eq!(proven.sender, devs[0].id());
        assert_eq!(proven.recipient, devs[1].id());
        assert_eq!(proven.seq, i as u64 + 1);
        assert_eq!(proven.kind, if i == 0 { "session_open" } else { "session" });
    }
    // An envelope that is not in the batch has no inclusion to build.
    let (other, _) = anchored_batch(&mut c, &devs[0], &devs[1], 1);
    assert!(EnvelopeInclusion::build(other[0].clone(), &commitments).is_none());
}

#[test]
fn an_anchor_of_one_envelope_proves_it_with_an_empty_path() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let (envs, proof) = anchored_batch(&mut c, &devs[0], &devs[1], 1);
    let inc = EnvelopeInclusion::build(envs[0].clone(), &[envs[0].commitment()]).unwrap();
    assert!(inc.path.path.is_empty());
    let (_, proven) = proof.verify_envelope(&c.genesis, &inc).unwrap();
    assert_eq!(proven.kind, "session_open");
}

#[test]
fn a_batched_message_with_any_byte_changed_fails_its_proof() {
    let mut c = Chain::new();
    let devs = c.enroll(2);
    let (envs, proof) = anchored_batch(&mut c, &devs[0], &devs[1], 4);
    let commitments: Vec<Hash> = envs.iter().map(Envelope::commitment).collect();
    // A Session envelope (unsigned: only the anchor makes it undeniable).
    let bytes = EnvelopeInclusion::build(envs[2].clone(), &commitments)
        .unwrap()
        .to_bytes();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let res =
            EnvelopeInclusion::from_bytes(&bad).map(|inc| proof.verify_envelope(&c.genesis, &inc));
        assert!(
            !matches!(res, Ok(Ok(_))),
            "byte {i} of the envelope inclusion flipped still verified"
        );
    }
    // One changed byte of the envelope alone is caught by the batch root, not by anything else.
    let mut changed = EnvelopeInclusion::build(envs[2].clone(), &commitments).unwrap();
    changed.envelope.ciphertext[0] ^= 0x01;
    assert_eq!(
        proof.verify_envelope(&c.genesis, &changed),
        Err(VerifyError::EnvelopeNotAnchored)
    );
    // Another envelope on this one's path.
    let mut moved = EnvelopeInclusion::build(envs[2].clone(), &commitments).unwrap();
    moved.envelope = envs[1].clone();
    assert_eq!(
        proof.verify_envelope(&c.genesis, &moved),
        Err(VerifyError::EnvelopeNotAnchored)
    );
    // An envelope sealed by another device cannot be passed off under this anchor, even if
    // the anchor's batch holds it: its sender did not sign the anchor.
    let (theirs, _) = anchored_batch(&mut c, &devs[1], &devs[0], 1);
    let mut mixed = commitments.clone();
    mixed[0] = theirs[0].commitment();
    let mixed_proof = anchor_commitments(&mut c, &devs[0], &devs[1], &mixed);
    let inc = EnvelopeInclusion::build(theirs[0].clone(), &mixed).unwrap();
    assert_eq!(
        mixed_proof.verify_envelope(&c.genesis, &inc),
        Err(VerifyError::EnvelopeSender)
    );
}
