//! When this gateway last heard from each device: a mesh request from its peer id, or a
//! transaction it signed. Node-local, for the console's "last seen"; not on the ledger.
//!
//! Owner and discipline: [`Presence`], a small type with one mutex held for one map step.
//! Bounded: two generations of at most [`GENERATION`] entries each; when the newer fills up it
//! becomes the older and the older is dropped, so devices heard from recently are always kept
//! and a flood of made-up keys costs bounded memory.

use std::collections::HashMap;
use std::sync::Mutex;

use meshward_core::ids::PublicKey;

/// Entries per generation.
pub const GENERATION: usize = 65_536;

#[derive(Debug, Default)]
struct Inner {
    newer: HashMap<PublicKey, u64>,
    older: HashMap<PublicKey, u64>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

impl Presence {
    /// Records that `key` was heard from at `now_ms`.
    pub fn touch(&self, key: PublicKey, now_ms: u64) {
        let mut g = meshward_core::sync::lock(&self.inner, "presence");
        if g.newer.len() >= GENERATION && !g.newer.contains_key(&key) {
            let newer = std::mem::take(&mut g.newer);
            g.older = newer;
        }
        g.newer.insert(key, now_ms);
    }

    /// When `key` was last heard from, if this node remembers.
    pub fn last_seen(&self, key: &PublicKey) -> Option<u64> {
        let g = meshward_core::sync::lock(&self.inner, "presence");
        g.newer.get(key).or_else(|| g.older.get(key)).copied()
    }
}

/// How each revoked device was revoked (by evidence or by the admins), cached: a revocation is
/// final, so an entry never goes stale. One mutex; bounded at [`GENERATION`] entries (past
/// that, the cache starts over).
#[derive(Debug, Default)]
pub struct RevocationKinds {
    inner: Mutex<HashMap<PublicKey, bool>>,
}

impl RevocationKinds {
    /// Whether `device` (revoked at `height`) was quarantined by evidence; `find` reads it from
    /// the store on a miss.
    pub fn by_evidence(&self, device: &PublicKey, find: impl FnOnce() -> bool) -> bool {
        if let Some(v) = meshward_core::sync::lock(&self.inner, "revocation kinds").get(device) {
            return *v;
        }
        let v = find();
        let mut g = meshward_core::sync::lock(&self.inner, "revocation kinds");
        if g.len() >= GENERATION {
            g.clear();
        }
        g.insert(*device, v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_devices_are_kept_and_memory_is_bounded() {
        let p = Presence::default();
        let key = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            PublicKey(k)
        };
        for i in 0..(3 * GENERATION as u32) {
            p.touch(key(i), u64::from(i));
        }
        let g = p.inner.lock().unwrap();
        assert!(g.newer.len() + g.older.len() <= 2 * GENERATION);
        drop(g);
        let last = 3 * GENERATION as u32 - 1;
        assert_eq!(p.last_seen(&key(last)), Some(u64::from(last)));
        assert_eq!(p.last_seen(&key(0)), None);
    }
}
