//! Validator-set changes: adding a gateway to the validator set, removing one, or changing one's
//! voting power, as a k-of-n admin `ValidatorSetChange` transaction.
//!
//! [`plan`] builds the new set from the set in force and refuses, before anything is signed, a
//! change that is not one (adding a validator already in the set, removing or re-powering one
//! that is not, setting the power it already has), a set the ledger would refuse (empty, more
//! than `MAX_VALIDATORS`, a zero or too large power) and, unless forced, a set whose quorum the
//! validators signing now could not reach: the chain would stop until enough of the new set
//! signs. [`submit`] signs it with the admins (as [`crate::admin`] does), submits it and waits
//! until it is final; the new set certifies blocks from the height after the one holding it.
//!
//! ```no_run
//! # async fn f(client: &meshward_sdk::client::Client, api: &meshward_api::client::ApiClient,
//! #            new_gateway: meshward_sdk::PublicKey) -> Result<(), Box<dyn std::error::Error>> {
//! use meshward_sdk::{admin, validators};
//! let now = validators::Current::from_list(&api.validators()?)?;
//! let change = validators::SetChange::Add { key: new_gateway, power: validators::DEFAULT_POWER };
//! let set = validators::plan(&now, &change, false)?;
//! let admins = admin::load_admins(&["admin1.key", "admin2.key"])?;
//! let done = validators::submit(client, &admins, set).await?;
//! println!("the new set rules from height {}", done.rules_from);
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;

use meshward_api::types::ValidatorList;
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::tx::{TxBody, Validator, ValidatorSet, MAX_TOTAL_POWER, MAX_VALIDATORS};

use crate::admin::{self, AdminError};
use crate::client::Client;

/// The voting power a validator is added with when none is given: every gateway counts the
/// same, as in `meshward genesis new`.
pub const DEFAULT_POWER: u64 = 1;

/// One change to the validator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetChange {
    /// Add a validator (not in the set yet) with this power.
    Add {
        /// Its key (the gateway's node key, its peer id).
        key: PublicKey,
        /// Its voting power, above 0.
        power: u64,
    },
    /// Remove a validator.
    Remove {
        /// Its key.
        key: PublicKey,
    },
    /// Give a validator another voting power.
    SetPower {
        /// Its key.
        key: PublicKey,
        /// The new power, above 0 (removing is [`SetChange::Remove`]).
        power: u64,
    },
}

/// The set in force and who signs now, as a gateway reports it (`GET /v1/validators`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The last committed height the report is for.
    pub height: u64,
    /// The set that certifies the next block.
    pub set: ValidatorSet,
    /// The validators that signed at least one of the last certificates the gateway looked at.
    /// Empty (and the quorum check skipped) while the chain is shorter than the window the
    /// gateway looks at: a block's own certificate holds only the first quorum of precommits,
    /// so on a young chain a validator that signs may be in none of the few certificates yet.
    pub signing: BTreeSet<PublicKey>,
}

/// Why a validator-set change is refused before it is submitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetChangeError {
    /// The gateway's report does not parse (a key that is not a peer id, or a malformed set).
    #[error("the gateway's validator list is malformed: {0}")]
    BadReport(String),
    /// Adding a validator that is already in the set.
    #[error("{0} is already a validator (change its power with meshward validator set-power)")]
    AlreadyPresent(PublicKey),
    /// Removing or re-powering a key that is not in the set.
    #[error("{0} is not in the validator set")]
    NotPresent(PublicKey),
    /// Removing the only validator: the chain would have nobody to certify its blocks.
    #[error("{0} is the last validator: a chain needs at least one (add another first)")]
    LastValidator(PublicKey),
    /// A power of 0 (removing is its own command).
    #[error("a validator's power must be above 0 (use meshward validator remove to remove one)")]
    ZeroPower,
    /// Setting the power a validator already has.
    #[error("{key} already has power {power}: nothing to change")]
    SamePower {
        /// The validator.
        key: PublicKey,
        /// Its power.
        power: u64,
    },
    /// More validators than a set may hold.
    #[error("a validator set holds at most {MAX_VALIDATORS} validators")]
    TooManyValidators,
    /// A total power over the limit.
    #[error("the set's total power would exceed {MAX_TOTAL_POWER}")]
    TotalPowerTooLarge,
    /// The validators of the new set that sign now would hold 2/3 of its power or less: no
    /// block could be certified until enough of the others sign.
    #[error(
        "the new set would lose its quorum: the validators signing now would hold {signing_power} \
         of its {total_power} power, and a block needs more than 2/3 (bring the validators that \
         are not signing back, or remove them first; --force submits anyway, for example when \
         the node being added is running and synced)"
    )]
    QuorumLost {
        /// The power in the new set of the validators signing now.
        signing_power: u64,
        /// The new set's total power.
        total_power: u64,
    },
}

impl Current {
    /// Reads a gateway's `GET /v1/validators` answer.
    pub fn from_list(list: &ValidatorList) -> Result<Current, SetChangeError> {
        let mut validators = Vec::with_capacity(list.validators.len());
        let mut signing = BTreeSet::new();
        for v in &list.validators {
            let key = PublicKey::from_peer_id(&v.id)
                .map_err(|e| SetChangeError::BadReport(format!("{}: {e}", v.id)))?;
            validators.push(Validator {
                key,
                power: v.power,
            });
            if v.last_signed_height.is_some() {
                signing.insert(key);
            }
        }
        let set = ValidatorSet::new(validators)
            .ok_or_else(|| SetChangeError::BadReport("not a well-formed validator set".into()))?;
        if list.height < list.recent_blocks {
            signing.clear();
        }
        Ok(Current {
            height: list.height,
            set,
            signing,
        })
    }
}

/// The set after `change`, checked (see the module docs). `force` skips only the quorum check.
pub fn plan(
    current: &Current,
    change: &SetChange,
    force: bool,
) -> Result<ValidatorSet, SetChangeError> {
    let mut vals = current.set.validators.clone();
    let at = |key: &PublicKey| vals.iter().position(|v| v.key == *key);
    match *change {
        SetChange::Add { key, power } => {
            if at(&key).is_some() {
                return Err(SetChangeError::AlreadyPresent(key));
            }
            if power == 0 {
                return Err(SetChangeError::ZeroPower);
            }
            if vals.len() >= MAX_VALIDATORS {
                return Err(SetChangeError::TooManyValidators);
            }
            vals.push(Validator { key, power });
        }
        SetChange::Remove { key } => {
            let i = at(&key).ok_or(SetChangeError::NotPresent(key))?;
            if vals.len() == 1 {
                return Err(SetChangeError::LastValidator(key));
            }
            vals.remove(i);
        }
        SetChange::SetPower { key, power } => {
            let i = at(&key).ok_or(SetChangeError::NotPresent(key))?;
            if power == 0 {
                return Err(SetChangeError::ZeroPower);
            }
            if vals[i].power == power {
                return Err(SetChangeError::SamePower { key, power });
            }
            vals[i].power = power;
        }
    }
    let total: u128 = vals.iter().map(|v| u128::from(v.power)).sum();
    if total > u128::from(MAX_TOTAL_POWER) {
        return Err(SetChangeError::TotalPowerTooLarge);
    }
    let set = ValidatorSet::new(vals)
        .filter(ValidatorSet::is_well_formed)
        .ok_or_else(|| SetChangeError::BadReport("the new set is not well formed".into()))?;
    if !force && !current.signing.is_empty() {
        let total_power = set.total_power();
        let signing_power: u64 = set
            .validators
            .iter()
            .filter(|v| current.signing.contains(&v.key))
            .map(|v| v.power)
            .sum();
        // The certificate rule.
        if !set.is_quorum(signing_power) {
            return Err(SetChangeError::QuorumLost {
                signing_power,
                total_power,
            });
        }
    }
    Ok(set)
}

/// A final validator-set change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The transaction's id.
    pub tx: Hash,
    /// The height of the block that holds it.
    pub height: u64,
    /// The first height the new set certifies (`height + 1`).
    pub rules_from: u64,
    /// The new set.
    pub set: ValidatorSet,
}

/// Signs the change with `admins` (the first signs, the others co-sign), submits it and waits
/// until it is final (at most [`admin::FINALITY_TIMEOUT`]).
pub async fn submit(
    client: &Client,
    admins: &[Keypair],
    set: ValidatorSet,
) -> Result<Changed, AdminError> {
    let done = admin::admin_tx(client, admins, TxBody::ValidatorSetChange(set.clone())).await?;
    Ok(Changed {
        tx: done.tx,
        height: done.height,
        rules_from: done.height + 1,
        set,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        meshward_core::ids::SignKey::from_seed(&[i; 32]).public()
    }

    /// `n` validators of power 1, all signing.
    fn current(n: u8) -> Current {
        let set = ValidatorSet::new(
            (1..=n)
                .map(|i| Validator {
                    key: key(i),
                    power: 1,
                })
                .collect(),
        )
        .unwrap();
        Current {
            height: 10,
            signing: set.validators.iter().map(|v| v.key).collect(),
            set,
        }
    }

    #[test]
    fn add_remove_and_set_power_build_well_formed_sets() {
        let c = current(4);
        let added = plan(
            &c,
            &SetChange::Add {
                key: key(9),
                power: DEFAULT_POWER,
            },
            false,
        )
        .unwrap();
        assert!(added.is_well_formed());
        assert_eq!(added.validators.len(), 5);
        assert_eq!(added.power_of(&key(9)), Some(1));
        let removed = plan(&c, &SetChange::Remove { key: key(2) }, false).unwrap();
        assert_eq!(removed.validators.len(), 3);
        assert_eq!(removed.power_of(&key(2)), None);
        let powered = plan(
            &c,
            &SetChange::SetPower {
                key: key(3),
                power: 2,
            },
            false,
        )
        .unwrap();
        assert_eq!(powered.power_of(&key(3)), Some(2));
        assert_eq!(powered.total_power(), 5);
    }

    #[test]
    fn a_change_that_changes_nothing_is_refused() {
        let c = current(4);
        assert_eq!(
            plan(
                &c,
                &SetChange::Add {
                    key: key(1),
                    power: 1
                },
                false
            ),
            Err(SetChangeError::AlreadyPresent(key(1)))
        );
        assert_eq!(
            plan(&c, &SetChange::Remove { key: key(9) }, false),
            Err(SetChangeError::NotPresent(key(9)))
        );
        assert_eq!(
            plan(
                &c,
                &SetChange::SetPower {
                    key: key(9),
                    power: 3
                },
                false
            ),
            Err(SetChangeError::NotPresent(key(9)))
        );
        assert_eq!(
            plan(
                &c,
                &SetChange::SetPower {
                    key: key(1),
                    power: 1
                },
                false
            ),
            Err(SetChangeError::SamePower {
                key: key(1),
                power: 1
            })
        );
    }

    #[test]
    fn the_last_validator_cannot_be_removed() {
        let c = current(1);
        assert_eq!(
            plan(&c, &SetChange::Remove { key: key(1) }, true),
            Err(SetChangeError::LastValidator(key(1)))
        );
    }

    #[test]
    fn zero_and_too_large_powers_are_refused() {
        let c = current(4);
        assert_eq!(
            plan(
                &c,
                &SetChange::Add {
                    key: key(9),
                    power: 0
                },
                true
            ),
            Err(SetChangeError::ZeroPower)
        );
        assert_eq!(
            plan(
                &c,
                &SetChange::SetPower {
                    key: key(1),
                    power: 0
                },
                true
            ),
            Err(SetChangeError::ZeroPower)
        );
        assert_eq!(
            plan(
                &c,
                &SetChange::SetPower {
                    key: key(1),
                    power: MAX_TOTAL_POWER
                },
                true
            ),
            Err(SetChangeError::TotalPowerTooLarge)
        );
        assert_eq!(
            plan(
                &c,
                &SetChange::Add {
                    key: key(9),
                    power: u64::MAX
                },
                true
            ),
            Err(SetChangeError::TotalPowerTooLarge)
        );
    }

    #[test]
    fn a_full_set_takes_no_more() {
        let set = ValidatorSet::new(
            (0..MAX_VALIDATORS)
                .map(|i| Validator {
                    key: meshward_core::ids::SignKey::from_seed(&[i as u8 + 1; 32]).public(),
                    power: 1,
                })
                .collect(),
        )
        .unwrap();
        let c = Current {
            height: 1,
            signing: BTreeSet::new(),
            set,
        };
        let extra = meshward_core::ids::SignKey::from_seed(&[200; 32]).public();
        assert_eq!(
            plan(
                &c,
                &SetChange::Add {
                    key: extra,
                    power: 1
                },
                true
            ),
            Err(SetChangeError::TooManyValidators)
        );
    }

    #[test]
    fn a_change_the_signing_validators_could_not_certify_is_refused_unless_forced() {
        // 4 of 4 sign: adding a fifth at power 1 keeps 4 of 5 (> 2/3) ...
        let mut c = current(4);
        assert!(plan(
            &c,
            &SetChange::Add {
                key: key(9),
                power: 1
            },
            false
        )
        .is_ok());
        // ... at power 2, 4 of 6 is not more than 2/3.
        assert_eq!(
            plan(
                &c,
                &SetChange::Add {
                    key: key(9),
                    power: 2
                },
                false
            ),
            Err(SetChangeError::QuorumLost {
                signing_power: 4,
                total_power: 6
            })
        );
        assert!(plan(
            &c,
            &SetChange::Add {
                key: key(9),
                power: 2
            },
            true
        )
        .is_ok());
        // One of four is down: adding anyone leaves 3 of 5.
        c.signing.remove(&key(4));
        assert_eq!(
            plan(
                &c,
                &SetChange::Add {
                    key: key(9),
                    power: 1
                },
                false
            ),
            Err(SetChangeError::QuorumLost {
                signing_power: 3,
                total_power: 5
            })
        );
        // Removing the one that is down is fine; removing one that signs leaves 2 of 3 (not
        // more than 2/3).
        assert!(plan(&c, &SetChange::Remove { key: key(4) }, false).is_ok());
        assert_eq!(
            plan(&c, &SetChange::Remove { key: key(1) }, false),
            Err(SetChangeError::QuorumLost {
                signing_power: 2,
                total_power: 3
            })
        );
        // Raising the power of the one that is down loses the quorum too.
        assert_eq!(
            plan(
                &c,
                &SetChange::SetPower {
                    key: key(4),
                    power: 3
                },
                false
            ),
            Err(SetChangeError::QuorumLost {
                signing_power: 3,
                total_power: 6
            })
        );
    }

    #[test]
    fn before_block_one_nobody_signed_and_the_quorum_is_not_checked() {
        let mut c = current(4);
        c.height = 0;
        c.signing.clear();
        assert!(plan(
            &c,
            &SetChange::Add {
                key: key(9),
                power: 5
            },
            false
        )
        .is_ok());
    }

    #[test]
    fn a_gateway_report_reads_back_into_the_set_and_its_signers() {
        let c = current(3);
        let list = ValidatorList {
            height: 9,
            since_height: 1,
            set_hash: c.set.hash().to_hex(),
            total_power: 3,
            recent_blocks: 8,
            validators: c
                .set
                .validators
                .iter()
                .enumerate()
                .map(|(i, v)| meshward_api::types::ValidatorEntry {
                    id: v.key.peer_id(),
                    power: v.power,
                    last_signed_height: (i != 0).then_some(9),
                })
                .collect(),
        };
        let got = Current::from_list(&list).unwrap();
        assert_eq!(got.set, c.set);
        assert_eq!(got.height, 9);
        assert_eq!(got.signing.len(), 2);
        assert!(!got.signing.contains(&c.set.validators[0].key));
        // A chain shorter than the window says too little about who signs: no check.
        let young = ValidatorList {
            height: 7,
            ..list.clone()
        };
        assert!(Current::from_list(&young).unwrap().signing.is_empty());
        let mut bad = list.clone();
        bad.validators[0].id = "nope".into();
        assert!(matches!(
            Current::from_list(&bad),
            Err(SetChangeError::BadReport(_))
        ));
    }
}
