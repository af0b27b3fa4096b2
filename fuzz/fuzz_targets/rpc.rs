//! Mesh request-response messages: what a gateway or device reads from any peer.
//!
//! Checks: `Request::from_bytes` and `Response::from_bytes` never panic on any input, and what
//! decodes re-encodes to exactly the same bytes (the encoding is canonical). The first input
//! byte picks which decoder reads the rest, so one corpus covers both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::{Decode, Encode};
use meshward_core::rpc::{Request, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(r) = Request::from_bytes(rest) {
            assert_eq!(r.to_bytes(), rest, "request encoding is not canonical");
        }
    } else if let Ok(r) = Response::from_bytes(rest) {
        assert_eq!(r.to_bytes(), rest, "response encoding is not canonical");
    }
});
