//! A device: its identity, mesh client and state directory, with the operations a fleet device
//! performs: send (sealed, anchored, delivered directly or through mailboxes), receive (direct
//! and from mailboxes, authenticated, replay-checked, acknowledged), and group rekeying.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshward_core::envelope::{seal_oneshot, Envelope, EnvelopeError, Receiver, SendSession};
use meshward_core::hash::Hash;
use meshward_core::ids::PublicKey;
use meshward_core::rpc::{refusal, DeviceInfo, Request, Response, TxState};
use meshward_core::state::Policy;
use meshward_core::tx::{batch_root, GroupName, Recipient, Tx, TxBody};
use tracing::{debug, info, warn};

use crate::anchor::{ack_tx, anchor_tx, MAX_SDK_BATCH};
use crate::client::{Client, ClientConfig, ClientError, DeviceIdentity, Incoming};
use crate::dirstate::StateDir;
use crate::group::{seal_for_members, GroupSecret};

/// Gateways a mailbox envelope must be held by before a send counts as delivered.
pub const MIN_MAILBOX_REPLICAS: u32 = 2;
/// How long a device-record lookup may take before the cached record is used instead: a
/// receiver must not keep a direct sender waiting while its gateways are unreachable.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);
/// Receipts waiting to be anchored by the agent.
const ACK_QUEUE: usize = 1024;
/// How long the agent collects receipts before signing them: what arrives meanwhile from one
/// sender is acknowledged by one transaction over its batch root.
const ACK_LINGER: Duration = Duration::from_millis(100);
/// How long a looked-up sender record is trusted when checking incoming envelopes.
const SENDER_CACHE_TTL: Duration = Duration::from_secs(2);

/// The wall-clock time in milliseconds since the Unix epoch (0 if the clock is before it), as
/// envelopes and anchors carry it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Whether a gateway refused a transaction outright, so that it is in no gateway's mempool:
/// refused by the ledger's rules or for lack of room. Not: a duplicate, a stale, conflicting or
/// gapped number (another transaction holds that number or the one before), or no answer.
fn refused_outright(e: &ClientError) -> bool {
    match e {
        ClientError::Refused { code, .. } => !matches!(
            code.as_str(),
            "duplicate" | "stale_sequence" | "conflicting_sequence" | "sequence_gap"
        ),
        _ => false,
    }
}

/// How an envelope reached its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Straight to the recipient over the mesh, which answered that it opened it.
    Direct,
    /// Through gateways' mailboxes, where the recipient fetches it.
    Mailbox,
}

impl Delivery {
    /// Its name for output and scripts: `direct` or `mailbox`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Delivery::Direct => "direct",
            Delivery::Mailbox => "mailbox",
        }
    }
}

/// What a send did.
#[derive(Debug, Clone)]
pub struct SendReport {
    /// What the anchor commits to: the envelope's commitment, or the batch root of several.
    pub commitment: Hash,
    /// How the envelopes reached the recipient.
    pub delivery: Delivery,
    /// The anchor transaction's id.
    pub anchor_tx: Hash,
    /// The height the anchor was finalised at, when the caller waited for it.
    pub height: Option<u64>,
    /// Mailbox copies, for mailbox delivery.
    pub replicas: u32,
    /// The envelopes sent, in the order the anchor commits to them. Kept, they prove each
    /// message on its own: [`meshward_core::light::EnvelopeInclusion`] with the anchor's proof.
    pub envelopes: Vec<Envelope>,
}

/// A message this device received and opened.
#[derive(Debug, Clone)]
pub struct Received {
    /// The sender's ledger id.
    pub from: PublicKey,
    /// The envelope's commitment, which the device acknowledges on the ledger.
    pub commitment: Hash,
    /// The opened plaintext.
    pub payload: Vec<u8>,
    /// How it arrived.
    pub delivery: Delivery,
}

/// A device on the mesh.
pub struct Device {
    client: Client,
    state: StateDir,
    receiver: Mutex<Receiver>,
    senders: Mutex<HashMap<PublicKey, (Instant, DeviceInfo)>>,
    /// Held while choosing a sequence number and submitting, so this device's own
    /// transactions (anchors, acks, rekeys) never race for one number.
    tx_lock: tokio::sync::Mutex<()>,
}

impl Device {
    /// Starts the device's mesh client (see [`Client::start`]) with its state directory. Without
    /// a configured fallback chain id, the one remembered in `state` is used, and the chain id
    /// the client settles on is remembered for next time.
    pub async fn start(
        identity: DeviceIdentity,
        config: ClientConfig,
        state: StateDir,
    ) -> Result<Device, ClientError> {
        let receiver = Receiver::new(&identity.keys);
        let mut config = config;
        if config.fallback_chain_id.is_none() {
            config.fallback_chain_id = state.load()?.chain_id;
        }
        let client = Client::start(identity, config).await?;
        let chain = client.chain_id().to_string();
        state.update(|s| s.chain_id = Some(chain))?;
        Ok(Device {
            client,
            state,
            receiver: Mutex::new(receiver),
            senders: Mutex::new(HashMap::new()),
            tx_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The device's mesh client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The device's state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    fn account(&self) -> PublicKey {
        self.client.identity().account
    }

    /// A device record: from a gateway (and then cached in the state directory), or from the
    /// cache when no gateway answers.
    pub async fn resolve(&self, id: &PublicKey) -> Result<DeviceInfo, ClientError> {
        let answer = tokio::time::timeout(RESOLVE_DEADLINE, self.client.lookup(id))
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::NoGateway {
                    tried: self.client.gateways().len(),
                    last: "no answer within the lookup deadline".into(),
                })
            });
        match answer {
            Ok(Some(info)) => {
                if let Err(e) = self.state.remember(&info) {
                    warn!(error = %e, "device record not cached");
                }
                Ok(info)
            }
            Ok(None) => Err(ClientError::UnknownDevice(id.peer_id())),
            Err(e @ ClientError::NoGateway { .. }) => match self.state.known(id)? {
                Some(info) => {
                    debug!(device = %id.peer_id(), "no gateway reachable; using the cached record");
                    Ok(info)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Signs `build(seq)` with the device's next transaction sequence number. The state
    /// directory's reservation (see [`crate::dirstate`]) is held from choosing the number
    /// (past the committed one, looked up on the ledger first) through signing to saving, so no two
    /// processes or tasks of this device ever sign two transactions with one number. Returns
    /// the transaction and the earlier ones still outstanding, to resubmit first.
    async fn sign_next(
        &self,
        build: impl FnOnce(u64) -> Option<Tx>,
    ) -> Result<(Tx, Vec<Tx>), ClientError> {
        // The committed number is looked up before the reservation is taken: the lock must
        // never be held across an await, where another task of this process (an agent saving
        // its replay state) would block its runtime thread on it. A number committed meanwhile
        // only makes `committed` low, and the reservation still goes past every number this
        // directory handed out.
        let me = self.account();
        let committed = match self.client.lookup(&me).await? {
            Some(info) if !info.active => return Err(ClientError::SelfRevoked),
            Some(info) => info.seq,
            None => return Err(ClientError::UnknownDevice(me.peer_id())),
        };
        // Held only for reading, signing and saving: no await until `save` ends it.
        let mut held = self.state.reserve_tx()?;
        let seq = held.next_seq(committed);
        let tx =
            build(seq).ok_or_else(|| ClientError::State("cannot build the transaction".into()))?;
        let earlier = held.outstanding();
        held.save(&tx)?;
        Ok((tx, earlier))
    }

    /// Submits `tx` after resubmitting `earlier` (the same bytes: a duplicate or a stale number
    /// among them is expected and ignored). If a gateway refuses `tx` outright, its number is
    /// given back ([`StateDir::release_tx`]).
    async fn submit_signed(&self, tx: &Tx, earlier: &[Tx]) -> Result<Hash, ClientError> {
        for e in earlier.iter().filter(|e| e.seq < tx.seq) {
            if let Err(err) = self.client.submit(e).await {
                debug!(seq = e.seq, error = %err, "outstanding transaction not resubmitted");
            }
        }
        match self.client.submit(tx).await {
            Ok(h) => Ok(h),
            Err(e) => {
                if refused_outright(&e) {
                    self.state.release_tx(tx.seq, &tx.id())?;
                }
                Err(e)
            }
        }
    }

    /// Signs a transaction body with the next sequence number, records it and submits it.
    pub async fn submit_body(&self, body: TxBody) -> Result<Hash, ClientError> {
        let _serial = self.tx_lock.lock().await;
        let id = self.client.identity();
        let (tx, earlier) = self
            .sign_next(|seq| {
                Some(Tx::sign(
                    self.client.chain_id(),
                    id.account,
                    &id.keys.sign,
                    seq,
                    body,
                ))
            })
            .await?;
        self.submit_signed(&tx, &earlier).await
    }

    fn check_policy(
        policy: &[(GroupName, GroupName)],
        from: &DeviceInfo,
        to_groups: &[GroupName],
        to: String,
    ) -> Result<(), ClientError> {
        let p = Policy {
            allow: policy.to_vec(),
            changed_ms: 0,
        };
        if p.allows(&from.groups, to_groups) {
            Ok(())
        } else {
            Err(ClientError::PolicyForbids {
                from: from.groups.iter().map(|g| g.as_str().to_string()).collect(),
                to,
            })
        }
    }

    /// Seals `payloads` to device `to`, anchors them (one anchor, a batch root when several),
    /// and delivers them: directly if the recipient is reachable, otherwise into the mailboxes
    /// of at least [`MIN_MAILBOX_REPLICAS`] gateways. With `session`, the envelopes use one HPKE
    /// session. With `wait`, waits until the anchor is final.
    pub async fn send(
        &self,
        to: &PublicKey,
        payloads: &[&[u8]],
        session: bool,
        wait: Option<Duration>,
    ) -> Result<SendReport, ClientError> {
        if payloads.is_empty() || payloads.len() > MAX_SDK_BATCH {
            return Err(ClientError::State(format!(
                "a send carries 1 to {MAX_SDK_BATCH} payloads"
            )));
        }
        let recipient = self.resolve(to).await?;
        if !recipient.active {
            return Err(ClientError::RecipientRevoked(to.peer_id()));
        }
        let me = self.account();
        // The policy check needs a gateway; offline, the ledger checks the anchor later.
        if let (Ok(mine), Ok(policy)) = (self.resolve(&me).await, self.client.policy().await) {
            if !mine.active {
                return Err(ClientError::SelfRevoked);
            }
            Self::check_policy(&policy, &mine, &recipient.groups, to.peer_id())?;
        }
        let keys = &self.client.identity().keys;
        let first = self.state.reserve_envelope_seqs(
            &recipient.sign_key,
            payloads.len() as u64,
            now_us(),
        )?;
        let ts = now_ms();
        let mut envs = Vec::with_capacity(payloads.len());
        let mut rng = rand::rngs::OsRng;
        if session {
            let mut s = SendSession::new(&mut rng, keys, recipient.sign_key, &recipient.enc_key)?;
            for (i, p) in payloads.iter().enumerate() {
                envs.push(s.seal(first + i as u64, ts, p)?);
            }
        } else {
            for (i, p) in payloads.iter().enumerate() {
                envs.push(seal_oneshot(
                    &mut rng,
                    keys,
                    recipient.sign_key,
                    &recipient.enc_key,
                    first + i as u64,
                    ts,
                    p,
                )?);
            }
        }
        self.deliver_and_anchor(Recipient::Device(*to), &recipient, envs, wait)
            .await
    }

    /// Builds the anchor for `envs` with the next sequence number (once) and submits it.
    /// `Ok(None)`: no gateway answered; the caller retries with the same transaction, never
    /// a new one, since two different anchors with one sequence number are equivocation.
    async fn try_anchor(
        &self,
        built: &mut Option<(Tx, Vec<Tx>)>,
        anchor_to: &Recipient,
        envs: &[&Envelope],
    ) -> Result<Option<Hash>, ClientError> {
        let _serial = self.tx_lock.lock().await;
        if built.is_none() {
            let id = self.client.identity();
            let signed = self
                .sign_next(|seq| {
                    anchor_tx(
                        self.client.chain_id(),
                        id.account,
                        &id.keys.sign,
                        seq,
                        anchor_to.clone(),
                        envs,
                        now_ms(),
                    )
                })
                .await;
            *built = match signed {
                Ok(signed) => Some(signed),
                Err(ClientError::NoGateway { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
        }
        let (tx, earlier) = built.as_mut().expect("built above");
        // Earlier transactions are resubmitted once, with the first attempt.
        let earlier = std::mem::take(earlier);
        match self.submit_signed(tx, &earlier).await {
            Ok(h) => Ok(Some(h)),
            Err(ClientError::NoGateway { .. }) => Ok(None),
            // A resubmission of a transaction that meanwhile committed.
            Err(ClientError::Refused { code, .. }) if code == "stale_sequence" => {
                match self.client.tx_status(&tx.id()).await? {
                    TxState::Committed { .. } => Ok(Some(tx.id())),
                    _ => Err(ClientError::Refused {
                        by: "gateway".into(),
                        code,
                        message: "the anchor's sequence number was used by another transaction"
                            .into(),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn deliver_and_anchor(
        &self,
        anchor_to: Recipient,
        recipient: &DeviceInfo,
        envs: Vec<Envelope>,
        wait: Option<Duration>,
    ) -> Result<SendReport, ClientError> {
        let refs: Vec<&Envelope> = envs.iter().collect();
        // Anchor first: the gateway's admission check (revoked sender or recipient, policy)
        // refuses a send before anything is delivered or stored. With no gateway reachable the
        // envelopes still go directly, and the anchor is submitted once one answers.
        let mut built: Option<(Tx, Vec<Tx>)> = None;
        let mut anchor = self.try_anchor(&mut built, &anchor_to, &refs).await?;
        let commitment = crate::anchor::commitment_of(&refs).expect("1..=64 envelopes");

        // Deliver: directly if we can (in batches), else what the recipient did not open
        // into mailboxes.
        let mut delivery = Delivery::Direct;
        let mut replicas = 0;
        if let Err((opened, e)) = self
            .client
            .deliver_direct_batch(&recipient.sign_key, &recipient.addrs, &envs)
            .await
        {
            if let ClientError::Refused { code, .. } = &e {
                // The recipient itself said no (tampered, replayed, revoked sender): final.
                if code != "busy" {
                    return Err(e);
                }
            }
            debug!(error = %e, opened, "direct delivery failed; using mailboxes");
            delivery = Delivery::Mailbox;
            for env in &envs[opened..] {
                replicas = self.client.deposit(env, MIN_MAILBOX_REPLICAS).await?;
            }
        }

        // The anchor, if no gateway took it before.
        let deadline = wait.map(|w| Instant::now() + w);
        let until = deadline.unwrap_or_else(Instant::now);
        while anchor.is_none() {
            if Instant::now() >= until {
                return Err(ClientError::NoGateway {
                    tried: self.client.gateways().len(),
                    last: "the message was delivered, but no gateway took its anchor in time"
                        .into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            anchor = self.try_anchor(&mut built, &anchor_to, &refs).await?;
        }
        let anchor_id = anchor.expect("the loop ends once anchored");
        let height = match deadline {
            Some(d) => Some(self.client.wait_final(&anchor_id, d).await?),
            None => None,
        };
        Ok(SendReport {
            commitment,
            delivery,
            anchor_tx: anchor_id,
            height,
            replicas,
            envelopes: envs,
        })
    }

    /// The sender's record for an incoming envelope, cached for a moment.
    async fn sender_info(&self, key: &PublicKey) -> Result<DeviceInfo, ClientError> {
        if let Some((at, info)) =
            meshward_core::sync::lock(&self.senders, "sender records").get(key)
        {
            if at.elapsed() < SENDER_CACHE_TTL {
                return Ok(info.clone());
            }
        }
        let info = self.resolve(key).await?;
        let mut s = meshward_core::sync::lock(&self.senders, "sender records");
        if s.len() > 4096 {
            s.clear();
        }
        s.insert(*key, (Instant::now(), info.clone()));
        Ok(info)
    }

    /// The record and current verifying key of `sender`, which must be active. The receiver
    /// refuses an envelope whose sender field is not that key (a key rotated away).
    async fn checked_sender(
        &self,
        sender: &PublicKey,
    ) -> Result<(DeviceInfo, meshward_core::ids::VerifyingKey), OpenError> {
        let info = self.sender_info(sender).await.map_err(OpenError::Sender)?;
        if !info.active {
            return Err(OpenError::SenderRevoked);
        }
        let vk = info
            .sign_key
            .verifying_key()
            .map_err(|_| OpenError::Envelope(EnvelopeError::BadSignature))?;
        Ok((info, vk))
    }

    /// Authenticates and opens an envelope addressed to this device.
    pub async fn open(&self, env: &Envelope) -> Result<(DeviceInfo, Vec<u8>, Hash), OpenError> {
        let (sender, vk) = self.checked_sender(&env.sender).await?;
        let opened = meshward_core::sync::lock(&self.receiver, "receiver")
            .open(env, &vk)
            .map_err(OpenError::Envelope)?;
        Ok((sender, opened.payload, opened.commitment))
    }

    /// Authenticates and opens envelopes delivered together, all or nothing
    /// ([`Receiver::open_batch`]): on a refusal nothing is opened, and the error comes with the
    /// position of the envelope refused.
    pub async fn open_batch(&self, envs: &[Envelope]) -> Result<Vec<Received>, (usize, OpenError)> {
        let Some(first) = envs.first() else {
            return Ok(Vec::new());
        };
        let (sender, vk) = self
            .checked_sender(&first.sender)
            .await
            .map_err(|e| (0, e))?;
        let opened = meshward_core::sync::lock(&self.receiver, "receiver")
            .open_batch(envs, &vk)
            .map_err(|(i, e)| (i, OpenError::Envelope(e)))?;
        Ok(opened
            .into_iter()
            .map(|o| Received {
                from: sender.id,
                commitment: o.commitment,
                payload: o.payload,
                delivery: Delivery::Direct,
            })
            .collect())
    }

    /// Acknowledges on the ledger that this device opened `commitments` (1 to
    /// [`MAX_SDK_BATCH`] envelopes from `sender`): one `Ack` over the envelope's commitment, or
    /// over the batch root of several (FORMATS.md, "Transactions").
    async fn ack(&self, sender: PublicKey, commitments: &[Hash]) {
        let commitment = match commitments {
            [] => return,
            [one] => *one,
            many => batch_root(many),
        };
        let result = async {
            let _serial = self.tx_lock.lock().await;
            let id = self.client.identity();
            let (tx, earlier) = self
                .sign_next(|seq| {
                    Some(ack_tx(
                        self.client.chain_id(),
                        id.account,
                        &id.keys.sign,
                        seq,
                        commitment,
                        sender,
                    ))
                })
                .await?;
            self.submit_signed(&tx, &earlier).await
        }
        .await;
        match result {
            Ok(_) => debug!(count = commitments.len(), commitment = %commitment, "acknowledged"),
            Err(e) => {
                debug!(error = %e, count = commitments.len(), commitment = %commitment, "ack not submitted")
            }
        }
    }

    /// Acknowledges what waits in `queue` after `first`: every acknowledgement that arrives
    /// within [`ACK_LINGER`] is grouped by sender, and each group is signed as one `Ack` per
    /// [`MAX_SDK_BATCH`] commitments, in the order they were opened.
    async fn ack_queued(
        &self,
        first: (Hash, PublicKey),
        queue: &mut tokio::sync::mpsc::Receiver<(Hash, PublicKey)>,
    ) {
        tokio::time::sleep(ACK_LINGER).await;
        let mut by_sender: Vec<(PublicKey, Vec<Hash>)> = Vec::new();
        let mut add =
            |(c, from): (Hash, PublicKey)| match by_sender.iter_mut().find(|(s, _)| *s == from) {
                Some((_, cs)) => cs.push(c),
                None => by_sender.push((from, vec![c])),
            };
        add(first);
        for _ in 0..ACK_QUEUE {
            match queue.try_recv() {
                Ok(a) => add(a),
                Err(_) => break,
            }
        }
        for (sender, cs) in by_sender {
            for chunk in cs.chunks(MAX_SDK_BATCH) {
                self.ack(sender, chunk).await;
            }
        }
    }

    /// Answers one direct delivery: a `Deliver`, or a `DeliverBatch`, which is opened all or
    /// nothing (one sender, strictly increasing seqs, every envelope good).
    async fn on_incoming(&self, inc: Incoming) -> Vec<Received> {
        let (envs, batch) = match inc.request {
            Request::Deliver(env) => (vec![env], false),
            Request::DeliverBatch(envs) => (envs, true),
            _ => {
                self.client
                    .respond(
                        inc.id,
                        &Response::error("unsupported", "a device only accepts Deliver"),
                    )
                    .await;
                return Vec::new();
            }
        };
        let (out, refused) = match self.open_batch(&envs).await {
            Ok(out) => (out, None),
            Err((at, e)) => {
                info!(peer = %inc.from, error = %e, at, count = envs.len(), "direct envelopes refused");
                (Vec::new(), Some(refusal(e.code(), &e.to_string())))
            }
        };
        let answer = match (batch, refused) {
            (true, refused) => Response::DeliveredBatch {
                delivered: out.len() as u32,
                refused,
            },
            (false, None) => Response::Delivered,
            (false, Some((code, message))) => Response::Error { code, message },
        };
        self.client.respond(inc.id, &answer).await;
        out
    }

    /// Fetches and opens what waits in every reachable gateway's mailbox, then acknowledges it
    /// there. Copies of one envelope held by several gateways are delivered once: the replay
    /// check drops the later copies.
    pub async fn poll_mailboxes(&self, after: &mut HashMap<String, u64>) -> Vec<Received> {
        let mut out = Vec::new();
        for gw in self.client.gateways().to_vec() {
            let key = gw.to_string();
            let from = *after.get(&key).unwrap_or(&0);
            let resp = self
                .client
                .request_peer(
                    gw,
                    &Request::Fetch {
                        after: from,
                        max: 64,
                    },
                )
                .await;
            let list = match resp {
                Ok(Response::Envelopes(list)) => list,
                Ok(other) => {
                    debug!(gateway = %gw, answer = ?other, "mailbox fetch refused");
                    continue;
                }
                Err(_) => continue,
            };
            let Some(last) = list.last().map(|(n, _)| *n) else {
                continue;
            };
            for (_, env) in list {
                match self.open(&env).await {
                    Ok((sender, payload, commitment)) => out.push(Received {
                        from: sender.id,
                        commitment,
                        payload,
                        delivery: Delivery::Mailbox,
                    }),
                    Err(OpenError::Envelope(EnvelopeError::Replay { .. })) => {}
                    Err(e) => info!(gateway = %gw, error = %e, "mailbox envelope dropped"),
                }
            }
            after.insert(key, last);
            if let Err(e) = self
                .client
                .request_peer(gw, &Request::AckMailbox { up_to: last })
                .await
            {
                debug!(gateway = %gw, error = %e, "mailbox ack failed; will refetch");
            }
        }
        out
    }

    /// Rekeys each group this device belongs to that the ledger marks as needing it, if this
    /// device is the group's lowest-id active member (so exactly one member does it).
    pub async fn rekey_groups(&self) -> Vec<(GroupName, u64)> {
        let me = self.account();
        let Ok(Some(mine)) = self.client.lookup(&me).await else {
            return Vec::new();
        };
        let mut done = Vec::new();
        for g in &mine.groups {
            let Ok(Some(info)) = self.client.group(g).await else {
                continue;
            };
            if !info.needs_rekey || info.members.first().map(|m| m.0) != Some(me) {
                continue;
            }
            let epoch = info.epoch + 1;
            let secret = GroupSecret::generate(&mut rand::rngs::OsRng);
            let Some(sealed) =
                seal_for_members(&mut rand::rngs::OsRng, g, epoch, &secret, &info.members)
            else {
                warn!(group = %g, "a member's encryption key is unusable; group not rekeyed");
                continue;
            };
            let body = TxBody::GroupKey {
                group: g.clone(),
                epoch,
                sealed,
            };
            match self.submit_body(body).await {
                Ok(_) => {
                    let hex = meshward_core::hex::encode(secret.as_bytes());
                    let _ = self.state.update(|s| {
                        s.groups.insert(g.as_str().to_string(), (epoch, hex));
                    });
                    info!(group = %g, epoch, "group rekeyed");
                    done.push((g.clone(), epoch));
                }
                Err(e) => debug!(group = %g, error = %e, "rekey not submitted"),
            }
        }
        done
    }

    /// Runs the device agent until `stop` completes: answers direct deliveries, polls the
    /// mailboxes every `poll`, acknowledges what it receives on the ledger, and rekeys groups.
    /// Each message received goes to `out`. Direct deliveries are answered on their own path,
    /// so a slow or dead gateway never delays them.
    pub async fn run_agent(
        &self,
        poll: Duration,
        out: tokio::sync::mpsc::Sender<Received>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        let mut requests = self
            .client
            .take_requests()
            .ok_or_else(|| ClientError::State("the agent is already running".into()))?;
        // Acknowledgements wait here for the background path; beyond the bound they are
        // skipped (the message was delivered; only its ledger receipt is missing).
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<(Hash, PublicKey)>(ACK_QUEUE);
        let direct = async {
            while let Some(inc) = requests.recv().await {
                for r in self.on_incoming(inc).await {
                    if ack_tx.try_send((r.commitment, r.from)).is_err() {
                        debug!("ack queue full; receipt not anchored");
                    }
                    if out.send(r).await.is_err() {
                        return;
                    }
                }
            }
        };
        let background = async {
            let mut after: HashMap<String, u64> = HashMap::new();
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rekey_tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for r in self.poll_mailboxes(&mut after).await {
                            if ack_tx.try_send((r.commitment, r.from)).is_err() {
                                debug!("ack queue full; receipt not anchored");
                            }
                            if out.send(r).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = rekey_tick.tick() => { self.rekey_groups().await; }
                    Some(first) = ack_rx.recv() => self.ack_queued(first, &mut ack_rx).await,
                }
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = direct => {}
            _ = background => {}
        }
        Ok(())
    }

    /// Stops the device's mesh node.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

/// Why an incoming envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The sender's device record could not be had: not enrolled, or no gateway answered and
    /// none is cached.
    #[error("sender unknown: {0}")]
    Sender(ClientError),
    /// The ledger marks the sender as revoked.
    #[error("sender is revoked")]
    SenderRevoked,
    /// The envelope does not open: not signed by the sender's current key, not for this
    /// device, replayed, or it does not decrypt.
    #[error("{0}")]
    Envelope(EnvelopeError),
}

impl OpenError {
    /// A stable machine-readable code, sent back to a direct sender in its `Error` answer.
    pub fn code(&self) -> &'static str {
        match self {
            OpenError::Sender(_) => "unknown_sender",
            OpenError::SenderRevoked => "sender_revoked",
            OpenError::Envelope(EnvelopeError::Replay { .. }) => "replay",
            OpenError::Envelope(EnvelopeError::BadSignature) => "bad_signature",
            OpenError::Envelope(EnvelopeError::Decrypt) => "decrypt_failed",
            OpenError::Envelope(EnvelopeError::WrongRecipient { .. }) => "wrong_recipient",
            OpenError::Envelope(EnvelopeError::Reordered { .. }) => "reordered",
            OpenError::Envelope(EnvelopeError::MixedBatch) => "mixed_batch",
            OpenError::Envelope(EnvelopeError::UnknownSession) => "unknown_session",
            OpenError::Envelope(_) => "bad_envelope",
        }
    }
}
