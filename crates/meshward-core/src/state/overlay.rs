//! The per-block overlay: the changes a block's transactions have made so far, read through
//! [`StateView`] on top of the base [`State`] without touching it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ed25519_dalek::VerifyingKey;

use crate::hash::Hash;
use crate::ids::PublicKey;
use crate::tx::{GroupName, ValidatorSet};

use super::{
    Account, AdminSet, Conviction, Delta, Group, Policy, Record, State, StateView, Ticket,
};

/// Changes made by the transactions of a block so far, on top of a base state.
#[derive(Debug)]
pub struct Overlay<'a> {
    base: &'a State,
    admins: Option<AdminSet>,
    validators: Option<ValidatorSet>,
    policy: Option<Policy>,
    accounts: BTreeMap<PublicKey, Account>,
    tickets: BTreeMap<Hash, Ticket>,
    groups: BTreeMap<GroupName, Group>,
    convictions: BTreeMap<PublicKey, Conviction>,
    /// Keys that changed hands in this block: `None` means no longer in use.
    key_owner: BTreeMap<PublicKey, Option<PublicKey>>,
    changes: Vec<Record>,
}

impl<'a> Overlay<'a> {
    /// An overlay with no changes yet on top of `base`.
    pub fn new(base: &'a State) -> Self {
        Overlay {
            base,
            admins: None,
            validators: None,
            policy: None,
            accounts: BTreeMap::new(),
            tickets: BTreeMap::new(),
            groups: BTreeMap::new(),
            convictions: BTreeMap::new(),
            key_owner: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    /// Records a transaction's changes so later transactions see them.
    pub fn push(&mut self, delta: Delta) {
        for rec in delta.0 {
            match &rec {
                Record::Meta { .. } => {}
                Record::Admins(a) => self.admins = Some(a.clone()),
                Record::Validators(v) => self.validators = Some(v.clone()),
                Record::Policy(p) => self.policy = Some(p.clone()),
                Record::Account(a) => {
                    if let Some(old) = self.account(&a.id) {
                        if old.sign_key != a.sign_key {
                            let old_key = old.sign_key;
                            self.key_owner.insert(old_key, None);
                        }
                    }
                    self.key_owner.insert(a.sign_key, Some(a.id));
                    self.accounts.insert(a.id, a.clone());
                }
                Record::Ticket(h, t) => {
                    self.tickets.insert(*h, t.clone());
                }
                Record::Group(g, grp) => {
                    self.groups.insert(g.clone(), grp.clone());
                }
                Record::Conviction(k, c) => {
                    self.convictions.insert(*k, *c);
                }
            }
            self.changes.push(rec);
        }
    }

    /// All changes, in order, to apply to the base state.
    pub fn into_delta(self) -> Delta {
        Delta(self.changes)
    }
}

impl StateView for Overlay<'_> {
    fn chain_id(&self) -> &str {
        self.base.chain_id()
    }
    fn admins(&self) -> &AdminSet {
        self.admins.as_ref().unwrap_or(&self.base.admins)
    }
    fn validators(&self) -> &ValidatorSet {
        self.validators.as_ref().unwrap_or(&self.base.validators)
    }
    fn policy(&self) -> &Policy {
        self.policy.as_ref().unwrap_or(&self.base.policy)
    }
    fn account(&self, id: &PublicKey) -> Option<&Account> {
        self.accounts.get(id).or_else(|| self.base.account(id))
    }
    fn ticket(&self, h: &Hash) -> Option<&Ticket> {
        self.tickets.get(h).or_else(|| self.base.ticket(h))
    }
    fn group(&self, g: &GroupName) -> Option<&Group> {
        self.groups.get(g).or_else(|| self.base.group(g))
    }
    fn conviction(&self, validator: &PublicKey) -> Option<&Conviction> {
        self.convictions
            .get(validator)
            .or_else(|| self.base.conviction(validator))
    }
    fn key_owner(&self, key: &PublicKey) -> Option<PublicKey> {
        match self.key_owner.get(key) {
            Some(owner) => *owner,
            None => self.base.key_owner(key),
        }
    }
    fn cached_key(&self, key: &PublicKey) -> Option<&VerifyingKey> {
        self.base.cached_key(key)
    }
}
