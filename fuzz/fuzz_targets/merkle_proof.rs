//! Merkle inclusion proofs (inside anchor proofs, and on their own).
//!
//! Input: `tree_size: u64 BE || Proof bytes`. Checks: `Proof::from_bytes` never panics and
//! round-trips exactly; `verify` with the input's tree size against a fixed leaf and root never
//! panics (and cannot succeed); and, against a real tree of `1 + tree_size % 300` fixed leaves,
//! a proof that verifies for leaf `leaf_index` must be exactly the honest proof `prove` builds.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshward_core::codec::{Decode, Encode};
use meshward_core::hash::Hash;
use meshward_core::merkle::{leaf_hash, prove, root_of, Proof};

const MAX_LEAVES: usize = 300;

fn leaves() -> &'static [Hash] {
    static L: OnceLock<Vec<Hash>> = OnceLock::new();
    L.get_or_init(|| {
        (0..MAX_LEAVES as u64)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let tree_size = u64::from_be_bytes(data[..8].try_into().unwrap());
    let bytes = &data[8..];
    let Ok(p) = Proof::from_bytes(bytes) else {
        return;
    };
    assert_eq!(
        p.to_bytes(),
        bytes,
        "merkle proof encoding is not canonical"
    );

    let fixed_leaf = leaf_hash(b"fuzz leaf");
    let fixed_root = Hash([0x5a; 32]);
    let _ = p.verify(&fixed_leaf, &fixed_root, tree_size);
    let _ = p.verify(&fixed_leaf, &fixed_root, p.tree_size);

    let n = 1 + (tree_size % MAX_LEAVES as u64) as usize;
    let tree = &leaves()[..n];
    let root = root_of(tree);
    let idx = p.leaf_index;
    if let Some(leaf) = usize::try_from(idx).ok().and_then(|i| tree.get(i)) {
        if p.verify(leaf, &root, n as u64).is_ok() {
            let honest = prove(tree, idx as usize).expect("index in range");
            assert_eq!(p, honest, "a second audit path verifies");
        }
    }
});
