//! HPKE envelopes: the bytes every gateway and device receives from the mesh.
//!
//! Checks: `Envelope::from_bytes` never panics and round-trips exactly; commitment, signing
//! bytes and header compute. A decoded envelope is then opened by a fresh `Receiver` holding the
//! fixed receiver keypair (`Keypair::from_secret_bytes` of a fixed 65-byte key file), with the
//! fixed sender's signing key: once as decoded, and once re-signed by that sender (the fuzzer
//! cannot forge signatures; re-signing takes it past the signature check to the replay window,
//! the session cache and HPKE/AEAD decryption; a `Session` envelope has no signature to redo).
//! `open` must return Ok or Err, never panic, and an envelope that opened once must be refused
//! the second time (replay). Both then go through `open_batch` together, which must not panic
//! and must refuse a batch it opened once.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::{Decode, Encode};
use meshward_core::envelope::{Envelope, Receiver};
use meshward_core::ids::Keypair;
use meshward_fuzz::{receiver_keypair, sender_keypair};

fn keys() -> &'static (Keypair, Keypair) {
    static K: OnceLock<(Keypair, Keypair)> = OnceLock::new();
    K.get_or_init(|| (receiver_keypair(), sender_keypair()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::from_bytes(data) else {
        return;
    };
    assert_eq!(env.to_bytes(), data, "envelope encoding is not canonical");
    let _ = (env.commitment(), env.signing_bytes(), env.header_bytes());

    let (receiver, sender) = keys();
    let vk = sender.sign.verifying_key();
    let _ = env.verify_sender(&vk);

    // A `Session` envelope carries no signature (version 2): re-signing leaves it as it is.
    let mut resigned = env.clone();
    resigned.signature = resigned
        .kind
        .is_signed()
        .then(|| sender.sign.sign(&resigned.signing_bytes()));
    assert_eq!(
        resigned.verify_sender(&vk).is_ok(),
        resigned.kind.is_signed(),
        "a re-signed envelope verifies exactly when its kind is signed"
    );

    for e in [&env, &resigned] {
        let mut rx = Receiver::new(receiver);
        if let Ok(opened) = rx.open(e, &vk) {
            assert_eq!(opened.commitment, e.commitment());
            assert!(rx.open(e, &vk).is_err(), "replayed envelope opened twice");
        }
    }
    // The same envelopes as one batch: all or nothing, and a batch that opened is not opened
    // again.
    let batch = [env.clone(), resigned];
    let mut rx = Receiver::new(receiver);
    if rx.open_batch(&batch, &vk).is_ok() {
        assert!(rx.open_batch(&batch, &vk).is_err(), "batch opened twice");
    }
});
