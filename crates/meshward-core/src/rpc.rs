//! The messages devices and gateways exchange over the mesh's request-response protocol.
//!
//! One request, one response, each in the canonical encoding of [`crate::codec`] with a version
//! byte. The mesh authenticates the peer (Noise, keyed by its `PeerId`, which is its ledger id),
//! so a request needs no signature of its own: a `Fetch` is answered with the mailbox of the peer
//! that asked, never of anyone else. What a request carries that others signed (envelopes,
//! transactions) is checked by whoever receives it before it is stored or forwarded.
//!
//! ```
//! use meshward_core::codec::{Decode, Encode};
//! use meshward_core::rpc::{Request, Response};
//! let req = Request::Fetch { after: 0, max: 16 };
//! assert_eq!(Request::from_bytes(&req.to_bytes()).unwrap(), req);
//! let resp = Response::Error { code: "revoked".into(), message: "device is revoked".into() };
//! assert_eq!(Response::from_bytes(&resp.to_bytes()).unwrap(), resp);
//! ```

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{Decode, DecodeError, Encode, Reader, Writer};
use crate::envelope::Envelope;
use crate::hash::Hash;
use crate::ids::{EncKey, PublicKey};
use crate::tx::{GroupName, Tx, MAX_GROUPS_PER_DEVICE, MAX_GROUP_MEMBERS, MAX_POLICY_RULES};

/// Version byte of every request and response.
pub const RPC_VERSION: u8 = 1;
/// Most envelopes one `Fetch` returns.
pub const MAX_FETCH: u32 = 256;
/// Most envelope bytes one `Envelopes` response carries (the mesh's response limit is larger).
pub const MAX_FETCH_BYTES: usize = 4 * 1024 * 1024;
/// Most addresses listed for one device.
pub const MAX_ADDRS: usize = 16;
/// Longest address string (a multiaddr in text form).
pub const MAX_ADDR_LEN: usize = 256;
/// Longest error code.
pub const MAX_CODE_LEN: usize = 32;
/// Longest error message.
pub const MAX_MESSAGE_LEN: usize = 512;
/// Most envelopes in one `DeliverBatch`: one anchor's batch (the SDK's `MAX_SDK_BATCH`).
pub const MAX_DELIVER_BATCH: usize = 64;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Device to device: an envelope delivered directly. Answered `Delivered` once the recipient
    /// has authenticated and opened it.
    Deliver(Envelope),
    /// Device to device: 1 to [`MAX_DELIVER_BATCH`] envelopes delivered directly in one
    /// request: one sender's, in strictly increasing seq, opened all or nothing
    /// (`Receiver::open_batch`). Answered `DeliveredBatch`.
    DeliverBatch(Vec<Envelope>),
    /// Device to gateway: keep this envelope in its recipient's mailbox. Answered `Stored` with
    /// the number of gateways holding a copy.
    Deposit(Envelope),
    /// Gateway to gateway: a copy of a deposited envelope, so a mailbox survives its gateway.
    Replicate(Envelope),
    /// Device to gateway: the asking device's envelopes with a mailbox number above `after`.
    Fetch {
        /// Mailbox number to start after: 0 for the first fetch, then the last number kept.
        after: u64,
        /// Most envelopes to return (at most [`MAX_FETCH`]).
        max: u32,
    },
    /// Device to gateway: the asking device has kept every envelope up to `up_to`.
    AckMailbox {
        /// The highest mailbox number the device has kept; every envelope up to it is removed.
        up_to: u64,
    },
    /// Anyone to gateway: admit a signed transaction to the mempool.
    SubmitTx(Tx),
    /// The ledger's record of a device, and where it listens if a gateway knows.
    Lookup(PublicKey),
    /// A group's members (with their encryption keys) and key epoch.
    Group(GroupName),
    /// The fleet's policy: which groups may send to which.
    Policy,
    /// Where a transaction is: pending, committed, rejected or unknown.
    TxStatus(Hash),
    /// The gateway's chain id and height.
    Info,
    /// The sequence number an account's next transaction should carry, counting what waits in
    /// the answering gateway's mempool.
    NextSeq(PublicKey),
    /// Gateway to gateway: an MQTT custody grant (the JSON of FORMATS.md, "MQTT custody"),
    /// signed by the admins, for the receiving gateway to check and keep if it is a custodian.
    /// Answered `Stored { replicas: 1 }`. At most [`MAX_CUSTODY_BYTES`].
    Custody(Vec<u8>),
    /// Gateway to gateway: the sender, a custodian of this MQTT device, is starting it; the
    /// receiver closes the device's MQTT connections (MQTT 5 0x8E) and stops running it, so
    /// two custodians never sign for one device at once. Answered `Acked { removed }` once it
    /// has stopped: 1 if it was running the device, else 0.
    Release(PublicKey),
}

/// Largest custody grant carried by `Request::Custody`.
pub const MAX_CUSTODY_BYTES: usize = 16 * 1024;

/// What the ledger says of a device, as a gateway answers a `Lookup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device's account id (its enrollment key).
    pub id: PublicKey,
    /// The key that signs for the device now (differs from `id` after a rotation).
    pub sign_key: PublicKey,
    /// The device's current X25519 key, to seal envelopes to.
    pub enc_key: EncKey,
    /// The groups it belongs to, sorted.
    pub groups: Vec<GroupName>,
    /// Whether the device may send and receive (false once revoked).
    pub active: bool,
    /// The last transaction sequence number the ledger has committed for the device.
    pub seq: u64,
    /// Listen addresses the device reported to the answering gateway (multiaddr text).
    pub addrs: Vec<String>,
}

/// A group as a gateway answers a `Group` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: GroupName,
    /// Active members and their encryption keys, sorted by id.
    pub members: Vec<(PublicKey, EncKey)>,
    /// The group key's current epoch (0 before the first `GroupKey`).
    pub epoch: u64,
    /// Whether membership changed since the last `GroupKey`, so a member should hand out a new one.
    pub needs_rekey: bool,
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxState {
    /// The gateway has never seen the transaction (or has forgotten it).
    Unknown,
    /// In the gateway's mempool, waiting for a block.
    Pending,
    /// In a committed block.
    Committed {
        /// Height of that block.
        height: u64,
    },
    /// Refused, by admission or by the ledger rules.
    Rejected {
        /// Why, for a person.
        reason: String,
    },
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Deliver`: the recipient authenticated and opened the envelope.
    Delivered,
    /// Answer to `DeliverBatch`: the recipient authenticated and opened the first `delivered`
    /// envelopes. Fewer than were sent: `refused` says why the next one was not, and the ones
    /// after it were not opened. A device opens a batch all or nothing, so it answers all of
    /// them, or 0 with the refusal.
    DeliveredBatch {
        /// How many envelopes, from the first, were opened.
        delivered: u32,
        /// The refusal of envelope `delivered`: `(code, message)`, as in `Error`.
        refused: Option<(String, String)>,
    },
    /// Answer to `Deposit` and `Replicate`: the envelope is in the recipient's mailbox.
    Stored {
        /// How many gateways hold a copy, this one included.
        replicas: u32,
    },
    /// `(mailbox number, envelope)`, in increasing number order.
    Envelopes(Vec<(u64, Envelope)>),
    /// Answer to `AckMailbox`.
    Acked {
        /// How many envelopes were removed from the mailbox.
        removed: u64,
    },
    /// Answer to `SubmitTx`: admitted to the mempool, with the transaction id.
    TxAccepted(Hash),
    /// Answer to `Lookup`; `None`: no such device.
    Device(Option<DeviceInfo>),
    /// Answer to `Group`; `None`: no such group.
    Group(Option<GroupInfo>),
    /// Answer to `Policy`: the `(from, to)` group pairs allowed to send, sorted.
    Policy(Vec<(GroupName, GroupName)>),
    /// Answer to `TxStatus`.
    TxStatus(TxState),
    /// Answer to `Info`.
    Info {
        /// The gateway's chain id.
        chain_id: String,
        /// Its committed height (0 before block 1).
        height: u64,
    },
    /// `None`: no such account.
    NextSeq(Option<u64>),
    /// The request was refused. `code` is stable and machine-readable (see
    /// `docs/FORMATS.md`), `message` says why for a person.
    Error {
        /// Stable machine-readable code, at most [`MAX_CODE_LEN`] bytes.
        code: String,
        /// What went wrong, for a person, at most [`MAX_MESSAGE_LEN`] bytes.
        message: String,
    },
}

impl Response {
    /// An error response, truncating overlong text so it always encodes within the limits.
    pub fn error(code: &str, message: &str) -> Response {
        let (code, message) = refusal(code, message);
        Response::Error { code, message }
    }
}

/// `(code, message)` truncated to [`MAX_CODE_LEN`] and [`MAX_MESSAGE_LEN`], as `Error` and
/// `DeliveredBatch` carry them.
pub fn refusal(code: &str, message: &str) -> (String, String) {
    (
        truncate(code, MAX_CODE_LEN),
        truncate(message, MAX_MESSAGE_LEN),
    )
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    String::from(&s[..end])
}

mod tag {
    pub(crate) const DELIVER: u8 = 1;
    pub(crate) const DEPOSIT: u8 = 2;
    pub(crate) const REPLICATE: u8 = 3;
    pub(crate) const FETCH: u8 = 4;
    pub(crate) const ACK_MAILBOX: u8 = 5;
    pub(crate) const SUBMIT_TX: u8 = 6;
    pub(crate) const LOOKUP: u8 = 7;
    pub(crate) const GROUP: u8 = 8;
    pub(crate) const POLICY: u8 = 9;
    pub(crate) const TX_STATUS: u8 = 10;
    pub(crate) const INFO: u8 = 11;
    pub(crate) const NEXT_SEQ: u8 = 12;
    pub(crate) const CUSTODY: u8 = 13;
    pub(crate) const RELEASE: u8 = 14;
    pub(crate) const DELIVER_BATCH: u8 = 15;

    pub(crate) const DELIVERED: u8 = 1;
    pub(crate) const STORED: u8 = 2;
    pub(crate) const ENVELOPES: u8 = 3;
    pub(crate) const ACKED: u8 = 4;
    pub(crate) const TX_ACCEPTED: u8 = 5;
    pub(crate) const DEVICE: u8 = 6;
    pub(crate) const GROUP_INFO: u8 = 7;
    pub(crate) const POLICY_INFO: u8 = 8;
    pub(crate) const TX_STATE: u8 = 9;
    pub(crate) const ERROR: u8 = 10;
    pub(crate) const INFO_ANSWER: u8 = 11;
    pub(crate) const NEXT_SEQ_ANSWER: u8 = 12;
    pub(crate) const DELIVERED_BATCH: u8 = 13;

    pub(crate) const UNKNOWN: u8 = 0;
    pub(crate) const PENDING: u8 = 1;
    pub(crate) const COMMITTED: u8 = 2;
    pub(crate) const REJECTED: u8 = 3;
}

impl Encode for Request {
    fn encode(&self, w: &mut Writer) {
        w.u8(RPC_VERSION);
        match self {
            Request::Deliver(e) => w.u8(tag::DELIVER).put(e),
            Request::DeliverBatch(es) => w.u8(tag::DELIVER_BATCH).list(es),
            Request::Deposit(e) => w.u8(tag::DEPOSIT).put(e),
            Request::Replicate(e) => w.u8(tag::REPLICATE).put(e),
            Request::Fetch { after, max } => w.u8(tag::FETCH).u64(*after).u32(*max),
            Request::AckMailbox { up_to } => w.u8(tag::ACK_MAILBOX).u64(*up_to),
            Request::SubmitTx(tx) => w.u8(tag::SUBMIT_TX).put(tx),
            Request::Lookup(id) => w.u8(tag::LOOKUP).put(id),
            Request::Group(g) => w.u8(tag::GROUP).put(g),
            Request::Policy => w.u8(tag::POLICY),
            Request::TxStatus(h) => w.u8(tag::TX_STATUS).put(h),
            Request::Info => w.u8(tag::INFO),
            Request::NextSeq(k) => w.u8(tag::NEXT_SEQ).put(k),
            Request::Custody(b) => w.u8(tag::CUSTODY).bytes(b),
            Request::Release(k) => w.u8(tag::RELEASE).put(k),
        };
    }
}

impl Decode for Request {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(RPC_VERSION, "rpc request")?;
        Ok(match r.u8("rpc request kind")? {
            tag::DELIVER => Request::Deliver(r.get()?),
            tag::DELIVER_BATCH => {
                let es: Vec<Envelope> = r.list(MAX_DELIVER_BATCH, "delivered envelopes")?;
                if es.is_empty() {
                    return Err(DecodeError::Invalid {
                        what: "deliver batch (empty)",
                    });
                }
                Request::DeliverBatch(es)
            }
            tag::DEPOSIT => Request::Deposit(r.get()?),
            tag::REPLICATE => Request::Replicate(r.get()?),
            tag::FETCH => Request::Fetch {
                after: r.u64("fetch after")?,
                max: r.u32("fetch max")?,
            },
            tag::ACK_MAILBOX => Request::AckMailbox {
                up_to: r.u64("ack up to")?,
            },
            tag::SUBMIT_TX => Request::SubmitTx(r.get()?),
            tag::LOOKUP => Request::Lookup(r.get()?),
            tag::GROUP => Request::Group(r.get()?),
            tag::POLICY => Request::Policy,
            tag::TX_STATUS => Request::TxStatus(r.get()?),
            tag::INFO => Request::Info,
            tag::NEXT_SEQ => Request::NextSeq(r.get()?),
            tag::CUSTODY => Request::Custody(r.byte_vec(MAX_CUSTODY_BYTES, "custody grant")?),
            tag::RELEASE => Request::Release(r.get()?),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "rpc request kind",
                    tag,
                })
            }
        })
    }
}

impl Encode for DeviceInfo {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.id)
            .put(&self.sign_key)
            .put(&self.enc_key)
            .list(&self.groups)
            .bool(self.active)
            .u64(self.seq)
            .len(self.addrs.len());
        for a in &self.addrs {
            w.str(a);
        }
    }
}

impl Decode for DeviceInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.get()?;
        let sign_key = r.get()?;
        let enc_key = r.get()?;
        let groups = r.list(MAX_GROUPS_PER_DEVICE, "device groups")?;
        let active = r.bool("device active")?;
        let seq = r.u64("device seq")?;
        let n = r.len(MAX_ADDRS, "device addresses")?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(r.string(MAX_ADDR_LEN, "device address")?);
        }
        Ok(DeviceInfo {
            id,
            sign_key,
            enc_key,
            groups,
            active,
            seq,
            addrs,
        })
    }
}

impl Encode for GroupInfo {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.name).len(self.members.len());
        for (id, enc) in &self.members {
            w.put(id).put(enc);
        }
        w.u64(self.epoch).bool(self.needs_rekey);
    }
}

impl Decode for GroupInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.get()?;
        let n = r.len(MAX_GROUP_MEMBERS, "group members")?;
        let mut members: Vec<(PublicKey, EncKey)> = Vec::with_capacity(n);
        for _ in 0..n {
            let id: PublicKey = r.get()?;
            if members.last().is_some_and(|(prev, _)| *prev >= id) {
                return Err(DecodeError::Invalid {
                    what: "group members (not sorted and unique)",
                });
            }
            members.push((id, r.get()?));
        }
        Ok(GroupInfo {
            name,
            members,
            epoch: r.u64("group epoch")?,
            needs_rekey: r.bool("group needs rekey")?,
        })
    }
}

impl Encode for Response {
    fn encode(&self, w: &mut Writer) {
        w.u8(RPC_VERSION);
        match self {
            Response::Delivered => {
                w.u8(tag::DELIVERED);
            }
            Response::DeliveredBatch { delivered, refused } => {
                w.u8(tag::DELIVERED_BATCH).u32(*delivered);
                match refused {
                    None => w.u8(0),
                    Some((code, message)) => w.u8(1).str(code).str(message),
                };
            }
            Response::Stored { replicas } => {
                w.u8(tag::STORED).u32(*replicas);
            }
            Response::Envelopes(list) => {
                w.u8(tag::ENVELOPES).len(list.len());
                for (n, e) in list {
                    w.u64(*n).put(e);
                }
            }
            Response::Acked { removed } => {
                w.u8(tag::ACKED).u64(*removed);
            }
            Response::TxAccepted(h) => {
                w.u8(tag::TX_ACCEPTED).put(h);
            }
            Response::Device(d) => {
                w.u8(tag::DEVICE).option(d);
            }
            Response::Group(g) => {
                w.u8(tag::GROUP_INFO).option(g);
            }
            Response::Policy(allow) => {
                w.u8(tag::POLICY_INFO).len(allow.len());
                for (a, b) in allow {
                    w.put(a).put(b);
                }
            }
            Response::TxStatus(s) => {
                w.u8(tag::TX_STATE);
                match s {
                    TxState::Unknown => w.u8(tag::UNKNOWN),
                    TxState::Pending => w.u8(tag::PENDING),
                    TxState::Committed { height } => w.u8(tag::COMMITTED).u64(*height),
                    TxState::Rejected { reason } => w.u8(tag::REJECTED).str(reason),
                };
            }
            Response::NextSeq(n) => {
                w.u8(tag::NEXT_SEQ_ANSWER).option(n);
            }
            Response::Info { chain_id, height } => {
                w.u8(tag::INFO_ANSWER).str(chain_id).u64(*height);
            }
            Response::Error { code, message } => {
                w.u8(tag::ERROR).str(code).str(message);
            }
        }
    }
}

impl Decode for Response {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(RPC_VERSION, "rpc response")?;
        Ok(match r.u8("rpc response kind")? {
            tag::DELIVERED => Response::Delivered,
            tag::DELIVERED_BATCH => Response::DeliveredBatch {
                delivered: r.u32("delivered count")?,
                refused: match r.u8("batch refusal")? {
                    0 => None,
                    1 => Some((
                        r.string(MAX_CODE_LEN, "error code")?,
                        r.string(MAX_MESSAGE_LEN, "error message")?,
                    )),
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "batch refusal",
                            tag,
                        })
                    }
                },
            },
            tag::STORED => Response::Stored {
                replicas: r.u32("stored replicas")?,
            },
            tag::ENVELOPES => {
                let n = r.len(MAX_FETCH as usize, "fetched envelopes")?;
                let mut list: Vec<(u64, Envelope)> = Vec::with_capacity(n);
                for _ in 0..n {
                    let num = r.u64("mailbox number")?;
                    if list.last().is_some_and(|(prev, _)| *prev >= num) {
                        return Err(DecodeError::Invalid {
                            what: "mailbox numbers (not increasing)",
                        });
                    }
                    list.push((num, r.get()?));
                }
                Response::Envelopes(list)
            }
            tag::ACKED => Response::Acked {
                removed: r.u64("acked count")?,
            },
            tag::TX_ACCEPTED => Response::TxAccepted(r.get()?),
            tag::DEVICE => Response::Device(r.option("device info")?),
            tag::GROUP_INFO => Response::Group(r.option("group info")?),
            tag::POLICY_INFO => {
                let n = r.len(MAX_POLICY_RULES, "policy rules")?;
                let mut allow = Vec::with_capacity(n);
                for _ in 0..n {
                    allow.push((r.get()?, r.get()?));
                }
                Response::Policy(allow)
            }
            tag::TX_STATE => Response::TxStatus(match r.u8("tx state")? {
                tag::UNKNOWN => TxState::Unknown,
                tag::PENDING => TxState::Pending,
                tag::COMMITTED => TxState::Committed {
                    height: r.u64("tx height")?,
                },
                tag::REJECTED => TxState::Rejected {
                    reason: r.string(MAX_MESSAGE_LEN, "tx reject reason")?,
                },
                tag => {
                    return Err(DecodeError::UnknownTag {
                        what: "tx state",
                        tag,
                    })
                }
            }),
            tag::NEXT_SEQ_ANSWER => Response::NextSeq(r.option("next seq")?),
            tag::INFO_ANSWER => Response::Info {
                chain_id: r.string(crate::tx::MAX_CHAIN_ID, "chain id")?,
                height: r.u64("height")?,
            },
            tag::ERROR => Response::Error {
                code: r.string(MAX_CODE_LEN, "error code")?,
                message: r.string(MAX_MESSAGE_LEN, "error message")?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "rpc response kind",
                    tag,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::seal_oneshot;
    use crate::ids::Keypair;
    use rand::rngs::OsRng;

    fn env() -> Envelope {
        let a = Keypair::generate(&mut OsRng);
        let b = Keypair::generate(&mut OsRng);
        seal_oneshot(&mut OsRng, &a, b.id(), &b.enc_key(), 1, 5, b"hello").unwrap()
    }

    fn roundtrip<T: Encode + Decode + PartialEq + core::fmt::Debug>(v: T) {
        let bytes = v.to_bytes();
        let back = T::from_bytes(&bytes).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.to_bytes(), bytes);
        // Every strict prefix fails to decode, and so do trailing bytes.
        for cut in 0..bytes.len() {
            assert!(
                T::from_bytes(&bytes[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(T::from_bytes(&longer).is_err());
    }

    #[test]
    fn every_message_round_trips() {
        let e = env();
        let g = GroupName::new("sensors").unwrap();
        let kp = Keypair::generate(&mut OsRng);
        for req in [
            Request::Deliver(e.clone()),
            Request::DeliverBatch(alloc::vec![e.clone(), e.clone()]),
            Request::Deposit(e.clone()),
            Request::Replicate(e.clone()),
            Request::Fetch { after: 7, max: 3 },
            Request::AckMailbox { up_to: 9 },
            Request::Lookup(kp.id()),
            Request::Group(g.clone()),
            Request::Policy,
            Request::TxStatus(Hash([7; 32])),
            Request::Info,
            Request::NextSeq(kp.id()),
            Request::Custody(b"{}".to_vec()),
            Request::Release(kp.id()),
        ] {
            roundtrip(req);
        }
        let info = DeviceInfo {
            id: kp.id(),
            sign_key: kp.id(),
            enc_key: kp.enc_key(),
            groups: alloc::vec![g.clone()],
            active: true,
            seq: 4,
            addrs: alloc::vec!["/ip4/127.0.0.1/tcp/1".into()],
        };
        for resp in [
            Response::Delivered,
            Response::DeliveredBatch {
                delivered: 3,
                refused: None,
            },
            Response::DeliveredBatch {
                delivered: 1,
                refused: Some(("replay".into(), "seen before".into())),
            },
            Response::Stored { replicas: 2 },
            Response::Envelopes(alloc::vec![(1, e.clone()), (5, e)]),
            Response::Acked { removed: 2 },
            Response::TxAccepted(Hash([1; 32])),
            Response::Device(Some(info)),
            Response::Device(None),
            Response::Group(Some(GroupInfo {
                name: g.clone(),
                members: alloc::vec![(kp.id(), kp.enc_key())],
                epoch: 2,
                needs_rekey: true,
            })),
            Response::Policy(alloc::vec![(g.clone(), g)]),
            Response::TxStatus(TxState::Committed { height: 3 }),
            Response::TxStatus(TxState::Rejected {
                reason: "bad".into(),
            }),
            Response::TxStatus(TxState::Pending),
            Response::error("revoked", "device is revoked"),
            Response::Info {
                chain_id: "fleet".into(),
                height: 9,
            },
            Response::NextSeq(Some(4)),
            Response::NextSeq(None),
        ] {
            roundtrip(resp);
        }
    }

    #[test]
    fn a_deliver_batch_holds_one_to_the_most_envelopes() {
        let e = env();
        let empty = Request::DeliverBatch(alloc::vec![]).to_bytes();
        assert!(Request::from_bytes(&empty).is_err());
        let most = Request::DeliverBatch(alloc::vec![e.clone(); MAX_DELIVER_BATCH]);
        assert_eq!(Request::from_bytes(&most.to_bytes()).unwrap(), most);
        let over = Request::DeliverBatch(alloc::vec![e; MAX_DELIVER_BATCH + 1]).to_bytes();
        assert!(Request::from_bytes(&over).is_err());
    }

    #[test]
    fn out_of_order_mailbox_numbers_are_rejected() {
        let e = env();
        let bytes = Response::Envelopes(alloc::vec![(5, e.clone()), (1, e)]).to_bytes();
        assert!(Response::from_bytes(&bytes).is_err());
    }

    #[test]
    fn error_text_is_truncated_to_its_limits() {
        let long = "é".repeat(600);
        let r = Response::error(&long, &long);
        let Response::Error { code, message } = &r else {
            unreachable!()
        };
        assert!(code.len() <= MAX_CODE_LEN && message.len() <= MAX_MESSAGE_LEN);
        assert_eq!(Response::from_bytes(&r.to_bytes()).unwrap(), r);
    }
}
