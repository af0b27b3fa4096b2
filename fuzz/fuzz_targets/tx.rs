//! `Tx::decode_bytes`: transactions arrive from any peer (mempool gossip, RPC).
//!
//! Checks: decoding never panics; a decoded transaction re-encodes to exactly the input (one
//! value, one byte string) and its id and signing bytes compute. Then the ledger rules, which
//! promise never to panic, run on the fixture state, once as they are and once with the signer's
//! signature treated as pre-verified (as after a batch check), so the fuzzer reaches the rules
//! behind the signature check; an accepted delta must give the same root through
//! `State::root_after` as through `apply_delta` + `root`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::Encode;
use meshward_core::ledger::{apply, apply_with};
use meshward_core::state::StateView;
use meshward_core::tx::Tx;
use meshward_fuzz::{fixture, CHAIN_ID};

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = Tx::decode_bytes(data) else {
        return;
    };
    assert_eq!(tx.to_bytes(), data, "transaction encoding is not canonical");
    let _ = tx.id();
    let _ = tx.signing_bytes(CHAIN_ID);
    let _ = (tx.body.tag(), tx.body.name(), tx.body.is_admin_only());

    let f = fixture();
    let _ = apply(&f.state, &tx, &f.next_ctx);
    let key = f
        .state
        .account(&tx.signer)
        .map_or(tx.signer, |a| a.sign_key);
    if let Ok(delta) = apply_with(&f.state, &tx, &f.next_ctx, Some(&key)) {
        let predicted = f.state.root_after(&delta);
        let mut s = f.state.clone();
        s.apply_delta(delta);
        assert_eq!(s.root(), predicted, "root_after disagrees with apply_delta");
    }
});
