//! Meshward's device path on a Cortex-M4, with no operating system: seal a message to a peer
//! (HPKE, signed), sign its anchor transaction, open a message sealed to this device, and check
//! an anchor proof offline against the genesis, both loaded from their binary encodings. What
//! goes to and from the gateway is in MQTT sealed mode's frames (`meshward_sdk::sealed`): the
//! login token, the requests that deposit the envelope and submit its anchor, the mail frame the
//! incoming envelope arrives in, and its acknowledgement. An MQTT client carries them: the
//! token as the CONNECT password, requests published on `meshward/v1/sealed`, mail and replies
//! received on `meshward/v1/inbox`.
//!
//! The keys and the random generator are fixed here so the example is reproducible and the
//! proof in `data/` (written by `crates/meshward/tests/formats_examples.rs` from the chain in
//! docs/FORMATS.md, Worked examples) is this device's. A real device generates its keys once
//! with `Keypair::generate` from its hardware RNG and keeps them in its own flash; it receives
//! envelopes, the genesis and proofs from its gateway.
//!
//! Build: `cargo build --release` in this directory (target thumbv7em-none-eabihf). With
//! `--features measure`, `cargo run --release --features measure` runs it in
//! `qemu-system-arm -M mps2-an386` and prints the heap peak and the stack high-water mark.
#![no_std]
#![no_main]

extern crate alloc;

use core::mem::MaybeUninit;

use cortex_m_rt::entry;
use meshward_sdk::envelope::{seal_oneshot, Receiver};
use meshward_sdk::light::TxProof;
use meshward_sdk::meshward_core::codec::{Decode, Encode};
use meshward_sdk::meshward_core::genesis::Genesis;
use meshward_sdk::meshward_core::ids::{EncSecret, SignKey};
use meshward_sdk::meshward_core::tx::Recipient;
use meshward_sdk::rpc::Request;
use meshward_sdk::sealed::{self, Inbound, LoginToken};
use meshward_sdk::Keypair;
use panic_halt as _;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod heap;

/// The genesis of the example chain, in its canonical binary encoding.
static GENESIS: &[u8] = include_bytes!("../data/genesis.bin");
/// A version 2 proof of this device's anchor in block 2 of that chain.
static PROOF: &[u8] = include_bytes!("../data/proof.bin");

/// Heap for the device path: its measured peak (4,010 bytes, see README.md) and half again.
const HEAP_BYTES: usize = 6 * 1024;
static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];

/// A clock stand-in: ms since the Unix epoch (a device would read its RTC).
const NOW_MS: u64 = 1_700_000_003_000;

#[entry]
fn main() -> ! {
    // SAFETY: runs once, before anything allocates; HEAP_MEM is used by nothing else.
    unsafe { heap::init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_BYTES) };
    heap::paint_stack();
    let result = device_path();
    heap::report(result);
    loop {
        cortex_m::asm::wfi();
    }
}

/// The example's keys, as the proof's chain enrolled them (device 0 and device 1 of
/// docs/FORMATS.md). Fixed seeds only for the example.
fn device(tag: u8) -> Keypair {
    Keypair {
        sign: SignKey::from_seed(&[tag; 32]),
        enc: EncSecret::from_bytes(&[tag ^ 0xff; 32]),
    }
}

fn device_path() -> Result<usize, &'static str> {
    let genesis = Genesis::from_bytes(GENESIS).map_err(|_| "genesis does not decode")?;
    let me = device(0xd1);
    let peer = device(0xd2);
    // Stand-in for the hardware RNG: replace with a generator seeded by the MCU's TRNG.
    let mut rng = ChaCha20Rng::from_seed([0x42; 32]);

    // Send: seal to the peer and sign the anchor that commits to the envelope.
    let env = seal_oneshot(
        &mut rng,
        &me,
        peer.id(),
        &peer.enc_key(),
        3,
        NOW_MS,
        b"valve 3 open",
    )
    .map_err(|_| "seal failed")?;
    let anchor = meshward_sdk::anchor::anchor_tx(
        &genesis.chain_id,
        me.id(),
        &me.sign,
        3,
        Recipient::Device(peer.id()),
        &[&env],
        NOW_MS,
    )
    .ok_or("anchor failed")?;
    // Log in to the first validator's MQTT front door, then hand it both, sealed as they are.
    let gateway = genesis
        .validators
        .validators
        .first()
        .ok_or("no validator")?
        .key;
    let mut random = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rng, &mut random);
    let token = LoginToken::sign(
        &me.sign,
        &genesis.chain_id,
        &me.id(),
        &gateway,
        NOW_MS,
        random,
    )
    .to_text();
    let deposit = sealed::request_frame(1, &Request::Deposit(env));
    let submit = sealed::request_frame(2, &Request::SubmitTx(anchor));
    let mut sent = token.len() + deposit.len() + submit.len();

    // Receive: open an envelope sealed to this device (made here by the peer's keys; a device
    // gets it from its gateway), with replay state for 8 senders.
    let incoming = seal_oneshot(
        &mut rng,
        &peer,
        me.id(),
        &me.enc_key(),
        1,
        NOW_MS,
        b"close valve 3",
    )
    .map_err(|_| "peer seal failed")?;
    let mail = sealed::mail_frame(7, &incoming.to_bytes());
    let Ok(Inbound::Mail { number, envelope }) = sealed::parse_inbound(&mail) else {
        return Err("mail frame does not decode");
    };
    let mut rx = Receiver::with_limits(&me, 2, 1, 8);
    let opened = rx
        .open(&envelope, &peer.sign.verifying_key())
        .map_err(|_| "open failed")?;
    if opened.payload != b"close valve 3" {
        return Err("opened the wrong payload");
    }
    if rx.open(&incoming, &peer.sign.verifying_key()).is_ok() {
        return Err("a replay was accepted");
    }
    sent += sealed::request_frame(3, &Request::AckMailbox { up_to: number }).len();

    // Check: this device's anchor is final on the chain of this genesis.
    let proof = TxProof::from_bytes(PROOF).map_err(|_| "proof does not decode")?;
    let proven = proof
        .verify_anchor(&genesis)
        .map_err(|_| "proof does not verify")?;
    if proven.sender != me.id() {
        return Err("proof is of another device's anchor");
    }
    sent += proven.height as usize;
    Ok(sent)
}
