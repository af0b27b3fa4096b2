//! The gateway's MQTT front door: custody of legacy devices' keys and the [`Backend`] that turns
//! an MQTT session into an SDK device run by its custodian.
//!
//! - **Custody** ([`Custody`]): admin-signed grants (`meshward_sdk::custody`), checked against
//!   the ledger's admin set and kept in `<data dir>/custody/<device>.json` (0600). A grant holds
//!   the device's keys sealed to this gateway's node key and the argon2id hash of its password;
//!   nothing in it is readable without the node key.
//! - **Sessions** ([`Bridge`]): a verified login opens the sealed keys in memory and starts the
//!   device on the mesh (`meshward_sdk::device::Device`, a libp2p node keyed by the device's
//!   key, talking to this gateway and its bootstrap peers). A PUBLISH is sealed, signed, anchored
//!   and delivered exactly as an SDK device would; what the device's agent receives (directly or
//!   from the replicated mailboxes) goes to `meshward/v1/inbox`; receipts to
//!   `meshward/v1/receipts` once the anchor is final. Plaintext exists only here, in memory.
//! - **Live revocation**: a watcher reads the ledger at every new committed height and closes
//!   the session of each device no longer active (MQTT 5 reason 0x87), and logins of revoked
//!   devices are refused.
//! - **One custodian at a time**: before it starts a device, a custodian asks the device's other
//!   custodians to release it (`Request::Release`: they close its sessions with 0x8E and stop
//!   its node), so two custodians never sign for one device at once.
//! - **Sealed mode** ([`sealed`]): devices that keep their own keys log in with a signed token
//!   and send mesh requests as frames; this gateway routes what they sealed without opening it.
//!
//! Owner: the node's `run` starts the listener with a [`Bridge`]; [`Custody`] is shared with the
//! API (`POST /v1/mqtt/devices`) and the mesh handler (`Request::Custody`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::state::StateView;
use meshward_core::tx::GroupName;
use meshward_mqtt::codec::{ConnRefusal, Kick, PubRefusal, Will};
use meshward_mqtt::topic::{self, Feed, Target};
use meshward_mqtt::{Accepted, Backend, BoxFuture, Login, Push, SessionHandle};
use meshward_sdk::client::{ClientConfig, ClientError, DeviceIdentity};
use meshward_sdk::custody::{Grant, GrantError};
use meshward_sdk::device::Device;
use meshward_sdk::dirstate::StateDir;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::Gateway;

pub mod sealed;

/// Devices in custody on one gateway.
pub const MAX_CUSTODY: usize = 10_000;
/// Messages and receipts waiting to be pushed to one session.
pub const SESSION_QUEUE: usize = 256;
/// Receipts being waited for at once per session (beyond: no receipt for the message).
pub const MAX_RECEIPT_WAITS: usize = 256;
/// How long a receipt is waited for.
pub const RECEIPT_WAIT: Duration = Duration::from_secs(60);
/// How long a custodian starting a device waits for each other custodian to release it.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the revocation watcher looks for a new committed height.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(20);

/// The custody grants this gateway holds.
pub struct Custody {
    dir: PathBuf,
    node: Keypair,
    grants: Mutex<HashMap<PublicKey, Grant>>,
}

impl std::fmt::Debug for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custody").field("dir", &self.dir).finish()
    }
}

/// Writes `bytes` to `path` through a fresh 0600 file (the key files' writer, which syncs it)
/// renamed into place, so a grant is replaced whole or not at all.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    meshward_sdk::keyfile::write_secret_file(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

impl Custody {
    /// Opens (creating) `<data dir>/custody` and loads every grant in it. A file that does not
    /// parse is skipped with a warning, never deleted.
    pub fn open(data_dir: &Path, node: Keypair) -> std::io::Result<Custody> {
        let dir = data_dir.join("custody");
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut grants = HashMap::new();
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let parsed = std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Grant>(&t).map_err(|e| e.to_string()))
                .and_then(|g| {
                    PublicKey::from_peer_id(&g.device)
                        .map(|k| (k, g))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok((k, g)) => {
                    grants.insert(k, g);
                }
                Err(e) => warn!(file = %p.display(), error = %e, "custody file skipped"),
            }
        }
        Ok(Custody {
            dir,
            node,
            grants: Mutex::new(grants),
        })
    }

    /// This gateway's node id.
    pub fn node_id(&self) -> PublicKey {
        self.node.id()
    }

    /// The argon2id hash of `device`'s MQTT password, if this gateway holds its grant.
    pub fn password_hash(&self, device: &PublicKey) -> Option<String> {
        meshward_core::sync::lock(&self.grants, "custody grants")
            .get(device)
            .map(|g| g.password_hash.clone())
    }

    /// Whether `node` is a custodian in the grant this gateway holds for `device`.
    pub fn is_custodian(&self, device: &PublicKey, node: &PublicKey) -> bool {
        let node = node.peer_id();
        meshward_core::sync::lock(&self.grants, "custody grants")
            .get(device)
            .is_some_and(|g| g.custodians.contains(&node))
    }

    /// The grant for `device`, if this gateway holds one.
    pub fn grant(&self, device: &PublicKey) -> Option<Grant> {
        meshward_core::sync::lock(&self.grants, "custody grants")
            .get(device)
            .cloned()
    }

    /// Checks a grant against the ledger and, if this gateway is one of its custodians, keeps
    /// it. `Ok(true)`: kept; `Ok(false)`: valid, but this gateway is not a custodian.
    pub fn register(&self, gw: &Gateway, grant: &Grant) -> Result<bool, GrantError> {
        let (device, custodians) = {
            let store = gw.ledger.read();
            let st = store.state();
            let (device, custodians) =
                grant.check_shape(st.chain_id(), meshward_mqtt::auth::check_hash)?;
            grant.check_signatures(st.admins())?;
            match st.account(&device).and_then(|a| a.device.as_ref()) {
                Some(d) if d.is_active() => {}
                Some(_) => return Err(GrantError::Malformed("the device is revoked".into())),
                None => {
                    return Err(GrantError::Malformed(
                        "the device is not enrolled (enroll it first)".into(),
                    ))
                }
            }
            (device, custodians)
        };
        if !custodians.contains(&self.node.id()) {
            return Ok(false);
        }
        // The copy must open here, or the grant is useless to this custodian.
        drop(grant.open_keys(&self.node.sign)?);
        let mut grants = meshward_core::sync::lock(&self.grants, "custody grants");
        if !grants.contains_key(&device) && grants.len() >= MAX_CUSTODY {
            return Err(GrantError::Malformed(format!(
                "this gateway holds {MAX_CUSTODY} devices already"
            )));
        }
        let json = serde_json::to_vec_pretty(grant).expect("a grant serialises");
        write_private(&self.dir.join(format!("{}.json", grant.device)), &json)
            .map_err(|e| GrantError::Malformed(format!("cannot store the grant: {e}")))?;
        grants.insert(device, grant.clone());
        info!(device = %grant.device, "custody grant kept");
        Ok(true)
    }
}

/// One MQTT connection of a custodial device.
struct Conn {
    pushes: mpsc::Sender<Push>,
    inbox: bool,
    receipts: bool,
}

/// A custodial device with at least one MQTT connection here: its SDK device on the mesh,
/// shared by all its connections (a device may subscribe on one and publish on another).
struct Custodial {
    device: Arc<Device>,
    conns: HashMap<u64, Conn>,
    /// Messages received while no connection was subscribed to the inbox; at most
    /// [`SESSION_QUEUE`], oldest dropped.
    held: VecDeque<Push>,
    /// Stops the device's receiving agent, once it runs (from the first inbox subscription).
    agent: Option<oneshot::Sender<()>>,
}

type Devices = Arc<Mutex<HashMap<PublicKey, Custodial>>>;

fn lock(d: &Devices) -> std::sync::MutexGuard<'_, HashMap<PublicKey, Custodial>> {
    meshward_core::sync::lock(d, "mqtt custodial devices")
}

/// The [`Backend`] of the gateway's MQTT listener.
pub struct Bridge {
    gw: Arc<Gateway>,
    custody: Arc<Custody>,
    client: ClientConfig,
    state_dir: PathBuf,
    devices: Devices,
    serial: AtomicU64,
    /// Held while a device's SDK node starts, so two logins never start two.
    starting: tokio::sync::Mutex<()>,
    /// Sessions of devices that hold their own keys.
    sealed: Arc<sealed::Sealed>,
}

impl Bridge {
    /// A bridge whose custodial devices reach the mesh through `gateways` (this node's own mesh
    /// address first), keeping each device's SDK state under `<data dir>/custody/state/<device>`;
    /// sealed-mode requests are answered by `rpc`.
    pub fn new(
        gw: Arc<Gateway>,
        rpc: crate::rpc::RpcHandler,
        custody: Arc<Custody>,
        gateways: Vec<meshward_net::Multiaddr>,
        chain_id: String,
        data_dir: &Path,
    ) -> Arc<Bridge> {
        let mut client = ClientConfig::new(Some(chain_id.clone()), gateways);
        client.request_timeout = Duration::from_secs(3);
        let sealed = Arc::new(sealed::Sealed::new(
            gw.clone(),
            rpc,
            chain_id.clone(),
            custody.node_id(),
        ));
        let b = Arc::new(Bridge {
            gw,
            sealed,
            custody,
            client,
            state_dir: data_dir.join("custody").join("state"),
            devices: Arc::default(),
            serial: AtomicU64::new(0),
            starting: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(watch_revocations(Arc::downgrade(&b)));
        b
    }

    /// The device's SDK node: the running one, or a new one started with its opened keys.
    async fn device(&self, account: PublicKey, grant: &Grant) -> Result<Arc<Device>, ConnRefusal> {
        let _one = self.starting.lock().await;
        if let Some(c) = lock(&self.devices).get(&account) {
            return Ok(c.device.clone());
        }
        let keys = grant.open_keys(&self.custody.node.sign).map_err(|e| {
            warn!(device = %account, error = %e, "custody keys do not open");
            ConnRefusal::Busy
        })?;
        let dir = self.state_dir.join(account.peer_id());
        std::fs::create_dir_all(&dir).map_err(|_| ConnRefusal::Busy)?;
        let state = StateDir::open(&dir).map_err(|_| ConnRefusal::Busy)?;
        // No other custodian may sign for the device while this one does.
        self.release_elsewhere(account, grant).await;
        let identity = DeviceIdentity { account, keys };
        let device = Device::start(identity, self.client.clone(), state)
            .await
            .map_err(|e| {
                warn!(device = %account, error = %e, "custodial device did not start");
                ConnRefusal::Busy
            })?;
        let device = Arc::new(device);
        lock(&self.devices).insert(
            account,
            Custodial {
                device: device.clone(),
                conns: HashMap::new(),
                held: VecDeque::new(),
                agent: None,
            },
        );
        Ok(device)
    }
}

impl Bridge {
    /// Asks every other custodian of the device to stop running it (`Request::Release`), and
    /// waits for their answers, each for at most [`RELEASE_TIMEOUT`]. A custodian that does not
    /// answer (down, or cut off) cannot be asked: the device starts here anyway, so a device
    /// fails over when its gateway dies.
    async fn release_elsewhere(&self, account: PublicKey, grant: &Grant) {
        let Some(net) = &self.gw.net else { return };
        let me = self.custody.node_id();
        let req =
            meshward_core::codec::Encode::to_bytes(&meshward_core::rpc::Request::Release(account));
        let calls = grant
            .custodians
            .iter()
            .filter_map(|c| PublicKey::from_peer_id(c).ok())
            .filter(|c| *c != me)
            .map(|c| {
                let (net, req) = (net.clone(), req.clone());
                async move {
                    let peer = meshward_net::peer_id_of(&c);
                    (
                        c,
                        tokio::time::timeout(RELEASE_TIMEOUT, net.request(peer, req)).await,
                    )
                }
            });
        for (c, answer) in futures_util::future::join_all(calls).await {
            let resp = match answer {
                Ok(Ok(bytes)) => {
                    <meshward_core::rpc::Response as meshward_core::codec::Decode>::from_bytes(
                        &bytes,
                    )
                    .ok()
                }
                _ => None,
            };
            match resp {
                Some(meshward_core::rpc::Response::Acked { removed: 0 }) => {}
                Some(meshward_core::rpc::Response::Acked { .. }) => {
                    info!(device = %account, custodian = %c, "mqtt device taken over from another custodian")
                }
                other => {
                    info!(device = %account, custodian = %c, answer = ?other, "custodian did not release the device; starting it anyway")
                }
            }
        }
    }

    /// Stops running `device` here, for another custodian that is starting it: closes its
    /// connections (MQTT 5 0x8E, session taken over) and takes it off the mesh. Whether it ran.
    pub async fn release(&self, device: &PublicKey) -> bool {
        let Some(c) = lock(&self.devices).remove(device) else {
            return false;
        };
        for conn in c.conns.values() {
            let _ = conn.pushes.send(Push::Kick(Kick::SessionTakenOver)).await;
        }
        if let Some(stop) = c.agent {
            let _ = stop.send(());
        }
        c.device.client().net().clone().shutdown().await;
        info!(device = %device, "custodial device released to another custodian");
        true
    }
}

fn device_active(gw: &Gateway, device: &PublicKey) -> bool {
    let store = gw.ledger.read();
    store
        .state()
        .account(device)
        .and_then(|a| a.device.as_ref())
        .is_some_and(|d| d.is_active())
}

/// Closes every connection of each device the ledger no longer holds active, at each new
/// committed height.
async fn watch_revocations(bridge: std::sync::Weak<Bridge>) {
    let mut seen = 0u64;
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(b) = bridge.upgrade() else { return };
        let h = b.gw.ledger.tip_height();
        if h == seen {
            continue;
        }
        seen = h;
        let mut conns: Vec<(PublicKey, Vec<mpsc::Sender<Push>>)> = lock(&b.devices)
            .iter()
            .map(|(k, c)| (*k, c.conns.values().map(|x| x.pushes.clone()).collect()))
            .collect();
        conns.extend(b.sealed.connections());
        for (d, txs) in conns {
            let revoked_at = {
                let store = b.gw.ledger.read();
                match store
                    .state()
                    .account(&d)
                    .and_then(|a| a.device.as_ref())
                    .map(|x| &x.status)
                {
                    Some(meshward_core::state::DeviceStatus::Active) => continue,
                    Some(meshward_core::state::DeviceStatus::Revoked { height, .. }) => {
                        Some(*height)
                    }
                    None => None,
                }
            };
            info!(
                device = %d,
                height = h,
                revoked_height = ?revoked_at,
                "revoked device's MQTT connections closed"
            );
            for tx in txs {
                // The kick must not wait behind a full queue.
                let _ = tx.send(Push::Kick(Kick::NotAuthorized)).await;
            }
        }
    }
}

fn refusal(e: &ClientError) -> PubRefusal {
    match e {
        ClientError::PolicyForbids { .. }
        | ClientError::RecipientRevoked(_)
        | ClientError::SelfRevoked => PubRefusal::NotAuthorized,
        ClientError::Refused { code, .. }
            if matches!(
                code.as_str(),
                // The gateway's admission (FORMATS.md, request-response codes), or the
                // recipient refusing a direct envelope.
                "policy_forbids" | "device_revoked" | "recipient_revoked" | "sender_revoked"
            ) =>
        {
            PubRefusal::NotAuthorized
        }
        ClientError::Refused { code, .. } if code == "unknown_device" => PubRefusal::TopicInvalid,
        ClientError::UnknownDevice(_) => PubRefusal::TopicInvalid,
        _ => PubRefusal::Unspecified,
    }
}

/// Sends `push` to every connection of `account` that `wants` it; held for later if it is an
/// inbox message and none does.
async fn fan_out(devices: &Devices, account: &PublicKey, push: Push, wants: fn(&Conn) -> bool) {
    let targets: Vec<mpsc::Sender<Push>> = {
        let mut d = lock(devices);
        let Some(c) = d.get_mut(account) else { return };
        let t: Vec<_> = c
            .conns
            .values()
            .filter(|x| wants(x))
            .map(|x| x.pushes.clone())
            .collect();
        if t.is_empty() {
            if matches!(
                push,
                Push::Message {
                    feed: Feed::Inbox,
                    ..
                }
            ) {
                if c.held.len() >= SESSION_QUEUE {
                    warn!(device = %account, "inbox held queue full; oldest message dropped");
                    c.held.pop_front();
                }
                c.held.push_back(push);
            }
            return;
        }
        t
    };
    for t in targets {
        let _ = t.send(push.clone()).await;
    }
}

/// Starts the device's receiving agent: what it receives goes to the inbox subscribers.
fn start_agent(devices: &Devices, account: PublicKey, device: Arc<Device>) -> oneshot::Sender<()> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (recv_tx, mut recv_rx) = mpsc::channel(SESSION_QUEUE);
    tokio::spawn(async move {
        let stop = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = device
            .run_agent(Duration::from_millis(500), recv_tx, stop)
            .await
        {
            warn!(error = %e, "custodial device agent stopped");
        }
    });
    let devices = devices.clone();
    tokio::spawn(async move {
        while let Some(r) = recv_rx.recv().await {
            let push = Push::Message {
                feed: Feed::Inbox,
                payload: Bytes::from(r.payload),
                user: vec![
                    ("from".into(), r.from.peer_id()),
                    ("commitment".into(), r.commitment.to_string()),
                ],
            };
            fan_out(&devices, &account, push, |c| c.inbox).await;
        }
    });
    stop_tx
}

/// One MQTT connection's handle.
struct Session {
    device: Arc<Device>,
    account: PublicKey,
    devices: Devices,
    serial: u64,
    receipt_slots: Arc<tokio::sync::Semaphore>,
}

impl Session {
    async fn send(
        device: Arc<Device>,
        account: PublicKey,
        target: Target,
        payload: Bytes,
    ) -> Result<Vec<meshward_sdk::device::SendReport>, PubRefusal> {
        let recipients: Vec<PublicKey> = match target {
            Target::Device(id) => {
                vec![PublicKey::from_peer_id(&id).map_err(|_| PubRefusal::TopicInvalid)?]
            }
            Target::Group(name) => {
                let g = GroupName::new(&name).ok_or(PubRefusal::TopicInvalid)?;
                let info = device
                    .client()
                    .group(&g)
                    .await
                    .map_err(|e| refusal(&e))?
                    .ok_or(PubRefusal::TopicInvalid)?;
                info.members
                    .into_iter()
                    .map(|(m, _)| m)
                    .filter(|m| *m != account)
                    .collect()
            }
            Target::Sealed => return Err(PubRefusal::TopicInvalid),
        };
        let mut reports = Vec::with_capacity(recipients.len());
        for to in recipients {
            match device.send(&to, &[&payload[..]], false, None).await {
                Ok(r) => reports.push(r),
                Err(e) => {
                    debug!(error = %e, "mqtt publish not sent");
                    return Err(refusal(&e));
                }
            }
        }
        Ok(reports)
    }
}

impl SessionHandle for Session {
    fn publish(
        &self,
        target: Target,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), PubRefusal>> {
        let device = self.device.clone();
        let account = self.account;
        let devices = self.devices.clone();
        let slots = self.receipt_slots.clone();
        Box::pin(async move {
            let reports = Session::send(device.clone(), account, target, payload).await?;
            for r in reports {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!("receipt waits full; no receipt for this message");
                    continue;
                };
                let device = device.clone();
                let devices = devices.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + RECEIPT_WAIT;
                    if let Ok(h) = device.client().wait_final(&r.anchor_tx, deadline).await {
                        let body = topic::receipt_json(&r.commitment.to_string(), h);
                        let push = Push::Message {
                            feed: Feed::Receipts,
                            payload: Bytes::from(body.into_bytes()),
                            user: Vec::new(),
                        };
                        fan_out(&devices, &account, push, |c| c.receipts).await;
                    }
                    drop(permit);
                });
            }
            Ok(())
        })
    }

    fn set_feeds(&self, inbox: bool, receipts: bool) {
        let mut flush = Vec::new();
        let pushes;
        {
            let mut d = lock(&self.devices);
            let Some(c) = d.get_mut(&self.account) else {
                return;
            };
            let Some(conn) = c.conns.get_mut(&self.serial) else {
                return;
            };
            conn.inbox = inbox;
            conn.receipts = receipts;
            pushes = conn.pushes.clone();
            if inbox {
                flush.extend(c.held.drain(..));
                if c.agent.is_none() {
                    c.agent = Some(start_agent(&self.devices, self.account, c.device.clone()));
                }
            }
        }
        if !flush.is_empty() {
            tokio::spawn(async move {
                for p in flush {
                    let _ = pushes.send(p).await;
                }
            });
        }
    }

    fn closed(&self, will: Option<Will>) {
        let last = {
            let mut d = lock(&self.devices);
            let last = d.get_mut(&self.account).is_some_and(|c| {
                c.conns.remove(&self.serial);
                c.conns.is_empty()
            });
            if last {
                d.remove(&self.account)
            } else {
                None
            }
        };
        let device = self.device.clone();
        let account = self.account;
        tokio::spawn(async move {
            if let Some(t) = will.and_then(|w| topic::target(&w.topic).map(|t| (t, w.payload))) {
                if let Err(r) = Session::send(device.clone(), account, t.0, t.1).await {
                    debug!(refusal = ?r, "will message not sent");
                }
            }
            if let Some(c) = last {
                // The last connection: stop receiving and take the device off the mesh, so what
                // is sent to it waits in the replicated mailboxes.
                if let Some(stop) = c.agent {
                    let _ = stop.send(());
                }
                device.client().net().clone().shutdown().await;
                info!(device = %account, "custodial device left the mesh");
            }
        });
    }
}

impl Backend for Bridge {
    fn password_hash(&self, username: &str) -> Option<String> {
        let device = PublicKey::from_peer_id(username).ok()?;
        self.custody.password_hash(&device)
    }

    fn check_token(&self, username: &str, password: &str) -> Option<bool> {
        self.sealed.check_token(username, password)
    }

    fn open(self: Arc<Self>, login: Login) -> BoxFuture<'static, Result<Accepted, ConnRefusal>> {
        Box::pin(async move {
            if login.signed {
                let serial = self.serial.fetch_add(1, Ordering::Relaxed);
                return self.sealed.open(&login, serial);
            }
            let Ok(account) = PublicKey::from_peer_id(&login.username) else {
                return Err(ConnRefusal::BadCredentials);
            };
            let Some(grant) = self.custody.grant(&account) else {
                return Err(ConnRefusal::BadCredentials);
            };
            if !device_active(&self.gw, &account) {
                info!(device = %account, "mqtt login of a revoked device refused");
                return Err(ConnRefusal::NotAuthorized);
            }
            let device = self.device(account, &grant).await?;
            let serial = self.serial.fetch_add(1, Ordering::Relaxed);
            let (push_tx, push_rx) = mpsc::channel(SESSION_QUEUE);
            let present = {
                let mut d = lock(&self.devices);
                let Some(c) = d.get_mut(&account) else {
                    // The device's last connection closed while this one started: try again.
                    return Err(ConnRefusal::Busy);
                };
                let present = !c.conns.is_empty();
                c.conns.insert(
                    serial,
                    Conn {
                        pushes: push_tx,
                        inbox: false,
                        receipts: false,
                    },
                );
                present
            };
            info!(device = %account, addr = %login.addr, "mqtt session opened");
            let handle = Arc::new(Session {
                device,
                account,
                devices: self.devices.clone(),
                serial,
                receipt_slots: Arc::new(tokio::sync::Semaphore::new(MAX_RECEIPT_WAITS)),
            });
            Ok(Accepted {
                handle,
                pushes: push_rx,
                session_present: present && !login.clean,
            })
        })
    }
}

/// How long a forwarded grant may take at another custodian.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// `POST /v1/mqtt/devices`: checks a custody grant, keeps it if this gateway is a custodian, and
/// forwards it over the mesh to the other custodians (each checks it again).
pub async fn api_custody(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::Json<meshward_api::types::MqttCustody>, crate::api::ApiError> {
    use crate::api::ApiError;
    use axum::http::StatusCode;
    use meshward_api::types::{CustodianRefusal, MqttCustody};
    let body =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let grant: Grant = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("custody grant: {e}"),
        )
    })?;
    let custody = gw.custody.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "unsupported",
            "this gateway keeps no custody",
        )
    })?;
    let me = custody.node_id();
    let mine = {
        let (gw, custody, grant) = (gw.clone(), custody.clone(), grant.clone());
        tokio::task::spawn_blocking(move || custody.register(&gw, &grant))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
    };
    match mine {
        Err(GrantError::Unauthorized { need, have }) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unauthorized",
                GrantError::Unauthorized { need, have }.to_string(),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_grant",
                e.to_string(),
            ))
        }
        Ok(_) => {}
    }
    let mut stored_by = Vec::new();
    let mut refused = Vec::new();
    let custodians: Vec<PublicKey> = grant
        .custodians
        .iter()
        .filter_map(|c| PublicKey::from_peer_id(c).ok())
        .collect();
    if custodians.contains(&me) {
        stored_by.push(me.peer_id());
    }
    let net = gw.net.clone();
    let bytes = meshward_core::rpc::Request::Custody(body.to_vec());
    let bytes = meshward_core::codec::Encode::to_bytes(&bytes);
    for c in custodians.into_iter().filter(|c| *c != me) {
        let answer = match &net {
            Some(net) => {
                let peer = meshward_net::peer_id_of(&c);
                tokio::time::timeout(FORWARD_TIMEOUT, net.request(peer, bytes.clone())).await
            }
            None => Ok(Err(meshward_net::NetError::Closed)),
        };
        let refusal = |code: &str, message: String| CustodianRefusal {
            custodian: c.peer_id(),
            code: code.into(),
            message,
        };
        match answer {
            Ok(Ok(resp)) => {
                match <meshward_core::rpc::Response as meshward_core::codec::Decode>::from_bytes(
                    &resp,
                ) {
                    Ok(meshward_core::rpc::Response::Stored { .. }) => stored_by.push(c.peer_id()),
                    Ok(meshward_core::rpc::Response::Error { code, message }) => {
                        refused.push(refusal(&code, message))
                    }
                    Ok(other) => refused.push(refusal("unexpected", format!("{other:?}"))),
                    Err(e) => refused.push(refusal("bad_response", e.to_string())),
                }
            }
            Ok(Err(e)) => refused.push(refusal("unreachable", e.to_string())),
            Err(_) => refused.push(refusal("unreachable", "no answer in 5 s".into())),
        }
    }
    Ok(axum::Json(MqttCustody {
        device: grant.device,
        stored_by,
        refused,
    }))
}
