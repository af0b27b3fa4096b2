//! The genesis: the chain id, the admins and the first validator set.
//!
//! Its hash (over the canonical encoding) is the `prev_hash` of block 1, so a chain is bound to
//! its genesis. The JSON form (feature `json`) is what `meshward genesis new` writes and what
//! nodes and auditors read; ids in it are peer ids.

use alloc::string::String;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::hash::{self, domain, Hash};
use crate::state::{AdminSet, State};
use crate::tx::{ValidatorSet, MAX_CHAIN_ID};

/// Genesis format version.
pub const GENESIS_VERSION: u8 = 1;

/// What a chain starts from (see `docs/FORMATS.md`, Genesis): its hash is block 1's `prev_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// The chain id: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`, bound into every signature.
    pub chain_id: String,
    /// When the chain was created, ms since the Unix epoch.
    pub genesis_time_ms: u64,
    /// The admins and their k-of-n threshold.
    pub admins: AdminSet,
    /// The validators of block 1.
    pub validators: ValidatorSet,
}

/// A chain id: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
pub fn valid_chain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CHAIN_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Genesis {
    /// The genesis hash: `prev_hash` of block 1.
    pub fn hash(&self) -> Hash {
        hash::hash(domain::GENESIS, &self.to_bytes())
    }

    /// The ledger state before block 1.
    pub fn state(&self) -> State {
        State::genesis(&self.chain_id, self.admins.clone(), self.validators.clone())
    }
}

impl Encode for Genesis {
    fn encode(&self, w: &mut Writer) {
        w.u8(GENESIS_VERSION)
            .str(&self.chain_id)
            .u64(self.genesis_time_ms)
            .put(&self.admins)
            .put(&self.validators);
    }
}

impl Decode for Genesis {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(GENESIS_VERSION, "genesis")?;
        let chain_id = r.string(MAX_CHAIN_ID, "chain id")?;
        if !valid_chain_id(&chain_id) {
            return Err(DecodeError::Invalid { what: "chain id" });
        }
        Ok(Genesis {
            chain_id,
            genesis_time_ms: r.u64("genesis time")?,
            admins: r.get()?,
            validators: r.get()?,
        })
    }
}

#[cfg(feature = "json")]
pub use json::GenesisJsonError;

#[cfg(feature = "json")]
mod json {
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use serde::{Deserialize, Serialize};

    use super::{valid_chain_id, Genesis, GENESIS_VERSION};
    use crate::ids::PublicKey;
    use crate::state::AdminSet;
    use crate::tx::{Validator, ValidatorSet};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GenesisJson {
        version: u8,
        chain_id: String,
        genesis_time_ms: u64,
        admins: AdminsJson,
        validators: Vec<ValidatorJson>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AdminsJson {
        threshold: u16,
        keys: Vec<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ValidatorJson {
        key: String,
        power: u64,
    }

    /// Why a genesis file is not valid.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum GenesisJsonError {
        /// The text is not JSON of the genesis layout (or has unknown fields).
        #[error("not valid genesis JSON: {0}")]
        Json(#[from] serde_json::Error),
        /// The `version` field is not 1.
        #[error("unsupported genesis version {0} (this build reads version 1)")]
        Version(u8),
        /// The chain id is empty, too long, or has a character outside `A-Z a-z 0-9 . _ -`.
        #[error("invalid chain id {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
        ChainId(String),
        /// A key is not a valid peer id.
        #[error("{field} {value:?} is not a valid peer id")]
        PeerId {
            /// Which key: `"admin key"` or `"validator key"`.
            field: &'static str,
            /// The text found.
            value: String,
        },
        /// The admin keys are empty, too many or repeated, or the threshold is 0 or above their
        /// number.
        #[error(
            "admin set is invalid: 1 to 16 distinct keys, threshold between 1 and their number"
        )]
        Admins,
        /// The validators are empty, too many or repeated, or a power is 0.
        #[error("validator set is invalid: 1 to 128 distinct keys, each with power > 0")]
        Validators,
    }

    fn peer(field: &'static str, s: &str) -> Result<PublicKey, GenesisJsonError> {
        PublicKey::from_peer_id(s).map_err(|_| GenesisJsonError::PeerId {
            field,
            value: s.to_string(),
        })
    }

    impl Genesis {
        /// Parses and checks the JSON form.
        pub fn from_json(s: &str) -> Result<Genesis, GenesisJsonError> {
            let j: GenesisJson = serde_json::from_str(s)?;
            if j.version != GENESIS_VERSION {
                return Err(GenesisJsonError::Version(j.version));
            }
            if !valid_chain_id(&j.chain_id) {
                return Err(GenesisJsonError::ChainId(j.chain_id));
            }
            let keys = j
                .admins
                .keys
                .iter()
                .map(|k| peer("admin key", k))
                .collect::<Result<Vec<_>, _>>()?;
            // `AdminSet::new` refuses duplicates, so every key listed is in the set.
            let admins = AdminSet::new(keys, j.admins.threshold).ok_or(GenesisJsonError::Admins)?;
            let vals = j
                .validators
                .iter()
                .map(|v| {
                    Ok(Validator {
                        key: peer("validator key", &v.key)?,
                        power: v.power,
                    })
                })
                .collect::<Result<Vec<_>, GenesisJsonError>>()?;
            let validators = ValidatorSet::new(vals).ok_or(GenesisJsonError::Validators)?;
            Ok(Genesis {
                chain_id: j.chain_id,
                genesis_time_ms: j.genesis_time_ms,
                admins,
                validators,
            })
        }

        /// The JSON form, pretty-printed.
        pub fn to_json(&self) -> String {
            let j = GenesisJson {
                version: GENESIS_VERSION,
                chain_id: self.chain_id.clone(),
                genesis_time_ms: self.genesis_time_ms,
                admins: AdminsJson {
                    threshold: self.admins.threshold,
                    keys: self.admins.keys.iter().map(|k| k.peer_id()).collect(),
                },
                validators: self
                    .validators
                    .validators
                    .iter()
                    .map(|v| ValidatorJson {
                        key: v.key.peer_id(),
                        power: v.power,
                    })
                    .collect(),
            };
            serde_json::to_string_pretty(&j).expect("genesis JSON has only plain fields")
        }
    }
}
