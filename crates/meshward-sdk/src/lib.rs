//! Meshward's device SDK.
//!
//! A device holds its own keys, seals payloads to other devices (HPKE, signed), anchors them on
//! the ledger, opens what it receives, verifies anchor proofs offline and handles its groups'
//! keys. The pieces that need no operating system ([`anchor`], [`group`], [`ticket`], the MQTT
//! sealed mode's login and framing ([`sealed`]), and the
//! core's envelopes, proofs and keys re-exported here) build with `default-features = false` as
//! `no_std + alloc`, for microcontrollers. The `keyfile` feature adds key files on disk
//! ([`keyfile`]: file I/O only, for gateways and tools). The `std` feature (which implies
//! `keyfile`) adds the libp2p transport ([`client`]), the device ([`device`]: send, receive,
//! mailboxes, rekeying), its state directory ([`dirstate`]), and the fleet workflows the
//! `meshward` CLI runs: the device's public enrollment file ([`devicepub`]), k-of-n admin
//! transactions ([`admin`]), the mailbox over the HTTP API ([`inbox`]), key rotation
//! ([`rotate`]), joining with a ticket ([`ticket::join`]) and validator-set changes
//! ([`validators`]). The `mqtt` feature adds a host's MQTT sealed-mode client
//! (`sealed_client`).
//!
//! ```
//! use meshward_sdk::{envelope, Keypair};
//! use rand::rngs::OsRng;
//! let alice = Keypair::generate(&mut OsRng);
//! let bob = Keypair::generate(&mut OsRng);
//! let env = envelope::seal_oneshot(&mut OsRng, &alice, bob.id(), &bob.enc_key(), 1, 0, b"hi").unwrap();
//! let tx = meshward_sdk::anchor::anchor_tx(
//!     "fleet", alice.id(), &alice.sign, 1,
//!     meshward_core::tx::Recipient::Device(bob.id()), &[&env], 0,
//! ).unwrap();
//! assert_eq!(tx.seq, 1);
//! let opened = envelope::Receiver::new(&bob).open(&env, &alice.sign.verifying_key()).unwrap();
//! assert_eq!(opened.payload, b"hi");
//! ```
#![cfg_attr(not(any(feature = "std", feature = "keyfile")), no_std)]

extern crate alloc;

pub mod anchor;
pub mod group;
pub mod sealed;
pub mod ticket;

#[cfg(feature = "keyfile")]
pub mod keyfile;

#[cfg(feature = "std")]
pub mod admin;
#[cfg(feature = "std")]
pub mod client;
#[cfg(feature = "std")]
pub mod custody;
#[cfg(feature = "std")]
pub mod device;
#[cfg(feature = "std")]
pub mod devicepub;
#[cfg(feature = "std")]
pub mod dirstate;
#[cfg(feature = "std")]
pub mod inbox;
#[cfg(feature = "std")]
pub mod rotate;
#[cfg(feature = "mqtt")]
pub mod sealed_client;
#[cfg(feature = "std")]
pub mod validators;

pub use meshward_core;
pub use meshward_core::envelope;
pub use meshward_core::light;
pub use meshward_core::rpc;
pub use meshward_core::{EncKey, Hash, Keypair, PublicKey};
