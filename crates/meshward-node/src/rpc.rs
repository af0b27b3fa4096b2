//! The gateway's side of the mesh's request-response protocol ([`meshward_core::rpc`]):
//! mailboxes (with replication to other gateways), transaction submission, and ledger lookups
//! for devices.
//!
//! Every envelope is checked before it is stored or forwarded: the sender is an active device
//! and signed it with its current key, the recipient is an active device, the policy allows the
//! pair, and this gateway has not taken the same envelope before. A requesting peer is known by
//! its `PeerId` (Noise-authenticated), which is a device's current signing key, so a device can
//! only fetch and acknowledge its own mailbox.

use std::sync::Arc;
use std::time::Duration;

use meshward_core::codec::{Decode, Encode};
use meshward_core::envelope::Envelope;
use meshward_core::hash::Hash;
use meshward_core::ids::{EncKey, PublicKey};
use meshward_core::rpc::{
    DeviceInfo, GroupInfo, Request, Response, TxState, MAX_ADDRS, MAX_ADDR_LEN, MAX_FETCH,
    MAX_FETCH_BYTES,
};
use meshward_core::state::{Account, Group, State, StateView};
use meshward_core::tx::Tx;
use meshward_core::Reject;
use meshward_net::{Net, PeerId};
use tracing::{debug, info};

use crate::mailboxes::MailboxRefusal;
use crate::mempool::AdmitError;
use crate::Gateway;

/// How long a gateway waits for other gateways to take a replica.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(3);

/// The gateway's request handler: cheap to clone, one per request task. It owns nothing: the
/// ledger, admission and mailboxes it answers from are the gateway's components.
#[derive(Clone)]
pub struct RpcHandler {
    gw: Arc<Gateway>,
    net: Net,
}

/// The account a peer's key signs for now: a device that never rotated signs with its id, one
/// that rotated with a key the state maps back to its account.
pub fn account_of<'a>(state: &'a State, key: &PublicKey) -> Option<&'a Account> {
    match state.account(key) {
        Some(a) if a.sign_key == *key => Some(a),
        _ => state.key_owner(key).and_then(|id| state.account(&id)),
    }
}

/// A group's members with their current encryption keys, in member order: what a member
/// needs to seal a new group key to each of them.
pub fn member_keys(state: &State, group: &Group) -> Vec<(PublicKey, EncKey)> {
    group
        .members
        .iter()
        .filter_map(|m| Some((*m, state.account(m)?.device.as_ref()?.enc_key)))
        .collect()
}

/// The stable code of a refused transaction.
pub fn admit_code(e: &AdmitError) -> &'static str {
    match e {
        AdmitError::Duplicate => "duplicate",
        AdmitError::Conflict => "conflicting_sequence",
        AdmitError::Stale { .. } => "stale_sequence",
        AdmitError::TooFarAhead { .. } => "sequence_gap",
        AdmitError::SenderQuota(_) | AdmitError::Full | AdmitError::Backlog { .. } => "busy",
        AdmitError::Rejected(r) => match r {
            Reject::DeviceRevoked(_) => "device_revoked",
            Reject::RecipientRevoked(_) => "recipient_revoked",
            Reject::PolicyForbids { .. } => "policy_forbids",
            Reject::BadSignature => "bad_signature",
            Reject::UnknownSigner(_) | Reject::NotEnrolled(_) => "unknown_device",
            _ => "rejected",
        },
    }
}

fn refuse(code: &str, message: impl std::fmt::Display) -> Response {
    Response::error(code, &message.to_string())
}

/// A refusal inside the handler, small enough to return by value; it becomes an `Error`
/// response at the edge.
#[derive(Debug)]
struct Refusal {
    code: &'static str,
    message: String,
}

fn refusal(code: &'static str, message: impl std::fmt::Display) -> Refusal {
    Refusal {
        code,
        message: message.to_string(),
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        Response::error(r.code, &r.message)
    }
}

/// How an envelope reached this gateway, which decides how an unsigned `Session` envelope's
/// sender is authenticated.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// Deposited over a connection from this peer: a `Session` envelope only from its sender.
    Connection(&'a PeerId),
    /// Replicated by another gateway, which checked the depositing connection. A Byzantine
    /// gateway can thus place a `Session` envelope no device sent; the recipient's AEAD refuses
    /// it, and the mailbox quota bounds the space it takes.
    Gateway,
}

impl RpcHandler {
    /// A handler answering from `gw`'s components, replicating over `net`.
    pub fn new(gw: Arc<Gateway>, net: Net) -> Self {
        RpcHandler { gw, net }
    }

    /// Answers one request from `from`.
    pub async fn handle(&self, from: PeerId, bytes: &[u8]) -> Response {
        match Request::from_bytes(bytes) {
            Ok(req) => self.handle_request(from, req).await,
            Err(e) => refuse("bad_request", e),
        }
    }

    /// Answers one decoded request from `from` (the mesh, or an MQTT sealed-mode session whose
    /// login proved it holds `from`'s key).
    pub async fn handle_request(&self, from: PeerId, req: Request) -> Response {
        self.seen(&from);
        match req {
            Request::Deliver(_) | Request::DeliverBatch(_) => {
                refuse("unsupported", "gateways do not take direct envelopes")
            }
            Request::Deposit(env) => self.deposit(from, env).await,
            Request::Replicate(env) => self.replicate(from, env).await,
            Request::Fetch { after, max } => self.fetch(from, after, max),
            Request::AckMailbox { up_to } => self.ack_mailbox(from, up_to).await,
            Request::SubmitTx(tx) => self.submit(tx),
            Request::Lookup(key) => self.lookup(&key).await,
            Request::Group(g) => {
                let store = self.gw.ledger.read();
                let st = store.state();
                Response::Group(st.group(&g).map(|grp| {
                    GroupInfo {
                        name: g.clone(),
                        members: grp
                            .members
                            .iter()
                            .filter_map(|m| {
                                let d = st.account(m)?.device.as_ref()?;
                                Some((*m, d.enc_key))
                            })
                            .collect(),
                        epoch: grp.epoch,
                        needs_rekey: grp.needs_rekey,
                    }
                }))
            }
            Request::Policy => {
                let store = self.gw.ledger.read();
                Response::Policy(store.state().policy().allow.clone())
            }
            Request::TxStatus(id) => self.tx_status(&id),
            Request::NextSeq(k) => {
                let store = self.gw.ledger.read();
                Response::NextSeq(self.gw.pool.mempool().next_seq(store.state(), &k))
            }
            Request::Custody(bytes) => self.custody(&bytes),
            Request::Release(device) => self.release(from, device).await,
            Request::Info => {
                let store = self.gw.ledger.read();
                Response::Info {
                    chain_id: store.genesis().chain_id.clone(),
                    height: store.tip().map_or(0, |(h, _)| h),
                }
            }
        }
    }

    /// A custody grant forwarded by another gateway: checked against the ledger like any grant
    /// (the forwarder is not trusted), kept if this gateway is a custodian.
    fn custody(&self, bytes: &[u8]) -> Response {
        let Some(custody) = &self.gw.custody else {
            return refuse("unsupported", "this gateway keeps no custody grants");
        };
        let grant: meshward_sdk::custody::Grant = match serde_json::from_slice(bytes) {
            Ok(g) => g,
            Err(e) => return refuse("bad_request", format!("custody grant: {e}")),
        };
        match custody.register(&self.gw, &grant) {
            Ok(true) => Response::Stored { replicas: 1 },
            Ok(false) => refuse("not_custodian", "this gateway is not one of the custodians"),
            Err(e) => refuse("bad_grant", e),
        }
    }

    /// Another custodian of an MQTT device is starting it: stop running it here. Only a
    /// custodian named in the grant this gateway holds may ask.
    async fn release(&self, from: PeerId, device: PublicKey) -> Response {
        let Some(custody) = &self.gw.custody else {
            return refuse("unsupported", "this gateway keeps no custody grants");
        };
        let allowed = meshward_net::public_key_of(&from)
            .is_some_and(|asker| custody.is_custodian(&device, &asker));
        if !allowed {
            return refuse(
                "not_custodian",
                "only another custodian of the device may ask to release it",
            );
        }
        let bridge = self.gw.mqtt.get().and_then(std::sync::Weak::upgrade);
        let removed = match bridge {
            Some(b) => b.release(&device).await,
            None => false,
        };
        Response::Acked {
            removed: u64::from(removed),
        }
    }

    /// Records that the device behind `from`, if it is one, was heard from now.
    fn seen(&self, from: &PeerId) {
        let Some(key) = meshward_net::public_key_of(from) else {
            return;
        };
        let account = {
            let store = self.gw.ledger.read();
            account_of(store.state(), &key)
                .filter(|a| a.device.is_some())
                .map(|a| a.id)
        };
        if let Some(id) = account {
            self.gw.presence.touch(id, meshward_core::clock::now_ms());
        }
    }

    /// Checks an envelope against the ledger; returns the recipient's account id.
    fn check_envelope(&self, env: &Envelope, via: Via<'_>) -> Result<PublicKey, Refusal> {
        let store = self.gw.ledger.read();
        let st = store.state();
        let sender = account_of(st, &env.sender)
            .ok_or_else(|| refusal("unknown_sender", "the sender is not an enrolled device"))?;
        let sdev = sender
            .device
            .as_ref()
            .ok_or_else(|| refusal("unknown_sender", "the sender is not a device"))?;
        if !sdev.is_active() {
            return Err(refusal("sender_revoked", "the sender is revoked"));
        }
        if env.kind.is_signed() {
            let vk = sender
                .sign_key
                .verifying_key()
                .map_err(|_| refusal("bad_signature", "the sender's key is unusable"))?;
            env.verify_sender(&vk).map_err(|_| {
                refusal("bad_signature", "the envelope's signature does not verify")
            })?;
        } else if let Via::Connection(from) = via {
            // A Session envelope carries no signature: its sender is the one who can hand it
            // over, on a connection authenticated by its current key (ADR 0013).
            let by_sender = meshward_net::public_key_of(from)
                .is_some_and(|k| k == env.sender && sender.sign_key == env.sender);
            if !by_sender {
                return Err(refusal(
                    "not_sender",
                    "a Session envelope carries no signature; a gateway takes it only from its \
                     sender's own connection",
                ));
            }
        }
        let recipient = account_of(st, &env.recipient).ok_or_else(|| {
            refusal(
                "unknown_recipient",
                "the recipient is not an enrolled device",
            )
        })?;
        let rdev = recipient
            .device
            .as_ref()
            .ok_or_else(|| refusal("unknown_recipient", "the recipient is not a device"))?;
        if !rdev.is_active() {
            return Err(refusal("recipient_revoked", "the recipient is revoked"));
        }
        if !st.policy().allows(&sdev.groups, &rdev.groups) {
            return Err(refusal(
                "policy_forbids",
                "the policy forbids the sender's groups to send to the recipient's",
            ));
        }
        Ok(recipient.id)
    }

    /// Checks and stores an envelope once; the error response otherwise.
    async fn store_envelope(&self, env: &Envelope, via: Via<'_>) -> Result<(), Refusal> {
        let recipient = self.check_envelope(env, via)?;
        let c = env.commitment();
        match self
            .gw
            .mailboxes
            .deposit(recipient, c, env.to_bytes())
            .await
        {
            Ok(n) => {
                debug!(recipient = %recipient, commitment = %c, mailbox_seq = n, "envelope stored");
                Ok(())
            }
            Err(e @ MailboxRefusal::Replay) => Err(refusal("replay", e)),
            Err(e @ (MailboxRefusal::Busy | MailboxRefusal::Stopped)) => {
                self.gw.metrics.rpc_busy.inc();
                Err(refusal("busy", e))
            }
            Err(MailboxRefusal::Store(e)) => Err(refusal("mailbox_full", e)),
        }
    }

    async fn deposit(&self, from: PeerId, env: Envelope) -> Response {
        if let Err(r) = self.store_envelope(&env, Via::Connection(&from)).await {
            return r.into();
        }
        // Copy it to the other gateways so the mailbox survives this one.
        let others: Vec<PeerId> = {
            let store = self.gw.ledger.read();
            store
                .state()
                .validators()
                .validators
                .iter()
                .map(|v| meshward_net::peer_id_of(&v.key))
                .filter(|p| *p != self.net.local_peer_id())
                .collect()
        };
        let (commitment, env_sender, env_recipient) = (env.commitment(), env.sender, env.recipient);
        let req = Request::Replicate(env).to_bytes();
        let calls = others.into_iter().map(|p| {
            let net = self.net.clone();
            let req = req.clone();
            async move {
                match tokio::time::timeout(REPLICATE_TIMEOUT, net.request(p, req)).await {
                    Ok(Ok(bytes)) => {
                        matches!(Response::from_bytes(&bytes), Ok(Response::Stored { .. }))
                    }
                    _ => false,
                }
            }
        });
        let copies = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count() as u32;
        let sender = {
            let store = self.gw.ledger.read();
            account_of(store.state(), &env_sender).map_or(env_sender, |a| a.id)
        };
        self.gw.events.publish(crate::events::Event::Deposit {
            commitment: commitment.to_hex(),
            sender: sender.peer_id(),
            recipient: env_recipient.peer_id(),
            replicas: 1 + copies,
        });
        Response::Stored {
            replicas: 1 + copies,
        }
    }

    async fn replicate(&self, from: PeerId, env: Envelope) -> Response {
        let is_validator = {
            let store = self.gw.ledger.read();
            meshward_net::public_key_of(&from)
                .is_some_and(|k| store.state().validators().power_of(&k).is_some())
        };
        if !is_validator {
            return refuse("not_a_gateway", "only gateways replicate mailboxes");
        }
        match self.store_envelope(&env, Via::Gateway).await {
            Ok(()) => Response::Stored { replicas: 1 },
            Err(r) => r.into(),
        }
    }

    /// The account of the requesting device, which must be active.
    fn requester(&self, from: &PeerId) -> Result<PublicKey, Refusal> {
        let key = meshward_net::public_key_of(from)
            .ok_or_else(|| refusal("unknown_device", "the peer id is not an Ed25519 key"))?;
        let store = self.gw.ledger.read();
        let acc = account_of(store.state(), &key)
            .filter(|a| a.device.is_some())
            .ok_or_else(|| refusal("unknown_device", "the peer is not an enrolled device"))?;
        if !acc.device.as_ref().is_some_and(|d| d.is_active()) {
            return Err(refusal("device_revoked", "the device is revoked"));
        }
        Ok(acc.id)
    }

    fn fetch(&self, from: PeerId, after: u64, max: u32) -> Response {
        let me = match self.requester(&from) {
            Ok(a) => a,
            Err(r) => return r.into(),
        };
        let list = match self
            .gw
            .mailboxes
            .list(&me, after, max.min(MAX_FETCH) as usize)
        {
            Ok(l) => l,
            Err(e) => return refuse("storage", e),
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (n, raw) in list {
            bytes += raw.len();
            if bytes > MAX_FETCH_BYTES && !out.is_empty() {
                break;
            }
            match Envelope::from_bytes(&raw) {
                Ok(e) => out.push((n, e)),
                Err(e) => {
                    debug!(mailbox_seq = n, error = %e, "stored envelope unreadable; skipped")
                }
            }
        }
        Response::Envelopes(out)
    }

    async fn ack_mailbox(&self, from: PeerId, up_to: u64) -> Response {
        let me = match self.requester(&from) {
            Ok(a) => a,
            Err(r) => return r.into(),
        };
        match self.gw.mailboxes.ack(me, up_to).await {
            Ok(n) => Response::Acked { removed: n as u64 },
            Err(e @ (MailboxRefusal::Busy | MailboxRefusal::Stopped)) => refuse("busy", e),
            Err(e) => refuse("storage", e),
        }
    }

    fn submit(&self, tx: Tx) -> Response {
        match self.gw.pool.submit(tx.clone(), true) {
            Ok(id) => Response::TxAccepted(id),
            Err(AdmitError::Duplicate) => Response::TxAccepted(tx.id()),
            Err(e) => refuse(admit_code(&e), e),
        }
    }

    async fn lookup(&self, key: &PublicKey) -> Response {
        let info = {
            let store = self.gw.ledger.read();
            let st = store.state();
            let acc = st.account(key).or_else(|| account_of(st, key));
            acc.and_then(|a| {
                let d = a.device.as_ref()?;
                Some(DeviceInfo {
                    id: a.id,
                    sign_key: a.sign_key,
                    enc_key: d.enc_key,
                    groups: d.groups.clone(),
                    active: d.is_active(),
                    seq: a.seq,
                    addrs: Vec::new(),
                })
            })
        };
        let Some(mut info) = info else {
            return Response::Device(None);
        };
        if info.active {
            let peer = meshward_net::peer_id_of(&info.sign_key);
            info.addrs = self
                .net
                .peer_addrs(peer)
                .await
                .into_iter()
                .map(|a| a.to_string())
                .filter(|a| a.len() <= MAX_ADDR_LEN)
                .take(MAX_ADDRS)
                .collect();
        }
        Response::Device(Some(info))
    }

    fn tx_status(&self, id: &Hash) -> Response {
        if self.gw.pool.contains(id) {
            return Response::TxStatus(TxState::Pending);
        }
        let store = self.gw.ledger.read();
        match store.tx_location(id) {
            Ok(Some((height, _))) => Response::TxStatus(TxState::Committed { height }),
            Ok(None) => match self.gw.pool.rejection(id) {
                Some(reason) => Response::TxStatus(TxState::Rejected { reason }),
                None => Response::TxStatus(TxState::Unknown),
            },
            Err(e) => refuse("storage", e),
        }
    }
}

/// Logs what a refused request was, at debug level (info for refusals that suggest an attack).
pub fn log_refusal(from: &PeerId, resp: &Response) {
    if let Response::Error { code, message } = resp {
        match code.as_str() {
            "bad_signature" | "replay" | "not_a_gateway" => {
                info!(peer = %from, code = %code, %message, "request refused")
            }
            _ => debug!(peer = %from, code = %code, %message, "request refused"),
        }
    }
}
