//! The key cache: decompressed Ed25519 keys of recent signers, bounded in two generations, so
//! signature checks skip point decompression. Not part of the state.

use alloc::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use crate::ids::PublicKey;

/// Most decompressed keys [`KeyCache`] holds: two generations of this many.
pub const KEY_CACHE_GENERATION: usize = 4096;

/// Decompressed Ed25519 keys of the accounts that changed most recently, in two generations of at
/// most [`KEY_CACHE_GENERATION`]. A decompressed key is 192 bytes more than the account holds, so
/// caching every enrolled device's key cost about 30 MiB at 100k devices; active signers touch
/// their account with every transaction and so stay in the newer generation. A miss only costs a
/// decompression (see [`crate::ledger`]). Not part of the state: it never changes a result.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyCache {
    hot: BTreeMap<PublicKey, VerifyingKey>,
    cold: BTreeMap<PublicKey, VerifyingKey>,
}

impl KeyCache {
    pub(super) fn get(&self, key: &PublicKey) -> Option<&VerifyingKey> {
        self.hot.get(key).or_else(|| self.cold.get(key))
    }

    /// Puts `key` in the newer generation, decompressing it only if neither generation has it.
    /// When the newer generation is full it becomes the older one, and the older is dropped.
    pub(super) fn touch(&mut self, key: PublicKey) {
        if self.hot.contains_key(&key) {
            return;
        }
        let vk = match self.cold.remove(&key) {
            Some(vk) => vk,
            None => match VerifyingKey::from_bytes(&key.0) {
                Ok(vk) => vk,
                Err(_) => return,
            },
        };
        if self.hot.len() >= KEY_CACHE_GENERATION {
            self.cold = core::mem::take(&mut self.hot);
        }
        self.hot.insert(key, vk);
    }

    pub(super) fn remove(&mut self, key: &PublicKey) {
        self.hot.remove(key);
        self.cold.remove(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }
}
