//! Ledger state and its commitment.
//!
//! The state is a set of records (accounts, tickets, groups, policy, admins, validators). Each
//! record has a slot, given in order of creation and never reused, and the state root is a Merkle
//! root over the slots' record hashes. Changing a record re-hashes only its path, so a block that
//! touches `k` records costs `O(k log n)` hashes, not `O(n)`: a gateway with 100k devices stays
//! fast. The store persists records by slot, so rows are keyed by sequence, never by random hash.
//!
//! Transactions are applied through [`StateView`], which both [`State`] and the per-block
//! [`Overlay`] implement: a block's transactions see the effects of the ones before them, and a
//! rejected block leaves the state untouched.

mod key_cache;
mod overlay;
mod record;
mod slot_tree;

pub use key_cache::KEY_CACHE_GENERATION;
pub use overlay::Overlay;
pub use record::{
    Account, AdminSet, Conviction, Device, DeviceStatus, Group, Policy, Record, RecordKey, Ticket,
    MAX_ADMINS, MAX_GROUP_SIZE, RECORD_VERSION,
};

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::VerifyingKey;

use crate::codec::{Decode, DecodeError, Encode};
use crate::hash::{self, domain, Hash};
use crate::ids::PublicKey;
use crate::tx::{GroupName, ValidatorSet};

use key_cache::KeyCache;
use slot_tree::SlotTree;

/// Read access to ledger state, for the rules in [`crate::ledger`].
pub trait StateView {
    /// The chain id, bound into every signature.
    fn chain_id(&self) -> &str;
    /// The admins and their threshold.
    fn admins(&self) -> &AdminSet;
    /// The validator set in force.
    fn validators(&self) -> &ValidatorSet;
    /// The group-to-group send policy.
    fn policy(&self) -> &Policy;
    /// The account with this id, if any.
    fn account(&self, id: &PublicKey) -> Option<&Account>;
    /// The ticket with this hash (of its secret), if any.
    fn ticket(&self, h: &Hash) -> Option<&Ticket>;
    /// The group with this name, if any.
    fn group(&self, g: &GroupName) -> Option<&Group>;
    /// The convictions of the validator with this key, if it has any.
    fn conviction(&self, validator: &PublicKey) -> Option<&Conviction>;
    /// The account that signs with `key` now, if any.
    fn key_owner(&self, key: &PublicKey) -> Option<PublicKey>;
    /// A decompressed key from the cache of recent signers' keys, if present.
    fn cached_key(&self, key: &PublicKey) -> Option<&VerifyingKey>;
}

/// One change a transaction makes: a record replaced or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta(pub Vec<Record>);

/// The ledger state.
#[derive(Debug, Clone)]
pub struct State {
    chain_id: String,
    admins: AdminSet,
    validators: ValidatorSet,
    policy: Policy,
    accounts: BTreeMap<PublicKey, Account>,
    tickets: BTreeMap<Hash, Ticket>,
    groups: BTreeMap<GroupName, Group>,
    convictions: BTreeMap<PublicKey, Conviction>,
    /// Signing key -> account id, for every account.
    key_owner: BTreeMap<PublicKey, PublicKey>,
    /// Decompressed signing keys of recent signers, so verification skips point decompression.
    vk_cache: KeyCache,
    slots: BTreeMap<RecordKey, u64>,
    /// The record key of each slot, by slot: the reverse of `slots`.
    slot_keys: Vec<RecordKey>,
    tree: SlotTree,
    /// Slots changed since the last [`State::flush`].
    dirty: BTreeMap<u64, RecordKey>,
}

/// What [`State::flush`] hands to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// The state root after the flushed changes.
    pub root: Hash,
    /// `(slot, encoded record)` for every record changed since the last flush, by slot.
    pub records: Vec<(u64, Vec<u8>)>,
}

/// Why stored records do not form a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A stored record does not decode.
    #[error("state record at slot {slot} does not decode: {source}")]
    Decode {
        /// The record's slot.
        slot: u64,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// Slots do not run 0, 1, 2, … without a gap.
    #[error("state records are not numbered 0, 1, 2, … (found slot {slot})")]
    SlotGap {
        /// The first slot out of sequence.
        slot: u64,
    },
    /// A record that exists once (meta, admins, validators, policy, or one key) appears twice.
    #[error("state record {what} appears twice")]
    Duplicate {
        /// Which record.
        what: &'static str,
    },
    /// A record every state has (meta, admins, validators or policy) is missing.
    #[error("state is missing its {what} record")]
    Missing {
        /// Which record.
        what: &'static str,
    },
}

impl State {
    /// The state at genesis: meta, admins, validators, an empty policy, and an account for every
    /// admin and validator key.
    pub fn genesis(chain_id: &str, admins: AdminSet, validators: ValidatorSet) -> State {
        let mut s = State {
            chain_id: String::from(chain_id),
            admins: admins.clone(),
            validators: validators.clone(),
            policy: Policy::default(),
            accounts: BTreeMap::new(),
            tickets: BTreeMap::new(),
            groups: BTreeMap::new(),
            convictions: BTreeMap::new(),
            key_owner: BTreeMap::new(),
            vk_cache: KeyCache::default(),
            slots: BTreeMap::new(),
            slot_keys: Vec::new(),
            tree: SlotTree::default(),
            dirty: BTreeMap::new(),
        };
        let mut records = alloc::vec![
            Record::Meta {
                chain_id: String::from(chain_id)
            },
            Record::Admins(admins.clone()),
            Record::Validators(validators.clone()),
            Record::Policy(Policy::default()),
        ];
        let mut keys: Vec<PublicKey> = admins.keys.clone();
        keys.extend(validators.validators.iter().map(|v| v.key));
        keys.sort();
        keys.dedup();
        for k in keys {
            records.push(Record::Account(Account {
                id: k,
                sign_key: k,
                seq: 0,
                device: None,
            }));
        }
        for r in records {
            s.put(r);
        }
        s
    }

    /// Rebuilds the state from stored records, in slot order.
    pub fn from_records<I>(records: I) -> Result<State, LoadError>
    where
        I: IntoIterator<Item = (u64, Vec<u8>)>,
    {
        let mut meta = None;
        let mut admins = None;
        let mut validators = None;
        let mut policy = None;
        let mut rest = Vec::new();
        let mut leaves = Vec::new();
        let mut slots = BTreeMap::new();
        let mut slot_keys = Vec::new();
        for (i, (slot, bytes)) in records.into_iter().enumerate() {
            if slot != i as u64 {
                return Err(LoadError::SlotGap { slot });
            }
            let rec =
                Record::from_bytes(&bytes).map_err(|source| LoadError::Decode { slot, source })?;
            leaves.push(hash::hash(domain::STATE_RECORD, &bytes));
            if slots.insert(rec.key(), slot).is_some() {
                return Err(LoadError::Duplicate { what: "key" });
            }
            slot_keys.push(rec.key());
            match rec {
                Record::Meta { chain_id } => meta = Some(chain_id),
                Record::Admins(a) => admins = Some(a),
                Record::Validators(v) => validators = Some(v),
                Record::Policy(p) => policy = Some(p),
                other => rest.push(other),
            }
        }
        let mut s = State {
            chain_id: meta.ok_or(LoadError::Missing { what: "meta" })?,
            admins: admins.ok_or(LoadError::Missing { what: "admins" })?,
            validators: validators.ok_or(LoadError::Missing { what: "validators" })?,
            policy: policy.ok_or(LoadError::Missing { what: "policy" })?,
            accounts: BTreeMap::new(),
            tickets: BTreeMap::new(),
            groups: BTreeMap::new(),
            convictions: BTreeMap::new(),
            key_owner: BTreeMap::new(),
            vk_cache: KeyCache::default(),
            slots,
            slot_keys,
            tree: SlotTree::default(),
            dirty: BTreeMap::new(),
        };
        for rec in rest {
            s.set_record(rec);
        }
        let all: Vec<usize> = (0..leaves.len()).collect();
        for (i, h) in leaves.into_iter().enumerate() {
            s.tree.set_leaf(i, h);
        }
        if !all.is_empty() {
            s.tree.rehash(&all);
        }
        Ok(s)
    }

    /// Replaces or creates one record in memory, keeping the indexes in step.
    fn set_record(&mut self, rec: Record) {
        match rec {
            Record::Meta { chain_id } => self.chain_id = chain_id,
            Record::Admins(a) => self.admins = a,
            Record::Validators(v) => self.validators = v,
            Record::Policy(p) => self.policy = p,
            Record::Account(a) => {
                if let Some(old) = self.accounts.get(&a.id) {
                    if old.sign_key != a.sign_key {
                        self.key_owner.remove(&old.sign_key);
                        self.vk_cache.remove(&old.sign_key);
                    }
                }
                self.key_owner.insert(a.sign_key, a.id);
                self.accounts.insert(a.id, a);
            }
            Record::Ticket(h, t) => {
                self.tickets.insert(h, t);
            }
            Record::Group(g, grp) => {
                self.groups.insert(g, grp);
            }
            Record::Conviction(k, c) => {
                self.convictions.insert(k, c);
            }
        }
    }

    /// Writes a record and marks its slot for the next flush.
    fn put(&mut self, rec: Record) {
        let key = rec.key();
        let slot = match self.slots.get(&key) {
            Some(s) => *s,
            None => {
                let s = self.slots.len() as u64;
                self.slots.insert(key.clone(), s);
                self.slot_keys.push(key.clone());
                s
            }
        };
        self.dirty.insert(slot, key);
        // A changed account has just signed (or was just enrolled): keep its key hot. Keys were
        // checked in full (weak, torsion) when they entered the ledger. Loading from records
        // does not come through here, so a node starts with a cold cache instead of
        // decompressing every account's key only to keep the last few thousand.
        if let Record::Account(a) = &rec {
            self.vk_cache.touch(a.sign_key);
        }
        self.set_record(rec);
    }

    /// Applies a transaction's changes. Changes come from [`crate::ledger::apply`], which has
    /// checked them against this state.
    pub fn apply_delta(&mut self, delta: Delta) {
        for rec in delta.0 {
            self.put(rec);
        }
    }

    fn record(&self, key: &RecordKey) -> Option<Record> {
        Some(match key {
            RecordKey::Meta => Record::Meta {
                chain_id: self.chain_id.clone(),
            },
            RecordKey::Admins => Record::Admins(self.admins.clone()),
            RecordKey::Validators => Record::Validators(self.validators.clone()),
            RecordKey::Policy => Record::Policy(self.policy.clone()),
            RecordKey::Account(id) => Record::Account(self.accounts.get(id)?.clone()),
            RecordKey::Ticket(h) => Record::Ticket(*h, self.tickets.get(h)?.clone()),
            RecordKey::Group(g) => Record::Group(g.clone(), self.groups.get(g)?.clone()),
            RecordKey::Conviction(k) => Record::Conviction(*k, *self.convictions.get(k)?),
        })
    }

    /// Re-hashes every record changed since the last flush and returns them, with the new root.
    pub fn flush(&mut self) -> Flushed {
        let dirty = core::mem::take(&mut self.dirty);
        let mut records = Vec::with_capacity(dirty.len());
        let mut slots = Vec::with_capacity(dirty.len());
        for (slot, key) in dirty {
            let bytes = self
                .record(&key)
                .expect("a dirty slot always names a record that exists")
                .to_bytes();
            self.tree
                .set_leaf(slot as usize, hash::hash(domain::STATE_RECORD, &bytes));
            slots.push(slot as usize);
            records.push((slot, bytes));
        }
        if !slots.is_empty() {
            self.tree.rehash(&slots);
        }
        Flushed {
            root: self.tree.root(),
            records,
        }
    }

    /// The root the state would have after `delta`, without applying it: what a validator
    /// computes for a proposed block before it is decided. Equal to applying the delta and
    /// calling [`State::root`], which a test checks.
    pub fn root_after(&self, delta: &Delta) -> Hash {
        debug_assert!(self.dirty.is_empty(), "root_after needs a flushed state");
        let mut new_slots: BTreeMap<RecordKey, u64> = BTreeMap::new();
        let mut leaves: BTreeMap<usize, Hash> = BTreeMap::new();
        // Later records for the same key replace earlier ones, as in `apply_delta`.
        let mut last: BTreeMap<u64, &Record> = BTreeMap::new();
        for rec in &delta.0 {
            let key = rec.key();
            let slot = match self.slots.get(&key) {
                Some(s) => *s,
                None => {
                    let next = self.slots.len() as u64 + new_slots.len() as u64;
                    *new_slots.entry(key).or_insert(next)
                }
            };
            last.insert(slot, rec);
        }
        for (slot, rec) in last {
            leaves.insert(
                slot as usize,
                hash::hash(domain::STATE_RECORD, &rec.to_bytes()),
            );
        }
        let new_len = self.slots.len() + new_slots.len();
        self.tree.root_with(&leaves, new_len)
    }

    /// The state root, flushing pending changes first.
    pub fn root(&mut self) -> Hash {
        if self.dirty.is_empty() {
            self.tree.root()
        } else {
            self.flush().root
        }
    }

    /// Every record, by slot: what a store writes for a fresh state.
    pub fn all_records(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = self
            .slots
            .iter()
            .filter_map(|(k, s)| Some((*s, self.record(k)?.to_bytes())))
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }

    /// Every account, by id.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Every group, by name.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupName, &Group)> {
        self.groups.iter()
    }

    /// The slot of account `id`'s record. Slots are given in creation order and never change
    /// or get reused, so a store can name an account by its slot.
    pub fn account_slot(&self, id: &PublicKey) -> Option<u64> {
        self.slots.get(&RecordKey::Account(*id)).copied()
    }

    /// The id of the account whose record is in `slot`; `None` if the slot holds no account.
    pub fn account_at_slot(&self, slot: u64) -> Option<&PublicKey> {
        match self.slot_keys.get(usize::try_from(slot).ok()?)? {
            RecordKey::Account(id) => Some(id),
            _ => None,
        }
    }

    /// The number of records (slots) in the state.
    pub fn record_count(&self) -> u64 {
        self.slots.len() as u64
    }
}

impl StateView for State {
    fn chain_id(&self) -> &str {
        &self.chain_id
    }
    fn admins(&self) -> &AdminSet {
        &self.admins
    }
    fn validators(&self) -> &ValidatorSet {
        &self.validators
    }
    fn policy(&self) -> &Policy {
        &self.policy
    }
    fn account(&self, id: &PublicKey) -> Option<&Account> {
        self.accounts.get(id)
    }
    fn ticket(&self, h: &Hash) -> Option<&Ticket> {
        self.tickets.get(h)
    }
    fn group(&self, g: &GroupName) -> Option<&Group> {
        self.groups.get(g)
    }
    fn conviction(&self, validator: &PublicKey) -> Option<&Conviction> {
        self.convictions.get(validator)
    }
    fn key_owner(&self, key: &PublicKey) -> Option<PublicKey> {
        self.key_owner.get(key).copied()
    }
    fn cached_key(&self, key: &PublicKey) -> Option<&VerifyingKey> {
        self.vk_cache.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EncKey;

    fn pk(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    /// Chain `t`: admin `pk(1)`, one validator `pk(2)`.
    fn genesis() -> State {
        let admins = AdminSet::new(alloc::vec![pk(1)], 1).unwrap();
        let vals = ValidatorSet::new(alloc::vec![crate::tx::Validator {
            key: pk(2),
            power: 1,
        }])
        .unwrap();
        State::genesis("t", admins, vals)
    }

    #[test]
    fn slot_tree_incremental_matches_rebuild() {
        let mut s = genesis();
        s.flush();
        for i in 10..60u8 {
            s.put(Record::Account(Account {
                id: pk(i),
                sign_key: pk(i),
                seq: u64::from(i),
                device: None,
            }));
            if i % 7 == 0 {
                s.flush();
            }
        }
        let root = s.root();
        let rebuilt = State::from_records(s.all_records()).unwrap().root();
        assert_eq!(root, rebuilt);
        // Changing one record changes the root; changing it back restores it.
        let mut a = s.account(&pk(33)).unwrap().clone();
        a.seq += 1;
        s.put(Record::Account(a.clone()));
        let changed = s.root();
        assert_ne!(changed, root);
        a.seq -= 1;
        s.put(Record::Account(a));
        assert_eq!(s.root(), root);
    }

    #[test]
    fn root_after_equals_applying_the_delta() {
        let mut s = genesis();
        s.flush();
        for round in 0..6u8 {
            let mut recs = alloc::vec::Vec::new();
            for i in 0..(round * 3 + 1) {
                let id = 10 + (i * 7 + round) % 40;
                recs.push(Record::Account(Account {
                    id: pk(id),
                    sign_key: pk(id),
                    seq: u64::from(round) * 100 + u64::from(i),
                    device: None,
                }));
            }
            let delta = Delta(recs);
            let predicted = s.root_after(&delta);
            s.apply_delta(delta);
            assert_eq!(predicted, s.root(), "round {round}");
        }
        assert_eq!(s.root_after(&Delta(alloc::vec::Vec::new())), s.root());
    }

    #[test]
    fn records_round_trip() {
        let rec = Record::Account(Account {
            id: pk(1),
            sign_key: pk(2),
            seq: 7,
            device: Some(Device {
                enc_key: EncKey([3; 32]),
                groups: alloc::vec![GroupName::new("a").unwrap()],
                status: DeviceStatus::Revoked {
                    reason: "lost".into(),
                    height: 4,
                },
                enrolled_height: 2,
            }),
        });
        assert_eq!(Record::from_bytes(&rec.to_bytes()), Ok(rec));
    }

    #[test]
    fn the_key_cache_is_bounded_and_keeps_the_latest_signers() {
        let sign_key = |i: u32| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            crate::ids::SignKey::from_seed(&seed)
        };
        let key = |i: u32| sign_key(i).public();
        let mut s = genesis();
        let n = 3 * KEY_CACHE_GENERATION as u32;
        let accounts: Vec<Account> = (0..n)
            .map(|i| Account {
                id: key(i),
                sign_key: key(i),
                seq: 0,
                device: None,
            })
            .collect();
        for a in &accounts {
            s.put(Record::Account(a.clone()));
        }
        assert!(s.vk_cache.len() <= 2 * KEY_CACHE_GENERATION);
        let last = accounts.last().unwrap();
        assert!(s.cached_key(&last.sign_key).is_some());
        let first = accounts[0].clone();
        assert!(s.cached_key(&first.sign_key).is_none());

        // A signer whose key left the cache is still verified in the batch, and a forged
        // signature by it is still caught.
        let body = crate::tx::TxBody::Anchor(crate::tx::Anchor {
            recipient: crate::tx::Recipient::Device(last.id),
            commitment: Hash::ZERO,
            count: 1,
            timestamp_ms: 0,
            size_bytes: 256,
        });
        let good = crate::tx::Tx::sign("t", first.id, &sign_key(0), 1, body.clone());
        let forged = crate::tx::Tx::sign("t", first.id, &sign_key(1), 1, body);
        assert_eq!(
            crate::ledger::preverify_rest(&s, &[good], Vec::new()),
            alloc::vec![Some(first.sign_key)]
        );
        assert_eq!(
            crate::ledger::preverify_rest(&s, &[forged], Vec::new()),
            alloc::vec![None]
        );
        assert!(s.cached_key(&first.sign_key).is_none());

        // A transaction by the first account touches its record: its key is cached again.
        let mut again = first.clone();
        again.seq = 1;
        s.put(Record::Account(again.clone()));
        let vk = s
            .cached_key(&first.sign_key)
            .expect("a signer's key is cached");
        assert_eq!(vk.to_bytes(), first.sign_key.0);

        // A rotation drops the old key and caches the new one.
        let rotated = Account {
            sign_key: key(n),
            seq: 2,
            ..again
        };
        s.put(Record::Account(rotated.clone()));
        assert!(s.cached_key(&first.sign_key).is_none());
        assert!(s.cached_key(&rotated.sign_key).is_some());
        assert!(s.vk_cache.len() <= 2 * KEY_CACHE_GENERATION);

        // A state loaded from its records starts with a cold cache: nothing is decompressed
        // on start-up.
        let mut loaded = State::from_records(s.all_records()).unwrap();
        assert_eq!(loaded.vk_cache.len(), 0);
        assert_eq!(loaded.root(), s.root());
    }
}
