//! Transaction proofs (versions 1 and 2): what a light client (auditor, device) gets from a
//! gateway and checks offline against the genesis alone; both the binary form and the JSON proof
//! file.
//!
//! Checks: no panic; binary input that decodes re-encodes exactly; `verify` against the fixture
//! genesis (4 validators from fixed seeds, chain `meshward-fuzz`) returns Ok or Err; a proof that
//! verifies also verifies as a proof file, with the same result (except a version 1 proof of a
//! transaction that is not an anchor, which a version 1 file cannot hold: refused). UTF-8 input
//! also goes through `ProofFile::verify_json`, and input that decodes as an `EnvelopeInclusion`
//! is checked against the fixture's anchor proofs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::{Decode, Encode};
use meshward_core::light::{EnvelopeInclusion, ProofFile, TxProof};
use meshward_fuzz::fixture;

fuzz_target!(|data: &[u8]| {
    let genesis = &fixture().genesis;
    if let Ok(p) = TxProof::from_bytes(data) {
        assert_eq!(p.to_bytes(), data, "proof encoding is not canonical");
        if let Ok(proven) = p.verify(genesis) {
            let file = ProofFile::new(&genesis.chain_id, &p);
            let again = ProofFile::verify_json(&file.to_json(), genesis);
            if p.origin.is_none() && proven.anchor().is_none() {
                assert!(again.is_err(), "a version 1 file holds only anchors");
            } else {
                let again = again.expect("the proof file of a verified proof verifies");
                assert_eq!(again, proven);
            }
        }
    }
    // An envelope's inclusion under an anchor: decoded canonically, and checked against the
    // fixture's anchor proofs (Ok or Err, never a panic).
    if let Ok(inc) = EnvelopeInclusion::from_bytes(data) {
        assert_eq!(inc.to_bytes(), data, "inclusion encoding is not canonical");
        for p in &fixture().anchor_proofs {
            let _ = p.verify_envelope(genesis, &inc);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ProofFile::verify_json(text, genesis);
    }
});
