//! Building the transactions a device signs: anchors over envelopes, and acknowledgements.

use alloc::vec::Vec;

use meshward_core::envelope::Envelope;
use meshward_core::hash::Hash;
use meshward_core::ids::{PublicKey, SignKey};
use meshward_core::tx::{batch_root, Anchor, Recipient, Tx, TxBody, MAX_BATCH};

/// Most envelopes the SDK puts under one batch root (the ledger allows up to [`MAX_BATCH`]).
pub const MAX_SDK_BATCH: usize = 64;

const _: () = assert!(MAX_SDK_BATCH as u32 <= MAX_BATCH);

/// The commitment an anchor carries for `envelopes`: the envelope's own commitment for one, the
/// batch root over their commitments for several. `None` for an empty or oversized batch.
pub fn commitment_of(envelopes: &[&Envelope]) -> Option<Hash> {
    match envelopes {
        [] => None,
        [one] => Some(one.commitment()),
        many if many.len() <= MAX_SDK_BATCH => {
            let cs: Vec<Hash> = many.iter().map(|e| e.commitment()).collect();
            Some(batch_root(&cs))
        }
        _ => None,
    }
}

/// Signs an `Anchor` for `envelopes` (one, or a batch of up to [`MAX_SDK_BATCH`]) sent to
/// `recipient`. `account` is the device's ledger id, `key` its current signing key and `seq`
/// its next transaction sequence number.
pub fn anchor_tx(
    chain_id: &str,
    account: PublicKey,
    key: &SignKey,
    seq: u64,
    recipient: Recipient,
    envelopes: &[&Envelope],
    timestamp_ms: u64,
) -> Option<Tx> {
    let commitment = commitment_of(envelopes)?;
    let body = TxBody::Anchor(Anchor {
        recipient,
        commitment,
        count: envelopes.len() as u32,
        timestamp_ms,
        size_bytes: envelopes.iter().map(|e| e.ciphertext.len() as u64).sum(),
    });
    Some(Tx::sign(chain_id, account, key, seq, body))
}

/// Signs an `Ack`: the device received and opened the envelope `commitment` from `sender`
/// (the sender's ledger id).
pub fn ack_tx(
    chain_id: &str,
    account: PublicKey,
    key: &SignKey,
    seq: u64,
    commitment: Hash,
    sender: PublicKey,
) -> Tx {
    Tx::sign(
        chain_id,
        account,
        key,
        seq,
        TxBody::Ack { commitment, sender },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_core::envelope::seal_oneshot;
    use meshward_core::ids::Keypair;
    use rand::rngs::OsRng;

    #[test]
    fn one_envelope_anchors_its_commitment_and_many_their_batch_root() {
        let a = Keypair::generate(&mut OsRng);
        let b = Keypair::generate(&mut OsRng);
        let e1 = seal_oneshot(&mut OsRng, &a, b.id(), &b.enc_key(), 1, 0, b"x").unwrap();
        let e2 = seal_oneshot(&mut OsRng, &a, b.id(), &b.enc_key(), 2, 0, b"y").unwrap();
        assert_eq!(commitment_of(&[&e1]), Some(e1.commitment()));
        let root = commitment_of(&[&e1, &e2]).unwrap();
        assert_eq!(root, batch_root(&[e1.commitment(), e2.commitment()]));
        assert_ne!(root, e1.commitment());
        assert_eq!(commitment_of(&[]), None);
        let many: Vec<&Envelope> = core::iter::repeat_n(&e1, MAX_SDK_BATCH + 1).collect();
        assert_eq!(commitment_of(&many), None);
        let tx = anchor_tx(
            "c",
            a.id(),
            &a.sign,
            1,
            Recipient::Device(b.id()),
            &[&e1, &e2],
            9,
        )
        .unwrap();
        match tx.body {
            TxBody::Anchor(an) => {
                assert_eq!(an.count, 2);
                assert_eq!(an.commitment, root);
            }
            _ => panic!("not an anchor"),
        }
    }
}
