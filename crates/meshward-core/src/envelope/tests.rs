//! Sealing and opening end to end: both modes, tampering, misdirection, replays and the
//! receiver's bounds.

use super::*;
use crate::codec::{Decode, DecodeError, Encode};
use crate::hash::{domain, hash};
use crate::ids::{EncKey, Keypair};
use ed25519_dalek::VerifyingKey;
use rand::rngs::OsRng;

struct Pair {
    alice: Keypair,
    bob: Keypair,
}

fn pair() -> Pair {
    Pair {
        alice: Keypair::generate(&mut OsRng),
        bob: Keypair::generate(&mut OsRng),
    }
}

fn vk(k: &Keypair) -> VerifyingKey {
    k.sign.verifying_key()
}

fn oneshot(p: &Pair, seq: u64, payload: &[u8]) -> Envelope {
    seal_oneshot(
        &mut OsRng,
        &p.alice,
        p.bob.id(),
        &p.bob.enc_key(),
        seq,
        1_000 + seq,
        payload,
    )
    .unwrap()
}

fn session(p: &Pair) -> SendSession {
    SendSession::new(&mut OsRng, &p.alice, p.bob.id(), &p.bob.enc_key()).unwrap()
}

#[test]
fn oneshot_round_trip() {
    let p = pair();
    let mut rx = Receiver::new(&p.bob);
    for (seq, payload) in [
        (1, &b""[..]),
        (2, b"hello"),
        (3, &[7u8; MAX_PAYLOAD_BYTES][..]),
    ] {
        let env = oneshot(&p, seq, payload);
        assert!(matches!(env.kind, EnvelopeKind::OneShot { .. }));
        assert_eq!(env.ciphertext.len(), payload.len() + TAG_BYTES);
        let decoded = Envelope::from_bytes(&env.to_bytes()).unwrap();
        assert_eq!(decoded, env);
        let opened = rx.open(&decoded, &vk(&p.alice)).unwrap();
        assert_eq!(opened.payload, payload);
        assert_eq!(opened.sender, p.alice.id());
        assert_eq!(opened.seq, seq);
        assert_eq!(opened.timestamp_ms, 1_000 + seq);
        assert_eq!(opened.commitment, env.commitment());
    }
    assert_eq!(rx.session_count(), 0);
}

#[test]
fn session_round_trip_out_of_order() {
    let p = pair();
    let mut tx = session(&p);
    let envs: Vec<Envelope> = (1..=6)
        .map(|seq| tx.seal(seq, seq * 10, &[seq as u8; 100]).unwrap())
        .collect();
    assert!(
        matches!(envs[0].kind, EnvelopeKind::SessionOpen { session, .. } if session == tx.session_id())
    );
    for env in &envs[1..] {
        assert_eq!(
            env.kind,
            EnvelopeKind::Session {
                session: tx.session_id()
            }
        );
    }
    let mut rx = Receiver::new(&p.bob);
    for i in [0usize, 4, 2, 5, 1, 3] {
        let env = Envelope::from_bytes(&envs[i].to_bytes()).unwrap();
        let opened = rx.open(&env, &vk(&p.alice)).unwrap();
        assert_eq!(opened.seq, i as u64 + 1);
        assert_eq!(opened.payload, [i as u8 + 1; 100]);
    }
    assert_eq!(rx.session_count(), 1);
    assert_eq!(rx.replay_guard().highest(&p.alice.id()), Some(6));
}

#[test]
fn session_and_oneshot_share_one_seq_counter() {
    let p = pair();
    let mut tx = session(&p);
    let mut rx = Receiver::new(&p.bob);
    rx.open(&tx.seal(1, 0, b"a").unwrap(), &vk(&p.alice))
        .unwrap();
    rx.open(&oneshot(&p, 2, b"b"), &vk(&p.alice)).unwrap();
    rx.open(&tx.seal(3, 0, b"c").unwrap(), &vk(&p.alice))
        .unwrap();
    assert_eq!(
        rx.open(&oneshot(&p, 3, b"d"), &vk(&p.alice)),
        Err(EnvelopeError::Replay { seq: 3 })
    );
}

#[test]
fn resent_session_open_reuses_the_session() {
    let p = pair();
    let mut tx = session(&p);
    let mut rx = Receiver::new(&p.bob);
    rx.open(&tx.seal(1, 0, b"a").unwrap(), &vk(&p.alice))
        .unwrap();
    tx.resend_open();
    let env = tx.seal(2, 0, b"b").unwrap();
    assert!(matches!(env.kind, EnvelopeKind::SessionOpen { .. }));
    assert_eq!(rx.open(&env, &vk(&p.alice)).unwrap().payload, b"b");
    // And a receiver that lost the session gets it back from the re-sent open.
    let mut fresh = Receiver::new(&p.bob);
    tx.resend_open();
    fresh
        .open(&tx.seal(3, 0, b"c").unwrap(), &vk(&p.alice))
        .unwrap();
    assert_eq!(
        fresh
            .open(&tx.seal(4, 0, b"d").unwrap(), &vk(&p.alice))
            .unwrap()
            .payload,
        b"d"
    );
    assert_eq!(rx.session_count(), 1);
}

#[test]
fn tampered_ciphertext_rejected() {
    let p = pair();
    let mut tx = session(&p);
    let first = tx.seal(1, 0, b"open").unwrap();
    for env in [oneshot(&p, 2, b"attack at dawn"), first.clone()] {
        let mut rx = Receiver::new(&p.bob);
        // In transit: the signature no longer matches.
        let mut bad = env.clone();
        bad.ciphertext[3] ^= 0x01;
        assert_eq!(
            bad.verify_sender(&vk(&p.alice)),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            rx.open(&bad, &vk(&p.alice)),
            Err(EnvelopeError::BadSignature)
        );
        // By the signer itself: the AEAD still catches it.
        bad.sign(&p.alice.sign);
        assert_eq!(bad.verify_sender(&vk(&p.alice)), Ok(()));
        assert_eq!(rx.open(&bad, &vk(&p.alice)), Err(EnvelopeError::Decrypt));
        // Header fields are bound as associated data, even under a fresh signature.
        let mut moved = env.clone();
        moved.timestamp_ms += 1;
        moved.sign(&p.alice.sign);
        assert_eq!(rx.open(&moved, &vk(&p.alice)), Err(EnvelopeError::Decrypt));
        let mut reseq = env.clone();
        reseq.seq += 100;
        reseq.sign(&p.alice.sign);
        assert_eq!(rx.open(&reseq, &vk(&p.alice)), Err(EnvelopeError::Decrypt));
        // A signature by anyone else is rejected.
        let mut forged = env.clone();
        forged.sign(&p.bob.sign);
        assert_eq!(
            rx.open(&forged, &vk(&p.alice)),
            Err(EnvelopeError::BadSignature)
        );
        assert!(rx.open(&env, &vk(&p.alice)).is_ok());
    }
}

#[test]
fn tampered_session_message_fails_its_aead() {
    let p = pair();
    let mut tx = session(&p);
    let first = tx.seal(1, 0, b"open").unwrap();
    let env = tx.seal(3, 7, b"later").unwrap();
    let mut rx = Receiver::new(&p.bob);
    rx.open(&first, &vk(&p.alice)).unwrap();
    assert_eq!(
        env.verify_sender(&vk(&p.alice)),
        Err(EnvelopeError::Unsigned)
    );
    // Any byte of the ciphertext or of the header (the AEAD's associated data).
    let mut bad = env.clone();
    bad.ciphertext[3] ^= 0x01;
    let mut moved = env.clone();
    moved.timestamp_ms += 1;
    let mut reseq = env.clone();
    reseq.seq += 100;
    let mut cut = env.clone();
    cut.ciphertext.pop();
    for bad in [bad, moved, reseq, cut] {
        assert_eq!(rx.open(&bad, &vk(&p.alice)), Err(EnvelopeError::Decrypt));
    }
    // Claimed by another sender: its sessions are keyed by sender, so the id names nothing.
    let carol = Keypair::generate(&mut OsRng);
    let mut spoofed = env.clone();
    spoofed.sender = carol.id();
    assert_eq!(
        rx.open(&spoofed, &vk(&carol)),
        Err(EnvelopeError::UnknownSession)
    );
    // None of that used up the seq.
    assert_eq!(rx.open(&env, &vk(&p.alice)).unwrap().payload, b"later");
}

#[test]
fn session_messages_are_unsigned_and_encode_without_a_signature() {
    let p = pair();
    let mut tx = session(&p);
    let open = tx.seal(1, 0, b"x").unwrap();
    let later = tx.seal(2, 0, b"x").unwrap();
    assert!(open.signature.is_some());
    assert!(later.signature.is_none());
    // A SessionOpen carries the 32-byte enc and the 64-byte signature more.
    assert_eq!(open.to_bytes().len() - later.to_bytes().len(), 32 + 64);
    // A signature appended to a Session envelope is trailing garbage, not a field.
    let mut padded = later.to_bytes();
    padded.extend_from_slice(&[0u8; 64]);
    assert_eq!(
        Envelope::from_bytes(&padded),
        Err(DecodeError::TrailingBytes { count: 64 })
    );
}

#[test]
fn a_session_ends_when_the_sender_rotates_its_key() {
    let p = pair();
    let mut tx = session(&p);
    let mut rx = Receiver::new(&p.bob);
    rx.open(&tx.seal(1, 0, b"open").unwrap(), &vk(&p.alice))
        .unwrap();
    let later = tx.seal(2, 0, b"later").unwrap();
    // The ledger now lists another key for the sender: the old key's session messages are
    // refused, unsigned as they are, until the sender opens a session under its new key.
    let rotated = Keypair::generate(&mut OsRng);
    assert_eq!(
        rx.open(&later, &vk(&rotated)),
        Err(EnvelopeError::BadSignature)
    );
    assert_eq!(rx.open(&later, &vk(&p.alice)).unwrap().payload, b"later");
}

/// A session stream of `n` messages from seq 1: a SessionOpen, then Session envelopes.
fn stream(p: &Pair, n: u64) -> Vec<Envelope> {
    let mut tx = session(p);
    (1..=n)
        .map(|seq| tx.seal(seq, seq, &[seq as u8; 40]).unwrap())
        .collect()
}

#[test]
fn a_batch_opens_whole_including_its_own_session_open() {
    let p = pair();
    let envs = stream(&p, 5);
    let mut rx = Receiver::new(&p.bob);
    let opened = rx.open_batch(&envs, &vk(&p.alice)).unwrap();
    assert_eq!(opened.len(), 5);
    for (o, env) in opened.iter().zip(&envs) {
        assert_eq!(o.seq, env.seq);
        assert_eq!(o.payload, vec![env.seq as u8; 40]);
        assert_eq!(o.commitment, env.commitment());
    }
    assert_eq!(rx.session_count(), 1);
}

/// `rx` refuses `batch` with `want` at `at`, then still opens the whole `good` stream: the
/// refused batch changed nothing.
fn refused_whole(p: &Pair, good: &[Envelope], batch: &[Envelope], at: usize, want: EnvelopeError) {
    let mut rx = Receiver::new(&p.bob);
    assert_eq!(rx.open_batch(batch, &vk(&p.alice)), Err((at, want)));
    assert_eq!(rx.session_count(), 0);
    assert_eq!(
        rx.open_batch(good, &vk(&p.alice)).unwrap().len(),
        good.len()
    );
}

#[test]
fn a_tampered_session_stream_delivers_nothing() {
    let p = pair();
    let good = stream(&p, 4);
    let mut tampered = good.clone();
    tampered[2].ciphertext[0] ^= 0x40;
    refused_whole(&p, &good, &tampered, 2, EnvelopeError::Decrypt);
    // A SessionOpen tampered: the signature catches it first.
    let mut bad_open = good.clone();
    bad_open[0].ciphertext[0] ^= 0x40;
    refused_whole(&p, &good, &bad_open, 0, EnvelopeError::BadSignature);
}

#[test]
fn a_reordered_session_stream_delivers_nothing() {
    let p = pair();
    let good = stream(&p, 4);
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    refused_whole(
        &p,
        &good,
        &swapped,
        3,
        EnvelopeError::Reordered { seq: 3, after: 4 },
    );
    // A message repeated inside the stream is out of order too.
    let mut doubled = good.clone();
    doubled.insert(2, good[1].clone());
    refused_whole(
        &p,
        &good,
        &doubled,
        2,
        EnvelopeError::Reordered { seq: 2, after: 2 },
    );
}

#[test]
fn a_replayed_session_stream_delivers_nothing() {
    let p = pair();
    let good = stream(&p, 4);
    let mut rx = Receiver::new(&p.bob);
    rx.open_batch(&good, &vk(&p.alice)).unwrap();
    assert_eq!(
        rx.open_batch(&good, &vk(&p.alice)),
        Err((0, EnvelopeError::Replay { seq: 1 }))
    );
    // The replay spliced behind a fresh message is refused whole: the fresh one stays unread.
    let mut tx = session(&p);
    let fresh = tx.seal(5, 0, b"fresh").unwrap();
    let mut spliced = vec![fresh.clone()];
    spliced.extend(good[3..].iter().cloned());
    assert!(matches!(
        rx.open_batch(&spliced, &vk(&p.alice)),
        Err((1, EnvelopeError::Reordered { .. }))
    ));
    assert_eq!(rx.open(&fresh, &vk(&p.alice)).unwrap().payload, b"fresh");
}

#[test]
fn a_truncated_session_stream_delivers_nothing() {
    let p = pair();
    let good = stream(&p, 4);
    // The stream cut inside its last message: its bytes no longer decode...
    let bytes = good[3].to_bytes();
    for cut in [1, TAG_BYTES, bytes.len() / 2] {
        assert!(Envelope::from_bytes(&bytes[..bytes.len() - cut]).is_err());
    }
    // ...and a message whose ciphertext lost its end (length re-framed) fails its tag.
    let mut cut = good.clone();
    cut[3].ciphertext.truncate(TAG_BYTES);
    refused_whole(&p, &good, &cut, 3, EnvelopeError::Decrypt);
    // A stream that lost its SessionOpen: nothing after it can be opened.
    refused_whole(&p, &good, &good[1..], 0, EnvelopeError::UnknownSession);
}

#[test]
fn a_batch_of_two_senders_delivers_nothing() {
    let p = pair();
    let good = stream(&p, 2);
    let carol = Pair {
        alice: Keypair::generate(&mut OsRng),
        bob: p.bob.clone(),
    };
    let mut mixed = good.clone();
    mixed.push(oneshot(&carol, 3, b"carol"));
    refused_whole(&p, &good, &mixed, 2, EnvelopeError::MixedBatch);
}

#[test]
fn wrong_recipient_rejected() {
    let p = pair();
    let carol = Keypair::generate(&mut OsRng);
    let env = oneshot(&p, 1, b"for bob");
    let mut rx = Receiver::new(&carol);
    assert_eq!(
        rx.open(&env, &vk(&p.alice)),
        Err(EnvelopeError::WrongRecipient {
            expected: carol.id(),
            found: p.bob.id()
        })
    );
    // Addressed to bob but sealed to carol's encryption key: bob cannot decrypt it.
    let misdirected = seal_oneshot(
        &mut OsRng,
        &p.alice,
        p.bob.id(),
        &carol.enc_key(),
        1,
        0,
        b"x",
    )
    .unwrap();
    let mut bob_rx = Receiver::new(&p.bob);
    assert_eq!(
        bob_rx.open(&misdirected, &vk(&p.alice)),
        Err(EnvelopeError::Decrypt)
    );
    // The recipient id is in the HPKE info: retargeting and re-signing does not help carol.
    let mut retargeted = misdirected.clone();
    retargeted.recipient = carol.id();
    retargeted.sign(&p.alice.sign);
    assert_eq!(
        rx.open(&retargeted, &vk(&p.alice)),
        Err(EnvelopeError::Decrypt)
    );
}

#[test]
fn replayed_envelope_rejected() {
    let p = pair();
    let mut rx = Receiver::new(&p.bob);
    let one = oneshot(&p, 1, b"once");
    rx.open(&one, &vk(&p.alice)).unwrap();
    assert_eq!(
        rx.open(&one, &vk(&p.alice)),
        Err(EnvelopeError::Replay { seq: 1 })
    );

    let mut tx = session(&p);
    let open = tx.seal(2, 0, b"open").unwrap();
    let later = tx.seal(3, 0, b"later").unwrap();
    rx.open(&open, &vk(&p.alice)).unwrap();
    rx.open(&later, &vk(&p.alice)).unwrap();
    assert_eq!(
        rx.open(&open, &vk(&p.alice)),
        Err(EnvelopeError::Replay { seq: 2 })
    );
    assert_eq!(
        rx.open(&later, &vk(&p.alice)),
        Err(EnvelopeError::Replay { seq: 3 })
    );

    // Below the window: too old even if never seen.
    let old = tx.seal(10, 0, b"old").unwrap();
    rx.open(
        &tx.seal(10 + REPLAY_WINDOW, 0, b"new").unwrap(),
        &vk(&p.alice),
    )
    .unwrap();
    assert_eq!(
        rx.open(&old, &vk(&p.alice)),
        Err(EnvelopeError::Replay { seq: 10 })
    );
}

#[test]
fn failed_open_does_not_burn_seq() {
    let p = pair();
    let mut rx = Receiver::new(&p.bob);
    let good = oneshot(&p, 5, b"real");
    let mut bad_sig = good.clone();
    bad_sig.ciphertext[0] ^= 1;
    let mut bad_tag = bad_sig.clone();
    bad_tag.sign(&p.alice.sign);
    assert_eq!(
        rx.open(&bad_sig, &vk(&p.alice)),
        Err(EnvelopeError::BadSignature)
    );
    assert_eq!(
        rx.open(&bad_tag, &vk(&p.alice)),
        Err(EnvelopeError::Decrypt)
    );
    assert!(rx.replay_guard().is_empty());
    assert_eq!(rx.open(&good, &vk(&p.alice)).unwrap().payload, b"real");

    // Same for a session message that arrives before its SessionOpen.
    let mut tx = session(&p);
    let open = tx.seal(6, 0, b"open").unwrap();
    let next = tx.seal(7, 0, b"next").unwrap();
    assert_eq!(
        rx.open(&next, &vk(&p.alice)),
        Err(EnvelopeError::UnknownSession)
    );
    rx.open(&open, &vk(&p.alice)).unwrap();
    assert_eq!(rx.open(&next, &vk(&p.alice)).unwrap().payload, b"next");
}

#[test]
fn unknown_session_rejected() {
    let p = pair();
    let mut tx = session(&p);
    let open = tx.seal(1, 0, b"open").unwrap();
    let next = tx.seal(2, 0, b"next").unwrap();
    let mut rx = Receiver::new(&p.bob);
    assert_eq!(
        rx.open(&next, &vk(&p.alice)),
        Err(EnvelopeError::UnknownSession)
    );

    // Session ids are per sender: carol cannot use alice's session by naming it.
    let carol = Keypair::generate(&mut OsRng);
    rx.open(&open, &vk(&p.alice)).unwrap();
    let mut stolen = next.clone();
    stolen.sender = carol.id();
    stolen.sign(&carol.sign);
    assert_eq!(
        rx.open(&stolen, &vk(&carol)),
        Err(EnvelopeError::UnknownSession)
    );

    // A SessionOpen whose id does not match its encapsulated key is refused.
    let mut tx2 = session(&p);
    let mut mismatched = tx2.seal(3, 0, b"x").unwrap();
    if let EnvelopeKind::SessionOpen { session, .. } = &mut mismatched.kind {
        *session = tx.session_id();
    }
    mismatched.sign(&p.alice.sign);
    assert_eq!(
        rx.open(&mismatched, &vk(&p.alice)),
        Err(EnvelopeError::SessionMismatch)
    );
}

#[test]
fn session_cache_is_bounded() {
    let p = pair();
    let mut rx = Receiver::with_limits(&p.bob, 4, 2, 16);
    let mut seq = 0;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let mut tx = session(&p);
        seq += 1;
        rx.open(&tx.seal(seq, 0, b"open").unwrap(), &vk(&p.alice))
            .unwrap();
        sessions.push(tx);
        assert!(rx.session_count() <= 2, "per-sender limit");
    }
    // Alice's three oldest sessions were evicted; the two newest still work.
    seq += 1;
    let stale = sessions[0].seal(seq, 0, b"x").unwrap();
    assert_eq!(
        rx.open(&stale, &vk(&p.alice)),
        Err(EnvelopeError::UnknownSession)
    );
    for tx in &mut sessions[3..] {
        seq += 1;
        rx.open(&tx.seal(seq, 0, b"y").unwrap(), &vk(&p.alice))
            .unwrap();
    }
    // Other senders fill the global limit.
    for _ in 0..10 {
        let other = Keypair::generate(&mut OsRng);
        let mut tx = SendSession::new(&mut OsRng, &other, p.bob.id(), &p.bob.enc_key()).unwrap();
        rx.open(&tx.seal(1, 0, b"z").unwrap(), &vk(&other)).unwrap();
        assert!(rx.session_count() <= 4);
    }
    assert_eq!(rx.session_count(), 4);
}

#[test]
fn seal_rejects_bad_input() {
    let p = pair();
    let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
    assert!(matches!(
        seal_oneshot(&mut OsRng, &p.alice, p.bob.id(), &p.bob.enc_key(), 1, 0, &big),
        Err(EnvelopeError::PayloadTooLarge { len, max: MAX_PAYLOAD_BYTES, .. }) if len == big.len()
    ));
    assert_eq!(
        seal_oneshot(
            &mut OsRng,
            &p.alice,
            p.bob.id(),
            &p.bob.enc_key(),
            0,
            0,
            b""
        ),
        Err(EnvelopeError::SeqTooLow { seq: 0, min: 1 })
    );
    // The all-zero point has small order: no shared secret can come of it.
    assert_eq!(
        seal_oneshot(
            &mut OsRng,
            &p.alice,
            p.bob.id(),
            &EncKey([0u8; 32]),
            1,
            0,
            b""
        ),
        Err(EnvelopeError::InvalidRecipientKey)
    );
    let mut tx = session(&p);
    assert_eq!(
        tx.seal(0, 0, b""),
        Err(EnvelopeError::SeqTooLow { seq: 0, min: 1 })
    );
    tx.seal(5, 0, b"").unwrap();
    assert_eq!(
        tx.seal(5, 0, b""),
        Err(EnvelopeError::SeqTooLow { seq: 5, min: 6 })
    );
    assert!(tx.seal(6, 0, &big).is_err());
    // A failed seal changed nothing: the next envelope is still a Session with seq 6.
    assert!(matches!(
        tx.seal(6, 0, b"").unwrap().kind,
        EnvelopeKind::Session { .. }
    ));
}

#[test]
fn oversized_envelope_rejected_before_signature_check() {
    let p = pair();
    let mut env = oneshot(&p, 1, b"x");
    env.ciphertext = vec![0; MAX_CIPHERTEXT_BYTES + 1];
    let mut rx = Receiver::new(&p.bob);
    assert!(matches!(
        rx.open(&env, &vk(&p.alice)),
        Err(EnvelopeError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        Envelope::from_bytes(&env.to_bytes()),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn decoder_rejects_unknown_version_kind_and_short_ciphertext() {
    let p = pair();
    let env = oneshot(&p, 1, b"x");
    let bytes = env.to_bytes();
    let mut v = bytes.clone();
    // Version 1 (every envelope signed) no longer decodes.
    v[0] = 1;
    assert!(matches!(
        Envelope::from_bytes(&v),
        Err(DecodeError::UnknownVersion {
            found: 1,
            supported: 2,
            ..
        })
    ));
    let kind_at = 1 + 32 + 32 + 8 + 8;
    for tag in [0u8, 4, 255] {
        let mut k = bytes.clone();
        k[kind_at] = tag;
        assert_eq!(
            Envelope::from_bytes(&k),
            Err(DecodeError::UnknownTag {
                what: "envelope kind",
                tag
            })
        );
    }
    let mut short = env.clone();
    short.ciphertext.truncate(TAG_BYTES - 1);
    assert!(matches!(
        Envelope::from_bytes(&short.to_bytes()),
        Err(DecodeError::Invalid { .. })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        Envelope::from_bytes(&trailing),
        Err(DecodeError::TrailingBytes { count: 1 })
    );
}

#[test]
fn commitment_changes_with_any_byte() {
    let p = pair();
    let mut tx = session(&p);
    for env in [
        oneshot(&p, 1, b"abc"),
        tx.seal(2, 0, b"abc").unwrap(),
        tx.seal(3, 0, b"abc").unwrap(),
    ] {
        let bytes = env.to_bytes();
        let c = env.commitment();
        assert_eq!(c, hash(domain::ENVELOPE, &bytes));
        for i in 0..bytes.len() {
            let mut m = bytes.clone();
            m[i] ^= 0x80;
            if let Ok(decoded) = Envelope::from_bytes(&m) {
                assert_eq!(decoded.to_bytes(), m, "encoding is canonical");
                assert_ne!(decoded.commitment(), c, "byte {i}");
            }
        }
    }
}

#[test]
fn verify_sender_is_stateless_and_key_specific() {
    let p = pair();
    let env = oneshot(&p, 1, b"x");
    assert_eq!(env.verify_sender(&vk(&p.alice)), Ok(()));
    assert_eq!(env.verify_sender(&vk(&p.alice)), Ok(()));
    assert_eq!(
        env.verify_sender(&vk(&p.bob)),
        Err(EnvelopeError::BadSignature)
    );
}
