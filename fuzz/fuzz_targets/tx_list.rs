//! `decode_tx_list`: a gossip message from any peer, or a `POST /v1/txs` body.
//!
//! Checks: decoding never panics; a decoded list re-encodes to exactly the input. Then the
//! admission path a validator takes runs on the fixture state: `preverify_rest` with, for each
//! transaction, a key the input claims was already verified (the signer's, another's, or none),
//! then `execute_preverified`; neither panics. A signature `preverify_batch` vouches for is
//! vouched for under the signer's current key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::Encode;
use meshward_core::ledger::{execute_preverified, preverify_batch, preverify_rest};
use meshward_core::state::StateView;
use meshward_core::tx::{decode_tx_list, encode_tx_list, MAX_TX_LIST};
use meshward_fuzz::fixture;

fuzz_target!(|data: &[u8]| {
    let Ok(txs) = decode_tx_list(data, MAX_TX_LIST) else {
        return;
    };
    let encoded: Vec<Vec<u8>> = txs.iter().map(|t| t.to_bytes()).collect();
    assert_eq!(
        encode_tx_list(&encoded),
        data,
        "tx list encoding is not canonical"
    );

    let f = fixture();
    // A signature verified in the batch is vouched for under the signer's current key, and
    // under no other.
    for (tx, k) in txs.iter().zip(preverify_batch(&f.state, &txs)) {
        if let Some(k) = k {
            let current = f.state.account(&tx.signer).map(|a| a.sign_key);
            assert_eq!(
                Some(k),
                current,
                "verified under a key that is not the signer's"
            );
        }
    }
    // The last byte of each transaction picks what is claimed about its signature.
    let known = txs
        .iter()
        .zip(&encoded)
        .map(|(tx, bytes)| match bytes.last().copied().unwrap_or(0) % 3 {
            0 => None,
            1 => Some(
                f.state
                    .account(&tx.signer)
                    .map_or(tx.signer, |a| a.sign_key),
            ),
            _ => Some(tx.signer),
        })
        .collect();
    let pre = preverify_rest(&f.state, &txs, known);
    let _ = execute_preverified(&f.state, &txs, &f.next_ctx, &pre);
});
