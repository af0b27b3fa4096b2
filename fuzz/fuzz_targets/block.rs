//! Block decoders: blocks and certified blocks come from peers during sync and from the store;
//! headers and certificates travel alone in consensus messages and proofs.
//!
//! Checks: no decoder panics; whatever decodes re-encodes to exactly the input; `check_body`,
//! hashing and certificate verification (against the fixture genesis validators) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::block::{Block, BlockHeader, CertifiedBlock, CommitCertificate};
use meshward_core::codec::{Decode, Encode};
use meshward_fuzz::fixture;

fn check_block(b: &Block) {
    let _ = b.check_body();
    let _ = b.hash();
    let _ = meshward_core::block::last_commit_hash(&b.last_commit);
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let vals = &f.genesis.validators;

    if let Ok(b) = Block::decode_bytes(data) {
        assert_eq!(b.to_bytes(), data, "block encoding is not canonical");
        check_block(&b);
        if let Some(c) = &b.last_commit {
            let _ = c.verify(&b.header, vals);
        }
    }
    if let Ok(cb) = CertifiedBlock::decode_bytes(data) {
        assert_eq!(
            cb.to_bytes(),
            data,
            "certified block encoding is not canonical"
        );
        check_block(&cb.block);
        let _ = cb.certificate.verify(&cb.block.header, vals);
    }
    if let Ok(h) = BlockHeader::from_bytes(data) {
        assert_eq!(h.to_bytes(), data, "block header encoding is not canonical");
        let _ = h.hash();
        // A certificate from the fixture chain, checked against whatever header this is.
        let _ = f.blocks[0].certificate.verify(&h, vals);
    }
    if let Ok(c) = CommitCertificate::from_bytes(data) {
        assert_eq!(
            c.to_bytes(),
            data,
            "commit certificate encoding is not canonical"
        );
        let _ = c.hash();
        let _ = c.signers().count();
        for b in &f.blocks {
            let _ = c.verify(&b.block.header, vals);
        }
    }
});
