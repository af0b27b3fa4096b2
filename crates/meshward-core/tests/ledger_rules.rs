//! One test per ledger rule, named after it.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use meshward_core::codec::Encode;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey, SignKey};
use meshward_core::ledger::{apply, execute_block, ApplyCtx, Reject};
use meshward_core::state::{AdminSet, DeviceStatus, State, StateView};
use meshward_core::tx::{
    enroll_body, rotate_body, ticket_hash, Anchor, Evidence, GroupName, Recipient, SealedGroupKey,
    Tx, TxBody, Validator, ValidatorSet,
};
use rand::rngs::OsRng;

const CHAIN: &str = "test-chain";

struct Fleet {
    admins: Vec<SignKey>,
    validators: Vec<SignKey>,
    state: State,
    ctx: ApplyCtx,
}

fn g(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

impl Fleet {
    fn new(n_admins: usize, threshold: u16) -> Fleet {
        let admins: Vec<SignKey> = (0..n_admins)
            .map(|_| SignKey::generate(&mut OsRng))
            .collect();
        let validators: Vec<SignKey> = (0..4).map(|_| SignKey::generate(&mut OsRng)).collect();
        let state = State::genesis(
            CHAIN,
            AdminSet::new(admins.iter().map(|k| k.public()).collect(), threshold).unwrap(),
            ValidatorSet::new(
                validators
                    .iter()
                    .map(|k| Validator {
                        key: k.public(),
                        power: 1,
                    })
                    .collect(),
            )
            .unwrap(),
        );
        Fleet {
            admins,
            validators,
            state,
            ctx: ApplyCtx {
                height: 1,
                time_ms: 1_000_000,
            },
        }
    }

    fn next_seq(&self, who: &PublicKey) -> u64 {
        self.state.account(who).map_or(1, |a| a.seq + 1)
    }

    /// An admin transaction from admin `signers[0]`, co-signed by the others.
    fn admin_tx(&self, body: TxBody, signers: &[usize]) -> Tx {
        let first = &self.admins[signers[0]];
        let mut tx = Tx::sign(
            CHAIN,
            first.public(),
            first,
            self.next_seq(&first.public()),
            body,
        );
        for &i in &signers[1..] {
            tx.cosign(CHAIN, &self.admins[i]);
        }
        tx
    }

    fn all_admins(&self) -> Vec<usize> {
        (0..self.state.admins().threshold as usize).collect()
    }

    fn device_tx(&self, kp: &Keypair, body: TxBody) -> Tx {
        let acc = self.state.account(&kp.id()).expect("device is enrolled");
        Tx::sign(CHAIN, kp.id(), &kp.sign, acc.seq + 1, body)
    }

    /// Applies a transaction; on rejection checks that the state root did not move.
    fn apply(&mut self, tx: &Tx) -> Result<(), Reject> {
        let before = self.state.root();
        match apply(&self.state, tx, &self.ctx) {
            Ok(delta) => {
                self.state.apply_delta(delta);
                self.ctx.height += 1;
                self.ctx.time_ms += 1000;
                Ok(())
            }
            Err(e) => {
                assert_eq!(self.state.root(), before, "a rejection changed the state");
                Err(e)
            }
        }
    }

    fn enroll(&mut self, groups: &[&str]) -> Keypair {
        let kp = Keypair::generate(&mut OsRng);
        let body = enroll_body(CHAIN, &kp, groups.iter().map(|s| g(s)).collect(), None);
        let tx = self.admin_tx(body, &self.all_admins());
        self.apply(&tx).expect("enrollment");
        kp
    }

    fn anchor_body(&self, to: Recipient, commitment: u8) -> TxBody {
        TxBody::Anchor(Anchor {
            recipient: to,
            commitment: Hash([commitment; 32]),
            count: 1,
            timestamp_ms: self.ctx.time_ms,
            size_bytes: 300,
        })
    }

    fn anchor(&self, from: &Keypair, to: &Keypair, commitment: u8) -> Tx {
        self.device_tx(
            from,
            self.anchor_body(Recipient::Device(to.id()), commitment),
        )
    }

    fn status(&self, kp: &Keypair) -> DeviceStatus {
        self.state
            .account(&kp.id())
            .unwrap()
            .device
            .clone()
            .unwrap()
            .status
    }
}

#[test]
fn enroll_requires_admin_threshold() {
    let mut f = Fleet::new(3, 2);
    let kp = Keypair::generate(&mut OsRng);
    let body = enroll_body(CHAIN, &kp, vec![g("fleet")], None);
    let one = f.admin_tx(body.clone(), &[0]);
    assert_eq!(
        f.apply(&one),
        Err(Reject::AdminThreshold { have: 1, need: 2 })
    );
    let two = f.admin_tx(body, &[0, 2]);
    assert_eq!(f.apply(&two), Ok(()));
    assert_eq!(f.status(&kp), DeviceStatus::Active);
}

#[test]
fn enroll_by_non_admin_rejected() {
    let mut f = Fleet::new(1, 1);
    let dev = f.enroll(&["fleet"]);
    let kp = Keypair::generate(&mut OsRng);
    let tx = f.device_tx(&dev, enroll_body(CHAIN, &kp, vec![g("fleet")], None));
    assert_eq!(f.apply(&tx), Err(Reject::NotAdmin));
}

#[test]
fn cosignature_from_non_admin_rejected() {
    let mut f = Fleet::new(2, 2);
    let kp = Keypair::generate(&mut OsRng);
    let mut tx = f.admin_tx(enroll_body(CHAIN, &kp, vec![g("fleet")], None), &[0]);
    let outsider = SignKey::generate(&mut OsRng);
    tx.cosign(CHAIN, &outsider);
    assert_eq!(f.apply(&tx), Err(Reject::BadCosignature(outsider.public())));
}

#[test]
fn enroll_requires_proof_of_possession() {
    let mut f = Fleet::new(1, 1);
    let kp = Keypair::generate(&mut OsRng);
    let other = Keypair::generate(&mut OsRng);
    // The signing-key proof is made by another key.
    let mut body = enroll_body(CHAIN, &kp, vec![g("fleet")], None);
    if let TxBody::Enroll(e) = &mut body {
        e.pop_sign = enroll_pop_of(&other, &kp);
    }
    let tx = f.admin_tx(body, &[0]);
    assert_eq!(f.apply(&tx), Err(Reject::BadProofOfPossession));
    // The encryption-key proof is made by another X25519 key.
    let mut body = enroll_body(CHAIN, &kp, vec![g("fleet")], None);
    if let (TxBody::Enroll(e), TxBody::Enroll(o)) = (
        &mut body,
        enroll_body(CHAIN, &other, vec![g("fleet")], None),
    ) {
        e.pop_enc = o.pop_enc;
    }
    let tx = f.admin_tx(body, &[0]);
    assert_eq!(f.apply(&tx), Err(Reject::BadProofOfPossession));
}

/// A possession proof over `victim`'s keys, signed by `signer`'s Ed25519 key.
fn enroll_pop_of(signer: &Keypair, victim: &Keypair) -> meshward_core::ids::Signature {
    let msg = meshward_core::tx::pop_message(CHAIN, &victim.id(), &victim.enc_key());
    signer.sign.sign(&msg)
}

#[test]
fn enroll_twice_rejected() {
    let mut f = Fleet::new(1, 1);
    let kp = f.enroll(&["fleet"]);
    let tx = f.admin_tx(enroll_body(CHAIN, &kp, vec![g("fleet")], None), &[0]);
    assert_eq!(f.apply(&tx), Err(Reject::AlreadyEnrolled(kp.id())));
}

fn ticket_fleet(expires_in_ms: u64) -> (Fleet, [u8; 32]) {
    let mut f = Fleet::new(1, 1);
    let secret = [42u8; 32];
    let tx = f.admin_tx(
        TxBody::CreateTicket {
            ticket_hash: ticket_hash(&secret),
            expires_ms: f.ctx.time_ms + expires_in_ms,
            groups: vec![g("sensors")],
        },
        &[0],
    );
    f.apply(&tx).unwrap();
    (f, secret)
}

fn redeem(kp: &Keypair, secret: [u8; 32], groups: &[&str]) -> Tx {
    let body = enroll_body(
        CHAIN,
        kp,
        groups.iter().map(|s| g(s)).collect(),
        Some(secret),
    );
    Tx::sign(CHAIN, kp.id(), &kp.sign, 1, body)
}

#[test]
fn ticket_is_single_use() {
    let (mut f, secret) = ticket_fleet(3_600_000);
    let a = Keypair::generate(&mut OsRng);
    assert_eq!(f.apply(&redeem(&a, secret, &["sensors"])), Ok(()));
    assert_eq!(f.status(&a), DeviceStatus::Active);
    assert_eq!(f.state.account(&a.id()).unwrap().seq, 1);
    let b = Keypair::generate(&mut OsRng);
    assert_eq!(
        f.apply(&redeem(&b, secret, &["sensors"])),
        Err(Reject::TicketUsed)
    );
}

#[test]
fn ticket_expired_rejected() {
    let (mut f, secret) = ticket_fleet(500);
    f.ctx.time_ms += 10_000;
    let a = Keypair::generate(&mut OsRng);
    assert_eq!(
        f.apply(&redeem(&a, secret, &["sensors"])),
        Err(Reject::TicketExpired)
    );
}

#[test]
fn ticket_groups_must_match() {
    let (mut f, secret) = ticket_fleet(3_600_000);
    let a = Keypair::generate(&mut OsRng);
    assert!(matches!(
        f.apply(&redeem(&a, secret, &["admins"])),
        Err(Reject::TicketMismatch(_))
    ));
}

#[test]
fn unknown_ticket_rejected() {
    let (mut f, _) = ticket_fleet(3_600_000);
    let a = Keypair::generate(&mut OsRng);
    assert_eq!(
        f.apply(&redeem(&a, [7; 32], &["sensors"])),
        Err(Reject::UnknownTicket)
    );
}

#[test]
fn replayed_tx_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let tx = f.anchor(&a, &b, 1);
    assert_eq!(f.apply(&tx), Ok(()));
    assert_eq!(
        f.apply(&tx),
        Err(Reject::BadSequence {
            expected: 2,
            got: 1
        })
    );
}

#[test]
fn sequence_gap_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let body = f.anchor_body(Recipient::Device(b.id()), 1);
    let tx = Tx::sign(CHAIN, a.id(), &a.sign, 5, body);
    assert_eq!(
        f.apply(&tx),
        Err(Reject::BadSequence {
            expected: 1,
            got: 5
        })
    );
}

#[test]
fn signature_for_other_chain_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let body = f.anchor_body(Recipient::Device(b.id()), 1);
    let tx = Tx::sign("other-chain", a.id(), &a.sign, 1, body);
    assert_eq!(f.apply(&tx), Err(Reject::BadSignature));
}

#[test]
fn unknown_signer_rejected() {
    let mut f = Fleet::new(1, 1);
    let b = f.enroll(&["fleet"]);
    let stranger = Keypair::generate(&mut OsRng);
    let body = f.anchor_body(Recipient::Device(b.id()), 1);
    let tx = Tx::sign(CHAIN, stranger.id(), &stranger.sign, 1, body);
    assert_eq!(f.apply(&tx), Err(Reject::UnknownSigner(stranger.id())));
}

#[test]
fn cosignatures_on_device_tx_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let mut tx = f.anchor(&a, &b, 1);
    tx.cosign(CHAIN, &f.admins[0]);
    assert_eq!(f.apply(&tx), Err(Reject::UnexpectedCosignatures));
}

fn revoke(f: &mut Fleet, kp: &Keypair) {
    let tx = f.admin_tx(
        TxBody::Revoke {
            device: kp.id(),
            reason: "stolen".into(),
        },
        &f.all_admins(),
    );
    f.apply(&tx).unwrap();
}

#[test]
fn revoked_device_cannot_anchor() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    revoke(&mut f, &a);
    assert!(matches!(f.status(&a), DeviceStatus::Revoked { .. }));
    assert_eq!(
        f.apply(&f.anchor(&a, &b, 1)),
        Err(Reject::DeviceRevoked(a.id()))
    );
}

#[test]
fn anchor_to_revoked_recipient_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    revoke(&mut f, &b);
    assert_eq!(
        f.apply(&f.anchor(&a, &b, 1)),
        Err(Reject::RecipientRevoked(b.id()))
    );
}

#[test]
fn revoke_twice_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    revoke(&mut f, &a);
    let tx = f.admin_tx(
        TxBody::Revoke {
            device: a.id(),
            reason: "again".into(),
        },
        &[0],
    );
    assert_eq!(f.apply(&tx), Err(Reject::AlreadyRevoked(a.id())));
}

#[test]
fn revocation_marks_groups_for_rekey() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    rekey(&mut f, "fleet", &[&a, &b]).unwrap();
    assert!(!f.state.group(&g("fleet")).unwrap().needs_rekey);
    revoke(&mut f, &a);
    let grp = f.state.group(&g("fleet")).unwrap();
    assert!(grp.needs_rekey);
    assert_eq!(grp.members, vec![b.id()]);
}

#[test]
fn equivocation_evidence_revokes_device() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let one = f.anchor(&a, &b, 1);
    let two = f.anchor(&a, &b, 2);
    let reporter = &f.validators[0];
    let ev = Tx::sign(
        CHAIN,
        reporter.public(),
        reporter,
        1,
        TxBody::Evidence(Evidence::Equivocation {
            a: Box::new(one),
            b: Box::new(two),
        }),
    );
    assert_eq!(f.apply(&ev), Ok(()));
    assert!(matches!(f.status(&a), DeviceStatus::Revoked { .. }));
    assert!(f.state.group(&g("fleet")).unwrap().needs_rekey);
}

#[test]
fn evidence_of_identical_anchors_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let one = f.anchor(&a, &b, 1);
    let reporter = &f.validators[0];
    let ev = Tx::sign(
        CHAIN,
        reporter.public(),
        reporter,
        1,
        TxBody::Evidence(Evidence::Equivocation {
            a: Box::new(one.clone()),
            b: Box::new(one),
        }),
    );
    assert!(matches!(f.apply(&ev), Err(Reject::InvalidEvidence(_))));
    assert_eq!(f.status(&a), DeviceStatus::Active);
}

#[test]
fn forged_evidence_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let one = f.anchor(&a, &b, 1);
    // The second "anchor" is signed by b's key in a's name.
    let body = f.anchor_body(Recipient::Device(b.id()), 2);
    let forged = Tx::sign(CHAIN, a.id(), &b.sign, 1, body);
    let reporter = &f.validators[0];
    let ev = Tx::sign(
        CHAIN,
        reporter.public(),
        reporter,
        1,
        TxBody::Evidence(Evidence::Equivocation {
            a: Box::new(one),
            b: Box::new(forged),
        }),
    );
    assert!(matches!(f.apply(&ev), Err(Reject::InvalidEvidence(_))));
    assert_eq!(f.status(&a), DeviceStatus::Active);
}

#[test]
fn policy_forbids_cross_group_anchor() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["lights"]);
    let b = f.enroll(&["locks"]);
    let a2 = f.enroll(&["lights"]);
    assert!(matches!(
        f.apply(&f.anchor(&a, &b, 1)),
        Err(Reject::PolicyForbids { .. })
    ));
    // Within a group is allowed by default.
    assert_eq!(f.apply(&f.anchor(&a, &a2, 1)), Ok(()));
    let tx = f.admin_tx(
        TxBody::SetPolicy {
            allow: vec![(g("lights"), g("locks"))],
        },
        &[0],
    );
    f.apply(&tx).unwrap();
    assert_eq!(f.apply(&f.anchor(&a, &b, 2)), Ok(()));
    // The rule is one-way.
    assert!(matches!(
        f.apply(&f.anchor(&b, &a, 3)),
        Err(Reject::PolicyForbids { .. })
    ));
}

#[test]
fn group_anchor_requires_membership_or_policy() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["lights"]);
    let _b = f.enroll(&["locks"]);
    let to_own = f.device_tx(&a, f.anchor_body(Recipient::Group(g("lights")), 1));
    assert_eq!(f.apply(&to_own), Ok(()));
    let to_other = f.device_tx(&a, f.anchor_body(Recipient::Group(g("locks")), 2));
    assert!(matches!(
        f.apply(&to_other),
        Err(Reject::PolicyForbids { .. })
    ));
    let to_none = f.device_tx(&a, f.anchor_body(Recipient::Group(g("nowhere")), 2));
    assert_eq!(f.apply(&to_none), Err(Reject::UnknownGroup(g("nowhere"))));
}

#[test]
fn policy_violation_evidence_revokes_device() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["lights"]);
    let b = f.enroll(&["locks"]);
    f.ctx.time_ms += 5000;
    let forbidden = f.anchor(&a, &b, 9);
    let reporter = &f.validators[1];
    let ev = Tx::sign(
        CHAIN,
        reporter.public(),
        reporter,
        1,
        TxBody::Evidence(Evidence::PolicyViolation {
            anchor: Box::new(forbidden),
        }),
    );
    assert_eq!(f.apply(&ev), Ok(()));
    assert!(matches!(f.status(&a), DeviceStatus::Revoked { .. }));
}

#[test]
fn policy_violation_evidence_for_allowed_anchor_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["lights"]);
    let b = f.enroll(&["lights"]);
    f.ctx.time_ms += 5000;
    let fine = f.anchor(&a, &b, 9);
    let reporter = &f.validators[1];
    let ev = Tx::sign(
        CHAIN,
        reporter.public(),
        reporter,
        1,
        TxBody::Evidence(Evidence::PolicyViolation {
            anchor: Box::new(fine),
        }),
    );
    assert!(matches!(f.apply(&ev), Err(Reject::InvalidEvidence(_))));
}

#[test]
fn rotate_requires_both_keys() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let new = Keypair::generate(&mut OsRng);
    let seq = f.next_seq(&a.id());
    // Signed by the old key, but the new key's proof is made by someone else.
    let mut body = rotate_body(CHAIN, &a.id(), seq, &new);
    if let TxBody::RotateKeys { new_sig, .. } = &mut body {
        *new_sig = b.sign.sign(b"not the rotation message");
    }
    assert_eq!(
        f.apply(&f.device_tx(&a, body)),
        Err(Reject::BadProofOfPossession)
    );
    // The new keys sign, but the old key does not.
    let body = rotate_body(CHAIN, &a.id(), seq, &new);
    let tx = Tx::sign(CHAIN, a.id(), &new.sign, seq, body.clone());
    assert_eq!(f.apply(&tx), Err(Reject::BadSignature));
    // Both: the rotation takes effect, the old key stops working and the new one works.
    assert_eq!(f.apply(&f.device_tx(&a, body)), Ok(()));
    let acc = f.state.account(&a.id()).unwrap();
    assert_eq!(acc.sign_key, new.id());
    assert_eq!(acc.device.as_ref().unwrap().enc_key, new.enc_key());
    let old = f.anchor(&a, &b, 1);
    assert_eq!(f.apply(&old), Err(Reject::BadSignature));
    let body = f.anchor_body(Recipient::Device(b.id()), 1);
    let with_new = Tx::sign(CHAIN, a.id(), &new.sign, f.next_seq(&a.id()), body);
    assert_eq!(f.apply(&with_new), Ok(()));
}

#[test]
fn rotate_to_key_in_use_rejected() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let seq = f.next_seq(&a.id());
    let body = rotate_body(CHAIN, &a.id(), seq, &b);
    assert_eq!(f.apply(&f.device_tx(&a, body)), Err(Reject::KeyInUse));
}

fn rekey(f: &mut Fleet, group: &str, members: &[&Keypair]) -> Result<(), Reject> {
    let grp = f.state.group(&g(group)).unwrap().clone();
    let mut sealed: Vec<SealedGroupKey> = members
        .iter()
        .map(|m| SealedGroupKey {
            member: m.id(),
            enc: [1; 32],
            ciphertext: vec![2; 48],
        })
        .collect();
    sealed.sort_by_key(|s| s.member);
    let tx = f.admin_tx(
        TxBody::GroupKey {
            group: g(group),
            epoch: grp.epoch + 1,
            sealed,
        },
        &[0],
    );
    f.apply(&tx)
}

#[test]
fn group_key_must_cover_exactly_the_members() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    assert!(matches!(
        rekey(&mut f, "fleet", &[&a]),
        Err(Reject::BadGroupKey(_))
    ));
    assert_eq!(rekey(&mut f, "fleet", &[&a, &b]), Ok(()));
    assert_eq!(f.state.group(&g("fleet")).unwrap().epoch, 1);
    revoke(&mut f, &b);
    // The revoked member may not receive the new key.
    assert!(matches!(
        rekey(&mut f, "fleet", &[&a, &b]),
        Err(Reject::BadGroupKey(_))
    ));
    assert_eq!(rekey(&mut f, "fleet", &[&a]), Ok(()));
    assert_eq!(f.state.group(&g("fleet")).unwrap().epoch, 2);
}

#[test]
fn group_key_epoch_must_advance_by_one() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let tx = f.admin_tx(
        TxBody::GroupKey {
            group: g("fleet"),
            epoch: 5,
            sealed: vec![SealedGroupKey {
                member: a.id(),
                enc: [0; 32],
                ciphertext: vec![0; 48],
            }],
        },
        &[0],
    );
    assert_eq!(
        f.apply(&tx),
        Err(Reject::StaleGroupEpoch {
            expected: 1,
            got: 5
        })
    );
}

#[test]
fn validator_set_change_requires_admin() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let new_set = ValidatorSet::new(vec![Validator {
        key: SignKey::generate(&mut OsRng).public(),
        power: 10,
    }])
    .unwrap();
    let tx = f.device_tx(&a, TxBody::ValidatorSetChange(new_set.clone()));
    assert_eq!(f.apply(&tx), Err(Reject::NotAdmin));
    let tx = f.admin_tx(TxBody::ValidatorSetChange(new_set.clone()), &[0]);
    assert_eq!(f.apply(&tx), Ok(()));
    assert_eq!(f.state.validators(), &new_set);
}

#[test]
fn ack_requires_enrolled_sender() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let stranger = Keypair::generate(&mut OsRng);
    let tx = f.device_tx(
        &a,
        TxBody::Ack {
            commitment: Hash([1; 32]),
            sender: stranger.id(),
        },
    );
    assert_eq!(f.apply(&tx), Err(Reject::NotEnrolled(stranger.id())));
}

#[test]
fn ticket_cannot_be_created_twice() {
    let (mut f, secret) = ticket_fleet(3_600_000);
    let tx = f.admin_tx(
        TxBody::CreateTicket {
            ticket_hash: ticket_hash(&secret),
            expires_ms: f.ctx.time_ms + 10_000,
            groups: vec![g("sensors")],
        },
        &[0],
    );
    assert_eq!(f.apply(&tx), Err(Reject::TicketExists));
}

#[test]
fn block_with_one_bad_tx_changes_nothing() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let good = f.anchor(&a, &b, 1);
    let replay = good.clone();
    let before = f.state.root();
    let err = execute_block(&mut f.state, &[good, replay], &f.ctx, true).unwrap_err();
    assert_eq!(err.index, 1);
    assert_eq!(
        err.reason,
        Reject::BadSequence {
            expected: 2,
            got: 1
        }
    );
    assert_eq!(f.state.root(), before);
}

#[test]
fn batch_and_single_verification_agree() {
    let mut f = Fleet::new(1, 1);
    let devs: Vec<Keypair> = (0..8).map(|_| f.enroll(&["fleet"])).collect();
    let txs: Vec<Tx> = (0..8)
        .map(|i| f.anchor(&devs[i], &devs[(i + 1) % 8], i as u8))
        .collect();
    let mut batched = f.state.clone();
    let mut single = f.state.clone();
    execute_block(&mut batched, &txs, &f.ctx, true).unwrap();
    execute_block(&mut single, &txs, &f.ctx, false).unwrap();
    assert_eq!(batched.root(), single.root());
    // One bad signature in the batch: both paths reject the same transaction.
    let mut bad = txs.clone();
    bad[5].sig.0[10] ^= 1;
    let e1 = execute_block(&mut f.state.clone(), &bad, &f.ctx, true).unwrap_err();
    let e2 = execute_block(&mut f.state.clone(), &bad, &f.ctx, false).unwrap_err();
    assert_eq!(e1, e2);
    assert_eq!(e1.index, 5);
    assert_eq!(e1.reason, Reject::BadSignature);
}

#[test]
fn rotation_within_block_is_seen_by_later_txs() {
    let mut f = Fleet::new(1, 1);
    let a = f.enroll(&["fleet"]);
    let b = f.enroll(&["fleet"]);
    let new = Keypair::generate(&mut OsRng);
    let rot = f.device_tx(&a, rotate_body(CHAIN, &a.id(), 1, &new));
    let body = f.anchor_body(Recipient::Device(b.id()), 1);
    let after = Tx::sign(CHAIN, a.id(), &new.sign, 2, body);
    execute_block(&mut f.state, &[rot, after], &f.ctx, true).unwrap();
    assert_eq!(f.state.account(&a.id()).unwrap().seq, 2);
}

/// Validator `v`'s two prevotes at `height`, round 0, for `x` and `y` (nil when `None`), in
/// canonical order.
fn double_vote(
    v: &SignKey,
    height: u64,
    x: Option<Hash>,
    y: Option<Hash>,
) -> meshward_core::tx::ValidatorEvidence {
    use meshward_core::block::{vote_signing_bytes, VoteKind};
    use meshward_core::tx::SignedVoteValue;
    let vote = |value: Option<Hash>| SignedVoteValue {
        value,
        sig: v.sign(&vote_signing_bytes(
            CHAIN,
            VoteKind::Prevote,
            height,
            0,
            value.as_ref(),
        )),
    };
    let (a, b) = if x <= y { (x, y) } else { (y, x) };
    meshward_core::tx::ValidatorEvidence {
        validator: v.public(),
        kind: VoteKind::Prevote,
        height,
        round: 0,
        a: vote(a),
        b: vote(b),
    }
}

fn report(f: &Fleet, reporter: usize, e: meshward_core::tx::ValidatorEvidence) -> Tx {
    let k = &f.validators[reporter];
    Tx::sign(
        CHAIN,
        k.public(),
        k,
        f.next_seq(&k.public()),
        TxBody::Evidence(Evidence::Validator(Box::new(e))),
    )
}

#[test]
fn validator_evidence_convicts_at_most_once_per_spacing() {
    let mut f = Fleet::new(1, 1);
    f.ctx.height = 10;
    let liar = f.validators[3].clone();
    let e = double_vote(&liar, 9, None, Some(Hash([7; 32])));
    let tx = report(&f, 0, e.clone());
    assert_eq!(
        Tx::decode_bytes(&tx.to_bytes()).as_ref(),
        Ok(&tx),
        "round trip"
    );
    assert_eq!(f.apply(&tx), Ok(()));
    let c = *f.state.conviction(&liar.public()).unwrap();
    assert_eq!((c.count, c.last_height), (1, 9));
    // The same double vote reported by another honest validator convicts no further.
    assert!(matches!(
        f.apply(&report(&f, 1, e)),
        Err(Reject::InvalidEvidence(_))
    ));
    // Nor does one at a later height within CONVICTION_SPACING.
    let spacing = meshward_core::ledger::CONVICTION_SPACING;
    f.ctx.height = 9 + spacing;
    let soon = double_vote(&liar, 8 + spacing, Some(Hash([1; 32])), Some(Hash([2; 32])));
    assert!(matches!(
        f.apply(&report(&f, 1, soon)),
        Err(Reject::InvalidEvidence(_))
    ));
    // One CONVICTION_SPACING heights later does.
    let later = double_vote(&liar, 9 + spacing, Some(Hash([1; 32])), Some(Hash([2; 32])));
    assert_eq!(f.apply(&report(&f, 1, later)), Ok(()));
    let c = *f.state.conviction(&liar.public()).unwrap();
    assert_eq!((c.count, c.last_height), (2, 9 + spacing));
}

#[test]
fn validator_evidence_must_hold() {
    let mut f = Fleet::new(1, 1);
    f.ctx.height = 10;
    let liar = f.validators[3].clone();
    let outsider = SignKey::generate(&mut OsRng);
    let refused = |f: &mut Fleet, e| {
        let tx = report(f, 0, e);
        matches!(f.apply(&tx), Err(Reject::InvalidEvidence(_)))
    };
    let h = Some(Hash([7; 32]));
    // The same vote twice is no conflict.
    assert!(refused(&mut f, double_vote(&liar, 9, h, h)));
    // Not in canonical order.
    let mut swapped = double_vote(&liar, 9, None, h);
    std::mem::swap(&mut swapped.a, &mut swapped.b);
    assert!(refused(&mut f, swapped));
    // A signature that does not verify.
    let mut forged = double_vote(&liar, 9, None, h);
    forged.b.sig.0[0] ^= 1;
    assert!(refused(&mut f, forged));
    // Votes the accused never signed (another key signed them).
    let mut framed = double_vote(&outsider, 9, None, h);
    framed.validator = liar.public();
    assert!(refused(&mut f, framed));
    // Not a validator.
    assert!(refused(&mut f, double_vote(&outsider, 9, None, h)));
    // A height the chain has not reached.
    assert!(refused(&mut f, double_vote(&liar, 11, None, h)));
    // A validator cannot report itself.
    let own = {
        let e = double_vote(&f.validators[0], 9, None, h);
        report(&f, 0, e)
    };
    assert!(matches!(f.apply(&own), Err(Reject::InvalidEvidence(_))));
    assert!(f.state.conviction(&liar.public()).is_none());
    assert!(f.state.conviction(&f.validators[0].public()).is_none());
}
