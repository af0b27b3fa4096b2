//! Meshward's pure core.
//!
//! Everything a validator, gateway, auditor or device needs to agree on lives here: identities,
//! the canonical binary encoding, transactions, blocks, commit certificates, Merkle proofs, HPKE
//! envelopes and the ledger state machine. The crate does no I/O and spawns nothing, and its
//! rules read no clock: time, randomness and keys come in as arguments. With
//! `default-features = false` it is `no_std + alloc`, so devices run exactly the same rules as
//! gateways. With `std`, two small helpers serve the edges of the system: [`clock::now_ms`] (the
//! one definition of "now") and [`sync`] (the one lock-poisoning policy).
//!
//! ```
//! use meshward_core::{codec::{Decode, Encode}, merkle};
//! let leaves = [b"a".as_slice(), b"b", b"c"];
//! let root = merkle::root(leaves.iter().map(|l| merkle::leaf_hash(l)));
//! let proof = merkle::prove(&leaves.iter().map(|l| merkle::leaf_hash(l)).collect::<Vec<_>>(), 1).unwrap();
//! assert!(proof.verify(&merkle::leaf_hash(b"b"), &root, 3).is_ok());
//! let bytes = proof.to_bytes();
//! assert_eq!(merkle::Proof::from_bytes(&bytes).unwrap(), proof);
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod auth;
pub mod block;
pub mod chain;
#[cfg(feature = "std")]
pub mod clock;
pub mod codec;
pub mod envelope;
pub mod genesis;
pub mod hash;
pub mod hex;
pub mod ids;
pub mod ledger;
pub mod light;
pub mod merkle;
pub mod rpc;
pub mod state;
#[cfg(feature = "std")]
pub mod sync;
pub mod tx;

pub use block::{Block, BlockHeader, CertifiedBlock, CommitCertificate};
pub use genesis::Genesis;
pub use hash::Hash;
pub use ids::{EncKey, Keypair, PublicKey, SignKey, Signature};
pub use ledger::{apply, ApplyCtx, Reject};
pub use state::State;
pub use tx::{Tx, TxBody};
