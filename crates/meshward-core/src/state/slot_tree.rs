//! The slot tree: a Merkle tree over the records' hashes in slot order, updated in place, whose
//! root is the state root.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::hash::{self, domain, Hash};

/// A Merkle tree over slots, updated in place. Level 0 holds the record hashes; a node with no
/// right sibling is carried up unchanged. The root also commits to the number of slots.
#[derive(Debug, Clone, Default)]
pub(super) struct SlotTree {
    levels: Vec<Vec<Hash>>,
}

impl SlotTree {
    fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Sets leaf `slot` (appending if `slot == len`), without updating the parents.
    pub(super) fn set_leaf(&mut self, slot: usize, h: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let leaves = &mut self.levels[0];
        if slot == leaves.len() {
            leaves.push(h);
        } else {
            leaves[slot] = h;
        }
    }

    /// Recomputes the parents of the given (sorted, unique) leaf slots.
    pub(super) fn rehash(&mut self, slots: &[usize]) {
        let mut dirty: Vec<usize> = slots.to_vec();
        let mut level = 0;
        while self.levels[level].len() > 1 {
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            let want = self.levels[level].len().div_ceil(2);
            let mut parents: Vec<usize> = dirty.iter().map(|s| s / 2).collect();
            parents.dedup();
            let (lower, upper) = self.levels.split_at_mut(level + 1);
            let (cur, next) = (&lower[level], &mut upper[0]);
            next.resize(want, Hash::ZERO);
            for &p in &parents {
                let l = cur[2 * p];
                next[p] = match cur.get(2 * p + 1) {
                    Some(r) => crate::merkle::node_hash(&l, r),
                    None => l,
                };
            }
            dirty = parents;
            level += 1;
        }
        self.levels.truncate(level + 1);
    }

    /// The root the tree would have with `changes` (leaf slot -> hash) applied and `new_len`
    /// leaves, without changing the tree: `O(k log n)` for `k` changed leaves.
    pub(super) fn root_with(&self, changes: &BTreeMap<usize, Hash>, new_len: usize) -> Hash {
        let get = |level: usize, i: usize, changed: &BTreeMap<usize, Hash>| -> Hash {
            changed
                .get(&i)
                .or_else(|| self.levels.get(level).and_then(|l| l.get(i)))
                .copied()
                .unwrap_or(Hash::ZERO)
        };
        let mut changed = changes.clone();
        let mut len = new_len;
        let mut level = 0;
        while len > 1 {
            let mut next = BTreeMap::new();
            for &c in changed.keys() {
                let p = c / 2;
                if next.contains_key(&p) {
                    continue;
                }
                let l = get(level, 2 * p, &changed);
                let h = if 2 * p + 1 < len {
                    crate::merkle::node_hash(&l, &get(level, 2 * p + 1, &changed))
                } else {
                    l
                };
                next.insert(p, h);
            }
            changed = next;
            len = len.div_ceil(2);
            level += 1;
        }
        let top = if new_len == 0 {
            Hash::ZERO
        } else {
            get(level, 0, &changed)
        };
        Self::commit_root(new_len as u64, &top)
    }

    fn commit_root(len: u64, top: &Hash) -> Hash {
        let mut h = hash::Hasher::new(domain::STATE_ROOT);
        h.update(&len.to_be_bytes()).update(top.as_bytes());
        h.finish()
    }

    pub(super) fn root(&self) -> Hash {
        let top = self
            .levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(Hash::ZERO);
        Self::commit_root(self.len(), &top)
    }
}
