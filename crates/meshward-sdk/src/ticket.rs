//! One-time enrollment tickets: their text form, the TTL syntax, and (with `std`) joining a
//! fleet with one.
//!
//! An admin creates a ticket on the ledger ([`crate::admin::create_ticket`]): the ledger keeps
//! only the hash of a random 32-byte secret, its expiry and its groups. The admin hands the
//! device the ticket's text form, `mwt1:<chain id>:<secret hex>:<group,group>`, and the device
//! enrolls itself with it ([`join`]). The text form and the TTL parser are pure and build in the
//! `no_std` part of the SDK.
//!
//! ```
//! use meshward_sdk::ticket::{parse_ttl, Ticket};
//! use meshward_sdk::group::parse_groups;
//! let t = Ticket { chain_id: "fleet".into(), secret: [7; 32], groups: parse_groups(&["ops"]).unwrap() };
//! let text = t.to_string();
//! assert!(text.starts_with("mwt1:fleet:0707"));
//! assert_eq!(Ticket::parse(&text).unwrap(), t);
//! assert_eq!(parse_ttl("30m").unwrap(), 30 * 60_000);
//! ```

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use meshward_core::hash::Hash;
use meshward_core::hex;
use meshward_core::tx::{ticket_hash, GroupName};

use crate::group::{parse_groups, InvalidGroupName};

/// The tag every ticket's text form starts with (format version 1).
pub const TICKET_TAG: &str = "mwt1";

/// A one-time enrollment ticket, as the device receives it.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The chain the ticket was created on.
    pub chain_id: String,
    /// The secret whose hash the ledger holds; whoever has it can enroll one device.
    pub secret: [u8; 32],
    /// The groups the device joins.
    pub groups: Vec<GroupName>,
}

impl fmt::Debug for Ticket {
    // The secret is a credential: never printed by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("chain_id", &self.chain_id)
            .field("secret", &"<secret>")
            .field("groups", &self.groups)
            .finish()
    }
}

/// The text form: `mwt1:<chain id>:<secret hex>:<group,group>`.
impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_ticket(&self.chain_id, &self.secret, &self.groups))
    }
}

/// Why a ticket's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not four `:`-separated parts.
    #[error("the ticket is malformed (expected mwt1:<chain>:<secret>:<groups>)")]
    Malformed,
    /// Another tag than [`TICKET_TAG`].
    #[error("the ticket is not a meshward ticket (it must start with mwt1:)")]
    NotATicket,
    /// The secret is not 64 lower-case hex digits.
    #[error("the ticket's secret is malformed")]
    BadSecret,
    /// A group name is invalid.
    #[error(transparent)]
    BadGroup(#[from] InvalidGroupName),
}

/// A ticket's text form: `mwt1:<chain id>:<secret hex>:<group,group>`, groups in the order
/// given.
pub fn format_ticket(chain_id: &str, secret: &[u8; 32], groups: &[GroupName]) -> String {
    let g: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
    format!(
        "{TICKET_TAG}:{chain_id}:{}:{}",
        hex::encode(secret),
        g.join(",")
    )
}

impl Ticket {
    /// Parses a ticket's text form; surrounding whitespace is ignored. The groups are checked
    /// as names; the chain id is checked against the gateway's by [`join`].
    pub fn parse(text: &str) -> Result<Ticket, TicketError> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let [tag, chain, secret, groups] = parts[..] else {
            return Err(TicketError::Malformed);
        };
        if tag != TICKET_TAG {
            return Err(TicketError::NotATicket);
        }
        let secret = hex::decode_array::<32>(secret).ok_or(TicketError::BadSecret)?;
        let groups: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
        Ok(Ticket {
            chain_id: chain.to_string(),
            secret,
            groups: parse_groups(&groups)?,
        })
    }

    /// The hash the ledger keeps of the secret.
    pub fn hash(&self) -> Hash {
        ticket_hash(&self.secret)
    }
}

/// Why a TTL was refused. The message starts with the TTL as given, so a caller can put the
/// name of its field or flag before it (`--ttl 5x: unit must be s, m, h or d`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// No number in front.
    #[error("{0}: expected e.g. 30m, 1h or 7d")]
    NotANumber(String),
    /// An unknown unit.
    #[error("{0}: unit must be s, m, h or d")]
    BadUnit(String),
    /// More milliseconds than a `u64` holds.
    #[error("{0} is too long")]
    TooLong(String),
}

/// Parses a TTL such as `90s`, `30m`, `1h` or `7d` (a bare number is hours) into milliseconds.
pub fn parse_ttl(s: &str) -> Result<u64, TtlError> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| TtlError::NotANumber(s.to_string()))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(TtlError::BadUnit(s.to_string())),
    };
    n.checked_mul(ms)
        .ok_or_else(|| TtlError::TooLong(s.to_string()))
}

#[cfg(feature = "std")]
pub use join::{join, JoinError, Joined};

#[cfg(feature = "std")]
mod join {
    use std::time::{Duration, Instant};

    use meshward_api::client::{ApiClient, ApiClientError};
    use meshward_api::types::TxState;
    use meshward_core::hash::Hash;
    use meshward_core::ids::Keypair;
    use meshward_core::tx::{enroll_body, Tx};

    use super::Ticket;
    use crate::admin::FINALITY_TIMEOUT;

    /// Why joining with a ticket failed.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum JoinError {
        /// The ticket was made on another chain than the gateway's.
        #[error("the ticket is for chain {ticket:?}, but the gateway runs {gateway:?}")]
        WrongChain {
            /// The ticket's chain.
            ticket: String,
            /// The gateway's chain.
            gateway: String,
        },
        /// The key belongs to a device that rotated its keys: it is enrolled already.
        #[error("this device is already enrolled and rotated its keys; a ticket enrolls a new device (generate one with meshward device keygen)")]
        Rotated,
        /// The gateway's API refused or did not answer (a used or expired ticket is a
        /// ledger rejection, `rejected`).
        #[error(transparent)]
        Api(#[from] ApiClientError),
        /// The gateway took the enrollment, then refused it before it was final.
        #[error("the enrollment was refused: {0}")]
        Refused(String),
        /// The enrollment was not final in time.
        #[error(
            "the enrollment {0} was not final within {1:?}; check it later with GET /v1/tx/{0}"
        )]
        NotFinal(Hash, Duration),
    }

    /// A device that joined.
    #[derive(Debug, Clone)]
    pub struct Joined {
        /// The enrollment transaction.
        pub tx: Hash,
        /// The height it is final at.
        pub height: u64,
    }

    /// Enrolls the device `keys` (its first transaction, seq 1) with `ticket`, signed by its
    /// own keys with proofs of possession, through the gateway API at `api`
    /// (`POST /v1/enroll`: a gateway's mesh admits only enrolled devices), and waits until it
    /// is final. `account` is the key file's ledger id: a device that rotated is enrolled
    /// already.
    pub fn join(
        api: &ApiClient,
        account: &meshward_core::PublicKey,
        keys: &Keypair,
        ticket: &Ticket,
    ) -> Result<Joined, JoinError> {
        if *account != keys.id() {
            return Err(JoinError::Rotated);
        }
        let chain = api.status()?.chain_id;
        if chain != ticket.chain_id {
            return Err(JoinError::WrongChain {
                ticket: ticket.chain_id.clone(),
                gateway: chain,
            });
        }
        let body = enroll_body(&chain, keys, ticket.groups.clone(), Some(ticket.secret));
        let tx = Tx::sign(&chain, keys.id(), &keys.sign, 1, body);
        api.enroll(&tx)?;
        let id = tx.id();
        let deadline = Instant::now() + FINALITY_TIMEOUT;
        loop {
            let s = api.tx_status(&id)?;
            match (s.status, s.height) {
                (TxState::Final, Some(height)) => return Ok(Joined { tx: id, height }),
                (TxState::Rejected, _) => {
                    return Err(JoinError::Refused(s.reason.unwrap_or_default()))
                }
                _ if Instant::now() >= deadline => {
                    return Err(JoinError::NotFinal(id, FINALITY_TIMEOUT))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<GroupName> {
        parse_groups(g).unwrap()
    }

    #[test]
    fn the_text_form_round_trips() {
        let t = Ticket {
            chain_id: "fleet-1".into(),
            secret: [0xab; 32],
            groups: groups(&["ops", "sensors"]),
        };
        let text = t.to_string();
        assert_eq!(
            text,
            format!("mwt1:fleet-1:{}:ops,sensors", "ab".repeat(32))
        );
        assert_eq!(Ticket::parse(&text).unwrap(), t);
        assert_eq!(Ticket::parse(&format!("  {text}\n")).unwrap(), t);
        assert_eq!(t.hash(), ticket_hash(&[0xab; 32]));
    }

    #[test]
    fn no_groups_is_an_empty_list() {
        let text = format_ticket("c", &[1; 32], &[]);
        assert!(text.ends_with(':'), "{text}");
        assert!(Ticket::parse(&text).unwrap().groups.is_empty());
    }

    #[test]
    fn bad_tickets_say_what_is_wrong() {
        let s = "00".repeat(32);
        assert_eq!(Ticket::parse("mwt1:c"), Err(TicketError::Malformed));
        assert_eq!(
            Ticket::parse(&format!("mwt1:c:{s}:g:extra")),
            Err(TicketError::Malformed)
        );
        assert_eq!(
            Ticket::parse(&format!("mwt2:c:{s}:g")),
            Err(TicketError::NotATicket)
        );
        assert_eq!(Ticket::parse("mwt1:c:00:g"), Err(TicketError::BadSecret));
        assert_eq!(
            Ticket::parse(&format!("mwt1:c:{}:g", "AB".repeat(32))),
            Err(TicketError::BadSecret)
        );
        assert_eq!(
            Ticket::parse(&format!("mwt1:c:{s}:ok,Bad")),
            Err(TicketError::BadGroup(InvalidGroupName("Bad".into())))
        );
        assert_eq!(
            TicketError::NotATicket.to_string(),
            "the ticket is not a meshward ticket (it must start with mwt1:)"
        );
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let t = Ticket {
            chain_id: "c".into(),
            secret: [0xcd; 32],
            groups: Vec::new(),
        };
        assert!(!format!("{t:?}").contains("cdcd"));
    }

    #[test]
    fn ttls_in_each_unit() {
        assert_eq!(parse_ttl("90s"), Ok(90_000));
        assert_eq!(parse_ttl("30m"), Ok(1_800_000));
        assert_eq!(parse_ttl("1h"), Ok(3_600_000));
        assert_eq!(parse_ttl("2"), Ok(7_200_000));
        assert_eq!(parse_ttl("7d"), Ok(604_800_000));
    }

    #[test]
    fn bad_ttls_name_the_input() {
        assert_eq!(parse_ttl("h"), Err(TtlError::NotANumber("h".into())));
        assert_eq!(parse_ttl(""), Err(TtlError::NotANumber("".into())));
        assert_eq!(parse_ttl("5x"), Err(TtlError::BadUnit("5x".into())));
        assert_eq!(parse_ttl("5 h"), Err(TtlError::BadUnit("5 h".into())));
        let huge = format!("{}d", u64::MAX / 1000);
        assert_eq!(parse_ttl(&huge), Err(TtlError::TooLong(huge.clone())));
        assert_eq!(
            format!("--ttl {}", parse_ttl("5x").unwrap_err()),
            "--ttl 5x: unit must be s, m, h or d"
        );
    }
}
