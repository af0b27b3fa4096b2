//! The device's side of the mesh: talking to gateways and to other devices.
//!
//! A [`Client`] runs a libp2p node with the device's current signing key as its identity. It
//! keeps a connection to every gateway it was given and uses whichever answers: each request
//! goes to the gateway that answered last, and on a transport failure to the next one, so a dead
//! gateway costs one timeout and no reconfiguration. Requests other devices send to this one
//! (direct envelopes) come out of [`Client::take_requests`], for the device agent
//! ([`Device::run_agent`](crate::device::Device::run_agent)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshward_api::client::{ApiClient, ApiClientError};
use meshward_core::codec::{Decode, Encode};
use meshward_core::envelope::{Envelope, EnvelopeError};
use meshward_core::hash::Hash;
use meshward_core::ids::{Keypair, PublicKey};
use meshward_core::rpc::{DeviceInfo, GroupInfo, Request, Response, TxState, MAX_DELIVER_BATCH};
use meshward_core::tx::{GroupName, Tx};
use meshward_net::{Multiaddr, Net, NetConfig, NetError, NetEvent, PeerId, RequestId};
use tokio::sync::mpsc;
use tracing::debug;

/// A device's ledger identity and its current keys. `account` is the id the device was enrolled
/// with; after a key rotation `keys` holds the new keys while `account` stays the same.
#[derive(Clone)]
pub struct DeviceIdentity {
    /// The device's ledger id: the signing key it was enrolled with, unchanged by rotations.
    pub account: PublicKey,
    /// The device's current signing and encryption keys; the signing key is its libp2p identity.
    pub keys: Keypair,
}

impl DeviceIdentity {
    /// A device that never rotated: its id is its signing key.
    pub fn new(keys: Keypair) -> Self {
        DeviceIdentity {
            account: keys.id(),
            keys,
        }
    }
}

/// How a [`Client`] joins the mesh.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The fleet's chain id; `None` asks the first gateway that answers.
    pub chain_id: Option<String>,
    /// The chain id to use when `chain_id` is `None` and no gateway answers (a device's
    /// remembered one), so a device works on a LAN whose gateways are all unreachable.
    pub fallback_chain_id: Option<String>,
    /// Gateway addresses, ideally with `/p2p/<peer id>`; re-dialled whenever disconnected.
    pub gateways: Vec<Multiaddr>,
    /// Where this device listens for direct envelopes. Default `/ip4/127.0.0.1/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Find peers on the LAN by multicast DNS.
    pub mdns: bool,
    /// How long one request may take before the next gateway is tried.
    pub request_timeout: Duration,
}

/// Why a gateway's API did not say how to reach its mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// `GET /v1/status` failed.
    #[error("cannot reach the gateway API at {url}")]
    Api {
        /// The API's URL.
        url: String,
        /// Why.
        source: Box<ApiClientError>,
    },
    /// The gateway answered but lists no usable mesh address (its mesh is not listening).
    #[error("the gateway at {url} reports no mesh address")]
    NoMeshAddress {
        /// The API's URL.
        url: String,
    },
}

impl ClientConfig {
    /// A configuration for the fleet of the gateway whose HTTP API is at `url`
    /// (`http://host:port`): its chain id and mesh addresses, from `GET /v1/status`. Addresses
    /// that do not parse are skipped. This is a blocking HTTP call: make it before entering the
    /// async runtime, or on a blocking thread.
    pub fn from_api(url: &str) -> Result<ClientConfig, DiscoveryError> {
        let status = ApiClient::new(url)
            .and_then(|api| api.status())
            .map_err(|source| DiscoveryError::Api {
                url: url.to_string(),
                source: Box::new(source),
            })?;
        let gateways: Vec<Multiaddr> = status
            .mesh_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        if gateways.is_empty() {
            return Err(DiscoveryError::NoMeshAddress {
                url: url.to_string(),
            });
        }
        Ok(ClientConfig::new(Some(status.chain_id), gateways))
    }

    /// A configuration with the defaults: listen on `/ip4/127.0.0.1/tcp/0`, no mDNS, 5 s per
    /// request.
    pub fn new(chain_id: Option<String>, gateways: Vec<Multiaddr>) -> Self {
        ClientConfig {
            chain_id,
            fallback_chain_id: None,
            gateways,
            listen: vec!["/ip4/127.0.0.1/tcp/0"
                .parse()
                .expect("a literal multiaddr parses")],
            mdns: false,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors of the device client. `code()` gives the stable code a gateway or peer answered with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No gateway gave an answer: each one tried timed out or failed in transport, or every
    /// gateway failed within the last [`GATEWAY_RETRY`] and none was tried.
    #[error("no gateway answered ({tried} tried; last error: {last})")]
    NoGateway {
        /// How many gateways were asked.
        tried: usize,
        /// The last failure, as text.
        last: String,
    },
    /// Every gateway tried closed or denied this device's connection; holds how many were
    /// tried. Gateways do this to a revoked device.
    #[error("every gateway refused this device's connection ({0} tried): the device is probably revoked (check with meshward device list)")]
    ConnectionsRefused(usize),
    /// A gateway, a peer or the ledger answered with an error ([`Response::Error`], or a
    /// rejected transaction).
    #[error("refused by {by}: {code}: {message}")]
    Refused {
        /// Who refused: the peer id of the gateway or device, or `ledger` / `gateway`.
        by: String,
        /// Its stable error code, e.g. `stale_sequence`, `tx_rejected`; see [`ClientError::code`].
        code: String,
        /// Its human-readable explanation.
        message: String,
    },
    /// An answer that does not decode or is not the kind the request asks for; holds the
    /// request (or the peer and the decoding error).
    #[error("unexpected answer from {0}")]
    Unexpected(String),
    /// The ledger has no device with this id (peer id text).
    #[error("device {0} is not enrolled")]
    UnknownDevice(String),
    /// The recipient of a send is revoked (its peer id text).
    #[error("recipient {0} is revoked")]
    RecipientRevoked(String),
    /// The ledger marks this device itself as revoked.
    #[error("this device is revoked: it can no longer send")]
    SelfRevoked,
    /// The fleet's policy allows no group of the sender to send to a group of the recipient.
    #[error("policy forbids sending from groups {from:?} to {to}")]
    PolicyForbids {
        /// The sending device's groups.
        from: Vec<String>,
        /// The recipient's peer id text.
        to: String,
    },
    /// Sealing an envelope failed: a payload over the size limit, a sequence number too low, or
    /// an unusable recipient encryption key.
    #[error("cannot seal the envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A direct delivery found no address for the recipient, neither given nor discovered.
    #[error("the recipient could not be reached directly and no gateway took the envelope")]
    Undeliverable,
    /// No answer in time; holds what was being waited for (`a peer's answer`, `finality`).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The libp2p node failed: it could not start, dial or carry a request.
    #[error("mesh: {0}")]
    Net(#[from] NetError),
    /// The device's state directory could not be read or written, or the call's arguments or
    /// the device's state do not allow it (a send of no payloads, the agent already running).
    #[error("device state: {0}")]
    State(String),
}

impl ClientError {
    /// A stable machine-readable code for scripts.
    pub fn code(&self) -> &str {
        match self {
            ClientError::NoGateway { .. } => "no_gateway",
            ClientError::ConnectionsRefused(_) => "connections_refused",
            ClientError::Refused { code, .. } => code,
            ClientError::Unexpected(_) => "unexpected_response",
            ClientError::UnknownDevice(_) => "unknown_device",
            ClientError::RecipientRevoked(_) => "recipient_revoked",
            ClientError::SelfRevoked => "device_revoked",
            ClientError::PolicyForbids { .. } => "policy_forbids",
            ClientError::Envelope(_) => "envelope",
            ClientError::Undeliverable => "undeliverable",
            ClientError::Timeout(_) => "timeout",
            ClientError::Net(_) => "net",
            ClientError::State(_) => "state",
        }
    }
}

/// A request another device sent us.
#[derive(Debug)]
pub struct Incoming {
    /// The peer that sent it.
    pub from: PeerId,
    /// Its request id: pass it to [`Client::respond`] to answer.
    pub id: RequestId,
    /// The decoded request.
    pub request: Request,
}

/// Capacity of the queue of incoming requests; beyond it requests are dropped and their senders
/// time out.
pub const INCOMING_QUEUE: usize = 256;
/// Most ciphertext bytes in one `DeliverBatch` request (the mesh refuses requests above
/// 160 KiB); a single larger envelope still goes alone.
pub const DELIVER_BATCH_BYTES: usize = 96 * 1024;

/// How long a gateway that failed is skipped.
pub const GATEWAY_RETRY: Duration = Duration::from_secs(3);

/// Most addresses remembered per peer from discovery.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Most peers remembered from discovery.
const MAX_DISCOVERED: usize = 4096;

/// The device's mesh client.
pub struct Client {
    net: Net,
    chain_id: String,
    identity: DeviceIdentity,
    gateways: Vec<PeerId>,
    /// Index into `gateways` of the one that answered last.
    preferred: AtomicUsize,
    /// Gateways that failed recently, skipped until the instant given, so an unreachable
    /// gateway costs one timeout rather than one per request.
    down: Mutex<HashMap<PeerId, Instant>>,
    request_timeout: Duration,
    discovered: Arc<Mutex<HashMap<PeerId, Vec<Multiaddr>>>>,
    incoming: Mutex<Option<mpsc::Receiver<Incoming>>>,
}

/// The peer id in a multiaddr's `/p2p/` part, if any.
fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        meshward_net::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl Client {
    /// Starts the device's libp2p node and dials every gateway. Gateways that are down now are
    /// re-dialled in the background; the client works with whichever answer.
    pub async fn start(
        identity: DeviceIdentity,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        // Devices do not join the transaction topic, so the name only matters to gateways.
        let topic_chain = config.chain_id.clone().unwrap_or_else(|| "unknown".into());
        let mut nc = NetConfig::device(topic_chain);
        nc.listen = config.listen.clone();
        nc.bootstrap = config.gateways.clone();
        nc.mdns = config.mdns;
        let (net, mut events) = meshward_net::spawn(&identity.keys, nc).await?;
        let mut gateways: Vec<PeerId> = Vec::new();
        for addr in &config.gateways {
            let peer = match peer_in(addr) {
                Some(p) => Some(p),
                None => net.dial(addr.clone()).await.ok(),
            };
            if let Some(p) = peer {
                if !gateways.contains(&p) {
                    gateways.push(p);
                }
            }
        }
        let discovered: Arc<Mutex<HashMap<PeerId, Vec<Multiaddr>>>> = Arc::default();
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let disc = discovered.clone();
        let responder = net.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    NetEvent::Request { from, id, bytes } => {
                        let request = match Request::from_bytes(&bytes) {
                            Ok(r) => r,
                            Err(e) => {
                                let resp = Response::error("bad_request", &e.to_string());
                                responder.respond(id, resp.to_bytes()).await;
                                continue;
                            }
                        };
                        if in_tx.try_send(Incoming { from, id, request }).is_err() {
                            debug!(peer = %from, "incoming queue full; request dropped");
                        }
                    }
                    NetEvent::Discovered(peer, addrs)
                    | NetEvent::Identified {
                        peer,
                        listen_addrs: addrs,
                    } => {
                        let mut d = meshward_core::sync::lock(&disc, "discovered addresses");
                        if d.len() < MAX_DISCOVERED || d.contains_key(&peer) {
                            let mut addrs = addrs;
                            addrs.truncate(MAX_ADDRS_PER_PEER);
                            d.insert(peer, addrs);
                        }
                    }
                    _ => {}
                }
            }
        });
        let mut client = Client {
            net,
            chain_id: config.chain_id.clone().unwrap_or_default(),
            identity,
            gateways,
            preferred: AtomicUsize::new(0),
            down: Mutex::new(HashMap::new()),
            request_timeout: config.request_timeout,
            discovered,
            incoming: Mutex::new(Some(in_rx)),
        };
        if config.chain_id.is_none() {
            match (client.call(&Request::Info).await, &config.fallback_chain_id) {
                (Ok(Response::Info { chain_id, .. }), _) => client.chain_id = chain_id,
                (Ok(_), _) => return Err(ClientError::Unexpected("info".into())),
                (Err(ClientError::NoGateway { .. }), Some(known)) => {
                    debug!(chain_id = %known, "no gateway answers; using the remembered chain id");
                    client.chain_id = known.clone();
                }
                (Err(e), _) => return Err(e),
            }
        }
        Ok(client)
    }

    /// The fleet's chain id: the configured one, else the first gateway's, else the fallback.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The device's ledger id and current keys.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// The handle of the device's libp2p node.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The gateways this client knows, by peer id.
    pub fn gateways(&self) -> &[PeerId] {
        &self.gateways
    }

    /// The queue of requests other devices send to this one; can be taken once.
    pub fn take_requests(&self) -> Option<mpsc::Receiver<Incoming>> {
        meshward_core::sync::lock(&self.incoming, "incoming requests").take()
    }

    /// Answers an incoming request.
    pub async fn respond(&self, id: RequestId, response: &Response) {
        self.net.respond(id, response.to_bytes()).await;
    }

    /// Sends one request to one peer and decodes the answer.
    pub async fn request_peer(&self, peer: PeerId, req: &Request) -> Result<Response, ClientError> {
        let bytes =
            tokio::time::timeout(self.request_timeout, self.net.request(peer, req.to_bytes()))
                .await
                .map_err(|_| ClientError::Timeout("a peer's answer"))??;
        Response::from_bytes(&bytes).map_err(|e| ClientError::Unexpected(format!("{peer}: {e}")))
    }

    /// Sends a request to a gateway: the one that answered last, then the others in turn.
    /// A gateway's `Error` answer is returned as [`ClientError::Refused`] without trying others.
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let (_, r) = self.call_from(req).await?;
        Ok(r)
    }

    async fn call_from(&self, req: &Request) -> Result<(PeerId, Response), ClientError> {
        let n = self.gateways.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = String::from("no gateway known");
        let mut closed = 0;
        let mut tried = 0;
        for k in 0..n {
            let i = (start + k) % n;
            let gw = self.gateways[i];
            if self.is_down(&gw) {
                continue;
            }
            tried += 1;
            match self.request_peer(gw, req).await {
                Ok(Response::Error { code, message }) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Err(ClientError::Refused {
                        by: gw.to_string(),
                        code,
                        message,
                    });
                }
                Ok(r) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok((gw, r));
                }
                Err(e) => {
                    debug!(gateway = %gw, error = %e, "gateway did not answer; trying the next");
                    self.mark_down(gw);
                    if matches!(
                        e,
                        ClientError::Net(NetError::Rpc {
                            reason: meshward_net::RpcFailure::ConnectionClosed,
                            ..
                        }) | ClientError::Net(NetError::Denied(_))
                    ) {
                        closed += 1;
                    }
                    last = e.to_string();
                }
            }
        }
        if tried > 0 && closed == tried {
            return Err(ClientError::ConnectionsRefused(tried));
        }
        if tried == 0 && n > 0 {
            last = String::from("every gateway failed within the last few seconds");
        }
        Err(ClientError::NoGateway { tried, last })
    }

    fn is_down(&self, gw: &PeerId) -> bool {
        let mut down = meshward_core::sync::lock(&self.down, "gateways down");
        match down.get(gw) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                down.remove(gw);
                false
            }
            None => false,
        }
    }

    fn mark_down(&self, gw: PeerId) {
        meshward_core::sync::lock(&self.down, "gateways down")
            .insert(gw, Instant::now() + GATEWAY_RETRY);
    }

    /// What the ledger says of a device (by its ledger id or its current signing key), with the
    /// addresses gateways know for it. Asks gateways in turn until one knows where it listens.
    pub async fn lookup(&self, id: &PublicKey) -> Result<Option<DeviceInfo>, ClientError> {
        let (_, first) = self.call_from(&Request::Lookup(*id)).await?;
        let Response::Device(mut info) = first else {
            return Err(ClientError::Unexpected("lookup".into()));
        };
        if let Some(d) = info.as_mut() {
            if d.addrs.is_empty() {
                for gw in &self.gateways {
                    if let Ok(Response::Device(Some(other))) =
                        self.request_peer(*gw, &Request::Lookup(*id)).await
                    {
                        if !other.addrs.is_empty() {
                            d.addrs = other.addrs;
                            break;
                        }
                    }
                }
            }
        }
        Ok(info)
    }

    /// The sequence number the account's next transaction should carry.
    pub async fn next_seq(&self, account: &PublicKey) -> Result<u64, ClientError> {
        match self.call(&Request::NextSeq(*account)).await? {
            Response::NextSeq(Some(n)) => Ok(n),
            Response::NextSeq(None) => Err(ClientError::UnknownDevice(account.peer_id())),
            _ => Err(ClientError::Unexpected("next seq".into())),
        }
    }

    /// What the ledger says of group `g` (members, epoch, whether it needs a rekey); `None`
    /// if there is no such group.
    pub async fn group(&self, g: &GroupName) -> Result<Option<GroupInfo>, ClientError> {
        match self.call(&Request::Group(g.clone())).await? {
            Response::Group(info) => Ok(info),
            _ => Err(ClientError::Unexpected("group".into())),
        }
    }

    /// The fleet's policy: the (sender group, recipient group) pairs allowed to send.
    pub async fn policy(&self) -> Result<Vec<(GroupName, GroupName)>, ClientError> {
        match self.call(&Request::Policy).await? {
            Response::Policy(p) => Ok(p),
            _ => Err(ClientError::Unexpected("policy".into())),
        }
    }

    /// Submits a signed transaction to a gateway's mempool.
    pub async fn submit(&self, tx: &Tx) -> Result<Hash, ClientError> {
        match self.call(&Request::SubmitTx(tx.clone())).await? {
            Response::TxAccepted(h) => Ok(h),
            _ => Err(ClientError::Unexpected("submit".into())),
        }
    }

    /// Where a transaction is: pending, committed (at a height), rejected or unknown.
    pub async fn tx_status(&self, id: &Hash) -> Result<TxState, ClientError> {
        match self.call(&Request::TxStatus(*id)).await? {
            Response::TxStatus(s) => Ok(s),
            _ => Err(ClientError::Unexpected("tx status".into())),
        }
    }

    /// Polls until the transaction is committed (its height) or rejected, or `deadline` passes.
    pub async fn wait_final(&self, id: &Hash, deadline: Instant) -> Result<u64, ClientError> {
        loop {
            match self.tx_status(id).await {
                Ok(TxState::Committed { height }) => return Ok(height),
                Ok(TxState::Rejected { reason }) => {
                    return Err(ClientError::Refused {
                        by: "ledger".into(),
                        code: "tx_rejected".into(),
                        message: reason,
                    })
                }
                Ok(_) | Err(ClientError::NoGateway { .. }) | Err(ClientError::Timeout(_)) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout("finality"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hands an envelope to gateways' mailboxes until at least `min_replicas` gateways hold it.
    /// Returns how many hold it.
    pub async fn deposit(&self, env: &Envelope, min_replicas: u32) -> Result<u32, ClientError> {
        let req = Request::Deposit(env.clone());
        let mut held = 0u32;
        let mut last = String::from("no gateway known");
        for gw in &self.gateways {
            match self.request_peer(*gw, &req).await {
                Ok(Response::Stored { replicas }) => {
                    held = held.max(replicas);
                    if held >= min_replicas {
                        break;
                    }
                }
                Ok(Response::Error { code, message }) => {
                    return Err(ClientError::Refused {
                        by: gw.to_string(),
                        code,
                        message,
                    })
                }
                Ok(_) => last = format!("{gw}: unexpected answer"),
                Err(e) => last = e.to_string(),
            }
        }
        if held == 0 {
            return Err(ClientError::NoGateway {
                tried: self.gateways.len(),
                last,
            });
        }
        Ok(held)
    }

    /// Where a peer listens, as far as discovery (mDNS, identify) told us.
    pub fn discovered_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        meshward_core::sync::lock(&self.discovered, "discovered addresses")
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }

    /// Connects to the device whose current signing key is `peer_key`, at `addrs` (from its
    /// ledger record) or wherever discovery found it, and returns its peer id.
    async fn dial_device(
        &self,
        peer_key: &PublicKey,
        addrs: &[String],
    ) -> Result<PeerId, ClientError> {
        let peer = meshward_net::peer_id_of(peer_key);
        let mut known: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
        known.extend(self.discovered_addrs(&peer));
        if known.is_empty() {
            return Err(ClientError::Undeliverable);
        }
        self.net.dial_peer(peer, known).await?;
        Ok(peer)
    }

    /// Delivers an envelope directly to the device whose current signing key is `peer_key`,
    /// at `addrs` or wherever discovery found it.
    pub async fn deliver_direct(
        &self,
        peer_key: &PublicKey,
        addrs: &[String],
        env: &Envelope,
    ) -> Result<(), ClientError> {
        let peer = self.dial_device(peer_key, addrs).await?;
        match self
            .request_peer(peer, &Request::Deliver(env.clone()))
            .await?
        {
            Response::Delivered => Ok(()),
            Response::Error { code, message } => Err(ClientError::Refused {
                by: peer.to_string(),
                code,
                message,
            }),
            _ => Err(ClientError::Unexpected("deliver".into())),
        }
    }

    /// Delivers `envs` directly to the device whose current signing key is `peer_key`, as
    /// [`Client::deliver_direct`] does one, in `DeliverBatch` requests of at most
    /// [`MAX_DELIVER_BATCH`] envelopes and [`DELIVER_BATCH_BYTES`] of ciphertext, one after
    /// another. `Err((n, e))`: the recipient opened the first `n` envelopes, and `e` is why the
    /// next one did not reach it or was refused.
    pub async fn deliver_direct_batch(
        &self,
        peer_key: &PublicKey,
        addrs: &[String],
        envs: &[Envelope],
    ) -> Result<(), (usize, ClientError)> {
        let peer = self
            .dial_device(peer_key, addrs)
            .await
            .map_err(|e| (0, e))?;
        let mut done = 0;
        while done < envs.len() {
            let mut end = done;
            let mut bytes = 0;
            while end < envs.len()
                && end - done < MAX_DELIVER_BATCH
                && (end == done || bytes + envs[end].ciphertext.len() <= DELIVER_BATCH_BYTES)
            {
                bytes += envs[end].ciphertext.len();
                end += 1;
            }
            let chunk = envs[done..end].to_vec();
            let sent = chunk.len();
            let answer = self
                .request_peer(peer, &Request::DeliverBatch(chunk))
                .await
                .map_err(|e| (done, e))?;
            let refused = |code: String, message: String| ClientError::Refused {
                by: peer.to_string(),
                code,
                message,
            };
            match answer {
                Response::DeliveredBatch {
                    delivered,
                    refused: None,
                } if delivered as usize == sent => done = end,
                Response::DeliveredBatch {
                    delivered,
                    refused: Some((code, message)),
                } if (delivered as usize) < sent => {
                    return Err((done + delivered as usize, refused(code, message)))
                }
                Response::Error { code, message } => return Err((done, refused(code, message))),
                _ => return Err((done, ClientError::Unexpected("deliver batch".into()))),
            }
        }
        Ok(())
    }

    /// Stops the mesh node.
    pub async fn shutdown(self) {
        self.net.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// Answers one HTTP request on the loopback with `body` as JSON; returns the API's URL.
    fn one_answer(body: String) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            assert!(req.starts_with(b"GET /v1/status "));
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        url
    }

    fn status(mesh_addrs: &[&str]) -> String {
        serde_json::json!({
            "chain_id": "fleet-7", "height": 3, "last_block_hash": null, "last_block_time": null,
            "peers": 1, "validators": 4, "is_validator": true, "mempool_size": 0,
            "peer_id": "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "mesh_addrs": mesh_addrs,
        })
        .to_string()
    }

    #[test]
    fn from_api_reads_the_chain_and_the_mesh_addresses() {
        let a = "/ip4/127.0.0.1/tcp/7801/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let url = one_answer(status(&["not an address", a]));
        let cfg = ClientConfig::from_api(&url).unwrap();
        assert_eq!(cfg.chain_id.as_deref(), Some("fleet-7"));
        assert_eq!(cfg.gateways, vec![a.parse::<Multiaddr>().unwrap()]);
        assert!(!cfg.mdns);
    }

    #[test]
    fn a_gateway_without_mesh_addresses_is_an_error() {
        let url = one_answer(status(&[]));
        let e = ClientConfig::from_api(&url).unwrap_err();
        assert!(matches!(e, DiscoveryError::NoMeshAddress { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("the gateway at {url} reports no mesh address")
        );
    }

    #[test]
    fn an_unreachable_api_is_named() {
        // Port 1 on the loopback: nothing listens there.
        let e = ClientConfig::from_api("http://127.0.0.1:1").unwrap_err();
        assert!(matches!(e, DiscoveryError::Api { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "cannot reach the gateway API at http://127.0.0.1:1"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
