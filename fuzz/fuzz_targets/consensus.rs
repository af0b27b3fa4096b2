//! Malachite's messages as `meshward-consensus` decodes them: votes and proposals, liveness
//! messages, proposal parts and their stream messages, value-sync status, requests and
//! responses, polka and round certificates, validator proofs, and the proposed values the WAL
//! keeps: everything a consensus peer can send, and what the node reads back from its WAL.
//!
//! Checks: no input panics a decoder, and what decodes re-encodes to exactly the same bytes.
//! The first input byte picks the family (modulo `FAMILIES`), so one corpus covers all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_consensus::codec::fuzz::decode_family;

fuzz_target!(|data: &[u8]| {
    let Some((&family, rest)) = data.split_first() else {
        return;
    };
    decode_family(family, rest);
});
