//! Genesis decoders: the binary form (in the store and hashed into block 1) and the JSON file
//! every node and auditor reads.
//!
//! Checks: no panic; binary input that decodes re-encodes to exactly the input; a decoded
//! genesis (either form) survives binary -> decode and JSON -> parse unchanged, and its hash and
//! initial state compute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::{Decode, Encode};
use meshward_core::genesis::Genesis;

fn check(g: &Genesis) {
    let bytes = g.to_bytes();
    assert_eq!(
        Genesis::from_bytes(&bytes).as_ref(),
        Ok(g),
        "genesis does not survive its binary form"
    );
    let json = g.to_json();
    let back = Genesis::from_json(&json).expect("the JSON a genesis writes parses back");
    assert_eq!(&back, g, "genesis does not survive its JSON form");
    let _ = g.hash();
    let mut s = g.state();
    let _ = s.root();
}

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Genesis::from_bytes(data) {
        assert_eq!(g.to_bytes(), data, "genesis encoding is not canonical");
        check(&g);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(g) = Genesis::from_json(text) {
            check(&g);
        }
    }
});
