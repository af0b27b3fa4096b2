//! Sealed mode on the gateway: MQTT sessions of devices that hold their own keys
//! (`meshward_sdk::sealed`, FORMATS.md "MQTT sealed mode").
//!
//! The device logs in with a signed token, checked here against the ledger's signing key for
//! the device, this gateway's node key and the clock, and spent. Its frames on
//! `meshward/v1/sealed` are mesh requests, answered by the same handler as the mesh's
//! ([`RpcHandler::handle_request`]) on behalf of the device's peer id; a deposited envelope must
//! be the device's own. The gateway has no key that opens what the device seals. The device's
//! mailbox on this gateway is pushed to its inbox as mail frames, which it acknowledges with
//! `AckMailbox`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meshward_core::envelope::Envelope;
use meshward_core::ids::PublicKey;
use meshward_core::rpc::{Request, Response};
use meshward_core::state::StateView;
use meshward_mqtt::codec::{ConnRefusal, PubRefusal, Will};
use meshward_mqtt::topic::{Feed, Target};
use meshward_mqtt::{Accepted, BoxFuture, Login, Push, SessionHandle};
use meshward_sdk::sealed::{self as frames, LoginToken, TOKEN_PREFIX, TOKEN_WINDOW_MS};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::SESSION_QUEUE;
use crate::mailboxes::Mailboxes;
use crate::rpc::{account_of, RpcHandler};
use crate::Gateway;

/// Spent login tokens remembered at once (each until its time window has passed); beyond, a
/// login is refused until some expire.
pub const MAX_SPENT_TOKENS: usize = 65_536;
/// Envelopes listed from the mailbox per read while pushing mail.
pub const MAIL_BATCH: usize = 32;
/// How often an idle mail pusher looks at the mailbox even without a new deposit here (a
/// deposit is always signalled; this bounds what a missed signal could delay).
pub const MAIL_POLL: Duration = Duration::from_secs(1);

type Conns = Arc<Mutex<HashMap<PublicKey, HashMap<u64, mpsc::Sender<Push>>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    meshward_core::sync::lock(m, "mqtt sealed sessions")
}

/// The sealed-mode side of the bridge.
pub(super) struct Sealed {
    gw: Arc<Gateway>,
    rpc: RpcHandler,
    chain_id: String,
    /// This gateway's node key, which tokens name.
    node: PublicKey,
    /// Spent tokens: (device, nonce) → when the token's window ends (ms).
    spent: Mutex<HashMap<(PublicKey, [u8; 32]), u64>>,
    conns: Conns,
}

impl Sealed {
    pub(super) fn new(
        gw: Arc<Gateway>,
        rpc: RpcHandler,
        chain_id: String,
        node: PublicKey,
    ) -> Self {
        Sealed {
            gw,
            rpc,
            chain_id,
            node,
            spent: Mutex::default(),
            conns: Conns::default(),
        }
    }

    /// `None` if `password` is not a token; otherwise whether it is a valid, fresh, unspent
    /// token of `username` for this gateway (and it is now spent).
    pub(super) fn check_token(&self, username: &str, password: &str) -> Option<bool> {
        if !password.starts_with(TOKEN_PREFIX) {
            return None;
        }
        Some(self.token_ok(username, password, meshward_core::clock::now_ms()))
    }

    fn token_ok(&self, username: &str, password: &str, now: u64) -> bool {
        let (Some(token), Ok(device)) = (
            LoginToken::parse(password),
            PublicKey::from_peer_id(username),
        ) else {
            return false;
        };
        if token.time_ms().abs_diff(now) > TOKEN_WINDOW_MS {
            info!(device = %device, "mqtt login token outside its time window (check the device's clock)");
            return false;
        }
        let signer = {
            let store = self.gw.ledger.read();
            store
                .state()
                .account(&device)
                .filter(|a| a.device.is_some())
                .map(|a| a.sign_key)
        };
        let Some(signer) = signer else { return false };
        if token
            .verify(&signer, &self.chain_id, &device, &self.node)
            .is_err()
        {
            return false;
        }
        let mut spent = lock(&self.spent);
        spent.retain(|_, until| *until >= now);
        if spent.len() >= MAX_SPENT_TOKENS {
            warn!("too many mqtt login tokens in their window; login refused");
            return false;
        }
        match spent.entry((device, token.nonce)) {
            std::collections::hash_map::Entry::Occupied(_) => {
                info!(device = %device, "mqtt login token replayed; refused");
                false
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(token.time_ms().saturating_add(TOKEN_WINDOW_MS));
                true
            }
        }
    }

    /// Every sealed connection's push queue, by device, for the revocation watcher.
    pub(super) fn connections(&self) -> Vec<(PublicKey, Vec<mpsc::Sender<Push>>)> {
        lock(&self.conns)
            .iter()
            .map(|(k, c)| (*k, c.values().cloned().collect()))
            .collect()
    }

    /// Opens the session of a device that logged in with a token.
    pub(super) fn open(
        self: &Arc<Self>,
        login: &Login,
        serial: u64,
    ) -> Result<Accepted, ConnRefusal> {
        let account =
            PublicKey::from_peer_id(&login.username).map_err(|_| ConnRefusal::BadCredentials)?;
        let sign_key = {
            let store = self.gw.ledger.read();
            store
                .state()
                .account(&account)
                .filter(|a| a.device.as_ref().is_some_and(|d| d.is_active()))
                .map(|a| a.sign_key)
        };
        let Some(sign_key) = sign_key else {
            info!(device = %account, "mqtt login of a revoked device refused");
            return Err(ConnRefusal::NotAuthorized);
        };
        let (push_tx, push_rx) = mpsc::channel(SESSION_QUEUE);
        lock(&self.conns)
            .entry(account)
            .or_default()
            .insert(serial, push_tx.clone());
        info!(device = %account, addr = %login.addr, "mqtt sealed-mode session opened");
        Ok(Accepted {
            handle: Arc::new(SealedSession {
                sealed: self.clone(),
                account,
                peer: meshward_net::peer_id_of(&sign_key),
                serial,
                pushes: push_tx,
                pusher: Mutex::new(None),
            }),
            pushes: push_rx,
            session_present: false,
        })
    }
}

/// One sealed-mode connection.
struct SealedSession {
    sealed: Arc<Sealed>,
    account: PublicKey,
    /// The device's peer id (its signing key when it logged in): requests are handled as if
    /// from it.
    peer: meshward_net::PeerId,
    serial: u64,
    pushes: mpsc::Sender<Push>,
    /// Stops the mail pusher, while the inbox is subscribed.
    pusher: Mutex<Option<oneshot::Sender<()>>>,
}

/// Whether the envelope's sender is `account` (by its current signing key).
fn sent_by(gw: &Gateway, env: &Envelope, account: &PublicKey) -> bool {
    let store = gw.ledger.read();
    account_of(store.state(), &env.sender).is_some_and(|a| a.id == *account)
}

fn inbox(payload: Vec<u8>) -> Push {
    Push::Message {
        feed: Feed::Inbox,
        payload: Bytes::from(payload),
        user: Vec::new(),
    }
}

impl SealedSession {
    async fn answer(
        sealed: &Sealed,
        account: &PublicKey,
        peer: meshward_net::PeerId,
        req: Request,
    ) -> Response {
        match req {
            Request::Deposit(env) if !sent_by(&sealed.gw, &env, account) => Response::error(
                "not_sender",
                "a sealed-mode device deposits only envelopes it sent",
            ),
            Request::Fetch { .. } => Response::error(
                "unsupported",
                "in sealed mode the mailbox is pushed on meshward/v1/inbox",
            ),
            req @ (Request::Deposit(_)
            | Request::AckMailbox { .. }
            | Request::SubmitTx(_)
            | Request::Lookup(_)
            | Request::Group(_)
            | Request::Policy
            | Request::TxStatus(_)
            | Request::Info
            | Request::NextSeq(_)) => sealed.rpc.handle_request(peer, req).await,
            Request::Deliver(_)
            | Request::DeliverBatch(_)
            | Request::Replicate(_)
            | Request::Custody(_)
            | Request::Release(_) => Response::error(
                "unsupported",
                "sealed mode carries a device's requests to its gateway only",
            ),
        }
    }
}

impl SessionHandle for SealedSession {
    fn publish(
        &self,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), PubRefusal>> {
        let sealed = self.sealed.clone();
        let (account, peer, pushes) = (self.account, self.peer, self.pushes.clone());
        Box::pin(async move {
            if target != Target::Sealed {
                // The gateway holds no key to seal for this device.
                return Err(PubRefusal::TopicInvalid);
            }
            let (id, req) = frames::parse_request(&payload).map_err(|e| {
                debug!(device = %account, error = %e, "sealed frame refused");
                PubRefusal::PayloadInvalid
            })?;
            // Answered, even if refused: the PUBACK says the frame was taken, the reply what
            // came of it. (Many clients drop the connection on a refusing PUBACK, which would
            // lose the reply and end a session over one refused request.)
            let resp = SealedSession::answer(&sealed, &account, peer, req).await;
            crate::rpc::log_refusal(&peer, &resp);
            let mut frame = frames::reply_frame(id, &resp);
            if frame.len() > frames::MAX_FRAME {
                frame = frames::reply_frame(
                    id,
                    &Response::error("too_large", "the answer does not fit in one frame"),
                );
            }
            // Dropped by the listener if the inbox is not subscribed.
            let _ = pushes.send(inbox(frame)).await;
            Ok(())
        })
    }

    fn set_feeds(&self, inbox: bool, _receipts: bool) {
        let mut pusher = lock(&self.pusher);
        match (inbox, pusher.is_some()) {
            (true, false) => {
                let (stop_tx, stop_rx) = oneshot::channel();
                tokio::spawn(push_mail(
                    self.sealed.gw.mailboxes.clone(),
                    self.account,
                    self.pushes.clone(),
                    stop_rx,
                ));
                *pusher = Some(stop_tx);
            }
            (false, true) => *pusher = None,
            _ => {}
        }
    }

    fn closed(&self, will: Option<Will>) {
        *lock(&self.pusher) = None;
        {
            let mut conns = lock(&self.sealed.conns);
            if let Some(c) = conns.get_mut(&self.account) {
                c.remove(&self.serial);
                if c.is_empty() {
                    conns.remove(&self.account);
                }
            }
        }
        if let Some(w) = will.filter(|w| w.topic == frames::TOPIC) {
            let (sealed, account, peer) = (self.sealed.clone(), self.account, self.peer);
            tokio::spawn(async move {
                match frames::parse_request(&w.payload) {
                    Ok((_, req)) => {
                        let resp = SealedSession::answer(&sealed, &account, peer, req).await;
                        crate::rpc::log_refusal(&peer, &resp);
                    }
                    Err(e) => debug!(device = %account, error = %e, "sealed will refused"),
                }
            });
        }
        info!(device = %self.account, "mqtt sealed-mode session closed");
    }
}

/// Pushes `account`'s mailbox on this gateway to its inbox, in mailbox order, from the start
/// (what the device has not acknowledged), then each new deposit; stops when `stop` fires or
/// is dropped. The session's queue bounds what waits: a slow device backs this off.
async fn push_mail(
    mailboxes: Mailboxes,
    account: PublicKey,
    pushes: mpsc::Sender<Push>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut stored = mailboxes.watch_stored();
    let mut after = 0u64;
    loop {
        stored.borrow_and_update();
        let list = match mailboxes.list(&account, after, MAIL_BATCH) {
            Ok(l) => l,
            Err(e) => {
                warn!(device = %account, error = %e, "mailbox unreadable; mail not pushed");
                Vec::new()
            }
        };
        if list.is_empty() {
            tokio::select! {
                _ = stored.changed() => {}
                _ = tokio::time::sleep(MAIL_POLL) => {}
                _ = &mut stop => return,
            }
            continue;
        }
        for (n, raw) in list {
            tokio::select! {
                sent = pushes.send(inbox(frames::mail_frame(n, &raw))) => {
                    if sent.is_err() {
                        return;
                    }
                }
                _ = &mut stop => return,
            }
            after = n;
        }
    }
}
