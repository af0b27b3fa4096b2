//! Key material: key files read from disk, and peer ids typed by people or read from JSON.
//!
//! Checks: `Keypair::from_secret_bytes` never panics; a key file that loads writes back to
//! exactly the input, and both of its keys prove themselves (an Ed25519 signature and the
//! XEdDSA-style possession proof of the X25519 key verify). `PublicKey::from_peer_id` on UTF-8
//! input never panics, and a peer id it accepts is the one text form of that key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::ids::{Keypair, PublicKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = Keypair::from_secret_bytes(data) {
        assert_eq!(
            &k.to_secret_bytes()[..],
            data,
            "key file does not round-trip"
        );
        let msg = b"meshward fuzz possession";
        let sig = k.sign.sign(msg);
        assert!(k.id().verify(msg, &sig).is_ok() || k.id().verifying_key().is_err());
        let pop = k.enc.sign_possession(msg);
        assert!(
            k.enc_key().verify_possession(msg, &pop).is_ok(),
            "possession proof of a loaded X25519 key does not verify"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pk) = PublicKey::from_peer_id(text) {
            assert_eq!(pk.peer_id(), text, "peer id has a second text form");
            let _ = pk.verifying_key();
        }
    }
});
