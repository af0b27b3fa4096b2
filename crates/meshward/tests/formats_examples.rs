//! The worked examples of `docs/FORMATS.md` are generated here, from fixed keys, so they cannot
//! go stale: the test rebuilds the block between the `GENERATED EXAMPLES` markers and fails if
//! the document differs. `MESHWARD_BLESS=1 cargo test -p meshward --test formats_examples`
//! rewrites it.
//!
//! Every example is made by the code that nodes run (core encodings, the ledger, consensus's vote
//! bytes), and each field-by-field breakdown is checked to concatenate to the real encoding.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use malachitebft_core_types::{NilOrVal, Round, VoteType};
use meshward_consensus::context::{Address, BlockHash, Height, Vote};
use meshward_core::block::{
    tx_leaves, vote_signing_bytes, CertifiedBlock, CommitCertificate, VoteKind,
};
use meshward_core::chain::make_block;
use meshward_core::codec::{Encode, Writer};
use meshward_core::genesis::Genesis;
use meshward_core::hash::{domain, Hash};
use meshward_core::ids::{EncSecret, Keypair, SignKey};
use meshward_core::light::{ProofFile, TxProof};
use meshward_core::merkle;
use meshward_core::state::{AdminSet, State, StateView};
use meshward_core::tx::{
    enroll_body, Anchor, GroupName, Recipient, Tx, TxBody, Validator, ValidatorSet,
};

const BEGIN: &str = "<!-- BEGIN GENERATED EXAMPLES (crates/meshward/tests/formats_examples.rs) -->";
const END: &str = "<!-- END GENERATED EXAMPLES -->";
const CHAIN: &str = "example";

fn sign_key(tag: u8) -> SignKey {
    SignKey::from_seed(&[tag; 32])
}

fn device(tag: u8) -> Keypair {
    Keypair {
        sign: SignKey::from_seed(&[tag; 32]),
        enc: EncSecret::from_bytes(&[tag ^ 0xff; 32]),
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn enc<T: Encode + ?Sized>(v: &T) -> Vec<u8> {
    let mut w = Writer::new();
    w.put(v);
    w.into_bytes()
}

/// A labelled field-by-field listing whose parts must concatenate to `whole`.
struct Fields {
    rows: Vec<(String, Vec<u8>)>,
}

impl Fields {
    fn new() -> Fields {
        Fields { rows: Vec::new() }
    }

    fn f(mut self, name: &str, bytes: impl AsRef<[u8]>) -> Fields {
        self.rows.push((name.to_string(), bytes.as_ref().to_vec()));
        self
    }

    /// The listing, after checking that it is exactly `whole`.
    fn check(self, whole: &[u8], what: &str) -> String {
        let joined: Vec<u8> = self.rows.iter().flat_map(|r| r.1.clone()).collect();
        assert_eq!(hex(&joined), hex(whole), "{what}: fields do not add up");
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, bytes) in &self.rows {
            let h = if bytes.is_empty() {
                "(empty)".to_string()
            } else {
                hex(bytes)
            };
            // Long values wrap at 64 hex digits, aligned under the first line.
            let mut first = true;
            for chunk in h.as_bytes().chunks(64) {
                let label = if first { name.as_str() } else { "" };
                writeln!(
                    out,
                    "{label:width$}  {}",
                    std::str::from_utf8(chunk).unwrap()
                )
                .unwrap();
                first = false;
            }
        }
        out
    }
}

fn u32b(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn u64b(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn strb(s: &str) -> Vec<u8> {
    let mut v = u32b(s.len() as u32).to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn wrapped(label: &str, bytes: &[u8]) -> String {
    let h = hex(bytes);
    let mut out = format!("{label} ({} bytes):\n", bytes.len());
    for chunk in h.as_bytes().chunks(96) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out
}

struct Example {
    genesis: Genesis,
    vals: Vec<SignKey>,
    admins: Vec<SignKey>,
    devices: Vec<Keypair>,
    blocks: Vec<CertifiedBlock>,
}

fn build() -> Example {
    let admins = vec![sign_key(0xa1), sign_key(0xa2)];
    let vals: Vec<SignKey> = (0xb1..=0xb4).map(sign_key).collect();
    let devices = vec![device(0xd1), device(0xd2)];
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        admins: AdminSet::new(admins.iter().map(|k| k.public()).collect(), 2).unwrap(),
        validators: ValidatorSet::new(
            vals.iter()
                .map(|k| Validator {
                    key: k.public(),
                    power: 1,
                })
                .collect(),
        )
        .unwrap(),
    };
    let mut state: State = genesis.state();
    let mut blocks: Vec<CertifiedBlock> = Vec::new();
    // Block 1: the first admin enrolls both devices, the second co-signs (threshold 2).
    let enrolls: Vec<Tx> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let body = enroll_body(CHAIN, d, vec![GroupName::new("fleet").unwrap()], None);
            let mut tx = Tx::sign(CHAIN, admins[0].public(), &admins[0], i as u64 + 1, body);
            tx.cosign(CHAIN, &admins[1]);
            tx
        })
        .collect();
    // Block 2: three anchors.
    let anchor = |from: &Keypair, to: &Keypair, seq: u64, c: u8| {
        Tx::sign(
            CHAIN,
            from.id(),
            &from.sign,
            seq,
            TxBody::Anchor(Anchor {
                recipient: Recipient::Device(to.id()),
                commitment: Hash([c; 32]),
                count: 1,
                timestamp_ms: 1_700_000_001_500,
                size_bytes: 512,
            }),
        )
    };
    let anchors = vec![
        anchor(&devices[0], &devices[1], 1, 0x11),
        anchor(&devices[1], &devices[0], 1, 0x22),
        anchor(&devices[0], &devices[1], 2, 0x33),
    ];
    for (i, txs) in [enrolls, anchors].into_iter().enumerate() {
        let height = i as u64 + 1;
        let prev = blocks.last().map_or(genesis.hash(), |b| b.block.hash());
        let (block, _) = make_block(
            &mut state,
            prev,
            height,
            genesis.genesis_time_ms + height * 1000,
            vals[0].public(),
            txs,
            blocks.last().map(|b| b.certificate.clone()),
            false,
        )
        .unwrap();
        let signers: Vec<&SignKey> = vals.iter().take(3).collect();
        // Block 2 was decided in round 1, so its certificate's votes carry round 1.
        let round = (height - 1) as u32;
        let certificate = CommitCertificate::sign(CHAIN, &block.header, round, &signers);
        blocks.push(CertifiedBlock { block, certificate });
    }
    assert_eq!(state.validators(), &genesis.validators);
    Example {
        genesis,
        vals,
        admins,
        devices,
        blocks,
    }
}

fn tx_fields(tx: &Tx) -> Fields {
    let body = enc_body(tx);
    let mut f = Fields::new()
        .f("version", [1u8])
        .f("signer", tx.signer.0)
        .f("seq u64", u64b(tx.seq))
        .f("type tag", [tx.body.tag()])
        .f("body", &body)
        .f("sig", tx.sig.0)
        .f("cosigs count u32", u32b(tx.cosigs.len() as u32));
    for (i, c) in tx.cosigs.iter().enumerate() {
        f = f
            .f(&format!("cosig[{i}] key"), c.key.0)
            .f(&format!("cosig[{i}] sig"), c.sig.0);
    }
    f
}

/// The body's fields alone: the transaction's encoding between its tag and its signature.
fn enc_body(tx: &Tx) -> Vec<u8> {
    let all = tx.to_bytes();
    let head = 1 + 32 + 8 + 1;
    let tail = 64 + 4 + tx.cosigs.len() * 96;
    all[head..all.len() - tail].to_vec()
}

fn signing_fields(tx: &Tx) -> Fields {
    Fields::new()
        .f("domain \"meshward/tx/v1\"", domain::TX_SIGN)
        .f("chain_id string", strb(CHAIN))
        .f("type tag", [tx.body.tag()])
        .f("signer", tx.signer.0)
        .f("seq u64", u64b(tx.seq))
        .f("body", enc_body(tx))
}

fn generate() -> String {
    let ex = build();
    let g = &ex.genesis;
    let b1 = &ex.blocks[0];
    let b2 = &ex.blocks[1];
    let mut out = String::new();
    let mut section = |title: &str, text: String| {
        writeln!(out, "#### {title}\n").unwrap();
        out.push_str(&text);
        out.push('\n');
    };

    // Keys.
    let mut keys = String::from("```\n");
    for (i, k) in ex.admins.iter().enumerate() {
        writeln!(
            keys,
            "admin {i}      seed {}  key {}",
            hex(&*k.seed()),
            hex(&k.public().0)
        )
        .unwrap();
    }
    for (i, k) in ex.vals.iter().enumerate() {
        writeln!(
            keys,
            "validator {i}  seed {}  key {}",
            hex(&*k.seed()),
            hex(&k.public().0)
        )
        .unwrap();
    }
    for (i, d) in ex.devices.iter().enumerate() {
        writeln!(
            keys,
            "device {i}     seed {}  key {}\n              x25519 secret {}  enc {}",
            hex(&*d.sign.seed()),
            hex(&d.id().0),
            hex(&*d.enc.to_bytes()),
            hex(&d.enc_key().0)
        )
        .unwrap();
    }
    keys.push_str("```\n");
    section(
        "Keys (Ed25519 seeds as in RFC 8032; every signature below is deterministic)",
        keys,
    );

    // Validator set and its hash.
    let set_bytes = g.validators.to_bytes();
    let mut f = Fields::new().f("count u32", u32b(g.validators.validators.len() as u32));
    for (i, v) in g.validators.validators.iter().enumerate() {
        f = f
            .f(&format!("[{i}] key"), v.key.0)
            .f(&format!("[{i}] power u64"), u64b(v.power));
    }
    section(
        "Validator-set hash input (the genesis set, sorted by key)",
        format!(
            "```\n{}```\n`validator_set_hash` = H(\"meshward/validator-set/v1\", input) = `{}`\n",
            f.check(&set_bytes, "validator set"),
            g.validators.hash()
        ),
    );

    // Genesis.
    let admins_bytes = enc(&g.admins);
    let mut f = Fields::new()
        .f("version", [1u8])
        .f("chain_id string", strb(&g.chain_id))
        .f("genesis_time_ms u64", u64b(g.genesis_time_ms))
        .f("admins count u32", u32b(g.admins.keys.len() as u32));
    for (i, k) in g.admins.keys.iter().enumerate() {
        f = f.f(&format!("admin[{i}]"), k.0);
    }
    f = f
        .f("threshold u16", g.admins.threshold.to_be_bytes())
        .f("validators", &set_bytes);
    assert_eq!(admins_bytes.len(), 4 + 32 * g.admins.keys.len() + 2);
    section(
        "Genesis (binary)",
        format!(
            "```\n{}```\ngenesis hash = H(\"meshward/genesis/v1\", genesis) = `{}` (block 1's `prev_hash`)\n",
            f.check(&g.to_bytes(), "genesis"),
            g.hash()
        ),
    );

    // An admin transaction with a co-signature.
    let enroll = &b1.block.txs[0];
    let msg = enroll.signing_bytes(CHAIN);
    assert_eq!(
        msg,
        meshward_core::tx::signing_bytes(CHAIN, &enroll.signer, enroll.seq, &enroll.body)
    );
    for c in &enroll.cosigs {
        c.key.verify(&msg, &c.sig).unwrap();
    }
    enroll.signer.verify(&msg, &enroll.sig).unwrap();
    section(
        "Transaction: Enroll by admin 0, co-signed by admin 1 (block 1, index 0)",
        format!(
            "Signing bytes (signed by the signer and, unchanged, by every co-signer):\n```\n{}```\nEncoded transaction:\n```\n{}```\ntx id = H(\"meshward/tx-id/v1\", tx) = `{}`\n",
            signing_fields(enroll).check(&msg, "enroll signing bytes"),
            tx_fields(enroll).check(&enroll.to_bytes(), "enroll"),
            enroll.id()
        ),
    );

    // An anchor transaction.
    let anchor = &b2.block.txs[2];
    let TxBody::Anchor(a) = &anchor.body else {
        panic!("block 2 holds anchors")
    };
    let Recipient::Device(to) = &a.recipient else {
        panic!("a device recipient")
    };
    let body = Fields::new()
        .f("recipient tag (0 device)", [0u8])
        .f("recipient key", to.0)
        .f("commitment", a.commitment.0)
        .f("count u32", u32b(a.count))
        .f("timestamp_ms u64", u64b(a.timestamp_ms))
        .f("size_bytes u64", u64b(a.size_bytes));
    let msg = anchor.signing_bytes(CHAIN);
    anchor.signer.verify(&msg, &anchor.sig).unwrap();
    section(
        "Transaction: Anchor by device 0, seq 2 (block 2, index 2)",
        format!(
            "Body:\n```\n{}```\nSigning bytes:\n```\n{}```\nEncoded transaction:\n```\n{}```\ntx id = `{}`\n",
            body.check(&enc_body(anchor), "anchor body"),
            signing_fields(anchor).check(&msg, "anchor signing bytes"),
            tx_fields(anchor).check(&anchor.to_bytes(), "anchor"),
            anchor.id()
        ),
    );

    // Block 2's header.
    let h = &b2.block.header;
    let header = Fields::new()
        .f("version", [1u8])
        .f("chain_id string", strb(&h.chain_id))
        .f("height u64", u64b(h.height))
        .f("prev_hash (block 1)", h.prev_hash.0)
        .f("time_ms u64", u64b(h.time_ms))
        .f("proposer", h.proposer.0)
        .f("tx_root", h.tx_root.0)
        .f("tx_count u32", u32b(h.tx_count))
        .f("state_root", h.state_root.0)
        .f("validator_set_hash", h.validator_set_hash.0)
        .f("last_commit_hash", h.last_commit_hash.0);
    assert_eq!(h.prev_hash, b1.block.hash());
    assert_eq!(h.last_commit_hash, b1.certificate.hash());
    section(
        "Block header (block 2)",
        format!(
            "```\n{}```\nblock hash = H(\"meshward/block-header/v1\", header) = `{}`\n",
            header.check(&h.to_bytes(), "header"),
            h.hash()
        ),
    );

    // The precommit vote bytes, from consensus's own vote encoding.
    let block_hash = h.hash();
    let vote = Vote {
        vote_type: VoteType::Precommit,
        height: Height(h.height),
        round: Round::new(1),
        value: NilOrVal::Val(BlockHash(block_hash)),
        validator: Address(ex.vals[0].public()),
        extension: None,
    };
    let vote_msg = meshward_consensus::signing::vote_bytes(CHAIN, &vote).unwrap();
    assert_eq!(
        vote_msg,
        vote_signing_bytes(CHAIN, VoteKind::Precommit, h.height, 1, Some(&block_hash))
    );
    let nil = Vote {
        vote_type: VoteType::Prevote,
        value: NilOrVal::Nil,
        ..vote.clone()
    };
    let nil_msg = meshward_consensus::signing::vote_bytes(CHAIN, &nil).unwrap();
    let vote_f = Fields::new()
        .f("domain \"meshward/vote/v1\"", domain::VOTE)
        .f("chain_id string", strb(CHAIN))
        .f("kind (2 precommit)", [2u8])
        .f("height u64", u64b(h.height))
        .f("round u32", u32b(1))
        .f("option tag (1 some)", [1u8])
        .f("block_hash", block_hash.0);
    let nil_f = Fields::new()
        .f("domain \"meshward/vote/v1\"", domain::VOTE)
        .f("chain_id string", strb(CHAIN))
        .f("kind (1 prevote)", [1u8])
        .f("height u64", u64b(h.height))
        .f("round u32", u32b(1))
        .f("option tag (0 nil)", [0u8]);
    section(
        "Vote signing bytes (validators sign these raw bytes with Ed25519; nothing is hashed first)",
        format!(
            "Precommit for block 2 in round 1, the certificate's round (what its signatures sign):\n```\n{}```\nA nil prevote at the same height and round:\n```\n{}```\n",
            vote_f.check(&vote_msg, "precommit"),
            nil_f.check(&nil_msg, "nil prevote")
        ),
    );

    // Block 2's certificate.
    let cert = &b2.certificate;
    assert_eq!(cert.round, 1);
    cert.verify(h, &g.validators).unwrap();
    for s in &cert.signatures {
        s.validator.verify(&vote_msg, &s.sig).unwrap();
    }
    let mut cf = Fields::new()
        .f("version", [1u8])
        .f("height u64", u64b(cert.height))
        .f("round u32", u32b(cert.round))
        .f("block_hash", cert.block_hash.0)
        .f("signatures count u32", u32b(cert.signatures.len() as u32));
    for (i, s) in cert.signatures.iter().enumerate() {
        cf = cf
            .f(&format!("[{i}] validator"), s.validator.0)
            .f(&format!("[{i}] sig"), s.sig.0);
    }
    section(
        "Commit certificate of block 2 (decided in round 1; validators 0, 1 and 2 of 4, sorted by key)",
        format!(
            "```\n{}```\nIts last-commit hash (block 3 would carry it) = H(\"meshward/last-commit/v1\", cert) = `{}`\n",
            cf.check(&cert.to_bytes(), "certificate"),
            cert.hash()
        ),
    );

    // The Merkle leaf and proof.
    let leaves = tx_leaves(&b2.block.txs);
    let tx_bytes = anchor.to_bytes();
    assert_eq!(merkle::leaf_hash(&tx_bytes), leaves[2]);
    let mut leaf_lines = String::new();
    for (i, l) in leaves.iter().enumerate() {
        writeln!(leaf_lines, "leaf[{i}] = SHA-256(0x00 || tx {i}) = {l}").unwrap();
    }
    let n01 = merkle::node_hash(&leaves[0], &leaves[1]);
    let root = merkle::node_hash(&n01, &leaves[2]);
    assert_eq!(root, h.tx_root);
    writeln!(
        leaf_lines,
        "node(0,1) = SHA-256(0x01 || leaf[0] || leaf[1]) = {n01}\n\
         tx_root   = SHA-256(0x01 || node(0,1) || leaf[2]) = {root}\n\
         (leaf[2] has no sibling at its level: it is carried up unchanged, never hashed with itself)"
    )
    .unwrap();
    let proof = merkle::prove(&leaves, 2).unwrap();
    proof.verify(&leaves[2], &h.tx_root, 3).unwrap();
    let mut pf = Fields::new()
        .f("leaf_index u64", u64b(proof.leaf_index))
        .f("tree_size u64", u64b(proof.tree_size))
        .f("path count u32", u32b(proof.path.len() as u32));
    for (i, p) in proof.path.iter().enumerate() {
        pf = pf.f(&format!("path[{i}]"), p.0);
    }
    section(
        "Merkle leaf and inclusion proof (block 2 holds 3 transactions; the anchor is leaf 2)",
        format!(
            "The leaf is the whole encoded transaction (above), signatures included.\n```\n{leaf_lines}```\nInclusion proof of leaf 2:\n```\n{}```\n",
            pf.check(&proof.to_bytes(), "merkle proof")
        ),
    );

    // The whole anchor proof file.
    let ap = TxProof::build(b1, b2, 2, vec![], vec![]).unwrap();
    let proven = ap.verify_anchor(g).unwrap();
    assert_eq!(proven.commitment, a.commitment);
    let file = ProofFile::new(CHAIN, &ap);
    let text = file.to_json() + "\n";
    ProofFile::verify_json(&text, g).unwrap();
    let mut pfile = String::new();
    pfile.push_str("```\n");
    pfile.push_str(&wrapped(
        "proof = version | origin (block 1 header | certificate) | handoffs | key changes | tx inclusion",
        &ap.to_bytes(),
    ));
    pfile.push_str("```\n");
    writeln!(
        pfile,
        "`proof.json` is `{{\"version\":2,\"chain_id\":\"{CHAIN}\",\"height\":{},\"kind\":\"anchor\",\"tx\":\"{}\",\"commitment\":\"{}\",\"proof\":\"<the hex above>\"}}` and a newline ({} bytes in all). `genesis.json` of this chain:\n```json\n{}\n```",
        file.height,
        file.tx.as_deref().unwrap(),
        file.commitment.as_deref().unwrap(),
        text.len(),
        g.to_json()
    )
    .unwrap();
    section(
        "Proof of that anchor (version 2: block 1, no handoffs since the genesis set certified block 2, no key changes)",
        pfile,
    );

    out
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/FORMATS.md")
}

#[test]
fn formats_md_examples_are_generated_from_the_code() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no line {BEGIN}", path.display()));
    let body_start = start + BEGIN.len() + 1;
    let end = doc[body_start..]
        .find(END)
        .map(|i| body_start + i)
        .unwrap_or_else(|| {
            panic!(
                "{} has no line {END} after the begin marker",
                path.display()
            )
        });
    let want = format!("\n{}\n", generate().trim_end());
    let have = &doc[body_start..end];
    if have == want {
        return;
    }
    if std::env::var("MESHWARD_BLESS").as_deref() == Ok("1") {
        let new = format!("{}{}{}", &doc[..body_start], want, &doc[end..]);
        std::fs::write(&path, new).unwrap();
        eprintln!("rewrote the generated examples in {}", path.display());
        return;
    }
    let first_diff = have
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(have.lines().count().min(want.lines().count()));
    panic!(
        "the generated examples in {} are stale (first differing line {} of the block: {:?} vs {:?}); \
         rerun with MESHWARD_BLESS=1 to rewrite them",
        path.display(),
        first_diff + 1,
        have.lines().nth(first_diff),
        want.lines().nth(first_diff)
    );
}

#[test]
fn examples_are_deterministic() {
    assert_eq!(generate(), generate());
}

/// The firmware example (`examples/firmware`) checks the proof of device 0's anchor in block 2
/// against the genesis of this same chain, from their binary encodings. This writes them (with
/// `MESHWARD_BLESS=1`) or fails if they are stale.
#[test]
fn firmware_example_data_is_generated_from_the_code() {
    let ex = build();
    let proof = TxProof::build(&ex.blocks[0], &ex.blocks[1], 2, vec![], vec![]).unwrap();
    let proven = proof.verify_anchor(&ex.genesis).unwrap();
    assert_eq!(proven.sender, ex.devices[0].id());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/firmware/data");
    for (name, bytes) in [
        ("genesis.bin", ex.genesis.to_bytes()),
        ("proof.bin", proof.to_bytes()),
    ] {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if std::env::var("MESHWARD_BLESS").as_deref() == Ok("1") {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        panic!(
            "{} is stale or missing; rerun with MESHWARD_BLESS=1 to rewrite it",
            path.display()
        );
    }
}
