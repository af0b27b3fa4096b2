//! Fixtures shared by the fuzz targets and by `examples/make_seeds.rs`.
//!
//! Everything here is deterministic: fixed seeds for every key, a fixed genesis, and a small
//! certified chain built with the real core APIs (`make_block`, `CommitCertificate::sign`, ...),
//! so a target can check decoded values against a known genesis or state, and the seed corpus
//! holds valid encodings of every format.

use std::sync::OnceLock;

use meshward_core::block::{CertifiedBlock, CommitCertificate};
use meshward_core::chain::make_block;
use meshward_core::envelope::{seal_oneshot, Envelope, SendSession};
use meshward_core::genesis::Genesis;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, SignKey};
use meshward_core::ledger::ApplyCtx;
use meshward_core::light::{Inclusion, TxProof};
use meshward_core::state::{AdminSet, State, StateView};
use meshward_core::tx::{
    enroll_body, rotate_body, ticket_hash, Anchor, Evidence, GroupName, Recipient, SealedGroupKey,
    Tx, TxBody, Validator, ValidatorSet,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub const CHAIN_ID: &str = "meshward-fuzz";
pub const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

/// `version(1) || ed25519 seed || x25519 secret` of the device that receives envelopes.
pub const RECEIVER_SECRET: [u8; 65] = secret_bytes(0xC1, 0xC2);
/// The same for the device that sends them.
pub const SENDER_SECRET: [u8; 65] = secret_bytes(0xD1, 0xD2);

const fn secret_bytes(sign: u8, enc: u8) -> [u8; 65] {
    let mut b = [0u8; 65];
    b[0] = 1;
    let mut i = 1;
    while i < 33 {
        b[i] = sign;
        b[i + 32] = enc;
        i += 1;
    }
    b
}

pub fn receiver_keypair() -> Keypair {
    Keypair::from_secret_bytes(&RECEIVER_SECRET).expect("fixed receiver key file")
}

pub fn sender_keypair() -> Keypair {
    Keypair::from_secret_bytes(&SENDER_SECRET).expect("fixed sender key file")
}

/// The genesis validators: 4 keys from fixed seeds.
pub fn validator_keys() -> Vec<SignKey> {
    (0..4u8)
        .map(|i| SignKey::from_seed(&[0x10 + i; 32]))
        .collect()
}

/// The validators the chain hands off to in block 2.
pub fn next_validator_keys() -> Vec<SignKey> {
    (0..4u8)
        .map(|i| SignKey::from_seed(&[0x20 + i; 32]))
        .collect()
}

pub fn admin_key() -> SignKey {
    SignKey::from_seed(&[0xA0; 32])
}

pub fn set_of(keys: &[SignKey]) -> ValidatorSet {
    ValidatorSet::new(
        keys.iter()
            .map(|k| Validator {
                key: k.public(),
                power: 10,
            })
            .collect(),
    )
    .expect("fixed validator set is well formed")
}

pub fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: GENESIS_TIME_MS,
        admins: AdminSet::new(vec![admin_key().public()], 1).expect("fixed admin set"),
        validators: set_of(&validator_keys()),
    }
}

pub fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("fixed group name")
}

/// A small certified chain and everything derived from it.
pub struct Fixture {
    pub genesis: Genesis,
    pub blocks: Vec<CertifiedBlock>,
    /// The state after the last block (flushed).
    pub state: State,
    /// The context for a transaction in the next block.
    pub next_ctx: ApplyCtx,
    /// Transactions that are in no block (valid encodings, some also valid on `state`).
    pub extra_txs: Vec<Tx>,
    /// A one-shot, a session-open and a session envelope from sender to receiver.
    pub envelopes: Vec<Envelope>,
    /// An anchor proof without handoffs and one with a validator-set handoff.
    pub anchor_proofs: Vec<TxProof>,
}

struct Builder {
    state: State,
    blocks: Vec<CertifiedBlock>,
    signers: Vec<SignKey>,
}

impl Builder {
    fn push(&mut self, genesis: &Genesis, txs: Vec<Tx>) {
        let height = self.blocks.len() as u64 + 1;
        let prev = self
            .blocks
            .last()
            .map_or(genesis.hash(), |b| b.block.hash());
        let (block, _) = make_block(
            &mut self.state,
            prev,
            height,
            GENESIS_TIME_MS + height * 1000,
            self.signers[0].public(),
            txs,
            self.blocks.last().map(|b| b.certificate.clone()),
            true,
        )
        .unwrap_or_else(|e| panic!("fixture block {height} rejected: {e}"));
        let signers: Vec<&SignKey> = self.signers.iter().collect();
        let certificate = CommitCertificate::sign(CHAIN_ID, &block.header, 0, &signers);
        self.blocks.push(CertifiedBlock { block, certificate });
    }
}

fn anchor(from: &Keypair, seq: u64, to: Recipient, commitment: Hash, count: u32) -> Tx {
    Tx::sign(
        CHAIN_ID,
        from.id(),
        &from.sign,
        seq,
        TxBody::Anchor(Anchor {
            recipient: to,
            commitment,
            count,
            timestamp_ms: GENESIS_TIME_MS + 1500,
            size_bytes: 512,
        }),
    )
}

fn build() -> Fixture {
    let genesis = genesis();
    let admin = admin_key();
    let sender = sender_keypair();
    let receiver = receiver_keypair();
    let sensors = group("sensors");
    let gateways = group("gateways");
    let admin_tx = |seq: u64, body: TxBody| Tx::sign(CHAIN_ID, admin.public(), &admin, seq, body);

    // Envelopes first: their commitments are what the anchors carry.
    let mut rng = StdRng::seed_from_u64(0x6d65_7368);
    let oneshot = seal_oneshot(
        &mut rng,
        &sender,
        receiver.id(),
        &receiver.enc_key(),
        1,
        GENESIS_TIME_MS + 1200,
        b"hello from the fuzz fixture",
    )
    .expect("seal one-shot");
    let mut session = SendSession::new(&mut rng, &sender, receiver.id(), &receiver.enc_key())
        .expect("session setup");
    let open = session
        .seal(2, GENESIS_TIME_MS + 1300, b"session open")
        .expect("seal session open");
    let later = session
        .seal(3, GENESIS_TIME_MS + 1400, &[0x5a; 100])
        .expect("seal session message");
    let envelopes = vec![oneshot, open, later];

    let mut b = Builder {
        state: genesis.state(),
        blocks: Vec::new(),
        signers: validator_keys(),
    };

    // Block 1: two admin enrollments, a ticket and a policy.
    let ticket_secret = [0x55u8; 32];
    b.push(
        &genesis,
        vec![
            admin_tx(
                1,
                enroll_body(CHAIN_ID, &sender, vec![sensors.clone()], None),
            ),
            admin_tx(
                2,
                enroll_body(
                    CHAIN_ID,
                    &receiver,
                    vec![sensors.clone(), gateways.clone()],
                    None,
                ),
            ),
            admin_tx(
                3,
                TxBody::CreateTicket {
                    ticket_hash: ticket_hash(&ticket_secret),
                    expires_ms: GENESIS_TIME_MS + 1_000_000_000,
                    groups: vec![sensors.clone()],
                },
            ),
            admin_tx(
                4,
                TxBody::SetPolicy {
                    allow: vec![(sensors.clone(), gateways.clone())],
                },
            ),
        ],
    );

    // Block 2: anchors (to a device and to a group, single and batch), an ack, a group key, and
    // the validator-set handoff.
    let mut members = vec![sender.id(), receiver.id()];
    members.sort();
    let sealed = members
        .iter()
        .enumerate()
        .map(|(i, m)| SealedGroupKey {
            member: *m,
            enc: [0x60 + i as u8; 32],
            ciphertext: vec![0x70 + i as u8; 48],
        })
        .collect();
    let handoff_index = 5;
    b.push(
        &genesis,
        vec![
            anchor(
                &sender,
                1,
                Recipient::Device(receiver.id()),
                envelopes[0].commitment(),
                1,
            ),
            anchor(
                &sender,
                2,
                Recipient::Group(sensors.clone()),
                meshward_core::tx::batch_root(&[
                    envelopes[1].commitment(),
                    envelopes[2].commitment(),
                ]),
                2,
            ),
            Tx::sign(
                CHAIN_ID,
                receiver.id(),
                &receiver.sign,
                1,
                TxBody::Ack {
                    commitment: envelopes[0].commitment(),
                    sender: sender.id(),
                },
            ),
            admin_tx(
                5,
                TxBody::GroupKey {
                    group: sensors.clone(),
                    epoch: 1,
                    sealed,
                },
            ),
            anchor(
                &receiver,
                2,
                Recipient::Device(sender.id()),
                Hash([0x42; 32]),
                1,
            ),
            admin_tx(
                6,
                TxBody::ValidatorSetChange(set_of(&next_validator_keys())),
            ),
        ],
    );

    // Block 3, certified by the new set: one more anchor.
    b.signers = next_validator_keys();
    b.push(
        &genesis,
        vec![anchor(
            &sender,
            3,
            Recipient::Device(receiver.id()),
            Hash([0x43; 32]),
            1,
        )],
    );

    let anchor_proofs = vec![
        TxProof::build(&b.blocks[0], &b.blocks[1], 0, vec![], vec![]).expect("proof in block 2"),
        TxProof::build(
            &b.blocks[0],
            &b.blocks[2],
            0,
            vec![Inclusion::build(&b.blocks[1], handoff_index).expect("handoff inclusion")],
            vec![],
        )
        .expect("proof in block 3"),
        // A version 1 proof, as earlier releases wrote.
        TxProof {
            origin: None,
            handoffs: vec![],
            keys: vec![],
            tx: Inclusion::build(&b.blocks[1], 0).expect("anchor inclusion"),
        },
        // A proof of the enrollment in block 1.
        TxProof::build(&b.blocks[0], &b.blocks[0], 0, vec![], vec![]).expect("proof in block 1"),
    ];

    // Transactions in no block: each body kind not in the chain, signed as it would be next.
    let sender_seq = b.state.account(&sender.id()).map_or(0, |a| a.seq);
    let admin_seq = b.state.account(&admin.public()).map_or(0, |a| a.seq);
    let equivocation = |c: u8| {
        Box::new(anchor(
            &sender,
            3,
            Recipient::Device(receiver.id()),
            Hash([c; 32]),
            1,
        ))
    };
    let newcomer = Keypair::from_secret_bytes(&secret_bytes(0xE1, 0xE2)).expect("key");
    let rotated = Keypair::from_secret_bytes(&secret_bytes(0xF1, 0xF2)).expect("key");
    let mut cosigned = admin_tx(
        admin_seq + 1,
        TxBody::Revoke {
            device: sender.id(),
            reason: "lost in the field".into(),
        },
    );
    cosigned.cosign(CHAIN_ID, &SignKey::from_seed(&[0xA1; 32]));
    let extra_txs = vec![
        Tx::sign(
            CHAIN_ID,
            receiver.id(),
            &receiver.sign,
            3,
            TxBody::Evidence(Evidence::Equivocation {
                a: equivocation(0x43),
                b: equivocation(0x44),
            }),
        ),
        Tx::sign(
            CHAIN_ID,
            receiver.id(),
            &receiver.sign,
            3,
            TxBody::Evidence(Evidence::PolicyViolation {
                anchor: equivocation(0x45),
            }),
        ),
        Tx::sign(
            CHAIN_ID,
            sender.id(),
            &sender.sign,
            sender_seq + 1,
            rotate_body(CHAIN_ID, &sender.id(), sender_seq + 1, &rotated),
        ),
        // Self-enrollment with the ticket.
        Tx::sign(
            CHAIN_ID,
            newcomer.id(),
            &newcomer.sign,
            1,
            enroll_body(
                CHAIN_ID,
                &newcomer,
                vec![sensors.clone()],
                Some(ticket_secret),
            ),
        ),
        admin_tx(
            admin_seq + 1,
            TxBody::Revoke {
                device: sender.id(),
                reason: "decommissioned".into(),
            },
        ),
        cosigned,
    ];

    let height = b.blocks.len() as u64 + 1;
    Fixture {
        genesis,
        next_ctx: ApplyCtx {
            height,
            time_ms: GENESIS_TIME_MS + height * 1000,
        },
        blocks: b.blocks,
        state: b.state,
        extra_txs,
        envelopes,
        anchor_proofs,
    }
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

/// Splits `data` into `(slot, record bytes)` pairs for `State::from_records`.
///
/// Layout: one flag byte, then chunks of `[slot: u8 if flag bit 0] len: u16 BE, bytes[len]`.
/// Without flag bit 0 the slots are 0, 1, 2, ...; a truncated last chunk is dropped.
pub fn split_records(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let Some((&flags, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let explicit_slots = flags & 1 == 1;
    let mut out = Vec::new();
    loop {
        let slot = if explicit_slots {
            let Some((&s, r)) = rest.split_first() else {
                break;
            };
            rest = r;
            u64::from(s)
        } else {
            out.len() as u64
        };
        if rest.len() < 2 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        if rest.len() < len {
            break;
        }
        out.push((slot, rest[..len].to_vec()));
        rest = &rest[len..];
    }
    out
}

/// The inverse of [`split_records`] (flag 0: implicit slots).
pub fn join_records(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8];
    for (_, bytes) in records {
        let len = u16::try_from(bytes.len()).expect("record under 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}
