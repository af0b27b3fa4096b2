//! One-shot envelopes: [`seal_oneshot`] seals one payload under a fresh HPKE encapsulation. The
//! recipient opens them in [`Receiver::open`](super::Receiver::open), with the other kinds.

use alloc::vec::Vec;

use hpke::{OpModeS, Serializable as _};
use rand_core::{CryptoRng, RngCore};

use crate::ids::{EncKey, Keypair, PublicKey};

use super::{
    check_payload, hpke_info, recipient_public, Envelope, EnvelopeError, EnvelopeKind, HpkeAead,
    HpkeRng, Kdf, Kem, ONESHOT_INFO,
};

/// Seals `payload` for `recipient` with a fresh HPKE encapsulation.
///
/// `seq` is the next value of the sender's counter for this recipient (shared with its sessions);
/// `recipient_enc` is the recipient's X25519 key as listed in the ledger.
pub fn seal_oneshot<R: RngCore + CryptoRng>(
    rng: &mut R,
    sender: &Keypair,
    recipient: PublicKey,
    recipient_enc: &EncKey,
    seq: u64,
    timestamp_ms: u64,
    payload: &[u8],
) -> Result<Envelope, EnvelopeError> {
    check_payload(payload)?;
    if seq == 0 {
        return Err(EnvelopeError::SeqTooLow { seq, min: 1 });
    }
    let pk = recipient_public(recipient_enc)?;
    let sender_id = sender.id();
    let info = hpke_info(ONESHOT_INFO, &sender_id, &recipient);
    let (enc, mut ctx) =
        hpke::setup_sender::<HpkeAead, Kdf, Kem, _>(&OpModeS::Base, &pk, &info, &mut HpkeRng(rng))
            // The only failure is an all-zero shared secret: a small-order recipient key.
            .map_err(|_| EnvelopeError::InvalidRecipientKey)?;
    let mut env = Envelope {
        sender: sender_id,
        recipient,
        seq,
        timestamp_ms,
        kind: EnvelopeKind::OneShot {
            enc: enc.to_bytes().into(),
        },
        ciphertext: Vec::new(),
        signature: None,
    };
    // The encapsulated key is part of the header, so the header is known only after the setup.
    env.ciphertext = ctx
        .seal(payload, &env.header_bytes())
        .map_err(|_| EnvelopeError::Hpke("sealing a one-shot payload"))?;
    env.sign(&sender.sign);
    Ok(env)
}
