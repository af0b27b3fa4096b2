//! Binary Merkle trees as in RFC 6962 / RFC 9162 §2.1.
//!
//! Leaves hash as `SHA-256(0x00 || leaf)` and interior nodes as `SHA-256(0x01 || left || right)`,
//! so a leaf can never be passed off as a node. A tree of `n` leaves splits at the largest power
//! of two below `n`; an inclusion proof carries `O(log n)` sibling hashes.

use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::Hash;

/// The longest audit path we accept: a tree of 2^64 leaves.
pub const MAX_PROOF_LEN: usize = 64;

/// RFC 6962 leaf hash: `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    Hash(h.finalize().into())
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// Largest power of two strictly below `n` (for `n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// The root over leaf hashes, in order.
pub fn root<I: IntoIterator<Item = Hash>>(leaf_hashes: I) -> Hash {
    let leaves: Vec<Hash> = leaf_hashes.into_iter().collect();
    root_of(&leaves)
}

/// The root over a slice of leaf hashes.
pub fn root_of(leaf_hashes: &[Hash]) -> Hash {
    subtree_root(leaf_hashes)
}

/// An inclusion proof: the audit path from a leaf to the root, leaf level first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Position of the leaf, from 0.
    pub leaf_index: u64,
    /// Number of leaves in the tree.
    pub tree_size: u64,
    /// Sibling hashes from the leaf level up to the root (at most [`MAX_PROOF_LEN`]).
    pub path: Vec<Hash>,
}

/// Why an inclusion proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof's leaf index is not below its tree size.
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The leaf index the proof claims.
        index: u64,
        /// The number of leaves in the tree.
        size: u64,
    },
    /// The proof is for a tree of another size than the signed context names.
    #[error("proof is for a tree of {claimed} leaves, but the tree has {expected}")]
    SizeMismatch {
        /// The tree size the proof carries.
        claimed: u64,
        /// The tree size from the signed context (a header's transaction count).
        expected: u64,
    },
    /// The audit path has more or fewer hashes than the tree's depth at this leaf.
    #[error("audit path has the wrong length for this tree")]
    WrongPathLength,
    /// The audit path leads to another root: the leaf, the path or the root is not the one proven.
    #[error("audit path leads to a different root")]
    RootMismatch,
}

/// Builds the proof for `leaf_hashes[index]`, or `None` if the index is out of range.
pub fn prove(leaf_hashes: &[Hash], index: usize) -> Option<Proof> {
    if index >= leaf_hashes.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0usize, leaf_hashes.len(), index);
    // Walk down from the root, remembering the sibling subtree at each level, then reverse so
    // that the path starts at the leaf.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(subtree_root(&leaf_hashes[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(subtree_root(&leaf_hashes[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(Proof {
        leaf_index: index as u64,
        tree_size: leaf_hashes.len() as u64,
        path,
    })
}

impl Proof {
    /// Recomputes the root from `leaf` (a leaf hash) and compares it with `root`
    /// (RFC 9162 §2.1.3.2). `tree_size` comes from the signed context (a block header's
    /// transaction count): the audit path alone does not pin the size of the tree.
    pub fn verify(&self, leaf: &Hash, root: &Hash, tree_size: u64) -> Result<(), ProofError> {
        if self.root(leaf, tree_size)? != *root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }

    /// The root the audit path leads to from `leaf` in a tree of `tree_size` leaves: what
    /// [`Proof::verify`] compares, for a caller that holds only a hash of the root.
    pub fn root(&self, leaf: &Hash, tree_size: u64) -> Result<Hash, ProofError> {
        if self.tree_size != tree_size {
            return Err(ProofError::SizeMismatch {
                claimed: self.tree_size,
                expected: tree_size,
            });
        }
        if self.leaf_index >= self.tree_size {
            return Err(ProofError::IndexOutOfRange {
                index: self.leaf_index,
                size: self.tree_size,
            });
        }
        let (mut fnode, mut snode) = (self.leaf_index, self.tree_size - 1);
        let mut r = *leaf;
        for p in &self.path {
            if snode == 0 {
                return Err(ProofError::WrongPathLength);
            }
            if fnode & 1 == 1 || fnode == snode {
                r = node_hash(p, &r);
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            } else {
                r = node_hash(&r, p);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if snode != 0 {
            return Err(ProofError::WrongPathLength);
        }
        Ok(r)
    }
}

impl Encode for Proof {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.leaf_index).u64(self.tree_size).list(&self.path);
    }
}

impl Decode for Proof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Proof {
            leaf_index: r.u64("merkle leaf index")?,
            tree_size: r.u64("merkle tree size")?,
            path: r.list(MAX_PROOF_LEN, "merkle audit path")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        // RFC 6962 §2.1: MTH({}) = SHA-256().
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn matches_rfc6962_reference_roots() {
        // Reference roots from the Certificate Transparency test data (the 8 leaves used by
        // certificate-transparency-go's merkle tests): hex leaves "", "00", "10", "2021",
        // "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f".
        let data: [&str; 8] = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let hashes: Vec<Hash> = data
            .iter()
            .map(|h| leaf_hash(&hex::decode(h).unwrap()))
            .collect();
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(
                root_of(&hashes[..=n]).to_hex(),
                *want,
                "tree of {} leaves",
                n + 1
            );
        }
    }

    #[test]
    fn proof_length_is_logarithmic() {
        let l = leaves(1000);
        let p = prove(&l, 777).unwrap();
        assert!(p.path.len() <= 10, "path of {} hashes", p.path.len());
    }

    #[test]
    fn proof_for_wrong_leaf_fails() {
        let l = leaves(13);
        let r = root_of(&l);
        let p = prove(&l, 5).unwrap();
        assert_eq!(p.verify(&l[6], &r, 13), Err(ProofError::RootMismatch));
    }

    proptest! {
        #[test]
        fn every_leaf_proof_verifies(n in 1usize..130, seed in any::<u64>()) {
            let l: Vec<Hash> = (0..n).map(|i| leaf_hash(&(seed ^ i as u64).to_be_bytes())).collect();
            let r = root_of(&l);
            for (i, leaf) in l.iter().enumerate() {
                let p = prove(&l, i).unwrap();
                prop_assert_eq!(p.verify(leaf, &r, n as u64), Ok(()));
                prop_assert_eq!(Proof::from_bytes(&p.to_bytes()), Ok(p));
            }
        }

        #[test]
        fn any_flipped_bit_fails(n in 2usize..200, idx in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
            let l = leaves(n);
            let r = root_of(&l);
            let i = idx.index(n);
            let p = prove(&l, i).unwrap();
            let mut bytes = p.to_bytes();
            let b = bit.index(bytes.len() * 8);
            bytes[b / 8] ^= 1 << (b % 8);
            // A flipped bit either breaks the encoding or the proof; it never still verifies.
            if let Ok(bad) = Proof::from_bytes(&bytes) {
                prop_assert!(bad.verify(&l[i], &r, n as u64).is_err());
            }
            let mut leaf = l[i];
            leaf.0[b % 32] ^= 1 << (b % 8);
            prop_assert!(p.verify(&leaf, &r, n as u64).is_err());
        }
    }
}
